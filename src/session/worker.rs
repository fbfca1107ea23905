//! The worker's side of the request area: [`Worker`] and the open
//! [`Request`] it hands out.
//!
//! Both are owned handles: a request holds the worker's registration (an
//! `Arc` it shares with its [`Worker`]), not a borrow of the `Worker`, so
//! the C and Python bindings wrap them as they are. The registration ends
//! (the worker is unregistered) when the last of the two goes: a worker
//! closed while a request it took is open stays registered until that
//! request is answered or dropped (docs/session.md, "Closing a worker
//! with an open request").

use super::dispatch::{Taken, CHECK_EVERY};
use super::entry::{SessionId, WorkerRef};
use super::requests::{SlotWord, WorkerId};
use super::sessions::Sessions;
use crate::error::{err, Result};
use crate::sync::Ordering;
use std::cell::Cell;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often an idle worker checks that the other workers of its group
/// live (and reaps the dead ones).
pub const PEER_CHECK: Duration = Duration::from_millis(250);

/// A worker's registration in the request area, shared by its [`Worker`]
/// and the request it holds open. Dropping the last of them unregisters
/// the worker.
struct Registration {
    sessions: Sessions,
    id: WorkerId,
    /// The session of the request this worker took and has neither
    /// answered nor dropped, if any: a worker holds one at a time.
    open: Mutex<Option<SessionId>>,
}

impl Registration {
    fn open(&self) -> MutexGuard<'_, Option<SessionId>> {
        // Nothing panics while it is held; a poisoned lock is still right.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let inner = self.sessions.inner();
        inner.core.unregister(&inner.table, self.id);
    }
}

/// A registered worker of one group. Dropping it unregisters it: requests
/// queued to it, or taken and not answered, go to another worker of the
/// group (or fail when there is none), and the sessions bound to it are
/// unbound. If it holds an open [`Request`] then, the unregistering waits
/// for that request: it happens when the request is answered or dropped
/// (meanwhile requests for the worker's sessions still queue to it). If
/// the process dies instead, the first process that notices does the same
/// at once (docs/session.md, "Worker failure").
///
/// `Send` and `Sync`; taking a request needs `&mut self`, so one thread
/// takes requests at a time (register several workers for several
/// threads). A worker holds one open request at a time.
pub struct Worker {
    reg: Arc<Registration>,
    group: u32,
    cursor: u32,
    last_peer_check: Instant,
    /// When the last take looked at every slot.
    last_full: Instant,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("record", &self.reg.id.index)
            .field("gen", &self.reg.id.gen)
            .field("group", &self.group)
            .finish()
    }
}

impl Worker {
    pub(crate) fn new(sessions: Sessions, id: WorkerId, group: u32) -> Worker {
        Worker {
            reg: Arc::new(Registration {
                sessions,
                id,
                open: Mutex::new(None),
            }),
            group,
            cursor: id.index.wrapping_mul(97),
            last_peer_check: Instant::now(),
            last_full: Instant::now(),
        }
    }

    /// The worker's group.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// What the session table stores for a session bound to this worker.
    pub fn id(&self) -> WorkerRef {
        self.reg.id.to_ref()
    }

    /// Requests this worker has answered.
    pub fn served(&self) -> u64 {
        let core = &self.reg.sessions.inner().core;
        core.worker(self.reg.id.index)
            .served
            .load(Ordering::Relaxed)
    }

    /// `Invalid` while a request this worker took is open.
    fn check_none_open(&self) -> Result<()> {
        match *self.reg.open() {
            None => Ok(()),
            Some(s) => Err(err!(
                Invalid,
                "this worker's previous request (session {s}) is still open, unanswered: answer it or free it before taking another"
            )),
        }
    }

    fn request(&self, t: Taken) -> Request {
        let core = &self.reg.sessions.inner().core;
        let head = core.head(t.slot);
        let session = SessionId(head.session.load(Ordering::SeqCst));
        let max = core.geometry().max_message;
        // A length beyond the limit can only come from a damaged area:
        // serve what fits rather than read out of bounds.
        let len = head.req_len.load(Ordering::SeqCst).min(max);
        *self.reg.open() = Some(session);
        Request {
            reg: Arc::clone(&self.reg),
            slot: t.slot,
            word: t.word,
            session,
            len,
            answered: Cell::new(false),
        }
    }

    /// The next request for this worker, if one is queued: one queued to
    /// it (its sessions), or to any worker of its group. Never blocks.
    /// `Ok(None)`: nothing is queued for it.
    ///
    /// Errors: `Invalid` while a request it took is open (neither
    /// answered nor dropped).
    pub fn try_next(&mut self) -> Result<Option<Request>> {
        self.check_none_open()?;
        let inner = self.reg.sessions.inner();
        // Every PEER_CHECK, a look at every slot (see `Core::take`).
        let now = Instant::now();
        let full = now.duration_since(self.last_full) >= PEER_CHECK;
        if full {
            self.last_full = now;
        }
        let taken = inner.core.take(
            &inner.table,
            self.reg.id,
            self.group,
            &mut self.cursor,
            full,
        );
        Ok(taken.map(|t| self.request(t)))
    }

    /// The next request, waiting at most `timeout` (`None`: no limit) for
    /// one. While it waits, the worker checks its group's other workers
    /// every [`PEER_CHECK`] and reaps the dead ones. `Ok(None)` on timeout.
    ///
    /// Errors: `Invalid` while a request it took is open (neither
    /// answered nor dropped).
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Option<Request>> {
        self.check_none_open()?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let sessions = &self.reg.sessions;
        let spin = sessions.spin();
        let inner = sessions.inner();
        loop {
            sessions.check()?;
            let now = Instant::now();
            // Every PEER_CHECK: reap dead peers, and look at every slot
            // (see `Core::take`).
            let full = now.duration_since(self.last_peer_check) >= PEER_CHECK;
            if full {
                self.last_peer_check = now;
                self.last_full = now;
                inner.core.check_peers(&inner.table, self.group);
            }
            let mut slice = (self.last_peer_check + PEER_CHECK).saturating_duration_since(now);
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(now));
            }
            let slice = slice.max(Duration::from_millis(1)).min(CHECK_EVERY * 10);
            if let Some(t) = inner.core.next_once(
                &inner.table,
                self.reg.id,
                self.group,
                &mut self.cursor,
                Some(slice),
                spin,
                full,
            ) {
                return Ok(Some(self.request(t)));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

/// A request taken by a worker (an open request): its bytes in place, and
/// the session it belongs to. Answer it with [`Request::respond`]; a
/// request dropped without an answer fails (`Unavailable` for its
/// submitter; it is not served again).
///
/// An owned handle: it keeps its worker registered until it is dropped,
/// even if the [`Worker`] is dropped first, so it stays answerable until
/// then. `Send`, not shared between threads.
pub struct Request {
    reg: Arc<Registration>,
    slot: u32,
    word: SlotWord,
    session: SessionId,
    len: u32,
    answered: Cell<bool>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("slot", &self.slot)
            .field("session", &self.session)
            .field("len", &self.len)
            .finish()
    }
}

impl Request {
    /// The session the request belongs to.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The request slot (for diagnostics).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The session set it belongs to.
    pub fn sessions(&self) -> &Sessions {
        &self.reg.sessions
    }

    /// The worker that took it, as the session table names it.
    pub fn worker(&self) -> WorkerRef {
        self.reg.id.to_ref()
    }

    /// Whether [`Request::respond`] succeeded.
    pub fn answered(&self) -> bool {
        self.answered.get()
    }

    /// The request bytes, in place in the shared slot (no copy).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the slot is taken by this worker until it answers (the
        // registration this request holds keeps the worker, and so the
        // slot, from being handed to another); the length was clamped to
        // max_message.
        unsafe {
            self.reg
                .sessions
                .inner()
                .core
                .request_bytes(self.slot, self.len)
        }
    }

    /// Writes `response` into the slot and hands it to the submitter:
    /// under the session's entry lock its `in_flight` goes down by one and
    /// the slot is marked done; then the submitter is woken. The worker
    /// may then take its next request.
    ///
    /// Errors: `Invalid` for a response over the area's `max_message` (the
    /// request stays taken: answer again with a shorter one); an error of
    /// the entry lock (`Timeout`); `Invalid` if it was answered already.
    pub fn respond(&self, response: &[u8]) -> Result<()> {
        if self.answered.get() {
            return Err(err!(Invalid, "the request was answered already"));
        }
        let inner = self.reg.sessions.inner();
        inner
            .core
            .respond(&inner.table, self.reg.id, self.slot, self.word, response)?;
        self.answered.set(true);
        *self.reg.open() = None;
        Ok(())
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.answered.get() {
            let inner = self.reg.sessions.inner();
            let _ = inner
                .core
                .fail_unanswered(&inner.table, self.reg.id, self.slot, self.word);
            *self.reg.open() = None;
        }
        // Then `reg`: the worker is unregistered if its `Worker` is gone.
    }
}
