//! Cross-process wake latency of the domain's notification semaphore, with a
//! pipe as the baseline measured in the same run (issue 2).
//!
//! Two processes (`fork`): the *waiter* opens the domain itself and blocks,
//! alternately, in `Semaphore::wait` and in `read(2)` on a pipe; the *poster*
//! reads `CLOCK_MONOTONIC` (one clock for every process of the host) and
//!
//! - semaphore: stores the timestamp in a shared anonymous mapping, then
//!   `post(1)`;
//! - pipe: writes the timestamp into the pipe.
//!
//! The waiter reads the clock as soon as its call returns and records the
//! difference. Before each post the poster waits until the waiter has
//! finished the previous iteration, sleeps 1 ms and checks in /proc that the
//! waiter is asleep in the expected kernel wait (futex or pipe read), so every
//! sample is a real wake-up of a blocked process. The two methods alternate
//! sample by sample, so drift (frequency, other load) hits both alike.
//!
//! Run: `cargo bench --bench wake_latency` (`make bench`). Environment:
//! `WAKE_SAMPLES` (default 2000 per method and configuration),
//! `WAKE_WARMUP` (default 100, discarded), `WAKE_DIAG=1` (adds a bare futex
//! flag with and without a timeout, and a same-CPU configuration, to tell
//! where a difference comes from).

use mtipc::internals::sync::{Futex, Ordering};
use mtipc::Domain;
use std::path::{Path, PathBuf};
// The bench's own bookkeeping in shared memory (timestamps, samples): the
// shim's atomic, std's outside loom.
use mtipc::internals::sync::AtomicU64;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;
use common::{env_usize, map_anon_shared, map_file, now_ns};

/// A shared anonymous mapping of `words` u64 atomics, inherited by `fork`.
/// Word 0: the poster's timestamp; word 1: iterations the waiter completed;
/// word 2: the waiter is ready; from word 8: the samples, in order.
struct Shared {
    base: *mut AtomicU64,
    words: usize,
}

const T_POST: usize = 0;
const DONE: usize = 1;
const READY: usize = 2;
const SAMPLES: usize = 8;

impl Shared {
    fn new(words: usize) -> Shared {
        let len = words * 8;
        let p = map_anon_shared(len);
        Shared {
            base: p as *mut AtomicU64,
            words,
        }
    }

    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words);
        // SAFETY: in bounds of a page-aligned, zero-filled mapping that lives
        // as long as `self`; every access goes through the atomic.
        unsafe { &*self.base.add(i) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.words * 8) };
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    /// The domain's `Semaphore`: post(1) / wait(None).
    Semaphore,
    /// Baseline: write(2) / blocked read(2) on a pipe.
    Pipe,
    /// Diagnostic (`WAKE_DIAG=1`): a bare futex flag in a shared file
    /// mapping, the waiter sleeping with no timeout.
    FutexNoTimeout,
    /// Diagnostic: the same, sleeping with a 250 ms timeout like the
    /// semaphore's re-check slice.
    FutexTimeout,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Semaphore => "semaphore",
            Method::Pipe => "pipe",
            Method::FutexNoTimeout => "futex, no timeout",
            Method::FutexTimeout => "futex, 250 ms timeout",
        }
    }
}

/// Sample `i` of the interleaved sequence uses this method: the methods take
/// turns, and each cycle starts one further along, so no method always
/// follows the same other one.
fn method_of(methods: &[Method], i: usize) -> Method {
    let k = methods.len();
    methods[(i + i / k) % k]
}

/// A futex word in a small shared file next to the domain's files (a file
/// mapping, like `notify.sem`), for the diagnostic methods.
struct FutexFile {
    map: memmap2::MmapRaw,
}

impl FutexFile {
    fn open(domain: &Path) -> FutexFile {
        FutexFile {
            map: map_file(&domain.join("bench.futex"), 4096),
        }
    }

    fn word(&self) -> &Futex {
        // SAFETY: 4096 mapped bytes, page aligned, alive as long as `self`;
        // only atomic operations touch the word.
        unsafe { &*(self.map.as_mut_ptr() as *const Futex) }
    }

    /// Waits for the flag, then clears it (the semaphore's algorithm for a
    /// count of at most one).
    fn take(&self, timeout: Option<Duration>) {
        let w = self.word();
        while w
            .atomic()
            .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            w.wait(0, timeout);
        }
    }

    fn give(&self) {
        self.word().atomic().store(1, Ordering::Release);
        self.word().wake(1);
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds
    // for cpu < CPU_SETSIZE; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity({cpu})");
    }
}

fn unpin(ncpu: usize) {
    // SAFETY: as in `pin_to`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..ncpu.min(libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The waiter's side; runs in the forked child and never returns.
fn waiter(
    domain: &Path,
    shared: &Shared,
    read_fd: i32,
    methods: &[Method],
    total: usize,
    cpu: Option<usize>,
) -> ! {
    if let Some(c) = cpu {
        pin_to(c);
    }
    let d = Domain::open(Some(domain)).expect("waiter opens the domain");
    let sem = d.semaphore();
    let fx = FutexFile::open(domain);
    shared.at(READY).store(1, Ordering::Release);
    for i in 0..total {
        let (t0, t1) = match method_of(methods, i) {
            Method::Semaphore => {
                sem.wait(None).expect("semaphore wait");
                let t1 = now_ns();
                (shared.at(T_POST).load(Ordering::Acquire), t1)
            }
            Method::FutexNoTimeout | Method::FutexTimeout => {
                let m = method_of(methods, i);
                fx.take((m == Method::FutexTimeout).then_some(Duration::from_millis(250)));
                let t1 = now_ns();
                (shared.at(T_POST).load(Ordering::Acquire), t1)
            }
            Method::Pipe => {
                let mut buf = [0u8; 8];
                let mut got = 0;
                while got < 8 {
                    // SAFETY: reads into the rest of `buf`, in bounds.
                    let n = unsafe {
                        libc::read(
                            read_fd,
                            buf[got..].as_mut_ptr() as *mut libc::c_void,
                            8 - got,
                        )
                    };
                    assert!(n > 0, "pipe read: {}", std::io::Error::last_os_error());
                    got += n as usize;
                }
                let t1 = now_ns();
                (u64::from_ne_bytes(buf), t1)
            }
        };
        shared
            .at(SAMPLES + i)
            .store(t1.saturating_sub(t0), Ordering::Relaxed);
        shared.at(SAMPLES + total + i).store(t1, Ordering::Relaxed);
        shared.at(DONE).store(i as u64 + 1, Ordering::Release);
    }
    // SAFETY: ends the child without running the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}

/// Is `pid` asleep in the wait `m` uses? (`None`: cannot tell.)
fn blocked_in(pid: i32, m: Method) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
    if state != 'S' {
        return Some(false);
    }
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    if wchan.is_empty() || wchan == "0" {
        return None; // hidden by the kernel: state S is all we know
    }
    Some(match m {
        Method::Pipe => wchan.contains("pipe"),
        _ => wchan.contains("futex"),
    })
}

struct RunResult {
    /// Samples (ns) per method, in the order of `methods`.
    samples: Vec<Vec<u64>>,
    /// From the poster's timestamp to its call's return (ns), per method.
    call_ns: Vec<Vec<u64>>,
    /// Samples where the waiter resumed before the poster's call returned.
    before_return: Vec<usize>,
    unconfirmed: usize,
}

/// One configuration: fork a waiter, post `warmup + n` times per method.
fn run(
    domain: &Path,
    methods: &[Method],
    n: usize,
    warmup: usize,
    cpus: Option<(usize, usize)>,
) -> RunResult {
    let total = methods.len() * (warmup + n);
    let shared = Shared::new(SAMPLES + 3 * total);
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    let (rfd, wfd) = (fds[0], fds[1]);

    // SAFETY: the bench is single-threaded here, so the child may run Rust
    // code freely after fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: the child's copy of the write end.
        unsafe { libc::close(wfd) };
        waiter(domain, &shared, rfd, methods, total, cpus.map(|c| c.1));
    }
    // SAFETY: the parent's copy of the read end.
    unsafe { libc::close(rfd) };
    if let Some((c, _)) = cpus {
        pin_to(c);
    }
    let d = Domain::open(Some(domain)).expect("poster opens the domain");
    let sem = d.semaphore();
    let fx = FutexFile::open(domain);
    while shared.at(READY).load(Ordering::Acquire) == 0 {
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut unconfirmed = 0;
    for i in 0..total {
        while shared.at(DONE).load(Ordering::Acquire) < i as u64 {
            std::thread::sleep(Duration::from_micros(50));
        }
        let m = method_of(methods, i);
        // Let the waiter block, and make sure it did.
        std::thread::sleep(Duration::from_millis(1));
        let mut tries = 0;
        loop {
            match blocked_in(pid, m) {
                Some(true) => break,
                None => {
                    unconfirmed += 1;
                    break;
                }
                Some(false) => {
                    tries += 1;
                    assert!(tries < 5000, "waiter never blocked before sample {i}");
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        match m {
            Method::Semaphore => {
                let t0 = now_ns();
                shared.at(T_POST).store(t0, Ordering::Release);
                sem.post(1).expect("post");
            }
            Method::FutexNoTimeout | Method::FutexTimeout => {
                let t0 = now_ns();
                shared.at(T_POST).store(t0, Ordering::Release);
                fx.give();
            }
            Method::Pipe => {
                let t0 = now_ns().to_ne_bytes();
                // SAFETY: writes the 8 bytes of `t0`.
                let w = unsafe { libc::write(wfd, t0.as_ptr() as *const libc::c_void, 8) };
                assert_eq!(w, 8, "pipe write");
            }
        }
        // When the poster's call returned (diagnostics: call cost, and
        // whether the woken waiter ran before it).
        shared
            .at(SAMPLES + 2 * total + i)
            .store(now_ns(), Ordering::Relaxed);
    }
    while shared.at(DONE).load(Ordering::Acquire) < total as u64 {
        std::thread::sleep(Duration::from_micros(50));
    }
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(wfd);
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "waiter failed ({status:#x})"
    );
    let mut samples = vec![Vec::with_capacity(n); methods.len()];
    let mut call_ns = vec![Vec::with_capacity(n); methods.len()];
    let mut before_return = vec![0usize; methods.len()];
    for i in methods.len() * warmup..total {
        let v = shared.at(SAMPLES + i).load(Ordering::Relaxed);
        let t1 = shared.at(SAMPLES + total + i).load(Ordering::Relaxed);
        let t_ret = shared.at(SAMPLES + 2 * total + i).load(Ordering::Relaxed);
        let t0 = t1 - v;
        let m = method_of(methods, i);
        let k = methods.iter().position(|x| *x == m).unwrap();
        samples[k].push(v);
        call_ns[k].push(t_ret.saturating_sub(t0));
        before_return[k] += (t1 < t_ret) as usize;
    }
    RunResult {
        samples,
        call_ns,
        before_return,
        unconfirmed,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

struct Stats {
    p50: f64,
    p90: f64,
    p99: f64,
    min: f64,
    max: f64,
}

fn stats(v: &mut [u64]) -> Stats {
    v.sort_unstable();
    Stats {
        p50: pct(v, 0.50),
        p90: pct(v, 0.90),
        p99: pct(v, 0.99),
        min: v[0] as f64 / 1000.0,
        max: v[v.len() - 1] as f64 / 1000.0,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; run any other way (`cargo test
    // --all-targets` runs bench targets too) this is only a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n = env_usize("WAKE_SAMPLES", if full { 2000 } else { 50 }).max(10);
    let warmup = env_usize("WAKE_WARMUP", if full { 100 } else { 5 });
    if !full {
        println!("(not run by `cargo bench`: smoke run with few samples)");
    }
    let diag = std::env::var_os("WAKE_DIAG").is_some_and(|v| v != "0");
    // SAFETY: no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let domain: PathBuf =
        std::env::temp_dir().join(format!("mtipc-bench-wake-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&domain);
    Domain::open(Some(&domain)).expect("create the bench domain");

    let mut methods = vec![Method::Semaphore, Method::Pipe];
    if diag {
        methods.extend([Method::FutexNoTimeout, Method::FutexTimeout]);
    }
    let mut configs: Vec<(&str, Option<(usize, usize)>)> = vec![("unpinned", None)];
    if ncpu >= 2 {
        configs.push(("pinned, CPUs 0 and 1", Some((0, 1))));
    }
    if diag {
        configs.push(("pinned, both CPU 0", Some((0, 0))));
    }

    println!("Cross-process wake latency: Semaphore::post -> Semaphore::wait return,");
    println!("baseline pipe write -> blocked read return (same run, interleaved).");
    println!(
        "{n} samples per method and configuration after {warmup} warm-up; \
         {ncpu} CPUs online; kernel {kernel}{}",
        if diag { "; WAKE_DIAG=1" } else { "" }
    );
    println!();
    println!(
        "{:<22} {:<22} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "configuration", "method", "p50 µs", "p90 µs", "p99 µs", "min µs", "max µs"
    );

    let mut ratios = Vec::new();
    for (name, cpus) in &configs {
        let mut r = run(&domain, &methods, n, warmup, *cpus);
        unpin(ncpu);
        let st: Vec<Stats> = r.samples.iter_mut().map(|v| stats(v)).collect();
        for (m, s) in methods.iter().zip(&st) {
            println!(
                "{:<22} {:<22} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1}",
                name,
                m.name(),
                s.p50,
                s.p90,
                s.p99,
                s.min,
                s.max
            );
        }
        let ratio = st[0].p50 / st[1].p50;
        println!(
            "{:<22} {:<22} {:>8.2}   (median semaphore / median pipe; target <= 1.0)",
            name, "ratio", ratio
        );
        if r.unconfirmed > 0 {
            println!(
                "{:<22} note: {} samples with the waiter's wait channel hidden \
                 (state S only)",
                name, r.unconfirmed
            );
        }
        if diag {
            for (k, m) in methods.iter().enumerate() {
                let c = stats(&mut r.call_ns[k]);
                println!(
                    "{:<22} {:<22} diag: poster's call p50 {:.1} µs; waiter resumed \
                     before it returned in {:.0}% of samples",
                    name,
                    m.name(),
                    c.p50,
                    100.0 * r.before_return[k] as f64 / n as f64
                );
            }
        }
        ratios.push((name, ratio));
    }
    let _ = std::fs::remove_dir_all(&domain);
    println!();
    for (name, ratio) in ratios {
        println!(
            "median ratio semaphore/pipe, {name}: {ratio:.2} ({})",
            if ratio <= 1.0 {
                "meets the target"
            } else {
                "ABOVE the 1.0 target"
            }
        );
    }
}
