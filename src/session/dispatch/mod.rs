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
//!
//! The code is one `impl Core`, in parts:
//!
//! - this file: the traits the table is reached through ([`Env`],
//!   [`EntryOps`]), [`Core`] itself and its access to the region (records,
//!   state words, the compare-and-swap every slot change goes through,
//!   buffers);
//! - `doorbells`: waking a submitter, a worker, an idle worker of a group;
//! - `entries`: a session's entry lock (with the repair after a dead
//!   holder), the recount of `in_flight`, which workers are registered;
//! - `submitter`: claim, queue, poll, collect, the waiting submitter's
//!   check, withdrawal, and freeing dead submitters' slots;
//! - `take`: a worker's scan for its next request and the binding of its
//!   session;
//! - `workers`: registering, answering, failing an unanswered request;
//! - `failover`: unregistering and reaping a worker (its slots moved to
//!   another worker of the group, or failed), the look at the peers;
//! - `blocking`: the worker's and the submitter's waits;
//! - `env`: [`Env`] over the real table and over heap entries (loom).

use super::entry::WorkerRef;
use super::requests::{Geometry, GroupRec, SlotHead, SlotState, SlotWord, WorkerRec, WorkerWord};
use crate::error::{ErrorKind, Result};
use crate::shm::records::Holder;
use crate::sync::{fence, local, AtomicU64, Ordering, SharedBufs};

mod blocking;
mod doorbells;
mod entries;
mod env;
mod failover;
mod submitter;
mod take;
mod workers;

#[cfg(loom)]
pub use env::EntriesEnv;
pub use take::Taken;

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
    #[cfg(loom)]
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
}
