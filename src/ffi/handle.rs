//! Opaque handles and argument checks.
//!
//! A C handle type is an empty struct (`pub struct mt_x { _private: [u8; 0] }`,
//! opaque in the header); [`BoxHandle`] names the Rust value a pointer to it
//! really points to, boxed. All NULL checks happen here, in release builds.

use crate::error::{err, Result};
use std::ffi::{c_char, CStr};

/// A C handle type backed by a `Box<Self::Inner>`.
pub(crate) trait BoxHandle: Sized {
    /// The Rust value behind the handle.
    type Inner;
    /// The C name, for messages.
    const NAME: &'static str;

    /// Moves `v` to the heap and returns the handle for C.
    fn into_raw(v: Self::Inner) -> *mut Self {
        Box::into_raw(Box::new(v)).cast()
    }

    /// Borrows the value behind `p`; `Invalid` if `p` is NULL.
    ///
    /// # Safety
    /// `p` is NULL or was returned by `into_raw` and not yet freed, and the
    /// borrow does not outlive the handle.
    unsafe fn try_ref<'a>(p: *const Self) -> Result<&'a Self::Inner> {
        // SAFETY: per the contract, a non-NULL `p` points to a live Inner.
        unsafe { p.cast::<Self::Inner>().as_ref() }
            .ok_or_else(|| err!(Invalid, "{} handle is NULL", Self::NAME))
    }

    /// Borrows the value behind `p` mutably; `Invalid` if `p` is NULL.
    ///
    /// # Safety
    /// As [`BoxHandle::try_ref`], and no other borrow of the value is live
    /// (the C caller uses the handle from one thread at a time).
    unsafe fn try_mut<'a>(p: *mut Self) -> Result<&'a mut Self::Inner> {
        // SAFETY: per the contract, a non-NULL `p` points to a live Inner
        // that nothing else borrows.
        unsafe { p.cast::<Self::Inner>().as_mut() }
            .ok_or_else(|| err!(Invalid, "{} handle is NULL", Self::NAME))
    }

    /// Frees the value behind `p`; NULL is fine.
    ///
    /// # Safety
    /// `p` is NULL or was returned by `into_raw` and is not used afterwards.
    unsafe fn free(p: *mut Self) {
        if !p.is_null() {
            // SAFETY: per the contract, `p` came from Box::into_raw.
            drop(unsafe { Box::from_raw(p.cast::<Self::Inner>()) });
        }
    }
}

/// Checks that an out-parameter is not NULL (before any work is done).
pub(crate) fn check_out<T>(out: *mut T, what: &str) -> Result<()> {
    if out.is_null() {
        Err(err!(Invalid, "out-parameter {what} is NULL"))
    } else {
        Ok(())
    }
}

/// Writes `v` to a checked out-parameter.
///
/// # Safety
/// `out` passed [`check_out`] and is valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, v: T) {
    // SAFETY: per the contract.
    unsafe { out.write(v) }
}

/// Borrows a C string argument as UTF-8 of at most `max` bytes.
/// `Invalid` for NULL, bad UTF-8, empty or oversized.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the borrow.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str, max: usize) -> Result<&'a str> {
    if p.is_null() {
        return Err(err!(Invalid, "{what} is NULL"));
    }
    // SAFETY: per the contract, `p` is NUL-terminated.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(err!(Invalid, "{what} is empty"));
    }
    if bytes.len() > max {
        return Err(err!(
            Invalid,
            "{what} is {} bytes long (at most {max})",
            bytes.len()
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| err!(Invalid, "{what} is not valid UTF-8: {e}"))
}

/// Copies `bytes` and a NUL into the caller's buffer `buf` of `cap` bytes
/// and stores `bytes.len()` in `*len`, also when the buffer is too small
/// (then `Invalid`, naming `what`): the size-query protocol of the calls
/// that return a string.
///
/// # Safety
/// `len` passed [`check_out`]; `buf` is NULL or valid for `cap` bytes.
/// Borrows `len` bytes at `ptr`, the C caller's byte range `what`: `ptr`
/// may be NULL only when `len` is 0, and `len` must be a size an object
/// can have (at most `isize::MAX`: `SIZE_MAX` is a caller's bug, refused
/// before any use).
///
/// # Safety
/// `ptr` is NULL or valid for reads of `len` bytes for the borrow.
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(err!(Invalid, "{what} is NULL but its length is {len}"));
    }
    if len > isize::MAX as usize {
        return Err(err!(
            Invalid,
            "the length of {what} ({len}) is not a possible size"
        ));
    }
    // SAFETY: valid for `len` bytes per the contract; `len` is a possible size.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Like [`bytes_arg`] for a buffer the library writes into.
///
/// # Safety
/// `ptr` is NULL or valid for writes of `len` bytes for the borrow.
pub(crate) unsafe fn bytes_mut_arg<'a>(
    ptr: *mut u8,
    len: usize,
    what: &str,
) -> Result<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(err!(Invalid, "{what} is NULL but its size is {len}"));
    }
    if len > isize::MAX as usize {
        return Err(err!(
            Invalid,
            "the size of {what} ({len}) is not a possible size"
        ));
    }
    // SAFETY: valid for `len` bytes per the contract; `len` is a possible size.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

pub(crate) unsafe fn copy_str_out(
    bytes: &[u8],
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
    what: &str,
) -> Result<()> {
    // SAFETY: `len` was checked, per the contract.
    unsafe { write_out(len, bytes.len()) };
    if buf.is_null() && cap != 0 {
        return Err(err!(Invalid, "buf is NULL but cap is {cap}"));
    }
    if buf.is_null() || cap < bytes.len() + 1 {
        return Err(err!(
            Invalid,
            "buffer of {cap} bytes is too small for the {what} ({} bytes with its NUL)",
            bytes.len() + 1
        ));
    }
    // SAFETY: `buf` holds `cap` >= bytes.len() + 1 bytes, per the contract.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
        *buf.add(bytes.len()) = 0;
    }
    Ok(())
}
