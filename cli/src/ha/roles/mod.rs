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

    /// Whether it still runs (a zombie counts as gone).
    pub fn alive(self) -> bool {
        match ProcId::of(self.pid) {
            Ok(Some(p)) => p.start == self.start && !zombie(self.pid),
            _ => false,
        }
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

/// Waits until one of `fds` is readable or `timeout` passes; the
/// indices of the readable ones.
pub fn poll_read(fds: &[std::os::fd::BorrowedFd<'_>], timeout: Duration) -> Vec<usize> {
    use std::os::fd::AsRawFd;
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: p is a valid array of p.len() pollfd.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return Vec::new();
    }
    p.iter()
        .enumerate()
        .filter(|(_, x)| x.revents != 0)
        .map(|(i, _)| i)
        .collect()
}

/// A pipe poked by signal handlers: its read end is polled beside the
/// role's sockets. Installs SIGTERM/SIGINT (counted in [`STOPS`]) and
/// SIGCHLD (wakes only) handlers.
pub fn signals() -> std::io::Result<std::os::fd::OwnedFd> {
    wake::install()
}

pub use wake::{poke, STOPS};

mod wake {
    use mtipc::internals::sync::local::AtomicU32;
    use mtipc::internals::sync::Ordering;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// SIGTERM and SIGINT received.
    pub static STOPS: AtomicU32 = AtomicU32::new(0);
    static WAKE_FD: AtomicU32 = AtomicU32::new(u32::MAX);

    /// Writes a byte to the wake pipe (async-signal-safe; errno kept).
    pub fn poke() {
        let fd = WAKE_FD.load(Ordering::Acquire);
        if fd == u32::MAX {
            return;
        }
        // SAFETY: write on a descriptor kept open for the process's life;
        // errno is this thread's.
        unsafe {
            let saved = *libc::__errno_location();
            let _ = libc::write(fd as libc::c_int, b"x".as_ptr().cast(), 1);
            *libc::__errno_location() = saved;
        }
    }

    extern "C" fn on_stop(_: libc::c_int) {
        STOPS.fetch_add(1, Ordering::AcqRel);
        poke();
    }

    extern "C" fn on_child(_: libc::c_int) {
        poke();
    }

    pub fn install() -> std::io::Result<OwnedFd> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: new descriptors nothing else owns; the write end stays
        // open for the process's life.
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        WAKE_FD.store(fds[1] as u32, Ordering::Release);
        let handlers: [(libc::c_int, extern "C" fn(libc::c_int), libc::c_int); 3] = [
            (libc::SIGTERM, on_stop, libc::SA_RESTART),
            (libc::SIGINT, on_stop, libc::SA_RESTART),
            (
                libc::SIGCHLD,
                on_child,
                libc::SA_RESTART | libc::SA_NOCLDSTOP,
            ),
        ];
        for (sig, handler, flags) in handlers {
            // SAFETY: plain data; the handlers use atomics and write(2).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as libc::sighandler_t;
                sa.sa_flags = flags;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(read)
    }

    /// Empties the wake pipe.
    pub fn drain(fd: &OwnedFd) {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer from a non-blocking pipe.
        while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

pub use wake::drain;

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
