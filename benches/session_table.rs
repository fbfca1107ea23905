//! The session table (issue 4) against a `Mutex<HashMap>` in one process,
//! measured in the same run.
//!
//! 1. *create + lookup + end*, one thread: a table of 65,536 slots holding
//!    8,192 other live sessions, against a `Mutex<HashMap<u64, Record>>`
//!    holding 8,192 records. A record carries what a session does (tenant
//!    `String`, state, user data `Vec`, binding, in-flight count, creation
//!    and update times); a lookup returns a copy (as `Table::lookup` does:
//!    its `Session` owns its tenant and user data). Rounds of
//!    `TABLE_CYCLES` cycles alternate between the two; the table is warmed
//!    first by two passes over its slots (so the figures are not page
//!    faults of fresh entries). Target: ≤ 2× the map.
//! 2. *lookups per second* from 1 and from 2 processes at once (this bench
//!    re-executed in the `lookup` role, each process opening the table
//!    itself), over 100,000 live sessions of a 1,000,000-slot table in a
//!    random order, for `TABLE_SECONDS` each; baseline: the same lookups
//!    in the map from 1 and 2 threads of this process.
//! 3. *memory*, in a fresh process (role `mem`): the region of a
//!    1,000,000-slot table as created (file size, blocks allocated), bytes
//!    per entry, then the pages touched (resident set and blocks) once all
//!    1,000,000 sessions exist, and the time of a full scan (what
//!    `mtipc sessions` does); baseline: the resident set a
//!    `HashMap<u64, Record>` of 1,000,000 records adds. Target: the region
//!    fits in 256 MiB.
//!
//! Run: `cargo bench --bench session_table` (`make bench`). Environment:
//! `TABLE_ROUNDS` (default 20 per method), `TABLE_CYCLES` (20,000),
//! `TABLE_SECONDS` (1), `SESSION_BENCH_DIR` (where the domain goes;
//! default `$XDG_RUNTIME_DIR`, else the temporary directory).

use mtipc::session::{SessionId, Table};
use mtipc::Domain;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

#[path = "common/mod.rs"]
mod common;
use common::*;

const TENANT: &str = "tenant-0042";
const USER: &[u8] = b"0123456789abcdef0123456789abcdef";

/// What the baseline map holds per session (what a `Session` holds). Only
/// `state` is read back; the other fields are there to be stored and copied.
#[allow(dead_code)]
#[derive(Clone, Debug)]
struct Record {
    tenant: String,
    state: u32,
    user: Vec<u8>,
    worker: Option<u64>,
    in_flight: u32,
    created_ns: u64,
    updated_ns: u64,
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Map {
    m: Mutex<HashMap<u64, Record>>,
    next: mtipc::internals::sync::local::AtomicU64,
}

impl Map {
    fn new() -> Map {
        Map {
            m: Mutex::new(HashMap::new()),
            next: mtipc::internals::sync::local::AtomicU64::new(1),
        }
    }
    fn create(&self, tenant: &str, state: u32, user: &[u8]) -> u64 {
        let id = self
            .next
            .fetch_add(1, mtipc::internals::sync::Ordering::Relaxed);
        let now = realtime_ns();
        let r = Record {
            tenant: tenant.to_string(),
            state,
            user: user.to_vec(),
            worker: None,
            in_flight: 0,
            created_ns: now,
            updated_ns: now,
        };
        self.m.lock().unwrap().insert(id, r);
        id
    }
    fn lookup(&self, id: u64) -> Option<Record> {
        self.m.lock().unwrap().get(&id).cloned()
    }
    fn end(&self, id: u64) -> bool {
        self.m.lock().unwrap().remove(&id).is_some()
    }
}

/// xorshift64*: the random order of lookups.
fn rng(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

// ---------------------------------------------------------------------------
// Child roles

/// `lookup`: opens the table, reads the ids, says "ready", waits for a line
/// on stdin, looks up in a random order for the given time, prints the
/// count.
fn role_lookup() {
    let path = PathBuf::from(std::env::var("MTIPC_BENCH_TABLE").unwrap());
    let ids: Vec<SessionId> = std::fs::read_to_string(std::env::var("MTIPC_BENCH_IDS").unwrap())
        .unwrap()
        .lines()
        .map(|l| SessionId(l.parse().unwrap()))
        .collect();
    let secs: f64 = std::env::var("MTIPC_BENCH_SECONDS")
        .unwrap()
        .parse()
        .unwrap();
    let t = Table::open_path(&path).expect("open the table");
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut next = rng(std::process::id() as u64 | 1);
    let (n, elapsed) = timed_lookups(secs, ids.len(), &mut next, |i| t.lookup(ids[i]).is_ok());
    println!("{n} {}", elapsed.as_secs_f64());
}

fn timed_lookups(
    secs: f64,
    count: usize,
    next: &mut impl FnMut() -> u64,
    mut f: impl FnMut(usize) -> bool,
) -> (u64, Duration) {
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut n = 0u64;
    loop {
        for _ in 0..1024 {
            let i = (next() % count as u64) as usize;
            assert!(f(i), "a live session was not found");
        }
        n += 1024;
        if t0.elapsed() >= limit {
            return (n, t0.elapsed());
        }
    }
}

/// `mem`: the memory figures, one `key value` per line.
fn role_mem() {
    let dir = PathBuf::from(std::env::var("MTIPC_BENCH_DOMAIN").unwrap());
    let d = Domain::open(Some(&dir)).unwrap();
    let (rss0, shared0) = rss();
    let t0 = Instant::now();
    let t = Table::create(&d, "mem", 1_000_000).expect("create a 1M table");
    let create_us = t0.elapsed().as_secs_f64() * 1e6;
    let md = std::fs::metadata(t.path()).unwrap();
    let g = t.geometry();
    println!("create_us {create_us:.0}");
    println!("file_bytes {}", md.len());
    println!("blocks_bytes_created {}", md.blocks() * 512);
    println!(
        "entry_bytes {}",
        (g.total - g.entries_off) / u64::from(g.capacity)
    );
    println!("header_records_bytes {}", g.entries_off);
    let (rss1, shared1) = rss();
    println!("rss_after_open {}", rss1.saturating_sub(rss0));
    println!("shared_after_open {}", shared1.saturating_sub(shared0));
    let t1 = Instant::now();
    for _ in 0..1_000_000 {
        t.create_session(TENANT, 1, USER).expect("create");
    }
    println!("fill_s {:.3}", t1.elapsed().as_secs_f64());
    let full = t.create_session(TENANT, 1, USER).unwrap_err();
    println!("full_kind {}", full.kind().name());
    let (rss2, shared2) = rss();
    println!("rss_after_fill {}", rss2.saturating_sub(rss0));
    println!("shared_after_fill {}", shared2.saturating_sub(shared0));
    let md = std::fs::metadata(t.path()).unwrap();
    println!("blocks_bytes_filled {}", md.blocks() * 512);
    let t2 = Instant::now();
    let n = t.sessions().count();
    println!("scan_s {:.3}", t2.elapsed().as_secs_f64());
    println!("scanned {n}");
    drop(t);
    // Baseline: the same sessions in a HashMap of this process.
    let (rss3, _) = rss();
    let map = Map::new();
    for _ in 0..1_000_000 {
        map.create(TENANT, 1, USER);
    }
    let (rss4, _) = rss();
    println!("map_rss {}", rss4.saturating_sub(rss3));
    drop(map);
}

// ---------------------------------------------------------------------------
// The measuring process

fn spawn(role: &str, env: &[(&str, String)]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env("MTIPC_BENCH_ROLE", role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn cycles_table(t: &Table, n: usize) -> Duration {
    let t0 = Instant::now();
    for _ in 0..n {
        let id = t.create_session(TENANT, 1, USER).unwrap();
        let s = t.lookup(id).unwrap();
        assert_eq!(s.state, 1);
        t.end(id).unwrap();
    }
    t0.elapsed()
}

fn cycles_map(m: &Map, n: usize) -> Duration {
    let t0 = Instant::now();
    for _ in 0..n {
        let id = m.create(TENANT, 1, USER);
        let r = m.lookup(id).unwrap();
        assert_eq!(r.state, 1);
        assert!(m.end(id));
    }
    t0.elapsed()
}

fn part_cycles(d: &Domain, rounds: usize, cycles: usize) -> (f64, f64) {
    const CAP: u32 = 65_536;
    const LIVE: usize = 8_192;
    let t = Table::create(d, "cycles", CAP).unwrap();
    let m = Map::new();
    for _ in 0..LIVE {
        t.create_session(TENANT, 2, USER).unwrap();
        m.create(TENANT, 2, USER);
    }
    // Warm-up: two passes of the create cursor over every slot; the map
    // as many cycles.
    cycles_table(&t, 2 * CAP as usize);
    cycles_map(&m, 2 * CAP as usize);
    let mut tab = Vec::new();
    let mut map = Vec::new();
    for r in 0..rounds * 2 {
        // Take turns; each pair of rounds starts with the other one.
        if (r + r / 2) % 2 == 0 {
            tab.push(cycles_table(&t, cycles).as_nanos() as f64 / cycles as f64);
        } else {
            map.push(cycles_map(&m, cycles).as_nanos() as f64 / cycles as f64);
        }
    }
    // The parts of a cycle, one loop each (informational): n creates, then
    // n lookups, then n ends (the map grows to n + LIVE meanwhile).
    let n = cycles;
    let t0 = Instant::now();
    let ids: Vec<SessionId> = (0..n)
        .map(|_| t.create_session(TENANT, 1, USER).unwrap())
        .collect();
    let c = t0.elapsed().as_nanos() as f64 / n as f64;
    let t0 = Instant::now();
    for &id in &ids {
        t.lookup(id).unwrap();
    }
    let l = t0.elapsed().as_nanos() as f64 / n as f64;
    let t0 = Instant::now();
    for &id in &ids {
        t.end(id).unwrap();
    }
    let e = t0.elapsed().as_nanos() as f64 / n as f64;
    let t0 = Instant::now();
    let mids: Vec<u64> = (0..n).map(|_| m.create(TENANT, 1, USER)).collect();
    let mc = t0.elapsed().as_nanos() as f64 / n as f64;
    let t0 = Instant::now();
    for &id in &mids {
        m.lookup(id).unwrap();
    }
    let ml = t0.elapsed().as_nanos() as f64 / n as f64;
    let t0 = Instant::now();
    for &id in &mids {
        m.end(id);
    }
    let me = t0.elapsed().as_nanos() as f64 / n as f64;

    let (ts, ms) = (sorted(&tab), sorted(&map));
    println!("1. create + lookup + end, one thread ({rounds} rounds of {cycles} cycles each, interleaved;");
    println!("   table of {CAP} slots and map each holding {LIVE} other sessions), ns per cycle:");
    println!(
        "   {:<22} {:>8} {:>8} {:>8}   parts (ns): create / lookup / end",
        "", "median", "min", "max"
    );
    println!(
        "   {:<22} {:>8.0} {:>8.0} {:>8.0}   {c:.0} / {l:.0} / {e:.0}",
        "session table",
        pct(&ts, 50.0),
        pct(&ts, 0.0),
        pct(&ts, 100.0)
    );
    println!(
        "   {:<22} {:>8.0} {:>8.0} {:>8.0}   {mc:.0} / {ml:.0} / {me:.0}",
        "Mutex<HashMap>",
        pct(&ms, 50.0),
        pct(&ms, 0.0),
        pct(&ms, 100.0)
    );
    let ratio = pct(&ts, 50.0) / pct(&ms, 50.0);
    println!(
        "   ratio table/map (medians): {ratio:.2}; target <= 2x: {}",
        met(ratio <= 2.0)
    );
    drop(t);
    (pct(&ts, 50.0), pct(&ms, 50.0))
}

fn part_lookups(d: &Domain, dir: &Path, secs: f64) {
    const LIVE: usize = 100_000;
    let t = Table::create(d, "lookups", 1_000_000).unwrap();
    let ids: Vec<SessionId> = (0..LIVE)
        .map(|_| t.create_session(TENANT, 1, USER).unwrap())
        .collect();
    let ids_file = dir.join("ids.txt");
    std::fs::write(
        &ids_file,
        ids.iter().map(|i| format!("{}\n", i.0)).collect::<String>(),
    )
    .unwrap();
    let env = [
        ("MTIPC_BENCH_TABLE", t.path().display().to_string()),
        ("MTIPC_BENCH_IDS", ids_file.display().to_string()),
        ("MTIPC_BENCH_SECONDS", secs.to_string()),
    ];
    let run = |procs: usize| -> Vec<f64> {
        let mut kids: Vec<_> = (0..procs).map(|_| spawn("lookup", &env)).collect();
        for (_, out) in kids.iter_mut() {
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            assert_eq!(l.trim(), "ready");
        }
        for (c, _) in kids.iter_mut() {
            writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();
        }
        kids.into_iter()
            .map(|(mut c, mut out)| {
                let mut l = String::new();
                out.read_to_string(&mut l).unwrap();
                c.wait().unwrap();
                let f: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
                f[0] / f[1]
            })
            .collect()
    };
    let m = Map::new();
    let mids: Vec<u64> = (0..LIVE).map(|_| m.create(TENANT, 1, USER)).collect();
    let run_map = |threads: usize| -> Vec<f64> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|k| {
                    let (m, mids) = (&m, &mids);
                    s.spawn(move || {
                        let mut next = rng(0x9E37 + k as u64);
                        let (n, e) = timed_lookups(secs, mids.len(), &mut next, |i| {
                            m.lookup(mids[i]).is_some()
                        });
                        n as f64 / e.as_secs_f64()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    println!();
    println!("2. lookups per second, random order over {LIVE} live sessions ({secs} s each):");
    let fmt = |v: &[f64]| {
        let total: f64 = v.iter().sum();
        let each: Vec<String> = v.iter().map(|x| format!("{:.2}", x / 1e6)).collect();
        format!(
            "{:>6.2} M/s total ({} M/s each)",
            total / 1e6,
            each.join(" + ")
        )
    };
    let t1 = run(1);
    let m1 = run_map(1);
    let t2 = run(2);
    let m2 = run_map(2);
    println!("   session table, 1 process:    {}", fmt(&t1));
    println!("   session table, 2 processes:  {}", fmt(&t2));
    println!("   Mutex<HashMap>, 1 thread:    {}", fmt(&m1));
    println!("   Mutex<HashMap>, 2 threads:   {}", fmt(&m2));
    let s1: f64 = t1.iter().sum();
    let s2: f64 = t2.iter().sum();
    println!(
        "   table 2 processes / 1 process: {:.2}x; table/map at 1: {:.2}x, at 2: {:.2}x",
        s2 / s1,
        s1 / m1.iter().sum::<f64>(),
        s2 / m2.iter().sum::<f64>()
    );
    let _ = std::fs::remove_file(&ids_file);
}

fn part_memory(dir: &Path) {
    let (mut c, out) = spawn(
        "mem",
        &[("MTIPC_BENCH_DOMAIN", dir.join("mem").display().to_string())],
    );
    drop(c.stdin.take());
    let kv: HashMap<String, String> = out
        .lines()
        .map(|l| {
            let l = l.unwrap();
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(c.wait().unwrap().success(), "mem process failed");
    let n = |k: &str| -> f64 { kv[k].parse().unwrap() };
    let mib = |b: f64| b / (1 << 20) as f64;
    println!();
    println!("3. memory, table of 1,000,000 slots (fresh process):");
    println!(
        "   bytes per session entry: {:.0}; header + process records: {:.0} bytes",
        n("entry_bytes"),
        n("header_records_bytes")
    );
    println!(
        "   region (file size): {:.0} bytes = {:.1} MiB; target <= 256 MiB: {}",
        n("file_bytes"),
        mib(n("file_bytes")),
        met(n("file_bytes") <= (256u64 << 20) as f64)
    );
    println!(
        "   as created: {:.0} us, {:.1} MiB of blocks allocated, resident set +{:.1} MiB",
        n("create_us"),
        mib(n("blocks_bytes_created")),
        mib(n("rss_after_open"))
    );
    println!(
        "   filled with 1,000,000 sessions ({:.2} s; one more: {}): blocks {:.1} MiB, \
         resident set +{:.1} MiB (shared file pages +{:.1} MiB)",
        n("fill_s"),
        kv["full_kind"],
        mib(n("blocks_bytes_filled")),
        mib(n("rss_after_fill")),
        mib(n("shared_after_fill"))
    );
    println!(
        "   full scan of the 1,000,000 sessions (pages resident): {:.2} s ({:.0} found)",
        n("scan_s"),
        n("scanned")
    );
    println!(
        "   baseline: a HashMap<u64, Record> of 1,000,000 records adds {:.1} MiB resident \
         ({:.0} bytes per record)",
        mib(n("map_rss")),
        n("map_rss") / 1e6
    );
}

fn main() {
    match std::env::var("MTIPC_BENCH_ROLE").as_deref() {
        Ok("lookup") => return role_lookup(),
        Ok("mem") => return role_mem(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => {}
    }
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("(not run by `cargo bench`: smoke run with few samples)");
    }
    let rounds = env_usize("TABLE_ROUNDS", if full { 20 } else { 2 }).max(1);
    let cycles = env_usize("TABLE_CYCLES", if full { 20_000 } else { 1_000 }).max(1);
    let secs: f64 = std::env::var("TABLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1.0 } else { 0.1 });
    let dir =
        base_dir("SESSION_BENCH_DIR").join(format!("mtipc-bench-table-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Domain::open(Some(&dir)).expect("create the bench domain");
    println!("Session table vs Mutex<HashMap> (same run). {}", machine());
    println!("{}", where_line("SESSION_BENCH_DIR"));
    println!();
    part_cycles(&d, rounds, cycles);
    part_lookups(&d, &dir, secs);
    part_memory(&dir);
    println!();
    println!("load average after: {}", loadavg());
    let _ = std::fs::remove_dir_all(&dir);
}
