//! `mt_ha_*`: the HA hooks of a supervised application (DESIGN.md section
//! 4; the core is `crate::ha`, docs/ha.md describes the protocol).
//!
//! DESIGN.md names the role getter `mt_ha_role`, the same name as the type
//! `mt_ha_role`: C cannot declare both (the typedef and the function are
//! one identifier), so the getter is `mt_ha_role_get`.

use super::handle::{check_out, write_out};
use super::panic::guard;
use super::status::mt_status;
use crate::ha::{self, Role};
use std::ffi::{c_int, c_void};
use std::sync::Arc;

/// The role of the node a supervised process runs on.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mt_ha_role {
    /// No role: outside supervision (`mt_ha_supervised()` is 0), or a node
    /// that has not taken one.
    MT_HA_NONE = 0,
    /// The active node: it serves. A node that is not paired is active
    /// with epoch 1.
    MT_HA_ACTIVE = 1,
    /// The standby node of a duplex pair.
    MT_HA_STANDBY = 2,
}

// The C values are the core's.
const _: () = assert!(
    mt_ha_role::MT_HA_NONE as u32 == Role::None as u32
        && mt_ha_role::MT_HA_ACTIVE as u32 == Role::Active as u32
        && mt_ha_role::MT_HA_STANDBY as u32 == Role::Standby as u32
);

impl From<Role> for mt_ha_role {
    fn from(r: Role) -> mt_ha_role {
        match r {
            Role::None => mt_ha_role::MT_HA_NONE,
            Role::Active => mt_ha_role::MT_HA_ACTIVE,
            Role::Standby => mt_ha_role::MT_HA_STANDBY,
        }
    }
}

/// A health callback: returns 0 when the application is healthy, anything
/// else when it is not. Called with the `user` given to
/// `mt_ha_set_health` on a thread of the library, each time the Monitor
/// polls (every `monitor_ms` of the process's configuration); it should
/// return quickly (the Monitor waits for the answer).
pub type mt_ha_health_fn = Option<unsafe extern "C" fn(user: *mut c_void) -> c_int>;

/// A role callback: the node's role and the fencing epoch of its term.
/// Called with the `user` given to `mt_ha_on_role`: once inside
/// `mt_ha_on_role` on the calling thread, then on a thread of the library
/// at every change; never twice at once, never with an older role after a
/// newer one. It must not call `mt_ha_on_role` (that returns
/// `MT_ERR_INVALID`); other mtipc calls are fine.
pub type mt_ha_role_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, role: mt_ha_role, epoch: u64)>;

/// A C callback's `user` pointer, passed back as is from any thread.
#[derive(Clone, Copy)]
struct User(*mut c_void);
// SAFETY: the callbacks' contracts (above) make them and their `user`
// callable from the library's thread; the library only passes it back.
unsafe impl Send for User {}
// SAFETY: as above; calls never overlap (one thread delivers).
unsafe impl Sync for User {}

/// 1 if this process runs under the HA supervisor (`$MTIPC_HA_SOCKET` is
/// set and not empty), else 0. Cannot fail.
#[no_mangle]
pub extern "C" fn mt_ha_supervised() -> c_int {
    c_int::from(ha::supervised())
}

/// Tells the Monitor that the application is ready (its `ready = "notify"`
/// readiness). Returns once it is sent, without waiting for the Monitor
/// (as `sd_notify`). The library remembers it and tells every Monitor it
/// connects to later. `MT_ERR_UNAVAILABLE` if no Monitor is connected now
/// and none could be connected to (the next hook call, or the library's
/// thread if a callback is registered, reconnects and says it then);
/// `MT_ERR_DENIED` if the socket's listener runs as another uid (and is
/// not root). Outside supervision: `MT_OK`, nothing done.
///
/// No thread is started: an application without callbacks has none of
/// the library's. A process the HA Spawner started with its connection
/// already made (`MTIPC_HA_FD`, for `ready = "notify"` or a watchdog)
/// sends on that one: the first call makes no connection.
#[no_mangle]
pub extern "C" fn mt_ha_ready() -> mt_status {
    // The first call of a process the Spawner started, on the connection
    // it inherited: C library calls only, before anything else of this
    // library is touched (each first-touched page is a page fault).
    if ha::inherit::ready_first() {
        return mt_status::MT_OK;
    }
    guard("mt_ha_ready", ha::ready)
}

/// Tells the Monitor that the application is alive; a process whose
/// configuration has `watchdog_ms` must call it at least that often.
/// Without the library's thread (no callback registered), reconnects
/// first if the connection was lost (at most one attempt per 20-250 ms).
/// `MT_ERR_UNAVAILABLE` if no Monitor is connected now.
/// Outside supervision: `MT_OK`, nothing done.
#[no_mangle]
pub extern "C" fn mt_ha_heartbeat() -> mt_status {
    guard("mt_ha_heartbeat", ha::heartbeat)
}

/// Registers the health callback the Monitor polls (see `mt_ha_health_fn`),
/// replacing any other; `fn` NULL removes it (the Monitor then stops
/// polling). The first callback starts the library's thread, which
/// answers the polls. Kept across reconnections; `MT_ERR_UNAVAILABLE` (and kept all the same) if no
/// Monitor is connected now. Outside supervision: `MT_OK`, nothing kept.
///
/// # Safety
/// `fn`, if not NULL, may be called with `user` from a thread of the
/// library until it is replaced or removed (and during a poll that began
/// before).
#[no_mangle]
pub unsafe extern "C" fn mt_ha_set_health(f: mt_ha_health_fn, user: *mut c_void) -> mt_status {
    guard("mt_ha_set_health", || {
        let user = User(user);
        ha::set_health(f.map(|f| -> ha::HealthFn {
            Arc::new(move || {
                let u = user;
                // SAFETY: the application registered `f` for `user`, to be
                // called from the library's thread (mt_ha_health_fn).
                unsafe { f(u.0) == 0 }
            })
        }))
    })
}

/// Registers the role callback (see `mt_ha_role_fn`), replacing any other;
/// `fn` NULL removes it. Under supervision it is called at once, before
/// this returns, with the current role (`MT_HA_ACTIVE` with epoch 1 on a
/// node that is not paired), then at every change. If no Monitor has ever
/// answered, it is kept, first called once one does, and this returns
/// `MT_ERR_UNAVAILABLE`. Called from inside a role callback:
/// `MT_ERR_INVALID`. Outside supervision: `MT_OK`; nothing is kept and
/// the callback is never called (`mt_ha_role_get` gives `MT_HA_NONE`, 0).
///
/// # Safety
/// `fn`, if not NULL, may be called with `user` (from this thread or one
/// of the library's) until it is replaced or removed.
#[no_mangle]
pub unsafe extern "C" fn mt_ha_on_role(f: mt_ha_role_fn, user: *mut c_void) -> mt_status {
    guard("mt_ha_on_role", || {
        let user = User(user);
        ha::on_role(f.map(|f| -> ha::RoleFn {
            Arc::new(move |role: Role, epoch: u64| {
                let u = user;
                // SAFETY: the application registered `f` for `user`, to be
                // called from any thread (mt_ha_role_fn).
                unsafe { f(u.0, role.into(), epoch) }
            })
        }))
    })
}

/// Stores the node's role and epoch as the Monitor last said them in
/// `*role` and `*epoch`. The first hook called under supervision connects
/// (`MT_ERR_UNAVAILABLE` if no Monitor answers); after that the role
/// learned last is kept while the Monitor is away. Outside supervision:
/// `MT_HA_NONE` and 0. NULL pointers are `MT_ERR_INVALID`.
///
/// (DESIGN.md calls it `mt_ha_role`, which C cannot declare beside the
/// type `mt_ha_role`.)
///
/// If this returns an error code, `*role` and `*epoch` are unchanged.
///
/// # Safety
/// `role` and `epoch` are valid for writes.
#[no_mangle]
pub unsafe extern "C" fn mt_ha_role_get(role: *mut mt_ha_role, epoch: *mut u64) -> mt_status {
    guard("mt_ha_role_get", || {
        check_out(role, "role")?;
        check_out(epoch, "epoch")?;
        let (r, e) = ha::role()?;
        // SAFETY: both checked above, valid per the contract.
        unsafe {
            write_out(role, r.into());
            write_out(epoch, e);
        }
        Ok(())
    })
}
