//! [`Env`] over the session table: the real [`Table`](crate::session::Table),
//! and the heap entries of the loom models and unit tests.

use super::{EntryOps, Env};
use crate::error::{ErrorKind, Result};
use crate::session::entry::WorkerRef;
use crate::shm::records::Holder;

impl EntryOps for crate::session::entry::EntryGuard<'_> {
    fn in_flight(&self) -> u32 {
        crate::session::entry::EntryGuard::in_flight(self)
    }
    fn set_in_flight(&mut self, n: u32) {
        crate::session::entry::EntryGuard::set_in_flight(self, n)
    }
    fn binding(&self) -> Option<WorkerRef> {
        crate::session::entry::EntryGuard::binding(self)
    }
    fn set_binding(&mut self, b: Option<WorkerRef>) {
        crate::session::entry::EntryGuard::set_binding(self, b)
    }
    fn was_repaired(&self) -> bool {
        crate::session::entry::EntryGuard::was_repaired(self)
    }
}

/// `NotFound` from a lock is "no such session"; other errors stay errors.
fn none_if_not_found<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(g) => Ok(Some(g)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The dispatcher's view of a table's entries (on the heap, in loom
/// models) as one process (`actor`).
#[cfg(loom)]
pub struct EntriesEnv<'a> {
    /// The entries.
    pub entries: &'a crate::session::entry::Entries,
    /// Who acts, and how it tells whether others live.
    pub actor: crate::session::entry::Actor<'a>,
}

#[cfg(loom)]
impl Env for EntriesEnv<'_> {
    type Entry<'b>
        = crate::session::entry::EntryGuard<'b>
    where
        Self: 'b;
    fn me(&self) -> Holder {
        self.actor.me
    }
    fn is_alive(&self, h: Holder) -> bool {
        h == self.actor.me || self.actor.live.is_alive(h)
    }
    fn lock(&self, session: u64) -> Result<Option<Self::Entry<'_>>> {
        none_if_not_found(self.entries.lock(
            self.actor,
            crate::session::entry::SessionId(session),
            None,
        ))
    }
    fn remove_bindings_to(&self, worker: WorkerRef) {
        self.entries
            .remove_bindings_to(self.actor, worker, std::time::Duration::from_secs(3600));
    }
    fn bound_hint(&self, session: u64) -> Option<WorkerRef> {
        self.entries
            .bound_hint(crate::session::entry::SessionId(session))
    }
}

#[cfg(not(loom))]
impl Env for crate::session::table::Table {
    type Entry<'b> = crate::session::entry::EntryGuard<'b>;
    fn me(&self) -> Holder {
        self.membership().holder()
    }
    fn is_alive(&self, h: Holder) -> bool {
        use crate::shm::records::Liveness;
        self.membership().is_alive(h)
    }
    fn lock(&self, session: u64) -> Result<Option<Self::Entry<'_>>> {
        none_if_not_found(self.lock_entry(
            crate::session::entry::SessionId(session),
            crate::session::table::LOCK_TIMEOUT,
        ))
    }
    fn remove_bindings_to(&self, worker: WorkerRef) {
        crate::session::table::Table::remove_bindings_to(self, worker);
    }
    fn bound_hint(&self, session: u64) -> Option<WorkerRef> {
        crate::session::table::Table::bound_hint(self, crate::session::entry::SessionId(session))
    }
}
