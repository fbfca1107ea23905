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

/// Runs `f` at the C boundary of the export `name`. A panic inside is not
/// printed (the C program's stderr is its own): it becomes an error event
/// for the log callback (`mt_log_set`) and `MT_ERR_PANIC` with its message.
pub(crate) fn guard(name: &str, f: impl FnOnce() -> Result<()>) -> mt_status {
    match catch_unwind(AssertUnwindSafe(|| crate::log::quiet_panics(f))) {
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
        let msg = unsafe { CStr::from_ptr(super::super::status::mt_last_error()) };
        assert!(msg.to_str().unwrap().contains("mt_test: boom"));
    }

    /// A panic at the boundary prints nothing (run in a child process, whose
    /// stderr is captured): it reaches the log callback as an error event,
    /// and the caller gets MT_ERR_PANIC. Then a panic outside the boundary
    /// still goes to the default hook, which prints it.
    #[test]
    fn a_panic_at_the_boundary_prints_nothing() {
        const ROLE: &str = "MTIPC_TEST_PANIC_CHILD";
        if std::env::var_os(ROLE).is_some() {
            use crate::log::{set_logger, Level};
            use std::sync::Arc;
            set_logger(
                Arc::new(|l, t: &str, m: &str| println!("@@ logged {l} {t} {m}")),
                Level::Error,
            );
            let st = guard("mt_test", || panic!("boom at the boundary"));
            println!("@@ status {}", st as u32);
            std::panic::set_hook(std::panic::take_hook()); // untouched for the rest
            let _ = std::thread::spawn(|| panic!("the application's own panic")).join();
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ffi::panic::tests::a_panic_at_the_boundary_prints_nothing",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env(ROLE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("@@ status 12"),
            "MT_ERR_PANIC expected: {stdout}"
        );
        assert!(
            stdout.contains("@@ logged error mtipc::panic panic at src/ffi/panic.rs:")
                && stdout.contains("boom at the boundary"),
            "{stdout}"
        );
        assert!(
            !stderr.contains("boom at the boundary"),
            "the library's panic was printed: {stderr}"
        );
        assert!(
            stderr.contains("the application's own panic"),
            "the application's panic should print as before: {stderr}"
        );
    }

    #[test]
    fn error_becomes_its_status() {
        let st = guard("x", || Err(Error::new(ErrorKind::Timeout, "late")));
        assert_eq!(st, mt_status::MT_ERR_TIMEOUT);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(super::super::status::mt_last_error()) };
        assert_eq!(msg.to_str().unwrap(), "late");
    }
}
