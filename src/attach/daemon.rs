//! The daemon's side of the protocol, run by `mtipcd`: it advertises
//! itself, takes part in every round (its waiter registers each response's
//! pairing with the relay) and runs the relay.

use super::files::{self, Advert, AdvertFiles, ProcId, Response, Role, DAEMON_ID};
use super::relay::{Pairing, Relay, RelayStats};
use super::tenant::start_waiter;
use super::{DAEMON_LOCK, RELAY_SOCKET};
use crate::domain::Domain;
use crate::error::{err, Result};
use crate::sync::Flag;
use crate::sys::euid;
use crate::sys::fs::{read_note, LockFile};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running daemon. [`Daemon::stop`] (or drop) withdraws it cleanly.
pub struct Daemon {
    relay: Arc<Relay>,
    relay_thread: Option<JoinHandle<Result<()>>>,
    files: Option<Arc<AdvertFiles>>,
    stop: Arc<Flag>,
    waiter: Option<JoinHandle<()>>,
    socket: PathBuf,
    _lock: LockFile,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket)
            .finish()
    }
}

impl Daemon {
    /// Starts the daemon on `domain`: refuses (`Exists`) if one already
    /// runs there, binds the relay, advertises `@mtipcd` and starts its
    /// waiter and the relay's thread.
    pub fn start(domain: &Domain) -> Result<Daemon> {
        let lock_path = domain.path().join(DAEMON_LOCK);
        let mut lock = match LockFile::try_acquire(&lock_path)? {
            Some(l) => l,
            None => {
                let who = read_note(&lock_path).unwrap_or_else(|| "unknown".into());
                return Err(err!(
                    Exists,
                    "mtipcd is already running on domain {} ({who})",
                    domain.path().display()
                ));
            }
        };
        lock.write_note(&format!("pid {}", std::process::id()))?;
        let socket = domain.path().join(RELAY_SOCKET);
        let relay = Arc::new(Relay::bind(&socket, domain.owner_uid())?);
        let me = ProcId::current()?;
        let advert = Advert {
            id: DAEMON_ID.to_string(),
            role: Role::Daemon,
            pid: me.pid,
            start: me.start,
            uid: euid(),
            protocols: vec!["relay".to_string()],
            fingerprint: None,
            created_ms: files::now_ms(),
        };
        let (r2, dom_path) = (relay.clone(), domain.path().to_path_buf());
        let on_response = Box::new(move |r: Response| {
            let dir = files::advert_dir(&dom_path, &r.tenant);
            match files::read_advert(&dir) {
                Ok(a) => {
                    crate::log::info!(
                        tenant = %r.tenant, tenant_pid = a.pid, attacher_pid = r.attacher_pid,
                        pairing = %super::relay::short_id(&r.pairing), start_ms = r.start_ms, duration_ms = r.duration_ms,
                        "round: pairing registered"
                    );
                    r2.register(Pairing {
                        id: r.pairing,
                        tenant_pid: a.pid,
                        attacher_pid: r.attacher_pid,
                        start_ms: r.start_ms,
                        duration_ms: r.duration_ms,
                    });
                }
                Err(e) => {
                    crate::log::warn!(tenant = %r.tenant, error = %e, "response for an unreadable advertisement ignored")
                }
            }
        });
        let relay_thread = {
            let relay = relay.clone();
            std::thread::Builder::new()
                .name("mtipc-relay".into())
                .spawn(move || crate::log::quiet_panics(|| relay.run()))
                .map_err(|e| err!(Io, "cannot start the relay thread: {e}"))?
        };
        let (files, stop, waiter) = match start_waiter(domain, &advert, on_response, true) {
            Ok(x) => x,
            Err(e) => {
                relay.shutdown();
                let _ = relay_thread.join();
                return Err(e);
            }
        };
        Ok(Daemon {
            relay,
            relay_thread: Some(relay_thread),
            files: Some(files),
            stop,
            waiter: Some(waiter),
            socket,
            _lock: lock,
        })
    }

    /// The relay's counters.
    pub fn stats(&self) -> RelayStats {
        self.relay.stats()
    }

    /// Withdraws the advertisement, stops the relay (open relayed
    /// connections are closed) and removes the socket.
    pub fn stop(mut self) -> Result<()> {
        self.shut()
    }

    fn shut(&mut self) -> Result<()> {
        self.stop.set();
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
        let withdrawn = match self.files.take().map(Arc::try_unwrap) {
            Some(Ok(f)) => f.withdraw(),
            _ => Ok(()),
        };
        self.relay.shutdown();
        if let Some(t) = self.relay_thread.take() {
            if let Ok(Err(e)) = t.join() {
                crate::log::warn!(error = %e, "relay ended with an error");
            }
        }
        let _ = std::fs::remove_file(&self.socket);
        withdrawn
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.shut();
    }
}
