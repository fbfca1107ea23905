//! Request → response round trip between two processes through a session
//! set (issue 4), against a UNIX socketpair round trip of the same payload
//! between the same two processes, measured in the same run.
//!
//! Processes: the measuring process (the connection manager) and a worker
//! process, this bench binary re-executed in the `rtt-worker` role. The
//! worker process has two threads, each asleep until it has work:
//!
//! - the session worker: `Worker::next`, then `respond` with the request's
//!   bytes (copied, with two timestamps written in);
//! - the socket echo: `read(2)` on its end of a `socketpair(AF_UNIX,
//!   SOCK_STREAM)` until the whole payload is there, then `write(2)` of the
//!   same bytes (with the same two timestamps).
//!
//! The manager alternates sample by sample (each cycle starts with the
//! other method) and sleeps `SESSION_GAP_US` (default 500 µs) before each
//! sample, so that the serving thread is asleep when the request comes:
//!
//! - session: `submit` (claim a slot, copy in, queue under the session's
//!   entry lock, ring the bound worker), `Ticket::wait`, compare the
//!   response with the request, drop it (the slot is freed);
//! - socketpair: `write`, `read` until the whole payload is back, compare.
//!
//! The payload's first 32 bytes carry its length and three
//! `CLOCK_MONOTONIC` stamps (sent, received by the worker, response
//! started), so each round trip is also split into "to the worker", "in
//! the worker" and "back to the manager".
//!
//! Modes: *blocking* (`set_spin(0)` in both processes: every wait sleeps on
//! its futex at once; the target, median ratio ≤ 0.5) and *spin-then-block*
//! (`set_spin(SESSION_SPIN)`, default 20,000, in both: reported). Each mode
//! has its own session set and worker process. Payloads: 64 bytes and
//! 4 KiB.
//!
//! Run: `cargo bench --bench session_rtt` (`make bench`). Environment:
//! `SESSION_SAMPLES` (default 2000 per method, payload and mode),
//! `SESSION_WARMUP` (default 100, discarded), `SESSION_GAP_US` (500),
//! `SESSION_SPIN` (20000), `SESSION_PAYLOADS` (default `64,4096`; at least
//! 32), `SESSION_MODES` (default `blocking,spin`), `SESSION_BENCH_DIR` (where the domain goes; default
//! `$XDG_RUNTIME_DIR`, else the temporary directory).

use mtipc::internals::sync::Futex;
use mtipc::session::{SessionId, Sessions, SessionsConfig};
use mtipc::Domain;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;
use common::*;

/// The fd of the worker's end of the socketpair in the worker process.
const CHILD_SOCK_FD: i32 = 3;
/// Bytes of the payload used by the bench itself: length u32, 0 u32,
/// sent u64, received u64, response started u64.
const HEAD: usize = 32;
const MAX_PAYLOAD: usize = 4096;

fn put(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

// ---------------------------------------------------------------------------
// The worker process

fn role_worker() {
    let path = PathBuf::from(std::env::var("MTIPC_BENCH_DOMAIN").expect("domain"));
    let name = std::env::var("MTIPC_BENCH_NAME").expect("name");
    let spin: u32 = std::env::var("MTIPC_BENCH_SPIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let dom = Domain::open(Some(&path)).expect("worker opens the domain");
    let s = Sessions::open(&dom, &name).expect("worker opens the session set");
    s.set_spin(spin);
    let mut w = s.register_worker(0).expect("register");
    // SAFETY: the parent put our end of the socketpair at this fd; nothing
    // else in this process owns it.
    let sock = unsafe { UnixStream::from_raw_fd(CHILD_SOCK_FD) };
    std::thread::spawn(move || socket_echo(sock));
    let floor = Floor::open(&path.join(FLOOR_FILE));
    std::thread::spawn(move || floor.serve());
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut resp = Vec::with_capacity(MAX_PAYLOAD);
    loop {
        let Some(r) = w.next(None).expect("next") else {
            continue;
        };
        let t_recv = now_ns();
        resp.clear();
        resp.extend_from_slice(r.bytes());
        put(&mut resp, 16, t_recv);
        put(&mut resp, 24, now_ns());
        r.respond(&resp).expect("respond");
    }
}

fn socket_echo(mut sock: UnixStream) {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        let mut got = 0;
        let mut t_recv = 0;
        let mut want = usize::MAX;
        while got < want {
            let n = match sock.read(&mut buf[got..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if got == 0 {
                t_recv = now_ns();
            }
            got += n;
            if got >= 4 {
                want = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            }
        }
        put(&mut buf, 16, t_recv);
        put(&mut buf, 24, now_ns());
        if sock.write_all(&buf[..want]).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The floor: a bare futex ping-pong

/// File (in the bench domain) shared by the manager and the floor thread.
const FLOOR_FILE: &str = "rtt-floor";
const FLOOR_REQ: usize = 64;
const FLOOR_RESP: usize = FLOOR_REQ + MAX_PAYLOAD;
const FLOOR_LEN: usize = FLOOR_RESP + MAX_PAYLOAD;

/// The least any futex-based blocking round trip can do: two words in a
/// shared file mapping (shared futexes, as the library's), a request buffer
/// and a response buffer. The manager copies the payload in, bumps the
/// request word and wakes it, then sleeps on the response word; the floor
/// thread of the worker process sleeps on the request word, copies the
/// payload to the response buffer, bumps the response word and wakes it.
/// Same syscalls per round trip as the session (two `FUTEX_WAKE`, two
/// `FUTEX_WAIT`), none of its bookkeeping.
struct Floor {
    map: memmap2::MmapRaw,
}

// SAFETY: the mapping is only touched through atomics (the two words) and
// through raw copies of buffers whose hand-over those words order.
unsafe impl Send for Floor {}

impl Floor {
    fn open(path: &Path) -> Floor {
        Floor {
            map: map_file(path, FLOOR_LEN as u64),
        }
    }

    /// The futex word at byte `at` (the shim's `Futex`: a
    /// `#[repr(transparent)]` `AtomicU32` with the bare `FUTEX_WAIT` /
    /// `FUTEX_WAKE` calls, not private, as the library's words).
    fn word(&self, at: usize) -> &Futex {
        // SAFETY: 4-aligned offset inside the mapping, which lives as long
        // as `self`; the word is only used atomically.
        unsafe { &*(self.map.as_mut_ptr().add(at) as *const Futex) }
    }

    fn buf(&self, at: usize, n: usize) -> *mut u8 {
        assert!(at + n <= FLOOR_LEN);
        // SAFETY: in bounds (checked above).
        unsafe { self.map.as_mut_ptr().add(at) }
    }

    fn wait(w: &Futex, old: u32) {
        w.wait(old, None);
    }

    fn wake(w: &Futex) {
        w.wake(1);
    }

    /// The worker side, forever.
    fn serve(self) {
        use mtipc::internals::sync::Ordering::{Acquire, Release};
        let (req, resp) = (self.word(0), self.word(4));
        let mut seen = req.load(Acquire);
        loop {
            let v = req.load(Acquire);
            if v == seen {
                Self::wait(req, v);
                continue;
            }
            seen = v;
            let t_recv = now_ns();
            // SAFETY: the request buffer is the manager's until it bumps the
            // request word (acquired above); the response buffer is ours
            // until we bump the response word.
            unsafe {
                let n = u32::from_le_bytes(*(self.buf(FLOOR_REQ, 4) as *const [u8; 4])) as usize;
                let n = n.min(MAX_PAYLOAD);
                std::ptr::copy_nonoverlapping(self.buf(FLOOR_REQ, n), self.buf(FLOOR_RESP, n), n);
                let out = std::slice::from_raw_parts_mut(self.buf(FLOOR_RESP, n), n);
                put(out, 16, t_recv);
                put(out, 24, now_ns());
            }
            resp.atomic().store(v, Release);
            Self::wake(resp);
        }
    }

    /// One round trip from the manager's side.
    fn sample(&self, req: &mut [u8], seq: u32) -> Sample {
        use mtipc::internals::sync::Ordering::{Acquire, Release};
        let (rw, sw) = (self.word(0), self.word(4));
        let sent = now_ns();
        put(req, 8, sent);
        // SAFETY: the request buffer is ours (the last response was seen).
        unsafe {
            std::ptr::copy_nonoverlapping(req.as_ptr(), self.buf(FLOOR_REQ, req.len()), req.len());
        }
        rw.atomic().store(seq, Release);
        Self::wake(rw);
        loop {
            let v = sw.load(Acquire);
            if v == seq {
                break;
            }
            Self::wait(sw, v);
        }
        let back = now_ns();
        let mut r = vec![0u8; req.len()];
        // SAFETY: the worker finished with the response buffer (acquired).
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf(FLOOR_RESP, r.len()), r.as_mut_ptr(), r.len());
        }
        assert!(
            r[HEAD..] == req[HEAD..] && r[..16] == req[..16],
            "wrong floor echo"
        );
        let end = now_ns();
        split(sent, &r, back, end)
    }
}

// ---------------------------------------------------------------------------
// The manager

/// `SESSION_PIN=M,W`: the manager on CPU M, the worker process on CPU W
/// (a diagnostic; default: the scheduler's choice).
fn pinned() -> Option<(usize, usize)> {
    let v = std::env::var("SESSION_PIN").ok()?;
    let (m, w) = v.split_once(',')?;
    Some((m.trim().parse().ok()?, w.trim().parse().ok()?))
}

/// Pins the calling thread (and what it forks) to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it;
    // sched_setaffinity reads it. Async-signal-safe (used after fork).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl WorkerProc {
    fn spawn(domain: &Path, name: &str, spin: u32, sock: &UnixStream) -> WorkerProc {
        let fd = sock.as_raw_fd();
        let pin = pinned().map(|(_, w)| w);
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.env("MTIPC_BENCH_ROLE", "rtt-worker")
            .env("MTIPC_BENCH_DOMAIN", domain)
            .env("MTIPC_BENCH_NAME", name)
            .env("MTIPC_BENCH_SPIN", spin.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec only dup2 or fcntl, which are
        // async-signal-safe; fd 3 is left without FD_CLOEXEC.
        unsafe {
            cmd.pre_exec(move || {
                let rc = if fd == CHILD_SOCK_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, CHILD_SOCK_FD)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(cpu) = pin {
                    pin_to(cpu);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn the worker process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "worker did not start");
        let stdin = child.stdin.take();
        WorkerProc { child, stdin }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        drop(self.stdin.take()); // the worker exits on EOF
        if self.child.wait_timeout_ms(2000).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

trait WaitTimeout {
    fn wait_timeout_ms(&mut self, ms: u64) -> Option<()>;
}

impl WaitTimeout for Child {
    fn wait_timeout_ms(&mut self, ms: u64) -> Option<()> {
        for _ in 0..ms / 10 {
            if let Ok(Some(_)) = self.try_wait() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Session,
    Socket,
    Floor,
}

/// One sample: total round trip, and its three parts, in µs.
#[derive(Clone, Copy, Default)]
struct Sample {
    rtt: f64,
    to: f64,
    inside: f64,
    back: f64,
}

#[derive(Default)]
struct Series {
    samples: Vec<Sample>,
}

impl Series {
    fn col(&self, f: impl Fn(&Sample) -> f64) -> Vec<f64> {
        sorted(&self.samples.iter().map(f).collect::<Vec<_>>())
    }
}

fn payload(n: usize, seq: u64) -> Vec<u8> {
    let mut p: Vec<u8> = (0..n).map(|i| (i as u64 ^ seq) as u8).collect();
    p[..4].copy_from_slice(&(n as u32).to_le_bytes());
    p[4..HEAD].fill(0);
    p
}

fn split(sent: u64, resp: &[u8], back: u64, end: u64) -> Sample {
    let recv = get(resp, 16);
    let started = get(resp, 24);
    let us = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3;
    Sample {
        rtt: us(sent, end),
        to: us(sent, recv),
        inside: us(recv, started),
        back: us(started, back),
    }
}

fn session_sample(s: &Sessions, id: SessionId, req: &mut [u8]) -> Sample {
    let sent = now_ns();
    put(req, 8, sent);
    let mut t = s.submit(id, 0, req).expect("submit");
    let r = t.wait(Some(Duration::from_secs(10))).expect("response");
    let back = now_ns();
    assert!(
        r.len() == req.len() && r[HEAD..] == req[HEAD..] && r[..16] == req[..16],
        "wrong response"
    );
    let (r16, r24) = (get(&r, 16), get(&r, 24));
    drop(r);
    drop(t);
    let end = now_ns();
    let mut resp = [0u8; 32];
    put(&mut resp, 16, r16);
    put(&mut resp, 24, r24);
    split(sent, &resp, back, end)
}

fn socket_sample(sock: &mut UnixStream, req: &mut [u8], buf: &mut [u8]) -> Sample {
    let sent = now_ns();
    put(req, 8, sent);
    sock.write_all(req).expect("write");
    let mut got = 0;
    let mut back = 0;
    while got < req.len() {
        let n = sock.read(&mut buf[got..req.len()]).expect("read");
        assert!(n > 0, "the worker process closed its socket");
        if got == 0 {
            back = now_ns();
        }
        got += n;
    }
    let r = &buf[..req.len()];
    assert!(
        r[HEAD..] == req[HEAD..] && r[..16] == req[..16],
        "wrong echo"
    );
    let end = now_ns();
    split(sent, r, back, end)
}

struct Result {
    mode: &'static str,
    payload: usize,
    session: Series,
    socket: Series,
    floor: Series,
}

/// The session set of the bench: the defaults (`SessionsConfig::default`:
/// 256 request slots, 64 worker records, 2 groups), with `max_message`
/// the largest payload.
fn session_config() -> SessionsConfig {
    SessionsConfig {
        max_message: MAX_PAYLOAD as u32,
        ..SessionsConfig::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn run_mode(
    domain: &Domain,
    path: &Path,
    mode: &'static str,
    spin: u32,
    payloads: &[usize],
    samples: usize,
    warmup: usize,
    gap: Duration,
) -> Vec<Result> {
    let name = format!("rtt-{mode}");
    let s = Sessions::create(domain, &name, session_config()).expect("create the session set");
    s.set_spin(spin);
    let (mut mine, theirs) = UnixStream::pair().expect("socketpair");
    let floor = Floor::open(&path.join(FLOOR_FILE));
    let worker = WorkerProc::spawn(path, &name, spin, &theirs);
    drop(theirs);
    let id = s
        .table()
        .create_session("bench", 0, b"")
        .expect("create a session");
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let methods = [Method::Session, Method::Socket, Method::Floor];
    let mut out = Vec::new();
    for &n in payloads {
        let mut res = Result {
            mode,
            payload: n,
            session: Series::default(),
            socket: Series::default(),
            floor: Series::default(),
        };
        let total = (warmup + samples) * 3;
        for i in 0..total {
            // Take turns; each cycle starts with the next method.
            let m = methods[(i + i / 3) % 3];
            let mut req = payload(n, i as u64);
            std::thread::sleep(gap);
            let smp = match m {
                Method::Session => session_sample(&s, id, &mut req),
                Method::Socket => socket_sample(&mut mine, &mut req, &mut buf),
                Method::Floor => floor.sample(&mut req, i as u32 + 1),
            };
            if i >= warmup * 3 {
                match m {
                    Method::Session => res.session.samples.push(smp),
                    Method::Socket => res.socket.samples.push(smp),
                    Method::Floor => res.floor.samples.push(smp),
                }
            }
        }
        out.push(res);
    }
    drop(mine);
    drop(worker);
    out
}

fn main() {
    if std::env::var("MTIPC_BENCH_ROLE").as_deref() == Ok("rtt-worker") {
        return role_worker();
    }
    // `cargo bench` passes `--bench`; run any other way this is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("(not run by `cargo bench`: smoke run with few samples)");
    }
    let samples = env_usize("SESSION_SAMPLES", if full { 2000 } else { 20 }).max(1);
    let warmup = env_usize("SESSION_WARMUP", if full { 100 } else { 5 });
    let gap = Duration::from_micros(env_usize("SESSION_GAP_US", 500) as u64);
    let spin = env_usize("SESSION_SPIN", 20_000) as u32;
    let payloads: Vec<usize> = std::env::var("SESSION_PAYLOADS")
        .unwrap_or_else(|_| "64,4096".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(|n: usize| n.clamp(HEAD, MAX_PAYLOAD))
        .collect();
    let path =
        base_dir("SESSION_BENCH_DIR").join(format!("mtipc-bench-rtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let domain = Domain::open(Some(&path)).expect("create the bench domain");
    if let Some((m, w)) = pinned() {
        pin_to(m);
        println!("(pinned: manager on CPU {m}, worker process on CPU {w})");
    }

    println!("Session round trip: submit -> worker process -> response, against a UNIX");
    println!("socketpair round trip of the same payload between the same two processes,");
    println!(
        "interleaved sample by sample, {} µs idle before each sample.",
        gap.as_micros()
    );
    println!(
        "Samples per method: {samples} after {warmup} warm-up; {}",
        machine()
    );
    let c = session_config();
    println!(
        "Session set: {} slots, {} worker records, {} groups, max_message {} B",
        c.slots, c.workers, c.groups, c.max_message
    );
    println!("{}", where_line("SESSION_BENCH_DIR"));
    println!();
    let modes = std::env::var("SESSION_MODES").unwrap_or_else(|_| "blocking,spin".into());
    let mut results = Vec::new();
    for mode in modes.split(',') {
        match mode.trim() {
            "blocking" => results.extend(run_mode(
                &domain, &path, "blocking", 0, &payloads, samples, warmup, gap,
            )),
            "spin" => results.extend(run_mode(
                &domain, &path, "spin", spin, &payloads, samples, warmup, gap,
            )),
            other => panic!("unknown mode {other:?} in SESSION_MODES (blocking, spin)"),
        }
    }
    println!(
        "{:<9} {:>7} {:<11} {:>8} {:>8} {:>8} {:>8} | {:>9} {:>9} {:>9}",
        "mode",
        "payload",
        "method",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "min µs",
        "to p50",
        "in p50",
        "back p50"
    );
    let mut verdicts = Vec::new();
    for r in &results {
        for (label, s) in [
            ("session", &r.session),
            ("socketpair", &r.socket),
            ("futex floor", &r.floor),
        ] {
            let rtt = s.col(|x| x.rtt);
            println!(
                "{:<9} {:>7} {:<11} {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>9.1} {:>9.1} {:>9.1}",
                r.mode,
                r.payload,
                label,
                pct(&rtt, 50.0),
                pct(&rtt, 90.0),
                pct(&rtt, 99.0),
                pct(&rtt, 0.0),
                pct(&s.col(|x| x.to), 50.0),
                pct(&s.col(|x| x.inside), 50.0),
                pct(&s.col(|x| x.back), 50.0),
            );
        }
        let ratio = pct(&r.session.col(|x| x.rtt), 50.0) / pct(&r.socket.col(|x| x.rtt), 50.0);
        let p90 = pct(&r.session.col(|x| x.rtt), 90.0) / pct(&r.socket.col(|x| x.rtt), 90.0);
        println!(
            "{:<9} {:>7} ratio session/socketpair: p50 {ratio:.2}, p90 {p90:.2}",
            r.mode, r.payload
        );
        let floor = pct(&r.floor.col(|x| x.rtt), 50.0) / pct(&r.socket.col(|x| x.rtt), 50.0);
        let over = pct(&r.session.col(|x| x.rtt), 50.0) / pct(&r.floor.col(|x| x.rtt), 50.0);
        println!(
            "{:<9} {:>7} ratio futex floor/socketpair: p50 {floor:.2}; session/floor: p50 {over:.2}",
            r.mode, r.payload
        );
        verdicts.push((r.mode, r.payload, ratio));
    }
    println!();
    for (mode, payload, ratio) in verdicts {
        if mode == "blocking" {
            println!(
                "target (blocking, {payload} B): median ratio <= 0.5: {} ({ratio:.2})",
                met(ratio <= 0.5)
            );
        } else {
            println!(
                "spin-then-block ({payload} B, spin {spin}): median ratio {ratio:.2} (reported)"
            );
        }
    }
    println!("load average after: {}", loadavg());
    let _ = std::fs::remove_dir_all(&path);
}
