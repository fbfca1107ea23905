//! The dispatcher: every change of a request slot and of a worker record,
//! written once over the [`crate::sync`] shim so that the same code runs on
//! the mapped request area and, under loom, on heap memory.
//!
//! The session table is reached through the [`Env`] trait (the entry lock,
//! `in_flight`, the binding, liveness of a process), so that the loom
//! models can stand in a small fake for it. The rules (docs/session.md,
//! "The request/response area"):
//!
//! - a slot counts in its session's `in_flight` while it is *queued* or
//!   *taken*; every transition into or out of those two states is made
//!   under the session's entry lock, together with the change of
//!   `in_flight`, so that `in_flight` can be recounted from the slots by
//!   whoever repairs the entry of a dead lock holder;
//! - every transition is one compare-and-swap of the slot's state word from
//!   the exact value that was examined, so one process wins each change;
//! - a worker is reaped once: one compare-and-swap moves its record from
//!   *active* to *reaping* (naming the reaper); a reaper that dies is
//!   replaced the same way, and since each slot move is a CAS, re-running
//!   the reap moves nothing twice.

use super::entry::WorkerRef;
use super::records::Holder;
use super::requests::{
    Geometry, GroupRec, SlotHead, SlotState, SlotWord, WorkerId, WorkerRec, WorkerState,
    WorkerWord, SLOT_GEN_MASK,
};
use crate::error::{err, ErrorKind, Result};
use crate::sync::{fence, local, AtomicU64, Ordering, SharedBufs};

/// What the dispatcher needs from the session table and process records.
pub trait Env {
    /// A locked session entry.
    type Entry<'a>: EntryOps
    where
        Self: 'a;
    /// This process.
    fn me(&self) -> Holder;
    /// Whether `h` names a live process.
    fn is_alive(&self, h: Holder) -> bool;
    /// Locks the entry of `session`: `Ok(None)` if there is no such session
    /// (it ended), an error if the lock could not be had.
    fn lock(&self, session: u64) -> Result<Option<Self::Entry<'_>>>;
    /// Removes every binding to `worker`.
    fn remove_bindings_to(&self, worker: WorkerRef);
    /// The worker `session` is bound to, read without the lock (a hint:
    /// the binding may change at once, or belong to a later session of
    /// the same slot).
    fn bound_hint(&self, session: u64) -> Option<WorkerRef>;
}

/// A locked session entry (the table's entry guard).
pub trait EntryOps {
    /// Requests of the session queued or being served.
    fn in_flight(&self) -> u32;
    /// Sets it.
    fn set_in_flight(&mut self, n: u32);
    /// The worker the session is bound to.
    fn binding(&self) -> Option<WorkerRef>;
    /// Binds or unbinds it.
    fn set_binding(&mut self, b: Option<WorkerRef>);
    /// Whether the lock was taken over from a dead holder (the entry's
    /// `in_flight` must then be recounted from the slots).
    fn was_repaired(&self) -> bool;
}

/// How a request ended, as its submitter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: the response has this many bytes.
    Done(u32),
    /// Failed with this kind.
    Failed(ErrorKind),
}

/// The sequentially consistent fence between a store and a load of
/// another word in the two "store, then look at the other side" pairs of
/// the area: a submitter queues a slot then looks whether the worker is
/// idle (or still registered), a worker marks itself idle (a reaper marks
/// a record reaping) then scans the slots. With the fence on both sides at
/// least one of each pair sees the other's store. (`SeqCst` accesses alone
/// would do on real hardware, but loom models only `SeqCst` fences.)
fn sc_fence() {
    fence(Ordering::SeqCst);
}

/// How often a waiting submitter checks that its request's worker lives
/// (and a worker group has a live worker).
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The request area as the dispatcher sees it: pointers into the mapping
/// (or heap memory under loom) and the validated geometry.
pub struct Core {
    geo: Geometry,
    groups: *const GroupRec,
    workers: *const WorkerRec,
    words: *const AtomicU64,
    heads: *const SlotHead,
    /// The slot buffers: request buffer of slot `i` at `2i`, its response
    /// buffer at `2i + 1`, each handed over by the slot's state word.
    bufs: SharedBufs,
    /// Where this process's next search for a free slot starts (a
    /// process-local hint).
    cursor: local::AtomicU32,
    /// Successful reaps through this dispatcher (compare-and-swaps of a
    /// worker record to *reaping*): the loom models check that a dead
    /// worker is reaped exactly once. A plain counter, not modelled.
    #[cfg(loom)]
    pub reaps: local::AtomicU32,
}

// SAFETY: everything the pointers reach is atomics (shared by design) or
// data buffers whose use is handed over by the slot state words; the
// memory outlives the `Core` (contract of `Core::new`).
unsafe impl Send for Core {}
// SAFETY: as above.
unsafe impl Sync for Core {}

/// The set bits below `nbits` of a summary, in increasing order.
fn set_bits(words: &[u64; 4], nbits: u32) -> impl Iterator<Item = u32> + '_ {
    words.iter().enumerate().flat_map(move |(w, &x)| {
        let mut x = x;
        std::iter::from_fn(move || {
            if x == 0 {
                return None;
            }
            let b = x.trailing_zeros();
            x &= x - 1;
            Some(w as u32 * 64 + b)
        })
        .filter(move |&b| b < nbits)
    })
}

/// What a take scan has found so far.
struct Scan {
    found: Option<Taken>,
    more: bool,
}

/// Result of a take scan.
pub struct Taken {
    /// The slot.
    pub slot: u32,
    /// Its word after the take.
    pub word: SlotWord,
    /// The scan saw other requests for "any" worker of the group.
    pub more: bool,
}

impl Core {
    /// A dispatcher over an area of geometry `geo` whose region starts at
    /// `base`.
    ///
    /// # Safety
    ///
    /// `base` must point to `geo.total_size` bytes laid out as
    /// [`super::requests`] describes (or, under loom, to records placed at
    /// those offsets), valid for as long as the `Core` lives.
    pub unsafe fn new(geo: Geometry, base: *mut u8) -> Core {
        // SAFETY: offsets within the region (caller's contract).
        unsafe {
            Core {
                geo,
                groups: base.add(geo.groups_off as usize) as *const GroupRec,
                workers: base.add(geo.workers_off as usize) as *const WorkerRec,
                words: base.add(geo.words_off as usize) as *const AtomicU64,
                heads: base.add(geo.heads_off as usize) as *const SlotHead,
                // `slots × 2` buffers of `buf_size` bytes from `data_off`,
                // within the region (the geometry was validated), used only
                // as the slot words hand them over.
                bufs: SharedBufs::from_raw(
                    base.add(geo.data_off as usize),
                    geo.buf_size as usize,
                    2 * geo.slots as usize,
                ),
                cursor: local::AtomicU32::new(std::process::id()),
                #[cfg(loom)]
                reaps: local::AtomicU32::new(0),
            }
        }
    }

    /// A dispatcher over separately allocated arrays (loom models).
    ///
    /// # Safety
    ///
    /// Each pointer must reach as many records as `geo` says, valid while
    /// the `Core` lives; `bufs` must hold `slots × 2` buffers of at least
    /// `buf_size` bytes.
    #[cfg(any(loom, test))]
    pub unsafe fn from_parts(
        geo: Geometry,
        groups: *const GroupRec,
        workers: *const WorkerRec,
        words: *const AtomicU64,
        heads: *const SlotHead,
        bufs: SharedBufs,
    ) -> Core {
        assert!(bufs.count() == 2 * geo.slots as usize && bufs.size() >= geo.buf_size as usize);
        Core {
            geo,
            groups,
            workers,
            words,
            heads,
            bufs,
            cursor: local::AtomicU32::new(0),
            #[cfg(loom)]
            reaps: local::AtomicU32::new(0),
        }
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// Group record `g` (< groups).
    pub fn group(&self, g: u32) -> &GroupRec {
        assert!(g < self.geo.groups);
        // SAFETY: in bounds; memory valid while self lives.
        unsafe { &*self.groups.add(g as usize) }
    }

    /// Worker record `i` (< workers).
    pub fn worker(&self, i: u32) -> &WorkerRec {
        assert!(i < self.geo.workers);
        // SAFETY: in bounds; memory valid while self lives.
        unsafe { &*self.workers.add(i as usize) }
    }

    fn word(&self, i: u32) -> &AtomicU64 {
        assert!(i < self.geo.slots);
        // SAFETY: in bounds; memory valid while self lives.
        unsafe { &*self.words.add(i as usize) }
    }

    /// Slot head `i` (< slots).
    pub fn head(&self, i: u32) -> &SlotHead {
        assert!(i < self.geo.slots);
        // SAFETY: in bounds; memory valid while self lives.
        unsafe { &*self.heads.add(i as usize) }
    }

    /// The decoded state word of slot `i`; `None` if it is garbage (a
    /// damaged region: the slot is then left alone).
    pub fn slot_word(&self, i: u32) -> Option<SlotWord> {
        SlotWord::decode(
            self.word(i).load(Ordering::SeqCst),
            self.geo.groups,
            self.geo.workers,
        )
    }

    /// The decoded state word of worker record `i`.
    pub fn worker_word(&self, i: u32) -> Option<WorkerWord> {
        WorkerWord::decode(self.worker(i).state.load(Ordering::SeqCst), self.geo.groups)
    }

    /// Compare-and-swap of slot `i`'s state word. A slot that becomes
    /// queued is then marked in its group's summary (every change to
    /// *queued* goes through here).
    fn cas(&self, i: u32, from: SlotWord, to: SlotWord) -> bool {
        let ok = self
            .word(i)
            .compare_exchange(
                from.encode(),
                to.encode(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok();
        if ok && to.state == SlotState::Queued {
            self.mark_queued(to.group, i);
        }
        ok
    }

    /// Sets the summary bit of slot `i` in group `g` (after the slot became
    /// queued). Always a read-modify-write, never "already set, skip": a
    /// worker's clearing of the bit is then ordered with it, either before
    /// (the bit stays set) or after (that worker's look at the slots that
    /// follows the clearing sees this slot queued).
    fn mark_queued(&self, g: u32, i: u32) {
        let b = i / self.geo.per_bit();
        let (w, m) = ((b / 64) as usize, 1u64 << (b % 64));
        self.group(g).queued[w].fetch_or(m, Ordering::SeqCst);
    }

    /// The index in [`Core::bufs`] of slot `i`'s request or response
    /// buffer.
    fn buf_index(&self, i: u32, response: bool) -> usize {
        assert!(i < self.geo.slots);
        2 * i as usize + usize::from(response)
    }

    /// The request bytes of slot `i`, `len` bytes (≤ max_message), in
    /// place (no copy).
    ///
    /// The borrow outlives the buffer cell's `with`: under loom the read is
    /// checked against the hand-over where it starts only. The loom models
    /// read through [`Core::with_request`], which is checked throughout.
    ///
    /// # Safety
    ///
    /// The caller must own the slot's request buffer (it took the slot).
    pub unsafe fn request_bytes(&self, i: u32, len: u32) -> &[u8] {
        assert!(len <= self.geo.max_message);
        let p = self.bufs.with(self.buf_index(i, false), |p| p);
        // SAFETY: `len` ≤ max_message ≤ buf_size bytes of the buffer, which
        // lives as long as self and which the caller owns (contract): no
        // one writes it while the borrow lasts.
        unsafe { std::slice::from_raw_parts(p, len as usize) }
    }

    /// The response bytes of slot `i`, `len` bytes (≤ max_message), in
    /// place (no copy); as [`Core::request_bytes`] for loom.
    ///
    /// # Safety
    ///
    /// The slot must be done and owned by the caller (its submitter).
    pub unsafe fn response_bytes(&self, i: u32, len: u32) -> &[u8] {
        assert!(len <= self.geo.max_message);
        let p = self.bufs.with(self.buf_index(i, true), |p| p);
        // SAFETY: as in request_bytes: in bounds, owned by the caller
        // (contract), valid while self lives.
        unsafe { std::slice::from_raw_parts(p, len as usize) }
    }

    /// Calls `f` with the request bytes of slot `i`, `len` bytes (≤
    /// max_message), read in place within the buffer cell's `with`, so
    /// that loom checks the whole read.
    ///
    /// # Safety
    ///
    /// As [`Core::request_bytes`]: the caller took the slot.
    #[cfg(loom)]
    pub unsafe fn with_request<R>(&self, i: u32, len: u32, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(len <= self.geo.max_message);
        self.bufs.with(self.buf_index(i, false), |p| {
            // SAFETY: in bounds (len ≤ buf_size), owned by the caller for
            // reading (contract), only for the closure's duration.
            f(unsafe { std::slice::from_raw_parts(p, len as usize) })
        })
    }

    /// Calls `f` with the response bytes of slot `i`, `len` bytes, read
    /// in place within the buffer cell's `with` (as
    /// [`Core::with_request`]).
    ///
    /// # Safety
    ///
    /// As [`Core::response_bytes`]: the slot is done and the caller's.
    #[cfg(loom)]
    pub unsafe fn with_response<R>(&self, i: u32, len: u32, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(len <= self.geo.max_message);
        self.bufs.with(self.buf_index(i, true), |p| {
            // SAFETY: as in with_request.
            f(unsafe { std::slice::from_raw_parts(p, len as usize) })
        })
    }

    /// Copies `bytes` (≤ max_message) into slot `i`'s request or response
    /// buffer, through the buffer's cell.
    fn copy_in(&self, i: u32, response: bool, bytes: &[u8]) {
        assert!(bytes.len() <= self.geo.max_message as usize);
        self.bufs.with_mut(self.buf_index(i, response), |p| {
            // SAFETY: at most max_message ≤ buf_size bytes into the buffer;
            // the caller owns it (it is filling the slot, or serving it), so
            // nobody else reads or writes it (loom checks this); `bytes` is
            // ours and does not overlap the shared buffer.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) }
        })
    }

    // -----------------------------------------------------------------
    // Doorbells.

    /// Wakes the submitter of slot `i` (the futex wake only if it may be
    /// asleep: see [`SlotHead::sleeping`]).
    pub fn ring_slot(&self, i: u32) {
        let h = self.head(i);
        h.bell.atomic().fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence after the submitter's `sleeping` store: one
        // of the two sees the other's write.
        sc_fence();
        if h.sleeping.load(Ordering::SeqCst) != 0 {
            h.bell.wake(1);
        }
    }

    /// Wakes worker `idx` if it is about to sleep.
    fn ring_worker(&self, idx: u32) {
        let w = self.worker(idx);
        if w.idle.swap(0, Ordering::SeqCst) == 1 {
            w.bell.atomic().fetch_add(1, Ordering::SeqCst);
            w.bell.wake(1);
        }
    }

    /// Wakes one idle worker of group `g` (if none is idle, every worker
    /// of the group is busy and scans the slots before it sleeps again).
    pub fn ring_any(&self, g: u32) {
        if let Some(w) = self.reserve_idle(g) {
            self.ring_reserved(w.index);
        }
    }

    /// Finds an idle worker of group `g`, from the group's round-robin
    /// cursor, and takes on waking it (its `idle` swapped from 1 to 0): the
    /// caller must then call [`Core::ring_reserved`] on it, whatever else
    /// happens. The cursor moves past the worker found, so that idle
    /// workers take turns (a cursor that only counted calls would mostly
    /// start past the group's records and land on its first one).
    fn reserve_idle(&self, g: u32) -> Option<WorkerId> {
        let n = self.geo.workers;
        let pick = &self.group(g).pick;
        let start = pick.load(Ordering::Relaxed) % n;
        for k in 0..n {
            let idx = (start + k) % n;
            let Some(ww) = self.worker_word(idx) else {
                continue;
            };
            if ww.state != WorkerState::Active || ww.group != g {
                continue;
            }
            let rec = self.worker(idx);
            if rec.idle.load(Ordering::SeqCst) == 1
                && rec
                    .idle
                    .compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                pick.store((idx + 1) % n, Ordering::Relaxed);
                return Some(WorkerId {
                    index: idx,
                    gen: ww.gen,
                });
            }
        }
        None
    }

    /// Wakes worker `idx`, whose `idle` this caller swapped to 0.
    fn ring_reserved(&self, idx: u32) {
        let rec = self.worker(idx);
        rec.bell.atomic().fetch_add(1, Ordering::SeqCst);
        rec.bell.wake(1);
    }

    // -----------------------------------------------------------------
    // Sessions.

    /// The number of slots that count in `session`'s `in_flight` (queued or
    /// taken and naming it). Exact when the caller holds the session's
    /// entry lock: slots only enter or leave those states under it.
    pub fn recount(&self, session: u64) -> u32 {
        let mut n = 0;
        for i in 0..self.geo.slots {
            let before = self.word(i).load(Ordering::SeqCst);
            let s = self.head(i).session.load(Ordering::SeqCst);
            let after = self.word(i).load(Ordering::SeqCst);
            // The same word before and after (the slot generation changes
            // with every claim): the session read belongs to this state.
            if before != after || s != session {
                continue;
            }
            if let Some(w) = SlotWord::decode(after, self.geo.groups, self.geo.workers) {
                if w.state.in_flight() {
                    n += 1;
                }
            }
        }
        n
    }

    /// Locks `session`'s entry, recounting its `in_flight` if the lock was
    /// taken over from a dead holder.
    pub fn lock<'e, E: Env>(&self, env: &'e E, session: u64) -> Result<Option<E::Entry<'e>>> {
        let mut g = env.lock(session)?;
        if let Some(e) = g.as_mut() {
            if e.was_repaired() {
                // The holder died in the middle of a change: the slots are
                // the truth (docs/session.md, "Repair").
                e.set_in_flight(self.recount(session));
                let bound = e
                    .binding()
                    .and_then(|b| WorkerId::from_ref(b, self.geo.workers));
                let keep = bound.is_some_and(|w| {
                    self.worker_word(w.index).is_some_and(|ww| {
                        ww.state == WorkerState::Active
                            && ww.gen == w.gen
                            && env.is_alive(ww.holder)
                    })
                });
                if e.binding().is_some() && !keep {
                    e.set_binding(None);
                }
            }
        }
        Ok(g)
    }

    /// Whether worker `w` is registered (record active at its generation)
    /// in group `g`.
    fn is_registered(&self, w: WorkerId, g: u32) -> Option<WorkerWord> {
        self.worker_word(w.index)
            .filter(|ww| ww.state == WorkerState::Active && ww.gen == w.gen && ww.group == g)
    }

    /// Whether group `g` has a live worker other than `except`.
    pub fn group_has_live<E: Env>(&self, env: &E, g: u32, except: Option<WorkerId>) -> bool {
        (0..self.geo.workers).any(|idx| {
            self.worker_word(idx).is_some_and(|ww| {
                ww.state == WorkerState::Active
                    && ww.group == g
                    && except
                        != Some(WorkerId {
                            index: idx,
                            gen: ww.gen,
                        })
                    && env.is_alive(ww.holder)
            })
        })
    }

    // -----------------------------------------------------------------
    // The submitter.

    /// Claims a free slot for this process and copies `bytes` in. When a
    /// pass finds none, frees the slots of dead submitters and tries once
    /// more; then `Full`.
    pub fn claim<E: Env>(&self, env: &E, bytes: &[u8]) -> Result<(u32, SlotWord)> {
        if bytes.len() > self.geo.max_message as usize {
            return Err(err!(
                Invalid,
                "request of {} bytes is larger than the area's max_message of {} bytes",
                bytes.len(),
                self.geo.max_message
            ));
        }
        let n = self.geo.slots;
        for pass in 0..2 {
            let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            for k in 0..n {
                let i = (start + k) % n;
                let Some(w) = self.slot_word(i) else { continue };
                if w.state != SlotState::Free {
                    continue;
                }
                let fw = SlotWord {
                    state: SlotState::Filling,
                    claimant: env.me(),
                    gen: (w.gen + 1) & SLOT_GEN_MASK,
                    ..w
                };
                if self.cas(i, w, fw) {
                    // The next claim starts here: the slot this process
                    // used last is free again by then, and its words and
                    // buffers are still in this CPU's caches.
                    self.cursor.store(i, Ordering::Relaxed);
                    let h = self.head(i);
                    h.submitter.store(env.me().0, Ordering::Relaxed);
                    h.sleeping.store(0, Ordering::Relaxed);
                    h.resp_len.store(0, Ordering::Relaxed);
                    h.status.store(0, Ordering::Relaxed);
                    h.req_len.store(bytes.len() as u32, Ordering::Relaxed);
                    self.copy_in(i, false, bytes);
                    return Ok((i, fw));
                }
            }
            if pass == 0 && self.reclaim(env) == 0 {
                break;
            }
        }
        Err(err!(
            Full,
            "all {n} request slots are in use (by live submitters)"
        ))
    }

    /// Queues the filled slot `i` (word `fw`) for `session` to group `g`:
    /// under the session's entry lock, `in_flight + 1` and the slot queued
    /// to the session's worker if it is registered in `g`, else to an idle
    /// worker of `g` (which binds the session when it takes the request),
    /// else to any worker of `g`; then rings the worker. On error the slot
    /// is freed.
    pub fn queue<E: Env>(
        &self,
        env: &E,
        i: u32,
        fw: SlotWord,
        session: u64,
        g: u32,
    ) -> Result<SlotWord> {
        let h = self.head(i);
        h.session.store(session, Ordering::SeqCst);
        let entry = match self.lock(env, session) {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.cas(i, fw, SlotWord::free(fw.gen));
                return Err(err!(
                    NotFound,
                    "session {session:#x} does not exist (ended?)"
                ));
            }
            Err(e) => {
                self.cas(i, fw, SlotWord::free(fw.gen));
                return Err(e);
            }
        };
        let mut entry = entry;
        let bound = entry
            .binding()
            .and_then(|b| WorkerId::from_ref(b, self.geo.workers))
            .filter(|&t| self.is_registered(t, g).is_some());
        // Not bound: to a worker that is free now, not to whichever busy
        // worker finishes first (the "a free worker of the group").
        let reserved = match bound {
            Some(_) => None,
            None => self.reserve_idle(g),
        };
        let target = bound.or(reserved);
        let mut qw = fw.with(SlotState::Queued, g, target);
        // Counted first, so a queued or taken slot is always counted (a
        // worker may take it before this lock is released). If this
        // process dies in between, the next holder recounts.
        let before = entry.in_flight();
        entry.set_in_flight(before.saturating_add(1));
        if !self.cas(i, fw, qw) {
            entry.set_in_flight(before);
            if let Some(r) = reserved {
                self.ring_reserved(r.index);
            }
            return Err(err!(
                Corrupt,
                "request slot {i} changed while its submitter filled it"
            ));
        }
        sc_fence();
        if let Some(t) = target {
            // The worker may have been reaped between the check and the
            // queueing; its reaper's scan then may have missed this slot.
            // Either that scan sees the slot, or this check sees the record
            // change (both are sequentially consistent).
            if self.is_registered(t, g).is_none() {
                let aw = qw.with(SlotState::Queued, g, None);
                if self.cas(i, qw, aw) {
                    qw = aw;
                }
            }
        }
        drop(entry);
        self.group(g).submitted.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = reserved {
            self.ring_reserved(r.index);
        }
        match qw.worker {
            Some(_) if reserved.is_some() => {}
            Some(t) => self.ring_worker(t.index),
            None => self.ring_any(g),
        }
        Ok(qw)
    }

    /// Where the request in slot `i` (generation `gen`) is: `Some` once it
    /// is answered or failed.
    pub fn poll(&self, i: u32, gen: u32) -> Result<Option<Outcome>> {
        let w = self
            .slot_word(i)
            .ok_or_else(|| err!(Corrupt, "request slot {i} has a damaged state word"))?;
        if w.gen != gen || matches!(w.state, SlotState::Free | SlotState::Filling) {
            return Err(err!(
                Corrupt,
                "request slot {i} was reused while its submitter waited for it"
            ));
        }
        Ok(match w.state {
            SlotState::Done => {
                let len = self.head(i).resp_len.load(Ordering::SeqCst);
                if len > self.geo.max_message {
                    return Err(err!(
                        Corrupt,
                        "request slot {i}: response length {len} beyond max_message"
                    ));
                }
                Some(Outcome::Done(len))
            }
            SlotState::Failed => {
                let code = self.head(i).status.load(Ordering::SeqCst);
                let kind = ErrorKind::ALL
                    .iter()
                    .copied()
                    .find(|k| k.code() == code)
                    .unwrap_or(ErrorKind::Unavailable);
                Some(Outcome::Failed(kind))
            }
            _ => None,
        })
    }

    /// Frees a done or failed slot (the submitter has read it).
    pub fn collect(&self, i: u32, gen: u32) {
        if let Some(w) = self.slot_word(i) {
            if w.gen == gen && matches!(w.state, SlotState::Done | SlotState::Failed) {
                self.cas(i, w, SlotWord::free(gen));
            }
        }
    }

    /// The waiting submitter's periodic check of slot `i`: if the worker it
    /// is queued to or taken by is dead, reap it; if it names a worker that
    /// is gone, move it off; if it waits for any worker of a group that
    /// has none alive, fail it.
    pub fn check<E: Env>(&self, env: &E, i: u32, gen: u32) {
        let Some(w) = self.slot_word(i) else { return };
        if w.gen != gen || !w.state.in_flight() {
            return;
        }
        match w.worker {
            Some(x) => match self.worker_word(x.index) {
                Some(ww) if ww.gen == x.gen && ww.state == WorkerState::Active => {
                    if !env.is_alive(ww.holder) {
                        self.reap(env, x);
                    }
                }
                Some(ww) if ww.gen == x.gen && ww.state == WorkerState::Reaping => {
                    if !env.is_alive(ww.holder) {
                        self.reap(env, x);
                    }
                }
                // The record was freed or reused: an orphan.
                _ => self.move_off(env, i, w, x),
            },
            None => {
                if w.state == SlotState::Queued && !self.group_has_live(env, w.group, None) {
                    self.fail_queued(env, i, w);
                }
            }
        }
    }

    fn fail_queued<E: Env>(&self, env: &E, i: u32, w: SlotWord) {
        let session = self.head(i).session.load(Ordering::SeqCst);
        if self.slot_word(i) != Some(w) {
            return;
        }
        let Ok(mut entry) = self.lock(env, session) else {
            return;
        };
        // Re-check under the lock: a worker may have registered and taken it.
        if self.group_has_live(env, w.group, None) {
            return;
        }
        self.head(i)
            .status
            .store(ErrorKind::Unavailable.code(), Ordering::SeqCst);
        if self.cas(i, w, w.with(SlotState::Failed, w.group, None)) {
            if let Some(e) = entry.as_mut() {
                e.set_in_flight(e.in_flight().saturating_sub(1));
            }
            self.group(w.group).failed.fetch_add(1, Ordering::Relaxed);
        }
        drop(entry);
        self.ring_slot(i);
    }

    /// The submitter no longer waits for slot `i` (its ticket was dropped,
    /// or it died): a queued request is withdrawn, a taken one is marked so
    /// that its worker frees it, an answered one is freed.
    pub fn abandon<E: Env>(&self, env: &E, i: u32, gen: u32) {
        loop {
            let Some(w) = self.slot_word(i) else { return };
            if w.gen != gen {
                return;
            }
            match w.state {
                SlotState::Free => return,
                SlotState::Filling => {
                    if self.cas(i, w, SlotWord::free(gen)) {
                        return;
                    }
                }
                SlotState::Done | SlotState::Failed => {
                    if self.cas(i, w, SlotWord::free(gen)) {
                        return;
                    }
                }
                SlotState::Taken => {
                    if w.abandoned
                        || self.cas(
                            i,
                            w,
                            SlotWord {
                                abandoned: true,
                                ..w
                            },
                        )
                    {
                        return;
                    }
                }
                SlotState::Queued => {
                    let session = self.head(i).session.load(Ordering::SeqCst);
                    if self.slot_word(i) != Some(w) {
                        continue;
                    }
                    let entry = self.lock(env, session);
                    if self.cas(i, w, SlotWord::free(gen)) {
                        if let Ok(Some(mut e)) = entry {
                            e.set_in_flight(e.in_flight().saturating_sub(1));
                        }
                        return;
                    }
                    if entry.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Frees the slots whose submitter is dead (what a submitter does when
    /// it finds no free slot). Returns how many it freed or handed over.
    pub fn reclaim<E: Env>(&self, env: &E) -> u32 {
        let mut known: Vec<(Holder, bool)> = Vec::new();
        let mut alive = |h: Holder| -> bool {
            if let Some(&(_, a)) = known.iter().find(|(k, _)| *k == h) {
                return a;
            }
            let a = env.is_alive(h);
            known.push((h, a));
            a
        };
        let mut n = 0;
        for i in 0..self.geo.slots {
            let Some(w) = self.slot_word(i) else { continue };
            match w.state {
                SlotState::Free => {}
                SlotState::Filling => {
                    if !alive(w.claimant) && self.cas(i, w, SlotWord::free(w.gen)) {
                        n += 1;
                    }
                }
                _ => {
                    if w.abandoned {
                        continue; // its worker frees it
                    }
                    let s = Holder(self.head(i).submitter.load(Ordering::SeqCst));
                    if self.slot_word(i) == Some(w) && !alive(s) {
                        self.abandon(env, i, w.gen);
                        n += 1;
                    }
                }
            }
        }
        n
    }

    // -----------------------------------------------------------------
    // Workers.

    /// Registers a worker in group `g` for process `env.me()`; when every
    /// record is in use, reaps dead workers and tries once more.
    pub fn register<E: Env>(&self, env: &E, g: u32, pid: u32, start: u64) -> Result<WorkerId> {
        if g >= self.geo.groups {
            return Err(err!(
                Invalid,
                "worker group {g} does not exist (the area has groups 0 to {})",
                self.geo.groups - 1
            ));
        }
        for pass in 0..2 {
            for idx in 0..self.geo.workers {
                let Some(ww) = self.worker_word(idx) else {
                    continue;
                };
                if ww.state != WorkerState::Free {
                    continue;
                }
                let new = WorkerWord {
                    state: WorkerState::Active,
                    holder: env.me(),
                    gen: ww.gen.wrapping_add(1),
                    group: g,
                };
                let rec = self.worker(idx);
                rec.idle.store(0, Ordering::SeqCst);
                if rec
                    .state
                    .compare_exchange(
                        ww.encode(),
                        new.encode(),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                {
                    rec.pid.store(pid, Ordering::Relaxed);
                    rec.start.store(start, Ordering::Relaxed);
                    rec.served.store(0, Ordering::Relaxed);
                    return Ok(WorkerId {
                        index: idx,
                        gen: new.gen,
                    });
                }
            }
            if pass == 0 {
                for idx in 0..self.geo.workers {
                    if let Some(ww) = self.worker_word(idx) {
                        if ww.state != WorkerState::Free && !env.is_alive(ww.holder) {
                            self.reap(
                                env,
                                WorkerId {
                                    index: idx,
                                    gen: ww.gen,
                                },
                            );
                        }
                    }
                }
            }
        }
        Err(err!(
            Full,
            "all {} worker records are held by live workers",
            self.geo.workers
        ))
    }

    /// Takes the next request for worker `me` of group `g`, scanning from
    /// `*cursor`: one queued to `me`, or to any worker of `g`. A request
    /// for any worker binds its session to `me`, unless the session is
    /// bound to another live worker of `g`: it is then queued to that one
    /// and the scan goes on. Only the slots the group's summary marks are
    /// looked at (`full`: every slot, the fallback that finds a request
    /// whose queuer died before marking it).
    pub fn take<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        g: u32,
        cursor: &mut u32,
        full: bool,
    ) -> Option<Taken> {
        let n = self.geo.slots;
        let per = self.geo.per_bit();
        let nbits = self.geo.summary_bits();
        let grp = self.group(g);
        let marked: [u64; 4] = std::array::from_fn(|w| {
            if full {
                u64::MAX
            } else {
                grp.queued[w].load(Ordering::SeqCst)
            }
        });
        let start = *cursor % n;
        let b0 = start / per;
        let mut scan = Scan {
            found: None,
            more: false,
        };
        // The marked chunks in circular order from the cursor's: its own
        // from the cursor on, the others, then its own up to the cursor.
        let after = set_bits(&marked, nbits).filter(|&b| b >= b0);
        let before = set_bits(&marked, nbits).filter(|&b| b < b0);
        let again = set_bits(&marked, nbits).filter(|&b| b == b0);
        for (b, last) in after
            .map(|b| (b, false))
            .chain(before.map(|b| (b, false)))
            .chain(again.map(|b| (b, true)))
        {
            let (lo, hi) = (b * per, ((b + 1) * per).min(n));
            let (lo, hi) = match (b == b0, last) {
                (true, false) => (start, hi),
                (true, true) => (lo, start),
                _ => (lo, hi),
            };
            if lo >= hi {
                continue;
            }
            let whole = lo == b * per && hi == ((b + 1) * per).min(n);
            if !self.take_in(env, me, g, lo..hi, cursor, &mut scan) && whole {
                // Nothing queued to the group there: clear the bit, then
                // look again, so that a slot queued meanwhile (whose queuer
                // saw the bit still set) is not left unmarked.
                let (w, m) = ((b / 64) as usize, 1u64 << (b % 64));
                grp.queued[w].fetch_and(!m, Ordering::SeqCst);
                if self.take_in(env, me, g, lo..hi, cursor, &mut scan) {
                    grp.queued[w].fetch_or(m, Ordering::SeqCst);
                }
            }
            if scan.more {
                break;
            }
        }
        scan.found.map(|t| Taken {
            more: scan.more,
            ..t
        })
    }

    /// [`Core::take`] over the slots `range`. Returns whether any of them
    /// is queued to group `g` (to whichever worker) when looked at.
    fn take_in<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        g: u32,
        range: std::ops::Range<u32>,
        cursor: &mut u32,
        scan: &mut Scan,
    ) -> bool {
        let mut queued = false;
        for i in range {
            let Some(w) = self.slot_word(i) else { continue };
            if w.state != SlotState::Queued || w.group != g {
                continue;
            }
            queued = true;
            if w.worker.is_some() && w.worker != Some(me) {
                continue;
            }
            if scan.found.is_some() {
                if w.worker.is_none() {
                    scan.more = true;
                    return true;
                }
                continue;
            }
            let tw = w.with(SlotState::Taken, g, Some(me));
            if !self.cas(i, w, tw) {
                continue;
            }
            // A request for any worker, or one queued to this worker while
            // its session is not bound here (it was queued to a free
            // worker): bind the session, or pass the request on.
            let unbound = w.worker.is_none() || {
                let session = self.head(i).session.load(Ordering::SeqCst);
                env.bound_hint(session) != Some(me.to_ref())
            };
            if unbound && !self.bind_on_take(env, me, g, i, tw) {
                continue;
            }
            *cursor = i + 1;
            scan.found = Some(Taken {
                slot: i,
                word: tw,
                more: false,
            });
        }
        queued
    }

    /// See [`Core::take`]. Returns false if the slot was passed on.
    fn bind_on_take<E: Env>(&self, env: &E, me: WorkerId, g: u32, i: u32, tw: SlotWord) -> bool {
        let session = self.head(i).session.load(Ordering::SeqCst);
        let Ok(Some(mut entry)) = self.lock(env, session) else {
            return true; // the session ended, or its lock is stuck: serve it unbound
        };
        let other = match entry
            .binding()
            .and_then(|b| WorkerId::from_ref(b, self.geo.workers))
        {
            Some(x) if x == me => return true,
            Some(x) => x,
            None => {
                entry.set_binding(Some(me.to_ref()));
                return true;
            }
        };
        match self.worker_word(other.index) {
            Some(ww)
                if ww.state == WorkerState::Active
                    && ww.gen == other.gen
                    && env.is_alive(ww.holder) =>
            {
                if ww.group != g {
                    return true; // bound to a worker of another group: serve, leave it
                }
            }
            _ => {
                // Bound to a worker that is gone: take the binding over.
                entry.set_binding(Some(me.to_ref()));
                return true;
            }
        }
        // Another live worker of the group won the binding: pass it on.
        let mut cur = tw;
        loop {
            let to = cur.with(SlotState::Queued, g, Some(other));
            if self.cas(i, cur, to) {
                cur = to;
                sc_fence();
                break;
            }
            match self.slot_word(i) {
                Some(w)
                    if w.gen == tw.gen && w.state == SlotState::Taken && w.worker == Some(me) =>
                {
                    cur = w
                }
                _ => return false,
            }
        }
        // As in `queue`: the worker may have been reaped meanwhile.
        let target = if self.is_registered(other, g).is_none() {
            let aw = cur.with(SlotState::Queued, g, None);
            self.cas(i, cur, aw);
            None
        } else {
            Some(other)
        };
        drop(entry);
        match target {
            Some(t) => self.ring_worker(t.index),
            None => self.ring_any(g),
        }
        false
    }

    /// Writes the response of slot `i` (taken by `me` as `tw`) and hands
    /// it to the submitter: under the session's entry lock, `in_flight - 1`
    /// and the slot marked done (or freed, if its submitter gave up).
    pub fn respond<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        i: u32,
        tw: SlotWord,
        bytes: &[u8],
    ) -> Result<()> {
        if bytes.len() > self.geo.max_message as usize {
            return Err(err!(
                Invalid,
                "response of {} bytes is larger than the area's max_message of {} bytes",
                bytes.len(),
                self.geo.max_message
            ));
        }
        self.write_response(i, bytes);
        // A worker dying here leaves a written response in a slot that is
        // still taken: its reaper requeues the request (a test dies here).
        crate::failpoint::hit("respond-before-done");
        self.finish(env, me, i, tw, SlotState::Done)
    }

    /// The first half of [`Core::respond`]: the response bytes and their
    /// length into slot `i`, which the caller took (and which stays taken).
    /// `bytes` is at most `max_message` long.
    pub(crate) fn write_response(&self, i: u32, bytes: &[u8]) {
        self.copy_in(i, true, bytes);
        self.head(i)
            .resp_len
            .store(bytes.len() as u32, Ordering::SeqCst);
    }

    /// Fails slot `i` (taken by `me`): the worker let the request go
    /// without answering it.
    pub fn give_back<E: Env>(&self, env: &E, me: WorkerId, i: u32, tw: SlotWord) -> Result<()> {
        self.head(i)
            .status
            .store(ErrorKind::Unavailable.code(), Ordering::SeqCst);
        self.finish(env, me, i, tw, SlotState::Failed)
    }

    fn finish<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        i: u32,
        tw: SlotWord,
        to: SlotState,
    ) -> Result<()> {
        let session = self.head(i).session.load(Ordering::SeqCst);
        let mut entry = self.lock(env, session)?;
        loop {
            let cur = match self.slot_word(i) {
                Some(w)
                    if w.gen == tw.gen && w.state == SlotState::Taken && w.worker == Some(me) =>
                {
                    w
                }
                _ => {
                    return Err(err!(
                        Corrupt,
                        "request slot {i} was taken away from this worker"
                    ))
                }
            };
            let new = if cur.abandoned {
                SlotWord::free(cur.gen)
            } else {
                cur.with(to, cur.group, Some(me))
            };
            if self.cas(i, cur, new) {
                break;
            }
        }
        if let Some(e) = entry.as_mut() {
            e.set_in_flight(e.in_flight().saturating_sub(1));
        }
        drop(entry);
        if to == SlotState::Done {
            self.worker(me.index).served.fetch_add(1, Ordering::Relaxed);
        }
        self.ring_slot(i);
        Ok(())
    }

    /// Reaps worker `x` if it is dead (or unregisters it, if `x` is the
    /// caller's own worker: `own`): exactly one process wins the record's
    /// compare-and-swap to *reaping*; it moves every slot queued to or
    /// taken by `x` off it, removes the bindings to it, and frees the
    /// record. Returns whether this call did the reaping.
    pub fn reap_worker<E: Env>(&self, env: &E, x: WorkerId, own: bool) -> bool {
        let rec = self.worker(x.index);
        let group;
        loop {
            let Some(ww) = self.worker_word(x.index) else {
                return false;
            };
            if ww.gen != x.gen || ww.state == WorkerState::Free {
                return false;
            }
            if ww.holder == env.me() && !(own && ww.state == WorkerState::Active) {
                return false; // ours and alive, or this process reaps it already
            }
            if !own && env.is_alive(ww.holder) {
                return false;
            }
            let to = WorkerWord {
                state: WorkerState::Reaping,
                holder: env.me(),
                ..ww
            };
            if rec
                .state
                .compare_exchange(ww.encode(), to.encode(), Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                group = ww.group;
                break;
            }
        }
        #[cfg(loom)]
        self.reaps.fetch_add(1, Ordering::Relaxed);
        rec.idle.store(0, Ordering::SeqCst);
        sc_fence();
        for i in 0..self.geo.slots {
            if let Some(w) = self.slot_word(i) {
                if w.state.in_flight() && w.worker == Some(x) {
                    self.move_off(env, i, w, x);
                }
            }
        }
        env.remove_bindings_to(x.to_ref());
        let done = WorkerWord {
            state: WorkerState::Free,
            holder: Holder::NONE,
            gen: x.gen,
            group: 0,
        };
        let reaping = WorkerWord {
            state: WorkerState::Reaping,
            holder: env.me(),
            gen: x.gen,
            group,
        };
        let _ = rec.state.compare_exchange(
            reaping.encode(),
            done.encode(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        true
    }

    /// [`Core::reap_worker`] of another process's worker.
    pub fn reap<E: Env>(&self, env: &E, x: WorkerId) -> bool {
        self.reap_worker(env, x, false)
    }

    /// Moves slot `i` (word `w`, naming worker `x` that is dead or gone)
    /// off `x`: under its session's entry lock, `in_flight - 1`, the
    /// session unbound from `x`, and the request queued to any live worker
    /// of its group (`in_flight + 1`) or failed (`Unavailable`) if the
    /// group has none. An abandoned request is freed instead.
    fn move_off<E: Env>(&self, env: &E, i: u32, w: SlotWord, x: WorkerId) {
        // The session read may belong to a later use of the slot: then the
        // generation check under the lock below finds the slot moved on.
        let session = self.head(i).session.load(Ordering::SeqCst);
        let Ok(mut entry) = self.lock(env, session) else {
            return;
        };
        let live = self.group_has_live(env, w.group, Some(x));
        let queued;
        loop {
            let Some(cur) = self.slot_word(i) else { return };
            if cur.gen != w.gen || !cur.state.in_flight() || cur.worker != Some(x) {
                return; // somebody else moved it
            }
            let new = if cur.abandoned {
                SlotWord::free(cur.gen)
            } else if live {
                cur.with(SlotState::Queued, cur.group, None)
            } else {
                self.head(i)
                    .status
                    .store(ErrorKind::Unavailable.code(), Ordering::SeqCst);
                cur.with(SlotState::Failed, cur.group, None)
            };
            if self.cas(i, cur, new) {
                queued = new.state == SlotState::Queued;
                sc_fence();
                break;
            }
        }
        if let Some(e) = entry.as_mut() {
            if e.binding() == Some(x.to_ref()) {
                e.set_binding(None);
            }
            let n = e.in_flight().saturating_sub(1);
            e.set_in_flight(if queued { n + 1 } else { n });
        }
        drop(entry);
        let grp = self.group(w.group);
        if queued {
            grp.requeued.fetch_add(1, Ordering::Relaxed);
            self.ring_any(w.group);
        } else {
            grp.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.ring_slot(i);
    }

    /// An idle worker's look at its peers: reaps every dead worker of
    /// group `g`. Returns how many it reaped.
    pub fn check_peers<E: Env>(&self, env: &E, g: u32) -> u32 {
        let mut n = 0;
        for idx in 0..self.geo.workers {
            if let Some(ww) = self.worker_word(idx) {
                if ww.state != WorkerState::Free
                    && ww.group == g
                    && !env.is_alive(ww.holder)
                    && self.reap(
                        env,
                        WorkerId {
                            index: idx,
                            gen: ww.gen,
                        },
                    )
                {
                    n += 1;
                }
            }
        }
        n
    }

    // -----------------------------------------------------------------
    // The two blocking loops.

    /// One round of worker `me` of group `g`: takes a request if one is
    /// queued; else marks the worker idle, scans again,
    /// spins up to `spins` times on its doorbell, sleeps on it at most
    /// `sleep` (`None`: until rung), then scans once more. A worker that was
    /// rung for a request of any worker and sees more of them passes the
    /// ring on to another idle worker of the group. `full`: the scans look
    /// at every slot, not only those the group's summary marks.
    #[allow(clippy::too_many_arguments)]
    pub fn next_once<E: Env>(
        &self,
        env: &E,
        me: WorkerId,
        g: u32,
        cursor: &mut u32,
        sleep: Option<std::time::Duration>,
        spins: u32,
        full: bool,
    ) -> Option<Taken> {
        // Busy: take without announcing idleness (no doorbell rings then).
        if let Some(t) = self.take(env, me, g, cursor, full) {
            return Some(t);
        }
        let rec = self.worker(me.index);
        // Whoever queues a request for this worker after this store either
        // is seen by the scan below or sees `idle` and rings the doorbell,
        // which then no longer holds `s`.
        rec.idle.store(1, Ordering::SeqCst);
        sc_fence();
        let s = rec.bell.load(Ordering::SeqCst);
        let mut t = self.take(env, me, g, cursor, full);
        if t.is_none() {
            for k in 0..spins {
                if rec.bell.load(Ordering::Relaxed) != s {
                    break;
                }
                // As in `wait`: a submitter waiting for our last response
                // may share this CPU; spinning without yielding keeps it
                // off until the spin ends.
                if k % 64 == 63 {
                    crate::sync::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            // Whoever swapped `idle` to 0 has taken on waking this worker,
            // and its ring may be in `s` already: a ring meant for a request
            // this worker took meanwhile, which consumed this round's
            // `idle` (found by the loom model `summary_never_hides_a_request`:
            // a later submitter then sees `idle` 0 and rings nobody). Such a
            // ring is read in `s` only after its swap, so this load sees 0:
            // look again instead of sleeping.
            if rec.bell.load(Ordering::SeqCst) == s && rec.idle.load(Ordering::SeqCst) == 1 {
                rec.bell.wait(s, sleep);
            }
        }
        let rung = rec.idle.swap(0, Ordering::SeqCst) == 0;
        if t.is_none() {
            t = self.take(env, me, g, cursor, full);
        }
        if rung && t.as_ref().is_some_and(|t| t.more) {
            self.ring_any(g);
        }
        t
    }

    /// The submitter's wait for slot `i` (generation `gen`): spins up to
    /// `spins` times, then sleeps on the slot's futex, checking the
    /// request's worker (or group) whenever `*next_check` has passed, and
    /// then every [`CHECK_EVERY`] (under loom: before every sleep; `None`:
    /// [`CHECK_EVERY`] after this wait first goes to sleep).
    /// `*next_check` belongs to the ticket, so that short waits in a loop
    /// still check. `Timeout` once `timeout` has passed since the call
    /// (ignored under loom). A response that is already there is returned
    /// without reading the clock.
    pub fn wait<E: Env>(
        &self,
        env: &E,
        i: u32,
        gen: u32,
        timeout: Option<std::time::Duration>,
        spins: u32,
        next_check: &mut Option<std::time::Instant>,
    ) -> Result<Outcome> {
        let h = self.head(i);
        // The deadline, once the clock was read (at once when spinning,
        // else before the first sleep).
        #[cfg(not(loom))]
        let mut deadline: Option<Option<std::time::Instant>> = None;
        #[cfg(not(loom))]
        if spins > 0 {
            deadline = Some(timeout.and_then(|t| std::time::Instant::now().checked_add(t)));
        }
        for k in 0..spins {
            if let Some(o) = self.poll(i, gen)? {
                return Ok(o);
            }
            if k % 64 == 63 {
                crate::sync::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        #[cfg(loom)]
        let _ = (next_check, timeout);
        // From here on whoever changes the slot calls the futex wake
        // (`ring_slot`): this store comes before the state is read below,
        // so either that read sees the change or the ringer sees the flag.
        h.sleeping.store(1, Ordering::SeqCst);
        sc_fence();
        loop {
            let s = h.bell.load(Ordering::SeqCst);
            if let Some(o) = self.poll(i, gen)? {
                return Ok(o);
            }
            #[cfg(loom)]
            let (due, slice) = (true, None);
            #[cfg(not(loom))]
            let (due, slice) = {
                let now = std::time::Instant::now();
                let deadline =
                    *deadline.get_or_insert_with(|| timeout.and_then(|t| now.checked_add(t)));
                if deadline.is_some_and(|d| now >= d) {
                    return Err(err!(
                        Timeout,
                        "no response to the request in slot {i} within the timeout"
                    ));
                }
                let next = *next_check.get_or_insert(now + CHECK_EVERY);
                let due = now >= next;
                if due {
                    *next_check = Some(now + CHECK_EVERY);
                }
                let mut slice = next_check.unwrap_or(now).saturating_duration_since(now);
                if let Some(d) = deadline {
                    slice = slice.min(d.saturating_duration_since(now));
                }
                (due, Some(slice))
            };
            if due {
                self.check(env, i, gen);
                if h.bell.load(Ordering::SeqCst) != s {
                    continue;
                }
            }
            h.bell.wait(s, slice);
        }
    }
}

// ---------------------------------------------------------------------------
// The table behind the trait.

impl EntryOps for super::entry::EntryGuard<'_> {
    fn in_flight(&self) -> u32 {
        super::entry::EntryGuard::in_flight(self)
    }
    fn set_in_flight(&mut self, n: u32) {
        super::entry::EntryGuard::set_in_flight(self, n)
    }
    fn binding(&self) -> Option<WorkerRef> {
        super::entry::EntryGuard::binding(self)
    }
    fn set_binding(&mut self, b: Option<WorkerRef>) {
        super::entry::EntryGuard::set_binding(self, b)
    }
    fn was_repaired(&self) -> bool {
        super::entry::EntryGuard::was_repaired(self)
    }
}

/// `NotFound` from a lock is "no such session"; other errors stay errors.
fn found<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(g) => Ok(Some(g)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The dispatcher's view of a table's entries (on the heap, in loom
/// models and unit tests) as one process (`actor`).
pub struct EntriesEnv<'a> {
    /// The entries.
    pub entries: &'a super::entry::Entries,
    /// Who acts, and how it tells whether others live.
    pub actor: super::entry::Actor<'a>,
}

impl Env for EntriesEnv<'_> {
    type Entry<'b>
        = super::entry::EntryGuard<'b>
    where
        Self: 'b;
    fn me(&self) -> Holder {
        self.actor.me
    }
    fn is_alive(&self, h: Holder) -> bool {
        h == self.actor.me || self.actor.live.is_alive(h)
    }
    fn lock(&self, session: u64) -> Result<Option<Self::Entry<'_>>> {
        found(
            self.entries
                .lock(self.actor, super::entry::SessionId(session), None),
        )
    }
    fn remove_bindings_to(&self, worker: WorkerRef) {
        self.entries
            .remove_bindings_to(self.actor, worker, std::time::Duration::from_secs(3600));
    }
    fn bound_hint(&self, session: u64) -> Option<WorkerRef> {
        self.entries.bound_hint(super::entry::SessionId(session))
    }
}

#[cfg(not(loom))]
impl Env for super::table::Table {
    type Entry<'b> = super::entry::EntryGuard<'b>;
    fn me(&self) -> Holder {
        self.membership().holder()
    }
    fn is_alive(&self, h: Holder) -> bool {
        use super::records::Liveness;
        self.membership().is_alive(h)
    }
    fn lock(&self, session: u64) -> Result<Option<Self::Entry<'_>>> {
        found(self.lock_entry(super::entry::SessionId(session), super::table::LOCK_TIMEOUT))
    }
    fn remove_bindings_to(&self, worker: WorkerRef) {
        super::table::Table::remove_bindings_to(self, worker);
    }
    fn bound_hint(&self, session: u64) -> Option<WorkerRef> {
        super::table::Table::bound_hint(self, super::entry::SessionId(session))
    }
}
