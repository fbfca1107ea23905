//! The Monitor's side of the HA hooks (`docs/ha.md` "The hooks
//! protocol"): a `SOCK_SEQPACKET` socket that supervised processes
//! connect to, for the HA Monitor to embed (it is in
//! `mtipc::internals::ha`, not the API).
//!
//! [`Endpoint::bind`] listens at a path (mode 0600; a stale socket there
//! is replaced, anything else refused). [`Endpoint::next_event`] waits on
//! one epoll set that holds the listener and every connection (so an idle
//! connection costs nothing per wait) and returns what happened, one
//! [`Event`] at a time: a process that connected and said
//! `hello` (after its checks), `ready`, `heartbeat`, `polls on|off`, a health answer, a
//! connection closed, a connection refused. A connection is refused when
//! its peer (`SO_PEERCRED`) runs as another uid than the endpoint's
//! owner, when its hello does not come within [`HELLO_TIMEOUT`], names
//! another pid than the peer's or a child of the peer's (the Spawner
//! makes a connection for a process it starts, which the process
//! inherits), is sent (`SCM_CREDENTIALS`) by another process than the one
//! it names or the connection's maker, or names a start time that is not
//! that process's; a connection that sends anything malformed or out of turn
//! is closed. Every accepted connection gets the current role at once
//! (the answer to its hello), and [`Endpoint::set_role`] sends a new one
//! to all. [`Endpoint::poll_health`] asks one connection's health
//! callback; the answer comes as [`Event::Health`].
//!
//! Single-threaded: the Monitor owns the endpoint and calls it from one
//! thread. Nothing here blocks except `next_event`, up to its timeout.

use super::proto::{self, Health, Message, MAX_MESSAGE};
use super::Role;
use crate::error::{err, Error, Result};
use crate::log::{debug, info, warn};
use crate::sys::net::{self as sys, Epoll, RecvFlags};
use crate::sys::ProcId;
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a new connection has to say hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most connections an endpoint holds; more are refused.
pub const MAX_CONNECTIONS: usize = 4096;

/// A connection of an endpoint (its number, never reused by that endpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What happened on an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A process connected and said hello; it has been sent the role.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The process (its pid checked with `SO_PEERCRED`, its start
        /// time with `/proc`).
        proc: ProcId,
    },
    /// The process said it is ready.
    Ready {
        /// The connection.
        conn: ConnId,
    },
    /// A heartbeat.
    Heartbeat {
        /// The connection.
        conn: ConnId,
    },
    /// The process registered a health callback (`on`: poll it) or
    /// removed it. A connection starts with none.
    Polls {
        /// The connection.
        conn: ConnId,
        /// Whether to poll.
        on: bool,
    },
    /// The answer to the health poll `seq`.
    Health {
        /// The connection.
        conn: ConnId,
        /// The poll's number ([`Endpoint::poll_health`]'s result).
        seq: u64,
        /// The answer.
        health: Health,
    },
    /// A connection ended (the process closed it or died, or it broke
    /// the protocol and the endpoint closed it).
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why, one line.
        reason: String,
    },
    /// A connection was refused before its hello was accepted.
    Refused {
        /// The peer's pid (`SO_PEERCRED`).
        pid: u32,
        /// The peer's uid.
        uid: u32,
        /// Why, one line.
        reason: String,
    },
}

struct Conn {
    fd: OwnedFd,
    pid: u32,
    uid: u32,
    since: Instant,
    /// Set once its hello was accepted.
    proc: Option<ProcId>,
}

/// The Monitor's socket. See the module documentation.
pub struct Endpoint {
    listener: OwnedFd,
    path: PathBuf,
    /// (device, inode) of the socket file, so that drop removes only ours.
    file_id: (u64, u64),
    owner_uid: u32,
    role: (Role, u64),
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    next_seq: u64,
    events: VecDeque<Event>,
    /// See [`Endpoint::set_wake`].
    wake: Option<OwnedFd>,
    /// The listener ([`LISTENER`]), the wake descriptor ([`WAKE`]) and
    /// each connection (its [`ConnId`]).
    epoll: Epoll,
    /// The numbers the last wait returned (kept to reuse its allocation).
    ready: Vec<u64>,
}

/// The listener's number in the epoll set (connections count from 1).
const LISTENER: u64 = 0;
/// The wake descriptor's number in the epoll set.
const WAKE: u64 = u64::MAX;

impl Endpoint {
    /// Listens at `path` (mode 0600), answering every hello with `role`
    /// and `epoch`. Peers must run as this process's uid. A stale socket
    /// at `path` is removed first (the caller makes sure no other Monitor
    /// uses it); any other file there is refused
    /// ([`Exists`](crate::ErrorKind::Exists)).
    pub fn bind(path: &Path, role: Role, epoch: u64) -> Result<Endpoint> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
                .map_err(|e| Error::io(format_args!("stale HA socket {shown}"), e))?,
            Ok(_) => {
                return Err(err!(
                    Exists,
                    "{shown} exists and is not a socket: the HA endpoint does not replace it"
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format_args!("HA socket {shown}"), e)),
        }
        // Each hello comes with its sender's pid (`recv_packet_from`).
        let listener = sys::seqpacket_listen_with_credentials(path, 128).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENAMETOOLONG)
                || e.raw_os_error() == Some(libc::EINVAL)
            {
                err!(
                    Invalid,
                    "HA socket path {shown} is too long for a UNIX socket ({e})"
                )
            } else {
                Error::io(format_args!("bind HA socket {shown}"), e)
            }
        })?;
        let meta = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::symlink_metadata(path))
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                Error::io(format_args!("HA socket {shown}"), e)
            })?;
        let epoll = Epoll::new()
            .and_then(|ep| ep.add(&listener, LISTENER).map(|()| ep))
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                Error::io(format_args!("epoll for HA socket {shown}"), e)
            })?;
        info!(path = %shown, role = %role, epoch, "ha endpoint: listening");
        Ok(Endpoint {
            listener,
            path: path.to_path_buf(),
            file_id: (meta.dev(), meta.ino()),
            owner_uid: crate::sys::euid(),
            role: (role, epoch),
            conns: BTreeMap::new(),
            next_conn: 1,
            next_seq: 1,
            events: VecDeque::new(),
            wake: None,
            epoll,
            ready: Vec::with_capacity(Epoll::BATCH),
        })
    }

    /// Gives the endpoint a descriptor (the read end of a non-blocking
    /// pipe) that ends a wait of [`Endpoint::next_event`] when it becomes
    /// readable: it is drained and `next_event` returns `Ok(None)`. The
    /// Monitor's signal handlers (`SIGCHLD`, a stop signal) write to the
    /// other end, so one `poll` waits for hooks messages and signals.
    pub fn set_wake(&mut self, fd: OwnedFd) {
        if let Some(old) = self.wake.take() {
            self.epoll.remove(&old);
        }
        if let Err(e) = self.epoll.add(&fd, WAKE) {
            // Not expected (a descriptor that epoll cannot watch, such as
            // a regular file): the waits then last their timeouts.
            warn!(error = %e, "ha endpoint: the wake descriptor cannot be watched");
        }
        self.wake = Some(fd);
    }

    /// The socket's path (what `$MTIPC_HA_SOCKET` names).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The role every connection has been sent last.
    pub fn role(&self) -> (Role, u64) {
        self.role
    }

    /// The process of an accepted connection.
    pub fn peer(&self, conn: ConnId) -> Option<ProcId> {
        self.conns.get(&conn).and_then(|c| c.proc)
    }

    /// The accepted connections and their processes.
    pub fn connections(&self) -> Vec<(ConnId, ProcId)> {
        self.conns
            .iter()
            .filter_map(|(&id, c)| c.proc.map(|p| (id, p)))
            .collect()
    }

    /// Sends `role` and `epoch` to every accepted connection (and to every
    /// later one). A connection that cannot take it is closed
    /// ([`Event::Closed`]).
    pub fn set_role(&mut self, role: Role, epoch: u64) {
        self.role = (role, epoch);
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.proc.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.send(id, &Message::Role { role, epoch });
        }
    }

    /// Asks the process of `conn` for its health: the answer comes as an
    /// [`Event::Health`] with the number returned here. `NotFound` if
    /// there is no such accepted connection; `Closed` if it could not be
    /// sent (the connection is closed then).
    pub fn poll_health(&mut self, conn: ConnId) -> Result<u64> {
        if self.peer(conn).is_none() {
            return Err(err!(NotFound, "no HA connection {}", conn.0));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.send(conn, &Message::HealthPoll { seq }) {
            Ok(seq)
        } else {
            Err(err!(Closed, "HA connection {} closed", conn.0))
        }
    }

    /// Closes `conn` (no event).
    pub fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.epoll.remove(&c.fd);
        }
    }

    /// Sends `m` on `conn`; closes it (with an event) if that fails.
    fn send(&mut self, id: ConnId, m: &Message) -> bool {
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        match sys::send_nowait(&c.fd, m.encode().as_bytes()) {
            Ok(_) => true,
            Err(e) => {
                let reason = if e.kind() == std::io::ErrorKind::WouldBlock {
                    "the process does not read its HA socket".to_string()
                } else {
                    format!("send: {e}")
                };
                self.drop_conn(id, reason);
                false
            }
        }
    }

    fn drop_conn(&mut self, id: ConnId, reason: String) {
        if let Some(c) = self.conns.remove(&id) {
            self.epoll.remove(&c.fd);
            let ev = match c.proc {
                Some(_) => Event::Closed { conn: id, reason },
                None => Event::Refused {
                    pid: c.pid,
                    uid: c.uid,
                    reason,
                },
            };
            debug!(event = ?ev, "ha endpoint: connection ended");
            self.events.push_back(ev);
        }
    }

    /// The next event, waiting for at most `timeout` (`None`: none came).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        let deadline = Instant::now() + timeout;
        // Even a zero timeout looks once (without waiting) at what is
        // there: a caller taking "what else came" gets it now.
        let mut looked = false;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            let now = Instant::now();
            self.expire(now);
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            if looked && now >= deadline {
                return Ok(None);
            }
            looked = true;
            // The earliest hello deadline bounds the wait.
            let wake = self
                .conns
                .values()
                .filter(|c| c.proc.is_none())
                .map(|c| c.since + HELLO_TIMEOUT)
                .min()
                .map_or(deadline, |d| d.min(deadline));
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            let waited = self.epoll.wait(Some(wake), &mut ready);
            let mut woken = false;
            for &key in ready.iter() {
                match key {
                    LISTENER => self.accept_all(),
                    WAKE => {
                        woken = true;
                        if let Some(w) = &self.wake {
                            sys::drain(w);
                        }
                    }
                    id => self.read(ConnId(id)),
                }
            }
            self.ready = ready;
            waited.map_err(|e| {
                Error::io(format_args!("wait on HA socket {}", self.path.display()), e)
            })?;
            if woken && self.events.is_empty() {
                return Ok(None);
            }
        }
    }

    /// Refuses connections whose hello is late.
    fn expire(&mut self, now: Instant) {
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.proc.is_none() && now >= c.since + HELLO_TIMEOUT)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.drop_conn(id, format!("no hello within {HELLO_TIMEOUT:?}"));
        }
    }

    fn accept_all(&mut self) {
        loop {
            let fd = match sys::accept(&self.listener) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(error = %e, "ha endpoint: accept failed");
                    return;
                }
            };
            let cred = match sys::peer_cred(&fd) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "ha endpoint: no peer credentials; connection dropped");
                    continue;
                }
            };
            let refuse = if cred.uid != self.owner_uid {
                Some(format!(
                    "peer runs as uid {}, not the Monitor's uid {}",
                    cred.uid, self.owner_uid
                ))
            } else if self.conns.len() >= MAX_CONNECTIONS {
                Some(format!("more than {MAX_CONNECTIONS} connections"))
            } else {
                None
            };
            if let Some(reason) = refuse {
                warn!(pid = cred.pid, uid = cred.uid, reason = %reason, "ha endpoint: refused");
                self.events.push_back(Event::Refused {
                    pid: cred.pid,
                    uid: cred.uid,
                    reason,
                });
                continue;
            }
            let id = ConnId(self.next_conn);
            if let Err(e) = self.epoll.add(&fd, id.0) {
                warn!(pid = cred.pid, error = %e, "ha endpoint: cannot watch a connection; dropped");
                continue;
            }
            self.next_conn += 1;
            self.conns.insert(
                id,
                Conn {
                    fd,
                    pid: cred.pid,
                    uid: cred.uid,
                    since: Instant::now(),
                    proc: None,
                },
            );
        }
    }

    /// Reads what `id` sent: the packets waiting, up to a few (the epoll
    /// set is level-triggered: more are read at the next wait), so that a
    /// hello and the `ready` behind it are taken in one wake-up.
    fn read(&mut self, id: ConnId) {
        for _ in 0..8 {
            if !self.read_one(id) {
                return;
            }
        }
    }

    /// Reads one packet of `id`: `false` if none was there or the
    /// connection is gone.
    fn read_one(&mut self, id: ConnId) -> bool {
        let Some(c) = self.conns.get(&id) else {
            return false;
        };
        let mut buf = [0u8; MAX_MESSAGE + 1];
        // Until the hello: with its sender's pid.
        let read = if c.proc.is_none() {
            sys::recv_packet_from(&c.fd, &mut buf, RecvFlags::DONTWAIT)
        } else {
            sys::recv_packet(&c.fd, &mut buf, RecvFlags::DONTWAIT).map(|(n, r)| (n, r, None))
        };
        let (n, real, sender) = match read {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                self.drop_conn(id, format!("recv: {e}"));
                return false;
            }
        };
        if real == 0 {
            self.drop_conn(id, "the process closed the connection".into());
            return false;
        }
        if real > MAX_MESSAGE {
            self.drop_conn(
                id,
                format!("message of {real} bytes (at most {MAX_MESSAGE})"),
            );
            return false;
        }
        let m = match proto::parse(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                self.drop_conn(id, e.message().to_string());
                return false;
            }
        };
        let (pid, greeted) = (c.pid, c.proc);
        match (greeted.is_some(), m) {
            // The same hello again: the process said its own on the
            // connection the Spawner made for it, racing the Spawner's
            // (`inherit`). Nothing new.
            (true, Message::Hello { pid: said, start })
                if greeted == Some(ProcId { pid: said, start }) => {}
            (false, Message::Hello { pid: said, start }) => {
                // Who sent it: the kernel's word, which every packet on
                // a connection of this listener carries.
                let reason = if sender.is_none() {
                    Some("hello without its sender's credentials".to_string())
                } else if sender != Some(said) && sender != Some(pid) {
                    Some(format!(
                        "hello names pid {said} but was sent by pid {}, neither that \
                         process nor the connection's maker (pid {pid})",
                        sender.unwrap_or(0)
                    ))
                } else if said == pid {
                    let alive = ProcId::of(pid).ok().flatten();
                    (alive.map(|p| p.start) != Some(start)).then(|| {
                        format!(
                            "hello names start time {start}, but pid {pid} started at {}",
                            alive.map_or("(gone)".to_string(), |p| p.start.to_string())
                        )
                    })
                } else {
                    // On a connection made by the process's parent: the
                    // Spawner's, for a process it has just started
                    // (`inherit`), said by the Spawner or by the process.
                    match (ProcId { pid: said, start }).parent_of() {
                        Ok(Some(parent)) if parent == pid => None,
                        Ok(Some(parent)) => Some(format!(
                            "hello names pid {said}, but the peer is pid {pid}, and not its \
                             parent (pid {parent})"
                        )),
                        _ => Some(format!(
                            "hello names pid {said} started at {start}, but the peer is pid \
                             {pid}, and no such child of it runs"
                        )),
                    }
                };
                if let Some(reason) = reason {
                    self.drop_conn(id, reason);
                    return false;
                }
                let proc = ProcId { pid: said, start };
                if let Some(c) = self.conns.get_mut(&id) {
                    c.proc = Some(proc);
                }
                let (role, epoch) = self.role;
                if !self.send(id, &Message::Role { role, epoch }) {
                    return false;
                }
                debug!(
                    pid = said,
                    peer = pid,
                    conn = id.0,
                    "ha endpoint: process connected"
                );
                self.events.push_back(Event::Connected { conn: id, proc });
            }
            (false, other) => {
                self.drop_conn(id, format!("\"{other}\" before hello"));
                return false;
            }
            (true, Message::Ready) => self.events.push_back(Event::Ready { conn: id }),
            (true, Message::Heartbeat) => self.events.push_back(Event::Heartbeat { conn: id }),
            (true, Message::Polls(on)) => self.events.push_back(Event::Polls { conn: id, on }),
            (true, Message::Health { seq, health }) => self.events.push_back(Event::Health {
                conn: id,
                seq,
                health,
            }),
            (true, other) => {
                self.drop_conn(id, format!("\"{other}\" out of turn"));
                return false;
            }
        }
        true
    }
}

impl Drop for Endpoint {
    /// Removes the socket file if it is still the one this endpoint bound.
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::net::Events;
    use crate::ErrorKind;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "mtipc-ha-endpoint-{tag}-{}-{}",
            std::process::id(),
            crate::sys::monotonic_ns()
        ));
        std::fs::create_dir(&d).unwrap();
        Dir(d)
    }

    fn next(ep: &mut Endpoint) -> Event {
        ep.next_event(Duration::from_secs(5))
            .unwrap()
            .expect("an event")
    }

    fn recv(fd: &OwnedFd) -> Message {
        assert!(sys::wait_ready(
            fd,
            Events::IN,
            Some(Instant::now() + Duration::from_secs(5))
        )
        .unwrap());
        let mut buf = [0u8; 128];
        let (n, _) = sys::recv_packet(fd, &mut buf, RecvFlags::empty()).unwrap();
        proto::parse(&buf[..n]).unwrap()
    }

    fn hello(fd: &OwnedFd, pid: u32, start: u64) {
        let m = Message::Hello { pid, start }.encode();
        sys::send_nowait(fd, m.as_bytes()).unwrap();
    }

    #[test]
    fn a_process_connects_and_talks() {
        let d = dir("talk");
        let path = d.0.join("ha.sock");
        let mut ep = Endpoint::bind(&path, Role::Active, 1).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let me = ProcId::current().unwrap();
        let app = sys::seqpacket_connect(&path).unwrap();
        hello(&app, me.pid, me.start);
        let conn = match next(&mut ep) {
            Event::Connected { conn, proc } => {
                assert_eq!(proc, me);
                conn
            }
            e => panic!("{e:?}"),
        };
        assert_eq!(
            recv(&app),
            Message::Role {
                role: Role::Active,
                epoch: 1
            }
        );
        assert_eq!(ep.connections(), vec![(conn, me)]);
        sys::send_nowait(&app, b"ready").unwrap();
        sys::send_nowait(&app, b"heartbeat").unwrap();
        sys::send_nowait(&app, b"polls on").unwrap();
        assert_eq!(next(&mut ep), Event::Ready { conn });
        assert_eq!(next(&mut ep), Event::Heartbeat { conn });
        assert_eq!(next(&mut ep), Event::Polls { conn, on: true });
        let seq = ep.poll_health(conn).unwrap();
        assert_eq!(recv(&app), Message::HealthPoll { seq });
        sys::send_nowait(&app, format!("health {seq} fail").as_bytes()).unwrap();
        assert_eq!(
            next(&mut ep),
            Event::Health {
                conn,
                seq,
                health: Health::Fail
            }
        );
        ep.set_role(Role::Standby, 2);
        assert_eq!(
            recv(&app),
            Message::Role {
                role: Role::Standby,
                epoch: 2
            }
        );
        assert_eq!(
            ep.poll_health(ConnId(99)).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        drop(app);
        match next(&mut ep) {
            Event::Closed { conn: c, reason } => {
                assert_eq!(c, conn);
                assert!(reason.contains("closed the connection"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        assert!(ep.next_event(Duration::from_millis(20)).unwrap().is_none());
        drop(ep);
        assert!(!path.exists(), "the socket file is removed");
    }

    #[test]
    fn a_wake_descriptor_ends_the_wait() {
        let d = dir("wake");
        let mut ep = Endpoint::bind(&d.0.join("ha.sock"), Role::Active, 1).unwrap();
        let (r, w) = sys::pipe().unwrap();
        ep.set_wake(r);
        sys::poke(&w);
        let t = Instant::now();
        assert_eq!(ep.next_event(Duration::from_secs(5)).unwrap(), None);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // Drained: the next wait lasts its timeout.
        let t = Instant::now();
        assert_eq!(ep.next_event(Duration::from_millis(100)).unwrap(), None);
        assert!(t.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn lies_and_garbage_are_refused() {
        let d = dir("refuse");
        let path = d.0.join("ha.sock");
        let mut ep = Endpoint::bind(&path, Role::Active, 1).unwrap();
        let me = ProcId::current().unwrap();
        let refused = |ep: &mut Endpoint, needle: &str| match next(ep) {
            Event::Refused { pid, reason, .. } => {
                assert_eq!(pid, me.pid);
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
            }
            e => panic!("{e:?}"),
        };
        // Another pid than the peer's, not a child of it: the parent, and
        // a pid that does not run.
        let a = sys::seqpacket_connect(&path).unwrap();
        let parent = ProcId::of(std::os::unix::process::parent_id())
            .unwrap()
            .unwrap();
        hello(&a, parent.pid, parent.start);
        refused(&mut ep, "and not its parent");
        let a2 = sys::seqpacket_connect(&path).unwrap();
        hello(&a2, i32::MAX as u32, 1);
        refused(&mut ep, "no such child of it runs");
        // Another start time: a pid reused.
        let b = sys::seqpacket_connect(&path).unwrap();
        hello(&b, me.pid, me.start + 1);
        refused(&mut ep, "start time");
        // A connection this process made, handed to a child: the child
        // may say its own hello on it, not a sibling's (the kernel says
        // who sent it).
        {
            use std::os::fd::AsRawFd;
            let mut sibling = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            let sib = ProcId::of(sibling.id()).unwrap().unwrap();
            let made = sys::seqpacket_connect(&path).unwrap();
            let raw = made.as_raw_fd();
            let mut liar = std::process::Command::new("sh");
            liar.args([
                "-c",
                &format!("printf 'hello 1 {} {}' >&3", sib.pid, sib.start),
            ]);
            crate::ha::inherit::give_as_fd3(&mut liar, raw);
            let mut liar = liar.spawn().unwrap();
            let liar_pid = liar.id();
            assert!(liar.wait().unwrap().success());
            match next(&mut ep) {
                Event::Refused { pid, reason, .. } => {
                    assert_eq!(pid, me.pid, "the connection's maker");
                    assert!(
                        reason.contains(&format!("was sent by pid {liar_pid}")),
                        "{reason}"
                    );
                }
                e => panic!("{e:?}"),
            }
            drop(made);
            sibling.kill().unwrap();
            sibling.wait().unwrap();
        }
        // Anything before hello, garbage, an oversized packet.
        let c = sys::seqpacket_connect(&path).unwrap();
        sys::send_nowait(&c, b"ready").unwrap();
        refused(&mut ep, "before hello");
        let e = sys::seqpacket_connect(&path).unwrap();
        sys::send_nowait(&e, b"hello 1 x\x1b 1").unwrap();
        refused(&mut ep, "hello 1 x\\x1b 1");
        let f = sys::seqpacket_connect(&path).unwrap();
        sys::send_nowait(&f, &[b'a'; 500]).unwrap();
        refused(&mut ep, "500 bytes");
        // After hello: a Monitor's message, a second hello.
        let g = sys::seqpacket_connect(&path).unwrap();
        hello(&g, me.pid, me.start);
        let conn = match next(&mut ep) {
            Event::Connected { conn, .. } => conn,
            e => panic!("{e:?}"),
        };
        // The same hello again (a process racing its Spawner's): nothing.
        hello(&g, me.pid, me.start);
        sys::send_nowait(&g, b"ready").unwrap();
        assert_eq!(next(&mut ep), Event::Ready { conn });
        // Another hello after the first: closed.
        let h = sys::seqpacket_connect(&path).unwrap();
        hello(&h, me.pid, me.start);
        let conn_h = match next(&mut ep) {
            Event::Connected { conn, .. } => conn,
            e => panic!("{e:?}"),
        };
        hello(&h, me.pid, me.start + 1);
        match next(&mut ep) {
            Event::Closed { conn: c, reason } => {
                assert_eq!(c, conn_h);
                assert!(reason.contains("out of turn"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        sys::send_nowait(&g, b"role active 9").unwrap();
        match next(&mut ep) {
            Event::Closed { conn: c, reason } => {
                assert_eq!(c, conn);
                assert!(reason.contains("out of turn"), "{reason}");
            }
            e => panic!("{e:?}"),
        }
        // A file that is not a socket is not replaced.
        drop(ep);
        std::fs::write(&path, "x").unwrap();
        let err = Endpoint::bind(&path, Role::None, 0).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Exists);
        let long = d.0.join("y".repeat(120));
        assert_eq!(
            Endpoint::bind(&long, Role::None, 0).err().unwrap().kind(),
            ErrorKind::Invalid
        );
        drop((a, b, c, e, f, g));
    }
}
