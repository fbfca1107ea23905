//! The shared-memory arbiter: a volume's permits kept in a region of the
//! domain, `<domain>/volumes/<name>.arbiter`, which every process that uses
//! the volume maps. No daemon: each process runs the arbiter's rules
//! ([`core`]) under the region's lock.
//!
//! Region layout (all offsets in bytes; docs/permit.md has the reasons):
//!
//! ```text
//! 0        64                 region header (magic MTIPCARB, layout version, size)
//! 128      64                 core::Head: the lock, counters, fair-order clock
//! 256      16 * 480           reclaim ring (core::ReclaimSlot)
//! 8192     1024 * 16          process records (shm::records::RecordSlot)
//! 24576    1024 * 32          grants and last tag per record (core::GrantCount)
//! 57344    1024 * 512         entries (core::Entry): requests and permits
//! 581632                      end
//! ```

pub mod core;
#[cfg(all(test, loom))]
mod loom_models;

#[cfg(not(loom))]
pub use real::*;

#[cfg(not(loom))]
mod real {
    use super::core::{
        Arb, Ctx, Entry, GrantCount, Head, Locked, ReclaimSlot, Req, ENTRY_SIZE, HELD, PATH_BYTES,
        REASON_DEAD, WAITING,
    };
    use crate::error::{err, Error, Result};
    use crate::permit::{
        Arbiter, Grant, Holding, Instance, Mode, ReclaimReason, Reclaimed, Status, VolumeRecord,
        Waiting,
    };
    use crate::shm::records::{Holder, Liveness, Membership, RecordSlot};
    use crate::shm::{Region, HEADER_SIZE};
    use crate::sync::Ordering;
    use crate::Domain;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Magic of an arbiter region.
    pub const MAGIC: &[u8; 8] = b"MTIPCARB";
    /// Entries (requests and permits at once) of a volume.
    pub const ENTRIES: usize = 1024;
    /// Process records: processes using a volume at once.
    pub const RECORDS: usize = 1024;
    /// Slots of the reclaim ring.
    pub const RING: usize = 16;
    const HEAD_OFF: usize = 128;
    const RING_OFF: usize = 256;
    const RECORDS_OFF: usize = 8192;
    const GRANTS_OFF: usize = RECORDS_OFF + RECORDS * 16;
    const ENTRIES_OFF: usize = GRANTS_OFF + RECORDS * super::core::GRANT_COUNT_SIZE;
    /// Size of an arbiter region.
    pub const REGION_SIZE: usize = ENTRIES_OFF + ENTRIES * ENTRY_SIZE;

    const _: () = assert!(RING_OFF + RING * super::core::RECLAIM_SIZE <= RECORDS_OFF);
    const _: () = assert!(HEAD_OFF >= HEADER_SIZE);

    /// How often the poller (one waiter per volume) looks for dead holders
    /// and run-out leases; the other waiters look every [`LOOK_EVERY`].
    pub const POLL_EVERY: Duration = Duration::from_millis(2);
    /// How often a waiter that is not the poller looks.
    pub const LOOK_EVERY: Duration = Duration::from_millis(50);
    /// Longest wait for the arbiter's lock itself (it is held for
    /// microseconds, or a rename).
    pub const LOCK_WAIT: Duration = Duration::from_secs(5);

    /// The path of volume `name`'s arbiter region in `domain`.
    pub fn region_path(domain: &Path, name: &str) -> PathBuf {
        domain
            .join(crate::permit::volume::VOLUMES_DIR)
            .join(format!("{name}.arbiter"))
    }

    /// Checks an arbiter region's bytes (hostile input: fuzz target
    /// `arbiter_region`): the header, the size, and every entry's state,
    /// mode and path length. `Corrupt`, naming the fault, otherwise.
    pub fn validate(bytes: &[u8]) -> Result<()> {
        crate::shm::validate(bytes, MAGIC, REGION_SIZE as u64, "permit arbiter")?;
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4]));
        let used = u32_at(HEAD_OFF + 4);
        if used as usize > ENTRIES {
            return Err(err!(
                Corrupt,
                "permit arbiter: {used} entries in use of {ENTRIES}"
            ));
        }
        for i in 0..ENTRIES {
            let o = ENTRIES_OFF + i * ENTRY_SIZE;
            let (state, mode, len) = (u32_at(o), u32_at(o + 4), u32_at(o + 12));
            if state > HELD {
                return Err(err!(Corrupt, "permit arbiter: entry {i} has state {state}"));
            }
            if state != 0 && Mode::from_u32(mode).is_none() {
                return Err(err!(Corrupt, "permit arbiter: entry {i} has mode {mode}"));
            }
            if len as usize > PATH_BYTES {
                return Err(err!(
                    Corrupt,
                    "permit arbiter: entry {i} has a path of {len} bytes"
                ));
            }
        }
        Ok(())
    }

    /// A mapped arbiter region and this process's record in it.
    #[derive(Debug)]
    struct Mapped {
        // Dropped before the region: it points into it.
        member: Membership,
        region: Region,
    }

    // SAFETY: the region is a shared mapping that every method touches only
    // through atomics (crate::sync), and Membership is Send + Sync.
    unsafe impl Send for Mapped {}
    // SAFETY: as above.
    unsafe impl Sync for Mapped {}

    impl Mapped {
        fn arb(&self) -> Arb<'_> {
            let base = self.region.as_ptr();
            // SAFETY: the region was validated to be REGION_SIZE bytes, so
            // every part lies inside the mapping, which lives as long as
            // `self`; the offsets are multiples of 64 of a page-aligned
            // mapping; the parts are made of atomics only.
            unsafe {
                Arb {
                    head: &*(base.add(HEAD_OFF) as *const Head),
                    entries: std::slice::from_raw_parts(
                        base.add(ENTRIES_OFF) as *const Entry,
                        ENTRIES,
                    ),
                    records: std::slice::from_raw_parts(
                        base.add(RECORDS_OFF) as *const RecordSlot,
                        RECORDS,
                    ),
                    grants: std::slice::from_raw_parts(
                        base.add(GRANTS_OFF) as *const GrantCount,
                        RECORDS,
                    ),
                    ring: std::slice::from_raw_parts(
                        base.add(RING_OFF) as *const ReclaimSlot,
                        RING,
                    ),
                }
            }
        }
    }

    /// The arbiter of a volume kept in this host's shared memory.
    #[derive(Debug)]
    pub struct LocalArbiter {
        mapped: Arc<Mapped>,
        cap: u32,
        lease: Duration,
    }

    impl LocalArbiter {
        /// Opens (creating it if missing) the arbiter region of volume
        /// `name` and joins it with a process record.
        pub fn open(domain: &Domain, name: &str, record: &VolumeRecord) -> Result<LocalArbiter> {
            let path = region_path(domain.path(), name);
            let what = path.display().to_string();
            let region = Region::open_or_create(&path, MAGIC, REGION_SIZE as u64, &what)?;
            {
                // SAFETY: the region is REGION_SIZE bytes and mapped while
                // `region` lives; this reads it once to validate it.
                let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr(), REGION_SIZE) };
                validate(bytes).map_err(|e| err!(Corrupt, "{what}: {}", e.message()))?;
            }
            region.check()?;
            // A second open file description of the same file carries this
            // process's record lock (the kernel drops it when we die).
            let file = crate::sys::fs::open_checked(&path, true)?;
            let (a, b) = (
                file.metadata().map_err(|e| Error::io(&what, e))?,
                std::fs::metadata(&path).map_err(|e| Error::io(&what, e))?,
            );
            if (a.dev(), a.ino()) != (b.dev(), b.ino()) || a.len() != REGION_SIZE as u64 {
                return Err(err!(Corrupt, "{what}: replaced while being opened"));
            }
            // Sparing the records of dead processes: a holder that died
            // is reclaimed by the next sweep, which names it from its
            // record (the reclaim history); joining must not overwrite that
            // record first (`mtipc permits` run after a kill -9 would name
            // itself).
            // SAFETY: the records lie inside the mapping (validated size),
            // which `Mapped` keeps alive longer than the membership (field
            // order), and the file is REGION_SIZE >= RECORDS bytes long.
            let member = unsafe {
                Membership::join_sparing_dead(
                    file,
                    region.as_ptr().add(RECORDS_OFF) as *const RecordSlot,
                    RECORDS as u32,
                )?
            };
            Ok(LocalArbiter {
                mapped: Arc::new(Mapped { member, region }),
                cap: record.max_transfers,
                lease: record.lease(),
            })
        }

        fn cx(&self) -> Ctx<'_> {
            ctx(&self.mapped, self.cap, self.lease)
        }

        fn grant(&self, i: usize, token: u64) -> Box<dyn Grant> {
            Box::new(LocalGrant {
                mapped: Arc::clone(&self.mapped),
                cap: self.cap,
                lease: self.lease,
                entry: i,
                token,
                released: crate::sync::local::AtomicBool::new(false),
            })
        }
    }

    fn ctx(m: &Mapped, cap: u32, lease: Duration) -> Ctx<'_> {
        Ctx {
            me: m.member.holder(),
            live: &m.member,
            cap,
            lease_ns: lease.as_nanos().min(u128::from(u64::MAX)) as u64,
        }
    }

    /// Takes the arbiter's lock, waiting at most until `until` or
    /// [`LOCK_WAIT`] from now, whichever is later (the clock is read only
    /// if the lock is not free at once).
    fn lock<'a>(m: &'a Mapped, cx: &Ctx<'_>, until: Option<Instant>) -> Result<Locked<'a>> {
        m.region.check()?;
        m.arb().lock_by(cx, || {
            let least = Instant::now() + LOCK_WAIT;
            Some(until.map_or(least, |u| u.max(least)))
        })
    }

    fn token_if_mine(g: &Locked<'_>, cx: &Ctx<'_>, i: usize) -> Option<u64> {
        let e = &g.parts().entries[i];
        (e.state.load(Ordering::Relaxed) == HELD && e.owner.load(Ordering::Relaxed) == cx.me.0)
            .then(|| e.token.load(Ordering::Relaxed))
    }

    impl Arbiter for LocalArbiter {
        fn request(&self, path: &str, mode: Mode, wait: Duration) -> Result<Box<dyn Grant>> {
            let m = &*self.mapped;
            let cx = self.cx();
            let req = Req {
                path: path.as_bytes(),
                mode,
            };
            let mut g = lock(m, &cx, None)?;
            let mut now = crate::sys::monotonic_ns();
            let i = g.enqueue(&cx, req)?;
            g.grant_pass(&cx, now, Some(i));
            if token_if_mine(&g, &cx, i).is_none() && g.sweep(&cx, now) > 0 {
                g.grant_pass(&cx, now, Some(i));
            }
            if let Some(t) = token_if_mine(&g, &cx, i) {
                return Ok(self.grant(i, t));
            }
            if wait.is_zero() {
                g.withdraw(&cx, i, now);
                return Err(err!(
                    Deferred,
                    "{mode} permit on {path}: deferred (a conflicting transfer is in flight, the volume's cap is reached, or earlier requests wait)"
                ));
            }
            let start = Instant::now();
            let deadline = start
                .checked_add(wait)
                .unwrap_or(start + Duration::from_secs(86400 * 365));
            let entry = &m.arb().entries[i];
            loop {
                let poller = g.take_poller(i);
                drop(g);
                let left = deadline.saturating_duration_since(Instant::now());
                let slice = if poller { POLL_EVERY } else { LOOK_EVERY }.min(left);
                if !slice.is_zero() {
                    entry.state.wait(WAITING, Some(slice));
                }
                g = match lock(m, &cx, Some(deadline)) {
                    Ok(g) => g,
                    Err(e) if e.kind() == crate::ErrorKind::Timeout => {
                        // The lock is held by a live process for longer
                        // than LOCK_WAIT (a rename stuck in the file
                        // system?). The request must not stay queued behind
                        // the caller's back: wait for the lock to withdraw
                        // it, then report the wait as run out.
                        crate::log::warn!(
                            "permit arbiter {}: its lock was held too long; withdrawing a {mode} request on {path} once it is free",
                            m.region.path().display()
                        );
                        let g = loop {
                            match lock(m, &cx, None) {
                                Ok(g) => break g,
                                Err(again) if again.kind() == crate::ErrorKind::Timeout => {}
                                Err(other) => return Err(other),
                            }
                        };
                        if let Some(t) = token_if_mine(&g, &cx, i) {
                            return Ok(self.grant(i, t));
                        }
                        g.withdraw(&cx, i, crate::sys::monotonic_ns());
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                now = crate::sys::monotonic_ns();
                if let Some(t) = token_if_mine(&g, &cx, i) {
                    return Ok(self.grant(i, t));
                }
                if entry.owner.load(Ordering::Relaxed) != cx.me.0
                    || entry.state.load(Ordering::Relaxed) != WAITING
                {
                    return Err(err!(
                        Corrupt,
                        "permit arbiter {}: this process's waiting request was removed by another",
                        m.region.path().display()
                    ));
                }
                if Instant::now() >= deadline {
                    g.withdraw(&cx, i, now);
                    return Err(err!(
                        Timeout,
                        "{mode} permit on {path}: not granted within {} ms",
                        wait.as_millis()
                    ));
                }
                if g.sweep(&cx, now) > 0 || !poller {
                    g.grant_pass(&cx, now, Some(i));
                }
                if let Some(t) = token_if_mine(&g, &cx, i) {
                    return Ok(self.grant(i, t));
                }
            }
        }

        fn status(&self) -> Result<Status> {
            let m = &*self.mapped;
            let cx = self.cx();
            let g = lock(m, &cx, None)?;
            let now = crate::sys::monotonic_ns();
            if g.sweep(&cx, now) > 0 {
                g.grant_pass(&cx, now, None);
            }
            let arb = g.parts();
            let instance = |h: Holder| {
                let (pid, start) = h
                    .record()
                    .and_then(|r| arb.records.get(r as usize))
                    .map_or((0, 0), |r| (r.pid(), r.start()));
                Instance {
                    host: String::new(),
                    pid,
                    start,
                }
            };
            let text = |p: Vec<u8>| String::from_utf8_lossy(&p).into_owned();
            let mode_of = |v: u32| Mode::from_u32(v).unwrap_or(Mode::Write);
            let holders = g
                .held()
                .into_iter()
                .map(|i| {
                    let (owner, mode, path, token, until) = g.describe(i);
                    Holding {
                        instance: instance(owner),
                        mode: mode_of(mode),
                        path: text(path),
                        token,
                        lease_left_ms: until.saturating_sub(now) / 1_000_000,
                    }
                })
                .collect();
            let queue = g
                .queue()
                .into_iter()
                .map(|i| {
                    let (owner, mode, path, ..) = g.describe(i);
                    Waiting {
                        instance: instance(owner),
                        mode: mode_of(mode),
                        path: text(path),
                    }
                })
                .collect();
            let grants = (0..RECORDS)
                .filter_map(|r| {
                    let rec = &arb.records[r];
                    let c = &arb.grants[r];
                    let n = c.count.load(Ordering::Relaxed);
                    let h = Holder::new(r as u32, rec.gen());
                    (n > 0
                        && rec.pid() != 0
                        && c.gen.load(Ordering::Relaxed) == u32::from(rec.gen())
                        && m.member.is_alive(h))
                    .then(|| (instance(h), n))
                })
                .collect();
            let reclaimed = g
                .reclaimed()
                .into_iter()
                .map(|(pid, start, reason, token, path)| Reclaimed {
                    instance: Instance {
                        host: String::new(),
                        pid,
                        start,
                    },
                    path: text(path),
                    token,
                    reason: if reason == REASON_DEAD {
                        ReclaimReason::Dead
                    } else {
                        ReclaimReason::Expired
                    },
                })
                .collect();
            Ok(Status {
                holders,
                queue,
                grants,
                reclaimed,
                last_token: g.head().last_token.load(Ordering::Relaxed),
                lease_ms: self.lease.as_millis() as u64,
            })
        }
    }

    /// A permit granted by the shared-memory arbiter.
    #[derive(Debug)]
    struct LocalGrant {
        mapped: Arc<Mapped>,
        cap: u32,
        lease: Duration,
        entry: usize,
        token: u64,
        released: crate::sync::local::AtomicBool,
    }

    impl LocalGrant {
        fn fenced(&self) -> Error {
            err!(
                Fenced,
                "permit {}: no longer current (its lease ran out and it was reclaimed, or it was released)",
                self.token
            )
        }
    }

    impl Grant for LocalGrant {
        fn token(&self) -> u64 {
            self.token
        }

        fn lease(&self) -> Duration {
            self.lease
        }

        fn renew(&self) -> Result<()> {
            let m = &*self.mapped;
            let cx = ctx(m, self.cap, self.lease);
            let g = lock(m, &cx, None)?;
            if self.released.load(Ordering::Relaxed)
                || !g.renew(&cx, self.entry, self.token, crate::sys::monotonic_ns())
            {
                return Err(self.fenced());
            }
            Ok(())
        }

        fn commit(&self, commit: &mut dyn FnMut() -> Result<()>) -> Result<()> {
            let m = &*self.mapped;
            let cx = ctx(m, self.cap, self.lease);
            let g = lock(m, &cx, None)?;
            if self.released.load(Ordering::Relaxed)
                || !g.current(&cx, self.entry, self.token, crate::sys::monotonic_ns())
            {
                return Err(self.fenced());
            }
            crate::failpoint::hit("permit.local.commit_locked");
            let r = commit();
            drop(g);
            r
        }

        fn release(&self) {
            if self.released.swap(true, Ordering::Relaxed) {
                return;
            }
            let m = &*self.mapped;
            let cx = ctx(m, self.cap, self.lease);
            match lock(m, &cx, None) {
                Ok(g) => {
                    g.release(&cx, self.entry, self.token, crate::sys::monotonic_ns());
                }
                Err(e) => crate::log::warn!(
                    "permit {}: not released ({e}); it will be reclaimed when its lease runs out",
                    self.token
                ),
            }
        }
    }

    impl Drop for LocalGrant {
        fn drop(&mut self) {
            self.release();
        }
    }
}
