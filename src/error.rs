//! The one error type of the library.
//!
//! Every fallible call in the core returns [`Result`]. An [`Error`] carries a
//! [`ErrorKind`] (which maps one to one onto the C ABI's `mt_status` codes and
//! onto the Python exception classes) and a message meant for a human: it
//! names the object (path, tenant, limit) and says what was wrong with it.

use std::fmt;
use std::io;

/// The kind of a failure. The numeric values are the C ABI's `mt_status`
/// codes: they are stable and a retired value is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorKind {
    /// Bad argument: NULL, bad UTF-8, empty or oversized name, value out of range.
    Invalid = 1,
    /// The named object does not exist.
    NotFound = 2,
    /// The object exists already.
    Exists = 3,
    /// Permission denied: wrong owner, unsafe permissions, another uid.
    Denied = 4,
    /// The object was made by another layout version of mtipc.
    Version = 5,
    /// A file or shared-memory region is corrupt, truncated or not ours.
    Corrupt = 6,
    /// A blocking call's timeout passed.
    Timeout = 7,
    /// A fixed-capacity table is full.
    Full = 8,
    /// The other end closed the connection.
    Closed = 9,
    /// The request must wait and the caller asked not to.
    Deferred = 10,
    /// An operating-system call failed (the message carries errno's text).
    Io = 11,
    /// A bug inside mtipc: a panic was caught at the C boundary.
    Panic = 12,
    /// A service the call needs (for example the daemon) is not running.
    Unavailable = 13,
    /// A permit (or, later, an HA epoch) that is no longer current: its
    /// lease ran out or it was reclaimed, and another may hold it now.
    Fenced = 14,
}

impl ErrorKind {
    /// Every kind, in code order.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::Exists,
        ErrorKind::Denied,
        ErrorKind::Version,
        ErrorKind::Corrupt,
        ErrorKind::Timeout,
        ErrorKind::Full,
        ErrorKind::Closed,
        ErrorKind::Deferred,
        ErrorKind::Io,
        ErrorKind::Panic,
        ErrorKind::Unavailable,
        ErrorKind::Fenced,
    ];

    /// The stable numeric code (the C `mt_status` value).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind whose code is `code`; `None` for 0 (`MT_OK`) and for a
    /// value that is no code.
    pub fn from_code(code: u32) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The symbolic name used in the C header (`MT_ERR_...`).
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or("MT_ERR_UNKNOWN")
    }

    /// [`name`](ErrorKind::name) as a C string: the one place the names
    /// are written. `mt_status_str`, the Python exception classes and the
    /// CLI's messages take them from here; tests check that the C header's
    /// `mt_status` enum and the README's table agree.
    pub fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            ErrorKind::Invalid => c"MT_ERR_INVALID",
            ErrorKind::NotFound => c"MT_ERR_NOT_FOUND",
            ErrorKind::Exists => c"MT_ERR_EXISTS",
            ErrorKind::Denied => c"MT_ERR_DENIED",
            ErrorKind::Version => c"MT_ERR_VERSION",
            ErrorKind::Corrupt => c"MT_ERR_CORRUPT",
            ErrorKind::Timeout => c"MT_ERR_TIMEOUT",
            ErrorKind::Full => c"MT_ERR_FULL",
            ErrorKind::Closed => c"MT_ERR_CLOSED",
            ErrorKind::Deferred => c"MT_ERR_DEFERRED",
            ErrorKind::Io => c"MT_ERR_IO",
            ErrorKind::Panic => c"MT_ERR_PANIC",
            ErrorKind::Unavailable => c"MT_ERR_UNAVAILABLE",
            ErrorKind::Fenced => c"MT_ERR_FENCED",
        }
    }
}

/// An error: a kind and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The kind (and so the C status code).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The detailed message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An I/O error about `what` (usually a path), mapped onto the closest kind:
    /// `ENOENT` → NotFound, `EACCES`/`EPERM` → Denied, `EEXIST` → Exists,
    /// `ELOOP` (a symbolic link met with `O_NOFOLLOW`) → Denied, else Io.
    pub fn io(what: impl fmt::Display, err: io::Error) -> Error {
        let kind = match err.raw_os_error() {
            Some(libc::ENOENT) => ErrorKind::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) => ErrorKind::Denied,
            Some(libc::EEXIST) => ErrorKind::Exists,
            Some(libc::ELOOP) => ErrorKind::Denied,
            _ => ErrorKind::Io,
        };
        let detail = if err.raw_os_error() == Some(libc::ELOOP) {
            "is a symbolic link, which mtipc never follows".to_string()
        } else {
            err.to_string()
        };
        Error::new(kind, format!("{what}: {detail}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.name())
    }
}

impl std::error::Error for Error {}

/// Shorthand constructors, one per kind, used across the crate.
macro_rules! err {
    ($kind:ident, $($fmt:tt)+) => {
        $crate::error::Error::new($crate::error::ErrorKind::$kind, format!($($fmt)+))
    };
}
pub(crate) use err;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_dense() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.code() as usize, i + 1, "{}", k.name());
        }
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let e = Error::io("/x", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().starts_with("/x: "));
        let e = Error::io("/y", io::Error::from_raw_os_error(libc::ELOOP));
        assert_eq!(e.kind(), ErrorKind::Denied);
        assert!(e.message().contains("symbolic link"));
    }
}
