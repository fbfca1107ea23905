//! The few libc calls the relay needs, wrapped safely.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The credentials of a connected UNIX socket's peer, as the kernel
/// recorded them when the peer called `connect(2)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerCred {
    pub pid: u32,
    pub uid: u32,
}

pub(super) fn peer_cred(fd: &impl AsRawFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` its size, as SO_PEERCRED
    // expects.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid as u32,
        uid: cred.uid,
    })
}

/// `send(2)` with `MSG_NOSIGNAL` (a closed peer is `EPIPE`, never SIGPIPE).
pub(super) fn send(fd: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `recv(2)` with `flags`.
pub(super) fn recv(fd: &impl AsRawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `shutdown(2)`; errors (the socket already shut down or disconnected) are
/// of no interest to a caller that is closing anyway.
pub(super) fn shutdown(fd: &impl AsRawFd, how: libc::c_int) {
    // SAFETY: shutdown only acts on the descriptor, which `fd` keeps open.
    unsafe {
        libc::shutdown(fd.as_raw_fd(), how);
    }
}

/// Bytes waiting in a socket's receive queue (`FIONREAD`); 0 on error.
pub(super) fn pending_bytes(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// A pipe, both ends non-blocking and close-on-exec: (read end, write end).
pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes one byte to a non-blocking pipe; a full pipe already wakes its
/// reader, so `EAGAIN` is fine.
pub(super) fn poke(fd: &OwnedFd) {
    // SAFETY: one byte from a valid buffer.
    unsafe {
        libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1);
    }
}

/// Reads everything a non-blocking pipe holds.
pub(super) fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// A `pollfd` for `fd` (negative: ignored by poll) and `events`.
pub(super) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` until `deadline` (`None`: no deadline). An interrupted call
/// returns 0, as a timeout does: callers re-check their state either way.
pub(super) fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    let timeout = match deadline {
        None => -1,
        Some(d) => timeout_ms(d.saturating_duration_since(Instant::now())),
    };
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// A poll timeout in whole milliseconds, rounded up (so a deadline is never
/// woken for early) and capped at one minute (the caller just loops).
fn timeout_ms(d: Duration) -> libc::c_int {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(60_000) as libc::c_int
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_cap() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 2);
        assert_eq!(timeout_ms(Duration::from_secs(3600)), 60_000);
        assert_eq!(timeout_ms(Duration::MAX), 60_000);
    }

    #[test]
    fn pipe_pokes_and_drains() {
        let (r, w) = pipe().unwrap();
        let mut fds = [pollfd(r.as_raw_fd(), libc::POLLIN)];
        assert_eq!(poll(&mut fds, Some(Instant::now())).unwrap(), 0);
        poke(&w);
        poke(&w);
        assert_eq!(poll(&mut fds, None).unwrap(), 1);
        drain(&r);
        fds[0].revents = 0;
        assert_eq!(poll(&mut fds, Some(Instant::now())).unwrap(), 0);
    }
}
