//! The HA supervisor's engine, shared by the programs of `mtipc-ha`
//! (docs/ha.md "The life cycle").
//!
//! - [`spawn`]: the Spawner's mechanism: starting one configured process
//!   (argv, `env`, `cwd`, `user`, its own session and process group, its
//!   output into a rotated log), signalling its group, reaping.
//! - [`supervisor`]: the state table and the life cycle: ordered start and
//!   stop, tenant groups, the restart policy, monitoring through the hooks'
//!   endpoint, the status file.
//!
//! - [`control`]: the control socket (`<domain>/ha/control.sock`) through
//!   which `mtipc ha` asks the supervisor for its table and for starts,
//!   stops and restarts.
//!
//! Today one process (`mtipc-ha run`) drives both. When the five roles are
//! split, the Server owns the [`supervisor::Supervisor`]'s table and its
//! start/stop/group calls, the Spawner exposes [`spawn`], and the Monitor
//! owns the endpoint and the monitoring half of `step`.

pub mod control;
pub mod monitor;
pub mod roles;
pub mod signals;
pub mod spawn;
pub mod supervisor;

/// Replaces `path` with `bytes` atomically for readers (a temporary file,
/// mode 0600, renamed over it), without `fsync`: the HA state files
/// (`status.json`, the Spawner's `spawner.json`) describe processes,
/// which a power loss takes with them, so only atomicity matters, and a
/// restart after `kill -9` is not slowed by disk flushes.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// A descriptor that becomes readable when the process `pid` started at
/// `start` ends (`pidfd_open`), whoever its parent is; `None` if that
/// process is not running (or no descriptor is left: the caller falls
/// back to `/proc`).
pub fn pidfd(pid: u32, start: u64) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: pidfd_open returned a new descriptor nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) };
    // Checked after the open: the pid could have been reused before it.
    let same = mtipc::internals::sys::ProcId::of(pid)
        .ok()
        .flatten()
        .is_some_and(|p| p.start == start);
    same.then_some(fd)
}

/// Waits at most `timeout` until one of `fds` is readable (a pidfd: its
/// process ended); which are.
pub fn poll_fds(fds: &[std::os::fd::BorrowedFd<'_>], timeout: std::time::Duration) -> Vec<bool> {
    use std::os::fd::AsRawFd;
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Rounded up: a wait of 0.4 ms is 1 ms, not a poll that returns at
    // once (which would spin until the deadline).
    let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: p is a valid array of p.len() pollfd.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    p.iter().map(|x| x.revents != 0).collect()
}

/// Which of `fds` are readable now ([`poll_fds`] without waiting).
pub fn readable_now(fds: &[std::os::fd::BorrowedFd<'_>]) -> Vec<bool> {
    poll_fds(fds, std::time::Duration::ZERO)
}

/// Listens on a UNIX stream socket at `path`, mode 0600, made at a
/// temporary name and renamed into place once it listens: a client that
/// finds the file never meets a socket that is bound but not listening yet
/// (`ECONNREFUSED`). Whatever is at `path` is replaced: the caller owns it
/// (holds the lock that makes it the only server of that path).
pub fn listen_at(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let l = std::os::unix::net::UnixListener::bind(&tmp)?;
    let r = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}

/// What `mtipc-ha run` and `mtipc-ha up` do first: read the configuration
/// (refused: every problem on stderr, exit 1, nothing set up), make the
/// domain and its `ha` and `ha/log` directories (0700), and take
/// `<domain>/ha/run.lock` (one supervisor per domain; its pid as the
/// note). `prog` names the program in the messages.
pub fn open_node(
    path: &std::path::Path,
    prog: &str,
) -> Result<
    (
        mtipc::ha::config::Config,
        std::path::PathBuf,
        mtipc::internals::sys::LockFile,
    ),
    std::process::ExitCode,
> {
    use mtipc::internals::sys::{read_note, LockFile};
    let fatal = |msg: &str| {
        eprintln!("{prog}: {msg}");
        std::process::ExitCode::FAILURE
    };
    let c = mtipc::ha::config::Config::load(path).map_err(|e| {
        eprintln!("{e}");
        std::process::ExitCode::FAILURE
    })?;
    // A process that would wait forever for hooks it cannot reach: the
    // node is not started (never half a node).
    let unreachable = spawn::hooks_unreachable(&c);
    if !unreachable.is_empty() {
        for l in &unreachable {
            eprintln!("{l}");
        }
        return Err(std::process::ExitCode::FAILURE);
    }
    let domain = c
        .node
        .domain
        .clone()
        .unwrap_or_else(mtipc::internals::domain::default_path);
    for d in [domain.clone(), domain.join("ha"), domain.join("ha/log")] {
        mtipc::internals::sys::make_dir(&d).map_err(|e| fatal(&e.to_string()))?;
    }
    let lock_path = domain.join("ha/run.lock");
    match LockFile::try_acquire(&lock_path) {
        Ok(Some(mut l)) => {
            let _ = l.write_note(&std::process::id().to_string());
            Ok((c, domain, l))
        }
        Ok(None) => {
            let holder = read_note(&lock_path).unwrap_or_else(|| "?".into());
            Err(fatal(&format!(
                "another supervisor runs this domain (pid {holder} holds {})",
                lock_path.display()
            )))
        }
        Err(e) => Err(fatal(&e.to_string())),
    }
}
