//! `mt_session_*`, `mt_worker_*`, `mt_request_*`, `mt_ticket_*`: the
//! session table and request dispatch to worker groups (DESIGN.md section
//! 2, docs/session.md). Only the boundary: every call forwards to
//! [`crate::session`].
//!
//! Two Rust borrows become C handles here. A [`Request`] borrows its
//! [`Worker`]: the worker lives in an `Arc` that its `mt_worker` and its
//! open `mt_request` share, and the worker refuses `mt_worker_next` while
//! a request it took is open (one request at a time, as in Rust). A
//! [`Response`] borrows its [`Ticket`]: the ticket handle owns the ticket
//! through a raw pointer and keeps the response beside it until freed.

use super::domain::{mt_domain, timeout_of};
use super::handle::{bytes_arg, check_out, str_arg, write_out, BoxHandle};
use super::panic::{guard, guard_void};
use super::status::mt_status;
use crate::error::{err, Error, ErrorKind, Result};
use crate::session::{
    Request, Response, SessionId, Sessions, SessionsConfig, Ticket, Worker, WorkerRef, MAX_TENANT,
    MAX_USER_DATA,
};
// The worker's state word is process-local (not shared memory).
use crate::sync::{local::AtomicU32, Ordering};
use std::cell::UnsafeCell;
use std::ffi::c_char;
use std::ptr::NonNull;
use std::sync::Arc;

/// Longest tenant id of a session, in bytes (the tenant-id rule).
pub const MT_SESSION_TENANT_MAX: usize = 64;
/// Size of `mt_session_info.tenant`: the longest tenant id and its NUL.
pub const MT_SESSION_TENANT_CAP: usize = MT_SESSION_TENANT_MAX + 1;
/// Most bytes of user data a session holds.
pub const MT_SESSION_USER_MAX: usize = 64;
/// Longest session table name, in bytes (the tenant-id rule).
pub const MT_SESSION_TABLE_NAME_MAX: usize = 64;

const _: () = assert!(MT_SESSION_TENANT_MAX == MAX_TENANT);
const _: () = assert!(MT_SESSION_USER_MAX == MAX_USER_DATA);

// ---------------------------------------------------------------------------
// Handles

/// An open session set: a session table and the request area of the same
/// name (`<domain>/sessions/<name>.table` and `.requests`).
///
/// Thread safety: one `mt_session_table` may be used from several threads
/// at once. Lifetime: until `mt_session_table_free`. It may outlive the
/// domain handle it was opened with, and the workers and tickets made from
/// it may outlive it (they keep the set open): the process lets go of the
/// set when the last of them is freed.
pub struct mt_session_table {
    _private: [u8; 0],
}

impl BoxHandle for mt_session_table {
    type Inner = Sessions;
    const NAME: &'static str = "mt_session_table";
}

/// A registered worker of one group.
///
/// Thread safety: one thread at a time, with the requests it takes (a
/// worker serves one request at a time; register one worker per thread to
/// serve in several). A call of `mt_worker_next` while another is running,
/// or while a request it took is still open, is refused with
/// `MT_ERR_INVALID`. `mt_worker_id` and `mt_worker_group` may be called
/// from any thread.
///
/// Lifetime: until `mt_worker_free` and `mt_request_free` of its open
/// request, if any: then it is unregistered (requests queued to it go to
/// another worker of its group, or fail when there is none, and its
/// sessions are unbound). A worker whose process dies is reaped the same
/// way by the first process that notices.
pub struct mt_worker {
    _private: [u8; 0],
}

/// The worker behind an `mt_worker`, shared with its open request.
pub(crate) struct WorkerCell {
    worker: UnsafeCell<Worker>,
    /// [`IDLE`], [`IN_NEXT`] or [`OPEN`].
    state: AtomicU32,
    id: u64,
    group: u32,
}

// SAFETY: the state word serialises every use of the worker across
// threads: `&mut Worker` is only made by the thread whose compare-exchange
// moved the state from IDLE to IN_NEXT, shared borrows only live in the
// request taken then (state OPEN, refused by next), and `id` and `group`
// are immutable copies. `Worker` itself is `Send`.
unsafe impl Sync for WorkerCell {}

/// No call on the worker is running and it has no open request.
const IDLE: u32 = 0;
/// `mt_worker_next` (or `_try_next`) is running.
const IN_NEXT: u32 = 1;
/// A request it took is open (neither answered nor freed).
const OPEN: u32 = 2;

impl BoxHandle for mt_worker {
    type Inner = Arc<WorkerCell>;
    const NAME: &'static str = "mt_worker";
}

/// A request taken by a worker: its bytes in place in the shared slot.
///
/// Thread safety: one thread at a time (with its worker). Lifetime: until
/// `mt_request_free`. Answer it with `mt_request_respond` before freeing
/// it: a request freed unanswered fails, and its submitter gets
/// `MT_ERR_UNAVAILABLE` (it is not served again). Its worker lives on at
/// least until the request is freed, even if `mt_worker_free` was called.
pub struct mt_request {
    _private: [u8; 0],
}

/// The request behind an `mt_request`.
pub(crate) struct RequestCell {
    /// `None` once answered. Declared first: dropped before `worker`,
    /// which it borrows.
    req: Option<Request<'static>>,
    session: u64,
    worker: Arc<WorkerCell>,
}

impl Drop for RequestCell {
    fn drop(&mut self) {
        // Unanswered: fails for its submitter (Request's drop).
        drop(self.req.take());
        self.worker.state.store(IDLE, Ordering::Release);
    }
}

impl BoxHandle for mt_request {
    type Inner = RequestCell;
    const NAME: &'static str = "mt_request";
}

/// A submitted request, on the submitter's side: wait for its response.
///
/// Thread safety: one thread at a time. Lifetime: until `mt_ticket_free`.
/// Its response, once `mt_ticket_wait` or `mt_ticket_poll` returned
/// `MT_OK`, stays in its slot, readable with `mt_ticket_response`, until
/// then. Freeing a ticket whose response was not there yet withdraws the
/// request (one a worker is serving is dropped when it has answered).
pub struct mt_ticket {
    _private: [u8; 0],
}

/// The ticket behind an `mt_ticket`.
pub(crate) struct TicketCell {
    /// The response, once there. Dropped before the ticket it borrows.
    resp: Option<Response<'static>>,
    /// The error of a spent ticket (`Unavailable`), reported again.
    failed: Option<Error>,
    /// Owned (from `Box::into_raw`); freed in `drop`.
    ticket: NonNull<Ticket>,
}

impl Drop for TicketCell {
    fn drop(&mut self) {
        // Frees the slot (the response is collected) before the ticket.
        drop(self.resp.take());
        // SAFETY: `ticket` came from Box::into_raw and nothing borrows it
        // any more (the response is gone).
        drop(unsafe { Box::from_raw(self.ticket.as_ptr()) });
    }
}

impl BoxHandle for mt_ticket {
    type Inner = TicketCell;
    const NAME: &'static str = "mt_ticket";
}

/// Capacities of a new session set (`mt_session_table_create`). Start from
/// `MT_SESSION_TABLE_OPTS_INIT`; fields may be added at the end in later
/// versions (`size` tells which the caller knows). A field left 0 takes
/// its default.
#[repr(C)]
pub struct mt_session_table_opts {
    /// `sizeof(mt_session_table_opts)` as the caller compiled it.
    pub size: u32,
    /// Sessions the table holds, 1 to 16,777,215; 0: 4096.
    pub capacity: u32,
    /// Worker groups, 2 to 64; 0: 2.
    pub groups: u32,
    /// Request slots (requests queued or being served at once, over all
    /// submitters), 1 to 65536; 0: 256.
    pub slots: u32,
    /// Largest request and largest response in bytes, 1 to 16 MiB;
    /// 0: 65536.
    pub max_message: u32,
    /// Workers registered at once, 1 to 4095; 0: 64.
    pub workers: u32,
}

/// One session, as `mt_session_lookup` reads it (a consistent snapshot).
#[repr(C)]
pub struct mt_session_info {
    /// Its id.
    pub id: u64,
    /// The worker it is bound to (as `mt_worker_id` says); 0: unbound.
    pub worker: u64,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
    /// Time of the last create or update, ns since the Unix epoch.
    pub updated_ns: u64,
    /// The high-level state (the application's; opaque to mtipc).
    pub state: u32,
    /// Requests of this session queued or being served.
    pub in_flight: u32,
    /// Bytes of `user` in use.
    pub user_len: u32,
    /// The tenant id, NUL-terminated.
    pub tenant: [c_char; MT_SESSION_TENANT_CAP],
    /// The user data (`user_len` bytes).
    pub user: [u8; MT_SESSION_USER_MAX],
}

// ---------------------------------------------------------------------------
// Argument helpers

fn config(opts: *const mt_session_table_opts) -> Result<SessionsConfig> {
    let mut c = SessionsConfig::default();
    // SAFETY: NULL or a valid struct per the contracts of the callers.
    let Some(o) = (unsafe { opts.as_ref() }) else {
        return Ok(c);
    };
    if (o.size as usize) < std::mem::size_of::<mt_session_table_opts>() {
        return Err(err!(
            Invalid,
            "mt_session_table_opts.size is {} (this library needs {}; start from MT_SESSION_TABLE_OPTS_INIT)",
            o.size,
            std::mem::size_of::<mt_session_table_opts>()
        ));
    }
    let pick = |v: u32, default: u32| if v == 0 { default } else { v };
    c.capacity = pick(o.capacity, c.capacity);
    c.groups = pick(o.groups, c.groups);
    c.slots = pick(o.slots, c.slots);
    c.max_message = pick(o.max_message, c.max_message);
    c.workers = pick(o.workers, c.workers);
    Ok(c)
}

/// The common body of the three ways to get a table handle.
///
/// # Safety
/// `d` is a live handle; `name` NUL-terminated; `opts` NULL or valid;
/// `out` valid for a write.
unsafe fn table_call(
    d: *const mt_domain,
    name: *const c_char,
    opts: *const mt_session_table_opts,
    out: *mut *mut mt_session_table,
    how: fn(&crate::Domain, &str, SessionsConfig) -> Result<Sessions>,
) -> Result<()> {
    check_out(out, "out")?;
    // SAFETY: live handle per the contract.
    let dom = unsafe { mt_domain::try_ref(d) }?;
    // SAFETY: NUL-terminated per the contract.
    let name = unsafe { str_arg(name, "name", MT_SESSION_TABLE_NAME_MAX) }?;
    let s = how(dom, name, config(opts)?)?;
    // SAFETY: `out` was checked above.
    unsafe { write_out(out, mt_session_table::into_raw(s)) };
    Ok(())
}

// ---------------------------------------------------------------------------
// The table

/// Creates the session set `name` in the domain (a session table and its
/// request area) with the capacities of `opts` (NULL: every default) and
/// opens it. `name` follows the tenant-id rule (1 to 64 bytes of
/// `A-Za-z0-9_.-`, not starting with `.` or `-`).
///
/// Errors: `MT_ERR_EXISTS` if it exists already; `MT_ERR_INVALID` for a bad
/// name, a capacity out of range (the message gives the range) or a bad
/// `opts.size`.
///
/// # Safety
/// `d` is a live handle; `name` NUL-terminated; `opts` NULL or valid;
/// `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_create(
    d: *const mt_domain,
    name: *const c_char,
    opts: *const mt_session_table_opts,
    out: *mut *mut mt_session_table,
) -> mt_status {
    guard("mt_session_table_create", || {
        // SAFETY: forwarded contract.
        unsafe { table_call(d, name, opts, out, Sessions::create) }
    })
}

/// Opens the existing session set `name` (made by this or another
/// process). Errors: `MT_ERR_NOT_FOUND` if it does not exist;
/// `MT_ERR_CORRUPT`, `MT_ERR_VERSION` or `MT_ERR_DENIED` for files that are
/// not a valid set of ours; `MT_ERR_INVALID` for a bad name.
///
/// # Safety
/// `d` is a live handle; `name` NUL-terminated; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_open(
    d: *const mt_domain,
    name: *const c_char,
    out: *mut *mut mt_session_table,
) -> mt_status {
    guard("mt_session_table_open", || {
        // SAFETY: forwarded contract.
        unsafe {
            table_call(d, name, std::ptr::null(), out, |d, n, _| {
                Sessions::open(d, n)
            })
        }
    })
}

/// Opens the session set `name`, creating it (or whichever of its two
/// files is missing) with the capacities of `opts` (NULL: defaults). An
/// existing set keeps the capacities it was made with.
///
/// # Safety
/// As `mt_session_table_create`.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_open_or_create(
    d: *const mt_domain,
    name: *const c_char,
    opts: *const mt_session_table_opts,
    out: *mut *mut mt_session_table,
) -> mt_status {
    guard("mt_session_table_open_or_create", || {
        // SAFETY: forwarded contract.
        unsafe { table_call(d, name, opts, out, Sessions::open_or_create) }
    })
}

/// Frees the handle. Workers and tickets made from it stay usable. NULL
/// is fine.
///
/// # Safety
/// `t` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_free(t: *mut mt_session_table) {
    // SAFETY: per the contract.
    guard_void("mt_session_table_free", || unsafe {
        mt_session_table::free(t)
    })
}

/// The number of sessions the table holds (0 for NULL).
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_capacity(t: *const mt_session_table) -> u32 {
    // SAFETY: per the contract.
    unsafe { mt_session_table::try_ref(t) }.map_or(0, |s| s.table().capacity())
}

/// The number of worker groups, numbered from 0 (0 for NULL).
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_groups(t: *const mt_session_table) -> u32 {
    // SAFETY: per the contract.
    unsafe { mt_session_table::try_ref(t) }.map_or(0, |s| s.geometry().groups)
}

/// The largest request and the largest response in bytes (0 for NULL).
///
/// # Safety
/// `t` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_max_message(t: *const mt_session_table) -> u32 {
    // SAFETY: per the contract.
    unsafe { mt_session_table::try_ref(t) }.map_or(0, |s| s.max_message())
}

/// Sets how many times `mt_ticket_wait` and `mt_worker_next` look again
/// before they sleep on their futex (0, the default: sleep at once; the
/// spin-then-block mode saves the wake-up latency at the price of CPU
/// time). Applies to this handle and to the workers and tickets made from
/// it, in this process only.
///
/// # Safety
/// `t` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_session_table_set_spin(
    t: *const mt_session_table,
    iterations: u32,
) -> mt_status {
    guard("mt_session_table_set_spin", || {
        // SAFETY: per the contract.
        unsafe { mt_session_table::try_ref(t) }?.set_spin(iterations);
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Sessions

/// Creates a session of `tenant` (the tenant-id rule) with high-level
/// state `state` and `user_len` bytes of user data (at most
/// `MT_SESSION_USER_MAX`; `user` may be NULL when `user_len` is 0), and
/// stores its id in `*id`. Ids are generation-tagged: once the session is
/// ended its id never resolves again, even when its slot is reused.
///
/// Errors: `MT_ERR_FULL` when every slot holds a session; `MT_ERR_INVALID`
/// for a bad tenant id or too much user data (the message gives the limit).
///
/// # Safety
/// `t` is a live handle; `tenant` NUL-terminated; `user` NULL or valid for
/// `user_len` bytes; `id` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_session_create(
    t: *const mt_session_table,
    tenant: *const c_char,
    state: u32,
    user: *const u8,
    user_len: usize,
    id: *mut u64,
) -> mt_status {
    guard("mt_session_create", || {
        check_out(id, "id")?;
        // SAFETY: per the contract.
        let s = unsafe { mt_session_table::try_ref(t) }?;
        // SAFETY: NUL-terminated per the contract.
        let tenant = unsafe { str_arg(tenant, "tenant", MT_SESSION_TENANT_MAX) }?;
        // SAFETY: per the contract.
        let user = unsafe { bytes_arg(user, user_len, "user") }?;
        let new = s.table().create_session(tenant, state, user)?;
        // SAFETY: checked above.
        unsafe { write_out(id, new.0) };
        Ok(())
    })
}

/// Reads session `id` into `*out`, without any lock (a consistent
/// snapshot). `MT_ERR_NOT_FOUND` for an ended, stale or malformed id.
///
/// # Safety
/// `t` is a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_session_lookup(
    t: *const mt_session_table,
    id: u64,
    out: *mut mt_session_info,
) -> mt_status {
    guard("mt_session_lookup", || {
        check_out(out, "out")?;
        // SAFETY: per the contract.
        let s = unsafe { mt_session_table::try_ref(t) }?;
        let got = s.table().lookup(SessionId(id))?;
        let mut info = mt_session_info {
            id: got.id.0,
            worker: got.worker.map_or(0, |w| w.0),
            created_ns: got.created_ns,
            updated_ns: got.updated_ns,
            state: got.state,
            in_flight: got.in_flight,
            user_len: 0,
            tenant: [0; MT_SESSION_TENANT_CAP],
            user: [0; MT_SESSION_USER_MAX],
        };
        // The table bounds both (a longer one is reported Corrupt).
        let tenant = got.tenant.as_bytes();
        let n = tenant.len().min(MT_SESSION_TENANT_MAX);
        for (d, &b) in info.tenant.iter_mut().zip(&tenant[..n]) {
            *d = b as c_char;
        }
        let n = got.user.len().min(MT_SESSION_USER_MAX);
        info.user[..n].copy_from_slice(&got.user[..n]);
        info.user_len = n as u32;
        // SAFETY: checked above.
        unsafe { write_out(out, info) };
        Ok(())
    })
}

/// Sets session `id`'s high-level state and, unless `user` is NULL, its
/// user data (`user_len` bytes, at most `MT_SESSION_USER_MAX`; a non-NULL
/// `user` with `user_len` 0 empties it). With `user` NULL, `user_len` must
/// be 0 and the user data is kept. Readers see the old values or the new
/// ones, never a mix.
///
/// Errors: `MT_ERR_NOT_FOUND` for an ended or stale id; `MT_ERR_INVALID`
/// for too much user data; `MT_ERR_TIMEOUT` if the session's entry stayed
/// locked by a live process for 5 s.
///
/// # Safety
/// `t` is a live handle; `user` NULL or valid for `user_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mt_session_update(
    t: *const mt_session_table,
    id: u64,
    state: u32,
    user: *const u8,
    user_len: usize,
) -> mt_status {
    guard("mt_session_update", || {
        // SAFETY: per the contract.
        let s = unsafe { mt_session_table::try_ref(t) }?;
        let user = if user.is_null() {
            if user_len != 0 {
                return Err(err!(
                    Invalid,
                    "user is NULL (keep the user data) but user_len is {user_len}"
                ));
            }
            None
        } else {
            // SAFETY: valid for `user_len` bytes per the contract.
            Some(unsafe { bytes_arg(user, user_len, "user") }?)
        };
        s.table().update(SessionId(id), state, user)
    })
}

/// Binds session `id` to `worker` (an id from `mt_worker_id`, not 0): its
/// requests then go to that worker while it lives and serves their group.
/// The dispatcher binds a session by itself when a worker takes a request
/// of an unbound session; this call is for moving it. Errors as
/// `mt_session_update`.
///
/// # Safety
/// `t` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_session_bind(
    t: *const mt_session_table,
    id: u64,
    worker: u64,
) -> mt_status {
    guard("mt_session_bind", || {
        // SAFETY: per the contract.
        let s = unsafe { mt_session_table::try_ref(t) }?;
        // The core refuses it too; here the message names the C call.
        if worker == 0 {
            return Err(err!(
                Invalid,
                "worker id 0 is no worker (mt_session_unbind removes a binding)"
            ));
        }
        s.bind(SessionId(id), WorkerRef(worker))
    })
}

/// Removes session `id`'s binding, if any: its next request goes to any
/// free worker of the group. Errors as `mt_session_update`.
///
/// # Safety
/// `t` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_session_unbind(t: *const mt_session_table, id: u64) -> mt_status {
    guard("mt_session_unbind", || {
        // SAFETY: per the contract.
        unsafe { mt_session_table::try_ref(t) }?
            .table()
            .unbind(SessionId(id))
    })
}

/// Ends session `id`: its slot is free for a new session and `id` never
/// resolves again. Errors as `mt_session_update`.
///
/// # Safety
/// `t` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_session_end(t: *const mt_session_table, id: u64) -> mt_status {
    guard("mt_session_end", || {
        // SAFETY: per the contract.
        unsafe { mt_session_table::try_ref(t) }?
            .table()
            .end(SessionId(id))
    })
}

// ---------------------------------------------------------------------------
// Workers

/// Registers a worker of group `group` (0 to `mt_session_table_groups` - 1)
/// in this process. Its liveness is the process's: if the process dies,
/// the first process that notices hands its requests to another worker of
/// the group.
///
/// Errors: `MT_ERR_INVALID` for a group that does not exist;
/// `MT_ERR_FULL` when every worker record is held by a live worker.
///
/// # Safety
/// `t` is a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_worker_register(
    t: *const mt_session_table,
    group: u32,
    out: *mut *mut mt_worker,
) -> mt_status {
    guard("mt_worker_register", || {
        check_out(out, "out")?;
        // SAFETY: per the contract.
        let s = unsafe { mt_session_table::try_ref(t) }?;
        let w = s.register_worker(group)?;
        let cell = WorkerCell {
            id: w.id().0,
            group: w.group(),
            worker: UnsafeCell::new(w),
            state: AtomicU32::new(IDLE),
        };
        // SAFETY: checked above.
        unsafe { write_out(out, mt_worker::into_raw(Arc::new(cell))) };
        Ok(())
    })
}

/// The worker's id, as `mt_session_info.worker` and `mt_session_bind` use
/// it (never 0; 0 for NULL).
///
/// # Safety
/// `w` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_worker_id(w: *const mt_worker) -> u64 {
    // SAFETY: per the contract.
    unsafe { mt_worker::try_ref(w) }.map_or(0, |c| c.id)
}

/// The worker's group (0 for NULL).
///
/// # Safety
/// `w` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_worker_group(w: *const mt_worker) -> u32 {
    // SAFETY: per the contract.
    unsafe { mt_worker::try_ref(w) }.map_or(0, |c| c.group)
}

/// The body of `mt_worker_next` and `mt_worker_try_next`: `timeout` `None`
/// means do not wait at all (`Deferred`).
///
/// # Safety
/// `w` is a live handle; `out` valid for a write.
unsafe fn next(
    w: *const mt_worker,
    timeout: Option<Option<std::time::Duration>>,
    out: *mut *mut mt_request,
) -> Result<()> {
    check_out(out, "out")?;
    // SAFETY: per the contract.
    let cell = unsafe { mt_worker::try_ref(w) }?;
    match cell
        .state
        .compare_exchange(IDLE, IN_NEXT, Ordering::Acquire, Ordering::Relaxed)
    {
        Ok(_) => {}
        Err(OPEN) => {
            return Err(err!(
                Invalid,
                "this worker's previous request is still open: answer it (mt_request_respond) or free it first"
            ))
        }
        Err(_) => {
            return Err(err!(
                Invalid,
                "another thread is taking a request with this worker (one thread at a time)"
            ))
        }
    }
    // SAFETY: the state word makes this the only access to the worker:
    // no other next runs and no request borrows it.
    let worker: &'static mut Worker = unsafe { &mut *cell.worker.get() };
    let taken = match timeout {
        None => worker.try_next(),
        Some(t) => worker.next(t),
    };
    let Some(req) = taken else {
        cell.state.store(IDLE, Ordering::Release);
        return Err(match timeout {
            None => err!(Deferred, "no request is queued for this worker"),
            Some(_) => err!(Timeout, "no request came for this worker in time"),
        });
    };
    cell.state.store(OPEN, Ordering::Release);
    let rc = RequestCell {
        session: req.session().0,
        req: Some(req),
        worker: Arc::clone(cell),
    };
    // SAFETY: checked above.
    unsafe { write_out(out, mt_request::into_raw(rc)) };
    Ok(())
}

/// Takes the next request for this worker (one of its bound sessions, or
/// one for any worker of its group, whose session it then binds), waiting
/// at most `timeout_ms` (`MT_WAIT_FOREVER`: no limit) for one, and stores
/// it in `*out`. While it waits, the worker checks its group's other
/// workers and reaps the dead ones. `MT_ERR_TIMEOUT` if none came.
/// `MT_ERR_INVALID` while a request it took is still open.
///
/// # Safety
/// `w` is a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_worker_next(
    w: *const mt_worker,
    timeout_ms: u32,
    out: *mut *mut mt_request,
) -> mt_status {
    // SAFETY: forwarded contract.
    guard("mt_worker_next", || unsafe {
        next(w, Some(timeout_of(timeout_ms)), out)
    })
}

/// As `mt_worker_next` without waiting: `MT_ERR_DEFERRED` if no request is
/// queued for this worker.
///
/// # Safety
/// `w` is a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_worker_try_next(
    w: *const mt_worker,
    out: *mut *mut mt_request,
) -> mt_status {
    // SAFETY: forwarded contract.
    guard("mt_worker_try_next", || unsafe { next(w, None, out) })
}

/// Frees the handle. The worker is unregistered once its open request, if
/// any, is freed too. NULL is fine.
///
/// # Safety
/// `w` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_worker_free(w: *mut mt_worker) {
    // SAFETY: per the contract.
    guard_void("mt_worker_free", || unsafe { mt_worker::free(w) })
}

// ---------------------------------------------------------------------------
// Requests (the worker's side)

/// The session the request belongs to (0 for NULL).
///
/// # Safety
/// `r` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_request_session(r: *const mt_request) -> u64 {
    // SAFETY: per the contract.
    unsafe { mt_request::try_ref(r) }.map_or(0, |c| c.session)
}

/// Stores the address and length of the request's bytes, in place in the
/// shared slot (no copy), in `*buf` and `*len`. They stay valid until the
/// request is answered or freed. `MT_ERR_INVALID` once it was answered.
///
/// # Safety
/// `r` is a live handle; `buf` and `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_request_data(
    r: *const mt_request,
    buf: *mut *const u8,
    len: *mut usize,
) -> mt_status {
    guard("mt_request_data", || {
        check_out(buf, "buf")?;
        check_out(len, "len")?;
        // SAFETY: per the contract.
        let c = unsafe { mt_request::try_ref(r) }?;
        let req = c
            .req
            .as_ref()
            .ok_or_else(|| err!(Invalid, "the request was answered already"))?;
        let bytes = req.bytes();
        // SAFETY: checked above.
        unsafe {
            write_out(buf, bytes.as_ptr());
            write_out(len, bytes.len());
        }
        Ok(())
    })
}

/// Answers the request with `len` bytes at `buf` (NULL when `len` is 0),
/// written into the request's slot; the submitter wakes. The request's
/// bytes are no longer readable afterwards, and the worker may take its
/// next request; the handle must still be freed.
///
/// Errors: `MT_ERR_INVALID` for a response over
/// `mt_session_table_max_message` (the message gives the limit; the
/// request stays open: answer again with a shorter one), or if it was
/// answered already; `MT_ERR_TIMEOUT` if its session's entry stayed locked
/// by a live process for 5 s; `MT_ERR_CORRUPT` if the slot was taken from
/// this worker (it was found dead).
///
/// # Safety
/// `r` is a live handle; `buf` NULL or valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mt_request_respond(
    r: *mut mt_request,
    buf: *const u8,
    len: usize,
) -> mt_status {
    guard("mt_request_respond", || {
        // SAFETY: per the contract.
        let c = unsafe { mt_request::try_mut(r) }?;
        // SAFETY: per the contract.
        let resp = unsafe { bytes_arg(buf, len, "buf") }?;
        let req = c
            .req
            .as_ref()
            .ok_or_else(|| err!(Invalid, "the request was answered already"))?;
        req.respond(resp)?;
        // Answered: dropping it gives nothing back; the worker is free.
        c.req = None;
        c.worker.state.store(IDLE, Ordering::Release);
        Ok(())
    })
}

/// Frees the request. One not answered fails: its submitter gets
/// `MT_ERR_UNAVAILABLE` (the request is not served again). NULL is fine.
///
/// # Safety
/// `r` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_request_free(r: *mut mt_request) {
    // SAFETY: per the contract.
    guard_void("mt_request_free", || unsafe { mt_request::free(r) })
}

// ---------------------------------------------------------------------------
// Submitting and waiting

/// Submits a request of `len` bytes at `buf` (NULL when `len` is 0) for
/// session `session` to worker group `group`, and stores its ticket in
/// `*out`. The request goes to the worker the session is bound to if it
/// serves `group`, else to any worker of the group; the dispatching runs
/// in this call (no daemon in the path).
///
/// Errors: `MT_ERR_INVALID` for a request over
/// `mt_session_table_max_message` (the message gives the limit) or a group
/// that does not exist; `MT_ERR_NOT_FOUND` for an ended or stale session;
/// `MT_ERR_FULL` when every request slot is in use by live submitters. A
/// group without a live worker is reported by `mt_ticket_wait`.
///
/// # Safety
/// `t` is a live handle; `buf` NULL or valid for `len` bytes; `out` valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_request_submit(
    t: *const mt_session_table,
    session: u64,
    group: u32,
    buf: *const u8,
    len: usize,
    out: *mut *mut mt_ticket,
) -> mt_status {
    guard("mt_request_submit", || {
        check_out(out, "out")?;
        // SAFETY: per the contract.
        let s = unsafe { mt_session_table::try_ref(t) }?;
        // SAFETY: per the contract.
        let req = unsafe { bytes_arg(buf, len, "buf") }?;
        let ticket = s.submit(SessionId(session), group, req)?;
        let cell = TicketCell {
            resp: None,
            failed: None,
            ticket: NonNull::from(Box::leak(Box::new(ticket))),
        };
        // SAFETY: checked above.
        unsafe { write_out(out, mt_ticket::into_raw(cell)) };
        Ok(())
    })
}

/// The body of `mt_ticket_wait` and `mt_ticket_poll`: `timeout` `None`
/// means do not wait (`Deferred`).
///
/// # Safety
/// `tk` is a live handle used by no other thread.
unsafe fn settle(tk: *mut mt_ticket, timeout: Option<Option<std::time::Duration>>) -> Result<()> {
    // SAFETY: per the contract.
    let c = unsafe { mt_ticket::try_mut(tk) }?;
    if c.resp.is_some() {
        return Ok(());
    }
    if let Some(e) = &c.failed {
        return Err(e.clone());
    }
    // SAFETY: the ticket is owned by the cell and nothing borrows it (no
    // response is held); the response made from this borrow is stored in
    // the cell, which drops it before the ticket.
    let ticket: &'static mut Ticket = unsafe { &mut *c.ticket.as_ptr() };
    let got = match timeout {
        Some(t) => ticket.wait(t).map(Some),
        None => ticket.poll(),
    };
    match got {
        Ok(Some(r)) => {
            c.resp = Some(r);
            Ok(())
        }
        Ok(None) => Err(err!(Deferred, "the response is not there yet")),
        Err(e) => {
            if e.kind() == ErrorKind::Unavailable {
                c.failed = Some(e.clone());
            }
            Err(e)
        }
    }
}

/// Waits at most `timeout_ms` (`MT_WAIT_FOREVER`: no limit) for the
/// response; `MT_OK` when it is there (read it with `mt_ticket_response`;
/// a later call returns `MT_OK` again at once). While it waits, it checks
/// every 100 ms that the worker serving the request lives (a dead one is
/// reaped and the request served by another worker of the group).
///
/// Errors: `MT_ERR_TIMEOUT` (the ticket stays valid: wait again, or free
/// it); `MT_ERR_UNAVAILABLE` when no live worker of the group could take
/// the request, or the worker freed it unanswered (final: every later call
/// says it again); `MT_ERR_CORRUPT` if the request area was damaged.
///
/// # Safety
/// `tk` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_ticket_wait(tk: *mut mt_ticket, timeout_ms: u32) -> mt_status {
    // SAFETY: forwarded contract.
    guard("mt_ticket_wait", || unsafe {
        settle(tk, Some(timeout_of(timeout_ms)))
    })
}

/// As `mt_ticket_wait` without waiting: `MT_ERR_DEFERRED` if the response
/// is not there yet. Polling also makes the checks of the request's worker
/// when they are due.
///
/// # Safety
/// `tk` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn mt_ticket_poll(tk: *mut mt_ticket) -> mt_status {
    // SAFETY: forwarded contract.
    guard("mt_ticket_poll", || unsafe { settle(tk, None) })
}

/// Stores the address and length of the response, in place in the shared
/// slot (no copy), in `*buf` and `*len`; valid until `mt_ticket_free`.
/// `MT_ERR_INVALID` before `mt_ticket_wait` or `mt_ticket_poll` returned
/// `MT_OK`.
///
/// # Safety
/// `tk` is a live handle; `buf` and `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_ticket_response(
    tk: *const mt_ticket,
    buf: *mut *const u8,
    len: *mut usize,
) -> mt_status {
    guard("mt_ticket_response", || {
        check_out(buf, "buf")?;
        check_out(len, "len")?;
        // SAFETY: per the contract.
        let c = unsafe { mt_ticket::try_ref(tk) }?;
        let r = c.resp.as_ref().ok_or_else(|| {
            err!(
                Invalid,
                "no response yet: mt_ticket_wait or mt_ticket_poll must return MT_OK first"
            )
        })?;
        // SAFETY: checked above.
        unsafe {
            write_out(buf, r.as_ptr());
            write_out(len, r.len());
        }
        Ok(())
    })
}

/// Frees the ticket and its response's slot. A request not yet answered
/// is withdrawn (if a worker is serving it, its answer is dropped). NULL
/// is fine.
///
/// # Safety
/// `tk` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_ticket_free(tk: *mut mt_ticket) {
    // SAFETY: per the contract.
    guard_void("mt_ticket_free", || unsafe { mt_ticket::free(tk) })
}
