//! The attach round's synchronization, independent of files and sockets.
//!
//! DESIGN.md steps 2-4 and 7 (docs/attach.md, "The round") come down to a
//! few shared words and locks: the domain's notification semaphore, one
//! `state` word per advertisement and one synchronization lock per
//! advertisement. This module is that logic and nothing else, written once
//! over the [`crate::sync`] shim and a [`SyncLock`] trait, so that the same
//! code runs between processes (`flock` on the synchronization files, words
//! in mapped files) and under loom (`round_models`), where it is
//! model-checked.
//!
//! The attacher's side is [`attacher_round`]; each advertisement's waiter
//! runs [`waiter_round`] in a loop.

use crate::error::{err, Result};
use crate::sync::{Futex, Ordering, SemCore, WaitResult};
use std::time::{Duration, Instant};

/// `state` word: the waiter is busy (in a round, or not started).
pub const BUSY: u32 = 0;
/// `state` word: the waiter is at the semaphore, ready for a round.
pub const IDLE: u32 = 1;

/// Bit of a `state` word that an attacher sets before it sleeps on the
/// word: a waiter that changes its state calls the futex wake only when the
/// bit was set (and its store clears it), so the common round, where
/// nobody sleeps on the word, costs the waiter no system call here.
pub const WATCHED: u32 = 1 << 31;

/// The state (`BUSY` or `IDLE`) a `state` word holds, without [`WATCHED`].
pub fn state_value(word: &Futex) -> u32 {
    word.load(Ordering::Acquire) & !WATCHED
}

/// Sets a `state` word (the waiter's side), waking whoever watches it.
pub fn set_state(word: &Futex, value: u32) {
    if word.atomic().swap(value, Ordering::AcqRel) & WATCHED != 0 {
        word.wake(u32::MAX);
    }
}

/// The synchronization lock of one advertisement: the attacher holds it
/// exclusively for the round; the waiter takes it shared after its
/// decrement, which blocks it until the round is over.
pub trait SyncLock {
    /// Takes the lock exclusively (the attacher), waiting at most until
    /// `deadline` (`None`: no limit; `Timeout` when it passes).
    fn lock_exclusive(&self, deadline: Option<Instant>) -> Result<()>;
    /// Takes the lock shared (the waiter), blocking while it is held
    /// exclusively.
    fn lock_shared(&self) -> Result<()>;
    /// Releases whichever the caller holds.
    fn unlock(&self) -> Result<()>;
}

/// One advertisement as the attacher sees it during a round.
pub struct Participant<'a, L: SyncLock> {
    /// The waiter's `state` word.
    pub state: &'a Futex,
    /// Its synchronization lock.
    pub lock: &'a L,
    /// Whether its process still lives (a dead one is not waited for).
    pub alive: &'a dyn Fn() -> bool,
    /// Whether it is the round's target.
    pub target: bool,
}

/// How long the attacher waits for participants other than the target:
/// to come back to the semaphore before the round (step 1), and to take
/// their unit after the target has answered (step 6). A participant still
/// busy then (a stopped or very slow process) sits the round out: it is
/// still locked and counted, but nobody waits for it, so one stuck tenant
/// cannot slow every attach down to the full timeout.
pub const GRACE: Duration = Duration::from_millis(100);

/// The end of a grace period starting now, never past `deadline`. Under
/// loom (no real time) it is just `deadline`.
fn grace_until(deadline: Option<Instant>) -> Option<Instant> {
    if cfg!(loom) {
        return deadline;
    }
    let g = Instant::now() + GRACE;
    Some(deadline.map_or(g, |d| d.min(g)))
}

/// What the attacher does in the middle of its round, between the posts
/// and the clean-up: connect to the relay and wait for the target's answer.
pub type AwaitTarget<'a> = &'a mut dyn FnMut(Option<Instant>) -> Result<()>;

/// Longest single sleep of the attacher while it waits on a `state` word,
/// so that it notices a participant's death.
const STATE_RECHECK: Duration = Duration::from_millis(20);

/// Waits until `state` holds `want` (or `alive()` turns false), at most
/// until `deadline`. Returns false on timeout. (Public for the attach
/// bench's phase breakdown, which replays the round step by step.)
pub fn wait_state(
    state: &Futex,
    want: u32,
    alive: &dyn Fn() -> bool,
    deadline: Option<Instant>,
) -> bool {
    loop {
        let cur = state.load(Ordering::Acquire);
        if cur & !WATCHED == want || !alive() {
            return true;
        }
        // Mark the word watched before sleeping, so that the waiter's next
        // change wakes us; if it changed meanwhile, look again.
        if cur & WATCHED == 0
            && state
                .atomic()
                .compare_exchange(cur, cur | WATCHED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            continue;
        }
        let slice = match deadline {
            None => STATE_RECHECK,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                left.min(STATE_RECHECK)
            }
        };
        state.wait(cur | WATCHED, Some(slice));
    }
}

/// The attacher's round, once it holds the domain's attach lock and has
/// written the response file (`write_response`, called at the right step):
///
/// 0. reset the semaphore: under the attach lock no round is running, so
///    any unit there is a leftover of a round whose attacher died;
/// 1. wait until every live participant is back at the semaphore (`IDLE`):
///    the target until the deadline, the others for [`GRACE`];
/// 2. `write_response()`;
/// 3. lock every participant's synchronization lock;
/// 4. post one unit per participant;
/// 5. `await_target(deadline)`: the target has answered;
/// 6. wait (for at most [`GRACE`]) until every live participant has taken
///    its unit (`BUSY`);
/// 7. reset the semaphore, unlock every lock, `remove_response()`.
///
/// Step 7 runs on every exit after step 3 (also on errors and timeouts).
/// Returns the count the reset cleared: units of participants that died
/// during the round, plus any a waiter had no time to take.
pub fn attacher_round<L: SyncLock>(
    sem: &SemCore,
    participants: &[Participant<'_, L>],
    deadline: Option<Instant>,
    write_response: &mut dyn FnMut() -> Result<()>,
    await_target: AwaitTarget<'_>,
    remove_response: &mut dyn FnMut(),
) -> Result<u32> {
    sem.reset();
    let others_until = grace_until(deadline);
    for p in participants {
        let until = if p.target { deadline } else { others_until };
        if !wait_state(p.state, IDLE, p.alive, until) && p.target {
            return Err(err!(
                Timeout,
                "the tenant's waiter is still busy with an earlier round"
            ));
        }
    }
    write_response()?;
    let mut locked = 0;
    let mut result = participants.iter().try_for_each(|p| {
        p.lock.lock_exclusive(deadline)?;
        locked += 1;
        Ok(())
    });
    if result.is_ok() {
        result = sem.post(participants.len() as u32);
    }
    if result.is_ok() {
        result = await_target(deadline);
    }
    if result.is_ok() {
        // Every waiter takes its unit once: the others are done with their
        // search once they are BUSY. One still asleep after the grace period
        // loses its unit to the reset below and simply sits this round out.
        let until = grace_until(deadline);
        for p in participants {
            wait_state(p.state, BUSY, p.alive, until);
        }
    }
    let cleared = sem.reset();
    for p in &participants[..locked] {
        // Unlocking a lock we hold cannot fail on a live descriptor; if it
        // ever does, the kernel releases it when the descriptor closes.
        let _ = p.lock.unlock();
    }
    remove_response();
    result.map(|()| cleared)
}

/// How one [`waiter_round`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// A round happened: the waiter took its unit, searched, and the round
    /// is over.
    Round,
    /// `stop()` became true before any unit was taken.
    Stopped,
}

/// One round of an advertisement's waiter:
///
/// 1. mark `state` `IDLE`, wait on the semaphore (checking `stop` at least
///    every `stop_check`);
/// 2. took one unit: mark `state` `BUSY`;
/// 3. `on_wake()`: look for a response file addressed to us, act on it;
/// 4. take the synchronization lock shared (blocks until the attacher
///    unlocks it), release it.
///
/// A waiter thus takes at most one unit per round: it cannot reach the
/// semaphore again before the attacher's reset.
pub fn waiter_round<L: SyncLock>(
    sem: &SemCore,
    state: &Futex,
    lock: &L,
    stop_check: Duration,
    stop: &dyn Fn() -> bool,
    on_wake: &mut dyn FnMut(),
) -> Result<Waited> {
    set_state(state, IDLE);
    match sem.wait_or_stop(None, stop_check, stop) {
        WaitResult::Taken => {}
        WaitResult::Stopped | WaitResult::TimedOut => {
            set_state(state, BUSY);
            return Ok(Waited::Stopped);
        }
    }
    set_state(state, BUSY);
    on_wake();
    lock.lock_shared()?;
    lock.unlock()?;
    Ok(Waited::Round)
}
