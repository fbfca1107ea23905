//! A session's entry lock (with the repair after a dead holder), the
//! recount of its `in_flight`, and which workers are registered.

use super::{Core, EntryOps, Env};
use crate::error::Result;
use crate::session::requests::{SlotWord, WorkerId, WorkerState, WorkerWord};
use crate::sync::Ordering;

impl Core {
    /// The number of slots that count in `session`'s `in_flight` (queued or
    /// taken and naming it). Exact when the caller holds the session's
    /// entry lock: slots only enter or leave those states under it.
    pub fn recount(&self, session: u64) -> u32 {
        let mut n = 0;
        for i in 0..self.geo.slots {
            let before = self.word(i).load(Ordering::SeqCst);
            let s = self.head(i).session.load(Ordering::SeqCst);
            let after = self.word(i).load(Ordering::SeqCst);
            // The same word before and after (the slot generation changes
            // with every claim): the session read belongs to this state.
            if before != after || s != session {
                continue;
            }
            if let Some(w) = SlotWord::decode(after, self.geo.groups, self.geo.workers) {
                if w.state.in_flight() {
                    n += 1;
                }
            }
        }
        n
    }

    /// Locks `session`'s entry, recounting its `in_flight` if the lock was
    /// taken over from a dead holder.
    pub fn lock<'e, E: Env>(&self, env: &'e E, session: u64) -> Result<Option<E::Entry<'e>>> {
        let mut g = env.lock(session)?;
        if let Some(e) = g.as_mut() {
            if e.was_repaired() {
                // The holder died in the middle of a change: the slots are
                // the truth (docs/session.md, "Repair").
                e.set_in_flight(self.recount(session));
                let bound = e
                    .binding()
                    .and_then(|b| WorkerId::from_ref(b, self.geo.workers));
                let keep = bound.is_some_and(|w| {
                    self.worker_word(w.index).is_some_and(|ww| {
                        ww.state == WorkerState::Active
                            && ww.gen == w.gen
                            && env.is_alive(ww.holder)
                    })
                });
                if e.binding().is_some() && !keep {
                    e.set_binding(None);
                }
            }
        }
        Ok(g)
    }

    /// Whether worker `w` is registered (record active at its generation)
    /// in group `g`.
    pub(super) fn is_registered(&self, w: WorkerId, g: u32) -> Option<WorkerWord> {
        self.worker_word(w.index)
            .filter(|ww| ww.state == WorkerState::Active && ww.gen == w.gen && ww.group == g)
    }

    /// Whether group `g` has a live worker other than `except`.
    pub fn group_has_live<E: Env>(&self, env: &E, g: u32, except: Option<WorkerId>) -> bool {
        (0..self.geo.workers).any(|idx| {
            self.worker_word(idx).is_some_and(|ww| {
                ww.state == WorkerState::Active
                    && ww.group == g
                    && except
                        != Some(WorkerId {
                            index: idx,
                            gen: ww.gen,
                        })
                    && env.is_alive(ww.holder)
            })
        })
    }
}
