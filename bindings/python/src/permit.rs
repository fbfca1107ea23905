//! Permits for shared storage for Python (DESIGN.md section 3): the class
//! `Permit` and what `Domain.create_volume`, `.volumes`, `.permit` and
//! `.permit_status` do.
//!
//! # One open volume per domain object
//!
//! Each `Domain` keeps one [`Volumes`] (the core's cache of open volumes):
//! the first request on a volume reads its record and maps its arbiter,
//! later ones reuse them. A `Permit` holds the core's [`core::Permit`],
//! which keeps its volume open, so a permit outlives `Domain.close()`.
//!
//! # Waiting
//!
//! A request is one call of the core: giving up part-way (to run signal
//! handlers, as other waits here do between slices) would withdraw it from
//! the queue and lose its place in the fair order. So a request that must
//! wait longer than [`SIGNAL_CHECK`] runs on a thread of its own while this
//! one runs signal handlers every [`SIGNAL_CHECK`] (the way `attach` does):
//! if one raises (Ctrl-C), the exception propagates at once and the
//! request keeps its place on that thread until it is granted (and the
//! permit is then released at once, unseen) or its timeout passes. A
//! request that can be granted at once, or must not wait, takes no thread.

use crate::{invalid, lock, timeout_arg, to_py, PathArg, SIGNAL_CHECK};
use mtipc::permit::{
    self as core, volume, Instance, Mode, ReclaimReason, Status, Volume, VolumeOpts, VolumeRecord,
    Volumes,
};
use mtipc::ErrorKind;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `mtipc.PERMIT_READ`: the mode of a permit to read a file of a volume.
pub(crate) const PERMIT_READ: &str = "read";
/// `mtipc.PERMIT_WRITE`: the mode of a permit to write one.
pub(crate) const PERMIT_WRITE: &str = "write";

/// Adds the class and the mode constants to the module.
pub(crate) fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Permit>()?;
    m.add("PERMIT_READ", PERMIT_READ)?;
    m.add("PERMIT_WRITE", PERMIT_WRITE)?;
    Ok(())
}

/// The mode named by `mode`: `"read"` or `"write"`.
fn mode_arg(mode: &str) -> PyResult<Mode> {
    match mode {
        PERMIT_READ => Ok(Mode::Read),
        PERMIT_WRITE => Ok(Mode::Write),
        other => Err(invalid(format!(
            "mode must be \"read\" or \"write\" (mtipc.PERMIT_READ, mtipc.PERMIT_WRITE), not {other:?}"
        ))),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Read => PERMIT_READ,
        Mode::Write => PERMIT_WRITE,
    }
}

/// A directory argument, made absolute against the current directory.
fn dir_arg(dir: PathArg) -> PyResult<PathBuf> {
    std::path::absolute(&dir.0).map_err(|e| to_py(mtipc::Error::io(dir.0.display(), e)))
}

// ---------------------------------------------------------------------------
// Volumes

/// `Domain.create_volume`: records the volume and returns its record.
pub(crate) fn create_volume<'py>(
    py: Python<'py>,
    domain: &mtipc::Domain,
    name: &str,
    dir: PathArg,
    max_transfers: u32,
    lease_ms: Option<u64>,
    etcd: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let dir = dir_arg(dir)?;
    let opts = VolumeOpts {
        max_transfers,
        lease: lease_ms.map(Duration::from_millis),
        etcd,
    };
    let rec = py
        .detach(|| volume::create(domain, name, &dir, &opts))
        .map_err(to_py)?;
    volume_dict(py, name, &rec)
}

/// `Domain.volumes`: the volumes whose records can be read, by name; each
/// one that cannot is skipped with a warning to the `mtipc` logger.
pub(crate) fn volumes<'py>(
    py: Python<'py>,
    domain: &mtipc::Domain,
) -> PyResult<Bound<'py, PyList>> {
    let list = py.detach(|| volume::list(domain)).map_err(to_py)?;
    let out = PyList::empty(py);
    for (name, rec) in list {
        match rec {
            Ok(r) => out.append(volume_dict(py, &name, &r)?)?,
            Err(e) => mtipc::log::warn!("volume {name} skipped: {e}"),
        }
    }
    Ok(out)
}

fn volume_dict<'py>(
    py: Python<'py>,
    name: &str,
    rec: &VolumeRecord,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", name)?;
    d.set_item("dir", rec.dir.as_os_str())?;
    d.set_item("max_transfers", rec.max_transfers)?;
    d.set_item("lease_ms", rec.lease_ms)?;
    d.set_item("etcd", rec.etcd.as_deref())?;
    Ok(d)
}

/// `Domain.permit_status`: what the volume's arbiter holds and queues.
pub(crate) fn permit_status<'py>(
    py: Python<'py>,
    domain: &mtipc::Domain,
    volumes: &Volumes,
    name: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let st = py
        .detach(|| volumes.get(domain, name).and_then(|v| v.status()))
        .map_err(to_py)?;
    status_dict(py, &st)
}

fn instance_dict<'py>(py: Python<'py>, i: &Instance) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("host", &i.host)?;
    d.set_item("pid", i.pid)?;
    d.set_item("start", i.start)?;
    Ok(d)
}

fn status_dict<'py>(py: Python<'py>, st: &Status) -> PyResult<Bound<'py, PyDict>> {
    let holders = PyList::empty(py);
    for h in &st.holders {
        let d = PyDict::new(py);
        d.set_item("instance", instance_dict(py, &h.instance)?)?;
        d.set_item("mode", mode_name(h.mode))?;
        d.set_item("path", &h.path)?;
        d.set_item("token", h.token)?;
        d.set_item("lease_left_ms", h.lease_left_ms)?;
        holders.append(d)?;
    }
    let queue = PyList::empty(py);
    for w in &st.queue {
        let d = PyDict::new(py);
        d.set_item("instance", instance_dict(py, &w.instance)?)?;
        d.set_item("mode", mode_name(w.mode))?;
        d.set_item("path", &w.path)?;
        queue.append(d)?;
    }
    let grants = PyList::empty(py);
    for (i, n) in &st.grants {
        let d = PyDict::new(py);
        d.set_item("instance", instance_dict(py, i)?)?;
        d.set_item("grants", n)?;
        grants.append(d)?;
    }
    let reclaimed = PyList::empty(py);
    for r in &st.reclaimed {
        let d = PyDict::new(py);
        d.set_item("instance", instance_dict(py, &r.instance)?)?;
        d.set_item("path", &r.path)?;
        d.set_item("token", r.token)?;
        d.set_item(
            "reason",
            match r.reason {
                ReclaimReason::Dead => "dead",
                ReclaimReason::Expired => "expired",
            },
        )?;
        reclaimed.append(d)?;
    }
    let d = PyDict::new(py);
    d.set_item("holders", holders)?;
    d.set_item("queue", queue)?;
    d.set_item("grants", grants)?;
    d.set_item("reclaimed", reclaimed)?;
    d.set_item("last_token", st.last_token)?;
    d.set_item("lease_ms", st.lease_ms)?;
    Ok(d)
}

// ---------------------------------------------------------------------------
// Requests

/// `Domain.permit`: asks for a permit, waiting at most `timeout` seconds
/// (`None`: no limit; 0: `DeferredError` at once if it must wait).
pub(crate) fn request(
    py: Python<'_>,
    domain: &mtipc::Domain,
    volumes: &Volumes,
    volume: &str,
    path: &str,
    mode: &str,
    timeout: Option<f64>,
) -> PyResult<Permit> {
    let mode = mode_arg(mode)?;
    // No limit: a wait that cannot be added to the clock (the core then
    // waits a year at a time).
    let wait = timeout_arg(timeout)?.unwrap_or(Duration::MAX);
    let vol = py.detach(|| volumes.get(domain, volume)).map_err(to_py)?;
    let granted = if wait <= SIGNAL_CHECK {
        py.detach(|| vol.request(path, mode, wait))
    } else {
        match py.detach(|| vol.request(path, mode, Duration::ZERO)) {
            Err(e) if e.kind() == ErrorKind::Deferred => wait_on_thread(py, vol, path, mode, wait)?,
            other => other,
        }
    };
    let p = granted.map_err(to_py)?;
    Ok(Permit {
        token: p.token(),
        volume: p.volume().to_owned(),
        path: p.path().to_owned(),
        mode,
        lease_ms: p.lease().as_millis().min(u128::from(u64::MAX)) as u64,
        inner: Mutex::new(Some(Arc::new(p))),
    })
}

/// Runs a request that waits on a thread of its own, running signal
/// handlers meanwhile (see the module's documentation).
fn wait_on_thread(
    py: Python<'_>,
    vol: Arc<Volume>,
    path: &str,
    mode: Mode,
    wait: Duration,
) -> PyResult<mtipc::Result<core::Permit>> {
    let (tx, rx) = sync_channel(1);
    let rx = Mutex::new(rx); // Sync, for the closures below
    let path = path.to_owned();
    std::thread::Builder::new()
        .name("mtipc-permit".to_owned())
        .spawn(move || {
            // If the caller has gone (a signal handler raised), the permit
            // is dropped here, which releases it.
            let _ = tx.send(vol.request(&path, mode, wait));
        })
        .map_err(|e| {
            to_py(mtipc::Error::new(
                ErrorKind::Io,
                format!("cannot start the permit request's thread: {e}"),
            ))
        })?;
    loop {
        match py.detach(|| lock(&rx).recv_timeout(SIGNAL_CHECK)) {
            Ok(result) => return Ok(result),
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(to_py(mtipc::Error::new(
                    ErrorKind::Panic,
                    "the permit request's thread ended without a result".to_owned(),
                )))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Permit

/// A permit: the right to transfer one path of a gateway volume, in one
/// mode, until released, its lease runs out, or this process dies.
///
/// Made by `Domain.permit`. A context manager: leaving the `with` block
/// releases it, as does `release()` (or the object's end). `put` and `get`
/// are transfer sessions: the copy goes to a temporary name, is synced,
/// and is renamed into place only while the permit is current, so nobody
/// sees a half-written file. A permit whose lease ran out is lost:
/// `renew`, `put` and `get` then raise `FencedError` and change nothing.
/// Any use of a released permit raises `InvalidError`. Safe to use from
/// several threads; a `release()` while a transfer runs on another thread
/// takes effect when that transfer ends.
#[pyclass(frozen, module = "mtipc", name = "Permit")]
pub(crate) struct Permit {
    token: u64,
    volume: String,
    path: String,
    mode: Mode,
    lease_ms: u64,
    /// `None` once released. The lock is held only to clone or take the
    /// `Arc`, never across a call into the core.
    inner: Mutex<Option<Arc<core::Permit>>>,
}

impl Permit {
    fn held(&self) -> PyResult<Arc<core::Permit>> {
        lock(&self.inner).clone().ok_or_else(|| {
            invalid(format!(
                "the permit {} on {}:{} was released",
                self.token, self.volume, self.path
            ))
        })
    }
}

#[pymethods]
impl Permit {
    /// The fencing token: strictly increasing per volume.
    #[getter]
    fn token(&self) -> u64 {
        self.token
    }

    /// The volume's name.
    #[getter]
    fn volume(&self) -> &str {
        &self.volume
    }

    /// The path inside the volume.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// `"read"` or `"write"`.
    #[getter]
    fn mode(&self) -> &'static str {
        mode_name(self.mode)
    }

    /// The lease as granted, in milliseconds: the permit is lost unless
    /// renewed within it.
    #[getter]
    fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Whether `release()` was called (or the `with` block left).
    #[getter]
    fn released(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// Extends the lease by its length from now. `FencedError` if the
    /// permit was lost (its lease ran out and it was reclaimed).
    fn renew(&self, py: Python<'_>) -> PyResult<()> {
        let p = self.held()?;
        py.detach(|| p.renew()).map_err(to_py)
    }

    /// Copies the local file `src` to the permit's path in the volume and
    /// returns the number of bytes copied (GIL released). Needs a write
    /// permit (`InvalidError` otherwise); `FencedError` if the permit was
    /// lost, and then the volume is unchanged.
    fn put(&self, py: Python<'_>, src: PathArg) -> PyResult<u64> {
        let p = self.held()?;
        py.detach(|| p.put(&src.0)).map_err(to_py)
    }

    /// Copies the permit's path in the volume to the local file `dst`
    /// (through a temporary name beside it) and returns the number of bytes
    /// copied (GIL released). A read or a write permit will do.
    fn get(&self, py: Python<'_>, dst: PathArg) -> PyResult<u64> {
        let p = self.held()?;
        py.detach(|| p.get(&dst.0)).map_err(to_py)
    }

    /// Gives the permit back (GIL released). Calling it again does nothing.
    fn release(&self, py: Python<'_>) {
        py.detach(|| {
            let p = lock(&self.inner).take();
            drop(p);
        });
    }

    /// Returns the permit itself; raises `InvalidError` if it was released.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().held()?;
        Ok(slf)
    }

    /// Releases the permit; exceptions raised in the block propagate.
    #[pyo3(signature = (exc_type, exc_value, traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc_value: &Bound<'_, PyAny>,
        traceback: &Bound<'_, PyAny>,
    ) {
        let _ = (exc_type, exc_value, traceback);
        self.release(py);
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "<mtipc.Permit volume={} path={} mode={} token={}{}>",
            self.volume.as_str().into_pyobject(py)?.repr()?,
            self.path.as_str().into_pyobject(py)?.repr()?,
            mode_name(self.mode),
            self.token,
            if self.released() { " (released)" } else { "" }
        ))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Releasing takes the arbiter's lock: without the GIL when there
        // is one.
        if let Some(p) = lock(&self.inner).take() {
            let mut p = Some(p);
            let _ = Python::try_attach(|py| py.detach(|| drop(p.take())));
            drop(p);
        }
    }
}
