//! mtipc: the coordination library for multi-tenant hosts.
//!
//! Tenant processes on one host find and attach to each other, share session
//! state, take permits for shared storage, stay available under a supervisor
//! and are placed per tenant. This crate is the core: the safe Rust API. The C
//! ABI lives in [`ffi`] (and `include/mtipc.h`), the Python package in
//! `bindings/python`.
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
//!   [`closure`]: immutable values shared read-only with no copy.
//!
//! See `README.md`, `docs/` and `DESIGN.md`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod error;
mod failpoint;
#[macro_use]
pub mod log;
pub mod sync;
pub mod sys;

pub mod attach;
pub mod closure;
#[cfg(not(loom))]
pub mod domain;
#[cfg(not(loom))]
pub mod ffi;
pub mod session;
#[cfg(not(loom))]
pub mod shm;

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
