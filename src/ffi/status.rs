//! `mt_status`, `mt_status_str`, `mt_last_error` and `mt_version`.

use crate::error::{Error, ErrorKind};
use std::cell::RefCell;
use std::ffi::{c_char, CString};

/// Result of every fallible call. `MT_OK` is 0; the other values are stable
/// and a retired value is never reused. `mt_status_str` names a code and
/// `mt_last_error` gives the calling thread's last detailed message.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mt_status {
    /// Success.
    MT_OK = 0,
    /// Bad argument: NULL pointer, bad UTF-8, empty or oversized name, value out of range.
    MT_ERR_INVALID = 1,
    /// The named object does not exist.
    MT_ERR_NOT_FOUND = 2,
    /// The object exists already.
    MT_ERR_EXISTS = 3,
    /// Permission denied: wrong owner, unsafe permissions, symbolic link, another uid.
    MT_ERR_DENIED = 4,
    /// The object was made by another layout version of mtipc.
    MT_ERR_VERSION = 5,
    /// A file or shared-memory region is corrupt, truncated or not mtipc's.
    MT_ERR_CORRUPT = 6,
    /// A blocking call's timeout passed.
    MT_ERR_TIMEOUT = 7,
    /// A fixed-capacity table is full.
    MT_ERR_FULL = 8,
    /// The other end closed the connection.
    MT_ERR_CLOSED = 9,
    /// The request would have to wait and the caller asked not to.
    MT_ERR_DEFERRED = 10,
    /// An operating-system call failed; the message has the details.
    MT_ERR_IO = 11,
    /// A bug in mtipc: a panic was caught at the boundary.
    MT_ERR_PANIC = 12,
    /// A service the call needs (such as mtipcd) is not running.
    MT_ERR_UNAVAILABLE = 13,
    /// A permit that is no longer current (lease ran out, reclaimed).
    MT_ERR_FENCED = 14,
}

impl From<ErrorKind> for mt_status {
    fn from(k: ErrorKind) -> mt_status {
        match k {
            ErrorKind::Invalid => mt_status::MT_ERR_INVALID,
            ErrorKind::NotFound => mt_status::MT_ERR_NOT_FOUND,
            ErrorKind::Exists => mt_status::MT_ERR_EXISTS,
            ErrorKind::Denied => mt_status::MT_ERR_DENIED,
            ErrorKind::Version => mt_status::MT_ERR_VERSION,
            ErrorKind::Corrupt => mt_status::MT_ERR_CORRUPT,
            ErrorKind::Timeout => mt_status::MT_ERR_TIMEOUT,
            ErrorKind::Full => mt_status::MT_ERR_FULL,
            ErrorKind::Closed => mt_status::MT_ERR_CLOSED,
            ErrorKind::Deferred => mt_status::MT_ERR_DEFERRED,
            ErrorKind::Io => mt_status::MT_ERR_IO,
            ErrorKind::Panic => mt_status::MT_ERR_PANIC,
            ErrorKind::Unavailable => mt_status::MT_ERR_UNAVAILABLE,
            ErrorKind::Fenced => mt_status::MT_ERR_FENCED,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `e` as this thread's last error and returns its status.
pub(crate) fn fail(e: &Error) -> mt_status {
    let text = e.message().replace('\0', "\\0");
    let c = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
    e.kind().into()
}

/// The symbolic name of a status code ("MT_OK", "MT_ERR_TIMEOUT", ...), or
/// "MT_ERR_UNKNOWN" for a value that is not a code. The string is static.
/// Takes the code as an integer: any value a C caller passes is safe.
#[no_mangle]
pub extern "C" fn mt_status_str(code: u32) -> *const c_char {
    let s: &'static std::ffi::CStr = match code {
        0 => c"MT_OK",
        _ => ErrorKind::from_code(code).map_or(c"MT_ERR_UNKNOWN", ErrorKind::c_name),
    };
    s.as_ptr()
}

/// The detailed message of the most recent call on this thread that failed
/// (like `errno`, a later success does not clear it). Never NULL: "" if no
/// call has failed yet. Valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn mt_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// The library's version ("MAJOR.MINOR.PATCH"), a static string. Compare with
/// `MTIPC_VERSION_STRING` to check that the header matches the library.
#[no_mangle]
pub extern "C" fn mt_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_kind_has_a_name_matching_its_code() {
        for k in ErrorKind::ALL {
            let st: mt_status = k.into();
            assert_eq!(st as u32, k.code());
            // SAFETY: mt_status_str returns a static NUL-terminated string.
            let name = unsafe { CStr::from_ptr(mt_status_str(st as u32)) };
            assert_eq!(name.to_str().unwrap(), k.name());
        }
    }

    #[test]
    fn unknown_code_is_named_unknown() {
        // SAFETY: static string.
        let name = unsafe { CStr::from_ptr(mt_status_str(999)) };
        assert_eq!(name.to_str().unwrap(), "MT_ERR_UNKNOWN");
    }
}
