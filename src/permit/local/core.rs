//! The shared-memory arbiter's state and every operation on it, independent
//! of where the state lives (a mapped region, or the heap in loom models).
//!
//! Everything here is made of `crate::sync` atomics and runs under the
//! arbiter's [`RobustLock`] (the [`Locked`] guard), except a waiter's look
//! at its own entry's `state` word, on which it sleeps as on a futex.
//!
//! The rules (docs/permit.md, "The shared-memory arbiter"):
//!
//! - a request becomes a *waiting* entry with a tag: `max(vtime, last + 1)`,
//!   where `last` is the largest tag among the same instance's waiting
//!   entries and its last grant, and `vtime` is the tag of the last grant
//!   of the volume (start-time fair queuing with equal weights). Entries are
//!   granted in (tag, arrival) order, which is round robin over the
//!   instances that wait and FIFO within one; an instance that asks again
//!   right after its grant keeps its place in the next round;
//! - the grant pass walks the waiting entries in that order and grants one
//!   that conflicts with no held entry and with no earlier entry still
//!   waiting, while the volume's cap allows; once the cap stops one, it
//!   stops the pass. A write conflicts with any other entry of its path;
//!   two reads do not;
//! - a grant takes the next fencing token (`last_token + 1`) and a lease;
//! - a held entry whose owner died, or whose lease ran out, is reclaimed by
//!   the next process that sweeps (under the lock, so exactly once), and
//!   recorded in the reclaim ring; a permit is *current* only while its
//!   entry is held by its owner with its token and its lease has not run
//!   out, and a commit runs under the lock after that check.

use crate::error::{err, Result};
use crate::permit::Mode;
use crate::shm::lock::{RobustLock, Taken};
use crate::shm::records::{Holder, Liveness, RecordSlot};
use crate::sync::{AtomicU32, AtomicU64, Futex, Ordering};
use std::time::Instant;

/// Words of a path in an entry (448 bytes, more than [`MAX_PATH`](crate::permit::paths::MAX_PATH)).
pub const PATH_WORDS: usize = 56;
/// Most bytes of a path an entry holds.
pub const PATH_BYTES: usize = PATH_WORDS * 8;
/// Size of one [`Entry`] in the region.
pub const ENTRY_SIZE: usize = 512;
/// Size of one [`ReclaimSlot`] in the region.
pub const RECLAIM_SIZE: usize = 480;
/// Size of one [`GrantCount`] in the region.
pub const GRANT_COUNT_SIZE: usize = 32;
/// Size of the [`Head`] in the region.
pub const HEAD_SIZE: usize = 64;

/// An entry's `state`: free.
pub const FREE: u32 = 0;
/// An entry's `state`: a deferred request.
pub const WAITING: u32 = 1;
/// An entry's `state`: a granted permit.
pub const HELD: u32 = 2;

/// The arbiter's shared counters (`#[repr(C)]`, [`HEAD_SIZE`] bytes).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Head {
    /// The lock every operation but a waiter's sleep takes.
    pub lock: RobustLock,
    /// Entries at and past this index are free.
    pub used: AtomicU32,
    /// The last fencing token granted.
    pub last_token: AtomicU64,
    /// The tag of the last grant (the fair order's virtual time).
    pub vtime: AtomicU64,
    /// Requests ever queued (the arrival order).
    pub arrivals: AtomicU64,
    /// Entry index + 1 of the waiter that watches the holders often (0:
    /// none); the others look less often.
    pub poller: AtomicU32,
    /// Next slot of the reclaim ring to write.
    pub ring_next: AtomicU32,
    /// Permits ever reclaimed.
    pub reclaims: AtomicU64,
    /// Permits ever granted.
    pub grants: AtomicU64,
    _pad: AtomicU64,
}

/// One request or permit (`#[repr(C)]`, [`ENTRY_SIZE`] bytes; all zero is
/// free).
#[repr(C)]
#[derive(Debug)]
pub struct Entry {
    /// [`FREE`], [`WAITING`] or [`HELD`]; a waiter sleeps on it.
    pub state: Futex,
    /// [`Mode`] as its C value.
    pub mode: AtomicU32,
    /// The owner's [`Holder`] word.
    pub owner: AtomicU32,
    /// Length of the path in bytes.
    pub path_len: AtomicU32,
    /// The fencing token (held entries).
    pub token: AtomicU64,
    /// The fair order's tag.
    pub tag: AtomicU64,
    /// The arrival number (ties between equal tags).
    pub arrival: AtomicU64,
    /// When the lease runs out (held entries), CLOCK_MONOTONIC ns.
    pub lease_until: AtomicU64,
    /// A hash of the path, compared before the path itself.
    pub path_hash: AtomicU64,
    _pad: AtomicU64,
    /// The path, little-endian words, zero padded.
    pub path: [AtomicU64; PATH_WORDS],
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            state: Futex::new(FREE),
            mode: AtomicU32::new(0),
            owner: AtomicU32::new(0),
            path_len: AtomicU32::new(0),
            token: AtomicU64::new(0),
            tag: AtomicU64::new(0),
            arrival: AtomicU64::new(0),
            lease_until: AtomicU64::new(0),
            path_hash: AtomicU64::new(0),
            _pad: AtomicU64::new(0),
            path: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One reclaimed permit in the ring (`#[repr(C)]`, [`RECLAIM_SIZE`] bytes).
#[repr(C)]
#[derive(Debug)]
pub struct ReclaimSlot {
    /// The holder's pid (0: slot never written).
    pub pid: AtomicU32,
    /// 1: the holder died; 2: its lease ran out.
    pub reason: AtomicU32,
    /// The holder's start time.
    pub start: AtomicU64,
    /// The permit's token.
    pub token: AtomicU64,
    /// Length of the path.
    pub path_len: AtomicU32,
    _pad: AtomicU32,
    /// The path.
    pub path: [AtomicU64; PATH_WORDS],
}

impl Default for ReclaimSlot {
    fn default() -> Self {
        ReclaimSlot {
            pid: AtomicU32::new(0),
            reason: AtomicU32::new(0),
            start: AtomicU64::new(0),
            token: AtomicU64::new(0),
            path_len: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
            path: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// What the arbiter keeps per process record (`#[repr(C)]`,
/// [`GRANT_COUNT_SIZE`] bytes): the record's generation the rest belongs
/// to, the grants to that owner, and the tag of its last grant.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GrantCount {
    /// Generation of the record's owner the fields are for.
    pub gen: AtomicU32,
    _pad: AtomicU32,
    /// Grants to that owner.
    pub count: AtomicU64,
    /// The tag of its last grant.
    pub last_tag: AtomicU64,
    _pad2: AtomicU64,
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Head>() == HEAD_SIZE);
    assert!(std::mem::size_of::<Entry>() == ENTRY_SIZE);
    assert!(std::mem::size_of::<ReclaimSlot>() == RECLAIM_SIZE);
    assert!(std::mem::size_of::<GrantCount>() == GRANT_COUNT_SIZE);
};

/// A request as the arbiter compares it.
#[derive(Clone, Copy, Debug)]
pub struct Req<'p> {
    /// The path's bytes (at most [`PATH_BYTES`]).
    pub path: &'p [u8],
    /// Read or write.
    pub mode: Mode,
}

/// FNV-1a, 64 bits: the path hash stored in entries.
pub fn path_hash(path: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in path {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Stores `bytes` (at most [`PATH_BYTES`]) in the first words of `words`,
/// the last one zero padded; the words after them are left as they are
/// (readers take only the words the length covers).
fn store_path(words: &[AtomicU64; PATH_WORDS], bytes: &[u8]) {
    for (w, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

fn load_path(words: &[AtomicU64; PATH_WORDS], len: u32) -> Vec<u8> {
    let len = (len as usize).min(PATH_BYTES);
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    for w in words.iter().take(len.div_ceil(8)) {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Who acts, and the volume's settings.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The caller's holder word (its process record).
    pub me: Holder,
    /// Tells whether other holders live.
    pub live: &'a dyn Liveness,
    /// Cap on held permits (0: none).
    pub cap: u32,
    /// Lease length in ns.
    pub lease_ns: u64,
}

/// Why a permit was reclaimed, as the ring stores it.
pub const REASON_DEAD: u32 = 1;
/// See [`REASON_DEAD`].
pub const REASON_EXPIRED: u32 = 2;

/// The arbiter: references to its parts, wherever they live.
#[derive(Clone, Copy, Debug)]
pub struct Arb<'a> {
    /// The counters and the lock.
    pub head: &'a Head,
    /// The entries.
    pub entries: &'a [Entry],
    /// The process records.
    pub records: &'a [RecordSlot],
    /// Grants per record.
    pub grants: &'a [GrantCount],
    /// The reclaim ring.
    pub ring: &'a [ReclaimSlot],
}

/// The arbiter's lock, held. Dropping it unlocks.
pub struct Locked<'a> {
    arb: Arb<'a>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.arb.head.lock.unlock();
    }
}

impl<'a> Arb<'a> {
    /// Takes the arbiter's lock (waiting until `deadline`, taking it over
    /// from a dead holder and then repairing what it may have left
    /// half-done).
    #[cfg(any(test, loom))]
    pub fn lock(&self, cx: &Ctx<'_>, deadline: Option<Instant>) -> Result<Locked<'a>> {
        self.lock_by(cx, || deadline)
    }

    /// [`Arb::lock`] with the deadline computed only if the lock is not
    /// free at once (no clock read on the uncontended path).
    pub fn lock_by(
        &self,
        cx: &Ctx<'_>,
        deadline: impl FnOnce() -> Option<Instant>,
    ) -> Result<Locked<'a>> {
        if self.head.lock.try_lock(cx.me) {
            return Ok(Locked { arb: *self });
        }
        let taken = self.head.lock.lock(cx.me, cx.live, deadline(), |h| {
            err!(
                Timeout,
                "permit arbiter: its lock is still held by {h} after the wait"
            )
        })?;
        let g = Locked { arb: *self };
        if let Taken::OverDead(_) = taken {
            g.repair();
        }
        Ok(g)
    }
}

impl<'a> Locked<'a> {
    fn entry(&self, i: usize) -> &'a Entry {
        &self.arb.entries[i]
    }

    fn used(&self) -> usize {
        (self.arb.head.used.load(Ordering::Relaxed) as usize).min(self.arb.entries.len())
    }

    /// After a takeover: the dead lock holder may have stopped anywhere.
    /// Every change writes an entry's `state` last, so a half-made entry
    /// is still free; only `used` may be too small (an entry made past it)
    /// or too large: recount it. The dead process's own entries go at the
    /// next sweep.
    fn repair(&self) {
        let last = self
            .arb
            .entries
            .iter()
            .rposition(|e| e.state.load(Ordering::Relaxed) != FREE);
        self.arb
            .head
            .used
            .store(last.map_or(0, |i| i as u32 + 1), Ordering::Relaxed);
    }

    fn free(&self, i: usize) {
        let e = self.entry(i);
        e.state.atomic().store(FREE, Ordering::Relaxed);
        e.owner.store(0, Ordering::Relaxed);
        let h = &self.arb.head;
        if i + 1 == h.used.load(Ordering::Relaxed) as usize {
            let last = self.arb.entries[..i]
                .iter()
                .rposition(|e| e.state.load(Ordering::Relaxed) != FREE);
            h.used
                .store(last.map_or(0, |i| i as u32 + 1), Ordering::Relaxed);
        }
    }

    /// Queues `req` for the caller as a waiting entry; returns its index.
    /// `Full` when every entry is in use.
    pub fn enqueue(&self, cx: &Ctx<'_>, req: Req<'_>) -> Result<usize> {
        let h = &self.arb.head;
        let used = self.used();
        let mut mine_max = self.last_granted_tag(cx.me);
        for e in &self.arb.entries[..used] {
            if e.state.load(Ordering::Relaxed) == WAITING
                && e.owner.load(Ordering::Relaxed) == cx.me.0
            {
                mine_max = mine_max.max(e.tag.load(Ordering::Relaxed));
            }
        }
        let i = self
            .arb
            .entries
            .iter()
            .position(|e| e.state.load(Ordering::Relaxed) == FREE)
            .ok_or_else(|| {
                err!(
                    Full,
                    "permit arbiter: all {} entries are in use (requests and permits)",
                    self.arb.entries.len()
                )
            })?;
        if i >= used {
            h.used.store(i as u32 + 1, Ordering::Relaxed);
        }
        let e = self.entry(i);
        let tag = h.vtime.load(Ordering::Relaxed).max(mine_max + 1);
        let arrival = h.arrivals.load(Ordering::Relaxed) + 1;
        h.arrivals.store(arrival, Ordering::Relaxed);
        e.mode.store(req.mode as u32, Ordering::Relaxed);
        e.owner.store(cx.me.0, Ordering::Relaxed);
        e.path_len.store(req.path.len() as u32, Ordering::Relaxed);
        e.token.store(0, Ordering::Relaxed);
        e.tag.store(tag, Ordering::Relaxed);
        e.arrival.store(arrival, Ordering::Relaxed);
        e.lease_until.store(0, Ordering::Relaxed);
        e.path_hash.store(path_hash(req.path), Ordering::Relaxed);
        store_path(&e.path, req.path);
        e.state.atomic().store(WAITING, Ordering::Relaxed);
        Ok(i)
    }

    /// Whether two entries name the same path: hash, length, then the words
    /// the length covers (the words after them are stale: `store_path`
    /// leaves them).
    fn same_path(&self, a: &Entry, b: &Entry) -> bool {
        let len = a.path_len.load(Ordering::Relaxed);
        a.path_hash.load(Ordering::Relaxed) == b.path_hash.load(Ordering::Relaxed)
            && len == b.path_len.load(Ordering::Relaxed)
            && a.path
                .iter()
                .zip(&b.path)
                .take((len as usize).min(PATH_BYTES).div_ceil(8))
                .all(|(x, y)| x.load(Ordering::Relaxed) == y.load(Ordering::Relaxed))
    }

    fn conflict(&self, a: &Entry, b: &Entry) -> bool {
        let (ma, mb) = (
            a.mode.load(Ordering::Relaxed),
            b.mode.load(Ordering::Relaxed),
        );
        let both_read = ma == Mode::Read as u32 && mb == Mode::Read as u32;
        !both_read && self.same_path(a, b)
    }

    /// The waiting entries in grant order.
    pub fn queue(&self) -> Vec<usize> {
        let mut q: Vec<(u64, u64, usize)> = self.arb.entries[..self.used()]
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state.load(Ordering::Relaxed) == WAITING)
            .map(|(i, e)| {
                (
                    e.tag.load(Ordering::Relaxed),
                    e.arrival.load(Ordering::Relaxed),
                    i,
                )
            })
            .collect();
        q.sort_unstable();
        q.into_iter().map(|(_, _, i)| i).collect()
    }

    /// The held entries.
    pub fn held(&self) -> Vec<usize> {
        self.arb.entries[..self.used()]
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state.load(Ordering::Relaxed) == HELD)
            .map(|(i, _)| i)
            .collect()
    }

    /// Grants what the rules allow (see the module docs), waking each
    /// grantee except entry `mine` (the caller's own, which it looks at
    /// before sleeping). Returns how many were granted.
    pub fn grant_pass(&self, cx: &Ctx<'_>, now: u64, mine: Option<usize>) -> usize {
        // The common cases (nothing waits, or one request) take no
        // allocation: the queue is only sorted when two or more wait.
        let used = &self.arb.entries[..self.used()];
        let mut waiting = used
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state.load(Ordering::Relaxed) == WAITING)
            .map(|(i, _)| i);
        let Some(first) = waiting.next() else {
            return 0;
        };
        let rest = waiting.next();
        let mut held = used
            .iter()
            .filter(|e| e.state.load(Ordering::Relaxed) == HELD)
            .count();
        let mut blocked: Vec<usize> = Vec::new();
        let mut granted = 0;
        let sorted;
        let queue: &[usize] = if rest.is_none() {
            std::slice::from_ref(&first)
        } else {
            sorted = self.queue();
            &sorted
        };
        for &i in queue {
            if cx.cap != 0 && held >= cx.cap as usize {
                break;
            }
            let e = self.entry(i);
            let clash = used.iter().enumerate().any(|(j, o)| {
                j != i && o.state.load(Ordering::Relaxed) == HELD && self.conflict(e, o)
            }) || blocked.iter().any(|&j| self.conflict(e, self.entry(j)));
            if clash {
                blocked.push(i);
                continue;
            }
            let h = &self.arb.head;
            let token = h.last_token.load(Ordering::Relaxed) + 1;
            h.last_token.store(token, Ordering::Relaxed);
            let tag = e.tag.load(Ordering::Relaxed);
            if tag > h.vtime.load(Ordering::Relaxed) {
                h.vtime.store(tag, Ordering::Relaxed);
            }
            e.token.store(token, Ordering::Relaxed);
            e.lease_until
                .store(now.saturating_add(cx.lease_ns), Ordering::Relaxed);
            self.count_grant(Holder(e.owner.load(Ordering::Relaxed)), tag);
            // Last, and released: a waiter that sees HELD without the lock
            // sees its token and lease too.
            e.state.atomic().store(HELD, Ordering::Release);
            if Some(i) != mine {
                e.state.wake(u32::MAX);
            }
            held += 1;
            granted += 1;
        }
        granted
    }

    /// The tag of `owner`'s last grant (0: none yet).
    fn last_granted_tag(&self, owner: Holder) -> u64 {
        owner
            .record()
            .and_then(|r| self.arb.grants.get(r as usize))
            .filter(|c| c.gen.load(Ordering::Relaxed) == u32::from(owner.gen()))
            .map_or(0, |c| c.last_tag.load(Ordering::Relaxed))
    }

    fn count_grant(&self, owner: Holder, tag: u64) {
        let h = &self.arb.head;
        h.grants
            .store(h.grants.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let Some(c) = owner.record().and_then(|r| self.arb.grants.get(r as usize)) else {
            return;
        };
        if c.gen.load(Ordering::Relaxed) != u32::from(owner.gen()) {
            c.gen.store(u32::from(owner.gen()), Ordering::Relaxed);
            c.count.store(0, Ordering::Relaxed);
            c.last_tag.store(0, Ordering::Relaxed);
        }
        c.count
            .store(c.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if tag > c.last_tag.load(Ordering::Relaxed) {
            c.last_tag.store(tag, Ordering::Relaxed);
        }
    }

    fn record_reclaim(&self, i: usize, reason: u32) {
        let e = self.entry(i);
        let h = &self.arb.head;
        h.reclaims
            .store(h.reclaims.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.arb.ring.is_empty() {
            return;
        }
        let n = h.ring_next.load(Ordering::Relaxed) as usize % self.arb.ring.len();
        h.ring_next
            .store(((n + 1) % self.arb.ring.len()) as u32, Ordering::Relaxed);
        let slot = &self.arb.ring[n];
        let owner = Holder(e.owner.load(Ordering::Relaxed));
        // The record names the holder only while its generation is the
        // holder's (a process that joined since may have claimed it).
        let (pid, start) = owner
            .record()
            .and_then(|r| self.arb.records.get(r as usize))
            .filter(|r| r.gen() == owner.gen())
            .map_or((0, 0), |r| (r.pid(), r.start()));
        slot.pid.store(pid.max(1), Ordering::Relaxed);
        slot.start.store(start, Ordering::Relaxed);
        slot.reason.store(reason, Ordering::Relaxed);
        slot.token
            .store(e.token.load(Ordering::Relaxed), Ordering::Relaxed);
        let len = e.path_len.load(Ordering::Relaxed);
        slot.path_len.store(len, Ordering::Relaxed);
        for (d, s) in slot
            .path
            .iter()
            .zip(&e.path)
            .take((len as usize).min(PATH_BYTES).div_ceil(8))
        {
            d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Reclaims held entries whose owner died or whose lease ran out before
    /// `now`, and drops waiting entries of dead owners. Returns how many
    /// entries it freed. Liveness is asked once per owner.
    pub fn sweep(&self, cx: &Ctx<'_>, now: u64) -> usize {
        let mut verdicts: Vec<(u32, bool)> = Vec::new();
        let mut freed = 0;
        for i in 0..self.used() {
            let e = self.entry(i);
            let state = e.state.load(Ordering::Relaxed);
            if state == FREE {
                continue;
            }
            let owner = e.owner.load(Ordering::Relaxed);
            let alive = if owner == cx.me.0 {
                true
            } else if let Some(&(_, v)) = verdicts.iter().find(|(o, _)| *o == owner) {
                v
            } else {
                let v = cx.live.is_alive(Holder(owner));
                verdicts.push((owner, v));
                v
            };
            if !alive {
                if state == HELD {
                    self.record_reclaim(i, REASON_DEAD);
                }
                self.free(i);
                freed += 1;
            } else if state == HELD && e.lease_until.load(Ordering::Relaxed) < now {
                self.record_reclaim(i, REASON_EXPIRED);
                self.free(i);
                freed += 1;
            }
        }
        freed
    }

    /// Whether entry `i` is held by the caller with `token`.
    pub fn is_held_by(&self, cx: &Ctx<'_>, i: usize, token: u64) -> bool {
        let Some(e) = self.arb.entries.get(i) else {
            return false;
        };
        e.state.load(Ordering::Relaxed) == HELD
            && e.owner.load(Ordering::Relaxed) == cx.me.0
            && e.token.load(Ordering::Relaxed) == token
    }

    /// Whether the caller's permit (entry `i`, `token`) is current at
    /// `now`: held by it and its lease not run out. A permit whose lease
    /// ran out is reclaimed here (and what it blocked is granted), so it is
    /// never current again.
    pub fn current(&self, cx: &Ctx<'_>, i: usize, token: u64, now: u64) -> bool {
        if !self.is_held_by(cx, i, token) {
            return false;
        }
        if self.entry(i).lease_until.load(Ordering::Relaxed) < now {
            self.record_reclaim(i, REASON_EXPIRED);
            self.free(i);
            self.grant_pass(cx, now, None);
            return false;
        }
        true
    }

    /// Extends the caller's permit's lease from `now`; `false` if it is
    /// not current (then it never is again).
    pub fn renew(&self, cx: &Ctx<'_>, i: usize, token: u64, now: u64) -> bool {
        if !self.current(cx, i, token, now) {
            return false;
        }
        self.entry(i)
            .lease_until
            .store(now.saturating_add(cx.lease_ns), Ordering::Relaxed);
        true
    }

    /// Gives back the caller's permit (if it still holds it) and grants
    /// what that allows. Returns whether it held it.
    pub fn release(&self, cx: &Ctx<'_>, i: usize, token: u64, now: u64) -> bool {
        if !self.is_held_by(cx, i, token) {
            return false;
        }
        self.free(i);
        self.grant_pass(cx, now, None);
        true
    }

    /// Removes the caller's waiting entry `i` (its wait ran out, or it
    /// asked not to wait) and grants what that allows (it may have
    /// blocked later entries). `false` if it is no longer waiting (it
    /// was granted meanwhile).
    pub fn withdraw(&self, cx: &Ctx<'_>, i: usize, now: u64) -> bool {
        let e = self.entry(i);
        if e.state.load(Ordering::Relaxed) != WAITING || e.owner.load(Ordering::Relaxed) != cx.me.0
        {
            return false;
        }
        self.free(i);
        if self.arb.head.poller.load(Ordering::Relaxed) == i as u32 + 1 {
            self.arb.head.poller.store(0, Ordering::Relaxed);
        }
        self.grant_pass(cx, now, None);
        true
    }

    /// Makes the caller's waiting entry `i` the poller (the waiter that
    /// looks for dead holders and run-out leases often) if there is none
    /// that still waits. Returns whether it is the poller.
    pub fn take_poller(&self, i: usize) -> bool {
        let h = &self.arb.head;
        let p = h.poller.load(Ordering::Relaxed) as usize;
        if p == i + 1 {
            return true;
        }
        let vacant = p == 0
            || self
                .arb
                .entries
                .get(p - 1)
                .map_or(true, |e| e.state.load(Ordering::Relaxed) != WAITING);
        if vacant {
            h.poller.store(i as u32 + 1, Ordering::Relaxed);
        }
        vacant
    }

    /// Entry `i`'s fields as a report shows them: (owner, mode, path,
    /// token, tag, lease_until).
    pub fn describe(&self, i: usize) -> (Holder, u32, Vec<u8>, u64, u64) {
        let e = self.entry(i);
        (
            Holder(e.owner.load(Ordering::Relaxed)),
            e.mode.load(Ordering::Relaxed),
            load_path(&e.path, e.path_len.load(Ordering::Relaxed)),
            e.token.load(Ordering::Relaxed),
            e.lease_until.load(Ordering::Relaxed),
        )
    }

    /// The reclaim ring, oldest first: (pid, start, reason, token, path).
    pub fn reclaimed(&self) -> Vec<(u32, u64, u32, u64, Vec<u8>)> {
        let ring = self.arb.ring;
        if ring.is_empty() {
            return Vec::new();
        }
        let next = self.arb.head.ring_next.load(Ordering::Relaxed) as usize % ring.len();
        (0..ring.len())
            .map(|k| &ring[(next + k) % ring.len()])
            .filter(|s| s.pid.load(Ordering::Relaxed) != 0)
            .map(|s| {
                (
                    s.pid.load(Ordering::Relaxed),
                    s.start.load(Ordering::Relaxed),
                    s.reason.load(Ordering::Relaxed),
                    s.token.load(Ordering::Relaxed),
                    load_path(&s.path, s.path_len.load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    /// The arbiter's head (counters), read under the lock.
    pub fn head(&self) -> &'a Head {
        self.arb.head
    }

    /// The records and grant counts.
    pub fn parts(&self) -> Arb<'a> {
        self.arb
    }
}

/// An arbiter on the heap, for loom models and unit tests.
#[cfg(any(test, loom))]
#[derive(Debug)]
pub struct HeapArb {
    head: Head,
    entries: Vec<Entry>,
    records: Vec<RecordSlot>,
    grants: Vec<GrantCount>,
    ring: Vec<ReclaimSlot>,
}

#[cfg(any(test, loom))]
impl HeapArb {
    /// An empty arbiter of `entries` entries and `records` process records.
    pub fn new(entries: usize, records: usize) -> HeapArb {
        HeapArb {
            head: Head::default(),
            entries: (0..entries).map(|_| Entry::default()).collect(),
            records: (0..records).map(|_| RecordSlot::default()).collect(),
            grants: (0..records).map(|_| GrantCount::default()).collect(),
            ring: (0..2).map(|_| ReclaimSlot::default()).collect(),
        }
    }

    /// Its parts.
    pub fn arb(&self) -> Arb<'_> {
        Arb {
            head: &self.head,
            entries: &self.entries,
            records: &self.records,
            grants: &self.grants,
            ring: &self.ring,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct AllAlive;
    impl Liveness for AllAlive {
        fn is_alive(&self, h: Holder) -> bool {
            !h.is_none()
        }
    }

    fn cx(record: u32, cap: u32) -> Ctx<'static> {
        Ctx {
            me: Holder::new(record, 1),
            live: &AllAlive,
            cap,
            lease_ns: 1_000_000_000,
        }
    }

    fn req(path: &str, mode: Mode) -> Req<'_> {
        Req {
            path: path.as_bytes(),
            mode,
        }
    }

    fn held(g: &Locked<'_>, i: usize) -> bool {
        g.parts().entries[i].state.load(Ordering::Relaxed) == HELD
    }

    #[test]
    fn writes_exclude_reads_share() {
        let h = HeapArb::new(8, 4);
        let a = h.arb();
        let g = a.lock(&cx(0, 0), None).unwrap();
        let w = g.enqueue(&cx(0, 0), req("f", Mode::Write)).unwrap();
        g.grant_pass(&cx(0, 0), 0, Some(w));
        assert!(held(&g, w));
        let r = g.enqueue(&cx(1, 0), req("f", Mode::Read)).unwrap();
        let other = g.enqueue(&cx(1, 0), req("g", Mode::Write)).unwrap();
        g.grant_pass(&cx(1, 0), 0, Some(r));
        assert!(!held(&g, r), "a read of a path being written waits");
        assert!(held(&g, other), "another path is free");
        assert!(g.release(&cx(0, 0), w, 1, 0));
        assert!(held(&g, r));
        let r2 = g.enqueue(&cx(2, 0), req("f", Mode::Read)).unwrap();
        g.grant_pass(&cx(2, 0), 0, Some(r2));
        assert!(held(&g, r2), "reads share");
        let tokens: Vec<u64> = [w, other, r, r2].iter().map(|&i| g.describe(i).3).collect();
        assert_eq!(tokens[1..], [2, 3, 4], "tokens count up per grant");
    }

    /// Entries are reused: words left from a longer path must not make two
    /// requests for one path look different (the soak test found this).
    #[test]
    fn reused_entries_still_conflict() {
        let h = HeapArb::new(4, 4);
        let a = h.arb();
        let g = a.lock(&cx(0, 0), None).unwrap();
        let long = g
            .enqueue(
                &cx(0, 0),
                req("a-much-longer-path/with/parts.bin", Mode::Write),
            )
            .unwrap();
        let other = g
            .enqueue(
                &cx(0, 0),
                req("zzzzzzzzzzzzzzzzzzzz/other.bin", Mode::Write),
            )
            .unwrap();
        g.grant_pass(&cx(0, 0), 0, None);
        g.release(&cx(0, 0), long, 1, 0);
        g.release(&cx(0, 0), other, 2, 0);
        let x = g.enqueue(&cx(1, 0), req("x", Mode::Write)).unwrap();
        g.grant_pass(&cx(1, 0), 0, Some(x));
        assert!(held(&g, x));
        let y = g.enqueue(&cx(2, 0), req("x", Mode::Write)).unwrap();
        assert!(y == long || y == other, "an entry is reused");
        g.grant_pass(&cx(2, 0), 0, Some(y));
        assert!(!held(&g, y), "two writes of one path");
    }

    #[test]
    fn a_blocked_write_holds_back_later_reads() {
        let h = HeapArb::new(8, 4);
        let a = h.arb();
        let g = a.lock(&cx(0, 0), None).unwrap();
        let r1 = g.enqueue(&cx(0, 0), req("f", Mode::Read)).unwrap();
        g.grant_pass(&cx(0, 0), 0, Some(r1));
        let w = g.enqueue(&cx(1, 0), req("f", Mode::Write)).unwrap();
        let r2 = g.enqueue(&cx(2, 0), req("f", Mode::Read)).unwrap();
        g.grant_pass(&cx(2, 0), 0, Some(r2));
        assert!(held(&g, r1) && !held(&g, w) && !held(&g, r2));
        g.release(&cx(0, 0), r1, 1, 0);
        assert!(held(&g, w) && !held(&g, r2));
    }

    #[test]
    fn cap_limits_holders_in_order() {
        let h = HeapArb::new(8, 4);
        let a = h.arb();
        let g = a.lock(&cx(0, 2), None).unwrap();
        let ids: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|p| g.enqueue(&cx(0, 2), req(p, Mode::Write)).unwrap())
            .collect();
        g.grant_pass(&cx(0, 2), 0, None);
        let state: Vec<bool> = ids.iter().map(|&i| held(&g, i)).collect();
        assert_eq!(state, [true, true, false, false]);
        g.release(&cx(0, 2), ids[1], 2, 0);
        let state: Vec<bool> = ids.iter().map(|&i| held(&g, i)).collect();
        assert_eq!(state, [true, false, true, false]);
    }

    #[test]
    fn round_robin_over_instances() {
        let h = HeapArb::new(32, 4);
        let a = h.arb();
        let g = a.lock(&cx(0, 1), None).unwrap();
        // A holder keeps everything waiting while the queue fills.
        let hold = g.enqueue(&cx(3, 1), req("x", Mode::Write)).unwrap();
        g.grant_pass(&cx(3, 1), 0, None);
        let flood: Vec<usize> = (0..5)
            .map(|k| {
                g.enqueue(&cx(0, 1), req(&format!("f{k}"), Mode::Write))
                    .unwrap()
            })
            .collect();
        let b = g.enqueue(&cx(1, 1), req("b", Mode::Write)).unwrap();
        let c = g.enqueue(&cx(2, 1), req("c", Mode::Write)).unwrap();
        let order = g.queue();
        assert_eq!(
            order[..3],
            [flood[0], b, c],
            "one each before the flooder's second"
        );
        assert_eq!(order[3..], flood[1..]);
        // Grants follow it, one at a time (cap 1).
        let mut granted = Vec::new();
        let mut cur = hold;
        for _ in 0..7 {
            // Released by its owner: the test acts for every process.
            let (owner, _, _, token, _) = g.describe(cur);
            let by_owner = Ctx {
                me: owner,
                ..cx(0, 1)
            };
            assert!(g.release(&by_owner, cur, token, 0));
            cur = g.held()[0];
            granted.push(cur);
        }
        assert_eq!(granted, order);
    }

    /// Under steady load (cap 1; instance 0 keeps three requests queued,
    /// instances 1 and 2 ask again as soon as they give their permit
    /// back) every instance gets the same share: one that asks again after
    /// its grant keeps its place in the next round.
    #[test]
    fn steady_load_is_shared_equally() {
        let h = HeapArb::new(16, 4);
        let a = h.arb();
        let g = a.lock(&cx(0, 1), None).unwrap();
        let mut n = 0;
        let mut ask = |record: u32| {
            n += 1;
            g.enqueue(&cx(record, 1), req(&format!("p{n}"), Mode::Write))
                .unwrap()
        };
        for _ in 0..3 {
            ask(0);
        }
        ask(1);
        ask(2);
        g.grant_pass(&cx(0, 1), 0, None);
        let mut grants = [0u32; 3];
        for _ in 0..300 {
            let cur = g.held()[0];
            let (owner, _, _, token, _) = g.describe(cur);
            let by_owner = Ctx {
                me: owner,
                ..cx(0, 1)
            };
            let r = owner.record().unwrap();
            grants[r as usize] += 1;
            assert!(g.release(&by_owner, cur, token, 0));
            ask(r);
        }
        assert!(
            grants.iter().all(|&k| k == 100),
            "grants per instance: {grants:?}"
        );
    }

    #[test]
    fn expired_and_dead_holders_are_reclaimed_once() {
        struct Dead(Holder);
        impl Liveness for Dead {
            fn is_alive(&self, h: Holder) -> bool {
                !h.is_none() && h != self.0
            }
        }
        let h = HeapArb::new(8, 4);
        let a = h.arb();
        let g = a.lock(&cx(0, 0), None).unwrap();
        let x = g.enqueue(&cx(0, 0), req("x", Mode::Write)).unwrap();
        let y = g.enqueue(&cx(1, 0), req("y", Mode::Write)).unwrap();
        g.grant_pass(&cx(0, 0), 0, None);
        let dead = Dead(Holder::new(1, 1));
        let cx2 = Ctx {
            live: &dead,
            ..cx(2, 0)
        };
        assert_eq!(g.sweep(&cx2, 10), 1, "the dead holder of y goes");
        assert_eq!(g.sweep(&cx2, 10), 0, "once");
        assert!(held(&g, x));
        assert!(
            !g.current(&cx(0, 0), x, 1, 2_000_000_000),
            "x's lease ran out"
        );
        assert!(!g.renew(&cx(0, 0), x, 1, 0), "and it stays lost");
        let r = g.reclaimed();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].2, r[0].3), (REASON_DEAD, 2));
        assert_eq!((r[1].2, r[1].3), (REASON_EXPIRED, 1));
        assert_eq!(g.head().used.load(Ordering::Relaxed), 0);
        let _ = y;
    }
}
