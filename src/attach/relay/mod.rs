//! mtipcd's relay (DESIGN.md section 1 step 5, `docs/attach.md` "The relay"):
//! a UNIX stream socket where the two ends of an attach round meet.
//!
//! The daemon's waiter finds a response file and [`register`](Relay::register)s
//! its [`Pairing`]; the tenant and the attacher each [`connect`] and send a
//! hello line (`mtipc relay 1 <tenant|attacher> <pairing>\n`, see
//! [`parse_hello`]). The relay checks each peer with `SO_PEERCRED` (uid: the
//! domain owner's or root; pid: the pairing's tenant or attacher pid),
//! answers `ok\n` to both once both are there, and from the pairing's start
//! time copies bytes both ways until `start + duration` (or until an end
//! closes). A refusal is one line `err <reason>\n`, then the relay closes.
//!
//! Threads: [`Relay::run`] is the event loop (accepting, reading hellos,
//! holding connections until their pairing is complete, expiring what waited
//! too long), all in one `poll(2)` loop; each relayed pairing then gets one
//! thread of its own that forwards with `poll(2)` too. Every accept, refusal,
//! pairing and close is an event (`crate::log`; the library never prints).

mod client;
mod forward;
mod hello;

pub use client::{connect, Listener};
pub(crate) use hello::short as short_id;
pub use hello::{hello_line, parse_hello, End, Hello, MAX_HELLO};

use crate::error::{err, Error, Result};
use crate::log::{debug, error, info, warn};
use crate::sys::net::{self as sys, Events, RecvFlags};
use hello::short;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a registered pairing waits for its two ends, and how long a
/// connection waits for its pairing to be registered, before the relay
/// forgets it (and refuses whoever waited).
pub const PAIRING_TTL: Duration = Duration::from_secs(10);

/// How long a new connection has to send its hello line.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections not yet relayed (reading their hello or waiting for the other
/// end) the relay holds at most; more are refused with `err relay busy`.
pub const MAX_PENDING: usize = 1024;

/// Pairings the relay forwards at once at most; more are refused with
/// `err relay full`.
pub const MAX_ACTIVE: usize = 1024;

/// After one end of a relayed pairing closed: how long the relay keeps
/// delivering what remains before it closes both ends regardless.
pub const LINGER: Duration = Duration::from_secs(5);

/// A pairing the daemon's waiter found in a response file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pairing {
    /// The pairing id (16 random bytes the attacher chose).
    pub id: [u8; 16],
    /// The pid the tenant end must connect from (the advertisement's pid).
    pub tenant_pid: u32,
    /// The pid the attacher end must connect from (the response's `attacher`).
    pub attacher_pid: u32,
    /// Unix time (ms) before which no byte passes.
    pub start_ms: u64,
    /// How long (ms) the path stays open from `start_ms`; 0 = until an end
    /// closes.
    pub duration_ms: u64,
}

impl Pairing {
    /// The pid `end` must connect from.
    pub fn pid_of(&self, end: End) -> u32 {
        match end {
            End::Tenant => self.tenant_pid,
            End::Attacher => self.attacher_pid,
        }
    }
}

/// The relay's counters since it was bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Connections accepted (refused ones included).
    pub accepted: u64,
    /// Pairings whose two ends were both there and got `ok`.
    pub paired: u64,
    /// Connections answered with `err ...`.
    pub refused: u64,
    /// Relayed pairings closed because their duration had passed.
    pub closed_by_duration: u64,
    /// Pairings being relayed now.
    pub active: u64,
    /// Connections held now whose hello was good: waiting for the other end
    /// or for the registration.
    pub waiting: u64,
}

/// Limits and timeouts of a relay; [`Default`] is what mtipcd uses (the
/// constants of this module). Tests shorten them.
#[derive(Clone, Debug)]
pub struct Options {
    /// See `PAIRING_TTL`.
    pub pairing_ttl: Duration,
    /// See `HELLO_TIMEOUT`.
    pub hello_timeout: Duration,
    /// See `MAX_PENDING`.
    pub max_pending: usize,
    /// See `MAX_ACTIVE`.
    pub max_active: usize,
    /// See `LINGER`.
    pub linger: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pairing_ttl: PAIRING_TTL,
            hello_timeout: HELLO_TIMEOUT,
            max_pending: MAX_PENDING,
            max_active: MAX_ACTIVE,
            linger: LINGER,
        }
    }
}

/// The relay: listens on a UNIX socket, pairs the two ends of each
/// registered pairing and forwards bytes between them inside the pairing's
/// time window. See the module documentation.
pub struct Relay {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file bound, so that drop removes it
    /// only if it is still ours.
    file_id: (u64, u64),
    owner_uid: u32,
    opts: Options,
    shared: Arc<Shared>,
}

/// What the relay, its event loop and its forwarding threads share.
struct Shared {
    /// Process-local state under a lock (not shared memory, so no atomics:
    /// clippy.toml keeps those in the loom shim).
    flags: Mutex<Flags>,
    /// Written once by `shutdown`, never drained: readable for every poll.
    stop_r: OwnedFd,
    stop_w: OwnedFd,
    /// Wakes the event loop (a registration, a finished pairing); drained
    /// by the loop.
    wake_r: OwnedFd,
    wake_w: OwnedFd,
    /// Registrations not yet taken by the event loop, and when they came.
    inbox: Mutex<Vec<(Pairing, Instant)>>,
    /// Pairings whose forwarding thread has ended, for the loop to join.
    done: Mutex<Vec<[u8; 16]>>,
    stats: Mutex<RelayStats>,
}

#[derive(Default)]
struct Flags {
    /// Shutdown was asked.
    stopping: bool,
    /// `run` runs.
    running: bool,
}

impl Shared {
    fn stopping(&self) -> bool {
        lock(&self.flags).stopping
    }

    fn count(&self, f: impl FnOnce(&mut RelayStats)) {
        f(&mut lock(&self.stats));
    }

    fn wake(&self) {
        sys::poke(&self.wake_w);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// Binds `path` with the default [`Options`]. A stale socket file at
    /// `path` is removed first (the caller guarantees that no other relay
    /// runs: mtipcd holds `daemon.lock`); anything else there is refused
    /// ([`Exists`](crate::ErrorKind::Exists)). The socket's mode is 0600.
    /// `owner_uid` is the domain owner's uid: peers of another uid (root
    /// excepted) are refused.
    pub fn bind(path: &Path, owner_uid: u32) -> Result<Relay> {
        Relay::bind_with(path, owner_uid, Options::default())
    }

    /// [`bind`](Relay::bind) with explicit limits and timeouts.
    pub fn bind_with(path: &Path, owner_uid: u32, opts: Options) -> Result<Relay> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path)
                    .map_err(|e| Error::io(format_args!("stale relay socket {shown}"), e))?;
                info!(path = %shown, "relay: removed a stale socket file");
            }
            Ok(_) => {
                return Err(err!(
                    Exists,
                    "{shown} exists and is not a socket: the relay does not replace it"
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format_args!("relay socket {shown}"), e)),
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| socket_error(format_args!("bind relay socket {shown}"), e))?;
        // Connecting needs write permission on the socket file: 0600 keeps
        // everyone but the owner (and root) out before SO_PEERCRED is even
        // looked at. The domain directory (0700) covers the instant between
        // bind and chmod.
        let meta = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::symlink_metadata(path))
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                Error::io(format_args!("relay socket {shown}"), e)
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(format_args!("relay socket {shown}"), e))?;
        let (stop_r, stop_w) = sys::pipe().map_err(|e| Error::io("relay stop pipe", e))?;
        let (wake_r, wake_w) = sys::pipe().map_err(|e| Error::io("relay wake pipe", e))?;
        info!(path = %shown, owner_uid, "relay: listening");
        Ok(Relay {
            listener,
            path: path.to_path_buf(),
            file_id: (meta.dev(), meta.ino()),
            owner_uid,
            opts,
            shared: Arc::new(Shared {
                flags: Mutex::new(Flags::default()),
                stop_r,
                stop_w,
                wake_r,
                wake_w,
                inbox: Mutex::new(Vec::new()),
                done: Mutex::new(Vec::new()),
                stats: Mutex::new(RelayStats::default()),
            }),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a pairing found in a response file. Its ends may connect
    /// before or after this call; a pairing whose ends have not both come
    /// within [`PAIRING_TTL`] of registration is forgotten. Registering an id
    /// the relay already knows changes nothing (the first registration
    /// stands).
    pub fn register(&self, p: Pairing) {
        {
            let mut inbox = lock(&self.shared.inbox);
            if inbox.len() >= self.opts.max_pending {
                warn!(
                    pairing = %short(&p.id),
                    "relay: too many registrations not yet taken; pairing ignored"
                );
                return;
            }
            inbox.push((p, Instant::now()));
        }
        self.shared.wake();
    }

    /// Serves until [`shutdown`](Relay::shutdown): accepts connections,
    /// reads their hellos, checks the peers, pairs the ends and starts a
    /// forwarding thread per pairing (see the module documentation). When
    /// it returns, every connection it held or relayed is closed and every
    /// thread it started has ended. Only one `run` at a time
    /// ([`Invalid`](crate::ErrorKind::Invalid) otherwise); after a
    /// shutdown it returns at once.
    pub fn run(&self) -> Result<()> {
        if std::mem::replace(&mut lock(&self.shared.flags).running, true) {
            return Err(err!(
                Invalid,
                "the relay at {} is already running",
                self.path.display()
            ));
        }
        let mut lp = EventLoop::new(self);
        let result = lp.serve();
        if let Err(e) = &result {
            error!(error = %e, "relay: event loop failed; closing every connection");
        }
        // Whatever ended the loop, the forwarding threads end too.
        self.shutdown();
        lp.finish();
        lock(&self.shared.flags).running = false;
        info!(path = %self.path.display(), "relay: stopped");
        result
    }

    /// Asks [`run`](Relay::run) to return: it stops accepting, refuses the
    /// connections it holds (`err relay shutting down`) and closes every
    /// relayed pairing (both ends see end-of-file). Returns at once; `run`
    /// returns promptly after.
    pub fn shutdown(&self) {
        if !std::mem::replace(&mut lock(&self.shared.flags).stopping, true) {
            info!(path = %self.path.display(), "relay: shutting down");
            sys::poke(&self.shared.stop_w);
        }
    }

    /// The counters.
    pub fn stats(&self) -> RelayStats {
        *lock(&self.shared.stats)
    }
}

impl Drop for Relay {
    /// Removes the socket file if it is still the one this relay bound.
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A connection whose hello is being read.
struct Pending {
    stream: UnixStream,
    pid: u32,
    uid: u32,
    since: Instant,
    line: Vec<u8>,
}

/// A connection whose hello was good, waiting for the other end (or for
/// the registration).
struct Waiting {
    stream: UnixStream,
    pid: u32,
    since: Instant,
}

/// One pairing id the relay has heard of: registered, or named by a
/// connection, or both.
#[derive(Default)]
struct Entry {
    /// The registration and when it came.
    pairing: Option<(Pairing, Instant)>,
    /// The waiting connections, by [`End::index`].
    ends: [Option<Waiting>; 2],
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.pairing.is_none() && self.ends.iter().all(Option::is_none)
    }
}

enum HelloRead {
    /// More bytes to come.
    Partial,
    /// The line is complete (newline included) in `Pending::line`.
    Line,
    /// `MAX_HELLO` bytes and no newline.
    TooLong,
    /// End of file before the newline.
    Eof,
}

/// The state of [`Relay::run`]: everything not yet relayed.
struct EventLoop<'r> {
    relay: &'r Relay,
    shared: &'r Arc<Shared>,
    pending: Vec<Pending>,
    entries: HashMap<[u8; 16], Entry>,
    /// Connections in `entries`.
    waiting: usize,
    /// Forwarding threads by pairing id.
    active: HashMap<[u8; 16], JoinHandle<()>>,
    /// Accepting paused until then (out of descriptors).
    accept_paused: Option<Instant>,
}

/// A pollfd slot of the event loop.
#[derive(Clone, Copy)]
enum Slot {
    Stop,
    Wake,
    Listener,
    Pending(usize),
    Waiting([u8; 16], End),
}

impl<'r> EventLoop<'r> {
    fn new(relay: &'r Relay) -> EventLoop<'r> {
        EventLoop {
            relay,
            shared: &relay.shared,
            pending: Vec::new(),
            entries: HashMap::new(),
            waiting: 0,
            active: HashMap::new(),
            accept_paused: None,
        }
    }

    fn opts(&self) -> &'r Options {
        &self.relay.opts
    }

    fn serve(&mut self) -> Result<()> {
        let mut slots = Vec::new();
        loop {
            if self.shared.stopping() {
                return Ok(());
            }
            let now = Instant::now();
            if self.accept_paused.is_some_and(|t| t <= now) {
                self.accept_paused = None;
            }
            self.take_registrations();
            self.reap();
            let next = self.expire(now);

            // What to wait for, and which slot each entry is.
            slots.clear();
            let mut fds = Vec::new();
            fds.push(sys::watch(&self.shared.stop_r, Events::IN));
            slots.push(Slot::Stop);
            fds.push(sys::watch(&self.shared.wake_r, Events::IN));
            slots.push(Slot::Wake);
            if self.accept_paused.is_none() {
                fds.push(sys::watch(&self.relay.listener, Events::IN));
                slots.push(Slot::Listener);
            }
            for (i, p) in self.pending.iter().enumerate() {
                fds.push(sys::watch(&p.stream, Events::IN));
                slots.push(Slot::Pending(i));
            }
            for (id, e) in &self.entries {
                for end in End::BOTH {
                    if let Some(w) = &e.ends[end.index()] {
                        // No event asked: only a hang-up (or error) wakes us,
                        // bytes an end sent early stay in its queue.
                        fds.push(sys::watch(&w.stream, Events::empty()));
                        slots.push(Slot::Waiting(*id, end));
                    }
                }
            }
            let deadline = [next, self.accept_paused].into_iter().flatten().min();
            sys::poll(&mut fds, deadline).map_err(|e| Error::io("relay: poll", e))?;
            // What happened to each, before `self` is changed below.
            let woken: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);

            let mut readable = Vec::new();
            let mut accept = false;
            for (woke, slot) in woken.into_iter().zip(&slots) {
                if !woke {
                    continue;
                }
                match *slot {
                    Slot::Stop => return Ok(()),
                    Slot::Wake => sys::drain(&self.shared.wake_r),
                    Slot::Listener => accept = true,
                    Slot::Pending(i) => readable.push(i),
                    Slot::Waiting(id, end) => self.hung_up(&id, end),
                }
            }
            self.read_hellos(&readable);
            if accept {
                self.accept();
            }
            let waiting = self.waiting as u64;
            self.shared.count(|s| s.waiting = waiting);
        }
    }

    /// Takes the registrations `register` queued.
    fn take_registrations(&mut self) {
        let new = std::mem::take(&mut *lock(&self.shared.inbox));
        for (p, at) in new {
            self.registered(p, at);
        }
    }

    fn registered(&mut self, p: Pairing, at: Instant) {
        let id = p.id;
        let tag = short(&id);
        if self.active.contains_key(&id) {
            warn!(pairing = %tag, "relay: pairing registered again while relayed; ignored");
            return;
        }
        if self.entries.get(&id).is_some_and(|e| e.pairing.is_some()) {
            warn!(pairing = %tag, "relay: pairing registered twice; the first registration stands");
            return;
        }
        if !self.entries.contains_key(&id) && self.entries.len() >= 2 * self.opts().max_pending {
            warn!(pairing = %tag, "relay: too many pairings known; registration ignored");
            return;
        }
        info!(
            pairing = %tag,
            tenant_pid = p.tenant_pid,
            attacher_pid = p.attacher_pid,
            start_ms = p.start_ms,
            duration_ms = p.duration_ms,
            "relay: pairing registered"
        );
        let entry = self.entries.entry(id).or_default();
        // Connections that came first are checked now that their pids are known.
        let mut wrong = Vec::new();
        for end in End::BOTH {
            let expected = p.pid_of(end);
            if entry.ends[end.index()]
                .as_ref()
                .is_some_and(|w| w.pid != expected)
            {
                let w = entry.ends[end.index()].take().expect("checked");
                wrong.push((w, end, expected));
            }
        }
        entry.pairing = Some((p, at));
        for (w, end, expected) in wrong {
            self.waiting -= 1;
            let reason = wrong_pid(w.pid, end, &id, expected);
            self.refuse(w.stream, w.pid, &reason);
        }
        self.try_pair(&id);
    }

    /// Joins the forwarding threads that have ended.
    fn reap(&mut self) {
        let done = std::mem::take(&mut *lock(&self.shared.done));
        for id in done {
            if let Some(h) = self.active.remove(&id) {
                let _ = h.join();
            }
        }
    }

    /// Refuses and forgets what waited too long; returns the next deadline.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let opts = self.opts();
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };

        let mut i = 0;
        while i < self.pending.len() {
            let deadline = self.pending[i].since + opts.hello_timeout;
            if deadline <= now {
                let p = self.pending.swap_remove(i);
                let reason = format!("no hello within {}", human(opts.hello_timeout));
                self.refuse(p.stream, p.pid, &reason);
            } else {
                soonest(deadline);
                i += 1;
            }
        }

        let mut expired = Vec::new();
        for (id, e) in &self.entries {
            if let Some((_, at)) = &e.pairing {
                let deadline = *at + opts.pairing_ttl;
                if deadline <= now {
                    expired.push((*id, None));
                } else {
                    soonest(deadline);
                }
            } else {
                for end in End::BOTH {
                    if let Some(w) = &e.ends[end.index()] {
                        let deadline = w.since + opts.pairing_ttl;
                        if deadline <= now {
                            expired.push((*id, Some(end)));
                        } else {
                            soonest(deadline);
                        }
                    }
                }
            }
        }
        for (id, end) in expired {
            let tag = short(&id);
            let ttl = human(opts.pairing_ttl);
            match end {
                // A registered pairing whose ends did not both come.
                None => {
                    let e = self.entries.remove(&id).expect("listed");
                    info!(pairing = %tag, "relay: pairing forgotten: its ends did not both connect within {ttl}");
                    for (end, w) in End::BOTH.into_iter().zip(e.ends) {
                        if let Some(w) = w {
                            self.waiting -= 1;
                            let reason = format!(
                                "pairing {tag} expired: the {} end did not connect within {ttl}",
                                end.other()
                            );
                            self.refuse(w.stream, w.pid, &reason);
                        }
                    }
                }
                // A connection whose pairing was never registered.
                Some(end) => {
                    let e = self.entries.get_mut(&id).expect("listed");
                    let w = e.ends[end.index()].take().expect("listed");
                    if e.is_empty() {
                        self.entries.remove(&id);
                    }
                    self.waiting -= 1;
                    let reason = format!("unknown pairing {tag}: not registered within {ttl}");
                    self.refuse(w.stream, w.pid, &reason);
                }
            }
        }
        next
    }

    /// A waiting connection hung up before it was relayed.
    fn hung_up(&mut self, id: &[u8; 16], end: End) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        let Some(w) = e.ends[end.index()].take() else {
            return;
        };
        if e.is_empty() {
            self.entries.remove(id);
        }
        self.waiting -= 1;
        info!(
            pairing = %short(id),
            end = %end,
            pid = w.pid,
            "relay: connection closed while waiting for the other end"
        );
    }

    fn accept(&mut self) {
        // Bounded, so a flood cannot starve the rest of the loop.
        for _ in 0..64 {
            let stream = match self.relay.listener.accept() {
                Ok((s, _)) => s,
                Err(e) => {
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {}
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                        _ => {
                            // Out of descriptors or memory: the listener
                            // stays readable, so pause instead of spinning.
                            warn!(error = %e, "relay: accept failed; pausing 100 ms");
                            self.accept_paused = Some(Instant::now() + Duration::from_millis(100));
                        }
                    }
                    return;
                }
            };
            self.shared.count(|s| s.accepted += 1);
            let cred = match sys::peer_cred(&stream) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "relay: accepted a connection without peer credentials; closed");
                    continue;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                warn!(pid = cred.pid, error = %e, "relay: cannot make a connection non-blocking; closed");
                continue;
            }
            info!(pid = cred.pid, uid = cred.uid, "relay: connection accepted");
            let owner = self.relay.owner_uid;
            if cred.uid != owner && cred.uid != 0 {
                let reason = format!(
                    "uid {} may not use this relay (domain owner uid {owner}, or root)",
                    cred.uid
                );
                self.refuse(stream, cred.pid, &reason);
            } else if self.pending.len() + self.waiting >= self.opts().max_pending {
                let reason = format!(
                    "relay busy: {} connections are waiting already",
                    self.opts().max_pending
                );
                self.refuse(stream, cred.pid, &reason);
            } else {
                self.pending.push(Pending {
                    stream,
                    pid: cred.pid,
                    uid: cred.uid,
                    since: Instant::now(),
                    line: Vec::with_capacity(MAX_HELLO),
                });
            }
        }
    }

    /// Reads from the pending connections at `indexes` (poll reported them).
    fn read_hellos(&mut self, indexes: &[usize]) {
        if indexes.is_empty() {
            return;
        }
        let mut keep = Vec::with_capacity(self.pending.len());
        let mut ready = Vec::new();
        let mut next = indexes.iter().peekable();
        for (i, mut p) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            if next.peek() != Some(&&i) {
                keep.push(p);
                continue;
            }
            next.next();
            match read_hello(&mut p) {
                Ok(HelloRead::Partial) => keep.push(p),
                Ok(HelloRead::Line) => ready.push(p),
                Ok(HelloRead::TooLong) => ready.push(p),
                Ok(HelloRead::Eof) => {
                    info!(pid = p.pid, "relay: connection closed before its hello");
                }
                Err(e) => {
                    warn!(pid = p.pid, error = %e, "relay: reading a hello failed; connection closed");
                }
            }
        }
        self.pending = keep;
        for p in ready {
            match parse_hello(&p.line) {
                Ok(h) => self.arrived(p, h),
                Err(e) => {
                    let reason = if p.line.last() == Some(&b'\n') {
                        format!("bad hello: {}", e.message())
                    } else {
                        format!("bad hello: {MAX_HELLO} bytes without a newline")
                    };
                    self.refuse(p.stream, p.pid, &reason);
                }
            }
        }
    }

    /// A connection sent a good hello.
    fn arrived(&mut self, p: Pending, h: Hello) {
        let id = h.pairing;
        let tag = short(&id);
        let end = h.end;
        if self.active.contains_key(&id) {
            let reason = format!("pairing {tag} is already relayed");
            return self.refuse(p.stream, p.pid, &reason);
        }
        if let Some(e) = self.entries.get(&id) {
            if let Some((reg, _)) = &e.pairing {
                let expected = reg.pid_of(end);
                if p.pid != expected {
                    let reason = wrong_pid(p.pid, end, &id, expected);
                    return self.refuse(p.stream, p.pid, &reason);
                }
            }
            if e.ends[end.index()].is_some() {
                let reason = format!("pairing {tag} already has a {end} connection");
                return self.refuse(p.stream, p.pid, &reason);
            }
        } else if self.entries.len() >= 2 * self.opts().max_pending {
            let reason = "relay busy: too many pairings known".to_string();
            return self.refuse(p.stream, p.pid, &reason);
        }
        info!(
            pairing = %tag,
            end = %end,
            pid = p.pid,
            uid = p.uid,
            "relay: hello received; waiting for the other end"
        );
        self.entries.entry(id).or_default().ends[end.index()] = Some(Waiting {
            stream: p.stream,
            pid: p.pid,
            since: Instant::now(),
        });
        self.waiting += 1;
        self.try_pair(&id);
    }

    /// Starts relaying `id` if it is registered and both ends are there.
    fn try_pair(&mut self, id: &[u8; 16]) {
        let complete = self
            .entries
            .get(id)
            .is_some_and(|e| e.pairing.is_some() && e.ends.iter().all(Option::is_some));
        if !complete {
            return;
        }
        let e = self.entries.remove(id).expect("checked");
        let (pairing, _) = e.pairing.expect("checked");
        let [Some(t), Some(a)] = e.ends else {
            unreachable!("checked")
        };
        self.waiting -= 2;
        let tag = short(id);
        if self.active.len() >= self.opts().max_active {
            let reason = format!(
                "relay full: {} pairings are relayed already",
                self.opts().max_active
            );
            self.refuse(t.stream, t.pid, &reason);
            self.refuse(a.stream, a.pid, &reason);
            return;
        }
        let link = forward::Link {
            pairing,
            tenant: t.stream,
            attacher: a.stream,
            linger: self.opts().linger,
        };
        // The link goes back to us if the thread cannot start.
        let slot = Arc::new(Mutex::new(Some(link)));
        let theirs = Arc::clone(&slot);
        let shared = Arc::clone(self.shared);
        // Counted before either end can know.
        self.shared.count(|s| {
            s.active += 1;
            s.paired += 1;
        });
        let spawned = std::thread::Builder::new()
            .name(format!("mtipc-relay-{tag}"))
            .spawn(move || {
                crate::log::quiet_panics(|| {
                    let link = lock(&theirs).take();
                    if let Some(link) = link {
                        let id = link.pairing.id;
                        forward::relay(link, &shared);
                        shared.count(|s| s.active -= 1);
                        lock(&shared.done).push(id);
                        shared.wake();
                    }
                })
            });
        match spawned {
            Ok(handle) => {
                self.active.insert(*id, handle);
            }
            Err(e) => {
                self.shared.count(|s| {
                    s.active -= 1;
                    s.paired -= 1;
                });
                error!(pairing = %tag, error = %e, "relay: cannot start a forwarding thread");
                if let Some(link) = lock(&slot).take() {
                    let reason = "relay cannot start a thread for this pairing";
                    self.refuse(link.tenant, t.pid, reason);
                    self.refuse(link.attacher, a.pid, reason);
                }
            }
        }
    }

    /// Answers `err <reason>` and closes.
    fn refuse(&self, stream: UnixStream, pid: u32, reason: &str) {
        refuse(self.shared, stream, pid, reason);
    }

    /// After the loop: refuse what waits, close what is relayed.
    fn finish(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            self.refuse(p.stream, p.pid, "relay shutting down");
        }
        for (_, e) in std::mem::take(&mut self.entries) {
            for w in e.ends.into_iter().flatten() {
                self.refuse(w.stream, w.pid, "relay shutting down");
            }
        }
        self.waiting = 0;
        self.shared.count(|s| s.waiting = 0);
        for (_, h) in self.active.drain() {
            let _ = h.join();
        }
        lock(&self.shared.done).clear();
    }
}

/// Answers `err <reason>\n` (one line, at most 400 bytes of reason) and
/// closes the connection.
fn refuse(shared: &Shared, stream: UnixStream, pid: u32, reason: &str) {
    let mut line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > 400 {
        let mut cut = 400;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    warn!(pid, reason = %line, "relay: connection refused");
    // Counted before the peer can know.
    shared.count(|s| s.refused += 1);
    let msg = format!("err {line}\n");
    // A new socket's buffer takes a short line at once; if the peer is gone
    // already there is nobody to tell.
    if let Err(e) = sys::send(&stream, msg.as_bytes()) {
        debug!(pid, error = %e, "relay: could not send the refusal");
    }
    // Closing a UNIX socket with unread bytes makes the peer's next read
    // fail with ECONNRESET instead of end-of-file: read what it sent
    // already (bounded), so that it sees the answer and a clean end.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match sys::recv(&stream, &mut sink, RecvFlags::DONTWAIT) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// An I/O error on a socket path: as [`Error::io`], except that a path too
/// long for a socket address (std's `InvalidInput`) is
/// [`Invalid`](crate::ErrorKind::Invalid).
fn socket_error(what: impl std::fmt::Display, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidInput {
        err!(Invalid, "{what}: {e}")
    } else {
        Error::io(what, e)
    }
}

fn wrong_pid(pid: u32, end: End, id: &[u8; 16], expected: u32) -> String {
    format!(
        "pid {pid} is not the {end} of pairing {} (expected pid {expected})",
        short(id)
    )
}

/// Reads what a pending connection has sent, never past the hello's
/// newline: bytes after it belong to the relayed stream.
fn read_hello(p: &mut Pending) -> io::Result<HelloRead> {
    let mut buf = [0u8; MAX_HELLO];
    let room = MAX_HELLO - p.line.len();
    let n = match sys::recv(&p.stream, &mut buf[..room], RecvFlags::PEEK) {
        Ok(0) => return Ok(HelloRead::Eof),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(HelloRead::Partial),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(HelloRead::Eof),
        Err(e) => return Err(e),
    };
    let newline = buf[..n].iter().position(|&b| b == b'\n');
    let take = newline.map_or(n, |i| i + 1);
    // Consume exactly what was peeked (only this thread reads the socket).
    let got = sys::recv(&p.stream, &mut buf[..take], RecvFlags::empty())?;
    p.line.extend_from_slice(&buf[..got]);
    Ok(if got == take && newline.is_some() {
        HelloRead::Line
    } else if p.line.len() >= MAX_HELLO {
        HelloRead::TooLong
    } else {
        HelloRead::Partial
    })
}

/// A duration as messages show it: "10 s" or "250 ms".
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests;
