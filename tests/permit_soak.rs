//! The permit fault campaign (issue 11), with real processes, on each
//! backend: 8 instances on one volume (cap 3, four files), instance 0
//! queueing ten times more requests (10 threads) than each of the others
//! (1 thread). They put and get the files; now and then a writer stalls
//! past its lease before its put. The test `kill -9`s a random instance at
//! random moments and starts it again. Each process logs its grants,
//! commits, fenced calls, releases and reads to its own file; at the end
//! the test checks:
//!
//! - no two conflicting holders overlapped (a write with any other transfer
//!   of its path), and never more than 3 held at once, using intervals that
//!   are inside the true ones (from after the grant returned to the
//!   release, the kill, or the earliest moment the lease could run out,
//!   whichever is first), so an overlap found is a real one;
//! - no commit by a fenced permit landed: every stalled put was `Fenced`
//!   (at least one was, or the run proves nothing),
//!   and each file's final content carries the token of a permitted write
//!   that was never fenced (nor refused), at least the last logged
//!   commit's;
//! - every file read during the run and every file left at the end is
//!   whole (its checksum holds);
//! - nothing waited forever: no request ran out of its wait (10 s; 20 s on
//!   etcd); and no call failed in any other way (a child's panic is logged
//!   and fails the test).
//!
//! The backends:
//!
//! - shared memory (`permits_survive_kill_9_and_stalls`): one domain, a
//!   500 ms lease, a kill every 50–300 ms, one write in 50 stalled;
//! - etcd (`etcd_permits_survive_kill_9_and_stalls`): a real etcd started by
//!   the test (tests/common/etcd.rs), two "hosts": instances 0–3 in one
//!   domain, 4–7 in another, each domain recording the volume under the
//!   same name, directory and etcd; a 1 s lease (etcd's leases are whole
//!   seconds; the fixture's etcd grants 1 s as 1 s), a kill every
//!   1.5–3.5 s: a killed holder keeps its path until its lease runs out,
//!   and a killed waiter stays queued until its session lease does (2 s),
//!   holding back every request behind it (each waiter grants itself only
//!   when it is the first its pass would grant); at a kill every 0.4–1.2 s
//!   the volume made 3–5 grants a second. One write in 50 stalls, and each
//!   process's first (a short run has fewer grants). It also checks that
//!   the volume empties once every instance is dead, and the reclaimed
//!   permits it reports (the last 32): each is a permit of one of our
//!   processes, and of the path and process its log says.
//!
//! The etcd backend's lease bound: a permit's etcd lease was confirmed
//! (granted or kept alive) at most `RENEW_AFTER` (50 ms) before the grant
//! transaction was sent, so it lives at least its TTL less 50 ms from the
//! moment the request was made (docs/permit.md, etcd backend, "Request").
//! A commit renews the lease: its end only moves later, and the intervals
//! stay inside the true ones.
//!
//! `PERMIT_SOAK_SECONDS` sets the length of each: `make test` runs 6 s on
//! shared memory and 10 s on etcd, `make soak-permit` 60 s each.

mod common;
#[cfg(feature = "etcd")]
#[path = "common/etcd.rs"]
mod etcd_server;

use common::{role_command, say, Kids, Rng, Scratch};
use mtipc::permit::{volume, Mode, Volume, VolumeOpts};
use mtipc::{Domain, ErrorKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

const VAR: &str = "MTIPC_SOAK";
const PATHS: [&str; 4] = ["a.bin", "dir/b.bin", "dir/c.bin", "d.bin"];
const CAP: usize = 3;
const INSTANCES: usize = 8;

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

/// A process's log: lines appended with one write(2) each, `O_APPEND`, so
/// that a kill leaves whole lines behind (at worst a last one cut short,
/// which the reader skips) and the threads' lines do not mix.
#[derive(Clone)]
struct Log(Arc<std::fs::File>);

impl Log {
    fn open(path: &str) -> Log {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        Log(Arc::new(f))
    }

    fn line(&self, s: String) {
        let one: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
        (&*self.0).write_all(format!("{one}\n").as_bytes()).unwrap();
    }
}

/// Not a test of its own: the entry point of the instances. Without
/// `MTIPC_SOAK_ROLE` it does nothing.
#[test]
fn child_entry() {
    let Some((role, args)) = common::child_role(VAR) else {
        return;
    };
    assert_eq!(role, "instance");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (dom, threads, log, seed, work) = (a[0], a[1], a[2], a[3], a[4]);
    let how = How {
        stall_one_in: a[5].parse().unwrap(),
        stall_first: a[6] == "1",
        wait: Duration::from_secs(a[7].parse().unwrap()),
    };
    let log = Log::open(log);
    log.line(format!("I {}", std::process::id()));
    // A panic (an unexpected error) fails the campaign: say it in the log,
    // which the parent reads, rather than only on stderr.
    let on_panic = log.clone();
    std::panic::set_hook(Box::new(move |info| on_panic.line(format!("E {info}"))));
    // The library's warnings (an etcd commit that overran its safety
    // margin, a release that could not reach etcd) go to the log too.
    let on_event = log.clone();
    mtipc::log::set_logger(
        Arc::new(move |_, _, m: &str| on_event.line(format!("W {m}"))),
        mtipc::log::Level::Warn,
    );
    let d = Domain::open(Some(dom.as_ref())).unwrap();
    let v = Volume::open(&d, "soak").unwrap();
    let threads: u64 = threads.parse().unwrap();
    let seed: u64 = seed.parse().unwrap();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (v, log) = (v.clone(), log.clone());
            let work = PathBuf::from(work).join(format!("t{t}"));
            std::fs::create_dir_all(&work).unwrap();
            let seed = seed ^ (t + 1) << 32;
            // Thread 0 may stall its first write (see `How`).
            let how = How {
                stall_first: how.stall_first && t == 0,
                ..how
            };
            std::thread::spawn(move || instance_thread(&v, &log, &work, seed, how))
        })
        .collect();
    say("up");
    for h in hs {
        let _ = h.join();
    }
}

/// How an instance behaves (the campaign's settings that the children
/// need).
#[derive(Clone, Copy)]
struct How {
    /// One write in this many stalls past its lease before its put.
    stall_one_in: u64,
    /// The first write stalls too (so that a short run has stalls).
    stall_first: bool,
    /// Each request's wait.
    wait: Duration,
}

fn instance_thread(v: &Arc<Volume>, log: &Log, work: &Path, seed: u64, how: How) {
    let mut rng = Rng(seed | 1);
    let mut first_write = how.stall_first;
    loop {
        let path = PATHS[rng.below(PATHS.len() as u64) as usize];
        let write = rng.below(3) != 0;
        let mode = if write { Mode::Write } else { Mode::Read };
        let asked = common::mono_ns();
        let p = match v.request(path, mode, how.wait) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::Timeout => {
                log.line(format!("T {path} {asked}"));
                continue;
            }
            Err(e) => panic!("request: {e}"),
        };
        let tok = p.token();
        let granted = common::mono_ns();
        let lease = p.lease();
        log.line(format!(
            "G {tok} {path} {} {asked} {granted} {}",
            if write { "w" } else { "r" },
            lease.as_millis()
        ));
        // A commit that etcd could not confirm with the safety margin left
        // (`Unavailable`, nothing renamed): allowed, logged, and its write
        // must not be the one found in the file.
        let refused = |e: &mtipc::Error| e.kind() == ErrorKind::Unavailable;
        if write {
            let stall = rng.below(how.stall_one_in) == 0 || std::mem::take(&mut first_write);
            let src = work.join("src");
            std::fs::write(&src, content(tok, &mut rng)).unwrap();
            if stall {
                log.line(format!("S {tok}"));
                std::thread::sleep(lease + Duration::from_millis(200));
            }
            match p.put(&src) {
                Ok(_) => log.line(format!("C {tok} {}", common::mono_ns())),
                Err(e) if e.kind() == ErrorKind::Fenced => log.line(format!("F {tok}")),
                Err(e) if refused(&e) => log.line(format!("U {tok} {e}")),
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
                Err(e) if refused(&e) => log.line(format!("U {tok} {e}")),
                Err(e) => panic!("get: {e}"),
            }
        }
        let released = common::mono_ns();
        drop(p);
        log.line(format!("R {tok} {released}"));
    }
}

/// How a campaign runs on one backend.
struct Campaign {
    /// Scratch tag and name in the report.
    name: &'static str,
    /// The volume's lease, as recorded.
    lease_ms: u64,
    /// How long before its request a permit's lease may have been
    /// confirmed (see the file's comment): the lease runs out no earlier
    /// than `asked + lease - slack`.
    lease_slack_ms: u64,
    /// A kill every `kill_every.0 + [0, kill_every.1)` ms.
    kill_every: (u64, u64),
    how: How,
    /// Length when `PERMIT_SOAK_SECONDS` is not set.
    default_secs: f64,
    /// Fewest grants the run must make per second.
    min_grants_per_s: f64,
    /// The etcd endpoint, for a volume on etcd.
    etcd: Option<String>,
    /// Domains ("hosts") the instances are split across.
    domains: usize,
}

struct Hold {
    path: String,
    write: bool,
    from: u64,
    /// The end of an interval inside the true one; `u64::MAX` until known.
    to: u64,
    fenced: bool,
    /// Its commit was refused (`Unavailable`: etcd answered too late).
    refused: bool,
    stalled: bool,
    committed: Option<u64>,
    released: bool,
    asked: u64,
    lease_ms: u64,
    /// Which process (log) it came from.
    log: usize,
}

/// What the logs say.
#[derive(Default)]
struct Logs {
    holds: BTreeMap<u64, Hold>,
    /// The pid of each log's process.
    pids: HashMap<usize, u32>,
    timeouts: usize,
    reads: usize,
    bad_reads: usize,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// The hold of token `tok`, which line `l` is about.
fn hold<'a>(holds: &'a mut BTreeMap<u64, Hold>, tok: u64, l: &str) -> &'a mut Hold {
    holds
        .get_mut(&tok)
        .unwrap_or_else(|| panic!("log line {l:?} before its grant"))
}

fn read_logs(files: &[PathBuf]) -> Logs {
    let mut out = Logs::default();
    for (li, f) in files.iter().enumerate() {
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
                "I" => {
                    out.pids.insert(li, w[1].parse().unwrap());
                }
                "G" => {
                    let prev = out.holds.insert(
                        tok(),
                        Hold {
                            path: w[2].into(),
                            write: w[3] == "w",
                            asked: w[4].parse().unwrap(),
                            from: w[5].parse().unwrap(),
                            lease_ms: w[6].parse().unwrap(),
                            to: u64::MAX,
                            fenced: false,
                            refused: false,
                            stalled: false,
                            committed: None,
                            released: false,
                            log: li,
                        },
                    );
                    assert!(prev.is_none(), "token {} granted twice", tok());
                }
                "S" => hold(&mut out.holds, tok(), l).stalled = true,
                "F" => hold(&mut out.holds, tok(), l).fenced = true,
                "U" => hold(&mut out.holds, tok(), l).refused = true,
                "C" => hold(&mut out.holds, tok(), l).committed = Some(w[2].parse().unwrap()),
                "R" => {
                    let h = hold(&mut out.holds, tok(), l);
                    h.to = w[2].parse().unwrap();
                    h.released = true;
                }
                "V" => {
                    out.reads += 1;
                    if w[2] != "ok" {
                        out.bad_reads += 1;
                    }
                }
                "T" => out.timeouts += 1,
                "E" => out.errors.push(format!("{}: {}", f.display(), &l[2..])),
                "W" => out.warnings.push(format!("{}: {}", f.display(), &l[2..])),
                other => panic!("log line {other:?}"),
            }
        }
    }
    out
}

impl Campaign {
    fn run(&self) {
        let secs: f64 = std::env::var("PERMIT_SOAK_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.default_secs);
        let s = Scratch::create(self.name);
        let vol = s.dir().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
        let opts = VolumeOpts {
            max_transfers: CAP as u32,
            lease: Some(Duration::from_millis(self.lease_ms)),
            etcd: self.etcd.clone(),
        };
        // Each "host" records the same volume: same name, directory, cap,
        // lease and backend.
        let doms: Vec<String> = (0..self.domains)
            .map(|i| {
                let p = s.dir().join(format!("domain-{i}"));
                let d = Domain::open(Some(&p)).unwrap();
                volume::create(&d, "soak", &vol, &opts).unwrap();
                p.display().to_string()
            })
            .collect();
        let logs = s.dir().join("logs");
        std::fs::create_dir(&logs).unwrap();
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
                    doms[id * self.domains / INSTANCES].clone(),
                    threads.into(),
                    log.display().to_string(),
                    rng.next().to_string(),
                    work.display().to_string(),
                    self.how.stall_one_in.to_string(),
                    if self.how.stall_first { "1" } else { "0" }.into(),
                    self.how.wait.as_secs().to_string(),
                ],
            )
            .spawn()
            .unwrap();
            common::wait_said(&mut c, "up");
            (c, log_files.len() - 1)
        };
        let mut kids = Kids::default();
        let mut which: Vec<usize> = Vec::new();
        for id in 0..INSTANCES {
            let (c, l) = spawn(id, &mut log_files, &mut rng);
            kids.0.push(c);
            which.push(l);
        }
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            let (base, span) = self.kill_every;
            std::thread::sleep(Duration::from_millis(base + rng.below(span)));
            let id = rng.below(INSTANCES as u64) as usize;
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
        let ran = start.elapsed().as_secs_f64();

        let kill_at: HashMap<usize, u64> = kills.iter().copied().collect();
        let Logs {
            mut holds,
            pids,
            timeouts,
            reads,
            bad_reads,
            errors,
            warnings,
        } = read_logs(&log_files);
        let shown = |v: &[String]| v[..v.len().min(5)].join("\n  ");
        assert!(
            errors.is_empty(),
            "{} calls failed unexpectedly:\n  {}",
            errors.len(),
            shown(&errors)
        );
        for h in holds.values_mut() {
            // Inside the true interval: before the kill was sent, and
            // before the lease could have run out (nobody renews but a
            // commit, which only makes it later; the lease was confirmed
            // at most the slack before the request was made).
            if h.to == u64::MAX {
                h.to = kill_at[&h.log];
            }
            h.to =
                h.to.min(h.asked + (h.lease_ms - self.lease_slack_ms) * 1_000_000);
        }
        let grants = holds.len();
        assert!(
            grants as f64 > self.min_grants_per_s * secs,
            "only {grants} grants in {secs} s"
        );
        assert_eq!(
            timeouts, 0,
            "requests that ran out of a {:?} wait",
            self.how.wait
        );
        assert_eq!(
            bad_reads, 0,
            "reads of files that were not whole ({reads} reads)"
        );
        check_overlaps(&holds);

        // Fencing: every stalled put was fenced; the final contents are
        // whole and from writes that were neither fenced nor refused, the
        // latest commit's or later.
        let stalled: Vec<&Hold> = holds.values().filter(|h| h.stalled).collect();
        let stalled_landed = stalled.iter().filter(|h| h.committed.is_some()).count();
        assert_eq!(stalled_landed, 0, "a put after the lease ran out landed");
        assert!(
            stalled.iter().all(|h| h.fenced || !h.released),
            "a stalled put that was not fenced"
        );
        assert!(
            stalled.iter().any(|h| h.fenced),
            "no stalled put was fenced in this run ({} stalled): the check did not happen",
            stalled.len()
        );
        // A commit that overran the etcd backend's safety margin is the
        // limit of a lease (docs/permit.md): shown with a failure below.
        let margin = || format!("library warnings: {}", shown(&warnings));
        let not_landed: HashSet<u64> = holds
            .iter()
            .filter(|(_, h)| h.fenced || h.refused)
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
                !not_landed.contains(&tok),
                "{p} holds the write of permit {tok}, whose put was fenced or refused; {}",
                margin()
            );
            let last_commit = holds
                .iter()
                .filter(|(_, h)| h.path == p && h.committed.is_some())
                .map(|(t, _)| *t)
                .max()
                .unwrap_or(0);
            assert!(
                tok >= last_commit,
                "{p} holds token {tok}, older than commit {last_commit}; {}",
                margin()
            );
            files_checked += 1;
        }
        assert!(files_checked > 0);
        let fenced = holds.values().filter(|h| h.fenced).count();
        let longest = holds.values().map(|h| h.from - h.asked).max().unwrap_or(0);
        let mut report = format!(
            "soak ({}): {ran:.1} s, {grants} grants (longest wait {:.1} s), {} kills, {} \
             stalled puts ({} fenced, the others killed while stalled), {fenced} fenced calls \
             in all, {reads} reads, {files_checked} files whole, {} library warnings",
            self.name,
            longest as f64 / 1e9,
            kills.len() - INSTANCES,
            stalled.len(),
            stalled.iter().filter(|h| h.fenced).count(),
            warnings.len()
        );
        if self.etcd.is_some() {
            let refused = holds.values().filter(|h| h.refused).count();
            report.push_str(&format!(
                ", {refused} commits refused (etcd answered too late)"
            ));
            report.push_str(&check_reclaimed(&doms[0], &holds, &pids));
        }
        println!("{report}");
    }
}

/// No two conflicting holds overlap; never more than the cap at once.
fn check_overlaps(holds: &BTreeMap<u64, Hold>) {
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
}

/// Once every instance is dead, the etcd volume empties (holders and
/// queue) within the leases' and sessions' time. The permits it reports
/// reclaimed (the last 32): each is a permit of one of our
/// processes, and one that its log shows granted is of its path and
/// process. Returns the counts by reason for the report.
fn check_reclaimed(dom: &str, holds: &BTreeMap<u64, Hold>, pids: &HashMap<usize, u32>) -> String {
    use mtipc::permit::ReclaimReason;
    let d = Domain::open(Some(dom.as_ref())).unwrap();
    let v = Volume::open(&d, "soak").unwrap();
    // Every process is dead now: what they held or queued goes with their
    // leases (1 s) and sessions (2 s).
    let t = Instant::now();
    let st = loop {
        let st = v.status().unwrap();
        if st.holders.is_empty() && st.queue.is_empty() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(6), "left behind: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (mut dead, mut expired) = (0, 0);
    let ours: HashSet<u32> = pids.values().copied().collect();
    for r in &st.reclaimed {
        assert!(ours.contains(&r.instance.pid), "reclaimed {r:?}: not ours");
        // A grant that landed but never reached its process's log (killed
        // first, or lost at once on a lease that had lapsed) is not there.
        if let Some(h) = holds.get(&r.token) {
            assert_eq!(h.path, r.path, "{r:?}");
            assert_eq!(pids.get(&h.log), Some(&r.instance.pid), "{r:?}");
        }
        match r.reason {
            ReclaimReason::Dead => dead += 1,
            ReclaimReason::Expired => expired += 1,
        }
    }
    format!("; the volume's last reclaimed permits: {dead} dead, {expired} expired")
}

#[test]
fn permits_survive_kill_9_and_stalls() {
    let _s = common::serial();
    Campaign {
        name: "shm",
        lease_ms: 500,
        lease_slack_ms: 0,
        kill_every: (50, 250),
        how: How {
            stall_one_in: 50,
            stall_first: false,
            wait: Duration::from_secs(10),
        },
        default_secs: 6.0,
        min_grants_per_s: 16.0,
        etcd: None,
        domains: 1,
    }
    .run();
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_permits_survive_kill_9_and_stalls() {
    let _s = common::serial();
    let etcd = etcd_server::Etcd::start();
    let c = Campaign {
        name: "etcd",
        lease_ms: 1000,
        lease_slack_ms: 50,
        kill_every: (1500, 2000),
        // Fewer grants than on shared memory: each process's first write
        // stalls too, so that a short run has stalls. A longer wait: a
        // round of the fair order is slower here (a dead waiter holds
        // every request back until its session runs out, a stalled holder
        // keeps its path for its lease), and instance 0's tenth request
        // waits ten rounds (at 1 write in 12 stalling, four requests of a
        // 60 s run ran out of a 10 s wait).
        how: How {
            stall_one_in: 50,
            stall_first: true,
            wait: Duration::from_secs(20),
        },
        default_secs: 10.0,
        min_grants_per_s: 5.0,
        etcd: Some(etcd.url()),
        domains: 2,
    };
    c.run();
    drop(etcd);
}
