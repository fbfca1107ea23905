//! `mtipc._mtipc`: the Python binding of the mtipc core, re-exported by the
//! pure-Python package `mtipc` (`bindings/python/mtipc/`).
//!
//! It binds the Rust API (not the C ABI) and only converts: Python arguments
//! to the core's types, results back, and every [`mtipc::Error`] to the
//! exception class of its kind through one function, [`to_py`]. Calls that
//! block or touch the file system run with the GIL released (`py.detach`), so
//! other Python threads keep running while one waits on the semaphore.
//!
//! Discovery and attach (`advertise`, `attach`, `list_tenants`) are in
//! [`attach`]; shared closures (`publish_closure`, `open_closure`) in
//! [`closure`]; sessions and request dispatch (`SessionTable`, `Worker`,
//! `Request`, `Ticket`) in [`session`]; permits for gateway volumes
//! (`Domain.permit`, `Permit`, `Domain.create_volume`, `.volumes`,
//! `.permit_status`) in [`permit`]; the HA hooks (`_ha_*`, wrapped by
//! `mtipc/ha.py`) in [`ha`].
//!
//! The stubs `mtipc/_mtipc.pyi` describe this module; `mypy.stubtest` checks
//! that they match (see `tests/test_stubs.py`).

mod attach;
mod closure;
/// The HA hooks (`mtipc.ha`).
mod ha;
/// The library's events, queued for the `logging` logger `mtipc`.
mod log;
mod permit;

/// Sessions and request dispatch (`SessionTable`, `Worker`, `Request`,
/// `Ticket`, `SessionInfo`).
mod session;

use mtipc::{ErrorKind, Semaphore};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOverflowError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyType};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Longest stretch a blocking call waits with the GIL released before it
/// takes the GIL back to run pending signal handlers (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Runs a blocking core call with the GIL released, in slices of at most
/// [`SIGNAL_CHECK`] between which pending signal handlers run (Ctrl-C),
/// until it returns anything but a timeout or `timeout` (`None`: no limit)
/// has passed. `op(slice)` must lose nothing when a slice times out;
/// `timed_out(timeout)` words the final `TimeoutError`.
pub(crate) fn wait_in_slices<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    op: impl Fn(Duration) -> mtipc::Result<T> + Sync,
    timed_out: impl FnOnce(Duration) -> String,
) -> PyResult<T> {
    // A timeout too large to add to the clock is no limit.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let slice = match deadline {
            None => SIGNAL_CHECK,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK),
        };
        match py.detach(|| op(slice)) {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == ErrorKind::Timeout => {
                py.check_signals()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let msg = timed_out(timeout.unwrap_or_default());
                    return Err(to_py(mtipc::Error::new(ErrorKind::Timeout, msg)));
                }
            }
            Err(e) => return Err(to_py(e)),
        }
    }
}

create_exception!(
    mtipc,
    Error,
    PyException,
    "Base class of every error mtipc raises.\n\n\
     mtipc raises only its subclasses, one per status kind of the core; each\n\
     carries its kind as class attributes: `status` (the C `mt_status` code)\n\
     and `status_name` (its name in the C header, such as \"MT_ERR_TIMEOUT\")."
);

/// Declares one exception class per [`ErrorKind`] (all under [`Error`]) and
/// the two functions that need the full list: [`to_py`], which turns a core
/// error into its exception, and [`class_of`]. The `match`es are exhaustive,
/// so a kind added to the core fails to compile until it has a class here.
macro_rules! error_classes {
    ($($kind:ident => $class:ident: $doc:literal,)*) => {
        $( create_exception!(mtipc, $class, Error, $doc); )*

        /// Converts a core error into the Python exception of its kind, with
        /// the core's message. The only place where that conversion is made.
        fn to_py(err: mtipc::Error) -> PyErr {
            let message = err.message().to_owned();
            match err.kind() {
                $( ErrorKind::$kind => PyErr::new::<$class, _>(message), )*
            }
        }

        /// The exception class of `kind`.
        fn class_of(py: Python<'_>, kind: ErrorKind) -> Bound<'_, PyType> {
            match kind {
                $( ErrorKind::$kind => py.get_type::<$class>(), )*
            }
        }
    };
}

error_classes! {
    Invalid => InvalidError:
        "Bad argument: empty or oversized name, value out of range, closed object (MT_ERR_INVALID).",
    NotFound => NotFoundError: "The named object does not exist (MT_ERR_NOT_FOUND).",
    Exists => ExistsError: "The object exists already (MT_ERR_EXISTS).",
    Denied => DeniedError:
        "Permission denied: wrong owner, unsafe permissions, symbolic link, another uid (MT_ERR_DENIED).",
    Version => VersionError: "The object was made by another layout version of mtipc (MT_ERR_VERSION).",
    Corrupt => CorruptError: "A file or shared-memory region is corrupt, truncated or not ours (MT_ERR_CORRUPT).",
    Timeout => TimeoutError: "A blocking call's timeout passed (MT_ERR_TIMEOUT).",
    Full => FullError: "A fixed-capacity table is full (MT_ERR_FULL).",
    Closed => ClosedError: "The other end closed the connection (MT_ERR_CLOSED).",
    Deferred => DeferredError: "The request must wait and the caller asked not to (MT_ERR_DEFERRED).",
    Io => IoError: "An operating-system call failed (MT_ERR_IO).",
    Panic => PanicError: "A bug inside mtipc (MT_ERR_PANIC).",
    Unavailable => UnavailableError:
        "A service the call needs (for example the daemon) is not running (MT_ERR_UNAVAILABLE).",
    Fenced => FencedError:
        "A permit that is no longer current: its lease ran out or it was reclaimed (MT_ERR_FENCED).",
}

/// An `InvalidError` about a bad argument.
fn invalid(message: String) -> PyErr {
    to_py(mtipc::Error::new(ErrorKind::Invalid, message))
}

/// A domain path: `str`, `bytes` or `os.PathLike` of either, as `os.fspath`
/// gives it. Its checks (empty, NUL byte, length) are the core's.
pub(crate) struct PathArg(pub(crate) PathBuf);

impl<'a, 'py> FromPyObject<'a, 'py> for PathArg {
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = ob.py();
        let fspath = py.import("os")?.getattr("fspath")?.call1((ob,))?;
        if let Ok(s) = fspath.cast::<PyString>() {
            // Encoded with the file-system encoding (surrogateescape), so a
            // `str` from os.listdir of a non-UTF-8 name round-trips.
            return Ok(PathArg(s.extract::<OsString>()?.into()));
        }
        let b = fspath.cast::<PyBytes>()?;
        Ok(PathArg(std::ffi::OsStr::from_bytes(b.as_bytes()).into()))
    }
}

/// Locks `m`, also when a thread panicked while holding it (every value
/// the binding keeps under a mutex is valid at all times).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An unsigned integer argument: an `int` out of the type's range is an
/// `InvalidError` (not pyo3's `OverflowError`), like any other bad
/// argument; a value of another type stays a `TypeError`.
pub(crate) struct Num<T>(pub(crate) T);

impl<'a, 'py, T> FromPyObject<'a, 'py> for Num<T>
where
    T: for<'b> FromPyObject<'b, 'py, Error = PyErr> + num_max::Max,
{
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match ob.extract::<T>() {
            Ok(n) => Ok(Num(n)),
            Err(e) if e.is_instance_of::<PyOverflowError>(ob.py()) => Err(invalid(format!(
                "{} is out of range (0 to {})",
                &*ob,
                T::MAX_TEXT
            ))),
            Err(e) => Err(e),
        }
    }
}

mod num_max {
    /// The largest value of an integer type, as text.
    pub trait Max {
        const MAX_TEXT: &'static str;
    }
    impl Max for u32 {
        const MAX_TEXT: &'static str = "2**32 - 1";
    }
    impl Max for u64 {
        const MAX_TEXT: &'static str = "2**64 - 1";
    }
}

/// Timeouts longer than this many seconds (about 136 years) mean "no limit".
const FOREVER_SECS: f64 = u32::MAX as f64;

/// Seconds as a Python number (`None` or anything over [`FOREVER_SECS`],
/// `inf` included: no limit) to the core's timeout.
fn timeout_arg(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(invalid(format!(
            "timeout must be None or a number of seconds >= 0, not {t}"
        ))),
        Some(t) if t > FOREVER_SECS => Ok(None),
        Some(t) => Ok(Some(Duration::from_secs_f64(t))),
    }
}

/// An open mtipc domain: the directory the cooperating processes of a host
/// share, and its notification semaphore.
///
/// `Domain(path=None)` opens the domain at `path` (a `str`, `bytes` or
/// `os.PathLike`), creating it (mode 0700) if it is missing; `None` means
/// `$MTIPC_DOMAIN`, else `$XDG_RUNTIME_DIR/mtipc`, else `/tmp/mtipc-<uid>`.
///
/// A `Domain` is a context manager: leaving the `with` block closes it, as
/// does `close()`. Any use of a closed domain raises `InvalidError`. One
/// `Domain` may be used from several threads at once; `close()` does not cut
/// short a `sem_wait` already in progress on another thread.
#[pyclass(frozen, module = "mtipc", name = "Domain")]
struct Domain {
    /// `None` once closed. The lock is held only to clone or take the `Arc`,
    /// never across a call into the core, so a blocked `sem_wait` keeps its
    /// own reference (and the mapping) alive until it returns.
    inner: Mutex<Option<Arc<mtipc::Domain>>>,
    /// The volumes opened by permit requests of this domain object (each
    /// opened once); `None` once closed. Permits keep their volume open.
    volumes: Mutex<Option<Arc<mtipc::permit::Volumes>>>,
}

impl Domain {
    /// The open domain, or `InvalidError` if it was closed.
    fn get(&self) -> PyResult<Arc<mtipc::Domain>> {
        lock(&self.inner)
            .clone()
            .ok_or_else(|| invalid("the mtipc.Domain is closed".to_owned()))
    }

    /// The open domain and its cache of open volumes.
    fn with_volumes(&self) -> PyResult<(Arc<mtipc::Domain>, Arc<mtipc::permit::Volumes>)> {
        let domain = self.get()?;
        let volumes = lock(&self.volumes)
            .clone()
            .ok_or_else(|| invalid("the mtipc.Domain is closed".to_owned()))?;
        Ok((domain, volumes))
    }

    /// Runs `f` on the domain's semaphore.
    /// `f` on the semaphore; `CorruptError` if its file was truncated
    /// under the mapping (before or during `f`).
    fn with_sem<T>(&self, f: impl FnOnce(&Semaphore) -> T) -> PyResult<T> {
        let domain = self.get()?;
        let sem = domain.semaphore();
        sem.check().map_err(to_py)?;
        let v = f(sem);
        sem.check().map_err(to_py)?;
        Ok(v)
    }
}

#[pymethods]
impl Domain {
    #[new]
    #[pyo3(signature = (path = None))]
    fn new(py: Python<'_>, path: Option<PathArg>) -> PyResult<Self> {
        let path = path.map(|p| p.0);
        let domain = py
            .detach(|| mtipc::Domain::open(path.as_deref()))
            .map_err(to_py)?;
        Ok(Domain {
            inner: Mutex::new(Some(Arc::new(domain))),
            volumes: Mutex::new(Some(Arc::new(mtipc::permit::Volumes::new()))),
        })
    }

    /// Returns the domain itself; raises `InvalidError` if it is closed.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().get()?;
        Ok(slf)
    }

    /// Closes the domain; exceptions raised in the block propagate.
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

    /// Releases the domain (and the volumes its permit requests opened;
    /// permits still held keep theirs). Calling it again does nothing.
    fn close(&self, py: Python<'_>) {
        let taken = lock(&self.inner).take();
        let volumes = lock(&self.volumes).take();
        // Letting go of a volume's arbiter clears this process's record
        // in it: no GIL needed.
        py.detach(move || drop((taken, volumes)));
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// The domain directory.
    #[getter]
    fn path(&self) -> PyResult<OsString> {
        Ok(self.get()?.path().as_os_str().to_owned())
    }

    /// The domain's layout version.
    #[getter]
    fn layout_version(&self) -> PyResult<u32> {
        Ok(self.get()?.layout_version())
    }

    /// The uid that owns the domain directory.
    #[getter]
    fn owner_uid(&self) -> PyResult<u32> {
        Ok(self.get()?.owner_uid())
    }

    /// A snapshot of the domain's state: a dict with the keys `path`,
    /// `layout_version`, `owner_uid` and `semaphore_value`.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.get()?.info();
        let d = PyDict::new(py);
        d.set_item("path", info.path.into_os_string())?;
        d.set_item("layout_version", info.layout_version)?;
        d.set_item("owner_uid", info.owner_uid)?;
        d.set_item("semaphore_value", info.semaphore_value)?;
        Ok(d)
    }

    /// Adds `n` to the notification semaphore and wakes up to `n` waiters,
    /// in any process. `InvalidError` if `n` is negative or the count would
    /// pass 2**31 - 1.
    #[pyo3(signature = (n = Num(1)), text_signature = "($self, /, n=1)")]
    fn sem_post(&self, n: Num<u32>) -> PyResult<()> {
        self.with_sem(|s| s.post(n.0))?.map_err(to_py)
    }

    /// Takes one unit of the notification semaphore, waiting (with the GIL
    /// released) while it is zero, for at most `timeout` seconds (`None`: no
    /// limit). Raises `TimeoutError` when the timeout passes.
    ///
    /// The wait is cut into slices of at most 100 ms between which pending
    /// signals are handled, so Ctrl-C (`KeyboardInterrupt`) and other
    /// Python signal handlers run during a long wait.
    #[pyo3(signature = (timeout = None))]
    fn sem_wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout_arg(timeout)?;
        let domain = self.get()?;
        let sem = domain.semaphore();
        wait_in_slices(
            py,
            timeout,
            |slice| sem.wait(Some(slice)),
            |t| format!("no post on {} within {t:?}", sem.path().display()),
        )
    }

    /// Takes one unit if there is one, without blocking; returns whether it did.
    fn sem_try_wait(&self) -> PyResult<bool> {
        self.with_sem(Semaphore::try_wait)
    }

    /// Sets the count to zero and returns the count it had.
    fn sem_reset(&self) -> PyResult<u32> {
        self.with_sem(Semaphore::reset)
    }

    /// The current count (a snapshot).
    fn sem_value(&self) -> PyResult<u32> {
        self.with_sem(Semaphore::value)
    }

    /// Records a gateway volume `name` in the domain: its directory `dir`
    /// (`str`, `bytes` or `os.PathLike`; relative to the current directory
    /// if not absolute; owned by this uid and writable by nobody else),
    /// its cap on concurrent transfers (`max_transfers`, 0: no cap), the
    /// lease of its permits (`lease_ms`, `None`: 30000) and, for a volume
    /// several hosts mount, the etcd endpoints that keep its permits
    /// (`"http://host:port,..."`; `None`: this host's shared memory).
    /// Returns the record, as `volumes()` lists it. `ExistsError` if the
    /// name is taken; `DeniedError` for a directory others could change;
    /// `InvalidError` for a bad name, lease, cap or endpoint list.
    #[pyo3(
        signature = (name, dir, max_transfers = Num(0), lease_ms = None, etcd = None),
        text_signature = "($self, /, name, dir, max_transfers=0, lease_ms=None, etcd=None)"
    )]
    fn create_volume<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        dir: PathArg,
        max_transfers: Num<u32>,
        lease_ms: Option<Num<u64>>,
        etcd: Option<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let domain = self.get()?;
        permit::create_volume(
            py,
            &domain,
            name,
            dir,
            max_transfers.0,
            lease_ms.map(|n| n.0),
            etcd,
        )
    }

    /// The gateway volumes of the domain, sorted by name: dicts with the
    /// keys `name`, `dir`, `max_transfers`, `lease_ms` and `etcd` (`None`
    /// for a volume kept in this host's shared memory). A record that
    /// cannot be read is left out, with a warning to the `mtipc` logger.
    fn volumes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let domain = self.get()?;
        permit::volumes(py, &domain)
    }

    /// Asks for a permit to transfer `path` (relative, inside the volume)
    /// of volume `volume` in `mode` (`"read"` or `"write"`:
    /// `mtipc.PERMIT_READ`, `mtipc.PERMIT_WRITE`); returns a `Permit`, a
    /// context manager that releases it.
    ///
    /// A request that conflicts with a transfer in flight (a write
    /// conflicts with any other transfer of the path; reads share), or
    /// finds the volume's cap reached or earlier requests waiting, waits
    /// with the GIL released, for at most `timeout` seconds (`None`: no
    /// limit), and is granted in a fair order (round robin over processes,
    /// first come first served within one). `timeout=0`: `DeferredError` at
    /// once instead of waiting; `TimeoutError` when the timeout passes
    /// (the request then leaves no trace). Signal handlers run at least
    /// every 100 ms meanwhile; if one raises (Ctrl-C), the request is
    /// given up: released as soon as it is granted.
    ///
    /// `NotFoundError`: no such volume; `InvalidError`: an absolute path,
    /// `..`, an empty or oversized path, a bad mode; `UnavailableError`:
    /// the volume's backend cannot be reached.
    #[pyo3(signature = (volume, path, mode, timeout = None))]
    fn permit(
        &self,
        py: Python<'_>,
        volume: &str,
        path: &str,
        mode: &str,
        timeout: Option<f64>,
    ) -> PyResult<permit::Permit> {
        let (domain, volumes) = self.with_volumes()?;
        permit::request(py, &domain, &volumes, volume, path, mode, timeout)
    }

    /// What the arbiter of volume `volume` holds and queues now (permits of
    /// dead holders and run-out leases are reclaimed first): a dict with
    /// `holders` (dicts: `instance`, `mode`, `path`, `token`,
    /// `lease_left_ms`), `queue` (dicts: `instance`, `mode`, `path`; in the
    /// order they will be granted), `grants` (dicts: `instance`, `grants`),
    /// `reclaimed` (dicts: `instance`, `path`, `token`, `reason`: `"dead"`
    /// or `"expired"`; oldest first), `last_token` and `lease_ms`. An
    /// `instance` is a dict with `host` (empty: this host), `pid` and
    /// `start` (its start time in clock ticks since boot).
    fn permit_status<'py>(&self, py: Python<'py>, volume: &str) -> PyResult<Bound<'py, PyDict>> {
        let (domain, volumes) = self.with_volumes()?;
        permit::permit_status(py, &domain, &volumes, volume)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        match self.get() {
            Ok(d) => {
                let path = d.path().as_os_str().into_pyobject(py)?;
                Ok(format!("<mtipc.Domain path={}>", path.repr()?))
            }
            Err(_) => Ok("<mtipc.Domain (closed)>".to_owned()),
        }
    }
}

/// The version of the mtipc library this module was built from.
#[pyfunction]
fn version() -> &'static str {
    mtipc::VERSION
}

#[pymodule(gil_used = false)]
fn _mtipc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", mtipc::VERSION)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_class::<Domain>()?;
    session::add(m)?;
    permit::add(m)?;
    m.add_class::<attach::Advertisement>()?;
    m.add_class::<attach::Conn>()?;
    m.add_class::<attach::TenantInfo>()?;
    m.add_function(wrap_pyfunction!(attach::advertise, m)?)?;
    m.add_function(wrap_pyfunction!(attach::attach, m)?)?;
    m.add_function(wrap_pyfunction!(attach::list_tenants, m)?)?;
    m.add_class::<closure::Closure>()?;
    m.add_class::<closure::ClosureMap>()?;
    m.add_class::<closure::ClosureList>()?;
    m.add_function(wrap_pyfunction!(closure::publish_closure, m)?)?;
    m.add_function(wrap_pyfunction!(closure::open_closure, m)?)?;
    closure::register(py)?;
    m.add_function(wrap_pyfunction!(ha::_ha_supervised, m)?)?;
    m.add_function(wrap_pyfunction!(ha::_ha_ready, m)?)?;
    m.add_function(wrap_pyfunction!(ha::_ha_heartbeat, m)?)?;
    m.add_function(wrap_pyfunction!(ha::_ha_set_health, m)?)?;
    m.add_function(wrap_pyfunction!(ha::_ha_on_role, m)?)?;
    m.add_function(wrap_pyfunction!(ha::_ha_role, m)?)?;
    m.add_function(wrap_pyfunction!(log::_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(log::_log_take, m)?)?;
    m.add_function(wrap_pyfunction!(log::_log_stop, m)?)?;
    // Not a module attribute: only atexit holds it.
    let at_exit = wrap_pyfunction!(attach::at_exit, m)?;
    py.import("atexit")?.call_method1("register", (at_exit,))?;
    m.add("Error", py.get_type::<Error>())?;
    for kind in ErrorKind::ALL {
        let class = class_of(py, kind);
        class.setattr("status", kind.code())?;
        class.setattr("status_name", kind.name())?;
        m.add(class.name()?, class)?;
    }
    Ok(())
}
