//! Permits on a volume whose arbiter lives in shared memory (issue 11),
//! each figure against its baseline measured in the same run:
//!
//! 1. *uncontended request + release* (a write permit on one path, no
//!    other process) against an `flock(LOCK_EX)` + `flock(LOCK_UN)` pair on
//!    a file of the volume. Rounds of `PERMIT_CYCLES` cycles alternate
//!    between the two; per-cycle time = round time / cycles. Target ≤ 0.5×.
//! 2. *fairness*: 8 instances (processes of this bench in the role
//!    `instance`) on a volume capped at one transfer; one of them floods
//!    (10 threads, each asking again as soon as it is served), the others
//!    ask with one thread; each grant is held `PERMIT_HOLD_US` µs (a spin,
//!    so that the hold is what was asked). For
//!    `PERMIT_FAIR_SECONDS` they count grants and the longest time an
//!    instance goes without a grant while it has a request waiting. Jain's
//!    index of grants per instance (target ≥ 0.99) and the longest wait
//!    against (N − 1) × the measured hold time + 1 ms.
//! 3. *dead holder reclaimed*: a process holds a write permit; this one
//!    waits for it; the holder is `kill -9`ed; time from the kill to the
//!    grant, `PERMIT_KILLS` times. Baseline: the same with `flock` (the
//!    kernel drops a dead holder's lock and wakes the waiter). Target p50
//!    ≤ 5 ms.
//! 4. *transfer* of a `PERMIT_FILE_MIB` MiB file (256) into the volume
//!    (put) against `cp` of the same file followed by `fsync` of the copy,
//!    alternating, 3 each. Target: throughput ≥ 0.95× cp.
//!
//! Run: `cargo bench --bench permit` (`make bench`). `PERMIT_BENCH_DIR`:
//! where the domain and the volume go (default `$XDG_RUNTIME_DIR`, else the
//! temporary directory; the transfer figure is about that file system).

use mtipc::internals::sync::local::AtomicBool;
use mtipc::internals::sync::Ordering;
use mtipc::permit::{volume, Mode, Volume, VolumeOpts};
use mtipc::Domain;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::*;

const ROLE: &str = "MTIPC_BENCH_ROLE";

fn setup(dir: &Path, name: &str, opts: &VolumeOpts) -> (Domain, PathBuf) {
    let d = Domain::open(Some(&dir.join("domain"))).expect("bench domain");
    let vol = dir.join(format!("vol-{name}"));
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
    volume::create(&d, name, &vol, opts).expect("bench volume");
    (d, vol)
}

fn child(role: &str, args: &[String]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env("MTIPC_BENCH_ARGS", args.join("\u{1f}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a bench child")
}

fn args() -> Vec<String> {
    std::env::var("MTIPC_BENCH_ARGS")
        .unwrap_or_default()
        .split('\u{1f}')
        .map(str::to_owned)
        .collect()
}

fn line(c: &mut Child) -> String {
    let mut r = BufReader::new(c.stdout.as_mut().unwrap());
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l.trim_end().to_owned()
}

fn flock(fd: i32, op: i32) {
    // SAFETY: flock(2) on a descriptor this process owns.
    let rc = unsafe { libc::flock(fd, op) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
}

fn part_uncontended(dir: &Path, rounds: usize, cycles: usize) {
    let (d, vol) = setup(dir, "solo", &VolumeOpts::default());
    let v = Volume::open(&d, "solo").unwrap();
    let lockfile = std::fs::File::create(vol.join("lockfile")).unwrap();
    let fd = lockfile.as_raw_fd();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..cycles {
        drop(
            v.request("calls/a.wav", Mode::Write, Duration::ZERO)
                .unwrap(),
        );
        flock(fd, libc::LOCK_EX);
        flock(fd, libc::LOCK_UN);
    }
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..cycles {
            let p = v
                .request("calls/a.wav", Mode::Write, Duration::ZERO)
                .unwrap();
            std::hint::black_box(p.token());
            drop(p);
        }
        ours.push(t.elapsed().as_nanos() as f64 / cycles as f64);
        let t = Instant::now();
        for _ in 0..cycles {
            flock(fd, libc::LOCK_EX);
            flock(fd, libc::LOCK_UN);
        }
        base.push(t.elapsed().as_nanos() as f64 / cycles as f64);
    }
    let (o, b) = (sorted(&ours), sorted(&base));
    let ratio = pct(&o, 50.0) / pct(&b, 50.0);
    println!(
        "1. Uncontended request + release vs flock lock + unlock ({rounds} rounds of {cycles}):"
    );
    println!(
        "   permit   p50 {:7.1} ns  (min {:7.1}, max {:7.1})",
        pct(&o, 50.0),
        o[0],
        o[o.len() - 1]
    );
    println!(
        "   flock    p50 {:7.1} ns  (min {:7.1}, max {:7.1})",
        pct(&b, 50.0),
        b[0],
        b[b.len() - 1]
    );
    println!(
        "   ratio {ratio:.2}x (target <= 0.5x: {})",
        met(ratio <= 0.5)
    );
    println!();
}

/// Role `instance <domain> <threads> <hold_us> <seconds>`: `threads`
/// threads ask for write permits on their own paths in a loop, each held
/// `hold_us`; prints "grants <n> longest_wait_us <w> hold_us <h>": w is
/// the longest time the instance waited for a grant (from its request, or
/// from its last release if later), h the mean measured hold.
fn role_instance() {
    let a = args();
    let d = Domain::open(Some(Path::new(&a[0]))).unwrap();
    let v = Volume::open(&d, "fair").unwrap();
    let threads: usize = a[1].parse().unwrap();
    let hold = Duration::from_micros(a[2].parse().unwrap());
    let secs: f64 = a[3].parse().unwrap();
    // Start together: the parent writes a line once every instance is up.
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // (grants, last release by this instance, longest wait, hold total,
    // wait total)
    let stats = Arc::new(Mutex::new((
        0u64,
        Instant::now(),
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    )));
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|k| {
            let (v, stop, stats) = (v.clone(), stop.clone(), stats.clone());
            std::thread::spawn(move || {
                let path = format!("p{}-{k}", std::process::id());
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let p = match v.request(&path, Mode::Write, Duration::from_secs(5)) {
                        Ok(p) => p,
                        Err(e) => panic!("instance: {e}"),
                    };
                    let now = Instant::now();
                    {
                        // Waiting time of the instance: since this request
                        // was made, or since the instance last gave a
                        // permit back, whichever is later.
                        let mut s = stats.lock().unwrap();
                        let wait = now - asked.max(s.1);
                        s.2 = s.2.max(wait);
                        s.4 += wait;
                        s.0 += 1;
                    }
                    // Held for `hold` exactly: a spin, not a sleep (a
                    // sleep overshoots by a scheduler tick under load).
                    let t = Instant::now();
                    while t.elapsed() < hold {
                        std::hint::spin_loop();
                    }
                    let held = t.elapsed();
                    drop(p);
                    let mut s = stats.lock().unwrap();
                    s.3 += held;
                    s.1 = Instant::now();
                }
            })
        })
        .collect();
    while start.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let s = *stats.lock().unwrap();
    for h in hs {
        h.join().unwrap();
    }
    println!(
        "grants {} longest_wait_us {} hold_us {} mean_wait_us {}",
        s.0,
        s.2.as_micros(),
        s.3.as_micros() / u128::from(s.0.max(1)),
        s.4.as_micros() / u128::from(s.0.max(1))
    );
}

fn part_fairness(dir: &Path, secs: f64, hold_us: u64) {
    let opts = VolumeOpts {
        max_transfers: 1,
        ..VolumeOpts::default()
    };
    let (_d, _vol) = setup(dir, "fair", &opts);
    let dom = dir.join("domain").display().to_string();
    let n = 8;
    let mut kids: Vec<Child> = (0..n)
        .map(|i| {
            let threads = if i == 0 { "10" } else { "1" };
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.env(ROLE, "instance")
                .env(
                    "MTIPC_BENCH_ARGS",
                    [
                        dom.clone(),
                        threads.into(),
                        hold_us.to_string(),
                        secs.to_string(),
                    ]
                    .join("\u{1f}"),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            c.spawn().unwrap()
        })
        .collect();
    for k in &mut kids {
        assert_eq!(line(k), "ready");
    }
    for k in &mut kids {
        writeln!(k.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut grants = Vec::new();
    let mut gaps = Vec::new();
    let mut holds = Vec::new();
    let mut means = Vec::new();
    for k in &mut kids {
        let l = line(k);
        let f: Vec<&str> = l.split(' ').collect();
        grants.push(f[1].parse::<f64>().unwrap());
        gaps.push(f[3].parse::<f64>().unwrap() / 1000.0);
        holds.push(f[5].parse::<f64>().unwrap() / 1000.0);
        means.push(f[7].parse::<f64>().unwrap() / 1000.0);
        k.wait().unwrap();
    }
    let sum: f64 = grants.iter().sum();
    let sq: f64 = grants.iter().map(|g| g * g).sum();
    let jain = sum * sum / (n as f64 * sq);
    let hold_ms = holds.iter().sum::<f64>() / n as f64;
    let bound = (n as f64 - 1.0) * hold_ms + 1.0;
    let longest = gaps.iter().cloned().fold(0.0, f64::max);
    println!(
        "2. Fairness: {n} instances, cap 1, instance 0 floods with 10 threads, the others 1 each; hold {hold_us} us asked ({hold_ms:.3} ms measured), {secs} s:"
    );
    let g: Vec<String> = grants.iter().map(|g| format!("{g:.0}")).collect();
    println!("   grants per instance: {}", g.join(" "));
    let w: Vec<String> = gaps.iter().map(|g| format!("{g:.2}")).collect();
    println!("   longest wait per instance (ms): {}", w.join(" "));
    let m: Vec<String> = means.iter().map(|g| format!("{g:.2}")).collect();
    println!("   mean wait per instance (ms): {}", m.join(" "));
    println!(
        "   Jain's index {jain:.4} (target >= 0.99: {})",
        met(jain >= 0.99)
    );
    println!(
        "   longest wait {longest:.2} ms vs (N-1) x hold + 1 ms = {bound:.2} ms: {}",
        met(longest <= bound)
    );
    println!();
}

/// Role `hold <domain>`: takes a write permit on "x" of volume "reclaim",
/// says "held", sleeps.
fn role_hold() {
    let a = args();
    let d = Domain::open(Some(Path::new(&a[0]))).unwrap();
    let v = Volume::open(&d, "reclaim").unwrap();
    let _p = v
        .request("x", Mode::Write, Duration::from_secs(10))
        .unwrap();
    println!("held");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

/// Role `flock <file>`: takes an exclusive flock, says "held", sleeps.
fn role_flock() {
    let a = args();
    let f = std::fs::File::create(&a[0]).unwrap();
    flock(f.as_raw_fd(), libc::LOCK_EX);
    println!("held");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

fn kill9(c: &mut Child) -> Instant {
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
    Instant::now()
}

fn part_reclaim(dir: &Path, kills: usize) {
    let (d, vol) = setup(dir, "reclaim", &VolumeOpts::default());
    let v = Volume::open(&d, "reclaim").unwrap();
    let dom = dir.join("domain").display().to_string();
    let lockpath = vol.join("flockfile").display().to_string();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..kills {
        let mut c = child("hold", std::slice::from_ref(&dom));
        assert_eq!(line(&mut c), "held");
        let v2 = v.clone();
        let waiter = std::thread::spawn(move || {
            let p = v2
                .request("x", Mode::Write, Duration::from_secs(10))
                .unwrap();
            (Instant::now(), p)
        });
        std::thread::sleep(Duration::from_millis(20));
        let killed = kill9(&mut c);
        let (granted, p) = waiter.join().unwrap();
        drop(p);
        c.wait().unwrap();
        ours.push((granted - killed).as_secs_f64() * 1e3);

        let mut c = child("flock", std::slice::from_ref(&lockpath));
        assert_eq!(line(&mut c), "held");
        let lp = lockpath.clone();
        let waiter = std::thread::spawn(move || {
            let f = std::fs::File::open(&lp).unwrap();
            flock(f.as_raw_fd(), libc::LOCK_EX);
            let t = Instant::now();
            flock(f.as_raw_fd(), libc::LOCK_UN);
            t
        });
        std::thread::sleep(Duration::from_millis(20));
        let killed = kill9(&mut c);
        let granted = waiter.join().unwrap();
        c.wait().unwrap();
        base.push((granted - killed).as_secs_f64() * 1e3);
    }
    let (o, b) = (sorted(&ours), sorted(&base));
    println!(
        "3. Dead holder reclaimed: kill -9 of the holder to the waiter's grant, {kills} times:"
    );
    println!(
        "   permit  p50 {:.3} ms  p90 {:.3} ms  max {:.3} ms",
        pct(&o, 50.0),
        pct(&o, 90.0),
        o[o.len() - 1]
    );
    println!(
        "   flock   p50 {:.3} ms  p90 {:.3} ms  max {:.3} ms (the kernel wakes the waiter)",
        pct(&b, 50.0),
        pct(&b, 90.0),
        b[b.len() - 1]
    );
    println!("   target p50 <= 5 ms: {}", met(pct(&o, 50.0) <= 5.0));
    println!();
}

fn part_transfer(dir: &Path, mib: usize) {
    let (d, vol) = setup(dir, "xfer", &VolumeOpts::default());
    let v = Volume::open(&d, "xfer").unwrap();
    let src = dir.join("transfer-src.bin");
    {
        let mut f = std::fs::File::create(&src).unwrap();
        let block: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for _ in 0..mib {
            f.write_all(&block).unwrap();
        }
        f.sync_all().unwrap();
    }
    let bytes = (mib << 20) as f64;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let _ = std::fs::remove_file(vol.join("in.bin"));
        let p = v.request("in.bin", Mode::Write, Duration::ZERO).unwrap();
        let t = Instant::now();
        p.put(&src).unwrap();
        ours.push(t.elapsed().as_secs_f64());
        drop(p);
        let dst = vol.join(format!("cp-{i}.bin"));
        let t = Instant::now();
        let st = Command::new("cp").arg(&src).arg(&dst).status().unwrap();
        assert!(st.success());
        std::fs::File::open(&dst).unwrap().sync_all().unwrap();
        base.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&dst);
    }
    let (o, b) = (sorted(&ours), sorted(&base));
    let (to, tb) = (bytes / pct(&o, 50.0) / 1e6, bytes / pct(&b, 50.0) / 1e6);
    println!(
        "4. Transfer of a {mib} MiB file into the volume ({}), 3 each:",
        fs_type(dir)
    );
    println!(
        "   put          median {:.1} ms  {to:.0} MB/s",
        pct(&o, 50.0) * 1e3
    );
    println!(
        "   cp + fsync   median {:.1} ms  {tb:.0} MB/s",
        pct(&b, 50.0) * 1e3
    );
    println!(
        "   throughput {:.2}x cp (target >= 0.95x: {})",
        to / tb,
        met(to / tb >= 0.95)
    );
    let _ = std::fs::remove_file(&src);
    println!();
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("instance") => return role_instance(),
        Ok("hold") => return role_hold(),
        Ok("flock") => return role_flock(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => {}
    }
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("(not run by `cargo bench`: smoke run with few samples)");
    }
    let rounds = env_usize("PERMIT_ROUNDS", if full { 20 } else { 2 }).max(1);
    let cycles = env_usize("PERMIT_CYCLES", if full { 20_000 } else { 1_000 }).max(1);
    let secs: f64 = std::env::var("PERMIT_FAIR_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 5.0 } else { 0.5 });
    let hold_us = env_usize("PERMIT_HOLD_US", 1000) as u64;
    let kills = env_usize("PERMIT_KILLS", if full { 30 } else { 3 }).max(1);
    let mib = env_usize("PERMIT_FILE_MIB", if full { 256 } else { 16 }).max(1);
    let dir =
        base_dir("PERMIT_BENCH_DIR").join(format!("mtipc-bench-permit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "Permits (shared-memory arbiter) vs their baselines (same run). {}",
        machine()
    );
    println!("{}", where_line("PERMIT_BENCH_DIR"));
    println!();
    part_uncontended(&dir, rounds, cycles);
    part_fairness(&dir, secs, hold_us);
    part_reclaim(&dir, kills);
    part_transfer(&dir, mib);
    println!("load average after: {}", loadavg());
    let _ = std::fs::remove_dir_all(&dir);
}
