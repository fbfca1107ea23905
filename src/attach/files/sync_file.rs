//! The synchronization file of an advertisement: a 128-byte region (the
//! common `shm` header with magic `MTSYNC\0\0`) holding the waiter's `state`
//! word, and the `flock` target of a round.

use super::SYNC_FILE;
use crate::error::{err, Error, Result};
use crate::shm::{self, RegionHeader, HEADER_SIZE};
use crate::sync::Futex;
use crate::sys::fs::{flock, try_flock, Lock};
use crate::sys::{Dir, FileId};
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The synchronization file's magic.
pub const SYNC_MAGIC: &[u8; 8] = b"MTSYNC\0\0";
/// The synchronization file's size (bytes).
pub const SYNC_SIZE: u64 = 128;
/// Offset of the `state` word in the region.
const STATE_OFFSET: usize = HEADER_SIZE;

/// `state`: the waiter is not at the semaphore (busy with a round, or
/// starting). A new synchronization file starts with this.
pub const STATE_BUSY: u32 = 0;
/// `state`: the waiter is blocked on the semaphore (idle).
pub const STATE_IDLE: u32 = 1;

/// An open synchronization file (`adverts/<id>/sync`): the mapped region and
/// the open file that is the `flock` target.
///
/// The `flock` locks belong to this `SyncFile`'s open file description: two
/// `SyncFile`s (even in one process) exclude each other, while threads
/// sharing one `SyncFile` share its lock. `Send + Sync`.
#[derive(Debug)]
pub struct SyncFile {
    /// The mapping's registration against SIGBUS (a file truncated under
    /// it reads as zeros: the waiter looks busy and sits rounds out);
    /// dropped before the map.
    _guard: shm::Guard,
    map: MmapRaw,
    file: File,
    path: PathBuf,
}

impl SyncFile {
    /// Opens the synchronization file of the advertisement directory `dir`,
    /// creating it (owner-only, `state` 0) if it is missing. `Corrupt` if it
    /// is not a valid synchronization region, `Denied` for a symbolic link
    /// or a file that is not owner-only.
    pub fn open_or_create(dir: &Path) -> Result<SyncFile> {
        SyncFile::open_in(&Dir::open(dir)?, true)
    }

    /// Opens the existing synchronization file of `dir` (`NotFound` if
    /// missing), refusing what [`SyncFile::open_or_create`] refuses.
    pub fn open(dir: &Path) -> Result<SyncFile> {
        SyncFile::open_in(&Dir::open(dir)?, false)
    }

    pub(super) fn open_in(dir: &Dir, create: bool) -> Result<SyncFile> {
        let path = dir.child(SYNC_FILE);
        let what = path.display().to_string();
        let file = match dir.open_file(SYNC_FILE, true) {
            Ok(f) => f,
            Err(e) if create && e.kind() == crate::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; SYNC_SIZE as usize];
                bytes[..HEADER_SIZE].copy_from_slice(
                    &RegionHeader {
                        magic: *SYNC_MAGIC,
                        layout_version: crate::LAYOUT_VERSION,
                        header_size: HEADER_SIZE as u32,
                        total_size: SYNC_SIZE,
                    }
                    .encode(),
                );
                // Another process may publish it first: then use theirs.
                dir.publish(SYNC_FILE, &bytes)?;
                dir.open_file(SYNC_FILE, true)?
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata().map_err(|e| Error::io(&what, e))?.len();
        if len != SYNC_SIZE {
            // Say what is wrong with the header if anything, else that the
            // length is wrong; never map past the end of a short file.
            let mut head = [0u8; HEADER_SIZE];
            let n = file.read_at(&mut head, 0).unwrap_or(0);
            let mut padded = head[..n].to_vec();
            if n == HEADER_SIZE {
                padded.resize(SYNC_SIZE as usize, 0);
            }
            shm::validate(&padded, SYNC_MAGIC, SYNC_SIZE, &what)?;
            return Err(err!(
                Corrupt,
                "{what}: file is {len} bytes; expected {SYNC_SIZE}"
            ));
        }
        let map = MmapOptions::new()
            .len(SYNC_SIZE as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(&what, e))?;
        let guard = shm::guard(map.as_ptr(), SYNC_SIZE as usize);
        // SAFETY: the mapping is SYNC_SIZE bytes long and lives while `map`
        // does; it is only read here (other processes may write the state
        // word meanwhile, which the validation does not look at).
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), SYNC_SIZE as usize) };
        shm::validate(bytes, SYNC_MAGIC, SYNC_SIZE, &what)?;
        guard.check(&what)?;
        Ok(SyncFile {
            _guard: guard,
            map,
            file,
            path,
        })
    }

    /// Which file this is (device, inode).
    pub(super) fn id(&self) -> Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let md = self
            .file
            .metadata()
            .map_err(|e| Error::io(self.path.display(), e))?;
        Ok(FileId::new(md.dev(), md.ino()))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `state` word, a futex shared with every process that maps the
    /// file: [`STATE_BUSY`] or [`STATE_IDLE`], plus the
    /// [`WATCHED`](crate::attach::round::WATCHED) bit while an attacher
    /// sleeps on it ([`SyncFile::state_value`] masks it).
    pub fn state(&self) -> &Futex {
        // SAFETY: the region is SYNC_SIZE (128) bytes, page aligned and
        // validated; the u32 at offset 64 is aligned, and it lives as long
        // as the mapping, i.e. as long as `self`. `Futex` is a
        // repr(transparent) AtomicU32: all access to the word is atomic.
        unsafe { &*(self.map.as_ptr().add(STATE_OFFSET) as *const Futex) }
    }

    /// The state the `state` word holds ([`STATE_BUSY`] or [`STATE_IDLE`]).
    pub fn state_value(&self) -> u32 {
        crate::attach::round::state_value(self.state())
    }

    /// Stores `value` in `state` and wakes whoever sleeps on it.
    pub fn set_state(&self, value: u32) {
        crate::attach::round::set_state(self.state(), value);
    }

    /// `flock(LOCK_EX)`, blocking until no other description holds a lock.
    pub fn lock_exclusive(&self) -> Result<()> {
        flock(&self.file, Lock::Exclusive, &self.path)
    }

    /// `flock(LOCK_SH)`, blocking while another description holds
    /// `LOCK_EX`.
    pub fn lock_shared(&self) -> Result<()> {
        flock(&self.file, Lock::Shared, &self.path)
    }

    /// `flock(LOCK_SH)` without blocking: `Ok(false)` if another
    /// description holds `LOCK_EX`.
    pub fn try_lock_shared(&self) -> Result<bool> {
        try_flock(&self.file, Lock::Shared, &self.path)
    }

    /// `flock(LOCK_EX)` without blocking: `Ok(false)` if another description
    /// holds a lock.
    pub fn try_lock_exclusive(&self) -> Result<bool> {
        try_flock(&self.file, Lock::Exclusive, &self.path)
    }

    /// `flock(LOCK_EX)`, waiting at most `timeout`: `Timeout` if the lock is
    /// still held by another description then.
    pub fn lock_exclusive_within(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(100);
        loop {
            if self.try_lock_exclusive()? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(err!(
                    Timeout,
                    "{}: still locked by another process after {timeout:?}",
                    self.path.display()
                ));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Releases this description's lock (`flock(LOCK_UN)`).
    pub fn unlock(&self) -> Result<()> {
        flock(&self.file, Lock::Unlock, &self.path)
    }
}

// SAFETY: the mapping is never moved or unmapped while `self` lives, and
// all access to it after validation goes through the atomic state word.
unsafe impl Send for SyncFile {}
// SAFETY: as above; `File` and `flock` are usable from any thread.
unsafe impl Sync for SyncFile {}
