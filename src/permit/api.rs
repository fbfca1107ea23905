//! The permit API both backends serve: the [`Arbiter`] and [`Grant`]
//! traits, [`Permit`], [`Volume`], [`Volumes`] and the status report.

use super::{local, transfer, volume, Mode, VolumeRecord};
use crate::error::{err, Result};
use crate::Domain;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "etcd")]
use super::etcd;
use super::paths;

/// A requesting instance as a status report names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Instance {
    /// The host it runs on (empty for the shared-memory backend: this host).
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot), which with the pid names
    /// one process.
    pub start: u64,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.is_empty() {
            write!(f, "pid {}", self.pid)
        } else {
            write!(f, "{} pid {}", self.host, self.pid)
        }
    }
}

/// A permit held, as a status report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Holding {
    /// Who holds it.
    pub instance: Instance,
    /// Read or write.
    pub mode: Mode,
    /// The path inside the volume.
    pub path: String,
    /// Its fencing token.
    pub token: u64,
    /// Time left on its lease, in milliseconds (0: ran out, not yet
    /// reclaimed).
    pub lease_left_ms: u64,
}

/// A deferred request, as a status report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Waiting {
    /// Who waits.
    pub instance: Instance,
    /// Read or write.
    pub mode: Mode,
    /// The path inside the volume.
    pub path: String,
}

/// Why a permit was reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ReclaimReason {
    /// Its holder died.
    Dead,
    /// Its lease ran out while the holder lived (the holder is fenced).
    Expired,
}

/// A permit that was reclaimed, as a status report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Reclaimed {
    /// Who held it.
    pub instance: Instance,
    /// The path inside the volume.
    pub path: String,
    /// Its fencing token.
    pub token: u64,
    /// Why.
    pub reason: ReclaimReason,
}

/// What a volume's arbiter says about itself (`mtipc permits`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Status {
    /// The permits held now.
    pub holders: Vec<Holding>,
    /// The deferred requests, in the order they will be granted.
    pub queue: Vec<Waiting>,
    /// Grants per instance (instances the arbiter still knows of).
    /// Serialized as a list of `{"instance": ..., "grants": n}` objects.
    #[cfg_attr(feature = "serde", serde(serialize_with = "grants_as_objects"))]
    pub grants: Vec<(Instance, u64)>,
    /// The most recently reclaimed permits, oldest first (a bounded
    /// history).
    pub reclaimed: Vec<Reclaimed>,
    /// The last fencing token granted (0: none yet).
    pub last_token: u64,
    /// The lease a grant gets, in milliseconds, as the backend grants it
    /// (etcd may grant longer than asked).
    pub lease_ms: u64,
}

/// `Status::grants` as `[{"instance": {...}, "grants": n}, ...]` rather
/// than serde's `[[{...}, n], ...]` for a tuple.
#[cfg(feature = "serde")]
fn grants_as_objects<S: serde::Serializer>(
    grants: &[(Instance, u64)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Grants<'a> {
        instance: &'a Instance,
        grants: u64,
    }
    s.collect_seq(grants.iter().map(|(instance, n)| Grants {
        instance,
        grants: *n,
    }))
}

/// A volume's arbiter: one backend of the permission logic. Implementations
/// must be usable from many threads at once.
pub trait Arbiter: Send + Sync + fmt::Debug {
    /// Asks for a permit on `path` (already checked by [`paths::check`]) in
    /// `mode`, waiting at most `wait`. A request that conflicts with a
    /// permit held (or with an earlier deferred request) is deferred and
    /// granted in the fair order. `wait` zero: `Deferred` at once instead
    /// of waiting; a wait that runs out: `Timeout`, and the request leaves
    /// no trace in the queue. A backend that cannot be reached:
    /// `Unavailable` within `wait`.
    fn request(&self, path: &str, mode: Mode, wait: Duration) -> Result<Box<dyn Grant>>;

    /// What the arbiter holds and queues now (reclaiming what it finds
    /// dead or expired first).
    fn status(&self) -> Result<Status>;
}

/// One granted permit, as a backend hands it out. Releasing it (or
/// dropping it) gives it back.
pub trait Grant: Send + Sync + fmt::Debug {
    /// The fencing token: strictly increasing per volume.
    fn token(&self) -> u64;

    /// The lease as granted.
    fn lease(&self) -> Duration;

    /// Extends the lease by its length from now. `Fenced` if the permit is
    /// no longer current (its lease ran out and it was reclaimed, or its
    /// backend says another may hold it); then it is never current again.
    /// A remote backend (etcd) that cannot be reached: `Unavailable` while
    /// the lease may still be alive, `Fenced` once it cannot be.
    fn renew(&self) -> Result<()>;

    /// Runs `commit` only while this permit is current for its path, such
    /// that no conflicting grant can be made between the check and the end
    /// of `commit`. `Fenced` without running it otherwise (`Unavailable`,
    /// also without running it, when a remote backend cannot be reached
    /// but the permit may still be current: see [`Grant::renew`]).
    fn commit(&self, commit: &mut dyn FnMut() -> Result<()>) -> Result<()>;

    /// Gives the permit back (idempotent; dropping it does the same).
    fn release(&self);
}

/// A permit: the right to transfer one path of one volume in one mode,
/// until released (dropped), its lease runs out, or its holder dies.
///
/// `Send + Sync`: the permit may be used and released from any thread.
#[derive(Debug)]
pub struct Permit {
    grant: Box<dyn Grant>,
    volume: Arc<Volume>,
    path: String,
    mode: Mode,
}

impl Permit {
    /// The fencing token: strictly increasing per volume.
    pub fn token(&self) -> u64 {
        self.grant.token()
    }

    /// The path inside the volume.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Read or write.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The volume's name.
    pub fn volume(&self) -> &str {
        &self.volume.name
    }

    /// The lease as granted.
    pub fn lease(&self) -> Duration {
        self.grant.lease()
    }

    /// Extends the lease. `Fenced` if the permit was lost (reclaimed after
    /// its lease ran out, or its backend can no longer vouch for it).
    pub fn renew(&self) -> Result<()> {
        self.grant.renew().map_err(|e| self.about(e))
    }

    /// `e` with the volume and path in its message.
    fn about(&self, e: crate::Error) -> crate::Error {
        crate::Error::new(
            e.kind(),
            format!(
                "volume {}, path {}: {}",
                self.volume.name,
                self.path,
                e.message()
            ),
        )
    }

    /// Copies the local file `src` to the permit's path in the volume
    /// (a transfer session: temporary name, fsync, rename only while the
    /// permit is current). Needs a write permit (`Invalid` otherwise);
    /// `Fenced` if the permit was lost, and then the volume is unchanged.
    pub fn put(&self, src: &Path) -> Result<u64> {
        if self.mode != Mode::Write {
            return Err(err!(
                Invalid,
                "{}: a put needs a write permit; this one is for reading",
                self.path
            ));
        }
        transfer::put(&self.volume.record.dir, &self.path, src, &*self.grant)
            .map_err(|e| self.about(e))
    }

    /// Copies the permit's path in the volume to the local file `dst`
    /// (through a temporary name beside `dst`, renamed into place only while
    /// the permit is current). A read or a write permit will do.
    pub fn get(&self, dst: &Path) -> Result<u64> {
        transfer::get(&self.volume.record.dir, &self.path, dst, &*self.grant)
            .map_err(|e| self.about(e))
    }

    /// Gives the permit back now (dropping it does the same).
    pub fn release(self) {}
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.grant.release();
    }
}

/// An open gateway volume: its record and its arbiter.
#[derive(Debug)]
pub struct Volume {
    name: String,
    record: VolumeRecord,
    arbiter: Box<dyn Arbiter>,
}

impl Volume {
    /// Opens the volume `name` of `domain`: reads its record and opens its
    /// arbiter. `NotFound` if there is no such volume.
    pub fn open(domain: &Domain, name: &str) -> Result<Arc<Volume>> {
        let record = volume::read(domain, name)?;
        let arbiter = open_arbiter(domain, name, &record)?;
        Ok(Arc::new(Volume {
            name: name.to_owned(),
            record,
            arbiter,
        }))
    }

    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its record (directory, cap, lease, backend).
    pub fn record(&self) -> &VolumeRecord {
        &self.record
    }

    /// Asks for a permit on `path` (relative, inside the volume) in `mode`,
    /// waiting at most `wait`; see [`Arbiter::request`] for the outcomes.
    /// `Invalid` for a path that is absolute, has `..`, `.` or empty parts,
    /// or is too long.
    pub fn request(self: &Arc<Self>, path: &str, mode: Mode, wait: Duration) -> Result<Permit> {
        paths::check(path)?;
        let grant = self.arbiter.request(path, mode, wait)?;
        Ok(Permit {
            grant,
            volume: Arc::clone(self),
            path: path.to_owned(),
            mode,
        })
    }

    /// What the arbiter holds and queues now.
    pub fn status(&self) -> Result<Status> {
        self.arbiter.status()
    }
}

fn open_arbiter(domain: &Domain, name: &str, record: &VolumeRecord) -> Result<Box<dyn Arbiter>> {
    match &record.etcd {
        None => Ok(Box::new(local::LocalArbiter::open(domain, name, record)?)),
        Some(urls) => open_etcd(name, record, urls),
    }
}

#[cfg(feature = "etcd")]
fn open_etcd(name: &str, record: &VolumeRecord, urls: &str) -> Result<Box<dyn Arbiter>> {
    Ok(Box::new(etcd::EtcdArbiter::open(name, record, urls)?))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(name: &str, _record: &VolumeRecord, _urls: &str) -> Result<Box<dyn Arbiter>> {
    Err(err!(
        Unavailable,
        "volume {name} keeps its permits in etcd, and this build of mtipc has no etcd backend (cargo feature `etcd`)"
    ))
}

/// The volumes a process has opened in one domain, each opened once (the
/// C and Python handles of a domain keep one of these, so a permit request
/// does not read the volume record and map its arbiter every time).
#[derive(Debug, Default)]
pub struct Volumes {
    open: Mutex<HashMap<String, Arc<Volume>>>,
}

impl Volumes {
    /// No volume opened yet.
    pub fn new() -> Volumes {
        Volumes::default()
    }

    /// The volume `name`, opened on first use.
    pub fn get(&self, domain: &Domain, name: &str) -> Result<Arc<Volume>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = open.get(name) {
            return Ok(Arc::clone(v));
        }
        let v = Volume::open(domain, name)?;
        open.insert(name.to_owned(), Arc::clone(&v));
        Ok(v)
    }

    /// Asks for a permit on `path` of volume `volume` (see
    /// [`Volume::request`]).
    pub fn request(
        &self,
        domain: &Domain,
        volume: &str,
        path: &str,
        mode: Mode,
        wait: Duration,
    ) -> Result<Permit> {
        self.get(domain, volume)?.request(path, mode, wait)
    }
}
