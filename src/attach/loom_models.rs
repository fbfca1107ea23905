//! Loom models of the attach round (DESIGN.md "Correctness"), one invariant
//! each, over the very code of [`super::round`]. Run by `make test-loom`.
//!
//! The synchronization lock is modelled by a loom mutex + condvar with the
//! semantics of `flock` (one exclusive holder or any number of shared
//! ones). Waits have no timeouts under loom, so a lost wake-up or a waiter
//! shut out of a round shows up as a deadlock that loom reports.

use super::round::{attacher_round, waiter_round, Participant, SyncLock, Waited, IDLE};
use crate::error::Result;
use crate::sync::{Futex, SemCore};
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use std::time::Duration;

/// `flock` semantics: (held exclusively, number of shared holders).
struct ModelLock {
    m: Mutex<(bool, u32)>,
    cv: Condvar,
}

impl ModelLock {
    fn new() -> ModelLock {
        ModelLock {
            m: Mutex::new((false, 0)),
            cv: Condvar::new(),
        }
    }
}

impl SyncLock for ModelLock {
    fn lock_exclusive(&self, _deadline: Option<std::time::Instant>) -> Result<()> {
        let mut g = self.m.lock().unwrap();
        while g.0 || g.1 > 0 {
            g = self.cv.wait(g).unwrap();
        }
        g.0 = true;
        Ok(())
    }
    fn lock_shared(&self) -> Result<()> {
        let mut g = self.m.lock().unwrap();
        while g.0 {
            g = self.cv.wait(g).unwrap();
        }
        g.1 += 1;
        Ok(())
    }
    fn try_lock_shared(&self) -> Result<bool> {
        let mut g = self.m.lock().unwrap();
        if g.0 {
            return Ok(false);
        }
        g.1 += 1;
        Ok(true)
    }
    fn unlock(&self) -> Result<()> {
        let mut g = self.m.lock().unwrap();
        if g.0 {
            g.0 = false;
        } else {
            g.1 -= 1;
        }
        self.cv.notify_all();
        Ok(())
    }
}

/// One advertisement: its state word and lock, plus what the model records.
struct Advert {
    state: Futex,
    lock: ModelLock,
    /// Units this advertisement's waiter took.
    decrements: AtomicU32,
    /// Rounds in which it found a response addressed to it.
    found: AtomicU32,
}

impl Advert {
    fn new() -> Arc<Advert> {
        Arc::new(Advert {
            state: Futex::new(super::round::BUSY),
            lock: ModelLock::new(),
            decrements: AtomicU32::new(0),
            found: AtomicU32::new(0),
        })
    }
}

/// The shared world of a model: the semaphore, the response "file" (the
/// index of the advertisement it is addressed to, or NONE) and the target's
/// answer to the attacher (the relay pairing, reduced to a semaphore).
struct World {
    sem: SemCore,
    response: AtomicU32,
    answered: SemCore,
}

const NONE: u32 = u32::MAX;

fn world() -> Arc<World> {
    Arc::new(World {
        sem: SemCore::new(),
        response: AtomicU32::new(NONE),
        answered: SemCore::new(),
    })
}

/// A waiter thread for advertisement `me`, running `rounds` rounds.
fn spawn_waiter(w: &Arc<World>, a: &Arc<Advert>, me: u32, rounds: u32) -> thread::JoinHandle<()> {
    let (w, a) = (w.clone(), a.clone());
    thread::spawn(move || {
        for _ in 0..rounds {
            let r = waiter_round(
                &w.sem,
                &a.state,
                &a.lock,
                Duration::MAX,
                &|| false,
                &mut || {
                    a.decrements.fetch_add(1, Ordering::SeqCst);
                    if w.response.load(Ordering::SeqCst) == me {
                        a.found.fetch_add(1, Ordering::SeqCst);
                        w.answered.post(1).unwrap();
                    }
                },
            )
            .unwrap();
            // NoRound: the attacher had reset and unlocked before this
            // waiter looked at its lock (its unit was still one of the
            // round's, counted above).
            assert!(matches!(r, Waited::Round | Waited::NoRound), "{r:?}");
        }
    })
}

/// One attach round for `target` over `adverts` (with their liveness).
fn round(w: &World, adverts: &[(Arc<Advert>, bool)], target: u32) -> u32 {
    let alive: Vec<Box<dyn Fn() -> bool>> = adverts
        .iter()
        .map(|(_, live)| {
            let live = *live;
            Box::new(move || live) as Box<dyn Fn() -> bool>
        })
        .collect();
    let ps: Vec<Participant<'_, ModelLock>> = adverts
        .iter()
        .zip(&alive)
        .enumerate()
        .map(|(i, ((a, _), alive))| Participant {
            state: &a.state,
            lock: &a.lock,
            alive: alive.as_ref(),
            target: i as u32 == target,
        })
        .collect();
    attacher_round(
        &w.sem,
        &ps,
        None,
        &mut || {
            w.response.store(target, Ordering::SeqCst);
            Ok(())
        },
        &mut |_| {
            assert!(w.answered.wait(None));
            Ok(())
        },
        &mut || w.response.store(NONE, Ordering::SeqCst),
    )
    .unwrap()
}

/// Every live waiter decrements exactly once per round, and the target
/// finds its response (two advertisements, one round).
#[test]
fn every_live_waiter_decrements_once_and_the_target_finds_its_response() {
    loom::model(|| {
        let w = world();
        let (a, b) = (Advert::new(), Advert::new());
        let ta = spawn_waiter(&w, &a, 0, 1);
        let tb = spawn_waiter(&w, &b, 1, 1);
        let cleared = round(&w, &[(a.clone(), true), (b.clone(), true)], 1);
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(a.decrements.load(Ordering::SeqCst), 1);
        assert_eq!(b.decrements.load(Ordering::SeqCst), 1);
        assert_eq!(b.found.load(Ordering::SeqCst), 1);
        assert_eq!(a.found.load(Ordering::SeqCst), 0);
        assert_eq!(cleared, 0);
        assert_eq!(w.sem.value(), 0);
    });
}

/// After a round the count is zero even when an advertisement is dead: its
/// unit is posted (it was counted) and nobody takes it; the reset clears it.
#[test]
fn count_is_zero_after_a_round_with_a_dead_advertisement() {
    loom::model(|| {
        let w = world();
        let live = Advert::new();
        let dead = Advert::new();
        dead.state.atomic().store(IDLE, Ordering::SeqCst); // died while idle
        let t = spawn_waiter(&w, &live, 0, 1);
        let cleared = round(&w, &[(live.clone(), true), (dead.clone(), false)], 0);
        t.join().unwrap();
        assert_eq!(live.decrements.load(Ordering::SeqCst), 1);
        assert_eq!(live.found.load(Ordering::SeqCst), 1);
        assert_eq!(cleared, 1);
        assert_eq!(w.sem.value(), 0);
    });
}

/// Rounds back to back: a waiter on its way back from round 1 is not shut
/// out of round 2 by its synchronization lock; it takes part in both, once
/// each, and finds its response both times.
#[test]
fn back_to_back_rounds_each_count_once() {
    loom::model(|| {
        let w = world();
        let a = Advert::new();
        let t = spawn_waiter(&w, &a, 0, 2);
        round(&w, &[(a.clone(), true)], 0);
        round(&w, &[(a.clone(), true)], 0);
        t.join().unwrap();
        assert_eq!(a.decrements.load(Ordering::SeqCst), 2);
        assert_eq!(a.found.load(Ordering::SeqCst), 2);
        assert_eq!(w.sem.value(), 0);
    });
}
