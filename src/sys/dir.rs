//! A directory opened once (never through a symbolic link) and checked, and
//! the file operations done relative to it (`openat`, `linkat`, ...), so
//! that nothing swapped in later on the path can redirect them.

use super::fs::{check_owner, temp_name, try_flock, Lock};
use crate::error::{err, Error, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which file an entry is (device and inode numbers): what tells a kept
/// descriptor's file from one put in its place since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

/// A file's identity plus its size and change time: what tells that a kept
/// copy of a small file is still what the file holds. The file is only
/// re-read when one of these changed; a file replaced by another with the
/// same inode number (recycled), the same size and the same change time
/// (both within one tick of the kernel's coarse clock) would go unseen,
/// which our writers never do (they publish new directories and files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    id: FileId,
    size: i64,
    ctime: (i64, i64),
}

impl Stamp {
    // The stat field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> Stamp {
        Stamp {
            id: FileId::of(st),
            size: st.st_size as i64,
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

impl Stamp {
    /// The file's identity.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// When the file last changed (its `ctime`: contents, metadata, and for
    /// a directory any entry added, removed or renamed in it); `None` for a
    /// time the clock cannot represent (a file system reporting nonsense).
    pub fn changed(&self) -> Option<std::time::SystemTime> {
        let (s, ns) = self.ctime;
        let ns = std::time::Duration::from_nanos(u64::try_from(ns).ok()?.min(999_999_999));
        let secs = std::time::Duration::from_secs(s.unsigned_abs());
        if s >= 0 {
            std::time::UNIX_EPOCH.checked_add(secs)?.checked_add(ns)
        } else {
            std::time::UNIX_EPOCH.checked_sub(secs)?.checked_add(ns)
        }
    }
}

impl FileId {
    // The stat field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn of(st: &rustix::fs::Stat) -> FileId {
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The identity of the file with these `st_dev` and `st_ino`.
    pub fn new(dev: u64, ino: u64) -> FileId {
        FileId { dev, ino }
    }
}

/// The kind of a directory entry, as [`Dir::entry_type`] reports it.
pub use rustix::fs::FileType as EntryType;

/// An open, checked directory: a real directory (not a link), owned by this
/// process's uid, with no group/other permission bits.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What an `open` of a directory failing means, as an error naming `path`.
/// With `O_DIRECTORY | O_NOFOLLOW`, Linux reports a symbolic link as
/// `ENOTDIR`: look (without following) to say which it is.
fn dir_open_error(path: &Path, e: Errno) -> Error {
    match e {
        Errno::NOTDIR => {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if link {
                Error::io(path.display(), Errno::LOOP.into())
            } else {
                err!(Corrupt, "{}: not a directory", path.display())
            }
        }
        _ => Error::io(path.display(), e.into()),
    }
}

/// The flags every directory open takes.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A name must not be a path: one component, no NUL (rustix refuses a NUL
/// itself; a `/` would reach outside the directory).
fn check_component(name: &str, path: &Path) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains('\0') || name == "." || name == ".." {
        return Err(err!(Invalid, "{}: not a plain file name", path.display()));
    }
    Ok(())
}

impl Dir {
    /// Opens the directory at `path` (its last component must not be a
    /// symbolic link) and checks it.
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = super::retry(|| rustix::fs::openat(CWD, path, DIR_FLAGS, Mode::empty()))
            .map_err(|e| dir_open_error(path, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        Dir::checked(fd, path.to_path_buf())
    }

    /// Opens the subdirectory `name` (not a symbolic link) and checks it.
    pub fn open_at(&self, name: &str) -> Result<Dir> {
        let path = self.path.join(name);
        check_component(name, &path)?;
        let fd = super::retry(|| rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()))
            .map_err(|e| dir_open_error(&path, Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        Dir::checked(fd, path)
    }

    fn checked(fd: OwnedFd, path: PathBuf) -> Result<Dir> {
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(path.display(), e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(err!(Corrupt, "{}: not a directory", path.display()));
        }
        check_owner(&path, st.st_uid, st.st_mode)?;
        Ok(Dir { fd, path })
    }

    /// The identity of the open directory itself.
    pub fn id(&self) -> Result<FileId> {
        let st =
            rustix::fs::fstat(&self.fd).map_err(|e| Error::io(self.path.display(), e.into()))?;
        Ok(FileId::of(&st))
    }

    /// The [`Stamp`] of the open directory itself (one `fstat`): its change
    /// time moves whenever an entry is added to it, removed or renamed.
    pub fn own_stamp(&self) -> Result<Stamp> {
        let st =
            rustix::fs::fstat(&self.fd).map_err(|e| Error::io(self.path.display(), e.into()))?;
        Ok(Stamp::of(&st))
    }

    /// The directory's path (for messages, and for callers that need it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` inside the directory.
    pub fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The directory's last modification time (an entry added or removed).
    pub fn mtime(&self) -> Result<std::time::SystemTime> {
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
    /// group/other permission bits. A FIFO planted there does not block the
    /// open.
    pub fn open_file(&self, name: &str, write: bool) -> Result<File> {
        let path = self.child(name);
        check_component(name, &path)?;
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let flags = access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = super::retry(|| rustix::fs::openat(&self.fd, name, flags, Mode::empty()))
            .map_err(|e| match Errno::from_io_error(&e) {
                Some(Errno::ISDIR) => err!(Corrupt, "{}: not a regular file", path.display()),
                _ => Error::io(path.display(), e),
            })?;
        let file = File::from(fd);
        let md = file.metadata().map_err(|e| Error::io(path.display(), e))?;
        if !md.is_file() {
            return Err(err!(Corrupt, "{}: not a regular file", path.display()));
        }
        check_owner(&path, md.uid(), md.mode())?;
        Ok(file)
    }

    /// `fstatat` of the entry `name`, without following a symbolic link;
    /// `None` if there is no such entry.
    fn lstat_at(&self, name: &str) -> Result<Option<rustix::fs::Stat>> {
        let path = self.child(name);
        check_component(name, &path)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io(path.display(), e.into())),
        }
    }

    /// The [`Stamp`] of the regular file `name` (not following a link);
    /// `None` if it is missing or not a regular file.
    pub fn stamp(&self, name: &str) -> Result<Option<Stamp>> {
        Ok(self
            .lstat_at(name)?
            .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
            .map(|st| Stamp::of(&st)))
    }

    /// [`Dir::read_small`], with the [`Stamp`] of the file read (taken from
    /// the open file, so it is the stamp of exactly these bytes).
    pub fn read_small_stamped(&self, name: &str, max: usize) -> Result<(Vec<u8>, Stamp)> {
        let f = self.open_file(name, false)?;
        let st =
            rustix::fs::fstat(&f).map_err(|e| Error::io(self.child(name).display(), e.into()))?;
        let mut buf = Vec::new();
        f.take(max as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(self.child(name).display(), e))?;
        Ok((buf, Stamp::of(&st)))
    }

    /// Reads the small file `name` (see [`Dir::open_file`]), at most `max`
    /// + 1 bytes so that an oversized one is seen as such.
    pub fn read_small(&self, name: &str, max: usize) -> Result<Vec<u8>> {
        let f = self.open_file(name, false)?;
        let mut buf = Vec::new();
        f.take(max as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(self.child(name).display(), e))?;
        Ok(buf)
    }

    /// Creates the file `name` with `bytes` as its content, atomically: it
    /// is written under a temporary name (owner-only, `O_EXCL`) and linked to
    /// `name`. `Ok(false)` if `name` exists already (left as it is).
    pub fn publish(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.child(name);
        check_component(name, &path)?;
        let tmp = temp_name(name);
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = super::retry(|| {
            rustix::fs::openat(&self.fd, tmp.as_str(), flags, Mode::from_raw_mode(0o600))
        })
        .map_err(|e| Error::io(self.child(&tmp).display(), e))?;
        let mut file = File::from(fd);
        let result = (|| {
            file.write_all(bytes)
                .map_err(|e| Error::io(self.child(&tmp).display(), e))?;
            // Flags empty: a symbolic link at `tmp` is not followed.
            match rustix::fs::linkat(&self.fd, tmp.as_str(), &self.fd, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(Error::io(path.display(), e.into())),
            }
        })();
        drop(file);
        let _ = self.unlink(&tmp);
        result
    }

    /// Removes the file (or symbolic link) `name`; a missing one is fine.
    pub fn unlink(&self, name: &str) -> Result<()> {
        let path = self.child(name);
        check_component(name, &path)?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) => Err(err!(Corrupt, "{}: not a regular file", path.display())),
            Err(e) => Err(Error::io(path.display(), e.into())),
        }
    }

    /// The type of the entry `name` without following a symbolic link;
    /// `None` if there is no such entry.
    pub fn entry_type(&self, name: &str) -> Result<Option<EntryType>> {
        Ok(self.entry_id(name)?.map(|(t, _)| t))
    }

    /// The type (as [`Dir::entry_type`]) and the identity (device, inode)
    /// of the entry `name`, without following a symbolic link; `None` if
    /// there is no such entry.
    pub fn entry_id(&self, name: &str) -> Result<Option<(EntryType, FileId)>> {
        Ok(self
            .lstat_at(name)?
            .map(|st| (FileType::from_raw_mode(st.st_mode), FileId::of(&st))))
    }

    /// Takes `flock(LOCK_EX)` on the directory, waiting at most `wait`.
    /// `Ok(false)` if another open description kept it that long. The lock
    /// goes with the descriptor: it is released when `self` is dropped.
    pub fn lock_within(&self, wait: Duration) -> Result<bool> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_micros(200);
        loop {
            if try_flock(&self.fd, Lock::Exclusive, &self.path)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fs::make_dir;
    use crate::ErrorKind;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mtipc-dir-{tag}-{}", std::process::id()));
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
        assert_eq!(d.read_small("f", 4096).unwrap(), b"hello");
        let mode = std::fs::metadata(p.join("f")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(d.entry_type("f").unwrap(), Some(EntryType::RegularFile));
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
        assert_eq!(d.entry_type("link").unwrap(), Some(EntryType::Symlink));
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
        rustix::fs::mknodat(
            CWD,
            p.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
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

    #[test]
    fn change_times_before_and_after_the_epoch_and_nonsense() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |ctime| {
            Stamp {
                id: FileId::new(1, 2),
                size: 0,
                ctime,
            }
            .changed()
        };
        assert_eq!(at((5, 250)), Some(UNIX_EPOCH + Duration::new(5, 250)));
        // -1 s + 0.5 s: half a second before the epoch.
        assert_eq!(
            at((-1, 500_000_000)),
            Some(UNIX_EPOCH - Duration::from_millis(500))
        );
        assert_eq!(at((5, -1)), None);
        // The extremes do not panic; a margin added to the largest is
        // refused, not wrapped (`quiet_since` then does a full check).
        let last = at((i64::MAX, 999_999_999)).expect("representable here");
        assert_eq!(last.checked_add(Duration::from_millis(50)), None);
        let _ = at((i64::MIN, 0));
    }
}
