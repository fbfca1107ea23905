//! Loom models of the notification semaphore, one invariant each.
//!
//! Run with `make loom` (release, `LOOM_MAX_PREEMPTIONS=3`). Waiters here
//! wait with no timeout: under loom the futex ignores timeouts, so a lost
//! wake-up would leave a thread asleep forever and loom reports a deadlock.

use super::SemCore;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

/// No lost wake-up: a waiter that blocks before, during or after a post is
/// always woken by it (two waiters, two single posts from two threads).
#[test]
fn no_lost_wakeup() {
    loom::model(|| {
        let s = Arc::new(SemCore::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || assert!(s.wait(None)))
            })
            .collect();
        let s2 = s.clone();
        let poster = thread::spawn(move || s2.post(1).unwrap());
        s.post(1).unwrap();
        poster.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(s.value(), 0);
    });
}

/// `post(n)` with k < n waiters: exactly k decrements, n - k left over.
#[test]
fn post_n_with_fewer_waiters_leaves_the_rest() {
    loom::model(|| {
        let s = Arc::new(SemCore::new());
        let taken = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (s, taken) = (s.clone(), taken.clone());
                thread::spawn(move || {
                    assert!(s.wait(None));
                    taken.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        s.post(3).unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(taken.load(Ordering::SeqCst), 2);
        assert_eq!(s.value(), 1);
    });
}

/// `reset()` racing with a waiter and a poster never drives the count below
/// zero (it is never observed above the number of posts) and never loses a
/// post made after it.
#[test]
fn reset_never_loses_a_later_post() {
    loom::model(|| {
        let s = Arc::new(SemCore::new());
        let taken = Arc::new(AtomicU32::new(0));

        let s1 = s.clone();
        let resetter = thread::spawn(move || {
            s1.reset();
            s1.post(1).unwrap(); // made after the reset: must survive
        });
        let s2 = s.clone();
        let poster = thread::spawn(move || s2.post(1).unwrap());
        let (s3, t3) = (s.clone(), taken.clone());
        let waiter = thread::spawn(move || {
            if s3.try_wait() {
                t3.fetch_add(1, Ordering::SeqCst);
            }
            assert!(s3.value() <= 2);
        });
        resetter.join().unwrap();
        poster.join().unwrap();
        waiter.join().unwrap();

        let left = s.value();
        let taken = taken.load(Ordering::SeqCst);
        // Two posts in all; the reset may erase at most the one that was
        // not made after it, so at least one unit was taken or is left.
        assert!(left + taken >= 1, "left {left} taken {taken}");
        assert!(left + taken <= 2, "left {left} taken {taken}");
    });
}
