//! Permits for shared storage (DESIGN.md section 3, patent US 10,362,109);
//! the design as built: `docs/permit.md`.
//!
//! A *gateway volume* is a directory many instances (processes, on one host
//! or several that mount it) transfer files to and from. Before a transfer
//! an instance asks the volume's arbiter for a [`Permit`]; the arbiter
//! defers a request that conflicts with a transfer in flight (a write
//! conflicts with any other transfer of the same path, reads share, the
//! volume may cap concurrent transfers), grants deferred requests in a fair
//! order (round robin over instances, FIFO within one) and stamps each
//! grant with a fencing token, strictly increasing per volume. The holder
//! then copies through a temporary name and renames into place only while
//! its token is current ([`Permit::put`], [`Permit::get`]).
//!
//! - [`volume`]: the volume record in the domain (its directory, cap,
//!   lease, backend) and its parser (hostile input, fuzz target `volume`);
//! - [`paths`]: paths inside a volume (relative, never leaving it);
//! - [`Arbiter`] and [`Grant`]: what a backend provides; [`local`] keeps
//!   the arbiter in shared memory in the domain (one host, no daemon), and
//!   `etcd` (feature `etcd`, on by default) in an etcd cluster for volumes
//!   several hosts mount;
//! - `transfer`: the copy, fsync and fenced rename of a transfer session.

#[cfg(not(loom))]
mod api;
#[cfg(all(feature = "etcd", not(loom)))]
pub(crate) mod etcd;
pub(crate) mod local;
#[cfg(not(loom))]
pub mod paths;
#[cfg(not(loom))]
mod transfer;
#[cfg(not(loom))]
pub mod volume;

#[cfg(not(loom))]
pub use api::*;
#[cfg(not(loom))]
pub use volume::{VolumeOpts, VolumeRecord, DEFAULT_LEASE};

use std::fmt;

/// What a permit allows: reading a file of the volume, or writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[repr(u32)]
pub enum Mode {
    /// Reads share a path with other reads.
    Read = 1,
    /// A write conflicts with every other transfer of the same path.
    Write = 2,
}

impl Mode {
    /// The mode with C value `v` (`MT_PERMIT_READ` 1, `MT_PERMIT_WRITE` 2).
    pub fn from_u32(v: u32) -> Option<Mode> {
        match v {
            1 => Some(Mode::Read),
            2 => Some(Mode::Write),
            _ => None,
        }
    }

    /// Whether a transfer in this mode and one in `other` mode of the same
    /// path may run at once (only two reads may).
    pub fn shares_with(self, other: Mode) -> bool {
        self == Mode::Read && other == Mode::Read
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Read => "read",
            Mode::Write => "write",
        })
    }
}
