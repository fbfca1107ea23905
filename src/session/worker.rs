//! The worker's side of the request area: [`Worker`] and [`Request`].

use super::dispatch::{Taken, CHECK_EVERY};
use super::entry::{SessionId, WorkerRef};
use super::requests::{SlotWord, WorkerId};
use super::sessions::Sessions;
use crate::error::Result;
use crate::sync::Ordering;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often an idle worker checks that the other workers of its group
/// live (and reaps the dead ones).
pub const PEER_CHECK: Duration = Duration::from_millis(250);

/// A registered worker of one group. Dropping it unregisters it: requests
/// queued to it, or taken and not answered, go to another worker of the
/// group (or fail when there is none), and the sessions bound to it are
/// unbound. If the process dies instead, the first process that notices
/// does the same (docs/session.md, "Worker failure").
///
/// `Send`, not shared between threads (one worker serves one request at a
/// time; register several for several threads).
pub struct Worker {
    sessions: Sessions,
    id: WorkerId,
    group: u32,
    cursor: u32,
    last_peer_check: Instant,
    /// When the last take looked at every slot.
    last_full: Instant,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("record", &self.id.index)
            .field("gen", &self.id.gen)
            .field("group", &self.group)
            .finish()
    }
}

impl Worker {
    pub(crate) fn new(sessions: Sessions, id: WorkerId, group: u32) -> Worker {
        Worker {
            sessions,
            id,
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
        self.id.to_ref()
    }

    /// Requests this worker has answered.
    pub fn served(&self) -> u64 {
        let core = &self.sessions.inner().core;
        core.worker(self.id.index).served.load(Ordering::Relaxed)
    }

    fn request(&self, t: Taken) -> Request<'_> {
        let core = &self.sessions.inner().core;
        let head = core.head(t.slot);
        let session = SessionId(head.session.load(Ordering::SeqCst));
        let max = core.geometry().max_message;
        // A length beyond the limit can only come from a damaged area:
        // serve what fits rather than read out of bounds.
        let len = head.req_len.load(Ordering::SeqCst).min(max);
        Request {
            worker: self,
            slot: t.slot,
            word: t.word,
            session,
            len,
            answered: Cell::new(false),
        }
    }

    /// The next request for this worker, if one is queued: one queued to
    /// it (its sessions), or to any worker of its group. Never blocks.
    pub fn try_next(&mut self) -> Option<Request<'_>> {
        let inner = self.sessions.inner();
        // Every PEER_CHECK, a look at every slot (see `Core::take`).
        let now = Instant::now();
        let full = now.duration_since(self.last_full) >= PEER_CHECK;
        if full {
            self.last_full = now;
        }
        let t = inner
            .core
            .take(&inner.table, self.id, self.group, &mut self.cursor, full)?;
        Some(self.request(t))
    }

    /// The next request, waiting at most `timeout` (`None`: no limit) for
    /// one. While it waits, the worker checks its group's other workers
    /// every [`PEER_CHECK`] and reaps the dead ones. `None` on timeout.
    pub fn next(&mut self, timeout: Option<Duration>) -> Option<Request<'_>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let spin = self.sessions.spin();
        let inner = self.sessions.inner();
        loop {
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
                self.id,
                self.group,
                &mut self.cursor,
                Some(slice),
                spin,
                full,
            ) {
                return Some(self.request(t));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let inner = self.sessions.inner();
        inner.core.unregister(&inner.table, self.id);
    }
}

/// A request taken by a worker: its bytes in place, and the session it
/// belongs to. Answer it with [`Request::respond`]; a request dropped
/// without an answer fails (`Unavailable` for its submitter).
pub struct Request<'w> {
    worker: &'w Worker,
    slot: u32,
    word: SlotWord,
    session: SessionId,
    len: u32,
    answered: Cell<bool>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("slot", &self.slot)
            .field("session", &self.session)
            .field("len", &self.len)
            .finish()
    }
}

impl Request<'_> {
    /// The session the request belongs to.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The request slot (for diagnostics).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The request bytes, in place in the shared slot (no copy).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the slot is taken by this worker until it answers; the
        // length was clamped to max_message.
        unsafe {
            self.worker
                .sessions
                .inner()
                .core
                .request_bytes(self.slot, self.len)
        }
    }

    /// Writes `response` into the slot and hands it to the submitter:
    /// under the session's entry lock its `in_flight` goes down by one and
    /// the slot is marked done; then the submitter is woken.
    ///
    /// Errors: `Invalid` for a response over the area's `max_message` (the
    /// request stays taken: answer again with a shorter one); an error of
    /// the entry lock (`Timeout`); `Invalid` if it was answered already.
    pub fn respond(&self, response: &[u8]) -> Result<()> {
        if self.answered.get() {
            return Err(crate::error::err!(
                Invalid,
                "the request was answered already"
            ));
        }
        let w = self.worker;
        let inner = w.sessions.inner();
        inner
            .core
            .respond(&inner.table, w.id, self.slot, self.word, response)?;
        self.answered.set(true);
        Ok(())
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if !self.answered.get() {
            let w = self.worker;
            let inner = w.sessions.inner();
            let _ = inner
                .core
                .fail_unanswered(&inner.table, w.id, self.slot, self.word);
        }
    }
}
