//! The calling thread's scheduling policy: a library thread that only
//! waits for work on the application's behalf (an advertisement's waiter)
//! runs as `SCHED_BATCH`, so that its wake-ups do not preempt the
//! application's threads (it still shares the CPU with them at the
//! scheduler's ticks), and what it starts or calls for the application (a
//! connection's handler thread, the logger) gets back the policy the
//! thread had before.
//!
//! `sched_getscheduler(2)` and `sched_setscheduler(2)` with pid 0 act on
//! the calling thread. rustix does not wrap them; they are called through
//! `libc` here and nowhere else.

/// A thread's scheduling policy and static priority, as
/// `sched_getscheduler` and `sched_getparam` give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedPolicy {
    /// `SCHED_OTHER`, `SCHED_BATCH`, `SCHED_IDLE`, `SCHED_FIFO`, ...
    /// (with `SCHED_RESET_ON_FORK` if the thread had it).
    pub policy: i32,
    /// The static priority (0 for the time-sharing policies).
    pub priority: i32,
}

impl SchedPolicy {
    /// The calling thread's policy; `None` if the kernel refuses to say
    /// (it does not for the calling thread, short of a seccomp filter).
    pub fn current() -> Option<SchedPolicy> {
        // SAFETY: pid 0 is the calling thread; `param` is a valid out
        // parameter for `sched_getparam`.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            if policy < 0 {
                return None;
            }
            let mut param = libc::sched_param { sched_priority: 0 };
            if libc::sched_getparam(0, &mut param) != 0 {
                return None;
            }
            Some(SchedPolicy {
                policy,
                priority: param.sched_priority,
            })
        }
    }

    /// The policy without the `SCHED_RESET_ON_FORK` flag.
    pub fn base(&self) -> i32 {
        self.policy & !libc::SCHED_RESET_ON_FORK
    }

    /// `base` (a time-sharing policy, priority 0), keeping this policy's
    /// `SCHED_RESET_ON_FORK` flag.
    fn as_base(&self, base: i32) -> SchedPolicy {
        SchedPolicy {
            policy: base | (self.policy & libc::SCHED_RESET_ON_FORK),
            priority: 0,
        }
    }

    /// Gives this policy to the calling thread.
    pub fn apply(&self) -> std::io::Result<()> {
        let param = libc::sched_param {
            sched_priority: self.priority,
        };
        // SAFETY: pid 0 is the calling thread; `param` is valid.
        if unsafe { libc::sched_setscheduler(0, self.policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

thread_local! {
    /// The policy this thread had before [`become_background`] made it
    /// batch (`None` on other threads, and on one left as it was).
    static FOREGROUND: std::cell::Cell<Option<SchedPolicy>> = const { std::cell::Cell::new(None) };
}

/// Makes the calling thread a background thread: `SCHED_BATCH` (same nice
/// value) if it runs under the default `SCHED_OTHER`, so that its
/// wake-ups do not preempt the running thread. A thread that has another
/// policy (real time, `SCHED_IDLE`, already batch) keeps it. Lowering
/// one's own policy needs no privilege; if it fails anyway the thread
/// simply stays as it was. [`foreground_policy`] then gives what the
/// thread had, for the threads it starts and the code it runs on the
/// application's behalf.
pub fn become_background() {
    let Some(had) = SchedPolicy::current() else {
        return;
    };
    if had.base() != libc::SCHED_OTHER {
        return;
    }
    if had.as_base(libc::SCHED_BATCH).apply().is_ok() {
        FOREGROUND.with(|f| f.set(Some(had)));
    }
}

/// The policy the calling thread had before [`become_background`] made it
/// batch; `None` if it did not.
pub fn foreground_policy() -> Option<SchedPolicy> {
    FOREGROUND.with(|f| f.get())
}

/// Gives the calling thread `policy` (what a background thread had, see
/// [`foreground_policy`]), falling back to `SCHED_OTHER`, which a batch
/// thread may always return to, if the kernel refuses it.
pub fn become_foreground(policy: SchedPolicy) {
    if policy.apply().is_err() {
        let _ = policy.as_base(libc::SCHED_OTHER).apply();
    }
}

/// Runs `f` with the calling thread back at its [`foreground_policy`] if
/// it is a background thread (for application code the library calls
/// from one: a logger, which may start threads of its own that would
/// inherit batch), and batch again afterwards.
pub fn in_foreground<T>(f: impl FnOnce() -> T) -> T {
    let Some(fg) = foreground_policy() else {
        return f();
    };
    become_foreground(fg);
    let r = f();
    let _ = fg.as_base(libc::SCHED_BATCH).apply();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> i32 {
        SchedPolicy::current().unwrap().base()
    }

    /// Test threads start as `SCHED_OTHER` whatever policy the runner has
    /// (root may leave `SCHED_IDLE`; these tests run as root in CI).
    fn other() -> SchedPolicy {
        let p = SchedPolicy {
            policy: libc::SCHED_OTHER,
            priority: 0,
        };
        p.apply().expect("SCHED_OTHER");
        p
    }

    #[test]
    fn background_thread_is_batch_and_gives_back_what_it_had() {
        std::thread::spawn(|| {
            let before = other();
            assert_eq!(foreground_policy(), None);
            become_background();
            assert_eq!(base(), libc::SCHED_BATCH);
            let had = foreground_policy().expect("made batch");
            assert_eq!(had, before);
            // Application code run from it sees the policy it had.
            assert_eq!(in_foreground(base), libc::SCHED_OTHER);
            assert_eq!(base(), libc::SCHED_BATCH);
            // A thread started from it inherits batch until it applies
            // what the application had.
            let child = std::thread::spawn(move || {
                let inherited = base();
                become_foreground(had);
                (inherited, SchedPolicy::current().unwrap())
            })
            .join()
            .unwrap();
            assert_eq!(child.0, libc::SCHED_BATCH);
            assert_eq!(child.1, before);
            // Already batch: left as it is, and what it had is kept.
            become_background();
            assert_eq!(base(), libc::SCHED_BATCH);
            assert_eq!(foreground_policy(), Some(had));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_idle_thread_keeps_its_policy() {
        std::thread::spawn(|| {
            other();
            SchedPolicy {
                policy: libc::SCHED_IDLE,
                priority: 0,
            }
            .apply()
            .unwrap();
            become_background();
            assert_eq!(base(), libc::SCHED_IDLE);
            assert_eq!(foreground_policy(), None);
            assert_eq!(in_foreground(base), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_refused_policy_falls_back_to_other() {
        std::thread::spawn(|| {
            other();
            become_background();
            // SCHED_DEADLINE cannot be set with sched_setscheduler.
            become_foreground(SchedPolicy {
                policy: libc::SCHED_DEADLINE,
                priority: 0,
            });
            assert_eq!(base(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
