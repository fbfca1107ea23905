//! Registering a worker, and a worker's answer (or its failure to
//! answer) to a request it took.

use super::{Core, EntryOps, Env};
use crate::error::{err, ErrorKind, Result};
use crate::session::requests::{SlotState, SlotWord, WorkerId, WorkerState, WorkerWord};
use crate::sync::Ordering;

impl Core {
    /// Registers a worker in group `g` for process `env.me()`; when every
    /// record is in use, reaps dead workers and tries once more.
    pub fn register<E: Env>(&self, env: &E, g: u32, pid: u32, start: u64) -> Result<WorkerId> {
        if g >= self.geo.groups {
            return Err(err!(
                Invalid,
                "worker group {g} does not exist (the area has groups 0 to {})",
                self.geo.groups - 1
            ));
        }
        for pass in 0..2 {
            for idx in 0..self.geo.workers {
                let Some(ww) = self.worker_word(idx) else {
                    continue;
                };
                if ww.state != WorkerState::Free {
                    continue;
                }
                let new = WorkerWord {
                    state: WorkerState::Active,
                    holder: env.me(),
                    gen: ww.gen.wrapping_add(1),
                    group: g,
                };
                let rec = self.worker(idx);
                rec.idle.store(0, Ordering::SeqCst);
                if rec
                    .state
                    .compare_exchange(
                        ww.encode(),
                        new.encode(),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                {
                    rec.pid.store(pid, Ordering::Relaxed);
                    rec.start.store(start, Ordering::Relaxed);
                    rec.served.store(0, Ordering::Relaxed);
                    return Ok(WorkerId {
                        index: idx,
                        gen: new.gen,
                    });
                }
            }
            if pass == 0 {
                for idx in 0..self.geo.workers {
                    if let Some(ww) = self.worker_word(idx) {
                        if ww.state != WorkerState::Free && !env.is_alive(ww.holder) {
                            self.reap(
                                env,
                                WorkerId {
                                    index: idx,
                                    gen: ww.gen,
                                },
                            );
                        }
                    }
                }
            }
        }
        Err(err!(
            Full,
            "all {} worker records are held by live workers",
            self.geo.workers
        ))
    }
    /// Writes the response of slot `i` (taken by `me` as `tw`) and hands
    /// it to the submitter: under the session's entry lock, `in_flight - 1`
    /// and the slot marked done (or freed, if its submitter gave up).
    pub fn respond<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        i: u32,
        tw: SlotWord,
        bytes: &[u8],
    ) -> Result<()> {
        if bytes.len() > self.geo.max_message as usize {
            return Err(err!(
                Invalid,
                "response of {} bytes is larger than the area's max_message of {} bytes",
                bytes.len(),
                self.geo.max_message
            ));
        }
        self.write_response(i, bytes);
        // A worker dying here leaves a written response in a slot that is
        // still taken: its reaper requeues the request (a test dies here).
        crate::failpoint::hit("respond-before-done");
        self.finish(env, me, i, tw, SlotState::Done)
    }

    /// The first half of [`Core::respond`]: the response bytes and their
    /// length into slot `i`, which the caller took (and which stays taken).
    /// `bytes` is at most `max_message` long.
    pub(crate) fn write_response(&self, i: u32, bytes: &[u8]) {
        self.copy_in(i, true, bytes);
        self.head(i)
            .resp_len
            .store(bytes.len() as u32, Ordering::SeqCst);
    }

    /// Fails slot `i` (taken by `me`): the worker let the request go
    /// without answering it. Its submitter gets `Unavailable`; the request
    /// is not served again.
    pub fn fail_unanswered<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        i: u32,
        tw: SlotWord,
    ) -> Result<()> {
        self.head(i)
            .status
            .store(ErrorKind::Unavailable.code(), Ordering::SeqCst);
        self.finish(env, me, i, tw, SlotState::Failed)
    }

    fn finish<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        i: u32,
        tw: SlotWord,
        to: SlotState,
    ) -> Result<()> {
        let session = self.head(i).session.load(Ordering::SeqCst);
        let mut entry = self.lock(env, session)?;
        loop {
            let cur = match self.slot_word(i) {
                Some(w)
                    if w.gen == tw.gen && w.state == SlotState::Taken && w.worker == Some(me) =>
                {
                    w
                }
                _ => {
                    return Err(err!(
                        Corrupt,
                        "request slot {i} was taken away from this worker"
                    ))
                }
            };
            let new = if cur.abandoned {
                SlotWord::free(cur.gen)
            } else {
                cur.with(to, cur.group, Some(me))
            };
            if self.cas(i, cur, new) {
                break;
            }
        }
        if let Some(e) = entry.as_mut() {
            e.set_in_flight(e.in_flight().saturating_sub(1));
        }
        drop(entry);
        if to == SlotState::Done {
            self.worker(me.index).served.fetch_add(1, Ordering::Relaxed);
        }
        self.ring_slot(i);
        Ok(())
    }
}
