//! The life cycle of a node's supervised processes (docs/ha.md "The life
//! cycle"): the state table, ordered start and stop, the restart policy
//! with its backoff and cap, and the monitoring at each process's
//! `monitor_ms` (liveness, `notify` readiness, watchdog heartbeats, the
//! health callback) through the hooks' [`Endpoint`].
//!
//! One [`Supervisor`] owns the table and is driven by one thread calling
//! [`Supervisor::step`]. What operators and the roles ask for goes through
//! [`Supervisor::start`], [`Supervisor::stop`], [`Supervisor::restart`],
//! [`Supervisor::start_group`], [`Supervisor::stop_group`],
//! [`Supervisor::start_all`] and [`Supervisor::stop_all`]: each only says
//! what is *wanted*; `step` does it in order. [`Supervisor::status`] is
//! the table as the status file gives it.
//!
//! Every state change is a log event (target `mtipc-ha`) and, when a
//! status file is set, rewrites it atomically.
//!
//! What the table asks for goes through a [`Backend`]: starting a process,
//! signalling its group, watching it; and what happened comes back from it
//! ([`Happening`]: an exit, something the Monitor saw). [`Local`] does it
//! all in this process (`mtipc-ha run`); the Server role of `mtipc-ha up`
//! uses one that talks to the Spawner and the Monitor roles.

use super::monitor::{Monitoring, Seen, Watch};
use super::spawn::{self, Exit, Spawned};
use mtipc::ha::config::{Config, Process, Ready, Restart};
use mtipc::internals::ha::Endpoint;
use mtipc::log::Level;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A supervised process's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not running and not wanted (or exited cleanly under its policy).
    Stopped,
    /// Wanted, but held back: a dependency is not up yet, or failed (the
    /// reason says which).
    Held,
    /// Started (`ready = "notify"`): waiting for its `mt_ha_ready`.
    Starting,
    /// Running (`ready = "started"`).
    Up,
    /// Running and said ready (`ready = "notify"`).
    Ready,
    /// Running, but its health callback said `fail` (or did not answer).
    Unhealthy,
    /// Sent its stop signal; waiting for its group to exit.
    Stopping,
    /// Ended; restarts when its backoff is over.
    Backoff,
    /// Will not run again by itself: it could not be executed (retried
    /// after its backoff while its policy allows), exited under
    /// `restart = "never"` or `on-failure` with a failure, or restarted
    /// more than `restart_max` times within `restart_window_ms`.
    Failed,
}

impl State {
    /// The state's word, as in the status file.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Held => "held",
            State::Starting => "starting",
            State::Up => "up",
            State::Ready => "ready",
            State::Unhealthy => "unhealthy",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::Failed => "failed",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a running process is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// Asked for (stop, restart, the node stopping): its exit is no failure.
    Asked,
    /// Its watchdog expired: its exit counts as a failure.
    Watchdog,
}

struct Stopping {
    cause: Cause,
    kill_at: Instant,
    killed: bool,
}

struct Entry {
    cfg: Process,
    log: PathBuf,
    want: bool,
    state: State,
    reason: Option<String>,
    pid: Option<u32>,
    start: u64,
    started_at: Option<SystemTime>,
    started: Instant,
    restarts: u64,
    /// When the restarts within the current window happened.
    recent: VecDeque<Instant>,
    last_exit: Option<String>,
    said_ready: bool,
    stopping: Option<Stopping>,
    /// When a process in backoff (or failed to execute) is started again.
    retry_at: Option<Instant>,
}

impl Entry {
    fn running(&self) -> bool {
        self.pid.is_some()
    }

    /// Up for its dependents: running, and ready if it is `notify`.
    fn is_up(&self) -> bool {
        self.running()
            && self.stopping.is_none()
            && matches!(self.state, State::Up | State::Ready | State::Unhealthy)
            && (self.cfg.ready == Ready::Started || self.said_ready)
    }
}

/// One process in the status file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// Why (held back, failed, backoff, unhealthy), else null.
    pub reason: Option<String>,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// Its start time (`/proc/<pid>/stat` field 22) while it runs.
    pub start: Option<u64>,
    /// When it started (ms since the epoch) while it runs.
    pub started_unix_ms: Option<u64>,
    /// How long it has run, in ms, while it runs.
    pub uptime_ms: Option<u64>,
    /// Restarts by the policy (not those asked for) since the supervisor
    /// started.
    pub restarts: u64,
    /// How it ended last: `exit N` or `signal SIGNAME`, with ` (watchdog)`
    /// when the watchdog stopped it.
    pub last_exit: Option<String>,
    /// Its tenant group.
    pub group: Option<String>,
    /// Whether it is wanted (started, or to be started).
    pub wanted: bool,
    /// Its log file (`log`, default `<domain>/ha/log/<name>.log`).
    pub log: PathBuf,
}

/// The status file (`<domain>/ha/status.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Format version: 1.
    pub version: u32,
    /// The node's name.
    pub node: String,
    /// The supervisor's pid (under `mtipc-ha up`: the Server's).
    pub supervisor_pid: u32,
    /// The roles and their pids (`mtipc-ha up`), or that they are not
    /// split (`mtipc-ha run`); set by the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<serde_json::Value>,
    /// When this was written (ms since the epoch).
    pub updated_unix_ms: u64,
    /// Whether the node is stopping (everything stops, in order).
    pub stopping: bool,
    /// The processes, in start order.
    pub processes: Vec<ProcessStatus>,
}

/// What happened to a process, as the backend reports it.
#[derive(Debug)]
pub enum Happening {
    /// It ended (reaped: the Spawner's `waitpid`).
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended.
        exit: Exit,
    },
    /// The Monitor saw something.
    Seen(Seen),
}

/// Why a backend could not start a process.
#[derive(Debug)]
pub enum SpawnError {
    /// The process cannot start (the reason, one line): it is `failed`
    /// and retried after its backoff.
    Failed(String),
    /// The Spawner cannot be reached now (it is being restarted): tried
    /// again in a later round, not counted against the process.
    Unavailable(String),
}

/// A running process that the table would start again at once if it
/// ended now (see [`Backend::restart_at_once`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtOnce {
    /// The process.
    pub pid: u32,
    /// Its start time.
    pub start: u64,
    /// Only if it fails (`restart = "on-failure"`).
    pub failed_only: bool,
}

/// Where the table's requests go and its news come from.
pub trait Backend {
    /// Starts `p` with its output to `log`.
    fn spawn(&mut self, p: &Process, log: &Path) -> Result<Spawned, SpawnError>;
    /// Sends `sig` to the process group of `pid` (a process it started).
    fn signal(&mut self, pid: u32, start: u64, sig: i32);
    /// Starts watching a running process (at its `monitor_ms`).
    fn watch(&mut self, w: Watch);
    /// Stops watching `pid`.
    fn unwatch(&mut self, pid: u32);
    /// Waits at most `wait` for news; appends them to `out`.
    fn wait(&mut self, wait: Duration, out: &mut Vec<Happening>);
    /// The running processes that the table would start again at once if
    /// they ended now, given after every round (the whole list each
    /// time). A backend may start such a process again as soon as it
    /// ends, before the table hears of the end, and answer the table's
    /// next [`Backend::spawn`] of that name with it; a process started so
    /// that the table does not ask for by the end of the round in which
    /// it hears of the end is the backend's to kill. Signalling a process
    /// ([`Backend::signal`]) calls this off for it at once. The default
    /// does nothing (the table starts every process itself).
    fn restart_at_once(&mut self, _now: &[AtOnce]) {}
}

/// The backend of `mtipc-ha run`: everything in this process. It spawns
/// with [`spawn::spawn`] (the logs copied by threads of this process),
/// reaps with `waitpid(-1)` (this process being the subreaper of what its
/// children leave), and watches with a [`Monitoring`] on the endpoint.
pub struct Local {
    mon: Monitoring,
    ours: HashSet<u32>,
}

impl Local {
    /// A backend listening for the hooks on `endpoint` (`MTIPC_HA_SOCKET`
    /// names its path); without it `notify` processes never become ready
    /// and watchdogs and health polls have nothing to go by.
    pub fn new(endpoint: Option<Endpoint>) -> Local {
        Local {
            mon: Monitoring::new(endpoint),
            ours: HashSet::new(),
        }
    }

    fn reap(&mut self, out: &mut Vec<Happening>) {
        loop {
            let ours = &self.ours;
            // Whatever a leader left in its group goes with it, killed
            // while the leader is a zombie (its group id not reusable).
            let reaped = spawn::reap(|pid| {
                if ours.contains(&pid) {
                    spawn::signal_group(pid, libc::SIGKILL);
                }
            });
            let Some((pid, exit)) = reaped else { break };
            if self.ours.remove(&pid) {
                out.push(Happening::Exited { pid, exit });
            }
            // Otherwise: an orphan of a supervised process, reparented to
            // this subreaper; reaped, nothing else to do.
        }
    }
}

impl Backend for Local {
    fn spawn(&mut self, p: &Process, log: &Path) -> Result<Spawned, SpawnError> {
        let s = spawn::spawn(p, log, self.mon.socket()).map_err(SpawnError::Failed)?;
        self.ours.insert(s.pid);
        Ok(s)
    }

    fn signal(&mut self, pid: u32, _start: u64, sig: i32) {
        if self.ours.contains(&pid) {
            spawn::signal_group(pid, sig);
        }
    }

    fn watch(&mut self, w: Watch) {
        self.mon.watch(w);
    }

    fn unwatch(&mut self, pid: u32) {
        self.mon.unwatch(pid);
    }

    fn wait(&mut self, wait: Duration, out: &mut Vec<Happening>) {
        self.reap(out);
        let wait = if out.is_empty() { wait } else { Duration::ZERO };
        let mut seen = Vec::new();
        self.mon.step(wait, &mut seen);
        out.extend(seen.into_iter().map(Happening::Seen));
        self.reap(out);
    }
}

/// Options of a supervisor.
pub struct Options {
    /// Where to write the status on every change.
    pub status_file: Option<PathBuf>,
    /// The node's domain (default log files are under it).
    pub domain: PathBuf,
}

/// The engine. See the module documentation.
pub struct Supervisor {
    node: String,
    entries: Vec<Entry>,
    backend: Box<dyn Backend>,
    status_file: Option<PathBuf>,
    node_stopping: bool,
    dirty: bool,
    /// Why nothing can be spawned now (the Spawner is unreachable).
    unavailable: Option<String>,
    /// What the status says of the roles (`roles` in the JSON).
    roles: Option<serde_json::Value>,
}

const TARGET: &str = "mtipc-ha";

fn log(level: Level, msg: &str) {
    mtipc::log::emit(level, TARGET, msg);
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Supervisor {
    /// A supervisor of `config`'s processes, none started yet, working
    /// through `backend`.
    pub fn new(config: &Config, backend: Box<dyn Backend>, opts: Options) -> Supervisor {
        let now = Instant::now();
        let entries = config
            .start_order()
            .map(|p| Entry {
                log: p.log_file(&opts.domain),
                cfg: p.clone(),
                want: false,
                state: State::Stopped,
                reason: None,
                pid: None,
                start: 0,
                started_at: None,
                started: now,
                restarts: 0,
                recent: VecDeque::new(),
                last_exit: None,
                said_ready: false,
                stopping: None,
                retry_at: None,
            })
            .collect();
        Supervisor {
            node: config.node.name.clone(),
            entries,
            backend,
            status_file: opts.status_file,
            node_stopping: false,
            dirty: true,
            unavailable: None,
            roles: None,
        }
    }

    /// Sets what the status says of the roles (`roles`).
    pub fn set_roles(&mut self, roles: serde_json::Value) {
        if self.roles.as_ref() != Some(&roles) {
            self.roles = Some(roles);
            self.dirty = true;
        }
    }

    /// Whether the node is stopping (`stop_all` was called).
    pub fn node_stopping(&self) -> bool {
        self.node_stopping
    }

    /// Takes up the table a previous Server left (its status file) and
    /// what the Spawner says runs now (`running`: name, pid, start): a
    /// process that runs keeps running with its state (nothing is
    /// restarted); one that ran and is gone is handled as ended when its
    /// exit comes, or at once as a failure when the Spawner knows nothing
    /// of it. `want`, `restarts` and `last_exit` carry over.
    pub fn take_up(&mut self, old: &Status, running: &[(String, u32, u64)], stopping: bool) {
        let now = Instant::now();
        if stopping {
            self.node_stopping = true;
        }
        for i in 0..self.entries.len() {
            let name = self.entries[i].cfg.name.clone();
            let prev = old.processes.iter().find(|p| p.name == name);
            let run = running.iter().find(|r| r.0 == name);
            let e = &mut self.entries[i];
            if let Some(p) = prev {
                e.want = p.wanted && !stopping;
                e.restarts = p.restarts;
                e.last_exit.clone_from(&p.last_exit);
            }
            let Some(&(_, pid, start)) = run else {
                if let Some(p) = prev {
                    if !matches!(p.state, State::Failed) {
                        continue;
                    }
                    e.state = State::Failed;
                    e.reason.clone_from(&p.reason);
                }
                continue;
            };
            e.pid = Some(pid);
            e.start = start;
            let same = prev.is_some_and(|p| p.pid == Some(pid) && p.start == Some(start));
            let state = match prev.map(|p| p.state) {
                Some(s @ (State::Up | State::Ready | State::Starting | State::Unhealthy))
                    if same =>
                {
                    s
                }
                _ => match e.cfg.ready {
                    Ready::Started => State::Up,
                    Ready::Notify => State::Starting,
                },
            };
            e.said_ready = state == State::Ready
                || (state == State::Unhealthy && e.cfg.ready == Ready::Notify);
            let up_ms = prev.filter(|_| same).and_then(|p| p.uptime_ms).unwrap_or(0);
            e.started = now.checked_sub(Duration::from_millis(up_ms)).unwrap_or(now);
            e.started_at = prev
                .filter(|_| same)
                .and_then(|p| p.started_unix_ms)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
                .or(Some(SystemTime::now()));
            e.state = state;
            e.reason = None;
            let w = Watch {
                name: e.cfg.name.clone(),
                pid,
                start,
                monitor_ms: e.cfg.monitor_ms,
                watchdog_ms: e.cfg.watchdog_ms,
            };
            self.backend.watch(w);
            log(
                Level::Info,
                &format!("{name}: taken up running (pid {pid}, {state})"),
            );
        }
        self.dirty = true;
    }

    fn index(&self, name: &str) -> Result<usize, String> {
        self.entries
            .iter()
            .position(|e| e.cfg.name == name)
            .ok_or_else(|| format!("no process {name:?}"))
    }

    fn set_want(&mut self, i: usize, want: bool) {
        let e = &mut self.entries[i];
        if want {
            // Asked for: a failed process gets a fresh window, at once.
            if e.state == State::Failed && !e.running() {
                e.recent.clear();
                e.retry_at = None;
                e.reason = None;
                e.state = State::Stopped;
                self.dirty = true;
            }
        }
        e.want = want;
    }

    /// Wants every process (each starts once its dependencies are up).
    pub fn start_all(&mut self) {
        self.node_stopping = false;
        for i in 0..self.entries.len() {
            self.set_want(i, true);
        }
    }

    /// Stops every process, in reverse order (each once its dependents
    /// have exited).
    pub fn stop_all(&mut self) {
        self.node_stopping = true;
        self.dirty = true;
        for i in 0..self.entries.len() {
            self.set_want(i, false);
        }
    }

    /// Stops every process now: nothing is wanted, and every running
    /// process group gets SIGKILL at once, without order or timeout (an
    /// operator who cannot wait).
    pub fn kill_all(&mut self) {
        self.stop_all();
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            let Some(pid) = e.pid else { continue };
            let start = e.start;
            self.backend.signal(pid, start, libc::SIGKILL);
            let e = &mut self.entries[i];
            e.stopping = Some(Stopping {
                cause: Cause::Asked,
                kill_at: Instant::now(),
                killed: true,
            });
            self.set_state(i, State::Stopping, Some("sent SIGKILL to the group".into()));
        }
    }

    /// Wants the process `name`.
    pub fn start(&mut self, name: &str) -> Result<(), String> {
        let i = self.index(name)?;
        self.set_want(i, true);
        Ok(())
    }

    /// Stops the process `name` (after its dependents that are stopping).
    pub fn stop(&mut self, name: &str) -> Result<(), String> {
        let i = self.index(name)?;
        self.set_want(i, false);
        Ok(())
    }

    /// Stops `name` if it runs, then starts it again.
    pub fn restart(&mut self, name: &str) -> Result<(), String> {
        let i = self.index(name)?;
        self.set_want(i, true);
        if self.entries[i].running() && self.entries[i].stopping.is_none() {
            self.send_stop(i, Cause::Asked);
        }
        Ok(())
    }

    /// The members of the tenant group `group`, or an error if it has none.
    fn group(&self, group: &str) -> Result<Vec<usize>, String> {
        let v: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].cfg.tenant_group.as_deref() == Some(group))
            .collect();
        if v.is_empty() {
            return Err(format!("no tenant group {group:?}"));
        }
        Ok(v)
    }

    /// Starts the members of a tenant group, in order; other groups are
    /// left alone.
    pub fn start_group(&mut self, group: &str) -> Result<(), String> {
        for i in self.group(group)? {
            self.set_want(i, true);
        }
        Ok(())
    }

    /// Stops the members of a tenant group, in reverse order; other
    /// groups are left alone.
    pub fn stop_group(&mut self, group: &str) -> Result<(), String> {
        for i in self.group(group)? {
            self.set_want(i, false);
        }
        Ok(())
    }

    /// Whether nothing runs any more (after [`Supervisor::stop_all`]: the
    /// node is stopped).
    pub fn all_exited(&self) -> bool {
        self.entries.iter().all(|e| !e.running())
    }

    /// The table, as the status file gives it.
    pub fn status(&self) -> Status {
        let now = SystemTime::now();
        Status {
            version: 1,
            node: self.node.clone(),
            supervisor_pid: std::process::id(),
            roles: self.roles.clone(),
            updated_unix_ms: unix_ms(now),
            stopping: self.node_stopping,
            processes: self
                .entries
                .iter()
                .map(|e| ProcessStatus {
                    name: e.cfg.name.clone(),
                    state: e.state,
                    reason: e.reason.clone(),
                    pid: e.pid,
                    start: e.pid.map(|_| e.start),
                    started_unix_ms: e.pid.and(e.started_at).map(unix_ms),
                    uptime_ms: e.pid.map(|_| {
                        u64::try_from(e.started.elapsed().as_millis()).unwrap_or(u64::MAX)
                    }),
                    restarts: e.restarts,
                    last_exit: e.last_exit.clone(),
                    group: e.cfg.tenant_group.clone(),
                    wanted: e.want,
                    log: e.log.clone(),
                })
                .collect(),
        }
    }

    fn set_state(&mut self, i: usize, state: State, reason: Option<String>) {
        let e = &mut self.entries[i];
        if e.state == state && e.reason == reason {
            return;
        }
        let mut line = format!("{}: {} -> {state}", e.cfg.name, e.state);
        if let Some(pid) = e.pid {
            line += &format!(" (pid {pid})");
        }
        if let Some(r) = &reason {
            line += &format!(": {r}");
        }
        let level = match state {
            State::Failed | State::Unhealthy => Level::Warn,
            _ => Level::Info,
        };
        e.state = state;
        e.reason = reason;
        self.dirty = true;
        log(level, &line);
    }

    /// Does one round: acts on what is wanted and due, then waits for
    /// the endpoint's events (at most `wait`, or until the next timer, or
    /// until the endpoint's wake descriptor is poked), handles them and
    /// acts again. Acting is: reap what ended, start what can start, stop
    /// what must stop, kill what outlived its stop timeout, monitor what is
    /// due, and write the status file if anything changed.
    pub fn step(&mut self, wait: Duration) {
        self.act();
        let wait = wait.min(self.until_next_deadline());
        let mut news = Vec::new();
        self.backend.wait(wait, &mut news);
        for h in news {
            self.happened(h);
        }
        self.act();
    }

    fn act(&mut self) {
        let now = Instant::now();
        self.start_ready(now);
        self.stop_due(now);
        let at_once = self.at_once(now);
        self.backend.restart_at_once(&at_once);
        self.write_status();
    }

    /// The running processes that [`Supervisor::exited`] would restart at
    /// once (a backoff of 0, the cap not reached within the window, the
    /// policy not `never`), that are wanted and not being stopped, whose
    /// dependencies are up, on a node that is not stopping.
    fn at_once(&self, now: Instant) -> Vec<AtOnce> {
        if self.node_stopping {
            return Vec::new();
        }
        // Which processes are up, made only for a candidate with
        // dependencies (the default backoff makes none a candidate).
        let mut up: Option<HashMap<&str, bool>> = None;
        let mut v = Vec::new();
        for e in &self.entries {
            let Some(pid) = e.pid else { continue };
            if !e.want
                || e.stopping.is_some()
                || e.cfg.restart_backoff_ms != 0
                || e.cfg.restart == Restart::Never
            {
                continue;
            }
            let window = Duration::from_millis(e.cfg.restart_window_ms);
            let recent = e
                .recent
                .iter()
                .filter(|&&t| now.saturating_duration_since(t) < window)
                .count();
            if recent >= e.cfg.restart_max as usize {
                continue;
            }
            if !e.cfg.depends_on.is_empty() {
                let up = up.get_or_insert_with(|| {
                    self.entries
                        .iter()
                        .map(|x| (x.cfg.name.as_str(), x.is_up()))
                        .collect()
                });
                if !e
                    .cfg
                    .depends_on
                    .iter()
                    .all(|d| up.get(d.as_str()).copied().unwrap_or(true))
                {
                    continue;
                }
            }
            v.push(AtOnce {
                pid,
                start: e.start,
                failed_only: e.cfg.restart == Restart::OnFailure,
            });
        }
        v
    }

    fn by_pid(&self, pid: u32) -> Option<usize> {
        self.entries.iter().position(|e| e.pid == Some(pid))
    }

    fn happened(&mut self, h: Happening) {
        match h {
            Happening::Exited { pid, exit } => {
                if let Some(i) = self.by_pid(pid) {
                    self.exited(i, exit);
                }
            }
            Happening::Seen(Seen::Ready { pid }) => {
                let Some(i) = self.by_pid(pid) else { return };
                let e = &mut self.entries[i];
                e.said_ready = true;
                if e.cfg.ready == Ready::Notify && e.state == State::Starting {
                    self.set_state(i, State::Ready, None);
                }
            }
            Happening::Seen(Seen::Unhealthy { pid, why }) => {
                let Some(i) = self.by_pid(pid) else { return };
                if self.entries[i].stopping.is_none() {
                    self.set_state(i, State::Unhealthy, Some(why));
                }
            }
            Happening::Seen(Seen::Healthy { pid }) => {
                let Some(i) = self.by_pid(pid) else { return };
                let e = &self.entries[i];
                if e.state == State::Unhealthy {
                    let back = if e.cfg.ready == Ready::Started {
                        State::Up
                    } else if e.said_ready {
                        State::Ready
                    } else {
                        State::Starting
                    };
                    self.set_state(i, back, None);
                }
            }
            Happening::Seen(Seen::Watchdog { pid }) => {
                let Some(i) = self.by_pid(pid) else { return };
                if self.entries[i].stopping.is_none() && self.entries[i].cfg.watchdog_ms > 0 {
                    self.send_stop(i, Cause::Watchdog);
                }
            }
        }
    }

    /// Time until the earliest timer of the table.
    fn until_next_deadline(&self) -> Duration {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for e in &self.entries {
            if let (true, Some(t)) = (e.want, e.retry_at) {
                at(t);
            }
            if let Some(s) = &e.stopping {
                if !s.killed {
                    at(s.kill_at);
                }
            }
        }
        if self.unavailable.is_some() && self.entries.iter().any(|e| e.want && !e.running()) {
            at(Instant::now() + Duration::from_millis(50));
        }
        next.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
    }

    fn exited(&mut self, i: usize, exit: Exit) {
        let now = Instant::now();
        let cause = self.entries[i].stopping.take().map(|s| s.cause);
        {
            let e = &mut self.entries[i];
            if let Some(pid) = e.pid.take() {
                self.backend.unwatch(pid);
            }
            let e = &mut self.entries[i];
            e.said_ready = false;
            e.last_exit = Some(match cause {
                Some(Cause::Watchdog) => format!("{exit} (watchdog)"),
                _ => exit.to_string(),
            });
        }
        let shown = self.entries[i].last_exit.clone().unwrap_or_default();
        if cause == Some(Cause::Asked) || !self.entries[i].want {
            return self.set_state(i, State::Stopped, Some(format!("stopped ({shown})")));
        }
        let failed = cause == Some(Cause::Watchdog) || exit.failed();
        let again = match self.entries[i].cfg.restart {
            Restart::Always => true,
            Restart::OnFailure => failed,
            Restart::Never => false,
        };
        if !again {
            // Done by its policy: no longer wanted (else the next round
            // would start it again at once); start(name) brings it back.
            self.entries[i].want = false;
            return if failed {
                self.set_state(i, State::Failed, Some(format!("{shown}; restart policy")))
            } else {
                self.set_state(i, State::Stopped, Some(format!("exited ({shown})")))
            };
        }
        match self.schedule_retry(i, now) {
            Ok(delay) => self.set_state(
                i,
                State::Backoff,
                Some(format!("{shown}; restart in {} ms", delay.as_millis())),
            ),
            Err(why) => self.set_state(i, State::Failed, Some(format!("{shown}; {why}"))),
        }
    }

    /// Books a restart: the delay before it, or why there is none (the
    /// cap is reached). The delay is `restart_backoff_ms` doubled for each
    /// restart already in the window, at most `restart_backoff_max_ms`.
    fn schedule_retry(&mut self, i: usize, now: Instant) -> Result<Duration, String> {
        let e = &mut self.entries[i];
        let window = Duration::from_millis(e.cfg.restart_window_ms);
        while e
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            e.recent.pop_front();
        }
        if e.recent.len() >= e.cfg.restart_max as usize {
            e.retry_at = None;
            return Err(format!(
                "{} restarts within {} ms (restart_max)",
                e.recent.len(),
                e.cfg.restart_window_ms
            ));
        }
        let shift = u32::try_from(e.recent.len()).unwrap_or(u32::MAX).min(40);
        let ms = e
            .cfg
            .restart_backoff_ms
            .saturating_mul(1u64 << shift)
            .min(e.cfg.restart_backoff_max_ms);
        e.recent.push_back(now);
        e.restarts += 1;
        let delay = Duration::from_millis(ms);
        e.retry_at = Some(now + delay);
        Ok(delay)
    }

    /// Why `i` cannot start yet (a dependency not up: waiting, or failed),
    /// or `None`.
    fn blocked(&self, i: usize) -> Option<String> {
        for d in &self.entries[i].cfg.depends_on {
            let Some(dep) = self.entries.iter().find(|e| &e.cfg.name == d) else {
                continue;
            };
            if dep.is_up() {
                continue;
            }
            return Some(match dep.state {
                State::Failed => format!("dependency {d} failed"),
                State::Held if dep.reason.as_deref().is_some_and(|r| r.contains("failed")) => {
                    format!(
                        "dependency {d} is held back ({})",
                        dep.reason.as_deref().unwrap_or("")
                    )
                }
                s => format!("waiting for {d} ({s})"),
            });
        }
        None
    }

    fn start_ready(&mut self, now: Instant) {
        let mut unavailable = None;
        for i in 0..self.entries.len() {
            if unavailable.is_some() {
                break;
            }
            let e = &self.entries[i];
            if !e.want || e.running() {
                continue;
            }
            match e.state {
                State::Stopped | State::Held => {}
                State::Backoff | State::Failed => match e.retry_at {
                    Some(t) if t <= now => {}
                    _ => continue,
                },
                _ => continue,
            }
            if let Some(why) = self.blocked(i) {
                // A retry that is due waits for its dependencies as held.
                self.entries[i].retry_at = None;
                // Still waiting, only for another state of the same wait
                // (`waiting for db (held)`, then `(starting)`): no change
                // worth a log line and a status write.
                let e = &self.entries[i];
                let same_wait = e.state == State::Held
                    && why.starts_with("waiting for ")
                    && e.reason.as_deref().is_some_and(|r| {
                        r.starts_with("waiting for ")
                            && r.split(' ').nth(2) == why.split(' ').nth(2)
                    });
                if !same_wait {
                    self.set_state(i, State::Held, Some(why));
                }
                continue;
            }
            unavailable = self.spawn(i, now);
        }
        if unavailable != self.unavailable {
            if let Some(why) = &unavailable {
                log(Level::Warn, &format!("cannot start processes now: {why}"));
            }
            self.unavailable = unavailable;
        }
        // Processes no longer wanted that are not running are stopped (a
        // failed one stays failed, its retry called off).
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            if e.want || e.running() {
                continue;
            }
            e.retry_at = None;
            if matches!(e.state, State::Held | State::Backoff) {
                self.set_state(i, State::Stopped, None);
            }
        }
    }

    /// Starts `i`; `Some(why)` when the backend cannot start anything now.
    fn spawn(&mut self, i: usize, now: Instant) -> Option<String> {
        let result = self
            .backend
            .spawn(&self.entries[i].cfg, &self.entries[i].log);
        match result {
            Err(SpawnError::Unavailable(why)) => return Some(why),
            Ok(s) => {
                let e = &mut self.entries[i];
                e.pid = Some(s.pid);
                e.start = s.start;
                e.started_at = Some(SystemTime::now());
                e.started = now;
                e.retry_at = None;
                e.said_ready = false;
                let w = Watch {
                    name: e.cfg.name.clone(),
                    pid: s.pid,
                    start: s.start,
                    monitor_ms: e.cfg.monitor_ms,
                    watchdog_ms: e.cfg.watchdog_ms,
                };
                let state = match e.cfg.ready {
                    Ready::Started => State::Up,
                    Ready::Notify => State::Starting,
                };
                self.backend.watch(w);
                self.set_state(i, state, None);
            }
            Err(SpawnError::Failed(why)) => {
                let e = &mut self.entries[i];
                e.last_exit = None;
                let retry = match e.cfg.restart {
                    Restart::Never => Err("restart policy never".to_string()),
                    _ => self
                        .schedule_retry(i, now)
                        .map(|d| format!("retry in {} ms", d.as_millis())),
                };
                let then = match retry {
                    Ok(s) | Err(s) => s,
                };
                self.set_state(i, State::Failed, Some(format!("{why}; {then}")));
            }
        }
        None
    }

    fn send_stop(&mut self, i: usize, cause: Cause) {
        let Some(pid) = self.entries[i].pid else {
            return;
        };
        let start = self.entries[i].start;
        let sig = self.entries[i].cfg.stop_signal;
        self.backend.signal(pid, start, sig.number);
        // SIGCONT, so that a stopped (SIGSTOP) group can take its signal.
        self.backend.signal(pid, start, libc::SIGCONT);
        let e = &mut self.entries[i];
        e.stopping = Some(Stopping {
            cause,
            kill_at: Instant::now() + Duration::from_millis(e.cfg.stop_timeout_ms),
            killed: false,
        });
        let why = match cause {
            Cause::Asked => format!("sent SIG{}", sig.name),
            Cause::Watchdog => format!(
                "no heartbeat within watchdog_ms {}; sent SIG{}",
                e.cfg.watchdog_ms, sig.name
            ),
        };
        self.set_state(i, State::Stopping, Some(why));
    }

    fn stop_due(&mut self, now: Instant) {
        // In stop order: a process stops once no dependent that is
        // stopping too still runs.
        for i in (0..self.entries.len()).rev() {
            let e = &self.entries[i];
            if e.want || !e.running() || e.stopping.is_some() {
                continue;
            }
            let name = &e.cfg.name;
            let waiting = self
                .entries
                .iter()
                .any(|d| !d.want && d.running() && d.cfg.depends_on.contains(name));
            if !waiting {
                self.send_stop(i, Cause::Asked);
            }
        }
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            let (Some(pid), Some(s)) = (e.pid, &mut e.stopping) else {
                continue;
            };
            if !s.killed && now >= s.kill_at {
                s.killed = true;
                let start = e.start;
                self.backend.signal(pid, start, libc::SIGKILL);
                let e = &self.entries[i];
                let line = format!(
                    "stop timeout {} ms passed; sent SIGKILL to the group",
                    e.cfg.stop_timeout_ms
                );
                self.set_state(i, State::Stopping, Some(line));
            }
        }
    }

    fn write_status(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let Some(path) = &self.status_file else {
            return;
        };
        let mut text = match serde_json::to_vec_pretty(&self.status()) {
            Ok(t) => t,
            Err(e) => return log(Level::Error, &format!("status: {e}")),
        };
        text.push(b'\n');
        if let Err(e) = super::replace_file(path, &text) {
            log(
                Level::Error,
                &format!("status file {}: {e}", path.display()),
            );
        }
    }

    /// Writes the status file now (when the run ends, say).
    pub fn flush_status(&mut self) {
        self.dirty = true;
        self.write_status();
    }
}

/// The path of the Monitor's socket under a domain.
pub fn socket_path(domain: &Path) -> PathBuf {
    domain.join("ha").join("monitor.sock")
}

/// The default status file under a domain.
pub fn status_path(domain: &Path) -> PathBuf {
    domain.join("ha").join("status.json")
}

#[cfg(test)]
mod tests {
    //! The Server's calls on a table, in process: tenant groups started
    //! and stopped in order, other groups untouched. (This test binary
    //! reaps with waitpid(-1): the tests that start children take
    //! `serial()`, and no other test here starts any.)
    use super::*;
    use std::sync::{Mutex, MutexGuard};

    fn serial() -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A scratch directory (a domain), removed when the test ends.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn scratch(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mtipc-ha-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ha/log")).unwrap();
        Scratch(dir)
    }

    /// A supervisor that kills what it runs when the test ends, even by a
    /// failed assertion (no process left behind).
    struct Guard(Supervisor);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.kill_all();
            let end = Instant::now() + Duration::from_secs(5);
            while !self.0.all_exited() && Instant::now() < end {
                self.0.step(Duration::from_millis(10));
            }
        }
    }
    impl std::ops::Deref for Guard {
        type Target = Supervisor;
        fn deref(&self) -> &Supervisor {
            &self.0
        }
    }
    impl std::ops::DerefMut for Guard {
        fn deref_mut(&mut self) -> &mut Supervisor {
            &mut self.0
        }
    }

    fn stamps(f: &Path) -> Vec<String> {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn run_until(sup: &mut Supervisor, what: &str, done: impl Fn(&Supervisor) -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !done(sup) {
            assert!(Instant::now() < end, "{what}: {:?}", sup.status());
            sup.step(Duration::from_millis(10));
        }
    }

    fn state(sup: &Supervisor, name: &str) -> State {
        sup.entries
            .iter()
            .find(|e| e.cfg.name == name)
            .unwrap()
            .state
    }

    /// A backend without processes: pids handed out in order, ends given
    /// by the test, the last list of [`Backend::restart_at_once`] kept.
    struct Fake {
        next: u32,
        news: std::rc::Rc<std::cell::RefCell<Vec<Happening>>>,
        orders: std::rc::Rc<std::cell::RefCell<Vec<AtOnce>>>,
    }
    impl Backend for Fake {
        fn spawn(&mut self, _p: &Process, _log: &Path) -> Result<Spawned, SpawnError> {
            self.next += 1;
            Ok(Spawned {
                pid: self.next,
                start: 1,
            })
        }
        fn signal(&mut self, _pid: u32, _start: u64, _sig: i32) {}
        fn watch(&mut self, _w: Watch) {}
        fn unwatch(&mut self, _pid: u32) {}
        fn wait(&mut self, _wait: Duration, out: &mut Vec<Happening>) {
            out.append(&mut self.news.borrow_mut());
        }
        fn restart_at_once(&mut self, now: &[AtOnce]) {
            *self.orders.borrow_mut() = now.to_vec();
        }
    }

    /// Which running processes the table says it would restart at once:
    /// a backoff of 0, a policy other than `never` (`on-failure`: only
    /// if it failed), under the cap, wanted and not stopping, its
    /// dependencies up, the node not stopping.
    #[test]
    fn restart_at_once_is_given_only_where_the_table_would_restart_at_once() {
        let text = "[node]\nname = \"t\"\n\
            [[process]]\nname = \"now\"\ncommand = [\"x\"]\nrestart_backoff_ms = 0\nrestart_max = 1\n\
            [[process]]\nname = \"later\"\ncommand = [\"x\"]\n\
            [[process]]\nname = \"never\"\ncommand = [\"x\"]\nrestart_backoff_ms = 0\nrestart = \"never\"\n\
            [[process]]\nname = \"onfail\"\ncommand = [\"x\"]\nrestart_backoff_ms = 0\nrestart = \"on-failure\"\n\
            [[process]]\nname = \"db\"\ncommand = [\"x\"]\nready = \"notify\"\nrestart_backoff_ms = 0\n\
            [[process]]\nname = \"web\"\ncommand = [\"x\"]\ndepends_on = [\"db\"]\nrestart_backoff_ms = 0\n";
        let config = Config::parse(text, Path::new("t.toml")).unwrap();
        let news = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let orders = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let fake = Fake {
            next: 100,
            news: news.clone(),
            orders: orders.clone(),
        };
        let d = scratch("atonce");
        let mut sup = Supervisor::new(
            &config,
            Box::new(fake),
            Options {
                status_file: None,
                domain: d.0.clone(),
            },
        );
        let pid = |sup: &Supervisor, n: &str| {
            sup.entries
                .iter()
                .find(|e| e.cfg.name == n)
                .unwrap()
                .pid
                .unwrap()
        };
        let given = |sup: &Supervisor| -> Vec<(String, bool)> {
            let mut v: Vec<(String, bool)> = orders
                .borrow()
                .iter()
                .map(|a| {
                    let e = sup.entries.iter().find(|e| e.pid == Some(a.pid)).unwrap();
                    assert_eq!(a.start, e.start);
                    (e.cfg.name.clone(), a.failed_only)
                })
                .collect();
            v.sort();
            v
        };
        let own = |v: &[(&str, bool)]| -> Vec<(String, bool)> {
            v.iter().map(|(n, f)| (n.to_string(), *f)).collect()
        };
        sup.start_all();
        sup.step(Duration::ZERO);
        // web waits for db's `ready`: not running yet.
        assert_eq!(
            given(&sup),
            own(&[("db", false), ("now", false), ("onfail", true)])
        );
        let db = pid(&sup, "db");
        news.borrow_mut()
            .push(Happening::Seen(Seen::Ready { pid: db }));
        sup.step(Duration::ZERO);
        assert_eq!(
            given(&sup),
            own(&[
                ("db", false),
                ("now", false),
                ("onfail", true),
                ("web", false)
            ])
        );
        // `now` ends and is restarted (at once): its one restart within the
        // window is used, so it gets no order (the next end fails it).
        let now = pid(&sup, "now");
        news.borrow_mut().push(Happening::Exited {
            pid: now,
            exit: Exit::Code(1),
        });
        sup.step(Duration::ZERO);
        assert_ne!(pid(&sup, "now"), now);
        assert_eq!(
            given(&sup),
            own(&[("db", false), ("onfail", true), ("web", false)])
        );
        // db not ready (a new process): web's order is called off with it.
        let db = pid(&sup, "db");
        news.borrow_mut().push(Happening::Exited {
            pid: db,
            exit: Exit::Signal(9),
        });
        sup.step(Duration::ZERO);
        assert_eq!(given(&sup), own(&[("db", false), ("onfail", true)]));
        // A process being stopped has none; a stopping node has none.
        sup.stop("onfail").unwrap();
        sup.step(Duration::ZERO);
        assert_eq!(given(&sup), own(&[("db", false)]));
        sup.stop_all();
        sup.step(Duration::ZERO);
        assert_eq!(given(&sup), own(&[]));
    }

    #[test]
    fn groups_start_and_stop_in_order_alone() {
        let _serial = serial();
        let tmp = scratch("groups");
        let dir = tmp.0.clone();
        let log = dir.join("events");
        let proc = |name: &str, extra: &str| {
            format!(
                "[[process]]\nname = \"{name}\"\ncommand = [\"/bin/sh\", \"-c\", \"trap 'echo stop {name} >> {log}; exit 0' TERM; echo start {name} >> {log}; sleep 1000 & wait\"]\n{extra}\n",
                log = log.display()
            )
        };
        let text = format!(
            "[node]\nname = \"n\"\ndomain = \"{}\"\n\n{}{}{}{}",
            dir.display(),
            proc("x1", "tenant_group = \"x\""),
            proc("x2", "tenant_group = \"x\"\ndepends_on = [\"x1\"]"),
            proc("x3", "tenant_group = \"x\"\ndepends_on = [\"x2\"]"),
            proc("y1", "tenant_group = \"y\""),
        );
        let config = Config::parse(&text, Path::new("groups.toml")).unwrap();
        let mut sup = Guard(Supervisor::new(
            &config,
            Box::new(Local::new(None)),
            Options {
                status_file: None,
                domain: dir.clone(),
            },
        ));
        sup.start_all();
        run_until(&mut sup, "all up", |s| {
            ["x1", "x2", "x3", "y1"]
                .iter()
                .all(|n| state(s, n) == State::Up)
        });
        let y1 = sup
            .status()
            .processes
            .iter()
            .find(|p| p.name == "y1")
            .unwrap()
            .pid;
        // The traps are set once the starts are written.
        let end = Instant::now() + Duration::from_secs(5);
        while stamps(&log).len() < 4 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::write(&log, "").unwrap();
        sup.stop_group("x").unwrap();
        run_until(&mut sup, "x stopped", |s| {
            ["x1", "x2", "x3"]
                .iter()
                .all(|n| state(s, n) == State::Stopped)
        });
        assert_eq!(stamps(&log), ["stop x3", "stop x2", "stop x1"]);
        assert_eq!(state(&sup, "y1"), State::Up);
        sup.start_group("x").unwrap();
        run_until(&mut sup, "x up again", |s| {
            ["x1", "x2", "x3"].iter().all(|n| state(s, n) == State::Up)
        });
        // Spawned in order (x2 once x1 is up: at once, as both are
        // `ready = "started"`): increasing pids.
        let pids: Vec<u32> = sup
            .status()
            .processes
            .iter()
            .filter(|p| p.group.as_deref() == Some("x"))
            .map(|p| p.pid.unwrap())
            .collect();
        assert!(pids.windows(2).all(|w| w[0] < w[1]), "{pids:?}");
        let y1_now = sup
            .status()
            .processes
            .iter()
            .find(|p| p.name == "y1")
            .unwrap()
            .pid;
        assert_eq!(y1, y1_now, "the other group was left alone");
        assert!(sup
            .stop_group("nope")
            .unwrap_err()
            .contains("no tenant group"));
        sup.stop_all();
        run_until(&mut sup, "all stopped", Supervisor::all_exited);
    }

    #[test]
    fn restart_asked_and_a_failed_process_stopped_and_started() {
        let _serial = serial();
        let tmp = scratch("restart");
        let dir = tmp.0.clone();
        let text = format!(
            "[node]\nname = \"n\"\ndomain = \"{}\"\n\n\
             [[process]]\nname = \"s\"\ncommand = [\"/bin/sleep\", \"1000\"]\n\n\
             [[process]]\nname = \"bad\"\ncommand = [\"/nonexistent\"]\ntenant_group = \"z\"\nrestart_backoff_ms = 60000\n",
            dir.display()
        );
        let config = Config::parse(&text, Path::new("restart.toml")).unwrap();
        let mut sup = Guard(Supervisor::new(
            &config,
            Box::new(Local::new(None)),
            Options {
                status_file: None,
                domain: dir.clone(),
            },
        ));
        sup.start_all();
        run_until(&mut sup, "s up, bad failed", |s| {
            state(s, "s") == State::Up && state(s, "bad") == State::Failed
        });
        // restart(s): a new process, not counted as a policy restart.
        let entry = |s: &Supervisor, n: &str| {
            s.status()
                .processes
                .into_iter()
                .find(|p| p.name == n)
                .unwrap()
        };
        let pid = |s: &Supervisor| entry(s, "s").pid;
        let before = pid(&sup).unwrap();
        sup.restart("s").unwrap();
        run_until(&mut sup, "s restarted", |s| {
            state(s, "s") == State::Up && pid(s).is_some_and(|p| p != before)
        });
        assert_eq!(entry(&sup, "s").restarts, 0);
        assert!(entry(&sup, "s")
            .last_exit
            .as_deref()
            .is_some_and(|x| x == "signal SIGTERM"));
        // start(bad) while it is failed and wanted, its retry a minute
        // away: a fresh window and an attempt at once.
        assert_eq!(entry(&sup, "bad").restarts, 1);
        sup.start("bad").unwrap();
        sup.step(Duration::from_millis(1));
        assert_eq!(entry(&sup, "bad").restarts, 2);
        let bad = sup.entries.iter().find(|e| e.cfg.name == "bad").unwrap();
        assert_eq!(bad.recent.len(), 1);
        // A failed process whose retry is a minute away: stopping its
        // group calls the retry off (no timer left to wake for).
        sup.stop_group("z").unwrap();
        sup.step(Duration::from_millis(1));
        assert_eq!(state(&sup, "bad"), State::Failed);
        assert!(sup.until_next_deadline() > Duration::from_millis(100));
        // Started again on request: a fresh attempt at once.
        sup.start_group("z").unwrap();
        sup.step(Duration::from_millis(1));
        let bad = sup.entries.iter().find(|e| e.cfg.name == "bad").unwrap();
        assert_eq!(bad.state, State::Failed);
        assert_eq!(bad.recent.len(), 1, "a fresh window: one retry booked");
        assert!(sup.restart("nope").unwrap_err().contains("no process"));
        sup.stop_all();
        run_until(&mut sup, "all stopped", Supervisor::all_exited);
    }
}
