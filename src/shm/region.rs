//! Files of a domain that several processes map or read: creation without
//! races, the common region header, and its validation.
//!
//! Every region starts with a 64-byte [`RegionHeader`]: magic, layout
//! version, header size, total size (all little-endian). A region is created
//! under a temporary name, fully initialised, and only then published with
//! `link(2)` under its real name, so no process ever maps a half-made region
//! and two processes racing to create it agree on one. Opening validates the
//! file (a regular file of our uid, owner-only, of the expected size) and the
//! header before anything else reads it: another process wrote it, so it is
//! untrusted input.

use super::sigbus::{guard, Guard};

use crate::error::{err, Error, Result};
use memmap2::{MmapOptions, MmapRaw};

use std::io::Write;
use std::path::{Path, PathBuf};

/// Size of the header every region starts with.
pub const HEADER_SIZE: usize = 64;

/// The fixed part at the start of every shared-memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionHeader {
    /// Eight bytes that name the kind of region (`b"MTIPCSEM"`, ...).
    pub magic: [u8; 8],
    /// The layout version the region was made with.
    pub layout_version: u32,
    /// Size of this header in bytes ([`HEADER_SIZE`]).
    pub header_size: u32,
    /// Size of the whole region in bytes, header included.
    pub total_size: u64,
}

impl RegionHeader {
    /// The header bytes as they are stored (little-endian, zero padded).
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.layout_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.total_size.to_le_bytes());
        b
    }

    /// Reads the header fields from the start of `bytes`. Only fails if
    /// there are fewer than [`HEADER_SIZE`] bytes; [`validate`] checks values.
    pub fn decode(bytes: &[u8]) -> Option<RegionHeader> {
        let b = bytes.get(..HEADER_SIZE)?;
        Some(RegionHeader {
            magic: b[0..8].try_into().ok()?,
            layout_version: u32::from_le_bytes(b[8..12].try_into().ok()?),
            header_size: u32::from_le_bytes(b[12..16].try_into().ok()?),
            total_size: u64::from_le_bytes(b[16..24].try_into().ok()?),
        })
    }
}

/// Checks that `bytes` (a whole region as found on disk) is a region of kind
/// `magic` and size `expected_size` made with this layout version.
///
/// This is the parser of untrusted region headers; `fuzz/` has a target for
/// it. Errors: `Corrupt` for anything malformed, `Version` for a well-formed
/// header of another layout version.
pub fn validate(bytes: &[u8], magic: &[u8; 8], expected_size: u64, what: &str) -> Result<()> {
    let h = RegionHeader::decode(bytes).ok_or_else(|| truncated(bytes.len() as u64, what))?;
    check_header(&h, magic, expected_size, what)?;
    if bytes.len() as u64 != expected_size {
        return Err(err!(
            Corrupt,
            "{what}: region is {} bytes; expected {expected_size}",
            bytes.len()
        ));
    }
    Ok(())
}

fn truncated(len: u64, what: &str) -> Error {
    err!(
        Corrupt,
        "{what}: truncated ({len} bytes; a region header needs {HEADER_SIZE})"
    )
}

/// Checks the header fields alone (see [`validate`]): for a caller that
/// learns the expected size from the region itself.
pub fn check_header(
    h: &RegionHeader,
    magic: &[u8; 8],
    expected_size: u64,
    what: &str,
) -> Result<()> {
    if &h.magic != magic {
        return Err(err!(
            Corrupt,
            "{what}: bad magic {:02x?} (expected {:?}): not an mtipc region of this kind",
            h.magic,
            String::from_utf8_lossy(magic)
        ));
    }
    if h.layout_version != crate::LAYOUT_VERSION {
        return Err(err!(
            Version,
            "{what}: made with layout version {}; this mtipc {} uses layout {}",
            h.layout_version,
            crate::VERSION,
            crate::LAYOUT_VERSION
        ));
    }
    if h.header_size as usize != HEADER_SIZE {
        return Err(err!(
            Corrupt,
            "{what}: header size {} (expected {HEADER_SIZE})",
            h.header_size
        ));
    }
    if h.total_size != expected_size {
        return Err(err!(
            Corrupt,
            "{what}: header gives a size of {} bytes; expected {expected_size}",
            h.total_size
        ));
    }
    Ok(())
}

/// A validated shared mapping of a whole region file.
#[derive(Debug)]
pub struct Region {
    // Dropped (unregistered) before the map is unmapped.
    guard: Guard,
    map: MmapRaw,
    path: PathBuf,
}

impl Region {
    /// Opens the region at `path`, creating it if missing with a header of
    /// kind `magic`, size `size`, and the rest zero, then validates it.
    pub fn open_or_create(path: &Path, magic: &[u8; 8], size: u64, what: &str) -> Result<Region> {
        debug_assert!(size as usize >= HEADER_SIZE);
        let file = match crate::sys::fs::open_checked(path, true) {
            Ok(f) => f,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                let header = RegionHeader {
                    magic: *magic,
                    layout_version: crate::LAYOUT_VERSION,
                    header_size: HEADER_SIZE as u32,
                    total_size: size,
                };
                crate::sys::fs::publish_new(path, size, |mut f| {
                    f.write_all(&header.encode())
                        .map_err(|e| Error::io(path.display(), e))
                })?;
                crate::sys::fs::open_checked(path, true)?
            }
            Err(e) => return Err(e),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(path.display(), e))?
            .len();
        if len != size {
            // Say what is wrong with the header if anything (other version,
            // bad magic...), else that the file has the wrong length; never
            // map past the end of a short file.
            let mut head = [0u8; HEADER_SIZE];
            use std::os::unix::fs::FileExt;
            let n = file.read_at(&mut head, 0).unwrap_or(0);
            let h = RegionHeader::decode(&head[..n]).ok_or_else(|| truncated(len, what))?;
            check_header(&h, magic, size, what)?;
            return Err(err!(
                Corrupt,
                "{what}: file is {len} bytes; expected {size}"
            ));
        }
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(path.display(), e))?;
        // Registered before the first read: a truncation from now on is a
        // broken region, not a dead process.
        let guard = guard(map.as_ptr(), size as usize);
        // SAFETY: the mapping is `size` bytes long and stays mapped while
        // `map` lives; we only read it here.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), size as usize) };
        validate(bytes, magic, size, what)?;
        guard.check(&what)?;
        Ok(Region {
            guard,
            map,
            path: path.to_path_buf(),
        })
    }

    /// `Corrupt` if the region's file was truncated under the mapping
    /// (see [`sigbus`](self::guard)): its contents are zeros now.
    pub fn check(&self) -> Result<()> {
        self.guard.check(&self.path.display())
    }

    /// Start of the mapping (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The file the region maps.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(magic: &[u8; 8], version: u32, size: u64, len: usize) -> Vec<u8> {
        let mut v = RegionHeader {
            magic: *magic,
            layout_version: version,
            header_size: HEADER_SIZE as u32,
            total_size: size,
        }
        .encode()
        .to_vec();
        v.resize(len, 0);
        v
    }

    #[test]
    fn validate_accepts_good_and_refuses_bad() {
        let m = b"MTIPCTST";
        validate(&region(m, 1, 128, 128), m, 128, "t").unwrap();
        let k = |r: Result<()>| r.unwrap_err().kind();
        use crate::ErrorKind::*;
        assert_eq!(k(validate(&[], m, 128, "t")), Corrupt);
        assert_eq!(
            k(validate(&region(m, 1, 128, 128)[..40], m, 128, "t")),
            Corrupt
        );
        assert_eq!(
            k(validate(&region(b"XXXXXXXX", 1, 128, 128), m, 128, "t")),
            Corrupt
        );
        assert_eq!(k(validate(&region(m, 2, 128, 128), m, 128, "t")), Version);
        assert_eq!(k(validate(&region(m, 1, 256, 128), m, 128, "t")), Corrupt);
        assert_eq!(k(validate(&region(m, 1, 128, 100), m, 128, "t")), Corrupt);
        let mut bad_hs = region(m, 1, 128, 128);
        bad_hs[12] = 7;
        assert_eq!(k(validate(&bad_hs, m, 128, "t")), Corrupt);
    }
}
