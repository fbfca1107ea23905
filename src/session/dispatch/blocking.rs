//! The two blocking loops: a worker waiting for a request, a submitter
//! waiting for its response.

#[cfg(not(loom))]
use super::CHECK_EVERY;
use super::{sc_fence, Core, Env, Outcome, Taken};
#[cfg(not(loom))]
use crate::error::err;
use crate::error::Result;
use crate::session::requests::WorkerId;
use crate::sync::Ordering;

impl Core {
    /// One round of worker `me` of group `g`: takes a request if one is
    /// queued; else marks the worker idle, scans again,
    /// spins up to `spins` times on its doorbell, sleeps on it at most
    /// `sleep` (`None`: until rung), then scans once more. A worker that was
    /// rung for a request of any worker and sees more of them passes the
    /// ring on to another idle worker of the group. `full`: the scans look
    /// at every slot, not only those the group's summary marks.
    #[allow(clippy::too_many_arguments)]
    pub fn next_once<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        g: u32,
        cursor: &mut u32,
        sleep: Option<std::time::Duration>,
        spins: u32,
        full: bool,
    ) -> Option<Taken> {
        // Busy: take without announcing idleness (no doorbell rings then).
        if let Some(t) = self.take(env, me, g, cursor, full) {
            return Some(t);
        }
        let rec = self.worker(me.index);
        // Whoever queues a request for this worker after this store either
        // is seen by the scan below or sees `idle` and rings the doorbell,
        // which then no longer holds `s`.
        rec.idle.store(1, Ordering::SeqCst);
        sc_fence();
        let s = rec.bell.load(Ordering::SeqCst);
        let mut t = self.take(env, me, g, cursor, full);
        if t.is_none() {
            for k in 0..spins {
                if rec.bell.load(Ordering::Relaxed) != s {
                    break;
                }
                // As in `wait`: a submitter waiting for our last response
                // may share this CPU; spinning without yielding keeps it
                // off until the spin ends.
                if k % 64 == 63 {
                    crate::sync::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            // Whoever swapped `idle` to 0 has taken on waking this worker,
            // and its ring may be in `s` already: a ring meant for a request
            // this worker took meanwhile, which consumed this round's
            // `idle` (found by the loom model `summary_never_hides_a_request`:
            // a later submitter then sees `idle` 0 and rings nobody). Such a
            // ring is read in `s` only after its swap, so this load sees 0:
            // look again instead of sleeping.
            if rec.bell.load(Ordering::SeqCst) == s && rec.idle.load(Ordering::SeqCst) == 1 {
                rec.bell.wait(s, sleep);
            }
        }
        let rung = rec.idle.swap(0, Ordering::SeqCst) == 0;
        if t.is_none() {
            t = self.take(env, me, g, cursor, full);
        }
        if rung && t.as_ref().is_some_and(|t| t.more) {
            self.ring_any(g);
        }
        t
    }

    /// The submitter's wait for slot `i` (generation `gen`): spins up to
    /// `spins` times, then sleeps on the slot's futex, checking the
    /// request's worker (or group) whenever `*next_check` has passed, and
    /// then every [`CHECK_EVERY`] (under loom: before every sleep; `None`:
    /// [`CHECK_EVERY`] after this wait first goes to sleep).
    /// `*next_check` belongs to the ticket, so that short waits in a loop
    /// still check. `Timeout` once `timeout` has passed since the call
    /// (ignored under loom). A response that is already there is returned
    /// without reading the clock.
    pub fn wait<E: Env>(
        &self,
        env: &E,
        i: u32,
        gen: u32,
        timeout: Option<std::time::Duration>,
        spins: u32,
        next_check: &mut Option<std::time::Instant>,
    ) -> Result<Outcome> {
        let h = self.head(i);
        // The deadline, once the clock was read (at once when spinning,
        // else before the first sleep).
        #[cfg(not(loom))]
        let mut deadline: Option<Option<std::time::Instant>> = None;
        #[cfg(not(loom))]
        if spins > 0 {
            deadline = Some(timeout.and_then(|t| std::time::Instant::now().checked_add(t)));
        }
        for k in 0..spins {
            if let Some(o) = self.poll(i, gen)? {
                return Ok(o);
            }
            if k % 64 == 63 {
                crate::sync::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        #[cfg(loom)]
        let _ = (next_check, timeout);
        // From here on whoever changes the slot calls the futex wake
        // (`ring_slot`): this store comes before the state is read below,
        // so either that read sees the change or the ringer sees the flag.
        h.sleeping.store(1, Ordering::SeqCst);
        sc_fence();
        loop {
            let s = h.bell.load(Ordering::SeqCst);
            if let Some(o) = self.poll(i, gen)? {
                return Ok(o);
            }
            #[cfg(loom)]
            let (due, slice) = (true, None);
            #[cfg(not(loom))]
            let (due, slice) = {
                let now = std::time::Instant::now();
                let deadline =
                    *deadline.get_or_insert_with(|| timeout.and_then(|t| now.checked_add(t)));
                if deadline.is_some_and(|d| now >= d) {
                    return Err(err!(
                        Timeout,
                        "no response to the request in slot {i} within the timeout"
                    ));
                }
                let next = *next_check.get_or_insert(now + CHECK_EVERY);
                let due = now >= next;
                if due {
                    *next_check = Some(now + CHECK_EVERY);
                }
                let mut slice = next_check.unwrap_or(now).saturating_duration_since(now);
                if let Some(d) = deadline {
                    slice = slice.min(d.saturating_duration_since(now));
                }
                (due, Some(slice))
            };
            if due {
                self.check_request(env, i, gen);
                if h.bell.load(Ordering::SeqCst) != s {
                    continue;
                }
            }
            h.bell.wait(s, slice);
        }
    }
}
