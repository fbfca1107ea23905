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

/// Replaces `path` with `bytes` atomically for readers (a temporary file,
/// mode 0600, renamed over it), without `fsync`: the HA state files
/// (`status.json`, the Spawner's `spawner.json`) describe processes,
/// which a power loss takes with them, so only atomicity matters, and a
/// restart after `kill -9` is not slowed by disk flushes.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
