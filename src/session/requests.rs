//! The request/response area: its byte layout, the encoding of its state
//! words, and the validator of a region another process made.
//!
//! The layout (docs/session.md, "The request/response area"), all offsets
//! recomputed from the four capacities and compared on open:
//!
//! ```text
//! 0       region header (64 B, magic "MTIPCREQ", see crate::shm)
//! 64      area header (64 B, little-endian; written once at creation):
//!           +0 groups u32   +4 workers u32   +8 slots u32   +12 max_message u32
//!           +16 buf_size u32 (max_message rounded up to 64)
//!           +20 features u32 (FEATURES: what this layout maintains)
//!           +24 groups_off u64  +32 workers_off u64  +40 words_off u64
//!           +48 heads_off u64   +56 data_off u64
//! 128     groups × 64 B            (GroupRec)
//!         workers × 64 B           (WorkerRec)
//!         slots × 8 B, padded to 64 (the slot state words, contiguous so a
//!                                    worker's scan reads few cache lines)
//!         slots × 64 B             (SlotHead)
//!         (padding to 4096)
//! data    slots × 2 × buf_size     (request buffer, then response buffer)
//! ```

use crate::error::{err, Result};
use crate::session::entry::WorkerRef;
use crate::shm::records::Holder;
use crate::sync::{AtomicU32, AtomicU64, Futex};

/// Magic of the request area's region header.
pub const MAGIC: &[u8; 8] = b"MTIPCREQ";
/// Fewest worker groups an area has (the patent's two software suites).
pub const MIN_GROUPS: u32 = 2;
/// Most worker groups an area has (6 bits of a slot word).
pub const MAX_GROUPS: u32 = 64;
/// Most worker records an area has (12 bits of a slot word).
pub const MAX_WORKERS: u32 = 4095;
/// Most request slots an area has.
pub const MAX_SLOTS: u32 = 65536;
/// Bits of the summary of queued slots in each group record
/// ([`GroupRec::queued`]): one bit covers [`Geometry::per_bit`] slots.
pub const SUMMARY_BITS: u32 = 256;
/// Feature bit of the area header: every group record keeps the summary
/// of its queued slots ([`GroupRec::queued`]). An area without it was made
/// by an older mtipc and is refused (`Version`).
pub const FEATURE_QUEUED_SUMMARY: u32 = 1;
/// The features an area made by this version has (area header +20).
pub const FEATURES: u32 = FEATURE_QUEUED_SUMMARY;
/// Largest `max_message` (bytes of one request or one response).
pub const MAX_MESSAGE_LIMIT: u32 = 16 << 20;
/// Largest request area (bytes, whole region): 64 GiB of address space.
pub const MAX_AREA_SIZE: u64 = 64 << 30;

/// Size of the area header that follows the region header.
pub const AREA_HEADER_SIZE: usize = 64;
/// Size of one group record.
pub const GROUP_SIZE: usize = 64;
/// Size of one worker record.
pub const WORKER_SIZE: usize = 64;
/// Size of one slot head.
pub const HEAD_SIZE: usize = 64;
/// Alignment of the data buffers.
const DATA_ALIGN: u64 = 4096;
/// Size of the region header (`crate::shm::HEADER_SIZE`, which is not
/// built under loom).
const REGION_HEADER: usize = 64;
#[cfg(not(loom))]
const _: () = assert!(REGION_HEADER == crate::shm::HEADER_SIZE);

/// The capacities an area is made with, and every offset derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Number of worker groups (2..=64).
    pub groups: u32,
    /// Number of worker records (1..=4095).
    pub workers: u32,
    /// Number of request slots (1..=65536).
    pub slots: u32,
    /// Largest request or response, in bytes (1..=16 MiB).
    pub max_message: u32,
    /// Bytes of one buffer: `max_message` rounded up to 64.
    pub buf_size: u32,
    /// Offset of the group records.
    pub groups_off: u64,
    /// Offset of the worker records.
    pub workers_off: u64,
    /// Offset of the slot state words.
    pub words_off: u64,
    /// Offset of the slot heads.
    pub heads_off: u64,
    /// Offset of the data buffers.
    pub data_off: u64,
    /// Size of the whole region.
    pub total_size: u64,
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl Geometry {
    /// The geometry of an area with these capacities, or `Invalid` naming
    /// the limit a value is outside of.
    pub fn new(groups: u32, workers: u32, slots: u32, max_message: u32) -> Result<Geometry> {
        if !(MIN_GROUPS..=MAX_GROUPS).contains(&groups) {
            return Err(err!(
                Invalid,
                "a request area has {MIN_GROUPS} to {MAX_GROUPS} worker groups, not {groups}"
            ));
        }
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(err!(
                Invalid,
                "a request area has 1 to {MAX_WORKERS} worker records, not {workers}"
            ));
        }
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(err!(
                Invalid,
                "a request area has 1 to {MAX_SLOTS} request slots, not {slots}"
            ));
        }
        if !(1..=MAX_MESSAGE_LIMIT).contains(&max_message) {
            return Err(err!(
                Invalid,
                "max_message is 1 to {MAX_MESSAGE_LIMIT} bytes, not {max_message}"
            ));
        }
        let buf_size = round_up(u64::from(max_message), 64).unwrap_or(u64::MAX);
        let groups_off = (REGION_HEADER + AREA_HEADER_SIZE) as u64;
        let workers_off = groups_off + u64::from(groups) * GROUP_SIZE as u64;
        let words_off = workers_off + u64::from(workers) * WORKER_SIZE as u64;
        let heads_off = words_off + round_up(u64::from(slots) * 8, 64).unwrap_or(u64::MAX);
        let heads_end = heads_off + u64::from(slots) * HEAD_SIZE as u64;
        let data_off = round_up(heads_end, DATA_ALIGN).unwrap_or(u64::MAX);
        let total_size = u64::from(slots)
            .checked_mul(2 * buf_size)
            .and_then(|d| d.checked_add(data_off))
            .filter(|&t| t <= MAX_AREA_SIZE)
            .ok_or_else(|| {
                err!(
                    Invalid,
                    "{slots} slots of {max_message} bytes make a request area larger than {MAX_AREA_SIZE} bytes"
                )
            })?;
        Ok(Geometry {
            groups,
            workers,
            slots,
            max_message,
            buf_size: buf_size as u32,
            groups_off,
            workers_off,
            words_off,
            heads_off,
            data_off,
            total_size,
        })
    }

    /// The area header bytes (what follows the region header).
    pub fn encode(&self) -> [u8; AREA_HEADER_SIZE] {
        let mut b = [0u8; AREA_HEADER_SIZE];
        b[0..4].copy_from_slice(&self.groups.to_le_bytes());
        b[4..8].copy_from_slice(&self.workers.to_le_bytes());
        b[8..12].copy_from_slice(&self.slots.to_le_bytes());
        b[12..16].copy_from_slice(&self.max_message.to_le_bytes());
        b[20..24].copy_from_slice(&FEATURES.to_le_bytes());
        b[16..20].copy_from_slice(&self.buf_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.groups_off.to_le_bytes());
        b[32..40].copy_from_slice(&self.workers_off.to_le_bytes());
        b[40..48].copy_from_slice(&self.words_off.to_le_bytes());
        b[48..56].copy_from_slice(&self.heads_off.to_le_bytes());
        b[56..64].copy_from_slice(&self.data_off.to_le_bytes());
        b
    }

    /// Slots covered by one bit of a group's summary of queued slots: 1 up
    /// to `SUMMARY_BITS` (256) slots, then `slots / 256` rounded up.
    pub fn per_bit(&self) -> u32 {
        self.slots.div_ceil(SUMMARY_BITS).max(1)
    }

    /// Bits of a group's summary in use.
    pub fn summary_bits(&self) -> u32 {
        self.slots.div_ceil(self.per_bit())
    }

    /// Offset of slot `i`'s request buffer (its response buffer follows).
    pub fn buf_off(&self, i: u32) -> u64 {
        self.data_off + u64::from(i) * 2 * u64::from(self.buf_size)
    }
}

#[cfg(not(loom))]
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[cfg(not(loom))]
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(not(loom))]
/// Reads the geometry from the first bytes of a request area (region
/// header and area header: at least 128 bytes) without checking the total
/// size against a file: used to learn how large the file must be.
pub fn read_geometry(head: &[u8]) -> Result<Geometry> {
    let what = "request area";
    let h = crate::shm::RegionHeader::decode(head)
        .ok_or_else(|| err!(Corrupt, "{what}: truncated ({} bytes)", head.len()))?;
    // Magic, version and header size, as for every region; the total size
    // is compared with the one the capacities give below.
    crate::shm::check_header(&h, MAGIC, h.total_size, what)?;
    let start = crate::shm::HEADER_SIZE;
    let a = head
        .get(start..start + AREA_HEADER_SIZE)
        .ok_or_else(|| err!(Corrupt, "{what}: truncated ({} bytes)", head.len()))?;
    let g = Geometry::new(le32(a, 0), le32(a, 4), le32(a, 8), le32(a, 12))
        .map_err(|e| err!(Corrupt, "{what}: {}", e.message()))?;
    if le32(a, 20) != FEATURES {
        return Err(err!(
            Version,
            "{what}: made with features {:#x}; this mtipc {} needs {FEATURES:#x} \
             (an area made by an older mtipc: recreate it)",
            le32(a, 20),
            crate::VERSION
        ));
    }
    if a[..] != g.encode()[..] {
        return Err(err!(
            Corrupt,
            "{what}: the offsets in its header do not match its capacities \
             ({} groups, {} workers, {} slots, max_message {})",
            g.groups,
            g.workers,
            g.slots,
            g.max_message
        ));
    }
    if h.total_size != g.total_size {
        return Err(err!(
            Corrupt,
            "{what}: header gives a size of {} bytes; its capacities give {}",
            h.total_size,
            g.total_size
        ));
    }
    Ok(g)
}

#[cfg(not(loom))]
/// Validates a whole request area (as mapped or read from its file): the
/// headers, the geometry, and every state word, length and record it holds.
/// Returns the geometry. This is the parser of an untrusted region (fuzz
/// target `request_region`): anything malformed is `Corrupt`, another layout
/// version `Version`, and it never reads out of bounds.
///
/// The words change while processes run, so the code that uses them also
/// checks every value it decodes; this pass refuses a region that was
/// garbage before anyone used it.
pub fn validate(bytes: &[u8]) -> Result<Geometry> {
    let g = read_geometry(bytes)?;
    crate::shm::validate(bytes, MAGIC, g.total_size, "request area")?;
    for i in 0..g.workers {
        let at = (g.workers_off + u64::from(i) * WORKER_SIZE as u64) as usize;
        let w = le64(bytes, at);
        if WorkerWord::decode(w, g.groups).is_none() {
            return Err(err!(
                Corrupt,
                "request area: worker record {i} has a bad state word {w:#018x}"
            ));
        }
    }
    for i in 0..g.slots {
        let at = (g.words_off + u64::from(i) * 8) as usize;
        let w = le64(bytes, at);
        if SlotWord::decode(w, g.groups, g.workers).is_none() {
            return Err(err!(
                Corrupt,
                "request area: slot {i} has a bad state word {w:#018x}"
            ));
        }
        let h = (g.heads_off + u64::from(i) * HEAD_SIZE as u64) as usize;
        let (req, resp) = (le32(bytes, h + 16), le32(bytes, h + 20));
        if req > g.max_message || resp > g.max_message {
            return Err(err!(
                Corrupt,
                "request area: slot {i} gives lengths {req}/{resp} beyond max_message {}",
                g.max_message
            ));
        }
    }
    Ok(g)
}

// ---------------------------------------------------------------------------
// Shared records. `#[repr(C)]`, made only of atomics: the same code runs on
// the mapped bytes and, under loom, on heap memory.

/// One worker group (64 bytes).
#[repr(C)]
#[derive(Debug)]
pub struct GroupRec {
    /// Where the next search for an idle worker to wake starts.
    pub pick: AtomicU32,
    _r0: u32,
    /// Requests queued to the group (statistics).
    pub submitted: AtomicU64,
    /// Requests of the group re-queued after a worker died (statistics).
    pub requeued: AtomicU64,
    /// Requests of the group failed for want of a live worker (statistics).
    pub failed: AtomicU64,
    /// Summary of the group's queued slots, a hint that spares a worker
    /// the scan of every slot word: bit `b` is set after any slot of
    /// `[b × per_bit, (b + 1) × per_bit)` becomes queued to the group, and
    /// cleared only by a worker that then looks at those slots again
    /// (docs/session.md, "The summary of queued slots").
    pub queued: [AtomicU64; 4],
}

/// One worker record (64 bytes).
#[repr(C)]
#[derive(Debug)]
pub struct WorkerRec {
    /// The [`WorkerWord`].
    pub state: AtomicU64,
    /// The worker's doorbell: a counter bumped by whoever queues to it.
    pub bell: Futex,
    /// 1 while the worker is about to sleep on its doorbell; a submitter
    /// that swaps it to 0 has taken on waking it.
    pub idle: AtomicU32,
    /// Pid of the worker process (for `mtipc sessions`).
    pub pid: AtomicU32,
    _r0: u32,
    /// Start time of the worker process (clock ticks since boot).
    pub start: AtomicU64,
    /// Requests this worker answered (statistics).
    pub served: AtomicU64,
    _r1: [u64; 3],
}

/// The fixed part of one request slot (64 bytes); its state word is in
/// the separate array of words.
#[repr(C)]
#[derive(Debug)]
pub struct SlotHead {
    /// The session the request belongs to.
    pub session: AtomicU64,
    /// The submitter's futex: bumped whenever the slot is answered, failed
    /// or moved to another worker.
    pub bell: Futex,
    /// The submitting process ([`Holder`] word), written while filling.
    pub submitter: AtomicU32,
    /// Length of the request in the request buffer.
    pub req_len: AtomicU32,
    /// Length of the response in the response buffer.
    pub resp_len: AtomicU32,
    /// Why a failed slot failed (an `ErrorKind` code).
    pub status: AtomicU32,
    /// 1 while the submitter may sleep on `bell`: whoever bumps the bell
    /// calls the futex wake only then (a submitter that has not gone to
    /// sleep yet sees the bumped state before it would).
    pub sleeping: AtomicU32,
    _r1: [u64; 4],
}

// Constructors for heap copies (loom models and unit tests); shared ones
// live in mapped files, where all-zero bytes are these values.
impl Default for GroupRec {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupRec {
    /// A group record of a new area.
    pub fn new() -> GroupRec {
        GroupRec {
            pick: AtomicU32::new(0),
            _r0: 0,
            submitted: AtomicU64::new(0),
            requeued: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            queued: [
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
            ],
        }
    }
}

impl Default for WorkerRec {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerRec {
    /// A worker record of a new area.
    pub fn new() -> WorkerRec {
        WorkerRec {
            state: AtomicU64::new(0),
            bell: Futex::new(0),
            idle: AtomicU32::new(0),
            pid: AtomicU32::new(0),
            _r0: 0,
            start: AtomicU64::new(0),
            served: AtomicU64::new(0),
            _r1: [0; 3],
        }
    }
}

impl Default for SlotHead {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotHead {
    /// A slot head of a new area.
    pub fn new() -> SlotHead {
        SlotHead {
            session: AtomicU64::new(0),
            bell: Futex::new(0),
            submitter: AtomicU32::new(0),
            req_len: AtomicU32::new(0),
            resp_len: AtomicU32::new(0),
            status: AtomicU32::new(0),
            sleeping: AtomicU32::new(0),
            _r1: [0; 4],
        }
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<GroupRec>() == GROUP_SIZE);
    assert!(std::mem::size_of::<WorkerRec>() == WORKER_SIZE);
    assert!(std::mem::size_of::<SlotHead>() == HEAD_SIZE);
    assert!(std::mem::align_of::<SlotHead>() == 8);
};

// ---------------------------------------------------------------------------
// State words.

/// The state of a request slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Nobody uses it.
    Free,
    /// A submitter is copying a request in.
    Filling,
    /// Waiting for a worker.
    Queued,
    /// A worker serves it.
    Taken,
    /// Answered: the response waits for the submitter.
    Done,
    /// Failed (no live worker in its group): the error waits for the submitter.
    Failed,
}

impl SlotState {
    fn code(self) -> u64 {
        match self {
            SlotState::Free => 0,
            SlotState::Filling => 1,
            SlotState::Queued => 2,
            SlotState::Taken => 3,
            SlotState::Done => 4,
            SlotState::Failed => 5,
        }
    }
    fn from_code(c: u64) -> Option<SlotState> {
        Some(match c {
            0 => SlotState::Free,
            1 => SlotState::Filling,
            2 => SlotState::Queued,
            3 => SlotState::Taken,
            4 => SlotState::Done,
            5 => SlotState::Failed,
            _ => return None,
        })
    }
    /// Whether a slot in this state counts in its session's `in_flight`.
    pub fn in_flight(self) -> bool {
        matches!(self, SlotState::Queued | SlotState::Taken)
    }
    /// The name `mtipc sessions` shows.
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Free => "free",
            SlotState::Filling => "filling",
            SlotState::Queued => "queued",
            SlotState::Taken => "taken",
            SlotState::Done => "done",
            SlotState::Failed => "failed",
        }
    }
}

/// A worker named by a slot word or a binding: record index and the
/// generation the record had when the worker registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkerId {
    /// Index of the worker record.
    pub index: u32,
    /// Its generation.
    pub gen: u16,
}

impl WorkerId {
    /// The binding the session table stores for this worker.
    pub fn to_ref(self) -> WorkerRef {
        WorkerRef::new(self.index, u32::from(self.gen))
    }
    /// The worker a binding names (`None` for a bad record or generation).
    pub fn from_ref(r: WorkerRef, workers: u32) -> Option<WorkerId> {
        let index = r.record()?;
        let gen = u16::try_from(r.gen()).ok()?;
        (index < workers).then_some(WorkerId { index, gen })
    }
}

/// A decoded slot state word (64 bits):
///
/// ```text
/// bits 0-2   state (free 0, filling 1, queued 2, taken 3, done 4, failed 5)
/// bit  3     abandoned: the submitter no longer waits for the answer
/// filling:   bits 4-34 the claiming process (Holder word, 31 bits)
/// otherwise: bits 4-9 group, bits 10-21 worker index + 1 (0: any worker
///            of the group), bits 22-37 worker generation
/// bits 38-63 slot generation (bumped by every claim)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotWord {
    /// The state.
    pub state: SlotState,
    /// The submitter gave up on it.
    pub abandoned: bool,
    /// The group (0 when free or filling).
    pub group: u32,
    /// The worker it is queued to or taken by (`None`: any worker).
    pub worker: Option<WorkerId>,
    /// The claiming process (filling only).
    pub claimant: Holder,
    /// The slot generation (26 bits).
    pub gen: u32,
}

const GEN_SHIFT: u32 = 38;
/// Mask of a slot generation.
pub const SLOT_GEN_MASK: u32 = (1 << 26) - 1;

impl SlotWord {
    /// A free slot of generation `gen`.
    pub fn free(gen: u32) -> SlotWord {
        SlotWord {
            state: SlotState::Free,
            abandoned: false,
            group: 0,
            worker: None,
            claimant: Holder::NONE,
            gen,
        }
    }

    /// The same slot in another state with another target.
    pub fn with(self, state: SlotState, group: u32, worker: Option<WorkerId>) -> SlotWord {
        SlotWord {
            state,
            group,
            worker,
            claimant: Holder::NONE,
            ..self
        }
    }

    /// Encodes the word.
    pub fn encode(&self) -> u64 {
        let mut w = self.state.code() | (u64::from(self.abandoned) << 3);
        if self.state == SlotState::Filling {
            w |= u64::from(self.claimant.0 & 0x7fff_ffff) << 4;
        } else {
            w |= u64::from(self.group & 63) << 4;
            if let Some(t) = self.worker {
                w |= u64::from((t.index + 1) & 0xfff) << 10;
                w |= u64::from(t.gen) << 22;
            }
        }
        w | (u64::from(self.gen & SLOT_GEN_MASK) << GEN_SHIFT)
    }

    /// Decodes a word read from shared memory; `None` if it cannot be
    /// a word of an area with `groups` groups and `workers` worker records.
    pub fn decode(w: u64, groups: u32, workers: u32) -> Option<SlotWord> {
        let state = SlotState::from_code(w & 7)?;
        let abandoned = w & 8 != 0;
        let gen = (w >> GEN_SHIFT) as u32;
        if state == SlotState::Filling {
            if (w >> 35) & 7 != 0 || abandoned {
                return None; // bits a filling word never sets
            }
            return Some(SlotWord {
                state,
                abandoned,
                group: 0,
                worker: None,
                claimant: Holder((w >> 4) as u32 & 0x7fff_ffff),
                gen,
            });
        }
        let group = ((w >> 4) & 63) as u32;
        let widx1 = ((w >> 10) & 0xfff) as u32;
        let wgen = ((w >> 22) & 0xffff) as u16;
        if group >= groups || widx1 > workers || (widx1 == 0 && wgen != 0) {
            return None;
        }
        if state == SlotState::Free && (group != 0 || widx1 != 0 || abandoned) {
            return None;
        }
        Some(SlotWord {
            state,
            abandoned,
            group,
            worker: widx1
                .checked_sub(1)
                .map(|index| WorkerId { index, gen: wgen }),
            claimant: Holder::NONE,
            gen,
        })
    }
}

/// The state of a worker record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Unused; may be registered.
    Free,
    /// A registered worker; `holder` is its process.
    Active,
    /// Being reaped; `holder` is the reaping process.
    Reaping,
}

/// A decoded worker state word (64 bits):
///
/// ```text
/// bits 0-31   holder: the worker's process (active), the reaper (reaping), 0 (free)
/// bits 32-47  generation (bumped by every registration)
/// bits 48-53  group
/// bits 56-57  state (free 0, active 1, reaping 2)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerWord {
    /// The state.
    pub state: WorkerState,
    /// See the type's docs.
    pub holder: Holder,
    /// The generation.
    pub gen: u16,
    /// The group.
    pub group: u32,
}

impl WorkerWord {
    /// Encodes the word.
    pub fn encode(&self) -> u64 {
        let s: u64 = match self.state {
            WorkerState::Free => 0,
            WorkerState::Active => 1,
            WorkerState::Reaping => 2,
        };
        u64::from(self.holder.0)
            | u64::from(self.gen) << 32
            | u64::from(self.group & 63) << 48
            | s << 56
    }

    /// Decodes a word read from shared memory; `None` if malformed.
    pub fn decode(w: u64, groups: u32) -> Option<WorkerWord> {
        let state = match w >> 56 {
            0 => WorkerState::Free,
            1 => WorkerState::Active,
            2 => WorkerState::Reaping,
            _ => return None,
        };
        let group = ((w >> 48) & 0xff) as u32;
        let holder = Holder(w as u32);
        if group >= groups || holder.0 & crate::shm::records::WAITERS != 0 {
            return None;
        }
        if (state == WorkerState::Free) != holder.is_none() {
            return None;
        }
        Some(WorkerWord {
            state,
            holder,
            gen: (w >> 32) as u16,
            group,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn area(g: &Geometry) -> Vec<u8> {
        let mut v = crate::shm::RegionHeader {
            magic: *MAGIC,
            layout_version: crate::LAYOUT_VERSION,
            header_size: crate::shm::HEADER_SIZE as u32,
            total_size: g.total_size,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(&g.encode());
        v.resize(g.total_size as usize, 0);
        v
    }

    #[test]
    fn geometry_limits() {
        let k = |r: Result<Geometry>| r.unwrap_err().kind();
        assert_eq!(k(Geometry::new(1, 4, 4, 64)), ErrorKind::Invalid);
        assert_eq!(k(Geometry::new(65, 4, 4, 64)), ErrorKind::Invalid);
        assert_eq!(k(Geometry::new(2, 0, 4, 64)), ErrorKind::Invalid);
        assert_eq!(k(Geometry::new(2, 4096, 4, 64)), ErrorKind::Invalid);
        assert_eq!(k(Geometry::new(2, 4, 0, 64)), ErrorKind::Invalid);
        assert_eq!(k(Geometry::new(2, 4, 65537, 64)), ErrorKind::Invalid);
        assert_eq!(k(Geometry::new(2, 4, 4, 0)), ErrorKind::Invalid);
        let e = Geometry::new(2, 4, 65536, 16 << 20).unwrap_err();
        assert!(e.message().contains("larger than"), "{e}");
        let g = Geometry::new(64, 4095, 65536, 100).unwrap();
        assert_eq!(g.buf_size, 128);
        assert_eq!(g.data_off % 4096, 0);
        assert_eq!(g.total_size, g.data_off + 65536 * 256);
        assert!(g.heads_off >= g.words_off + 65536 * 8);
    }

    #[test]
    fn validator_accepts_a_new_area_and_refuses_damage() {
        let g = Geometry::new(2, 3, 5, 100).unwrap();
        let good = area(&g);
        assert_eq!(validate(&good).unwrap(), g);
        let k = |b: &[u8]| validate(b).unwrap_err().kind();
        assert_eq!(k(&good[..good.len() - 1]), ErrorKind::Corrupt);
        assert_eq!(k(&good[..100]), ErrorKind::Corrupt);
        assert_eq!(k(&[]), ErrorKind::Corrupt);
        // Every byte of the area header matters.
        for at in 64..128 {
            let mut b = good.clone();
            b[at] ^= 0x40;
            assert!(validate(&b).is_err(), "byte {at}");
        }
        let mut b = good.clone();
        b[8] = 9; // layout version
        assert_eq!(k(&b), ErrorKind::Version);
        // An area of an older mtipc (no summary of queued slots) is refused
        // with a message that says what to do.
        let mut b = good.clone();
        b[64 + 20..64 + 24].copy_from_slice(&0u32.to_le_bytes());
        let e = validate(&b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Version);
        assert!(e.message().contains("recreate"), "{e}");
        // A bad slot word, a bad worker word, a length beyond the limit.
        let mut b = good.clone();
        b[g.words_off as usize + 8] = 7;
        assert_eq!(k(&b), ErrorKind::Corrupt);
        let mut b = good.clone();
        b[g.workers_off as usize + 7] = 3;
        assert_eq!(k(&b), ErrorKind::Corrupt);
        let mut b = good.clone();
        b[g.heads_off as usize + 16..][..4].copy_from_slice(&101u32.to_le_bytes());
        assert_eq!(k(&b), ErrorKind::Corrupt);
    }

    #[test]
    fn summary_bits_cover_every_slot() {
        for (slots, per, bits) in [(1, 1, 1), (256, 1, 256), (257, 2, 129), (65536, 256, 256)] {
            let g = Geometry::new(2, 1, slots, 64).unwrap();
            assert_eq!(
                (g.per_bit(), g.summary_bits()),
                (per, bits),
                "{slots} slots"
            );
            assert!(g.summary_bits() <= SUMMARY_BITS);
            assert!(g.per_bit() * g.summary_bits() >= slots);
        }
    }

    #[test]
    fn slot_words_round_trip() {
        let w = WorkerId {
            index: 4094,
            gen: 0xffff,
        };
        for s in [
            SlotWord::free(SLOT_GEN_MASK),
            SlotWord {
                state: SlotState::Filling,
                claimant: Holder::new(32766, 0xfffe),
                ..SlotWord::free(7)
            },
            SlotWord::free(3).with(SlotState::Queued, 63, None),
            SlotWord::free(3).with(SlotState::Taken, 1, Some(w)),
            SlotWord {
                abandoned: true,
                ..SlotWord::free(9).with(SlotState::Done, 2, Some(w))
            },
        ] {
            assert_eq!(SlotWord::decode(s.encode(), 64, 4095), Some(s), "{s:?}");
        }
        // Out of range for a smaller area.
        let q = SlotWord::free(3).with(SlotState::Queued, 5, None).encode();
        assert_eq!(SlotWord::decode(q, 4, 10), None);
        assert_eq!(SlotWord::decode(6, 4, 10), None);
        let ww = WorkerWord {
            state: WorkerState::Reaping,
            holder: Holder::new(3, 9),
            gen: 77,
            group: 5,
        };
        assert_eq!(WorkerWord::decode(ww.encode(), 6), Some(ww));
        assert_eq!(WorkerWord::decode(ww.encode(), 5), None);
        assert_eq!(WorkerWord::decode(3 << 56, 6), None);
        assert_eq!(WorkerId::from_ref(w.to_ref(), 4095), Some(w));
        assert_eq!(WorkerId::from_ref(WorkerRef(0), 4095), None);
        assert_eq!(WorkerId::from_ref(w.to_ref(), 4094), None);
        assert_eq!(WorkerId::from_ref(WorkerRef::new(1, 1 << 16), 4095), None);
    }
}
