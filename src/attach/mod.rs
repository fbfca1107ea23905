//! Discovery and secure attach (DESIGN.md section 1, patent US 10,528,526).
//! The protocol as built, with every file format: `docs/attach.md`.
//!
//! A tenant [`advertise`]s itself with a [`Handler`] for the connections
//! attachers open to it; [`list`] reports the live advertisements
//! ([`TenantInfo`]); [`attach`] runs a round with a named tenant and
//! returns the [`Conn`], a TLS 1.3 message channel relayed by mtipcd.
//!
//! Inside (not API; the tests, benches and mtipcd reach them through the
//! hidden `mtipc::internals::attach`):
//!
//! - `files`: tenant ids, the advertisement, response and synchronization
//!   files, process identity (pid + start time);
//! - `channel`: the TLS 1.3 message channel inside the relayed stream;
//! - `relay`: mtipcd's relay, which pairs the two ends of a round;
//! - `round`: the round's synchronization (semaphore, state words,
//!   synchronization locks), model-checked under loom;
//! - `daemon`: mtipcd's part (its advertisement, waiter and relay).

#[cfg(not(loom))]
mod attacher;
#[cfg(not(loom))]
pub(crate) mod channel;
#[cfg(not(loom))]
pub(crate) mod daemon;
#[cfg(not(loom))]
pub(crate) mod files;
#[cfg(not(loom))]
pub(crate) mod relay;
pub(crate) mod round;
#[cfg(not(loom))]
mod tenant;

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(not(loom))]
pub use attacher::{attach, list, AttachOptions, TenantInfo, DEFAULT_TIMEOUT};
#[cfg(not(loom))]
pub use channel::{fingerprint_hex, Conn, MAX_MESSAGE};
#[cfg(not(loom))]
pub use tenant::{advertise, Advertisement, Handler};

/// Lowercase hex of `bytes`: the encoding of fingerprints, pairing ids and
/// keys in the attach files, the relay's hello line and the logs.
#[cfg(not(loom))]
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The protocol a tenant accepts when it names none: C's `mt_advertise`
/// and Python's `advertise` without `protocols` (`mt_advertise_protocols`,
/// [`advertise`] and Python's `protocols=` name others).
pub const DEFAULT_PROTOCOL: &str = "msg";

pub(crate) use consts::*;

/// The domain's files and the timings of attach (not API: re-exported by
/// `mtipc::internals::attach` for the benches).
pub(crate) mod consts {
    use std::time::Duration;

    /// The domain's attach lock: one round at a time.
    pub const ATTACH_LOCK: &str = "attach.lock";
    /// Held by the running mtipcd.
    pub const DAEMON_LOCK: &str = "daemon.lock";
    /// mtipcd's relay socket, in the domain.
    pub const RELAY_SOCKET: &str = "relay.sock";
    /// How long either end waits for the relay and the TLS handshake, counted
    /// from the connection's start time.
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// How often an advertisement's waiter checks whether it must stop: the
    /// longest a withdrawal waits for it (outside a round).
    pub const STOP_CHECK: Duration = Duration::from_millis(100);
}

#[cfg(not(loom))]
impl round::SyncLock for files::SyncFile {
    fn lock_exclusive(&self, deadline: Option<std::time::Instant>) -> crate::Result<()> {
        match deadline {
            None => files::SyncFile::lock_exclusive(self),
            Some(d) => {
                self.lock_exclusive_within(d.saturating_duration_since(std::time::Instant::now()))
            }
        }
    }
    fn lock_shared(&self) -> crate::Result<()> {
        files::SyncFile::lock_shared(self)
    }
    fn try_lock_shared(&self) -> crate::Result<bool> {
        files::SyncFile::try_lock_shared(self)
    }
    fn unlock(&self) -> crate::Result<()> {
        files::SyncFile::unlock(self)
    }
}

// The round's state values are the ones the synchronization file documents.
#[cfg(not(loom))]
const _: () = assert!(round::BUSY == files::STATE_BUSY && round::IDLE == files::STATE_IDLE);
