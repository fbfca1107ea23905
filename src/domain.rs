//! The domain: the directory that the cooperating processes of a host share.
//!
//! [`Domain::open`] creates the directory (owner-only) if it is missing,
//! records the layout version in `layout`, and creates the domain's
//! notification semaphore in `notify.sem`. It refuses, with a clear error and
//! never a crash: a path that is a file (`Invalid`), a symbolic link where
//! the directory should be (`Denied`), a directory owned by another user or
//! writable by group or others (`Denied`), a domain of another layout version
//! (`Version`), and a corrupt or truncated `layout` or `notify.sem`
//! (`Corrupt`).
//!
//! The path, when none is given: `$MTIPC_DOMAIN`, else
//! `$XDG_RUNTIME_DIR/mtipc`, else `/tmp/mtipc-<uid>`.

use crate::error::{err, Error, Result};
use crate::shm::{Region, HEADER_SIZE};
use crate::sync::SemCore;
use crate::LAYOUT_VERSION;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the file holding the layout version, inside the domain.
pub const LAYOUT_FILE: &str = "layout";
/// Name of the notification semaphore's region, inside the domain.
pub const NOTIFY_FILE: &str = "notify.sem";
/// Longest domain path accepted (bytes).
pub const MAX_PATH: usize = 4000;
/// Largest `layout` file accepted (bytes); anything longer is corrupt.
pub const MAX_LAYOUT_FILE: usize = 256;

const LAYOUT_MAGIC_LINE: &str = "mtipc domain";
const SEM_MAGIC: &[u8; 8] = b"MTIPCSEM";
const SEM_REGION_SIZE: u64 = 128;
/// Offset of the attach round marker in `notify.sem` (after the
/// semaphore's word at 64; see [`Semaphore::round_mark`]).
const ROUND_MARK_OFFSET: usize = 96;
const _: () = assert!(ROUND_MARK_OFFSET + 4 <= SEM_REGION_SIZE as usize);

pub use crate::sys::euid;

/// The domain path used when none is given (see the module docs).
pub fn default_path() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = env("MTIPC_DOMAIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = env("XDG_RUNTIME_DIR") {
        return PathBuf::from(p).join("mtipc");
    }
    PathBuf::from(format!("/tmp/mtipc-{}", euid()))
}

/// The text of a `layout` file for `version`.
pub fn layout_text(version: u32) -> String {
    format!("{LAYOUT_MAGIC_LINE}\nlayout {version}\n")
}

/// Parses the content of a `layout` file and returns the version it names.
///
/// This parses a file another process wrote: anything but exactly
/// `"mtipc domain\nlayout N\n"` (N a decimal u32) is `Corrupt`. Whether N is
/// this library's version is the caller's business. `fuzz/` has a target.
pub fn parse_layout(bytes: &[u8]) -> Result<u32> {
    if bytes.len() > MAX_LAYOUT_FILE {
        // The reader stops after MAX_LAYOUT_FILE + 1 bytes: the true size
        // is unknown here, only that it is too large.
        return Err(err!(
            Corrupt,
            "layout file is larger than {MAX_LAYOUT_FILE} bytes (at most {MAX_LAYOUT_FILE})"
        ));
    }
    if bytes.is_empty() {
        return Err(err!(Corrupt, "layout file is empty"));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| err!(Corrupt, "layout file is not UTF-8 text"))?;
    let rest = text
        .strip_prefix(LAYOUT_MAGIC_LINE)
        .and_then(|r| r.strip_prefix('\n'))
        .ok_or_else(|| {
            err!(
                Corrupt,
                "layout file does not start with {LAYOUT_MAGIC_LINE:?}"
            )
        })?;
    let num = rest
        .strip_prefix("layout ")
        .and_then(|r| r.strip_suffix('\n'))
        .ok_or_else(|| {
            err!(
                Corrupt,
                "layout file is truncated or has no \"layout N\" line"
            )
        })?;
    let canonical = !num.is_empty()
        && num.len() <= 10
        && num.bytes().all(|b| b.is_ascii_digit())
        && !(num.len() > 1 && num.starts_with('0'));
    if !canonical {
        return Err(err!(Corrupt, "layout file has a bad version {num:?}"));
    }
    num.parse::<u32>()
        .map_err(|_| err!(Corrupt, "layout file has a bad version {num:?}"))
}

/// What `mtipc info` shows about a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DomainInfo {
    /// The domain directory.
    pub path: PathBuf,
    /// Its layout version.
    pub layout_version: u32,
    /// The uid that owns it.
    pub owner_uid: u32,
    /// The notification semaphore's count.
    pub semaphore_value: u32,
}

/// An open domain. Cheap to share between threads (`Send + Sync`); every
/// method may be called from several threads at once.
#[derive(Debug)]
pub struct Domain {
    path: PathBuf,
    owner_uid: u32,
    notify: Semaphore,
}

impl Domain {
    /// Opens the domain at `path`, or when `None` at `$MTIPC_DOMAIN`, else
    /// `$XDG_RUNTIME_DIR/mtipc`, else `/tmp/mtipc-<uid>`.
    ///
    /// Creates the directory (owner-only) if it is missing, records the
    /// layout version in `layout`, and creates the domain's notification
    /// semaphore in `notify.sem`. It refuses, with a clear error and never a
    /// crash: a path that is a file (`Invalid`), a symbolic link where the
    /// directory should be (`Denied`), a directory owned by another user or
    /// writable by group or others (`Denied`), a domain of another layout
    /// version (`Version`), and a corrupt or truncated `layout` or
    /// `notify.sem` (`Corrupt`).
    pub fn open(path: Option<&Path>) -> Result<Domain> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => default_path(),
        };
        check_path_arg(&path)?;
        let owner_uid = ensure_dir(&path)?;
        let layout_path = path.join(LAYOUT_FILE);
        let version = match read_small(&layout_path) {
            Ok(bytes) => parse_layout(&bytes).map_err(|e| in_file(&layout_path, e))?,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                crate::sys::fs::publish_bytes(
                    &layout_path,
                    layout_text(LAYOUT_VERSION).as_bytes(),
                )?;
                let bytes = read_small(&layout_path)?;
                parse_layout(&bytes).map_err(|e| in_file(&layout_path, e))?
            }
            Err(e) => return Err(e),
        };
        if version != LAYOUT_VERSION {
            return Err(err!(
                Version,
                "domain {} has layout version {version}; this mtipc {} uses layout {LAYOUT_VERSION}",
                path.display(),
                crate::VERSION
            ));
        }
        let notify = Semaphore::open_in(&path)?;
        Ok(Domain {
            path,
            owner_uid,
            notify,
        })
    }

    /// The domain directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layout version (always [`LAYOUT_VERSION`] for an open domain).
    pub fn layout_version(&self) -> u32 {
        LAYOUT_VERSION
    }

    /// The uid that owns the domain directory.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The domain's notification semaphore.
    pub fn semaphore(&self) -> &Semaphore {
        &self.notify
    }

    /// A snapshot of the domain's state.
    pub fn info(&self) -> DomainInfo {
        DomainInfo {
            path: self.path.clone(),
            layout_version: self.layout_version(),
            owner_uid: self.owner_uid,
            semaphore_value: self.notify.value(),
        }
    }
}

fn in_file(path: &Path, e: Error) -> Error {
    Error::new(e.kind(), format!("{}: {}", path.display(), e.message()))
}

fn check_path_arg(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let b = path.as_os_str().as_bytes();
    if b.is_empty() {
        return Err(err!(Invalid, "domain path is empty"));
    }
    if b.len() > MAX_PATH {
        return Err(err!(
            Invalid,
            "domain path is {} bytes (at most {MAX_PATH})",
            b.len()
        ));
    }
    if b.contains(&0) {
        return Err(err!(Invalid, "domain path contains a NUL byte"));
    }
    Ok(())
}

/// Makes sure `path` is a directory we may trust; creates it if missing.
/// Returns its owner's uid.
fn ensure_dir(path: &Path) -> Result<u32> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(err!(
                        NotFound,
                        "cannot create domain {}: its parent directory does not exist",
                        path.display()
                    ))
                }
                Err(e) => return Err(Error::io(format!("creating domain {}", path.display()), e)),
            }
            std::fs::symlink_metadata(path).map_err(|e| Error::io(path.display(), e))?
        }
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    let ft = md.file_type();
    if ft.is_symlink() {
        return Err(err!(
            Denied,
            "domain {} is a symbolic link; mtipc does not follow links for a domain directory",
            path.display()
        ));
    }
    if !ft.is_dir() {
        return Err(err!(
            Invalid,
            "domain {} exists and is not a directory",
            path.display()
        ));
    }
    let me = euid();
    if md.uid() != me {
        return Err(err!(
            Denied,
            "domain {} is owned by uid {}, not by this process's uid {me}",
            path.display(),
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(err!(
            Denied,
            "domain {} is group- or world-writable (mode {:04o}); `chmod 700` it",
            path.display(),
            md.mode() & 0o7777
        ));
    }
    Ok(md.uid())
}

/// Reads a small file of the domain (owner-only, no symlink), at most
/// [`MAX_LAYOUT_FILE`] + 1 bytes so an oversized one is seen as such.
fn read_small(path: &Path) -> Result<Vec<u8>> {
    let f = crate::sys::fs::open_checked(path, false)?;
    let mut buf = Vec::new();
    f.take(MAX_LAYOUT_FILE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path.display(), e))?;
    Ok(buf)
}

/// The domain's notification semaphore: a counting semaphore in the shared
/// file `notify.sem`, usable from every process of the domain's owner. Any
/// number of threads may use one `Semaphore` at once.
#[derive(Debug)]
pub struct Semaphore {
    region: Region,
}

// SAFETY: all access to the mapping goes through the atomics of `SemCore`;
// the mapping itself is never moved or unmapped while `self` lives.
unsafe impl Send for Semaphore {}
// SAFETY: as above.
unsafe impl Sync for Semaphore {}

impl Semaphore {
    fn open_in(dir: &Path) -> Result<Semaphore> {
        let region = Region::open_or_create(
            &dir.join(NOTIFY_FILE),
            SEM_MAGIC,
            SEM_REGION_SIZE,
            &dir.join(NOTIFY_FILE).display().to_string(),
        )?;
        Ok(Semaphore { region })
    }

    pub(crate) fn core(&self) -> &SemCore {
        // SAFETY: the region is SEM_REGION_SIZE (128) bytes, page aligned,
        // validated; the SemCore (one u32) sits at offset 64, aligned, and
        // lives as long as the mapping, i.e. as long as `self`.
        unsafe { &*(self.region.as_ptr().add(HEADER_SIZE) as *const SemCore) }
    }

    /// The attach round marker, a word of the same region (offset 96,
    /// zero in a new region): an attacher sets it before it writes a
    /// response file and clears it once its round is cleaned up, so the
    /// next attacher finds it set only if a round's attacher died in the
    /// middle (see docs/attach.md, "Leftovers").
    pub(crate) fn round_mark(&self) -> &crate::sync::Futex {
        // SAFETY: the region is SEM_REGION_SIZE (128) bytes, page aligned,
        // validated; the u32 at ROUND_MARK_OFFSET (96) is aligned, used
        // only atomically (`Futex` is a repr(transparent) AtomicU32), and
        // lives as long as the mapping, i.e. as long as `self`.
        unsafe { &*(self.region.as_ptr().add(ROUND_MARK_OFFSET) as *const crate::sync::Futex) }
    }

    /// `Corrupt` if `notify.sem` was truncated under this process's mapping
    /// (a `SIGBUS` caught, see `shm::guard`): the semaphore no longer
    /// reaches the other processes, and the domain must be recreated.
    pub fn check(&self) -> Result<()> {
        self.region.check()
    }

    /// Whether [`check`](Semaphore::check) fails.
    pub fn is_broken(&self) -> bool {
        self.check().is_err()
    }

    /// Adds `n` to the count and wakes up to `n` waiters.
    pub fn post(&self, n: u32) -> Result<()> {
        self.check()?;
        self.core().post(n)?;
        self.check()
    }

    /// Takes one unit, waiting while the count is zero for at most `timeout`
    /// (`None`: no limit). `Timeout` error if it passes; `Corrupt` if the
    /// file is truncated meanwhile.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        self.check()?;
        match self
            .core()
            .wait_or_stop(timeout, crate::sync::RECHECK, &|| self.is_broken())
        {
            crate::sync::WaitResult::Taken => self.check(),
            crate::sync::WaitResult::Stopped => self.check(),
            crate::sync::WaitResult::TimedOut => Err(err!(
                Timeout,
                "no post on {} within {:?}",
                self.region.path().display(),
                timeout.unwrap_or_default()
            )),
        }
    }

    /// The semaphore's file (`notify.sem` in the domain).
    pub fn path(&self) -> &Path {
        self.region.path()
    }

    /// Takes one unit if there is one; never blocks.
    pub fn try_wait(&self) -> bool {
        self.core().try_wait()
    }

    /// Sets the count to zero; returns the count it had.
    pub fn reset(&self) -> u32 {
        self.core().reset()
    }

    /// The current count.
    pub fn value(&self) -> u32 {
        self.core().value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_parser() {
        assert_eq!(parse_layout(layout_text(1).as_bytes()).unwrap(), 1);
        assert_eq!(parse_layout(layout_text(77).as_bytes()).unwrap(), 77);
        for bad in [
            &b""[..],
            b"mtipc domain\n",
            b"mtipc domain\nlayout \n",
            b"mtipc domain\nlayout 1",
            b"mtipc domain\nlayout -1\n",
            b"mtipc domain\nlayout 01\n",
            b"mtipc domain\nlayout +1\n",
            b"mtipc domain\nlayout 99999999999\n",
            b"mtipc domain\nlayout 1\nextra\n",
            b"\xff\xfe",
            b"something else\n",
        ] {
            let e = parse_layout(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{bad:?}");
        }
        assert_eq!(
            parse_layout(&vec![b'a'; 300]).unwrap_err().kind(),
            crate::ErrorKind::Corrupt
        );
    }
}
