//! The attach channel: whole messages over TLS 1.3 over a stream
//! (DESIGN.md section 1 step 6, `docs/attach.md` "The channel").
//!
//! The tenant is the TLS server, the attacher the client, and neither
//! presents a certificate: the handshake is TLS 1.3 with an external
//! pre-shared key and an X25519 key exchange (`psk_dhe_ke`, RFC 8446
//! section 4.2.9), the PSK bound to both the one-time key and the tenant's
//! key:
//!
//! - the tenant's key ([`ServerKey`]) is an X25519 key pair made in memory
//!   when it advertises; the advertisement's `fingerprint` is its raw
//!   32-byte public key `T`;
//! - the attacher makes an ephemeral X25519 key `e` per connection and
//!   derives `psk = HKDF-SHA256(salt = "mtipc attach psk 1", ikm =
//!   X25519(e, T) ‖ one-time key, info = T ‖ e_pub)` ([`derive_psk`]); its
//!   PSK identity is `e_pub` in hex ([`psk_identity`]);
//! - the tenant parses the identity ([`parse_psk_identity`]), computes the
//!   same PSK with `X25519(t, e_pub)` and its response's one-time key, and
//!   OpenSSL checks the ClientHello's PSK binder against it: a wrong
//!   one-time key, or a PSK computed for another tenant key, fails there.
//!   The server's Finished then proves to the attacher that the peer holds
//!   `t` (the pinned tenant) and the one-time key; the client's Finished
//!   proves the one-time key to the tenant. The traffic keys also depend on
//!   a fresh X25519 exchange of the TLS handshake itself (forward secrecy).
//!
//! One TLS context per role and process, made on first use and kept; the
//! per-connection secrets travel to the PSK callbacks in the `SSL` object's
//! ex-data. The handshake is the whole authentication: when
//! [`Conn::connect`] returns, the tenant has accepted the attacher, and
//! both ends exchange [frames](#framing) with [`Conn::send`] and
//! [`Conn::recv`].
//!
//! # Framing
//!
//! Inside TLS, a message is a 4-byte big-endian length followed by that many
//! bytes, at most [`MAX_MESSAGE`]. A frame split across TLS records (or
//! trickled through the relay one byte at a time) is reassembled; a receive
//! that times out keeps what it has read for the next call.
//!
//! # Concurrency
//!
//! A [`Conn`] is `Send + Sync`: one thread may send while another receives.
//! OpenSSL's `SSL` object itself is not safe to use from two threads at once,
//! so it sits in a mutex, but that mutex is never held while waiting:
//!
//! - the socket is non-blocking. Every `SSL_read`/`SSL_write` runs under the
//!   TLS mutex and returns at once, with data or with `WANT_READ` /
//!   `WANT_WRITE`;
//! - on `WANT_READ` (and no plaintext pending in OpenSSL, `SSL_pending`) the
//!   caller releases the mutex, waits with `poll(2)` on the raw descriptor
//!   for `POLLIN` (or `POLLOUT` on `WANT_WRITE`) until its deadline, then
//!   takes the mutex again and retries. `poll` is level-triggered, so bytes
//!   that arrive between the failed read and the `poll` are not missed, and
//!   OpenSSL reads records without read-ahead, so no ciphertext hides in its
//!   buffers while the socket looks empty;
//! - a second mutex serialises senders (a frame is written whole, never
//!   interleaved with another sender's), a third serialises receivers and
//!   holds the bytes received but not yet handed out (a partial frame stays
//!   there across a timeout). A receiver waiting in `poll` holds only the
//!   receive mutex, which no sender takes. Lock order: receive or send
//!   mutex, then the TLS mutex; nothing takes both the receive and the send
//!   mutex;
//! - a `WANT_WRITE`-interrupted `SSL_write` is retried with the same bytes, as
//!   OpenSSL requires (`SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER` and partial
//!   writes are enabled); reads may run between the attempts;
//! - [`Conn::close`] (or drop) sends `close_notify` and shuts the socket down
//!   under the TLS mutex; a thread waiting in `poll` on the same descriptor
//!   wakes (the shutdown raises `POLLHUP`), retakes the mutex and returns
//!   [`ErrorKind::Closed`]. The descriptor itself is closed only when the
//!   `Conn` is dropped, so no thread can poll a reused descriptor.
//!
//! [`Conn::accept`] and [`Conn::connect`] take the stream over and set it
//! non-blocking (`O_NONBLOCK` belongs to the open file description: a
//! duplicate of the descriptor kept elsewhere becomes non-blocking too). The
//! stream must be positioned at the first TLS byte: whoever read a line from
//! it before (the relay's `ok`) must not have read ahead.
//!
//! Writes go through `send(2)` with `MSG_NOSIGNAL`: a vanished peer is an
//! `EPIPE` error ([`ErrorKind::Closed`]), never a `SIGPIPE` that would kill a
//! C program that did not ignore it. [`Conn::send`] has no timeout: like a
//! socket write it waits while the peer's buffers are full, and fails once
//! the peer is gone.
//!
//! # Errors
//!
//! | situation | kind |
//! |---|---|
//! | handshake, key exchange or [`Conn::recv`] not done in time | [`ErrorKind::Timeout`] |
//! | the tenant refused the PSK (attacher: wrong one-time key, or the peer does not hold the advertised key) | [`ErrorKind::Denied`] |
//! | the peer refused the handshake with an alert | [`ErrorKind::Denied`] |
//! | the attacher did not prove the one-time key (tenant) | [`ErrorKind::Denied`] |
//! | peer closed: `close_notify`, EOF between frames, reset (also during the handshake) | [`ErrorKind::Closed`] |
//! | EOF inside a frame, length over [`MAX_MESSAGE`], broken TLS, bytes that are not TLS | [`ErrorKind::Corrupt`] |
//! | message over [`MAX_MESSAGE`] to send, buffer too small to receive | [`ErrorKind::Invalid`] |
//!
//! After any receive error but a timeout the receive side stays failed (the
//! same error again); after a send error the send side does.

use crate::error::{err, Error, ErrorKind, Result};
use crate::sys::net::{self as sys, Events};
use openssl::derive::Deriver;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::md::Md;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::ssl::{
    self, ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The largest message, in bytes, that [`Conn::send`] accepts and
/// [`Conn::recv`] takes from the peer (1 MiB).
///
/// cbindgen:ignore
pub const MAX_MESSAGE: usize = 1 << 20;

/// Length of the frame header (big-endian u32).
const HEADER: usize = 4;

/// Plaintext bytes of one full TLS record: the first write of a frame puts
/// the header and the start of the payload in one record.
const RECORD: usize = 16 * 1024;

/// The HKDF salt of [`derive_psk`]: names the derivation and its version.
const PSK_SALT: &[u8] = b"mtipc attach psk 1";

/// Length of a PSK identity: 64 lowercase hex digits (an X25519 public key).
pub const PSK_IDENTITY_LEN: usize = 64;

/// The ciphersuites a PSK from OpenSSL's PSK callbacks can use: those whose
/// hash is SHA-256 (the callbacks' PSK is defined for it).
const CIPHERSUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";

/// A tenant's key for the attach channel: an X25519 key pair made in memory
/// when it advertises, never written anywhere.
///
/// Cloning is cheap and shares the key (reference counted). `Debug` shows
/// the public key only.
#[derive(Clone)]
pub struct ServerKey {
    key: PKey<Private>,
    public: [u8; 32],
}

impl ServerKey {
    /// Makes a fresh X25519 key pair.
    pub fn generate() -> Result<ServerKey> {
        let build = || -> std::result::Result<ServerKey, ErrorStack> {
            let key = PKey::generate_x25519()?;
            let public = raw_public(&key)?;
            Ok(ServerKey { key, public })
        };
        build().map_err(|e| err!(Io, "cannot generate the tenant's key: {e}"))
    }

    /// The raw 32-byte X25519 public key: what the advertisement carries as
    /// its `fingerprint` (as [`fingerprint_hex`]) and the attacher pins by
    /// deriving the PSK with it.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.public
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("fingerprint", &fingerprint_hex(&self.public))
            .finish_non_exhaustive()
    }
}

/// A fingerprint as 64 lowercase hex digits (the advertisement's format).
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    super::hex(fp)
}

/// The raw public key of an X25519 key.
fn raw_public<T: openssl::pkey::HasPublic>(
    key: &PKeyRef<T>,
) -> std::result::Result<[u8; 32], ErrorStack> {
    let raw = key.raw_public_key()?;
    // X25519 public keys are 32 bytes; anything else is OpenSSL's error.
    raw.as_slice().try_into().map_err(|_| ErrorStack::get())
}

/// X25519 between our private key and the peer's raw public key. `None` if
/// the peer's key is refused or the shared secret is all zero (a low-order
/// point: a secret anyone could compute).
fn x25519(ours: &PKeyRef<Private>, theirs: &[u8; 32]) -> Option<[u8; 32]> {
    let peer = PKey::public_key_from_raw_bytes(theirs, Id::X25519).ok()?;
    let mut d = Deriver::new(ours).ok()?;
    d.set_peer(&peer).ok()?;
    let mut shared = [0u8; 32];
    match d.derive(&mut shared) {
        Ok(32) if shared != [0u8; 32] => Some(shared),
        _ => None,
    }
}

/// The channel's pre-shared key: HKDF-SHA256 with salt
/// `"mtipc attach psk 1"`, input keying material `dh ‖ one_time_key` and
/// info `tenant_public ‖ attacher_public`, 32 bytes.
///
/// `dh` is X25519 between the attacher's ephemeral key and the tenant's
/// key: only the holder of either private key can compute it, so the PSK
/// pins the tenant; the one-time key (from the response file) makes it
/// this round's; the info binds both public keys.
// Not API: tests/parsers checks it with known values.
#[doc(hidden)]
pub fn derive_psk(
    dh: &[u8; 32],
    one_time_key: &[u8; 32],
    tenant_public: &[u8; 32],
    attacher_public: &[u8; 32],
) -> Result<[u8; 32]> {
    let run = || -> std::result::Result<[u8; 32], ErrorStack> {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(dh);
        ikm[32..].copy_from_slice(one_time_key);
        let mut info = [0u8; 64];
        info[..32].copy_from_slice(tenant_public);
        info[32..].copy_from_slice(attacher_public);
        let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
        ctx.derive_init()?;
        ctx.set_hkdf_md(Md::sha256())?;
        ctx.set_hkdf_salt(PSK_SALT)?;
        ctx.set_hkdf_key(&ikm)?;
        ctx.add_hkdf_info(&info)?;
        let mut psk = [0u8; 32];
        ctx.derive(Some(&mut psk))?;
        Ok(psk)
    };
    run().map_err(|e| err!(Io, "cannot derive the attach channel's key: {e}"))
}

/// The PSK identity the attacher sends for its ephemeral public key: 64
/// lowercase hex digits.
#[doc(hidden)]
pub fn psk_identity(attacher_public: &[u8; 32]) -> String {
    super::hex(attacher_public)
}

/// Parses a PSK identity (untrusted bytes from the ClientHello): exactly
/// [`PSK_IDENTITY_LEN`] lowercase hex digits, the attacher's ephemeral
/// X25519 public key. Anything else is [`ErrorKind::Corrupt`] with a
/// one-line reason.
// Not API: fuzz/psk_identity, tests/parsers.
#[doc(hidden)]
pub fn parse_psk_identity(identity: &[u8]) -> Result<[u8; 32]> {
    if identity.len() != PSK_IDENTITY_LEN {
        return Err(err!(
            Corrupt,
            "PSK identity is {} bytes long; expected {PSK_IDENTITY_LEN} lowercase hex digits",
            identity.len()
        ));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in identity.chunks_exact(2).enumerate() {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => {
                return Err(err!(
                    Corrupt,
                    "PSK identity has a byte that is not a lowercase hex digit at offset {}",
                    2 * i + usize::from(digit(pair[0]).is_some())
                ))
            }
        }
    }
    Ok(out)
}

/// What one connection's PSK callback needs, and what it found (read back
/// after the handshake for the error message). Kept in the `SSL` object's
/// ex-data.
struct PskState {
    one_time_key: [u8; 32],
    /// The tenant's public key: pinned (attacher) or our own (tenant).
    tenant_public: [u8; 32],
    /// The tenant's private key (tenant side only).
    tenant_key: Option<PKey<Private>>,
    found: Mutex<PskFound>,
}

/// What the PSK callback did.
#[derive(Default)]
struct PskFound {
    /// Times it was called.
    calls: u32,
    /// Attacher: the identity and PSK it offered (computed once: a second
    /// ClientHello offers the same). Tenant: the PSK it accepted to check.
    offered: Option<(String, [u8; 32])>,
    /// Why the callback gave no PSK.
    problem: Option<String>,
}

fn psk_index() -> std::result::Result<Index<Ssl, PskState>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, PskState>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index::<PskState>()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The attacher's PSK callback: a fresh ephemeral key, the PSK for the
/// pinned tenant key and the one-time key, its public half as identity.
fn client_psk(
    ssl: &mut ssl::SslRef,
    _hint: Option<&[u8]>,
    identity: &mut [u8],
    psk: &mut [u8],
) -> std::result::Result<usize, ErrorStack> {
    let Some(st) = psk_index().ok().and_then(|i| ssl.ex_data(i)) else {
        return Ok(0);
    };
    let mut found = lock(&st.found);
    found.calls += 1;
    if found.offered.is_none() {
        let eph = PKey::generate_x25519()?;
        let eph_public = raw_public(&eph)?;
        let Some(dh) = x25519(&eph, &st.tenant_public) else {
            found.problem = Some("the advertised key is not a usable X25519 key".to_string());
            return Ok(0);
        };
        let key = derive_psk(&dh, &st.one_time_key, &st.tenant_public, &eph_public)
            .map_err(|_| ErrorStack::get())?;
        found.offered = Some((psk_identity(&eph_public), key));
    }
    let (id, key) = found.offered.as_ref().expect("set above");
    // The identity is a C string (OpenSSL takes its strlen).
    if identity.len() <= id.len() || psk.len() < key.len() {
        found.problem = Some("OpenSSL's PSK buffers are too small".to_string());
        return Ok(0);
    }
    identity[..id.len()].copy_from_slice(id.as_bytes());
    identity[id.len()] = 0;
    psk[..key.len()].copy_from_slice(key);
    Ok(key.len())
}

/// The tenant's PSK callback: the PSK of the attacher's identity, which
/// OpenSSL then checks against the ClientHello's binder. Only the first
/// identity is looked at (one X25519 per connection, whatever the
/// ClientHello offers).
fn server_psk(
    ssl: &mut ssl::SslRef,
    identity: Option<&[u8]>,
    psk: &mut [u8],
) -> std::result::Result<usize, ErrorStack> {
    let Some(st) = psk_index().ok().and_then(|i| ssl.ex_data(i)) else {
        return Ok(0);
    };
    let mut found = lock(&st.found);
    found.calls += 1;
    if found.calls > 1 {
        return Ok(0);
    }
    let (Some(ours), true) = (st.tenant_key.as_ref(), psk.len() >= 32) else {
        return Ok(0);
    };
    let eph_public = match parse_psk_identity(identity.unwrap_or_default()) {
        Ok(k) => k,
        Err(e) => {
            found.problem = Some(e.message().to_string());
            return Ok(0);
        }
    };
    let Some(dh) = x25519(ours, &eph_public) else {
        found.problem = Some("the attacher's key in its PSK identity is refused".to_string());
        return Ok(0);
    };
    let key = derive_psk(&dh, &st.one_time_key, &st.tenant_public, &eph_public)
        .map_err(|_| ErrorStack::get())?;
    psk[..32].copy_from_slice(&key);
    found.offered = Some((psk_identity(&eph_public), key));
    Ok(32)
}

/// Settings both ends share: TLS 1.3 only, the SHA-256 ciphersuites, X25519
/// for the key exchange (one key share: no HelloRetryRequest), no session
/// cache or tickets, partial and moving writes (non-blocking retries), EOF
/// without `close_notify` reported as a close (the framing tells a clean
/// end from a truncated message).
fn common_context(ctx: &mut SslContextBuilder) -> std::result::Result<(), ErrorStack> {
    ctx.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    ctx.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    ctx.set_ciphersuites(CIPHERSUITES)?;
    ctx.set_groups_list("X25519")?;
    ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
    ctx.set_options(SslOptions::IGNORE_UNEXPECTED_EOF | SslOptions::NO_TICKET);
    ctx.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    Ok(())
}

/// The process's TLS contexts, per role.
static SERVER: OnceLock<SslContext> = OnceLock::new();
static CLIENT: OnceLock<SslContext> = OnceLock::new();

/// The process's TLS context for one role, made on first use and kept (the
/// per-connection secrets are in each `SSL`'s ex-data).
pub(crate) fn context(server: bool) -> Result<SslContext> {
    let cell = if server { &SERVER } else { &CLIENT };
    if let Some(ctx) = cell.get() {
        return Ok(ctx.clone());
    }
    let build = || -> std::result::Result<SslContext, ErrorStack> {
        let method = if server {
            SslMethod::tls_server()
        } else {
            SslMethod::tls_client()
        };
        let mut ctx = SslContextBuilder::new(method)?;
        common_context(&mut ctx)?;
        if server {
            // No certificate: the PSK is the only way through; nothing to
            // resume.
            ctx.set_num_tickets(0)?;
            ctx.set_verify(SslVerifyMode::NONE);
            ctx.set_psk_server_callback(server_psk);
        } else {
            // A server that presents a certificate did not take our PSK
            // (not an mtipc tenant of this version): never accepted.
            ctx.set_verify_callback(SslVerifyMode::PEER, |_, _| false);
            ctx.set_psk_client_callback(client_psk);
        }
        Ok(ctx.build())
    };
    let ctx = build().map_err(|e| err!(Io, "cannot set up TLS for the attach channel: {e}"))?;
    Ok(cell.get_or_init(|| ctx).clone())
}

/// If this process has no attacher's TLS context yet (its first attach):
/// starts a thread that makes it and has OpenSSL fetch X25519 and HKDF
/// once, so that OpenSSL's start-up (a few ms in a fresh process) overlaps
/// the attach round instead of following it. `None` when the context is
/// kept already (or no thread could start: the handshake then does the
/// work itself).
pub(crate) fn warm_client() -> Option<std::thread::JoinHandle<()>> {
    if CLIENT.get().is_some() {
        return None;
    }
    std::thread::Builder::new()
        .name("mtipc-tls-warm".into())
        .spawn(|| {
            let _ = context(false);
            if let Ok(k) = PKey::generate_x25519() {
                if let Ok(public) = raw_public(&k) {
                    let _ = x25519(&k, &public);
                }
            }
            let _ = derive_psk(&[1; 32], &[2; 32], &[3; 32], &[4; 32]);
        })
        .ok()
}

/// A new `SSL` for one connection, with its PSK state.
fn new_ssl(server: bool, state: PskState) -> Result<Ssl> {
    let ctx = context(server)?;
    let start = || -> std::result::Result<Ssl, ErrorStack> {
        let mut ssl = Ssl::new(&ctx)?;
        ssl.set_ex_data(psk_index()?, state);
        if server {
            ssl.set_accept_state();
        } else {
            ssl.set_connect_state();
        }
        Ok(ssl)
    };
    start().map_err(|e| err!(Io, "cannot start TLS: {e}"))
}

/// What the PSK callback of a connection found: (called, offered a PSK,
/// its problem).
fn psk_found(ssl: &ssl::SslRef) -> (bool, bool, Option<String>) {
    match psk_index().ok().and_then(|i| ssl.ex_data(i)) {
        Some(st) => {
            let f = lock(&st.found);
            (f.calls > 0, f.offered.is_some(), f.problem.clone())
        }
        None => (false, false, None),
    }
}

/// The stream OpenSSL reads and writes: a non-blocking UNIX stream socket,
/// written with `MSG_NOSIGNAL`.
struct Sock(UnixStream);

/// The openssl crate's stream adapter takes `NotConnected` for "try again"
/// (WANT_READ/WANT_WRITE): on a socket that is not connected, that would
/// make `poll` (which reports it ready) spin until the deadline. Report it
/// as the hard error it is here.
fn not_retriable(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::NotConnected {
        io::Error::other(format!("socket not connected ({e})"))
    } else {
        e
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&self.0).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map_err(not_retriable),
            }
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // MSG_NOSIGNAL: a vanished peer is EPIPE, never SIGPIPE.
        sys::send(&self.0, buf).map_err(not_retriable)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A deadline and the timeout it came from (for the error message).
#[derive(Clone, Copy)]
struct Deadline {
    at: Option<Instant>,
    timeout: Option<Duration>,
    what: &'static str,
}

impl Deadline {
    fn new(timeout: Option<Duration>, what: &'static str) -> Deadline {
        Deadline {
            at: timeout.and_then(|t| Instant::now().checked_add(t)),
            timeout,
            what,
        }
    }

    fn error(&self) -> Error {
        match self.timeout {
            Some(t) => err!(Timeout, "{}: timed out after {t:?}", self.what),
            None => err!(Timeout, "{}: timed out", self.what),
        }
    }
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up), or
/// the deadline passes: Ok(false).
fn wait_fd(fd: impl AsFd, events: Events, deadline: &Deadline) -> Result<bool> {
    sys::wait_ready(fd, events, deadline.at).map_err(|e| Error::io("poll on the attach channel", e))
}

/// An I/O error: a vanished peer is [`ErrorKind::Closed`].
fn io_error(what: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::NotConnected => {
            err!(Closed, "the peer closed the connection while {what} ({e})")
        }
        _ => Error::io(format!("attach channel, {what}"), e),
    }
}

/// A failed TLS call other than WANT_READ/WANT_WRITE, on an established
/// connection.
fn tls_error(what: &str, e: ssl::Error) -> Error {
    match e.code() {
        ErrorCode::ZERO_RETURN => err!(Closed, "the peer closed the connection"),
        ErrorCode::SYSCALL => match e.into_io_error() {
            Ok(io) => io_error(what, io),
            Err(e) => match e.ssl_error() {
                Some(stack) if !stack.errors().is_empty() => {
                    err!(Corrupt, "TLS failure while {what}: {e}")
                }
                _ => err!(Closed, "the peer closed the connection while {what}"),
            },
        },
        _ => err!(Corrupt, "TLS failure while {what}: {e}"),
    }
}

/// OpenSSL's library code for libssl (`ERR_LIB_SSL`).
const ERR_LIB_SSL: libc::c_int = 20;

/// Whether a TLS error is an alert the peer sent (OpenSSL reports a received
/// alert as reason 1000 + the alert number).
fn is_peer_alert(e: &ssl::Error) -> bool {
    e.ssl_error().is_some_and(|stack| {
        stack
            .errors()
            .iter()
            .any(|x| x.library_code() == ERR_LIB_SSL && x.reason_code() >= 1000)
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The connection

/// The TLS session, under its mutex (never held while waiting).
struct Tls {
    stream: SslStream<Sock>,
    /// [`Conn::close`] ran.
    closed: bool,
    /// The first send failure; later sends repeat it.
    write_failed: Option<Error>,
}

/// The receive side, under the receivers' mutex.
struct Rx {
    /// Plaintext received and not handed out yet; starts at a frame boundary.
    buf: Vec<u8>,
    /// Scratch for one `SSL_read`.
    chunk: Box<[u8]>,
    /// Peer closed or stream broken; later receives repeat it.
    failed: Option<Error>,
}

/// One end of an attached connection: whole messages over TLS 1.3 over a
/// stream. `Send + Sync`; one sender and one receiver may work at the same
/// time from two threads (`src/attach/channel.rs` says how).
pub struct Conn {
    /// A second descriptor of the socket (dup), to wait on without holding
    /// the TLS stream's lock.
    fd: OwnedFd,
    version: &'static str,
    protocol: String,
    tls: Mutex<Tls>,
    tx: Mutex<()>,
    rx: Mutex<Rx>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("fd", &self.fd.as_raw_fd())
            .field("version", &self.version)
            .field("closed", &lock(&self.tls).closed)
            .finish()
    }
}

/// Runs the handshake on a non-blocking stream within the deadline.
fn handshake(stream: &mut SslStream<Sock>, fd: &OwnedFd, deadline: &Deadline) -> HsResult {
    loop {
        let r = if stream.ssl().is_server() {
            stream.accept()
        } else {
            stream.connect()
        };
        let e = match r {
            Ok(()) => return HsResult::Done,
            Err(e) => e,
        };
        let events = match e.code() {
            ErrorCode::WANT_READ => Events::IN,
            ErrorCode::WANT_WRITE => Events::OUT,
            _ => return HsResult::Failed(e),
        };
        match wait_fd(fd, events, deadline) {
            Ok(true) => {}
            Ok(false) => return HsResult::Error(deadline.error()),
            Err(e) => return HsResult::Error(e),
        }
    }
}

enum HsResult {
    Done,
    /// OpenSSL refused: mapped by the caller, which knows the side.
    Failed(ssl::Error),
    Error(Error),
}

/// Common mapping of a failed handshake.
fn handshake_error(e: ssl::Error, peer: &str) -> Error {
    if is_peer_alert(&e) {
        return err!(Denied, "the {peer} refused the TLS handshake: {e}");
    }
    match e.code() {
        ErrorCode::ZERO_RETURN => err!(Closed, "the {peer} closed during the TLS handshake"),
        ErrorCode::SYSCALL => match tls_error("in the TLS handshake", e) {
            x if x.kind() == ErrorKind::Closed => {
                err!(Closed, "the {peer} closed during the TLS handshake")
            }
            x => x,
        },
        _ => err!(Corrupt, "TLS 1.3 handshake with the {peer} failed: {e}"),
    }
}

fn prepare(stream: UnixStream) -> Result<(UnixStream, OwnedFd)> {
    stream
        .set_nonblocking(true)
        .map_err(|e| Error::io("attach channel socket", e))?;
    let fd = stream
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("attach channel socket", e))?;
    Ok((stream, fd))
}

/// OpenSSL's reason for a PSK binder that does not verify
/// (`SSL_R_BINDER_DOES_NOT_VERIFY`): the attacher's PSK is not ours.
const SSL_R_BINDER_DOES_NOT_VERIFY: libc::c_int = 253;

fn is_binder_failure(e: &ssl::Error) -> bool {
    e.ssl_error().is_some_and(|stack| {
        stack.errors().iter().any(|x| {
            x.library_code() == ERR_LIB_SSL && x.reason_code() == SSL_R_BINDER_DOES_NOT_VERIFY
        })
    })
}

impl Conn {
    /// Tenant side: TLS 1.3 server handshake on `stream` with the tenant's
    /// `key`, accepting only an attacher whose PSK is the one derived from
    /// `one_time_key` and this key (see the module's documentation); returns
    /// the connection once the handshake is complete.
    ///
    /// A PSK that does not verify (another one-time key, or one computed
    /// for another tenant key), or no usable PSK: returns
    /// [`ErrorKind::Denied`]. The whole exchange must finish within
    /// `timeout` ([`ErrorKind::Timeout`]); the stream may carry no byte for
    /// a while (the relay holds traffic until its start time).
    // Not API (the tenant's waiter calls it): public for tests/attach_channel
    // and benches/attach_latency, with mtipc::internals::attach::ServerKey.
    #[doc(hidden)]
    pub fn accept(
        stream: UnixStream,
        key: &ServerKey,
        one_time_key: &[u8; 32],
        timeout: Duration,
    ) -> Result<Conn> {
        let deadline = Deadline::new(Some(timeout), "accepting the attacher");
        let (stream, fd) = prepare(stream)?;
        let ssl = new_ssl(
            true,
            PskState {
                one_time_key: *one_time_key,
                tenant_public: key.public,
                tenant_key: Some(key.key.clone()),
                found: Mutex::default(),
            },
        )?;
        let mut tls =
            SslStream::new(ssl, Sock(stream)).map_err(|e| err!(Io, "cannot start TLS: {e}"))?;
        match handshake(&mut tls, &fd, &deadline) {
            HsResult::Done => {}
            HsResult::Failed(e) => {
                let (_, offered, problem) = psk_found(tls.ssl());
                let denied = if is_binder_failure(&e) {
                    Some(format!(
                        "its PSK binder does not verify: another one-time key, or a PSK for another tenant key ({e})"
                    ))
                } else if !offered {
                    problem.map(|p| format!("its PSK identity is refused: {p}"))
                } else {
                    None
                };
                if let Some(why) = denied {
                    crate::log::debug!(reason = %why, "attach channel: attacher refused");
                    return Err(err!(
                        Denied,
                        "the attacher did not present the one-time key ({why})"
                    ));
                }
                return Err(handshake_error(e, "attacher"));
            }
            HsResult::Error(e) => return Err(e),
        }
        let conn = Conn::new(tls, fd);
        // Without a certificate no handshake completes but through the PSK;
        // checked all the same.
        if !psk_found(lock(&conn.tls).stream.ssl()).1 {
            conn.close();
            return Err(err!(
                Denied,
                "the attacher did not present the one-time key (no PSK)"
            ));
        }
        crate::log::debug!(version = conn.version, "attach channel: attacher accepted");
        Ok(conn)
    }

    /// Attacher side: TLS 1.3 client handshake on `stream` with the PSK
    /// derived from `one_time_key` and the tenant's advertised key
    /// `fingerprint` (its raw X25519 public key; see the module's
    /// documentation). Returns once the handshake is complete: the peer has
    /// then proved that it holds the tenant's private key and the one-time
    /// key, and has accepted the attacher.
    ///
    /// The tenant refusing the PSK (another one-time key, or a peer that
    /// does not hold the advertised key), or a peer that presents a
    /// certificate instead: [`ErrorKind::Denied`]. All within `timeout`.
    // Not API (attach calls it): public for tests/attach_channel and
    // benches/attach_latency.
    #[doc(hidden)]
    pub fn connect(
        stream: UnixStream,
        fingerprint: &[u8; 32],
        one_time_key: &[u8; 32],
        timeout: Duration,
    ) -> Result<Conn> {
        let deadline = Deadline::new(Some(timeout), "attaching to the tenant");
        let (stream, fd) = prepare(stream)?;
        let ssl = new_ssl(
            false,
            PskState {
                one_time_key: *one_time_key,
                tenant_public: *fingerprint,
                tenant_key: None,
                found: Mutex::default(),
            },
        )?;
        let mut tls =
            SslStream::new(ssl, Sock(stream)).map_err(|e| err!(Io, "cannot start TLS: {e}"))?;
        let advertised = fingerprint_hex(fingerprint);
        match handshake(&mut tls, &fd, &deadline) {
            HsResult::Done => {}
            HsResult::Failed(e) => {
                let (_, offered, problem) = psk_found(tls.ssl());
                return Err(match problem {
                    Some(p) if !offered => err!(
                        Denied,
                        "cannot attach with the tenant's advertised key {advertised}: {p}"
                    ),
                    _ if is_peer_alert(&e) => err!(
                        Denied,
                        "the tenant refused the handshake: the peer does not hold the advertised key {advertised}, or was not given this one-time key ({e})"
                    ),
                    _ if tls.ssl().peer_certificate().is_some() => err!(
                        Denied,
                        "the peer presented a certificate instead of proving the advertised key {advertised} (not a tenant of this mtipc version?)"
                    ),
                    _ => handshake_error(e, "tenant"),
                });
            }
            HsResult::Error(e) => return Err(e),
        }
        let conn = Conn::new(tls, fd);
        {
            // Belt and braces: the handshake completed through our PSK and
            // no certificate (the verify callback refuses any).
            let tls = lock(&conn.tls);
            let ssl = tls.stream.ssl();
            if !psk_found(ssl).1 || ssl.peer_certificate().is_some() {
                drop(tls);
                conn.close();
                return Err(err!(
                    Denied,
                    "the tenant did not prove the advertised key {advertised}"
                ));
            }
        }
        crate::log::debug!(version = conn.version, "attach channel: tenant accepted");
        Ok(conn)
    }

    fn new(stream: SslStream<Sock>, fd: OwnedFd) -> Conn {
        Conn {
            fd,
            version: stream.ssl().version_str(),
            protocol: String::new(),
            tls: Mutex::new(Tls {
                stream,
                closed: false,
                write_failed: None,
            }),
            tx: Mutex::new(()),
            rx: Mutex::new(Rx {
                buf: Vec::new(),
                chunk: vec![0; RECORD].into_boxed_slice(),
                failed: None,
            }),
        }
    }

    /// The application protocol the attacher asked for (one of those the
    /// tenant advertised), on both ends; empty for a connection made with
    /// [`Conn::accept`] / [`Conn::connect`] directly.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Records the application protocol (the attach round knows it from the
    /// response file).
    pub(crate) fn with_protocol(mut self, protocol: &str) -> Conn {
        self.protocol = protocol.to_string();
        self
    }

    /// The negotiated protocol version as OpenSSL names it: always
    /// `"TLSv1.3"`.
    pub fn tls_version(&self) -> &'static str {
        self.version
    }

    /// Sends one whole message, `0..=MAX_MESSAGE` bytes (a larger one is
    /// [`ErrorKind::Invalid`]). Waits while the peer's buffers are full;
    /// [`ErrorKind::Closed`] if the peer is gone or [`Conn::close`] ran.
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        if msg.len() > MAX_MESSAGE {
            return Err(err!(
                Invalid,
                "message of {} bytes is over the channel's limit of {MAX_MESSAGE} bytes (MAX_MESSAGE)",
                msg.len()
            ));
        }
        let _tx = lock(&self.tx);
        // The header and the start of the payload in one record.
        let mut first = [0u8; RECORD];
        let head = msg.len().min(RECORD - HEADER);
        first[..HEADER].copy_from_slice(&(msg.len() as u32).to_be_bytes());
        first[HEADER..HEADER + head].copy_from_slice(&msg[..head]);
        self.write_all(&first[..HEADER + head])?;
        self.write_all(&msg[head..])
    }

    /// Writes bytes into the TLS stream (the caller holds `tx`).
    fn write_all(&self, mut data: &[u8]) -> Result<()> {
        let forever = Deadline::new(None, "sending");
        while !data.is_empty() {
            let events = {
                let mut tls = lock(&self.tls);
                if tls.closed {
                    return Err(closed_here());
                }
                if let Some(e) = &tls.write_failed {
                    return Err(e.clone());
                }
                match tls.stream.ssl_write(data) {
                    Ok(n) => {
                        data = &data[n..];
                        continue;
                    }
                    Err(e) => match e.code() {
                        ErrorCode::WANT_WRITE => Events::OUT,
                        ErrorCode::WANT_READ => Events::IN,
                        _ => {
                            let e = tls_error("sending", e);
                            tls.write_failed = Some(e.clone());
                            return Err(e);
                        }
                    },
                }
            };
            if events == Events::IN {
                // TLS 1.3 never needs to read to write once the handshake is
                // done; should it, the receiver's reads make progress: retry
                // shortly rather than compete for the readable bytes.
                std::thread::sleep(Duration::from_millis(1));
            } else {
                wait_fd(&self.fd, events, &forever)?;
            }
        }
        Ok(())
    }

    /// Receives one whole message, waiting at most `timeout` (`None`:
    /// forever).
    ///
    /// [`ErrorKind::Timeout`] loses nothing: a partly received message stays
    /// buffered for the next call. The peer closed (`close_notify`, or EOF
    /// between messages): [`ErrorKind::Closed`]; EOF inside a message, a
    /// length over [`MAX_MESSAGE`] or broken TLS: [`ErrorKind::Corrupt`].
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        self.recv_deadline(&Deadline::new(timeout, "receiving a message"))
    }

    /// Like [`Conn::recv`], into `buf`: returns the message's length. If the
    /// next message is longer than `buf`, returns [`ErrorKind::Invalid`]
    /// naming the size needed (see also [`Conn::next_len`]) and leaves the
    /// message queued for a later call.
    pub fn recv_into(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        let deadline = Deadline::new(timeout, "receiving a message");
        let mut rx = lock(&self.rx);
        let len = self.frame(&mut rx, &deadline, false)?;
        if len > buf.len() {
            return Err(err!(
                Invalid,
                "the next message is {len} bytes, the buffer only {}: {len} bytes needed",
                buf.len()
            ));
        }
        self.frame(&mut rx, &deadline, true)?;
        buf[..len].copy_from_slice(&rx.buf[HEADER..HEADER + len]);
        consume(&mut rx, len);
        Ok(len)
    }

    /// The length of the next message, waiting at most `timeout` for its
    /// header; the message stays queued.
    pub fn next_len(&self, timeout: Option<Duration>) -> Result<usize> {
        self.wait_header(&Deadline::new(timeout, "receiving a message"))
    }

    fn wait_header(&self, deadline: &Deadline) -> Result<usize> {
        let mut rx = lock(&self.rx);
        self.frame(&mut rx, deadline, false)
    }

    fn recv_deadline(&self, deadline: &Deadline) -> Result<Vec<u8>> {
        let mut rx = lock(&self.rx);
        let len = self.frame(&mut rx, deadline, true)?;
        let msg = rx.buf[HEADER..HEADER + len].to_vec();
        consume(&mut rx, len);
        Ok(msg)
    }

    /// Reads until the next frame's header (`whole`: and payload) is in
    /// `rx.buf`; returns the payload length.
    fn frame(&self, rx: &mut Rx, deadline: &Deadline, whole: bool) -> Result<usize> {
        loop {
            if rx.buf.len() >= HEADER {
                let len = u32::from_be_bytes(rx.buf[..HEADER].try_into().unwrap()) as usize;
                if len > MAX_MESSAGE {
                    let e = err!(
                        Corrupt,
                        "the peer announced a message of {len} bytes, over the limit of {MAX_MESSAGE} (MAX_MESSAGE)"
                    );
                    rx.failed = Some(e.clone());
                    return Err(e);
                }
                if !whole || rx.buf.len() >= HEADER + len {
                    return Ok(len);
                }
            }
            // Checked only when more bytes are needed: messages the peer sent
            // before it closed are all delivered first.
            if let Some(e) = &rx.failed {
                return Err(e.clone());
            }
            if let Err(e) = self.read_some(rx, deadline) {
                if e.kind() != ErrorKind::Timeout {
                    rx.failed = Some(e.clone());
                }
                return Err(e);
            }
        }
    }

    /// One successful `SSL_read` into `rx.buf`, waiting (without the TLS
    /// mutex) as needed.
    fn read_some(&self, rx: &mut Rx, deadline: &Deadline) -> Result<()> {
        loop {
            let events = {
                let mut tls = lock(&self.tls);
                if tls.closed {
                    return Err(closed_here());
                }
                match tls.stream.ssl_read(&mut rx.chunk) {
                    Ok(n) => {
                        let Rx { buf, chunk, .. } = rx;
                        buf.extend_from_slice(&chunk[..n]);
                        return Ok(());
                    }
                    Err(e) => match e.code() {
                        ErrorCode::WANT_READ if tls.stream.ssl().pending() > 0 => continue,
                        ErrorCode::WANT_READ => Events::IN,
                        ErrorCode::WANT_WRITE => Events::OUT,
                        _ => {
                            let e = tls_error("receiving", e);
                            if e.kind() == ErrorKind::Closed && !rx.buf.is_empty() {
                                return Err(err!(
                                    Corrupt,
                                    "the peer closed in the middle of a message ({} bytes of it received)",
                                    rx.buf.len()
                                ));
                            }
                            return Err(e);
                        }
                    },
                }
            };
            if !wait_fd(&self.fd, events, deadline)? {
                return Err(deadline.error());
            }
        }
    }

    /// Sends `close_notify` and shuts the socket down; later sends and
    /// receives return [`ErrorKind::Closed`], and a thread blocked in
    /// [`Conn::recv`] or [`Conn::send`] returns it at once. Idempotent;
    /// dropping the connection does the same.
    pub fn close(&self) {
        let mut tls = lock(&self.tls);
        if tls.closed {
            return;
        }
        tls.closed = true;
        // One non-blocking attempt: a peer that does not read may miss the
        // close_notify, and then sees EOF (also a close).
        let _ = tls.stream.shutdown();
        let _ = tls.stream.get_ref().0.shutdown(Shutdown::Both);
    }

    /// Test hook: writes raw plaintext into the TLS stream (no framing).
    #[cfg(test)]
    fn send_raw(&self, bytes: &[u8]) -> Result<()> {
        let _tx = lock(&self.tx);
        self.write_all(bytes)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

fn closed_here() -> Error {
    err!(Closed, "the connection was closed on this side")
}

/// Drops the frame of `len` payload bytes from the front of the buffer.
fn consume(rx: &mut Rx, len: usize) {
    rx.buf.drain(..HEADER + len);
    // Do not keep a megabyte around for every idle connection.
    if rx.buf.capacity() > 4 * RECORD && rx.buf.len() <= RECORD {
        rx.buf.shrink_to(2 * RECORD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    const T: Duration = Duration::from_secs(10);
    const OTK: [u8; 32] = [7; 32];

    fn pair() -> (Conn, Conn) {
        let key = ServerKey::generate().unwrap();
        let fp = key.fingerprint();
        let (a, b) = UnixStream::pair().unwrap();
        let tenant = thread::spawn(move || Conn::accept(a, &key, &OTK, T));
        let attacher = Conn::connect(b, &fp, &OTK, T).unwrap();
        (tenant.join().unwrap().unwrap(), attacher)
    }

    #[test]
    fn conn_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Conn>();
        check::<ServerKey>();
    }

    #[test]
    fn fingerprint_is_the_raw_x25519_public_key() {
        let k1 = ServerKey::generate().unwrap();
        let k2 = ServerKey::generate().unwrap();
        assert_ne!(k1.fingerprint(), k2.fingerprint());
        assert_eq!(raw_public(&k1.key).unwrap(), k1.fingerprint());
        let hex = fingerprint_hex(&k1.fingerprint());
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(fingerprint_hex(&[0xab; 32]), "ab".repeat(32));
        assert!(format!("{k1:?}").contains(&hex));
    }

    #[test]
    fn both_ends_derive_the_same_psk_and_only_they() {
        let tenant = ServerKey::generate().unwrap();
        let eph = PKey::generate_x25519().unwrap();
        let eph_public = raw_public(&eph).unwrap();
        let at_attacher = x25519(&eph, &tenant.fingerprint()).unwrap();
        let at_tenant = x25519(&tenant.key, &eph_public).unwrap();
        assert_eq!(at_attacher, at_tenant);
        let psk = |dh: &[u8; 32], otk: &[u8; 32], t: &[u8; 32], a: &[u8; 32]| {
            derive_psk(dh, otk, t, a).unwrap()
        };
        let fp = tenant.fingerprint();
        let good = psk(&at_attacher, &OTK, &fp, &eph_public);
        assert_eq!(good, psk(&at_tenant, &OTK, &fp, &eph_public));
        // Every input matters.
        let mut otk = OTK;
        otk[0] ^= 1;
        assert_ne!(good, psk(&at_attacher, &otk, &fp, &eph_public));
        let mut dh = at_attacher;
        dh[31] ^= 0x80;
        assert_ne!(good, psk(&dh, &OTK, &fp, &eph_public));
        assert_ne!(good, psk(&at_attacher, &OTK, &eph_public, &fp));
        // Another tenant key gives another shared secret.
        let other = ServerKey::generate().unwrap();
        assert_ne!(Some(at_attacher), x25519(&eph, &other.fingerprint()));
    }

    #[test]
    fn a_low_order_key_gives_no_shared_secret() {
        let tenant = ServerKey::generate().unwrap();
        // 0 and 1 are points of small order: X25519 with them is all zero.
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(x25519(&tenant.key, &[0u8; 32]), None);
        assert_eq!(x25519(&tenant.key, &one), None);
    }

    /// A client that offers `identity` with `psk` (what a hostile relay or
    /// attacher could send), against a real tenant.
    fn raw_client(stream: UnixStream, identity: &'static [u8], psk: [u8; 32]) -> Result<()> {
        let mut ctx = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        common_context(&mut ctx).unwrap();
        ctx.set_verify(SslVerifyMode::NONE);
        ctx.set_psk_client_callback(move |_, _, id, out| {
            id[..identity.len()].copy_from_slice(identity);
            id[identity.len()] = 0;
            out[..32].copy_from_slice(&psk);
            Ok(32)
        });
        let ctx = ctx.build();
        let (stream, fd) = prepare(stream)?;
        let mut ssl = Ssl::new(&ctx).unwrap();
        ssl.set_connect_state();
        let mut tls = SslStream::new(ssl, Sock(stream)).unwrap();
        match handshake(&mut tls, &fd, &Deadline::new(Some(T), "raw client")) {
            HsResult::Done => {
                // The tenant checks our Finished after its own flight: wait
                // for its verdict.
                let conn = Conn::new(tls, fd);
                conn.recv(Some(T)).map(|_| ())
            }
            HsResult::Failed(e) => Err(handshake_error(e, "tenant")),
            HsResult::Error(e) => Err(e),
        }
    }

    #[test]
    fn a_low_order_attacher_key_is_refused() {
        // Someone who knows the one-time key (it is in a file) but not the
        // tenant's key offers the all-zero point: with the shared secret
        // zero, it could compute the PSK. The tenant refuses the identity.
        static ZERO: [u8; 64] = [b'0'; 64];
        let key = ServerKey::generate().unwrap();
        let dh = [0u8; 32];
        let psk = derive_psk(&dh, &OTK, &key.fingerprint(), &[0u8; 32]).unwrap();
        let (x, y) = UnixStream::pair().unwrap();
        let tenant = thread::spawn(move || Conn::accept(x, &key, &OTK, T));
        let r = raw_client(y, &ZERO, psk);
        assert!(r.is_err());
        let e = tenant.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert!(e.message().contains("PSK identity is refused"), "{e}");
    }

    #[test]
    fn a_malformed_identity_is_refused() {
        let key = ServerKey::generate().unwrap();
        let (x, y) = UnixStream::pair().unwrap();
        let tenant = thread::spawn(move || Conn::accept(x, &key, &OTK, T));
        assert!(raw_client(y, b"not hex at all", [1; 32]).is_err());
        let e = tenant.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert!(e.message().contains("bytes long"), "{e}");
    }

    #[test]
    fn no_warm_up_once_the_client_context_is_kept() {
        context(false).unwrap();
        assert!(warm_client().is_none());
    }

    #[test]
    fn one_context_per_role_is_kept() {
        let a = context(false).unwrap();
        let b = context(false).unwrap();
        assert!(std::ptr::eq(&*a, &*b));
        let c = context(true).unwrap();
        assert!(!std::ptr::eq(&*a, &*c));
        assert!(std::ptr::eq(&*c, &*context(true).unwrap()));
    }

    #[test]
    fn oversized_length_is_corrupt() {
        let (t, a) = pair();
        a.send_raw(&((MAX_MESSAGE as u32) + 1).to_be_bytes())
            .unwrap();
        let e = t.recv(Some(T)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.message().contains("1048577"), "{e}");
        // Sticky.
        assert_eq!(t.recv(Some(T)).unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn max_length_header_is_accepted() {
        let (t, a) = pair();
        let msg = vec![0x5a; MAX_MESSAGE];
        // More than the socket buffers hold: the sender needs the reader.
        thread::scope(|s| {
            s.spawn(|| a.send(&msg).unwrap());
            assert_eq!(t.next_len(Some(T)).unwrap(), MAX_MESSAGE);
            assert_eq!(t.recv(Some(T)).unwrap(), msg);
        });
    }

    #[test]
    fn eof_inside_a_frame_is_corrupt() {
        let (t, a) = pair();
        // Header and half the payload, then the socket goes away without
        // close_notify.
        let mut part = 10u32.to_be_bytes().to_vec();
        part.extend_from_slice(b"hello");
        a.send_raw(&part).unwrap();
        {
            let tls = lock(&a.tls);
            tls.stream.get_ref().0.shutdown(Shutdown::Both).unwrap();
        }
        let e = t.recv(Some(T)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.message().contains("middle of a message"), "{e}");
    }

    #[test]
    fn an_unconnected_socket_fails_at_once() {
        // A listening socket passed off as a stream: send(2) says ENOTCONN,
        // which must not turn into a retry loop until the timeout.
        let dir = std::env::temp_dir().join(format!(
            "mtipc-chan-unconnected-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        let _ = std::fs::remove_file(&dir);
        let listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        let s = UnixStream::from(std::os::fd::OwnedFd::from(listener));
        let start = Instant::now();
        let e = Conn::connect(s, &[0; 32], &OTK, Duration::from_secs(5)).unwrap_err();
        assert_ne!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(start.elapsed() < Duration::from_secs(2), "{e}");
    }

    #[test]
    fn messages_before_close_are_delivered() {
        let (t, a) = pair();
        a.send(b"one").unwrap();
        a.send(b"two").unwrap();
        a.close();
        assert_eq!(t.recv(Some(T)).unwrap(), b"one");
        assert_eq!(t.recv(Some(T)).unwrap(), b"two");
        assert_eq!(t.recv(Some(T)).unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(t.recv(Some(T)).unwrap_err().kind(), ErrorKind::Closed);
    }
}
