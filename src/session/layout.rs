//! The byte layout of a session table region and its validation.
//!
//! ```text
//! offset   size               what
//! 0        64                 region header (shm::RegionHeader, magic "MTIPCTBL")
//! 64       64                 table header (little-endian):
//!                               64 capacity u32, 68 records u32,
//!                               72 entry size u32, 76 MAX_USER_DATA u32,
//!                               80 MAX_TENANT u32, 84 reserved u32 (0),
//!                               88 records offset u64, 96 entries offset u64,
//!                               104..128 reserved (0)
//! 128      records * 16       process records (records::RecordSlot)
//! E        capacity * 256     entries (entry::Entry), E = records end
//!                             rounded up to 4096
//! ```
//!
//! Everything in the table header is recomputed from the capacity and the
//! record count and compared: a region that disagrees is `Corrupt`, never
//! used.

use super::entry::{ENTRY_SIZE, MAX_CAPACITY, MAX_TENANT, MAX_USER_DATA};
use crate::error::{err, Result};
use crate::shm::records::{MAX_RECORDS, RECORD_SIZE};
use crate::shm::{check_header, RegionHeader, HEADER_SIZE};

/// The magic of a session table region.
pub const MAGIC: &[u8; 8] = b"MTIPCTBL";
/// Bytes at the start of the region that describe it (region header and
/// table header).
pub const PREFIX: usize = 128;
/// Alignment of the entry array.
const ENTRIES_ALIGN: u64 = 4096;

/// Where everything is in a table region of a given capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Number of session slots.
    pub capacity: u32,
    /// Number of process records.
    pub records: u32,
    /// Offset of the process records.
    pub records_off: u64,
    /// Offset of the entries.
    pub entries_off: u64,
    /// Size of the whole region.
    pub total: u64,
}

impl Geometry {
    /// The geometry of a table of `capacity` slots and `records` process
    /// records; `Invalid` if either is out of range.
    pub fn new(capacity: u32, records: u32) -> Result<Geometry> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(err!(
                Invalid,
                "session table capacity {capacity}: must be 1 to {MAX_CAPACITY}"
            ));
        }
        if records == 0 || records > MAX_RECORDS {
            return Err(err!(
                Invalid,
                "process record count {records}: must be 1 to {MAX_RECORDS}"
            ));
        }
        let records_off = PREFIX as u64;
        let records_end = records_off + u64::from(records) * RECORD_SIZE as u64;
        let entries_off = records_end.div_ceil(ENTRIES_ALIGN) * ENTRIES_ALIGN;
        let total = entries_off + u64::from(capacity) * ENTRY_SIZE as u64;
        Ok(Geometry {
            capacity,
            records,
            records_off,
            entries_off,
            total,
        })
    }

    /// The first [`PREFIX`] bytes of a new region of this geometry.
    pub fn encode(&self) -> [u8; PREFIX] {
        let mut b = [0u8; PREFIX];
        let h = RegionHeader {
            magic: *MAGIC,
            layout_version: crate::LAYOUT_VERSION,
            header_size: HEADER_SIZE as u32,
            total_size: self.total,
        };
        b[..HEADER_SIZE].copy_from_slice(&h.encode());
        b[64..68].copy_from_slice(&self.capacity.to_le_bytes());
        b[68..72].copy_from_slice(&self.records.to_le_bytes());
        b[72..76].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        b[76..80].copy_from_slice(&(MAX_USER_DATA as u32).to_le_bytes());
        b[80..84].copy_from_slice(&(MAX_TENANT as u32).to_le_bytes());
        b[88..96].copy_from_slice(&self.records_off.to_le_bytes());
        b[96..104].copy_from_slice(&self.entries_off.to_le_bytes());
        b
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Validates a table region from its first bytes (`head`, at least
/// [`PREFIX`] of them if the file has them) and the file's length `len`.
/// Returns the geometry, recomputed from the capacity and record count and
/// compared with everything the header says. `Corrupt` for any mismatch,
/// `Version` for another layout version. Pure: reads only `head`.
pub fn validate_prefix(head: &[u8], len: u64, what: &str) -> Result<Geometry> {
    let h = RegionHeader::decode(head).ok_or_else(|| {
        err!(
            Corrupt,
            "{what}: truncated ({len} bytes; a session table starts with {PREFIX})"
        )
    })?;
    // Magic and version first: a file that is not a table, or of another
    // version, is named as such rather than by its first odd field.
    check_header(&h, MAGIC, h.total_size, what)?;
    if head.len() < PREFIX || len < PREFIX as u64 {
        return Err(err!(
            Corrupt,
            "{what}: truncated ({len} bytes; a session table starts with {PREFIX})"
        ));
    }
    let capacity = u32_at(head, 64);
    let records = u32_at(head, 68);
    let geo =
        Geometry::new(capacity, records).map_err(|e| err!(Corrupt, "{what}: {}", e.message()))?;
    if head[..PREFIX] != geo.encode()[..] {
        let fields = [
            ("entry size", u64::from(u32_at(head, 72)), ENTRY_SIZE as u64),
            (
                "user data limit",
                u64::from(u32_at(head, 76)),
                MAX_USER_DATA as u64,
            ),
            (
                "tenant limit",
                u64::from(u32_at(head, 80)),
                MAX_TENANT as u64,
            ),
            ("records offset", u64_at(head, 88), geo.records_off),
            ("entries offset", u64_at(head, 96), geo.entries_off),
            ("total size", h.total_size, geo.total),
        ];
        for (name, found, want) in fields {
            if found != want {
                return Err(err!(
                    Corrupt,
                    "{what}: {name} is {found}; a table of capacity {capacity} has {want}"
                ));
            }
        }
        return Err(err!(Corrupt, "{what}: reserved header bytes are not zero"));
    }
    if len != geo.total {
        return Err(err!(
            Corrupt,
            "{what}: file is {len} bytes; a table of capacity {capacity} is {} bytes",
            geo.total
        ));
    }
    Ok(geo)
}

/// Validates a whole table region given as bytes (see [`validate_prefix`]).
/// This is the parser the fuzz target `session_region` drives.
pub fn validate_region(bytes: &[u8]) -> Result<Geometry> {
    validate_prefix(bytes, bytes.len() as u64, "session table")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind::*;

    #[test]
    fn a_million_sessions_fit_in_256_mib() {
        let g = Geometry::new(1_000_000, crate::shm::records::DEFAULT_RECORDS).unwrap();
        assert!(g.total <= 256 << 20, "{} bytes", g.total);
        assert_eq!(g.entries_off % 4096, 0);
        assert!(g.entries_off >= g.records_off + 4096 * 16);
    }

    fn region(cap: u32) -> Vec<u8> {
        let g = Geometry::new(cap, 8).unwrap();
        let mut v = g.encode().to_vec();
        v.resize(g.total as usize, 0);
        v
    }

    #[test]
    fn validation() {
        let good = region(3);
        assert_eq!(validate_region(&good).unwrap().capacity, 3);
        let k = |b: &[u8]| validate_region(b).unwrap_err().kind();
        assert_eq!(k(&good[..100]), Corrupt);
        assert_eq!(k(&good[..10]), Corrupt);
        assert_eq!(k(&good[..good.len() - 1]), Corrupt);
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(k(&longer), Corrupt);
        for at in [0, 12, 16, 64, 69, 72, 76, 80, 84, 88, 96, 120] {
            let mut b = good.clone();
            b[at] ^= 0x40;
            assert_eq!(k(&b), Corrupt, "byte {at}");
        }
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(k(&b), Version);
        // Capacity 0 and beyond the maximum.
        for cap in [0u32, MAX_CAPACITY + 1, u32::MAX] {
            let mut b = good.clone();
            b[64..68].copy_from_slice(&cap.to_le_bytes());
            assert_eq!(k(&b), Corrupt);
        }
    }
}
