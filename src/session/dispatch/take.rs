//! A worker's scan for its next request, and the binding of the
//! session of a request it takes.

use super::{sc_fence, Core, EntryOps, Env};
use crate::session::requests::{SlotState, SlotWord, WorkerId, WorkerState};
use crate::sync::Ordering;

/// The set bits below `nbits` of a summary, in increasing order.
fn set_bits(words: &[u64; 4], nbits: u32) -> impl Iterator<Item = u32> + '_ {
    words.iter().enumerate().flat_map(move |(w, &x)| {
        let mut x = x;
        std::iter::from_fn(move || {
            if x == 0 {
                return None;
            }
            let b = x.trailing_zeros();
            x &= x - 1;
            Some(w as u32 * 64 + b)
        })
        .filter(move |&b| b < nbits)
    })
}

/// What a take scan has found so far.
struct Scan {
    found: Option<Taken>,
    more: bool,
}

/// Result of a take scan.
pub struct Taken {
    /// The slot.
    pub slot: u32,
    /// Its word after the take.
    pub word: SlotWord,
    /// The scan saw other requests for "any" worker of the group.
    pub more: bool,
}

impl Core {
    /// Takes the next request for worker `me` of group `g`, scanning from
    /// `*cursor`: one queued to `me`, or to any worker of `g`. A request
    /// for any worker binds its session to `me`, unless the session is
    /// bound to another live worker of `g`: it is then queued to that one
    /// and the scan goes on. Only the slots the group's summary marks are
    /// looked at (`full`: every slot, the fallback that finds a request
    /// whose queuer died before marking it).
    pub fn take<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        g: u32,
        cursor: &mut u32,
        full: bool,
    ) -> Option<Taken> {
        let n = self.geo.slots;
        let per = self.geo.per_bit();
        let nbits = self.geo.summary_bits();
        let grp = self.group(g);
        let marked: [u64; 4] = std::array::from_fn(|w| {
            if full {
                u64::MAX
            } else {
                grp.queued[w].load(Ordering::SeqCst)
            }
        });
        let start = *cursor % n;
        let b0 = start / per;
        let mut scan = Scan {
            found: None,
            more: false,
        };
        // The marked chunks in circular order from the cursor's: its own
        // from the cursor on, the others, then its own up to the cursor.
        let after = set_bits(&marked, nbits).filter(|&b| b >= b0);
        let before = set_bits(&marked, nbits).filter(|&b| b < b0);
        let again = set_bits(&marked, nbits).filter(|&b| b == b0);
        for (b, last) in after
            .map(|b| (b, false))
            .chain(before.map(|b| (b, false)))
            .chain(again.map(|b| (b, true)))
        {
            let (lo, hi) = (b * per, ((b + 1) * per).min(n));
            let (lo, hi) = match (b == b0, last) {
                (true, false) => (start, hi),
                (true, true) => (lo, start),
                _ => (lo, hi),
            };
            if lo >= hi {
                continue;
            }
            let whole = lo == b * per && hi == ((b + 1) * per).min(n);
            if !self.take_in(env, me, g, lo..hi, cursor, &mut scan) && whole {
                // Nothing queued to the group there: clear the bit, then
                // look again, so that a slot queued meanwhile (whose queuer
                // saw the bit still set) is not left unmarked.
                let (w, m) = ((b / 64) as usize, 1u64 << (b % 64));
                grp.queued[w].fetch_and(!m, Ordering::SeqCst);
                if self.take_in(env, me, g, lo..hi, cursor, &mut scan) {
                    grp.queued[w].fetch_or(m, Ordering::SeqCst);
                }
            }
            if scan.more {
                break;
            }
        }
        scan.found.map(|t| Taken {
            more: scan.more,
            ..t
        })
    }

    /// [`Core::take`] over the slots `range`. Returns whether any of them
    /// is queued to group `g` (to whichever worker) when looked at.
    fn take_in<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        g: u32,
        range: std::ops::Range<u32>,
        cursor: &mut u32,
        scan: &mut Scan,
    ) -> bool {
        let mut queued = false;
        for i in range {
            let Some(w) = self.slot_word(i) else { continue };
            if w.state != SlotState::Queued || w.group != g {
                continue;
            }
            queued = true;
            if w.worker.is_some() && w.worker != Some(me) {
                continue;
            }
            if scan.found.is_some() {
                if w.worker.is_none() {
                    scan.more = true;
                    return true;
                }
                continue;
            }
            let tw = w.with(SlotState::Taken, g, Some(me));
            if !self.cas(i, w, tw) {
                continue;
            }
            // A request for any worker, or one queued to this worker while
            // its session is not bound here (it was queued to a free
            // worker): bind the session, or pass the request on.
            let unbound = w.worker.is_none() || {
                let session = self.head(i).session.load(Ordering::SeqCst);
                env.bound_hint(session) != Some(me.to_ref())
            };
            if unbound && !self.bind_on_take(env, me, g, i, tw) {
                continue;
            }
            *cursor = i + 1;
            scan.found = Some(Taken {
                slot: i,
                word: tw,
                more: false,
            });
        }
        queued
    }

    /// See [`Core::take`]. Returns false if the slot was passed on.
    fn bind_on_take<E: Env>(&self, env: &E, me: WorkerId, g: u32, i: u32, tw: SlotWord) -> bool {
        let session = self.head(i).session.load(Ordering::SeqCst);
        let Ok(Some(mut entry)) = self.lock(env, session) else {
            return true; // the session ended, or its lock is stuck: serve it unbound
        };
        let other = match entry
            .binding()
            .and_then(|b| WorkerId::from_ref(b, self.geo.workers))
        {
            Some(x) if x == me => return true,
            Some(x) => x,
            None => {
                entry.set_binding(Some(me.to_ref()));
                return true;
            }
        };
        match self.worker_word(other.index) {
            Some(ww)
                if ww.state == WorkerState::Active
                    && ww.gen == other.gen
                    && env.is_alive(ww.holder) =>
            {
                if ww.group != g {
                    return true; // bound to a worker of another group: serve, leave it
                }
            }
            _ => {
                // Bound to a worker that is gone: take the binding over.
                entry.set_binding(Some(me.to_ref()));
                return true;
            }
        }
        // Another live worker of the group won the binding: pass it on.
        let mut cur = tw;
        loop {
            let to = cur.with(SlotState::Queued, g, Some(other));
            if self.cas(i, cur, to) {
                cur = to;
                sc_fence();
                break;
            }
            match self.slot_word(i) {
                Some(w)
                    if w.gen == tw.gen && w.state == SlotState::Taken && w.worker == Some(me) =>
                {
                    cur = w
                }
                _ => return false,
            }
        }
        // As in `queue`: the worker may have been reaped meanwhile.
        let target = if self.is_registered(other, g).is_none() {
            let aw = cur.with(SlotState::Queued, g, None);
            self.cas(i, cur, aw);
            None
        } else {
            Some(other)
        };
        drop(entry);
        match target {
            Some(t) => self.ring_worker(t.index),
            None => self.ring_any(g),
        }
        false
    }
}
