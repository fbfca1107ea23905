//! A lock word in shared memory whose dead holder is taken over.
//!
//! The word holds the holder's [`Holder`] (its process record and the
//! record's generation) and the [`WAITERS`] bit; waiters sleep on it as a
//! futex. A process can die while it holds the lock (`kill -9` between
//! lock and unlock), and then nobody will ever unlock it: a waiter that has
//! slept [`LIVENESS_EVERY`] asks [`Liveness`] whether the holder is still
//! there, and if not, replaces the dead holder's word with its own in one
//! CAS. Of all the processes that try, exactly one wins; it learns that it
//! took the lock over (the data under the lock may be half-changed) and
//! repairs what the lock protects before it goes on.
//!
//! The session table's entries and the permit arbiter use it.

use crate::error::{Error, Result};
use crate::shm::records::{Holder, Liveness, WAITERS};
use crate::sync::{Futex, Ordering};
use std::time::{Duration, Instant};

/// Tries of the lock, with a yield between them, before sleeping.
#[cfg(not(loom))]
const SPIN: u32 = 64;
#[cfg(loom)]
const SPIN: u32 = 0;

/// Longest sleep of a lock waiter before it checks the holder's liveness
/// again (a dead holder never wakes anybody).
pub const LIVENESS_EVERY: Duration = Duration::from_millis(10);

/// Under loom every wait checks liveness (real time must not steer a model).
const CHECK_ALWAYS: bool = cfg!(loom);

/// How a lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// From a free word, or from a holder that unlocked.
    Clean,
    /// Over from a holder that died holding it: what it protects may be
    /// half-changed, and the new holder must repair it.
    OverDead(Holder),
}

/// A lock word in a region (`#[repr(transparent)]` over a 4-byte futex;
/// all zero is unlocked).
#[repr(transparent)]
#[derive(Debug)]
pub struct RobustLock {
    word: Futex,
}

impl Default for RobustLock {
    fn default() -> Self {
        RobustLock::new()
    }
}

impl RobustLock {
    /// An unlocked word (for loom models and tests; shared ones live in
    /// mapped files, where zero bytes are this).
    pub fn new() -> RobustLock {
        RobustLock {
            word: Futex::new(0),
        }
    }

    /// The raw word (holder | [`WAITERS`]), for diagnostics and tests.
    pub fn word(&self) -> u32 {
        self.word.atomic().load(Ordering::Relaxed)
    }

    /// Takes the lock if it is free, without waiting.
    pub fn try_lock(&self, me: Holder) -> bool {
        self.word
            .atomic()
            .compare_exchange(0, me.0, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Unlocks, waking the sleepers if there are any. The caller holds it.
    pub fn unlock(&self) {
        if self.word.atomic().swap(0, Ordering::Release) & WAITERS != 0 {
            self.word.wake(u32::MAX);
        }
    }

    /// Takes the lock over from a holder whose word is exactly `dead` (the
    /// caller has found it dead): one CAS, so of all the processes that try,
    /// exactly one wins. The winner must repair what the lock protects.
    pub fn take_over(&self, dead: u32, me: Holder) -> bool {
        dead != 0
            && self
                .word
                .atomic()
                .compare_exchange(dead, me.0 | WAITERS, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Takes the lock, waiting until `deadline` (`None`: no limit): tries,
    /// spins briefly, then sleeps on the word, checking the holder's
    /// liveness every [`LIVENESS_EVERY`] and taking the lock over from a
    /// dead holder. When the deadline passes first, the error is
    /// `timeout(holder)` (the caller names what it waited for).
    pub fn lock(
        &self,
        me: Holder,
        live: &dyn Liveness,
        deadline: Option<Instant>,
        timeout: impl Fn(Holder) -> Error,
    ) -> Result<Taken> {
        if self.try_lock(me) {
            return Ok(Taken::Clean);
        }
        self.lock_wait(me, live, deadline, &timeout)
    }

    fn lock_wait(
        &self,
        me: Holder,
        live: &dyn Liveness,
        deadline: Option<Instant>,
        timeout: &dyn Fn(Holder) -> Error,
    ) -> Result<Taken> {
        let word = self.word.atomic();
        for _ in 0..SPIN {
            crate::sync::yield_now();
            if word.load(Ordering::Relaxed) == 0 && self.try_lock(me) {
                return Ok(Taken::Clean);
            }
        }
        let mut checked: Option<Instant> = None;
        loop {
            let cur = word.load(Ordering::Relaxed);
            if cur == 0 {
                // Somebody may still sleep: keep the flag so they are woken.
                if word
                    .compare_exchange(0, me.0 | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Taken::Clean);
                }
                continue;
            }
            let due = CHECK_ALWAYS || checked.map_or(true, |t| t.elapsed() >= LIVENESS_EVERY);
            if due {
                checked = Some(Instant::now());
                let holder = Holder::from_word(cur);
                if !live.is_alive(holder) {
                    if self.take_over(cur, me) {
                        return Ok(Taken::OverDead(holder));
                    }
                    continue;
                }
            }
            let mut slice = LIVENESS_EVERY;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timeout(Holder::from_word(cur)));
                }
                slice = slice.min(left);
            }
            if cur & WAITERS == 0
                && word
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            self.word.wait(cur | WAITERS, Some(slice));
        }
    }
}
