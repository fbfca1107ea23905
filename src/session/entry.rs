//! The session table's entries and every operation on them, independent of
//! where the entries live (a mapped region, or the heap in loom models).
//!
//! An [`Entry`] is made only of `crate::sync` atomics, so the same code runs
//! on mapped bytes and, under loom, is model-checked. Layout, rules and
//! their reasons: docs/session.md, "The session table".

use crate::error::{err, Result};
use crate::shm::lock::{RobustLock, Taken};
use crate::shm::records::{Holder, Liveness};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most bytes of user data a session holds.
pub const MAX_USER_DATA: usize = 64;
/// Most bytes of a session's tenant id (the tenant-id rule of docs/attach.md).
pub const MAX_TENANT: usize = 64;
/// Size in bytes of one entry in the region.
pub const ENTRY_SIZE: usize = 256;
/// Largest capacity of a table: slot + 1 must fit in the 24 low bits... of
/// the 32 an id gives it (docs/session.md fixes 16,777,215).
pub const MAX_CAPACITY: u32 = (1 << 24) - 1;

const TENANT_WORDS: usize = MAX_TENANT / 8;
const DATA_WORDS: usize = MAX_USER_DATA / 8;

// `ctl` word: generation << 32 | counter << 2 | current buffer << 1 | live.
const LIVE: u64 = 1;
const CUR: u64 = 2;
const COUNTER_ONE: u64 = 4;
const LOW_MASK: u64 = 0xffff_ffff;

fn ctl_gen(c: u64) -> u32 {
    (c >> 32) as u32
}
fn ctl_live(c: u64) -> bool {
    c & LIVE != 0
}
fn ctl_cur(c: u64) -> usize {
    ((c & CUR) >> 1) as usize
}
/// `c` with its counter advanced (wrapping inside its 30 bits), the given
/// generation, current buffer and liveness.
fn ctl_next(c: u64, gen: u32, cur: usize, live: bool) -> u64 {
    let counter = (c & LOW_MASK).wrapping_add(COUNTER_ONE) & LOW_MASK & !(LIVE | CUR);
    (u64::from(gen) << 32) | counter | ((cur as u64) << 1) | u64::from(live)
}

/// A session id: `generation << 32 | (slot + 1)`. Ending a session bumps
/// its slot's generation, so the id of an ended session never resolves
/// again, even after the slot is reused. 0 is never valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    /// The id of the session in `slot` at generation `gen`.
    pub fn new(slot: u32, gen: u32) -> SessionId {
        SessionId((u64::from(gen) << 32) | (u64::from(slot) + 1))
    }
    /// The slot it names, or `None` for a malformed id (low half 0).
    pub fn slot(self) -> Option<u32> {
        (self.0 as u32).checked_sub(1)
    }
    /// The generation it names.
    pub fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The worker a session is bound to, as the table stores it:
/// `(worker record + 1) << 32 | worker generation` (the worker's record
/// and generation in the request area). 0 means unbound, so a `WorkerRef`
/// is never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkerRef(pub u64);

impl WorkerRef {
    /// The reference to worker record `record` at generation `gen`.
    pub fn new(record: u32, gen: u32) -> WorkerRef {
        WorkerRef(((u64::from(record) + 1) << 32) | u64::from(gen))
    }
    /// The worker record, or `None` for the unbound word 0.
    pub fn record(self) -> Option<u32> {
        ((self.0 >> 32) as u32).checked_sub(1)
    }
    /// The worker generation.
    pub fn gen(self) -> u32 {
        self.0 as u32
    }
    fn from_word(w: u64) -> Option<WorkerRef> {
        (w != 0).then_some(WorkerRef(w))
    }
}

/// A consistent snapshot of one session (what [`lookup`](super::Table::lookup) returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The high-level state (the application's flow state; opaque to mtipc).
    pub state: u32,
    /// The worker it is bound to, if any.
    pub worker: Option<WorkerRef>,
    /// Requests of this session queued or being served.
    pub in_flight: u32,
    /// Creation time, ns since the Unix epoch (CLOCK_REALTIME).
    pub created_ns: u64,
    /// Time of the last create or update, ns since the Unix epoch.
    pub updated_ns: u64,
    /// The user data (at most [`MAX_USER_DATA`] bytes).
    pub user: Vec<u8>,
}

/// One of an entry's two data buffers (80 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct Buffer {
    state: AtomicU32,
    len: AtomicU32,
    updated_ns: AtomicU64,
    data: [AtomicU64; DATA_WORDS],
}

/// One session table entry as it lies in the region (`#[repr(C)]`,
/// [`ENTRY_SIZE`] bytes, all zero = a free slot at generation 0):
///
/// | offset | size | field |
/// |-------:|-----:|-------|
/// | 0   | 4  | `lock`: holder word ([`Holder`] + [`WAITERS`] bit), futex |
/// | 4   | 4  | `in_flight` |
/// | 8   | 8  | `ctl`: generation << 32, counter << 2, current buffer << 1, live |
/// | 16  | 8  | `binding`: [`WorkerRef`] word, 0 = unbound |
/// | 24  | 8  | `created_ns` |
/// | 32  | 64 | tenant id, NUL padded (8 little-endian words) |
/// | 96  | 80 | buffer 0: state u32, user length u32, updated_ns u64, 64 bytes of user data |
/// | 176 | 80 | buffer 1 |
#[repr(C)]
#[derive(Debug)]
pub struct Entry {
    lock: RobustLock,
    in_flight: AtomicU32,
    ctl: AtomicU64,
    binding: AtomicU64,
    created_ns: AtomicU64,
    tenant: [AtomicU64; TENANT_WORDS],
    buf: [Buffer; 2],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_SIZE);
#[cfg(not(loom))]
const _: () = assert!(std::mem::align_of::<Entry>() == 8);

impl Default for Entry {
    fn default() -> Self {
        Entry::new()
    }
}

impl Entry {
    /// A free entry at generation 0 (for loom models and tests; shared ones
    /// live in mapped files, where all-zero bytes are this).
    pub fn new() -> Entry {
        Entry {
            lock: RobustLock::new(),
            in_flight: AtomicU32::new(0),
            ctl: AtomicU64::new(0),
            binding: AtomicU64::new(0),
            created_ns: AtomicU64::new(0),
            tenant: Default::default(),
            buf: Default::default(),
        }
    }

    /// The raw lock word (holder | [`WAITERS`]), for diagnostics and tests.
    #[cfg(any(test, loom))]
    pub fn lock_word(&self) -> u32 {
        self.lock.word()
    }

    fn try_lock(&self, me: Holder) -> bool {
        self.lock.try_lock(me)
    }

    fn unlock(&self) {
        self.lock.unlock();
    }

    /// Takes the lock over from the dead holder whose word is exactly
    /// `cur` and repairs the entry; whether this call won.
    fn take_over(&self, cur: u32, me: Holder) -> bool {
        let won = self.lock.take_over(cur, me);
        if won {
            self.repair();
        }
        won
    }

    /// Makes the entry consistent after its lock holder died (the lock is
    /// ours). A free slot gets no binding and no requests (a creator that
    /// died before publishing, or an end that died before clearing them);
    /// a live one keeps its current buffer, which no writer touches. The
    /// caller recounts `in_flight` (see [`EntryGuard::was_repaired`]).
    fn repair(&self) {
        let c = self.ctl.load(Ordering::Acquire);
        if !ctl_live(c) {
            self.binding.store(0, Ordering::Relaxed);
            self.in_flight.store(0, Ordering::Relaxed);
        }
    }

    /// Waits for the lock (see [`Entries::lock`]). Returns whether a dead
    /// holder was taken over (the entry is then repaired).
    fn lock_wait(
        &self,
        me: Holder,
        live: &dyn Liveness,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let taken = self.lock.lock(me, live, deadline, |h| {
            err!(
                Timeout,
                "session entry lock: still held by {h} after the timeout"
            )
        })?;
        match taken {
            Taken::Clean => Ok(false),
            Taken::OverDead(_) => {
                self.repair();
                Ok(true)
            }
        }
    }

    fn write_buffer(&self, b: usize, state: u32, user: &[u8], now: u64) {
        let buf = &self.buf[b];
        buf.state.store(state, Ordering::Relaxed);
        buf.len.store(user.len() as u32, Ordering::Relaxed);
        buf.updated_ns.store(now, Ordering::Relaxed);
        store_bytes(&buf.data, user);
    }
}

/// Stores `bytes` into the first words of `words` (little-endian, the
/// last word zero padded); words past the data are left as they are
/// except the one that holds a terminating NUL for a short tenant.
fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
    for (w, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

fn load_bytes(words: &[AtomicU64], len: usize, out: &mut Vec<u8>) {
    out.clear();
    for w in words.iter().take(len.div_ceil(8)) {
        out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(len);
}

/// Writes a tenant id: its words, plus a zero word after it if it does not
/// fill all of them (the reader stops at the first NUL byte).
fn store_tenant(words: &[AtomicU64; TENANT_WORDS], tenant: &[u8]) {
    store_bytes(words, tenant);
    if tenant.len() % 8 == 0 && tenant.len() < MAX_TENANT {
        words[tenant.len() / 8].store(0, Ordering::Relaxed);
    }
}

fn load_tenant(words: &[AtomicU64; TENANT_WORDS], out: &mut Vec<u8>) {
    out.clear();
    for w in words {
        let b = w.load(Ordering::Relaxed).to_le_bytes();
        match b.iter().position(|&x| x == 0) {
            Some(n) => {
                out.extend_from_slice(&b[..n]);
                return;
            }
            None => out.extend_from_slice(&b),
        }
    }
}

/// Whether stored tenant bytes are a valid tenant id (else the entry is
/// corrupt).
fn tenant_ok(t: &[u8]) -> bool {
    #[cfg(not(loom))]
    {
        std::str::from_utf8(t).is_ok_and(|s| crate::sys::name_problem(s).is_none())
    }
    #[cfg(loom)]
    {
        !t.is_empty() && t.len() <= MAX_TENANT && std::str::from_utf8(t).is_ok()
    }
}

/// The current time, ns since the Unix epoch (CLOCK_REALTIME).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// Who does an operation: the holder word it locks with and how it tells
/// whether other holders are alive. For a table handle, its process record.
#[derive(Clone, Copy)]
pub struct Actor<'a> {
    /// The holder word this actor's locks carry.
    pub me: Holder,
    /// Liveness of other holders.
    pub live: &'a dyn Liveness,
}

/// The entries of a table: a slice of [`Entry`] in a mapping, or on the
/// heap (loom models, unit tests).
pub struct Entries {
    ptr: *const Entry,
    cap: u32,
    _heap: Option<Box<[Entry]>>,
}

// SAFETY: the entries are atomics only; the pointer is to a mapping that the
// owner keeps alive (contract of `from_raw`) or to `_heap`.
unsafe impl Send for Entries {}
// SAFETY: as above; every access is through atomics.
unsafe impl Sync for Entries {}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("capacity", &self.cap)
            .finish()
    }
}

/// A held entry lock. Dropping it unlocks.
#[derive(Debug)]
pub struct EntryGuard<'a> {
    entry: &'a Entry,
    id: SessionId,
    repaired: bool,
}

impl EntryGuard<'_> {
    /// The session whose entry is locked.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// Requests of the session queued or being served.
    pub fn in_flight(&self) -> u32 {
        self.entry.in_flight.load(Ordering::Relaxed)
    }
    /// Sets the number of requests in flight (after a recount).
    pub fn set_in_flight(&self, n: u32) {
        self.entry.in_flight.store(n, Ordering::Relaxed);
    }
    /// Adds `delta` to the number of requests in flight, saturating at 0
    /// and `u32::MAX`. Returns the new value.
    pub fn add_in_flight(&self, delta: i32) -> u32 {
        let cur = i64::from(self.in_flight());
        let n = (cur + i64::from(delta)).clamp(0, i64::from(u32::MAX)) as u32;
        self.set_in_flight(n);
        n
    }
    /// The worker the session is bound to.
    pub fn binding(&self) -> Option<WorkerRef> {
        WorkerRef::from_word(self.entry.binding.load(Ordering::Relaxed))
    }
    /// Binds the session to `w`, or unbinds it (`None`).
    pub fn set_binding(&self, w: Option<WorkerRef>) {
        self.entry
            .binding
            .store(w.map_or(0, |w| w.0), Ordering::Relaxed);
    }
    /// Whether the lock was taken over from a dead holder. The entry was
    /// then repaired as far as the table can (docs/session.md, "Repair");
    /// the caller (the request area) recounts `in_flight` from its slots
    /// and removes a binding to a dead worker.
    pub fn was_repaired(&self) -> bool {
        self.repaired
    }
}

impl Drop for EntryGuard<'_> {
    fn drop(&mut self) {
        self.entry.unlock();
    }
}

impl Entries {
    /// `cap` free entries on the heap.
    #[cfg(any(test, loom))]
    pub fn on_heap(cap: u32) -> Entries {
        let heap: Box<[Entry]> = (0..cap).map(|_| Entry::new()).collect();
        Entries {
            ptr: heap.as_ptr(),
            cap,
            _heap: Some(heap),
        }
    }

    /// The `cap` entries at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to `cap` entries (8-byte aligned, in a shared
    /// mapping or other memory used only through atomics) that stay valid
    /// while the returned value lives.
    pub unsafe fn from_raw(ptr: *const Entry, cap: u32) -> Entries {
        Entries {
            ptr,
            cap,
            _heap: None,
        }
    }

    /// Entry `slot` (panics if out of range).
    pub fn entry(&self, slot: u32) -> &Entry {
        assert!(slot < self.cap, "slot {slot} out of range");
        // SAFETY: slot < cap; validity per `from_raw`/`on_heap`.
        unsafe { &*self.ptr.add(slot as usize) }
    }

    /// The binding of `id`'s slot, read without the lock and without
    /// checking that `id` is still live there: a hint for the dispatcher.
    pub fn bound_hint(&self, id: SessionId) -> Option<WorkerRef> {
        let slot = self.slot_of(id).ok()?;
        WorkerRef::from_word(self.entry(slot).binding.load(Ordering::Relaxed))
    }

    fn slot_of(&self, id: SessionId) -> Result<u32> {
        match id.slot() {
            Some(s) if s < self.cap => Ok(s),
            _ => Err(not_found(id)),
        }
    }

    /// Creates a session: scans from `*cursor` for a free slot whose lock
    /// can be taken without waiting, writes it and publishes it. After a
    /// whole pass without one, slots skipped because their lock was held
    /// are checked for a dead holder (taken over and repaired); then
    /// `Full`. `cursor` is left after the slot used. The tenant and user
    /// data must have been checked by the caller (length limits are
    /// checked here again).
    pub fn create(
        &self,
        who: Actor<'_>,
        cursor: &mut u32,
        tenant: &str,
        state: u32,
        user: &[u8],
    ) -> Result<SessionId> {
        if tenant.is_empty() || tenant.len() > MAX_TENANT || tenant.as_bytes().contains(&0) {
            return Err(err!(Invalid, "tenant id must be 1 to {MAX_TENANT} bytes"));
        }
        check_user(user)?;
        let start = *cursor % self.cap.max(1);
        let mut skipped = Vec::new();
        for k in 0..self.cap {
            let slot = (start + k) % self.cap;
            let e = self.entry(slot);
            if ctl_live(e.ctl.load(Ordering::Relaxed)) {
                continue;
            }
            if !e.try_lock(who.me) {
                skipped.push(slot);
                continue;
            }
            if let Some(id) = self.fill_locked(e, slot, tenant, state, user) {
                *cursor = slot.wrapping_add(1) % self.cap;
                return Ok(id);
            }
        }
        // Second chance: a lock held by a dead process is never released.
        for slot in skipped {
            let e = self.entry(slot);
            let cur = e.lock.word();
            if cur != 0 && !who.live.is_alive(Holder::from_word(cur)) && e.take_over(cur, who.me) {
                if let Some(id) = self.fill_locked(e, slot, tenant, state, user) {
                    *cursor = slot.wrapping_add(1) % self.cap;
                    return Ok(id);
                }
            }
        }
        Err(err!(
            Full,
            "session table is full (capacity {} sessions)",
            self.cap
        ))
    }

    /// With `e`'s lock held: if the slot is free, writes the session and
    /// publishes it; unlocks either way.
    fn fill_locked(
        &self,
        e: &Entry,
        slot: u32,
        tenant: &str,
        state: u32,
        user: &[u8],
    ) -> Option<SessionId> {
        let c = e.ctl.load(Ordering::Acquire);
        if ctl_live(c) {
            e.unlock();
            return None;
        }
        let gen = ctl_gen(c);
        let now = now_ns();
        // Readers that still look at an older generation must see a changed
        // `ctl` if they read any of what follows (seqlock).
        fence(Ordering::Release);
        store_tenant(&e.tenant, tenant.as_bytes());
        e.created_ns.store(now, Ordering::Relaxed);
        e.binding.store(0, Ordering::Relaxed);
        e.in_flight.store(0, Ordering::Relaxed);
        e.write_buffer(0, state, user, now);
        e.ctl.store(ctl_next(c, gen, 0, true), Ordering::Release);
        e.unlock();
        Some(SessionId::new(slot, gen))
    }

    /// A consistent snapshot of session `id` without taking its lock: the
    /// current buffer is read and the read retried if `ctl` changed
    /// meanwhile (a sequence lock). `NotFound` for an id that does not name
    /// a live session (ended, stale, malformed); `Corrupt` if the entry
    /// holds impossible values.
    pub fn lookup(&self, id: SessionId) -> Result<Session> {
        let slot = self.slot_of(id)?;
        let e = self.entry(slot);
        let mut tenant = Vec::with_capacity(MAX_TENANT);
        let mut user = Vec::with_capacity(MAX_USER_DATA);
        let mut tries = 0u32;
        loop {
            let c1 = e.ctl.load(Ordering::Acquire);
            if !ctl_live(c1) || ctl_gen(c1) != id.gen() {
                return Err(not_found(id));
            }
            load_tenant(&e.tenant, &mut tenant);
            let created_ns = e.created_ns.load(Ordering::Relaxed);
            let worker = WorkerRef::from_word(e.binding.load(Ordering::Relaxed));
            let in_flight = e.in_flight.load(Ordering::Relaxed);
            let b = &e.buf[ctl_cur(c1)];
            let state = b.state.load(Ordering::Relaxed);
            let len = b.len.load(Ordering::Relaxed);
            let updated_ns = b.updated_ns.load(Ordering::Relaxed);
            load_bytes(&b.data, (len as usize).min(MAX_USER_DATA), &mut user);
            fence(Ordering::Acquire);
            let c2 = e.ctl.load(Ordering::Relaxed);
            if c1 != c2 {
                tries += 1;
                if tries % 16 == 0 {
                    crate::sync::yield_now();
                }
                continue;
            }
            if len as usize > MAX_USER_DATA {
                return Err(err!(
                    Corrupt,
                    "session {id}: user data length {len} (at most {MAX_USER_DATA})"
                ));
            }
            if !tenant_ok(&tenant) {
                return Err(err!(
                    Corrupt,
                    "session {id}: the stored tenant id is not valid"
                ));
            }
            return Ok(Session {
                id,
                tenant: String::from_utf8(std::mem::take(&mut tenant)).unwrap_or_default(),
                state,
                worker,
                in_flight,
                created_ns,
                updated_ns,
                user,
            });
        }
    }

    /// The id of the live session in `slot`, if any (for scans).
    pub fn id_at(&self, slot: u32) -> Option<SessionId> {
        let c = self.entry(slot).ctl.load(Ordering::Acquire);
        ctl_live(c).then(|| SessionId::new(slot, ctl_gen(c)))
    }

    /// Locks the entry of session `id`: tries, spins briefly, then sleeps
    /// on the lock word, checking the holder's liveness every
    /// [`LIVENESS_EVERY`] and taking the lock over from a dead holder
    /// (then [`EntryGuard::was_repaired`] is true). `NotFound` if `id` does
    /// not name a live session once the lock is held; `Timeout` when
    /// `deadline` passes first (`None`: no limit).
    pub fn lock(
        &self,
        who: Actor<'_>,
        id: SessionId,
        deadline: Option<Instant>,
    ) -> Result<EntryGuard<'_>> {
        self.lock_by(who, id, || deadline)
    }

    /// [`Entries::lock`] with a timeout from now, reading the clock only if
    /// the lock is taken.
    pub fn lock_within(
        &self,
        who: Actor<'_>,
        id: SessionId,
        timeout: std::time::Duration,
    ) -> Result<EntryGuard<'_>> {
        self.lock_by(who, id, || Instant::now().checked_add(timeout))
    }

    fn lock_by(
        &self,
        who: Actor<'_>,
        id: SessionId,
        deadline: impl FnOnce() -> Option<Instant>,
    ) -> Result<EntryGuard<'_>> {
        let slot = self.slot_of(id)?;
        let e = self.entry(slot);
        // A cheap early answer for ids that are already stale.
        let c = e.ctl.load(Ordering::Acquire);
        if !ctl_live(c) || ctl_gen(c) != id.gen() {
            return Err(not_found(id));
        }
        let repaired = !e.try_lock(who.me) && e.lock_wait(who.me, who.live, deadline())?;
        let g = EntryGuard {
            entry: e,
            id,
            repaired,
        };
        let c = e.ctl.load(Ordering::Acquire);
        if !ctl_live(c) || ctl_gen(c) != id.gen() {
            return Err(not_found(id)); // `g` unlocks
        }
        Ok(g)
    }

    /// Writes a new state and user data (`None`: keep the current user
    /// data) into the buffer that is not current, then flips `ctl`; the
    /// caller holds the lock (`g`).
    pub fn update_locked(&self, g: &EntryGuard<'_>, state: u32, user: Option<&[u8]>) -> Result<()> {
        if let Some(u) = user {
            check_user(u)?;
        }
        let e = g.entry;
        let c = e.ctl.load(Ordering::Acquire);
        let cur = ctl_cur(c);
        let mut keep = Vec::new();
        let user = match user {
            Some(u) => u,
            None => {
                let len = (e.buf[cur].len.load(Ordering::Relaxed) as usize).min(MAX_USER_DATA);
                load_bytes(&e.buf[cur].data, len, &mut keep);
                &keep
            }
        };
        // See `fill_locked`: a reader of the old `ctl` that sees any byte
        // written below must see `ctl` changed.
        fence(Ordering::Release);
        e.write_buffer(1 - cur, state, user, now_ns());
        e.ctl
            .store(ctl_next(c, ctl_gen(c), 1 - cur, true), Ordering::Release);
        Ok(())
    }

    /// Test hook: writes the buffer that is not current without publishing
    /// it (what an update killed half-way leaves behind).
    #[doc(hidden)]
    pub fn write_spare_locked(&self, g: &EntryGuard<'_>, state: u32, user: &[u8]) {
        let e = g.entry;
        let cur = ctl_cur(e.ctl.load(Ordering::Acquire));
        fence(Ordering::Release);
        e.write_buffer(
            1 - cur,
            state,
            &user[..user.len().min(MAX_USER_DATA)],
            now_ns(),
        );
    }

    /// Ends the session whose lock `g` holds: bumps the slot's generation
    /// and marks it free (one store), then clears binding and requests.
    pub fn end_locked(&self, g: EntryGuard<'_>) {
        let e = g.entry;
        let c = e.ctl.load(Ordering::Acquire);
        e.ctl.store(
            ctl_next(c, ctl_gen(c).wrapping_add(1), ctl_cur(c), false),
            Ordering::Release,
        );
        e.binding.store(0, Ordering::Relaxed);
        e.in_flight.store(0, Ordering::Relaxed);
        drop(g);
    }

    /// Removes every binding to `worker` (each under its entry's lock);
    /// returns how many were removed. An entry whose lock cannot be had
    /// within `per_entry` is left as it is.
    pub fn remove_bindings_to(
        &self,
        who: Actor<'_>,
        worker: WorkerRef,
        per_entry: Duration,
    ) -> usize {
        let mut n = 0;
        for slot in 0..self.cap {
            let e = self.entry(slot);
            if e.binding.load(Ordering::Relaxed) != worker.0 {
                continue;
            }
            let Some(id) = self.id_at(slot) else { continue };
            let Ok(g) = self.lock(who, id, Instant::now().checked_add(per_entry)) else {
                continue;
            };
            if g.binding() == Some(worker) {
                g.set_binding(None);
                n += 1;
            }
        }
        n
    }
}

fn check_user(user: &[u8]) -> Result<()> {
    if user.len() > MAX_USER_DATA {
        return Err(err!(
            Invalid,
            "session user data is {} bytes; the limit is {MAX_USER_DATA}",
            user.len()
        ));
    }
    Ok(())
}

fn not_found(id: SessionId) -> crate::error::Error {
    err!(
        NotFound,
        "session {id} does not exist (ended, or not a session id)"
    )
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
    struct NoneAlive;
    impl Liveness for NoneAlive {
        fn is_alive(&self, _: Holder) -> bool {
            false
        }
    }

    fn actor(live: &dyn Liveness, r: u32) -> Actor<'_> {
        Actor {
            me: Holder::new(r, 1),
            live,
        }
    }

    #[test]
    fn ctl_encoding() {
        let c = ctl_next(0, 7, 1, true);
        assert_eq!(ctl_gen(c), 7);
        assert_eq!(ctl_cur(c), 1);
        assert!(ctl_live(c));
        let d = ctl_next(c, 8, 0, false);
        assert_ne!(c & LOW_MASK & !3, d & LOW_MASK & !3);
        assert_eq!((ctl_gen(d), ctl_cur(d), ctl_live(d)), (8, 0, false));
        // The counter wraps inside its bits.
        let w = ctl_next(0xffff_fffc | (5 << 32), 5, 0, false);
        assert_eq!(ctl_gen(w), 5);
    }

    #[test]
    fn create_lookup_update_end() {
        let es = Entries::on_heap(3);
        let a = actor(&AllAlive, 0);
        let mut cur = 0;
        let id = es.create(a, &mut cur, "acme", 5, b"hello").unwrap();
        let s = es.lookup(id).unwrap();
        assert_eq!(
            (s.tenant.as_str(), s.state, &s.user[..]),
            ("acme", 5, &b"hello"[..])
        );
        assert_eq!(s.worker, None);
        assert!(s.created_ns > 0 && s.updated_ns == s.created_ns);
        let g = es.lock(a, id, None).unwrap();
        es.update_locked(&g, 6, None).unwrap();
        g.set_binding(Some(WorkerRef::new(3, 9)));
        assert_eq!(g.add_in_flight(2), 2);
        assert_eq!(g.add_in_flight(-5), 0);
        drop(g);
        let s = es.lookup(id).unwrap();
        assert_eq!((s.state, &s.user[..]), (6, &b"hello"[..]));
        assert_eq!(s.worker, Some(WorkerRef::new(3, 9)));
        let g = es.lock(a, id, None).unwrap();
        es.update_locked(&g, 7, Some(&[1; 64])).unwrap();
        assert_eq!(
            es.update_locked(&g, 7, Some(&[1; 65])).unwrap_err().kind(),
            crate::ErrorKind::Invalid
        );
        drop(g);
        assert_eq!(es.lookup(id).unwrap().user, vec![1; 64]);
        let g = es.lock(a, id, None).unwrap();
        es.end_locked(g);
        assert_eq!(
            es.lookup(id).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        assert_eq!(
            es.lock(a, id, None).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        // The slot is reused with the next generation; the old id stays dead.
        let mut cur = id.slot().unwrap();
        let id2 = es.create(a, &mut cur, "b", 0, b"").unwrap();
        assert_eq!(id2.slot(), id.slot());
        assert_eq!(id2.gen(), id.gen() + 1);
        assert_eq!(
            es.lookup(id).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        assert_eq!(es.lookup(id2).unwrap().tenant, "b");
    }

    #[test]
    fn tenant_lengths() {
        let es = Entries::on_heap(4);
        let a = actor(&AllAlive, 0);
        let mut cur = 0;
        for t in ["a", "abcdefgh", "abcdefghi", &"x".repeat(64)] {
            let id = es.create(a, &mut cur, t, 0, b"").unwrap();
            assert_eq!(es.lookup(id).unwrap().tenant, t);
        }
        // A reused slot with a shorter tenant does not show the old tail.
        let id = es.id_at(3).unwrap();
        es.end_locked(es.lock(a, id, None).unwrap());
        let mut cur = 3;
        let id = es.create(a, &mut cur, "short", 0, b"").unwrap();
        assert_eq!(es.lookup(id).unwrap().tenant, "short");
    }

    #[test]
    fn full_and_bad_ids() {
        let es = Entries::on_heap(2);
        let a = actor(&AllAlive, 0);
        let mut cur = 0;
        es.create(a, &mut cur, "t", 0, b"").unwrap();
        es.create(a, &mut cur, "t", 0, b"").unwrap();
        assert_eq!(
            es.create(a, &mut cur, "t", 0, b"").unwrap_err().kind(),
            crate::ErrorKind::Full
        );
        for bad in [0, 3, 1 << 32, u64::MAX] {
            assert_eq!(
                es.lookup(SessionId(bad)).unwrap_err().kind(),
                crate::ErrorKind::NotFound
            );
        }
    }

    #[test]
    fn lock_timeout_and_takeover() {
        let es = Entries::on_heap(1);
        let a = actor(&AllAlive, 0);
        let b = actor(&AllAlive, 1);
        let mut cur = 0;
        let id = es.create(a, &mut cur, "t", 0, b"").unwrap();
        let g = es.lock(a, id, None).unwrap();
        let t = Instant::now();
        let r = es.lock(b, id, Some(Instant::now() + Duration::from_millis(50)));
        assert_eq!(r.unwrap_err().kind(), crate::ErrorKind::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(45));
        // The holder "dies": forget its guard; a checker that sees it dead
        // takes over, exactly once, and the entry is repaired.
        std::mem::forget(g);
        let dead = actor(&NoneAlive, 1);
        let g2 = es.lock(dead, id, None).unwrap();
        assert!(g2.was_repaired());
        drop(g2);
        let g3 = es.lock(a, id, None).unwrap();
        assert!(!g3.was_repaired());
    }

    #[test]
    fn create_takes_over_a_dead_lock_when_nothing_else_is_free() {
        let es = Entries::on_heap(1);
        // A creator died holding the lock of the only slot, before publishing.
        assert!(es.entry(0).try_lock(Holder::new(5, 1)));
        let mut cur = 0;
        let r = es.create(actor(&AllAlive, 0), &mut cur, "t", 0, b"");
        assert_eq!(r.unwrap_err().kind(), crate::ErrorKind::Full);
        let id = es
            .create(actor(&NoneAlive, 0), &mut cur, "t", 0, b"")
            .unwrap();
        assert_eq!(es.lookup(id).unwrap().tenant, "t");
        assert_eq!(es.entry(0).lock_word(), 0);
    }

    #[test]
    fn waiter_is_woken_by_unlock() {
        let es = std::sync::Arc::new(Entries::on_heap(1));
        let mut cur = 0;
        let id = es
            .create(actor(&AllAlive, 0), &mut cur, "t", 0, b"")
            .unwrap();
        let g = es.lock(actor(&AllAlive, 0), id, None).unwrap();
        let es2 = es.clone();
        let h = std::thread::spawn(move || {
            let g = es2.lock(actor(&AllAlive, 1), id, None).unwrap();
            g.add_in_flight(1);
        });
        std::thread::sleep(Duration::from_millis(30));
        g.add_in_flight(1);
        drop(g);
        h.join().unwrap();
        assert_eq!(es.lookup(id).unwrap().in_flight, 2);
    }
}
