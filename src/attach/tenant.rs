//! The tenant's side: advertise, wait for rounds, answer the attacher
//! (DESIGN.md section 1, steps 1, 2, 4, 5 and 6 for the tenant).

use super::channel::{Conn, ServerKey};
use super::files::{self, Advert, AdvertFiles, ProcId, Response, ResponseScan, Role};
use super::relay::{self, End};
use super::round::{waiter_round, NoRoundBackoff, Waited};
use super::{HANDSHAKE_TIMEOUT, RELAY_SOCKET, STOP_CHECK};
use crate::domain::Domain;
use crate::error::{err, Result};
use crate::sync::Flag;
use crate::sys::euid;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What a tenant does with each attached connection. Called on a thread of
/// its own per connection; the handler owns the connection.
pub type Handler = Arc<dyn Fn(Conn) + Send + Sync + 'static>;

/// A live advertisement: its files, its waiter thread and its key. Dropping
/// it (or [`Advertisement::withdraw`]) stops the waiter and removes the
/// files; connections already handed to the handler live on.
pub struct Advertisement {
    id: String,
    files: Option<Arc<AdvertFiles>>,
    stop: Arc<Flag>,
    waiter: Option<JoinHandle<()>>,
    fingerprint: [u8; 32],
    /// Open while the advertisement lives: a connection thread calls the
    /// handler only if it finds the gate open (checked under the lock), so
    /// no new handler call begins once `withdraw` has closed it.
    gate: Gate,
}

/// See [`Advertisement`]'s `gate`.
type Gate = Arc<std::sync::Mutex<bool>>;

impl std::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertisement")
            .field("id", &self.id)
            .finish()
    }
}

/// Pairing ids a waiter has already answered (a response is never served
/// twice, even if the waiter sees it again).
struct Served(VecDeque<[u8; 16]>);

impl Served {
    fn first_time(&mut self, id: [u8; 16]) -> bool {
        if self.0.contains(&id) {
            return false;
        }
        if self.0.len() == 64 {
            self.0.pop_front();
        }
        self.0.push_back(id);
        true
    }
}

/// Advertises `tenant` in `domain`, accepting `protocols` (at least one),
/// and calls `handler` with each attached connection.
///
/// The advertisement's waiter thread runs as `SCHED_BATCH` if it starts
/// under the default `SCHED_OTHER` (its wake-ups then do not preempt the
/// application's threads); each `handler` call runs on a thread of its own
/// with the policy the waiter started with (the calling thread's, unless
/// that has `SCHED_RESET_ON_FORK`).
pub fn advertise(
    domain: &Domain,
    tenant: &str,
    protocols: &[&str],
    handler: Handler,
) -> Result<Advertisement> {
    files::validate_tenant_id(tenant)?;
    if protocols.is_empty() {
        return Err(err!(
            Invalid,
            "tenant {tenant}: at least one protocol is needed"
        ));
    }
    let key = Arc::new(ServerKey::generate()?);
    // The process's TLS server context, made now rather than in the first
    // attacher's handshake.
    super::channel::context(true)?;
    let me = ProcId::current()?;
    let advert = Advert {
        id: tenant.to_string(),
        role: Role::Tenant,
        pid: me.pid,
        start: me.start,
        uid: euid(),
        protocols: protocols.iter().map(|p| p.to_string()).collect(),
        fingerprint: Some(key.fingerprint()),
        created_ms: files::now_ms(),
    };
    let fingerprint = key.fingerprint();
    let domain_path = domain.path().to_path_buf();
    let gate: Gate = Arc::new(std::sync::Mutex::new(true));
    let on_response: OnResponse = {
        let (domain_path, tenant, gate) = (domain_path.clone(), tenant.to_string(), gate.clone());
        Box::new(move |r: Response| {
            serve(
                &domain_path,
                &tenant,
                r,
                key.clone(),
                handler.clone(),
                gate.clone(),
            )
        })
    };
    let (files, stop, waiter) = start_waiter(domain, &advert, on_response, false)?;
    Ok(Advertisement {
        id: tenant.to_string(),
        files: Some(files),
        stop,
        waiter: Some(waiter),
        fingerprint,
        gate,
    })
}

/// Called with each new response addressed to an advertisement.
pub(crate) type OnResponse = Box<dyn FnMut(Response) + Send + 'static>;

/// Publishes `advert` and starts its waiter thread. `scan_all`: the daemon
/// looks for responses in every advertisement's directory.
pub(crate) fn start_waiter(
    domain: &Domain,
    advert: &Advert,
    mut on_response: OnResponse,
    scan_all: bool,
) -> Result<(Arc<AdvertFiles>, Arc<Flag>, JoinHandle<()>)> {
    // The waiter opens the domain itself: it lives as long as the
    // advertisement, whatever the caller does with its own handle.
    let dom = Domain::open(Some(domain.path()))?;
    let files = Arc::new(AdvertFiles::publish(dom.path(), advert)?);
    let stop = Arc::new(Flag::new());
    let (f2, s2, id) = (files.clone(), stop.clone(), advert.id.clone());
    let waiter = std::thread::Builder::new()
        .name(format!("mtipc-waiter-{id}"))
        .spawn(move || {
            // Woken at every round of the domain, for a few microseconds
            // of work: as `SCHED_BATCH` its wake-ups do not preempt the
            // running thread (an attacher unlocking the next of N
            // synchronization files, the application's own threads).
            crate::sys::thread::become_background();
            crate::log::quiet_panics(move || {
                let mut served = Served(VecDeque::new());
                let mut scan = scan_all.then(ResponseScan::new);
                let mut backoff = NoRoundBackoff::default();
                loop {
                    let r = waiter_round(
                        dom.semaphore().core(),
                        f2.sync().state(),
                        f2.sync(),
                        STOP_CHECK,
                        &|| s2.is_set() || dom.semaphore().is_broken(),
                        &mut || {
                            let hint = dom
                                .semaphore()
                                .round_mark()
                                .load(crate::sync::Ordering::Acquire);
                            for r in find_responses(dom.path(), &f2, &id, scan.as_mut(), hint) {
                                if served.first_time(r.pairing) {
                                    on_response(r);
                                }
                            }
                        },
                    );
                    match r {
                        Ok(Waited::Round) => backoff.reset(),
                        Ok(Waited::NoRound) => {
                            // A unit no round explains: pause before the
                            // next wait, waking early when a round starts
                            // (the attacher sets the round mark and wakes
                            // it) or the advertisement is withdrawn.
                            let mark = dom.semaphore().round_mark();
                            let pause = backoff.pause().min(STOP_CHECK);
                            if mark.load(crate::sync::Ordering::Acquire) == 0 {
                                mark.wait(0, Some(pause));
                            } else {
                                std::thread::sleep(pause);
                            }
                            if s2.is_set() {
                                return;
                            }
                        }
                        Ok(Waited::Stopped) => {
                            if let Err(e) = dom.semaphore().check() {
                                crate::log::error!(
                                    advert = %id,
                                    error = %e,
                                    "waiter stops: the domain's semaphore is gone"
                                );
                            }
                            return;
                        }
                        Err(e) => {
                            crate::log::error!(advert = %id, error = %e, "waiter stops");
                            return;
                        }
                    }
                }
            })
        })
        .map_err(|e| err!(Io, "cannot start the waiter thread: {e}"))?;
    Ok((files, stop, waiter))
}

/// The responses a waiter should act on: its own (a tenant), or every
/// advertisement's (the daemon, `scan` is `Some`). Unreadable or garbage
/// ones are logged and skipped: a hostile file never stops the waiter.
///
/// The daemon first tries the directories the round marker's `hint` names
/// (`files::round_hint`), without listing the domain: a valid response of
/// a live attacher there is the round's (one round at a time). Anything
/// else (no such directory kept, no response, a bad one) falls back to
/// looking at every directory.
fn find_responses(
    domain: &Path,
    own: &AdvertFiles,
    id: &str,
    mut scan: Option<&mut ResponseScan>,
    hint: u32,
) -> Vec<Response> {
    if let Some(scan) = scan.as_deref_mut() {
        // Silently: whatever is wrong there, the scan below sees and logs.
        let found: Vec<Response> = scan
            .hinted(domain, hint)
            .into_iter()
            .filter_map(|(_, r)| r.ok().flatten())
            .filter(|r| matches!(ProcId::of(r.attacher_pid), Ok(Some(_))))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    let scan_all = scan.is_some();
    // Every advertisement directory for the daemon, without reading (and
    // checking the process of) every advertisement as `files::list` would:
    // only a directory that holds a response matters, and the daemon reads
    // that one's advertisement when it registers the pairing.
    let found: Vec<(PathBuf, Result<Option<Response>>)> = match scan {
        Some(scan) => scan.scan(domain).unwrap_or_else(|e| {
            crate::log::warn!(dir = %files::adverts_dir(domain).display(), error = %e, "cannot list advertisements");
            Vec::new()
        }),
        None => vec![(own.dir().to_path_buf(), own.read_response())],
    };
    let mut out = Vec::new();
    for (dir, found) in found {
        match found {
            // Left behind by an attacher that died before its clean-up.
            Ok(Some(r)) if !matches!(ProcId::of(r.attacher_pid), Ok(Some(_))) => {
                crate::log::debug!(dir = %dir.display(), attacher = r.attacher_pid, "response of a dead attacher ignored")
            }
            Ok(Some(r)) if scan_all || r.tenant == id => out.push(r),
            Ok(Some(r)) => {
                crate::log::warn!(advert = %id, to = %r.tenant, "response addressed to another tenant ignored")
            }
            Ok(None) => {}
            // Withdrawn meanwhile.
            Err(e) if scan_all && e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => {
                crate::log::warn!(dir = %dir.display(), error = %e, "bad response file ignored")
            }
        }
    }
    out
}

/// Answers one response on a thread of its own: connect to the relay, run
/// the TLS server side, check the one-time key, hand the connection over;
/// that thread gets back the scheduling policy the waiter had before it
/// became a background thread (the advertising thread's).
fn serve(
    domain: &Path,
    tenant: &str,
    r: Response,
    key: Arc<ServerKey>,
    handler: Handler,
    gate: Gate,
) {
    // Called on the waiter, a background thread: what it had before.
    let policy = crate::sys::thread::foreground_policy();
    let relay_path = domain.join(RELAY_SOCKET);
    let domain = domain.to_path_buf();
    let tenant = tenant.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("mtipc-conn-{tenant}"))
        .spawn(move || {
            // Started by the (batch) waiter: the policy the waiter was
            // started with (the advertising thread's) back.
            if let Some(p) = policy {
                crate::sys::thread::become_foreground(p);
            }
            // The handshake is the library's (its panics are reported, not
            // printed); the handler is the application's.
            let result = crate::log::quiet_panics(|| {
                let until_start =
                    Duration::from_millis(r.start_ms.saturating_sub(files::now_ms()));
                relay::Listener::of_daemon(&domain)
                    .and_then(|daemon| {
                        relay::connect(
                            &relay_path,
                            End::Tenant,
                            &r.pairing,
                            HANDSHAKE_TIMEOUT,
                            &daemon,
                        )
                    })
                    .and_then(|s| Conn::accept(s, &key, &r.key, until_start + HANDSHAKE_TIMEOUT))
                    .map(|c| c.with_protocol(&r.protocol))
            });
            match result {
                Ok(conn) => {
                    let open = *gate.lock().unwrap_or_else(|e| e.into_inner());
                    if open {
                        handler(conn);
                    } else {
                        crate::log::info!(tenant = %tenant, "withdrawn during the handshake: connection closed");
                    }
                }
                Err(e) => crate::log::warn!(tenant = %tenant, error = %e, "attach not completed"),
            }
        });
    if let Err(e) = spawned {
        crate::log::error!(error = %e, "cannot start a connection thread");
    }
}

impl Advertisement {
    /// The tenant id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The advertised fingerprint: this advertisement's raw X25519 public
    /// key, which attachers pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Stops the waiter (within 100 ms, `STOP_CHECK`, or at the end of a
    /// round in progress) and removes the files. Once it returns, no new handler
    /// call begins: a connection still in its handshake is closed instead.
    /// Handler calls already begun go on.
    pub fn withdraw(mut self) -> Result<()> {
        self.shut()
    }

    fn shut(&mut self) -> Result<()> {
        self.stop.set();
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
        *self.gate.lock().unwrap_or_else(|e| e.into_inner()) = false;
        match self.files.take().map(Arc::try_unwrap) {
            Some(Ok(files)) => files.withdraw(),
            _ => Ok(()),
        }
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        let _ = self.shut();
    }
}
