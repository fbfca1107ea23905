//! Synchronisation primitives for memory shared between processes.
//!
//! Everything that shared-memory logic uses (atomics, the futex word) comes
//! from this module. Normally these are the `std` types and real futex
//! syscalls; built with `RUSTFLAGS="--cfg loom"` they are loom's, so the same
//! logic is model-checked (see `loom_models.rs` and `make test-loom`).
//!
//! Under loom the futex is emulated with a loom `Mutex` + `Condvar`: the value
//! check and the sleep are atomic with respect to `wake`, exactly the
//! guarantee the kernel gives, and timeouts are ignored so that a lost
//! wake-up shows up as a deadlock the model checker reports.

// The one module where atomics are used directly (clippy.toml forbids them
// elsewhere): everything below switches to loom under cfg(loom).
#![allow(clippy::disallowed_types)]

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

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
pub struct Flag(std::sync::atomic::AtomicBool);

impl Flag {
    /// A flag that is not set.
    pub const fn new() -> Flag {
        Flag(std::sync::atomic::AtomicBool::new(false))
    }
    /// Sets it (for good).
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

mod futex;
pub use futex::{Futex, WaitOutcome};

mod semaphore;
pub use semaphore::{SemCore, WaitResult, MAX_COUNT, RECHECK};

#[cfg(all(test, loom))]
mod loom_models;
