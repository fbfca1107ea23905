//! Transfer sessions: a file copied into or out of a volume through a
//! temporary name in the destination's directory, flushed (`fsync`), and
//! renamed into place only while the permit is current ([`Grant::commit`]:
//! the check and the rename cannot be separated by a conflicting grant).
//! The copy uses the kernel's copy offload (`copy_file_range`) and falls
//! back to read/write where the file systems do not support it. A reader
//! never sees a half-written file under its final name; a fenced holder's
//! rename never happens, and its temporary file is removed.

use super::paths;
use super::Grant;
use crate::error::{err, Error, Result};
use rustix::fs::{Mode as FileMode, OFlags};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Copies the local file `src` to `path` of the volume at `dir`.
/// Returns the bytes copied.
pub(super) fn put(dir: &Path, path: &str, src: &Path, grant: &dyn Grant) -> Result<u64> {
    let input = open_local_source(src)?;
    let vol = paths::open_volume(dir)?;
    let (sub, leaf) = paths::split(path);
    let parent = paths::open_dir(&vol, sub, true)?;
    let tmp = crate::sys::fs::temp_name(leaf);
    let out = create_temp(&parent, &tmp, path)?;
    let result = (|| {
        let n = copy(&input, &out, path)?;
        out.sync_all().map_err(|e| Error::io(path, e))?;
        crate::failpoint::hit("permit.put.before_commit");
        grant.commit(&mut || {
            rustix::fs::renameat(&parent, tmp.as_str(), &parent, leaf).map_err(|e| match e {
                rustix::io::Errno::ISDIR | rustix::io::Errno::NOTDIR => {
                    err!(Invalid, "volume path {path}: a directory is in the way")
                }
                e => Error::io(format!("volume path {path}"), e.into()),
            })
        })?;
        rustix::fs::fsync(&parent).map_err(|e| Error::io(path, e.into()))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&parent, tmp.as_str(), rustix::fs::AtFlags::empty());
    }
    result
}

/// Copies `path` of the volume at `dir` to the local file `dst`. Returns
/// the bytes copied.
pub(super) fn get(dir: &Path, path: &str, dst: &Path, grant: &dyn Grant) -> Result<u64> {
    let vol = paths::open_volume(dir)?;
    let input = File::from(paths::open_file(&vol, path)?);
    let shown = dst.display();
    let parent_path = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let leaf = dst
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err!(Invalid, "destination {shown}: no UTF-8 file name"))?;
    let parent: OwnedFd = rustix::fs::open(
        parent_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        FileMode::empty(),
    )
    .map_err(|e| Error::io(parent_path.display(), e.into()))?;
    let tmp = crate::sys::fs::temp_name(leaf);
    let out = create_temp(&parent, &tmp, &shown.to_string())?;
    let result = (|| {
        let n = copy(&input, &out, path)?;
        out.sync_all().map_err(|e| Error::io(&shown, e))?;
        grant.commit(&mut || {
            rustix::fs::renameat(&parent, tmp.as_str(), &parent, leaf)
                .map_err(|e| Error::io(&shown, e.into()))
        })?;
        rustix::fs::fsync(&parent).map_err(|e| Error::io(&shown, e.into()))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&parent, tmp.as_str(), rustix::fs::AtFlags::empty());
    }
    result
}

fn open_local_source(src: &Path) -> Result<File> {
    let f = File::open(src).map_err(|e| Error::io(src.display(), e))?;
    let md = f.metadata().map_err(|e| Error::io(src.display(), e))?;
    if !md.is_file() {
        return Err(err!(Invalid, "{}: not a regular file", src.display()));
    }
    Ok(f)
}

/// Creates the temporary file `name` in `dir` (new, never through a link).
fn create_temp(dir: &impl AsFd, name: &str, what: &str) -> Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        FileMode::from_raw_mode(0o644),
    )
    .map_err(|e| Error::io(format!("temporary file for {what}"), e.into()))?;
    Ok(File::from(fd))
}

/// Copies all of `input` to `out` from their current offsets: the kernel's
/// copy offload first, read/write if it does not apply.
fn copy(input: &File, out: &File, what: &str) -> Result<u64> {
    let mut total = 0u64;
    loop {
        match rustix::fs::copy_file_range(input, None, out, None, 1 << 30) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::BADF,
            ) if total == 0 => return copy_plain(input, out, what),
            Err(e) => return Err(Error::io(what, e.into())),
        }
    }
}

fn copy_plain(mut input: &File, mut out: &File, what: &str) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(what, e)),
        };
        out.write_all(&buf[..n]).map_err(|e| Error::io(what, e))?;
        total += n as u64;
    }
}
