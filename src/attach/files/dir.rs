//! A directory opened once (never through a symbolic link) and checked, and
//! the file operations done relative to it (`openat`, `linkat`, ...), so
//! that nothing swapped in later on the path can redirect them.

use super::MAX_FILE;
use crate::error::{err, Error, Result};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which file an entry is (device and inode numbers): what tells a kept
/// descriptor's file from one put in its place since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileId {
    dev: libc::dev_t,
    ino: libc::ino_t,
}

/// A file's identity plus its size and change time: what tells that a kept
/// copy of a small file is still what the file holds. The file is only
/// re-read when one of these changed; a file replaced by another with the
/// same inode number (recycled), the same size and the same change time
/// (both within one tick of the kernel's coarse clock) would go unseen,
/// which our writers never do (they publish new directories and files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    id: FileId,
    size: i64,
    ctime: (i64, i64),
}

impl Stamp {
    fn of(st: &libc::stat) -> Stamp {
        Stamp {
            id: FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            },
            size: st.st_size,
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

impl FileId {
    /// The inode number.
    pub(super) fn ino(&self) -> libc::ino_t {
        self.ino
    }

    /// The identity of the file with these `st_dev` and `st_ino`.
    pub(super) fn new(dev: u64, ino: u64) -> FileId {
        FileId {
            dev: dev as libc::dev_t,
            ino: ino as libc::ino_t,
        }
    }
}

/// An open, checked directory: a real directory (not a link), owned by this
/// process's uid, with no group/other permission bits.
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn cstr(name: &[u8], path: &Path) -> Result<CString> {
    CString::new(name).map_err(|_| err!(Invalid, "{}: name contains a NUL byte", path.display()))
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// What an `open` of a directory failing means, as an error naming `path`.
/// With `O_DIRECTORY | O_NOFOLLOW`, Linux reports a symbolic link as
/// `ENOTDIR`: look (without following) to say which it is.
fn dir_open_error(path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOTDIR) => {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if link {
                Error::io(
                    path.display(),
                    std::io::Error::from_raw_os_error(libc::ELOOP),
                )
            } else {
                err!(Corrupt, "{}: not a directory", path.display())
            }
        }
        _ => Error::io(path.display(), e),
    }
}

impl Dir {
    /// Opens the directory at `path` (its last component must not be a
    /// symbolic link) and checks it.
    pub(super) fn open(path: &Path) -> Result<Dir> {
        let c = cstr(path.as_os_str().as_bytes(), path)?;
        // SAFETY: `c` is a valid NUL-terminated string for the call.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(dir_open_error(path, last_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Dir::checked(unsafe { OwnedFd::from_raw_fd(fd) }, path.to_path_buf())
    }

    /// Opens the subdirectory `name` (not a symbolic link) and checks it.
    pub(super) fn open_at(&self, name: &str) -> Result<Dir> {
        let path = self.path.join(name);
        let c = cstr(name.as_bytes(), &path)?;
        // SAFETY: `self.fd` is an open directory; `c` is a valid string.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(dir_open_error(&path, last_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Dir::checked(unsafe { OwnedFd::from_raw_fd(fd) }, path)
    }

    fn checked(fd: OwnedFd, path: PathBuf) -> Result<Dir> {
        let md = File::from(fd.try_clone().map_err(|e| Error::io(path.display(), e))?)
            .metadata()
            .map_err(|e| Error::io(path.display(), e))?;
        if !md.is_dir() {
            return Err(err!(Corrupt, "{}: not a directory", path.display()));
        }
        crate::shm::check_owner(&path, md.uid(), md.mode())?;
        Ok(Dir { fd, path })
    }

    /// The identity of the open directory itself.
    pub(super) fn id(&self) -> Result<FileId> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `self.fd` is an open descriptor; `st` is writable.
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Error::io(self.path.display(), last_error()));
        }
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The directory's path (for messages, and for callers that need it).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` inside the directory.
    pub(super) fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's last modification time (an entry added or removed).
    pub(super) fn mtime(&self) -> Result<std::time::SystemTime> {
        File::from(
            self.fd
                .try_clone()
                .map_err(|e| Error::io(self.path.display(), e))?,
        )
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(self.path.display(), e))
    }

    /// Opens the file `name` for reading (and writing if `write`): it must
    /// not be a symbolic link, must be a regular file of this uid with no
    /// group/other permission bits.
    pub(super) fn open_file(&self, name: &str, write: bool) -> Result<File> {
        let path = self.child(name);
        let c = cstr(name.as_bytes(), &path)?;
        let access = if write { libc::O_RDWR } else { libc::O_RDONLY };
        // SAFETY: `self.fd` is an open directory; `c` is a valid string.
        // O_NONBLOCK: a FIFO planted here must not block the open.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                access | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
            )
        };
        if fd < 0 {
            let e = last_error();
            return Err(match e.raw_os_error() {
                Some(libc::EISDIR) => err!(Corrupt, "{}: not a regular file", path.display()),
                _ => Error::io(path.display(), e),
            });
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let md = file.metadata().map_err(|e| Error::io(path.display(), e))?;
        if !md.is_file() {
            return Err(err!(Corrupt, "{}: not a regular file", path.display()));
        }
        crate::shm::check_owner(&path, md.uid(), md.mode())?;
        Ok(file)
    }

    /// `fstatat` of the entry `name`, without following a symbolic link;
    /// `None` if there is no such entry.
    fn lstat_at(&self, name: &str) -> Result<Option<libc::stat>> {
        let path = self.child(name);
        let c = cstr(name.as_bytes(), &path)?;
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `self.fd` is an open directory; `c` is a valid string;
        // `st` is a valid, writable stat buffer.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc == 0 {
            return Ok(Some(st));
        }
        let e = last_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(Error::io(path.display(), e)),
        }
    }

    /// The [`Stamp`] of the regular file `name` (not following a link);
    /// `None` if it is missing or not a regular file.
    pub(super) fn stamp(&self, name: &str) -> Result<Option<Stamp>> {
        Ok(self
            .lstat_at(name)?
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .map(|st| Stamp::of(&st)))
    }

    /// [`Dir::read_small`], with the [`Stamp`] of the file read (taken from
    /// the open file, so it is the stamp of exactly these bytes).
    pub(super) fn read_small_stamped(&self, name: &str) -> Result<(Vec<u8>, Stamp)> {
        let f = self.open_file(name, false)?;
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `f` is open; `st` is a valid, writable stat buffer.
        if unsafe { libc::fstat(f.as_raw_fd(), &mut st) } != 0 {
            return Err(Error::io(self.child(name).display(), last_error()));
        }
        let mut buf = Vec::new();
        f.take(MAX_FILE as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(self.child(name).display(), e))?;
        Ok((buf, Stamp::of(&st)))
    }

    /// Reads the small file `name` (see [`Dir::open_file`]), at most
    /// [`MAX_FILE`] + 1 bytes so that an oversized one is seen as such.
    pub(super) fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let f = self.open_file(name, false)?;
        let mut buf = Vec::new();
        f.take(MAX_FILE as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(self.child(name).display(), e))?;
        Ok(buf)
    }

    /// Creates the file `name` with `bytes` as its content, atomically: it
    /// is written under a temporary name (owner-only, `O_EXCL`) and linked to
    /// `name`. `Ok(false)` if `name` exists already (left as it is).
    pub(super) fn publish(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.child(name);
        let tmp = temp_name(name);
        let ctmp = cstr(tmp.as_bytes(), &path)?;
        let cname = cstr(name.as_bytes(), &path)?;
        // SAFETY: `self.fd` is an open directory; `ctmp` is a valid string.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                ctmp.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(Error::io(self.child(&tmp).display(), last_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let result = (|| {
            file.write_all(bytes)
                .map_err(|e| Error::io(self.child(&tmp).display(), e))?;
            // SAFETY: both names are valid strings relative to our open
            // directory; flags 0: do not follow a symlink at `tmp`.
            let rc = unsafe {
                libc::linkat(
                    self.fd.as_raw_fd(),
                    ctmp.as_ptr(),
                    self.fd.as_raw_fd(),
                    cname.as_ptr(),
                    0,
                )
            };
            if rc == 0 {
                return Ok(true);
            }
            let e = last_error();
            match e.raw_os_error() {
                Some(libc::EEXIST) => Ok(false),
                _ => Err(Error::io(path.display(), e)),
            }
        })();
        drop(file);
        let _ = self.unlink(&tmp);
        result
    }

    /// Removes the file (or symbolic link) `name`; a missing one is fine.
    pub(super) fn unlink(&self, name: &str) -> Result<()> {
        let path = self.child(name);
        let c = cstr(name.as_bytes(), &path)?;
        // SAFETY: `self.fd` is an open directory; `c` is a valid string.
        let rc = unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        if rc == 0 {
            return Ok(());
        }
        let e = last_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(()),
            Some(libc::EISDIR) => Err(err!(Corrupt, "{}: not a regular file", path.display())),
            _ => Err(Error::io(path.display(), e)),
        }
    }

    /// The type of the entry `name` without following a symbolic link
    /// (`S_IFREG`, `S_IFLNK`, ...); `None` if there is no such entry.
    pub(super) fn entry_type(&self, name: &str) -> Result<Option<libc::mode_t>> {
        Ok(self.entry_id(name)?.map(|(mode, _)| mode))
    }

    /// The type (as [`Dir::entry_type`]) and the identity (device, inode)
    /// of the entry `name`, without following a symbolic link; `None` if
    /// there is no such entry.
    pub(super) fn entry_id(&self, name: &str) -> Result<Option<(libc::mode_t, FileId)>> {
        Ok(self.lstat_at(name)?.map(|st| {
            (
                st.st_mode & libc::S_IFMT,
                FileId {
                    dev: st.st_dev,
                    ino: st.st_ino,
                },
            )
        }))
    }

    /// Takes `flock(LOCK_EX)` on the directory, waiting at most `wait`.
    /// `Ok(false)` if another open description kept it that long. The lock
    /// goes with the descriptor: it is released when `self` is dropped.
    pub(super) fn lock_within(&self, wait: Duration) -> Result<bool> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_micros(200);
        loop {
            if try_flock(&self.fd, libc::LOCK_EX, &self.path)? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

/// `flock(op | LOCK_NB)`, retried on `EINTR`: `Ok(false)` if it would block.
pub(super) fn try_flock(fd: &impl AsRawFd, op: libc::c_int, path: &Path) -> Result<bool> {
    match crate::shm::flock(fd, op | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// `flock(op)`, blocking, retried on `EINTR`.
pub(super) fn flock(fd: &impl AsRawFd, op: libc::c_int, path: &Path) -> Result<()> {
    crate::shm::flock(fd, op).map_err(|e| {
        let verb = if op == libc::LOCK_UN {
            "unlocking"
        } else {
            "locking"
        };
        Error::io(format!("{verb} {}", path.display()), e)
    })
}

/// A temporary name for `name`, unique to this process and call; it starts
/// with `.`, so it is never taken for an advertisement or a tenant's file.
fn temp_name(name: &str) -> String {
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

/// Creates the directory `path` with mode 0700 if it is missing. `Ok(true)`
/// if this call created it.
pub(super) fn make_dir(path: &Path) -> Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "mtipc-dir-{tag}-{}-{}",
            std::process::id(),
            super::super::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&p);
        make_dir(&p).unwrap();
        p
    }

    #[test]
    fn publish_open_unlink() {
        let p = scratch("pub");
        let d = Dir::open(&p).unwrap();
        assert!(d.publish("f", b"hello").unwrap());
        assert!(!d.publish("f", b"other").unwrap());
        assert_eq!(d.read_small("f").unwrap(), b"hello");
        let mode = std::fs::metadata(p.join("f")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(d.entry_type("f").unwrap(), Some(libc::S_IFREG));
        d.unlink("f").unwrap();
        d.unlink("f").unwrap();
        assert_eq!(d.entry_type("f").unwrap(), None);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&p).unwrap().count(), 0);
        std::fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn refusals() {
        let p = scratch("ref");
        let d = Dir::open(&p).unwrap();
        std::os::unix::fs::symlink(&p, p.join("link")).unwrap();
        let e = d.open_at("link").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert!(e.message().contains("symbolic link"), "{e}");
        let e = Dir::open(&p.join("link")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        let e = d.open_file("link", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert_eq!(d.entry_type("link").unwrap(), Some(libc::S_IFLNK));
        std::fs::write(p.join("plain"), b"x").unwrap();
        std::fs::set_permissions(p.join("plain"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = d.open_file("plain", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert!(e.message().contains("0644"), "{e}");
        let e = d.open_at("plain").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        make_dir(&p.join("sub")).unwrap();
        let e = d.open_file("sub", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        std::fs::set_permissions(p.join("sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = d.open_at("sub").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        // A FIFO does not block the open, and is refused.
        let fifo = cstr(p.join("fifo").as_os_str().as_bytes(), &p).unwrap();
        // SAFETY: valid path string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = d.open_file("fifo", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        std::fs::remove_dir_all(&p).unwrap();
    }

    #[test]
    fn directory_lock_excludes_other_descriptions() {
        let p = scratch("lock");
        let a = Dir::open(&p).unwrap();
        let b = Dir::open(&p).unwrap();
        assert!(a.lock_within(Duration::ZERO).unwrap());
        assert!(!b.lock_within(Duration::from_millis(20)).unwrap());
        drop(a);
        assert!(b.lock_within(Duration::ZERO).unwrap());
        std::fs::remove_dir_all(&p).unwrap();
    }
}
