//! The calling thread's scheduling policy: a library thread that only
//! waits for work on the application's behalf (an advertisement's waiter)
//! runs as `SCHED_BATCH`, so that its wake-ups never preempt the
//! application's threads, and what it starts for the application (a
//! connection's handler thread) gets back the policy the application had.
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

/// Makes the calling thread a background thread: `SCHED_BATCH` (same nice
/// value) if it runs under the default `SCHED_OTHER`. A thread the
/// application gave another policy (real time, `SCHED_IDLE`, already
/// batch) keeps it. Returns the policy it had, for the threads it starts
/// on the application's behalf ([`SchedPolicy::apply`]). Lowering one's
/// own policy needs no privilege; if it fails anyway the thread simply
/// stays as it was.
pub fn become_background() -> Option<SchedPolicy> {
    let had = SchedPolicy::current()?;
    if had.base() == libc::SCHED_OTHER {
        let batch = SchedPolicy {
            policy: libc::SCHED_BATCH | (had.policy & libc::SCHED_RESET_ON_FORK),
            priority: 0,
        };
        // Failure leaves the thread as it was, which is only slower.
        let _ = batch.apply();
    }
    Some(had)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_thread_is_batch_and_gives_back_what_it_had() {
        std::thread::spawn(|| {
            let before = SchedPolicy::current().expect("own policy");
            assert_eq!(
                before.base(),
                libc::SCHED_OTHER,
                "test threads start as SCHED_OTHER"
            );
            let had = become_background().expect("own policy");
            assert_eq!(had, before);
            assert_eq!(SchedPolicy::current().unwrap().base(), libc::SCHED_BATCH);
            // A thread started from it inherits batch until it applies
            // what the application had.
            let child = std::thread::spawn(move || {
                let inherited = SchedPolicy::current().unwrap().base();
                had.apply().unwrap();
                (inherited, SchedPolicy::current().unwrap())
            })
            .join()
            .unwrap();
            assert_eq!(child.0, libc::SCHED_BATCH);
            assert_eq!(child.1, before);
            // Already batch: left as it is.
            assert_eq!(become_background().unwrap().base(), libc::SCHED_BATCH);
            assert_eq!(SchedPolicy::current().unwrap().base(), libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_idle_thread_keeps_its_policy() {
        std::thread::spawn(|| {
            SchedPolicy {
                policy: libc::SCHED_IDLE,
                priority: 0,
            }
            .apply()
            .unwrap();
            assert_eq!(become_background().unwrap().base(), libc::SCHED_IDLE);
            assert_eq!(SchedPolicy::current().unwrap().base(), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }
}
