//! The attach channel (`mtipc::attach::channel`) over real sockets: a
//! `UnixStream::pair()` between two threads, a test relay (two socket pairs
//! and forwarding threads that can hold, trickle, cut or corrupt the bytes),
//! and this test binary re-executed as a child process (see [`child_entry`])
//! for the cross-process echo and the `kill -9` cases.

mod common;

use common::Scratch;
use mtipc::attach::{fingerprint_hex, Conn, MAX_MESSAGE};
use mtipc::internals::attach::ServerKey;
use mtipc::{Error, ErrorKind};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A generous timeout: tests that must not hang fail on it instead.
const T: Duration = Duration::from_secs(20);
const OTK: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
const SIZES: [usize; 5] = [0, 1, 4095, 65536, MAX_MESSAGE];

// ---------------------------------------------------------------------------
// Helpers

/// A deterministic message of `len` bytes that differs per `seed`.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Tenant and attacher connected over `tenant_end`/`attacher_end` (the
/// tenant on a thread).
fn handshake(tenant_end: UnixStream, attacher_end: UnixStream) -> (Conn, Conn) {
    let key = ServerKey::generate().unwrap();
    let fp = key.fingerprint();
    let tenant = thread::spawn(move || Conn::accept(tenant_end, &key, &OTK, T));
    let attacher = Conn::connect(attacher_end, &fp, &OTK, T).expect("connect");
    (tenant.join().unwrap().expect("accept"), attacher)
}

fn pair() -> (Conn, Conn) {
    let (a, b) = UnixStream::pair().unwrap();
    handshake(a, b)
}

/// Echoes every message until the peer closes; returns how many.
fn echo(conn: &Conn) -> usize {
    let mut n = 0;
    loop {
        match conn.recv(Some(T)) {
            Ok(m) => {
                conn.send(&m).unwrap();
                n += 1;
            }
            Err(e) if e.kind() == ErrorKind::Closed => return n,
            Err(e) => panic!("echo: {e}"),
        }
    }
}

fn echo_sizes(conn: &Conn) {
    for (i, &len) in SIZES.iter().enumerate() {
        let msg = pattern(len, i as u32);
        conn.send(&msg).unwrap();
        let back = conn.recv(Some(T)).unwrap();
        assert!(back == msg, "echo of {len} bytes differs");
    }
}

fn kind_of<T: std::fmt::Debug>(r: Result<T, Error>) -> (ErrorKind, String) {
    let e = r.expect_err("expected an error");
    (e.kind(), e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

// ---------------------------------------------------------------------------
// A test relay: attacher end <-> tenant end through two forwarding threads.

#[derive(Default)]
struct Ctl {
    /// Forward nothing before this instant.
    hold_until: Option<Instant>,
    /// Forward in pieces of this many bytes with this pause after each.
    slow: Option<(usize, Duration)>,
    /// Flip a bit in the last byte of the next chunk read.
    corrupt_next: bool,
}

struct Relay {
    /// Attacher → tenant.
    up: Arc<Mutex<Ctl>>,
    /// Tenant → attacher.
    down: Arc<Mutex<Ctl>>,
    /// The relay's own ends of both connections.
    ends: [UnixStream; 2],
}

impl Relay {
    /// (tenant end, attacher end, control).
    fn new() -> (UnixStream, UnixStream, Relay) {
        let (tenant_end, relay_t) = UnixStream::pair().unwrap();
        let (attacher_end, relay_a) = UnixStream::pair().unwrap();
        let up = Arc::new(Mutex::new(Ctl::default()));
        let down = Arc::new(Mutex::new(Ctl::default()));
        let (ra, rt) = (relay_a.try_clone().unwrap(), relay_t.try_clone().unwrap());
        let c = Arc::clone(&up);
        thread::spawn(move || forward(ra, rt, c));
        let c = Arc::clone(&down);
        let ends = [relay_t.try_clone().unwrap(), relay_a.try_clone().unwrap()];
        thread::spawn(move || forward(relay_t, relay_a, c));
        (tenant_end, attacher_end, Relay { up, down, ends })
    }

    /// Shuts both connections down, as the relay does at start + duration.
    fn cut(&self) {
        for e in &self.ends {
            let _ = e.shutdown(Shutdown::Both);
        }
    }
}

fn forward(mut src: UnixStream, mut dst: UnixStream, ctl: Arc<Mutex<Ctl>>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let data = &mut buf[..n];
        let (hold, slow, corrupt) = {
            let mut c = ctl.lock().unwrap();
            (c.hold_until, c.slow, std::mem::take(&mut c.corrupt_next))
        };
        if let Some(at) = hold {
            thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        if corrupt {
            data[n - 1] ^= 0x40;
        }
        let ok = match slow {
            Some((piece, pause)) => data.chunks(piece).all(|p| {
                let ok = dst.write_all(p).is_ok();
                thread::sleep(pause);
                ok
            }),
            None => dst.write_all(data).is_ok(),
        };
        if !ok {
            let _ = src.shutdown(Shutdown::Read);
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes: this binary again, running `child_entry` in a role.

fn spawn_role(role: &str, args: &[String]) -> Child {
    common::role_command("MTIPC_CHAN", role, args)
        .spawn()
        .expect("re-exec the test binary")
}

/// Reads the child's stdout until a line starting with `prefix`; returns
/// the rest of the line.
fn expect_line(out: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended before printing {prefix:?}"
        );
        if let Some(rest) = line.trim_end().strip_prefix(prefix) {
            return rest.trim().to_string();
        }
    }
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_CHAN_ROLE") else {
        return;
    };
    let args_var = std::env::var("MTIPC_CHAN_ARGS").unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    let mut out = std::io::stdout().lock();
    match role.as_str() {
        // Listens on args[0]; prints "ready <fingerprint>"; accepts one
        // attacher with one-time key args[1]; echoes until it closes.
        "tenant-echo" => {
            let key = ServerKey::generate().unwrap();
            let listener = UnixListener::bind(args[0]).unwrap();
            writeln!(out, "ready {}", fingerprint_hex(&key.fingerprint())).unwrap();
            out.flush().unwrap();
            let (s, _) = listener.accept().unwrap();
            let conn = Conn::accept(s, &key, &unhex32(args[1]), T).unwrap();
            let n = echo(&conn);
            writeln!(out, "done {n}").unwrap();
        }
        // Connects to args[0] pinning args[1] with key args[2], sends "hi",
        // prints "attached" and waits to be killed (reading nothing).
        "attacher-idle" => {
            let s = UnixStream::connect(args[0]).unwrap();
            let conn = Conn::connect(s, &unhex32(args[1]), &unhex32(args[2]), T).unwrap();
            conn.send(b"hi").unwrap();
            writeln!(out, "attached").unwrap();
            out.flush().unwrap();
            thread::sleep(Duration::from_secs(120));
        }
        other => panic!("unknown child role {other:?}"),
    }
    out.flush().unwrap();
    std::process::exit(0);
}

// ---------------------------------------------------------------------------
// Handshake and echo

#[test]
fn echo_sizes_across_threads() {
    let (t, a) = pair();
    assert_eq!(t.tls_version(), "TLSv1.3");
    assert_eq!(a.tls_version(), "TLSv1.3");
    thread::scope(|s| {
        let echoer = s.spawn(|| echo(&t));
        echo_sizes(&a);
        a.close();
        assert_eq!(echoer.join().unwrap(), SIZES.len());
    });
}

#[test]
fn echo_sizes_with_a_child_process() {
    let dir = Scratch::create("echo");
    let sock = dir.0.join("tenant.sock");
    let mut child = spawn_role(
        "tenant-echo",
        &[sock.to_string_lossy().into_owned(), hex(&OTK)],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let fp = unhex32(&expect_line(&mut out, "ready "));
    let s = UnixStream::connect(&sock).unwrap();
    let a = Conn::connect(s, &fp, &OTK, T).unwrap();
    assert_eq!(a.tls_version(), "TLSv1.3");
    echo_sizes(&a);
    a.close();
    assert_eq!(expect_line(&mut out, "done "), SIZES.len().to_string());
    assert!(child.wait().unwrap().success());
}

#[test]
fn oversized_message_is_refused_on_send() {
    let (t, a) = pair();
    let (kind, msg) = kind_of(a.send(&vec![0; MAX_MESSAGE + 1]));
    assert_eq!(kind, ErrorKind::Invalid, "{msg}");
    assert!(msg.contains(&MAX_MESSAGE.to_string()), "{msg}");
    // Nothing was sent: the connection still works.
    a.send(b"after").unwrap();
    assert_eq!(t.recv(Some(T)).unwrap(), b"after");
}

// ---------------------------------------------------------------------------
// Authentication

#[test]
fn wrong_fingerprint_is_denied_and_the_tenant_fails() {
    let key = ServerKey::generate().unwrap();
    let other = ServerKey::generate().unwrap().fingerprint();
    let (x, y) = UnixStream::pair().unwrap();
    let start = Instant::now();
    let tenant = thread::spawn(move || Conn::accept(x, &key, &OTK, T));
    let (kind, msg) = kind_of(Conn::connect(y, &other, &OTK, T));
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
    assert!(
        msg.contains("the peer does not hold the advertised key"),
        "{msg}"
    );
    assert!(msg.contains(&fingerprint_hex(&other)), "{msg}");
    let (tkind, tmsg) = kind_of(tenant.join().unwrap());
    eprintln!("tenant side of a wrong fingerprint: {tmsg}");
    assert!(
        matches!(tkind, ErrorKind::Denied | ErrorKind::Closed),
        "{tmsg}"
    );
    assert!(start.elapsed() < T / 2, "took {:?}", start.elapsed());
}

#[test]
fn a_key_that_is_not_x25519_is_denied_without_a_handshake() {
    // An advertised "fingerprint" that no X25519 exchange can use (a point
    // of small order): the attacher refuses before offering anything.
    let key = ServerKey::generate().unwrap();
    let (x, y) = UnixStream::pair().unwrap();
    let tenant = thread::spawn(move || Conn::accept(x, &key, &OTK, T));
    let (kind, msg) = kind_of(Conn::connect(y, &[0u8; 32], &OTK, T));
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
    assert!(msg.contains("not a usable X25519 key"), "{msg}");
    let (tkind, tmsg) = kind_of(tenant.join().unwrap());
    assert_ne!(tkind, ErrorKind::Timeout, "{tmsg}");
}

#[test]
fn a_replayed_handshake_is_refused() {
    // A relay records what a real attacher sent in a good handshake and
    // replays it, byte for byte, to the same tenant key with the same
    // one-time key: the binder verifies (same PSK), but the tenant's fresh
    // key share changes the transcript, so the replayed Finished does not.
    let key = ServerKey::generate().unwrap();
    let fp = key.fingerprint();
    let (x, y) = UnixStream::pair().unwrap();
    let (tap_tenant, mut tap_relay) = UnixStream::pair().unwrap();
    let k = key.clone();
    let tenant = thread::spawn(move || Conn::accept(x, &k, &OTK, T));
    // The attacher talks to the tap; the tap forwards both ways and keeps
    // a copy of the attacher's bytes.
    let (att_end, mut tap_att) = UnixStream::pair().unwrap();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let rec = Arc::clone(&recorded);
    let mut to_tenant = y.try_clone().unwrap();
    let mut from_tenant = y;
    let mut to_att = tap_att.try_clone().unwrap();
    let up = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = tap_att.read(&mut buf) {
            if n == 0 || to_tenant.write_all(&buf[..n]).is_err() {
                break;
            }
            rec.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        let _ = to_tenant.shutdown(std::net::Shutdown::Write);
    });
    let down = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_tenant.read(&mut buf) {
            if n == 0 || to_att.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_att.shutdown(std::net::Shutdown::Write);
    });
    let a = Conn::connect(att_end, &fp, &OTK, T).unwrap();
    let t = tenant.join().unwrap().unwrap();
    a.send(b"secret").unwrap();
    assert_eq!(t.recv(Some(T)).unwrap(), b"secret");
    a.close();
    t.close();
    up.join().unwrap();
    down.join().unwrap();
    let recorded = recorded.lock().unwrap().clone();
    assert!(recorded.len() > 100, "{} bytes recorded", recorded.len());

    let replay = thread::spawn(move || Conn::accept(tap_tenant, &key, &OTK, T));
    tap_relay.write_all(&recorded).unwrap();
    let (kind, msg) = kind_of(replay.join().unwrap());
    eprintln!("replayed handshake: {msg}");
    assert!(
        matches!(kind, ErrorKind::Corrupt | ErrorKind::Denied),
        "{kind:?}: {msg}"
    );
}

#[test]
fn wrong_one_time_key_is_denied_on_both_sides() {
    let key = ServerKey::generate().unwrap();
    let fp = key.fingerprint();
    let (x, y) = UnixStream::pair().unwrap();
    let start = Instant::now();
    let tenant = thread::spawn(move || Conn::accept(x, &key, &OTK, T));
    let mut wrong = OTK;
    wrong[31] ^= 1;
    let (kind, msg) = kind_of(Conn::connect(y, &fp, &wrong, T));
    assert_eq!(kind, ErrorKind::Denied, "{msg}");
    let (tkind, tmsg) = kind_of(tenant.join().unwrap());
    assert_eq!(tkind, ErrorKind::Denied, "{tmsg}");
    assert!(
        tmsg.contains("the attacher did not present the one-time key"),
        "{tmsg}"
    );
    assert!(start.elapsed() < T / 2, "took {:?}", start.elapsed());
}

// ---------------------------------------------------------------------------
// Timeouts and partial frames

#[test]
fn handshake_waits_for_a_relay_that_holds_traffic() {
    let (te, ae, relay) = Relay::new();
    let hold = Duration::from_millis(400);
    let until = Instant::now() + hold;
    relay.up.lock().unwrap().hold_until = Some(until);
    relay.down.lock().unwrap().hold_until = Some(until);
    let start = Instant::now();
    let (t, a) = handshake(te, ae);
    assert!(start.elapsed() >= hold, "{:?}", start.elapsed());
    a.send(b"through").unwrap();
    assert_eq!(t.recv(Some(T)).unwrap(), b"through");
}

#[test]
fn handshake_times_out_on_both_sides() {
    let (te, ae, relay) = Relay::new();
    relay.up.lock().unwrap().hold_until = Some(Instant::now() + Duration::from_secs(3));
    let key = ServerKey::generate().unwrap();
    let fp = key.fingerprint();
    // The attacher gives up first: its end closing reaches the tenant only
    // when the relay lets traffic through, after the tenant's own timeout.
    let start = Instant::now();
    let tenant = thread::spawn(move || Conn::accept(te, &key, &OTK, Duration::from_millis(400)));
    let (kind, msg) = kind_of(Conn::connect(ae, &fp, &OTK, Duration::from_millis(200)));
    assert_eq!(kind, ErrorKind::Timeout, "{msg}");
    let (tkind, tmsg) = kind_of(tenant.join().unwrap());
    assert_eq!(tkind, ErrorKind::Timeout, "{tmsg}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn silent_peer_times_out() {
    let key = ServerKey::generate().unwrap();
    let (x, _y) = UnixStream::pair().unwrap();
    let (kind, msg) = kind_of(Conn::accept(x, &key, &OTK, Duration::from_millis(100)));
    assert_eq!(kind, ErrorKind::Timeout, "{msg}");
    let (x, _y) = UnixStream::pair().unwrap();
    let (kind, msg) = kind_of(Conn::connect(
        x,
        &key.fingerprint(),
        &OTK,
        Duration::from_millis(100),
    ));
    assert_eq!(kind, ErrorKind::Timeout, "{msg}");
}

#[test]
fn recv_timeout_keeps_a_trickled_frame() {
    let (te, ae, relay) = Relay::new();
    let (t, a) = handshake(te, ae);

    // One record, one byte at a time: ~230 bytes of ciphertext, 2 ms apart.
    relay.up.lock().unwrap().slow = Some((1, Duration::from_millis(2)));
    let small = pattern(200, 1);
    a.send(&small).unwrap();
    let mut timeouts = 0;
    let got = loop {
        match t.recv(Some(Duration::from_millis(20))) {
            Ok(m) => break m,
            Err(e) if e.kind() == ErrorKind::Timeout => timeouts += 1,
            Err(e) => panic!("{e}"),
        }
        assert!(timeouts < 1000);
    };
    assert_eq!(got, small);
    assert!(timeouts >= 3, "only {timeouts} timeouts");

    // Three records, 1000 bytes at a time: the header and the first record
    // are buffered (next_len sees them) while the rest trickles in.
    relay.up.lock().unwrap().slow = Some((1000, Duration::from_millis(15)));
    let big = pattern(40_000, 2);
    thread::scope(|s| {
        s.spawn(|| a.send(&big).unwrap());
        assert_eq!(t.next_len(Some(T)).unwrap(), big.len());
        let e = t.recv(Some(Duration::from_millis(5))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        let mut timeouts = 1;
        let got = loop {
            match t.recv(Some(Duration::from_millis(25))) {
                Ok(m) => break m,
                Err(e) if e.kind() == ErrorKind::Timeout => timeouts += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(timeouts < 1000);
        };
        assert!(got == big, "trickled message differs");
        assert!(timeouts >= 3, "only {timeouts} timeouts");
    });

    // Back to full speed, both ways.
    relay.up.lock().unwrap().slow = None;
    a.send(b"fast").unwrap();
    assert_eq!(t.recv(Some(T)).unwrap(), b"fast");
    t.send(b"back").unwrap();
    assert_eq!(a.recv(Some(T)).unwrap(), b"back");
}

#[test]
fn recv_times_out_with_nothing_sent() {
    let (t, _a) = pair();
    let start = Instant::now();
    let (kind, msg) = kind_of(t.recv(Some(Duration::from_millis(50))));
    assert_eq!(kind, ErrorKind::Timeout, "{msg}");
    assert!(msg.contains("timed out after 50ms"), "{msg}");
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        t.recv(Some(Duration::ZERO)).unwrap_err().kind(),
        ErrorKind::Timeout
    );
}

// ---------------------------------------------------------------------------
// Closing

#[test]
fn a_peer_that_closes_gives_closed() {
    let (t, a) = pair();
    a.close();
    a.close(); // idempotent
    assert_eq!(a.send(b"x").unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(a.recv(Some(T)).unwrap_err().kind(), ErrorKind::Closed);
    let (kind, msg) = kind_of(t.recv(Some(T)));
    assert_eq!(kind, ErrorKind::Closed, "{msg}");
    assert_eq!(t.send(b"x").unwrap_err().kind(), ErrorKind::Closed);

    // Drop closes too.
    let (t, a) = pair();
    drop(a);
    assert_eq!(t.recv(Some(T)).unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn eof_between_frames_without_close_notify_is_closed() {
    let (te, ae, relay) = Relay::new();
    let (t, a) = handshake(te, ae);
    a.send(b"last").unwrap();
    assert_eq!(t.recv(Some(T)).unwrap(), b"last");
    // The relay drops both connections: EOF with no close_notify.
    relay.cut();
    let (kind, msg) = kind_of(t.recv(Some(T)));
    assert_eq!(kind, ErrorKind::Closed, "{msg}");
    let (kind, msg) = kind_of(a.recv(Some(T)));
    assert_eq!(kind, ErrorKind::Closed, "{msg}");
}

#[test]
fn close_from_another_thread_wakes_blocked_recv_and_send() {
    let (_t, a) = pair();
    thread::scope(|s| {
        let r = s.spawn(|| a.recv(None));
        // The peer reads nothing: the sender blocks once the buffers are full.
        let w = s.spawn(|| loop {
            if let Err(e) = a.send(&vec![3; MAX_MESSAGE]) {
                return e;
            }
        });
        thread::sleep(Duration::from_millis(200));
        assert!(!r.is_finished() && !w.is_finished());
        let start = Instant::now();
        a.close();
        let (re, we) = (r.join().unwrap().unwrap_err(), w.join().unwrap());
        assert_eq!(re.kind(), ErrorKind::Closed, "{re}");
        assert_eq!(we.kind(), ErrorKind::Closed, "{we}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    });
}

// ---------------------------------------------------------------------------
// Broken peers

/// A raw peer that reads whatever comes and writes `garbage` once, then
/// keeps its socket open for `linger`.
fn garbage_peer(s: UnixStream, garbage: Vec<u8>, linger: Duration) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ = s.write_all(&garbage);
        let end = Instant::now() + linger;
        while Instant::now() < end {
            if let Ok(0) = s.read(&mut buf) {
                break;
            }
        }
    })
}

#[test]
fn garbage_instead_of_tls_is_an_error_not_a_hang() {
    let key = ServerKey::generate().unwrap();
    let fp = key.fingerprint();
    let linger = Duration::from_secs(5);
    let garbages: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        pattern(5000, 9),
        // A TLS record header announcing a handshake record, then junk.
        [&[22u8, 3, 1, 0, 200][..], &pattern(200, 3)].concat(),
        // An alert record.
        vec![21, 3, 3, 0, 2, 2, 40],
    ];
    for g in garbages {
        let start = Instant::now();
        let (x, y) = UnixStream::pair().unwrap();
        let peer = garbage_peer(y, g.clone(), linger);
        let (kind, msg) = kind_of(Conn::accept(x, &key, &OTK, T));
        eprintln!("tenant fed {} garbage bytes: {msg}", g.len());
        assert_ne!(kind, ErrorKind::Timeout, "{msg}");
        assert!(start.elapsed() < linger, "{:?}", start.elapsed());
        peer.join().unwrap();

        let start = Instant::now();
        let (x, y) = UnixStream::pair().unwrap();
        let peer = garbage_peer(y, g.clone(), linger);
        let (kind, msg) = kind_of(Conn::connect(x, &fp, &OTK, T));
        eprintln!("attacher fed {} garbage bytes: {msg}", g.len());
        assert_ne!(kind, ErrorKind::Timeout, "{msg}");
        assert!(start.elapsed() < linger, "{:?}", start.elapsed());
        peer.join().unwrap();
    }
}

#[test]
fn a_peer_that_closes_at_once_fails_the_handshake() {
    let key = ServerKey::generate().unwrap();
    let (x, y) = UnixStream::pair().unwrap();
    drop(y);
    let (kind, msg) = kind_of(Conn::accept(x, &key, &OTK, T));
    assert_eq!(kind, ErrorKind::Closed, "{msg}");
    let (x, y) = UnixStream::pair().unwrap();
    drop(y);
    let (kind, msg) = kind_of(Conn::connect(x, &key.fingerprint(), &OTK, T));
    assert!(
        matches!(kind, ErrorKind::Closed | ErrorKind::Denied),
        "{msg}"
    );
}

#[test]
fn a_corrupted_record_is_an_error_not_a_hang() {
    let (te, ae, relay) = Relay::new();
    let (t, a) = handshake(te, ae);
    a.send(b"fine").unwrap();
    assert_eq!(t.recv(Some(T)).unwrap(), b"fine");
    relay.up.lock().unwrap().corrupt_next = true;
    a.send(b"this record gets a flipped bit").unwrap();
    let start = Instant::now();
    let (kind, msg) = kind_of(t.recv(Some(T)));
    eprintln!("corrupted record: {msg}");
    assert_eq!(kind, ErrorKind::Corrupt, "{msg}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Stays failed.
    assert_eq!(t.recv(Some(T)).unwrap_err().kind(), ErrorKind::Corrupt);
}

// ---------------------------------------------------------------------------
// A killed peer (kill -9 of a child process)

#[test]
fn a_killed_peer_gives_closed_or_io_never_a_hang() {
    let dir = Scratch::create("kill");
    let sock = dir.0.join("tenant.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let key = ServerKey::generate().unwrap();
    let mut child = spawn_role(
        "attacher-idle",
        &[
            sock.to_string_lossy().into_owned(),
            hex(&key.fingerprint()),
            hex(&OTK),
        ],
    );
    let (s, _) = listener.accept().unwrap();
    let t = Conn::accept(s, &key, &OTK, T).unwrap();
    assert_eq!(t.recv(Some(T)).unwrap(), b"hi");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    expect_line(&mut out, "attached");

    thread::scope(|s| {
        // One thread blocked in recv, one blocked in send (the child reads
        // nothing, so the socket buffers fill up).
        let receiver = s.spawn(|| t.recv(None));
        let sender = s.spawn(|| loop {
            if let Err(e) = t.send(&vec![1; MAX_MESSAGE]) {
                return e;
            }
        });
        thread::sleep(Duration::from_millis(300));
        assert!(!receiver.is_finished() && !sender.is_finished());
        let start = Instant::now();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let r = receiver.join().unwrap().unwrap_err();
        let w = sender.join().unwrap();
        eprintln!("after kill -9: recv {r}; send {w}");
        assert!(matches!(r.kind(), ErrorKind::Closed | ErrorKind::Io), "{r}");
        assert!(matches!(w.kind(), ErrorKind::Closed | ErrorKind::Io), "{w}");
        assert!(start.elapsed() < Duration::from_secs(5));
    });
}

// ---------------------------------------------------------------------------
// Concurrency

#[test]
fn send_while_another_thread_blocks_in_recv() {
    let (t, a) = pair();
    const N: usize = 200;
    thread::scope(|s| {
        s.spawn(|| echo(&t));
        let receiver = s.spawn(|| (0..N).map(|_| a.recv(None).unwrap()).collect::<Vec<_>>());
        // The receiver is blocked in recv (nothing was sent yet).
        thread::sleep(Duration::from_millis(100));
        assert!(!receiver.is_finished());
        for i in 0..N {
            a.send(&pattern(i * 37, i as u32)).unwrap();
        }
        let got = receiver.join().unwrap();
        for (i, m) in got.iter().enumerate() {
            assert!(*m == pattern(i * 37, i as u32), "message {i} differs");
        }
        a.close();
    });
}

#[test]
fn full_duplex_bulk_transfer() {
    // Both ends write more than the socket buffers hold while their own
    // receivers drain the other direction: a design that held one lock
    // across a blocking read or write would deadlock here.
    let (t, a) = pair();
    const N: u32 = 8;
    let start = Instant::now();
    thread::scope(|s| {
        for (me, other, seed) in [(&t, &a, 100u32), (&a, &t, 200u32)] {
            s.spawn(move || {
                for i in 0..N {
                    me.send(&pattern(MAX_MESSAGE, seed + i)).unwrap();
                }
            });
            s.spawn(move || {
                for i in 0..N {
                    let m = other.recv(Some(T)).unwrap();
                    assert!(m == pattern(MAX_MESSAGE, seed + i), "message {i} differs");
                }
            });
        }
    });
    eprintln!("full duplex: 2 x {N} x 1 MiB in {:?}", start.elapsed());
}

#[test]
fn recv_into_small_buffer_keeps_the_message() {
    let (t, a) = pair();
    let msg = pattern(100, 5);
    a.send(&msg).unwrap();
    a.send(b"").unwrap();
    let mut small = [0u8; 10];
    let (kind, text) = kind_of(t.recv_into(&mut small, Some(T)));
    assert_eq!(kind, ErrorKind::Invalid, "{text}");
    assert!(text.contains("100 bytes needed"), "{text}");
    assert_eq!(t.next_len(Some(T)).unwrap(), 100);
    let mut big = [0u8; 128];
    assert_eq!(t.recv_into(&mut big, Some(T)).unwrap(), 100);
    assert_eq!(&big[..100], &msg[..]);
    // An empty message fits an empty buffer.
    assert_eq!(t.recv_into(&mut [], Some(T)).unwrap(), 0);
}

// ---------------------------------------------------------------------------
// Timing (printed; run with --nocapture, ideally --release)

#[test]
fn handshake_and_echo_timing() {
    const ROUNDS: usize = 30;
    let t0 = Instant::now();
    let key = ServerKey::generate().unwrap();
    let keygen = t0.elapsed();
    let fp = key.fingerprint();
    let mut hs = Vec::new();
    let mut echo1 = Vec::new();
    let mut echo64k = Vec::new();
    for _ in 0..ROUNDS {
        let (x, y) = UnixStream::pair().unwrap();
        let k = key.clone();
        let start = Instant::now();
        let tenant = thread::spawn(move || {
            let c = Conn::accept(x, &k, &OTK, T).unwrap();
            echo(&c);
        });
        let a = Conn::connect(y, &fp, &OTK, T).unwrap();
        hs.push(start.elapsed());
        let s = Instant::now();
        a.send(b"x").unwrap();
        a.recv(Some(T)).unwrap();
        echo1.push(s.elapsed());
        let big = vec![7u8; 65536];
        let s = Instant::now();
        a.send(&big).unwrap();
        a.recv(Some(T)).unwrap();
        echo64k.push(s.elapsed());
        a.close();
        tenant.join().unwrap();
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (h, hmin, hmax) = med(&mut hs);
    let (e1, _, _) = med(&mut echo1);
    let (e64, _, _) = med(&mut echo64k);
    eprintln!(
        "channel timing over {ROUNDS} rounds (UnixStream::pair, tenant on a thread): \
         key generation {keygen:?}; PSK handshake median {h:?} (min {hmin:?}, max {hmax:?}); \
         echo 1 B median {e1:?}; echo 64 KiB median {e64:?}"
    );
    assert!(h < Duration::from_secs(1), "{h:?}");
}
