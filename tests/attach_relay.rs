//! mtipcd's relay (`mtipc::attach::relay`) with real sockets, threads and
//! processes: pairing and echo, the time window (nothing before the start,
//! closed at start + duration, open until an end closes with duration 0),
//! half-close, the refusals (bad hello, wrong pid, another uid, a second
//! connection for an end, an unknown pairing, a full relay), connect() with
//! no relay, shutdown with live connections, and an end that is a separate
//! process, also one killed with SIGKILL mid-stream.
//!
//! Child processes are this test binary re-executed as [`child_entry`]
//! with a role in `MTIPC_RELAY_ROLE`.

mod common;

use common::Kids;
use mtipc::internals::attach::relay::{
    connect, hello_line, End, Listener, Options, Pairing, Relay, RelayStats, MAX_HELLO,
};
use mtipc::internals::sys::ProcId;
use mtipc::ErrorKind;
use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Helpers

const T: Duration = Duration::from_secs(10);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    id
}

/// A fresh pairing id per call (no two tests share a relay, but ids that
/// differ in their first bytes make the logs readable).
fn new_id() -> [u8; 16] {
    use mtipc::internals::sync::{local::AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[0] = n;
    id[1..5].copy_from_slice(&std::process::id().to_be_bytes());
    id
}

fn pairing(id: [u8; 16], start_ms: u64, duration_ms: u64) -> Pairing {
    Pairing {
        id,
        tenant_pid: std::process::id(),
        attacher_pid: std::process::id(),
        start_ms,
        duration_ms,
    }
}

/// A scratch directory (mode 0700 unless told), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "mtipc-relay-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn quick() -> Options {
    Options {
        pairing_ttl: Duration::from_millis(500),
        hello_timeout: Duration::from_millis(500),
        linger: Duration::from_millis(500),
        ..Options::default()
    }
}

/// A relay serving on a thread of its own; shut down and joined on drop.
struct Served {
    relay: Arc<Relay>,
    thread: Option<JoinHandle<mtipc::Result<()>>>,
    dir: Scratch,
}

impl Served {
    fn start(tag: &str, opts: Options) -> Served {
        let dir = Scratch::new(tag);
        let relay = Arc::new(Relay::bind_with(&dir.0.join("relay.sock"), euid(), opts).unwrap());
        let r = Arc::clone(&relay);
        Served {
            relay,
            thread: Some(thread::spawn(move || r.run())),
            dir,
        }
    }

    fn path(&self) -> PathBuf {
        self.relay.path().to_path_buf()
    }

    fn stats(&self) -> RelayStats {
        self.relay.stats()
    }

    /// Waits until the relay relays nothing any more.
    fn wait_idle(&self) {
        wait_until("no active pairing", || self.stats().active == 0);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.relay.shutdown();
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !thread::panicking() {
                r.unwrap().unwrap();
            }
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Connects `end` on a thread (connect blocks until both ends are there).
fn connect_bg(path: &Path, end: End, id: [u8; 16]) -> JoinHandle<mtipc::Result<UnixStream>> {
    let p = path.to_path_buf();
    thread::spawn(move || connect(&p, end, &id, T, &here()))
}

/// Both ends of `id`, connected (tenant, attacher).
fn both(path: &Path, id: [u8; 16]) -> (UnixStream, UnixStream) {
    let t = connect_bg(path, End::Tenant, id);
    let a = connect(path, End::Attacher, &id, T, &here()).unwrap();
    (t.join().unwrap().unwrap(), a)
}

/// What a raw connection gets back for `bytes`, up to end-of-file.
fn raw_answer(path: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // Unread bytes of ours at the relay's close (it reads a bounded
            // amount, not 4 x MAX_HELLO of garbage).
            Err(e) if e.kind() == IoKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    String::from_utf8(answer).unwrap()
}

/// This test binary again, running [`child_entry`] as `role`, told (in
/// `MTIPC_RELAY_LISTENER`) that the relay it connects to is this process's.
fn child(role: &str, args: &[&str]) -> Command {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let me = Listener::this_process().unwrap();
    let mut c = common::role_command("MTIPC_RELAY", role, &args);
    c.env(
        "MTIPC_RELAY_LISTENER",
        format!("{} {} {}", me.proc.pid, me.proc.start, me.uid),
    );
    c
}

/// Who listens at the relays of this file: this process, or for a child,
/// the parent named in `MTIPC_RELAY_LISTENER`.
fn here() -> Listener {
    match std::env::var("MTIPC_RELAY_LISTENER") {
        Ok(v) => {
            let n: Vec<u64> = v.split(' ').map(|x| x.parse().unwrap()).collect();
            Listener {
                proc: ProcId {
                    pid: n[0] as u32,
                    start: n[1],
                },
                uid: n[2] as u32,
            }
        }
        Err(_) => Listener::this_process().unwrap(),
    }
}

/// Marks a child's report among what the test harness prints.
const REPORT: &str = "relay-child: ";

/// A child's report line (without the marker), within `T`.
fn report_of(c: &mut Child) -> String {
    let out = c.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // Read on to the end: a closed pipe would fail the child's
            // later prints.
            if let Some(r) = line.strip_prefix(REPORT) {
                let _ = tx.send(r.to_string());
            }
        }
    });
    rx.recv_timeout(T).expect("the child reported nothing")
}

/// The child processes' side. Not a test of its own: without
/// `MTIPC_RELAY_ROLE` it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_RELAY_ROLE") else {
        return;
    };
    let args = std::env::var("MTIPC_RELAY_ARGS").unwrap();
    let args: Vec<&str> = args.split('\u{1f}').collect();
    let path = Path::new(args[0]);
    let id = unhex(args[1]);
    let report = |line: String| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{REPORT}{line}");
        let _ = out.flush();
    };
    match role.as_str() {
        // Connects as the tenant, then echoes everything until end-of-file.
        "echo-tenant" => {
            let mut s = match connect(path, End::Tenant, &id, T, &here()) {
                Ok(s) => s,
                Err(e) => return report(format!("err {:?} {}", e.kind(), e.message())),
            };
            report("ok".into());
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        // Connects as the attacher and reports the outcome.
        "attacher" => match connect(path, End::Attacher, &id, T, &here()) {
            Ok(_) => report("ok".into()),
            Err(e) => report(format!("err {:?} {}", e.kind(), e.message())),
        },
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// Pairing and the time window

#[test]
fn pairing_and_echo_both_ways() {
    let r = Served::start("echo", quick());
    let id = new_id();
    r.relay.register(pairing(id, 0, 0));
    let (mut t, mut a) = both(&r.path(), id);
    for round in 0..20u32 {
        let msg = format!("round {round} from the attacher");
        a.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        t.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
        t.write_all(&got).unwrap();
        let mut back = vec![0u8; msg.len()];
        a.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    // A bulk transfer larger than every buffer on the way, both ways at once.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let big2 = big.clone();
    let mut t2 = t.try_clone().unwrap();
    let writer = thread::spawn(move || t2.write_all(&big2).unwrap());
    let mut a2 = a.try_clone().unwrap();
    let big3 = big.clone();
    let writer2 = thread::spawn(move || a2.write_all(&big3).unwrap());
    let mut got = vec![0u8; big.len()];
    a.read_exact(&mut got).unwrap();
    assert!(got == big, "tenant to attacher bytes differ");
    t.read_exact(&mut got).unwrap();
    assert!(got == big, "attacher to tenant bytes differ");
    writer.join().unwrap();
    writer2.join().unwrap();
    let s = r.stats();
    assert_eq!((s.accepted, s.paired, s.refused, s.active), (2, 1, 0, 1));
}

#[test]
fn no_byte_passes_before_the_start_time() {
    let r = Served::start("start", quick());
    let id = new_id();
    let start_ms = unix_ms() + 800;
    r.relay.register(pairing(id, start_ms, 0));
    let (mut t, mut a) = both(&r.path(), id);
    // Both ends write at once, well before the start.
    a.write_all(b"early from the attacher").unwrap();
    t.write_all(b"early from the tenant").unwrap();
    let written = unix_ms();
    assert!(
        written + 200 < start_ms,
        "the machine is too slow for this test"
    );
    let mut buf = [0u8; 23];
    a.read_exact(&mut buf[..21]).unwrap();
    let at_attacher = unix_ms();
    assert_eq!(&buf[..21], b"early from the tenant");
    t.read_exact(&mut buf).unwrap();
    let at_tenant = unix_ms();
    assert_eq!(&buf, b"early from the attacher");
    // Held, not dropped; and not one ms early.
    assert!(at_attacher >= start_ms, "{at_attacher} < {start_ms}");
    assert!(at_tenant >= start_ms, "{at_tenant} < {start_ms}");
    assert!(
        at_tenant < start_ms + 1000,
        "late: {}",
        at_tenant - start_ms
    );
}

#[test]
fn closed_at_start_plus_duration() {
    let r = Served::start("duration", quick());
    let id = new_id();
    let start_ms = unix_ms() + 200;
    let end_ms = start_ms + 400;
    r.relay.register(pairing(id, start_ms, 400));
    let (mut t, mut a) = both(&r.path(), id);
    a.write_all(b"inside the window").unwrap();
    let mut buf = [0u8; 17];
    t.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"inside the window");
    // Nobody closes: the relay does, at the end of the window.
    let mut rest = Vec::new();
    t.read_to_end(&mut rest).unwrap();
    let eof_t = unix_ms();
    a.read_to_end(&mut rest).unwrap();
    let eof_a = unix_ms();
    assert!(rest.is_empty());
    for eof in [eof_t, eof_a] {
        assert!(eof >= end_ms, "end-of-file {} ms early", end_ms - eof);
        assert!(eof < end_ms + 1000, "end-of-file {} ms late", eof - end_ms);
    }
    // Writes fail after.
    for s in [&mut t, &mut a] {
        let e = s.write_all(b"after the window").unwrap_err();
        assert!(
            matches!(e.kind(), IoKind::BrokenPipe | IoKind::ConnectionReset),
            "{e}"
        );
    }
    r.wait_idle();
    let s = r.stats();
    assert_eq!((s.paired, s.closed_by_duration), (1, 1));
}

#[test]
fn duration_zero_stays_open_until_an_end_closes() {
    let r = Served::start("open", quick());
    let id = new_id();
    r.relay.register(pairing(id, unix_ms(), 0));
    let (mut t, mut a) = both(&r.path(), id);
    thread::sleep(Duration::from_millis(700));
    a.write_all(b"still open").unwrap();
    let mut buf = [0u8; 10];
    t.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still open");
    assert_eq!(r.stats().active, 1);
    // The attacher closes: the tenant sees end-of-file, the pairing ends.
    a.write_all(b"last words").unwrap();
    drop(a);
    let mut rest = Vec::new();
    t.set_read_timeout(Some(T)).unwrap();
    t.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"last words");
    r.wait_idle();
    assert_eq!(r.stats().closed_by_duration, 0);
}

#[test]
fn half_close_is_passed_on_and_the_reply_still_comes_back() {
    let r = Served::start("half", quick());
    let id = new_id();
    r.relay.register(pairing(id, 0, 0));
    let (mut t, mut a) = both(&r.path(), id);
    a.write_all(b"request").unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    let mut req = Vec::new();
    t.set_read_timeout(Some(T)).unwrap();
    t.read_to_end(&mut req).unwrap();
    assert_eq!(req, b"request");
    t.write_all(b"reply").unwrap();
    drop(t);
    let mut reply = Vec::new();
    a.set_read_timeout(Some(T)).unwrap();
    a.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"reply");
    r.wait_idle();
}

#[test]
fn an_end_that_closes_before_the_start_still_delivers() {
    let r = Served::start("early-close", quick());
    let id = new_id();
    let start_ms = unix_ms() + 400;
    r.relay.register(pairing(id, start_ms, 0));
    let (mut t, mut a) = both(&r.path(), id);
    a.write_all(b"said and gone").unwrap();
    drop(a);
    let mut got = Vec::new();
    t.set_read_timeout(Some(T)).unwrap();
    t.read_to_end(&mut got).unwrap();
    assert!(unix_ms() >= start_ms);
    assert_eq!(got, b"said and gone");
    r.wait_idle();
}

#[test]
fn connection_before_register_works_once_registered() {
    let r = Served::start("early", quick());
    let id = new_id();
    let t = connect_bg(&r.path(), End::Tenant, id);
    let a = connect_bg(&r.path(), End::Attacher, id);
    wait_until("both ends wait", || r.stats().waiting == 2);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(r.stats().paired, 0);
    r.relay.register(pairing(id, 0, 0));
    let mut t = t.join().unwrap().unwrap();
    let mut a = a.join().unwrap().unwrap();
    t.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
}

// ---------------------------------------------------------------------------
// Refusals

#[test]
fn unknown_pairing_is_refused_after_the_ttl() {
    let r = Served::start("unknown", quick());
    let t0 = Instant::now();
    let e = connect(&r.path(), End::Tenant, &new_id(), T, &here()).unwrap_err();
    let waited = t0.elapsed();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("unknown pairing"), "{e}");
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(r.stats().refused, 1);
}

#[test]
fn registered_pairing_whose_other_end_never_comes_expires() {
    let r = Served::start("expire", quick());
    let id = new_id();
    r.relay.register(pairing(id, 0, 0));
    let e = connect(&r.path(), End::Attacher, &id, T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(
        e.message().contains("the tenant end did not connect"),
        "{e}"
    );
    // Forgotten: now it is unknown.
    let e = connect(&r.path(), End::Attacher, &id, T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn wrong_pid_is_refused() {
    let r = Served::start("pid", quick());
    // Registered first: refused at the hello.
    let id = new_id();
    let mut p = pairing(id, 0, 0);
    p.tenant_pid = 1;
    r.relay.register(p);
    let e = connect(&r.path(), End::Tenant, &id, T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    let me = std::process::id();
    assert!(
        e.message()
            .contains(&format!("pid {me} is not the tenant of pairing")),
        "{e}"
    );
    // Connected first: refused when the registration comes.
    let id = new_id();
    let early = connect_bg(&r.path(), End::Attacher, id);
    wait_until("the attacher waits", || r.stats().waiting == 1);
    let mut p = pairing(id, 0, 0);
    p.attacher_pid = 1;
    r.relay.register(p);
    let e = early.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(e.message().contains("expected pid 1"), "{e}");
    assert_eq!(r.stats().refused, 2);
}

#[test]
fn bad_hellos_are_refused_and_the_relay_keeps_serving() {
    let r = Served::start("garbage", quick());
    let path = r.path();
    let a = raw_answer(&path, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(a.starts_with("err bad hello: "), "{a:?}");
    assert!(a.contains("does not start with"), "{a:?}");
    assert!(a.ends_with('\n') && a.matches('\n').count() == 1, "{a:?}");

    let a = raw_answer(&path, &[b'A'; 4 * MAX_HELLO]);
    assert_eq!(
        a,
        format!("err bad hello: {MAX_HELLO} bytes without a newline\n")
    );

    let a = raw_answer(&path, b"\x00\xff\x1b[2J\n");
    assert!(a.starts_with("err bad hello: "), "{a:?}");
    assert!(!a.contains('\x1b'), "escaped: {a:?}");

    let id = new_id();
    let upper = hello_line(End::Tenant, &id).to_uppercase();
    let a = raw_answer(&path, upper.as_bytes());
    assert!(a.starts_with("err bad hello: "), "{a:?}");

    let a = raw_answer(
        &path,
        format!("mtipc relay 2 tenant {}\n", hex(&id)).as_bytes(),
    );
    assert!(a.contains("version"), "{a:?}");

    // Silence: refused after the hello timeout.
    let a = raw_answer(&path, b"mtipc relay 1 ten");
    assert_eq!(a, "err no hello within 500 ms\n");

    assert_eq!(r.stats().refused, 6);
    r.relay.register(pairing(id, 0, 0));
    let (mut t, mut a) = both(&path, id);
    t.write_all(b"fine").unwrap();
    let mut buf = [0u8; 4];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"fine");
}

#[test]
fn second_connection_for_the_same_end_is_refused() {
    let r = Served::start("second", quick());
    let id = new_id();
    r.relay.register(pairing(id, 0, 0));
    let first = connect_bg(&r.path(), End::Tenant, id);
    wait_until("the first tenant waits", || r.stats().waiting == 1);
    let e = connect(&r.path(), End::Tenant, &id, T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(
        e.message().contains("already has a tenant connection"),
        "{e}"
    );
    // The first is still there and gets paired.
    let _a = connect(&r.path(), End::Attacher, &id, T, &here()).unwrap();
    first.join().unwrap().unwrap();
    // A third connection while relayed.
    let e = connect(&r.path(), End::Attacher, &id, T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(e.message().contains("already relayed"), "{e}");
}

#[test]
fn a_full_relay_refuses_with_full() {
    let r = Served::start(
        "full",
        Options {
            max_pending: 2,
            ..quick()
        },
    );
    let w1 = connect_bg(&r.path(), End::Tenant, new_id());
    let w2 = connect_bg(&r.path(), End::Tenant, new_id());
    wait_until("two waiting", || r.stats().waiting == 2);
    let e = connect(&r.path(), End::Tenant, &new_id(), T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Full, "{e}");
    assert!(e.message().contains("relay busy"), "{e}");
    for w in [w1, w2] {
        assert_eq!(w.join().unwrap().unwrap_err().kind(), ErrorKind::NotFound);
    }
}

#[test]
fn another_uid_is_refused_by_peer_credentials() {
    if euid() != 0 {
        common::skip(
            "another_uid_is_refused_by_peer_credentials",
            "needs root to run a child as another uid",
        );
        return;
    }
    let r = Served::start("uid", quick());
    // Reachable for uid 65534 in this test only: the directory is 0755 and
    // the socket 0666, so the refusal comes from SO_PEERCRED, not from the
    // file permissions.
    std::fs::set_permissions(&r.dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(r.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let id = new_id();
    let mut kids = Kids::default();
    let path = r.path();
    let args = [path.display().to_string(), hex(&id)];
    let me = Listener::this_process().unwrap();
    let (_bin, k) = common::spawn_as_uid(65534, |exe| {
        let mut c = common::role_command_at(exe, "MTIPC_RELAY", "attacher", &args);
        c.env(
            "MTIPC_RELAY_LISTENER",
            format!("{} {} {}", me.proc.pid, me.proc.start, me.uid),
        );
        c
    });
    kids.0.push(k);
    r.relay.register(Pairing {
        attacher_pid: kids.0[0].id(),
        ..pairing(id, 0, 0)
    });
    let line = report_of(&mut kids.0[0]);
    assert!(line.starts_with("err Denied "), "{line:?}");
    assert!(
        line.contains("uid 65534 may not use this relay"),
        "{line:?}"
    );
    assert!(kids.0[0].wait().unwrap().success());
    assert_eq!(r.stats().refused, 1);
    assert_eq!(r.stats().paired, 0);
}

#[test]
fn connect_without_a_relay_is_unavailable() {
    let dir = Scratch::new("none");
    let path = dir.0.join("relay.sock");
    let e = connect(&path, End::Attacher, &new_id(), T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(
        e.message(),
        format!("mtipcd is not running (no relay at {})", path.display())
    );
    // A socket file nobody listens on (a dead mtipcd's): the same.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let e = connect(&path, End::Attacher, &new_id(), T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // A path no socket address can hold.
    let long = dir.0.join("x".repeat(200));
    let e = connect(&long, End::Attacher, &new_id(), T, &here()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let e = Relay::bind(&long, euid()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
}

#[test]
fn connect_times_out_when_the_other_end_never_comes() {
    let r = Served::start("timeout", Options::default());
    let id = new_id();
    r.relay.register(pairing(id, 0, 0));
    let t0 = Instant::now();
    let e = connect(
        &r.path(),
        End::Attacher,
        &id,
        Duration::from_millis(300),
        &here(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(
        e.message().contains("the tenant end did not connect"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// Shutdown and processes

#[test]
fn shutdown_with_live_connections() {
    let mut r = Served::start("shutdown", quick());
    let id = new_id();
    r.relay.register(pairing(id, 0, 0));
    let (mut t, mut a) = both(&r.path(), id);
    a.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    t.read_exact(&mut one).unwrap();
    // And one connection still waiting for its other end.
    let waiting = connect_bg(&r.path(), End::Tenant, new_id());
    wait_until("the waiting end", || r.stats().waiting == 1);

    let t0 = Instant::now();
    r.relay.shutdown();
    r.thread.take().unwrap().join().unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(r.stats().active, 0);
    for s in [&mut t, &mut a] {
        s.set_read_timeout(Some(T)).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    let e = waiting.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("relay shutting down"), "{e}");
    // The socket file goes with the relay.
    let path = r.path();
    drop(r);
    assert!(!path.exists());
}

/// Starts an echoing tenant process for `id`; registers the pairing with
/// its pid.
fn echo_child(r: &Served, id: [u8; 16], kids: &mut Kids) -> u32 {
    let path = r.path();
    let c = child("echo-tenant", &[path.to_str().unwrap(), &hex(&id)])
        .spawn()
        .unwrap();
    let pid = c.id();
    kids.0.push(c);
    r.relay.register(Pairing {
        tenant_pid: pid,
        ..pairing(id, 0, 0)
    });
    pid
}

#[test]
fn a_tenant_process_echoes() {
    let r = Served::start("proc", quick());
    let id = new_id();
    let mut kids = Kids::default();
    echo_child(&r, id, &mut kids);
    let mut a = connect(&r.path(), End::Attacher, &id, T, &here()).unwrap();
    assert_eq!(report_of(&mut kids.0[0]), "ok");
    a.set_read_timeout(Some(T)).unwrap();
    for i in 0..50u32 {
        let msg = format!("message {i} to another process");
        a.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        a.read_exact(&mut got).unwrap();
        assert_eq!(got, msg.as_bytes());
    }
    a.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let st = kids.0[0].wait().unwrap();
    assert!(st.success(), "{st:?}");
    r.wait_idle();
}

#[test]
fn a_tenant_process_killed_mid_stream() {
    let r = Served::start("kill", quick());
    let id = new_id();
    let mut kids = Kids::default();
    echo_child(&r, id, &mut kids);
    let mut a = connect(&r.path(), End::Attacher, &id, T, &here()).unwrap();
    assert_eq!(report_of(&mut kids.0[0]), "ok");
    a.set_read_timeout(Some(T)).unwrap();
    // Streaming: a writer thread keeps sending while we read the echo.
    let mut w = a.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk = [0x5au8; 1024];
        while w.write_all(&chunk).is_ok() {}
    });
    let mut got = 0usize;
    let mut buf = [0u8; 8192];
    while got < 256 * 1024 {
        let n = a.read(&mut buf).unwrap();
        assert!(n > 0, "end-of-file before the kill");
        assert!(buf[..n].iter().all(|&b| b == 0x5a));
        got += n;
    }
    assert_eq!(r.stats().active, 1);
    kids.0[0].kill().unwrap(); // SIGKILL
    kids.0[0].wait().unwrap();
    let t0 = Instant::now();
    loop {
        match a.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => assert!(t0.elapsed() < T, "no end-of-file after the kill"),
            Err(e) if matches!(e.kind(), IoKind::ConnectionReset) => break,
            Err(e) => panic!("read after the kill: {e}"),
        }
    }
    writer.join().unwrap();
    r.wait_idle();
    let s = r.stats();
    assert_eq!((s.paired, s.active, s.closed_by_duration), (1, 0, 0));
}
