//! High availability (DESIGN.md section 4, `docs/ha.md`).
//!
//! What exists so far:
//!
//! - the **HA hooks** of a supervised application: [`supervised`],
//!   [`ready`], [`heartbeat`], [`set_health`], [`on_role`] and [`role`]
//!   (C `mt_ha_*`, C++ `mtipc::ha`, Python `mtipc.ha`). They talk to the HA
//!   Monitor over the socket named by `$MTIPC_HA_SOCKET` ([`SOCKET_ENV`]),
//!   which the HA Spawner sets (with a connection made for the process
//!   before it runs, `$MTIPC_HA_FD`, [`FD_ENV`]); without it (outside
//!   supervision) every hook succeeds and does nothing, and the role is
//!   [`Role::None`] with epoch 0;
//! - with the cargo feature `ha-config`, [`config`]: the configuration
//!   file of a node (its processes, their dependencies, frequencies,
//!   priorities, tenant groups, restart policies), checked with the line
//!   of every problem, and the start and stop orders.
//!
//! The five roles (Server, Monitor, Spawner, Master, Master Watcher) are
//! the program `mtipc-ha` (crate `mtipc-cli`); the Monitor's side of the
//! hooks protocol is here, in `mtipc::internals::ha`.

#[cfg(all(feature = "ha-config", not(loom)))]
pub mod config;
#[cfg(not(loom))]
pub(crate) mod endpoint;
#[cfg(not(loom))]
mod hooks;
#[cfg(not(loom))]
pub(crate) mod inherit;
pub(crate) mod proto;

#[cfg(not(loom))]
pub use hooks::{heartbeat, on_role, ready, role, set_health, supervised, HealthFn, RoleFn};

/// The environment variable that names the Monitor's socket (set by the
/// HA Spawner for each process it starts, as systemd sets `NOTIFY_SOCKET`).
pub const SOCKET_ENV: &str = "MTIPC_HA_SOCKET";

/// The environment variable that names a descriptor connected to the
/// Monitor's socket, on which the process's hello has been said: the HA
/// Spawner connects for the process between fork and exec (as s6 leaves a
/// `notification-fd`), so that its first hook only sends. The hooks take
/// it only if it is a connected `SOCK_SEQPACKET` UNIX socket whose peer
/// is bound at `$MTIPC_HA_SOCKET`, else they connect by the path.
pub const FD_ENV: &str = "MTIPC_HA_FD";

/// The role of the node a supervised process runs on. The values are the C
/// enum `mt_ha_role`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Role {
    /// No role: outside supervision, or a node that has not taken one.
    None = 0,
    /// The active node: it serves.
    Active = 1,
    /// The standby node of a duplex pair: ready to take over.
    Standby = 2,
}

impl Role {
    /// `"none"`, `"active"` or `"standby"` (the word of the protocol).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }

    /// The role whose C value is `v`.
    pub fn from_u32(v: u32) -> Option<Role> {
        match v {
            0 => Some(Role::None),
            1 => Some(Role::Active),
            2 => Some(Role::Standby),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
