//! mtipc: the coordination library for multi-tenant hosts.
//!
//! Tenant processes on one host find and attach to each other, share session
//! state, take permits for shared storage, stay available under a supervisor
//! and are placed per tenant. This crate is the core: the safe Rust API. The C
//! ABI (`include/mtipc.h`) is exported from `src/ffi` and is not part of the
//! Rust API; the Python package is in `bindings/python`.
//!
//! What exists today:
//!
//! - the [`Domain`] (a directory the cooperating processes share, with a
//!   layout version) and its notification [`Semaphore`], a counting
//!   semaphore in shared memory that any process of the domain's owner can
//!   post to or wait on;
//! - [`attach`]: discovery of advertised tenants and a TLS 1.3 channel to one
//!   of them through mtipcd's relay (DESIGN.md section 1);
//! - [`session`]: the shared-memory session table, request dispatch to
//!   worker groups with worker failover (DESIGN.md section 2), and
//!   [`closure`]: immutable values shared read-only with no copy;
//! - [`ha`]: the HA hooks a supervised application calls, and (feature
//!   `ha-config`) the HA configuration file (DESIGN.md section 4);
//! - [`Error`], [`ErrorKind`] and [`Result`], and [`log`]: the library's
//!   events, delivered to a logger the application installs.
//!
//! Only that is public. The module `mtipc::internals`, hidden from these
//! docs, re-exports what the fuzz targets, benches and tests, the programs
//! (`cli/`) and the Python binding take from inside the crate (parsers,
//! region layouts, the relay, the loom shim's atomics); it is not API and
//! may change at any time.
//!
//! See `README.md`, `docs/` and `DESIGN.md`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// Built with `--cfg loom` (make test-loom), the crate is only the loom
// models and what they exercise: the domain, the C ABI and most users of
// the shim and the foundation are left out, so most of those go unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod error;
mod failpoint;
#[macro_use]
pub mod log;
mod sync;
mod sys;

pub mod attach;
pub mod closure;
#[cfg(not(loom))]
mod domain;
#[cfg(not(loom))]
mod ffi;
#[cfg(not(loom))]
pub mod ha;
pub mod permit;
pub mod session;
mod shm;

#[cfg(not(loom))]
#[doc(hidden)]
pub mod internals;

#[cfg(not(loom))]
pub use domain::{Domain, DomainInfo, Semaphore};
pub use error::{Error, ErrorKind, Result};

/// The library's version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The on-disk layout version a domain records. A process that finds another
/// one refuses the domain with [`ErrorKind::Version`].
pub const LAYOUT_VERSION: u32 = 1;
