//! `mt_volume_*`, `mt_permit_*` and `mt_transfer_*`: permits for gateway
//! volumes (DESIGN.md section 3; the core is `crate::permit`).

use super::domain::mt_domain;
use super::handle::{check_out, str_arg, write_out, BoxHandle};
use super::panic::{guard, guard_void};
use super::status::mt_status;
use crate::error::{err, Result};
use crate::permit::{self, Mode, Permit, VolumeOpts};
use std::ffi::c_char;
use std::path::Path;
use std::time::Duration;

/// What a permit allows. Passed to `mt_permit_request` as an integer (a C
/// enum arrives as one): a value that is neither is `MT_ERR_INVALID`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mt_permit_mode {
    /// Read a file of the volume; reads of one path share it.
    MT_PERMIT_READ = 1,
    /// Write a file of the volume; conflicts with every other transfer of
    /// the same path.
    MT_PERMIT_WRITE = 2,
}

// The C values are the core's.
const _: () = assert!(
    mt_permit_mode::MT_PERMIT_READ as u32 == Mode::Read as u32
        && mt_permit_mode::MT_PERMIT_WRITE as u32 == Mode::Write as u32
);

/// How `mt_volume_create` records a volume. Start from
/// `MT_VOLUME_OPTS_INIT` and set fields after it; fields may be added at
/// the end in later versions (`size` tells which the caller knows).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct mt_volume_opts {
    /// `sizeof(mt_volume_opts)` as the caller compiled it.
    pub size: u32,
    /// Cap on concurrent transfers on the volume; 0: no cap.
    pub max_transfers: u32,
    /// The lease of a permit in milliseconds (10 to 86,400,000); 0: 30000.
    pub lease_ms: u32,
    /// NULL: the volume's permits are kept in this host's shared memory;
    /// else etcd endpoints, `"http://h:p,..."`, for a volume that several
    /// hosts mount.
    pub etcd: *const c_char,
}

/// A granted permit: the right to transfer one path of a volume in one
/// mode until `mt_permit_free`, the end of its lease, or the death of its
/// process.
///
/// Thread safety: may be used from several threads at once. Lifetime: from
/// `mt_permit_request` to `mt_permit_free`, which gives the permit back; it
/// does not need its `mt_domain` to stay open.
pub struct mt_permit {
    _private: [u8; 0],
}

impl BoxHandle for mt_permit {
    type Inner = Permit;
    const NAME: &'static str = "mt_permit";
}

/// Longest volume directory or local file path accepted, in bytes.
const MAX_LOCAL_PATH: usize = crate::domain::MAX_PATH;

/// Records the gateway volume `volume` (the tenant-id rule) in the domain:
/// its directory `dir` (absolute; a directory of this uid that no other
/// user may write) and `opts` (NULL: no cap, 30 s leases, shared memory).
///
/// Errors: `MT_ERR_EXISTS` if the domain has a volume of that name;
/// `MT_ERR_INVALID` for a bad name, a relative or missing directory, a
/// lease out of range, a cap over 4096, a bad endpoint list, or
/// `opts->size` smaller than this library's `mt_volume_opts`;
/// `MT_ERR_DENIED` for a directory of another uid or writable by others.
///
/// # Safety
/// `d` is a live handle; `volume`, `dir` NUL-terminated; `opts` NULL or
/// valid (and its `etcd` NULL or NUL-terminated).
#[no_mangle]
pub unsafe extern "C" fn mt_volume_create(
    d: *mut mt_domain,
    volume: *const c_char,
    dir: *const c_char,
    opts: *const mt_volume_opts,
) -> mt_status {
    guard("mt_volume_create", || {
        // SAFETY: per the contract.
        let h = unsafe { mt_domain::try_ref(d) }?;
        // SAFETY: NUL-terminated per the contract.
        let name = unsafe { str_arg(volume, "volume", crate::sys::MAX_NAME) }?;
        // SAFETY: as above.
        let dir = unsafe { str_arg(dir, "dir", MAX_LOCAL_PATH) }?;
        // SAFETY: NULL or valid per the contract.
        let o = unsafe { volume_opts(opts) }?;
        permit::volume::create(h, name, Path::new(dir), &o)?;
        Ok(())
    })
}

unsafe fn volume_opts(opts: *const mt_volume_opts) -> Result<VolumeOpts> {
    // SAFETY: NULL or a valid struct per the caller's contract.
    let Some(o) = (unsafe { opts.as_ref() }) else {
        return Ok(VolumeOpts::default());
    };
    if (o.size as usize) < std::mem::size_of::<mt_volume_opts>() {
        return Err(err!(
            Invalid,
            "mt_volume_opts.size is {} (this library needs {}; start from MT_VOLUME_OPTS_INIT)",
            o.size,
            std::mem::size_of::<mt_volume_opts>()
        ));
    }
    let etcd = if o.etcd.is_null() {
        None
    } else {
        // SAFETY: NUL-terminated per the contract.
        Some(unsafe { str_arg(o.etcd, "etcd", permit::volume::MAX_ETCD) }?.to_owned())
    };
    Ok(VolumeOpts {
        max_transfers: o.max_transfers,
        lease: (o.lease_ms != 0).then(|| Duration::from_millis(o.lease_ms.into())),
        etcd,
    })
}

/// Asks the arbiter of `volume` for a permit on `path` (relative to the
/// volume's directory) in `mode` (`MT_PERMIT_READ` or `MT_PERMIT_WRITE`),
/// waiting at most `wait_ms`. A request that conflicts with a transfer in
/// flight (a write with any other transfer of the path; reads share), or
/// that the volume's cap stops, is deferred and granted in a fair order:
/// round robin over the processes that wait, FIFO within one.
///
/// Errors: `MT_ERR_DEFERRED` at once if `wait_ms` is 0 and the request
/// must wait; `MT_ERR_TIMEOUT` when `wait_ms` passes first (the request
/// leaves no trace); `MT_ERR_INVALID` for an absolute path, a path with
/// `..`, `.` or empty parts, over 400 bytes, or a bad mode;
/// `MT_ERR_NOT_FOUND` for an unknown volume; `MT_ERR_CORRUPT` for a damaged
/// arbiter region; `MT_ERR_UNAVAILABLE` when the volume's etcd cannot be
/// reached within `wait_ms`; `MT_ERR_FULL` when 1024 requests and permits
/// are pending on the volume.
///
/// The first request on a volume opens it (reads its record, maps its
/// arbiter) and the domain handle keeps it open.
///
/// # Safety
/// `d` is a live handle; `volume`, `path` NUL-terminated; `out` valid for
/// a write.
#[no_mangle]
pub unsafe extern "C" fn mt_permit_request(
    d: *mut mt_domain,
    volume: *const c_char,
    path: *const c_char,
    mode: u32,
    wait_ms: u32,
    out: *mut *mut mt_permit,
) -> mt_status {
    guard("mt_permit_request", || {
        // SAFETY: per the contract.
        let h = unsafe { mt_domain::try_ref(d) }?;
        check_out(out, "out")?;
        // SAFETY: NUL-terminated per the contract.
        let name = unsafe { str_arg(volume, "volume", crate::sys::MAX_NAME) }?;
        // SAFETY: as above.
        let path = unsafe { str_arg(path, "path", permit::paths::MAX_PATH) }?;
        let mode = Mode::from_u32(mode).ok_or_else(|| {
            err!(
                Invalid,
                "mode {mode} is not an mt_permit_mode (MT_PERMIT_READ = 1, MT_PERMIT_WRITE = 2)"
            )
        })?;
        let p = h.volumes.request(
            &h.domain,
            name,
            path,
            mode,
            Duration::from_millis(wait_ms.into()),
        )?;
        // SAFETY: `out` checked above.
        unsafe { write_out(out, mt_permit::into_raw(p)) };
        Ok(())
    })
}

/// The permit's fencing token: strictly increasing per volume (0 for a
/// NULL handle).
///
/// # Safety
/// `p` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_permit_token(p: *const mt_permit) -> u64 {
    // SAFETY: per the contract.
    unsafe { mt_permit::try_ref(p) }.map_or(0, |p| p.token())
}

/// Extends the permit's lease by its length from now. `MT_ERR_FENCED` if
/// the permit is no longer current: its lease ran out and it was reclaimed
/// (another process may hold the path now); it never becomes current again.
/// For a volume on etcd, `MT_ERR_UNAVAILABLE` while etcd cannot be reached
/// and the lease may still run, `MT_ERR_FENCED` once it cannot have.
///
/// # Safety
/// `p` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_permit_renew(p: *mut mt_permit) -> mt_status {
    guard("mt_permit_renew", || {
        // SAFETY: per the contract.
        unsafe { mt_permit::try_ref(p) }?.renew()
    })
}

/// A transfer session from the local file `local_src` to the permit's path
/// in the volume: copied (with the kernel's copy offload where it applies)
/// to a temporary name in the destination's directory (missing directories
/// are made), flushed, and renamed into place only while the permit is
/// current. A reader never sees a half-written file under the final name.
///
/// Errors: `MT_ERR_INVALID` for a read permit or a source that is not a
/// regular file; `MT_ERR_FENCED` if the permit is no longer current (the
/// volume is unchanged); `MT_ERR_DENIED` if the path resolves outside the
/// volume (a symbolic link pointing out of it); `MT_ERR_IO`,
/// `MT_ERR_NOT_FOUND` for the files.
///
/// # Safety
/// `p` is a live handle; `local_src` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn mt_transfer_put(p: *mut mt_permit, local_src: *const c_char) -> mt_status {
    guard("mt_transfer_put", || {
        // SAFETY: per the contract.
        let p = unsafe { mt_permit::try_ref(p) }?;
        // SAFETY: NUL-terminated per the contract.
        let src = unsafe { str_arg(local_src, "local_src", MAX_LOCAL_PATH) }?;
        p.put(Path::new(src)).map(|_| ())
    })
}

/// A transfer session from the permit's path in the volume to the local
/// file `local_dst` (through a temporary name beside it, renamed into
/// place only while the permit is current). A read or a write permit.
///
/// Errors: `MT_ERR_FENCED` if the permit is no longer current (`local_dst`
/// is unchanged); `MT_ERR_DENIED` if the path resolves outside the volume;
/// `MT_ERR_INVALID` if it is not a regular file; `MT_ERR_NOT_FOUND`,
/// `MT_ERR_IO` for the files.
///
/// # Safety
/// `p` is a live handle; `local_dst` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn mt_transfer_get(p: *mut mt_permit, local_dst: *const c_char) -> mt_status {
    guard("mt_transfer_get", || {
        // SAFETY: per the contract.
        let p = unsafe { mt_permit::try_ref(p) }?;
        // SAFETY: NUL-terminated per the contract.
        let dst = unsafe { str_arg(local_dst, "local_dst", MAX_LOCAL_PATH) }?;
        p.get(Path::new(dst)).map(|_| ())
    })
}

/// Gives the permit back and frees the handle. NULL is fine; do not call it
/// twice on one handle.
///
/// # Safety
/// `p` is NULL or a handle from `mt_permit_request` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mt_permit_free(p: *mut mt_permit) {
    // SAFETY: per the contract.
    guard_void("mt_permit_free", || unsafe { mt_permit::free(p) })
}
