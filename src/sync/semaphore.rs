//! The counting semaphore's logic, independent of where its word lives.
//!
//! [`SemCore`] is one futex word that *is* the count. `post(n)` adds `n` and
//! wakes `n` sleepers; `wait` takes one unit with a compare-and-swap that
//! never goes below zero, sleeping on the word while it reads zero. There is
//! no waiter counter and no lock, so no process can leave the semaphore
//! inconsistent by dying: every change is a single atomic instruction.
//!
//! One window remains: a poster killed between its atomic add and its wake
//! call leaves sleepers asleep although the count is positive. Sleepers
//! therefore never sleep longer than [`RECHECK`] before looking at the count
//! again, which bounds that delay; it costs nothing on the normal path.
//!
//! A post that woke a sleeper then yields the CPU once. On a busy host the
//! woken process is often queued on the poster's own CPU; without the yield
//! it waits there until the poster blocks or its slice ends, with it it runs
//! at once. The poster pays one `sched_yield` (well under a microsecond when
//! nothing else is runnable), and only when somebody was asleep. The wake
//! latency benchmark (`benches/wake_latency.rs`, BENCHMARKS.md) measures the
//! difference.

use crate::error::{err, Result};
use crate::sync::{Futex, Ordering};
use std::time::{Duration, Instant};

/// The largest count the semaphore holds; a post beyond it is refused.
pub const MAX_COUNT: u32 = i32::MAX as u32;

/// Longest single sleep of a waiter before it re-reads the count (see the
/// module docs).
pub const RECHECK: Duration = Duration::from_millis(250);

/// How [`SemCore::wait_or_stop`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// One unit was taken.
    Taken,
    /// The timeout passed.
    TimedOut,
    /// The stop condition became true (no unit taken).
    Stopped,
}

/// A counting semaphore over one futex word. `#[repr(C)]`: it is placed in
/// shared memory by [`crate::shm`]-backed owners such as the domain.
#[repr(C)]
#[derive(Debug)]
pub struct SemCore {
    count: Futex,
}

impl Default for SemCore {
    fn default() -> Self {
        SemCore::new()
    }
}

impl SemCore {
    /// A semaphore with count zero (for tests and loom models; shared ones
    /// live in mapped files).
    pub fn new() -> SemCore {
        SemCore {
            count: Futex::new(0),
        }
    }

    /// Adds `n` to the count and wakes up to `n` waiters, then yields the
    /// CPU if it woke any (see the module docs). Fails with `Invalid` if the
    /// count would pass [`MAX_COUNT`]; `post(0)` does nothing.
    pub fn post(&self, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let word = self.count.atomic();
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let new = match cur.checked_add(n) {
                Some(v) if v <= MAX_COUNT => v,
                _ => {
                    return Err(err!(
                        Invalid,
                        "semaphore post of {n} would overflow its count {cur} (limit {MAX_COUNT})"
                    ))
                }
            };
            match word.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        // The window the module docs describe (a test dies here).
        crate::failpoint::hit("sem-post-before-wake");
        if self.count.wake(n) > 0 {
            crate::sync::yield_now();
        }
        Ok(())
    }

    /// Takes one unit if the count is positive; never blocks.
    pub fn try_wait(&self) -> bool {
        let word = self.count.atomic();
        let mut cur = word.load(Ordering::Relaxed);
        while cur > 0 {
            match word.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
        false
    }

    /// Takes one unit, blocking while the count is zero, for at most
    /// `timeout` (`None`: no limit). Returns `false` if the timeout passed.
    // The semaphore's plain wait: Semaphore::wait uses `wait_or_stop`, so
    // only the tests and the loom models call this today.
    #[allow(dead_code)]
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        // A timeout too large to add to the clock is no limit at all.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.try_wait() {
                return true;
            }
            let slice = match deadline {
                None => RECHECK,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    left.min(RECHECK)
                }
            };
            self.count.wait(0, Some(slice));
        }
    }

    /// Like [`SemCore::wait`], and gives up as soon as `stop()` returns true;
    /// `stop` is checked before each sleep and at least every `check` while
    /// asleep. For a thread that must be stoppable from another one (an
    /// advertisement's waiter).
    pub fn wait_or_stop(
        &self,
        timeout: Option<Duration>,
        check: Duration,
        stop: &dyn Fn() -> bool,
    ) -> WaitResult {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.try_wait() {
                return WaitResult::Taken;
            }
            if stop() {
                return WaitResult::Stopped;
            }
            let mut slice = check.min(RECHECK);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return WaitResult::TimedOut;
                }
                slice = slice.min(left);
            }
            self.count.wait(0, Some(slice));
        }
    }

    /// Sets the count to zero and returns what it was. Posts made after the
    /// reset are kept; units taken before it are unaffected.
    pub fn reset(&self) -> u32 {
        self.count.atomic().swap(0, Ordering::AcqRel)
    }

    /// The current count (a snapshot).
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::local::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn post_then_wait_counts() {
        let s = SemCore::new();
        s.post(3).unwrap();
        assert_eq!(s.value(), 3);
        assert!(s.try_wait());
        assert!(s.wait(Some(Duration::ZERO)));
        assert_eq!(s.value(), 1);
        assert_eq!(s.reset(), 1);
        assert!(!s.try_wait());
        assert!(!s.wait(Some(Duration::from_millis(10))));
    }

    #[test]
    fn overflow_is_refused_and_leaves_count() {
        let s = SemCore::new();
        s.post(MAX_COUNT - 1).unwrap();
        let e = s.post(2).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        assert!(e.message().contains("overflow"), "{}", e.message());
        assert_eq!(s.value(), MAX_COUNT - 1);
        s.post(1).unwrap();
        assert_eq!(s.value(), MAX_COUNT);
    }

    #[test]
    fn post_n_wakes_exactly_n_threads() {
        let s = Arc::new(SemCore::new());
        let woke = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..5)
            .map(|_| {
                let (s, woke) = (s.clone(), woke.clone());
                std::thread::spawn(move || {
                    if s.wait(Some(Duration::from_millis(800))) {
                        woke.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        s.post(3).unwrap();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(woke.load(Ordering::SeqCst), 3);
        assert_eq!(s.value(), 0);
    }
}
