//! The domain's lock files (`attach.lock`, `daemon.lock`): `flock` on an
//! owner-only regular file, so the kernel releases the lock when its holder
//! dies, whatever the way.

use crate::error::{err, Error, Result};
use crate::shm::{self, flock};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An exclusive `flock` on a file of the domain, released on drop.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

/// Opens (creating owner-only if missing) the lock file at `path`. Never
/// follows a symbolic link; the file must be the domain owner's.
fn open(path: &Path) -> Result<File> {
    match shm::open_checked(path, true) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == crate::ErrorKind::NotFound => {
            shm::publish_bytes(path, b"")?;
            shm::open_checked(path, true)
        }
        Err(e) => Err(e),
    }
}

impl LockFile {
    /// Takes the lock, waiting at most until `deadline` (`None`: no limit).
    /// `what` names the lock in the timeout message.
    pub fn acquire(path: &Path, deadline: Option<Instant>, what: &str) -> Result<LockFile> {
        let file = open(path)?;
        let mut pause = Duration::from_micros(50);
        loop {
            match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => {
                    return Ok(LockFile {
                        file,
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                Err(e) => return Err(Error::io(path.display(), e)),
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
        let file = open(path)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(LockFile {
                file,
                path: path.to_path_buf(),
            })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::io(path.display(), e)),
        }
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
    let f = shm::open_checked(path, false).ok()?;
    let mut s = String::new();
    f.take(64).read_to_string(&mut s).ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}
