//! The session table as a file of the domain: `<domain>/sessions/<name>.table`.
//!
//! [`Table`] maps the region, validates it in full (see [`super::layout`]),
//! joins it (claims a process record, see [`super::records`]) and runs the
//! entry operations of [`super::entry`] on the mapped entries.

use super::entry::{Actor, Entries, Entry, EntryGuard, Session, SessionId, WorkerRef};
#[cfg(test)]
use super::entry::{MAX_CAPACITY, MAX_USER_DATA};
use super::layout::{validate_prefix, Geometry, PREFIX};
use crate::error::{err, Error, Result};
use crate::shm::records::{Membership, RecordInfo, RecordSlot, DEFAULT_RECORDS};
use crate::Domain;
use memmap2::{MmapOptions, MmapRaw};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directory of the session tables and request areas, inside the domain.
pub const SESSIONS_DIR: &str = "sessions";

/// How long [`Table::update`], [`Table::bind`], [`Table::unbind`] and
/// [`Table::end`] wait for a session's entry lock before `Timeout`.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The path of the table `name` in `domain`.
pub fn table_path(domain: &Path, name: &str) -> PathBuf {
    domain.join(SESSIONS_DIR).join(format!("{name}.table"))
}

/// Checks a table (or session set) name: the tenant-id rule of
/// docs/attach.md. `Invalid` otherwise.
pub fn validate_name(name: &str) -> Result<()> {
    crate::sys::check_name("session table name", name)
}

/// Creates `<domain>/sessions` (owner-only) if missing and checks it: a real
/// directory (not a link) of our uid that others cannot enter.
pub fn sessions_dir(domain: &Path) -> Result<PathBuf> {
    let dir = domain.join(SESSIONS_DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(dir.display(), e)),
    }
    crate::sys::fs::check_dir_private(&dir)?;
    Ok(dir)
}

/// An open session table. One handle joins the table with one process
/// record (its lock holder word), held until the handle is dropped.
///
/// `Send + Sync`: one handle may be used from many threads; they share its
/// process record, so a thread must not wait for an entry lock that
/// another thread of the same handle holds for long (it is never taken
/// over: the holder is alive).
#[derive(Debug)]
pub struct Table {
    // Dropped before `map`: both point into it.
    entries: Entries,
    member: Membership,
    /// The mapping's registration against SIGBUS (a file truncated under
    /// it reads as zeros: every operation is then `Corrupt`); dropped
    /// before the map.
    guard: crate::shm::Guard,
    _map: MmapRaw,
    geo: Geometry,
    path: PathBuf,
    /// Where the next create starts scanning (a per-handle hint only).
    cursor: crate::sync::local::AtomicU32,
}

// A table handle is shared between threads (the docs above promise it).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Table>();
};

impl Table {
    /// Creates the table `name` with room for `capacity` sessions (1 to
    /// [`MAX_CAPACITY`](super::MAX_CAPACITY)) and opens it. The file is
    /// sparse: all-zero entries are free slots, so even a table of a
    /// million sessions is made at once. `Exists` if it is there already.
    pub fn create(domain: &Domain, name: &str, capacity: u32) -> Result<Table> {
        validate_name(name)?;
        let geo = Geometry::new(capacity, DEFAULT_RECORDS)?;
        sessions_dir(domain.path())?;
        let path = table_path(domain.path(), name);
        let made = crate::sys::fs::publish_new(&path, geo.total, |f| {
            f.write_all_at(&geo.encode(), 0)
                .map_err(|e| Error::io(path.display(), e))
        })?;
        if !made {
            return Err(err!(
                Exists,
                "{}: session table exists already",
                path.display()
            ));
        }
        Table::open_path(&path)
    }

    /// Opens the existing table `name`. `NotFound` if absent; `Corrupt`,
    /// `Version`, `Denied` for a file that is not a valid table of ours.
    pub fn open(domain: &Domain, name: &str) -> Result<Table> {
        validate_name(name)?;
        Table::open_path(&table_path(domain.path(), name))
    }

    /// Opens the table `name`, creating it with `capacity` if absent. An
    /// existing table is opened as it is, whatever its capacity
    /// ([`capacity`](Table::capacity) tells).
    pub fn open_or_create(domain: &Domain, name: &str, capacity: u32) -> Result<Table> {
        match Table::open(domain, name) {
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            other => return other,
        }
        match Table::create(domain, name, capacity) {
            Err(e) if e.kind() == crate::ErrorKind::Exists => Table::open(domain, name),
            other => other,
        }
    }

    /// Opens the table file at `path` (see [`Table::open`]).
    pub fn open_path(path: &Path) -> Result<Table> {
        let what = path.display().to_string();
        let file = crate::sys::fs::open_checked(path, true)?;
        let len = file.metadata().map_err(|e| Error::io(&what, e))?.len();
        let mut head = [0u8; PREFIX];
        let mut got = 0;
        while got < PREFIX {
            match file.read_at(&mut head[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&what, e)),
            }
        }
        let geo = validate_prefix(&head[..got], len, &what)?;
        let map = MmapOptions::new()
            .len(geo.total as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(&what, e))?;
        let guard = crate::shm::guard(map.as_ptr(), geo.total as usize);
        let base = map.as_mut_ptr();
        // SAFETY: the geometry was validated against the file's length, so
        // both arrays lie inside the mapping, which outlives `member` and
        // `entries` (field order); offsets are multiples of 16 and 4096 of a
        // page-aligned mapping.
        let (member, entries) = unsafe {
            let records = base.add(geo.records_off as usize) as *const RecordSlot;
            let member = Membership::join(file, records, geo.records)?;
            let entries = Entries::from_raw(
                base.add(geo.entries_off as usize) as *const Entry,
                geo.capacity,
            );
            (member, entries)
        };
        let start = ((u64::from(member.record()).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32)
            % u64::from(geo.capacity)) as u32;
        let cursor = crate::sync::local::AtomicU32::new(start);
        guard.check(&path.display())?;
        Ok(Table {
            entries,
            member,
            guard,
            _map: map,
            geo,
            path: path.to_path_buf(),
            cursor,
        })
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            me: self.member.holder(),
            live: &self.member,
        }
    }

    /// Number of session slots.
    pub fn capacity(&self) -> u32 {
        self.geo.capacity
    }

    /// The region's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// The table's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This handle's process membership (record, holder word, liveness of
    /// other holders).
    pub fn membership(&self) -> &Membership {
        &self.member
    }

    /// Creates a session of `tenant` (the tenant-id rule) with high-level
    /// state `state` and up to [`MAX_USER_DATA`](super::MAX_USER_DATA)
    /// bytes of user data. `Full` when no slot is free; `Invalid` for a bad
    /// tenant id or too much user data (the message gives the limit).
    pub fn create_session(&self, tenant: &str, state: u32, user: &[u8]) -> Result<SessionId> {
        crate::sys::check_name("tenant id", tenant)?;
        self.check()?;
        use crate::sync::Ordering::Relaxed;
        let mut cur = self.cursor.load(Relaxed);
        let id = self
            .entries
            .create(self.actor(), &mut cur, tenant, state, user)?;
        self.cursor.store(cur, Relaxed);
        Ok(id)
    }

    /// A consistent snapshot of session `id`, read without any lock.
    /// `NotFound` for an ended, stale or malformed id.
    pub fn lookup(&self, id: SessionId) -> Result<Session> {
        let r = self.entries.lookup(id);
        self.check()?;
        r
    }

    /// `Corrupt` if the table's file was truncated under this process's
    /// mapping (a `SIGBUS` caught, see `shm::guard`): the table's contents
    /// are gone for this process.
    pub fn check(&self) -> Result<()> {
        self.guard.check(&self.path.display())
    }

    /// Locks session `id`'s entry, waiting at most `timeout` (`Timeout`
    /// then). A lock whose holder died is taken over and the entry
    /// repaired ([`EntryGuard::was_repaired`]). `NotFound` if `id` does not
    /// name a live session. The guard unlocks when dropped.
    pub fn lock_entry(&self, id: SessionId, timeout: Duration) -> Result<EntryGuard<'_>> {
        self.check()?;
        let g = self.entries.lock_within(self.actor(), id, timeout);
        self.check()?;
        g
    }

    /// The worker session `id` is bound to, read without its lock and
    /// without checking that `id` is still live: a hint (the dispatcher's,
    /// to skip the lock when a request comes to the worker it is bound to).
    pub fn bound_hint(&self, id: SessionId) -> Option<WorkerRef> {
        self.entries.bound_hint(id)
    }

    /// Sets the session's high-level state and, unless `user` is `None`,
    /// its user data (`Invalid` beyond the limit). Readers see the old or
    /// the new values, never a mix.
    pub fn update(&self, id: SessionId, state: u32, user: Option<&[u8]>) -> Result<()> {
        let g = self.lock_entry(id, LOCK_TIMEOUT)?;
        self.entries.update_locked(&g, state, user)
    }

    /// Binds the session to `worker`. `Invalid` for worker id 0, which
    /// names no worker ([`Table::unbind`] removes a binding).
    pub fn bind(&self, id: SessionId, worker: WorkerRef) -> Result<()> {
        if worker.0 == 0 {
            return Err(err!(
                Invalid,
                "worker id 0 names no worker (unbind the session to remove its binding)"
            ));
        }
        self.lock_entry(id, LOCK_TIMEOUT)?.set_binding(Some(worker));
        Ok(())
    }

    /// Removes the session's binding, if any.
    pub fn unbind(&self, id: SessionId) -> Result<()> {
        self.lock_entry(id, LOCK_TIMEOUT)?.set_binding(None);
        Ok(())
    }

    /// Ends the session: its slot is free again and `id` never resolves
    /// again.
    pub fn end(&self, id: SessionId) -> Result<()> {
        let g = self.lock_entry(id, LOCK_TIMEOUT)?;
        self.entries.end_locked(g);
        Ok(())
    }

    /// Ends the session whose entry `g` holds locked (for a caller that
    /// already holds the lock).
    pub fn end_locked(&self, g: EntryGuard<'_>) {
        self.entries.end_locked(g)
    }

    /// Updates the session whose entry `g` holds locked (see
    /// [`update`](Table::update)).
    pub fn update_locked(&self, g: &EntryGuard<'_>, state: u32, user: Option<&[u8]>) -> Result<()> {
        self.entries.update_locked(g, state, user)
    }

    /// A snapshot of every live session, slot by slot (each one consistent
    /// by itself; sessions created or ended during the scan may or may not
    /// appear). Entries found corrupt are skipped.
    pub fn sessions(&self) -> impl Iterator<Item = Session> + '_ {
        (0..self.geo.capacity).filter_map(move |slot| {
            let id = self.entries.id_at(slot)?;
            self.entries.lookup(id).ok()
        })
    }

    /// The live sessions of the slots in `slots` (clamped to the
    /// capacity), slot by slot, as [`sessions`](Table::sessions) reads them
    /// but also yielding `Err(Corrupt)` for a live entry whose contents are
    /// damaged. For a scan in parts (`mtipc sessions` shows its progress
    /// on a big table) that counts damaged entries.
    pub fn scan(&self, slots: std::ops::Range<u32>) -> impl Iterator<Item = Result<Session>> + '_ {
        let end = slots.end.min(self.geo.capacity);
        (slots.start.min(end)..end).filter_map(move |slot| {
            let id = self.entries.id_at(slot)?;
            match self.entries.lookup(id) {
                Err(e) if e.kind() == crate::ErrorKind::NotFound => None, // ended meanwhile
                r => Some(r),
            }
        })
    }

    /// Removes every binding to `worker` (a dead worker, for its reaper);
    /// returns how many there were. Each entry is changed under its lock;
    /// an entry whose lock cannot be had within [`LOCK_TIMEOUT`] is left.
    pub fn remove_bindings_to(&self, worker: WorkerRef) -> usize {
        self.entries
            .remove_bindings_to(self.actor(), worker, LOCK_TIMEOUT)
    }

    /// The table's process records that were ever used, with their
    /// liveness (for `mtipc sessions`).
    pub fn records(&self) -> Vec<RecordInfo> {
        self.member.list()
    }

    /// Test hook: locks session `id`'s entry and writes `state`/`user` into
    /// its spare buffer without publishing it, then returns with the lock
    /// still held (leaked), as a process killed in the middle of an update
    /// leaves it.
    #[doc(hidden)]
    pub fn test_stall_update(&self, id: SessionId, state: u32, user: &[u8]) -> Result<()> {
        let g = self.lock_entry(id, LOCK_TIMEOUT)?;
        self.entries.write_spare_locked(&g, state, user);
        std::mem::forget(g);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p =
                std::env::temp_dir().join(format!("mtipc-table-ut-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Scratch(p)
        }
        fn domain(&self) -> Domain {
            Domain::open(Some(&self.0)).unwrap()
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn create_open_and_refusals() {
        let s = Scratch::new("open");
        let d = s.domain();
        assert_eq!(
            Table::open(&d, "t").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let t = Table::create(&d, "t", 10).unwrap();
        assert_eq!(t.capacity(), 10);
        assert_eq!(
            Table::create(&d, "t", 10).unwrap_err().kind(),
            ErrorKind::Exists
        );
        let t2 = Table::open_or_create(&d, "t", 99).unwrap();
        assert_eq!(t2.capacity(), 10);
        let t3 = Table::open_or_create(&d, "u", 3).unwrap();
        assert_eq!(t3.capacity(), 3);
        for bad in ["", ".x", "a/b", &"x".repeat(65)] {
            assert_eq!(
                Table::create(&d, bad, 1).unwrap_err().kind(),
                ErrorKind::Invalid
            );
        }
        for cap in [0, MAX_CAPACITY + 1] {
            assert_eq!(
                Table::create(&d, "c", cap).unwrap_err().kind(),
                ErrorKind::Invalid
            );
        }
        // A session made through one handle is seen through another.
        let id = t.create_session("acme", 1, b"x").unwrap();
        assert_eq!(t2.lookup(id).unwrap().tenant, "acme");
        t2.update(id, 2, Some(b"yz")).unwrap();
        assert_eq!(t.lookup(id).unwrap().user, b"yz");
        // Each handle holds its own record; all are alive.
        let recs = t.records();
        assert_eq!(recs.len(), 2);
        assert!(recs.iter().all(|r| r.alive && r.pid == std::process::id()));
        assert_ne!(t.membership().record(), t2.membership().record());
        drop(t2);
        let recs = t.records();
        assert_eq!(recs.len(), 1, "{recs:?}");
    }

    #[test]
    fn session_operations() {
        let s = Scratch::new("ops");
        let t = Table::create(&s.domain(), "t", 3).unwrap();
        let err = t
            .create_session("acme", 0, &[0; MAX_USER_DATA + 1])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.message().contains("64"), "{}", err.message());
        assert_eq!(
            t.create_session("bad id", 0, b"").unwrap_err().kind(),
            ErrorKind::Invalid
        );
        let before = super::super::entry::now_ns();
        let ids: Vec<_> = (0..3)
            .map(|i| t.create_session("acme", i, &[i as u8; 5]).unwrap())
            .collect();
        assert_eq!(
            t.create_session("acme", 9, b"").unwrap_err().kind(),
            ErrorKind::Full
        );
        let s0 = t.lookup(ids[0]).unwrap();
        assert!(s0.created_ns >= before && s0.created_ns <= super::super::entry::now_ns());
        let w = WorkerRef::new(2, 5);
        t.bind(ids[0], w).unwrap();
        t.bind(ids[2], w).unwrap();
        assert_eq!(t.lookup(ids[0]).unwrap().worker, Some(w));
        assert_eq!(t.remove_bindings_to(w), 2);
        assert_eq!(t.lookup(ids[0]).unwrap().worker, None);
        t.bind(ids[1], w).unwrap();
        // Worker id 0 names no worker: refused, the binding kept.
        let e = t.bind(ids[1], WorkerRef(0)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        assert!(e.message().contains("unbind"), "{e}");
        assert_eq!(t.lookup(ids[1]).unwrap().worker, Some(w));
        t.unbind(ids[1]).unwrap();
        assert_eq!(t.lookup(ids[1]).unwrap().worker, None);
        assert_eq!(t.sessions().count(), 3);
        t.end(ids[1]).unwrap();
        assert_eq!(t.end(ids[1]).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            t.update(ids[1], 0, None).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let live: Vec<_> = t.sessions().map(|s| s.id).collect();
        assert_eq!(live, vec![ids[0], ids[2]]);
        let again = t.create_session("other", 0, b"").unwrap();
        assert_eq!(again.slot(), ids[1].slot());
        assert_eq!(t.lookup(ids[1]).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(t.lookup(again).unwrap().tenant, "other");
    }

    #[test]
    fn a_million_sessions_table_is_made_fast_and_sparse() {
        let s = Scratch::new("big");
        let t0 = std::time::Instant::now();
        let t = Table::create(&s.domain(), "big", 1_000_000).unwrap();
        let took = t0.elapsed();
        assert!(t.geometry().total <= 256 << 20);
        // Sparse: only the header page(s) and the records touched are there.
        let md = std::fs::metadata(t.path()).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            md.blocks() * 512 < 1 << 20,
            "{} bytes allocated",
            md.blocks() * 512
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        let id = t.create_session("acme", 1, b"").unwrap();
        assert_eq!(t.lookup(id).unwrap().state, 1);
    }

    #[test]
    fn corrupt_and_truncated_files_are_refused() {
        let s = Scratch::new("corrupt");
        let d = s.domain();
        let t = Table::create(&d, "t", 4).unwrap();
        let path = t.path().to_path_buf();
        let total = t.geometry().total;
        drop(t);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(total - 1).unwrap();
        assert_eq!(Table::open(&d, "t").unwrap_err().kind(), ErrorKind::Corrupt);
        f.set_len(100).unwrap();
        assert_eq!(Table::open(&d, "t").unwrap_err().kind(), ErrorKind::Corrupt);
        f.set_len(0).unwrap();
        assert_eq!(Table::open(&d, "t").unwrap_err().kind(), ErrorKind::Corrupt);
        f.set_len(total).unwrap();
        f.write_all_at(&Geometry::new(4, DEFAULT_RECORDS).unwrap().encode(), 0)
            .unwrap();
        Table::open(&d, "t").unwrap();
        f.write_all_at(&5u32.to_le_bytes(), 64).unwrap();
        assert_eq!(Table::open(&d, "t").unwrap_err().kind(), ErrorKind::Corrupt);
    }
}
