//! Process records: who has joined a region, and whether it is still alive.
//!
//! A region that several processes change (the session table, the request
//! area) holds a fixed array of process records. A process *joins* the
//! region by claiming one record, and keeps it until it lets go of the
//! region or dies. Liveness comes from the kernel, not from pids: record
//! *i* owns byte *i* of the region file, and its owner holds an
//! open-file-description lock (`F_OFD_SETLK`, write, length 1) on that byte
//! for as long as it holds the record. The kernel drops the lock when the
//! process dies, however it dies (docs/session.md, "Process records and
//! liveness").
//!
//! A lock word in shared memory names its holder with a [`Holder`]:
//! `(record + 1) << 16 | generation`. The generation is bumped each time a
//! record is claimed, so a holder word left by a dead process is never taken
//! for the record's next owner (until the 16-bit generation wraps).
//!
//! The shared-memory parts ([`RecordSlot`], [`Holder`], the [`Liveness`]
//! trait) compile under loom; [`Membership`] (the join and the real
//! liveness check, which need a file) does not.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Size in bytes of one [`RecordSlot`] in a region.
pub const RECORD_SIZE: usize = 16;

/// Number of process records a region has unless its creator says otherwise.
pub const DEFAULT_RECORDS: u32 = 4096;

/// The largest number of process records a region may have: `record + 1`
/// must fit in 15 bits of a [`Holder`] word (bit 31 is left to lock words
/// for a "somebody waits" flag).
pub const MAX_RECORDS: u32 = (1 << 15) - 1;

/// One process record as it lies in a region (`#[repr(C)]`, 16 bytes):
/// generation (low 16 bits used), pid, process start time (clock ticks
/// since boot, as in `/proc/<pid>/stat`). All zero: never used.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RecordSlot {
    gen: AtomicU32,
    pid: AtomicU32,
    start: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RecordSlot>() == RECORD_SIZE);

impl RecordSlot {
    /// The record's current generation.
    pub fn gen(&self) -> u16 {
        self.gen.load(Ordering::Acquire) as u16
    }

    /// The pid of its last owner (0: never used, or left cleanly).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// The start time of its last owner.
    pub fn start(&self) -> u64 {
        self.start.load(Ordering::Relaxed)
    }

    /// Claims the record for a new owner (who already holds its byte lock):
    /// bumps the generation and writes pid and start time. Returns the new
    /// generation.
    pub fn claim(&self, pid: u32, start: u64) -> u16 {
        let gen = (self.gen.load(Ordering::Relaxed) as u16).wrapping_add(1);
        self.gen.store(u32::from(gen), Ordering::Release);
        self.pid.store(pid, Ordering::Relaxed);
        self.start.store(start, Ordering::Relaxed);
        gen
    }

    /// Marks the record as left cleanly (pid and start time 0). The
    /// generation stays, so holder words naming the old owner stay dead.
    pub fn clear(&self) {
        self.pid.store(0, Ordering::Relaxed);
        self.start.store(0, Ordering::Relaxed);
    }
}

/// Bit 31 of a lock word: some process waits for the lock (the unlocker
/// must wake it). Not part of the holder's identity.
pub const WAITERS: u32 = 1 << 31;

/// The holder of a lock word: `(record + 1) << 16 | generation`; 0 is no
/// holder. Bit 31 is never set in a holder (in a lock word it marks waiters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Holder(pub u32);

impl Holder {
    /// No holder.
    pub const NONE: Holder = Holder(0);

    /// The holder word of `record` at generation `gen`. `record` must be
    /// below `MAX_RECORDS` (32,767).
    pub fn new(record: u32, gen: u16) -> Holder {
        debug_assert!(record < MAX_RECORDS);
        Holder(((record + 1) << 16) | u32::from(gen))
    }

    /// The holder named by a lock word (the waiters bit, 31, dropped).
    pub fn from_word(word: u32) -> Holder {
        Holder(word & !WAITERS)
    }

    /// Whether this names nobody.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The record index, if this names somebody.
    pub fn record(self) -> Option<u32> {
        let r = (self.0 & !WAITERS) >> 16;
        r.checked_sub(1)
    }

    /// The record's generation this holder had.
    pub fn gen(self) -> u16 {
        self.0 as u16
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record() {
            None => f.write_str("none"),
            Some(r) => write!(f, "record {r} gen {}", self.gen()),
        }
    }
}

/// Tells whether the holder of a lock word is alive. The real one is
/// [`Membership`] (kernel locks on the region file); loom models use fakes.
pub trait Liveness {
    /// Whether `h` still names a live process: its record has not been
    /// claimed again since, and its owner still holds the record's lock.
    /// [`Holder::NONE`] and out-of-range records are not alive.
    fn is_alive(&self, h: Holder) -> bool;
}

/// What `mtipc sessions` shows about one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Index of the record.
    pub index: u32,
    /// Pid of its last owner (0: never used or left cleanly).
    pub pid: u32,
    /// Start time of that owner (clock ticks since boot).
    pub start: u64,
    /// Current generation.
    pub gen: u16,
    /// Whether its owner still holds it.
    pub alive: bool,
}

#[cfg(not(loom))]
pub use real::Membership;

#[cfg(not(loom))]
mod real {
    use super::*;
    use crate::error::{err, Result};
    use std::fs::File;

    /// This process's membership of a region: the record it claimed, held
    /// through an open file description of the region file. Dropping it
    /// clears the record and closes the file, which releases the byte lock.
    ///
    /// It also is the real [`Liveness`]: it can check any record of the
    /// region with `F_OFD_GETLK`.
    #[derive(Debug)]
    pub struct Membership {
        file: File,
        base: *const RecordSlot,
        count: u32,
        record: u32,
        gen: u16,
    }

    // SAFETY: the records are atomics in a shared mapping that the owner of
    // the membership keeps mapped while it lives (contract of `join`); the
    // file is only used for fcntl calls, which are thread-safe.
    unsafe impl Send for Membership {}
    // SAFETY: as above; every method takes `&self` and only does atomic
    // loads/stores and fcntl calls.
    unsafe impl Sync for Membership {}

    impl Membership {
        /// Joins the region: claims the first record whose byte lock can be
        /// taken without waiting (its previous owner, if any, is dead),
        /// bumps its generation and writes this process's pid and start
        /// time. `file` must be an open file description of the region file
        /// used by nobody else (the byte locks belong to it); `records`
        /// points to the region's array of `count` records.
        ///
        /// Errors: `Full` when every record is held by a live process, `Io`
        /// if a lock call fails otherwise.
        ///
        /// # Safety
        ///
        /// `records` must point to `count` [`RecordSlot`]s in a shared
        /// mapping of `file`'s region that stays mapped while the returned
        /// value lives, and the file must be at least `count` bytes long.
        pub(crate) unsafe fn join(
            file: File,
            records: *const RecordSlot,
            count: u32,
        ) -> Result<Membership> {
            // SAFETY: the caller's contract is ours.
            unsafe { Self::join_in_order(file, records, count, false) }
        }

        /// [`Membership::join`], but a record whose previous owner died
        /// without leaving (its pid is still written) is claimed only when
        /// no record is free otherwise. So the dead owner's pid and start
        /// time stay readable for whoever reports what it left behind (the
        /// permit arbiter's reclaim history names the dead holder), instead
        /// of being overwritten by the next process that joins.
        ///
        /// # Safety
        ///
        /// As [`Membership::join`].
        pub(crate) unsafe fn join_sparing_dead(
            file: File,
            records: *const RecordSlot,
            count: u32,
        ) -> Result<Membership> {
            // SAFETY: the caller's contract is ours.
            unsafe { Self::join_in_order(file, records, count, true) }
        }

        /// # Safety
        ///
        /// As [`Membership::join`].
        unsafe fn join_in_order(
            file: File,
            records: *const RecordSlot,
            count: u32,
            spare_dead: bool,
        ) -> Result<Membership> {
            if count == 0 || count > MAX_RECORDS {
                return Err(err!(
                    Invalid,
                    "a region has 1 to {MAX_RECORDS} process records, not {count}"
                ));
            }
            let me = crate::sys::ProcId::current()?;
            // SAFETY: i < count, within the array (caller's contract).
            let slot = |i: u32| unsafe { &*records.add(i as usize) };
            // With `spare_dead`, a first pass over the records left cleanly
            // or never used (pid 0; one being claimed right now has its
            // byte locked already), then every record.
            let passes: &[bool] = if spare_dead { &[true, false] } else { &[false] };
            for &clean_only in passes {
                for i in 0..count {
                    if clean_only && slot(i).pid() != 0 {
                        continue;
                    }
                    if crate::sys::fs::lock_byte(&file, i)? {
                        let gen = slot(i).claim(me.pid, me.start);
                        return Ok(Membership {
                            file,
                            base: records,
                            count,
                            record: i,
                            gen,
                        });
                    }
                }
            }
            Err(err!(
                Full,
                "all {count} process records of the region are held by live processes"
            ))
        }

        /// The record this process holds.
        pub fn record(&self) -> u32 {
            self.record
        }

        /// The generation this process claimed it at.
        pub fn gen(&self) -> u16 {
            self.gen
        }

        /// The holder word naming this membership.
        pub fn holder(&self) -> Holder {
            Holder::new(self.record, self.gen)
        }

        /// Number of records of the region.
        pub fn count(&self) -> u32 {
            self.count
        }

        fn slot(&self, i: u32) -> &RecordSlot {
            assert!(i < self.count);
            // SAFETY: i < count, and the mapping lives as long as `self`.
            unsafe { &*self.base.add(i as usize) }
        }

        /// Whether another open file description holds the lock on byte
        /// `i` (`F_OFD_GETLK`). An error of the call counts as held (never
        /// take over a lock because a syscall failed).
        fn byte_locked_by_other(&self, i: u32) -> bool {
            crate::sys::fs::byte_locked_by_other(&self.file, i)
        }

        /// What the CLI shows about record `i`.
        pub fn info(&self, i: u32) -> RecordInfo {
            let s = self.slot(i);
            let gen = s.gen();
            RecordInfo {
                index: i,
                pid: s.pid(),
                start: s.start(),
                gen,
                alive: self.is_alive(Holder::new(i, gen)),
            }
        }

        /// Every record whose owner is there or died without leaving (pid
        /// not 0), with its liveness. Records left cleanly are not listed.
        pub fn list(&self) -> Vec<RecordInfo> {
            // A held record always has its pid written (`claim` follows the
            // lock at once), so records with pid 0 need no syscall.
            (0..self.count)
                .filter(|&i| self.slot(i).pid() != 0)
                .map(|i| self.info(i))
                .collect()
        }
    }

    impl Liveness for Membership {
        fn is_alive(&self, h: Holder) -> bool {
            let Some(r) = h.record() else { return false };
            if r >= self.count {
                return false;
            }
            if r == self.record && h.gen() == self.gen {
                return true;
            }
            self.slot(r).gen() == h.gen() && self.byte_locked_by_other(r)
        }
    }

    impl Drop for Membership {
        fn drop(&mut self) {
            // Still ours: we hold the byte lock until the file closes below.
            self.slot(self.record).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_words() {
        let h = Holder::new(0, 0);
        assert_eq!(h.0, 1 << 16);
        assert_eq!(h.record(), Some(0));
        assert_eq!(h.gen(), 0);
        let h = Holder::new(4095, 0xfffe);
        assert_eq!(h.record(), Some(4095));
        assert_eq!(h.gen(), 0xfffe);
        assert_eq!(Holder::from_word(h.0 | WAITERS), h);
        assert_eq!(Holder::NONE.record(), None);
        assert!(Holder::NONE.is_none());
        assert_eq!(Holder(5).record(), None);
    }
}
