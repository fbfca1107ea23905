//! `mtipc-ha`: the high-availability supervisor of a node (DESIGN.md
//! section 4, docs/ha.md).
//!
//! ```text
//! mtipc-ha check CONFIG     check a configuration file; print its start order
//! mtipc-ha run CONFIG       supervise the node's processes in the foreground
//! ```
//!
//! While `run` runs, `mtipc ha status|start|stop|restart|log` reach it
//! through its control socket, `<domain>/ha/control.sock`
//! (`mtipc_cli::ha::control`).
//!
//! `run` is one process doing the work of the roles to come (the engine is
//! `mtipc_cli::ha`); the five roles (`mtipc-ha up CONFIG` and the Server,
//! Monitor, Spawner, Master and Master Watcher it starts) are not built yet.
//!
//! Exit status: 0 on success (`run`: stopped by SIGTERM or SIGINT, every
//! process stopped in order); 1 when the file is refused (one line per
//! problem on stderr: `CONFIG:LINE: reason`) or `run` cannot set up
//! (domain, socket); 2 on bad usage.

use clap::{Parser, Subcommand};
use mtipc::ha::config::Config;
use mtipc::ha::Role;
use mtipc::internals::ha::Endpoint;
use mtipc::internals::sync::local::AtomicU32;
use mtipc::internals::sync::Ordering;
use mtipc::internals::sys::{read_note, LockFile};
use mtipc::log::Level;
use mtipc_cli::ha::control::{self, Control};
use mtipc_cli::ha::roles;
use mtipc_cli::ha::spawn;
use mtipc_cli::ha::supervisor::{self, Local, Options, Supervisor};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Supervise the processes of an mtipc node.
#[derive(Parser)]
#[command(name = "mtipc-ha", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a configuration file without starting anything: print the
    /// node, its processes in start order (with their tenant group,
    /// priority, readiness and dependencies), the stop order and the
    /// tenant groups; or every problem as CONFIG:LINE: reason (exit 1).
    Check {
        /// The configuration file (TOML).
        config: PathBuf,
    },
    /// Supervise the node's processes in the foreground (fits systemd):
    /// start them in dependency order, restart them by their policy,
    /// watch them at their monitor_ms; SIGTERM or SIGINT stops them in
    /// reverse order and exits 0 (a second one: SIGKILL to every process
    /// group at once). State changes are log lines on stderr;
    /// the table is kept in a JSON status file (docs/ha.md).
    Run {
        /// The configuration file (TOML).
        config: PathBuf,
        /// Where to write the status (default: DOMAIN/ha/status.json).
        #[arg(long)]
        status_file: Option<PathBuf>,
        /// Log level: error, warn, info, debug, trace or off (default
        /// $MTIPC_LOG, else info).
        #[arg(long)]
        log: Option<String>,
    },
    /// Run the node in the foreground (fits systemd) as the five HA
    /// roles, each its own process: this process starts the Master
    /// Watcher, which starts the Master, which starts the Spawner, the
    /// Monitor and the Server; each role that ends is restarted by its
    /// watcher and takes up the running processes without restarting them.
    /// SIGTERM or SIGINT stops every process in reverse order, then the
    /// roles, and exits 0 (a second one: SIGKILL to everything at once).
    Up {
        /// The configuration file (TOML).
        config: PathBuf,
        /// Log level: error, warn, info, debug, trace or off (default
        /// $MTIPC_LOG, else info); the roles log at the same level.
        #[arg(long)]
        log: Option<String>,
    },
    /// One role of a node (started by `mtipc-ha up` and the roles
    /// themselves, not by hand).
    #[command(hide = true)]
    Role {
        /// server, monitor, spawner, master or watcher.
        role: String,
        /// The configuration file.
        config: PathBuf,
        /// The node process, PID:START.
        #[arg(long)]
        node: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => check(&config),
        Cmd::Run {
            config,
            status_file,
            log,
        } => run(&config, status_file, log.as_deref()),
        Cmd::Up { config, log } => {
            if let Some(l) = &log {
                // The roles inherit the level.
                std::env::set_var("MTIPC_LOG", l);
            }
            roles::node::up(&config, log.as_deref())
        }
        Cmd::Role { role, config, node } => role_main(&role, config, &node),
    }
}

/// A role's process: `mtipc-ha role ROLE CONFIG --node PID:START`.
fn role_main(role: &str, config: PathBuf, node: &str) -> ExitCode {
    let level = match mtipc_cli::log_level(None, Level::Info) {
        Ok(l) => l,
        Err(_) => Some(Level::Info),
    };
    mtipc_cli::log_to_stderr(level);
    let (Some(role), Some(node)) = (roles::Role::parse(role), roles::Pid::parse(node)) else {
        eprintln!("mtipc-ha role: bad role or --node");
        return ExitCode::from(2);
    };
    let domain = match Config::load(&config) {
        Ok(c) => c
            .node
            .domain
            .clone()
            .unwrap_or_else(mtipc::internals::domain::default_path),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = roles::Ctx::new(config, domain, node);
    match role {
        roles::Role::Server => roles::server::run(ctx),
        roles::Role::Monitor => roles::monitor::run(ctx),
        roles::Role::Spawner => roles::spawner::run(ctx),
        roles::Role::Master | roles::Role::Watcher => roles::master::run(ctx, role),
    }
}

/// Counted by SIGTERM and SIGINT: the first stops the node in order, a
/// second kills what still runs at once.
static STOPS: AtomicU32 = AtomicU32::new(0);

/// The write end of the pipe that wakes the supervisor's wait (the
/// endpoint's `poll`) when a signal comes; `u32::MAX` before it exists.
static WAKE_FD: AtomicU32 = AtomicU32::new(u32::MAX);

/// Writes one byte to the wake pipe (non-blocking: a full pipe already
/// wakes). Only async-signal-safe calls; errno is kept.
fn wake() {
    let fd = WAKE_FD.load(Ordering::Acquire);
    if fd == u32::MAX {
        return;
    }
    // SAFETY: errno is this thread's; write on a descriptor this process
    // keeps open for its whole life.
    unsafe {
        let saved = *libc::__errno_location();
        let _ = libc::write(fd as libc::c_int, b"x".as_ptr().cast(), 1);
        *libc::__errno_location() = saved;
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    // A lock-free atomic add and a write: async-signal-safe.
    STOPS.fetch_add(1, Ordering::AcqRel);
    wake();
}

extern "C" fn on_child(_: libc::c_int) {
    wake();
}

/// SIGTERM and SIGINT count stops; SIGCHLD wakes the loop, so that a
/// process's end is handled at once, not at the next timer. Returns the
/// read end of the wake pipe, for the endpoint's wait.
fn install_handlers() -> std::io::Result<OwnedFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 made two descriptors nothing else owns; the write end
    // stays open for the life of the process (the handlers use it).
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    WAKE_FD.store(fds[1] as u32, Ordering::Release);
    let handlers: [(libc::c_int, extern "C" fn(libc::c_int), libc::c_int); 3] = [
        (libc::SIGTERM, on_stop_signal, libc::SA_RESTART),
        (libc::SIGINT, on_stop_signal, libc::SA_RESTART),
        (
            libc::SIGCHLD,
            on_child,
            libc::SA_RESTART | libc::SA_NOCLDSTOP,
        ),
    ];
    for (sig, handler, flags) in handlers {
        // SAFETY: sigaction is plain data; the handlers only use atomics
        // and write(2). SA_RESTART keeps other calls from failing with
        // EINTR.
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

fn fatal(msg: &str) -> ExitCode {
    eprintln!("mtipc-ha run: {msg}");
    ExitCode::FAILURE
}

fn run(path: &Path, status_file: Option<PathBuf>, log: Option<&str>) -> ExitCode {
    match mtipc_cli::log_level(log, Level::Info) {
        Ok(l) => mtipc_cli::log_to_stderr(l),
        Err(e) => {
            eprintln!("mtipc-ha run: {e}");
            return ExitCode::from(2);
        }
    }
    let c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let domain = c
        .node
        .domain
        .clone()
        .unwrap_or_else(mtipc::internals::domain::default_path);
    for d in [domain.clone(), domain.join("ha"), domain.join("ha/log")] {
        if let Err(e) = mtipc::internals::sys::make_dir(&d) {
            return fatal(&e.to_string());
        }
    }
    // One supervisor per domain: run.lock, held for the life of the
    // process (the kernel releases it however the process ends), with the
    // holder's pid as its note.
    let lock_path = domain.join("ha/run.lock");
    let _lock = match LockFile::try_acquire(&lock_path) {
        Ok(Some(mut l)) => {
            let _ = l.write_note(&std::process::id().to_string());
            l
        }
        Ok(None) => {
            let holder = read_note(&lock_path).unwrap_or_else(|| "?".into());
            return fatal(&format!(
                "another supervisor runs this domain (pid {holder} holds {})",
                lock_path.display()
            ));
        }
        Err(e) => return fatal(&e.to_string()),
    };
    let socket = supervisor::socket_path(&domain);
    let mut endpoint = match Endpoint::bind(&socket, Role::Active, 1) {
        Ok(ep) => ep,
        Err(e) => return fatal(&e.to_string()),
    };
    match install_handlers() {
        Ok(wake) => endpoint.set_wake(wake),
        Err(e) => return fatal(&format!("signal handlers: {e}")),
    }
    // The operator's commands (mtipc ha): served by a thread that hands
    // each request to this loop and pokes the wake pipe.
    let control = match Control::bind(&control::control_path(&domain), wake) {
        Ok(c) => c,
        Err(e) => return fatal(&format!("control socket: {e}")),
    };
    if let Err(e) = spawn::become_subreaper() {
        return fatal(&format!("PR_SET_CHILD_SUBREAPER: {e}"));
    }
    let status_file = status_file.unwrap_or_else(|| supervisor::status_path(&domain));
    let mut sup = Supervisor::new(
        &c,
        Box::new(Local::new(Some(endpoint))),
        Options {
            status_file: Some(status_file),
            domain,
        },
    );
    mtipc::log::emit(
        Level::Info,
        "mtipc-ha",
        &format!(
            "node {}: supervising {} processes (pid {})",
            c.node.name,
            c.processes.len(),
            std::process::id()
        ),
    );
    sup.start_all();
    let mut seen = 0;
    loop {
        let stops = STOPS.load(Ordering::Acquire);
        if stops > seen {
            if seen == 0 {
                mtipc::log::emit(
                    Level::Info,
                    "mtipc-ha",
                    "stop signal: stopping every process in reverse order (a second one: SIGKILL at once)",
                );
                sup.stop_all();
            }
            if stops >= 2 && seen < 2 {
                mtipc::log::emit(
                    Level::Warn,
                    "mtipc-ha",
                    "second stop signal: SIGKILL to every process group",
                );
                sup.kill_all();
            }
            seen = stops;
        }
        if seen > 0 && sup.all_exited() {
            break;
        }
        // Woken by a hooks message, a signal (a child's end, a stop) or
        // the table's next timer.
        sup.step(Duration::from_secs(1));
        control.serve(&mut sup, seen > 0);
    }
    drop(control);
    // A last round settles the table (backoff and held become stopped);
    // stragglers of the groups (orphans reparented here) are reaped.
    sup.step(Duration::ZERO);
    while spawn::reap(|_| {}).is_some() {}
    sup.flush_status();
    mtipc::log::emit(Level::Info, "mtipc-ha", "node stopped");
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path) -> ExitCode {
    let c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report(&c));
    ExitCode::SUCCESS
}

/// What `check` prints for a good file.
fn report(c: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let domain = match &c.node.domain {
        Some(d) => d.display().to_string(),
        None => "default (as mt_domain_open(NULL))".to_string(),
    };
    let _ = writeln!(
        out,
        "{}: node {}, domain {domain}",
        c.file.display(),
        c.node.name
    );
    let _ = writeln!(out, "{} processes, in start order:", c.processes.len());
    let rows: Vec<[String; 7]> = c
        .start_order()
        .enumerate()
        .map(|(i, p)| {
            [
                (i + 1).to_string(),
                p.name.clone(),
                p.tenant_group.clone().unwrap_or_else(|| "-".into()),
                p.priority.to_string(),
                p.ready.to_string(),
                p.placement.to_string(),
                if p.depends_on.is_empty() {
                    "-".into()
                } else {
                    p.depends_on.join(", ")
                },
            ]
        })
        .collect();
    let head = [
        "#",
        "NAME",
        "GROUP",
        "PRIORITY",
        "READY",
        "PLACEMENT",
        "DEPENDS ON",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(head.map(String::from)).chain(rows) {
        let mut line = String::from(" ");
        for (k, (w, cell)) in width.iter().zip(&r).enumerate() {
            if k + 1 == r.len() {
                let _ = write!(line, " {cell}");
            } else if k == 0 {
                let _ = write!(line, " {cell:>w$}");
            } else {
                let _ = write!(line, " {cell:<w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let stop: Vec<&str> = c.stop_order().map(|p| p.name.as_str()).collect();
    let _ = writeln!(out, "stop order: {}", or_none(&stop));
    let groups = c.groups();
    if groups.is_empty() {
        let _ = writeln!(out, "tenant groups: none");
    } else {
        let _ = writeln!(out, "tenant groups (members in start order):");
        for (g, members) in groups {
            let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
            let _ = writeln!(out, "  {g}: {}", names.join(", "));
        }
    }
    out
}

fn or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}
