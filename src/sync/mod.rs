//! Synchronisation primitives for memory shared between processes.
//!
//! Everything that shared-memory logic uses (atomics, the futex word, cells
//! of plain data handed between parties) comes from this module. Normally
//! these are thin newtypes over the `std` types (`#[repr(transparent)]`,
//! `#[inline]`: the same layout and code) and real futex syscalls; built
//! with `RUSTFLAGS="--cfg loom"` they wrap loom's, so the same logic is
//! model-checked (see `loom_models.rs` and `make test-loom`). tokio's
//! `src/loom/` is the model.
//!
//! Because the types are newtypes and not re-exports, `clippy.toml` can
//! forbid std's atomics everywhere else: this module is the one door.
//! Process-local atomics (a log level, counters, a stop flag) that no
//! shared-memory protocol relies on come from [`local`]: std's, also under
//! loom, and not modelled.
//!
//! Under loom the futex is emulated with a loom `Mutex` + `Condvar`: the value
//! check and the sleep are atomic with respect to `wake`, exactly the
//! guarantee the kernel gives, and timeouts are ignored so that a lost
//! wake-up shows up as a deadlock the model checker reports.

// The one module where std's atomics are used directly (clippy.toml forbids
// them elsewhere): the newtypes below wrap them, and switch to loom's under
// cfg(loom). Inner attribute: it covers the submodules too.
#![allow(clippy::disallowed_types)]

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{fence, Ordering};

mod atomic;
pub use atomic::{AtomicU32, AtomicU64};

mod cell;
pub use cell::SharedBufs;
// The shim's cell (README, "The notification semaphore"): SharedBufs is
// made of such cells; nothing outside src/sync names one yet.
#[allow(unused_imports)]
pub use cell::UnsafeCell;

pub mod local;

/// Gives up the CPU to another runnable thread (`sched_yield(2)`).
#[cfg(not(loom))]
pub use std::thread::yield_now;

/// Under loom: nothing. The yield is a scheduling hint with no effect on
/// what the logic computes, and loom explores every interleaving anyway;
/// modelling it would only multiply the states to explore.
#[cfg(loom)]
pub fn yield_now() {}

/// A one-way flag between threads of one process (a stop request). Not
/// for shared memory and not modelled by loom: it only tells a loop to end.
#[derive(Debug, Default)]
pub struct Flag(local::AtomicBool);

impl Flag {
    /// A flag that is not set.
    pub const fn new() -> Flag {
        Flag(local::AtomicBool::new(false))
    }
    /// Sets it (for good).
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

mod futex;
pub use futex::Futex;
// What Futex::wait returns; today's callers only loop on the value.
#[allow(unused_imports)]
pub use futex::WaitOutcome;

mod semaphore;
pub use semaphore::{SemCore, WaitResult, RECHECK};

#[cfg(all(test, loom))]
mod loom_models;
#[cfg(all(test, loom))]
mod loom_models_cell;
