//! `mt_log_set`: the library's events for a C program (`crate::log`).

use super::panic::guard;
use super::status::mt_status;
use crate::error::{Error, ErrorKind};
use crate::log::{self, Level};
use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

/// How much an event matters. A logger installed with `mt_log_set`
/// receives the events up to its `max_level`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mt_log_level {
    /// Something failed that no call could report (a waiter thread
    /// stopped, the relay's loop failed, a panic inside the library).
    MT_LOG_ERROR = 1,
    /// Something unexpected that the library handled (a bad file skipped,
    /// a connection refused).
    MT_LOG_WARN = 2,
    /// What an operator wants to see (listening, a pairing made).
    MT_LOG_INFO = 3,
    /// Details of each step.
    MT_LOG_DEBUG = 4,
    /// Everything.
    MT_LOG_TRACE = 5,
}

impl From<Level> for mt_log_level {
    fn from(l: Level) -> mt_log_level {
        match l {
            Level::Error => mt_log_level::MT_LOG_ERROR,
            Level::Warn => mt_log_level::MT_LOG_WARN,
            Level::Info => mt_log_level::MT_LOG_INFO,
            Level::Debug => mt_log_level::MT_LOG_DEBUG,
            Level::Trace => mt_log_level::MT_LOG_TRACE,
        }
    }
}

/// A log callback: `user` as given to `mt_log_set`, the event's level, its
/// target (the library module that emitted it, such as
/// "mtipc::attach::relay") and its message (text, then ` name=value`
/// fields). Both strings are valid only during the call.
///
/// Called on the thread that emitted the event: an application thread
/// inside an mtipc call, or one of the library's threads (a tenant's
/// waiter, a connection's handshake, mtipcd's relay); possibly on several
/// threads at once. It should return quickly; it may call mtipc functions
/// (`mt_log_set` included).
pub type mt_log_fn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        level: mt_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// The C callback and its user pointer, called from any thread.
struct CLogger {
    f: unsafe extern "C" fn(*mut c_void, mt_log_level, *const c_char, *const c_char),
    user: *mut c_void,
}

// SAFETY: mt_log_set's contract makes the callback and its `user` usable
// from any thread (the documentation of mt_log_fn says so); the library
// only passes the pointer back.
unsafe impl Send for CLogger {}
// SAFETY: as above, concurrent calls are part of the contract.
unsafe impl Sync for CLogger {}

impl CLogger {
    fn call(&self, level: Level, target: &str, message: &str) {
        let c = |s: &str| CString::new(s.replace('\0', "\\0")).unwrap_or_default();
        let (t, m) = (c(target), c(message));
        // SAFETY: `f` is the function the application installed, called as
        // mt_log_fn documents; both strings live until it returns.
        unsafe { (self.f)(self.user, level.into(), t.as_ptr(), m.as_ptr()) }
    }
}

/// Installs `callback` as the library's log callback: from now on, every
/// event up to `max_level` (an `mt_log_level`, `MT_LOG_ERROR` to
/// `MT_LOG_TRACE`) is passed to `callback` with `user`. `callback` NULL
/// removes it (events are
/// then dropped, which is also the state before the first call). Replaces
/// any callback installed before, also one installed by another language's
/// binding in the same process: there is one logger per process.
///
/// The library never writes to stdout or stderr: its events go here, and a
/// panic inside it is reported here (`MT_LOG_ERROR`, "panic at FILE:LINE:
/// MESSAGE") as well as by the call's `MT_ERR_PANIC`. The application's own
/// panic and signal handling is not changed.
///
/// `max_level` is taken as an integer (a C enum arrives as one), so that a
/// value out of range is refused with `MT_ERR_INVALID` (nothing changes)
/// instead of being undefined behaviour. May be
/// called from any thread, at any time; an event being delivered while the
/// callback changes goes to the old callback.
#[no_mangle]
pub extern "C" fn mt_log_set(callback: mt_log_fn, user: *mut c_void, max_level: u32) -> mt_status {
    guard("mt_log_set", || {
        let level = Level::from_u32(max_level).ok_or_else(|| {
            Error::new(
                ErrorKind::Invalid,
                format!(
                    "mt_log_set: max_level {max_level} is not an mt_log_level (MT_LOG_ERROR = 1 to MT_LOG_TRACE = 5)"
                ),
            )
        })?;
        match callback {
            None => log::clear_logger(),
            Some(f) => {
                let logger = CLogger { f, user };
                log::set_logger(
                    Arc::new(move |l, t: &str, m: &str| logger.call(l, t, m)),
                    level,
                );
            }
        }
        Ok(())
    })
}
