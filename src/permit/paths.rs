//! Paths inside a gateway volume.
//!
//! A permit names a file by a path relative to the volume's directory:
//! non-empty parts separated by `/`, none of them `.` or `..`, no NUL or
//! control characters, each part at most 255 bytes, the whole at most
//! [`MAX_PATH`] bytes. Files are reached from a descriptor of the volume
//! directory with `openat2(RESOLVE_BENEATH)`, so a symbolic link inside the
//! volume that points out of it is refused by the kernel (`Denied`), not
//! followed; a link that stays inside is fine.

use crate::error::{err, Error, Result};
use rustix::fs::{Mode as FileMode, OFlags, ResolveFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Longest path inside a volume, in bytes.
pub const MAX_PATH: usize = 400;

/// Longest part of a path (a file or directory name), in bytes.
pub const MAX_PART: usize = 255;

/// Checks `path` (see the module's rules): `Invalid`, naming the fault,
/// otherwise.
pub fn check(path: &str) -> Result<()> {
    let shown = || crate::sys::shown(path);
    if path.is_empty() || path.len() > MAX_PATH {
        return Err(err!(
            Invalid,
            "path {}: 1 to {MAX_PATH} bytes, not {}",
            shown(),
            path.len()
        ));
    }
    if path.starts_with('/') {
        return Err(err!(
            Invalid,
            "path {}: absolute; paths are relative to the volume's directory",
            shown()
        ));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(err!(
                Invalid,
                "path {}: has an empty, `.` or `..` part; a path never leaves the volume",
                shown()
            ));
        }
        if part.len() > MAX_PART {
            return Err(err!(
                Invalid,
                "path {}: a part longer than {MAX_PART} bytes",
                shown()
            ));
        }
        if part.chars().any(char::is_control) {
            return Err(err!(Invalid, "path {}: control characters", shown()));
        }
    }
    Ok(())
}

/// Splits a checked path into its directory part (`""` for the volume's
/// top) and its file name.
pub fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((dir, leaf)) => (dir, leaf),
        None => ("", path),
    }
}

/// Opens the volume directory `dir` (no symbolic link as its last part).
pub fn open_volume(dir: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        FileMode::empty(),
    )
    .map_err(|e| Error::io(dir.display(), e.into()))
}

fn beneath(
    vol: impl AsFd,
    path: &str,
    flags: OFlags,
    mode: FileMode,
    what: &dyn Fn() -> String,
) -> Result<OwnedFd> {
    let r = crate::sys::retry(|| {
        rustix::fs::openat2(
            &vol,
            if path.is_empty() { "." } else { path },
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
    });
    r.map_err(|e| match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ELOOP) => err!(
            Denied,
            "{}: resolves outside the volume (a symbolic link pointing out of it)",
            what()
        ),
        Some(libc::ENOSYS) => err!(
            Unavailable,
            "{}: this kernel has no openat2 (Linux 5.6 or later is needed)",
            what()
        ),
        _ => Error::io(what(), e),
    })
}

/// Opens the file `path` of the volume open as `vol` for reading. `Denied`
/// if it resolves outside the volume; `Invalid` if it is not a regular file.
pub fn open_file(vol: impl AsFd, path: &str) -> Result<OwnedFd> {
    let fd = beneath(vol, path, OFlags::RDONLY, FileMode::empty(), &|| {
        format!("volume path {path}")
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(path, e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(err!(Invalid, "volume path {path}: not a regular file"));
    }
    Ok(fd)
}

/// Opens the directory `dir` (a checked path's directory part, `""` for the
/// top) of the volume open as `vol`, creating the parts that are missing
/// (mode 0755, less the umask) when `create`. `Denied` if it resolves
/// outside the volume.
pub fn open_dir(vol: impl AsFd, dir: &str, create: bool) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let what = || format!("volume directory {dir}");
    match beneath(&vol, dir, flags, FileMode::empty(), &what) {
        Err(e) if create && e.kind() == crate::ErrorKind::NotFound => {}
        other => return other,
    }
    // Create part by part, each from the descriptor of the one above it.
    let mut cur = beneath(&vol, "", flags, FileMode::empty(), &what)?;
    for part in dir.split('/') {
        match rustix::fs::mkdirat(&cur, part, FileMode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io(what(), e.into())),
        }
        cur = beneath(&cur, part, flags, FileMode::empty(), &what)?;
    }
    Ok(cur)
}
