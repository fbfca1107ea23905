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

/// The synchronization lock of one advertisement: the attacher holds it
/// exclusively for the round; the waiter takes it shared after its
/// decrement, which blocks it until the round is over.
pub trait SyncLock {
    /// Takes the lock exclusively (the attacher), blocking.
    fn lock_exclusive(&self) -> Result<()>;
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
}

/// What the attacher does in the middle of its round, between the posts
/// and the clean-up: connect to the relay and wait for the target's answer.
pub type AwaitTarget<'a> = &'a mut dyn FnMut(Option<Instant>) -> Result<()>;

/// Longest single sleep of the attacher while it waits on a `state` word,
/// so that it notices a participant's death.
const STATE_RECHECK: Duration = Duration::from_millis(20);

/// How long, once the target has answered, the attacher waits at most for
/// the other waiters to take their units (step 6) before its reset. A
/// waiter that is stopped or starved that long sits the round out (the
/// reset clears its unit); without this bound one stopped tenant made every
/// attach of the domain last its whole timeout.
pub const SETTLE: Duration = Duration::from_millis(250);

/// Waits until `state` holds `want` (or `alive()` turns false), at most
/// until `deadline`. Returns false on timeout.
fn wait_state(
    state: &Futex,
    want: u32,
    alive: &dyn Fn() -> bool,
    deadline: Option<Instant>,
) -> bool {
    loop {
        let cur = state.load(Ordering::Acquire);
        if cur == want || !alive() {
            return true;
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
        state.wait(cur, Some(slice));
    }
}

/// The attacher's round, once it holds the domain's attach lock and has
/// written the response file (`write_response`, called at the right step):
///
/// 0. reset the semaphore: under the attach lock no round is running, so
///    any unit there is a leftover of a round whose attacher died;
/// 1. wait until every live participant is back at the semaphore (`IDLE`);
/// 2. `write_response()`;
/// 3. lock every participant's synchronization lock;
/// 4. post one unit per participant;
/// 5. `await_target(deadline)`: the target has answered;
/// 6. wait until every live participant has taken its unit (`BUSY`), at
///    most [`SETTLE`] (and never past `deadline`; with no deadline, without
///    limit);
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
    for p in participants {
        if !wait_state(p.state, IDLE, p.alive, deadline) {
            return Err(err!(
                Timeout,
                "an advertisement's waiter did not come back from the previous round in time"
            ));
        }
    }
    write_response()?;
    let mut locked = 0;
    let mut result = participants.iter().try_for_each(|p| {
        p.lock.lock_exclusive()?;
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
        // search once they are BUSY. The target has answered: a slow one
        // past SETTLE loses its unit to the reset below and simply sits
        // this round out.
        let settle = deadline.map(|d| d.min(Instant::now() + SETTLE));
        for p in participants {
            wait_state(p.state, BUSY, p.alive, settle);
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
    state.atomic().store(IDLE, Ordering::Release);
    state.wake(u32::MAX);
    match sem.wait_or_stop(None, stop_check, stop) {
        WaitResult::Taken => {}
        WaitResult::Stopped | WaitResult::TimedOut => {
            state.atomic().store(BUSY, Ordering::Release);
            state.wake(u32::MAX);
            return Ok(Waited::Stopped);
        }
    }
    state.atomic().store(BUSY, Ordering::Release);
    state.wake(u32::MAX);
    on_wake();
    lock.lock_shared()?;
    lock.unlock()?;
    Ok(Waited::Round)
}
