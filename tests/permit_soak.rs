//! The permit fault campaign (issue 11), with real processes: 8 instances on
//! one volume (cap 3, lease 500 ms, four files), instance 0 queueing ten
//! times more requests (10 threads) than each of the others (1 thread).
//! They put and get the files; now and then a writer stalls past its lease
//! before its put. The test `kill -9`s a random instance at random moments
//! and starts it again. Each process logs its grants, commits, fenced
//! calls, releases and reads to its own file; at the end the test checks:
//!
//! - no two conflicting holders overlapped (a write with any other transfer
//!   of its path), and never more than 3 held at once, using intervals that
//!   are inside the true ones (from after the grant returned to the
//!   release, the kill, or the earliest moment the lease could run out,
//!   whichever is first), so an overlap found is a real one;
//! - no commit by a fenced permit landed: every stalled put was `Fenced`,
//!   and each file's final content carries the token of a permitted write
//!   that was never fenced, at least the last logged commit's;
//! - every file read during the run and every file left at the end is
//!   whole (its checksum holds);
//! - nothing waited forever: no request ran out of its 10 s wait.
//!
//! `PERMIT_SOAK_SECONDS` sets the length: `make test` runs 6 s,
//! `make soak-permit` 60 s.

mod common;

use common::{role_command, say, Kids, Rng, Scratch};
use mtipc::permit::{volume, Mode, Volume, VolumeOpts};
use mtipc::{Domain, ErrorKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

const VAR: &str = "MTIPC_SOAK";
const PATHS: [&str; 4] = ["a.bin", "dir/b.bin", "dir/c.bin", "d.bin"];
const LEASE_MS: u64 = 500;
const CAP: usize = 3;

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A file's content: token (8 bytes LE), body, FNV-1a of token + body.
fn content(token: u64, rng: &mut Rng) -> Vec<u8> {
    let len = 4096 + rng.below(200_000) as usize;
    let mut v = token.to_le_bytes().to_vec();
    v.extend(rng.bytes(len));
    let h = fnv(&v);
    v.extend(h.to_le_bytes());
    v
}

/// The token of a whole file, or `None` if its checksum does not hold.
fn whole(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 16 {
        return None;
    }
    let (data, sum) = bytes.split_at(bytes.len() - 8);
    (fnv(data).to_le_bytes() == sum).then(|| u64::from_le_bytes(data[..8].try_into().unwrap()))
}

struct Log(std::fs::File);

impl Log {
    fn line(&mut self, s: String) {
        // One write(2) per line, O_APPEND: a kill leaves whole lines behind
        // (and at worst a last one cut short, which the reader skips).
        self.0.write_all(format!("{s}\n").as_bytes()).unwrap();
    }
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(format!("{VAR}_ROLE")) else {
        return;
    };
    assert_eq!(role, "instance");
    let args_var = std::env::var(format!("{VAR}_ARGS")).unwrap();
    let a: Vec<&str> = args_var.split('\u{1f}').collect();
    let (dom, threads, log, seed, work) = (a[0], a[1], a[2], a[3], a[4]);
    let d = Domain::open(Some(dom.as_ref())).unwrap();
    let v = Volume::open(&d, "soak").unwrap();
    let threads: u64 = threads.parse().unwrap();
    let seed: u64 = seed.parse().unwrap();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let v = v.clone();
            let log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(log)
                .unwrap();
            let work = PathBuf::from(work).join(format!("t{t}"));
            std::fs::create_dir_all(&work).unwrap();
            std::thread::spawn(move || instance_thread(&v, Log(log), &work, seed ^ (t + 1) << 32))
        })
        .collect();
    say("up");
    for h in hs {
        h.join().unwrap();
    }
}

fn instance_thread(v: &std::sync::Arc<Volume>, mut log: Log, work: &Path, seed: u64) {
    let mut rng = Rng(seed | 1);
    loop {
        let path = PATHS[rng.below(PATHS.len() as u64) as usize];
        let write = rng.below(3) != 0;
        let mode = if write { Mode::Write } else { Mode::Read };
        let asked = common::mono_ns();
        let p = match v.request(path, mode, Duration::from_secs(10)) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::Timeout => {
                log.line(format!("T {path} {asked}"));
                continue;
            }
            Err(e) => panic!("request: {e}"),
        };
        let tok = p.token();
        let granted = common::mono_ns();
        log.line(format!(
            "G {tok} {path} {} {asked} {granted}",
            if write { "w" } else { "r" }
        ));
        if write {
            let stall = rng.below(50) == 0;
            let src = work.join("src");
            std::fs::write(&src, content(tok, &mut rng)).unwrap();
            if stall {
                log.line(format!("S {tok}"));
                std::thread::sleep(Duration::from_millis(LEASE_MS + 200));
            }
            match p.put(&src) {
                Ok(_) => log.line(format!("C {tok} {}", common::mono_ns())),
                Err(e) if e.kind() == ErrorKind::Fenced => log.line(format!("F {tok}")),
                Err(e) => panic!("put: {e}"),
            }
        } else {
            let dst = work.join("dst");
            match p.get(&dst) {
                Ok(_) => {
                    let ok = whole(&std::fs::read(&dst).unwrap()).is_some();
                    log.line(format!("V {tok} {}", if ok { "ok" } else { "bad" }));
                }
                // Not written yet.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::Fenced => log.line(format!("F {tok}")),
                Err(e) => panic!("get: {e}"),
            }
        }
        let released = common::mono_ns();
        drop(p);
        log.line(format!("R {tok} {released}"));
    }
}

struct Hold {
    path: String,
    write: bool,
    from: u64,
    /// The end of an interval inside the true one; `u64::MAX` until known.
    to: u64,
    fenced: bool,
    stalled: bool,
    committed: Option<u64>,
    asked: u64,
    /// Which process (log) it came from.
    log: usize,
}

#[test]
fn permits_survive_kill_9_and_stalls() {
    let secs: f64 = std::env::var("PERMIT_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6.0);
    let s = Scratch::create("soak");
    let d = Domain::open(Some(&s.dir().join("domain"))).unwrap();
    let vol = s.dir().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opts = VolumeOpts {
        max_transfers: CAP as u32,
        lease: Some(Duration::from_millis(LEASE_MS)),
        etcd: None,
    };
    volume::create(&d, "soak", &vol, &opts).unwrap();
    let logs = s.dir().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let dom = s.dir().join("domain").display().to_string();
    let mut rng = Rng(0x50a1_u64 ^ common::mono_ns() | 1);
    let mut log_files: Vec<PathBuf> = Vec::new();
    // Log index of each kill, with the time it was sent.
    let mut kills: Vec<(usize, u64)> = Vec::new();
    let spawn = |id: usize, log_files: &mut Vec<PathBuf>, rng: &mut Rng| -> (Child, usize) {
        let log = logs.join(format!("{id}-{}.log", log_files.len()));
        log_files.push(log.clone());
        let threads = if id == 0 { "10" } else { "1" };
        let work = s.dir().join(format!("work-{}", log_files.len()));
        let mut c = role_command(
            VAR,
            "instance",
            &[
                dom.clone(),
                threads.into(),
                log.display().to_string(),
                rng.next().to_string(),
                work.display().to_string(),
            ],
        )
        .spawn()
        .unwrap();
        common::wait_said(&mut c, "up");
        (c, log_files.len() - 1)
    };
    let mut kids = Kids::default();
    let mut which: Vec<usize> = Vec::new();
    for id in 0..8 {
        let (c, l) = spawn(id, &mut log_files, &mut rng);
        kids.0.push(c);
        which.push(l);
    }
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
        let id = rng.below(8) as usize;
        let t = common::mono_ns();
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(kids.0[id].id() as i32, libc::SIGKILL) };
        kids.0[id].wait().unwrap();
        kills.push((which[id], t));
        let (c, l) = spawn(id, &mut log_files, &mut rng);
        kids.0[id] = c;
        which[id] = l;
    }
    let end = common::mono_ns();
    for (id, c) in kids.0.iter_mut().enumerate() {
        // SAFETY: as above.
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        c.wait().unwrap();
        kills.push((which[id], end));
    }

    // Read the logs.
    let kill_at: HashMap<usize, u64> = kills.iter().copied().collect();
    let mut holds: BTreeMap<u64, Hold> = BTreeMap::new();
    let (mut timeouts, mut bad_reads, mut reads) = (0, 0, 0);
    for (li, f) in log_files.iter().enumerate() {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let n = if complete {
            lines.len()
        } else {
            lines.len().saturating_sub(1)
        };
        for l in &lines[..n] {
            let w: Vec<&str> = l.split(' ').collect();
            let tok = || w[1].parse::<u64>().unwrap();
            match w[0] {
                "G" => {
                    let prev = holds.insert(
                        tok(),
                        Hold {
                            path: w[2].into(),
                            write: w[3] == "w",
                            asked: w[4].parse().unwrap(),
                            from: w[5].parse().unwrap(),
                            to: u64::MAX,
                            fenced: false,
                            stalled: false,
                            committed: None,
                            log: li,
                        },
                    );
                    assert!(prev.is_none(), "token {} granted twice", tok());
                }
                "S" => holds.get_mut(&tok()).unwrap().stalled = true,
                "F" => holds.get_mut(&tok()).unwrap().fenced = true,
                "C" => holds.get_mut(&tok()).unwrap().committed = Some(w[2].parse().unwrap()),
                "R" => holds.get_mut(&tok()).unwrap().to = w[2].parse().unwrap(),
                "V" => {
                    reads += 1;
                    if w[2] != "ok" {
                        bad_reads += 1;
                    }
                }
                "T" => timeouts += 1,
                other => panic!("log line {other:?}"),
            }
        }
    }
    for h in holds.values_mut() {
        // Inside the true interval: before the kill was sent, and before
        // the lease could have run out (nobody renews; the lease starts at
        // the grant, after the request was made).
        if h.to == u64::MAX {
            h.to = kill_at[&h.log];
        }
        h.to = h.to.min(h.asked + LEASE_MS * 1_000_000);
    }
    let grants = holds.len();
    assert!(grants > 100, "only {grants} grants in {secs} s");
    assert_eq!(timeouts, 0, "requests that ran out of a 10 s wait");
    assert_eq!(
        bad_reads, 0,
        "reads of files that were not whole ({reads} reads)"
    );

    // No conflicting overlap; the cap held.
    let list: Vec<(&u64, &Hold)> = holds.iter().collect();
    let mut events: Vec<(u64, i32)> = Vec::new();
    for (i, (ta, a)) in list.iter().enumerate() {
        if a.from < a.to {
            events.push((a.from, 1));
            events.push((a.to, -1));
        }
        for (tb, b) in &list[i + 1..] {
            if a.path == b.path && (a.write || b.write) {
                let overlap = a.from.max(b.from) < a.to.min(b.to);
                assert!(
                    !overlap,
                    "conflicting permits {ta} and {tb} on {} overlapped: {} [{}, {}] log {} and {} [{}, {}] log {}",
                    a.path,
                    if a.write { "write" } else { "read" },
                    a.from,
                    a.to,
                    a.log,
                    if b.write { "write" } else { "read" },
                    b.from,
                    b.to,
                    b.log
                );
            }
        }
    }
    events.sort();
    let mut cur = 0;
    for (_, d) in events {
        cur += d;
        assert!(cur <= CAP as i32, "more than {CAP} permits held at once");
    }

    // Fencing: every stalled put was fenced; the final contents are whole
    // and from writes that were never fenced, the latest commit's or later.
    let stalled: Vec<&Hold> = holds.values().filter(|h| h.stalled).collect();
    let stalled_landed = stalled.iter().filter(|h| h.committed.is_some()).count();
    assert_eq!(stalled_landed, 0, "a put after the lease ran out landed");
    let fenced: HashSet<u64> = holds
        .iter()
        .filter(|(_, h)| h.fenced)
        .map(|(t, _)| *t)
        .collect();
    let mut files_checked = 0;
    for p in PATHS {
        let Ok(bytes) = std::fs::read(vol.join(p)) else {
            continue;
        };
        let tok = whole(&bytes).unwrap_or_else(|| panic!("{p} is not whole at the end"));
        let h = holds
            .get(&tok)
            .unwrap_or_else(|| panic!("{p} holds token {tok}, never granted"));
        assert!(
            h.write && h.path == p,
            "{p} holds token {tok}, not a write of it"
        );
        assert!(
            !fenced.contains(&tok),
            "{p} holds the write of fenced permit {tok}"
        );
        let last_commit = holds
            .iter()
            .filter(|(_, h)| h.path == p && h.committed.is_some())
            .map(|(t, _)| *t)
            .max()
            .unwrap_or(0);
        assert!(
            tok >= last_commit,
            "{p} holds token {tok}, older than commit {last_commit}"
        );
        files_checked += 1;
    }
    assert!(files_checked > 0);
    println!(
        "soak: {secs} s, {grants} grants, {} kills, {} stalled puts (all fenced), {reads} reads, {files_checked} files whole",
        kills.len() - 8,
        stalled.len()
    );
}
