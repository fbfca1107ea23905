//! [`Sessions`]: a session table plus the request area of the same name,
//! and the submitter's side of a request ([`Ticket`], [`Response`]).
//!
//! The request area is `<domain>/sessions/<name>.requests`; its layout is in
//! [`super::requests`], its logic in [`super::dispatch`]. It has no process
//! records of its own: every holder word in it (a slot's submitter, a
//! worker's process, a reaper) names a process record of the table, which
//! every [`Sessions`] handle joins.

use super::dispatch::{Core, Env, Outcome};
use super::entry::SessionId;
use super::requests::{self, Geometry, SlotState, WorkerState, AREA_HEADER_SIZE};
use super::table::{sessions_dir, validate_name, Table, SESSIONS_DIR};
use super::worker::Worker;
use crate::error::{err, Error, Result};
use crate::shm::{RegionHeader, HEADER_SIZE};
use crate::sync::{local::AtomicU32, Ordering};
use crate::Domain;
use memmap2::{MmapOptions, MmapRaw};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The path of the request area `name` in `domain`.
pub fn requests_path(domain: &Path, name: &str) -> PathBuf {
    domain.join(SESSIONS_DIR).join(format!("{name}.requests"))
}

/// The capacities of a new session set. Only used when the files are
/// created; an existing set keeps the capacities it was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionsConfig {
    /// Sessions the table holds (1 to [`super::MAX_CAPACITY`]).
    pub capacity: u32,
    /// Worker groups (2 to 64).
    pub groups: u32,
    /// Request slots: requests queued or being served at once, over all
    /// submitters (1 to 65,536).
    pub slots: u32,
    /// Largest request and largest response in bytes (1 to 16 MiB). Each
    /// slot has room for one of each.
    pub max_message: u32,
    /// Worker records: workers registered at once (1 to 4095).
    pub workers: u32,
}

impl Default for SessionsConfig {
    /// 4096 sessions, 2 groups, 256 slots of 64 KiB, 64 workers.
    fn default() -> Self {
        SessionsConfig {
            capacity: 4096,
            groups: 2,
            slots: 256,
            max_message: 64 << 10,
            workers: 64,
        }
    }
}

impl SessionsConfig {
    fn geometry(&self) -> Result<Geometry> {
        Geometry::new(self.groups, self.workers, self.slots, self.max_message)
    }
}

/// An open session set: the table and the request area of one name.
///
/// Cheap to clone (a reference count); `Send + Sync`: every method may be
/// called from several threads. The handle's process record (see
/// [`Table`]) is shared by its clones, its workers and its tickets; it is
/// let go when the last of them is dropped.
#[derive(Clone)]
pub struct Sessions(Arc<Inner>);

pub(crate) struct Inner {
    // `core` points into `map`: declared (so dropped) before it.
    pub(crate) core: Core,
    pub(crate) table: Table,
    /// Process-local: spins of a wait before it sleeps.
    spin: AtomicU32,
    path: PathBuf,
    /// The mapping's registration against SIGBUS (a file truncated under
    /// it reads as zeros: operations are then `Corrupt`); dropped before
    /// the map.
    guard: crate::shm::Guard,
    _map: MmapRaw,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("table", &self.0.table.path())
            .field("requests", &self.0.path)
            .finish()
    }
}

impl Sessions {
    /// Creates the session set `name` in `domain` (table and request area)
    /// and opens it. `Exists` if either file is there already; `Invalid`
    /// for a bad name or a capacity out of range (the message gives the
    /// limit).
    pub fn create(domain: &Domain, name: &str, config: SessionsConfig) -> Result<Sessions> {
        validate_name(name)?;
        let geo = config.geometry()?;
        let path = requests_path(domain.path(), name);
        // Something (a file, a symbolic link) where the request area goes:
        // refused before the table is made, so nothing is left behind.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(err!(
                    Denied,
                    "{}: a symbolic link where the request area should be (never followed)",
                    path.display()
                ))
            }
            Ok(_) => {
                return Err(err!(
                    Exists,
                    "{}: request area exists already",
                    path.display()
                ))
            }
            Err(_) => {}
        }
        let table = Table::create(domain, name, config.capacity)?;
        let table_path = table.path().to_path_buf();
        // The table is ours (create refuses an existing one): if the area
        // cannot be made after all (a racing creator, a link planted
        // meanwhile), the table goes too.
        let undo = |e: Error, table: Table| {
            drop(table);
            let _ = std::fs::remove_file(&table_path);
            e
        };
        match publish_area(&path, &geo) {
            Ok(true) => {}
            Ok(false) => {
                let e = err!(Exists, "{}: request area exists already", path.display());
                return Err(undo(e, table));
            }
            Err(e) => return Err(undo(e, table)),
        }
        Sessions::with_table(table, &path)
    }

    /// Opens the existing session set `name`. `NotFound` if a file is
    /// missing; `Corrupt`, `Version` or `Denied` for a file that is not a
    /// valid one of ours.
    pub fn open(domain: &Domain, name: &str) -> Result<Sessions> {
        validate_name(name)?;
        let table = Table::open(domain, name)?;
        Sessions::with_table(table, &requests_path(domain.path(), name))
    }

    /// Opens the session set `name`, creating whichever of its files is
    /// missing with `config` (also one left by a creator that died between
    /// the two files). Existing files keep their capacities.
    pub fn open_or_create(domain: &Domain, name: &str, config: SessionsConfig) -> Result<Sessions> {
        validate_name(name)?;
        let geo = config.geometry()?;
        let table = Table::open_or_create(domain, name, config.capacity)?;
        let path = requests_path(domain.path(), name);
        match Sessions::with_table(table, &path) {
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            other => return other,
        }
        publish_area(&path, &geo)?;
        Sessions::with_table(Table::open(domain, name)?, &path)
    }

    fn with_table(table: Table, path: &Path) -> Result<Sessions> {
        let what = path.display().to_string();
        let file = crate::sys::fs::open_checked(path, true)?;
        let len = file.metadata().map_err(|e| Error::io(&what, e))?.len();
        let mut head = [0u8; HEADER_SIZE + AREA_HEADER_SIZE];
        let mut got = 0;
        while got < head.len() {
            match file.read_at(&mut head[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&what, e)),
            }
        }
        let geo = requests::read_geometry(&head[..got])
            .map_err(|e| Error::new(e.kind(), format!("{what}: {}", e.message())))?;
        if len != geo.total_size {
            return Err(err!(
                Corrupt,
                "{what}: file is {len} bytes; its header says {}",
                geo.total_size
            ));
        }
        let map = MmapOptions::new()
            .len(geo.total_size as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(&what, e))?;
        // SAFETY: the mapping is `total_size` bytes and lives while `map`
        // does; we only read it here. Other processes may write the words
        // meanwhile: the validator only reads, and every later use checks
        // the values again.
        let guard = crate::shm::guard(map.as_ptr(), geo.total_size as usize);
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), geo.total_size as usize) };
        let checked = requests::validate(bytes)
            .map_err(|e| Error::new(e.kind(), format!("{what}: {}", e.message())))?;
        // SAFETY: the geometry was validated against the mapping's length;
        // `core` is dropped before `map` (field order of `Inner`).
        let core = unsafe { Core::new(checked, map.as_mut_ptr()) };
        Ok(Sessions(Arc::new(Inner {
            core,
            table,
            spin: AtomicU32::new(0),
            guard,
            path: path.to_path_buf(),
            _map: map,
        })))
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.0
    }

    /// The session table.
    pub fn table(&self) -> &Table {
        &self.0.table
    }

    /// Binds session `id` to `worker` (a worker id of this request area:
    /// [`Worker::id`]'s `to_ref`): its requests then go to that worker while
    /// it lives and serves their group. `Invalid` for 0 or an id whose
    /// record is not one of this area's (such as `u64::MAX`), which could
    /// never be a live worker; other errors as [`Table::bind`].
    pub fn bind(&self, id: SessionId, worker: super::entry::WorkerRef) -> Result<()> {
        let workers = self.0.core.geometry().workers;
        if worker.0 != 0 && requests::WorkerId::from_ref(worker, workers).is_none() {
            return Err(err!(
                Invalid,
                "worker id {worker:?} names no worker of this request area ({workers} worker records)"
            ));
        }
        self.0.table.bind(id, worker)
    }

    /// `Corrupt` if the request area's or the table's file was truncated
    /// under this process's mapping (a `SIGBUS` caught, see `shm::guard`).
    pub fn check(&self) -> Result<()> {
        self.0.guard.check(&self.0.path.display())?;
        self.0.table.check()
    }

    /// The request area's file.
    pub fn requests_path(&self) -> &Path {
        &self.0.path
    }

    /// The request area's capacities and offsets.
    pub fn geometry(&self) -> Geometry {
        *self.0.core.geometry()
    }

    /// Largest request or response, in bytes.
    pub fn max_message(&self) -> u32 {
        self.0.core.geometry().max_message
    }

    /// Sets how many times [`Ticket::wait`] and [`Worker::next`] look
    /// again before they sleep on their futex (0, the default: sleep at
    /// once). Spinning saves the wake-up latency when responses come fast,
    /// at the price of CPU time; it applies to this handle and its clones.
    pub fn set_spin(&self, iterations: u32) {
        self.0.spin.store(iterations, Ordering::Relaxed);
    }

    pub(crate) fn spin(&self) -> u32 {
        self.0.spin.load(Ordering::Relaxed)
    }

    /// Registers a worker of group `group` in this process. Its liveness
    /// is this handle's process record: it is dead when the process is.
    /// `Invalid` for a group that does not exist, `Full` when every worker
    /// record is held by a live worker.
    pub fn register_worker(&self, group: u32) -> Result<Worker> {
        let me = crate::sys::ProcId::current()?;
        let inner = &self.0;
        let id = inner.core.register(&inner.table, group, me.pid, me.start)?;
        Ok(Worker::new(self.clone(), id, group))
    }

    /// Submits `request` for `session` to worker group `group`: claims a
    /// free slot (freeing dead submitters' slots when there is none),
    /// copies the request in, and queues it, under the session's entry
    /// lock, to the worker the session is bound to if it is registered in
    /// `group`, else to any worker of the group; then wakes that worker.
    ///
    /// Errors: `Invalid` for a request over [`Sessions::max_message`] or a
    /// bad group; `NotFound` for a session that does not exist; `Full`
    /// when every slot is in use by live submitters. A group without a
    /// live worker is not an error here: the request waits, and
    /// [`Ticket::wait`] reports `Unavailable` when it finds the group
    /// without one.
    pub fn submit(&self, session: SessionId, group: u32, request: &[u8]) -> Result<Ticket> {
        self.check()?;
        let inner = &self.0;
        let groups = inner.core.geometry().groups;
        if group >= groups {
            return Err(err!(
                Invalid,
                "worker group {group} does not exist (the area has groups 0 to {})",
                groups - 1
            ));
        }
        let claimed = inner.core.claim(&inner.table, request);
        // A file truncated under the mapping during the call: its zeros
        // decide nothing.
        self.check()?;
        let (slot, fw) = claimed?;
        let queued = inner.core.queue(&inner.table, slot, fw, session.0, group);
        self.check()?;
        let qw = queued?;
        Ok(Ticket {
            sessions: self.clone(),
            slot,
            gen: qw.gen,
            session,
            group,
            open: true,
            next_check: None,
        })
    }

    /// Frees the slots of dead submitters (what [`Sessions::submit`] does
    /// when it finds no free slot). Returns how many it freed.
    pub fn reclaim(&self) -> u32 {
        self.0.core.reclaim(&self.0.table)
    }

    /// Reaps every dead worker (what `mtipc sessions` does). Returns how
    /// many were reaped.
    pub fn reap_dead(&self) -> u32 {
        (0..self.0.core.geometry().groups)
            .map(|g| self.0.core.check_peers(&self.0.table, g))
            .sum()
    }

    /// A snapshot of the request area for `mtipc sessions`: workers by
    /// group, with pid and liveness, and slots counted by state.
    pub fn snapshot(&self) -> DispatchSnapshot {
        let core = &self.0.core;
        let geo = *core.geometry();
        let mut groups: Vec<GroupSnapshot> = (0..geo.groups)
            .map(|g| {
                let rec = core.group(g);
                GroupSnapshot {
                    group: g,
                    workers: Vec::new(),
                    submitted: rec.submitted.load(Ordering::Relaxed),
                    requeued: rec.requeued.load(Ordering::Relaxed),
                    failed: rec.failed.load(Ordering::Relaxed),
                }
            })
            .collect();
        for idx in 0..geo.workers {
            let Some(ww) = core.worker_word(idx) else {
                continue;
            };
            if ww.state == WorkerState::Free {
                continue;
            }
            let rec = core.worker(idx);
            groups[ww.group as usize].workers.push(WorkerSnapshot {
                index: idx,
                gen: ww.gen,
                pid: rec.pid.load(Ordering::Relaxed),
                start: rec.start.load(Ordering::Relaxed),
                state: if ww.state == WorkerState::Active {
                    "active"
                } else {
                    "reaping"
                },
                alive: self.0.table.is_alive(ww.holder),
                idle: rec.idle.load(Ordering::Relaxed) == 1,
                served: rec.served.load(Ordering::Relaxed),
            });
        }
        let mut slots = SlotCounts::default();
        for i in 0..geo.slots {
            match core.slot_word(i) {
                None => slots.damaged += 1,
                Some(w) => {
                    if w.abandoned {
                        slots.abandoned += 1;
                    }
                    *match w.state {
                        SlotState::Free => &mut slots.free,
                        SlotState::Filling => &mut slots.filling,
                        SlotState::Queued => &mut slots.queued,
                        SlotState::Taken => &mut slots.taken,
                        SlotState::Done => &mut slots.done,
                        SlotState::Failed => &mut slots.failed,
                    } += 1;
                }
            }
        }
        DispatchSnapshot {
            groups,
            slots,
            max_message: geo.max_message,
            worker_records: geo.workers,
        }
    }

    /// Checks that every live session's `in_flight` equals the number of
    /// slots queued or taken for it (each compared under the session's
    /// entry lock). Returns the sessions where it does not: (session,
    /// in_flight, slots). Empty when the region is consistent.
    pub fn audit(&self) -> Vec<(SessionId, u32, u32)> {
        let inner = &self.0;
        let ids: Vec<SessionId> = inner.table.sessions().map(|s| s.id).collect();
        let mut bad = Vec::new();
        for id in ids {
            if let Ok(Some(g)) = inner.core.lock(&inner.table, id.0) {
                let n = inner.core.recount(id.0);
                if g.in_flight() != n {
                    bad.push((id, g.in_flight(), n));
                }
            }
        }
        bad
    }
}

/// Writes a new request area at `path` (complete or absent). `Ok(false)`
/// if another process published one first.
fn publish_area(path: &Path, geo: &Geometry) -> Result<bool> {
    if let Some(dir) = path.parent().and_then(|p| p.parent()) {
        sessions_dir(dir)?;
    }
    let header = RegionHeader {
        magic: *requests::MAGIC,
        layout_version: crate::LAYOUT_VERSION,
        header_size: HEADER_SIZE as u32,
        total_size: geo.total_size,
    };
    crate::sys::fs::publish_new(path, geo.total_size, |f| {
        let mut b = header.encode().to_vec();
        b.extend_from_slice(&geo.encode());
        f.write_all_at(&b, 0)
            .map_err(|e| Error::io(path.display(), e))
    })
}

/// What `mtipc sessions` shows about a request area.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DispatchSnapshot {
    /// Every group, with its registered workers.
    pub groups: Vec<GroupSnapshot>,
    /// Slots by state.
    pub slots: SlotCounts,
    /// Largest request or response.
    pub max_message: u32,
    /// Number of worker records.
    pub worker_records: u32,
}

/// One worker group.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GroupSnapshot {
    /// Its number.
    pub group: u32,
    /// Its registered workers (active, or being reaped).
    pub workers: Vec<WorkerSnapshot>,
    /// Requests queued to it since the area was made.
    pub submitted: u64,
    /// Requests re-queued after one of its workers died.
    pub requeued: u64,
    /// Requests failed for want of a live worker.
    pub failed: u64,
}

/// One registered worker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WorkerSnapshot {
    /// Its worker record.
    pub index: u32,
    /// The record's generation.
    pub gen: u16,
    /// The worker's pid.
    pub pid: u32,
    /// Its process start time (clock ticks since boot).
    pub start: u64,
    /// `active`, or `reaping` (it died and is being cleaned up).
    pub state: &'static str,
    /// Whether its process lives (the kernel lock of its process record).
    pub alive: bool,
    /// Whether it waits for work.
    pub idle: bool,
    /// Requests it answered.
    pub served: u64,
}

/// Slots counted by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SlotCounts {
    /// Unused.
    pub free: u32,
    /// Being filled by a submitter.
    pub filling: u32,
    /// Waiting for a worker.
    pub queued: u32,
    /// Being served.
    pub taken: u32,
    /// Answered, not yet collected.
    pub done: u32,
    /// Failed, not yet collected.
    pub failed: u32,
    /// Of the above, those whose submitter gave up.
    pub abandoned: u32,
    /// Slots whose state word is damaged (never used).
    pub damaged: u32,
}

// ---------------------------------------------------------------------------

/// A submitted request: wait for its response with [`Ticket::wait`] or
/// [`Ticket::poll`], which hand the slot over to an owned [`Response`].
/// Dropping a ticket whose response was not handed out withdraws the
/// request (a request a worker already serves is freed when it has
/// answered). `Send`, not shared between threads.
pub struct Ticket {
    sessions: Sessions,
    slot: u32,
    gen: u32,
    session: SessionId,
    group: u32,
    open: bool,
    /// When the next look at the request's worker is due.
    next_check: Option<Instant>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("slot", &self.slot)
            .field("session", &self.session)
            .field("group", &self.group)
            .finish()
    }
}

impl Ticket {
    /// The session the request belongs to.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The worker group it was submitted to.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// The request slot it occupies (for diagnostics).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    fn outcome(&mut self, o: Outcome) -> Result<Response> {
        match o {
            Outcome::Done(len) => {
                // The slot is the response's now: the ticket is spent.
                self.open = false;
                Ok(Response {
                    sessions: self.sessions.clone(),
                    slot: self.slot,
                    gen: self.gen,
                    len,
                })
            }
            Outcome::Failed(kind) => {
                self.sessions.0.core.collect(self.slot, self.gen);
                self.open = false;
                Err(Error::new(
                    kind,
                    format!(
                        "request of session {} to worker group {}: no live worker in the group took it",
                        self.session, self.group
                    ),
                ))
            }
        }
    }

    fn check_open(&self) -> Result<()> {
        if !self.open {
            return Err(err!(
                Invalid,
                "the response of this ticket was already read"
            ));
        }
        Ok(())
    }

    /// Waits at most `timeout` (`None`: no limit) for the response: spins
    /// as [`Sessions::set_spin`] says, then sleeps on the slot's futex,
    /// checking every 100 ms (`CHECK_EVERY`, counted from the
    /// submit, across calls of `wait` and `poll`) that the worker
    /// serving the request lives (a dead one is reaped and the request
    /// served by another worker of the group) and that the group has a
    /// live worker at all.
    ///
    /// The [`Response`] owns the slot from then on (the ticket is spent:
    /// a later `wait` or `poll` is `Invalid`).
    ///
    /// Errors: `Timeout` (the ticket stays valid: wait again, or drop it);
    /// `Unavailable` when no live worker of the group could take the
    /// request (the ticket is then spent); `Corrupt` if the area was
    /// damaged under it; `Invalid` once the response was handed out.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Response> {
        self.check_open()?;
        let s = &self.sessions;
        s.check()?;
        let o = s.0.core.wait(
            &s.0.table,
            self.slot,
            self.gen,
            timeout,
            s.spin(),
            &mut self.next_check,
        );
        // A truncated area reads as zeros: say so rather than what the
        // zeros looked like.
        s.check()?;
        self.outcome(o?)
    }

    /// The response if it is there, without waiting (`Ok(None)`: not yet).
    /// Like [`Ticket::wait`], it checks the request's worker when a check
    /// is due. Errors as [`Ticket::wait`], without `Timeout`.
    pub fn poll(&mut self) -> Result<Option<Response>> {
        self.check_open()?;
        let now = Instant::now();
        let next = *self
            .next_check
            .get_or_insert(now + super::dispatch::CHECK_EVERY);
        if now >= next {
            self.next_check = Some(now + super::dispatch::CHECK_EVERY);
            let s = &self.sessions.0;
            s.core.check_request(&s.table, self.slot, self.gen);
        }
        match self.sessions.0.core.poll(self.slot, self.gen)? {
            None => Ok(None),
            Some(o) => self.outcome(o).map(Some),
        }
    }

    /// [`Ticket::wait`], copying the response out.
    pub fn wait_vec(mut self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.wait(timeout).map(|r| r.to_vec())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.open {
            let s = &self.sessions.0;
            s.core.abandon(&s.table, self.slot, self.gen);
        }
    }
}

/// The response to a request, read in place in its slot (`Deref` to the
/// bytes). An owned handle: it holds the slot, which its [`Ticket`] handed
/// over, until it is dropped; dropping it frees the slot. `Send` and
/// `Sync`.
pub struct Response {
    sessions: Sessions,
    slot: u32,
    gen: u32,
    len: u32,
}

impl std::ops::Deref for Response {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the slot is done and ours (its submitter's: the ticket
        // handed it to this response) until this response is dropped; len
        // was checked against max_message.
        unsafe { self.sessions.0.core.response_bytes(self.slot, self.len) }
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Response({} bytes)", self.len)
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        self.sessions.0.core.collect(self.slot, self.gen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    struct Dom(PathBuf, Domain);
    impl Drop for Dom {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn domain(tag: &str) -> Dom {
        static N: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
        let n = {
            let mut g = N.lock().unwrap();
            *g += 1;
            *g
        };
        let p = std::env::temp_dir().join(format!("mtipc-disp-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let d = Domain::open(Some(&p)).unwrap();
        Dom(p, d)
    }
    fn small() -> SessionsConfig {
        SessionsConfig {
            capacity: 16,
            groups: 2,
            slots: 8,
            max_message: 100,
            workers: 4,
        }
    }
    fn session(s: &Sessions) -> SessionId {
        s.table().create_session("t1", 0, b"").unwrap()
    }
    fn in_flight(s: &Sessions, id: SessionId) -> u32 {
        s.table().lookup(id).unwrap().in_flight
    }
    const T: Option<Duration> = Some(Duration::from_secs(5));

    /// Takes the next request queued for `w` in the area without making a
    /// `Request` of it (which would answer or fail it when dropped).
    fn take_bare(s: &Sessions, w: &Worker) -> u32 {
        let inner = s.inner();
        let id = requests::WorkerId::from_ref(w.id(), inner.core.geometry().workers).unwrap();
        let mut cursor = 0;
        inner
            .core
            .take(&inner.table, id, w.group(), &mut cursor, true)
            .expect("a request for the worker")
            .slot
    }

    #[test]
    fn create_open_and_refusals() {
        let d = domain("files");
        let k = |r: Result<Sessions>| r.unwrap_err().kind();
        let bad = SessionsConfig {
            groups: 1,
            ..small()
        };
        let e = Sessions::create(&d.1, "a", bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().contains("2 to 64"), "{e}");
        assert_eq!(
            k(Sessions::create(&d.1, "../x", small())),
            ErrorKind::Invalid
        );
        assert_eq!(k(Sessions::open(&d.1, "a")), ErrorKind::NotFound);
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        assert_eq!(k(Sessions::create(&d.1, "a", small())), ErrorKind::Exists);
        let o = Sessions::open(&d.1, "a").unwrap();
        assert_eq!(o.geometry(), s.geometry());
        // open_or_create keeps the existing capacities.
        let big = SessionsConfig {
            slots: 99,
            ..small()
        };
        let o2 = Sessions::open_or_create(&d.1, "a", big).unwrap();
        assert_eq!(o2.geometry().slots, 8);
        // ... and remakes a missing request area (a creator died between
        // the two files).
        std::fs::remove_file(requests_path(d.1.path(), "a")).unwrap();
        assert_eq!(k(Sessions::open(&d.1, "a")), ErrorKind::NotFound);
        let o3 = Sessions::open_or_create(&d.1, "a", big).unwrap();
        assert_eq!(o3.geometry().slots, 99);
        // A damaged area is refused as Corrupt.
        let p = requests_path(d.1.path(), "a");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[64] = 1; // groups = 1
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(k(Sessions::open(&d.1, "a")), ErrorKind::Corrupt);
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(200).unwrap();
        assert_eq!(k(Sessions::open(&d.1, "a")), ErrorKind::Corrupt);
    }

    #[test]
    fn request_round_trip_and_sticky_binding() {
        let d = domain("rt");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let mut w = s.register_worker(1).unwrap();
        let wid = w.id();
        let mut t = s.submit(id, 1, b"hello").unwrap();
        assert_eq!(in_flight(&s, id), 1);
        assert!(t.poll().unwrap().is_none());
        {
            let r = w.try_next().unwrap().expect("a request");
            assert_eq!(r.bytes(), b"hello");
            assert_eq!(r.session(), id);
            // The worker that took an "any" request is now the session's.
            assert_eq!(s.table().lookup(id).unwrap().worker, Some(wid));
            r.respond(&[r.bytes(), b" back"].concat()).unwrap();
            assert_eq!(r.respond(b"twice").unwrap_err().kind(), ErrorKind::Invalid);
        }
        assert_eq!(in_flight(&s, id), 0);
        assert_eq!(&*t.wait(T).unwrap(), b"hello back");
        assert_eq!(t.wait(T).unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(s.snapshot().slots.free, 8);
        assert_eq!(w.served(), 1);

        // A second worker of the group never sees the bound session's
        // requests: they are queued to the first one.
        let mut w2 = s.register_worker(1).unwrap();
        let mut tickets: Vec<Ticket> = (0..3).map(|_| s.submit(id, 1, b"x").unwrap()).collect();
        assert!(w2.try_next().unwrap().is_none());
        for _ in 0..3 {
            let r = w.try_next().unwrap().unwrap();
            r.respond(b"y").unwrap();
        }
        for t in &mut tickets {
            assert_eq!(&*t.poll().unwrap().unwrap(), b"y");
        }
        assert!(s.audit().is_empty());
    }

    #[test]
    fn a_process_reuses_its_last_slot() {
        let d = domain("lifo");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let mut w = s.register_worker(0).unwrap();
        let mut used = Vec::new();
        for _ in 0..5 {
            let mut t = s.submit(id, 0, b"q").unwrap();
            let r = w.try_next().unwrap().unwrap();
            used.push(r.slot());
            r.respond(b"a").unwrap();
            assert_eq!(&*t.wait(T).unwrap(), b"a");
        }
        // The slot freed last is the next one claimed: its lines are warm.
        assert!(used.iter().all(|&u| u == used[0]), "{used:?}");
        // Two requests at once take two slots.
        let t1 = s.submit(id, 0, b"1").unwrap();
        let t2 = s.submit(id, 0, b"2").unwrap();
        assert_ne!(t1.slot, t2.slot);
    }

    #[test]
    fn a_queued_slot_missing_from_the_summary_is_found_by_the_full_scan() {
        let d = domain("summary");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let registered = Instant::now();
        let mut w = s.register_worker(0).unwrap();
        let mut t = s.submit(id, 0, b"lost?").unwrap();
        // As if the submitter had died between queueing the slot and
        // marking it: the summary says nothing is queued.
        let core = &s.inner().core;
        for word in &core.group(0).queued {
            word.store(0, Ordering::SeqCst);
        }
        let peer_check = super::super::worker::PEER_CHECK;
        let answer = |r: super::super::worker::Request| {
            assert_eq!(r.bytes(), b"lost?");
            r.respond(b"found").unwrap();
        };
        // Only a full scan (once per PEER_CHECK) can find it: whenever it
        // is found, PEER_CHECK has passed since the worker registered. (How
        // soon after is left to the benchmarks: a loaded machine delays it.)
        let quick = w.try_next().unwrap().map(|r| {
            assert!(registered.elapsed() >= peer_check, "found too early");
            answer(r)
        });
        if quick.is_none() {
            let r = w.next(T).unwrap().expect("found by the full scan");
            assert!(registered.elapsed() >= peer_check, "found too early");
            answer(r);
        }
        assert_eq!(&*t.wait(T).unwrap(), b"found");
        assert!(s.audit().is_empty());
    }

    #[test]
    fn a_new_sessions_request_goes_to_an_idle_worker_not_a_busy_one() {
        let d = domain("spread");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let (s1, s2) = (session(&s), session(&s));
        let mut a = s.register_worker(0).unwrap();
        let b = s.register_worker(0).unwrap();
        let (a_ref, b_ref) = (a.id(), b.id());
        // A is busy with s1's request.
        let mut t1 = s.submit(s1, 0, b"one").unwrap();
        std::thread::scope(|sc| {
            let r1 = a.try_next().unwrap().expect("A takes s1's request");
            // B waits for work.
            let waiter = sc.spawn(move || {
                let mut b = b;
                let r = b.next(T).unwrap().expect("B is given s2's request");
                assert_eq!(r.bytes(), b"two");
                r.respond(b"from B").unwrap();
                drop(r);
                b // kept registered: dropping it would unbind s2
            });
            let idle = |s: &Sessions| {
                s.snapshot().groups[0]
                    .workers
                    .iter()
                    .any(|w| Some(w.index) == b_ref.record() && w.idle)
            };
            let until = Instant::now() + Duration::from_secs(5);
            while !idle(&s) {
                assert!(Instant::now() < until, "B never went idle");
                std::thread::sleep(Duration::from_millis(1));
            }
            // s2 is new (unbound): its request is queued to B, the idle
            // worker, so A, done with s1 right after, does not get it.
            let mut t2 = s.submit(s2, 0, b"two").unwrap();
            r1.respond(b"from A").unwrap();
            drop(r1);
            assert!(
                a.try_next().unwrap().is_none(),
                "the busy worker took the new session"
            );
            assert_eq!(&*t2.wait(T).unwrap(), b"from B");
            let b = waiter.join().unwrap();
            assert_eq!(&*t1.wait(T).unwrap(), b"from A");
            assert_eq!(s.table().lookup(s1).unwrap().worker, Some(a_ref));
            assert_eq!(s.table().lookup(s2).unwrap().worker, Some(b_ref));
            drop(b);
        });
        assert!(s.audit().is_empty());
    }

    #[test]
    fn idle_workers_take_turns_for_new_sessions() {
        let d = domain("turns");
        let cfg = SessionsConfig {
            workers: 8,
            ..small()
        };
        let s = Sessions::create(&d.1, "a", cfg).unwrap();
        let ids: Vec<SessionId> = (0..3).map(|_| session(&s)).collect();
        // Records 0 and 1 go to group 0 (registered, never serving), so the
        // group 1 workers are records 2 to 4.
        let _others: Vec<Worker> = (0..2).map(|_| s.register_worker(0).unwrap()).collect();
        let workers: Vec<Worker> = (0..3).map(|_| s.register_worker(1).unwrap()).collect();
        let stop = crate::sync::Flag::new();
        let idle = || {
            s.snapshot().groups[1]
                .workers
                .iter()
                .filter(|w| w.idle)
                .count()
        };
        std::thread::scope(|sc| {
            let serving: Vec<_> = workers
                .into_iter()
                .map(|mut w| {
                    let stop = &stop;
                    sc.spawn(move || {
                        while !stop.is_set() {
                            if let Some(r) = w.next(Some(Duration::from_millis(20))).unwrap() {
                                r.respond(r.bytes()).unwrap();
                            }
                        }
                        w // kept registered: dropping it would unbind its sessions
                    })
                })
                .collect();
            // One new session at a time, every worker idle before each.
            for &id in &ids {
                let until = Instant::now() + Duration::from_secs(5);
                while idle() < 3 {
                    assert!(Instant::now() < until, "the workers never went idle");
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert_eq!(&*s.submit(id, 1, b"new").unwrap().wait(T).unwrap(), b"new");
            }
            stop.set();
            let kept: Vec<Worker> = serving.into_iter().map(|h| h.join().unwrap()).collect();
            let mut bound: Vec<_> = ids
                .iter()
                .map(|&id| s.table().lookup(id).unwrap().worker.unwrap())
                .collect();
            bound.sort_by_key(|b| b.0);
            bound.dedup();
            assert_eq!(bound.len(), 3, "3 new sessions, 3 idle workers: one each");
            drop(kept);
        });
        assert!(s.audit().is_empty());
    }

    #[test]
    fn limits() {
        let d = domain("lim");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let e = s.submit(id, 0, &[0; 101]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().contains("100"), "{e}");
        assert_eq!(s.submit(id, 2, b"").unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(
            s.submit(SessionId(id.0 + (1 << 32)), 0, b"")
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        assert_eq!(s.register_worker(2).unwrap_err().kind(), ErrorKind::Invalid);
        let mut w = s.register_worker(0).unwrap();
        let mut t = s.submit(id, 0, &[7; 100]).unwrap();
        let r = w.try_next().unwrap().unwrap();
        assert_eq!(r.bytes().len(), 100);
        let e = r.respond(&[0; 101]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.message().contains("100"), "{e}");
        r.respond(&[1; 100]).unwrap();
        drop(r);
        assert_eq!(t.wait(T).unwrap().len(), 100);
        // Every slot in use by a live submitter: Full.
        let held: Vec<Ticket> = (0..8).map(|_| s.submit(id, 0, b"q").unwrap()).collect();
        assert_eq!(s.submit(id, 0, b"q").unwrap_err().kind(), ErrorKind::Full);
        assert_eq!(in_flight(&s, id), 8);
        drop(held); // withdrawn: queued requests leave in_flight
        assert_eq!(in_flight(&s, id), 0);
        assert_eq!(s.snapshot().slots.free, 8);
        // Worker records are limited too.
        let more: Vec<Worker> = (0..3).map(|_| s.register_worker(1).unwrap()).collect();
        assert_eq!(s.register_worker(1).unwrap_err().kind(), ErrorKind::Full);
        drop(more);
        s.register_worker(1).unwrap();
    }

    #[test]
    fn no_worker_is_unavailable() {
        let d = domain("nowk");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let _w = s.register_worker(0).unwrap(); // another group
        let mut t = s.submit(id, 1, b"q").unwrap();
        let started = Instant::now();
        let e = t.wait(T).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(in_flight(&s, id), 0);
        assert_eq!(t.wait(T).unwrap_err().kind(), ErrorKind::Invalid);
        drop(t);
        assert_eq!(s.snapshot().slots.free, 8);
        // A short timeout is a timeout (the check comes after CHECK_EVERY);
        // short waits in a loop still get to the check.
        let mut t = s.submit(id, 1, b"q").unwrap();
        let mut timeouts = 0;
        let e = loop {
            match t.wait(Some(Duration::from_millis(20))) {
                Err(e) if e.kind() == ErrorKind::Timeout => timeouts += 1,
                Err(e) => break e,
                Ok(_) => panic!("answered without a worker"),
            }
        };
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!((3..20).contains(&timeouts), "{timeouts} timeouts first");
        // Polling alone gets there too.
        let mut t = s.submit(id, 1, b"q").unwrap();
        let e = loop {
            match t.poll() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Ok(Some(_)) => panic!("answered without a worker"),
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn unregister_moves_requests_to_a_peer() {
        let d = domain("unreg");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let id2 = session(&s);
        let mut w1 = s.register_worker(0).unwrap();
        let mut w2 = s.register_worker(0).unwrap();
        // Bind `id` to w1.
        let mut t = s.submit(id, 0, b"a").unwrap();
        w1.try_next().unwrap().unwrap().respond(b"A").unwrap();
        drop(t.wait(T).unwrap());
        // Two requests queued to w1, one taken by it and not answered.
        let mut ts: Vec<Ticket> = (0..3).map(|_| s.submit(id, 0, b"b").unwrap()).collect();
        let mut t2 = s.submit(id2, 0, b"c").unwrap();
        // Taken by w1 and neither answered nor failed: as a request leaked
        // past its worker's end (a `Request` forgotten with mem::forget
        // would keep w1 registered for good).
        take_bare(&s, &w1);
        assert_eq!(in_flight(&s, id), 3);
        drop(w1);
        assert_eq!(s.table().lookup(id).unwrap().worker, None);
        assert_eq!(in_flight(&s, id), 3);
        let mut n = 0;
        while let Some(r) = w2.try_next().unwrap() {
            r.respond(&[r.bytes(), b"!"].concat()).unwrap();
            n += 1;
        }
        assert_eq!(n, 4);
        for t in &mut ts {
            assert_eq!(&*t.wait(T).unwrap(), b"b!");
        }
        assert_eq!(&*t2.wait(T).unwrap(), b"c!");
        assert_eq!(in_flight(&s, id), 0);
        assert!(s.audit().is_empty());
        // Unregistering the last worker of a group fails what it held.
        let mut t3 = s.submit(id, 0, b"d").unwrap();
        take_bare(&s, &w2);
        drop(w2);
        assert_eq!(t3.wait(T).unwrap_err().kind(), ErrorKind::Unavailable);
        assert!(s.audit().is_empty());
    }

    #[test]
    fn dropped_tickets_and_requests() {
        let d = domain("drop");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let mut w = s.register_worker(0).unwrap();
        // A ticket dropped while its request is served: the worker's answer
        // frees the slot.
        let t = s.submit(id, 0, b"x").unwrap();
        let r = w.try_next().unwrap().unwrap();
        drop(t);
        assert_eq!(s.snapshot().slots.abandoned, 1);
        r.respond(b"y").unwrap();
        drop(r);
        assert_eq!(s.snapshot().slots.free, 8);
        assert_eq!(in_flight(&s, id), 0);
        // A request dropped unanswered fails.
        let mut t = s.submit(id, 0, b"x").unwrap();
        drop(w.try_next().unwrap().unwrap());
        assert_eq!(t.wait(T).unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(in_flight(&s, id), 0);
        // An answered ticket dropped unread is freed.
        let t = s.submit(id, 0, b"x").unwrap();
        w.try_next().unwrap().unwrap().respond(b"z").unwrap();
        drop(t);
        assert_eq!(s.snapshot().slots.free, 8);
    }

    #[test]
    fn one_open_request_per_worker() {
        let d = domain("one");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let mut w = s.register_worker(0).unwrap();
        let t1 = s.submit(id, 0, b"1").unwrap();
        let t2 = s.submit(id, 0, b"2").unwrap();
        // Which of the two the worker takes first depends on where its
        // scan of the slots starts (a per-process hint): not asserted.
        let r1 = w.try_next().unwrap().unwrap();
        assert_eq!(r1.worker(), w.id());
        let first = r1.bytes().to_vec();
        let (mut t1, mut t2, other) = if first == b"1" {
            (t1, t2, b"2")
        } else {
            assert_eq!(first, b"2");
            (t2, t1, b"1")
        };
        // Open: neither next nor try_next takes another.
        for e in [w.try_next().unwrap_err(), w.next(T).unwrap_err()] {
            assert_eq!(e.kind(), ErrorKind::Invalid);
            assert!(e.message().contains("still open"), "{e}");
            assert!(e.message().contains("unanswered"), "{e}");
        }
        // Answered, the worker takes the next one while r1 still lives.
        r1.respond(b"one").unwrap();
        assert!(r1.answered());
        let r2 = w.try_next().unwrap().unwrap();
        assert_eq!(r2.bytes(), other);
        drop(r1); // answered: dropping it changes nothing
        assert_eq!(w.try_next().unwrap_err().kind(), ErrorKind::Invalid);
        // Dropped unanswered, it fails, and the worker is free again.
        drop(r2);
        assert!(w.try_next().unwrap().is_none());
        assert_eq!(&*t1.wait(T).unwrap(), b"one");
        assert_eq!(t2.wait(T).unwrap_err().kind(), ErrorKind::Unavailable);
        assert!(s.audit().is_empty());
    }

    #[test]
    fn a_request_stays_answerable_after_its_worker_is_dropped() {
        let d = domain("outlive");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let mut w = s.register_worker(0).unwrap();
        let wid = w.id();
        let registered = |s: &Sessions| {
            s.snapshot().groups[0]
                .workers
                .iter()
                .any(|x| Some(x.index) == wid.record())
        };
        let mut t = s.submit(id, 0, b"held").unwrap();
        let r = w.try_next().unwrap().unwrap();
        drop(w);
        // Still registered (the request holds it), the session still bound.
        assert!(registered(&s));
        assert_eq!(s.table().lookup(id).unwrap().worker, Some(wid));
        // A request of its session queued meanwhile waits for it...
        let mut later = s.submit(id, 0, b"later").unwrap();
        let mut peer = s.register_worker(0).unwrap();
        assert!(peer.try_next().unwrap().is_none());
        // ... the held one is answered, by the dropped worker ...
        assert_eq!(r.bytes(), b"held");
        r.respond(b"answered").unwrap();
        assert_eq!(&*t.wait(T).unwrap(), b"answered");
        assert!(registered(&s));
        // ... and dropping the request unregisters the worker: its session
        // is unbound and the waiting request goes to the peer.
        drop(r);
        assert!(!registered(&s));
        let moved = peer.try_next().unwrap().expect("moved to the peer");
        assert_eq!(moved.bytes(), b"later");
        moved.respond(b"from the peer").unwrap();
        drop(moved);
        assert_eq!(&*later.wait(T).unwrap(), b"from the peer");
        assert_eq!(s.table().lookup(id).unwrap().worker, Some(peer.id()));
        // Dropped unanswered after its worker: it fails, and then the
        // worker goes.
        let mut t = s.submit(id, 0, b"x").unwrap();
        let r = peer.try_next().unwrap().unwrap();
        drop(peer);
        drop(r);
        assert_eq!(t.wait(T).unwrap_err().kind(), ErrorKind::Unavailable);
        assert!(s.snapshot().groups[0].workers.is_empty());
        assert!(s.audit().is_empty());
        assert_eq!(s.snapshot().slots.free, 8);
    }

    #[test]
    fn a_response_is_owned_and_frees_its_slot_when_dropped() {
        let d = domain("resp");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let id = session(&s);
        let mut w = s.register_worker(0).unwrap();
        let mut t = s.submit(id, 0, b"q").unwrap();
        w.try_next().unwrap().unwrap().respond(b"kept").unwrap();
        let r = t.wait(T).unwrap();
        // The ticket is spent: the response holds the slot, even once the
        // ticket is gone.
        assert_eq!(t.poll().unwrap_err().kind(), ErrorKind::Invalid);
        assert_eq!(t.wait(T).unwrap_err().kind(), ErrorKind::Invalid);
        drop(t);
        assert_eq!(s.snapshot().slots.done, 1);
        let r = std::thread::spawn(move || r).join().unwrap();
        assert_eq!(&*r, b"kept");
        drop(r);
        assert_eq!(s.snapshot().slots.free, 8);
    }

    #[test]
    fn blocking_wait_and_next_across_threads() {
        let d = domain("thr");
        let s = Sessions::create(&d.1, "a", small()).unwrap();
        let ids: Vec<SessionId> = (0..4).map(|_| session(&s)).collect();
        for spin in [0, 200] {
            s.set_spin(spin);
            let stop = Arc::new(crate::sync::Flag::new());
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let s = s.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut w = s.register_worker(1).unwrap();
                        let mut n = 0u32;
                        while !stop.is_set() {
                            if let Some(r) = w.next(Some(Duration::from_millis(20))).unwrap() {
                                let mut v = r.bytes().to_vec();
                                v.reverse();
                                r.respond(&v).unwrap();
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            let submitters: Vec<_> = ids
                .iter()
                .map(|&id| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for k in 0..300u32 {
                            let msg = format!("{}-{k}", id.0);
                            let mut t = loop {
                                match s.submit(id, 1, msg.as_bytes()) {
                                    Ok(t) => break t,
                                    Err(e) if e.kind() == ErrorKind::Full => {
                                        std::thread::yield_now()
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            };
                            let r = t.wait(T).unwrap();
                            let mut v = msg.into_bytes();
                            v.reverse();
                            assert_eq!(&*r, &v[..]);
                        }
                    })
                })
                .collect();
            for h in submitters {
                h.join().unwrap();
            }
            stop.set();
            let served: u32 = workers.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(served, 1200);
            assert!(s.audit().is_empty());
            assert_eq!(s.snapshot().slots.free, 8);
        }
    }
}
