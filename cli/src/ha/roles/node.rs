//! `mtipc-ha up CONFIG`: the node process. It stays in the foreground for
//! the node's life (a systemd `Type=simple` service), and is not one of
//! the five roles: it starts the Master Watcher (which starts the Master,
//! which starts the others) and then only keeps what must outlive any
//! role:
//!
//! - it is the subreaper of everything below it: a process whose
//!   Spawner died is reparented here, reaped here when it ends, and its
//!   exit kept for the next Spawner to ask for (`node.sock`, `Exit`); what
//!   is left of its process group is killed while it is a zombie;
//! - it copies the processes' output into their logs: the Spawner hands it
//!   the read end of each process's pipe (`node.sock`, `Log`), so a
//!   process never writes into a pipe nobody reads when a Spawner dies;
//! - it holds `<domain>/ha/run.lock` (one node per domain; also excludes
//!   `mtipc-ha run`).
//!
//! SIGTERM or SIGINT stops the node: it makes `<domain>/ha/stopping` and
//! tells the Server, which stops every process in reverse order and makes
//! `<domain>/ha/stopped`; then the roles are told to end, and it exits 0.
//! A second SIGTERM or SIGINT kills every process group and every role at
//! once. When this process is killed, the roles see it gone and end, the
//! Spawner killing every process group first: nothing is left running
//! under a node that is not there. When everything is killed at once, the
//! next `mtipc-ha up` of the domain stops what the last one left (from the
//! Spawner's state file) before it starts anything.

use super::wire::{self, NodeExit, SpawnerState, ToNode};
use super::{log, Ctx, Pid, Role};
use crate::ha::spawn::{self, Exit, LogWriter};
use mtipc::ha::config::Config;
use mtipc::internals::sync::Ordering;
use mtipc::log::Level;
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exits of reaped processes kept for a Spawner to ask about.
const KEPT_EXITS: usize = 4096;

#[derive(Default)]
struct Exits {
    by_pid: HashMap<u32, (u64, Exit)>,
    order: VecDeque<u32>,
}

impl Exits {
    fn record(&mut self, pid: u32, start: u64, exit: Exit) {
        if self.by_pid.insert(pid, (start, exit)).is_none() {
            self.order.push_back(pid);
        }
        while self.order.len() > KEPT_EXITS {
            if let Some(old) = self.order.pop_front() {
                self.by_pid.remove(&old);
            }
        }
    }

    fn get(&self, pid: u32, start: u64) -> Option<Exit> {
        self.by_pid
            .get(&pid)
            .filter(|(s, _)| *s == start)
            .map(|&(_, e)| e)
    }
}

fn fatal(msg: &str) -> ExitCode {
    eprintln!("mtipc-ha up: {msg}");
    ExitCode::FAILURE
}

/// Kills the process group of every process in the Spawner's state file
/// that still runs (checked against its start time), and every role that
/// still holds its lock: what a node that was killed whole left.
fn stop_leftovers(domain: &Path, why: &str) -> usize {
    let mut n = 0;
    let state = SpawnerState::load(&super::spawner_state(domain));
    for r in &state.running {
        let p = Pid {
            pid: r.pid,
            start: r.start,
        };
        if p.alive() {
            log(
                Level::Warn,
                &format!("{}: pid {} {why}; SIGKILL to its group", r.name, r.pid),
            );
            spawn::signal_group(r.pid, libc::SIGKILL);
            n += 1;
        }
    }
    n + kill_roles(domain)
}

/// SIGKILL to every role that holds its lock, the watchers first (so
/// that nothing is restarted meanwhile); how many.
fn kill_roles(domain: &Path) -> usize {
    let mut n = 0;
    for role in [
        Role::Watcher,
        Role::Master,
        Role::Server,
        Role::Monitor,
        Role::Spawner,
    ] {
        if let Some(p) = super::running(domain, role) {
            if p.pid != std::process::id() {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(p.pid as libc::c_int, libc::SIGKILL) };
                n += 1;
            }
        }
    }
    n
}

/// `mtipc-ha up CONFIG`. See the module documentation.
pub fn up(config: &Path, level: Option<&str>) -> ExitCode {
    match crate::log_level(level, Level::Info) {
        Ok(l) => crate::log_to_stderr(l),
        Err(e) => {
            eprintln!("mtipc-ha up: {e}");
            return ExitCode::from(2);
        }
    }
    let (c, domain, _lock) = match crate::ha::open_node(config, "mtipc-ha up") {
        Ok(x) => x,
        Err(code) => return code,
    };
    let config = match std::fs::canonicalize(config) {
        Ok(p) => p,
        Err(e) => return fatal(&format!("{}: {e}", config.display())),
    };
    let left = stop_leftovers(&domain, "left running by a node that was killed");
    if left > 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    for f in [
        super::spawner_state(&domain),
        super::stopping_marker(&domain),
        super::stopped_marker(&domain),
        crate::ha::supervisor::status_path(&domain),
    ] {
        let _ = std::fs::remove_file(f);
    }
    let wake = match super::signals() {
        Ok(w) => w,
        Err(e) => return fatal(&format!("signal handlers: {e}")),
    };
    if let Err(e) = spawn::become_subreaper() {
        return fatal(&format!("PR_SET_CHILD_SUBREAPER: {e}"));
    }
    let exits = Arc::new(Mutex::new(Exits::default()));
    let listener = match wire::listen(&super::node_socket(&domain)) {
        Ok(l) => l,
        Err(e) => return fatal(&format!("node socket: {e}")),
    };
    {
        let exits = Arc::clone(&exits);
        let c = c.clone();
        let domain = domain.clone();
        let r = std::thread::Builder::new()
            .name("mtipc-ha-node".into())
            .spawn(move || serve(listener, &c, &domain, &exits));
        if let Err(e) = r {
            return fatal(&format!("node socket thread: {e}"));
        }
    }
    let ctx = Ctx::new(config, domain.clone(), Pid::me());
    log(
        Level::Info,
        &format!(
            "node {}: up (pid {}), {} processes; starting the Master Watcher",
            c.node.name,
            std::process::id(),
            c.processes.len()
        ),
    );
    if let Err(e) = super::start_role(&ctx, Role::Watcher) {
        return fatal(&format!("cannot start the Master Watcher: {e}"));
    }
    let mut seen = 0;
    let mut stopped_at: Option<Instant> = None;
    let mut guard_since: Option<Instant> = None;
    loop {
        // SIGCHLD and the stop signals poke the pipe; the timeout only
        // paces the checks of the markers and the Master's presence.
        let pace = if seen > 0 { 20 } else { 1000 };
        crate::ha::poll_fds(&[wake.as_fd()], Duration::from_millis(pace));
        super::drain(&wake);
        reap(&exits);
        let stops = super::STOPS.load(Ordering::Acquire);
        if stops > seen {
            if seen == 0 {
                log(
                    Level::Info,
                    "stop signal: the Server stops every process in reverse order (a second one: SIGKILL at once)",
                );
                let _ = std::fs::write(super::stopping_marker(&domain), b"");
                if let Some(s) = super::running(&domain, Role::Server) {
                    // SAFETY: kill has no memory effects.
                    unsafe { libc::kill(s.pid as libc::c_int, libc::SIGTERM) };
                }
            }
            if stops >= 2 && seen < 2 {
                log(
                    Level::Warn,
                    "second stop signal: SIGKILL to every process group and role",
                );
                // Nothing is restarted from now on.
                let _ = std::fs::write(super::stopped_marker(&domain), b"");
                stop_leftovers(&domain, "still running at the second stop signal");
                let end = Instant::now() + Duration::from_secs(5);
                while Instant::now() < end && has_children() {
                    reap(&exits);
                    // A role started just before the marker: killed too.
                    kill_roles(&domain);
                    std::thread::sleep(Duration::from_millis(5));
                }
                break;
            }
            seen = stops;
        }
        if super::stopped_marker(&domain).exists() {
            // Every process stopped: the roles end (the Master and its
            // Watcher first, so that nothing is restarted).
            let at = *stopped_at.get_or_insert_with(|| {
                for role in [
                    Role::Watcher,
                    Role::Master,
                    Role::Monitor,
                    Role::Spawner,
                    Role::Server,
                ] {
                    if let Some(p) = super::running(&domain, role) {
                        // SAFETY: kill has no memory effects.
                        unsafe { libc::kill(p.pid as libc::c_int, libc::SIGTERM) };
                    }
                }
                Instant::now()
            });
            let left: Vec<Role> = Role::ALL
                .into_iter()
                .filter(|&r| super::running(&domain, r).is_some())
                .collect();
            if left.is_empty() && !has_children() {
                break;
            }
            if at.elapsed() > Duration::from_secs(5) {
                log(
                    Level::Warn,
                    &format!("roles still running 5 s after the stop: {left:?}; SIGKILL"),
                );
                stop_leftovers(&domain, "still running after the stop");
                std::thread::sleep(Duration::from_millis(20));
                reap(&exits);
                break;
            }
            continue;
        }
        // The Master and its Watcher restart each other; should both be
        // gone at once, the node starts the Watcher again.
        let watched = super::running(&domain, Role::Master).is_some()
            || super::running(&domain, Role::Watcher).is_some();
        if watched {
            guard_since = None;
        } else if guard_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1) {
            log(
                Level::Warn,
                "neither the Master nor the Master Watcher runs; starting the Watcher",
            );
            let _ = super::start_role(&ctx, Role::Watcher);
            guard_since = None;
        }
    }
    reap(&exits);
    for f in [
        super::node_socket(&domain),
        super::stopping_marker(&domain),
        super::stopped_marker(&domain),
        super::spawner_state(&domain),
    ] {
        let _ = std::fs::remove_file(f);
    }
    log(Level::Info, "node stopped");
    ExitCode::SUCCESS
}

/// Whether this process has a child left (a role, or an adopted process).
fn has_children() -> bool {
    crate::ha::spawn::peek_child().is_some()
}

/// Reaps every child that ended (roles, and processes reparented here),
/// keeping their exits; what is left of a group leader's group is killed
/// while the leader is a zombie.
fn reap(exits: &Mutex<Exits>) {
    loop {
        let mut start = 0;
        let reaped = spawn::reap(|pid| {
            start = super::start_time(pid).unwrap_or(0);
            // SAFETY: getpgid has no memory effects; a zombie keeps its group.
            let pgid = unsafe { libc::getpgid(pid as libc::pid_t) };
            if pgid == pid as libc::pid_t {
                spawn::signal_group(pid, libc::SIGKILL);
            }
        });
        let Some((pid, exit)) = reaped else { return };
        if let Ok(mut e) = exits.lock() {
            e.record(pid, start, exit);
        }
    }
}

/// Serves `node.sock`: a thread per connection (the Spawner's; others of
/// the node's uid or root may ask too).
fn serve(
    listener: std::os::unix::net::UnixListener,
    c: &Config,
    domain: &Path,
    exits: &Arc<Mutex<Exits>>,
) {
    let _ = listener.set_nonblocking(false);
    let logs: HashMap<String, (PathBuf, u64, u32)> = c
        .processes
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                (p.log_file(domain), p.log_max_bytes, p.log_keep),
            )
        })
        .collect();
    let logs = Arc::new(logs);
    for conn in listener.incoming() {
        let Ok(s) = conn else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if !wire::peer_allowed(&s, "node socket") {
            continue;
        }
        let exits = Arc::clone(exits);
        let logs = Arc::clone(&logs);
        let _ = std::thread::Builder::new()
            .name("mtipc-ha-node-conn".into())
            .spawn(move || connection(&s, &logs, &exits));
    }
}

fn connection(s: &UnixStream, logs: &HashMap<String, (PathBuf, u64, u32)>, exits: &Mutex<Exits>) {
    let _ = s.set_nonblocking(false);
    let mut pending = Vec::new();
    let Ok(mut out) = s.try_clone() else { return };
    while let Some((line, fds)) = wire::recv_line_fds(s, &mut pending) {
        let m = match wire::parse::<ToNode>(&line) {
            Ok(m) => m,
            Err(e) => {
                log(Level::Warn, &format!("node socket: {e}; closed"));
                return;
            }
        };
        match m {
            ToNode::Log { name } => {
                let (Some(fd), Some((path, max, keep))) = (fds.into_iter().next(), logs.get(&name))
                else {
                    log(
                        Level::Warn,
                        &format!(
                            "node socket: a log for {name:?} without a pipe or not configured"
                        ),
                    );
                    continue;
                };
                match LogWriter::open(path, *max, *keep) {
                    Ok(w) => {
                        if let Err(e) = spawn::copy_log(&name, fd, w) {
                            log(Level::Error, &format!("{name}: log thread: {e}"));
                        }
                    }
                    Err(e) => log(Level::Error, &format!("{name}: {e}")),
                }
            }
            ToNode::Exit { pid, start } => {
                let exit = exits.lock().ok().and_then(|e| e.get(pid, start));
                use std::io::Write;
                if out.write_all(&wire::line(&NodeExit { exit })).is_err() {
                    return;
                }
            }
        }
    }
}
