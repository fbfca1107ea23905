//! Request dispatch between real processes: worker processes are this test
//! binary re-executed in a child role (see [`child_entry`]); the test
//! process (or a child in the role `manager`) is the connection manager
//! that submits requests. No thread stands in for a process.
//!
//! - [`sticky_sessions_across_processes`]: 4 worker processes in 2 groups;
//!   every request of a session goes to the same worker of its group.
//! - [`worker_killed_mid_request`]: a worker is `kill -9`ed while it serves
//!   a request and has more queued: every request is answered by the other
//!   worker of its group; in a group left without a worker they fail with
//!   `Unavailable`. Nothing is answered twice; `in_flight` stays exact.
//! - [`worker_killed_after_writing_its_response`]: a worker dies (failpoint
//!   `respond-before-done`) after writing its response into the slot and
//!   before marking it done: the request is answered once, by the other
//!   worker of the group.
//! - [`manager_killed_mid_wait`]: the submitting process is `kill -9`ed
//!   while its requests are queued and served; the next manager finds every
//!   `in_flight` equal to the slots naming the session, and gets every slot
//!   back.
//! - [`managers_killed_at_random_moments`]: the same with managers killed
//!   at random moments, many times over.
//! - [`hundred_thousand_requests_while_workers_are_killed`]: the issue's
//!   test: 100,000 requests from a manager to four workers in two groups
//!   while a loop `kill -9`s a worker at random moments and starts a new
//!   one; every request is answered exactly once (with its own response)
//!   or reported failed; the region is consistent at the end.

mod common;

use common::{say, serial, Scratch};
use mtipc::session::{SessionId, Sessions, SessionsConfig, Ticket};
use mtipc::{Domain, ErrorKind};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

const NAME: &str = "calls";

fn config(slots: u32) -> SessionsConfig {
    SessionsConfig {
        capacity: 256,
        groups: 2,
        slots,
        max_message: 256,
        workers: 16,
    }
}

/// A child process (this test binary in a role), killed when dropped.
struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(role: &str, args: &[String]) -> Proc {
        Proc::spawn_with(role, args, &[])
    }

    /// [`Proc::spawn`] with more environment variables (failpoints).
    fn spawn_with(role: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut c = common::role_command("MTIPC_SD", role, args);
        c.envs(env.iter().copied());
        let mut child = c.spawn().expect("spawn child");
        let out = BufReader::new(child.stdout.take().unwrap());
        Proc { child, out }
    }

    /// A worker process of `group` that waits `delay_ms` before each
    /// answer; returns once it is registered.
    fn worker(dom: &str, group: u32, delay_ms: u64) -> Proc {
        let mut p = Proc::spawn(
            "worker",
            &[
                dom.into(),
                NAME.into(),
                group.to_string(),
                delay_ms.to_string(),
            ],
        );
        p.expect("ready");
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next protocol line ("@@ ..."), which must start with `what`.
    fn expect(&mut self, what: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "child {} ended before {what:?}", self.pid());
            if let Some(l) = line.trim_end().strip_prefix("@@ ") {
                assert!(l.starts_with(what), "expected {what:?}, got {l:?}");
                return l.to_string();
            }
        }
    }

    fn kill9(mut self) {
        common::kill9(&mut self.child);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a worker process answers: its pid, then the request.
fn parse(resp: &[u8]) -> (u32, &[u8]) {
    assert!(resp.len() >= 4, "short response {resp:?}");
    (
        u32::from_le_bytes(resp[..4].try_into().unwrap()),
        &resp[4..],
    )
}

const LONG: Option<Duration> = Some(Duration::from_secs(20));

/// The region is consistent: every session's `in_flight` equals the slots
/// naming it, and (once nothing runs) every slot is free and no dead
/// worker is registered.
fn assert_quiet(s: &Sessions) {
    let bad = s.audit();
    assert!(bad.is_empty(), "in_flight differs from the slots: {bad:?}");
    for sess in s.table().sessions() {
        assert_eq!(
            sess.in_flight, 0,
            "session {} has requests in flight",
            sess.id
        );
    }
    let snap = s.snapshot();
    assert_eq!(
        snap.slots.free,
        s.geometry().slots,
        "slots not free at the end: {:?}",
        snap.slots
    );
    for g in &snap.groups {
        for w in &g.workers {
            assert!(w.alive, "a dead worker is still registered: {w:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Child roles

/// Not a test of its own: the entry point of the child processes. Without
/// `MTIPC_SD_ROLE` it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_SD_ROLE") else {
        return;
    };
    let args_var = std::env::var("MTIPC_SD_ARGS").unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    match role.as_str() {
        "worker" => child_worker(&args),
        "manager" => child_manager(&args),
        "churn" => child_churn(&args),
        other => panic!("unknown child role {other:?}"),
    }
    std::process::exit(0);
}

/// `worker <domain> <name> <group> <delay_ms> [<gate>]`: serves until
/// killed (or orphaned). With a delay it says "took <slot>" before each
/// wait; with a gate (a file path) it says "took <slot>" and answers only
/// once the file exists.
fn child_worker(args: &[&str]) {
    let d = Domain::open(Some(args[0].as_ref())).unwrap();
    let s = Sessions::open(&d, args[1]).unwrap();
    let group: u32 = args[2].parse().unwrap();
    let delay: u64 = args[3].parse().unwrap();
    let gate = args.get(4).map(std::path::Path::new);
    let mut w = s.register_worker(group).unwrap();
    let pid = std::process::id();
    say(&format!("ready {pid}"));
    loop {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } == 1 {
            return; // the test died: do not linger
        }
        let Some(r) = w.next(Some(Duration::from_millis(500))).unwrap() else {
            continue;
        };
        if delay > 0 || gate.is_some() {
            say(&format!("took {}", r.slot()));
            std::thread::sleep(Duration::from_millis(delay));
        }
        if let Some(gate) = gate {
            while !gate.exists() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let mut resp = pid.to_le_bytes().to_vec();
        resp.extend_from_slice(r.bytes());
        r.respond(&resp).unwrap();
    }
}

/// `manager <domain> <name> <group> <n> <session>...`: submits `n`
/// requests per session, says "submitted", then waits for them.
fn child_manager(args: &[&str]) {
    let d = Domain::open(Some(args[0].as_ref())).unwrap();
    let s = Sessions::open(&d, args[1]).unwrap();
    let group: u32 = args[2].parse().unwrap();
    let n: u32 = args[3].parse().unwrap();
    let mut tickets = Vec::new();
    for id in &args[4..] {
        let id = SessionId(id.parse().unwrap());
        for k in 0..n {
            tickets.push(s.submit(id, group, format!("m{k}").as_bytes()).unwrap());
        }
    }
    say(&format!("submitted {}", tickets.len()));
    for mut t in tickets {
        let _ = t.wait(None);
    }
    say("done");
}

/// `churn <domain> <name> <session>...`: submits to both groups without
/// end, up to 8 requests in flight, checking every answer, until killed.
fn child_churn(args: &[&str]) {
    let d = Domain::open(Some(args[0].as_ref())).unwrap();
    let s = Sessions::open(&d, args[1]).unwrap();
    let ids: Vec<SessionId> = args[2..]
        .iter()
        .map(|a| SessionId(a.parse().unwrap()))
        .collect();
    let mut q: VecDeque<(u64, Ticket)> = VecDeque::new();
    say("ready");
    for n in 0u64.. {
        let id = ids[(n % ids.len() as u64) as usize];
        match s.submit(id, (n % 2) as u32, &n.to_le_bytes()) {
            Ok(t) => q.push_back((n, t)),
            Err(e) if e.kind() == ErrorKind::Full => {}
            Err(e) => panic!("{e}"),
        }
        if q.len() >= 8 || s.snapshot().slots.free == 0 {
            let (m, mut t) = q.pop_front().unwrap();
            let r = t.wait(LONG).unwrap();
            assert_eq!(parse(&r).1, m.to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------

#[test]
fn sticky_sessions_across_processes() {
    let _g = serial();
    let scratch = Scratch::new("sticky");
    let d = scratch.domain();
    let s = Sessions::create(&d, NAME, config(64)).unwrap();
    let workers: Vec<(u32, Proc)> = [0, 0, 1, 1]
        .into_iter()
        .map(|g| (g, Proc::worker(&scratch.path(), g, 0)))
        .collect();
    let group_of: HashMap<u32, u32> = workers.iter().map(|(g, p)| (p.pid(), *g)).collect();
    let sessions: Vec<SessionId> = (0..16)
        .map(|_| s.table().create_session("tenant-a", 0, b"").unwrap())
        .collect();
    let mut served_by: HashMap<SessionId, u32> = HashMap::new();
    for round in 0..20 {
        // All sessions' requests in flight at once, then collected.
        let mut tickets: Vec<(SessionId, u32, Ticket)> = sessions
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                let g = k as u32 % 2;
                let body = format!("{}-{round}", id.0);
                (id, g, s.submit(id, g, body.as_bytes()).unwrap())
            })
            .collect();
        for (id, g, t) in &mut tickets {
            let r = t.wait(LONG).unwrap();
            let (pid, body) = parse(&r);
            assert_eq!(body, format!("{}-{round}", id.0).as_bytes());
            assert_eq!(group_of[&pid], *g, "answered by a worker of another group");
            let first = *served_by.entry(*id).or_insert(pid);
            assert_eq!(
                first, pid,
                "session {id} moved from worker {first} to {pid}"
            );
        }
    }
    // The binding the table shows is that worker's.
    let snap = s.snapshot();
    for &id in &sessions {
        let bound = s.table().lookup(id).unwrap().worker.expect("bound");
        let pid = snap
            .groups
            .iter()
            .flat_map(|g| &g.workers)
            .find(|w| mtipc::session::WorkerRef::new(w.index, w.gen.into()) == bound)
            .map(|w| w.pid);
        assert_eq!(pid, Some(served_by[&id]));
    }
    assert_quiet(&s);
    drop(workers);
}

#[test]
fn worker_killed_mid_request() {
    let _g = serial();
    let scratch = Scratch::new("wkill");
    let d = scratch.domain();
    let s = Sessions::create(&d, NAME, config(64)).unwrap();
    let id = s.table().create_session("tenant-a", 0, b"").unwrap();
    let id1 = s.table().create_session("tenant-b", 0, b"").unwrap();

    // Group 0: a slow worker A serves the session first (and is bound).
    let mut a = Proc::worker(&scratch.path(), 0, 400);
    let mut t = s.submit(id, 0, b"first").unwrap();
    a.expect("took");
    assert_eq!(parse(&t.wait(LONG).unwrap()).0, a.pid());
    let b = Proc::worker(&scratch.path(), 0, 0);
    // Five more: sticky, so all queued to A; A takes the first and sleeps.
    let mut tickets: Vec<Ticket> = (0..5)
        .map(|k| s.submit(id, 0, format!("r{k}").as_bytes()).unwrap())
        .collect();
    a.expect("took");
    assert_eq!(s.table().lookup(id).unwrap().in_flight, 5);
    let a_pid = a.pid();
    a.kill9();
    for (k, t) in tickets.iter_mut().enumerate() {
        let r = t.wait(LONG).unwrap();
        let (pid, body) = parse(&r);
        assert_eq!(pid, b.pid(), "request {k} not answered by the survivor");
        assert_eq!(body, format!("r{k}").as_bytes());
    }
    assert_ne!(a_pid, b.pid());
    let sess = s.table().lookup(id).unwrap();
    assert_eq!(sess.in_flight, 0);
    let groups = s.snapshot().groups;
    assert_eq!(
        groups[0].workers.len(),
        1,
        "the dead worker is still registered"
    );
    assert_eq!(groups[0].workers[0].pid, b.pid());
    assert!(groups[0].requeued >= 5);

    // Group 1 with a single worker: killed mid-request, its requests fail.
    let mut c = Proc::worker(&scratch.path(), 1, 400);
    let mut tickets: Vec<Ticket> = (0..3)
        .map(|k| s.submit(id1, 1, format!("q{k}").as_bytes()).unwrap())
        .collect();
    c.expect("took");
    c.kill9();
    for t in &mut tickets {
        let e = t.wait(LONG).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    assert_quiet(&s);
    drop(b);
}

/// README: "answered once even when a worker dies after writing its
/// response but before marking it done". Worker A, armed with the
/// failpoint `respond-before-done`, takes the request, writes its response
/// into the slot and dies (SIGKILL) before the slot is marked done; the
/// submitter's check reaps A and requeues the request to worker B. The
/// submitter gets exactly one answer, B's (never the one A left in the
/// slot), and the area ends quiet: the slot free, A's record freed, one
/// request requeued, none failed, one served (by B).
#[test]
fn worker_killed_after_writing_its_response() {
    let _g = serial();
    let scratch = Scratch::new("wrote");
    let d = scratch.domain();
    let s = Sessions::create(&d, NAME, config(16)).unwrap();
    let id = s.table().create_session("tenant-a", 0, b"").unwrap();
    let gate = scratch.dir().join("gate");

    // A alone in group 0: the request goes to it.
    let mut a = Proc::spawn_with(
        "worker",
        &[
            scratch.path(),
            NAME.into(),
            "0".into(),
            "0".into(),
            gate.display().to_string(),
        ],
        &[("MTIPC_FAILPOINTS", "respond-before-done")],
    );
    a.expect("ready");
    let mut t = s.submit(id, 0, b"once").unwrap();
    a.expect("took");
    // B registered before A answers, so the group never lacks a worker.
    let b = Proc::worker(&scratch.path(), 0, 0);
    std::fs::write(&gate, b"").unwrap();
    let st = common::wait_exit(&mut a.child, Duration::from_secs(10))
        .expect("A did not die at the failpoint");
    assert_eq!(st.signal(), Some(libc::SIGKILL), "A ended otherwise: {st}");

    let r = t.wait(LONG).unwrap();
    let (pid, body) = parse(&r);
    assert_ne!(pid, a.pid(), "the submitter got the dead worker's response");
    assert_eq!((pid, body), (b.pid(), &b"once"[..]));
    drop(r);
    drop(t);

    let snap = s.snapshot();
    let g0 = &snap.groups[0];
    assert_eq!((g0.submitted, g0.requeued, g0.failed), (1, 1, 0));
    assert_eq!(
        g0.workers.len(),
        1,
        "A is still registered: {:?}",
        g0.workers
    );
    assert_eq!((g0.workers[0].pid, g0.workers[0].served), (b.pid(), 1));
    assert_quiet(&s);
    drop(b);
}

#[test]
fn manager_killed_mid_wait() {
    let _g = serial();
    let scratch = Scratch::new("mkill");
    let d = scratch.domain();
    let s = Sessions::create(&d, NAME, config(16)).unwrap();
    let ids: Vec<SessionId> = (0..3)
        .map(|_| s.table().create_session("tenant-a", 0, b"").unwrap())
        .collect();
    let mut w = Proc::worker(&scratch.path(), 0, 150);
    let mut args = vec![scratch.path(), NAME.into(), "0".into(), "3".into()];
    args.extend(ids.iter().map(|i| i.0.to_string()));
    let mut m = Proc::spawn("manager", &args);
    assert_eq!(m.expect("submitted"), "submitted 9");
    w.expect("took");
    m.kill9();
    // The dead manager's requests are still counted, exactly.
    assert!(s.audit().is_empty(), "{:?}", s.audit());
    let left: u32 = ids
        .iter()
        .map(|&i| s.table().lookup(i).unwrap().in_flight)
        .sum();
    assert!(left >= 1, "the manager died before anything was in flight");
    // The next manager runs short of slots: it takes back the dead
    // manager's ones (the request being served is freed by its worker when
    // it answers) and can use every slot.
    let mut mine = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mine.len() < 16 {
        match s.submit(ids[0], 0, b"next") {
            Ok(t) => mine.push(t),
            Err(e) if e.kind() == ErrorKind::Full && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(s.audit().is_empty(), "{:?}", s.audit());
    // Kill the slow worker; a fast one serves the rest.
    w.kill9();
    let fast = Proc::worker(&scratch.path(), 0, 0);
    for t in &mut mine {
        let r = t.wait(LONG).unwrap();
        assert_eq!(parse(&r), (fast.pid(), &b"next"[..]));
    }
    drop(mine);
    assert_quiet(&s);
}

/// Managers `kill -9`ed at random moments (while they submit, hold an
/// entry lock, wait, or collect): the next manager finds every `in_flight`
/// exact and gets every slot back.
#[test]
fn managers_killed_at_random_moments() {
    let _g = serial();
    let scratch = Scratch::new("mchurn");
    let d = scratch.domain();
    let s = Sessions::create(&d, NAME, config(32)).unwrap();
    let ids: Vec<SessionId> = (0..4)
        .map(|_| s.table().create_session("tenant-a", 0, b"").unwrap())
        .collect();
    let workers: Vec<Proc> = [0, 0, 1, 1]
        .into_iter()
        .map(|g| Proc::worker(&scratch.path(), g, 0))
        .collect();
    let mut args = vec![scratch.path(), NAME.into()];
    args.extend(ids.iter().map(|i| i.0.to_string()));
    for k in 0..12u64 {
        let mut m = Proc::spawn("churn", &args);
        m.expect("ready");
        std::thread::sleep(Duration::from_millis(10 + (k * 37) % 60));
        m.kill9();
        assert!(s.audit().is_empty(), "after kill {k}: {:?}", s.audit());
    }
    // The workers finish what the dead managers left; the next manager
    // takes the rest back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = s.snapshot().slots;
        if c.queued + c.taken == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "requests stuck: {c:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.reclaim();
    assert_quiet(&s);
    // And the set still works.
    let mut t = s.submit(ids[0], 1, b"after").unwrap();
    assert_eq!(parse(&t.wait(LONG).unwrap()).1, b"after");
    drop(workers);
}

/// How a request of the 100k test ended, as its ticket saw it.
enum End {
    /// Answered by worker process `pid`, whose response names request
    /// `body` (the worker echoes the request bytes).
    Answered { pid: u32, body: u64 },
    /// Failed with `Unavailable`.
    Failed,
}

#[test]
fn hundred_thousand_requests_while_workers_are_killed() {
    const TOTAL: u64 = 100_000;
    const THREADS: u64 = 4;
    const DEPTH: usize = 24;
    let _g = serial();
    let scratch = Scratch::new("big");
    let d = scratch.domain();
    let s = Sessions::create(&d, NAME, config(256)).unwrap();
    let sessions: Vec<SessionId> = (0..64)
        .map(|_| s.table().create_session("tenant-a", 0, b"").unwrap())
        .collect();
    let group_of_request = |n: u64| (n / 64 % 2) as u32;
    let workers: Arc<Mutex<Vec<(u32, Proc)>>> = Arc::new(Mutex::new(
        [0, 0, 1, 1]
            .into_iter()
            .map(|g| (g, Proc::worker(&scratch.path(), g, 0)))
            .collect(),
    ));
    // The group of every worker process that ever ran.
    let group_of_pid: Arc<Mutex<HashMap<u32, u32>>> = Arc::new(Mutex::new(
        workers
            .lock()
            .unwrap()
            .iter()
            .map(|(g, p)| (p.pid(), *g))
            .collect(),
    ));
    let started = Instant::now();
    let stop = Arc::new(mtipc::internals::sync::Flag::new());

    // The killer: every 5-50 ms, kill -9 a random worker and start a new
    // one in its group. The other worker of the group lives meanwhile, so
    // every group always has a live worker: no request may fail.
    let killer = {
        let (workers, group_of_pid, stop) = (workers.clone(), group_of_pid.clone(), stop.clone());
        let dom = scratch.path();
        std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
            let mut rnd = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            let mut kills = 0u32;
            while !stop.is_set() {
                std::thread::sleep(Duration::from_millis(5 + rnd(45)));
                let k = rnd(4) as usize;
                let (g, victim) = workers.lock().unwrap().remove(k);
                victim.kill9();
                kills += 1;
                let fresh = Proc::worker(&dom, g, 0);
                group_of_pid.lock().unwrap().insert(fresh.pid(), g);
                workers.lock().unwrap().insert(k, (g, fresh));
            }
            kills
        })
    };

    // The manager: THREADS threads, each with up to DEPTH requests in
    // flight; each returns how every one of its requests ended.
    let outcomes: Vec<Vec<(u64, End)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, sessions) = (&s, &sessions);
                sc.spawn(move || {
                    let mut ends: Vec<(u64, End)> = Vec::new();
                    let mut q: VecDeque<(u64, Ticket)> = VecDeque::new();
                    let mut next = t;
                    let finish = |ends: &mut Vec<(u64, End)>, n: u64, mut tk: Ticket| {
                        let end = match tk.wait(LONG) {
                            Ok(r) => {
                                let (pid, body) = parse(&r);
                                let body =
                                    u64::from_le_bytes(body.try_into().unwrap_or_else(|_| {
                                        panic!("request {n}: response body {body:?}")
                                    }));
                                End::Answered { pid, body }
                            }
                            Err(e) if e.kind() == ErrorKind::Unavailable => End::Failed,
                            Err(e) => panic!("request {n}: {e}"),
                        };
                        ends.push((n, end));
                    };
                    while next < TOTAL || !q.is_empty() {
                        if next < TOTAL && q.len() < DEPTH {
                            let id = sessions[(next % 64) as usize];
                            let g = group_of_request(next);
                            match s.submit(id, g, &next.to_le_bytes()) {
                                Ok(tk) => {
                                    q.push_back((next, tk));
                                    next += THREADS;
                                    continue;
                                }
                                Err(e) if e.kind() == ErrorKind::Full => {}
                                Err(e) => panic!("submit: {e}"),
                            }
                        }
                        let (n, tk) = q.pop_front().unwrap();
                        finish(&mut ends, n, tk);
                    }
                    ends
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    stop.set();
    let kills = killer.join().unwrap();
    let elapsed = started.elapsed();

    // Answers are counted by the request the response names, not by the
    // ticket that got it: a response delivered twice (or to the wrong
    // ticket) shows up as a request answered twice (and one never).
    let mut answers = vec![0u32; TOTAL as usize];
    let (mut answered, mut failed, mut tickets) = (0u64, 0u64, 0u64);
    for (n, end) in outcomes.iter().flatten() {
        tickets += 1;
        match *end {
            End::Answered { body, .. } => {
                answered += 1;
                assert!(body < TOTAL, "request {n} got a response naming {body}");
                answers[body as usize] += 1;
            }
            End::Failed => failed += 1,
        }
    }
    let snap = s.snapshot();
    let requeued: Vec<u64> = snap.groups.iter().map(|g| g.requeued).collect();
    eprintln!(
        "100k test: {TOTAL} requests in {elapsed:?}: {answered} answered, {failed} failed, \
         {kills} workers killed; requeued {requeued:?}"
    );
    assert_eq!(tickets, TOTAL);
    let twice: Vec<usize> = (0..answers.len()).filter(|&n| answers[n] > 1).collect();
    assert!(
        twice.is_empty(),
        "{} requests answered more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    // Each ticket got the response to its own request, from a worker of
    // the request's group.
    let group_of_pid = group_of_pid.lock().unwrap();
    for (n, end) in outcomes.iter().flatten() {
        if let End::Answered { pid, body } = *end {
            assert_eq!(body, *n, "request {n} got the response to request {body}");
            assert_eq!(
                group_of_pid.get(&pid).copied(),
                Some(group_of_request(*n)),
                "request {n} answered by pid {pid}, not a worker of its group"
            );
        }
    }
    // Every request was answered: none failed although every group always
    // had a live worker.
    assert_eq!(
        answers.iter().filter(|&&c| c == 1).count() as u64,
        TOTAL,
        "not every request was answered ({failed} failed)"
    );
    assert_eq!(
        failed, 0,
        "requests failed although every group had a live worker"
    );
    for g in &snap.groups {
        assert_eq!(g.failed, 0, "group {} failed requests", g.group);
        let want = (0..TOTAL)
            .filter(|&n| group_of_request(n) == g.group)
            .count() as u64;
        assert_eq!(g.submitted, want, "group {} submitted count", g.group);
    }
    assert!(kills >= 5, "the killer hardly ran ({kills} kills)");
    // Kills landed while workers had requests: those were moved to the
    // survivor of the group (and still answered once, checked above).
    assert!(
        requeued.iter().sum::<u64>() > 0,
        "no kill landed while a worker had a request ({kills} kills)"
    );
    // Reap whatever died last, then the region must be quiet.
    s.reap_dead();
    assert_quiet(&s);
    drop(workers);
}
