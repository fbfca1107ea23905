//! `mt_domain_*` and `mt_sem_*`: the domain and its notification semaphore.

use super::handle::{check_out, copy_str_out, str_arg, write_out, BoxHandle};
use super::panic::{guard, guard_void};
use super::status::mt_status;
use crate::domain::{Domain, MAX_PATH};
use std::ffi::c_char;
use std::path::Path;
use std::time::Duration;

/// An open domain: the directory the cooperating processes of a host share.
///
/// Thread safety: one `mt_domain` may be used from several threads at once.
/// Lifetime: from `mt_domain_open` to `mt_domain_free`; every object made
/// from it must be freed first.
pub struct mt_domain {
    _private: [u8; 0],
}

/// What an `mt_domain` handle holds: the domain, and the gateway volumes
/// this handle has opened (each opened once, on its first permit request).
pub(crate) struct DomainHandle {
    pub(crate) domain: Domain,
    pub(crate) volumes: crate::permit::Volumes,
}

impl std::ops::Deref for DomainHandle {
    type Target = Domain;
    fn deref(&self) -> &Domain {
        &self.domain
    }
}

impl BoxHandle for mt_domain {
    type Inner = DomainHandle;
    const NAME: &'static str = "mt_domain";
}

/// A timeout that never passes (for `mt_sem_wait`).
pub const MT_WAIT_FOREVER: u32 = u32::MAX;

pub(crate) fn timeout_of(ms: u32) -> Option<Duration> {
    (ms != MT_WAIT_FOREVER).then(|| Duration::from_millis(ms.into()))
}

/// Opens the domain at `path`, creating the directory (mode 0700), its layout
/// file and its notification semaphore if missing. `path` NULL means
/// `$MTIPC_DOMAIN`, else `$XDG_RUNTIME_DIR/mtipc`, else `/tmp/mtipc-<uid>`.
///
/// Refuses: a path that is not a directory (`MT_ERR_INVALID`), a symbolic
/// link, a directory of another uid or writable by group or others
/// (`MT_ERR_DENIED`), another layout version (`MT_ERR_VERSION`), a corrupt
/// or truncated layout or semaphore file (`MT_ERR_CORRUPT`), a missing parent
/// directory (`MT_ERR_NOT_FOUND`).
///
/// If this returns an error code, `*out` is unchanged.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_domain_open(
    path: *const c_char,
    out: *mut *mut mt_domain,
) -> mt_status {
    guard("mt_domain_open", || {
        check_out(out, "out")?;
        let path = if path.is_null() {
            None
        } else {
            // SAFETY: non-NULL, NUL-terminated per the contract.
            Some(unsafe { str_arg(path, "path", MAX_PATH) }?)
        };
        let d = Domain::open(path.map(Path::new))?;
        // SAFETY: `out` was checked above.
        let h = DomainHandle {
            domain: d,
            volumes: crate::permit::Volumes::new(),
        };
        unsafe { write_out(out, mt_domain::into_raw(h)) };
        Ok(())
    })
}

/// Closes a domain handle. NULL is fine; do not call it twice on one handle.
///
/// # Safety
/// `d` is NULL or a handle from `mt_domain_open` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mt_domain_free(d: *mut mt_domain) {
    // SAFETY: per the contract.
    guard_void("mt_domain_free", || unsafe { mt_domain::free(d) })
}

/// Copies the domain's path, NUL-terminated, into `buf` of `cap` bytes and
/// stores its length (without the NUL) in `*len`. If `cap` is too small,
/// returns `MT_ERR_INVALID` and stores the path's length in `*len`: a buffer
/// of `*len + 1` bytes is enough.
///
/// # Safety
/// `d` is a live handle; `buf` is valid for `cap` bytes; `len` is valid.
#[no_mangle]
pub unsafe extern "C" fn mt_domain_path(
    d: *const mt_domain,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mt_status {
    guard("mt_domain_path", || {
        // SAFETY: per the contract.
        let d = unsafe { mt_domain::try_ref(d) }?;
        check_out(len, "len")?;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: `len` checked; `buf` valid for `cap` bytes per the contract.
        unsafe { copy_str_out(d.path().as_os_str().as_bytes(), buf, cap, len, "path") }
    })
}

/// Adds `n` to the domain's notification semaphore and wakes up to `n`
/// waiters, in any process. `MT_ERR_INVALID` if the count would pass
/// 2^31 - 1.
///
/// # Safety
/// `d` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_sem_post(d: *const mt_domain, n: u32) -> mt_status {
    guard("mt_sem_post", || {
        // SAFETY: per the contract.
        unsafe { mt_domain::try_ref(d) }?.semaphore().post(n)
    })
}

/// Takes one unit of the domain's notification semaphore, blocking while
/// it is zero for at most `timeout_ms` (`MT_WAIT_FOREVER`: no limit; 0: do
/// not block). `MT_ERR_TIMEOUT` if the timeout passes. A waiter that is
/// killed while blocked takes nothing.
///
/// # Safety
/// `d` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_sem_wait(d: *const mt_domain, timeout_ms: u32) -> mt_status {
    guard("mt_sem_wait", || {
        // SAFETY: per the contract.
        unsafe { mt_domain::try_ref(d) }?
            .semaphore()
            .wait(timeout_of(timeout_ms))
    })
}

/// Sets the domain's notification semaphore to zero. Posts made after the
/// call are kept. `*previous` (if not NULL) receives the count it had.
///
/// # Safety
/// `d` is a live handle; `previous` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_sem_reset(d: *const mt_domain, previous: *mut u32) -> mt_status {
    guard("mt_sem_reset", || {
        // SAFETY: per the contract.
        let sem = unsafe { mt_domain::try_ref(d) }?.semaphore();
        sem.check()?;
        let v = sem.reset();
        sem.check()?;
        if !previous.is_null() {
            // SAFETY: non-NULL and valid per the contract.
            unsafe { write_out(previous, v) };
        }
        Ok(())
    })
}

/// Stores the current count of the domain's notification semaphore in
/// `*value`.
///
/// If this returns an error code, `*value` is unchanged.
///
/// # Safety
/// `d` is a live handle; `value` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_sem_value(d: *const mt_domain, value: *mut u32) -> mt_status {
    guard("mt_sem_value", || {
        // SAFETY: per the contract.
        let d = unsafe { mt_domain::try_ref(d) }?;
        check_out(value, "value")?;
        let v = d.semaphore().value();
        d.semaphore().check()?;
        // SAFETY: checked.
        unsafe { write_out(value, v) };
        Ok(())
    })
}
