//! `mt_advertise`, `mt_attach`, `mt_conn_*`, `mt_tenant_list_*`: discovery
//! and secure attach (DESIGN.md section 1).

use super::domain::{mt_domain, timeout_of};
use super::handle::{
    bytes_arg, bytes_mut_arg, check_out, copy_str_out, str_arg, write_out, BoxHandle,
};
use super::panic::{guard, guard_void};
use super::status::mt_status;
use crate::attach::{self, AttachOptions, Conn, TenantInfo};
use crate::error::err;
use std::ffi::{c_char, c_void, CString};
use std::time::{Duration, UNIX_EPOCH};

/// An attached connection: whole messages, both ways, over TLS 1.3.
///
/// Thread safety: one thread may send while another receives; two threads
/// sending (or receiving) at once are serialised. Lifetime: until
/// `mt_conn_free`, which closes it; the peer then gets `MT_ERR_CLOSED`.
pub struct mt_conn {
    _private: [u8; 0],
}

impl BoxHandle for mt_conn {
    type Inner = Conn;
    const NAME: &'static str = "mt_conn";
}

/// A live advertisement of a tenant, with its waiter thread.
///
/// Thread safety: only `mt_advert_free` is called on it, from any thread.
/// Lifetime: until `mt_advert_free`, which withdraws it; the domain handle
/// it was made from may be freed before it.
pub struct mt_advert {
    _private: [u8; 0],
}

impl BoxHandle for mt_advert {
    type Inner = attach::Advertisement;
    const NAME: &'static str = "mt_advert";
}

/// Called with each attached connection, on a thread of its own per
/// connection. The handler owns `conn` and must `mt_conn_free` it. `user` is
/// the pointer given to `mt_advertise`: it must be safe to use from several
/// threads, and stay valid until `mt_advert_free` has returned AND every
/// handler call already begun has returned (no call begins after
/// `mt_advert_free` returns).
pub type mt_attach_handler = Option<unsafe extern "C" fn(user: *mut c_void, conn: *mut mt_conn)>;

/// Options of `mt_attach`. Start from `MT_ATTACH_OPTS_INIT`; fields may be
/// added at the end in later versions (`size` tells which the caller knows).
#[repr(C)]
pub struct mt_attach_opts {
    /// `sizeof(mt_attach_opts)` as the caller compiled it.
    pub size: u32,
    /// Limit for the round, from the call until the tenant has answered;
    /// 0: 5000 ms.
    pub timeout_ms: u32,
    /// When the connection opens (Unix time in ms): the daemon passes no
    /// byte before, and `mt_attach` returns only then. 0 (or a time past):
    /// at once. More than 24 hours ahead: `MT_ERR_INVALID`.
    pub start_unix_ms: u64,
    /// How long it stays open from the start; 0: until an end closes. More
    /// than 30 days (2592000000 ms): `MT_ERR_INVALID`.
    pub duration_ms: u64,
    /// The protocol to ask for; NULL: the tenant's first.
    pub protocol: *const c_char,
}

/// One advertised tenant, as `mt_tenant_list_get` reports it. The strings
/// live as long as the list.
#[repr(C)]
pub struct mt_tenant_info {
    /// Tenant id (`@mtipcd` for the daemon).
    pub id: *const c_char,
    /// "tenant" or "daemon".
    pub role: *const c_char,
    /// Comma-separated protocols.
    pub protocols: *const c_char,
    /// Its key: hex of its raw X25519 public key, which attachers pin ("" for the daemon).
    pub fingerprint: *const c_char,
    /// The advertising process.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// When it advertised (Unix ms).
    pub since_unix_ms: u64,
}

/// A snapshot of the live advertisements of a domain.
///
/// Thread safety: read-only, any thread. Lifetime: until
/// `mt_tenant_list_free`.
pub struct mt_tenant_list {
    _private: [u8; 0],
}

pub(crate) struct TenantList {
    strings: Vec<[CString; 4]>,
    infos: Vec<TenantInfo>,
}

impl BoxHandle for mt_tenant_list {
    type Inner = TenantList;
    const NAME: &'static str = "mt_tenant_list";
}

/// The C handler and its user pointer, moved to the connection threads.
struct CHandler {
    f: unsafe extern "C" fn(*mut c_void, *mut mt_conn),
    user: *mut c_void,
}

// SAFETY: the contract of `mt_attach_handler` makes the caller guarantee
// that `user` may be used from other threads until `mt_advert_free`
// returns, which joins the waiter (no new connection starts after it).
unsafe impl Send for CHandler {}
// SAFETY: as above.
unsafe impl Sync for CHandler {}

impl CHandler {
    fn call(&self, conn: Conn) {
        let c = mt_conn::into_raw(conn);
        // SAFETY: the caller gave a valid function; `c` is a live handle the
        // handler now owns.
        unsafe { (self.f)(self.user, c) }
    }
}

/// The longest protocol list `mt_advertise_protocols` takes, in bytes.
const MAX_PROTOCOLS: usize = 16 * 33;

/// Advertises `tenant` in the domain, accepting the protocol "msg", and
/// starts its waiter: `handler(user, conn)` runs for each attacher.
/// `MT_ERR_EXISTS` if a live process already advertises that id;
/// `MT_ERR_INVALID` for a bad id (1 to 64 bytes of `A-Za-z0-9_.-`, not
/// starting with `.` or `-`) or a NULL handler. The waiter thread runs as
/// `SCHED_BATCH` when it starts under `SCHED_OTHER`; each handler call runs
/// on a thread of its own with the policy the waiter started with (the
/// calling thread's, as any thread it starts gets it).
///
/// # Safety
/// `d` is a live handle; `tenant` a NUL-terminated string; `out` valid for
/// a write; `handler` and `user` as `mt_attach_handler` says.
#[no_mangle]
pub unsafe extern "C" fn mt_advertise(
    d: *mut mt_domain,
    tenant: *const c_char,
    handler: mt_attach_handler,
    user: *mut c_void,
    out: *mut *mut mt_advert,
) -> mt_status {
    guard("mt_advertise", || {
        // SAFETY: forwarded contract.
        unsafe { advertise(d, tenant, &[attach::DEFAULT_PROTOCOL], handler, user, out) }
    })
}

/// As `mt_advertise`, accepting the comma-separated `protocols` (1 to 16
/// names of 1 to 32 bytes of `a-z0-9_.-`), the first being the default.
///
/// # Safety
/// As `mt_advertise`; `protocols` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mt_advertise_protocols(
    d: *mut mt_domain,
    tenant: *const c_char,
    protocols: *const c_char,
    handler: mt_attach_handler,
    user: *mut c_void,
    out: *mut *mut mt_advert,
) -> mt_status {
    guard("mt_advertise_protocols", || {
        // SAFETY: NUL-terminated per the contract.
        let list = unsafe { str_arg(protocols, "protocols", MAX_PROTOCOLS) }?;
        let list: Vec<&str> = list.split(',').collect();
        // SAFETY: forwarded contract.
        unsafe { advertise(d, tenant, &list, handler, user, out) }
    })
}

/// The body of both `mt_advertise` calls (inside their guard).
///
/// # Safety
/// As `mt_advertise`.
unsafe fn advertise(
    d: *mut mt_domain,
    tenant: *const c_char,
    protocols: &[&str],
    handler: mt_attach_handler,
    user: *mut c_void,
    out: *mut *mut mt_advert,
) -> crate::Result<()> {
    check_out(out, "out")?;
    // SAFETY: live handle per the contract.
    let dom = unsafe { mt_domain::try_ref(d) }?;
    // SAFETY: NUL-terminated per the contract.
    let tenant = unsafe { str_arg(tenant, "tenant", 64) }?;
    let f = handler.ok_or_else(|| err!(Invalid, "handler is NULL"))?;
    let h = CHandler { f, user };
    let a = attach::advertise(
        dom,
        tenant,
        protocols,
        std::sync::Arc::new(move |c| h.call(c)),
    )?;
    // SAFETY: `out` was checked above.
    unsafe { write_out(out, mt_advert::into_raw(a)) };
    Ok(())
}

/// Withdraws the advertisement: stops its waiter (at most about 100 ms, or
/// the end of a round in progress), removes its files. Once it returns, no
/// new handler call begins (a connection still in its handshake is closed
/// instead); handler calls already begun, and their connections, go on.
/// NULL is fine.
///
/// # Safety
/// `a` is NULL or a handle from `mt_advertise` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mt_advert_free(a: *mut mt_advert) {
    // SAFETY: per the contract.
    guard_void("mt_advert_free", || unsafe { mt_advert::free(a) })
}

fn options(opts: *const mt_attach_opts) -> crate::Result<AttachOptions> {
    let mut o = AttachOptions::default();
    // SAFETY: NULL or a valid struct per the contract of mt_attach.
    let Some(opts) = (unsafe { opts.as_ref() }) else {
        return Ok(o);
    };
    if (opts.size as usize) < std::mem::size_of::<mt_attach_opts>() {
        return Err(err!(
            Invalid,
            "mt_attach_opts.size is {} (this library needs {}; start from MT_ATTACH_OPTS_INIT)",
            opts.size,
            std::mem::size_of::<mt_attach_opts>()
        ));
    }
    if opts.timeout_ms != 0 {
        o.timeout = Duration::from_millis(opts.timeout_ms.into());
    }
    if opts.start_unix_ms != 0 {
        o.start = Some(
            UNIX_EPOCH
                .checked_add(Duration::from_millis(opts.start_unix_ms))
                .ok_or_else(|| {
                    err!(
                        Invalid,
                        "mt_attach_opts.start_unix_ms {} is out of range",
                        opts.start_unix_ms
                    )
                })?,
        );
    }
    if opts.duration_ms != 0 {
        o.duration = Some(Duration::from_millis(opts.duration_ms));
    }
    if !opts.protocol.is_null() {
        // SAFETY: NUL-terminated per the contract.
        o.protocol = Some(unsafe { str_arg(opts.protocol, "protocol", 32) }?.to_string());
    }
    Ok(o)
}

/// Attaches to `tenant`: runs one attach round through the domain's mtipcd
/// and returns a TLS 1.3 connection to the tenant in `*out`. `opts` NULL:
/// timeout 5000 ms, start at once, no duration limit, the tenant's first
/// protocol.
///
/// Errors: `MT_ERR_NOT_FOUND` no live tenant of that id (or it does not
/// accept the protocol); `MT_ERR_UNAVAILABLE` no mtipcd running on the
/// domain; `MT_ERR_TIMEOUT` the tenant did not answer in time (the round is
/// cleaned up); `MT_ERR_DENIED` the tenant's key does not match its
/// advertisement, or the daemon refused a credential.
///
/// # Safety
/// `d` is a live handle; `tenant` NUL-terminated; `opts` NULL or valid;
/// `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_attach(
    d: *mut mt_domain,
    tenant: *const c_char,
    opts: *const mt_attach_opts,
    out: *mut *mut mt_conn,
) -> mt_status {
    guard("mt_attach", || {
        check_out(out, "out")?;
        // SAFETY: live handle per the contract.
        let dom = unsafe { mt_domain::try_ref(d) }?;
        // SAFETY: NUL-terminated per the contract.
        let tenant = unsafe { str_arg(tenant, "tenant", 64) }?;
        let o = options(opts)?;
        let c = attach::attach(dom, tenant, &o)?;
        // SAFETY: `out` was checked above.
        unsafe { write_out(out, mt_conn::into_raw(c)) };
        Ok(())
    })
}

/// Sends one whole message of `len` bytes (at most 1 MiB; `len` 0 is a
/// valid empty message). `MT_ERR_CLOSED` if the other end is gone.
///
/// # Safety
/// `c` is a live handle; `buf` is valid for `len` bytes (may be NULL if
/// `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn mt_conn_send(c: *mut mt_conn, buf: *const u8, len: usize) -> mt_status {
    guard("mt_conn_send", || {
        // SAFETY: live handle per the contract.
        let conn = unsafe { mt_conn::try_ref(c) }?;
        // SAFETY: valid for `len` bytes per the contract.
        let msg = unsafe { bytes_arg(buf, len, "buf") }?;
        conn.send(msg)
    })
}

/// Receives one whole message into `buf` of `cap` bytes and stores its
/// length in `*len`, waiting at most `timeout_ms` (`MT_WAIT_FOREVER`: no
/// limit). `MT_ERR_TIMEOUT`: nothing complete arrived in time (nothing is
/// lost). `MT_ERR_CLOSED`: the other end closed. `MT_ERR_INVALID` with the
/// message's length in `*len` if it does not fit: the message stays queued
/// for a call with a larger buffer.
///
/// # Safety
/// `c` is a live handle; `buf` valid for `cap` bytes (NULL if `cap` is 0);
/// `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_conn_recv(
    c: *mut mt_conn,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    timeout_ms: u32,
) -> mt_status {
    guard("mt_conn_recv", || {
        check_out(len, "len")?;
        // SAFETY: live handle per the contract.
        let conn = unsafe { mt_conn::try_ref(c) }?;
        // SAFETY: valid for `cap` bytes per the contract.
        let dst = unsafe { bytes_mut_arg(buf, cap, "buf") }?;
        match conn.recv_into(dst, timeout_of(timeout_ms)) {
            Ok(n) => {
                // SAFETY: checked above.
                unsafe { write_out(len, n) };
                Ok(())
            }
            Err(e) => {
                if e.kind() == crate::ErrorKind::Invalid {
                    // Too small a buffer: the message is queued; say its size.
                    if let Ok(need) = conn.next_len(Some(Duration::ZERO)) {
                        // SAFETY: checked above.
                        unsafe { write_out(len, need) };
                    }
                }
                Err(e)
            }
        }
    })
}

/// Copies the connection's application protocol (the one the attacher
/// asked for, among those the tenant advertised), NUL-terminated, into
/// `buf` of `cap` bytes and stores its length (without the NUL) in `*len`.
/// If `cap` is too small, returns `MT_ERR_INVALID` and stores the length in
/// `*len`: a buffer of `*len + 1` bytes is enough (33 always is).
///
/// # Safety
/// `c` is a live handle; `buf` is valid for `cap` bytes; `len` is valid.
#[no_mangle]
pub unsafe extern "C" fn mt_conn_protocol(
    c: *const mt_conn,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mt_status {
    guard("mt_conn_protocol", || {
        check_out(len, "len")?;
        // SAFETY: live handle per the contract.
        let conn = unsafe { mt_conn::try_ref(c) }?;
        // SAFETY: `len` checked; `buf` valid for `cap` bytes per the contract.
        unsafe { copy_str_out(conn.protocol().as_bytes(), buf, cap, len, "protocol") }
    })
}

/// Closes the connection (the peer's receive gets `MT_ERR_CLOSED`) and
/// frees the handle. NULL is fine.
///
/// # Safety
/// `c` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_conn_free(c: *mut mt_conn) {
    // SAFETY: per the contract.
    guard_void("mt_conn_free", || unsafe { mt_conn::free(c) })
}

/// Lists the live advertisements of the domain (tenants and the daemon),
/// sorted by id; stale ones are cleaned up on the way.
///
/// # Safety
/// `d` is a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_tenant_list_new(
    d: *mut mt_domain,
    out: *mut *mut mt_tenant_list,
) -> mt_status {
    guard("mt_tenant_list_new", || {
        check_out(out, "out")?;
        // SAFETY: live handle per the contract.
        let dom = unsafe { mt_domain::try_ref(d) }?;
        let (infos, _) = attach::list(dom)?;
        let cs =
            |s: &str| CString::new(s).map_err(|_| err!(Corrupt, "NUL byte in an advertisement"));
        let strings = infos
            .iter()
            .map(|t| {
                Ok([
                    cs(&t.id)?,
                    cs(&t.role)?,
                    cs(&t.protocols.join(","))?,
                    cs(&t.fingerprint)?,
                ])
            })
            .collect::<crate::Result<Vec<_>>>()?;
        // SAFETY: `out` was checked above.
        unsafe { write_out(out, mt_tenant_list::into_raw(TenantList { strings, infos })) };
        Ok(())
    })
}

/// The number of entries in the list (0 for NULL).
///
/// # Safety
/// `l` is NULL or a live list.
#[no_mangle]
pub unsafe extern "C" fn mt_tenant_list_len(l: *const mt_tenant_list) -> usize {
    // SAFETY: per the contract.
    unsafe { mt_tenant_list::try_ref(l) }.map_or(0, |l| l.infos.len())
}

/// Stores entry `i` in `*out`. `MT_ERR_INVALID` if `i` is out of range.
///
/// # Safety
/// `l` is a live list; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_tenant_list_get(
    l: *const mt_tenant_list,
    i: usize,
    out: *mut mt_tenant_info,
) -> mt_status {
    guard("mt_tenant_list_get", || {
        check_out(out, "out")?;
        // SAFETY: per the contract.
        let l = unsafe { mt_tenant_list::try_ref(l) }?;
        let (t, s) = l.infos.get(i).zip(l.strings.get(i)).ok_or_else(|| {
            err!(
                Invalid,
                "index {i} out of range (the list has {})",
                l.infos.len()
            )
        })?;
        let info = mt_tenant_info {
            id: s[0].as_ptr(),
            role: s[1].as_ptr(),
            protocols: s[2].as_ptr(),
            fingerprint: s[3].as_ptr(),
            pid: t.pid,
            uid: t.uid,
            since_unix_ms: t.since_ms,
        };
        // SAFETY: checked above.
        unsafe { write_out(out, info) };
        Ok(())
    })
}

/// Frees the list and its strings. NULL is fine.
///
/// # Safety
/// `l` is NULL or a live list, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_tenant_list_free(l: *mut mt_tenant_list) {
    // SAFETY: per the contract.
    guard_void("mt_tenant_list_free", || unsafe { mt_tenant_list::free(l) })
}
