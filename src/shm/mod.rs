//! Shared memory between the processes of a domain: the foundation every
//! capability that maps a region builds on.
//!
//! - region files (`region`): creation without races, the common region
//!   header and its validation, and [`Region`], a validated mapping;
//! - [`records`]: process records in a region and their liveness, which
//!   the kernel tells (a byte lock that dies with its owner);
//! - [`lock`]: a lock word in a region whose dead holder is taken over;
//! - the SIGBUS guard (`sigbus`): a region truncated under its mappers
//!   turns into `Corrupt`, not a crash.
//!
//! `records` and `lock` are made of `crate::sync` types only, so loom models
//! check them; the parts that need files and mappings do not build under
//! loom.

pub mod lock;
pub mod records;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
mod sigbus;

#[cfg(not(loom))]
pub use region::{check_header, validate, Region, RegionHeader, HEADER_SIZE};
#[cfg(not(loom))]
pub use sigbus::{guard, Guard};
