//! UNIX stream sockets and the pipes that wake a poll loop: peer
//! credentials, `send` that never raises `SIGPIPE`, `recv`, `shutdown`,
//! `poll` with a deadline, and the bytes a socket holds. `EINTR` is retried
//! here (or, for `poll`, reported as a wake-up), never by callers.

use super::retry;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

pub use rustix::event::PollFlags as Events;
pub use rustix::net::{RecvFlags, Shutdown};

/// The credentials of a connected UNIX socket's peer, as the kernel
/// recorded them when the peer called `connect(2)` (or `socketpair(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// The peer's process id.
    pub pid: u32,
    /// The peer's effective uid.
    pub uid: u32,
}

/// `SO_PEERCRED` of a connected UNIX socket. The pid is 0 for a peer this
/// process's pid namespace cannot name (read into a raw `ucred`: a type
/// whose pid cannot be 0 must never hold what the kernel writes then).
pub fn peer_cred(fd: impl AsFd) -> io::Result<PeerCred> {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed ucred is valid; getsockopt writes at most `len`
    // bytes into it.
    let mut c: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt on an open descriptor into the ucred above.
    let r = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: u32::try_from(c.pid).unwrap_or(0),
        uid: c.uid,
    })
}

/// `send(2)` with `MSG_NOSIGNAL`: a closed peer is `EPIPE`, never a
/// `SIGPIPE` that would kill the application. `EINTR` is retried.
pub fn send(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    retry(|| rustix::net::send(&fd, buf, rustix::net::SendFlags::NOSIGNAL))
}

/// `recv(2)` with `flags` (`PEEK`, `DONTWAIT`); `EINTR` is retried.
pub fn recv(fd: impl AsFd, buf: &mut [u8], flags: RecvFlags) -> io::Result<usize> {
    retry(|| rustix::net::recv(&fd, &mut *buf, flags).map(|(n, _)| n))
}

/// `recv(2)` of one packet of a `SOCK_SEQPACKET` socket into `buf`:
/// `(bytes copied, the packet's real length)`. A packet longer than `buf`
/// is cut, and its real length says so (`MSG_TRUNC`); `(0, 0)` is the end
/// of the connection (or an empty packet). `EINTR` is retried.
pub fn recv_packet(fd: impl AsFd, buf: &mut [u8], flags: RecvFlags) -> io::Result<(usize, usize)> {
    retry(|| rustix::net::recv(&fd, &mut *buf, flags | RecvFlags::TRUNC))
}

/// [`recv_packet`] with the sender's credentials: also the pid of the
/// process that sent the packet, as the kernel recorded it at the send
/// (`SCM_CREDENTIALS`, which a sender cannot forge for another process).
/// The receiving socket needs `SO_PASSCRED` (a listener made by
/// [`seqpacket_listen_with_credentials`] gives it to what it accepts).
/// `None` when the packet carries none, or a pid of 0 (a sender this
/// process's pid namespace cannot name). Read with `libc::recvmsg` into a
/// raw `ucred`: the kernel may write a pid of 0 there, which a type with a
/// non-zero pid must never hold.
pub fn recv_packet_from(
    fd: impl AsFd,
    buf: &mut [u8],
    flags: RecvFlags,
) -> io::Result<(usize, usize, Option<u32>)> {
    use std::os::fd::AsRawFd;
    // Room for one SCM_CREDENTIALS message, aligned for cmsghdr.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let raw = fd.as_fd().as_raw_fd();
    let cap = buf.len();
    let n = loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: cap,
        };
        // SAFETY: zeroed msghdr is a valid "no name, no iov" header; the
        // pointers set below point to live buffers of the lengths given.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
        let f = flags.bits() as libc::c_int | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC;
        // SAFETY: recvmsg on an open descriptor with the header above.
        let r = unsafe { libc::recvmsg(raw, &mut msg, f) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut sender = None;
        // SAFETY: the CMSG macros walk the control buffer the kernel
        // filled, within msg_controllen; the data of an SCM_CREDENTIALS
        // message is a ucred (read unaligned, as plain integers).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let u: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    if u.pid > 0 {
                        sender = Some(u.pid as u32);
                    }
                } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS
                {
                    // Descriptors nobody asked for: closed (they came
                    // close-on-exec, MSG_CMSG_CLOEXEC).
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let p = libc::CMSG_DATA(c).cast::<libc::c_int>();
                    for i in 0..len / std::mem::size_of::<libc::c_int>() {
                        libc::close(std::ptr::read_unaligned(p.add(i)));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        break (r as usize, sender);
    };
    Ok((n.0.min(cap), n.0, n.1))
}

/// A `SOCK_SEQPACKET` UNIX socket bound to `path` and listening
/// (non-blocking, close-on-exec; the caller removes a stale file first and
/// sets the file's mode), with `SO_PASSCRED` set before the bind, so that
/// every connection it accepts, from the first, receives its packets with
/// their senders' credentials ([`recv_packet_from`]).
pub fn seqpacket_listen_with_credentials(
    path: &std::path::Path,
    backlog: i32,
) -> io::Result<OwnedFd> {
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    let fd = seqpacket_socket(rustix::net::SocketFlags::NONBLOCK)?;
    rustix::net::sockopt::set_socket_passcred(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(fd)
}

/// `send(2)` with `MSG_NOSIGNAL | MSG_DONTWAIT`: never blocks (a full
/// socket buffer is `WouldBlock`) and never raises `SIGPIPE`.
pub fn send_nowait(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    use rustix::net::SendFlags;
    retry(|| rustix::net::send(&fd, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT))
}

/// A `SOCK_SEQPACKET` UNIX socket connected to `path` (blocking,
/// close-on-exec).
pub fn seqpacket_connect(path: &std::path::Path) -> io::Result<OwnedFd> {
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    let fd = seqpacket_socket(rustix::net::SocketFlags::empty())?;
    retry(|| rustix::net::connect(&fd, &addr))?;
    Ok(fd)
}

/// [`seqpacket_connect`] without waiting: a listener whose backlog is full
/// is `WouldBlock` at once, not a `connect` that blocks until it accepts.
/// The socket is blocking afterwards.
pub fn seqpacket_connect_nowait(path: &std::path::Path) -> io::Result<OwnedFd> {
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    let fd = seqpacket_socket(rustix::net::SocketFlags::NONBLOCK)?;
    rustix::net::connect(&fd, &addr)?;
    let fl = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, fl - rustix::fs::OFlags::NONBLOCK)?;
    Ok(fd)
}

/// A new `SOCK_SEQPACKET` UNIX socket, close-on-exec, with `flags` too.
fn seqpacket_socket(flags: rustix::net::SocketFlags) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | flags,
        None,
    )?)
}

/// `accept(2)` on a listening socket: the connection, non-blocking and
/// close-on-exec. `EINTR` is retried; nothing waiting is `WouldBlock`.
pub fn accept(fd: impl AsFd) -> io::Result<OwnedFd> {
    use rustix::net::SocketFlags;
    retry(|| rustix::net::accept_with(&fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK))
}

/// `shutdown(2)`; errors (the socket already shut down or disconnected) are
/// of no interest to a caller that is closing anyway.
pub fn shutdown(fd: impl AsFd, how: Shutdown) {
    let _ = rustix::net::shutdown(fd, how);
}

/// Bytes waiting in a socket's receive queue (`FIONREAD`); 0 on error.
pub fn pending_bytes(fd: impl AsFd) -> usize {
    rustix::io::ioctl_fionread(fd).map_or(0, |n| n as usize)
}

/// A pipe, both ends non-blocking and close-on-exec: (read end, write end).
/// One byte in it ([`poke`]) wakes a [`poll`] on the read end.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::pipe::PipeFlags;
    Ok(rustix::pipe::pipe_with(
        PipeFlags::CLOEXEC | PipeFlags::NONBLOCK,
    )?)
}

/// Writes one byte to a non-blocking pipe; a full pipe already wakes its
/// reader, so `EAGAIN` is fine.
pub fn poke(fd: impl AsFd) {
    let _ = retry(|| rustix::io::write(&fd, b"x"));
}

/// Reads everything a non-blocking pipe holds.
pub fn drain(fd: impl AsFd) {
    let mut buf = [0u8; 64];
    while matches!(retry(|| rustix::io::read(&fd, &mut buf)), Ok(n) if n > 0) {}
}

/// One descriptor to [`poll`] and what to wait for (`events` empty: only a
/// hang-up or an error wakes).
pub fn watch(fd: &impl AsFd, events: Events) -> PollFd<'_> {
    PollFd::new(fd, events)
}

/// `poll(2)` until `deadline` (`None`: no deadline). An interrupted call
/// returns 0, as a timeout does: callers re-check their state either way.
/// Afterwards each entry's `revents()` says what happened to it.
pub fn poll(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<usize> {
    let timeout = deadline.map(|d| timespec(d.saturating_duration_since(Instant::now())));
    match rustix::event::poll(fds, timeout.as_ref()) {
        Ok(n) => Ok(n),
        Err(Errno::INTR) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up):
/// `Ok(true)`, or until `deadline` passes: `Ok(false)`. An interrupted or
/// early wake-up waits again for what is left.
pub fn wait_ready(fd: impl AsFd, events: Events, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        let mut fds = [PollFd::new(&fd, events)];
        if poll(&mut fds, deadline)? > 0 {
            return Ok(true);
        }
    }
}

/// An epoll set (`epoll(7)`, level-triggered): each descriptor is
/// registered once with a number of the caller's choosing, and a wait
/// costs the same however many are registered and returns the numbers of
/// those that are readable (or hung up, or in error). What a loop over many
/// mostly idle connections (the HA Monitor's hooks) wants instead of
/// [`poll`], whose every call passes and checks them all. The set itself
/// is a descriptor ([`AsFd`]): readable when a member is, so it can be
/// waited for inside another set or a `poll`.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<rustix::event::epoll::Event>,
}

impl Epoll {
    /// How many ready descriptors one [`Epoll::wait`] returns at most (the
    /// others are returned by the next, the set being level-triggered).
    pub const BATCH: usize = 64;

    /// An empty set (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        use rustix::event::epoll;
        Ok(Epoll {
            fd: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            events: Vec::with_capacity(Self::BATCH),
        })
    }

    /// Watches `fd` for input (a hang-up and an error are always
    /// reported), under the number `key`. `EEXIST` if it is already in the
    /// set.
    pub fn add(&self, fd: impl AsFd, key: u64) -> io::Result<()> {
        use rustix::event::epoll;
        Ok(epoll::add(
            &self.fd,
            fd,
            epoll::EventData::new_u64(key),
            epoll::EventFlags::IN,
        )?)
    }

    /// Stops watching `fd` (nothing if it was not watched). A descriptor
    /// that is closed leaves the set by itself once no copy of it is left
    /// open; removing it first does not depend on that.
    pub fn remove(&self, fd: impl AsFd) {
        let _ = rustix::event::epoll::delete(&self.fd, fd);
    }

    /// Waits until a member is ready or `deadline` passes (`None`: no
    /// deadline), and appends the numbers of the ready members to `out`
    /// (at most [`Epoll::BATCH`]; none on a timeout or an interrupted
    /// call: callers re-check their state either way).
    pub fn wait(&mut self, deadline: Option<Instant>, out: &mut Vec<u64>) -> io::Result<()> {
        let timeout = deadline.map(|d| timespec(d.saturating_duration_since(Instant::now())));
        self.events.clear();
        match rustix::event::epoll::wait(
            &self.fd,
            rustix::buffer::spare_capacity(&mut self.events),
            timeout.as_ref(),
        ) {
            Ok(_) => {}
            Err(Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        out.extend(self.events.iter().map(|e| e.data.u64()));
        Ok(())
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether `revents` says the descriptor is readable, hung up or in error
/// (what a reader should act on).
// The relay tests its events itself; kept, and tested below, for the
// foundation's other users to come.
#[allow(dead_code)]
pub fn readable(revents: PollFlags) -> bool {
    revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
}

/// A poll timeout, rounded up to whole milliseconds (so a deadline is never
/// woken for early) and capped at one minute (callers loop).
fn timespec(d: Duration) -> Timespec {
    let ms = d.as_nanos().div_ceil(1_000_000).min(60_000) as i64;
    Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn timeouts_round_up_and_cap() {
        let ms = |t: Timespec| t.tv_sec * 1000 + t.tv_nsec / 1_000_000;
        assert_eq!(ms(timespec(Duration::ZERO)), 0);
        assert_eq!(ms(timespec(Duration::from_nanos(1))), 1);
        assert_eq!(ms(timespec(Duration::from_micros(1500))), 2);
        assert_eq!(ms(timespec(Duration::from_millis(2500))), 2500);
        assert_eq!(ms(timespec(Duration::from_secs(3600))), 60_000);
        assert_eq!(ms(timespec(Duration::MAX)), 60_000);
    }

    #[test]
    fn pipe_pokes_and_drains() {
        let (r, w) = pipe().unwrap();
        let mut fds = [watch(&r, Events::IN)];
        assert_eq!(poll(&mut fds, Some(Instant::now())).unwrap(), 0);
        poke(&w);
        poke(&w);
        assert_eq!(poll(&mut fds, None).unwrap(), 1);
        assert!(readable(fds[0].revents()));
        drain(&r);
        let mut fds = [watch(&r, Events::IN)];
        assert_eq!(poll(&mut fds, Some(Instant::now())).unwrap(), 0);
    }

    #[test]
    fn socket_calls() {
        let (a, b) = UnixStream::pair().unwrap();
        let me = peer_cred(&a).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.uid, super::super::euid());
        assert!(!wait_ready(
            &b,
            Events::IN,
            Some(Instant::now() + Duration::from_millis(5))
        )
        .unwrap());
        assert_eq!(send(&a, b"hello").unwrap(), 5);
        assert!(wait_ready(&b, Events::IN, None).unwrap());
        assert_eq!(pending_bytes(&b), 5);
        let mut buf = [0u8; 8];
        assert_eq!(recv(&b, &mut buf, RecvFlags::PEEK).unwrap(), 5);
        assert_eq!(recv(&b, &mut buf[..3], RecvFlags::empty()).unwrap(), 3);
        assert_eq!(&buf[..3], b"hel");
        drop(b);
        // A closed peer: EPIPE, and no SIGPIPE (the test process lives on).
        let e = send(&a, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(Errno::PIPE.raw_os_error()));
        shutdown(&a, Shutdown::Both);
    }

    #[test]
    fn seqpacket_keeps_packets_apart() {
        let dir = std::env::temp_dir().join(format!("mtipc-sys-seq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = seqpacket_listen_with_credentials(&path, 4).unwrap();
        assert_eq!(
            accept(&l).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        let c = seqpacket_connect(&path).unwrap();
        assert!(wait_ready(&l, Events::IN, None).unwrap());
        let s = accept(&l).unwrap();
        assert_eq!(peer_cred(&s).unwrap().pid, std::process::id());
        assert_eq!(send_nowait(&c, b"one").unwrap(), 3);
        assert_eq!(send_nowait(&c, b"second").unwrap(), 6);
        let mut buf = [0u8; 4];
        assert!(wait_ready(&s, Events::IN, None).unwrap());
        assert_eq!(
            recv_packet(&s, &mut buf, RecvFlags::empty()).unwrap(),
            (3, 3)
        );
        assert_eq!(&buf[..3], b"one");
        // Longer than the buffer: cut, and the real length says so; with
        // the sender's pid (the listener's SO_PASSCRED, from the first).
        assert_eq!(
            recv_packet_from(&s, &mut buf, RecvFlags::empty()).unwrap(),
            (4, 6, Some(std::process::id()))
        );
        drop(c);
        assert_eq!(
            recv_packet(&s, &mut buf, RecvFlags::empty()).unwrap(),
            (0, 0)
        );
        let long = dir.join("x".repeat(200));
        assert!(seqpacket_listen_with_credentials(&long, 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_epoll_set_returns_the_ready_members_by_number() {
        let mut ep = Epoll::new().unwrap();
        let (a, a2) = UnixStream::pair().unwrap();
        let (b, b2) = UnixStream::pair().unwrap();
        ep.add(&a, 7).unwrap();
        ep.add(&b, 9).unwrap();
        assert!(ep.add(&a, 8).is_err(), "a member is added once");
        let mut out = Vec::new();
        let t = Instant::now();
        ep.wait(Some(Instant::now() + Duration::from_millis(30)), &mut out)
            .unwrap();
        assert!(out.is_empty() && t.elapsed() >= Duration::from_millis(30));
        send(&b2, b"x").unwrap();
        ep.wait(None, &mut out).unwrap();
        assert_eq!(out, vec![9]);
        // Level-triggered: unread input is reported again; a hang-up too.
        out.clear();
        drop(a2);
        ep.wait(None, &mut out).unwrap();
        out.sort();
        assert_eq!(out, vec![7, 9]);
        // Removed: no longer reported; the set is a descriptor that polls
        // readable while a member is ready.
        ep.remove(&b);
        ep.remove(&b);
        out.clear();
        ep.wait(None, &mut out).unwrap();
        assert_eq!(out, vec![7]);
        let mut fds = [watch(&ep, Events::IN)];
        assert_eq!(poll(&mut fds, Some(Instant::now())).unwrap(), 1);
        ep.remove(&a);
        let mut fds = [watch(&ep, Events::IN)];
        assert_eq!(poll(&mut fds, Some(Instant::now())).unwrap(), 0);
        drop((a, b, b2));
    }
}
