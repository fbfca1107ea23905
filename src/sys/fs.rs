//! Files of the domain by path: opened without following a symbolic link
//! and checked (a regular file of our uid, owner-only), created complete or
//! not at all (a temporary name, then `link(2)`: [`publish_new`]), replaced
//! atomically and durably (a temporary name, `fsync`, `rename(2)`, `fsync`
//! of the directory: [`replace`]), locked with `flock` ([`flock`],
//! [`LockFile`]). [`super::Dir`] does the same relative to an opened
//! directory, for paths inside directories others could swap.

use super::proc::euid;
use super::retry;
use crate::error::{err, Error, Result};
use rustix::fs::FlockOperation;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Checks that a file or directory of the domain (at `path`, with this
/// owner `uid` and `mode`) belongs to this process's uid and has no
/// group/other permission bits: `Denied`, naming what is wrong, otherwise.
pub fn check_owner(path: &Path, uid: u32, mode: u32) -> Result<()> {
    let me = euid();
    if uid != me {
        return Err(err!(
            Denied,
            "{}: owned by uid {uid}, not by this process's uid {me}",
            path.display()
        ));
    }
    if mode & 0o077 != 0 {
        return Err(err!(
            Denied,
            "{}: mode {:04o} lets other users in; mtipc files and directories are owner-only",
            path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// A name for a temporary file next to `path`, unique to this process and
/// call. It starts with `.` (never a valid name of [`super::name`]) and
/// carries the pid, so a leftover of a dead process can be told.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(temp_name(&name.unwrap_or_default()))
}

/// A temporary name for `name` in the same directory (see [`temp_sibling`]).
pub fn temp_name(name: &str) -> String {
    // A process-local counter (clippy.toml keeps atomics for shared memory
    // in crate::sync; a mutex is plenty here).
    static SEQ: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
    let n = {
        let mut g = SEQ.lock().unwrap_or_else(|e| e.into_inner());
        *g = g.wrapping_add(1);
        *g
    };
    format!(".{name}.tmp.{}.{n}", std::process::id())
}

/// Creates a new owner-only file at `path` (`O_EXCL`, never through a link).
fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))
}

/// Creates `path` with the content `fill` writes, atomically: the file
/// appears complete or not at all. Returns `Ok(false)` if another process
/// published it first (its content is then left as it is).
pub fn publish_new(path: &Path, len: u64, fill: impl FnOnce(&File) -> Result<()>) -> Result<bool> {
    let tmp = temp_sibling(path);
    let file = create_private(&tmp)?;
    let result = (|| {
        file.set_len(len).map_err(|e| Error::io(tmp.display(), e))?;
        fill(&file)?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(path.display(), e)),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Writes `bytes` as a new file at `path` (see [`publish_new`]).
pub fn publish_bytes(path: &Path, bytes: &[u8]) -> Result<bool> {
    publish_new(path, bytes.len() as u64, |mut f| {
        f.write_all(bytes).map_err(|e| Error::io(path.display(), e))
    })
}

/// Puts a file with the content `fill` writes at `path`, replacing what is
/// there, atomically and durably: `fill` writes a new owner-only file under
/// a temporary name in the same directory; it is flushed to disk
/// (`fsync`), renamed over `path` only if `commit` (called last, right
/// before the rename) agrees, and the directory is flushed too, so that
/// after a crash `path` holds either the old content or the whole new one.
/// A reader never sees a partly written file under `path`. Returns whether
/// the file was renamed into place (`commit` said no: `Ok(false)`, nothing
/// changed). The temporary file is removed on every way out.
// The foundation's fsync + rename (DESIGN.md, "Layout"): the HA
// supervisor's status file (cli/src/ha) uses it through internals.
pub fn replace(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<()>,
    commit: impl FnOnce() -> Result<bool>,
) -> Result<bool> {
    let tmp = temp_sibling(path);
    let mut file = create_private(&tmp)?;
    let result = (|| {
        fill(&mut file)?;
        file.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
        if !commit()? {
            return Ok(false);
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))?;
        sync_parent(path)?;
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `fsync` of the directory that holds `path`, so that a rename or link in
/// it survives a crash.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display(), e))
}

/// Opens an existing file of the domain for reading (and writing if
/// `write`), refusing a symbolic link, anything but a regular file, a file
/// of another uid, and a file others may read or write. A FIFO planted
/// there does not block the open (`O_NONBLOCK`).
pub fn open_checked(path: &Path, write: bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // A directory cannot be opened for writing: say what it is, as
            // for any other file that is not a regular one.
            Some(libc::EISDIR) => err!(Corrupt, "{}: not a regular file", path.display()),
            _ => Error::io(path.display(), e),
        })?;
    let md = file.metadata().map_err(|e| Error::io(path.display(), e))?;
    if !md.file_type().is_file() {
        return Err(err!(Corrupt, "{}: not a regular file", path.display()));
    }
    check_owner(path, md.uid(), md.mode())?;
    Ok(file)
}

/// Creates the directory `path` with mode 0700 if it is missing. `Ok(true)`
/// if this call created it.
pub fn make_dir(path: &Path) -> Result<bool> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
    }
}

/// Checks that `dir` is a real directory (not a symbolic link) of this uid
/// that others cannot enter: `Denied`, `Corrupt` or `Io` naming what is
/// wrong otherwise.
pub fn check_dir_private(dir: &Path) -> Result<()> {
    let md = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir.display(), e))?;
    if md.file_type().is_symlink() {
        return Err(Error::io(
            dir.display(),
            std::io::Error::from_raw_os_error(libc::ELOOP),
        ));
    }
    if !md.is_dir() {
        return Err(err!(Corrupt, "{}: not a directory", dir.display()));
    }
    check_owner(dir, md.uid(), md.mode())
}

/// How [`flock`] locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// `LOCK_SH`: many holders.
    Shared,
    /// `LOCK_EX`: one holder.
    Exclusive,
    /// `LOCK_UN`: releases what this description holds.
    Unlock,
}

/// `flock(fd, how)`, blocking while another open file description holds a
/// conflicting lock; `EINTR` retried. The error names `path`.
pub fn flock(fd: impl AsFd, how: Lock, path: &Path) -> Result<()> {
    let op = match how {
        Lock::Shared => FlockOperation::LockShared,
        Lock::Exclusive => FlockOperation::LockExclusive,
        Lock::Unlock => FlockOperation::Unlock,
    };
    retry(|| rustix::fs::flock(&fd, op)).map_err(|e| {
        let verb = if how == Lock::Unlock {
            "unlocking"
        } else {
            "locking"
        };
        Error::io(format!("{verb} {}", path.display()), e)
    })
}

/// `flock(fd, how | LOCK_NB)`: `Ok(false)` if another open file
/// description holds a conflicting lock. `how` is [`Lock::Shared`] or
/// [`Lock::Exclusive`].
pub fn try_flock(fd: impl AsFd, how: Lock, path: &Path) -> Result<bool> {
    let op = match how {
        Lock::Shared => FlockOperation::NonBlockingLockShared,
        Lock::Exclusive => FlockOperation::NonBlockingLockExclusive,
        Lock::Unlock => return flock(fd, how, path).map(|()| true),
    };
    match retry(|| rustix::fs::flock(&fd, op)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// Takes a write lock on byte `byte` of `file` without waiting, as an
/// open-file-description lock (`F_OFD_SETLK`): it belongs to this open file
/// description, whichever thread or process uses it, and the kernel drops
/// it when the description is closed, also when its process dies. `Ok(false)`
/// if another description holds it. (Byte-range OFD locks are not in rustix:
/// this is the one `fcntl` of the foundation through libc.)
pub fn lock_byte(file: &File, byte: u32) -> Result<bool> {
    let fl = byte_lock(byte);
    loop {
        // SAFETY: a valid descriptor and a pointer to a live flock struct,
        // which F_OFD_SETLK only reads.
        let rc = unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(file),
                libc::F_OFD_SETLK,
                &fl,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            _ => return Err(Error::io("byte lock (F_OFD_SETLK)", e)),
        }
    }
}

/// Whether another open file description holds a lock on byte `byte` of
/// `file` (`F_OFD_GETLK`). An error of the call counts as held (never take
/// over a lock because a system call failed).
pub fn byte_locked_by_other(file: &File, byte: u32) -> bool {
    let mut fl = byte_lock(byte);
    // SAFETY: a valid descriptor and a pointer to a live flock struct,
    // which F_OFD_GETLK overwrites.
    let rc = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(file),
            libc::F_OFD_GETLK,
            &mut fl,
        )
    };
    rc != 0 || fl.l_type != libc::F_UNLCK as libc::c_short
}

/// The `struct flock` of a write lock on one byte.
fn byte_lock(byte: u32) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::from(byte);
    fl.l_len = 1;
    fl.l_pid = 0; // required by the OFD commands
    fl
}

/// An exclusive `flock` on an owner-only regular file (the domain's
/// `attach.lock`, `daemon.lock`): the kernel releases it when its holder
/// dies, whatever the way. Released on drop.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

/// Opens (creating owner-only if missing) the lock file at `path`. Never
/// follows a symbolic link; the file must be the domain owner's.
fn open_lock_file(path: &Path) -> Result<File> {
    match open_checked(path, true) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == crate::ErrorKind::NotFound => {
            publish_bytes(path, b"")?;
            open_checked(path, true)
        }
        Err(e) => Err(e),
    }
}

impl LockFile {
    /// Takes the lock, waiting at most until `deadline` (`None`: no limit).
    /// `what` names the lock in the timeout message.
    pub fn acquire(path: &Path, deadline: Option<Instant>, what: &str) -> Result<LockFile> {
        let file = open_lock_file(path)?;
        let mut pause = Duration::from_micros(50);
        loop {
            if try_flock(&file, Lock::Exclusive, path)? {
                return Ok(LockFile {
                    file,
                    path: path.to_path_buf(),
                });
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(err!(Timeout, "{what} ({}) stayed held", path.display()));
                }
                pause = pause.min(left);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Takes the lock if it is free; `Ok(None)` if another process holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<LockFile>> {
        let file = open_lock_file(path)?;
        Ok(try_flock(&file, Lock::Exclusive, path)?.then(|| LockFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// Replaces the file's content (the daemon writes its pid there).
    pub fn write_note(&mut self, text: &str) -> Result<()> {
        let io = |e| Error::io(self.path.display(), e);
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        self.file.write_all(text.as_bytes()).map_err(io)
    }
}

/// The note in a lock file (at most 64 bytes, for messages only).
pub fn read_note(path: &Path) -> Option<String> {
    let f = open_checked(path, false).ok()?;
    let mut s = String::new();
    f.take(64).read_to_string(&mut s).ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mtipc-fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        make_dir(&p).unwrap();
        p
    }

    #[test]
    fn replace_is_atomic_and_leaves_no_temporary() {
        let d = scratch("replace");
        let p = d.join("f");
        std::fs::write(&p, b"old").unwrap();
        assert!(replace(
            &p,
            |f| f.write_all(b"new").map_err(|e| Error::io("f", e)),
            || Ok(true)
        )
        .unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Refused at commit: nothing changes.
        assert!(!replace(
            &p,
            |f| f.write_all(b"newer").map_err(|e| Error::io("f", e)),
            || Ok(false)
        )
        .unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        // A failing fill: nothing changes either, and the error comes back.
        let e = replace(&p, |_| Err(err!(Io, "disk full")), || Ok(true)).unwrap_err();
        assert_eq!(e.message(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"], "no temporary file left");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn publish_new_never_replaces() {
        let d = scratch("publish");
        let p = d.join("f");
        assert!(publish_bytes(&p, b"one").unwrap());
        assert!(!publish_bytes(&p, b"two").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn open_checked_refusals() {
        let d = scratch("open");
        std::os::unix::fs::symlink(d.join("x"), d.join("link")).unwrap();
        assert_eq!(
            open_checked(&d.join("link"), false).unwrap_err().kind(),
            ErrorKind::Denied
        );
        std::fs::write(d.join("open"), b"x").unwrap();
        std::fs::set_permissions(d.join("open"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = open_checked(&d.join("open"), false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied);
        assert!(e.message().contains("0640"), "{e}");
        assert_eq!(
            open_checked(&d, false).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            open_checked(&d.join("none"), false).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn locks_exclude_other_descriptions() {
        let d = scratch("lock");
        let p = d.join("lock");
        let a = LockFile::try_acquire(&p).unwrap().expect("free");
        assert!(LockFile::try_acquire(&p).unwrap().is_none());
        let e = LockFile::acquire(&p, Some(Instant::now()), "the test lock").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        drop(a);
        assert!(LockFile::try_acquire(&p).unwrap().is_some());
        let f1 = open_checked(&p, false).unwrap();
        let f2 = open_checked(&p, false).unwrap();
        assert!(try_flock(&f1, Lock::Shared, &p).unwrap());
        assert!(try_flock(&f2, Lock::Shared, &p).unwrap());
        assert!(!try_flock(&f2, Lock::Exclusive, &p).unwrap());
        flock(&f1, Lock::Unlock, &p).unwrap();
        assert!(try_flock(&f2, Lock::Exclusive, &p).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
