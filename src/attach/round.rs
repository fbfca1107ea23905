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
    /// Takes the lock shared if nobody holds it exclusively: `Ok(false)`
    /// (and nothing taken) while a round holds it.
    fn try_lock_shared(&self) -> Result<bool>;
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
    /// Whether the round needs it: the target tenant, and the daemon
    /// (whose waiter registers the pairing with the relay). These are
    /// waited for until the deadline, and given units until they take one
    /// ([`until_taken`]); the others only for [`GRACE`].
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

/// How long the attacher lets a participant take its unit before it looks
/// whether a process outside the round took the units meant for it (see
/// [`until_taken`]).
pub const TOP_UP_AFTER: Duration = Duration::from_millis(2);

/// Waits until participant `p` has taken its unit of this round (`BUSY`)
/// or is dead, at most until `until`; `Ok(false)` on timeout. The domain's
/// semaphore is open to any process of its owner, and one that waits on it
/// outside the protocol (`mtipc sem wait`, another program) takes units
/// meant for the round: whenever `p` is still `IDLE` after
/// [`TOP_UP_AFTER`] and the count is 0, one more unit is posted, so the
/// round reaches `p` however many units others take. An extra unit is
/// harmless: the round's final reset clears it before any participant can
/// come back to the semaphore (each is held by its lock until then).
/// Under loom, where no process outside the round exists and time does
/// not pass, it is a plain wait.
pub fn until_taken<L: SyncLock>(
    sem: &SemCore,
    p: &Participant<'_, L>,
    until: Option<Instant>,
) -> Result<bool> {
    loop {
        let slice_end = if cfg!(loom) {
            until
        } else {
            let s = Instant::now() + TOP_UP_AFTER;
            Some(until.map_or(s, |u| u.min(s)))
        };
        if wait_state(p.state, BUSY, p.alive, slice_end) {
            return Ok(true);
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            return Ok(false);
        }
        if sem.value() == 0 {
            sem.post(1)?;
        }
    }
}

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
/// 4. post one unit per participant, and wait until the target has taken
///    one, posting again if processes outside the round took them
///    ([`until_taken`]);
/// 5. `await_target(deadline)`: the target has answered;
/// 6. wait (for at most [`GRACE`]) until every live participant has taken
///    its unit (`BUSY`), topping up as in step 4;
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
                "a waiter the round needs (the tenant's or mtipcd's) is still busy with an earlier round"
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
        result = participants.iter().filter(|p| p.target).try_for_each(|p| {
            match until_taken(sem, p, deadline)? {
                true => Ok(()),
                false => Err(err!(
                    Timeout,
                    "a waiter the round needs (the tenant's or mtipcd's) did not take its unit in time"
                )),
            }
        });
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
            result = until_taken(sem, p, until).map(|_| ());
            if result.is_err() {
                break;
            }
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
    /// The waiter took a unit that no round explains: its lock was free
    /// (no attacher holds it), so the unit came from outside the protocol
    /// (a stray `post`, a garbage count) or from a round already over. The
    /// caller backs off before it waits again ([`NoRoundBackoff`]), so that
    /// a large count cannot make it spin.
    NoRound,
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
    if lock.try_lock_shared()? {
        lock.unlock()?;
        return Ok(Waited::NoRound);
    }
    lock.lock_shared()?;
    lock.unlock()?;
    Ok(Waited::Round)
}

/// How long a waiter pauses after [`Waited::NoRound`]: 1 ms, doubling with
/// each consecutive one up to 200 ms, back to 1 ms after a real round. A
/// count of 3,000,000,000 that no round explains then costs a waiter at
/// most a few wake-ups a second instead of a full CPU, while a waiter that
/// merely came late to a round that had just ended loses a millisecond.
#[derive(Debug)]
pub struct NoRoundBackoff(Duration);

impl Default for NoRoundBackoff {
    fn default() -> Self {
        NoRoundBackoff(Duration::from_millis(1))
    }
}

impl NoRoundBackoff {
    /// Longest pause.
    pub const MAX: Duration = Duration::from_millis(200);

    /// The pause to make now (and the next one doubles).
    pub fn pause(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }

    /// A real round happened: the next pause is short again.
    pub fn reset(&mut self) {
        self.0 = Duration::from_millis(1);
    }
}
