//! The signals of the HA programs (`mtipc-ha run`, `up` and every role):
//! SIGTERM and SIGINT are counted ([`STOPS`]: the first stops in order, a
//! second kills at once), SIGCHLD only wakes; each pokes a non-blocking
//! pipe whose read end the program's loop polls beside its sockets, so
//! that one `poll` waits for everything.

use mtipc::internals::sync::local::AtomicU32;
use mtipc::internals::sync::Ordering;
use std::os::fd::{FromRawFd, OwnedFd};

/// SIGTERM and SIGINT received.
pub static STOPS: AtomicU32 = AtomicU32::new(0);
static WAKE_FD: AtomicU32 = AtomicU32::new(u32::MAX);

/// Writes a byte to the wake pipe (async-signal-safe; errno kept).
pub fn poke() {
    let fd = WAKE_FD.load(Ordering::Acquire);
    if fd == u32::MAX {
        return;
    }
    // SAFETY: write on a descriptor kept open for the process's life;
    // errno is this thread's.
    unsafe {
        let saved = *libc::__errno_location();
        let _ = libc::write(fd as libc::c_int, b"x".as_ptr().cast(), 1);
        *libc::__errno_location() = saved;
    }
}

extern "C" fn on_stop(_: libc::c_int) {
    STOPS.fetch_add(1, Ordering::AcqRel);
    poke();
}

extern "C" fn on_child(_: libc::c_int) {
    poke();
}

/// Installs the handlers and makes the pipe; its read end, to poll
/// (non-blocking: empty it with [`drain`]).
pub fn install() -> std::io::Result<OwnedFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: new descriptors nothing else owns; the write end stays
    // open for the process's life.
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    WAKE_FD.store(fds[1] as u32, Ordering::Release);
    let handlers: [(libc::c_int, extern "C" fn(libc::c_int), libc::c_int); 3] = [
        (libc::SIGTERM, on_stop, libc::SA_RESTART),
        (libc::SIGINT, on_stop, libc::SA_RESTART),
        (
            libc::SIGCHLD,
            on_child,
            libc::SA_RESTART | libc::SA_NOCLDSTOP,
        ),
    ];
    for (sig, handler, flags) in handlers {
        // SAFETY: plain data; the handlers use atomics and write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = flags;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(read)
}

/// Empties the wake pipe.
pub fn drain(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 64];
    // SAFETY: reads into a local buffer from a non-blocking pipe.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}
