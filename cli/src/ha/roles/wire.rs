//! What the roles say to each other: one JSON object a line over UNIX
//! stream sockets, each line at most [`MAX_LINE`] bytes, parsed into typed
//! messages (anything else is refused and the connection closed). A
//! connection's peer must run as the node's uid or as root
//! (`SO_PEERCRED`). The node socket also carries descriptors
//! (`SCM_RIGHTS`): the read ends of the processes' output pipes.

use super::super::monitor::{Seen, Watch};
use super::super::spawn::Exit;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest line (a Server's list of 4096 watches fits).
pub const MAX_LINE: usize = 4 << 20;

/// A process the Spawner runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Its name in the configuration.
    pub name: String,
    /// Its pid (and process group).
    pub pid: u32,
    /// Its start time.
    pub start: u64,
}

/// A process that ended, not yet acknowledged by the Server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// Its name.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Its start time.
    pub start: u64,
    /// How it ended.
    pub exit: Exit,
    /// The process the Spawner started in its place at once, on the
    /// Server's standing order ([`ToSpawner::RestartAtOnce`]), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Running>,
}

/// The Server's requests to the Spawner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToSpawner {
    /// What runs and what ended unacknowledged (answered by `Listed`).
    List,
    /// Start the configured process `name` (answered by `Spawned` or
    /// `Failed`).
    Spawn {
        /// Its name in the configuration.
        name: String,
    },
    /// Send `sig` to the group of `pid` (if it is still the process
    /// started at `start`).
    Signal {
        /// The process.
        pid: u32,
        /// Its start time.
        start: u64,
        /// The signal.
        sig: i32,
    },
    /// The Server took note of the end of `pid`.
    Ack {
        /// The process.
        pid: u32,
    },
    /// A standing order: when `pid` (started at `start`) ends, start its
    /// configured process again at once, before reporting the end (with
    /// the new process in [`Ended::then`]); only if it failed when
    /// `failed_only`. It is used once; it lapses when that process ends
    /// or is signalled, when the Server connection changes, and when it
    /// is called off. The Server gives it only for a process its table
    /// would restart at once.
    RestartAtOnce {
        /// The process.
        pid: u32,
        /// Its start time.
        start: u64,
        /// Only if it fails (a non-zero exit or a signal).
        failed_only: bool,
    },
    /// Calls off the standing order for `pid`, if there is one.
    CallOff {
        /// The process.
        pid: u32,
    },
}

/// The Spawner's answers and news.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromSpawner {
    /// The answer to `List`.
    Listed {
        /// What runs.
        running: Vec<Running>,
        /// What ended and is not acknowledged.
        ended: Vec<Ended>,
    },
    /// A process started.
    Spawned {
        /// The process.
        name: String,
        /// Its pid.
        pid: u32,
        /// Its start time.
        start: u64,
    },
    /// A process could not start.
    Failed {
        /// The process.
        name: String,
        /// Why, one line.
        why: String,
    },
    /// A process ended (sent again until acknowledged).
    Exited(Ended),
}

/// The Server's messages to the Monitor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToMonitor {
    /// Watch exactly these (on every connection: the Server's table).
    WatchAll {
        /// The running processes.
        list: Vec<Watch>,
    },
    /// Watch one more.
    Watch(Watch),
    /// Stop watching `pid`.
    Unwatch {
        /// The process.
        pid: u32,
    },
}

/// The Spawner's (and the node's own) requests to the node process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToNode {
    /// Copy the pipe passed with this line into the log of the configured
    /// process `name` (its file and rotation from the node's own reading
    /// of the configuration, not from the message).
    Log {
        /// The process.
        name: String,
    },
    /// How did `pid` (started at `start`) end? Answered by [`NodeExit`].
    Exit {
        /// The process.
        pid: u32,
        /// Its start time.
        start: u64,
    },
}

/// The node's answer to [`ToNode::Exit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeExit {
    /// How it ended, if the node reaped it.
    pub exit: Option<Exit>,
}

/// The Spawner's state file (`<domain>/ha/spawner.json`), rewritten
/// atomically on every change, read by a restarted Spawner and by `mtipc-ha
/// up` (to stop what a killed node left): untrusted input, parsed typed
/// and bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnerState {
    /// What runs.
    pub running: Vec<Running>,
    /// What ended and the Server has not acknowledged.
    pub ended: Vec<Ended>,
    /// Not written any more (a Spawner now looks for its node's orphaned
    /// processes by their environment whenever it starts); read and
    /// ignored, so that an older file still parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting: Option<String>,
}

impl SpawnerState {
    /// Reads the state at `path` (`Default` when there is none; an
    /// unreadable or malformed file is reported and taken as empty).
    pub fn load(path: &Path) -> SpawnerState {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SpawnerState::default(),
            Err(e) => {
                super::log(mtipc::log::Level::Warn, &format!("{}: {e}", path.display()));
                return SpawnerState::default();
            }
        };
        match parse::<SpawnerState>(&bytes) {
            Ok(s) => s,
            Err(e) => {
                super::log(
                    mtipc::log::Level::Warn,
                    &format!("{}: {e}; taken as empty", path.display()),
                );
                SpawnerState::default()
            }
        }
    }

    /// Writes it to `path` (a temporary file renamed over it).
    pub fn store(&self, path: &Path) {
        if let Err(e) = crate::ha::replace_file(path, &line(self)) {
            super::log(
                mtipc::log::Level::Error,
                &format!("{}: {e}", path.display()),
            );
        }
    }
}

/// What the Monitor sends the Server: [`Seen`].
pub type FromMonitor = Seen;

/// Parses one line as `T`: bounded, typed; the reason otherwise.
pub fn parse<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, String> {
    if line.len() > MAX_LINE {
        return Err(format!("line longer than {MAX_LINE} bytes"));
    }
    serde_json::from_slice(line).map_err(|e| format!("bad message: {e}"))
}

/// One line of `m` (with its newline).
pub fn line<T: Serialize>(m: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Whether the peer of `s` may talk to this node's roles (the node's uid
/// or root); logs a refusal.
pub fn peer_allowed(s: &UnixStream, what: &str) -> bool {
    let own = mtipc::internals::sys::euid();
    match mtipc::internals::sys::peer_cred(s) {
        Ok(p) if p.uid == own || p.uid == 0 => true,
        Ok(p) => {
            super::log(
                mtipc::log::Level::Warn,
                &format!(
                    "{what}: refused pid {} (uid {}): not uid {own} or root",
                    p.pid, p.uid
                ),
            );
            false
        }
        Err(e) => {
            super::log(
                mtipc::log::Level::Warn,
                &format!("{what}: SO_PEERCRED: {e}"),
            );
            false
        }
    }
}

/// Listens at `path` (mode 0600; a stale socket there is replaced: the
/// caller holds its role's lock), non-blocking.
pub fn listen(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    let l = crate::ha::listen_at(path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Connects to the role at `path`, checking that it runs as this uid or
/// root.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    let own = mtipc::internals::sys::euid();
    let peer = mtipc::internals::sys::peer_cred(&s).map_err(std::io::Error::other)?;
    if peer.uid != own && peer.uid != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is served by uid {}", path.display(), peer.uid),
        ));
    }
    Ok(s)
}

/// A connection read line by line without blocking (the caller polls its
/// descriptor), written with a deadline.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Conn {
    /// Wraps `stream` (made non-blocking).
    pub fn new(stream: UnixStream) -> std::io::Result<Conn> {
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            closed: false,
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_fd()
    }

    /// Whether the peer closed it (or it broke).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Reads what is there; the complete lines. A line too long closes it.
    pub fn lines(&mut self) -> Vec<Vec<u8>> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        let mut out = Vec::new();
        while let Some(k) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(k + 1);
            let mut l = std::mem::replace(&mut self.buf, rest);
            l.pop();
            out.push(l);
        }
        if self.buf.len() > MAX_LINE {
            self.closed = true;
            self.buf.clear();
        }
        out
    }

    /// Sends `m`, waiting at most 2 s for room; on failure the connection
    /// is closed.
    pub fn send<T: Serialize>(&mut self, m: &T) -> bool {
        self.write_all(&line(m))
    }

    /// Sends `ms` in one write (so that the peer wakes once for all of
    /// them); false as [`Conn::send`]. Nothing is written for none.
    pub fn send_all<T: Serialize>(&mut self, ms: &[T]) -> bool {
        if ms.is_empty() {
            return !self.closed;
        }
        let bytes: Vec<u8> = ms.iter().flat_map(|m| line(m)).collect();
        self.write_all(&bytes)
    }

    fn write_all(&mut self, bytes: &[u8]) -> bool {
        let end = Instant::now() + Duration::from_secs(2);
        let mut at = 0;
        while at < bytes.len() {
            match self.stream.write(&bytes[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= end {
                        break;
                    }
                    let mut p = libc::pollfd {
                        fd: self.stream.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 50) };
                }
                Err(_) => break,
            }
        }
        if at < bytes.len() {
            self.closed = true;
        }
        !self.closed
    }

    /// Waits at most `timeout` for lines (at least one, unless it runs out
    /// or the connection closes).
    pub fn wait_lines(&mut self, timeout: Duration) -> Vec<Vec<u8>> {
        let end = Instant::now() + timeout;
        loop {
            let got = self.lines();
            if !got.is_empty() || self.closed {
                return got;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            crate::ha::poll_fds(&[self.fd()], left);
        }
    }

    /// Sends `m` with the descriptor `fd` attached (`SCM_RIGHTS`),
    /// blocking: the node socket only.
    pub fn send_fd<T: Serialize>(&mut self, m: &T, fd: &OwnedFd) -> std::io::Result<()> {
        let bytes = line(m);
        send_with_fd(&self.stream, &bytes, fd.as_raw_fd())
    }
}

fn send_with_fd(s: &UnixStream, bytes: &[u8], fd: libc::c_int) -> std::io::Result<()> {
    // The descriptor goes with the first byte; the rest follows plainly.
    // SAFETY: CMSG_SPACE is a size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below is valid for
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer has room for one header and one int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
    }
    s.set_nonblocking(false)?;
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    // SAFETY: msg is valid for the call.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    let r = if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        let n = n as usize;
        let mut w = s;
        if n < bytes.len() {
            w.write_all(&bytes[n..])
        } else {
            Ok(())
        }
    };
    let _ = s.set_nonblocking(true);
    r
}

/// Reads one line from a blocking stream `s` with the descriptors that
/// came with it (`SCM_RIGHTS`, at most 4 per line; others are closed).
/// `None` at the end of the stream, or on a line too long.
pub fn recv_line_fds(s: &UnixStream, pending: &mut Vec<u8>) -> Option<(Vec<u8>, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    loop {
        if let Some(k) = pending.iter().position(|&b| b == b'\n') {
            let rest = pending.split_off(k + 1);
            let mut l = std::mem::replace(pending, rest);
            l.pop();
            return Some((l, fds));
        }
        if pending.len() > MAX_LINE {
            return None;
        }
        let mut buf = [0u8; 16 * 1024];
        // SAFETY: CMSG_SPACE is a size computation.
        let space =
            unsafe { libc::CMSG_SPACE(4 * std::mem::size_of::<libc::c_int>() as u32) } as usize;
        let mut control = vec![0u8; space];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: plain data; the pointers below are valid for the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg is valid; MSG_CMSG_CLOEXEC marks received fds.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        // SAFETY: walking the control messages the kernel wrote.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for k in 0..len / std::mem::size_of::<libc::c_int>() {
                        let fd = std::ptr::read_unaligned(data.add(k));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n as usize]);
        fds.truncate(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_strangers_are_refused() {
        let ms = [
            ToSpawner::List,
            ToSpawner::Spawn { name: "db".into() },
            ToSpawner::Signal {
                pid: 5,
                start: 9,
                sig: 15,
            },
            ToSpawner::Ack { pid: 5 },
            ToSpawner::RestartAtOnce {
                pid: 5,
                start: 9,
                failed_only: true,
            },
            ToSpawner::CallOff { pid: 5 },
        ];
        for m in ms {
            let l = line(&m);
            assert_eq!(l.last(), Some(&b'\n'));
            assert_eq!(parse::<ToSpawner>(&l[..l.len() - 1]).unwrap(), m);
        }
        let e = FromSpawner::Exited(Ended {
            name: "db".into(),
            pid: 7,
            start: 1,
            exit: Exit::Signal(9),
            then: None,
        });
        let l = line(&e);
        assert_eq!(parse::<FromSpawner>(&l[..l.len() - 1]).unwrap(), e);
        // An end that was restarted at once carries the new process; a
        // line without `then` (an older Spawner's state) still parses.
        let e = FromSpawner::Exited(Ended {
            name: "db".into(),
            pid: 7,
            start: 1,
            exit: Exit::Code(1),
            then: Some(Running {
                name: "db".into(),
                pid: 8,
                start: 2,
            }),
        });
        let l = line(&e);
        assert_eq!(parse::<FromSpawner>(&l[..l.len() - 1]).unwrap(), e);
        for bad in [
            &b""[..],
            b"{}",
            b"{\"op\":\"spawn\"}",
            b"{\"op\":\"spawn\",\"name\":\"a\",\"x\":1}",
            b"{\"op\":\"signal\",\"pid\":-1,\"start\":0,\"sig\":9}",
            b"{\"op\":\"nope\"}",
            b"[1,2]",
            b"\xff\xfe",
        ] {
            assert!(parse::<ToSpawner>(bad).is_err(), "{bad:?}");
        }
        assert!(parse::<ToMonitor>(b"{\"op\":\"unwatch\"}").is_err());
        let big = vec![b' '; MAX_LINE + 1];
        assert!(parse::<ToNode>(&big).unwrap_err().contains("longer"));
    }

    /// A deterministic stand-in for the fuzz target `ha_roles`: samples of
    /// every message and state file, each truncation and many byte
    /// mutations of them: never a panic, and what parses encodes and
    /// parses back to the same value.
    #[test]
    fn role_parsers_survive_mutations() {
        use crate::ha::supervisor::Status;
        fn round<T>(data: &[u8]) -> bool
        where
            T: Serialize + for<'de> Deserialize<'de> + std::fmt::Debug,
        {
            let Ok(v) = parse::<T>(data) else {
                return false;
            };
            let l = line(&v);
            let again = parse::<T>(&l[..l.len() - 1]).expect("its own encoding parses");
            assert_eq!(format!("{v:?}"), format!("{again:?}"));
            true
        }
        let ended = Ended {
            name: "db".into(),
            pid: 42,
            start: 7,
            exit: Exit::Code(3),
            then: Some(Running {
                name: "db".into(),
                pid: 43,
                start: 8,
            }),
        };
        let samples: Vec<Vec<u8>> = vec![
            line(&ToSpawner::Signal {
                pid: 1,
                start: 2,
                sig: 15,
            }),
            line(&ToSpawner::Spawn { name: "web".into() }),
            line(&ToSpawner::RestartAtOnce {
                pid: 1,
                start: 2,
                failed_only: false,
            }),
            line(&ToSpawner::CallOff { pid: 1 }),
            line(&FromSpawner::Listed {
                running: vec![Running {
                    name: "db".into(),
                    pid: 42,
                    start: 7,
                }],
                ended: vec![ended.clone()],
            }),
            line(&FromSpawner::Exited(ended.clone())),
            line(&ToMonitor::WatchAll {
                list: vec![Watch {
                    name: "db".into(),
                    pid: 42,
                    start: 7,
                    monitor_ms: 200,
                    watchdog_ms: 1000,
                }],
            }),
            line(&Seen::Unhealthy {
                pid: 3,
                why: "x".into(),
            }),
            line(&ToNode::Exit { pid: 9, start: 1 }),
            line(&NodeExit {
                exit: Some(Exit::Signal(9)),
            }),
            line(&SpawnerState {
                running: vec![],
                ended: vec![ended],
                starting: Some("db".into()),
            }),
            br#"{"version":1,"node":"a","supervisor_pid":4,"updated_unix_ms":5,"stopping":false,"processes":[{"name":"db","state":"ready","reason":null,"pid":42,"start":7,"started_unix_ms":1,"uptime_ms":2,"restarts":0,"last_exit":null,"group":null,"wanted":true,"log":"/x"}]}"#.to_vec(),
        ];
        let all = |d: &[u8]| {
            [
                round::<ToSpawner>(d),
                round::<FromSpawner>(d),
                round::<ToMonitor>(d),
                round::<Seen>(d),
                round::<ToNode>(d),
                round::<NodeExit>(d),
                round::<SpawnerState>(d),
                round::<Status>(d),
            ]
            .iter()
            .filter(|&&ok| ok)
            .count()
        };
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut accepted = 0;
        for s in &samples {
            let s = s.strip_suffix(b"\n").unwrap_or(s);
            assert!(all(s) >= 1, "{}", String::from_utf8_lossy(s));
            for k in 0..s.len() {
                all(&s[..k]);
            }
            let digits: Vec<usize> = (0..s.len()).filter(|&k| s[k].is_ascii_digit()).collect();
            for round in 0..2000 {
                let mut m = s.to_vec();
                for _ in 0..3 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if round % 2 == 1 && !digits.is_empty() {
                        // A digit for a digit: values that still parse.
                        let at = digits[(x % digits.len() as u64) as usize];
                        m[at] = b'0' + ((x >> 32) % 10) as u8;
                    } else {
                        let at = (x % m.len() as u64) as usize;
                        m[at] = (x >> 32) as u8;
                    }
                }
                accepted += all(&m);
            }
        }
        // Some mutations land in values (a digit for a digit) and parse.
        assert!(accepted > 0);
    }

    #[test]
    fn a_descriptor_travels_with_its_line() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut ca = Conn::new(a).unwrap();
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: fds has room for two.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            // SAFETY: new descriptors owned here.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let m = ToNode::Log { name: "x".into() };
        ca.send_fd(&m, &r).unwrap();
        drop(r);
        let mut pending = Vec::new();
        let (l, fds) = recv_line_fds(&b, &mut pending).unwrap();
        assert_eq!(parse::<ToNode>(&l).unwrap(), m);
        assert_eq!(fds.len(), 1);
        let mut wf = std::fs::File::from(w);
        wf.write_all(b"hello").unwrap();
        drop(wf);
        let mut got = String::new();
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "hello");
    }
}
