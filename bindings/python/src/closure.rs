//! Shared closures for Python: `publish_closure`, `open_closure` and the
//! read-only views of an open version.
//!
//! The views read the mapped version in place: `ClosureMap` (registered as
//! a `collections.abc.Mapping`) and `ClosureList` (a `Sequence`) hold the
//! version and an offset; a byte string is a read-only `memoryview` of a
//! Python `mmap` of the version file (zero copy through the buffer
//! protocol). That `mmap` uses its own open file description with its own
//! `flock(LOCK_SH)` ([`mtipc::closure::Closure::reader_file`]), so the
//! version stays on disk as long as any `memoryview` of it lives, even
//! after the `Closure` object is closed. Strings and numbers are copied
//! into Python objects (Python has no zero-copy `str`).

use crate::{invalid, lock, to_py, Domain};
use mtipc::closure::{self as core, Kind, Value, ValueRef, MAX_DEPTH};
use pyo3::exceptions::{PyIndexError, PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PySlice, PyString, PyTuple,
};
use pyo3::IntoPyObjectExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// An open version, shared by the `Closure` object and every view of it.
struct Shared {
    /// `mmap.mmap` of the version file, made on the first byte string read.
    /// Declared first so that it is dropped first: its lock is gone (if no
    /// `memoryview` still uses it) when `closure` lets go and tries to
    /// remove a superseded version.
    mmap: OnceLock<Py<PyAny>>,
    closure: core::Closure,
}

impl Shared {
    /// The value at `off`: every offset kept by a view came from
    /// `ValueRef::offset` of a value of this same closure, so the lookup
    /// cannot fail.
    fn value(&self, off: usize) -> ValueRef<'_> {
        self.closure
            .value_at(off)
            .expect("a view's offset is one of its closure's values")
    }

    /// A read-only, zero-copy `memoryview` of the bytes `b` (inside the
    /// mapping of this closure).
    fn memoryview<'py>(&self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let mm = match self.mmap.get() {
            Some(m) => m.bind(py).clone(),
            None => {
                let file = self.closure.reader_file().map_err(to_py)?;
                let mmap = py.import("mmap")?;
                use std::os::fd::AsRawFd;
                let kwargs = PyDict::new(py);
                kwargs.set_item("access", mmap.getattr("ACCESS_READ")?)?;
                // mmap.mmap dup()s the descriptor: the duplicate keeps the
                // description, and so its lock, for the mmap's life.
                let m = mmap
                    .getattr("mmap")?
                    .call((file.as_raw_fd(), 0), Some(&kwargs))?;
                drop(file);
                let _ = self.mmap.set(m.clone().unbind());
                self.mmap.get().map(|m| m.bind(py).clone()).unwrap_or(m)
            }
        };
        let start = b.as_ptr() as usize - self.closure.raw().as_ptr() as usize;
        let view = PyMemoryView::from(&mm)?;
        let slice = PySlice::new(py, start as isize, (start + b.len()) as isize, 1);
        view.get_item(slice)
    }
}

/// The Python object for the value at `v` of `shared`.
fn to_python<'py>(
    py: Python<'py>,
    shared: &Arc<Shared>,
    v: ValueRef<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    // A version file truncated under the mapping reads as zeros: CorruptError.
    shared.closure.check().map_err(to_py)?;
    match v.kind() {
        Kind::Int => v.as_int().unwrap_or_default().into_bound_py_any(py),
        Kind::Float => v.as_float().unwrap_or_default().into_bound_py_any(py),
        Kind::Str => Ok(PyString::new(py, v.as_str().unwrap_or_default()).into_any()),
        Kind::Bytes => shared.memoryview(py, v.as_bytes().unwrap_or_default()),
        Kind::List => ClosureList {
            shared: shared.clone(),
            off: v.offset(),
        }
        .into_bound_py_any(py),
        Kind::Map => ClosureMap {
            shared: shared.clone(),
            off: v.offset(),
        }
        .into_bound_py_any(py),
    }
}

/// A read-only mapping inside an open closure (keys are `str`, sorted).
/// A `collections.abc.Mapping`: `len`, `[key]`, `in`, iteration over keys,
/// `get`, `keys`, `values`, `items`, `==` with any mapping. Nested maps and
/// lists are views too; byte strings are read-only `memoryview`s. A view
/// keeps its version open for as long as it lives.
#[pyclass(frozen, module = "mtipc", name = "ClosureMap")]
pub(crate) struct ClosureMap {
    shared: Arc<Shared>,
    off: usize,
}

impl ClosureMap {
    fn v(&self) -> ValueRef<'_> {
        self.shared.value(self.off)
    }

    fn lookup<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Ok(k) = key.cast::<PyString>() else {
            return Ok(None);
        };
        let k = k.to_cow()?;
        let k: &str = &k;
        match self.v().map_get(k.as_bytes()) {
            Some(v) => Ok(Some(to_python(py, &self.shared, v)?)),
            None => Ok(None),
        }
    }

    fn key_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.v().map_iter().map(|(k, _)| k))
    }
}

#[pymethods]
impl ClosureMap {
    fn __len__(&self) -> usize {
        self.v().len()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.lookup(py, key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(k) = key.cast::<PyString>() else {
            return Ok(false);
        };
        Ok(self.v().map_find(k.to_cow()?.as_bytes()).is_some())
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.key_list(py)?.try_iter().map(Bound::into_any)
    }

    /// The value of `key`, or `default` if the map has no such key.
    #[pyo3(signature = (key, default = None, /))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.lookup(py, key)?.or(default))
    }

    /// A `KeysView` of the map.
    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc(slf.py(), "KeysView")?.call1((slf,))
    }

    /// A `ValuesView` of the map.
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc(slf.py(), "ValuesView")?.call1((slf,))
    }

    /// An `ItemsView` of the map.
    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        abc(slf.py(), "ItemsView")?.call1((slf,))
    }

    fn __eq__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if !other.is_instance(&abc(py, "Mapping")?)? {
            return Ok(py.NotImplemented().into_bound(py));
        }
        let me = slf.get();
        if other.len()? != me.__len__() {
            return false.into_bound_py_any(py);
        }
        for (k, v) in me.v().map_iter() {
            let k = PyString::new(py, k);
            if !other.contains(&k)? {
                return false.into_bound_py_any(py);
            }
            if !to_python(py, &me.shared, v)?.eq(other.get_item(&k)?)? {
                return false.into_bound_py_any(py);
            }
        }
        true.into_bound_py_any(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let d = PyDict::new(py);
        for (k, v) in self.v().map_iter() {
            d.set_item(k, to_python(py, &self.shared, v)?)?;
        }
        Ok(format!("ClosureMap({})", d.repr()?))
    }
}

/// A read-only sequence inside an open closure. A `collections.abc.Sequence`:
/// `len`, `[i]` (negative too), `[a:b]` (a `list`), `in`, iteration, `==`
/// with a `list` or `tuple`. Nested maps and lists are views too; byte
/// strings are read-only `memoryview`s.
#[pyclass(frozen, module = "mtipc", name = "ClosureList")]
pub(crate) struct ClosureList {
    shared: Arc<Shared>,
    off: usize,
}

impl ClosureList {
    fn v(&self) -> ValueRef<'_> {
        self.shared.value(self.off)
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        self.v()
            .list_iter()
            .map(|v| to_python(py, &self.shared, v))
            .collect()
    }
}

#[pymethods]
impl ClosureList {
    fn __len__(&self) -> usize {
        self.v().len()
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = self.v().len();
        if let Ok(slice) = index.cast::<PySlice>() {
            let ind = slice.indices(n as isize)?;
            let mut out = Vec::with_capacity(ind.slicelength);
            let mut i = ind.start;
            for _ in 0..ind.slicelength {
                let item = self.v().list_get(i as usize).expect("slice index in range");
                out.push(to_python(py, &self.shared, item)?);
                i += ind.step;
            }
            return PyList::new(py, out).map(Bound::into_any);
        }
        let i: isize = index.extract()?;
        let j = if i < 0 { i + n as isize } else { i };
        match (j >= 0).then(|| self.v().list_get(j as usize)).flatten() {
            Some(v) => to_python(py, &self.shared, v),
            None => Err(PyIndexError::new_err(format!(
                "closure list index {i} out of range (length {n})"
            ))),
        }
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.items(py)?)?
            .try_iter()
            .map(Bound::into_any)
    }

    fn __contains__(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<bool> {
        for it in self.items(py)? {
            if it.eq(x)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn __eq__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let ok = other.is_instance_of::<PyList>()
            || other.is_instance_of::<PyTuple>()
            || other.is_instance_of::<ClosureList>();
        if !ok {
            return Ok(py.NotImplemented().into_bound(py));
        }
        let me = slf.get();
        if other.len()? != me.__len__() {
            return false.into_bound_py_any(py);
        }
        for (i, it) in me.items(py)?.into_iter().enumerate() {
            if !it.eq(other.get_item(i)?)? {
                return false.into_bound_py_any(py);
            }
        }
        true.into_bound_py_any(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "ClosureList({})",
            PyList::new(py, self.items(py)?)?.repr()?
        ))
    }
}

fn abc<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("collections.abc")?.getattr(name)
}

/// Registers the views with `collections.abc` (called at import).
pub(crate) fn register(py: Python<'_>) -> PyResult<()> {
    abc(py, "Mapping")?.call_method1("register", (py.get_type::<ClosureMap>(),))?;
    abc(py, "Sequence")?.call_method1("register", (py.get_type::<ClosureList>(),))?;
    Ok(())
}

/// One open version of a shared closure (from `open_closure`), mapped
/// read-only with no copy. `version` is its number; `value` the value:
/// a `ClosureMap`, a `ClosureList`, a read-only `memoryview` (bytes), or a
/// `str`, `int` or `float`.
///
/// A context manager: leaving the `with` block (or `close()`) lets go of
/// the version; views already taken from `value` keep it open until they
/// are gone too. `value` of a closed `Closure` raises `InvalidError`. May be
/// used from several threads at once.
#[pyclass(frozen, module = "mtipc", name = "Closure")]
pub(crate) struct Closure {
    inner: Mutex<Option<Arc<Shared>>>,
    name: String,
    version: u64,
}

impl Closure {
    fn get(&self) -> PyResult<Arc<Shared>> {
        lock(&self.inner).clone().ok_or_else(|| {
            invalid(format!(
                "closure {:?} (version {}) is closed",
                self.name, self.version
            ))
        })
    }
}

#[pymethods]
impl Closure {
    /// The version number.
    #[getter]
    fn version(&self) -> u64 {
        self.version
    }

    /// The closure's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The value (see the class documentation).
    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let shared = self.get()?;
        let root = shared.closure.root();
        to_python(py, &shared, root)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.inner).is_none()
    }

    /// Lets go of the version (views taken from it keep it until they are
    /// gone). Calling it again does nothing.
    fn close(&self) {
        let taken = lock(&self.inner).take();
        drop(taken);
    }

    /// Returns the closure itself; raises `InvalidError` if it is closed.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().get()?;
        Ok(slf)
    }

    /// Closes it; exceptions raised in the block propagate.
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

    fn __repr__(&self) -> String {
        let state = if self.closed() { ", closed" } else { "" };
        format!(
            "<mtipc.Closure {:?} version {}{state}>",
            self.name, self.version
        )
    }
}

/// Converts a Python value into a closure [`Value`].
fn to_value(ob: &Bound<'_, PyAny>, depth: u32) -> PyResult<Value> {
    if let Ok(b) = ob.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = ob.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if ob.is_instance_of::<PyMemoryView>() {
        let b = ob.py().get_type::<PyBytes>().call1((ob,))?;
        return Ok(Value::Bytes(b.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    if let Ok(s) = ob.cast::<PyString>() {
        return Ok(Value::Str(s.to_cow()?.into_owned()));
    }
    if ob.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(
            "a closure value cannot be a bool (use an int)",
        ));
    }
    if ob.is_instance_of::<PyInt>() {
        return match ob.extract::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => Err(invalid(format!(
                "closure integer {ob} is out of range (a signed 64-bit integer)"
            ))),
        };
    }
    if ob.is_instance_of::<PyFloat>() {
        return Ok(Value::Float(ob.extract()?));
    }
    let is_map = ob.is_instance_of::<PyDict>() || ob.is_instance_of::<ClosureMap>();
    let is_list = ob.is_instance_of::<PyList>()
        || ob.is_instance_of::<PyTuple>()
        || ob.is_instance_of::<ClosureList>();
    if (is_map || is_list) && depth >= MAX_DEPTH {
        return Err(invalid(format!(
            "closure value is nested too deeply (at most {MAX_DEPTH} levels of lists and maps)"
        )));
    }
    if is_map {
        let mut m = BTreeMap::new();
        for k in ob.try_iter()? {
            let k = k?;
            let Ok(ks) = k.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "closure map keys must be str, not {}",
                    k.get_type().name()?
                )));
            };
            let v = to_value(&ob.get_item(&k)?, depth + 1)?;
            m.insert(ks.to_cow()?.into_owned(), v);
        }
        return Ok(Value::Map(m));
    }
    if is_list {
        let mut items = Vec::new();
        for it in ob.try_iter()? {
            items.push(to_value(&it?, depth + 1)?);
        }
        return Ok(Value::List(items));
    }
    Err(PyTypeError::new_err(format!(
        "a closure value is a dict, list, tuple, str, int, float or bytes-like object, not {}",
        ob.get_type().name()?
    )))
}

/// Publishes `value` as the new current version of closure `name` in
/// `domain` and returns its version number (1, 2, ...). `value` is a
/// bytes-like object (a bytes closure), or a tree of `dict` (with `str`
/// keys), `list`/`tuple`, `str`, `int` (64-bit), `float` and bytes-like
/// leaves. Superseded versions that no reader holds are removed.
///
/// `InvalidError` for a bad name, an integer out of range, more than 64
/// levels of nesting or more than 1 GiB (the message gives the limit);
/// `TypeError` for a value of another type.
#[pyfunction]
pub(crate) fn publish_closure(
    py: Python<'_>,
    domain: &Domain,
    name: &str,
    value: &Bound<'_, PyAny>,
) -> PyResult<u64> {
    let dom = domain.get()?;
    core::validate_name(name).map_err(to_py)?;
    if let Ok(b) = value.cast::<PyBytes>() {
        // bytes are immutable: the slice stays valid without the GIL.
        let bytes = b.as_bytes();
        return py
            .detach(|| core::publish_bytes(&dom, name, bytes))
            .map_err(to_py);
    }
    let v = to_value(value, 0)?;
    match v {
        Value::Bytes(b) => py.detach(|| core::publish_bytes(&dom, name, &b)),
        v => py.detach(|| core::publish(&dom, name, &v)),
    }
    .map_err(to_py)
}

/// Opens the current version of closure `name` in `domain` (see
/// `Closure`). `NotFoundError` if it was never published, `CorruptError`
/// for a malformed version file, `DeniedError` for an unsafe one.
#[pyfunction]
pub(crate) fn open_closure(py: Python<'_>, domain: &Domain, name: &str) -> PyResult<Closure> {
    let dom = domain.get()?;
    let c = py
        .detach(|| core::Closure::open(&dom, name))
        .map_err(to_py)?;
    Ok(Closure {
        name: c.name().to_owned(),
        version: c.version(),
        inner: Mutex::new(Some(Arc::new(Shared {
            mmap: OnceLock::new(),
            closure: c,
        }))),
    })
}
