//! Discovery and secure attach for Python (`docs/attach.md`): the functions
//! `advertise`, `attach` and `list_tenants`, and the classes
//! `Advertisement`, `Conn` and `TenantInfo`.
//!
//! # Threads and the GIL
//!
//! Every call that waits (an attach round, a receive, a send, a withdrawal
//! joining the waiter thread) runs with the GIL released. Waits that may be
//! long are cut into slices of at most [`SIGNAL_CHECK`] between which the
//! GIL is taken back to run pending signal handlers (Ctrl-C), as
//! `Domain.sem_wait` does.
//!
//! A tenant's handler runs on the core's connection thread, which is not a
//! Python thread: it takes the GIL there with `Python::try_attach` (never
//! when the interpreter is gone) and reports an exception of the handler
//! with `PyErr::write_unraisable`, then closes the connection. Nothing here
//! panics on a handler's behalf.
//!
//! # Interpreter exit
//!
//! A connection thread must not take the GIL once the interpreter is
//! finalizing: CPython (before 3.14) ends such a thread with `pthread_exit`,
//! whose forced unwinding through Rust frames is undefined behaviour (in
//! practice an abort at exit), and 3.14 blocks it forever. An `atexit` hook
//! ([`at_exit`]), which runs before finalization, therefore withdraws the
//! advertisements still live (module globals are not reliably freed at
//! exit, and a handler that refers to its advertisement keeps it alive),
//! closes every connection still held by a handler, lets the handlers
//! return (the connections raise `ClosedError`) for up to [`EXIT_GRACE`],
//! and from then on connection threads no longer call Python (a connection
//! arriving later is simply closed).

use crate::{
    invalid, lock, timeout_arg, to_py, wait_in_slices, ClosedError, Domain, FOREVER_SECS,
    SIGNAL_CHECK,
};
use mtipc::attach::{self as core, AttachOptions};
use mtipc::ErrorKind;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyTuple};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The protocol a tenant accepts when `advertise` names none (the C ABI's
/// `mt_advertise` uses the same).
const DEFAULT_PROTOCOL: &str = core::DEFAULT_PROTOCOL;

/// How long the exit hook lets running handlers return.
const EXIT_GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Handlers running on connection threads

/// The handlers of this process's advertisements that are running, the
/// connections handed to them and the advertisements (see "Interpreter
/// exit" above).
struct Handlers {
    /// Set by [`at_exit`]: no handler is called any more.
    exiting: bool,
    /// Connection threads between "may call Python" and done.
    running: usize,
    /// Connections handed to handlers (those still alive are closed at exit).
    conns: Vec<Weak<core::Conn>>,
    /// Advertisements made here (those still live are withdrawn at exit).
    adverts: Vec<Weak<Slot>>,
}

/// Where an `Advertisement` keeps the core's: `None` once withdrawn. The
/// lock is held only to take it out, never while withdrawing it.
type Slot = Mutex<Option<core::Advertisement>>;

static HANDLERS: Mutex<Handlers> = Mutex::new(Handlers {
    exiting: false,
    running: 0,
    conns: Vec::new(),
    adverts: Vec::new(),
});
/// Signalled when `running` drops.
static HANDLER_DONE: Condvar = Condvar::new();

/// Held by a connection thread while it may call Python.
struct Running;

impl Running {
    /// Registers `conn` and returns the guard, or `None` if the interpreter
    /// is exiting (the handler must not be called).
    fn start(conn: &Arc<core::Conn>) -> Option<Running> {
        let mut h = lock(&HANDLERS);
        if h.exiting {
            return None;
        }
        h.running += 1;
        h.conns.retain(|c| c.strong_count() > 0);
        h.conns.push(Arc::downgrade(conn));
        Some(Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&HANDLERS).running -= 1;
        HANDLER_DONE.notify_all();
    }
}

/// Registered with `atexit` when the module is imported: withdraws the
/// live advertisements, closes the connections handlers still hold and
/// waits up to [`EXIT_GRACE`] for the handlers to return (GIL released).
#[pyfunction]
pub(crate) fn at_exit(py: Python<'_>) {
    let (adverts, conns) = {
        let mut h = lock(&HANDLERS);
        h.exiting = true;
        (std::mem::take(&mut h.adverts), std::mem::take(&mut h.conns))
    };
    py.detach(|| {
        for slot in adverts.iter().filter_map(Weak::upgrade) {
            let taken = lock(&slot).take();
            // A failure leaves files that the next lister removes as stale
            // (this process is about to end): nothing better to do here.
            if let Some(a) = taken {
                let _ = a.withdraw();
            }
        }
    });
    for c in conns.iter().filter_map(Weak::upgrade) {
        c.close();
    }
    py.detach(|| {
        let deadline = Instant::now() + EXIT_GRACE;
        let mut h = lock(&HANDLERS);
        while h.running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            h = HANDLER_DONE
                .wait_timeout(h, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    });
}

/// The core's handler for a Python callable: called on the connection
/// thread with each attached connection.
fn handler_of(callback: Py<PyAny>) -> core::Handler {
    Arc::new(move |conn: core::Conn| {
        let conn = Arc::new(conn);
        let Some(_running) = Running::start(&conn) else {
            return; // exiting: dropping the connection closes it
        };
        // None: the interpreter is not there (any more); the connection is
        // closed when dropped.
        let _ = Python::try_attach(|py| {
            let called = Py::new(
                py,
                Conn {
                    inner: conn.clone(),
                },
            )
            .and_then(|c| callback.call1(py, (c,)));
            if let Err(e) = called {
                // Shown on stderr as "Exception ignored in: <handler>" with
                // the traceback (sys.unraisablehook).
                e.write_unraisable(py, Some(callback.bind(py)));
                conn.close();
            }
        });
    })
}

// ---------------------------------------------------------------------------
// Argument conversions

/// Seconds (`None`, or over about 136 years: no limit) to a duration; `what`
/// names the argument in the error. `positive`: 0 is refused too.
fn seconds_arg(value: Option<f64>, what: &str, positive: bool) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 || (positive && t == 0.0) => Err(invalid(format!(
            "{what} must be None or a number of seconds {} 0, not {t}",
            if positive { ">" } else { ">=" }
        ))),
        Some(t) if t > FOREVER_SECS => Ok(None),
        Some(t) => Ok(Some(Duration::from_secs_f64(t))),
    }
}

/// `start_at`: `None`, a Unix timestamp in seconds, or an aware `datetime`.
fn start_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<SystemTime>> {
    let Some(v) = value else {
        return Ok(None);
    };
    let py = v.py();
    let datetime = py.import("datetime")?.getattr("datetime")?;
    let secs: f64 = if v.is_instance(&datetime)? {
        if v.call_method0("utcoffset")?.is_none() {
            return Err(invalid(format!(
                "start_at {} is a naive datetime: give it a tzinfo (such as datetime.timezone.utc)",
                v.repr()?
            )));
        }
        v.call_method0("timestamp")?.extract()?
    } else {
        v.extract()?
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(format!(
            "start_at must be a Unix time in seconds >= 0 or an aware datetime, not {secs}"
        )));
    }
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .map(Some)
        .ok_or_else(|| invalid(format!("start_at {secs} is out of range")))
}

/// A message to send: `bytes` and `bytearray` directly, any other object
/// supporting the buffer protocol (`memoryview`, `array.array`, ...) through
/// `memoryview(obj).tobytes()`. Anything else (`str`, `int`) is a
/// `TypeError`.
pub(crate) fn message_arg(data: &Bound<'_, PyAny>) -> PyResult<PyBackedBytes> {
    if let Ok(b) = data.extract::<PyBackedBytes>() {
        return Ok(b);
    }
    let py = data.py();
    let view = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((data,))
        .map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "a bytes-like object is required, not '{}'",
                data.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
    Ok(view.call_method0("tobytes")?.extract::<PyBackedBytes>()?)
}

// ---------------------------------------------------------------------------
// Conn

/// An attached connection: whole messages (`bytes`, at most 1 MiB each),
/// both ways, over TLS 1.3 relayed by the domain's mtipcd.
///
/// `mtipc.attach` returns one to the attacher; a tenant's handler receives
/// the other end. A context manager: leaving the `with` block closes it,
/// as does `close()` or dropping the last reference. Iterating over it
/// yields the received messages until the other end closes. One thread may
/// send while another receives.
#[pyclass(frozen, module = "mtipc", name = "Conn")]
pub(crate) struct Conn {
    inner: Arc<core::Conn>,
}

impl Conn {
    fn recv_timeout<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<Duration>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        // A partial message stays buffered in the core: nothing is lost by
        // cutting the wait into slices.
        let msg = wait_in_slices(
            py,
            timeout,
            |slice| self.inner.recv(Some(slice)),
            |t| format!("no message within {t:?}"),
        )?;
        Ok(PyBytes::new(py, &msg))
    }
}

#[pymethods]
impl Conn {
    /// Returns the connection itself.
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Closes the connection; exceptions raised in the block propagate.
    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        exc_type: &Bound<'_, PyAny>,
        exc_value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) {
        let _ = (exc_type, exc_value, traceback);
        self.close();
    }

    /// Sends one whole message: a bytes-like object of at most 1 MiB
    /// (`InvalidError` if larger). Waits (GIL released) while the peer's
    /// buffers are full; `ClosedError` if the peer is gone or `close()` ran.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let msg = message_arg(data)?;
        py.detach(|| self.inner.send(&msg)).map_err(to_py)
    }

    /// Receives one whole message, waiting (GIL released) at most `timeout`
    /// seconds (`None`: no limit).
    ///
    /// `TimeoutError` when nothing complete arrived in time (nothing is
    /// lost: a partly received message is kept for the next call);
    /// `ClosedError` once the other end closed (after every message it sent
    /// before), the connection's duration is over, or `close()` ran here;
    /// `CorruptError` if the stream broke inside a message. Signal handlers
    /// run at least every 100 ms, so Ctrl-C interrupts a long wait.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let timeout = timeout_arg(timeout)?;
        self.recv_timeout(py, timeout)
    }

    /// Closes the connection (sends TLS `close_notify`): the peer's receives
    /// raise `ClosedError`, and so do later calls here; a `recv` blocked on
    /// another thread returns at once with it. Calling it again does nothing.
    fn close(&self) {
        self.inner.close();
    }

    /// The application protocol the attacher asked for (one of those the
    /// tenant advertised); the same on both ends.
    #[getter]
    fn protocol(&self) -> String {
        self.inner.protocol().to_string()
    }

    /// The negotiated TLS version, as OpenSSL names it: always `"TLSv1.3"`.
    #[getter]
    fn tls_version(&self) -> &'static str {
        self.inner.tls_version()
    }

    /// Returns the connection itself: iterating yields messages.
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next message, waiting without limit; the iteration ends when the
    /// connection is closed (`ClosedError`). Other errors propagate.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.recv_timeout(py, None) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) if e.is_instance_of::<ClosedError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn __repr__(&self) -> String {
        format!("<mtipc.Conn {}>", self.inner.tls_version())
    }
}

// ---------------------------------------------------------------------------
// Advertisement

/// A live advertisement of a tenant in a domain, made by
/// `mtipc.advertise`.
///
/// A context manager: leaving the `with` block withdraws it, as does
/// `withdraw()` (or `close()`) or dropping the last reference. Once
/// withdrawn, no attacher finds the tenant and the handler is not called
/// again; connections already handed to the handler live on.
#[pyclass(frozen, module = "mtipc", name = "Advertisement")]
pub(crate) struct Advertisement {
    /// Shared with the exit hook's list (weakly).
    inner: Arc<Slot>,
    tenant: String,
    fingerprint: String,
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        let taken = lock(&self.inner).take();
        if let Some(a) = taken {
            // Withdrawing joins the waiter thread (up to 100 ms): without
            // the GIL when there is one. If the closure does not run, `a`
            // is dropped with it, which withdraws all the same.
            let _ = Python::try_attach(move |py| py.detach(move || drop(a)));
        }
    }
}

#[pymethods]
impl Advertisement {
    /// Returns the advertisement itself.
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Withdraws the advertisement; exceptions raised in the block
    /// propagate.
    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc_value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let _ = (exc_type, exc_value, traceback);
        self.withdraw(py)
    }

    /// Withdraws the advertisement: stops its waiter thread (within about
    /// 100 ms, or at the end of a round in progress) with the GIL released,
    /// and removes its files. Safe to call from a handler and while handlers
    /// run; calling it again does nothing.
    fn withdraw(&self, py: Python<'_>) -> PyResult<()> {
        let taken = lock(&self.inner).take();
        match taken {
            Some(a) => py.detach(|| a.withdraw()).map_err(to_py),
            None => Ok(()),
        }
    }

    /// The same as `withdraw()`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.withdraw(py)
    }

    /// Whether it was withdrawn.
    #[getter]
    fn withdrawn(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// The tenant id.
    #[getter]
    fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The fingerprint attachers pin: the tenant's raw X25519 public key,
    /// 64 lowercase hex digits.
    #[getter]
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn __repr__(&self) -> String {
        format!(
            "<mtipc.Advertisement tenant='{}'{}>",
            self.tenant,
            if self.withdrawn() { " (withdrawn)" } else { "" }
        )
    }
}

// ---------------------------------------------------------------------------
// TenantInfo

/// A live advertisement, as `mtipc.list_tenants` reports it. Read-only;
/// instances compare equal when every field does.
#[pyclass(frozen, eq, module = "mtipc", name = "TenantInfo")]
#[derive(PartialEq)]
pub(crate) struct TenantInfo {
    /// The tenant id (`"@mtipcd"` for the daemon).
    #[pyo3(get)]
    id: String,
    /// `"tenant"` or `"daemon"`.
    #[pyo3(get)]
    role: String,
    /// The advertising process.
    #[pyo3(get)]
    pid: u32,
    /// Its uid.
    #[pyo3(get)]
    uid: u32,
    protocols: Vec<String>,
    /// When it advertised: Unix time in seconds.
    #[pyo3(get)]
    since: f64,
    /// Its raw X25519 public key (which attachers pin), 64 lowercase hex
    /// digits; `None` for the daemon, which has no key.
    #[pyo3(get)]
    fingerprint: Option<String>,
}

#[pymethods]
impl TenantInfo {
    /// The protocols it accepts, in its order of preference.
    #[getter]
    fn protocols<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.protocols)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let r = |v: Bound<'_, PyAny>| -> PyResult<String> { Ok(v.repr()?.to_string()) };
        Ok(format!(
            "TenantInfo(id={}, role={}, pid={}, uid={}, protocols={}, since={}, fingerprint={})",
            r(self.id.as_str().into_pyobject(py)?.into_any())?,
            r(self.role.as_str().into_pyobject(py)?.into_any())?,
            self.pid,
            self.uid,
            r(self.protocols(py)?.into_any())?,
            r(self.since.into_pyobject(py)?.into_any())?,
            r(self.fingerprint.as_deref().into_pyobject(py)?.into_any())?,
        ))
    }
}

impl From<core::TenantInfo> for TenantInfo {
    fn from(t: core::TenantInfo) -> Self {
        TenantInfo {
            id: t.id,
            role: t.role,
            pid: t.pid,
            uid: t.uid,
            protocols: t.protocols,
            since: t.since_ms as f64 / 1000.0,
            fingerprint: Some(t.fingerprint).filter(|f| !f.is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------
// Functions

/// Advertises `tenant` in the domain, accepting `protocols` (a list of 1 to
/// 16 names of `[a-z0-9_.-]`; `None`: `["msg"]`), and calls
/// `handler(conn)` with each attached connection, on a thread of its own per
/// connection (the GIL taken there) with the scheduling policy the waiter
/// thread started with (the calling thread's); the waiter thread runs as
/// `SCHED_BATCH` when it starts under `SCHED_OTHER`. The handler owns the connection: it is
/// closed when the handler drops it. If the handler raises, the exception
/// is reported like any unraisable one (`sys.unraisablehook`, by default on
/// stderr) and the connection is closed.
///
/// Returns the `Advertisement`, a context manager that withdraws it.
/// `InvalidError` for a bad tenant id or protocol list, `ExistsError` if a
/// live tenant of that id is advertised already.
#[pyfunction]
#[pyo3(signature = (domain, tenant, handler, protocols = None))]
pub(crate) fn advertise(
    py: Python<'_>,
    domain: &Domain,
    tenant: &str,
    handler: Bound<'_, PyAny>,
    protocols: Option<Vec<String>>,
) -> PyResult<Advertisement> {
    if !handler.is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "handler must be callable, not '{}'",
            handler.get_type().name()?
        )));
    }
    let dom = domain.get()?;
    let protocols = protocols.unwrap_or_else(|| vec![DEFAULT_PROTOCOL.to_owned()]);
    let handler = handler_of(handler.unbind());
    let ad = py
        .detach(|| {
            let names: Vec<&str> = protocols.iter().map(String::as_str).collect();
            core::advertise(&dom, tenant, &names, handler)
        })
        .map_err(to_py)?;
    let ad = Advertisement {
        tenant: ad.id().to_owned(),
        fingerprint: core::fingerprint_hex(&ad.fingerprint()),
        inner: Arc::new(Mutex::new(Some(ad))),
    };
    let mut h = lock(&HANDLERS);
    h.adverts.retain(|a| a.strong_count() > 0);
    h.adverts.push(Arc::downgrade(&ad.inner));
    Ok(ad)
}

/// Attaches to `tenant`: runs one attach round through the domain's mtipcd
/// and returns a TLS 1.3 `Conn` to the tenant.
///
/// - `timeout`: seconds for the round, until the tenant has answered
///   (`None`: no limit);
/// - `start_at`: when the connection opens, a Unix time in seconds or an
///   aware `datetime` (`None`: at once); the relay passes nothing before;
/// - `duration`: seconds the connection stays open from its start (`None`:
///   until an end closes); then both ends get `ClosedError`;
/// - `protocol`: one the tenant advertises (`None`: its first).
///
/// The round runs with the GIL released; signal handlers run at least
/// every 100 ms (Ctrl-C interrupts the call; the round then finishes in the
/// background and its connection is closed).
///
/// `NotFoundError`: no live tenant of that id, or it does not accept the
/// protocol; `UnavailableError`: no mtipcd is running on the domain;
/// `TimeoutError`: the tenant did not answer in time; `DeniedError`: the
/// tenant's key is not the advertised one, or the daemon refused a
/// credential; `InvalidError`: a bad argument.
#[pyfunction]
#[pyo3(
    signature = (domain, tenant, timeout = Some(5.0), start_at = None, duration = None, protocol = None),
    text_signature = "(domain, tenant, timeout=5.0, start_at=None, duration=None, protocol=None)"
)]
pub(crate) fn attach(
    py: Python<'_>,
    domain: &Domain,
    tenant: &str,
    timeout: Option<f64>,
    start_at: Option<&Bound<'_, PyAny>>,
    duration: Option<f64>,
    protocol: Option<String>,
) -> PyResult<Conn> {
    let opts = AttachOptions {
        // No limit: a deadline that cannot be added to the clock.
        timeout: seconds_arg(timeout, "timeout", false)?.unwrap_or(Duration::MAX),
        start: start_arg(start_at)?,
        duration: seconds_arg(duration, "duration", true)?,
        protocol,
    };
    let dom = domain.get()?;
    let tenant = tenant.to_owned();
    // The round runs on a thread of its own so that this one can run signal
    // handlers meanwhile; if one raises, the result (a connection) is
    // dropped, which closes it.
    let (tx, rx) = sync_channel(1);
    let rx = Mutex::new(rx); // Sync, for the closures below
    std::thread::Builder::new()
        .name("mtipc-attach".to_owned())
        .spawn(move || {
            let _ = tx.send(core::attach(&dom, &tenant, &opts));
        })
        .map_err(|e| {
            to_py(mtipc::Error::new(
                ErrorKind::Io,
                format!("cannot start the attach thread: {e}"),
            ))
        })?;
    loop {
        match py.detach(|| lock(&rx).recv_timeout(SIGNAL_CHECK)) {
            Ok(result) => {
                let conn = result.map_err(to_py)?;
                return Ok(Conn {
                    inner: Arc::new(conn),
                });
            }
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(to_py(mtipc::Error::new(
                    ErrorKind::Panic,
                    "the attach thread ended without a result".to_owned(),
                )))
            }
        }
    }
}

/// The live advertisements of the domain (tenants and the daemon
/// `"@mtipcd"`), sorted by id, as `TenantInfo`s. Stale advertisements (of
/// dead processes) are cleaned up on the way.
#[pyfunction]
pub(crate) fn list_tenants(py: Python<'_>, domain: &Domain) -> PyResult<Vec<TenantInfo>> {
    let dom = domain.get()?;
    let (listed, _cleaned) = py.detach(|| core::list(&dom)).map_err(to_py)?;
    Ok(listed.into_iter().map(TenantInfo::from).collect())
}
