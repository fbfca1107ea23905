//! A connection to the Monitor made for a process before it runs
//! (`docs/ha.md` "The inherited connection"), in the way of s6's
//! `notification-fd`: the HA Spawner connects to the Monitor's socket,
//! starts the process with the connected descriptor as its descriptor 3
//! (`$MTIPC_HA_FD`, [`super::FD_ENV`]), and says the process's `hello`
//! for it (the Monitor accepts a hello from the process's parent). The
//! process's first hook then has nothing to do but send: no connection,
//! no `/proc` read, no hello between `main()` and `ready`; the Monitor has
//! accepted the connection and checked the hello while the process was
//! still loading.
//!
//! Two halves:
//!
//! - [`Preconnect`], for the Spawner: [`Preconnect::connect`] before the
//!   process is started, [`Preconnect::introduce`] once its pid is known;
//! - for the hooks: [`ready_first`] (the first `ready` of a process, with
//!   the C library's calls only) and [`claim`] (the connection for the
//!   hooks' first connection), which take the descriptor only if it is
//!   what the Spawner leaves there: a connected `SOCK_SEQPACKET` UNIX
//!   socket whose peer is bound at `$MTIPC_HA_SOCKET` and whose owner
//!   (`F_GETOWN`, which the Spawner sets after the hello) is the calling
//!   process. So a variable that a process passed on to its own children,
//!   or a child it forked, never makes the library take a descriptor of
//!   the application's or its parent's connection.

use super::proto::Message;
use crate::sync::local::AtomicU64;
use crate::sync::Ordering;
use crate::sys::{net, ProcId};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The Spawner's half: a connection to the Monitor for one process
/// (close-on-exec in the Spawner; the process gets it by `dup2`).
#[derive(Debug)]
pub struct Preconnect {
    fd: OwnedFd,
}

impl Preconnect {
    /// Connects to the Monitor's socket at `path`, without waiting: a
    /// Monitor whose backlog is full (stopped, say) is an error
    /// (`WouldBlock`), as is one that does not listen. The socket is
    /// blocking afterwards, as a connection the hooks make themselves.
    pub fn connect(path: &Path) -> io::Result<Preconnect> {
        let fd = net::seqpacket_connect_nowait(path)?;
        // Owned by this process until `introduce` gives it to the child:
        // the child, finding its parent there, may say its own hello; a
        // process the child forks finds its grandparent, and leaves it.
        // SAFETY: fcntl on an open descriptor, integer arguments.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, libc::getpid()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Preconnect { fd })
    }

    /// The connected descriptor, for the process's `dup2`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Says the hello of `child` (a process this one started with the
    /// descriptor), then marks the connection as the child's (`F_SETOWN`;
    /// without `O_ASYNC` it sends no signal). A child whose first hook
    /// comes before finds its parent as the owner and says its own hello
    /// (the Monitor ignores the second of two same hellos); then this does
    /// nothing.
    pub fn introduce(&self, child: ProcId) -> io::Result<()> {
        // SAFETY: F_GETOWN on an open descriptor; getpid: no memory effects.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GETOWN) != libc::getpid() } {
            // The child was first and said its own (`own_hello`).
            return Ok(());
        }
        let hello = Message::Hello {
            pid: child.pid,
            start: child.start,
        }
        .encode();
        net::send_nowait(&self.fd, hello.as_bytes())?;
        let pid =
            i32::try_from(child.pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: fcntl on an open descriptor, integer arguments.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_SETOWN, pid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What the first `ready` did with the inherited connection
/// ([`ready_first`]), as `pid << 32 | what`: `what` is [`BUSY`] while it
/// looks, [`LOOKED`] once it or the hooks looked, else the descriptor on
/// which it said `ready`, for the hooks to take over ([`claim`]). The pid
/// is the process that wrote it: a child forked from it finds another pid
/// there and starts afresh, as the hooks' state does. 0: nobody looked.
static FIRST: AtomicU64 = AtomicU64::new(0);
const BUSY: u64 = 0xffff_fffe;
const LOOKED: u64 = 0xffff_ffff;

/// This process's entries of [`FIRST`]: the pid part.
fn mine(v: u64, pid: u64) -> bool {
    v >> 32 == pid
}

/// [`super::FD_ENV`] and [`super::SOCKET_ENV`] for `getenv`.
const FD_ENV_C: &std::ffi::CStr = c"MTIPC_HA_FD";
const SOCKET_ENV_C: &std::ffi::CStr = c"MTIPC_HA_SOCKET";

/// `ready` on the inherited connection, as the process's first hook
/// call: with the C library's calls only (no allocation, no lock, none of
/// the hooks' state), because in a freshly started process every page of
/// this library's code that a call touches the first time costs a page
/// fault (4–6 µs each on the machines measured; the general path touched
/// 18). `true` if `ready` was sent; `false` if this is not the first look
/// or there is no usable inherited connection (the caller then takes the
/// general path, which connects by the path). The checks are
/// [`adopt`]'s, made here with `libc`.
#[inline(always)] // into `mt_ha_ready`: one code page fewer to fault in
pub(crate) fn ready_first() -> bool {
    // SAFETY: getpid has no memory effects (libc's, not std's: one page
    // of this library fewer to fault in).
    let pid = unsafe { libc::getpid() } as u64;
    let was = FIRST.load(Ordering::Acquire);
    if mine(was, pid) {
        return false;
    }
    // SAFETY: getenv returns a pointer into the environment or null; it is
    // read at once (the hooks read the environment the same way, with no
    // lock against a concurrent setenv by C code).
    let (fd_var, path_var) = unsafe {
        (
            libc::getenv(FD_ENV_C.as_ptr()),
            libc::getenv(SOCKET_ENV_C.as_ptr()),
        )
    };
    if fd_var.is_null() || path_var.is_null() {
        return false;
    }
    if FIRST
        .compare_exchange(was, pid << 32 | BUSY, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    // SAFETY: both are NUL-terminated strings of the environment.
    let said = unsafe { check_and_say_ready(fd_var, path_var) };
    FIRST.store(
        pid << 32
            | match said {
                Some(fd) => fd as u64,
                None => LOOKED,
            },
        Ordering::Release,
    );
    said.is_some()
}

/// [`adopt`]'s checks with `libc`, then the connection moved to a
/// descriptor of its own ([`take_private`]), the process's own hello said
/// if the Spawner has not said it, and `ready` sent: the new descriptor;
/// `None` with the descriptor left as it was when a check failed, or
/// closed when a send failed after the checks.
///
/// # Safety
///
/// Both pointers are NUL-terminated strings.
unsafe fn check_and_say_ready(
    fd_var: *const libc::c_char,
    path_var: *const libc::c_char,
) -> Option<RawFd> {
    // SAFETY: the pointers are NUL-terminated (the caller's promise); the
    // rest are system calls on an integer descriptor with buffers of this
    // frame and their true sizes.
    unsafe {
        let fd_bytes = std::ffi::CStr::from_ptr(fd_var).to_bytes();
        let path = std::ffi::CStr::from_ptr(path_var).to_bytes();
        if path.is_empty() {
            return None;
        }
        let (fd, maker) = parse_fd_env(fd_bytes)?;
        if fd < 3 || libc::fcntl(fd, libc::F_GETFD) < 0 {
            return None;
        }
        // Ours (introduced), or still its maker's, who is our parent (the
        // Spawner has not got to it yet: we say our own hello); anything
        // else is not for us.
        let owner = libc::fcntl(fd, libc::F_GETOWN);
        let early = maker == Some(owner) && owner == libc::getppid();
        if owner != libc::getpid() && !early {
            return None;
        }
        let int_opt = |opt: libc::c_int| -> Option<libc::c_int> {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let r = libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            );
            (r == 0).then_some(v)
        };
        if int_opt(libc::SO_DOMAIN)? != libc::AF_UNIX
            || int_opt(libc::SO_TYPE)? != libc::SOCK_SEQPACKET
        {
            return None;
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len) != 0 {
            return None;
        }
        let off = std::mem::offset_of!(libc::sockaddr_un, sun_path);
        let n = (len as usize).checked_sub(off)?.min(addr.sun_path.len());
        let peer = std::slice::from_raw_parts(addr.sun_path.as_ptr().cast::<u8>(), n);
        let peer = peer.split(|&b| b == 0).next().unwrap_or_default();
        if peer != path {
            return None;
        }
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        ) != 0
            || (cred.uid != libc::geteuid() && cred.uid != 0)
        {
            return None;
        }
        // From here it is ours: on a failure it is closed, not left to
        // anyone else.
        let fd = take_private(fd)?;
        if early && !own_hello(BorrowedFd::borrow_raw(fd)) {
            libc::close(fd);
            return None;
        }
        let m = b"ready";
        let sent = libc::send(
            fd,
            m.as_ptr().cast(),
            m.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        );
        if sent != m.len() as isize {
            libc::close(fd);
            return None;
        }
        Some(fd)
    }
}

/// `$MTIPC_HA_FD`: `FD` (a connection introduced already) or `FD:PID`
/// (made by the process `PID`, which may not have said the hello yet).
/// Decimal digits only; `None` for anything else.
fn parse_fd_env(v: &[u8]) -> Option<(RawFd, Option<libc::pid_t>)> {
    fn number(d: &[u8]) -> Option<i32> {
        if d.is_empty() || d.len() > 9 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(d.iter().fold(0, |n, &b| n * 10 + i32::from(b - b'0')))
    }
    match v.iter().position(|&b| b == b':') {
        None => Some((number(v)?, None)),
        Some(i) => Some((number(&v[..i])?, Some(number(&v[i + 1..])?))),
    }
}

/// The connection moved from the number the Spawner gave it (shared
/// knowledge: `$MTIPC_HA_FD`) to a new close-on-exec one that only the
/// hooks know, so that a second copy of this library in the process, or
/// anything else reading the variable, finds nothing there; with no
/// descriptor to spare, kept where it is and made close-on-exec. `None`
/// (the descriptor left as it was) if even that fails.
///
/// # Safety
///
/// `fd` is open, and the caller may close it.
unsafe fn take_private(fd: RawFd) -> Option<RawFd> {
    // SAFETY: fcntl and close on an open descriptor (the caller's promise).
    unsafe {
        let private = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
        if private < 0 {
            // No descriptor to spare: kept where it is, close-on-exec.
            return (libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0).then_some(fd);
        }
        libc::close(fd);
        Some(private)
    }
}

/// On an inherited connection the Spawner has not yet said the hello of
/// (its owner is still the parent: this process got to its first hook
/// before the Spawner, busy elsewhere, got to [`Preconnect::introduce`]):
/// says this process's own hello and marks the connection as its own. The
/// Monitor takes a hello that a child of the connection's maker says for
/// itself (`SCM_CREDENTIALS` tell it who sent it), and ignores the
/// Spawner's same hello if it comes too. `false` if that failed.
fn own_hello(fd: BorrowedFd<'_>) -> bool {
    let Ok(me) = ProcId::current() else {
        return false;
    };
    let hello = Message::Hello {
        pid: me.pid,
        start: me.start,
    }
    .encode();
    if !matches!(net::send_nowait(fd, hello.as_bytes()), Ok(n) if n == hello.len()) {
        return false;
    }
    // SAFETY: fcntl on an open descriptor, integer arguments.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, me.pid as libc::c_int) == 0 }
}

/// The inherited connection for the hooks' first connection, once per
/// process, and whether `ready` was said on it: the one [`ready_first`]
/// said `ready` on (`true`, even if the descriptor is no longer there),
/// or, if it never looked, [`adopt`]'s (`false`). `None` after the
/// first call, in a child forked after [`ready_first`] (the connection is
/// its parent's), and when there is none.
pub(crate) fn claim(value: Option<&std::ffi::OsStr>, path: &Path) -> (Option<OwnedFd>, bool) {
    let pid = u64::from(std::process::id());
    let was = loop {
        let v = FIRST.load(Ordering::Acquire);
        if mine(v, pid) && v & 0xffff_ffff == BUSY {
            // `ready_first` is at work on another thread: a few calls.
            std::thread::yield_now();
            continue;
        }
        if FIRST
            .compare_exchange(v, pid << 32 | LOOKED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            break v;
        }
    };
    if !mine(was, pid) {
        // Nobody of this process looked: the variable, checked.
        return (value.and_then(|v| adopt(v, path)), false);
    }
    match was & 0xffff_ffff {
        LOOKED => (None, false),
        fd => {
            // `ready` was said on it, whatever becomes of it now. Checked
            // again: the application may have closed it since (a close of
            // everything from 3 up) and the number been reused.
            let fd = fd as RawFd;
            if check(fd, path) != Some(std::process::id() as libc::pid_t) {
                return (None, true);
            }
            // SAFETY: `ready_first` of this process (the pid says so)
            // left this descriptor, still this process's connection to
            // the Monitor (checked), to the hooks; claimed once (the entry
            // now says LOOKED).
            (Some(unsafe { OwnedFd::from_raw_fd(fd) }), true)
        }
    }
}

/// What makes `raw` a connection to the Monitor at `path`: open, a
/// `SOCK_SEQPACKET` UNIX socket, its peer bound at `path` and running as
/// this process's uid or root. Its owner (`F_GETOWN`), or `None`.
fn check(raw: RawFd, path: &Path) -> Option<libc::pid_t> {
    // SAFETY: F_GETFD on a number: no memory effects; -1 if it is not open.
    if raw < 3 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open (checked just above) and borrowed only
    // for the checks below, before anything could close it.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    use rustix::net::{sockopt, AddressFamily, SocketType};
    if sockopt::socket_domain(fd).ok()? != AddressFamily::UNIX
        || sockopt::socket_type(fd).ok()? != SocketType::SEQPACKET
    {
        return None;
    }
    let peer = rustix::net::getpeername(fd).ok()??;
    let peer = rustix::net::SocketAddrUnix::try_from(peer).ok()?;
    if peer.path()?.to_bytes() != path.as_os_str().as_encoded_bytes() {
        return None;
    }
    let cred = net::peer_cred(fd).ok()?;
    if cred.uid != crate::sys::euid() && cred.uid != 0 {
        return None;
    }
    // SAFETY: F_GETOWN on an open descriptor: no memory effects.
    Some(unsafe { libc::fcntl(raw, libc::F_GETOWN) })
}

/// The connection the Spawner left at `$MTIPC_HA_FD`, if the variable
/// names one and the descriptor is that ([`check`]) and is this
/// process's: its owner (`F_GETOWN`) is this process (the Spawner said its
/// hello) or still its maker named in the variable, who is this process's
/// parent (the Spawner has not yet: this process says its own,
/// [`own_hello`]; a process forked from this one finds another parent). It is moved to a close-on-exec number of its own
/// ([`take_private`]). `None` for anything else (not a number, a closed
/// descriptor, another kind of descriptor, another process's connection,
/// the connection of a process this one was forked from), which is left
/// alone.
fn adopt(value: &std::ffi::OsStr, path: &Path) -> Option<OwnedFd> {
    let (raw, maker) = parse_fd_env(value.as_encoded_bytes())?;
    let owner = check(raw, path)?;
    // SAFETY: getpid and getppid have no memory effects.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    let early = maker == Some(owner) && owner == parent;
    if owner != me && !early {
        return None;
    }
    // SAFETY: open (checked) and this process's connection to the Monitor.
    let fd = unsafe { take_private(raw) }?;
    // SAFETY: a new descriptor that nothing else knows of.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if early && !own_hello(fd.as_fd()) {
        return None;
    }
    Some(fd)
}

/// Gives `raw` to the process `cmd` starts as its descriptor 3 (open across
/// the exec), as the Spawner does with the Monitor connection. For tests
/// (the library's own and, through `internals::ha`, the integration
/// tests'): the Spawner itself passes it with `posix_spawn`'s file actions.
pub fn give_as_fd3(cmd: &mut std::process::Command, raw: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure makes system calls only (dup2 or fcntl):
    // async-signal-safe, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would leave it close-on-exec.
            let r = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_names_are_the_variables() {
        assert_eq!(FD_ENV_C.to_str().unwrap(), super::super::FD_ENV);
        assert_eq!(SOCKET_ENV_C.to_str().unwrap(), super::super::SOCKET_ENV);
    }

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!(
                "mtipc-ha-inherit-{tag}-{}-{}",
                std::process::id(),
                crate::sys::monotonic_ns()
            ));
            std::fs::create_dir(&d).unwrap();
            Dir(d)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    /// A real child, started with the connection as its descriptor 3 and
    /// introduced by its parent: the Monitor's endpoint takes the hello
    /// as the child's, and the connection is marked as the child's.
    #[test]
    fn a_parent_introduces_its_child() {
        use crate::ha::endpoint::{Endpoint, Event};
        let dir = Dir::new("child");
        let path = dir.path().join("m.sock");
        let mut ep = Endpoint::bind(&path, crate::ha::Role::Active, 1).unwrap();
        let pre = Preconnect::connect(&path).unwrap();
        let raw = pre.fd().as_raw_fd();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        give_as_fd3(&mut cmd, raw);
        let mut child = cmd.spawn().unwrap();
        let kid = ProcId::of(child.id()).unwrap().unwrap();
        pre.introduce(kid).unwrap();
        // SAFETY: F_GETOWN on an open descriptor.
        assert_eq!(unsafe { libc::fcntl(raw, libc::F_GETOWN) } as u32, kid.pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let proc = loop {
            assert!(std::time::Instant::now() < deadline, "no hello came");
            match ep
                .next_event(std::time::Duration::from_millis(500))
                .unwrap()
            {
                Some(Event::Connected { proc, .. }) => break proc,
                Some(other) => panic!("unexpected {other:?}"),
                None => {}
            }
        };
        assert_eq!(proc, kid);
        let link = std::fs::read_link(format!("/proc/{}/fd/3", kid.pid)).unwrap();
        assert!(link.to_string_lossy().starts_with("socket:"), "{link:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// No Monitor listening: an error at once, nothing waited for.
    #[test]
    fn without_a_monitor_connect_fails_at_once() {
        let dir = Dir::new("none");
        let err = Preconnect::connect(&dir.path().join("m.sock")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn adopt_refuses_what_is_not_the_monitors_connection() {
        let dir = Dir::new("adopt");
        let path = dir.path().join("m.sock");
        let listener = net::seqpacket_listen_with_credentials(&path, 4).unwrap();
        let other = dir.path().join("o.sock");
        let _other_listener = net::seqpacket_listen_with_credentials(&other, 4).unwrap();
        let os = |s: String| std::ffi::OsString::from(s);
        // Not a number, stdio, a closed descriptor.
        assert!(adopt(&os("x".into()), &path).is_none());
        assert!(adopt(&os("1".into()), &path).is_none());
        assert!(adopt(&os("999999".into()), &path).is_none());
        // A file.
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(adopt(&os(f.as_raw_fd().to_string()), &path).is_none());
        // A connection to another socket, and an unconnected socket.
        let wrong = net::seqpacket_connect(&other).unwrap();
        assert!(adopt(&os(wrong.as_raw_fd().to_string()), &path).is_none());
        let unconnected = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            None,
        )
        .unwrap();
        assert!(adopt(&os(unconnected.as_raw_fd().to_string()), &path).is_none());
        // The right connection, but another process's (a child forked
        // before its first hook finds its parent's pid there).
        let right = net::seqpacket_connect(&path).unwrap();
        let raw = right.as_raw_fd();
        // SAFETY: fcntl on an open descriptor, integer arguments.
        unsafe { libc::fcntl(raw, libc::F_SETOWN, 1) };
        assert!(adopt(&os(raw.to_string()), &path).is_none());
        // Marked as this process's: taken, moved to a close-on-exec
        // descriptor of its own (the number in the variable closed).
        // SAFETY: as above.
        unsafe { libc::fcntl(raw, libc::F_SETOWN, std::process::id() as libc::c_int) };
        std::mem::forget(right);
        let got = adopt(&os(raw.to_string()), &path).expect("adopted");
        assert_ne!(got.as_raw_fd(), raw);
        // SAFETY: F_GETFD on a number.
        assert_eq!(
            unsafe { libc::fcntl(raw, libc::F_GETFD) },
            -1,
            "{raw} closed"
        );
        let flags = rustix::io::fcntl_getfd(&got).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        let mine = net::accept(&listener).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(
            net::recv(&mine, &mut buf, rustix::net::RecvFlags::DONTWAIT),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        ));
        // Still its maker's, who is this process's parent (the process
        // came before its Spawner's hello): only with the maker in the
        // variable, and then its own hello said, the connection marked as
        // its own.
        let early = net::seqpacket_connect(&path).unwrap();
        let raw = early.as_raw_fd();
        std::mem::forget(early);
        let parent = std::os::unix::process::parent_id();
        // SAFETY: as above.
        unsafe { libc::fcntl(raw, libc::F_SETOWN, parent as libc::c_int) };
        assert!(
            adopt(&os(raw.to_string()), &path).is_none(),
            "no maker named"
        );
        assert!(
            adopt(&os(format!("{raw}:{}", parent + 1)), &path).is_none(),
            "another maker named"
        );
        let got2 = adopt(&os(format!("{raw}:{parent}")), &path).expect("adopted");
        // SAFETY: F_GETOWN on an open descriptor.
        assert_eq!(
            unsafe { libc::fcntl(got2.as_raw_fd(), libc::F_GETOWN) } as u32,
            std::process::id()
        );
        let theirs = net::accept(&listener).unwrap();
        let n = net::recv(&theirs, &mut buf, rustix::net::RecvFlags::empty()).unwrap();
        let me = ProcId::current().unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("hello 1 {} {}", me.pid, me.start)
        );
        assert_eq!(parse_fd_env(b"3"), Some((3, None)));
        assert_eq!(parse_fd_env(b"3:42"), Some((3, Some(42))));
        for bad in [
            &b""[..],
            b":",
            b"3:",
            b":4",
            b"x",
            b"3:x",
            b"-3",
            b"3:4:5",
            b"1234567890",
        ] {
            assert_eq!(
                parse_fd_env(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        drop((got, got2));
        drop(listener);
    }
}
