//! The HA Spawner: starts the configured processes on the Server's request
//! (each in its own session and process group, its output handed to the
//! node process for its log), signals their groups, reaps them, and
//! reports every end to the Server until the Server acknowledges it.
//!
//! A process the Server would restart at once when it ends (no backoff,
//! its restart cap not near, wanted, not being stopped: the Server
//! decides) gets a *standing order* ([`ToSpawner::RestartAtOnce`]): the
//! Spawner starts it again as soon as it reaps it and reports the end
//! with the new process, saving the round trip to the Server and back on
//! the restart's path. An order is used once and lapses when the process
//! is signalled (a stop goes through here), when the Server connection
//! changes, or when the Server calls it off.
//!
//! Its state (`<domain>/ha/spawner.json`: what runs, what ended
//! unacknowledged) is rewritten after every change,
//! so that a Spawner started after one was killed takes up the processes:
//! they were reparented to the node process, so it watches them with a
//! pidfd and asks the node how they ended. A process started by a Spawner
//! killed before it could write the pid down is found by its environment
//! (`MTIPC_HA_PROCESS`, `MTIPC_HA_SOCKET`, a session leader whose parent is
//! the node process) and taken up too: never started twice.

use super::wire::{
    self, Conn, Ended, FromSpawner, NodeExit, Running, SpawnerState, ToNode, ToSpawner,
};
use super::{log, Ctx, Pid};
use crate::ha::spawn::{self, Exit};
use crate::ha::supervisor::socket_path;
use mtipc::ha::config::Config;
use mtipc::internals::sync::Ordering;
use mtipc::log::Level;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

struct Adopted {
    run: Running,
    fd: OwnedFd,
    /// When its pidfd said it ended (its exit asked of the node since).
    gone_at: Option<Instant>,
}

struct Spawner {
    ctx: Ctx,
    config: Config,
    state: SpawnerState,
    /// Started by this Spawner: reaped with waitpid.
    children: Vec<Running>,
    /// Started by an earlier one: watched with pidfds.
    adopted: Vec<Adopted>,
    node: Option<Conn>,
    /// The state changed since it was last written.
    dirty: bool,
    /// Standing orders of the current Server connection: pid -> (its
    /// start time, only if it failed).
    orders: HashMap<u32, (u64, bool)>,
}

/// The Spawner's main: runs until the node is gone or it is told to end.
pub fn run(ctx: Ctx) -> std::process::ExitCode {
    let super::Begun {
        lock: _lock,
        config,
        wake,
    } = match super::begin(&ctx, super::Role::Spawner) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let listener = match wire::listen(&super::spawner_socket(&ctx.domain)) {
        Ok(l) => l,
        Err(e) => return super::failed(super::Role::Spawner, "socket: ", e),
    };
    let mut sp = Spawner {
        state: SpawnerState::load(&super::spawner_state(&ctx.domain)),
        ctx,
        config,
        children: Vec::new(),
        adopted: Vec::new(),
        node: None,
        dirty: false,
        orders: HashMap::new(),
    };
    sp.take_up();
    let mut server: Option<Conn> = None;
    // Ends sent on the current Server connection (each once; all again
    // on a new connection, until acknowledged).
    let mut sent: Vec<u32> = Vec::new();
    let mut last_node_check = Instant::now();
    // When a write of the state put off after an end is due.
    let mut save_due: Option<Instant> = None;
    loop {
        if super::STOPS.load(Ordering::Acquire) > 0 {
            break;
        }
        // Every round (a poll of its pidfd, which also ends the wait
        // below; /proc at most every 200 ms without one).
        if sp.ctx.node_fd.is_some() || last_node_check.elapsed() > Duration::from_millis(200) {
            last_node_check = Instant::now();
            if !sp.ctx.node_alive() {
                log(
                    Level::Warn,
                    "spawner: the node process is gone; SIGKILL to every process group",
                );
                for r in sp.children.iter().chain(sp.adopted.iter().map(|a| &a.run)) {
                    spawn::signal_group(r.pid, libc::SIGKILL);
                }
                break;
            }
        }
        // Wait for: the Server, a new connection, a child's end
        // (SIGCHLD pokes the wake pipe), an adopted process's end.
        {
            let mut fds: Vec<BorrowedFd<'_>> = vec![wake.as_fd(), listener.as_fd()];
            // The node process's end wakes the wait too.
            if let Some(n) = &sp.ctx.node_fd {
                fds.push(n.as_fd());
            }
            if let Some(s) = &server {
                fds.push(s.fd());
            }
            for a in &sp.adopted {
                if a.gone_at.is_none() {
                    fds.push(a.fd.as_fd());
                }
            }
            // Everything that matters wakes the wait; the timeout only
            // paces the asking of the node for an adopted process's end.
            let mut wait = if sp.adopted.iter().any(|a| a.gone_at.is_some()) {
                Duration::from_millis(5)
            } else {
                Duration::from_secs(2)
            };
            if let Some(t) = save_due {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            crate::ha::poll_fds(&fds, wait);
        }
        super::drain(&wake);
        while let Ok((s, _)) = listener.accept() {
            if !wire::peer_allowed(&s, "spawner socket") {
                continue;
            }
            // The newest connection is the Server (a restarted one).
            match Conn::new(s) {
                Ok(c) => {
                    server = Some(c);
                    sent.clear();
                    // The orders were the last Server's.
                    sp.orders.clear();
                }
                Err(e) => log(Level::Warn, &format!("spawner: {e}")),
            }
        }
        sp.reap();
        sp.check_adopted();
        let mut answered = false;
        let mut ended_now = false;
        if let Some(s) = &mut server {
            for l in s.lines() {
                answered = true;
                match wire::parse::<ToSpawner>(&l) {
                    Ok(m) => {
                        let answer = sp.handle(m);
                        if let Some(a) = answer {
                            s.send(&a);
                        }
                    }
                    Err(e) => {
                        log(Level::Warn, &format!("spawner: from the Server: {e}"));
                        s.send(&FromSpawner::Failed {
                            name: String::new(),
                            why: e,
                        });
                    }
                }
            }
            // Ends not sent on this connection yet.
            sent.retain(|p| sp.state.ended.iter().any(|e| e.pid == *p));
            for e in &sp.state.ended {
                if sent.contains(&e.pid) {
                    continue;
                }
                if !s.send(&FromSpawner::Exited(e.clone())) {
                    break;
                }
                sent.push(e.pid);
                ended_now = true;
            }
            if s.closed() {
                server = None;
                // Orders are the connection's: a Server that is gone
                // cannot take up a process started on one.
                sp.orders.clear();
            }
        }
        // Written after the ends went out, and after the Server's answer
        // to them (a restart, most often, which comes within a fraction
        // of a millisecond; at most SAVE_DELAY later): a restart is not
        // delayed by the write (a Spawner killed in between leaves the
        // process in its state's `running`; its successor finds it gone
        // and asks the node, which did not reap it: reported as SIGKILL).
        if sp.dirty {
            if ended_now && !answered && save_due.is_none() {
                save_due = Some(Instant::now() + SAVE_DELAY);
            } else if answered || save_due.map_or(true, |t| Instant::now() >= t) {
                sp.save();
                save_due = None;
            }
        } else {
            save_due = None;
        }
    }
    // A write put off (SAVE_DELAY) is not lost with the loop.
    if sp.dirty {
        sp.save();
    }
    let _ = std::fs::remove_file(super::spawner_socket(&sp.ctx.domain));
    std::process::ExitCode::SUCCESS
}

/// How long the write of the state waits after an end for the Server's
/// answer (see the main loop).
const SAVE_DELAY: Duration = Duration::from_millis(5);

impl Spawner {
    fn save(&mut self) {
        self.dirty = false;
        self.state.running = self.running();
        self.state.store(&super::spawner_state(&self.ctx.domain));
    }

    /// What runs now: its children and the processes it took up (the
    /// state file's `running` is as of its last write).
    fn running(&self) -> Vec<Running> {
        self.children
            .iter()
            .cloned()
            .chain(self.adopted.iter().map(|a| a.run.clone()))
            .collect()
    }

    /// Takes up what an earlier Spawner left.
    fn take_up(&mut self) {
        let runs = std::mem::take(&mut self.state.running);
        for r in runs {
            self.adopt(r);
        }
        self.state.starting = None;
        // A process started by a Spawner killed between its fork and the
        // write of its state: found by its environment.
        // Only a child of the node process (where the Spawner's orphans
        // go) of a name nothing else runs under: a process's own child
        // that made itself a session with the same environment is not it.
        for r in find_by_env(&socket_path(&self.ctx.domain), self.ctx.node.pid) {
            let known = self.adopted.iter().any(|a| a.run.name == r.name)
                || self.state.ended.iter().any(|e| e.pid == r.pid);
            if !known && self.config.processes.iter().any(|p| p.name == r.name) {
                log(
                    Level::Info,
                    &format!(
                        "spawner: {}: pid {} was started by a Spawner that died before writing it down; taken up",
                        r.name, r.pid
                    ),
                );
                self.adopt(r);
            }
        }
        self.save();
        if !self.adopted.is_empty() {
            log(
                Level::Info,
                &format!("spawner: took up {} running processes", self.adopted.len()),
            );
        }
    }

    fn adopt(&mut self, r: Running) {
        let p = Pid {
            pid: r.pid,
            start: r.start,
        };
        match super::pidfd(p) {
            Some(fd) => self.adopted.push(Adopted {
                run: r,
                fd,
                gone_at: None,
            }),
            None => {
                // Ended while no Spawner ran: the node reaped it.
                let exit = self.ask_node(&r).unwrap_or(Exit::Signal(libc::SIGKILL));
                self.ended(r, exit);
            }
        }
    }

    fn node(&mut self) -> Option<&mut Conn> {
        if self.node.as_ref().map_or(true, Conn::closed) {
            self.node = wire::connect(&super::node_socket(&self.ctx.domain))
                .and_then(Conn::new)
                .ok();
        }
        self.node.as_mut()
    }

    /// How the node saw `r` end, if it has reaped it.
    fn ask_node(&mut self, r: &Running) -> Option<Exit> {
        let c = self.node()?;
        if !c.send(&ToNode::Exit {
            pid: r.pid,
            start: r.start,
        }) {
            return None;
        }
        let lines = c.wait_lines(Duration::from_secs(1));
        lines
            .last()
            .and_then(|l| wire::parse::<NodeExit>(l).ok())
            .and_then(|n| n.exit)
    }

    /// Records the end of `r` (to report), after starting it again at
    /// once if a standing order says so.
    fn ended(&mut self, r: Running, exit: Exit) {
        let order = self.orders.remove(&r.pid);
        let then = match order {
            Some((start, failed_only)) if start == r.start && (!failed_only || exit.failed()) => {
                match self.spawn(&r.name) {
                    FromSpawner::Spawned { name, pid, start } => Some(Running { name, pid, start }),
                    FromSpawner::Failed { why, .. } => {
                        // Reported as a plain end: the Server's own
                        // request gets the reason.
                        log(
                            Level::Debug,
                            &format!(
                                "spawner: {}: could not start it again at once: {why}",
                                r.name
                            ),
                        );
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match &then {
            Some(n) => log(
                Level::Debug,
                &format!(
                    "spawner: {} (pid {}) ended: {exit}; started again at once (standing order): pid {}",
                    r.name, r.pid, n.pid
                ),
            ),
            None => log(
                Level::Debug,
                &format!("spawner: {} (pid {}) ended: {exit}", r.name, r.pid),
            ),
        }
        self.state.ended.push(Ended {
            name: r.name,
            pid: r.pid,
            start: r.start,
            exit,
            then,
        });
    }

    /// Whether `pid`, started at `start`, is a process this Spawner runs.
    fn ours(&self, pid: u32, start: u64) -> bool {
        self.children
            .iter()
            .chain(self.adopted.iter().map(|a| &a.run))
            .any(|r| r.pid == pid && r.start == start)
    }

    fn reap(&mut self) {
        loop {
            let kids = &self.children;
            let reaped = spawn::reap(|pid| {
                if kids.iter().any(|r| r.pid == pid) {
                    spawn::signal_group(pid, libc::SIGKILL);
                }
            });
            let Some((pid, exit)) = reaped else { break };
            if let Some(k) = self.children.iter().position(|r| r.pid == pid) {
                let r = self.children.swap_remove(k);
                self.ended(r, exit);
                self.dirty = true;
            }
        }
    }

    fn check_adopted(&mut self) {
        let now = Instant::now();
        let mut k = 0;
        while k < self.adopted.len() {
            let a = &mut self.adopted[k];
            if a.gone_at.is_none() {
                let p = Pid {
                    pid: a.run.pid,
                    start: a.run.start,
                };
                if !p.alive() {
                    a.gone_at = Some(now);
                }
            }
            let Some(at) = self.adopted[k].gone_at else {
                k += 1;
                continue;
            };
            let run = self.adopted[k].run.clone();
            let exit = match self.ask_node(&run) {
                Some(e) => e,
                None if at.elapsed() < Duration::from_secs(2) => {
                    k += 1;
                    continue;
                }
                None => {
                    log(
                        Level::Warn,
                        &format!(
                            "spawner: {} (pid {}) ended but the node does not say how; taken as SIGKILL",
                            run.name, run.pid
                        ),
                    );
                    Exit::Signal(libc::SIGKILL)
                }
            };
            self.adopted.swap_remove(k);
            self.ended(run, exit);
            self.dirty = true;
        }
    }

    fn handle(&mut self, m: ToSpawner) -> Option<FromSpawner> {
        match m {
            ToSpawner::List => Some(FromSpawner::Listed {
                running: self.running(),
                ended: self.state.ended.clone(),
            }),
            ToSpawner::Ack { pid } => {
                let before = self.state.ended.len();
                self.state.ended.retain(|e| e.pid != pid);
                if self.state.ended.len() != before {
                    self.dirty = true;
                }
                None
            }
            ToSpawner::Signal { pid, start, sig } => {
                // A signalled process is being stopped (or killed): its
                // end is the Server's to decide on.
                self.orders.remove(&pid);
                if self.ours(pid, start) && (Pid { pid, start }).alive() {
                    spawn::signal_group(pid, sig);
                }
                None
            }
            ToSpawner::RestartAtOnce {
                pid,
                start,
                failed_only,
            } => {
                // Only for a process that runs now: an order that crossed
                // the process's end lapses with it.
                if self.ours(pid, start) {
                    self.orders.insert(pid, (start, failed_only));
                }
                None
            }
            ToSpawner::CallOff { pid } => {
                self.orders.remove(&pid);
                None
            }
            ToSpawner::Spawn { name } => Some(self.spawn(&name)),
        }
    }

    fn spawn(&mut self, name: &str) -> FromSpawner {
        let Some(p) = self
            .config
            .processes
            .iter()
            .find(|p| p.name == name)
            .cloned()
        else {
            return FromSpawner::Failed {
                name: name.into(),
                why: format!("no process {name:?} in the configuration"),
            };
        };
        let running = self
            .children
            .iter()
            .chain(self.adopted.iter().map(|a| &a.run))
            .find(|r| r.name == name)
            .cloned();
        if let Some(r) = running {
            // Already running (the Server asked twice, or took it up late):
            // never a second one.
            return FromSpawner::Spawned {
                name: r.name,
                pid: r.pid,
                start: r.start,
            };
        }
        let log_file = p.log_file(&self.ctx.domain);
        let socket = socket_path(&self.ctx.domain);
        let answer = match spawn::start(&p, &log_file, Some(&socket)) {
            Ok((s, rd, writer)) => {
                let sent = self
                    .node()
                    .map(|n| n.send_fd(&ToNode::Log { name: name.into() }, &rd));
                if matches!(sent, Some(Ok(()))) {
                    drop(writer);
                } else {
                    // Copied here then (until this Spawner ends): a pipe
                    // nobody reads would stop the process, or kill it with
                    // SIGPIPE once the reader is gone.
                    log(
                        Level::Warn,
                        &format!("spawner: {name}: the node did not take its log pipe; this Spawner copies it"),
                    );
                    if let Err(e) = spawn::copy_log(name, rd, writer) {
                        log(Level::Error, &format!("spawner: {name}: log thread: {e}"));
                    }
                }
                self.children.push(Running {
                    name: name.into(),
                    pid: s.pid,
                    start: s.start,
                });
                FromSpawner::Spawned {
                    name: name.into(),
                    pid: s.pid,
                    start: s.start,
                }
            }
            Err(why) => FromSpawner::Failed {
                name: name.into(),
                why,
            },
        };
        // Written once the answer is out (the main loop saves when dirty):
        // the pid must be known to a successor, and one started before
        // this write finds the process by its environment.
        self.dirty = true;
        answer
    }
}

/// The session leaders, children of `parent`, whose environment names the
/// node whose hooks socket is `socket` (`MTIPC_HA_SOCKET`) and a process of
/// it (`MTIPC_HA_PROCESS`): the node's orphaned processes, as `/proc`
/// shows them.
fn find_by_env(socket: &Path, parent: u32) -> Vec<Running> {
    let want_name = format!("{}=", spawn::PROCESS_ENV);
    let want_sock = format!("{}={}", mtipc::ha::SOCKET_ENV, socket.display());
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for d in dir.flatten() {
        let Some(pid) = d.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // SAFETY: getsid has no memory effects.
        if unsafe { libc::getsid(pid as libc::pid_t) } != pid as libc::pid_t {
            continue;
        }
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                let rest = &st[st.rfind(')')? + 1..];
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if ppid != Some(parent) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if !vars.contains(&want_sock.as_bytes()) {
            continue;
        }
        let name = vars
            .iter()
            .find_map(|v| v.strip_prefix(want_name.as_bytes()))
            .and_then(|n| std::str::from_utf8(n).ok());
        if let (Some(name), Ok(Some(p))) = (name, mtipc::internals::sys::ProcId::of(pid)) {
            out.push(Running {
                name: name.into(),
                pid,
                start: p.start,
            });
        }
    }
    out
}
