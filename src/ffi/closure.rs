//! `mt_closure_*` and `mt_value_*`: shared closures (DESIGN.md section 2,
//! docs/session.md "Shared closures"): publish an immutable value under a
//! name; other processes map it read-only and read it in place.

use super::domain::mt_domain;
use super::handle::{bytes_arg, check_out, str_arg, write_out, BoxHandle};
use super::panic::{guard, guard_void};
use super::status::mt_status;
use crate::closure::{self, Closure, Kind, TreeBuilder, Value, ValueRef, MAX_NAME};
use crate::error::{err, Result};
use std::ffi::c_char;
use std::sync::{Mutex, PoisonError};

/// One open version of a shared closure, mapped read-only (no copy).
///
/// Thread safety: read-only; any number of threads may use one
/// `mt_closure` (and the `mt_value`s from it) at once. Lifetime: from
/// `mt_closure_open` to `mt_closure_free`; every pointer and `mt_value`
/// obtained from it is valid until then, and the version stays on disk at
/// least as long. The domain handle may be freed before it.
pub struct mt_closure {
    _private: [u8; 0],
}

impl BoxHandle for mt_closure {
    type Inner = Closure;
    const NAME: &'static str = "mt_closure";
}

/// A value under construction for `mt_closure_publish`: scalars,
/// `begin_list`/`begin_map` ... `end`, and in a map a `key` before each
/// value.
///
/// Thread safety: calls on one builder are serialised (use it from one
/// thread at a time to keep the order meaningful). Lifetime: from
/// `mt_closure_builder_new` to `mt_closure_builder_free`.
pub struct mt_closure_builder {
    _private: [u8; 0],
}

impl BoxHandle for mt_closure_builder {
    type Inner = Mutex<TreeBuilder>;
    const NAME: &'static str = "mt_closure_builder";
}

/// The kind of an `mt_value`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mt_value_kind {
    /// A byte string (`mt_value_bytes`).
    MT_VALUE_BYTES = 1,
    /// A UTF-8 string (`mt_value_str`).
    MT_VALUE_STR = 2,
    /// A signed 64-bit integer (`mt_value_int`).
    MT_VALUE_INT = 3,
    /// A 64-bit float (`mt_value_float`).
    MT_VALUE_FLOAT = 4,
    /// A list (`mt_value_len`, `mt_value_list_get`).
    MT_VALUE_LIST = 5,
    /// A map with string keys, sorted (`mt_value_len`, `mt_value_map_get`,
    /// `mt_value_map_at`).
    MT_VALUE_MAP = 6,
}

impl From<Kind> for mt_value_kind {
    fn from(k: Kind) -> mt_value_kind {
        match k {
            Kind::Bytes => mt_value_kind::MT_VALUE_BYTES,
            Kind::Str => mt_value_kind::MT_VALUE_STR,
            Kind::Int => mt_value_kind::MT_VALUE_INT,
            Kind::Float => mt_value_kind::MT_VALUE_FLOAT,
            Kind::List => mt_value_kind::MT_VALUE_LIST,
            Kind::Map => mt_value_kind::MT_VALUE_MAP,
        }
    }
}

/// A value inside an open closure: a position in its mapping, not a copy.
/// Only the library makes them (`mt_closure_root`, `mt_value_list_get`,
/// ...); pass them by value. Valid as long as its closure is open.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mt_value {
    /// The closure the value belongs to.
    pub closure: *const mt_closure,
    /// Where the value is in the closure (private to the library).
    pub node: u64,
    /// The value's kind.
    pub kind: mt_value_kind,
}

fn value_of(c: *const mt_closure, v: ValueRef<'_>) -> mt_value {
    mt_value {
        closure: c,
        node: v.offset() as u64,
        kind: v.kind().into(),
    }
}

/// The `ValueRef` behind `v`; `Invalid` for a NULL closure or a position
/// where none of its values starts (a hand-made or damaged `mt_value`).
///
/// # Safety
/// `v.closure` is NULL or a live handle.
unsafe fn value_ref<'a>(v: &mt_value) -> Result<ValueRef<'a>> {
    // SAFETY: per the contract.
    let c = unsafe { mt_closure::try_ref(v.closure) }?;
    // A version file truncated under the mapping reads as zeros: Corrupt.
    c.check()?;
    usize::try_from(v.node)
        .ok()
        .and_then(|node| c.value_at(node))
        .ok_or_else(|| {
            err!(
                Invalid,
                "mt_value does not come from this closure (no value at position {})",
                v.node
            )
        })
}

fn wrong_kind(v: &ValueRef<'_>, want: &str) -> crate::Error {
    err!(Invalid, "the value is a {}, not {want}", v.kind().name())
}

/// A UTF-8 string argument given as pointer and length (no NUL needed).
///
/// # Safety
/// As [`bytes_arg`].
unsafe fn utf8_arg<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<&'a str> {
    // SAFETY: per the contract.
    let b = unsafe { bytes_arg(ptr.cast(), len, what) }?;
    std::str::from_utf8(b).map_err(|e| err!(Invalid, "{what} is not valid UTF-8: {e}"))
}

/// Writes an optional version out-parameter.
///
/// # Safety
/// `version` is NULL or valid for a write.
unsafe fn put_version(version: *mut u64, v: u64) {
    if !version.is_null() {
        // SAFETY: per the contract.
        unsafe { write_out(version, v) }
    }
}

/// Publishes `len` bytes at `buf` as the new current version of closure
/// `name` (its value is that byte string) and stores the version number in
/// `*version` (if not NULL): 1 for the first, then increasing; concurrent
/// publishers get distinct versions. Superseded versions no reader holds
/// are removed.
///
/// `MT_ERR_INVALID` for a bad name (the tenant-id rule: 1 to 64 bytes of
/// `[A-Za-z0-9_.-]`, not starting with `.` or `-`) or a closure larger than
/// 1 GiB (the message gives the limit); `MT_ERR_DENIED`/`MT_ERR_CORRUPT`
/// for a closure directory or head that is not safe or not valid.
///
/// # Safety
/// `d` is a live handle; `name` a NUL-terminated string; `buf` valid for
/// `len` bytes (NULL if `len` is 0); `version` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_publish_bytes(
    d: *const mt_domain,
    name: *const c_char,
    buf: *const u8,
    len: usize,
    version: *mut u64,
) -> mt_status {
    guard("mt_closure_publish_bytes", || {
        // SAFETY: per the contract.
        let d = unsafe { mt_domain::try_ref(d) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "closure name", MAX_NAME) }?;
        // SAFETY: per the contract.
        let bytes = unsafe { bytes_arg(buf, len, "buf") }?;
        let v = closure::publish_bytes(d, name, bytes)?;
        // SAFETY: per the contract.
        unsafe { put_version(version, v) };
        Ok(())
    })
}

/// Makes an empty builder for `mt_closure_publish`.
///
/// # Safety
/// `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_new(out: *mut *mut mt_closure_builder) -> mt_status {
    guard("mt_closure_builder_new", || {
        check_out(out, "out")?;
        let b = mt_closure_builder::into_raw(Mutex::new(TreeBuilder::new()));
        // SAFETY: checked.
        unsafe { write_out(out, b) };
        Ok(())
    })
}

/// Frees a builder (and the value in it). NULL is fine.
///
/// # Safety
/// `b` is NULL or a live builder, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_free(b: *mut mt_closure_builder) {
    // SAFETY: per the contract.
    guard_void("mt_closure_builder_free", || unsafe {
        mt_closure_builder::free(b)
    })
}

/// Runs `f` on the builder behind `b`.
///
/// # Safety
/// `b` is NULL or a live builder.
unsafe fn with_builder(
    b: *const mt_closure_builder,
    f: impl FnOnce(&mut TreeBuilder) -> Result<()>,
) -> Result<()> {
    // SAFETY: per the contract.
    let m = unsafe { mt_closure_builder::try_ref(b) }?;
    f(&mut m.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Adds an integer (an item of the open list, the value of the key just
/// given in the open map, or the whole value). `MT_ERR_INVALID` when a map
/// expects a key, or the value is complete already.
///
/// # Safety
/// `b` is a live builder.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_add_int(
    b: *mut mt_closure_builder,
    v: i64,
) -> mt_status {
    // SAFETY: per the contract.
    guard("mt_closure_builder_add_int", || unsafe {
        with_builder(b, |t| t.value(Value::Int(v)))
    })
}

/// Adds a float (see `mt_closure_builder_add_int`).
///
/// # Safety
/// `b` is a live builder.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_add_float(
    b: *mut mt_closure_builder,
    v: f64,
) -> mt_status {
    // SAFETY: per the contract.
    guard("mt_closure_builder_add_float", || unsafe {
        with_builder(b, |t| t.value(Value::Float(v)))
    })
}

/// Adds a UTF-8 string of `len` bytes (copied; no NUL needed; it may
/// contain NULs). `MT_ERR_INVALID` for bad UTF-8 (see also
/// `mt_closure_builder_add_int`).
///
/// # Safety
/// `b` is a live builder; `s` valid for `len` bytes (NULL if `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_add_str(
    b: *mut mt_closure_builder,
    s: *const c_char,
    len: usize,
) -> mt_status {
    guard("mt_closure_builder_add_str", || {
        // SAFETY: per the contract.
        let s = unsafe { utf8_arg(s, len, "string") }?;
        // SAFETY: per the contract.
        unsafe { with_builder(b, |t| t.value(Value::Str(s.to_owned()))) }
    })
}

/// Adds a byte string of `len` bytes (copied). See
/// `mt_closure_builder_add_int`.
///
/// # Safety
/// `b` is a live builder; `p` valid for `len` bytes (NULL if `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_add_bytes(
    b: *mut mt_closure_builder,
    p: *const u8,
    len: usize,
) -> mt_status {
    guard("mt_closure_builder_add_bytes", || {
        // SAFETY: per the contract.
        let p = unsafe { bytes_arg(p, len, "bytes") }?;
        // SAFETY: per the contract.
        unsafe { with_builder(b, |t| t.value(Value::Bytes(p.to_vec()))) }
    })
}

/// Opens a list: the values added next are its items, until
/// `mt_closure_builder_end`. `MT_ERR_INVALID` past 64 levels of nesting.
///
/// # Safety
/// `b` is a live builder.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_begin_list(b: *mut mt_closure_builder) -> mt_status {
    // SAFETY: per the contract.
    guard("mt_closure_builder_begin_list", || unsafe {
        with_builder(b, |t| t.begin_list())
    })
}

/// Opens a map: then `mt_closure_builder_key` and a value, for each entry,
/// and `mt_closure_builder_end`. Keys may come in any order; they are
/// stored sorted.
///
/// # Safety
/// `b` is a live builder.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_begin_map(b: *mut mt_closure_builder) -> mt_status {
    // SAFETY: per the contract.
    guard("mt_closure_builder_begin_map", || unsafe {
        with_builder(b, |t| t.begin_map())
    })
}

/// Gives the key (UTF-8, `len` bytes, copied) of the next value of the open
/// map. `MT_ERR_INVALID` outside a map, for a key given twice in one map,
/// or two keys in a row.
///
/// # Safety
/// `b` is a live builder; `k` valid for `len` bytes (NULL if `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_key(
    b: *mut mt_closure_builder,
    k: *const c_char,
    len: usize,
) -> mt_status {
    guard("mt_closure_builder_key", || {
        // SAFETY: per the contract.
        let k = unsafe { utf8_arg(k, len, "key") }?;
        // SAFETY: per the contract.
        unsafe { with_builder(b, |t| t.key(k)) }
    })
}

/// Closes the innermost open list or map. `MT_ERR_INVALID` if none is
/// open, or a map's last key has no value.
///
/// # Safety
/// `b` is a live builder.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_builder_end(b: *mut mt_closure_builder) -> mt_status {
    // SAFETY: per the contract.
    guard("mt_closure_builder_end", || unsafe {
        with_builder(b, |t| t.end())
    })
}

/// Publishes the builder's value as the new current version of closure
/// `name` (see `mt_closure_publish_bytes` for versions and errors). On
/// success the builder is empty again, ready for the next value; on
/// failure it keeps its value. `MT_ERR_INVALID` if the value is not
/// complete (nothing added, or a list or map still open).
///
/// # Safety
/// `d` is a live handle; `name` a NUL-terminated string; `b` a live
/// builder; `version` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_publish(
    d: *const mt_domain,
    name: *const c_char,
    b: *mut mt_closure_builder,
    version: *mut u64,
) -> mt_status {
    guard("mt_closure_publish", || {
        // SAFETY: per the contract.
        let d = unsafe { mt_domain::try_ref(d) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "closure name", MAX_NAME) }?;
        // SAFETY: per the contract.
        unsafe {
            with_builder(b, |t| {
                let value = t.finish()?;
                match closure::publish(d, name, &value) {
                    Ok(v) => {
                        put_version(version, v);
                        Ok(())
                    }
                    Err(e) => {
                        t.value(value)?;
                        Err(e)
                    }
                }
            })
        }
    })
}

/// Opens the current version of closure `name`: maps it read-only,
/// validates it, and holds it (a newer version may be published meanwhile:
/// this one stays readable, unchanged, until `mt_closure_free`).
///
/// `MT_ERR_NOT_FOUND` if it was never published; `MT_ERR_CORRUPT` for a
/// malformed version file; `MT_ERR_DENIED` for a symbolic link, a file of
/// another uid or a writable one; `MT_ERR_INVALID` for a bad name. If this
/// returns an error code, `*out` is unchanged.
///
/// # Safety
/// `d` is a live handle; `name` a NUL-terminated string; `out` valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_open(
    d: *const mt_domain,
    name: *const c_char,
    out: *mut *mut mt_closure,
) -> mt_status {
    guard("mt_closure_open", || {
        // SAFETY: per the contract.
        let d = unsafe { mt_domain::try_ref(d) }?;
        // SAFETY: per the contract.
        let name = unsafe { str_arg(name, "closure name", MAX_NAME) }?;
        check_out(out, "out")?;
        let c = Closure::open(d, name)?;
        // SAFETY: checked.
        unsafe { write_out(out, mt_closure::into_raw(c)) };
        Ok(())
    })
}

/// Lets go of a version: unmaps it and releases its lock; if it was
/// superseded and this was its last reader, its file is removed. NULL is
/// fine. Every pointer and `mt_value` from it becomes invalid.
///
/// # Safety
/// `c` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_free(c: *mut mt_closure) {
    // SAFETY: per the contract.
    guard_void("mt_closure_free", || unsafe { mt_closure::free(c) })
}

/// Stores the version number of an open closure in `*version`.
///
/// # Safety
/// `c` is a live handle; `version` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_version(c: *const mt_closure, version: *mut u64) -> mt_status {
    guard("mt_closure_version", || {
        // SAFETY: per the contract.
        let c = unsafe { mt_closure::try_ref(c) }?;
        check_out(version, "version")?;
        // SAFETY: checked.
        unsafe { write_out(version, c.version()) };
        Ok(())
    })
}

/// The bytes of a bytes closure (published with `mt_closure_publish_bytes`),
/// in place: `*ptr` points into the read-only mapping, valid until
/// `mt_closure_free`; no copy is made. `MT_ERR_INVALID` if the closure's
/// value is not a byte string.
///
/// # Safety
/// `c` is a live handle; `ptr` and `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_bytes(
    c: *const mt_closure,
    ptr: *mut *const u8,
    len: *mut usize,
) -> mt_status {
    guard("mt_closure_bytes", || {
        // SAFETY: per the contract.
        let c = unsafe { mt_closure::try_ref(c) }?;
        check_out(ptr, "ptr")?;
        check_out(len, "len")?;
        let root = c.root();
        let b = root.as_bytes().ok_or_else(|| wrong_kind(&root, "bytes"))?;
        c.check()?;
        // SAFETY: checked.
        unsafe {
            write_out(ptr, b.as_ptr());
            write_out(len, b.len());
        }
        Ok(())
    })
}

/// The closure's value (its root).
///
/// # Safety
/// `c` is a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_closure_root(c: *const mt_closure, out: *mut mt_value) -> mt_status {
    guard("mt_closure_root", || {
        // SAFETY: per the contract.
        let cl = unsafe { mt_closure::try_ref(c) }?;
        check_out(out, "out")?;
        cl.check()?;
        // SAFETY: checked.
        unsafe { write_out(out, value_of(c, cl.root())) };
        Ok(())
    })
}

/// The integer `v` holds. `MT_ERR_INVALID` if it is another kind.
///
/// # Safety
/// `v` comes from the library and its closure is open; `out` valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn mt_value_int(v: mt_value, out: *mut i64) -> mt_status {
    guard("mt_value_int", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        check_out(out, "out")?;
        let i = r.as_int().ok_or_else(|| wrong_kind(&r, "an int"))?;
        // SAFETY: checked.
        unsafe { write_out(out, i) };
        Ok(())
    })
}

/// The float `v` holds. `MT_ERR_INVALID` if it is another kind.
///
/// # Safety
/// As `mt_value_int`.
#[no_mangle]
pub unsafe extern "C" fn mt_value_float(v: mt_value, out: *mut f64) -> mt_status {
    guard("mt_value_float", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        check_out(out, "out")?;
        let f = r.as_float().ok_or_else(|| wrong_kind(&r, "a float"))?;
        // SAFETY: checked.
        unsafe { write_out(out, f) };
        Ok(())
    })
}

/// The string `v` holds, in place: `*ptr` is UTF-8 followed by a NUL
/// (`*len` bytes before it; the string itself may contain NULs), valid
/// until `mt_closure_free`. `MT_ERR_INVALID` if it is another kind.
///
/// # Safety
/// As `mt_value_int`; `ptr` and `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_value_str(
    v: mt_value,
    ptr: *mut *const c_char,
    len: *mut usize,
) -> mt_status {
    guard("mt_value_str", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        check_out(ptr, "ptr")?;
        check_out(len, "len")?;
        let s = r.str_with_nul().ok_or_else(|| wrong_kind(&r, "a str"))?;
        // SAFETY: checked.
        unsafe {
            write_out(ptr, s.as_ptr().cast());
            write_out(len, s.len() - 1);
        }
        Ok(())
    })
}

/// The byte string `v` holds, in place (valid until `mt_closure_free`).
/// `MT_ERR_INVALID` if it is another kind.
///
/// # Safety
/// As `mt_value_int`; `ptr` and `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_value_bytes(
    v: mt_value,
    ptr: *mut *const u8,
    len: *mut usize,
) -> mt_status {
    guard("mt_value_bytes", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        check_out(ptr, "ptr")?;
        check_out(len, "len")?;
        let b = r.as_bytes().ok_or_else(|| wrong_kind(&r, "bytes"))?;
        // SAFETY: checked.
        unsafe {
            write_out(ptr, b.as_ptr());
            write_out(len, b.len());
        }
        Ok(())
    })
}

/// The number of items of a list, entries of a map, or bytes of a string
/// or byte string. `MT_ERR_INVALID` for a number.
///
/// # Safety
/// As `mt_value_int`; `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_value_len(v: mt_value, len: *mut usize) -> mt_status {
    guard("mt_value_len", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        check_out(len, "len")?;
        if matches!(r.kind(), Kind::Int | Kind::Float) {
            return Err(err!(Invalid, "a {} has no length", r.kind().name()));
        }
        // SAFETY: checked.
        unsafe { write_out(len, r.len()) };
        Ok(())
    })
}

/// Item `i` of a list. `MT_ERR_INVALID` if `v` is not a list or `i` is
/// out of range.
///
/// # Safety
/// As `mt_value_int`; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_value_list_get(v: mt_value, i: usize, out: *mut mt_value) -> mt_status {
    guard("mt_value_list_get", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        check_out(out, "out")?;
        if r.kind() != Kind::List {
            return Err(wrong_kind(&r, "a list"));
        }
        let item = r.list_get(i).ok_or_else(|| {
            err!(
                Invalid,
                "index {i} is out of range (a list of {} items)",
                r.len()
            )
        })?;
        // SAFETY: checked.
        unsafe { write_out(out, value_of(v.closure, item)) };
        Ok(())
    })
}

/// The value of `key` (`key_len` bytes, no NUL needed) in a map, found by
/// binary search. `MT_ERR_NOT_FOUND` if the map has no such key,
/// `MT_ERR_INVALID` if `v` is not a map.
///
/// # Safety
/// As `mt_value_int`; `key` valid for `key_len` bytes (NULL if 0); `out`
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_value_map_get(
    v: mt_value,
    key: *const c_char,
    key_len: usize,
    out: *mut mt_value,
) -> mt_status {
    guard("mt_value_map_get", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        // SAFETY: per the contract.
        let key = unsafe { bytes_arg(key.cast(), key_len, "key") }?;
        check_out(out, "out")?;
        if r.kind() != Kind::Map {
            return Err(wrong_kind(&r, "a map"));
        }
        let found = r.map_get(key).ok_or_else(|| {
            err!(
                NotFound,
                "no key {:?} in the map",
                String::from_utf8_lossy(key)
            )
        })?;
        // SAFETY: checked.
        unsafe { write_out(out, value_of(v.closure, found)) };
        Ok(())
    })
}

/// Entry `i` of a map, in key order: its key in place (UTF-8 followed by a
/// NUL, `*key_len` bytes before it) and its value. `key`, `key_len` and
/// `value` may each be NULL if not wanted. `MT_ERR_INVALID` if `v` is not
/// a map or `i` is out of range.
///
/// # Safety
/// As `mt_value_int`; each out-parameter NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mt_value_map_at(
    v: mt_value,
    i: usize,
    key: *mut *const c_char,
    key_len: *mut usize,
    value: *mut mt_value,
) -> mt_status {
    guard("mt_value_map_at", || {
        // SAFETY: per the contract.
        let r = unsafe { value_ref(&v) }?;
        if r.kind() != Kind::Map {
            return Err(wrong_kind(&r, "a map"));
        }
        let out_of_range = || {
            err!(
                Invalid,
                "index {i} is out of range (a map of {} entries)",
                r.len()
            )
        };
        let k = r
            .map_key(i)
            .and_then(|k| k.str_with_nul())
            .ok_or_else(out_of_range)?;
        let (_, val) = r.map_entry(i).ok_or_else(out_of_range)?;
        // SAFETY: each is NULL or valid for a write, per the contract.
        unsafe {
            if !key.is_null() {
                write_out(key, k.as_ptr().cast());
            }
            if !key_len.is_null() {
                write_out(key_len, k.len() - 1);
            }
            if !value.is_null() {
                write_out(value, value_of(v.closure, val));
            }
        }
        Ok(())
    })
}
