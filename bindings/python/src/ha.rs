//! The HA hooks for Python (`mtipc.ha`, DESIGN.md section 4): the private
//! functions `_ha_*` here, which the pure-Python module `mtipc/ha.py`
//! wraps (it turns roles into `mtipc.ha.Role`).
//!
//! The callbacks run on the core's hooks thread, which holds no GIL: they
//! take it (`Python::try_attach`; not at all while the interpreter shuts
//! down). Every call into the core releases the GIL first, since a role
//! callback may be delivered during it on another thread that needs the
//! GIL. An exception in a callback goes to `sys.unraisablehook` (a health
//! callback's also counts as unhealthy).

use crate::to_py;
use mtipc::ha::{self, HealthFn, Role, RoleFn};
use pyo3::prelude::*;
use std::sync::Arc;

/// Whether this process runs under the HA supervisor (`$MTIPC_HA_SOCKET`).
#[pyfunction]
pub fn _ha_supervised() -> bool {
    ha::supervised()
}

/// `mt_ha_ready`.
#[pyfunction]
pub fn _ha_ready(py: Python<'_>) -> PyResult<()> {
    py.detach(ha::ready).map_err(to_py)
}

/// `mt_ha_heartbeat`.
#[pyfunction]
pub fn _ha_heartbeat(py: Python<'_>) -> PyResult<()> {
    py.detach(ha::heartbeat).map_err(to_py)
}

/// `mt_ha_set_health`: `fn()` returns a truthy value when healthy; `None`
/// removes it.
#[pyfunction]
#[pyo3(signature = (callback))]
pub fn _ha_set_health(py: Python<'_>, callback: Option<Py<PyAny>>) -> PyResult<()> {
    let f = callback.map(|cb| -> HealthFn {
        Arc::new(move || {
            Python::try_attach(|py| match cb.call0(py).and_then(|v| v.is_truthy(py)) {
                Ok(healthy) => healthy,
                Err(e) => {
                    e.write_unraisable(py, Some(cb.bind(py)));
                    false
                }
            })
            .unwrap_or(false)
        })
    });
    py.detach(|| ha::set_health(f)).map_err(to_py)
}

/// `mt_ha_on_role`: `fn(role: int, epoch: int)`; `None` removes it.
#[pyfunction]
#[pyo3(signature = (callback))]
pub fn _ha_on_role(py: Python<'_>, callback: Option<Py<PyAny>>) -> PyResult<()> {
    let f = callback.map(|cb| -> RoleFn {
        Arc::new(move |role: Role, epoch: u64| {
            Python::try_attach(|py| {
                if let Err(e) = cb.call1(py, (role as u32, epoch)) {
                    e.write_unraisable(py, Some(cb.bind(py)));
                }
            });
        })
    });
    py.detach(|| ha::on_role(f)).map_err(to_py)
}

/// `mt_ha_role_get`: `(role as int, epoch)`.
#[pyfunction]
pub fn _ha_role(py: Python<'_>) -> PyResult<(u32, u64)> {
    py.detach(ha::role)
        .map(|(r, e)| (r as u32, e))
        .map_err(to_py)
}
