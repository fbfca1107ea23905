//! Time to first byte of a 1 MiB shared closure read by 8 processes at
//! once, with a baseline measured in the same run: the same 1 MiB read from
//! a file with `read(2)` into a buffer.
//!
//! The parent publishes a 1 MiB bytes closure and writes the same bytes to a
//! plain file in the domain directory, then forks 8 reader processes (each
//! opens the domain itself). In each round the parent wakes all 8 at once
//! (a futex in a shared anonymous mapping) and every reader, at the same
//! time as the others:
//!
//! - closure: reads `CLOCK_MONOTONIC`, `Closure::open` (head, version file,
//!   `flock(LOCK_SH)`, read-only `mmap`, validation), reads the first byte
//!   of `Closure::bytes()` in place, reads the clock; then lets go;
//! - read(2): reads the clock, opens the file, `read(2)`s all of it into a
//!   buffer it allocated and touched before the run (the most favourable
//!   case for the copy), reads the first byte, reads the clock.
//!
//! The difference is the sample. The methods alternate round by round, so
//! drift hits both alike; the first rounds are discarded as warm-up. Both
//! files are in the page cache (the closure was just written, the plain
//! file too, and the warm-up reads both).
//!
//! Run: `cargo bench --bench closure_read` (`make bench`). Environment:
//! `CLOSURE_ROUNDS` (default 300 per method: 2400 samples each),
//! `CLOSURE_WARMUP` (default 10 rounds per method, discarded).

use mtipc::closure::{self, Closure};
use mtipc::internals::sync::{Futex, Ordering};
use mtipc::Domain;
use std::io::Read;
use std::path::{Path, PathBuf};
// The bench's own bookkeeping in shared memory (round, done counter,
// samples): the shim's atomic, std's outside loom.
use mtipc::internals::sync::AtomicU64;

#[path = "common/mod.rs"]
mod common;
use common::{env_usize, map_anon_shared, now_ns};

const READERS: usize = 8;
const SIZE: usize = 1 << 20;
const NAME: &str = "bench";
const PLAIN: &str = "bench-plain.bin";

/// A shared anonymous mapping inherited by `fork`: two futex words (the
/// round the parent started, and how many samples the readers finished),
/// the method of the round, then one u64 sample per (round, reader).
struct Shared {
    base: *mut u8,
    len: usize,
}

const STOP: u64 = u64::MAX;

impl Shared {
    fn new(samples: usize) -> Shared {
        let len = 64 + samples * 8;
        let p = map_anon_shared(len);
        Shared { base: p, len }
    }

    /// The round the parent started last (futex word at byte 0).
    fn round(&self) -> &Futex {
        // SAFETY: in bounds, aligned, zero-initialised, lives as long as self.
        unsafe { &*(self.base as *const Futex) }
    }

    /// Samples finished so far (futex word at byte 4).
    fn done(&self) -> &Futex {
        // SAFETY: as above.
        unsafe { &*(self.base.add(4) as *const Futex) }
    }

    /// The method of the current round (u64 at byte 8; STOP ends).
    fn method(&self) -> &AtomicU64 {
        // SAFETY: as above.
        unsafe { &*(self.base.add(8) as *const AtomicU64) }
    }

    fn sample(&self, i: usize) -> &AtomicU64 {
        assert!(64 + i * 8 + 8 <= self.len);
        // SAFETY: in bounds (checked), aligned.
        unsafe { &*(self.base.add(64 + i * 8) as *const AtomicU64) }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Closure = 0,
    Read = 1,
}

fn reader(shared: &Shared, dir: &Path, me: usize, expect_first: u8) -> ! {
    let d = Domain::open(Some(dir)).expect("reader opens the domain");
    let plain = dir.join(PLAIN);
    let mut buf = vec![1u8; SIZE];
    let mut seen = 0;
    loop {
        let r = loop {
            let r = shared.round().load(Ordering::Acquire);
            if r != seen {
                break r;
            }
            shared.round().wait(seen, None);
        };
        seen = r;
        let m = shared.method().load(Ordering::Acquire);
        if m == STOP {
            std::process::exit(0);
        }
        let (t0, t1, first, keep);
        if m == Method::Closure as u64 {
            t0 = now_ns();
            let c = Closure::open(&d, NAME).expect("open the closure");
            let b = c.bytes().expect("a bytes closure");
            // SAFETY: reading the first of `b.len()` mapped bytes.
            first = unsafe { std::ptr::read_volatile(b.as_ptr()) };
            t1 = now_ns();
            assert_eq!(b.len(), SIZE);
            keep = Some(c);
        } else {
            t0 = now_ns();
            let mut f = std::fs::File::open(&plain).expect("open the plain file");
            f.read_exact(&mut buf).expect("read(2) 1 MiB");
            // SAFETY: reading the first byte of our buffer.
            first = unsafe { std::ptr::read_volatile(buf.as_ptr()) };
            t1 = now_ns();
            keep = None;
        }
        drop(keep);
        assert_eq!(first, expect_first);
        shared
            .sample((r as usize - 1) * READERS + me)
            .store(t1 - t0, Ordering::Release);
        shared.done().atomic().fetch_add(1, Ordering::AcqRel);
        shared.done().wake(1);
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; run any other way (`cargo test
    // --all-targets` runs bench targets too) this is only a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = env_usize("CLOSURE_ROUNDS", if full { 300 } else { 4 }).max(2);
    let warmup = env_usize("CLOSURE_WARMUP", if full { 10 } else { 1 });
    if !full {
        println!("(not run by `cargo bench`: smoke run with few samples)");
    }
    let total_rounds = 2 * (rounds + warmup);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("mtipc-bench-closure-{}", std::process::id()));
    let d = Domain::open(Some(&dir)).expect("open the bench domain");
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let v = closure::publish_bytes(&d, NAME, &data).expect("publish");
    std::fs::write(dir.join(PLAIN), &data).expect("write the plain file");
    let shared = Shared::new(total_rounds * READERS);
    let mut pids = Vec::new();
    for me in 0..READERS {
        // SAFETY: single-threaded here; the child only runs `reader`.
        match unsafe { libc::fork() } {
            0 => reader(&shared, &dir, me, data[0]),
            -1 => panic!("fork failed"),
            pid => pids.push(pid),
        }
    }
    // Round r (1-based) uses Closure when r is odd: the methods alternate.
    let method_of = |r: usize| {
        if r % 2 == 1 {
            Method::Closure
        } else {
            Method::Read
        }
    };
    for r in 1..=total_rounds {
        shared
            .method()
            .store(method_of(r) as u64, Ordering::Release);
        shared.round().atomic().store(r as u32, Ordering::Release);
        shared.round().wake(u32::MAX);
        let want = (r * READERS) as u32;
        loop {
            let n = shared.done().load(Ordering::Acquire);
            if n >= want {
                break;
            }
            shared.done().wait(n, None);
        }
    }
    shared.method().store(STOP, Ordering::Release);
    shared
        .round()
        .atomic()
        .store(total_rounds as u32 + 1, Ordering::Release);
    shared.round().wake(u32::MAX);
    for pid in pids {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "a reader failed"
        );
    }

    let mut by = [Vec::new(), Vec::new()];
    for r in (2 * warmup + 1)..=total_rounds {
        for me in 0..READERS {
            let s = shared
                .sample((r - 1) * READERS + me)
                .load(Ordering::Acquire);
            by[method_of(r) as usize].push(s);
        }
    }
    for v in &mut by {
        v.sort_unstable();
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    println!(
        "Time to first byte of 1 MiB, {READERS} reader processes at once (closure version {v}),"
    );
    println!(
        "{} samples per method after {} warm-up rounds; kernel {}, {ncpu} CPUs.",
        by[0].len(),
        warmup,
        kernel.trim()
    );
    println!();
    println!("| method | p50 µs | p90 µs | p99 µs | min µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (m, name) in [
        (Method::Closure, "closure: open + first byte in place"),
        (Method::Read, "baseline: open + read(2) 1 MiB + first byte"),
    ] {
        let s = &by[m as usize];
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            pct(s, 0.5),
            pct(s, 0.9),
            pct(s, 0.99),
            pct(s, 0.0),
            pct(s, 1.0)
        );
    }
    println!();
    println!(
        "ratio closure / read(2): p50 {:.2}, p99 {:.2}",
        pct(&by[0], 0.5) / pct(&by[1], 0.5),
        pct(&by[0], 0.99) / pct(&by[1], 0.99)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
