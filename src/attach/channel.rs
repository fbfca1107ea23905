//! The attach channel: whole messages over TLS 1.3 over a stream
//! (DESIGN.md section 1 step 6, `docs/attach.md` "The channel").
//!
//! The tenant is the TLS server with an ephemeral P-256 key and a
//! self-signed certificate made in memory ([`ServerKey`]); the attacher pins
//! the SHA-256 of that key's DER `SubjectPublicKeyInfo` (the fingerprint in
//! the advertisement): no CA, no host name, no client certificate. After the
//! handshake the attacher sends the 32-byte one-time key from the response
//! file as its first message; the tenant compares it in constant time and
//! answers the one-byte message `[1]`, or closes. From then on both ends
//! exchange [frames](#framing) with [`Conn::send`] and [`Conn::recv`].
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
//! | the tenant's key is not the advertised one (attacher) | [`ErrorKind::Denied`] |
//! | the peer refused the handshake with an alert | [`ErrorKind::Denied`] |
//! | wrong one-time key (tenant), or the tenant closed before accepting (attacher) | [`ErrorKind::Denied`] |
//! | peer closed: `close_notify`, EOF between frames, reset (also during the handshake) | [`ErrorKind::Closed`] |
//! | EOF inside a frame, length over [`MAX_MESSAGE`], broken TLS, bytes that are not TLS | [`ErrorKind::Corrupt`] |
//! | message over [`MAX_MESSAGE`] to send, buffer too small to receive | [`ErrorKind::Invalid`] |
//!
//! After any receive error but a timeout the receive side stays failed (the
//! same error again); after a send error the send side does.

use crate::error::{err, Error, ErrorKind, Result};
use crate::sys::net::{self as sys, Events};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    self, ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509NameBuilder, X509Ref, X509};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// What the tenant answers to the right one-time key.
const ACCEPTED: [u8; 1] = [1];

/// A tenant's ephemeral TLS identity: a P-256 key and a self-signed
/// certificate made in memory; never written to disk.
///
/// Cloning is cheap and shares the identity (the TLS context is reference
/// counted). `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct ServerKey {
    ctx: SslContext,
    fingerprint: [u8; 32],
}

impl ServerKey {
    /// Makes a fresh key and certificate (CN `mtipc tenant`, valid from an
    /// hour ago for ten years: the attacher pins the key, never the dates)
    /// and the TLS 1.3 server context that uses them.
    pub fn generate() -> Result<ServerKey> {
        Self::build().map_err(|e| err!(Io, "cannot generate the tenant's TLS key: {e}"))
    }

    fn build() -> std::result::Result<ServerKey, ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let pkey = PKey::from_ec_key(EcKey::generate(&group)?)?;

        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, "mtipc tenant")?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(120, MsbOption::MAYBE_ZERO, false)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let not_before = Asn1Time::from_unix(now.saturating_sub(3600) as libc::time_t)?;
        let not_after = Asn1Time::days_from_now(3650)?;

        let mut cert = X509::builder()?;
        cert.set_version(2)?;
        let serial = serial.to_asn1_integer()?;
        cert.set_serial_number(&serial)?;
        cert.set_subject_name(&name)?;
        cert.set_issuer_name(&name)?;
        cert.set_pubkey(&pkey)?;
        cert.set_not_before(&not_before)?;
        cert.set_not_after(&not_after)?;
        cert.sign(&pkey, MessageDigest::sha256())?;
        let cert = cert.build();

        let mut ctx = SslContextBuilder::new(SslMethod::tls_server())?;
        common_context(&mut ctx)?;
        ctx.set_certificate(&cert)?;
        ctx.set_private_key(&pkey)?;
        ctx.check_private_key()?;
        // The one-time key authenticates the attacher: no client certificate.
        ctx.set_verify(SslVerifyMode::NONE);
        // No resumption: nothing to send after the handshake.
        ctx.set_num_tickets(0)?;

        let fingerprint = openssl::sha::sha256(&pkey.public_key_to_der()?);
        Ok(ServerKey {
            ctx: ctx.build(),
            fingerprint,
        })
    }

    /// SHA-256 of the DER `SubjectPublicKeyInfo` of the key: what the
    /// advertisement carries (as [`fingerprint_hex`]) and the attacher pins.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("fingerprint", &fingerprint_hex(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

/// A fingerprint as 64 lowercase hex digits (the advertisement's format).
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    super::hex(fp)
}

/// Settings both ends share: TLS 1.3 only, no session cache, partial and
/// moving writes (non-blocking retries), EOF without `close_notify` reported
/// as a close (the framing tells a clean end from a truncated message).
fn common_context(ctx: &mut SslContextBuilder) -> std::result::Result<(), ErrorStack> {
    ctx.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    ctx.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
    ctx.set_options(SslOptions::IGNORE_UNEXPECTED_EOF | SslOptions::NO_TICKET);
    ctx.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    Ok(())
}

/// The attacher's context, made once (the pinned fingerprint is set per
/// connection).
fn client_context() -> Result<SslContext> {
    static CLIENT: OnceLock<SslContext> = OnceLock::new();
    if let Some(ctx) = CLIENT.get() {
        return Ok(ctx.clone());
    }
    let build = || -> std::result::Result<SslContext, ErrorStack> {
        let mut ctx = SslContextBuilder::new(SslMethod::tls_client())?;
        common_context(&mut ctx)?;
        Ok(ctx.build())
    };
    let ctx = build().map_err(|e| err!(Io, "cannot set up the TLS client: {e}"))?;
    Ok(CLIENT.get_or_init(|| ctx).clone())
}

/// SHA-256 of a certificate's DER `SubjectPublicKeyInfo`.
fn spki_fingerprint(cert: &X509Ref) -> Option<[u8; 32]> {
    let der = cert.public_key().ok()?.public_key_to_der().ok()?;
    Some(openssl::sha::sha256(&der))
}

// ---------------------------------------------------------------------------
// The socket under TLS

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

impl Conn {
    /// Tenant side: TLS 1.3 server handshake on `stream` with `key`, then
    /// reads the first message, which must equal `one_time_key` (compared in
    /// constant time), answers the one-byte message `[1]` and returns the
    /// connection.
    ///
    /// A wrong key (or a first message of another length): closes and
    /// returns [`ErrorKind::Denied`]. The whole exchange must finish within
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
        let mut ssl = Ssl::new(&key.ctx).map_err(|e| err!(Io, "cannot start TLS: {e}"))?;
        ssl.set_accept_state();
        let mut tls =
            SslStream::new(ssl, Sock(stream)).map_err(|e| err!(Io, "cannot start TLS: {e}"))?;
        match handshake(&mut tls, &fd, &deadline) {
            HsResult::Done => {}
            HsResult::Failed(e) => return Err(handshake_error(e, "attacher")),
            HsResult::Error(e) => return Err(e),
        }
        let conn = Conn::new(tls, fd);

        let len = conn.wait_header(&deadline).map_err(|e| {
            if e.kind() == ErrorKind::Closed {
                err!(
                    Closed,
                    "the attacher closed before presenting the one-time key"
                )
            } else {
                e
            }
        })?;
        let denied = || err!(Denied, "the attacher did not present the one-time key");
        if len != one_time_key.len() {
            conn.close();
            return Err(denied());
        }
        let msg = conn.recv_deadline(&deadline)?;
        if !openssl::memcmp::eq(&msg, one_time_key) {
            conn.close();
            crate::log::debug!("attach channel: wrong one-time key, connection refused");
            return Err(denied());
        }
        conn.send(&ACCEPTED)?;
        crate::log::debug!(version = conn.version, "attach channel: attacher accepted");
        Ok(conn)
    }

    /// Attacher side: TLS 1.3 client handshake on `stream`, accepting the
    /// server's certificate if and only if the SHA-256 of its DER
    /// `SubjectPublicKeyInfo` is `fingerprint` (no CA, no host name: pinning
    /// only; a mismatch is [`ErrorKind::Denied`]). Then sends `one_time_key`
    /// as the first message and waits for the tenant's `[1]`; a tenant that
    /// closes first is [`ErrorKind::Denied`]. All within `timeout`.
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
        let ctx = client_context()?;
        let mut ssl = Ssl::new(&ctx).map_err(|e| err!(Io, "cannot start TLS: {e}"))?;
        ssl.set_connect_state();
        // What the pinning callback saw at depth 0 (for the error message):
        // None = not called yet, Some(None) = no usable key.
        let seen: Arc<Mutex<Option<Option<[u8; 32]>>>> = Arc::new(Mutex::new(None));
        let expected = *fingerprint;
        let seen_cb = Arc::clone(&seen);
        ssl.set_verify_callback(SslVerifyMode::PEER, move |_preverified, ctx| {
            // Only the leaf matters: the server proves it holds the leaf's
            // key (CertificateVerify); anything else it sends is ignored, and
            // the CA checks that failed (self-signed) do not apply.
            if ctx.error_depth() != 0 {
                return true;
            }
            let fp = ctx.current_cert().and_then(spki_fingerprint);
            *lock(&seen_cb) = Some(fp);
            fp == Some(expected)
        });
        let mut tls =
            SslStream::new(ssl, Sock(stream)).map_err(|e| err!(Io, "cannot start TLS: {e}"))?;
        let mismatch = |got: Option<Option<[u8; 32]>>| {
            let got = match got.flatten() {
                Some(fp) => fingerprint_hex(&fp),
                None => "no usable key".to_string(),
            };
            err!(
                Denied,
                "tenant's key does not match the advertised fingerprint (advertised {}, presented {got})",
                fingerprint_hex(fingerprint)
            )
        };
        match handshake(&mut tls, &fd, &deadline) {
            HsResult::Done => {}
            HsResult::Failed(e) => {
                let got = *lock(&seen);
                return Err(match got {
                    Some(fp) if fp != Some(expected) => mismatch(got),
                    _ => handshake_error(e, "tenant"),
                });
            }
            HsResult::Error(e) => return Err(e),
        }
        // Belt and braces: check the leaf again now that the handshake is done.
        let leaf = tls.ssl().peer_certificate();
        let fp = leaf.as_deref().and_then(spki_fingerprint);
        let conn = Conn::new(tls, fd);
        if fp != Some(expected) {
            conn.close();
            return Err(mismatch(Some(fp)));
        }

        // A tenant that is gone before answering refused the key.
        let refused = || {
            err!(
                Denied,
                "the tenant closed the connection instead of accepting the one-time key"
            )
        };
        match conn.send(one_time_key) {
            Err(e) if e.kind() == ErrorKind::Closed => return Err(refused()),
            r => r?,
        }
        match conn.recv_deadline(&deadline) {
            Ok(m) if m == ACCEPTED => {
                crate::log::debug!(version = conn.version, "attach channel: tenant accepted");
                Ok(conn)
            }
            Ok(m) => {
                conn.close();
                Err(err!(
                    Corrupt,
                    "the tenant answered the one-time key with {} bytes instead of the acceptance [1]",
                    m.len()
                ))
            }
            Err(e) if e.kind() == ErrorKind::Closed => Err(refused()),
            Err(e) => Err(e),
        }
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
    fn fingerprint_is_sha256_of_spki() {
        let k1 = ServerKey::generate().unwrap();
        let k2 = ServerKey::generate().unwrap();
        assert_ne!(k1.fingerprint(), k2.fingerprint());
        let cert = k1.ctx.certificate().unwrap();
        assert_eq!(spki_fingerprint(cert), Some(k1.fingerprint()));
        let hex = fingerprint_hex(&k1.fingerprint());
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(fingerprint_hex(&[0xab; 32]), "ab".repeat(32));
        assert!(format!("{k1:?}").contains(&hex));
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
