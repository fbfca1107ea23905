//! High availability (DESIGN.md section 4, `docs/ha.md`).
//!
//! What exists so far:
//!
//! - with the cargo feature `ha-config`, [`config`]: the configuration
//!   file of a node (its processes, their dependencies, frequencies,
//!   priorities, tenant groups, restart policies), checked with the line
//!   of every problem, and the start and stop orders.
//!
//! The five roles (Server, Monitor, Spawner, Master, Master Watcher) of the
//! program `mtipc-ha` are not built yet.

#[cfg(all(feature = "ha-config", not(loom)))]
pub mod config;

/// The environment variable that names the Monitor's socket (set by the
/// HA Spawner for each process it starts, as systemd sets `NOTIFY_SOCKET`).
pub const SOCKET_ENV: &str = "MTIPC_HA_SOCKET";
