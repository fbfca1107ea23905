//! The panic boundary: every export runs its body through [`guard`] (or
//! [`guard_void`]), so a panic becomes `MT_ERR_PANIC` instead of unwinding
//! into C, and an `Err` becomes its status with the message recorded for
//! `mt_last_error`.

use super::status::{fail, mt_status};
use crate::error::{Error, ErrorKind, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Runs `f` at the C boundary of the export `name`.
pub(crate) fn guard(name: &str, f: impl FnOnce() -> Result<()>) -> mt_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => mt_status::MT_OK,
        Ok(Err(e)) => fail(&e),
        Err(p) => fail(&Error::new(
            ErrorKind::Panic,
            format!("internal error in {name}: {}", panic_message(&*p)),
        )),
    }
}

/// Runs `f`, which cannot fail, at the C boundary; a panic is swallowed
/// (recorded for `mt_last_error`) because the function has no status.
pub(crate) fn guard_void(name: &str, f: impl FnOnce()) {
    let _ = guard(name, || {
        f();
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn panic_becomes_status_and_message() {
        let st = guard("mt_test", || panic!("boom"));
        assert_eq!(st, mt_status::MT_ERR_PANIC);
        // SAFETY: mt_last_error returns a valid C string.
        let msg = unsafe { CStr::from_ptr(super::super::mt_last_error()) };
        assert!(msg.to_str().unwrap().contains("mt_test: boom"));
    }

    #[test]
    fn error_becomes_its_status() {
        let st = guard("x", || Err(Error::new(ErrorKind::Timeout, "late")));
        assert_eq!(st, mt_status::MT_ERR_TIMEOUT);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(super::super::mt_last_error()) };
        assert_eq!(msg.to_str().unwrap(), "late");
    }
}
