//! Failpoints: named places in the library where a test makes the process
//! die (it sends itself `SIGKILL`) at an exact moment, to reach the windows
//! that a `kill -9` from outside hits only by luck:
//!
//! - `sem-post-before-wake`: [`crate::sync::SemCore::post`] after its
//!   atomic add, before its futex wake (tests/multiprocess.rs,
//!   `poster_killed_between_add_and_wake`);
//! - `respond-before-done`: a worker's respond after the response is
//!   written into the slot, before the slot is marked done
//!   (tests/session_dispatch.rs,
//!   `worker_killed_after_writing_its_response`).
//!
//! A test arms them by name in the environment variable
//! `MTIPC_FAILPOINTS` (comma-separated) of the child process that should
//! die there.
//!
//! Compiled in only with the cargo feature `failpoints`, which only the
//! tests turn on (Cargo.toml: the crate's dev-dependency on itself, so
//! `cargo test` builds the library with it and `cargo build`, `make
//! install` and the Python wheel never do). Without the feature [`hit`]
//! is an empty inline function; with it, the variable is read once per
//! process and a hit where nothing is armed costs one atomic load. Under
//! loom it is always empty.

/// Dies here (`SIGKILL` to this process) if the failpoint `name` is armed.
#[cfg(all(feature = "failpoints", not(loom)))]
pub(crate) fn hit(name: &str) {
    static ARMED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("MTIPC_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    });
    if armed.iter().any(|a| a == name) {
        // SAFETY: raise has no preconditions; SIGKILL cannot be caught, so
        // it does not return.
        unsafe { libc::raise(libc::SIGKILL) };
        unreachable!("failpoint {name}: SIGKILL returned");
    }
}

/// Without the `failpoints` feature (or under loom): nothing.
#[cfg(not(all(feature = "failpoints", not(loom))))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}
