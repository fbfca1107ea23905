//! Closures in the domain: `<domain>/closures/<name>/head` and one file
//! `v<N>` per version (see the module docs of [`crate::closure`]).

use super::format::{self, Checked, Value, ValueRef, FILE_HEADER, MAX_CLOSURE_SIZE};
use super::head::HeadCore;
use super::locks;
use crate::domain::Domain;
use crate::error::{err, Error, Result};
use crate::shm::{Region, HEADER_SIZE};
use crate::sys::fs::{flock, try_flock, Lock};
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the directory of closures inside the domain.
pub const CLOSURES_DIR: &str = "closures";
/// Name of the head region inside a closure's directory.
pub const HEAD_FILE: &str = "head";
/// Longest closure name (bytes).
pub const MAX_NAME: usize = 64;

const HEAD_MAGIC: &[u8; 8] = b"MTIPCCLH";
const HEAD_SIZE: u64 = 128;
/// How many times `open` looks again when the version it read from the
/// head was superseded and collected before it could lock it.
const OPEN_ATTEMPTS: u32 = 1000;

/// Checks a closure name: the tenant-id rule of docs/attach.md, 1 to
/// [`MAX_NAME`] bytes of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn validate_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_NAME {
        Some(format!("is {} bytes long (at most {MAX_NAME})", name.len()))
    } else if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
    {
        Some(format!("contains {c:?} (allowed: A-Z a-z 0-9 _ . -)"))
    } else if name.starts_with('.') || name.starts_with('-') {
        Some(format!("starts with {:?}", &name[..1]))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => {
            let shown: String = name.chars().take(40).collect();
            Err(err!(Invalid, "closure name {shown:?}: {why}"))
        }
    }
}

/// Makes sure `path` is a directory we may trust (not a link, ours,
/// owner-only), creating it (0700) if missing and `create`.
fn checked_dir(path: &Path, create: bool) -> Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            match std::fs::DirBuilder::new().mode(0o700).create(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(path.display(), e)),
            }
            std::fs::symlink_metadata(path).map_err(|e| Error::io(path.display(), e))?
        }
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    if md.file_type().is_symlink() {
        return Err(err!(
            Denied,
            "{} is a symbolic link, which mtipc never follows",
            path.display()
        ));
    }
    if !md.is_dir() {
        return Err(err!(Corrupt, "{}: not a directory", path.display()));
    }
    crate::sys::check_owner(path, md.uid(), md.mode())
}

/// `<domain>/closures/<name>`, checked (and created if `create`).
fn closure_dir(domain: &Domain, name: &str, create: bool) -> Result<PathBuf> {
    validate_name(name)?;
    let top = domain.path().join(CLOSURES_DIR);
    let dir = top.join(name);
    let not_found = |e: Error| {
        if e.kind() == crate::ErrorKind::NotFound {
            err!(
                NotFound,
                "closure {name:?} was never published in {}",
                domain.path().display()
            )
        } else {
            e
        }
    };
    checked_dir(&top, create).map_err(not_found)?;
    checked_dir(&dir, create).map_err(not_found)?;
    Ok(dir)
}

fn version_file(dir: &Path, v: u64) -> PathBuf {
    dir.join(format!("v{v}"))
}

/// The version a file name `v<N>` names (canonical decimal, N >= 1).
fn parse_version_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || digits.len() > 20 || digits.starts_with('0') {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A closure's head region, mapped.
#[derive(Debug)]
struct Head {
    region: Region,
}

// SAFETY: all access to the mapping goes through the atomics of `HeadCore`;
// the mapping is never moved or unmapped while `self` lives.
unsafe impl Send for Head {}
// SAFETY: as above.
unsafe impl Sync for Head {}

impl Head {
    fn open(dir: &Path, create: bool) -> Result<Head> {
        let path = dir.join(HEAD_FILE);
        if !create {
            // Only a publisher creates a head; a reader of a closure whose
            // head is missing finds nothing to read.
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(err!(
                        NotFound,
                        "closure {} has no head: nothing was published yet",
                        dir.display()
                    ))
                }
                _ => {}
            }
        }
        let what = path.display().to_string();
        let region = Region::open_or_create(&path, HEAD_MAGIC, HEAD_SIZE, &what)?;
        Ok(Head { region })
    }

    fn core(&self) -> &HeadCore {
        // SAFETY: the region is HEAD_SIZE (128) bytes, page aligned and
        // validated; the HeadCore (two u64) sits at offset 64, aligned, and
        // lives as long as the mapping, i.e. as long as `self`. A fresh
        // region is zero there: no version.
        unsafe { &*(self.region.as_ptr().add(HEADER_SIZE) as *const HeadCore) }
    }
}

/// Writes version `v`'s file with `fill` (which writes `size` bytes from
/// the start), read-only (0400), complete or absent.
fn write_version(
    dir: &Path,
    v: u64,
    size: u64,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let path = version_file(dir, v);
    let created = crate::sys::fs::publish_new(&path, size, |f| {
        let mut f = f.try_clone().map_err(|e| Error::io(path.display(), e))?;
        fill(&mut f).map_err(|e| Error::io(path.display(), e))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o400))
            .map_err(|e| Error::io(path.display(), e))
    })?;
    if !created {
        return Err(err!(
            Corrupt,
            "{} exists already, though the head had not handed out version {v} before",
            path.display()
        ));
    }
    Ok(())
}

/// Publishes `value` as the new current version of closure `name` and
/// returns its version number (1 for the first, then increasing; two
/// publishers racing get distinct versions, the larger one ends current).
/// Superseded versions that no reader holds are removed.
///
/// `Invalid` (with the limit) for a bad name, a value larger than
/// [`MAX_CLOSURE_SIZE`] or nested deeper than [`format::MAX_DEPTH`].
pub fn publish(domain: &Domain, name: &str, value: &Value) -> Result<u64> {
    validate_name(name)?;
    let size = format::encoded_size(value)?;
    publish_with(domain, name, size, |v| {
        let bytes = format::encode(value, v)?;
        debug_assert_eq!(bytes.len() as u64, size);
        Ok(Box::new(move |f: &mut File| f.write_all(&bytes)))
    })
}

/// Publishes `bytes` as the new current version of closure `name` (a bytes
/// closure: its root is a byte string); see [`publish`].
pub fn publish_bytes(domain: &Domain, name: &str, bytes: &[u8]) -> Result<u64> {
    validate_name(name)?;
    let size = format::bytes_file_size(bytes.len() as u64)?;
    publish_with(domain, name, size, |v| {
        let header = format::file_header(size, v, 0);
        let node = format::node_header(format::Kind::Bytes, 0, bytes.len() as u64);
        Ok(Box::new(move |f: &mut File| {
            f.write_all(&header)?;
            f.write_all(&node)?;
            // The padding is the zeros of the file's initial length.
            f.write_all(bytes)
        }))
    })
}

type Filler<'a> = Box<dyn FnOnce(&mut File) -> std::io::Result<()> + 'a>;

fn publish_with<'a>(
    domain: &Domain,
    name: &str,
    size: u64,
    make: impl FnOnce(u64) -> Result<Filler<'a>>,
) -> Result<u64> {
    debug_assert!(size <= MAX_CLOSURE_SIZE);
    let dir = closure_dir(domain, name, true)?;
    let head = Head::open(&dir, true)?;
    let v = head.core().claim()?;
    let fill = make(v)?;
    write_version(&dir, v, size, fill)?;
    head.core().advance(v);
    collect(&dir, head.core().current());
    crate::log::debug!(closure = name, version = v, size, "published closure");
    Ok(v)
}

/// Removes every version file older than `current` that no reader holds
/// (`flock(LOCK_EX | LOCK_NB)` succeeds), and temporary files of dead
/// publishers. Returns how many version files it removed. Best effort:
/// errors only leave files for the next collection.
fn collect(dir: &Path, current: u64) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(v) = parse_version_name(name) {
            if v < current && try_remove(&dir.join(name), None) {
                removed += 1;
            }
        } else if let Some(pid) = temp_owner(name) {
            // `.v<N>.tmp.<pid>.<seq>`: a publisher that died mid-write.
            if !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
    }
    removed
}

/// The pid in the name of a temporary file `sys::fs::publish_new` makes for a
/// version file (`.v<N>.tmp.<pid>.<seq>`).
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(".v")?;
    let mut parts = rest.split('.');
    parse_version_name(&format!("v{}", parts.next()?))?;
    if parts.next()? != "tmp" {
        return None;
    }
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next().is_none().then_some(pid)
}

/// Unlinks the version file at `path` if no reader holds it: takes
/// `flock(LOCK_EX | LOCK_NB)` on `held` (a descriptor of it this process
/// has) or on a fresh descriptor, and unlinks only while holding it, and
/// only if the path still names that file.
fn try_remove(path: &Path, held: Option<&File>) -> bool {
    let fresh;
    let file = match held {
        Some(f) => f,
        None => match crate::sys::fs::open_checked(path, false) {
            Ok(f) => {
                fresh = f;
                &fresh
            }
            Err(_) => return false,
        },
    };
    if !matches!(try_flock(file, Lock::Exclusive, path), Ok(true)) {
        return false;
    }
    let same = match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    let removed = same && std::fs::remove_file(path).is_ok();
    if held.is_none() {
        // Dropping `fresh` releases the lock.
    } else {
        let _ = flock(file, Lock::Unlock, path);
    }
    removed
}

/// One version of a closure, mapped read-only: no copy is made. While it is
/// open this process holds `flock(LOCK_SH)` on the version's file, so the
/// file stays until it is dropped even when newer versions are published.
///
/// `Send + Sync`: any number of threads may read it at once. Dropping it
/// lets go of the version (and removes the file if it was superseded and
/// this was its last reader).
pub struct Closure {
    /// The mapping's registration against SIGBUS: dropped before the map.
    guard: Option<crate::shm::Guard>,
    map: Option<Mmap>,
    file: File,
    checked: Checked,
    path: PathBuf,
    dir: PathBuf,
    name: String,
    head: Head,
}

impl std::fmt::Debug for Closure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closure")
            .field("name", &self.name)
            .field("version", &self.checked.version)
            .field("path", &self.path)
            .field("size", &self.raw().len())
            .finish()
    }
}

/// Why a version could not be taken: it went away (look at the head
/// again), or a real error.
enum Take {
    Gone,
    Err(Error),
}

impl From<Error> for Take {
    fn from(e: Error) -> Take {
        Take::Err(e)
    }
}

fn take_version(
    dir: &Path,
    v: u64,
) -> std::result::Result<(File, Mmap, crate::shm::Guard, Checked), Take> {
    let path = version_file(dir, v);
    let file = match crate::sys::fs::open_checked(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == crate::ErrorKind::NotFound => return Err(Take::Gone),
        Err(e) => return Err(e.into()),
    };
    match try_flock(&file, Lock::Shared, &path) {
        Ok(true) => {}
        // A collector holds it exclusively: it is being removed.
        Ok(false) => return Err(Take::Gone),
        Err(e) => return Err(e.into()),
    }
    let md = file.metadata().map_err(|e| Error::io(path.display(), e))?;
    if md.nlink() == 0 {
        // Collected between our open and our lock.
        return Err(Take::Gone);
    }
    if md.mode() & 0o222 != 0 {
        return Err(err!(
            Denied,
            "{}: mode {:04o} is writable; a published closure version is read-only (0400)",
            path.display(),
            md.mode() & 0o7777
        )
        .into());
    }
    if md.len() > MAX_CLOSURE_SIZE {
        return Err(err!(
            Corrupt,
            "{}: {} bytes, larger than the limit of {MAX_CLOSURE_SIZE}",
            path.display(),
            md.len()
        )
        .into());
    }
    if (md.len() as usize) < FILE_HEADER {
        return Err(err!(
            Corrupt,
            "{}: truncated ({} bytes; a closure file needs at least {FILE_HEADER})",
            path.display(),
            md.len()
        )
        .into());
    }
    // SAFETY: a read-only private view of a file that is never written after
    // it is published (mode 0400); its size was just read, and the whole
    // mapping is validated before any other use.
    let map = unsafe { MmapOptions::new().len(md.len() as usize).map(&file) }
        .map_err(|e| Error::io(path.display(), e))?;
    // Registered before the validator reads it: a file truncated under the
    // mapping (its 0400 mode does not stop the owner) is Corrupt, not a
    // SIGBUS that kills the reader.
    let guard = crate::shm::guard(map.as_ptr(), map.len());
    let checked = format::validate(&map, Some(v))
        .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))?;
    guard.check(&path.display())?;
    Ok((file, map, guard, checked))
}

impl Closure {
    /// Opens the current version of closure `name`: maps it read-only,
    /// validates it in full, and holds it until dropped.
    ///
    /// `NotFound` if it was never published; `Corrupt` for a malformed
    /// version file; `Denied` for a symbolic link, a file of another uid or
    /// one others (or anyone) may write; `Invalid` for a bad name.
    pub fn open(domain: &Domain, name: &str) -> Result<Closure> {
        let dir = closure_dir(domain, name, false)?;
        let head = Head::open(&dir, false)?;
        let mut last = 0;
        for attempt in 0..OPEN_ATTEMPTS {
            let v = head.core().current();
            if v == 0 {
                return Err(err!(
                    NotFound,
                    "closure {name:?} has no version yet (a publisher is making the first one)"
                ));
            }
            if v == last {
                // The same version went away twice: someone else removed
                // the file of the current version.
                return Err(err!(
                    NotFound,
                    "{}: the current version's file is missing",
                    version_file(&dir, v).display()
                ));
            }
            match take_version(&dir, v) {
                Ok((file, map, guard, checked)) => {
                    return Ok(Closure {
                        guard: Some(guard),
                        map: Some(map),
                        file,
                        checked,
                        path: version_file(&dir, v),
                        dir,
                        name: name.to_owned(),
                        head,
                    })
                }
                Err(Take::Err(e)) => return Err(e),
                Err(Take::Gone) => {
                    // Superseded and collected before we could lock it.
                    if head.core().current() == v {
                        last = v;
                    }
                    if attempt > 10 {
                        std::thread::yield_now();
                    }
                }
            }
        }
        Err(err!(
            Unavailable,
            "closure {name:?}: the current version was superseded {OPEN_ATTEMPTS} times while opening it"
        ))
    }

    /// The version number.
    pub fn version(&self) -> u64 {
        self.checked.version
    }

    /// The closure's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Corrupt` if the version's file was truncated under the mapping (a
    /// `SIGBUS` caught, see `shm::guard`): what [`raw`](Closure::raw) and
    /// the values read since are zeros, not the published value. Bindings
    /// check it after reading; Rust callers may too.
    pub fn check(&self) -> Result<()> {
        match &self.guard {
            Some(g) => g.check(&self.path.display()),
            None => Ok(()),
        }
    }

    /// The whole version file as mapped (header included).
    pub fn raw(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// The value.
    pub fn root(&self) -> ValueRef<'_> {
        ValueRef::root(self.raw(), &self.checked)
    }

    /// The bytes of a bytes closure (its root is a byte string), no copy;
    /// `None` if the root is another kind of value.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.root().as_bytes()
    }

    /// The value at `offset` (for bindings that keep an offset instead of
    /// a [`ValueRef`]): `None` unless a value of this closure starts there
    /// ([`ValueRef::offset`]), so a made-up offset reads nothing.
    pub fn value_at(&self, offset: usize) -> Option<ValueRef<'_>> {
        ValueRef::at(self.raw(), &self.checked, offset)
    }

    /// The file of this version.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second reader of this version: a new open file description of its
    /// file (even if it was unlinked meanwhile) that holds its own
    /// `flock(LOCK_SH)`. For a binding that maps the file itself (Python's
    /// `mmap`, behind `memoryview`s) and must keep the version on disk for
    /// as long as that mapping lives, independently of this `Closure`.
    /// Closing the returned file (and every duplicate of it) lets go; the
    /// file of a superseded version is then removed by the next publish or
    /// release.
    pub fn reader_file(&self) -> Result<File> {
        let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let file = File::open(&proc_path).map_err(|e| Error::io(&proc_path, e))?;
        let (a, b) = (
            file.metadata().map_err(|e| Error::io(&proc_path, e))?,
            self.file
                .metadata()
                .map_err(|e| Error::io(self.path.display(), e))?,
        );
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return Err(err!(
                Io,
                "{proc_path} is not {} (is /proc mounted?)",
                self.path.display()
            ));
        }
        // Cannot conflict: our own description holds LOCK_SH, so no
        // collector holds LOCK_EX.
        if !try_flock(&file, Lock::Shared, &self.path)? {
            return Err(err!(Io, "{}: held exclusively", self.path.display()));
        }
        Ok(file)
    }
}

impl Drop for Closure {
    fn drop(&mut self) {
        drop(self.guard.take());
        drop(self.map.take());
        let current = self.head.core().current();
        if self.checked.version < current {
            // Superseded: if we were its last reader, the file goes now; and
            // any other superseded version whose readers are gone (killed
            // ones included: the kernel dropped their locks) goes with it.
            try_remove(&self.path, Some(&self.file));
            collect(&self.dir, current);
        }
    }
}

/// One version file of a closure, as [`list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VersionInfo {
    /// The version number.
    pub version: u64,
    /// Size of its file in bytes.
    pub size: u64,
    /// How many open file descriptions hold it (`flock(LOCK_SH)`), from
    /// `/proc/locks`: its readers.
    pub readers: u32,
}

/// A closure of a domain, as [`list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClosureInfo {
    /// Its name.
    pub name: String,
    /// The current version (0 if none is complete yet).
    pub current: u64,
    /// The version files on disk, oldest first (the current one and
    /// superseded ones that readers still hold or that were not collected
    /// yet).
    pub versions: Vec<VersionInfo>,
}

/// The closures of `domain`, sorted by name, with their current version,
/// the versions on disk and their readers (for `mtipc sessions`). Entries
/// that are not closures (bad names, links, corrupt heads) are skipped.
pub fn list(domain: &Domain) -> Result<Vec<ClosureInfo>> {
    let top = domain.path().join(CLOSURES_DIR);
    match checked_dir(&top, false) {
        Ok(()) => {}
        Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let readers = locks::read_flock_readers();
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&top).map_err(|e| Error::io(top.display(), e))?;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if validate_name(&name).is_err() {
            continue;
        }
        let dir = top.join(&name);
        if checked_dir(&dir, false).is_err() {
            continue;
        }
        let Ok(head) = Head::open(&dir, false) else {
            continue;
        };
        let mut versions = Vec::new();
        if let Ok(files) = std::fs::read_dir(&dir) {
            for f in files.flatten() {
                let Some(v) = f.file_name().to_str().and_then(parse_version_name) else {
                    continue;
                };
                let Ok(md) = std::fs::symlink_metadata(f.path()) else {
                    continue;
                };
                if !md.is_file() {
                    continue;
                }
                versions.push(VersionInfo {
                    version: v,
                    size: md.len(),
                    readers: readers.get(&locks::key_of(&md)).copied().unwrap_or(0),
                });
            }
        }
        versions.sort_by_key(|v| v.version);
        out.push(ClosureInfo {
            name,
            current: head.core().current(),
            versions,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the superseded versions of closure `name` that no reader holds
/// (what publishing and releasing do anyway); returns how many it removed.
pub fn collect_unused(domain: &Domain, name: &str) -> Result<usize> {
    let dir = closure_dir(domain, name, false)?;
    let head = Head::open(&dir, false)?;
    Ok(collect(&dir, head.core().current()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Closure>();
    }

    #[test]
    fn names() {
        for good in ["a", "routing.v2", "A_b-c", &"x".repeat(64)] {
            validate_name(good).unwrap();
        }
        for bad in ["", ".x", "-x", "a/b", "a b", "é", &"x".repeat(65), ".."] {
            assert_eq!(
                validate_name(bad).unwrap_err().kind(),
                crate::ErrorKind::Invalid
            );
        }
    }

    #[test]
    fn version_and_temp_names() {
        assert_eq!(parse_version_name("v1"), Some(1));
        assert_eq!(parse_version_name("v42"), Some(42));
        for bad in ["v", "v0", "v01", "x1", "v1a", "v-1", "head"] {
            assert_eq!(parse_version_name(bad), None, "{bad}");
        }
        assert_eq!(temp_owner(".v3.tmp.1234.0"), Some(1234));
        assert_eq!(temp_owner(".v3.tmp.1234"), None);
        assert_eq!(temp_owner(".head.tmp.1234.0"), None);
    }
}
