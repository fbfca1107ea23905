//! The attacher's side (DESIGN.md section 1, steps 3, 5, 6 and 7) and
//! discovery.

use super::channel::Conn;
use super::files::{self, AdvertCache, Listed, ProcId, Response, SyncFile, DAEMON_ID};
use super::relay::{self, End};
use super::round::{attacher_round, Participant};
use super::{ATTACH_LOCK, HANDSHAKE_TIMEOUT, RELAY_SOCKET};
use crate::domain::Domain;
use crate::error::{err, Error, Result};
use crate::sync::Ordering;
use crate::sys::LockFile;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of [`attach`].
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Limit for the round: from the call until the target has answered.
    /// Default 5 s.
    pub timeout: Duration,
    /// When the connection opens: the relay passes no byte before. `None`:
    /// at once.
    pub start: Option<SystemTime>,
    /// How long it stays open from `start`; `None`: until an end closes.
    pub duration: Option<Duration>,
    /// The protocol to speak; `None`: the tenant's first.
    pub protocol: Option<String>,
}

/// The default round timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How far ahead a connection's start may be: 24 hours. [`attach`] returns
/// once the connection is open, so it blocks until the start; a start
/// further ahead (such as `UINT64_MAX` ms from C) is refused with
/// `Invalid` rather than waited for.
pub const MAX_START_AHEAD: Duration = Duration::from_secs(24 * 3600);

/// The longest `duration` of a connection: 30 days. Longer is refused with
/// `Invalid`; for no limit, give none.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

impl AttachOptions {
    /// Refuses a start more than [`MAX_START_AHEAD`] from now and a
    /// duration longer than [`MAX_DURATION`] (or zero).
    fn check(&self) -> Result<()> {
        if let Some(start) = self.start {
            let ahead = start
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if ahead > MAX_START_AHEAD {
                return Err(err!(
                    Invalid,
                    "the connection's start is {} s ahead; at most {} s (24 h) is accepted",
                    ahead.as_secs(),
                    MAX_START_AHEAD.as_secs()
                ));
            }
        }
        if let Some(d) = self.duration {
            if d > MAX_DURATION || d.is_zero() {
                return Err(err!(
                    Invalid,
                    "the connection's duration {} ms is out of range (1 ms to {} ms, 30 days; none for no limit)",
                    d.as_millis(),
                    MAX_DURATION.as_millis()
                ));
            }
        }
        Ok(())
    }
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            timeout: DEFAULT_TIMEOUT,
            start: None,
            duration: None,
            protocol: None,
        }
    }
}

/// A live advertised tenant, as discovery reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TenantInfo {
    /// Tenant id (`@mtipcd` for the daemon).
    pub id: String,
    /// `tenant` or `daemon`.
    pub role: String,
    /// The advertising process.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Protocols it accepts.
    pub protocols: Vec<String>,
    /// When it advertised (Unix ms).
    pub since_ms: u64,
    /// Its key: hex of its raw X25519 public key, which attachers pin
    /// (empty for the daemon).
    pub fingerprint: String,
}

fn info(l: &Listed) -> TenantInfo {
    let a = &l.advert;
    TenantInfo {
        id: a.id.clone(),
        role: match a.role {
            files::Role::Tenant => "tenant",
            files::Role::Daemon => "daemon",
        }
        .to_string(),
        pid: a.pid,
        uid: a.uid,
        protocols: a.protocols.clone(),
        since_ms: a.created_ms,
        fingerprint: a
            .fingerprint
            .as_ref()
            .map(super::channel::fingerprint_hex)
            .unwrap_or_default(),
    }
}

/// The live advertisements of the domain (tenants and the daemon), sorted
/// by id, and how many stale ones were cleaned up on the way.
pub fn list(domain: &Domain) -> Result<(Vec<TenantInfo>, usize)> {
    let (listed, cleaned) = files::list(domain.path())?;
    Ok((listed.iter().map(info).collect(), cleaned))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Random bytes from the kernel (`getrandom(2)`): the round does not wait
/// for OpenSSL, which a first attach in a process starts on another thread
/// meanwhile (`channel::warm_client`).
fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    crate::sys::random_bytes(&mut b).map_err(|e| Error::io("random bytes (getrandom)", e))?;
    Ok(b)
}

/// Attaches to `tenant`: runs one round and returns the TLS channel to it.
pub fn attach(domain: &Domain, tenant: &str, opts: &AttachOptions) -> Result<Conn> {
    files::validate_tenant_id(tenant)?;
    opts.check()?;
    domain.semaphore().check()?;
    // The first attach of a process: OpenSSL's start and the client's TLS
    // context on another thread, while this one runs the round (which
    // mostly waits for the other processes).
    let warming = super::channel::warm_client();
    let begun = Instant::now();
    let deadline = begun.checked_add(opts.timeout);
    let lock = LockFile::acquire(
        &domain.path().join(ATTACH_LOCK),
        deadline,
        "the domain's attach lock",
    )?;

    // What this process kept of the domain's advertisements from its
    // earlier rounds (see `AdvertCache`); a poisoned lock (a panic in an
    // earlier round) only means starting afresh.
    let kept = CACHES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(domain.path().to_path_buf())
        .or_default()
        .clone();
    // Only a thread holding the domain's attach lock takes this one: it is
    // never waited for.
    let mut guard = kept.lock().unwrap_or_else(|poisoned| {
        let mut g = poisoned.into_inner();
        g.clear();
        g
    });
    let cache = &mut *guard;
    // Set until this round is cleaned up: found set, it says that an
    // earlier round's attacher died with its response file out. Its value
    // names the target's directory to mtipcd (a hint: `files::round_hint`).
    let mark = domain.semaphore().round_mark();
    let leftovers = mark
        .atomic()
        .swap(files::round_hint(tenant), Ordering::AcqRel)
        != 0;
    // Waiters pausing after a unit no round explained sleep on the mark:
    // a round is starting.
    mark.wake(u32::MAX);
    let r = round(domain, tenant, opts, deadline, cache, leftovers).map_err(|e| {
        // Name the tenant in a timeout of the round (the relay's does):
        // the listing's, a waiter's that did not take its unit.
        if e.kind() == crate::ErrorKind::Timeout && !e.message().contains(tenant) {
            err!(
                Timeout,
                "attach to tenant {tenant:?} within {:?}: {}",
                opts.timeout,
                e.message()
            )
        } else {
            e
        }
    });
    // Every path out of `round` has removed the response it wrote.
    mark.atomic().store(0, Ordering::Release);
    if r.is_err() {
        // Do not keep descriptors through a failed round: a lock that could
        // not be released is released when its descriptor closes.
        cache.clear();
    }
    drop(guard);
    drop(lock);
    if let Some(w) = warming {
        // Its failure, if any, is the handshake's to report.
        let _ = w.join();
    }
    let (stream, fingerprint, response) = r?;
    let until_start = Duration::from_millis(response.start_ms.saturating_sub(files::now_ms()));
    Conn::connect(
        stream,
        &fingerprint,
        &response.key,
        until_start + HANDSHAKE_TIMEOUT,
    )
    .map(|c| c.with_protocol(&response.protocol))
    .map_err(|e| Error::new(e.kind(), format!("attach to {tenant:?}: {}", e.message())))
}

/// Per domain directory, what this process's attaches keep between rounds.
/// (The outer lock is held only to find a domain's entry.)
static CACHES: Mutex<BTreeMap<PathBuf, Arc<Mutex<AdvertCache>>>> = Mutex::new(BTreeMap::new());

/// The round of [`attach`], under the attach lock: the stream to the
/// tenant (through the relay), its key's fingerprint and the response.
fn round(
    domain: &Domain,
    tenant: &str,
    opts: &AttachOptions,
    deadline: Option<Instant>,
    cache: &mut AdvertCache,
    leftovers: bool,
) -> Result<(std::os::unix::net::UnixStream, [u8; 32], Response)> {
    // Under the attach lock: the set of advertisements cannot change
    // because of another round, and stale ones are cleaned up here.
    let (listed, _) = cache.list_until(domain.path(), deadline)?;
    // The daemon's advertisement, just listed: who must be listening at
    // the relay socket (no second read of its file).
    let daemon = listed
        .iter()
        .find(|l| l.advert.id == DAEMON_ID)
        .map(|l| relay::Listener::of(&l.advert))
        .ok_or_else(|| {
            err!(
                Unavailable,
                "mtipcd is not running on domain {} (start it with `mtipcd --domain {}`)",
                domain.path().display(),
                domain.path().display()
            )
        })?;
    let target = listed
        .iter()
        .find(|l| l.advert.id == tenant)
        .ok_or_else(|| {
            err!(
                NotFound,
                "no live tenant {tenant:?} is advertised in {}",
                domain.path().display()
            )
        })?;
    let fingerprint = target
        .advert
        .fingerprint
        .ok_or_else(|| err!(Corrupt, "tenant {tenant:?} advertises no key fingerprint"))?;
    let protocol = match &opts.protocol {
        None => target.advert.protocols[0].clone(),
        Some(p) if target.advert.protocols.iter().any(|q| q == p) => p.clone(),
        Some(p) => {
            return Err(err!(
                NotFound,
                "tenant {tenant:?} does not accept protocol {p:?} (it accepts {})",
                target.advert.protocols.join(", ")
            ))
        }
    };

    // No round runs while we hold the attach lock: a response file in any
    // directory is the leftover of an attacher that died mid-round, which
    // the round marker tells. Remove them all (not only the target's), or
    // one would stay next to a tenant that was not answering then, to be
    // served later if the dead attacher's pid is reused.
    if !leftovers {
        // Whatever is at the target's `response` goes (a link is removed,
        // never followed) before ours is written there.
        cache.remove_response(tenant)?;
    } else {
        for l in &listed {
            if let Err(e) = cache.remove_response(&l.advert.id) {
                crate::log::warn!(dir = %l.dir.display(), error = %e, "cannot remove a leftover response file");
            }
        }
    }

    // Open every participant's synchronization file (or check the one
    // kept, unless the listing found its directory quiet); one that
    // vanished in the meantime (withdrawn) is not a participant. A quiet
    // one withdrawn between the listing and here stays in the round with
    // its file: its waiter is gone, so the round waits for it only for
    // `GRACE`, as for one withdrawn just after this check.
    let mut present = Vec::with_capacity(listed.len());
    for l in &listed {
        match cache.sync(&l.advert.id) {
            Ok(_) => present.push(l),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let cache: &AdvertCache = cache;
    let mut syncs: Vec<(&SyncFile, ProcId, bool)> = Vec::with_capacity(present.len());
    for l in present {
        syncs.push((
            cache.kept_sync(&l.advert.id)?,
            l.advert.proc_id(),
            // The round needs the target and the daemon, whose waiter
            // registers the pairing with its relay.
            l.advert.id == tenant || l.advert.id == files::DAEMON_ID,
        ));
    }
    let alive: Vec<Box<dyn Fn() -> bool>> = syncs
        .iter()
        .map(|(_, p, _)| {
            let p = *p;
            Box::new(move || p.is_alive()) as Box<dyn Fn() -> bool>
        })
        .collect();
    let participants: Vec<Participant<'_, SyncFile>> = syncs
        .iter()
        .zip(&alive)
        .map(|((s, _, target), alive)| Participant {
            state: s.state(),
            lock: *s,
            alive: alive.as_ref(),
            target: *target,
        })
        .collect();

    let now = files::now_ms();
    let start_ms = opts.start.map_or(now, unix_ms).max(now);
    let response = Response {
        tenant: tenant.to_string(),
        relay: RELAY_SOCKET.to_string(),
        pairing: random::<16>()?,
        protocol,
        key: random::<32>()?,
        start_ms,
        duration_ms: opts.duration.map_or(0, |d| (d.as_millis() as u64).max(1)),
        attacher_pid: std::process::id(),
        created_ms: now,
    };
    let relay_path = domain.path().join(RELAY_SOCKET);
    let mut stream = None;
    let round = attacher_round(
        domain.semaphore().core(),
        &participants,
        deadline,
        &mut || files::write_response(&target.dir, &response),
        &mut |deadline| {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let s = relay::connect(&relay_path, End::Attacher, &response.pairing, left, &daemon)
                .map_err(|e| {
                    if e.kind() == crate::ErrorKind::Timeout {
                        err!(
                            Timeout,
                            "tenant {tenant:?} did not answer within {:?}",
                            opts.timeout
                        )
                    } else {
                        e
                    }
                })?;
            stream = Some(s);
            Ok(())
        },
        &mut || {
            if let Err(e) = files::remove_response(&target.dir) {
                crate::log::warn!(error = %e, "cannot remove the response file");
            }
        },
    );
    round?;
    let stream = stream.ok_or_else(|| err!(Panic, "round ended without a stream"))?;
    Ok((stream, fingerprint, response))
}
