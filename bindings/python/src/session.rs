//! Sessions and request dispatch for Python (`docs/session.md`): the
//! classes `SessionTable` (a session table plus its request area: the
//! core's [`Sessions`]), `SessionInfo`, `Worker`, `Request` and `Ticket`.
//!
//! # Threads and the GIL
//!
//! Every call that may wait (an entry lock, a worker waiting for a
//! request, a submitter waiting for its response, a worker letting go of
//! its record) runs with the GIL released. The two long waits,
//! `Worker.next` and `Ticket.wait`, are cut into slices between which the
//! GIL is taken back to run pending signal handlers (Ctrl-C): nothing is
//! lost between slices (a request taken in a slice is returned, a response
//! stays in its slot until read).
//!
//! # Owned handles
//!
//! The core hands out owned types, wrapped here as they are: a `Worker`
//! holds the core's [`core::Worker`] (`None` once closed), a `Request`
//! the core's open [`core::Request`] (`None` once answered), a `Ticket`
//! the core's [`core::Ticket`]. The rules (one open request per worker, a
//! request that stays answerable after its worker is closed, a request
//! dropped unanswered fails) are the core's.
//!
//! # A request in place
//!
//! `Request.data` is a read-only `memoryview` of the request's bytes where
//! the core's [`core::Request::bytes`] has them, in the core's mapping of
//! the request area (this binding maps nothing itself). The stable ABI of
//! Python 3.9 that the wheel targets lets no extension type export a
//! buffer, so the view is made over a `ctypes` array placed at that
//! address, in whose `__dict__` sits an object holding the session set:
//! the view keeps the array alive and the array keeps the core's mapping
//! alive, so no view can outlive the memory it shows (at worst it shows a
//! later request's bytes). `respond` releases the view it handed out.

use crate::attach::message_arg;
use crate::{invalid, lock, timeout_arg, to_py, wait_in_slices, Domain, Num, SIGNAL_CHECK};
use mtipc::internals::sync::Flag;
use mtipc::session::{
    self as core, DispatchSnapshot, SessionId, Sessions, SessionsConfig, WorkerRef,
};
use mtipc::ErrorKind;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMemoryView, PySlice};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Adds the classes to the module.
pub(crate) fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SessionTable>()?;
    m.add_class::<SessionInfo>()?;
    m.add_class::<Worker>()?;
    m.add_class::<Request>()?;
    m.add_class::<Ticket>()?;
    Ok(())
}

/// A session id (`int`).
fn sid(n: Num<u64>) -> SessionId {
    SessionId(n.0)
}

/// A worker as `bind` takes it: a `Worker`, or its `id` (`int`).
struct WorkerArg(WorkerRef);

impl<'a, 'py> FromPyObject<'a, 'py> for WorkerArg {
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(w) = ob.cast::<Worker>() {
            return Ok(WorkerArg(WorkerRef(w.get().id)));
        }
        let n: Num<u64> = ob.extract()?;
        Ok(WorkerArg(WorkerRef(n.0)))
    }
}

// ---------------------------------------------------------------------------
// SessionInfo

/// A consistent snapshot of one session, as `SessionTable.lookup` and
/// `SessionTable.sessions` return it. Read-only; instances compare equal
/// when every field does.
#[pyclass(frozen, eq, module = "mtipc", name = "SessionInfo")]
#[derive(PartialEq)]
pub(crate) struct SessionInfo {
    /// The session id.
    #[pyo3(get)]
    id: u64,
    /// The tenant the session belongs to.
    #[pyo3(get)]
    tenant: String,
    /// The application's state number (opaque to mtipc).
    #[pyo3(get)]
    state: u32,
    /// The `id` of the worker the session is bound to, or `None`.
    #[pyo3(get)]
    worker: Option<u64>,
    /// Requests of the session queued or being served.
    #[pyo3(get)]
    in_flight: u32,
    /// Creation time, nanoseconds since the Unix epoch.
    #[pyo3(get)]
    created_ns: u64,
    /// Time of the last create or update, nanoseconds since the Unix epoch.
    #[pyo3(get)]
    updated_ns: u64,
    user: Vec<u8>,
}

impl From<core::Session> for SessionInfo {
    fn from(s: core::Session) -> Self {
        SessionInfo {
            id: s.id.0,
            tenant: s.tenant,
            state: s.state,
            worker: s.worker.map(|w| w.0),
            in_flight: s.in_flight,
            created_ns: s.created_ns,
            updated_ns: s.updated_ns,
            user: s.user,
        }
    }
}

#[pymethods]
impl SessionInfo {
    /// The user data (at most 64 bytes).
    #[getter]
    fn user<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.user)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "SessionInfo(id={:#x}, tenant={}, state={}, worker={}, in_flight={}, created_ns={}, updated_ns={}, user={})",
            self.id,
            self.tenant.as_str().into_pyobject(py)?.repr()?,
            self.state,
            self.worker.map_or_else(|| "None".to_owned(), |w| format!("{w:#x}")),
            self.in_flight,
            self.created_ns,
            self.updated_ns,
            self.user(py).repr()?,
        ))
    }
}

// ---------------------------------------------------------------------------
// SessionTable

/// A session table and its request area (`<domain>/sessions/<name>.table`
/// and `.requests`): sessions of tenants, worker groups, and requests
/// dispatched to them.
///
/// Made by `SessionTable.create`, `.open` or `.open_or_create`. A context
/// manager: leaving the `with` block closes this handle, as does `close()`
/// (workers and tickets made from it keep the files open until they go).
/// Safe to use from several threads.
#[pyclass(frozen, module = "mtipc", name = "SessionTable")]
pub(crate) struct SessionTable {
    /// `None` once closed; the lock is held only to clone or take it.
    inner: Mutex<Option<Sessions>>,
    name: String,
}

impl SessionTable {
    fn get(&self) -> PyResult<Sessions> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| invalid(format!("the mtipc.SessionTable {:?} is closed", self.name)))
    }

    fn made(
        py: Python<'_>,
        name: &str,
        f: impl FnOnce() -> mtipc::Result<Sessions> + Send,
    ) -> PyResult<SessionTable> {
        let s = py.detach(f).map_err(to_py)?;
        Ok(SessionTable {
            inner: Mutex::new(Some(s)),
            name: name.to_owned(),
        })
    }
}

/// The capacities of a new set, from the keyword arguments.
fn config(
    capacity: Num<u32>,
    groups: Num<u32>,
    slots: Num<u32>,
    max_message: Num<u32>,
    workers: Num<u32>,
) -> SessionsConfig {
    SessionsConfig {
        capacity: capacity.0,
        groups: groups.0,
        slots: slots.0,
        max_message: max_message.0,
        workers: workers.0,
    }
}

#[pymethods]
impl SessionTable {
    /// Creates the session set `name` in `domain` and opens it:
    /// `capacity` sessions, `groups` worker groups (2 to 64), `slots`
    /// requests queued or served at once, requests and responses of at
    /// most `max_message` bytes, `workers` workers registered at once.
    ///
    /// `ExistsError` if it exists; `InvalidError` for a bad name or a
    /// capacity out of range (the message gives the limit).
    #[staticmethod]
    #[pyo3(
        signature = (domain, name, capacity = Num(4096), groups = Num(2), slots = Num(256), max_message = Num(65536), workers = Num(64)),
        text_signature = "(domain, name, capacity=4096, groups=2, slots=256, max_message=65536, workers=64)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn create(
        py: Python<'_>,
        domain: &Domain,
        name: &str,
        capacity: Num<u32>,
        groups: Num<u32>,
        slots: Num<u32>,
        max_message: Num<u32>,
        workers: Num<u32>,
    ) -> PyResult<SessionTable> {
        let dom = domain.get()?;
        let cfg = config(capacity, groups, slots, max_message, workers);
        SessionTable::made(py, name, || Sessions::create(&dom, name, cfg))
    }

    /// Opens the existing session set `name` of `domain`.
    ///
    /// `NotFoundError` if it does not exist; `CorruptError`, `VersionError`
    /// or `DeniedError` for files that are not valid ones of ours.
    #[staticmethod]
    fn open(py: Python<'_>, domain: &Domain, name: &str) -> PyResult<SessionTable> {
        let dom = domain.get()?;
        SessionTable::made(py, name, || Sessions::open(&dom, name))
    }

    /// Opens the session set `name`, creating it (or whichever of its two
    /// files is missing) with these capacities; an existing set keeps its
    /// own.
    #[staticmethod]
    #[pyo3(
        signature = (domain, name, capacity = Num(4096), groups = Num(2), slots = Num(256), max_message = Num(65536), workers = Num(64)),
        text_signature = "(domain, name, capacity=4096, groups=2, slots=256, max_message=65536, workers=64)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn open_or_create(
        py: Python<'_>,
        domain: &Domain,
        name: &str,
        capacity: Num<u32>,
        groups: Num<u32>,
        slots: Num<u32>,
        max_message: Num<u32>,
        workers: Num<u32>,
    ) -> PyResult<SessionTable> {
        let dom = domain.get()?;
        let cfg = config(capacity, groups, slots, max_message, workers);
        SessionTable::made(py, name, || Sessions::open_or_create(&dom, name, cfg))
    }

    /// Returns the table itself; raises `InvalidError` if it is closed.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().get()?;
        Ok(slf)
    }

    /// Closes the handle; exceptions raised in the block propagate.
    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc_value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) {
        let _ = (exc_type, exc_value, traceback);
        self.close(py);
    }

    /// Lets go of this handle (its workers and tickets keep theirs).
    /// Calling it again does nothing.
    fn close(&self, py: Python<'_>) {
        let taken = lock(&self.inner).take();
        py.detach(move || drop(taken));
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// The set's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// How many sessions the table holds.
    #[getter]
    fn capacity(&self) -> PyResult<u32> {
        Ok(self.get()?.table().capacity())
    }

    /// The number of worker groups (numbered from 0).
    #[getter]
    fn groups(&self) -> PyResult<u32> {
        Ok(self.get()?.geometry().groups)
    }

    /// The number of request slots (requests queued or served at once).
    #[getter]
    fn slots(&self) -> PyResult<u32> {
        Ok(self.get()?.geometry().slots)
    }

    /// The largest request or response, in bytes.
    #[getter]
    fn max_message(&self) -> PyResult<u32> {
        Ok(self.get()?.max_message())
    }

    /// The number of workers that may be registered at once.
    #[getter]
    fn worker_records(&self) -> PyResult<u32> {
        Ok(self.get()?.geometry().workers)
    }

    /// Creates a session for `tenant` (a tenant id: 1 to 64 bytes of
    /// `[A-Za-z0-9_.-]`) with the application state `state` and at most 64
    /// bytes of user data; returns its id (an `int`, never 0).
    ///
    /// `FullError` when every slot of the table holds a live session;
    /// `InvalidError` for a bad tenant id or user data over 64 bytes.
    #[pyo3(
        signature = (tenant, state = Num(0), user = None),
        text_signature = "($self, /, tenant, state=0, user=b'')"
    )]
    fn create_session(
        &self,
        py: Python<'_>,
        tenant: &str,
        state: Num<u32>,
        user: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let s = self.get()?;
        let user = user.map(message_arg).transpose()?;
        let user: &[u8] = user.as_deref().unwrap_or_default();
        py.detach(|| s.table().create_session(tenant, state.0, user))
            .map(|id| id.0)
            .map_err(to_py)
    }

    /// The session `id` now, read without any lock (a consistent
    /// snapshot). `NotFoundError` for an ended, stale or malformed id.
    fn lookup(&self, id: Num<u64>) -> PyResult<SessionInfo> {
        let s = self.get()?;
        s.table()
            .lookup(sid(id))
            .map(SessionInfo::from)
            .map_err(to_py)
    }

    /// Sets the session's state, and its user data unless `user` is
    /// `None`. `NotFoundError` for a stale id, `InvalidError` for user data
    /// over 64 bytes, `TimeoutError` if its entry stays locked 5 s.
    #[pyo3(signature = (id, state, user = None))]
    fn update(
        &self,
        py: Python<'_>,
        id: Num<u64>,
        state: Num<u32>,
        user: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let s = self.get()?;
        let user = user.map(message_arg).transpose()?;
        py.detach(|| s.table().update(sid(id), state.0, user.as_deref()))
            .map_err(to_py)
    }

    /// Binds the session to `worker` (a `Worker` or a worker `id`): its
    /// next requests go to that worker while it lives and serves the
    /// group they are submitted to. Dispatch binds sessions by itself;
    /// this is for managers that place sessions themselves.
    fn bind(&self, py: Python<'_>, id: Num<u64>, worker: WorkerArg) -> PyResult<()> {
        let s = self.get()?;
        py.detach(|| s.bind(sid(id), worker.0)).map_err(to_py)
    }

    /// Removes the session's binding, if any: its next request goes to
    /// any worker of the group.
    fn unbind(&self, py: Python<'_>, id: Num<u64>) -> PyResult<()> {
        let s = self.get()?;
        py.detach(|| s.table().unbind(sid(id))).map_err(to_py)
    }

    /// Ends the session: its id never resolves again, even once its slot
    /// is reused. `NotFoundError` if it was ended already.
    fn end(&self, py: Python<'_>, id: Num<u64>) -> PyResult<()> {
        let s = self.get()?;
        py.detach(|| s.table().end(sid(id))).map_err(to_py)
    }

    /// An iterator over every live session (`SessionInfo`), in slot order.
    /// The table is read once, when it is called: this reads every entry,
    /// so it is for tools and checks, not for a hot path.
    fn sessions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.get()?;
        let all: Vec<core::Session> = py.detach(|| s.table().sessions().collect());
        let infos = all
            .into_iter()
            .map(|x| Py::new(py, SessionInfo::from(x)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, infos)?.try_iter().map(Bound::into_any)
    }

    /// Sets how many times `Ticket.wait` and `Worker.next` look again
    /// before they sleep (0, the default: sleep at once); for this handle
    /// and the workers and tickets made from it.
    fn set_spin(&self, n: Num<u32>) -> PyResult<()> {
        self.get()?.set_spin(n.0);
        Ok(())
    }

    /// Registers a worker of group `group` in this process and returns it
    /// (a context manager: leaving the block unregisters it).
    /// `InvalidError` for a group that does not exist, `FullError` when
    /// every worker record is held by a live worker.
    fn register_worker(&self, py: Python<'_>, group: Num<u32>) -> PyResult<Worker> {
        let s = self.get()?;
        let views = Views::new(py, &s)?;
        let w = py.detach(|| s.register_worker(group.0)).map_err(to_py)?;
        Ok(Worker {
            id: w.id().0,
            group: w.group(),
            views,
            closed: Flag::new(),
            worker: Mutex::new(Some(w)),
        })
    }

    /// Submits `data` (a bytes-like object of at most `max_message`
    /// bytes) for session `session` to worker group `group`, and returns
    /// the `Ticket` to wait for the response with. The request goes to the
    /// worker the session is bound to, else to any worker of the group
    /// (which then binds the session).
    ///
    /// `InvalidError` for a request over `max_message` (the message gives
    /// the limit) or a group that does not exist; `NotFoundError` for a
    /// session that does not exist; `FullError` when every slot is in use.
    /// A group without a live worker is reported by `Ticket.wait`
    /// (`UnavailableError`).
    fn submit(
        &self,
        py: Python<'_>,
        session: Num<u64>,
        group: Num<u32>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Ticket> {
        let s = self.get()?;
        let msg = message_arg(data)?;
        let t = py
            .detach(|| s.submit(sid(session), group.0, &msg))
            .map_err(to_py)?;
        Ok(Ticket {
            session: t.session().0,
            group: t.group(),
            slot: t.slot(),
            inner: Mutex::new(Some(t)),
        })
    }

    /// A snapshot of the request area: a dict with `groups` (per group:
    /// `group`, `workers`, `submitted`, `requeued`, `failed`; per worker:
    /// `id`, `index`, `gen`, `pid`, `start`, `state`, `alive`, `idle`,
    /// `served`), `slots` (counts by state) , `max_message` and
    /// `worker_records`. A worker's `id` is what `SessionInfo.worker`
    /// names.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get()?;
        let snap = py.detach(|| s.snapshot());
        snapshot_dict(py, &snap)
    }

    /// Reaps every dead worker now (their requests go to other workers of
    /// their group or fail); returns how many. Workers and waiting
    /// submitters do this by themselves; this is for tools.
    fn reap_dead(&self, py: Python<'_>) -> PyResult<u32> {
        let s = self.get()?;
        Ok(py.detach(|| s.reap_dead()))
    }

    /// Frees the request slots of dead submitters; returns how many.
    /// `submit` does this by itself when it runs out of slots.
    fn reclaim(&self, py: Python<'_>) -> PyResult<u32> {
        let s = self.get()?;
        Ok(py.detach(|| s.reclaim()))
    }

    /// Checks that each live session's `in_flight` equals the number of
    /// its requests queued or being served. Returns the sessions where it
    /// does not, as `(id, in_flight, requests)`: empty when consistent.
    fn audit(&self, py: Python<'_>) -> PyResult<Vec<(u64, u32, u32)>> {
        let s = self.get()?;
        let bad = py.detach(|| s.audit());
        Ok(bad.into_iter().map(|(id, a, b)| (id.0, a, b)).collect())
    }

    fn __repr__(&self) -> String {
        match self.get() {
            Ok(s) => format!(
                "<mtipc.SessionTable name={:?} capacity={} groups={}>",
                self.name,
                s.table().capacity(),
                s.geometry().groups
            ),
            Err(_) => format!("<mtipc.SessionTable name={:?} (closed)>", self.name),
        }
    }
}

fn snapshot_dict<'py>(py: Python<'py>, snap: &DispatchSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let groups = PyList::empty(py);
    for g in &snap.groups {
        let workers = PyList::empty(py);
        for w in &g.workers {
            let d = PyDict::new(py);
            d.set_item("id", WorkerRef::new(w.index, u32::from(w.gen)).0)?;
            d.set_item("index", w.index)?;
            d.set_item("gen", w.gen)?;
            d.set_item("pid", w.pid)?;
            d.set_item("start", w.start)?;
            d.set_item("state", w.state)?;
            d.set_item("alive", w.alive)?;
            d.set_item("idle", w.idle)?;
            d.set_item("served", w.served)?;
            workers.append(d)?;
        }
        let d = PyDict::new(py);
        d.set_item("group", g.group)?;
        d.set_item("workers", workers)?;
        d.set_item("submitted", g.submitted)?;
        d.set_item("requeued", g.requeued)?;
        d.set_item("failed", g.failed)?;
        groups.append(d)?;
    }
    let c = &snap.slots;
    let slots = PyDict::new(py);
    for (k, v) in [
        ("free", c.free),
        ("filling", c.filling),
        ("queued", c.queued),
        ("taken", c.taken),
        ("done", c.done),
        ("failed", c.failed),
        ("abandoned", c.abandoned),
        ("damaged", c.damaged),
    ] {
        slots.set_item(k, v)?;
    }
    let d = PyDict::new(py);
    d.set_item("groups", groups)?;
    d.set_item("slots", slots)?;
    d.set_item("max_message", snap.max_message)?;
    d.set_item("worker_records", snap.worker_records)?;
    Ok(d)
}

/// Makes the `memoryview`s of a worker's requests (see "A request in
/// place" above): a `ctypes` array of `max_message` bytes placed at the
/// address of each request's bytes in the core's mapping, with an
/// [`AreaKeeper`] in it.
struct Views {
    /// `ctypes.c_char * max_message` (one type per worker, so the ctypes
    /// type cache does not grow with the lengths of requests).
    array_type: Py<PyAny>,
}

/// Keeps a session set, and so the core's mapping of its request area,
/// alive while a `memoryview` of a request's bytes lives (an attribute of
/// the `ctypes` array each view is made over). Not exported.
#[pyclass(frozen, module = "mtipc", name = "_RequestArea")]
struct AreaKeeper {
    _sessions: Sessions,
}

impl Views {
    fn new(py: Python<'_>, s: &Sessions) -> PyResult<Views> {
        let c_char = py.import("ctypes")?.getattr("c_char")?;
        let max = s.max_message() as usize;
        Ok(Views {
            array_type: c_char.mul(max)?.unbind(),
        })
    }

    /// A read-only `memoryview` of `req`'s bytes, in place.
    fn view(&self, py: Python<'_>, req: &core::Request) -> PyResult<Py<PyAny>> {
        let bytes = req.bytes();
        // The bytes lie at the start of the request buffer of the
        // request's slot, which is `max_message` bytes long or more (the
        // core's geometry): the array stays inside it, the view shows only
        // `bytes`.
        let array = self
            .array_type
            .bind(py)
            .call_method1("from_address", (bytes.as_ptr() as usize,))?;
        let keeper = AreaKeeper {
            _sessions: req.sessions().clone(),
        };
        array.setattr("_mtipc_area", Py::new(py, keeper)?)?;
        let whole = PyMemoryView::from(&array)?.call_method1("cast", ("B",))?;
        let part = whole.get_item(PySlice::new(py, 0, bytes.len() as isize, 1))?;
        Ok(part.call_method0("toreadonly")?.unbind())
    }
}

// ---------------------------------------------------------------------------
// Worker

/// What one slice of a wait for a request gave.
enum Took {
    Got(core::Request),
    Nothing,
    Closed,
}

/// A registered worker of one group (`SessionTable.register_worker`).
///
/// `next()` waits for a request (GIL released, Ctrl-C interrupts),
/// `try_next()` takes one without waiting; iterating (`for req in
/// worker:`) serves until the worker is closed. It holds one request at a
/// time: answer it (`Request.respond`) before taking the next.
///
/// A context manager: leaving the block closes it, as does `close()`.
/// Closing unregisters the worker: requests queued to it go to another
/// worker of the group (or fail when there is none), and the sessions
/// bound to it are unbound. A request it holds then stays answerable: the
/// worker is unregistered once that request is answered or dropped (as
/// the core's `Worker` and `Request` do). If the process dies, the first
/// process that notices unregisters it.
#[pyclass(frozen, module = "mtipc", name = "Worker")]
pub(crate) struct Worker {
    id: u64,
    group: u32,
    views: Views,
    /// Set by `close()` (read without the lock, which a wait holds).
    closed: Flag,
    /// The core's worker, `None` once closed; held by the thread taking a
    /// request.
    worker: Mutex<Option<core::Worker>>,
}

impl Worker {
    /// One slice of a wait (`None`: do not wait). Called without the GIL.
    fn take(&self, slice: Option<Duration>) -> mtipc::Result<Took> {
        let mut guard = lock(&self.worker);
        let Some(w) = guard.as_mut() else {
            return Ok(Took::Closed);
        };
        let got = match slice {
            None => w.try_next()?,
            Some(d) => w.next(Some(d))?,
        };
        Ok(got.map_or(Took::Nothing, Took::Got))
    }

    /// The `Request` object of a request just taken.
    fn request(&self, py: Python<'_>, req: core::Request) -> PyResult<Request> {
        match self.views.view(py, &req) {
            Ok(data) => Ok(Request {
                session: req.session().0,
                slot: req.slot(),
                data,
                answered: Flag::new(),
                req: Mutex::new(Some(req)),
            }),
            Err(e) => {
                // Not expected (ctypes is part of Python); do not keep the
                // request taken if it happens: it fails.
                py.detach(move || drop(req));
                Err(e)
            }
        }
    }

    fn next_impl(slf: &Bound<'_, Self>, timeout: Option<Duration>) -> PyResult<Option<Request>> {
        let py = slf.py();
        let this = slf.get();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let slice = match deadline {
                None => SIGNAL_CHECK,
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(SIGNAL_CHECK),
            };
            match py.detach(|| this.take(Some(slice))).map_err(to_py)? {
                Took::Got(req) => return this.request(py, req).map(Some),
                Took::Closed => return Ok(None),
                Took::Nothing => {}
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    fn check_open(&self) -> PyResult<()> {
        if self.closed() {
            return Err(invalid(format!(
                "the mtipc.Worker {:#x} is closed",
                self.id
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl Worker {
    /// The worker's id: what `SessionInfo.worker` holds for a session
    /// bound to it (and the `id` of its entry in `SessionTable.snapshot()`).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// The worker's group.
    #[getter]
    fn group(&self) -> u32 {
        self.group
    }

    /// Requests this worker has answered (0 once closed).
    #[getter]
    fn served(&self) -> u64 {
        lock(&self.worker).as_ref().map_or(0, core::Worker::served)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.is_set()
    }

    /// The next request for this worker, waiting at most `timeout` seconds
    /// (`None`: no limit) with the GIL released; `None` when the timeout
    /// passes or the worker is closed meanwhile (by another thread or a
    /// signal handler).
    ///
    /// Signal handlers run at least every 100 ms, so Ctrl-C
    /// (`KeyboardInterrupt`) interrupts the wait; no request is lost when
    /// it does. `InvalidError` if the worker still holds an unanswered
    /// request, or is closed.
    #[pyo3(signature = (timeout = None))]
    fn next(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Option<Request>> {
        let timeout = timeout_arg(timeout)?;
        slf.get().check_open()?;
        Worker::next_impl(slf, timeout)
    }

    /// The next request if one is queued for this worker, else `None`;
    /// never waits. `InvalidError` as for `next()`.
    fn try_next(&self, py: Python<'_>) -> PyResult<Option<Request>> {
        self.check_open()?;
        match py.detach(|| self.take(None)).map_err(to_py)? {
            Took::Got(req) => self.request(py, req).map(Some),
            Took::Closed | Took::Nothing => Ok(None),
        }
    }

    /// Unregisters the worker (GIL released): requests queued to it go to
    /// another worker of the group, or fail if there is none. A request it
    /// holds unanswered stays answerable; the worker is unregistered once
    /// that request is answered or dropped. Calling it again does nothing.
    fn close(&self, py: Python<'_>) {
        self.closed.set();
        py.detach(|| {
            let w = lock(&self.worker).take();
            drop(w);
        });
    }

    /// Returns the worker itself.
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the worker; exceptions raised in the block propagate.
    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc_value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) {
        let _ = (exc_type, exc_value, traceback);
        self.close(py);
    }

    /// Returns the worker itself: iterating yields requests.
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next request, waiting without limit; the iteration ends when
    /// the worker is closed.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Request>> {
        Worker::next_impl(slf, None)
    }

    fn __repr__(&self) -> String {
        format!(
            "<mtipc.Worker id={:#x} group={}{}>",
            self.id,
            self.group,
            if self.closed() { " (closed)" } else { "" }
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Unregistering (when no request of it is open) takes entry locks:
        // without the GIL when there is one.
        if let Some(w) = lock(&self.worker).take() {
            let mut w = Some(w);
            let _ = Python::try_attach(|py| py.detach(|| drop(w.take())));
            drop(w);
        }
    }
}

// ---------------------------------------------------------------------------
// Request

/// A request taken by a `Worker`: its session, its bytes in place, and
/// `respond()`.
///
/// `data` is a read-only `memoryview` onto the request's shared slot (no
/// copy), valid until `respond()`: then it is released (using it raises
/// `ValueError`; `bytes(req.data)` keeps a copy). A request whose object
/// goes away unanswered fails (`UnavailableError` for its submitter). It
/// stays answerable after its worker is closed.
#[pyclass(frozen, module = "mtipc", name = "Request")]
pub(crate) struct Request {
    session: u64,
    slot: u32,
    data: Py<PyAny>,
    answered: Flag,
    /// The core's open request; `None` once answered (or while dropped).
    req: Mutex<Option<core::Request>>,
}

#[pymethods]
impl Request {
    /// The id of the session the request belongs to.
    #[getter]
    fn session(&self) -> u64 {
        self.session
    }

    /// The request slot (for diagnostics).
    #[getter]
    fn slot(&self) -> u32 {
        self.slot
    }

    /// The request bytes: a read-only `memoryview` onto the shared slot,
    /// valid until `respond()`. `InvalidError` once answered.
    #[getter]
    fn data(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.answered.is_set() {
            return Err(invalid(
                "the request was answered: its data is gone (copy it with bytes(req.data) before respond)"
                    .to_owned(),
            ));
        }
        Ok(self.data.clone_ref(py))
    }

    /// Whether `respond()` succeeded.
    #[getter]
    fn answered(&self) -> bool {
        self.answered.is_set()
    }

    /// Writes `data` (a bytes-like object of at most the table's
    /// `max_message` bytes) into the slot as the response and wakes the
    /// submitter; then releases `data`'s view. GIL released.
    ///
    /// `InvalidError` for a response over the limit (the message gives it;
    /// the request stays held: answer again) or for a request answered
    /// already.
    fn respond(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let msg = message_arg(data)?;
        py.detach(|| {
            let mut held = lock(&self.req);
            let req = held.as_ref().ok_or_else(|| {
                mtipc::Error::new(
                    ErrorKind::Invalid,
                    "the request was answered already".to_owned(),
                )
            })?;
            req.respond(&msg)?;
            // Answered: let it go at once (its worker is unregistered now
            // if it was closed meanwhile).
            *held = None;
            Ok(())
        })
        .map_err(to_py)?;
        self.answered.set();
        // A view exported further (say to numpy) cannot be released; it
        // keeps the mapping alive, so that is safe, just not enforced.
        let _ = self.data.call_method0(py, "release");
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "<mtipc.Request session={:#x} slot={}{}>",
            self.session,
            self.slot,
            if self.answered() { " (answered)" } else { "" }
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // Unanswered, the core fails it, which takes the session's entry
        // lock: without the GIL when there is one.
        if let Some(req) = lock(&self.req).take() {
            let mut req = Some(req);
            let _ = Python::try_attach(|py| py.detach(|| drop(req.take())));
            drop(req);
        }
    }
}

// ---------------------------------------------------------------------------
// Ticket

/// A submitted request (`SessionTable.submit`): wait for its response
/// with `wait()` or `poll()`. Dropping a ticket whose response was not
/// read withdraws the request.
#[pyclass(frozen, module = "mtipc", name = "Ticket")]
pub(crate) struct Ticket {
    session: u64,
    group: u32,
    slot: u32,
    /// `None` only while it is dropped.
    inner: Mutex<Option<core::Ticket>>,
}

impl Ticket {
    /// Runs `f` on the core's ticket. Called without the GIL.
    fn with<T>(&self, f: impl FnOnce(&mut core::Ticket) -> mtipc::Result<T>) -> mtipc::Result<T> {
        match lock(&self.inner).as_mut() {
            Some(t) => f(t),
            None => Err(mtipc::Error::new(
                ErrorKind::Invalid,
                "the ticket is gone".to_owned(),
            )),
        }
    }
}

#[pymethods]
impl Ticket {
    /// The id of the session the request belongs to.
    #[getter]
    fn session(&self) -> u64 {
        self.session
    }

    /// The worker group it was submitted to.
    #[getter]
    fn group(&self) -> u32 {
        self.group
    }

    /// The request slot it occupies (for diagnostics).
    #[getter]
    fn slot(&self) -> u32 {
        self.slot
    }

    /// Waits at most `timeout` seconds (`None`: no limit), GIL released,
    /// for the response, and returns it (`bytes`).
    ///
    /// While it waits it checks that the worker serving the request lives
    /// (a dead one's requests go to another worker of the group). Signal
    /// handlers run at least every 100 ms: Ctrl-C interrupts the wait and
    /// the ticket stays valid. `TimeoutError` when the timeout passes (the
    /// ticket stays valid: wait again); `UnavailableError` when the group
    /// has no live worker to serve it; `InvalidError` once the response
    /// was read.
    #[pyo3(signature = (timeout = None))]
    fn wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let timeout = timeout_arg(timeout)?;
        // The core checks the serving worker every 100 ms of the ticket's
        // waits and polls put together, so slicing loses no check.
        let got = wait_in_slices(
            py,
            timeout,
            |slice| self.with(|t| t.wait(Some(slice)).map(|r| r.to_vec())),
            |t| {
                format!(
                    "no response to the request of session {:#x} (group {}) within {t:?}",
                    self.session, self.group
                )
            },
        )?;
        Ok(PyBytes::new(py, &got))
    }

    /// The response (`bytes`) if it is there, else `None`; never waits.
    /// Errors as `wait()`, without `TimeoutError`.
    fn poll<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let got = py
            .detach(|| self.with(|t| t.poll().map(|r| r.map(|r| r.to_vec()))))
            .map_err(to_py)?;
        Ok(got.map(|v| PyBytes::new(py, &v)))
    }

    fn __repr__(&self) -> String {
        format!(
            "<mtipc.Ticket session={:#x} group={} slot={}>",
            self.session, self.group, self.slot
        )
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Withdrawing takes the session's entry lock: without the GIL
        // when there is one.
        if let Some(t) = lock(&self.inner).take() {
            let mut t = Some(t);
            let _ = Python::try_attach(|py| py.detach(|| drop(t.take())));
            drop(t);
        }
    }
}
