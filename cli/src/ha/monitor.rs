//! The HA Monitor's duty (DESIGN.md section 4): watching each running
//! process at its own `monitor_ms` through the hooks' [`Endpoint`]:
//! liveness (its pid against its start time in `/proc`), the `notify`
//! readiness, watchdog heartbeats and the health callback.
//!
//! [`Monitoring`] knows only what it is told to watch ([`Watch`]: a name,
//! a pid and start time, the periods) and says what it saw ([`Seen`]);
//! the state table that acts on it is the Server's
//! ([`super::supervisor::Supervisor`]). `mtipc-ha run` drives both in
//! one process; under `mtipc-ha up` the Monitor role drives this and
//! sends what it saw to the Server over its socket (and to the broadcast
//! list of the duplex pair, empty on a single node).

use mtipc::internals::ha::{ConnId, Endpoint, Event, Health};
use mtipc::internals::sys::ProcId;
use mtipc::log::Level;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A running process to watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// Its name in the configuration.
    pub name: String,
    /// Its pid (also its process group).
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22).
    pub start: u64,
    /// How often it is checked.
    pub monitor_ms: u64,
    /// Heartbeats expected at least this often (0: none).
    pub watchdog_ms: u64,
}

/// What the Monitor saw of a watched process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "seen", rename_all = "lowercase")]
pub enum Seen {
    /// It called `mt_ha_ready` (sent again to a Server that reconnects).
    Ready {
        /// The process.
        pid: u32,
    },
    /// Its health callback said ok again (or it has none).
    Healthy {
        /// The process.
        pid: u32,
    },
    /// Its health callback said fail, or did not answer a poll by the next.
    Unhealthy {
        /// The process.
        pid: u32,
        /// Why, one line.
        why: String,
    },
    /// No heartbeat within its `watchdog_ms`: it must be stopped (said
    /// once per watch).
    Watchdog {
        /// The process.
        pid: u32,
    },
}

struct Watched {
    w: Watch,
    /// Readable once the process ended (liveness in one `poll` for all);
    /// `None`: `/proc` is read instead.
    pidfd: Option<std::os::fd::OwnedFd>,
    conn: Option<ConnId>,
    said_ready: bool,
    unhealthy: bool,
    watchdog_fired: bool,
    heartbeat: Instant,
    health_poll: Option<u64>,
    next_monitor: Instant,
    /// It said `polls on` (it registered a health callback): its health is
    /// polled at each check. A process without a callback is not polled
    /// (its hooks have no thread to answer with).
    polls: bool,
}

/// The watching. See the module documentation.
pub struct Monitoring {
    endpoint: Option<Endpoint>,
    watched: BTreeMap<u32, Watched>,
    /// Connections of processes not watched (yet), with when they came:
    /// closed after [`UNKNOWN_GRACE`] unless their watch comes.
    unknown: Vec<Unknown>,
    /// Seen by `watch` (a readiness said before the watch came), given
    /// out by the next `step`.
    pending: Vec<Seen>,
    /// The checks of every process fall on multiples of its `monitor_ms`
    /// counted from here, so that processes of the same period are checked
    /// in one wake-up, whenever each was started.
    origin: Instant,
}

struct Unknown {
    conn: ConnId,
    pid: u32,
    since: Instant,
    /// It said ready meanwhile.
    ready: bool,
    /// It said `polls on` meanwhile (and not `polls off` after).
    polls: bool,
}

/// How long a hooks connection of a process that is not watched is kept
/// open (its watch may follow its hello: the Server learns the pid from
/// the Spawner after the process has started). Then it is closed with a
/// warning: a child of a supervised process, or another program of the
/// same uid, is not listened to.
pub const UNKNOWN_GRACE: Duration = Duration::from_secs(2);

const TARGET: &str = "mtipc-ha";

/// How early a check may run to share a wake-up with others: a tenth of
/// its `monitor_ms`, at most this.
const COALESCE: Duration = Duration::from_millis(50);

fn log(level: Level, msg: &str) {
    mtipc::log::emit(level, TARGET, msg);
}

impl Monitoring {
    /// Watching through `endpoint` (without one, `notify` processes never
    /// become ready and watchdogs and health have nothing to go by).
    pub fn new(endpoint: Option<Endpoint>) -> Monitoring {
        Monitoring {
            endpoint,
            watched: BTreeMap::new(),
            unknown: Vec::new(),
            pending: Vec::new(),
            origin: Instant::now(),
        }
    }

    /// The first multiple of `monitor_ms` (from [`Monitoring::origin`])
    /// after `t`.
    fn next_tick(&self, t: Instant, monitor_ms: u64) -> Instant {
        let period = Duration::from_millis(monitor_ms.max(1));
        let k = t.saturating_duration_since(self.origin).as_nanos() / period.as_nanos() + 1;
        let ns = u64::try_from(k * period.as_nanos()).unwrap_or(u64::MAX);
        self.origin + Duration::from_nanos(ns)
    }

    /// The hooks' socket (what `MTIPC_HA_SOCKET` names), if any.
    pub fn socket(&self) -> Option<&Path> {
        self.endpoint.as_ref().map(|e| e.path())
    }

    /// Starts watching `w` (again: a watch of a pid already watched with
    /// the same start time keeps what was seen of it, so that a Server
    /// that reconnects and sends its list again loses nothing). Its
    /// watchdog counts from now.
    pub fn watch(&mut self, w: Watch) {
        if let Some(old) = self.watched.get_mut(&w.pid) {
            if old.w.start == w.start {
                old.w = w;
                return;
            }
        }
        self.unwatch(w.pid);
        let now = Instant::now();
        // A process that connected before the watch came (the Monitor was
        // restarted, or the hello raced the Server's message) is found
        // among the endpoint's connections.
        // It may hold two (the one the Spawner made for it and one of its
        // own): what either said counts, and the one that said more is
        // kept as its connection.
        let conns: Vec<ConnId> = self.endpoint.as_ref().map_or_else(Vec::new, |ep| {
            ep.connections()
                .into_iter()
                .filter(|(_, p)| p.pid == w.pid && p.start == w.start)
                .map(|(c, _)| c)
                .collect()
        });
        let (mut said_ready, mut polls) = (false, false);
        let mut conn = conns.last().copied();
        for c in conns {
            if let Some(k) = self.unknown.iter().position(|u| u.conn == c) {
                let u = self.unknown.swap_remove(k);
                if u.ready || u.polls {
                    conn = Some(c);
                }
                said_ready |= u.ready;
                polls |= u.polls;
            }
        }
        if said_ready {
            self.pending.push(Seen::Ready { pid: w.pid });
        }
        // The first check within one period, on the period's grid.
        let first = self.next_tick(now, w.monitor_ms);
        self.watched.insert(
            w.pid,
            Watched {
                pidfd: super::pidfd(w.pid, w.start),
                w,
                conn,
                said_ready,
                unhealthy: false,
                watchdog_fired: false,
                heartbeat: now,
                health_poll: None,
                next_monitor: first,
                polls,
            },
        );
    }

    /// Stops watching `pid` (it ended, or is no longer the Server's); its
    /// hooks connection is closed.
    pub fn unwatch(&mut self, pid: u32) {
        if let Some(old) = self.watched.remove(&pid) {
            if let (Some(c), Some(ep)) = (old.conn, &mut self.endpoint) {
                ep.close(c);
            }
        }
    }

    /// The pids watched.
    pub fn pids(&self) -> Vec<u32> {
        self.watched.keys().copied().collect()
    }

    /// What was seen of the watched processes that still holds (ready,
    /// unhealthy): for a Server that has just connected.
    pub fn current(&self) -> Vec<Seen> {
        let mut out = Vec::new();
        for (&pid, x) in &self.watched {
            if x.said_ready {
                out.push(Seen::Ready { pid });
            }
            if x.unhealthy {
                out.push(Seen::Unhealthy {
                    pid,
                    why: "the health callback said fail".into(),
                });
            }
        }
        out
    }

    /// Time until the next check is due (at most `cap`).
    pub fn until_next(&self, cap: Duration) -> Duration {
        let now = Instant::now();
        if !self.pending.is_empty() {
            return Duration::ZERO;
        }
        let grace = self
            .unknown
            .iter()
            .map(|u| (u.since + UNKNOWN_GRACE).saturating_duration_since(now));
        self.watched
            .values()
            .map(|x| x.next_monitor.saturating_duration_since(now))
            .chain(grace)
            .min()
            .map_or(cap, |d| d.min(cap))
    }

    /// Waits at most `wait` for the hooks (or the endpoint's wake
    /// descriptor), handles what came and the checks that are due, and
    /// appends what it saw to `out`.
    pub fn step(&mut self, wait: Duration, out: &mut Vec<Seen>) {
        self.check(out);
        // What was seen goes out now, not after a wait (a readiness said
        // before its watch came was held back up to `wait`: 200 ms under
        // the Monitor role).
        let wait = if out.is_empty() {
            self.until_next(wait)
        } else {
            Duration::ZERO
        };
        self.events(wait, out);
        self.check(out);
    }

    fn check(&mut self, out: &mut Vec<Seen>) {
        let now = Instant::now();
        if let Some(ep) = &mut self.endpoint {
            self.unknown.retain(|u| {
                if now.duration_since(u.since) < UNKNOWN_GRACE {
                    return true;
                }
                log(
                    Level::Warn,
                    &format!(
                        "ha endpoint: pid {} is not a supervised process; closed",
                        u.pid
                    ),
                );
                ep.close(u.conn);
                false
            });
        }
        out.append(&mut self.pending);
        // Checks due within COALESCE are done now, in one wake-up: a
        // hundred processes at 200 ms do not make five hundred.
        let due: Vec<u32> = self
            .watched
            .iter()
            .filter(|(_, x)| {
                let slack = COALESCE.min(Duration::from_millis(x.w.monitor_ms / 10));
                now + slack >= x.next_monitor
            })
            .map(|(&p, _)| p)
            .collect();
        if due.is_empty() {
            return;
        }
        // Liveness: the pid is still the process started (its end is the
        // Spawner's waitpid's to report; this catches a table that lost
        // track): one poll of the due processes' pidfds.
        let ended: Vec<bool> = {
            let fds: Vec<std::os::fd::BorrowedFd<'_>> = due
                .iter()
                .filter_map(|p| self.watched[p].pidfd.as_ref())
                .map(std::os::fd::AsFd::as_fd)
                .collect();
            let mut r = super::readable_now(&fds).into_iter();
            due.iter()
                .map(|p| {
                    let x = &self.watched[p];
                    match &x.pidfd {
                        Some(_) => r.next().unwrap_or(false),
                        None => !ProcId::of(*p)
                            .ok()
                            .flatten()
                            .is_some_and(|q| q.start == x.w.start),
                    }
                })
                .collect()
        };
        for (pid, gone) in due.into_iter().zip(ended) {
            let Some(x) = self.watched.get(&pid) else {
                continue;
            };
            // The next multiple of the period after this check's (a check
            // done early, within the coalescing slack, is not due again at
            // once; one done late skips the ticks it missed).
            let next = self.next_tick(x.next_monitor.max(now), x.w.monitor_ms);
            let Some(x) = self.watched.get_mut(&pid) else {
                continue;
            };
            x.next_monitor = next;
            if gone {
                log(
                    Level::Warn,
                    &format!("{}: pid {pid} is not the process started", x.w.name),
                );
                continue;
            }
            if x.w.watchdog_ms > 0
                && !x.watchdog_fired
                && now.duration_since(x.heartbeat) > Duration::from_millis(x.w.watchdog_ms)
            {
                x.watchdog_fired = true;
                out.push(Seen::Watchdog { pid });
                continue;
            }
            let Some(conn) = x.conn else { continue };
            if !x.polls {
                continue;
            }
            if x.health_poll.take().is_some() && !x.unhealthy {
                // The last poll is still unanswered a period later.
                x.unhealthy = true;
                out.push(Seen::Unhealthy {
                    pid,
                    why: "no answer to the health poll".into(),
                });
            }
            let Some(ep) = &mut self.endpoint else {
                continue;
            };
            if let Ok(seq) = ep.poll_health(conn) {
                x.health_poll = Some(seq);
            }
        }
    }

    fn events(&mut self, wait: Duration, out: &mut Vec<Seen>) {
        let Some(ep) = &mut self.endpoint else {
            std::thread::sleep(wait);
            return;
        };
        let mut wait = wait;
        let mut events = Vec::new();
        loop {
            match ep.next_event(wait) {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => {
                    log(Level::Error, &format!("ha endpoint: {e}"));
                    std::thread::sleep(wait);
                    break;
                }
            }
            // Once something came, take what else the same poll read, at
            // once (no second wait: a `ready` is acted on now).
            wait = Duration::ZERO;
            if events.len() >= 256 {
                break;
            }
        }
        for ev in events {
            self.event(ev, out);
        }
    }

    /// The watched process that talks on `conn`: the one whose connection
    /// it is, else the one the endpoint says greeted on it (a process may
    /// hold two connections for a moment: the one the Spawner made for it
    /// and one of its own), which then becomes its connection.
    fn by_conn(&mut self, conn: ConnId) -> Option<(u32, &mut Watched)> {
        let known = self.watched.iter().any(|(_, x)| x.conn == Some(conn));
        if !known {
            let proc = self.endpoint.as_ref().and_then(|ep| ep.peer(conn))?;
            let x = self.watched.get_mut(&proc.pid)?;
            if x.w.start != proc.start {
                return None;
            }
            x.conn = Some(conn);
        }
        self.watched
            .iter_mut()
            .find(|(_, x)| x.conn == Some(conn))
            .map(|(&p, x)| (p, x))
    }

    fn event(&mut self, ev: Event, out: &mut Vec<Seen>) {
        match ev {
            Event::Connected { conn, proc } => match self.watched.get_mut(&proc.pid) {
                Some(x) if x.w.start == proc.start => x.conn = Some(conn),
                _ => {
                    // Not a watched process (a child of one, a stranger of
                    // the same uid), or one whose watch has not come yet:
                    // kept for UNKNOWN_GRACE, found by `watch`, and not
                    // listened to meanwhile (nothing it says maps to a
                    // watch).
                    self.unknown.push(Unknown {
                        conn,
                        pid: proc.pid,
                        since: Instant::now(),
                        ready: false,
                        polls: false,
                    });
                }
            },
            Event::Ready { conn } => {
                if let Some(u) = self.unknown.iter_mut().find(|u| u.conn == conn) {
                    u.ready = true;
                }
                if let Some((pid, x)) = self.by_conn(conn) {
                    if !x.said_ready {
                        x.said_ready = true;
                        out.push(Seen::Ready { pid });
                    }
                }
            }
            Event::Polls { conn, on } => {
                if let Some(u) = self.unknown.iter_mut().find(|u| u.conn == conn) {
                    u.polls = on;
                }
                if let Some((pid, x)) = self.by_conn(conn) {
                    x.polls = on;
                    if !on {
                        // The callback was removed: nothing to poll, and
                        // nothing unhealthy left to say.
                        x.health_poll = None;
                        if x.unhealthy {
                            x.unhealthy = false;
                            out.push(Seen::Healthy { pid });
                        }
                    }
                }
            }
            Event::Heartbeat { conn } => {
                if let Some((_, x)) = self.by_conn(conn) {
                    x.heartbeat = Instant::now();
                }
            }
            Event::Health { conn, seq, health } => {
                let Some((pid, x)) = self.by_conn(conn) else {
                    return;
                };
                if x.health_poll == Some(seq) {
                    x.health_poll = None;
                }
                match health {
                    Health::Fail => {
                        if !x.unhealthy {
                            x.unhealthy = true;
                            out.push(Seen::Unhealthy {
                                pid,
                                why: "the health callback said fail".into(),
                            });
                        }
                    }
                    Health::Ok | Health::None => {
                        if x.unhealthy {
                            x.unhealthy = false;
                            out.push(Seen::Healthy { pid });
                        }
                    }
                }
            }
            Event::Closed { conn, .. } => {
                self.unknown.retain(|u| u.conn != conn);
                if let Some((_, x)) = self.by_conn(conn) {
                    x.conn = None;
                    x.health_poll = None;
                    x.polls = false;
                }
            }
            Event::Refused { pid, uid, reason } => log(
                Level::Warn,
                &format!("ha endpoint: refused pid {pid} (uid {uid}): {reason}"),
            ),
        }
    }
}
