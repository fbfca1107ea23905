//! The five roles of a node (DESIGN.md section 4; docs/ha.md "The five
//! roles"), each its own process of `mtipc-ha`, and `mtipc-ha up`, the
//! node process that starts them.
//!
//! - [`node`]: `mtipc-ha up CONFIG`, in the foreground: the node's lock,
//!   the subreaper of everything below it, the keeper of the processes'
//!   log pipes and of the exits of processes whose Spawner died; starts the
//!   Master Watcher; SIGTERM stops the node in order.
//! - [`server`]: the HA Server: the state table (decides what runs),
//!   the operator's control socket, the status file.
//! - [`monitor`]: the HA Monitor: the hooks' socket and the watching at
//!   each process's `monitor_ms`; what it sees goes to the Server (and to
//!   the broadcast list, empty on a single node).
//! - [`spawner`]: the HA Spawner: starts and signals processes on the
//!   Server's request, reaps them, and reports their exits.
//! - [`master`]: the HA Master (watches Server, Monitor, Spawner and the
//!   Master Watcher, restarts them) and the HA Master Watcher (watches the
//!   Master, restarts it): one loop, two lists.
//!
//! Each role holds `<domain>/ha/role-<name>.lock` (an exclusive `flock`
//! whose note is its pid and start time) for its life: at most one of
//! each runs, and the others find it there. Roles talk over UNIX sockets
//! in `<domain>/ha` (mode 0600, in the 0700 directory), one JSON object a
//! line, each connection's peer checked with `SO_PEERCRED` (the node's
//! uid or root), every line parsed as untrusted input (bounded, typed).

pub mod master;
pub mod monitor;
pub mod node;
pub mod server;
pub mod spawner;
pub mod wire;

use mtipc::internals::sys::{read_note, LockFile, ProcId};
use mtipc::log::Level;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The HA Server.
    Server,
    /// The HA Monitor.
    Monitor,
    /// The HA Spawner.
    Spawner,
    /// The HA Master.
    Master,
    /// The HA Master Watcher.
    Watcher,
}

impl Role {
    /// Every role, in the order the Master starts them (the Spawner and
    /// the Monitor before the Server that uses them).
    pub const ALL: [Role; 5] = [
        Role::Spawner,
        Role::Monitor,
        Role::Server,
        Role::Master,
        Role::Watcher,
    ];

    /// Its name on the command line, in lock files and the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Monitor => "monitor",
            Role::Spawner => "spawner",
            Role::Master => "master",
            Role::Watcher => "watcher",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process known by its pid and start time (a pid alone may be reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pid {
    /// The pid.
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22.
    pub start: u64,
}

impl Pid {
    /// This process.
    pub fn me() -> Pid {
        let pid = std::process::id();
        Pid {
            pid,
            start: ProcId::of(pid).ok().flatten().map_or(0, |p| p.start),
        }
    }

    /// Whether it still runs (`ProcId::of` counts a zombie as gone).
    pub fn alive(self) -> bool {
        matches!(ProcId::of(self.pid), Ok(Some(p)) if p.start == self.start)
    }

    /// `PID:START`.
    pub fn note(self) -> String {
        format!("{}:{}", self.pid, self.start)
    }

    /// Parses [`Pid::note`]'s form.
    pub fn parse(s: &str) -> Option<Pid> {
        let (a, b) = s.trim().split_once(':')?;
        Some(Pid {
            pid: a.parse().ok().filter(|&p| p > 0)?,
            start: b.parse().ok()?,
        })
    }
}

/// The start time of `pid` (`/proc/<pid>/stat` field 22), zombies
/// included (what the node records of a process it reaps).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: state is field 3,
    // start time field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is a zombie (`/proc/<pid>/stat` state `Z`).
pub fn zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|k| stat[k + 1..].split_whitespace().next())
        .is_some_and(|s| s == "Z")
}

/// `<domain>/ha`.
pub fn ha_dir(domain: &Path) -> PathBuf {
    domain.join("ha")
}

/// A role's lock file.
pub fn lock_path(domain: &Path, role: Role) -> PathBuf {
    ha_dir(domain).join(format!("role-{role}.lock"))
}

/// The Spawner's socket (the Server's requests).
pub fn spawner_socket(domain: &Path) -> PathBuf {
    ha_dir(domain).join("spawner.sock")
}

/// The Monitor's socket for the Server (the hooks' is `monitor.sock`).
pub fn monitor_socket(domain: &Path) -> PathBuf {
    ha_dir(domain).join("monitor-server.sock")
}

/// The node process's socket (log pipes, exits of adopted processes).
pub fn node_socket(domain: &Path) -> PathBuf {
    ha_dir(domain).join("node.sock")
}

/// The Spawner's state (what it started and what ended unreported).
pub fn spawner_state(domain: &Path) -> PathBuf {
    ha_dir(domain).join("spawner.json")
}

/// Made by `mtipc-ha up` when it is told to stop: every Server stops the
/// node's processes.
pub fn stopping_marker(domain: &Path) -> PathBuf {
    ha_dir(domain).join("stopping")
}

/// Made by the Server once every process has stopped: no role is
/// restarted any more.
pub fn stopped_marker(domain: &Path) -> PathBuf {
    ha_dir(domain).join("stopped")
}

/// The role running now (its lock's note, checked against `/proc`).
pub fn running(domain: &Path, role: Role) -> Option<Pid> {
    let p = Pid::parse(&read_note(&lock_path(domain, role))?)?;
    p.alive().then_some(p)
}

/// Takes `role`'s lock for the life of this process, waiting up to 2 s
/// for a previous holder that is still exiting; `None` if another runs
/// (then this process has nothing to do).
pub fn take_lock(domain: &Path, role: Role) -> Option<LockFile> {
    let path = lock_path(domain, role);
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        match LockFile::try_acquire(&path) {
            Ok(Some(mut l)) => {
                let _ = l.write_note(&Pid::me().note());
                return Some(l);
            }
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => return None,
            Err(e) => {
                log(Level::Error, &format!("{role}: lock: {e}"));
                return None;
            }
        }
    }
}

/// How a role finds its node and configuration (its command line).
#[derive(Debug)]
pub struct Ctx {
    /// The configuration file.
    pub config: PathBuf,
    /// The node's domain.
    pub domain: PathBuf,
    /// The node process (`mtipc-ha up`): when it is gone, every role ends.
    pub node: Pid,
    /// Its pidfd (one `poll` tells whether it ended), if it could be opened.
    pub node_fd: Option<std::os::fd::OwnedFd>,
}

impl Ctx {
    /// The context of a role of the node `node`.
    pub fn new(config: PathBuf, domain: PathBuf, node: Pid) -> Ctx {
        Ctx {
            config,
            domain,
            node,
            node_fd: pidfd(node),
        }
    }

    /// Whether the node process still runs.
    pub fn node_alive(&self) -> bool {
        use std::os::fd::AsFd;
        match &self.node_fd {
            Some(fd) => !crate::ha::readable_now(&[fd.as_fd()])[0],
            None => self.node.alive(),
        }
    }
}

/// Starts `role` as a child of this process: `mtipc-ha role ROLE CONFIG
/// --node PID:START`, stderr shared (its log lines go where the node's
/// go). The caller reaps it.
pub fn start_role(ctx: &Ctx, role: Role) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("role")
        .arg(role.as_str())
        .arg(&ctx.config)
        .arg("--node")
        .arg(ctx.node.note())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    Ok(child.id())
}

/// Reaps every child of this process that has ended (roles it started),
/// without waiting.
pub fn reap_children() {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

pub(crate) const TARGET: &str = "mtipc-ha";

/// A log line of the roles (target `mtipc-ha`).
pub fn log(level: Level, msg: &str) {
    mtipc::log::emit(level, TARGET, msg);
}

/// A descriptor that becomes readable when `p` ends ([`crate::ha::pidfd`]).
pub fn pidfd(p: Pid) -> Option<std::os::fd::OwnedFd> {
    crate::ha::pidfd(p.pid, p.start)
}

pub use crate::ha::signals::{drain, install as signals, poke, STOPS};

/// What every role does first: take its lock (`Err(SUCCESS)`: another
/// runs, nothing to do), read the configuration, install the signal
/// handlers (the wake pipe's read end).
pub struct Begun {
    /// The role's lock, held for the life of the process.
    pub lock: LockFile,
    /// The configuration.
    pub config: mtipc::ha::config::Config,
    /// The read end of the pipe the signal handlers poke.
    pub wake: std::os::fd::OwnedFd,
}

/// See [`Begun`]; a failure is logged and is the role's exit status.
pub fn begin(ctx: &Ctx, role: Role) -> Result<Begun, std::process::ExitCode> {
    let lock = take_lock(&ctx.domain, role).ok_or(std::process::ExitCode::SUCCESS)?;
    let config = mtipc::ha::config::Config::load(&ctx.config).map_err(|e| failed(role, "", e))?;
    let wake = signals().map_err(|e| failed(role, "signal handlers: ", e))?;
    Ok(Begun { lock, config, wake })
}

/// Logs why `role` cannot run (`what` then the error) and gives the exit
/// status of that.
pub fn failed(role: Role, what: &str, e: impl std::fmt::Display) -> std::process::ExitCode {
    log(Level::Error, &format!("{role}: {what}{e}"));
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_matches_proc_id_and_notes_parse() {
        let me = Pid::me();
        assert_eq!(start_time(me.pid), Some(me.start));
        assert!(me.start > 0 && me.alive());
        assert_eq!(Pid::parse(&me.note()), Some(me));
        for bad in ["", "1", "x:1", "0:5", "1:-2", "1:2:3"] {
            assert_eq!(Pid::parse(bad), None, "{bad}");
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("boss"), None);
    }
}
