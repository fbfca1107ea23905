//! The relay with real sockets and threads inside one process (both ends
//! are this process, so the pairing's two pids are ours). The multi-process
//! and timing cases are in `tests/attach_relay.rs`.

use super::*;
use crate::ErrorKind;
use std::io::{Read, Write};
use std::thread;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn relay_is_send_and_sync() {
    assert_send_sync::<Relay>();
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: Mutex<u64> = Mutex::new(0);
        let n = {
            let mut n = lock(&N);
            *n += 1;
            *n
        };
        let p = std::env::temp_dir().join(format!("mtipc-relay-ut-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        Scratch(p)
    }
    fn sock(&self) -> PathBuf {
        self.0.join("relay.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fast() -> Options {
    Options {
        pairing_ttl: Duration::from_millis(400),
        hello_timeout: Duration::from_millis(400),
        linger: Duration::from_millis(400),
        ..Options::default()
    }
}

/// A relay running on a thread; shut down and joined on drop.
struct Running {
    relay: Arc<Relay>,
    thread: Option<thread::JoinHandle<Result<()>>>,
    _dir: Scratch,
}

impl Running {
    fn start(opts: Options) -> Running {
        let dir = Scratch::new();
        let relay = Arc::new(Relay::bind_with(&dir.sock(), crate::sys::euid(), opts).unwrap());
        let r = Arc::clone(&relay);
        let thread = Some(thread::spawn(move || r.run()));
        Running {
            relay,
            thread,
            _dir: dir,
        }
    }
    fn path(&self) -> &Path {
        self.relay.path()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.relay.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

fn pairing(id: u8) -> Pairing {
    let me = std::process::id();
    Pairing {
        id: [id; 16],
        tenant_pid: me,
        attacher_pid: me,
        start_ms: 0,
        duration_ms: 0,
    }
}

const T: Duration = Duration::from_secs(5);

fn both(path: &Path, id: [u8; 16]) -> (UnixStream, UnixStream) {
    let p = path.to_path_buf();
    let t =
        thread::spawn(move || connect(&p, End::Tenant, &id, T, &Listener::this_process().unwrap()));
    let a = connect(
        path,
        End::Attacher,
        &id,
        T,
        &Listener::this_process().unwrap(),
    )
    .unwrap();
    (t.join().unwrap().unwrap(), a)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pairs_and_relays_both_ways() {
    let r = Running::start(fast());
    r.relay.register(pairing(1));
    let (mut t, mut a) = both(r.path(), [1; 16]);
    t.write_all(b"to attacher").unwrap();
    let mut buf = [0u8; 11];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to attacher");
    a.write_all(b"to tenant").unwrap();
    let mut buf = [0u8; 9];
    t.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to tenant");
    let s = r.relay.stats();
    assert_eq!((s.accepted, s.paired, s.refused, s.active), (2, 1, 0, 1));
    drop(t);
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    wait_until("active 0", || r.relay.stats().active == 0);
}

#[test]
fn bytes_after_the_hello_are_not_lost() {
    // An end that sends its first bytes in the same write as its hello,
    // before any ok: they belong to the stream, not to the hello.
    let r = Running::start(fast());
    r.relay.register(pairing(2));
    let mut raw = UnixStream::connect(r.path()).unwrap();
    let mut first = hello_line(End::Tenant, &[2; 16]).into_bytes();
    first.extend_from_slice(b"early bytes");
    raw.write_all(&first).unwrap();
    let mut a = connect(
        r.path(),
        End::Attacher,
        &[2; 16],
        T,
        &Listener::this_process().unwrap(),
    )
    .unwrap();
    let mut ok = [0u8; 3];
    raw.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok\n");
    let mut buf = [0u8; 11];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"early bytes");
}

#[test]
fn hello_in_pieces() {
    let r = Running::start(fast());
    r.relay.register(pairing(3));
    let mut raw = UnixStream::connect(r.path()).unwrap();
    let hello = hello_line(End::Tenant, &[3; 16]);
    for chunk in hello.as_bytes().chunks(7) {
        raw.write_all(chunk).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let _a = connect(
        r.path(),
        End::Attacher,
        &[3; 16],
        T,
        &Listener::this_process().unwrap(),
    )
    .unwrap();
    let mut ok = [0u8; 3];
    raw.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok\n");
}

#[test]
fn silent_connection_is_refused_after_the_hello_timeout() {
    let r = Running::start(fast());
    let mut raw = UnixStream::connect(r.path()).unwrap();
    let t0 = Instant::now();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "err no hello within 400 ms\n");
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.relay.stats().refused, 1);
}

#[test]
fn third_connection_of_a_relayed_pairing_is_refused() {
    let r = Running::start(fast());
    r.relay.register(pairing(4));
    let (_t, _a) = both(r.path(), [4; 16]);
    let e = connect(
        r.path(),
        End::Tenant,
        &[4; 16],
        T,
        &Listener::this_process().unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(e.message().contains("already relayed"), "{e}");
}

#[test]
fn registering_twice_keeps_the_first() {
    let r = Running::start(fast());
    r.relay.register(pairing(5));
    let mut other = pairing(5);
    other.tenant_pid = 1;
    r.relay.register(other);
    let (_t, _a) = both(r.path(), [5; 16]);
}

#[test]
fn bind_replaces_a_stale_socket_but_nothing_else() {
    let dir = Scratch::new();
    let path = dir.sock();
    {
        let _old = std::os::unix::net::UnixListener::bind(&path).unwrap();
    }
    // A socket file nobody listens on: stale, replaced.
    let relay = Relay::bind(&path, 0).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(relay);
    assert!(!path.exists(), "drop removes the socket file");

    std::fs::write(&path, b"not a socket").unwrap();
    let e = Relay::bind(&path, 0).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

#[test]
fn run_twice_at_once_is_refused_and_run_after_shutdown_returns() {
    let r = Running::start(fast());
    wait_until("running", || lock(&r.relay.shared.flags).running);
    let e = r.relay.run().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    let dir = Scratch::new();
    let relay = Relay::bind(&dir.sock(), 0).unwrap();
    relay.shutdown();
    relay.run().unwrap();
}

#[test]
fn human_durations() {
    assert_eq!(human(Duration::from_secs(10)), "10 s");
    assert_eq!(human(Duration::from_millis(250)), "250 ms");
    assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    assert_eq!(human(Duration::ZERO), "0 ms");
}
