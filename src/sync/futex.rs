//! A 32-bit futex word usable across processes.
//!
//! [`Futex`] wraps an `AtomicU32` that may live in a `MAP_SHARED` mapping.
//! `wait` sleeps while the word holds an expected value; `wake` wakes
//! sleepers. The non-private futex operations are used, so processes that map
//! the same file at different addresses meet on the same kernel queue.

/// What a [`Futex::wait`] call ended with. Every outcome may be spurious: the
/// caller re-checks its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by `wake`, or interrupted by a signal.
    Woken,
    /// The word did not hold the expected value: nothing to wait for.
    ValueChanged,
    /// The timeout passed.
    TimedOut,
}

#[cfg(not(loom))]
mod imp {
    use super::WaitOutcome;
    use crate::sync::{AtomicU32, Ordering};
    use std::time::Duration;

    /// A futex word. Same size and alignment as `u32`, so it can be placed
    /// in a shared mapping (`#[repr(transparent)]` over `AtomicU32`).
    #[repr(transparent)]
    #[derive(Debug, Default)]
    pub struct Futex(AtomicU32);

    impl Futex {
        /// A futex word holding `v`.
        pub const fn new(v: u32) -> Futex {
            Futex(AtomicU32::new(v))
        }

        /// The atomic word itself.
        pub fn atomic(&self) -> &AtomicU32 {
            &self.0
        }

        /// Sleeps while the word equals `expected`, at most `timeout`
        /// (`None`: no limit).
        pub fn wait(&self, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
            use rustix::io::Errno;
            use rustix::thread::futex;
            let ts = timeout.map(|d| futex::Timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            // Not FUTEX_PRIVATE: the word may be in a mapping shared with
            // other processes, which meet on the same kernel queue.
            match futex::wait(
                self.0.as_std(),
                futex::Flags::empty(),
                expected,
                ts.as_ref(),
            ) {
                Ok(()) => WaitOutcome::Woken,
                Err(Errno::AGAIN) => WaitOutcome::ValueChanged,
                Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
                // EINTR, or anything unexpected: report a (spurious) wake-up;
                // the caller re-checks its condition and its deadline.
                Err(_) => WaitOutcome::Woken,
            }
        }

        /// Wakes at most `n` sleepers; returns how many were woken.
        pub fn wake(&self, n: u32) -> u32 {
            let n = n.min(i32::MAX as u32);
            rustix::thread::futex::wake(self.0.as_std(), rustix::thread::futex::Flags::empty(), n)
                .map_or(0, |woken| woken as u32)
        }

        /// `load` on the word.
        pub fn load(&self, o: Ordering) -> u32 {
            self.0.load(o)
        }
    }
}

#[cfg(loom)]
mod imp {
    use super::WaitOutcome;
    use crate::sync::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::time::Duration;

    /// Loom model of a futex word: an atomic plus a mutex/condvar pair that
    /// stands in for the kernel's wait queue.
    #[derive(Debug)]
    pub struct Futex {
        word: AtomicU32,
        queue: Mutex<()>,
        cv: Condvar,
    }

    impl Futex {
        /// A futex word holding `v`.
        pub fn new(v: u32) -> Futex {
            Futex {
                word: AtomicU32::new(v),
                queue: Mutex::new(()),
                cv: Condvar::new(),
            }
        }

        /// The atomic word itself.
        pub fn atomic(&self) -> &AtomicU32 {
            &self.word
        }

        /// Sleeps while the word equals `expected`. Timeouts are ignored in
        /// the model (see the module docs).
        pub fn wait(&self, expected: u32, _timeout: Option<Duration>) -> WaitOutcome {
            let guard = self.queue.lock().unwrap();
            if self.word.load(Ordering::SeqCst) != expected {
                return WaitOutcome::ValueChanged;
            }
            drop(self.cv.wait(guard).unwrap());
            WaitOutcome::Woken
        }

        /// Wakes sleepers (all of them: extra wake-ups are spurious ones,
        /// which every caller tolerates). Returns `n`.
        pub fn wake(&self, n: u32) -> u32 {
            let _guard = self.queue.lock().unwrap();
            self.cv.notify_all();
            n
        }

        /// `load` on the word.
        pub fn load(&self, o: Ordering) -> u32 {
            self.word.load(o)
        }
    }
}

pub use imp::Futex;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn wait_on_other_value_returns_at_once() {
        let f = Futex::new(5);
        assert_eq!(f.wait(4, None), WaitOutcome::ValueChanged);
    }

    #[test]
    fn wait_times_out() {
        let f = Futex::new(0);
        let t = Instant::now();
        assert_eq!(
            f.wait(0, Some(Duration::from_millis(30))),
            WaitOutcome::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(25));
    }

    /// A sleeper is woken by `wake`, not by its timeout: the waker retries
    /// until the kernel reports one sleeper woken (the thread may not be
    /// asleep yet), and the waiter's one `wait` call must then return
    /// `Woken`, well within its 10 s timeout. The word never changes, so
    /// nothing but the wake can end the wait before the timeout.
    #[test]
    fn wake_wakes_a_sleeper() {
        let timeout = Duration::from_secs(10);
        let f = Arc::new(Futex::new(0));
        let f2 = f.clone();
        let h = std::thread::spawn(move || {
            let t = Instant::now();
            (f2.wait(0, Some(timeout)), t.elapsed())
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.wake(1) == 0 {
            assert!(
                Instant::now() < deadline,
                "the waiter never slept on the word"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let (outcome, took) = h.join().unwrap();
        assert_eq!(outcome, WaitOutcome::Woken, "after {took:?}");
        assert!(took < timeout / 2, "woken only after {took:?}");
    }
}
