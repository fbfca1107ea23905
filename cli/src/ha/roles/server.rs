//! The HA Server: owns the node's state table
//! ([`crate::ha::supervisor::Supervisor`]): decides what runs, answers
//! the operator's commands on `<domain>/ha/control.sock` (the protocol of
//! [`crate::ha::control`]), writes the status file. It asks the Spawner
//! to start and signal processes, tells the Monitor what to watch, and
//! hears from both (its [`Remote`] backend). On a single node its role is
//! always active (epoch 1); the duplex pair will make it decide.
//!
//! A Server started after one was killed takes up the table: the status
//! file the last one wrote (what is wanted, restarts, last exits, states)
//! and the Spawner's list of what runs; nothing running is restarted.

use super::wire::{self, Conn, Ended, FromSpawner, Running, ToMonitor, ToSpawner};
use super::{log, Ctx, Pid, Role};
use crate::ha::control::{self, Control};
use crate::ha::monitor::{Seen, Watch};
use crate::ha::spawn::{self, Spawned};
use crate::ha::supervisor::{
    self, AtOnce, Backend, Happening, Options, SpawnError, Status, Supervisor,
};
use mtipc::ha::config::Process;
use mtipc::internals::sync::Ordering;
use mtipc::log::Level;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The Server's backend: the Spawner and the Monitor over their sockets.
pub struct Remote {
    domain: PathBuf,
    spawner: Option<Conn>,
    monitor: Option<Conn>,
    wake: OwnedFd,
    watches: BTreeMap<u32, Watch>,
    pending: Vec<Happening>,
    /// Ends to acknowledge to the Spawner: those handed to the table
    /// (`unhanded` until then), sent after the request that follows them
    /// (the restart's `spawn`), so that the Spawner, woken by the first
    /// line, finds that request already there.
    acks: Vec<u32>,
    /// Ends read but not handed to the table yet (in `pending`).
    unhanded: Vec<u32>,
    /// The standing orders the Spawner has on this connection, as this
    /// side knows them: pid -> (start, only if it failed).
    orders: BTreeMap<u32, (u64, bool)>,
    /// Processes the Spawner started again at once on an order, until the
    /// table asks for them (`spawn`).
    restarted: Vec<Restarted>,
    tried: Instant,
}

const RETRY: Duration = Duration::from_millis(20);

/// A process the Spawner started again at once on an order, not yet
/// taken by the table.
struct Restarted {
    run: Running,
    /// Its predecessor's end has been handed to the table (then a round
    /// has passed, and one the table did not ask for is not wanted).
    delivered: bool,
    /// How it ended, if it ended before the table took it: the end is
    /// handed to the table once it has (so that the table counts it and
    /// restarts it, or not, by its policy).
    ended: Option<crate::ha::spawn::Exit>,
}

impl Remote {
    fn new(domain: &Path, wake: OwnedFd) -> Remote {
        Remote {
            domain: domain.to_path_buf(),
            spawner: None,
            monitor: None,
            wake,
            watches: BTreeMap::new(),
            pending: Vec::new(),
            acks: Vec::new(),
            unhanded: Vec::new(),
            orders: BTreeMap::new(),
            restarted: Vec::new(),
            tried: Instant::now() - RETRY,
        }
    }

    fn connect(&mut self) {
        if self.tried.elapsed() < RETRY {
            return;
        }
        self.tried = Instant::now();
        if self.spawner.as_ref().map_or(true, Conn::closed) {
            self.spawner = wire::connect(&super::spawner_socket(&self.domain))
                .and_then(Conn::new)
                .ok();
            // A new connection has no orders (the Spawner drops them).
            self.orders.clear();
        }
        if self.monitor.as_ref().map_or(true, Conn::closed) {
            self.monitor = wire::connect(&super::monitor_socket(&self.domain))
                .and_then(Conn::new)
                .ok();
            if let Some(m) = &mut self.monitor {
                let list = self.watches.values().cloned().collect();
                m.send(&ToMonitor::WatchAll { list });
            }
        }
    }

    /// Handles a line from the Spawner that is news (an end); returns
    /// the others.
    fn spawner_line(&mut self, l: &[u8]) -> Option<FromSpawner> {
        match wire::parse::<FromSpawner>(l) {
            Ok(FromSpawner::Exited(e)) => {
                // The order, if any, was used or lapsed with the process.
                self.orders.remove(&e.pid);
                // A process started on an order that has ended before the
                // table took it: its end waits until the table has it.
                if let Some(r) = self.restarted.iter_mut().find(|r| r.run.pid == e.pid) {
                    r.ended = Some(e.exit);
                    return None;
                }
                // Started again on an order: for the table to take, if the
                // process it replaces is one the table runs (an end sent
                // again to a new Server was taken up through the list,
                // and the new process with it), once (an end sent twice).
                if let Some(n) = e.then {
                    if self.watches.contains_key(&e.pid)
                        && !self.restarted.iter().any(|r| r.run.pid == n.pid)
                    {
                        self.restarted.push(Restarted {
                            run: n,
                            delivered: false,
                            ended: None,
                        });
                    }
                }
                self.unhanded.push(e.pid);
                self.pending.push(Happening::Exited {
                    pid: e.pid,
                    exit: e.exit,
                });
                None
            }
            Ok(m) => Some(m),
            Err(e) => {
                log(Level::Warn, &format!("server: from the Spawner: {e}"));
                None
            }
        }
    }

    /// Sends the acknowledgements of the ends taken in (an end not
    /// acknowledged, on a connection that is gone, is sent again by the
    /// Spawner to the next Server).
    fn send_acks(&mut self) {
        let acks = std::mem::take(&mut self.acks);
        if let Some(s) = &mut self.spawner {
            for pid in acks {
                s.send(&ToSpawner::Ack { pid });
            }
        }
    }

    /// Sends `m` to the Spawner, then the acknowledgements due, and waits
    /// up to 5 s for the first answer that `want` takes (news meanwhile are
    /// kept).
    fn ask<T>(&mut self, m: &ToSpawner, want: impl Fn(FromSpawner) -> Option<T>) -> Option<T> {
        self.connect();
        if !self.spawner.as_mut()?.send(m) {
            return None;
        }
        self.send_acks();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let lines = self
                .spawner
                .as_mut()?
                .wait_lines(end.saturating_duration_since(Instant::now()));
            // Every line of the batch is taken (an end may follow the
            // answer in it); the first the caller wants is the answer.
            let mut answer = None;
            for l in lines {
                if let Some(x) = self.spawner_line(&l) {
                    if answer.is_none() {
                        answer = want(x);
                    }
                }
            }
            if answer.is_some() {
                return answer;
            }
            if self.spawner.as_ref().map_or(true, Conn::closed) {
                return None;
            }
        }
        None
    }

    /// What the Spawner runs, and what ended that it has not been told
    /// we know (`None`: no Spawner answers now).
    fn list(&mut self) -> Option<(Vec<Running>, Vec<Ended>)> {
        self.ask(&ToSpawner::List, |m| match m {
            FromSpawner::Listed { running, ended } => Some((running, ended)),
            _ => None,
        })
    }
}

impl Backend for Remote {
    fn spawn(&mut self, p: &Process, _log: &Path) -> Result<Spawned, SpawnError> {
        if let Some(k) = self.restarted.iter().position(|r| r.run.name == p.name) {
            let Restarted { run: r, ended, .. } = self.restarted.swap_remove(k);
            if let Some(exit) = ended {
                // Ended already: the table hears of it next round.
                self.pending.push(Happening::Exited { pid: r.pid, exit });
                self.unhanded.push(r.pid);
            }
            return Ok(Spawned {
                pid: r.pid,
                start: r.start,
            });
        }
        let name = p.name.clone();
        let got = self.ask(&ToSpawner::Spawn { name: name.clone() }, |m| match m {
            FromSpawner::Spawned {
                name: n,
                pid,
                start,
            } if n == name => Some(Ok(Spawned { pid, start })),
            FromSpawner::Failed { name: n, why } if n == name => Some(Err(why)),
            _ => None,
        });
        match got {
            Some(Ok(s)) => Ok(s),
            Some(Err(why)) => Err(SpawnError::Failed(why)),
            None => Err(SpawnError::Unavailable(
                "the Spawner does not answer (it is being restarted)".into(),
            )),
        }
    }

    fn signal(&mut self, pid: u32, start: u64, sig: i32) {
        // The Spawner drops its order for a process it signals.
        self.orders.remove(&pid);
        self.connect();
        let sent = self
            .spawner
            .as_mut()
            .is_some_and(|s| s.send(&ToSpawner::Signal { pid, start, sig }));
        if !sent && (Pid { pid, start }).alive() {
            // No Spawner now: the signal cannot wait for one (a stop
            // timeout runs); the process is checked against its start
            // time, so its group id is its own.
            spawn::signal_group(pid, sig);
        }
    }

    fn watch(&mut self, w: Watch) {
        if let Some(m) = &mut self.monitor {
            m.send(&ToMonitor::Watch(w.clone()));
        }
        self.watches.insert(w.pid, w);
    }

    fn unwatch(&mut self, pid: u32) {
        self.watches.remove(&pid);
        if let Some(m) = &mut self.monitor {
            m.send(&ToMonitor::Unwatch { pid });
        }
    }

    fn restart_at_once(&mut self, now: &[AtOnce]) {
        let Some(s) = &mut self.spawner else {
            self.orders.clear();
            return;
        };
        // The changes of the orders, then the acknowledgements due (of
        // the ends handed to the table, which this round acted on), in
        // one write: the Spawner wakes once for them.
        let mut msgs = Vec::new();
        let given: HashSet<u32> = now.iter().map(|a| a.pid).collect();
        self.orders.retain(|pid, _| {
            let keep = given.contains(pid);
            if !keep {
                msgs.push(ToSpawner::CallOff { pid: *pid });
            }
            keep
        });
        for a in now {
            let want = (a.start, a.failed_only);
            if self.orders.insert(a.pid, want) != Some(want) {
                msgs.push(ToSpawner::RestartAtOnce {
                    pid: a.pid,
                    start: a.start,
                    failed_only: a.failed_only,
                });
            }
        }
        msgs.extend(self.acks.drain(..).map(|pid| ToSpawner::Ack { pid }));
        s.send_all(&msgs);
    }

    fn wait(&mut self, wait: Duration, out: &mut Vec<Happening>) {
        // A process restarted on an order that the table did not ask for
        // in the round that heard of its predecessor's end (it stopped
        // wanting it in the meantime: an order and a stop crossed) is
        // killed.
        let mut k = 0;
        while k < self.restarted.len() {
            if !self.restarted[k].delivered {
                k += 1;
                continue;
            }
            let Restarted { run: r, ended, .. } = self.restarted.swap_remove(k);
            if ended.is_some() {
                // Gone already: nothing to kill, its end only to
                // acknowledge.
                self.acks.push(r.pid);
                continue;
            }
            if self.watches.contains_key(&r.pid) {
                // The table runs it (taken up otherwise): not ours to kill.
                continue;
            }
            log(
                Level::Info,
                &format!(
                    "server: {} (pid {}) was started again at once but is not wanted now; SIGKILL",
                    r.name, r.pid
                ),
            );
            self.signal(r.pid, r.start, libc::SIGKILL);
        }
        self.connect();
        // Acknowledgements that a round without a Spawner connection left
        // (a round sends its own with its orders, `restart_at_once`).
        self.send_acks();
        let mut wait = if self.pending.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        if self.spawner.is_none() || self.monitor.is_none() {
            wait = wait.min(RETRY);
        }
        {
            let mut fds: Vec<BorrowedFd<'_>> = vec![self.wake.as_fd()];
            if let Some(s) = &self.spawner {
                fds.push(s.fd());
            }
            if let Some(m) = &self.monitor {
                fds.push(m.fd());
            }
            crate::ha::poll_fds(&fds, wait);
        }
        super::drain(&self.wake);
        let lines = self.spawner.as_mut().map(Conn::lines).unwrap_or_default();
        for l in lines {
            if let Some(m) = self.spawner_line(&l) {
                log(
                    Level::Debug,
                    &format!("server: a late answer from the Spawner: {m:?}"),
                );
            }
        }
        if let Some(m) = &mut self.monitor {
            for l in m.lines() {
                match wire::parse::<Seen>(&l) {
                    Ok(s) => self.pending.push(Happening::Seen(s)),
                    Err(e) => log(Level::Warn, &format!("server: from the Monitor: {e}")),
                }
            }
        }
        if self.spawner.as_ref().is_some_and(Conn::closed) {
            self.spawner = None;
        }
        if self.monitor.as_ref().is_some_and(Conn::closed) {
            self.monitor = None;
        }
        out.append(&mut self.pending);
        self.acks.append(&mut self.unhanded);
        for r in &mut self.restarted {
            r.delivered = true;
        }
    }
}

/// The roles and their pids, for the status.
fn roles(ctx: &Ctx) -> serde_json::Value {
    let mut v = json!({ "split": true, "node_pid": ctx.node.pid });
    for r in Role::ALL {
        v[r.as_str()] = match super::running(&ctx.domain, r) {
            Some(p) => json!(p.pid),
            None => serde_json::Value::Null,
        };
    }
    v
}

/// The status a previous Server left, if it parses (untrusted input).
fn previous(path: &Path) -> Option<Status> {
    let bytes = std::fs::read(path).ok()?;
    match wire::parse::<Status>(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            log(
                Level::Warn,
                &format!("server: {}: {e}; not taken up", path.display()),
            );
            None
        }
    }
}

/// The Server's main.
pub fn run(ctx: Ctx) -> std::process::ExitCode {
    let super::Begun {
        lock: _lock,
        config,
        wake,
    } = match super::begin(&ctx, Role::Server) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let control = match Control::bind(&control::control_path(&ctx.domain), super::poke) {
        Ok(c) => c,
        Err(e) => return super::failed(Role::Server, "control socket: ", e),
    };
    let status_file = supervisor::status_path(&ctx.domain);
    let old = previous(&status_file);
    let mut remote = Remote::new(&ctx.domain, wake);
    // The Spawner's list first: nothing is decided before the Server
    // knows what runs.
    let (running, ended) = loop {
        if let Some(l) = remote.list() {
            break l;
        }
        if !ctx.node_alive() || super::STOPS.load(Ordering::Acquire) > 1 {
            return std::process::ExitCode::SUCCESS;
        }
        std::thread::sleep(RETRY);
    };
    let stopping = super::stopping_marker(&ctx.domain).exists();
    // Ends of processes the last Server knew as running are taken up as
    // running, then ended by their exits (queued); other ends are old.
    let mut table: Vec<(String, u32, u64)> = running
        .iter()
        .map(|r| (r.name.clone(), r.pid, r.start))
        .collect();
    for e in &ended {
        let known = old.as_ref().is_some_and(|o| {
            o.processes
                .iter()
                .any(|p| p.name == e.name && p.pid == Some(e.pid) && p.start == Some(e.start))
        });
        if known && !table.iter().any(|t| t.0 == e.name) {
            table.push((e.name.clone(), e.pid, e.start));
        }
        // Ended and started again at once on the last Server's order, the
        // end not handled by it: taken up as the old process, whose end
        // the table then handles (the restart counted), answered by the
        // new one.
        if let (true, Some(n)) = (known, &e.then) {
            if let Some(t) = table
                .iter_mut()
                .find(|t| t.0 == n.name && t.1 == n.pid && t.2 == n.start)
            {
                *t = (e.name.clone(), e.pid, e.start);
                remote.restarted.push(Restarted {
                    run: n.clone(),
                    delivered: false,
                    ended: None,
                });
            }
        }
        remote.pending.push(Happening::Exited {
            pid: e.pid,
            exit: e.exit,
        });
        // Sent once the table has it, as every acknowledgement is.
        remote.unhanded.push(e.pid);
    }
    let mut sup = Supervisor::new(
        &config,
        Box::new(remote),
        Options {
            status_file: Some(status_file),
            domain: ctx.domain.clone(),
        },
    );
    sup.set_roles(roles(&ctx));
    match &old {
        Some(o) => {
            log(
                Level::Info,
                &format!(
                    "server (pid {}): taking up the table ({} running)",
                    std::process::id(),
                    table.len()
                ),
            );
            sup.take_up(o, &table, stopping);
        }
        None => {
            log(
                Level::Info,
                &format!("server (pid {}): starting the node", std::process::id()),
            );
            if stopping {
                sup.take_up(
                    &Status {
                        version: 1,
                        node: config.node.name.clone(),
                        supervisor_pid: 0,
                        roles: None,
                        updated_unix_ms: 0,
                        stopping: true,
                        processes: Vec::new(),
                    },
                    &table,
                    true,
                );
            } else {
                sup.start_all();
            }
        }
    }
    let mut checked = Instant::now();
    loop {
        let stop = super::STOPS.load(Ordering::Acquire) > 0
            || super::stopping_marker(&ctx.domain).exists();
        if stop && !sup.node_stopping() {
            log(
                Level::Info,
                "server: stopping every process in reverse order",
            );
            sup.stop_all();
        }
        if sup.node_stopping() && sup.all_exited() {
            sup.step(Duration::ZERO);
            sup.flush_status();
            let _ = std::fs::write(super::stopped_marker(&ctx.domain), b"");
            break;
        }
        sup.step(Duration::from_secs(1));
        // The roles' pids as they are now before an answer (a role
        // restarted a moment ago shows its new pid), and every 250 ms for
        // the status file; not on every round (five lock files and /proc).
        let stopping = sup.node_stopping();
        control.serve_with(&mut sup, stopping, |s| s.set_roles(roles(&ctx)));
        if checked.elapsed() > Duration::from_millis(250) {
            checked = Instant::now();
            if !ctx.node_alive() {
                break;
            }
            sup.set_roles(roles(&ctx));
        }
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::spawn::Exit;
    use mtipc::ha::config::Config;
    use std::os::unix::net::UnixStream;

    /// A Remote whose Spawner is the other end of a socket pair (no
    /// Monitor: its connection fails and is not needed here).
    fn remote() -> (Remote, Conn) {
        let (a, b) = UnixStream::pair().unwrap();
        let (w, _keep) = UnixStream::pair().unwrap();
        let mut r = Remote::new(Path::new("/nonexistent/mtipc-test"), OwnedFd::from(w));
        r.spawner = Some(Conn::new(a).unwrap());
        (r, Conn::new(b).unwrap())
    }

    fn config() -> Config {
        Config::parse(
            "[node]\nname = \"t\"\n[[process]]\nname = \"a\"\ncommand = [\"/bin/true\"]\nrestart_backoff_ms = 0\n",
            Path::new("t.toml"),
        )
        .unwrap()
    }

    fn watch(r: &mut Remote, pid: u32, start: u64) {
        r.watch(Watch {
            name: "a".into(),
            pid,
            start,
            monitor_ms: 1000,
            watchdog_ms: 0,
        });
    }

    /// An end of a watched process that the Spawner followed with a new
    /// process on its order.
    fn ended_then(spawner: &mut Conn, pid: u32, new: u32) {
        // Start times no process has: nothing real is ever signalled.
        let e = Ended {
            name: "a".into(),
            pid,
            start: u64::MAX - 1,
            exit: Exit::Signal(9),
            then: Some(Running {
                name: "a".into(),
                pid: new,
                start: u64::MAX,
            }),
        };
        assert!(spawner.send(&FromSpawner::Exited(e)));
    }

    fn sent(spawner: &mut Conn) -> Vec<ToSpawner> {
        spawner
            .wait_lines(Duration::from_millis(100))
            .iter()
            .map(|l| wire::parse::<ToSpawner>(l).unwrap())
            .collect()
    }

    #[test]
    fn a_process_started_on_an_order_is_the_next_spawn_of_its_name() {
        let (mut r, mut sp) = remote();
        let cfg = config();
        watch(&mut r, 1_000_001, u64::MAX - 1);
        ended_then(&mut sp, 1_000_001, 1_000_002);
        let mut out = Vec::new();
        r.wait(Duration::from_millis(500), &mut out);
        assert!(
            matches!(out[..], [Happening::Exited { pid: 1_000_001, .. }]),
            "{out:?}"
        );
        // The table asks: answered by the new process, nothing sent.
        let s = r
            .spawn(cfg.process("a").unwrap(), Path::new("/dev/null"))
            .unwrap();
        assert_eq!((s.pid, s.start), (1_000_002, u64::MAX));
        r.wait(Duration::from_millis(10), &mut out);
        assert_eq!(sent(&mut sp), vec![ToSpawner::Ack { pid: 1_000_001 }]);
    }

    #[test]
    fn a_process_started_on_an_order_and_not_asked_for_is_killed() {
        let (mut r, mut sp) = remote();
        watch(&mut r, 1_000_001, u64::MAX - 1);
        ended_then(&mut sp, 1_000_001, 1_000_002);
        let mut out = Vec::new();
        r.wait(Duration::from_millis(500), &mut out);
        assert_eq!(out.len(), 1);
        // The round acted on the end without asking for the process (it
        // was being stopped): the next round kills it.
        r.wait(Duration::from_millis(10), &mut out);
        let msgs = sent(&mut sp);
        assert!(
            msgs.contains(&ToSpawner::Signal {
                pid: 1_000_002,
                start: u64::MAX,
                sig: libc::SIGKILL
            }),
            "{msgs:?}"
        );
        assert!(r.restarted.is_empty());
    }

    #[test]
    fn an_end_sent_again_for_a_process_not_watched_leaves_its_successor_alone() {
        let (mut r, mut sp) = remote();
        // Not watched: a new Server took the successor up from the list.
        ended_then(&mut sp, 1_000_001, 1_000_002);
        let mut out = Vec::new();
        r.wait(Duration::from_millis(500), &mut out);
        r.wait(Duration::from_millis(10), &mut out);
        let msgs = sent(&mut sp);
        assert!(
            !msgs.iter().any(|m| matches!(m, ToSpawner::Signal { .. })),
            "{msgs:?}"
        );
        assert!(r.restarted.is_empty());
    }

    #[test]
    fn a_process_started_on_an_order_that_ended_is_handed_out_then_its_end() {
        let (mut r, mut sp) = remote();
        watch(&mut r, 1_000_001, u64::MAX - 1);
        ended_then(&mut sp, 1_000_001, 1_000_002);
        // Its successor ended too before the table took it.
        let e = Ended {
            name: "a".into(),
            pid: 1_000_002,
            start: u64::MAX,
            exit: Exit::Code(1),
            then: None,
        };
        assert!(sp.send(&FromSpawner::Exited(e)));
        let cfg = config();
        let mut out = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while r.restarted.first().map_or(true, |x| x.ended.is_none()) {
            assert!(Instant::now() < end, "{out:?}");
            r.wait(Duration::from_millis(100), &mut out);
        }
        // The table hears of the first end only, takes the successor (it
        // would show a dead process as running, were its end dropped)...
        assert!(
            matches!(out[..], [Happening::Exited { pid: 1_000_001, .. }]),
            "{out:?}"
        );
        let s = r
            .spawn(cfg.process("a").unwrap(), Path::new("/dev/null"))
            .unwrap();
        assert_eq!(s.pid, 1_000_002);
        // ... and then hears of its end; each end is acknowledged once the
        // table has it (the first sent by this wait, the second due).
        r.wait(Duration::from_millis(10), &mut out);
        assert!(
            matches!(
                out[..],
                [
                    _,
                    Happening::Exited {
                        pid: 1_000_002,
                        exit: Exit::Code(1)
                    }
                ]
            ),
            "{out:?}"
        );
        assert_eq!(sent(&mut sp), vec![ToSpawner::Ack { pid: 1_000_001 }]);
        assert_eq!(r.acks, vec![1_000_002]);
    }

    #[test]
    fn an_end_read_twice_hands_out_its_successor_once() {
        let (mut r, mut sp) = remote();
        let cfg = config();
        watch(&mut r, 1_000_001, u64::MAX - 1);
        // Sent again on a new connection before the first was handled.
        ended_then(&mut sp, 1_000_001, 1_000_002);
        ended_then(&mut sp, 1_000_001, 1_000_002);
        let mut out = Vec::new();
        while out.len() < 2 {
            r.wait(Duration::from_millis(500), &mut out);
        }
        assert_eq!(r.restarted.len(), 1);
        let s = r
            .spawn(cfg.process("a").unwrap(), Path::new("/dev/null"))
            .unwrap();
        assert_eq!(s.pid, 1_000_002);
        // The table's own process: never killed.
        watch(&mut r, 1_000_002, u64::MAX);
        r.wait(Duration::from_millis(10), &mut out);
        let msgs = sent(&mut sp);
        assert!(
            !msgs.iter().any(|m| matches!(m, ToSpawner::Signal { .. })),
            "{msgs:?}"
        );
    }

    #[test]
    fn orders_are_sent_as_they_change_then_the_acks_due() {
        let (mut r, mut sp) = remote();
        let a = |pid| AtOnce {
            pid,
            start: 7,
            failed_only: false,
        };
        r.acks.push(5);
        r.restart_at_once(&[a(1), a(2)]);
        assert_eq!(
            sent(&mut sp),
            vec![
                ToSpawner::RestartAtOnce {
                    pid: 1,
                    start: 7,
                    failed_only: false
                },
                ToSpawner::RestartAtOnce {
                    pid: 2,
                    start: 7,
                    failed_only: false
                },
                ToSpawner::Ack { pid: 5 },
            ]
        );
        // Unchanged: nothing sent.
        r.restart_at_once(&[a(1), a(2)]);
        assert_eq!(sent(&mut sp), vec![]);
        // 1 called off; 2 signalled (the Spawner drops its order): given
        // again if the table still says so.
        r.signal(2, 7, 0);
        r.restart_at_once(&[a(2)]);
        assert_eq!(
            sent(&mut sp),
            vec![
                ToSpawner::Signal {
                    pid: 2,
                    start: 7,
                    sig: 0
                },
                ToSpawner::CallOff { pid: 1 },
                ToSpawner::RestartAtOnce {
                    pid: 2,
                    start: 7,
                    failed_only: false
                },
            ]
        );
    }
}
