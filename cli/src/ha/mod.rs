//! The HA supervisor's engine, shared by the programs of `mtipc-ha`
//! (docs/ha.md "The life cycle").
//!
//! - [`spawn`]: the Spawner's mechanism: starting one configured process
//!   (argv, `env`, `cwd`, `user`, its own session and process group, its
//!   output into a rotated log), signalling its group, reaping.
//! - [`supervisor`]: the state table and the life cycle: ordered start and
//!   stop, tenant groups, the restart policy, monitoring through the hooks'
//!   endpoint, the status file.
//!
//! - [`control`]: the control socket (`<domain>/ha/control.sock`) through
//!   which `mtipc ha` asks the supervisor for its table and for starts,
//!   stops and restarts.
//!
//! Today one process (`mtipc-ha run`) drives both. When the five roles are
//! split, the Server owns the [`supervisor::Supervisor`]'s table and its
//! start/stop/group calls, the Spawner exposes [`spawn`], and the Monitor
//! owns the endpoint and the monitoring half of `step`.

pub mod control;
pub mod monitor;
pub mod roles;
pub mod spawn;
pub mod supervisor;
