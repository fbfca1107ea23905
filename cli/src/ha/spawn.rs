//! Starting and stopping one configured process (the HA Spawner's
//! mechanism): fork and exec with its argv, `env`, `cwd` and `user`, in a
//! session and process group of its own, stdin from `/dev/null`, stdout
//! and stderr into a pipe that a thread of the supervisor copies into the
//! log file with size rotation; signals to its whole process group; and
//! reaping (`waitpid(-1)`, the supervisor being the subreaper of whatever
//! its children leave behind).
//!
//! Every descriptor the supervisor opens is close-on-exec (std's files,
//! the library's sockets, the pipes made here), and those it inherited
//! are marked so in the child before exec, so a child gets exactly 0, 1
//! and 2.

use mtipc::ha::config::Process;
use mtipc::internals::ha::Preconnect;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A process just started.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (also its process group and session id).
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22), 0 if it already
    /// vanished.
    pub start: u64,
}

/// The uid and gid a process runs as, resolved from `user` (a name or a
/// number) when it starts: `None` for "as the supervisor". Switching to
/// another user needs root: refused with the reason otherwise.
fn resolve_user(user: &str) -> Result<Option<(u32, u32)>, String> {
    let euid = mtipc::internals::domain::euid();
    let (uid, gid) = match lookup_user(user) {
        Some(ids) => ids,
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => return Err(format!("user {user:?}: no such user")),
        },
    };
    if uid == euid {
        return Ok(None);
    }
    if euid != 0 {
        return Err(format!(
            "user {user:?} (uid {uid}): mtipc-ha runs as uid {euid}, not root, and cannot switch user"
        ));
    }
    Ok(Some((uid, gid)))
}

/// The processes that would wait forever for the HA hooks: run as another
/// `user` than mtipc-ha's, they cannot reach the Monitor's socket (0600 in
/// the 0700 `<domain>/ha`, mtipc-ha's uid's; a socket per user is not
/// built), so a `ready = "notify"` would never be said and a `watchdog_ms`
/// never fed. One line per such process, with its line in the file; empty
/// when none. A `user` that does not resolve is left to the start of the
/// process, which fails with the reason.
pub fn hooks_unreachable(config: &mtipc::ha::config::Config) -> Vec<String> {
    use mtipc::ha::config::Ready;
    let euid = mtipc::internals::domain::euid();
    let mut out = Vec::new();
    for p in &config.processes {
        let Some(user) = &p.user else { continue };
        let Ok(Some((uid, _))) = resolve_user(user) else {
            continue;
        };
        let mut needs = Vec::new();
        if p.ready == Ready::Notify {
            needs.push("ready = \"notify\"");
        }
        if p.watchdog_ms > 0 {
            needs.push("watchdog_ms");
        }
        if needs.is_empty() {
            continue;
        }
        out.push(format!(
            "{}:{}: process {}: {} needs the HA hooks, which a process run as user {user:?} \
             (uid {uid}) cannot reach: the Monitor's socket is mtipc-ha's uid {euid}'s (a socket \
             per user is not built yet); use ready = \"started\" without watchdog_ms, or leave \
             out user",
            config.file.display(),
            p.line,
            p.name,
            needs.join(" and ")
        ));
    }
    out
}

/// The uid and gid of the user named `name` (`getpwnam_r`).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain old data; all-zero is a valid value.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is given.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return None;
    }
    Some((pw.pw_uid, pw.pw_gid))
}

/// A pipe (read end, write end), both close-on-exec and blocking.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The variable that names a supervised process's configured name in its
/// environment (set by the Spawner beside `MTIPC_HA_SOCKET`): how a
/// restarted Spawner recognises a process it started just before it died.
pub const PROCESS_ENV: &str = "MTIPC_HA_PROCESS";

/// Starts `p`: its log opened (created mode 0600, appended), then fork and
/// exec. `socket` is the Monitor's socket, passed in `MTIPC_HA_SOCKET`.
/// `Err` is the reason it could not start, one line (the exec error
/// included: std reports it from the child through a close-on-exec pipe).
/// This process's log thread copies its output into the log ([`copy_log`]).
pub fn spawn(p: &Process, log: &Path, socket: Option<&Path>) -> Result<Spawned, String> {
    let (spawned, rd, writer) = start(p, log, socket)?;
    copy_log(&p.name, rd, writer).map_err(|e| format!("log thread: {e}"))?;
    Ok(spawned)
}

/// Copies what `rd` (the read end of a process's output pipe) gives into
/// `writer` until every holder of the write end is gone. One thread of
/// this process, `mtipc-ha-logs`, started with the first pipe, copies
/// every pipe (an epoll set over their read ends): a node of 4096
/// processes has one such thread, not 4096, and a restart starts no
/// thread. `Err` if that thread cannot be started (or is gone).
pub fn copy_log(name: &str, rd: OwnedFd, writer: LogWriter) -> std::io::Result<()> {
    static COPIER: std::sync::OnceLock<std::io::Result<Copier>> = std::sync::OnceLock::new();
    let copier = COPIER.get_or_init(Copier::start);
    let c = match copier {
        Ok(c) => c,
        Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
    };
    // Read only when the set says so; never blocks the other pipes.
    set_nonblocking(&rd)?;
    c.tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((name.to_string(), rd, writer))
        .map_err(|_| std::io::Error::other("the log thread is gone"))?;
    mtipc::internals::sys::poke(&c.wake);
    Ok(())
}

/// The log thread's handle: new pipes go through the channel, and a byte
/// on the wake pipe tells the thread to look.
struct Copier {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<(String, OwnedFd, LogWriter)>>,
    wake: OwnedFd,
}

impl Copier {
    fn start() -> std::io::Result<Copier> {
        use mtipc::internals::sys as net;
        let (wake_rd, wake) = net::pipe()?;
        let (tx, rx) = std::sync::mpsc::channel::<(String, OwnedFd, LogWriter)>();
        // The set is made by the thread (it is not `Send`), which says
        // whether it could.
        let (made_tx, made) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
        std::thread::Builder::new()
            .name("mtipc-ha-logs".into())
            .spawn(move || {
                let set = net::Epoll::new().and_then(|set| set.add(&wake_rd, 0).map(|()| set));
                let mut set = match set {
                    Ok(set) => {
                        let _ = made_tx.send(Ok(()));
                        set
                    }
                    Err(e) => {
                        let _ = made_tx.send(Err(e));
                        return;
                    }
                };
                let mut pipes: std::collections::HashMap<u64, (String, File, LogWriter)> =
                    std::collections::HashMap::new();
                let mut next: u64 = 1;
                let mut buf = vec![0u8; 64 * 1024];
                let mut ready = Vec::new();
                loop {
                    ready.clear();
                    if set.wait(None, &mut ready).is_err() {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    for &key in &ready {
                        if key == 0 {
                            net::drain(&wake_rd);
                            while let Ok((name, rd, w)) = rx.try_recv() {
                                if let Err(e) = set.add(&rd, next) {
                                    mtipc::log::emit(
                                        mtipc::log::Level::Error,
                                        "mtipc-ha",
                                        &format!("{name}: log: {e}; its output is lost"),
                                    );
                                    continue;
                                }
                                pipes.insert(next, (name, File::from(rd), w));
                                next += 1;
                            }
                            continue;
                        }
                        let Some((_, rd, w)) = pipes.get_mut(&key) else {
                            continue;
                        };
                        // One read a wake-up (the set is level-triggered:
                        // what is left comes next), so that one busy
                        // process does not hold up the others' logs.
                        let done = match rd.read(&mut buf) {
                            Ok(0) => true,
                            Ok(n) => {
                                w.write(&buf[..n]);
                                false
                            }
                            Err(e) => !matches!(
                                e.kind(),
                                std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                            ),
                        };
                        if done {
                            if let Some((_, rd, _)) = pipes.remove(&key) {
                                set.remove(&rd);
                            }
                        }
                    }
                }
            })?;
        made.recv()
            .map_err(|_| std::io::Error::other("the log thread ended"))??;
        Ok(Copier {
            tx: std::sync::Mutex::new(tx),
            wake,
        })
    }
}

/// Sets `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an open descriptor with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// As [`spawn`], but the output is left to the caller: the read end of
/// the process's output pipe and its log, opened (so that a log that
/// cannot be written is the start's failure). The Spawner role hands both
/// to `mtipc-ha up`, which outlives it, so that a process never writes
/// into a pipe nobody reads.
pub fn start(
    p: &Process,
    log: &Path,
    socket: Option<&Path>,
) -> Result<(Spawned, OwnedFd, LogWriter), String> {
    let ids = match &p.user {
        Some(u) => resolve_user(u)?,
        None => None,
    };
    let writer = LogWriter::open(log, p.log_max_bytes, p.log_keep)?;
    let (rd, wr) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let cannot = |e: std::io::Error| {
        format!(
            "cannot execute {:?} (cwd {}): {e}",
            p.command[0],
            p.cwd.display()
        )
    };
    let spawned = match ids {
        None => spawn_direct(p, socket, wr).map_err(cannot)?,
        Some(ids) => fork_exec(p, socket, ids, wr).map_err(cannot)?,
    };
    Ok((spawned, rd, writer))
}

/// Whether the process must use the hooks (`ready = "notify"`, a
/// watchdog): such a process is given a connection to the Monitor.
fn needs_hooks(p: &Process) -> bool {
    p.ready == mtipc::ha::config::Ready::Notify || p.watchdog_ms > 0
}

/// The descriptor the connection to the Monitor has in the process
/// (`$MTIPC_HA_FD`).
const HOOKS_FD: libc::c_int = 3;

/// Starts `p` as the supervisor's own uid with `posix_spawn(3)`, whose
/// child shares the supervisor's memory until its exec (`CLONE_VFORK`):
/// no page tables copied, none of the supervisor's pages faulted in for
/// the child, which on the machines measured made a restart 0.3 ms
/// shorter than `fork` (BENCHMARKS.md). In the child, in order: its own
/// session (`setsid`), an empty signal mask and `SIGPIPE` to its default
/// (std ignores it in the supervisor; as std's `Command`), stdin from
/// `/dev/null`, stdout and stderr to `out`, the connection to the
/// Monitor as descriptor 3 for a process that needs the hooks, `cwd`,
/// every other descriptor closed, then the exec of `command` (a bare name
/// looked up in the `PATH` of the process's environment, and a file
/// without `#!` run by `/bin/sh`, as `execvp`). The error is the exec's
/// (or `chdir`'s), which glibc reports to the caller. Needs glibc 2.34
/// (`posix_spawn_file_actions_addclosefrom_np`; `addchdir_np` is 2.29).
fn spawn_direct(p: &Process, socket: Option<&Path>, out: OwnedFd) -> std::io::Result<Spawned> {
    use std::ffi::{CString, OsStr, OsString};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let reserved =
        |k: &OsStr| k == mtipc::ha::SOCKET_ENV || k == mtipc::ha::FD_ENV || k == PROCESS_ENV;
    let mut env: Vec<(OsString, OsString)> =
        std::env::vars_os().filter(|(k, _)| !reserved(k)).collect();
    for (k, v) in &p.env {
        env.retain(|(have, _)| have.as_os_str() != OsStr::new(k));
        env.push((k.into(), v.into()));
    }
    env.push((PROCESS_ENV.into(), p.name.clone().into()));
    // The connection for the hooks: only for a process that must use them,
    // as s6 gives a `notification-fd` only to a service that asks for one
    // (the others get no descriptor they do not know of, and connect by
    // the path if they use the hooks all the same). None if the Monitor
    // cannot be connected to now: the process then connects by the path.
    let pre = match socket {
        Some(s) if needs_hooks(p) => Preconnect::connect(s).ok(),
        _ => None,
    };
    if let Some(s) = socket {
        env.push((mtipc::ha::SOCKET_ENV.into(), s.into()));
    }
    if pre.is_some() {
        // `3:<our pid>`: the connection is ours until `introduce` gives it
        // to the process; a process that gets to its first hook before
        // says its own hello (see `mtipc::internals::ha::Preconnect`).
        let value = format!("{HOOKS_FD}:{}", std::process::id());
        env.push((mtipc::ha::FD_ENV.into(), value.into()));
    }
    let program = resolve_program(OsStr::new(&p.command[0]), &env, &p.cwd)?;
    let cstr = |b: Vec<u8>| {
        CString::new(b).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let program = cstr(program.into_os_string().into_vec())?;
    let argv: Vec<CString> = p
        .command
        .iter()
        .map(|a| cstr(a.clone().into_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(kv)
        })
        .collect::<Result<_, _>>()?;
    let cwd = cstr(p.cwd.as_os_str().as_bytes().to_vec())?;
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp_p.push(std::ptr::null_mut());
    // Descriptors below 10 are moved up first: a `dup2` onto 0-3 must not
    // clobber another source (a supervisor started with its stdio closed
    // has its pipes there).
    let out = above(out)?;
    let hooks = match &pre {
        Some(c) => Some(above(c.fd().try_clone_to_owned()?)?),
        None => None,
    };
    let mut pid: libc::pid_t = 0;
    // SAFETY: the file actions and attributes are initialised before use
    // and destroyed after; every pointer passed (paths, argv, envp, both
    // NULL-terminated) lives until posix_spawn returns; the descriptors
    // are open.
    let r = unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut at: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        libc::posix_spawnattr_init(&mut at);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let mut pipe_only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe_only);
        libc::sigaddset(&mut pipe_only, libc::SIGPIPE);
        let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        let mut r = libc::posix_spawnattr_setflags(&mut at, flags as libc::c_short);
        r = r.max(libc::posix_spawnattr_setsigmask(&mut at, &none));
        r = r.max(libc::posix_spawnattr_setsigdefault(&mut at, &pipe_only));
        r = r.max(libc::posix_spawn_file_actions_addopen(
            &mut fa,
            0,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY,
            0,
        ));
        r = r.max(libc::posix_spawn_file_actions_adddup2(
            &mut fa,
            out.as_raw_fd(),
            1,
        ));
        r = r.max(libc::posix_spawn_file_actions_adddup2(
            &mut fa,
            out.as_raw_fd(),
            2,
        ));
        let mut first_closed = 3;
        if let Some(h) = &hooks {
            r = r.max(libc::posix_spawn_file_actions_adddup2(
                &mut fa,
                h.as_raw_fd(),
                HOOKS_FD,
            ));
            first_closed = HOOKS_FD + 1;
        }
        r = r.max(libc::posix_spawn_file_actions_addchdir_np(
            &mut fa,
            cwd.as_ptr(),
        ));
        r = r.max(libc::posix_spawn_file_actions_addclosefrom_np(
            &mut fa,
            first_closed,
        ));
        if r == 0 {
            r = libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &fa,
                &at,
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            );
        }
        if r == libc::ENOEXEC {
            // A script without `#!`: run by /bin/sh, as execvp does.
            let mut sh_argv: Vec<*mut libc::c_char> = vec![c"/bin/sh".as_ptr().cast_mut()];
            sh_argv.push(program.as_ptr().cast_mut());
            sh_argv.extend(argv_p.iter().skip(1).copied());
            r = libc::posix_spawn(
                &mut pid,
                c"/bin/sh".as_ptr(),
                &fa,
                &at,
                sh_argv.as_ptr(),
                envp_p.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut at);
        r
    };
    drop(out);
    drop(hooks);
    if r != 0 {
        return Err(std::io::Error::from_raw_os_error(r));
    }
    let pid = pid as u32;
    let me = mtipc::internals::sys::ProcId::of(pid).ok().flatten();
    if let (Some(c), Some(id)) = (&pre, me) {
        // Said for it, then the connection marked as its own: its first
        // hook takes it (if this failed, it connects by the path).
        let _ = c.introduce(id);
    }
    Ok(Spawned {
        pid,
        start: me.map_or(0, |id| id.start),
    })
}

/// `fd` itself if it is 10 or above, else a close-on-exec copy of it there.
fn above(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    if fd.as_raw_fd() >= 10 {
        return Ok(fd);
    }
    // SAFETY: fcntl on an open descriptor; the copy is new and owned here.
    let c = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if c < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(c) })
}

/// The program to execute for `prog`, as `execvp` finds it: itself if it
/// has a `/` (relative to `cwd`, where the exec happens), else the first
/// executable regular file named `prog` in the directories of `PATH` from
/// `env` (the process's environment; `/usr/local/bin:/usr/bin:/bin`
/// without one; relative directories under `cwd`). `PermissionDenied` if
/// only non-executable files were found, `NotFound` if none.
fn resolve_program(
    prog: &std::ffi::OsStr,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    cwd: &Path,
) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if prog.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = false;
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(prog);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && executable(&candidate) => return Ok(candidate),
            Ok(_) => denied = true,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => denied = true,
            Err(_) => {}
        }
    }
    Err(std::io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// Whether this process (its effective ids) may execute `path`.
fn executable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; no memory effects.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) == 0 }
}

/// Starts `p` as another user (`ids`, the supervisor being root): fork,
/// then in the child `setsid`, the descriptors it inherited marked
/// close-on-exec, std's switch of user, the exec (std's `Command`, which
/// reports the exec's error through a close-on-exec pipe). Such a
/// process gets no connection to the Monitor: made before the switch, it
/// would let the process reach a socket its user cannot.
fn fork_exec(
    p: &Process,
    socket: Option<&Path>,
    (uid, gid): (u32, u32),
    out: OwnedFd,
) -> std::io::Result<Spawned> {
    let out2 = out.try_clone()?;
    let mut cmd = Command::new(&p.command[0]);
    cmd.args(&p.command[1..])
        .envs(&p.env)
        .env(PROCESS_ENV, &p.name)
        .env_remove(mtipc::ha::FD_ENV)
        .current_dir(&p.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(out2));
    match socket {
        Some(s) => cmd.env(mtipc::ha::SOCKET_ENV, s),
        None => cmd.env_remove(mtipc::ha::SOCKET_ENV),
    };
    // std drops the supplementary groups (setgroups) when it switches.
    cmd.uid(uid).gid(gid);
    // SAFETY: the closure makes system calls only (setsid, close_range or
    // fcntl, getrlimit): async-signal-safe, no allocation, no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            cloexec_from_3();
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The command's copies of the write end are gone with `cmd`; the child
    // holds the only ones, so the reader sees EOF when its group is gone.
    drop(cmd);
    let pid = child.id();
    // std's Child is not waited on: the supervisor reaps with waitpid(-1).
    drop(child);
    let start = mtipc::internals::sys::ProcId::of(pid)
        .ok()
        .flatten()
        .map_or(0, |id| id.start);
    Ok(Spawned { pid, start })
}

/// Marks every descriptor from 3 up close-on-exec, in the child between
/// fork and exec: what the supervisor inherited from whoever started it
/// without close-on-exec (a shell's, a service manager's) does not reach
/// the process. Marked, not closed: std's pipe that reports the exec error
/// must stay open until the exec. `close_range(2)` (Linux 5.11), else
/// `fcntl` on each descriptor below the limit (at most 65536).
fn cloexec_from_3() {
    // SAFETY: system calls on integers only.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(65_536) as libc::c_int
        } else {
            1024
        };
        for fd in 3..max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Sends `sig` to the process group `pgid`. `false` if there is no such
/// group any more.
pub fn signal_group(pgid: u32, sig: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    // SAFETY: kill has no memory effects; a negative pid names a group.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    /// Whether it counts as a failure (`on-failure`): a non-zero code or a
    /// signal.
    pub fn failed(self) -> bool {
        self != Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(s) => write!(f, "signal {}", signal_name(*s)),
        }
    }
}

/// `SIGTERM` for 15, and so on; `SIG<n>` for the others.
pub fn signal_name(s: i32) -> String {
    let name = match s {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGWINCH => "SIGWINCH",
        _ => return format!("SIG{s}"),
    };
    name.to_string()
}

/// Looks, without waiting and without reaping (`waitid` with `WNOWAIT`),
/// for a child that has ended: `None` when this process has no child at
/// all, `Some(0)` when it has children and none has ended, else the pid of
/// one that has (still a zombie).
pub fn peek_child() -> Option<u32> {
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out-pointer.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == -1 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        // SAFETY: waitid filled info (si_pid 0: no child has ended).
        return Some(unsafe { info.si_pid() }.max(0) as u32);
    }
}

/// Reaps one child that has ended, without waiting: its pid and how it
/// ended; `None` when none has (or there are no children). `before` is
/// called with the pid while the child is still a zombie (`waitid` with
/// `WNOWAIT`), so that its pid, and its process group's id, cannot have
/// been reused yet: the moment to SIGKILL what is left of its group.
pub fn reap(mut before: impl FnMut(u32)) -> Option<(u32, Exit)> {
    loop {
        let pid = match peek_child() {
            Some(pid) if pid > 0 => pid as libc::pid_t,
            _ => return None,
        };
        before(pid as u32);
        let mut status: libc::c_int = 0;
        // SAFETY: status is a valid out-pointer; pid is a zombie child.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got != pid {
            continue;
        }
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        return Some((pid as u32, exit));
    }
}

/// Makes this process the reaper of the orphans of its descendants
/// (`PR_SET_CHILD_SUBREAPER`), so that what a supervised process leaves
/// behind is reaped here, not left as a zombie elsewhere.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A process's log: appended, rotated by size (`NAME.log` renamed to
/// `NAME.log.1`, `.1` to `.2`, ..., the oldest beyond `keep` removed; with
/// `keep` 0 the file is simply started afresh). Write errors are dropped:
/// a full disk must not block the process (its pipe keeps being drained).
pub struct LogWriter {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
    keep: u32,
}

impl LogWriter {
    /// Opens (creates, mode 0600) `path` for appending.
    pub fn open(path: &Path, max: u64, keep: u32) -> Result<LogWriter, String> {
        let file = open_log(path).map_err(|e| format!("log {}: {e}", path.display()))?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max,
            keep,
        })
    }

    /// Appends `bytes`, rotating whenever the file would pass its limit:
    /// what does not fit is cut after its last newline that fits (in the
    /// middle of a line only when a line is longer than the room left in
    /// a fresh file), so no file grows beyond the limit.
    pub fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = usize::try_from(self.max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if bytes.len() <= room {
                self.append(bytes);
                return;
            }
            let cut = match bytes[..room].iter().rposition(|&b| b == b'\n') {
                Some(k) => k + 1,
                None if self.size == 0 => room,
                None => 0,
            };
            self.append(&bytes[..cut]);
            bytes = &bytes[cut..];
            self.rotate();
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if let Some(f) = &mut self.file {
            if f.write_all(bytes).is_ok() {
                self.size += bytes.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let numbered = |k: u32| {
            let mut s = self.path.clone().into_os_string();
            s.push(format!(".{k}"));
            PathBuf::from(s)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for k in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(k), numbered(k + 1));
            }
            let _ = std::fs::rename(&self.path, numbered(1));
        }
        self.file = open_log(&self.path).ok();
        self.size = 0;
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}
