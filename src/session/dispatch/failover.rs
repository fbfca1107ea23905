//! A worker that leaves: unregistered by itself, or reaped once dead by
//! whoever notices first; its slots go to another worker of its group or
//! fail.

use super::{sc_fence, Core, EntryOps, Env};
use crate::error::ErrorKind;
use crate::session::requests::{SlotState, SlotWord, WorkerId, WorkerState, WorkerWord};
use crate::shm::records::Holder;
use crate::sync::Ordering;

impl Core {
    /// Unregisters this process's worker `me` (its `Worker` was dropped):
    /// as [`Core::reap`] does for a dead one, every slot queued to or
    /// taken by it goes to another worker of its group (or fails), the
    /// bindings to it are removed and the record is freed. Returns whether
    /// this call did it (false if the record was reaped already).
    pub fn unregister<E: Env>(&self, env: &E, me: WorkerId) -> bool {
        self.take_down(env, me, true)
    }

    /// Reaps worker `x` if it is dead: exactly one process wins the
    /// record's compare-and-swap to *reaping*; it moves every slot queued
    /// to or taken by `x` off it, removes the bindings to it, and frees
    /// the record. Returns whether this call did the reaping.
    pub fn reap<E: Env>(&self, env: &E, x: WorkerId) -> bool {
        self.take_down(env, x, false)
    }

    /// The body of [`Core::unregister`] (`own`: `x` is this process's
    /// live worker) and [`Core::reap`] (`x` must be dead).
    fn take_down<E: Env>(&self, env: &E, x: WorkerId, own: bool) -> bool {
        let rec = self.worker(x.index);
        let group;
        loop {
            let Some(ww) = self.worker_word(x.index) else {
                return false;
            };
            if ww.gen != x.gen || ww.state == WorkerState::Free {
                return false;
            }
            if ww.holder == env.me() && !(own && ww.state == WorkerState::Active) {
                return false; // ours and alive, or this process reaps it already
            }
            if !own && env.is_alive(ww.holder) {
                return false;
            }
            let to = WorkerWord {
                state: WorkerState::Reaping,
                holder: env.me(),
                ..ww
            };
            if rec
                .state
                .compare_exchange(ww.encode(), to.encode(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                group = ww.group;
                break;
            }
        }
        #[cfg(loom)]
        self.reaps.fetch_add(1, Ordering::Relaxed);
        rec.idle.store(0, Ordering::SeqCst);
        sc_fence();
        for i in 0..self.geo.slots {
            if let Some(w) = self.slot_word(i) {
                if w.state.in_flight() && w.worker == Some(x) {
                    self.move_off(env, i, w, x);
                }
            }
        }
        env.remove_bindings_to(x.to_ref());
        let done = WorkerWord {
            state: WorkerState::Free,
            holder: Holder::NONE,
            gen: x.gen,
            group: 0,
        };
        let reaping = WorkerWord {
            state: WorkerState::Reaping,
            holder: env.me(),
            gen: x.gen,
            group,
        };
        let _ = rec.state.compare_exchange(
            reaping.encode(),
            done.encode(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        true
    }

    /// Moves slot `i` (word `w`, naming worker `x` that is dead or gone)
    /// off `x`: under its session's entry lock, `in_flight - 1`, the
    /// session unbound from `x`, and the request queued to any live worker
    /// of its group (`in_flight + 1`) or failed (`Unavailable`) if the
    /// group has none. An abandoned request is freed instead.
    pub(super) fn move_off<E: Env>(&self, env: &E, i: u32, w: SlotWord, x: WorkerId) {
        // The session read may belong to a later use of the slot: then the
        // generation check under the lock below finds the slot moved on.
        let session = self.head(i).session.load(Ordering::SeqCst);
        let Ok(mut entry) = self.lock(env, session) else {
            return;
        };
        let live = self.group_has_live(env, w.group, Some(x));
        let queued;
        loop {
            let Some(cur) = self.slot_word(i) else { return };
            if cur.gen != w.gen || !cur.state.in_flight() || cur.worker != Some(x) {
                return; // somebody else moved it
            }
            let new = if cur.abandoned {
                SlotWord::free(cur.gen)
            } else if live {
                cur.with(SlotState::Queued, cur.group, None)
            } else {
                self.head(i)
                    .status
                    .store(ErrorKind::Unavailable.code(), Ordering::SeqCst);
                cur.with(SlotState::Failed, cur.group, None)
            };
            if self.cas(i, cur, new) {
                queued = new.state == SlotState::Queued;
                sc_fence();
                break;
            }
        }
        if let Some(e) = entry.as_mut() {
            if e.binding() == Some(x.to_ref()) {
                e.set_binding(None);
            }
            let n = e.in_flight().saturating_sub(1);
            e.set_in_flight(if queued { n + 1 } else { n });
        }
        drop(entry);
        let grp = self.group(w.group);
        if queued {
            grp.requeued.fetch_add(1, Ordering::Relaxed);
            self.ring_any(w.group);
        } else {
            grp.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.ring_slot(i);
    }

    /// An idle worker's look at its peers: reaps every dead worker of
    /// group `g`. Returns how many it reaped.
    pub fn check_peers<E: Env>(&self, env: &E, g: u32) -> u32 {
        let mut n = 0;
        for idx in 0..self.geo.workers {
            if let Some(ww) = self.worker_word(idx) {
                if ww.state != WorkerState::Free
                    && ww.group == g
                    && !env.is_alive(ww.holder)
                    && self.reap(
                        env,
                        WorkerId {
                            index: idx,
                            gen: ww.gen,
                        },
                    )
                {
                    n += 1;
                }
            }
        }
        n
    }
}
