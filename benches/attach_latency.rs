//! Attach latency (issue 3): from calling `mtipc::attach::attach` to the
//! first echoed message back, with 1, 16 and 256 advertised idle tenants,
//! against a baseline measured in the same run: a direct TLS 1.3 connection
//! over a UNIX socket with the same handshake and one echo.
//!
//! Processes (all real, none in the measuring process):
//!
//! - `mtipcd`: the built daemon binary (`$MTIPCD`, else the release build
//!   `target/release/mtipcd`, which `make bench` builds first), one per
//!   configuration, on a fresh domain;
//! - tenant processes: this bench binary re-executed in the `tenants` role,
//!   each advertising up to 64 tenants (`t000`, `t001`, ...) whose handler
//!   echoes every message until the attacher closes. 256 tenants are 4
//!   processes of 64 advertisements;
//! - the baseline server: this binary in the `tls-server` role, a
//!   `UnixListener` and a `ServerKey`; each accepted connection runs
//!   `Conn::accept` (with the one-time key both sides derive from a seed
//!   given at start, so no byte is exchanged outside the TLS stream) and
//!   echoes on the accepting thread.
//!
//! The measuring process (the attacher) alternates sample by sample:
//!
//! - attach: `attach(domain, tN, ..)`, `send` 64 bytes, `recv` the echo;
//!   the targets go round every advertised tenant;
//! - baseline: `UnixStream::connect`, `Conn::connect` pinning the server's
//!   key with the one-time key (the PSK handshake), `send` 64 bytes, `recv`
//!   the echo.
//!
//! Before each sample every advertisement's `state` word is `IDLE` (its
//! waiter is back at the semaphore) and the bench sleeps 2 ms: the tenants
//! are idle when the clock starts. The connection is dropped after the echo.
//!
//! Processes woken per attach: before and after each attach sample (outside
//! the timed part, after the round's aftermath has settled: every `state`
//! back to `IDLE`), the bench reads `voluntary_ctxt_switches` of every
//! thread of every tenant process and of mtipcd (`/proc/<pid>/task/*/status`)
//! and counts the processes and the waiter threads (`mtipc-waiter-*`) whose
//! count went up. Waiters also wake on their own every `STOP_CHECK`
//! (100 ms) to look at their stop flag, so a control window of the same
//! length with no attach is counted too, right after.
//!
//! Two more baselines (issue 16), each in the same run:
//!
//! - in process, interleaved with the attaches: a plaintext UNIX-socket
//!   connect + the 64-byte echo to a server process (the `plain-server`
//!   role: reads 64 bytes, writes them back, closes), and the TLS handshake
//!   alone (`UnixStream::connect` + `Conn::connect` of the TLS baseline,
//!   timed apart from its echo);
//! - whole processes, at 1 tenant: `mtipc attach t000 --send <64 bytes>`
//!   (the release CLI next to mtipcd, or `$MTIPC_CLI`) against a minimal C
//!   client (`attach_latency/plain_client.c`, compiled by the bench with
//!   `cc`: connect, send, read the reply until the server closes, print it)
//!   of the plain server, and, when a `jattach` (`$JATTACH`, else on the
//!   `PATH`) and a JDK (`java`, `javac`) are there, `jattach PID
//!   properties` against an idle HotSpot JVM started by the bench. Each
//!   sample is a spawn and wait of the whole process, the methods taken in
//!   turn. `ATTACH_PROCESS_SAMPLES` (default 100; 0 skips this part).
//!
//! Run: `cargo bench --bench attach_latency` (`make bench`). Environment:
//! `ATTACH_SAMPLES` (default 200, per method at 1 and 16 tenants),
//! `ATTACH_SAMPLES_256` (default 100, at 256), `ATTACH_WARMUP` (default 10,
//! discarded), `ATTACH_TENANTS` (default `1,16,256`), `ATTACH_DIR` (where
//! the domains go; default `$XDG_RUNTIME_DIR`, else the temporary
//! directory, as the library's default domain), `ATTACH_PHASES=1` (adds a
//! breakdown of one attach into its steps, see `phases.rs`).

use mtipc::attach::{attach, list, AttachOptions};
use mtipc::attach::{fingerprint_hex, Conn};
use mtipc::internals::attach::files::{self, SyncFile, STATE_IDLE};
use mtipc::internals::attach::ServerKey;

use mtipc::Domain;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::{base_dir, env_usize, machine, where_line};

#[path = "attach_latency/phases.rs"]
mod phases;

/// Tenants per tenant process.
const PER_PROCESS: usize = 64;
/// The echoed message.
const MESSAGE: [u8; 64] = [0x5a; 64];
/// Limit for any one step of the bench's own waiting.
const PATIENCE: Duration = Duration::from_secs(30);

fn tenant_name(i: usize) -> String {
    format!("t{i:03}")
}

/// The one-time key of the baseline's `i`-th connection.
fn baseline_key(seed: &[u8; 32], i: u64) -> [u8; 32] {
    let mut b = seed.to_vec();
    b.extend_from_slice(&i.to_le_bytes());
    openssl::sha::sha256(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    assert_eq!(s.len(), 2 * N, "hex of {N} bytes expected: {s:?}");
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

// ---------------------------------------------------------------------------
// Child roles (this binary re-executed with MTIPC_BENCH_ROLE set)

/// Echoes every message until the peer closes.
fn echo(conn: Conn) {
    while let Ok(m) = conn.recv(None) {
        if conn.send(&m).is_err() {
            break;
        }
    }
}

/// Blocks until the parent closes our stdin (or dies).
fn wait_for_parent() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// `tenants` role: advertise `MTIPC_BENCH_COUNT` tenants from
/// `MTIPC_BENCH_FIRST` on, echo on every connection, say `ready`.
fn role_tenants() {
    let domain = PathBuf::from(std::env::var("MTIPC_BENCH_DOMAIN").expect("domain"));
    let first = env_usize("MTIPC_BENCH_FIRST", 0);
    let count = env_usize("MTIPC_BENCH_COUNT", 1);
    let dom = Domain::open(Some(&domain)).expect("tenant opens the domain");
    let handler: mtipc::attach::Handler = std::sync::Arc::new(echo);
    let adverts: Vec<_> = (first..first + count)
        .map(|i| {
            mtipc::attach::advertise(&dom, &tenant_name(i), &["echo"], handler.clone())
                .expect("advertise")
        })
        .collect();
    println!("ready");
    std::io::stdout().flush().unwrap();
    wait_for_parent();
    // Withdraw in parallel: each waits up to STOP_CHECK for its waiter.
    let threads: Vec<_> = adverts
        .into_iter()
        .map(|a| std::thread::spawn(move || a.withdraw()))
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// `plain-server` role: accepts connections one at a time on
/// `MTIPC_BENCH_SOCKET`, reads one 64-byte message from each, writes it
/// back and closes; says `ready` once listening.
fn role_plain_server() {
    let socket = PathBuf::from(std::env::var("MTIPC_BENCH_SOCKET").expect("socket"));
    let listener = UnixListener::bind(&socket).expect("bind the plain socket");
    println!("ready");
    std::io::stdout().flush().unwrap();
    std::thread::spawn(|| {
        wait_for_parent();
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut buf = [0u8; MESSAGE.len()];
        if s.read_exact(&mut buf).is_ok() {
            let _ = s.write_all(&buf);
        }
    }
}

/// `tls-server` role: the baseline's server. Prints the fingerprint, then
/// accepts connections one at a time, the `i`-th with one-time key
/// `baseline_key(seed, i)`, and echoes on each until the client closes.
fn role_tls_server() {
    let socket = PathBuf::from(std::env::var("MTIPC_BENCH_SOCKET").expect("socket"));
    let seed: [u8; 32] = unhex(&std::env::var("MTIPC_BENCH_SEED").expect("seed"));
    let key = ServerKey::generate().expect("server key");
    let listener = UnixListener::bind(&socket).expect("bind the baseline socket");
    println!("{}", fingerprint_hex(&key.fingerprint()));
    std::io::stdout().flush().unwrap();
    std::thread::spawn(|| {
        wait_for_parent();
        std::process::exit(0);
    });
    for (i, stream) in listener.incoming().enumerate() {
        let stream = stream.expect("accept");
        match Conn::accept(
            stream,
            &key,
            &baseline_key(&seed, i as u64),
            Duration::from_secs(10),
        ) {
            Ok(conn) => echo(conn),
            Err(e) => eprintln!("baseline server: connection {i}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes, seen from the parent

struct Proc {
    child: Child,
    /// Closing it tells a bench child to end.
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a child process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    fn role(role: &str, env: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.env("MTIPC_BENCH_ROLE", role);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::spawn(cmd)
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout
            .as_mut()
            .expect("stdout")
            .read_line(&mut s)
            .expect("read a child's line");
        assert!(!s.is_empty(), "child {} ended early", self.child.id());
        s.trim().to_string()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ends a bench child (stdin closed) or mtipcd (SIGTERM), waits for it.
    fn stop(mut self, sigterm: bool) {
        if sigterm {
            // SAFETY: a signal to our own child, by its pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        }
        drop(self.stdin.take());
        let until = Instant::now() + PATIENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

/// mtipcd, the tenant processes and their advertisements' sync files.
struct Domainset {
    path: PathBuf,
    domain: Domain,
    daemon: Option<Proc>,
    tenants: Vec<Proc>,
    syncs: Vec<SyncFile>,
}

/// The daemon program: `$MTIPCD`, else `mtipcd` beside this bench's
/// directory (`target/release/mtipcd`; `make bench` builds it first). The
/// programs live in the `mtipc-cli` crate, so cargo does not hand a bench of
/// the library their path.
fn mtipcd_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("MTIPCD") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    let p = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("mtipcd"))
        .expect("the bench lives in target/<profile>/deps");
    assert!(
        p.exists(),
        "{} is missing: build the programs first (cargo build --release --bins), or set MTIPCD",
        p.display()
    );
    p
}

impl Domainset {
    fn start(n: usize) -> Domainset {
        let path =
            base_dir("ATTACH_DIR").join(format!("mtipc-bench-attach-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let domain = Domain::open(Some(&path)).expect("create the bench domain");
        let mut cmd = Command::new(mtipcd_path());
        cmd.arg("--domain").arg(&path).arg("--log").arg("warn");
        let daemon = Proc::spawn(cmd);
        let mut tenants = Vec::new();
        for first in (0..n).step_by(PER_PROCESS) {
            tenants.push(Proc::role(
                "tenants",
                &[
                    ("MTIPC_BENCH_DOMAIN", path.display().to_string()),
                    ("MTIPC_BENCH_FIRST", first.to_string()),
                    ("MTIPC_BENCH_COUNT", PER_PROCESS.min(n - first).to_string()),
                ],
            ));
        }
        for t in &mut tenants {
            assert_eq!(t.line(), "ready");
        }
        let until = Instant::now() + PATIENCE;
        loop {
            let (l, _) = list(&domain).expect("list");
            if l.len() == n + 1 {
                break;
            }
            assert!(
                Instant::now() < until,
                "only {} of {} advertisements",
                l.len(),
                n + 1
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let (listed, _) = files::list(&path).expect("list");
        let syncs = listed
            .iter()
            .map(|l| SyncFile::open(&l.dir).expect("open a sync file"))
            .collect();
        let set = Domainset {
            path,
            domain,
            daemon: Some(daemon),
            tenants,
            syncs,
        };
        set.wait_idle();
        set
    }

    /// Waits until every advertisement's waiter is back at the semaphore.
    fn wait_idle(&self) {
        let until = Instant::now() + PATIENCE;
        for s in &self.syncs {
            while s.state_value() != STATE_IDLE {
                assert!(Instant::now() < until, "a waiter never became idle");
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Tenant processes and mtipcd.
    fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.tenants.iter().map(Proc::pid).collect();
        v.extend(self.daemon.as_ref().map(Proc::pid));
        v
    }

    fn stop(mut self) {
        for t in self.tenants.drain(..) {
            drop(t.stdin);
            let mut t = Proc {
                child: t.child,
                stdin: None,
                stdout: t.stdout,
            };
            let _ = t.child.wait();
            t.stdout.take();
        }
        if let Some(d) = self.daemon.take() {
            d.stop(true);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Context switches

/// Voluntary context switches of every thread of `pids`: (pid, tid) ->
/// (thread name, count).
type Switches = HashMap<(u32, u32), (String, u64)>;

fn switches(pids: &[u32]) -> Switches {
    let mut out = HashMap::new();
    for &pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            let mut name = String::new();
            let mut vol = 0;
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("Name:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                    vol = v.trim().parse().unwrap_or(0);
                }
            }
            out.insert((pid, tid), (name, vol));
        }
    }
    out
}

/// What woke between two snapshots.
#[derive(Clone, Copy, Default)]
struct Woken {
    /// Processes with at least one thread that switched voluntarily.
    processes: u32,
    /// Waiter threads (`mtipc-waiter-*`) that did.
    waiters: u32,
    /// Sum of the voluntary switches.
    switches: u64,
}

fn woken(before: &Switches, after: &Switches) -> Woken {
    let mut procs = std::collections::HashSet::new();
    let mut w = Woken::default();
    for (k, (name, n)) in after {
        let prev = before.get(k).map_or(0, |x| x.1);
        if *n > prev {
            procs.insert(k.0);
            w.switches += n - prev;
            // comm is cut to 15 bytes: "mtipc-waiter-t0".
            if name.starts_with("mtipc-waiter") {
                w.waiters += 1;
            }
        }
    }
    w.processes = procs.len() as u32;
    w
}

// ---------------------------------------------------------------------------
// Measurement

/// The baseline's client side and its server process.
struct Baseline {
    server: Proc,
    socket: PathBuf,
    fingerprint: [u8; 32],
    seed: [u8; 32],
    next: u64,
}

impl Baseline {
    fn start(dir: &Path) -> Baseline {
        let socket = dir.join("baseline.sock");
        let _ = std::fs::remove_file(&socket);
        let mut seed = [0u8; 32];
        openssl::rand::rand_bytes(&mut seed).unwrap();
        let mut server = Proc::role(
            "tls-server",
            &[
                ("MTIPC_BENCH_SOCKET", socket.display().to_string()),
                ("MTIPC_BENCH_SEED", hex(&seed)),
            ],
        );
        let fingerprint = unhex(&server.line());
        Baseline {
            server,
            socket,
            fingerprint,
            seed,
            next: 0,
        }
    }

    /// One sample: connect, handshake, one echo (ns), and the connect +
    /// handshake alone (ns).
    fn sample(&mut self) -> (u64, u64) {
        let key = baseline_key(&self.seed, self.next);
        self.next += 1;
        let t0 = Instant::now();
        let s = UnixStream::connect(&self.socket).expect("connect to the baseline server");
        let conn = Conn::connect(s, &self.fingerprint, &key, Duration::from_secs(10))
            .expect("baseline handshake");
        let hs = t0.elapsed().as_nanos() as u64;
        conn.send(&MESSAGE).expect("baseline send");
        let m = conn
            .recv(Some(Duration::from_secs(10)))
            .expect("baseline echo");
        let t = t0.elapsed().as_nanos() as u64;
        assert_eq!(m, MESSAGE);
        (t, hs)
    }

    fn stop(self) {
        self.server.stop(false);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The plaintext baseline: the `plain-server` process and its socket.
struct Plain {
    server: Proc,
    socket: PathBuf,
}

impl Plain {
    fn start(dir: &Path) -> Plain {
        let socket = dir.join("plain.sock");
        let _ = std::fs::remove_file(&socket);
        let mut server = Proc::role(
            "plain-server",
            &[("MTIPC_BENCH_SOCKET", socket.display().to_string())],
        );
        assert_eq!(server.line(), "ready");
        Plain { server, socket }
    }

    /// One sample: connect, send 64 bytes, read them back (ns).
    fn sample(&self) -> u64 {
        let t0 = Instant::now();
        let mut s = UnixStream::connect(&self.socket).expect("connect to the plain server");
        s.write_all(&MESSAGE).expect("plain send");
        let mut back = [0u8; MESSAGE.len()];
        s.read_exact(&mut back).expect("plain echo");
        let t = t0.elapsed().as_nanos() as u64;
        assert_eq!(back, MESSAGE);
        t
    }

    fn stop(self) {
        self.server.stop(false);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One attach sample (ns).
fn attach_sample(dom: &Domain, target: &str) -> u64 {
    let t0 = Instant::now();
    let conn = attach(dom, target, &AttachOptions::default()).expect("attach");
    conn.send(&MESSAGE).expect("send");
    let m = conn.recv(Some(Duration::from_secs(10))).expect("echo");
    let t = t0.elapsed().as_nanos() as u64;
    assert_eq!(m, MESSAGE);
    t
}

struct ConfigResult {
    tenants: usize,
    attach: Vec<u64>,
    baseline: Vec<u64>,
    /// The TLS baseline's connect + handshake, without its echo.
    handshake: Vec<u64>,
    /// Plaintext connect + 64-byte echo.
    plain: Vec<u64>,
    woken: Vec<Woken>,
    control: Vec<Woken>,
    processes: usize,
}

fn settle(set: &Domainset) {
    set.wait_idle();
    std::thread::sleep(Duration::from_millis(2));
}

fn run_config(n: usize, samples: usize, warmup: usize, scratch: &Path) -> ConfigResult {
    let set = Domainset::start(n);
    let mut base = Baseline::start(scratch);
    let plain = Plain::start(scratch);
    let pids = set.pids();
    let mut r = ConfigResult {
        tenants: n,
        attach: Vec::with_capacity(samples),
        baseline: Vec::with_capacity(samples),
        handshake: Vec::with_capacity(samples),
        plain: Vec::with_capacity(samples),
        woken: Vec::with_capacity(samples),
        control: Vec::with_capacity(samples),
        processes: pids.len(),
    };
    for i in 0..warmup + samples {
        let keep = i >= warmup;
        // Rotate which of the three goes first.
        for step in 0..3 {
            settle(&set);
            let method = (i + step) % 3;
            if method == 0 {
                let before = switches(&pids);
                let started = Instant::now();
                let t = attach_sample(&set.domain, &tenant_name(i % n));
                set.wait_idle();
                let window = started.elapsed();
                let after = switches(&pids);
                // Control: the same window with no attach.
                std::thread::sleep(Duration::from_millis(2));
                let c0 = switches(&pids);
                std::thread::sleep(window);
                let c1 = switches(&pids);
                if keep {
                    r.attach.push(t);
                    r.woken.push(woken(&before, &after));
                    r.control.push(woken(&c0, &c1));
                }
            } else if method == 1 {
                let (t, hs) = base.sample();
                if keep {
                    r.baseline.push(t);
                    r.handshake.push(hs);
                }
            } else {
                let t = plain.sample();
                if keep {
                    r.plain.push(t);
                }
            }
        }
    }
    base.stop();
    plain.stop();
    set.stop();
    r
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn median_of<T: Copy>(v: &[T], f: impl Fn(T) -> u64) -> u64 {
    let mut x: Vec<u64> = v.iter().map(|w| f(*w)).collect();
    x.sort_unstable();
    pct(&x, 0.5)
}

fn main() {
    match std::env::var("MTIPC_BENCH_ROLE").as_deref() {
        Ok("tenants") => return role_tenants(),
        Ok("tls-server") => return role_tls_server(),
        Ok("plain-server") => return role_plain_server(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => {}
    }
    // `cargo bench` passes `--bench`; run any other way (`cargo test
    // --all-targets` runs bench targets too) this is only a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("(not run by `cargo bench`: smoke run with few samples)");
    }
    let samples = env_usize("ATTACH_SAMPLES", if full { 200 } else { 5 }).max(1);
    let samples_256 = env_usize("ATTACH_SAMPLES_256", if full { 100 } else { 3 }).max(1);
    let warmup = env_usize("ATTACH_WARMUP", if full { 10 } else { 1 });
    let configs: Vec<usize> = std::env::var("ATTACH_TENANTS")
        .unwrap_or_else(|_| "1,16,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let scratch = std::env::temp_dir().join(format!("mtipc-bench-attach-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();

    println!("Attach latency: attach() -> first echoed message back (64 bytes), with N idle");
    println!("tenants advertised by separate processes (64 per process) and a real mtipcd;");
    println!("baseline in the same run, interleaved: TLS 1.3 over a UNIX socket to a server");
    println!("process, same channel code (Conn::accept / Conn::connect, pinned tenant key,");
    println!("one-time key), connect + handshake + one echo; `handshake` is its connect +");
    println!("handshake alone; `plain` a plaintext UNIX-socket connect + 64-byte echo to a");
    println!("server process.");
    println!(
        "Samples per method: {samples} ({samples_256} at 256 tenants) after {warmup} warm-up; \
         {}",
        machine()
    );
    println!("{}", where_line("ATTACH_DIR"));
    println!();
    println!(
        "{:>7} {:<9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "tenants", "method", "p50 µs", "p90 µs", "p99 µs", "min µs", "max µs"
    );

    let mut results = Vec::new();
    for &n in &configs {
        let s = if n >= 256 { samples_256 } else { samples };
        let mut r = run_config(n, s, warmup, &scratch);
        for (name, v) in [
            ("attach", &mut r.attach),
            ("baseline", &mut r.baseline),
            ("handshake", &mut r.handshake),
            ("plain", &mut r.plain),
        ] {
            v.sort_unstable();
            println!(
                "{:>7} {:<9} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
                n,
                name,
                us(pct(v, 0.5)),
                us(pct(v, 0.9)),
                us(pct(v, 0.99)),
                us(v[0]),
                us(v[v.len() - 1])
            );
        }
        println!(
            "{:>7} {:<9} median per attach: {} of {} processes woke ({} waiter threads of {}, \
             {} voluntary switches); control window without attach: {} processes, {} waiters, \
             {} switches",
            n,
            "woken",
            median_of(&r.woken, |w| w.processes as u64),
            r.processes,
            median_of(&r.woken, |w| w.waiters as u64),
            n + 1,
            median_of(&r.woken, |w| w.switches),
            median_of(&r.control, |w| w.processes as u64),
            median_of(&r.control, |w| w.waiters as u64),
            median_of(&r.control, |w| w.switches),
        );
        results.push(r);
    }
    println!();
    let p50 = |v: &[u64]| us(pct(v, 0.5));
    for r in &results {
        println!(
            "{:>3} tenants: attach p50 / baseline p50 (same run) = {:.2}; the round posts {} \
             (tenants + mtipcd)",
            r.tenants,
            p50(&r.attach) / p50(&r.baseline),
            r.tenants + 1
        );
    }
    let one = results.iter().find(|r| r.tenants == 1);
    let many = results.iter().find(|r| r.tenants == 256);
    if let Some(one) = one {
        let ratio = p50(&one.attach) / p50(&one.baseline);
        println!(
            "target (issue 3): p50 at 1 tenant <= 2x TLS baseline p50: {ratio:.2} ({})",
            if ratio <= 2.0 { "met" } else { "NOT met" }
        );
        let ratio = p50(&one.attach) / p50(&one.plain);
        println!(
            "target (issue 16): p50 at 1 tenant <= 4x plaintext connect + echo p50: {ratio:.2} ({})",
            if ratio <= 4.0 { "met" } else { "NOT met" }
        );
        let hs = p50(&one.handshake);
        println!(
            "target (issue 16): TLS handshake alone p50 <= 300 µs: {hs:.0} µs ({})",
            if hs <= 300.0 { "met" } else { "NOT met" }
        );
    }
    if let (Some(one), Some(many)) = (one, many) {
        let ratio = p50(&many.attach) / p50(&one.attach);
        println!(
            "target 2: p50 at 256 tenants <= 4x p50 at 1 tenant: {ratio:.2} ({})",
            if ratio <= 4.0 { "met" } else { "NOT met" }
        );
    }
    let process_samples = env_usize("ATTACH_PROCESS_SAMPLES", if full { 100 } else { 3 });
    if process_samples > 0 {
        process_bench(process_samples, warmup, &scratch);
    }
    if std::env::var_os("ATTACH_PHASES").is_some_and(|v| v != "0") {
        handshake_pieces();
        for &n in &configs {
            let s = if n >= 256 { samples_256 } else { samples };
            phase_breakdown(n, s, warmup);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `ATTACH_PHASES=1`: the replica of attach (`phases.rs`), interleaved with
/// the real one so that its total can be checked against it.
fn phase_breakdown(n: usize, samples: usize, warmup: usize) {
    let set = Domainset::start(n);
    let mut real = Vec::new();
    let mut marks: Vec<Vec<u64>> = Vec::new();
    for i in 0..warmup + samples {
        settle(&set);
        let t = attach_sample(&set.domain, &tenant_name(i % n));
        settle(&set);
        let m = phases::one(&set.domain, &tenant_name((i + 1) % n), &MESSAGE);
        if i >= warmup {
            real.push(t);
            marks.push(m);
        }
    }
    let costs = phases::isolated(&set.domain);
    set.stop();
    println!();
    println!("Phases of one attach + echo, {n} tenants ({samples} replica samples):");
    println!(
        "{:<30} {:>9} {:>9} {:>9}",
        "step", "p50 µs", "p90 µs", "share"
    );
    let mut total: Vec<u64> = marks.iter().map(|m| m[m.len() - 1]).collect();
    total.sort_unstable();
    let mut sum_p50 = 0;
    let mut durs: Vec<Vec<u64>> = Vec::new();
    for k in 0..phases::STEPS.len() {
        let mut d: Vec<u64> = marks
            .iter()
            .map(|m| m[k] - if k == 0 { 0 } else { m[k - 1] })
            .collect();
        d.sort_unstable();
        sum_p50 += pct(&d, 0.5);
        durs.push(d);
    }
    for (k, d) in durs.iter().enumerate() {
        println!(
            "{:<30} {:>9.0} {:>9.0} {:>8.0}%",
            phases::STEPS[k],
            us(pct(d, 0.5)),
            us(pct(d, 0.9)),
            100.0 * pct(d, 0.5) as f64 / sum_p50 as f64
        );
    }
    real.sort_unstable();
    println!(
        "{:<30} {:>9.0} {:>9.0}   (real attach + echo, same run: p50 {:.0} µs, p90 {:.0} µs)",
        "replica total",
        us(pct(&total, 0.5)),
        us(pct(&total, 0.9)),
        us(pct(&real, 0.5)),
        us(pct(&real, 0.9))
    );
    println!("Per-round work that grows with the advertisements, timed alone (idle domain):");
    for (what, ns) in costs {
        println!("  {what:<58} {:>8.0} µs", us(ns));
    }
}

// ---------------------------------------------------------------------------
// Whole processes (issue 16)

/// A program beside mtipcd (`target/release/NAME`), or `$var`.
fn program_path(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return p.into();
    }
    mtipcd_path().with_file_name(name)
}

/// `name` on the `PATH`, if there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Compiles the minimal C client into `dir`; `Err` says why not.
fn build_c_client(dir: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/attach_latency/plain_client.c");
    let out = dir.join("plain_client");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !st.success() {
        return Err(format!("{cc} failed on {}", src.display()));
    }
    Ok(out)
}

/// An idle HotSpot JVM and the jattach to attach to it, when both can be
/// had; `Err` says why not.
struct Jvm {
    java: Child,
    jattach: PathBuf,
}

impl Jvm {
    fn start(dir: &Path) -> Result<Jvm, String> {
        let jattach = std::env::var_os("JATTACH")
            .map(PathBuf::from)
            .or_else(|| on_path("jattach"))
            .ok_or("no jattach ($JATTACH or on the PATH)")?;
        let javac = on_path("javac").ok_or("no javac on the PATH")?;
        let java = on_path("java").ok_or("no java on the PATH")?;
        std::fs::write(
            dir.join("Idle.java"),
            "public class Idle { public static void main(String[] a) throws Exception {\n\
             System.out.println(\"ready\"); System.out.flush(); Thread.sleep(Long.MAX_VALUE); } }\n",
        )
        .map_err(|e| e.to_string())?;
        let st = Command::new(&javac)
            .arg("Idle.java")
            .current_dir(dir)
            .status()
            .map_err(|e| format!("javac: {e}"))?;
        if !st.success() {
            return Err("javac failed".into());
        }
        let mut child = Command::new(&java)
            .args(["-cp", "."])
            .arg("Idle")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("java: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the JVM did not start".into());
        }
        Ok(Jvm {
            java: child,
            jattach,
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.jattach);
        c.arg(self.java.id().to_string()).arg("properties");
        c
    }

    fn stop(mut self) {
        let _ = self.java.kill();
        let _ = self.java.wait();
    }
}

/// Makes one sample's command and the text its output must contain.
type MakeCommand = Box<dyn Fn() -> (Command, &'static str)>;

/// Runs `cmd` to its end (ns); its stdout must contain `expect`.
fn run_process(mut cmd: Command, expect: &str) -> u64 {
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    let t0 = Instant::now();
    let out = cmd.output().expect("run a client process");
    let t = t0.elapsed().as_nanos() as u64;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expect),
        "{cmd:?}: {} {stdout:?}",
        out.status
    );
    t
}

/// Whole processes at 1 tenant: the CLI's attach against the minimal C
/// client (and jattach when it can run), in turn.
fn process_bench(samples: usize, warmup: usize, scratch: &Path) {
    println!();
    println!(
        "Whole processes (spawn to exit), 1 tenant, {samples} samples per method after {warmup} warm-up:"
    );
    let c_client = match build_c_client(scratch) {
        Ok(p) => p,
        Err(e) => {
            println!("  not measured: the C client cannot be built ({e})");
            return;
        }
    };
    let cli = program_path("MTIPC_CLI", "mtipc");
    let set = Domainset::start(1);
    let plain = Plain::start(scratch);
    let jvm = match Jvm::start(scratch) {
        Ok(j) => Some(j),
        Err(e) => {
            println!("  jattach: not measured ({e})");
            None
        }
    };
    let text = String::from_utf8(MESSAGE.to_vec()).expect("ASCII message");
    let mut methods: Vec<(&str, MakeCommand)> = Vec::new();
    {
        let (cli, path, text) = (cli.clone(), set.path.clone(), text.clone());
        methods.push((
            "mtipc attach",
            Box::new(move || {
                let mut c = Command::new(&cli);
                c.arg("--domain")
                    .arg(&path)
                    .args(["attach", "t000", "--send"])
                    .arg(&text);
                (c, "ZZZZ")
            }),
        ));
    }
    {
        let (client, socket, text) = (c_client.clone(), plain.socket.clone(), text.clone());
        methods.push((
            "C client",
            Box::new(move || {
                let mut c = Command::new(&client);
                c.arg(&socket).arg(&text);
                (c, "ZZZZ")
            }),
        ));
    }
    if let Some(j) = &jvm {
        let cmd = j.command();
        let (prog, args): (PathBuf, Vec<std::ffi::OsString>) = (
            cmd.get_program().into(),
            cmd.get_args().map(|a| a.to_os_string()).collect(),
        );
        methods.push((
            "jattach",
            Box::new(move || {
                let mut c = Command::new(&prog);
                c.args(&args);
                (c, "java.vm.version")
            }),
        ));
    }
    let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(samples); methods.len()];
    for i in 0..warmup.max(1) + samples {
        for step in 0..methods.len() {
            let k = (i + step) % methods.len();
            settle(&set);
            let (cmd, expect) = (methods[k].1)();
            let t = run_process(cmd, expect);
            if i >= warmup.max(1) {
                times[k].push(t);
            }
        }
    }
    if let Some(j) = jvm {
        j.stop();
    }
    plain.stop();
    set.stop();
    println!(
        "  {:<14} {:>9} {:>9} {:>9} {:>9}",
        "method", "p50 µs", "p90 µs", "min µs", "max µs"
    );
    for (k, (name, _)) in methods.iter().enumerate() {
        let v = &mut times[k];
        v.sort_unstable();
        println!(
            "  {:<14} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            name,
            us(pct(v, 0.5)),
            us(pct(v, 0.9)),
            us(v[0]),
            us(v[v.len() - 1])
        );
    }
    let p50 = |k: usize| us(pct(&times[k], 0.5));
    let ratio = p50(0) / p50(1);
    println!(
        "target (issue 16): mtipc attach p50 <= 2x the minimal C client p50: {ratio:.2} ({})",
        if ratio <= 2.0 { "met" } else { "NOT met" }
    );
    if times.len() > 2 {
        let ratio = p50(0) / p50(2);
        println!(
            "target (issue 16): mtipc attach p50 <= 1x jattach p50: {ratio:.2} ({})",
            if ratio <= 1.0 { "met" } else { "NOT met" }
        );
    }
}

/// CPU time of this process so far (user + system), ns.
fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

/// `ATTACH_PHASES=1`: the handshake's pieces, timed alone in this process:
/// its X25519 operations and the PSK derivation, and whole handshakes with
/// both ends as threads of this process over a socketpair (wall time, and
/// the CPU time of both ends per handshake).
fn handshake_pieces() {
    use mtipc::internals::attach::derive_psk;
    use openssl::derive::Deriver;
    use openssl::pkey::PKey;
    const N: usize = 200;
    let p50 = |mut v: Vec<u64>| {
        v.sort_unstable();
        us(pct(&v, 0.5))
    };
    let time = |f: &mut dyn FnMut()| -> Vec<u64> {
        (0..N)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_nanos() as u64
            })
            .collect()
    };
    let key = ServerKey::generate().expect("key");
    let peer = PKey::generate_x25519().expect("x25519");
    let peer_pub =
        PKey::public_key_from_raw_bytes(&peer.raw_public_key().unwrap(), openssl::pkey::Id::X25519)
            .unwrap();
    let keygen = time(&mut || {
        ServerKey::generate().expect("key");
    });
    let derive = time(&mut || {
        let mut d = Deriver::new(&peer).unwrap();
        d.set_peer(&peer_pub).unwrap();
        let mut out = [0u8; 32];
        d.derive(&mut out).unwrap();
    });
    let hkdf = time(&mut || {
        derive_psk(&[1; 32], &[2; 32], &[3; 32], &[4; 32]).expect("psk");
    });
    let fp = key.fingerprint();
    let otk = [9u8; 32];
    let cpu0 = cpu_ns();
    let hs = time(&mut || {
        let (a, b) = UnixStream::pair().unwrap();
        let k = key.clone();
        let server = std::thread::spawn(move || Conn::accept(a, &k, &otk, PATIENCE));
        let c = Conn::connect(b, &fp, &otk, PATIENCE).expect("handshake");
        let s = server.join().unwrap().expect("accept");
        drop((c, s));
    });
    let cpu = (cpu_ns() - cpu0) / N as u64;
    println!();
    println!("The handshake's pieces, timed alone ({N} each), p50 µs:");
    println!(
        "  X25519 key generation (ServerKey::generate)   {:>8.1}",
        p50(keygen)
    );
    println!(
        "  X25519 shared secret                          {:>8.1}",
        p50(derive)
    );
    println!(
        "  PSK derivation (HKDF-SHA256, derive_psk)      {:>8.1}",
        p50(hkdf)
    );
    println!(
        "  whole handshake, both ends threads of this process over a socketpair: \
         {:.0} µs wall; {:.0} µs of CPU (both ends, thread start included)",
        p50(hs),
        us(cpu)
    );
}
