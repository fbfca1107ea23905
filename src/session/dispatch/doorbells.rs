//! Doorbells: waking a submitter, a worker, an idle worker of a group.

use super::{sc_fence, Core};
use crate::session::requests::{WorkerId, WorkerState};
use crate::sync::Ordering;

impl Core {
    /// Wakes the submitter of slot `i` (the futex wake only if it may be
    /// asleep: see [`SlotHead::sleeping`](crate::session::requests::SlotHead::sleeping)).
    pub fn ring_slot(&self, i: u32) {
        let h = self.head(i);
        h.bell.atomic().fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence after the submitter's `sleeping` store: one
        // of the two sees the other's write.
        sc_fence();
        if h.sleeping.load(Ordering::SeqCst) != 0 {
            h.bell.wake(1);
        }
    }

    /// Wakes worker `idx` if it is about to sleep.
    pub(super) fn ring_worker(&self, idx: u32) {
        let w = self.worker(idx);
        if w.idle.swap(0, Ordering::SeqCst) == 1 {
            w.bell.atomic().fetch_add(1, Ordering::SeqCst);
            w.bell.wake(1);
        }
    }

    /// Wakes one idle worker of group `g` (if none is idle, every worker
    /// of the group is busy and scans the slots before it sleeps again).
    pub fn ring_any(&self, g: u32) {
        if let Some(w) = self.reserve_idle(g) {
            self.ring_reserved(w.index);
        }
    }

    /// Finds an idle worker of group `g`, from the group's round-robin
    /// cursor, and takes on waking it (its `idle` swapped from 1 to 0): the
    /// caller must then call [`Core::ring_reserved`] on it, whatever else
    /// happens. The cursor moves past the worker found, so that idle
    /// workers take turns (a cursor that only counted calls would mostly
    /// start past the group's records and land on its first one).
    pub(super) fn reserve_idle(&self, g: u32) -> Option<WorkerId> {
        let n = self.geo.workers;
        let pick = &self.group(g).pick;
        let start = pick.load(Ordering::Relaxed) % n;
        for k in 0..n {
            let idx = (start + k) % n;
            let Some(ww) = self.worker_word(idx) else {
                continue;
            };
            if ww.state != WorkerState::Active || ww.group != g {
                continue;
            }
            let rec = self.worker(idx);
            if rec.idle.load(Ordering::SeqCst) == 1
                && rec
                    .idle
                    .compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                pick.store((idx + 1) % n, Ordering::Relaxed);
                return Some(WorkerId {
                    index: idx,
                    gen: ww.gen,
                });
            }
        }
        None
    }

    /// Wakes worker `idx`, whose `idle` this caller swapped to 0.
    pub(super) fn ring_reserved(&self, idx: u32) {
        let rec = self.worker(idx);
        rec.bell.atomic().fetch_add(1, Ordering::SeqCst);
        rec.bell.wake(1);
    }
}
