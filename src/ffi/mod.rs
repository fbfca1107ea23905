//! The C ABI. Only the boundary lives here: status codes, the thread's last
//! error, the panic guard, handle casting and argument checks, and one file
//! per capability that forwards to the core modules. No logic.
//!
//! Conventions (also in README.md and the header): every export is
//! `mt_<object>_<verb>`; handles are opaque and each has one `_free` that
//! accepts NULL; calls return `mt_status`; out-parameters are written only
//! on success; NULL, bad UTF-8, empty or oversized names give
//! `MT_ERR_INVALID`; no panic crosses the boundary (`MT_ERR_PANIC`).

#![allow(non_camel_case_types)]

mod handle;
mod panic;
mod status;

pub mod log;

pub mod attach;
pub mod closure;
pub mod domain;
pub mod ha;
pub mod permit;
pub mod session;

// For tests/header (through mtipc::internals::ffi).
pub use status::mt_version;
