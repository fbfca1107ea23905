//! The domain's notification semaphore between real processes: the `mtipc`
//! binary (`mtipc sem wait`) and this test binary re-executed as a child
//! (see [`child_entry`]); no thread stands in for a process.
//!
//! - [`post_n_wakes_exactly_n_blocked_processes`]: 6 processes blocked in
//!   `sem wait`; `post(4)` wakes exactly 4, `post(2)` the other 2.
//! - [`killed_waiter_does_not_consume_a_post`]: a waiter `kill -9`ed while
//!   blocked takes nothing; the next waiter gets the unit at once.
//! - [`posters_killed_at_random_moments`]: posters `kill -9`ed at random
//!   moments while waiter processes take; no post that completed is lost, no
//!   unit is taken that was never posted, and the domain still works.
//! - [`poster_killed_between_add_and_wake`]: a poster dies (failpoint
//!   `sem-post-before-wake`) after its atomic add and before its futex
//!   wake; the sleepers take the units anyway, by their periodic re-check.
//! - [`concurrent_creation_of_one_domain`]: two processes create the same new
//!   domain at the same instant, many times; both succeed and share it.
//!
//! Whether a post's wake reached a sleeper is checked by order, not by
//! time: [`wake_sleepers`] asks the kernel how many processes sleep on the
//! semaphore word, and right after a post that must wake them it is 0 (a
//! sleeper the post missed stays queued until its re-check). The tests take
//! a common lock so that they do not compete for the CPUs with each other
//! (the whole file runs in well under 20 s on two cores).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{mono_ns, read_all, serial, wait_exit, Kids, Rng, Scratch};
use mtipc::internals::sync::Futex;
use mtipc::{Domain, ErrorKind};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

/// How long a sleeping waiter waits at most before it re-reads the count
/// (`RECHECK` in src/sync/semaphore.rs, which is not exported).
const RECHECK: Duration = Duration::from_millis(250);

fn mtipc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mtipc")
}

/// `mtipc --domain D sem wait --timeout-ms T`, stdout and stderr piped.
fn spawn_sem_wait(domain: &Path, timeout_ms: u64) -> Child {
    Command::new(mtipc_bin())
        .arg("--domain")
        .arg(domain)
        .args(["sem", "wait", "--timeout-ms", &timeout_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mtipc sem wait")
}

/// This test binary again, running [`child_entry`] as `role`.
fn spawn_role(role: &str, args: &[String]) -> Child {
    common::role_command("MTIPC_MP", role, args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-exec the test binary")
}

fn proc_file(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{name}")).unwrap_or_default()
}

/// The process state letter from /proc/<pid>/stat.
fn proc_state(pid: u32) -> Option<char> {
    let stat = proc_file(pid, "stat");
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Is `pid` asleep inside the futex system call?
fn in_futex_wait(pid: u32) -> bool {
    if proc_state(pid) != Some('S') {
        return false;
    }
    let wchan = proc_file(pid, "wchan");
    if wchan.contains("futex") {
        return true;
    }
    // Kernels that hide wchan: the system call the task is blocked in.
    let nr = format!("{} ", libc::SYS_futex);
    proc_file(pid, "syscall").starts_with(&nr)
}

fn describe(pid: u32) -> String {
    format!(
        "state {:?}, wchan {:?}, syscall {:?}",
        proc_state(pid),
        proc_file(pid, "wchan"),
        proc_file(pid, "syscall").split(' ').next().unwrap_or("")
    )
}

/// Waits until `pid` sleeps in the futex call (so it is really blocked on
/// the semaphore), or panics after `within`.
fn wait_blocked(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    // Seen twice in a row, a few ms apart: not a passing moment.
    let mut seen = 0;
    loop {
        if in_futex_wait(pid) {
            seen += 1;
            if seen == 2 {
                return;
            }
        } else {
            seen = 0;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not block in futex wait within {within:?}: {}",
            describe(pid)
        );
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// Wakes every process asleep on the semaphore word of the domain at
/// `domain` and returns how many the kernel woke, i.e. how many sleepers
/// its queue held. A sleeper woken so finds the count as it was and goes
/// back to sleep (to a waiter this is one more spurious wake-up).
fn wake_sleepers(domain: &Path) -> u32 {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(domain.join("notify.sem"))
        .unwrap();
    let map = memmap2::MmapRaw::map_raw(&file).unwrap();
    assert!(map.len() >= mtipc::internals::shm::HEADER_SIZE + 4);
    // SAFETY: the count is the u32 right after the region header (as
    // `Semaphore::core` places it), aligned; `Futex` is a repr(transparent)
    // atomic u32, and only its wake (which does not touch the memory) is
    // used, while the mapping lives.
    let word =
        unsafe { &*(map.as_mut_ptr().add(mtipc::internals::shm::HEADER_SIZE) as *const Futex) };
    word.wake(i32::MAX as u32)
}

/// `wake_sleepers` once `pid`, blocked in the semaphore wait, is surely in
/// the kernel's queue: a waiter leaves it for a moment every [`RECHECK`],
/// which a probe may hit (it then finds fewer and tries again). Returns
/// the first nonzero count (0 if ten probes found nobody).
fn sleepers_with(domain: &Path, pid: u32) -> u32 {
    for _ in 0..10 {
        wait_blocked(pid, Duration::from_secs(10));
        let n = wake_sleepers(domain);
        if n > 0 {
            return n;
        }
    }
    0
}

/// Posts `n` once `pid` is blocked in its wait again, then checks that the
/// post's own futex wake took every sleeper off the kernel's queue: the
/// queue is empty right after the post returns. (A post whose wake missed
/// them leaves them queued until their re-check, at most [`RECHECK`]
/// later, which a timing check would have to tell apart on a loaded
/// machine.)
fn post_and_check_woken(sem: &mtipc::Semaphore, domain: &Path, pid: u32, n: u32) {
    wait_blocked(pid, Duration::from_secs(10));
    sem.post(n).unwrap();
    let left = wake_sleepers(domain);
    assert_eq!(
        left, 0,
        "post({n}) returned with {left} process(es) still asleep on the semaphore: \
         its wake did not reach them (their re-check would have hidden it)"
    );
}

/// Checks that a `mtipc sem wait` child exited 0 and said it was woken.
fn assert_woken(child: &mut Child, st: ExitStatus) {
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    assert!(st.success(), "waiter {} exited {st}: {err}", child.id());
    assert_eq!(
        out,
        format!("woken (pid {})\n", child.id()),
        "stderr: {err}"
    );
}

// ---------------------------------------------------------------------------
// Child roles (this binary re-executed)

/// Not a test of its own: the entry point of the child processes. Without
/// `MTIPC_MP_ROLE` it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_MP_ROLE") else {
        return;
    };
    let args_var = std::env::var("MTIPC_MP_ARGS").unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    match role.as_str() {
        "poster" => child_poster(Path::new(args[0]), args[1].parse().unwrap()),
        "post" => child_post(Path::new(args[0]), args[1].parse().unwrap()),
        "waiter" => child_waiter(Path::new(args[0]), Path::new(args[1])),
        "racer" => child_racer(
            Path::new(args[0]),
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
        ),
        other => panic!("unknown child role {other:?}"),
    }
    std::process::exit(0);
}

/// Posts forever in bursts: "posting k" before each `post(k)`, "posted k"
/// once it returned. Stdout is line buffered: each line is one write(2).
fn child_poster(domain: &Path, seed: u64) {
    let d = Domain::open(Some(domain)).expect("poster opens the domain");
    let sem = d.semaphore();
    let mut rng = Rng(seed | 1);
    let mut out = std::io::stdout().lock();
    loop {
        for _ in 0..1 + rng.below(8) {
            let k = 1 + rng.below(3) as u32;
            writeln!(out, "posting {k}").unwrap();
            sem.post(k).expect("post");
            writeln!(out, "posted {k}").unwrap();
        }
        std::thread::sleep(Duration::from_micros(rng.below(400)));
    }
}

/// Posts `n` once: "posting n" before, "posted n" after.
fn child_post(domain: &Path, n: u32) {
    let d = Domain::open(Some(domain)).expect("poster opens the domain");
    let mut out = std::io::stdout().lock();
    writeln!(out, "posting {n}").unwrap();
    out.flush().unwrap();
    d.semaphore().post(n).expect("post");
    writeln!(out, "posted {n}").unwrap();
}

/// Takes units, printing "took" after each, until a wait times out while
/// `stop` exists.
fn child_waiter(domain: &Path, stop: &Path) {
    let d = Domain::open(Some(domain)).expect("waiter opens the domain");
    let sem = d.semaphore();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    loop {
        match sem.wait(Some(Duration::from_millis(100))) {
            Ok(()) => writeln!(out, "took").unwrap(),
            Err(e) if e.kind() == ErrorKind::Timeout => {
                if stop.exists() {
                    writeln!(out, "done").unwrap();
                    return;
                }
            }
            Err(e) => panic!("waiter: {e}"),
        }
    }
}

/// For each round i: meet the other racer at a spinning barrier in a shared
/// mapping of `base/barrier`, then open (creating) `base/r<i>` at once and
/// post 1. Odd rounds shift one racer by -100..=+100 µs so that the two meet
/// at every stage of the creation; even rounds start together.
// The barrier word is the test's own shared memory: the shim's atomic, which
// is std's (`#[repr(transparent)]`) outside loom.
fn child_racer(base: &Path, rounds: u64, idx: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(base.join("barrier"))
        .unwrap();
    let map = memmap2::MmapRaw::map_raw(&file).unwrap();
    // SAFETY: the mapping is at least 4 bytes, page aligned, shared, and
    // outlives every use of `arrived`; only atomic operations touch it.
    let arrived = unsafe { &*(map.as_mut_ptr() as *const mtipc::internals::sync::AtomicU32) };
    let mut out = std::io::stdout().lock();
    for i in 0..rounds {
        use mtipc::internals::sync::Ordering;
        arrived.fetch_add(1, Ordering::AcqRel);
        let want = 2 * (i as u32 + 1);
        let mut spins = 0u32;
        while arrived.load(Ordering::Acquire) < want {
            spins = spins.wrapping_add(1);
            if spins % 4096 == 0 {
                // SAFETY: no preconditions.
                unsafe { libc::sched_yield() };
            } else {
                std::hint::spin_loop();
            }
        }
        let released = mono_ns();
        let jitter: i64 = if i % 2 == 0 {
            0
        } else {
            (((i / 2) * 5 % 21) as i64 - 10) * 10_000
        };
        let delay = match idx {
            0 if jitter < 0 => -jitter,
            1 if jitter > 0 => jitter,
            _ => 0,
        } as u64;
        while mono_ns() < released + delay {
            std::hint::spin_loop();
        }
        let start = mono_ns();
        let dir = base.join(format!("r{i}"));
        match Domain::open(Some(&dir)) {
            Ok(d) => {
                d.semaphore().post(1).expect("post");
                writeln!(
                    out,
                    "ok {i} {start} {} {}",
                    d.layout_version(),
                    d.owner_uid()
                )
                .unwrap();
            }
            Err(e) => writeln!(out, "err {i} {e}").unwrap(),
        }
    }
}

// ---------------------------------------------------------------------------
// (a) post(n) wakes exactly n of the blocked processes

#[test]
fn post_n_wakes_exactly_n_blocked_processes() {
    let _g = serial();
    let sc = Scratch::create("wake");
    let dpath = sc.dir().join("dom");
    let dom = Domain::open(Some(&dpath)).unwrap();
    let sem = dom.semaphore();

    let mut kids = Kids::default();
    for _ in 0..6 {
        kids.0.push(spawn_sem_wait(&dpath, 30_000));
    }
    for k in &kids.0 {
        wait_blocked(k.id(), Duration::from_secs(10));
    }
    assert_eq!(sem.value(), 0);

    sem.post(4).unwrap();
    // Its wake took 4 of the 6 off the kernel's queue (the 4 that get the
    // units may be others, which took them between two sleeps).
    let left = wake_sleepers(&dpath);
    assert!(
        left <= 2,
        "post(4) returned with {left} processes still asleep: its wake did not reach them"
    );
    let mut exited = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while exited.len() < 4 && Instant::now() < deadline {
        for (i, k) in kids.0.iter_mut().enumerate() {
            if !exited.contains(&i) {
                if let Some(st) = k.try_wait().unwrap() {
                    assert_woken(k, st);
                    exited.insert(i);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(exited.len(), 4, "post(4) must wake 4 of the 6 waiters");

    // Longer than two re-check periods of a sleeping waiter: a waiter that
    // wakes up on its own must find nothing left to take.
    std::thread::sleep(RECHECK * 2 + Duration::from_millis(100));
    for (i, k) in kids.0.iter_mut().enumerate() {
        if !exited.contains(&i) {
            assert!(
                k.try_wait().unwrap().is_none(),
                "waiter {} exited without a unit for it",
                k.id()
            );
            wait_blocked(k.id(), Duration::from_secs(2));
        }
    }
    assert_eq!(sem.value(), 0, "the 4 woken waiters took the 4 units");

    sem.post(2).unwrap();
    for (i, k) in kids.0.iter_mut().enumerate() {
        if !exited.contains(&i) {
            let st = wait_exit(k, Duration::from_secs(5))
                .unwrap_or_else(|| panic!("waiter {} not woken by post(2)", k.id()));
            assert_woken(k, st);
        }
    }
    assert_eq!(sem.value(), 0);
}

// ---------------------------------------------------------------------------
// (b) a waiter killed while blocked

#[test]
fn killed_waiter_does_not_consume_a_post() {
    let _g = serial();
    let sc = Scratch::create("killwait");
    let dpath = sc.dir().join("dom");
    let dom = Domain::open(Some(&dpath)).unwrap();
    let sem = dom.semaphore();
    let mut kids = Kids::default();

    // One blocked waiter, killed.
    kids.0.push(spawn_sem_wait(&dpath, 30_000));
    wait_blocked(kids.0[0].id(), Duration::from_secs(10));
    kids.0[0].kill().unwrap();
    let st = kids.0[0].wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");

    sem.post(1).unwrap();
    for _ in 0..15 {
        assert_eq!(sem.value(), 1, "the dead waiter must not take the post");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A new waiter takes it (it never has to sleep).
    kids.0.push(spawn_sem_wait(&dpath, 10_000));
    let st = wait_exit(&mut kids.0[1], Duration::from_secs(5)).expect("new waiter stuck");
    assert_woken(&mut kids.0[1], st);
    assert_eq!(sem.value(), 0);

    // Two blocked waiters, one killed: the dead task left the kernel's
    // queue, which holds the survivor alone, and post(1)'s wake reaches it
    // (the wake-up is not wasted on the dead one).
    kids.0.push(spawn_sem_wait(&dpath, 30_000));
    kids.0.push(spawn_sem_wait(&dpath, 30_000));
    wait_blocked(kids.0[2].id(), Duration::from_secs(10));
    wait_blocked(kids.0[3].id(), Duration::from_secs(10));
    kids.0[2].kill().unwrap();
    assert_eq!(kids.0[2].wait().unwrap().signal(), Some(libc::SIGKILL));
    let survivor = kids.0[3].id();
    assert_eq!(
        sleepers_with(&dpath, survivor),
        1,
        "the kernel's queue on the semaphore should hold the survivor alone"
    );
    post_and_check_woken(sem, &dpath, survivor, 1);
    let st = wait_exit(&mut kids.0[3], Duration::from_secs(5)).expect("survivor stuck");
    assert_woken(&mut kids.0[3], st);
    assert_eq!(sem.value(), 0);

    // Nothing left over: one more waiter times out (exit status 3).
    kids.0.push(spawn_sem_wait(&dpath, 200));
    let st = wait_exit(&mut kids.0[4], Duration::from_secs(5)).expect("timeout waiter stuck");
    let err = read_all(kids.0[4].stderr.take());
    assert_eq!(st.code(), Some(3), "{err}");
    assert!(err.contains("MT_ERR_TIMEOUT"), "{err}");
}

// ---------------------------------------------------------------------------
// (c) posters killed at random moments

#[derive(Default, Debug)]
struct PosterTally {
    /// Units whose `post` surely returned ("posted k" was printed).
    posted: u64,
    /// Units of a "posting k" with no "posted k" after it: the post may or
    /// may not have happened when the poster was killed.
    maybe: u64,
}

fn tally_poster(out: impl Read + Send + 'static) -> JoinHandle<PosterTally> {
    std::thread::spawn(move || {
        let mut t = PosterTally::default();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("posting ") {
                t.maybe = k.parse().unwrap();
            } else if let Some(k) = line.strip_prefix("posted ") {
                assert_eq!(t.maybe, k.parse::<u64>().unwrap());
                t.posted += t.maybe;
                t.maybe = 0;
            }
        }
        t
    })
}

#[derive(Default, Debug)]
struct WaiterTally {
    took: u64,
    done: bool,
}

fn tally_waiter(out: impl Read + Send + 'static) -> JoinHandle<WaiterTally> {
    std::thread::spawn(move || {
        let mut t = WaiterTally::default();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            match line.as_str() {
                "took" => t.took += 1,
                "done" => t.done = true,
                _ => {}
            }
        }
        t
    })
}

#[test]
fn posters_killed_at_random_moments() {
    let _g = serial();
    let sc = Scratch::create("chaos");
    let dpath = sc.dir().join("dom");
    let dom = Domain::open(Some(&dpath)).unwrap();
    let sem = dom.semaphore();
    let stop = sc.dir().join("stop");
    let seed = std::env::var("MTIPC_MP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(mono_ns);
    println!("chaos seed {seed} (MTIPC_MP_SEED={seed} to replay the kill schedule)");
    let mut rng = Rng(seed | 1);
    let d = dpath.display().to_string();

    let mut waiters = Kids::default();
    let mut waiter_tallies = Vec::new();
    for _ in 0..3 {
        let mut c = spawn_role("waiter", &[d.clone(), stop.display().to_string()]);
        waiter_tallies.push(tally_waiter(c.stdout.take().unwrap()));
        waiters.0.push(c);
    }

    let mut posters = Kids::default();
    let mut poster_tallies = Vec::new();
    let spawn_poster = |rng: &mut Rng| {
        let mut c = spawn_role("poster", &[d.clone(), rng.next().to_string()]);
        let t = tally_poster(c.stdout.take().unwrap());
        (c, t)
    };
    for _ in 0..3 {
        let (c, t) = spawn_poster(&mut rng);
        posters.0.push(c);
        poster_tallies.push(t);
    }

    let (mut posted, mut maybe, mut kills, mut kills_mid_post) = (0u64, 0u64, 0u64, 0u64);
    let mut reap = |c: &mut Child, t: JoinHandle<PosterTally>| {
        c.kill().unwrap();
        let st = c.wait().unwrap();
        let err = read_all(c.stderr.take());
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "poster died by itself: {err}"
        );
        let t = t.join().unwrap();
        posted += t.posted;
        maybe += t.maybe;
        kills += 1;
        kills_mid_post += (t.maybe > 0) as u64;
    };
    let end = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(40_000)));
        let i = rng.below(posters.0.len() as u64) as usize;
        let (c, t) = spawn_poster(&mut rng);
        let old_t = std::mem::replace(&mut poster_tallies[i], t);
        let mut old_c = std::mem::replace(&mut posters.0[i], c);
        reap(&mut old_c, old_t);
    }
    for (mut c, t) in std::mem::take(&mut posters.0)
        .into_iter()
        .zip(poster_tallies.drain(..))
    {
        reap(&mut c, t);
    }

    // Every poster is dead: let the waiters drain and stop.
    std::fs::write(&stop, b"").unwrap();
    let mut took = 0;
    for (c, t) in waiters.0.iter_mut().zip(waiter_tallies.drain(..)) {
        let st = wait_exit(c, Duration::from_secs(10)).expect("waiter did not stop");
        let err = read_all(c.stderr.take());
        assert!(st.success(), "waiter {} exited {st}: {err}", c.id());
        let t = t.join().unwrap();
        assert!(t.done, "waiter {} did not finish cleanly", c.id());
        took += t.took;
    }
    let left = sem.value();
    println!(
        "{kills} posters killed ({kills_mid_post} between 'posting' and 'posted'); \
         surely posted {posted}, maybe posted {maybe} more; taken {took}; left {left}"
    );
    assert!(posted > 0, "the posters never got to post");
    assert_eq!(left, 0, "waiters stopped while units were left");
    assert!(
        took >= posted,
        "a completed post was lost: {took} taken < {posted} surely posted"
    );
    assert!(
        took <= posted + maybe,
        "more decrements than posts: {took} taken > {posted} + {maybe} possibly posted"
    );

    // The domain still works: a fresh post wakes a fresh waiter (its wake
    // reaches it: no re-check needed).
    let mut fresh = Kids::default();
    fresh.0.push(spawn_sem_wait(&dpath, 10_000));
    post_and_check_woken(sem, &dpath, fresh.0[0].id(), 1);
    let st = wait_exit(&mut fresh.0[0], Duration::from_secs(5)).expect("fresh waiter stuck");
    assert_woken(&mut fresh.0[0], st);
    assert_eq!(sem.value(), 0);
}

// ---------------------------------------------------------------------------
// (d) a poster killed between its atomic add and its futex wake

/// The one window the semaphore leaves (README, "The notification
/// semaphore"), forced: the poster dies at the failpoint
/// `sem-post-before-wake`, so its `post(3)` added 3 and woke nobody. The
/// three sleepers, whose own timeout is a minute away, take the three
/// units anyway: each re-reads the count at least every [`RECHECK`].
#[test]
fn poster_killed_between_add_and_wake() {
    let _g = serial();
    let sc = Scratch::create("window");
    let dpath = sc.dir().join("dom");
    let dom = Domain::open(Some(&dpath)).unwrap();
    let sem = dom.semaphore();
    let mut kids = Kids::default();
    for _ in 0..3 {
        kids.0.push(spawn_sem_wait(&dpath, 60_000));
    }
    for k in &kids.0 {
        wait_blocked(k.id(), Duration::from_secs(10));
    }

    let mut poster = common::role_command(
        "MTIPC_MP",
        "post",
        &[dpath.display().to_string(), "3".into()],
    )
    .env("MTIPC_FAILPOINTS", "sem-post-before-wake")
    .stderr(Stdio::piped())
    .spawn()
    .expect("re-exec the test binary");
    let st = wait_exit(&mut poster, Duration::from_secs(10)).expect("poster stuck");
    let out = read_all(poster.stdout.take());
    let err = read_all(poster.stderr.take());
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "the poster did not die at the failpoint: {st}; stdout {out:?}, stderr {err:?}"
    );
    // (The test harness prints its own lines around the child's.)
    assert!(
        out.lines().any(|l| l == "posting 3") && !out.contains("posted"),
        "the poster died elsewhere: stdout {out:?}"
    );
    let died = Instant::now();

    // Nobody woke them: each takes its unit at its next re-check, long
    // before its own timeout (60 s).
    for k in &mut kids.0 {
        let st = wait_exit(k, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "sleeper {} never took the unit left by the dead poster",
                k.id()
            )
        });
        assert_woken(k, st);
    }
    println!(
        "the 3 sleepers took the dead poster's units within {:?} (re-check every {RECHECK:?})",
        died.elapsed()
    );
    assert_eq!(sem.value(), 0, "the 3 units were posted and taken");
}

// ---------------------------------------------------------------------------
// (e) two processes create the same new domain at the same moment

#[test]
fn concurrent_creation_of_one_domain() {
    let _g = serial();
    let sc = Scratch::create("race");
    // Batches of 100 rounds with a fresh pair of processes, until 50 rounds
    // really started together (a loaded machine can keep the two apart).
    let (mut close, mut batches) = (0, 0);
    while close < 50 && batches < 10 {
        let base = sc.dir().join(format!("batch{batches}"));
        std::fs::create_dir(&base).unwrap();
        close += race_batch(&base, 100);
        batches += 1;
    }
    // Every round was checked for a correct outcome in race_batch; this
    // only makes sure that some rounds really raced (a loaded machine can
    // keep the two processes apart for a whole batch, hence one suffices).
    assert!(
        close >= 1,
        "no round in {batches} batches started within 20 µs of the other"
    );
}

/// One batch of `rounds` races under `base`; returns how many unshifted
/// rounds started within 20 µs of each other.
fn race_batch(base: &Path, rounds: u64) -> usize {
    std::fs::write(base.join("barrier"), [0u8; 64]).unwrap();
    let args = |idx: u64| {
        vec![
            base.display().to_string(),
            rounds.to_string(),
            idx.to_string(),
        ]
    };
    let racers = [spawn_role("racer", &args(0)), spawn_role("racer", &args(1))];
    let outs: Vec<_> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    let mut starts = vec![[0i64; 2]; rounds as usize];
    for (idx, out) in outs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "racer {idx} exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut seen = 0;
        for line in stdout.lines() {
            if line.starts_with("err ") {
                panic!("racer {idx}: {line}");
            }
            let Some(rest) = line.strip_prefix("ok ") else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            let i: usize = f[0].parse().unwrap();
            starts[i][idx] = f[1].parse().unwrap();
            assert_eq!(f[2], mtipc::LAYOUT_VERSION.to_string(), "{line}");
            assert_eq!(f[3], unsafe { libc::geteuid() }.to_string(), "{line}");
            seen += 1;
        }
        assert_eq!(seen, rounds, "racer {idx} did not report every round");
    }
    // How close the two calls really started (even rounds: no intended shift).
    let mut skews: Vec<i64> = starts
        .iter()
        .step_by(2)
        .map(|s| (s[0] - s[1]).abs())
        .collect();
    skews.sort_unstable();
    let close = skews.iter().filter(|s| **s < 20_000).count();
    println!(
        "start skew of the two racers over {} unshifted rounds: median {:.1} µs, \
         {close} rounds under 20 µs",
        skews.len(),
        skews[skews.len() / 2] as f64 / 1000.0
    );

    for i in 0..rounds {
        let dir = base.join(format!("r{i}"));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "round {i}: directory mode");
        let names: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let want: BTreeSet<String> = ["layout", "notify.sem"].map(String::from).into();
        assert_eq!(names, want, "round {i}: leftovers in the domain");
        assert_eq!(
            std::fs::read(dir.join("layout")).unwrap(),
            mtipc::internals::domain::layout_text(mtipc::LAYOUT_VERSION).into_bytes(),
            "round {i}"
        );
        let md = std::fs::metadata(dir.join("notify.sem")).unwrap();
        assert_eq!(md.len(), 128, "round {i}");
        assert_eq!(md.permissions().mode() & 0o777, 0o600, "round {i}");
        // Both processes posted 1 on the semaphore they opened: one file.
        let d = Domain::open(Some(&dir)).unwrap();
        assert_eq!(d.semaphore().value(), 2, "round {i}: two semaphores?");
    }
    close
}
