//! The application's side of the HA hooks (`docs/ha.md` "The hooks").
//!
//! Outside supervision (`$MTIPC_HA_SOCKET` unset or empty) every hook
//! returns `Ok` and does nothing: nothing is kept, no thread is started,
//! [`role`] is `(Role::None, 0)` and [`on_role`] calls nothing.
//!
//! Under supervision the first hook called connects to the Monitor's
//! socket (`SOCK_SEQPACKET`), checks that the listener runs as this uid or
//! root (`SO_PEERCRED`) and says `hello 1 <pid> <start>` (with `ready`
//! right behind it when that is what was said). [`ready`] and
//! [`heartbeat`] return then, as `sd_notify` does; the hooks that need the
//! node's role ([`role`], [`on_role`]) wait (at most
//! [`HANDSHAKE_TIMEOUT`]) for the Monitor's answer to the hello.
//!
//! The connection is kept. **No thread is started for [`ready`],
//! [`heartbeat`] and [`role`]:** each call first takes what the Monitor
//! sent meanwhile (role changes) without waiting, and a connection that
//! was lost is made again by the next call (at most one attempt per 20 ms,
//! backing off to one per 250 ms while it fails), saying `ready` again if
//! it was said. A process that only says it is ready thus costs nothing
//! between calls, and dies as fast as a process without the library (a
//! second thread makes a `kill -9` slower).
//!
//! A callback needs a thread to be called: [`set_health`] and
//! [`on_role`] with a callback start one thread of the library
//! (`mtipc-ha`), which from then on reads the connection: it answers the
//! Monitor's health polls by calling the health callback (the Monitor
//! polls only a process that said `polls on`, which [`set_health`] says),
//! delivers role changes to the role callback, and when the connection
//! ends reconnects (every 20 ms at first, backing off to every 250 ms) to
//! whatever Monitor listens at the path then. While there is no
//! connection, the hooks that need one return `Unavailable` at once; the
//! role learned last stays until a Monitor says otherwise.

use super::proto::{self, Health, Message, MAX_MESSAGE};
use super::{inherit, Role, FD_ENV, SOCKET_ENV};
use crate::error::{err, Error, Result};
use crate::log::{debug, error, info, warn};
use crate::sys::net::{self as sys, Events, RecvFlags, Shutdown};
use crate::sys::ProcId;
use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long the first connection (or a reconnection) waits for the
/// Monitor's answer to `hello`, when the caller needs the role.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The first delay between two reconnection attempts; it doubles up to
/// [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(20);
/// The longest delay between two reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_millis(250);

/// A health callback: `true` when the application is healthy. Called on
/// the library's thread each time the Monitor polls (every `monitor_ms`).
pub type HealthFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// A role callback: the node's role and its fencing epoch. Called on the
/// library's thread (or, at registration, on the caller's), never twice at
/// once, in the order the roles came.
pub type RoleFn = Arc<dyn Fn(Role, u64) + Send + Sync>;

/// One connection to the Monitor.
struct Conn {
    fd: OwnedFd,
    /// Which connection of this process it is (1, 2, ...).
    generation: u64,
}

#[derive(Default)]
struct State {
    /// The process this state belongs to: a child forked from the
    /// application starts afresh (its parent's connection is not its own).
    pid: u32,
    /// This process's identity (read once: it never changes).
    me: Option<ProcId>,
    conn: Option<Arc<Conn>>,
    generations: u64,
    /// A connection was attempted (by a hook or by the thread).
    attempted: bool,
    /// When the last attempt ended, and the delay before the next one that
    /// a hook may make (without a thread: the thread keeps its own).
    last_attempt: Option<Instant>,
    backoff: Duration,
    /// `ready` was said (replayed on every new connection).
    ready: bool,
    health: Option<HealthFn>,
    /// The role the last Monitor said, if any did.
    role: Option<(Role, u64)>,
    /// The reading thread runs (only once a callback was registered);
    /// without it the hooks read what came on each call.
    thread: bool,
    /// The socket the last hook call named: the thread reconnects to it
    /// (it never reads the environment itself, which the application may
    /// change with `setenv` at any time, unsafely for a concurrent reader).
    path: Option<PathBuf>,
    /// Health polls answered (for the tests' curiosity: logged).
    polls: u64,
}

/// The role callback and what it was last given.
#[derive(Default)]
struct Delivery {
    f: Option<RoleFn>,
    last: Option<(Role, u64)>,
}

struct Hooks {
    state: Mutex<State>,
    /// Wakes the thread when a hook made a connection.
    wake: Condvar,
    /// One connection attempt at a time.
    connecting: Mutex<()>,
    delivery: Mutex<Delivery>,
}

thread_local! {
    /// This thread is inside a role callback (where `on_role` would
    /// deadlock).
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value under these locks is consistent at all times.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hooks() -> &'static Hooks {
    static HOOKS: OnceLock<Hooks> = OnceLock::new();
    HOOKS.get_or_init(|| Hooks {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        connecting: Mutex::new(()),
        delivery: Mutex::new(Delivery::default()),
    })
}

/// The Monitor's socket, if this process is supervised.
fn socket_path() -> Option<PathBuf> {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether this process runs under the HA supervisor: `$MTIPC_HA_SOCKET`
/// is set and not empty.
pub fn supervised() -> bool {
    socket_path().is_some()
}

/// Says that the application is ready (the `notify` readiness of its
/// `ready` key). Kept and said again to every Monitor the library connects
/// to later. Does not wait for the Monitor: `Ok` once it is sent. The
/// first call of a process started with its connection already made
/// (`$MTIPC_HA_FD`, [`super::FD_ENV`]) sends on that one.
/// `Unavailable` if no Monitor is connected now and none could be
/// connected to (the library says it once one is). Outside supervision:
/// `Ok`, nothing done.
pub fn ready() -> Result<()> {
    if inherit::ready_first() {
        return Ok(());
    }
    let Some(path) = socket_path() else {
        return Ok(());
    };
    let h = hooks();
    h.state().ready = true;
    let (conn, fresh) = h.connect_once(&path, false)?;
    if fresh {
        // This call made the connection, and `open` said `ready`.
        return Ok(());
    }
    h.send(&conn, &Message::Ready, &path)
}

/// Tells the Monitor that the application is alive (its `watchdog_ms`).
/// `Unavailable` if no Monitor is connected now and none could be
/// connected to. Outside supervision: `Ok`, nothing done.
pub fn heartbeat() -> Result<()> {
    let Some(path) = socket_path() else {
        return Ok(());
    };
    let h = hooks();
    let (conn, _) = h.connect_once(&path, false)?;
    h.send(&conn, &Message::Heartbeat, &path)
}

/// Registers the health callback the Monitor polls (every `monitor_ms`),
/// replacing any other; `None` removes it (the Monitor then stops
/// polling). The callback runs on the library's thread (started by the
/// first registration) and should return quickly; a panic in it counts as
/// unhealthy. Kept across reconnections; `Unavailable` (kept all the same)
/// if no Monitor is connected now. Outside supervision: `Ok`, nothing
/// kept.
pub fn set_health(f: Option<HealthFn>) -> Result<()> {
    let Some(path) = socket_path() else {
        return Ok(());
    };
    let h = hooks();
    let on = f.is_some();
    {
        let mut st = h.state();
        st.health = f;
        // Named before the thread starts, which reads it at once.
        st.path = Some(path.clone());
    }
    if on {
        h.start_thread();
    }
    let (conn, fresh) = h.connect_once(&path, false)?;
    if fresh {
        // `open` said `polls on` if a callback is registered.
        return Ok(());
    }
    h.send(&conn, &Message::Polls(on), &path)
}

/// Registers the role callback, replacing any other (`None` removes it).
/// It is called at once, on the calling thread, with the current role and
/// epoch, then on the library's thread (started by the first
/// registration) at every change, never twice at once and never with an
/// older role after a newer one. If no Monitor has ever answered, the
/// callback is kept and first called when one does, and this returns
/// `Unavailable`; if one did and is away now, the role learned last is
/// delivered and this returns `Ok`. Calling `on_role` from inside a role
/// callback is `Invalid`. Outside supervision: `Ok`, nothing kept and
/// nothing called.
pub fn on_role(f: Option<RoleFn>) -> Result<()> {
    let Some(path) = socket_path() else {
        return Ok(());
    };
    if DELIVERING.with(Cell::get) {
        return Err(err!(
            Invalid,
            "mt_ha_on_role was called from inside a role callback"
        ));
    }
    let h = hooks();
    let some = f.is_some();
    {
        let mut d = lock(&h.delivery);
        d.f = f;
        d.last = None;
    }
    // A role known already is delivered at once, without waiting on a
    // Monitor; else wait (at most HANDSHAKE_TIMEOUT) for the answer to the
    // hello, also on a connection made earlier by a hook that did not.
    let known = h.state().role.is_some();
    let r = h.connect_once(&path, !known).and_then(|(conn, _)| {
        if known {
            return Ok(());
        }
        h.await_role(&conn, &path)
            .map(drop)
            .ok_or_else(|| unavailable(&path, "no role received"))
    });
    if some {
        h.start_thread();
    }
    h.deliver();
    // A role learned from an earlier Monitor was delivered: registered.
    if h.state().role.is_some() {
        return Ok(());
    }
    r
}

/// The node's role and epoch as the Monitor last said them. The first
/// call connects if no hook has yet and waits for the Monitor's answer
/// (`Unavailable` if no Monitor answers); after that the role learned
/// last is kept while the Monitor is away. Outside supervision:
/// `(Role::None, 0)`.
pub fn role() -> Result<(Role, u64)> {
    let Some(path) = socket_path() else {
        return Ok((Role::None, 0));
    };
    let h = hooks();
    let known = h.state().role;
    if let Some(known) = known {
        // Never waits once a role is known: what came meanwhile is taken,
        // a lost connection made again without waiting for its answer.
        let _ = h.connect_once(&path, false);
        return Ok(h.state().role.unwrap_or(known));
    }
    let r = h.connect_once(&path, true);
    if let Some(r) = h.state().role {
        return Ok(r);
    }
    let (conn, _) = r?;
    h.await_role(&conn, &path)
        .ok_or_else(|| unavailable(&path, "no role received"))
}

fn unavailable(path: &Path, why: &str) -> Error {
    err!(
        Unavailable,
        "the HA Monitor at {} is not connected: {why}",
        path.display()
    )
}

impl Hooks {
    /// The state, reset first in a child forked from the process that
    /// made it.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut st = lock(&self.state);
        let me = std::process::id();
        if st.pid != me {
            // The parent's connection is not ours: close our copy of it
            // (without shutdown, which would end the parent's too). The
            // callbacks stay; the role and readiness are the parent's, and
            // so is the thread (a fork has only the thread that forked).
            let health = st.health.take();
            *st = State {
                pid: me,
                health,
                backoff: RECONNECT_MIN,
                ..State::default()
            };
        }
        st
    }

    /// The current connection, or a new one: made here, on the caller's
    /// thread, the first time and (without the reading thread, which
    /// otherwise reconnects) whenever the last was lost and the backoff
    /// allows. Also whether this call made it (`open` then said `ready`
    /// if it was said). `wait_role`: wait for the answer to the hello.
    /// Without the thread, what the Monitor sent meanwhile is taken first.
    fn connect_once(&'static self, path: &Path, wait_role: bool) -> Result<(Arc<Conn>, bool)> {
        {
            let mut st = self.state();
            st.path = Some(path.to_path_buf());
        }
        self.take_messages(path);
        if let Some(c) = &self.state().conn {
            return Ok((Arc::clone(c), false));
        }
        let one = lock(&self.connecting);
        {
            let st = self.state();
            if let Some(c) = &st.conn {
                return Ok((Arc::clone(c), false));
            }
            if st.attempted {
                if st.thread {
                    return Err(unavailable(path, "the connection was lost; reconnecting"));
                }
                if let Some(t) = st.last_attempt {
                    if t.elapsed() < st.backoff {
                        return Err(unavailable(
                            path,
                            "the connection was lost; the next attempt is due later",
                        ));
                    }
                }
            }
        }
        let r = self.open(path, wait_role);
        {
            let mut st = self.state();
            st.attempted = true;
            st.last_attempt = Some(Instant::now());
            st.backoff = if r.is_ok() {
                RECONNECT_MIN
            } else {
                (st.backoff * 2).clamp(RECONNECT_MIN, RECONNECT_MAX)
            };
        }
        drop(one);
        let c = r?;
        self.deliver();
        Ok((c, true))
    }

    /// The role, waiting (at most [`HANDSHAKE_TIMEOUT`]) for the answer to
    /// the hello on `conn` if none is known yet: read here without the
    /// thread, else awaited from it. `None` if no answer came.
    fn await_role(&self, conn: &Arc<Conn>, path: &Path) -> Option<(Role, u64)> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let st = self.state();
            if st.role.is_some() || Instant::now() >= deadline {
                return st.role;
            }
            let current = st.conn.as_ref().map(|c| c.generation) == Some(conn.generation);
            if !current {
                return None;
            }
            if st.thread {
                // The thread reads the answer and wakes us.
                let left = deadline.saturating_duration_since(Instant::now());
                drop(self.wake.wait_timeout(st, left));
                continue;
            }
            drop(st);
            match sys::wait_ready(&conn.fd, Events::IN, Some(deadline)) {
                Ok(true) => self.take_messages(path),
                _ => return self.state().role,
            }
        }
    }

    /// Starts the reading thread if it does not run.
    fn start_thread(&'static self) {
        let mut st = self.state();
        if st.thread {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("mtipc-ha".into())
            .spawn(move || {
                crate::log::quiet_panics(|| self.run());
            });
        match spawned {
            Ok(_) => st.thread = true,
            Err(e) => {
                drop(st);
                error!(error = %e, "ha: cannot start the hooks thread");
            }
        }
    }

    /// Without the reading thread: takes what the Monitor sent on the
    /// current connection meanwhile, without waiting (role changes; a
    /// health poll, which only comes after `polls on`, is answered
    /// `none`), and notices a connection that ended. The state's lock is
    /// held while reading, so that a thread started meanwhile never reads
    /// the same connection at the same time.
    fn take_messages(&self, path: &Path) {
        let mut lost = None;
        let (mut changed, mut role, mut bad) = (false, None, None);
        {
            let mut st = self.state();
            if st.thread {
                return;
            }
            let Some(conn) = st.conn.clone() else {
                return;
            };
            loop {
                let mut buf = [0u8; MAX_MESSAGE + 1];
                let m = match sys::recv_packet(&conn.fd, &mut buf, RecvFlags::DONTWAIT) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => Err(Error::io("HA Monitor socket", e)),
                    Ok((_, 0)) => {
                        lost = Some((conn, "the Monitor closed the connection".to_string()));
                        break;
                    }
                    Ok((_, real)) if real > MAX_MESSAGE => Err(err!(
                        Corrupt,
                        "HA message of {real} bytes (at most {MAX_MESSAGE})"
                    )),
                    Ok((n, _)) => proto::parse(&buf[..n]),
                };
                match m {
                    Ok(Message::Role { role, epoch }) => {
                        st.role = Some((role, epoch));
                        changed = true;
                    }
                    Ok(Message::HealthPoll { seq }) => {
                        let answer = Message::Health {
                            seq,
                            health: Health::None,
                        };
                        let _ = sys::send_nowait(&conn.fd, answer.encode().as_bytes());
                    }
                    // Logged after the lock is released (a logger may call
                    // into the library).
                    Ok(other) => {
                        bad = Some(format!(
                            "the Monitor sent an application's message \"{other}\""
                        ));
                        lost = Some((conn, "protocol error".to_string()));
                        break;
                    }
                    Err(e) => {
                        bad = Some(format!("bad message from the Monitor: {e}"));
                        lost = Some((conn, e.message().to_string()));
                        break;
                    }
                }
            }
            if changed {
                role = st.role;
            }
        }
        if let Some((r, epoch)) = role {
            debug!(role = %r, epoch, "ha: role from the Monitor");
        }
        if let Some(why) = bad {
            warn!(why = %why, "ha: dropping the connection");
        }
        if let Some((conn, why)) = lost {
            self.lost(&conn, &why);
            debug!(path = %path.display(), "ha: the next hook call reconnects");
        }
        self.deliver();
    }

    /// Connects to the Monitor at `path`, says hello (and `ready`, and
    /// `polls on`, when they hold), reads its role if `wait_role`, and
    /// installs the connection. The first time, the connection the
    /// Spawner made for this process (`$MTIPC_HA_FD`, its hello said) is
    /// taken instead if there is one and the Monitor has not closed it.
    /// The caller holds `connecting`.
    fn open(&self, path: &Path, wait_role: bool) -> Result<Arc<Conn>> {
        let (inherited, ready_said) = self.inherited(path);
        if ready_said {
            // The first `ready` was said (`inherit::ready_first`): said
            // again on any later connection.
            self.state().ready = true;
        }
        if let Some(fd) = inherited {
            // A Monitor that refused the hello, or died, closed it: then
            // the path, as without it.
            let mut byte = [0u8; 1];
            let closed = matches!(
                sys::recv(&fd, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT),
                Ok(0)
            );
            if !closed {
                match self.handshake(fd, path, wait_role, true, ready_said) {
                    Ok(c) => return Ok(c),
                    Err(e) => debug!(
                        error = %e,
                        "ha: the inherited connection is of no use; connecting by the path"
                    ),
                }
            }
        }
        let shown = path.display();
        // Read before connecting: the hello follows the connection at
        // once, so the Monitor that wakes for it finds it there.
        let known = self.state().me;
        if known.is_none() {
            let p = ProcId::current()?;
            self.state().me = Some(p);
        }
        let fd = sys::seqpacket_connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                unavailable(path, &e.to_string())
            }
            _ if e.raw_os_error() == Some(libc::ENAMETOOLONG)
                || e.raw_os_error() == Some(libc::EINVAL) =>
            {
                err!(
                    Invalid,
                    "{SOCKET_ENV}={shown}: not a usable socket path ({e})"
                )
            }
            _ => Error::io(format_args!("HA Monitor socket {shown}"), e),
        })?;
        self.handshake(fd, path, wait_role, false, false)
    }

    /// The connection `$MTIPC_HA_FD` names, looked for once per process
    /// (the first connection only), and whether the first `ready` was
    /// said on it: see `inherit::claim`.
    fn inherited(&self, path: &Path) -> (Option<OwnedFd>, bool) {
        let v = std::env::var_os(FD_ENV).filter(|v| !v.is_empty());
        let got = inherit::claim(v.as_deref(), path);
        if got.0.is_none() {
            if let Some(v) = v {
                debug!(value = ?v, "ha: {FD_ENV} names no connection of this process to the Monitor");
            }
        }
        got
    }

    /// The rest of [`Hooks::open`] on a connected `fd`: the Monitor's uid
    /// checked, hello said (unless `hello_said`), then `ready` and `polls
    /// on` when they hold, the role read if `wait_role`, the connection
    /// installed.
    fn handshake(
        &self,
        fd: OwnedFd,
        path: &Path,
        wait_role: bool,
        hello_said: bool,
        ready_said: bool,
    ) -> Result<Arc<Conn>> {
        let shown = path.display();
        let cred = sys::peer_cred(&fd)
            .map_err(|e| Error::io(format_args!("HA Monitor socket {shown}"), e))?;
        let me = crate::sys::euid();
        if cred.uid != me && cred.uid != 0 {
            return Err(err!(
                Denied,
                "the listener at {shown} (pid {}) runs as uid {}, neither this process's uid {me} \
                 nor root: nothing sent",
                cred.pid,
                cred.uid
            ));
        }
        if !hello_said {
            let proc = self
                .state()
                .me
                .ok_or_else(|| err!(Io, "this process's identity is unknown"))?;
            let hello = Message::Hello {
                pid: proc.pid,
                start: proc.start,
            };
            sys::send_nowait(&fd, hello.encode().as_bytes())
                .map_err(|e| unavailable(path, &format!("hello not sent: {e}")))?;
        }
        // `ready` right behind the hello, not after the role's answer: the
        // Monitor reads them in order, and a restarted process is ready
        // sooner.
        let (ready, polls) = {
            let st = self.state();
            (st.ready, st.health.is_some())
        };
        let said_ready = ready_said
            || ready && sys::send_nowait(&fd, Message::Ready.encode().as_bytes()).is_ok();
        if polls {
            sys::send_nowait(&fd, Message::Polls(true).encode().as_bytes())
                .map_err(|e| unavailable(path, &format!("polls not sent: {e}")))?;
        }
        let role = if wait_role {
            let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
            if !sys::wait_ready(&fd, Events::IN, Some(deadline))
                .map_err(|e| Error::io(format_args!("HA Monitor socket {shown}"), e))?
            {
                return Err(unavailable(
                    path,
                    &format!("no answer to hello within {HANDSHAKE_TIMEOUT:?}"),
                ));
            }
            match read_message(&fd) {
                Ok(Some(Message::Role { role, epoch })) => Some((role, epoch)),
                Ok(Some(m)) => {
                    return Err(err!(
                        Corrupt,
                        "the HA Monitor at {shown} answered hello with \"{m}\", not its role"
                    ))
                }
                Ok(None) => return Err(unavailable(path, "the Monitor closed the connection")),
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let (conn, ready_now) = {
            let mut st = self.state();
            st.generations += 1;
            let conn = Arc::new(Conn {
                fd,
                generation: st.generations,
            });
            st.conn = Some(Arc::clone(&conn));
            if role.is_some() {
                st.role = role;
            }
            (conn, st.ready)
        };
        info!(
            path = %shown,
            generation = conn.generation,
            inherited = hello_said,
            "ha: connected to the Monitor"
        );
        self.wake.notify_all();
        if ready_now && !said_ready {
            // Said by another thread meanwhile, or the early send failed.
            self.send(&conn, &Message::Ready, path)?;
        }
        Ok(conn)
    }

    /// Sends `m` on `conn`. A connection that fails is dropped (the thread
    /// or the next hook call reconnects): `Unavailable`.
    fn send(&self, conn: &Arc<Conn>, m: &Message, path: &Path) -> Result<()> {
        match sys::send_nowait(&conn.fd, m.encode().as_bytes()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(unavailable(
                path,
                "the Monitor does not read its socket (its buffer is full)",
            )),
            Err(e) => {
                self.lost(conn, &e.to_string());
                Err(unavailable(path, &e.to_string()))
            }
        }
    }

    /// Forgets `conn` if it is still the current connection, and wakes the
    /// thread blocked reading it.
    fn lost(&self, conn: &Conn, why: &str) {
        let mut st = self.state();
        let current = st
            .conn
            .as_ref()
            .is_some_and(|c| c.generation == conn.generation);
        if current {
            st.conn = None;
            sys::shutdown(&conn.fd, Shutdown::Both);
        }
        drop(st);
        self.wake.notify_all();
        // Logged without the lock (a logger may call into the library).
        if current {
            info!(
                generation = conn.generation,
                why, "ha: connection to the Monitor lost"
            );
        }
    }

    /// Gives the role callback the current role if it has not had it.
    fn deliver(&self) {
        let mut d = lock(&self.delivery);
        let Some(now) = self.state().role else {
            return;
        };
        if d.last == Some(now) {
            return;
        }
        d.last = Some(now);
        let Some(f) = d.f.clone() else {
            return;
        };
        DELIVERING.with(|c| c.set(true));
        let r = catch_unwind(AssertUnwindSafe(|| {
            crate::log::quiet_panics(|| f(now.0, now.1))
        }));
        DELIVERING.with(|c| c.set(false));
        if r.is_err() {
            error!(role = %now.0, epoch = now.1, "ha: the role callback panicked");
        }
    }

    /// The thread: reads the current connection, reconnects when it ends.
    fn run(&'static self) {
        let mut backoff = RECONNECT_MIN;
        loop {
            let Some(path) = self.state().path.clone() else {
                std::thread::sleep(RECONNECT_MAX);
                continue;
            };
            let current = {
                let st = self.state();
                let st = if st.conn.is_none() {
                    self.wake
                        .wait_timeout(st, backoff)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                } else {
                    st
                };
                st.conn.clone()
            };
            let conn = match current {
                Some(c) => c,
                None => {
                    let one = lock(&self.connecting);
                    if self.state().conn.is_some() {
                        continue;
                    }
                    let r = self.open(&path, true);
                    self.state().attempted = true;
                    drop(one);
                    match r {
                        Ok(c) => c,
                        Err(e) => {
                            debug!(error = %e, "ha: reconnection failed");
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                            continue;
                        }
                    }
                }
            };
            backoff = RECONNECT_MIN;
            self.deliver();
            self.read(&conn, &path);
        }
    }

    /// Serves `conn` until it ends.
    fn read(&self, conn: &Arc<Conn>, path: &Path) {
        loop {
            let m = match read_message(&conn.fd) {
                Ok(Some(m)) => m,
                Ok(None) => return self.lost(conn, "the Monitor closed the connection"),
                Err(e) => {
                    warn!(error = %e, "ha: bad message from the Monitor; dropping the connection");
                    return self.lost(conn, e.message());
                }
            };
            match m {
                Message::Role { role, epoch } => {
                    self.state().role = Some((role, epoch));
                    self.wake.notify_all();
                    debug!(role = %role, epoch, "ha: role from the Monitor");
                    self.deliver();
                }
                Message::HealthPoll { seq } => {
                    let f = {
                        let mut st = self.state();
                        st.polls += 1;
                        st.health.clone()
                    };
                    let health = match f {
                        None => Health::None,
                        Some(f) => {
                            match catch_unwind(AssertUnwindSafe(|| {
                                crate::log::quiet_panics(|| f())
                            })) {
                                Ok(true) => Health::Ok,
                                Ok(false) => Health::Fail,
                                Err(_) => {
                                    error!("ha: the health callback panicked: answered fail");
                                    Health::Fail
                                }
                            }
                        }
                    };
                    let _ = self.send(conn, &Message::Health { seq, health }, path);
                }
                other => {
                    warn!(message = %other, "ha: the Monitor sent an application's message; dropping the connection");
                    return self.lost(conn, "protocol error");
                }
            }
        }
    }
}

/// Reads one packet (blocking) and parses it: `None` at the end of the
/// connection.
fn read_message(fd: &OwnedFd) -> Result<Option<Message>> {
    let mut buf = [0u8; MAX_MESSAGE + 1];
    let (n, real) = sys::recv_packet(fd, &mut buf, RecvFlags::empty())
        .map_err(|e| Error::io("HA Monitor socket", e))?;
    if real == 0 {
        return Ok(None);
    }
    if real > MAX_MESSAGE {
        return Err(err!(
            Corrupt,
            "HA message of {real} bytes (at most {MAX_MESSAGE})"
        ));
    }
    proto::parse(&buf[..n]).map(Some)
}
