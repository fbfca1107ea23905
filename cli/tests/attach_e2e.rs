//! Discovery and attach end to end, with real processes: `mtipcd` and the
//! `mtipc` CLI as built, tenant processes (this test binary re-executed in
//! the child role `tenant`, see [`child_entry`]), and `kill -9` / SIGSTOP of
//! each participant at points of a round (DESIGN.md section 1 and
//! "Correctness").
//!
//! - [`echo_through_the_daemon`]: messages of 0 B to 1 MiB; nothing left
//!   behind by the round.
//! - [`only_the_target_answers`]: 1, 16 and 256 advertised tenants.
//! - [`concurrent_attachers`]: two threads, and two `mtipc attach` processes.
//! - [`time_window`]: start time and duration, on both ends.
//! - [`fault_*`]: kill -9 of a tenant (idle, mid-conversation), a stopped
//!   tenant, kill -9 of an attacher mid-round and of the daemon.
//! - [`refusals`], [`foreign_uid_is_denied`], [`symlinked_response`].
//! - [`waiters_are_batch_and_handlers_are_not`]: the waiters' scheduling.
//! - [`garbage_files`]: planted garbage never crashes anybody.
//!
//! The tests take a common lock (one at a time): their timing checks and
//! the 256-tenant case must not compete for the CPUs with each other.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "attach_e2e/common.rs"]
mod e2e;

use common::{mono_ns, read_all, serial, wait_exit, Rng};
use e2e::*;
use mtipc::attach::{self, AttachOptions};
use mtipc::{Domain, ErrorKind};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

/// Not a test of its own: the entry point of the child processes. Without
/// `MTIPC_E2E_ROLE` it does nothing.
#[test]
fn child_entry() {
    run_child_role(&[("foreign", child_foreign)]);
}

// ---------------------------------------------------------------------------

#[test]
fn echo_through_the_daemon() {
    let _g = serial();
    let s = Scratch::new("echo");
    let _d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("e", 1));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);

    let conn = attach_to(&domain, "e0").expect("attach");
    assert_eq!(conn.tls_version(), "TLSv1.3");
    // The round is over once attach returned.
    assert_round_clean(&domain);
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + 3) as u8).collect();
    for msg in [&b"hello"[..], b"", b"x", &big, b"", &[0u8, 255, 10, 13][..]] {
        echo(&conn, msg);
    }
    // Over the limit: refused locally, the connection stays usable.
    let over = vec![0u8; (1 << 20) + 1];
    expect_err(conn.send(&over), ErrorKind::Invalid);
    echo(&conn, b"still there");
    conn.close();
    wait_event(&s.file("events"), "end e0 MT_ERR_CLOSED");
    wait_marker(&s.file("marker"), &["e0"]);
    assert_round_clean(&domain);
}

/// The scheduling policy (field 41 of `/proc/<pid>/task/<tid>/stat`) of
/// each thread of `pid` whose name starts with `prefix`.
fn policies(pid: u32, prefix: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
        // Fields after the command name, which ends at the last ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push(policy);
    }
    out
}

/// The waiters of a tenant process and of mtipcd run as `SCHED_BATCH` (3)
/// (docs/attach.md, "The round"); the tenant's handler thread has the
/// advertising thread's policy back (`SCHED_OTHER`, 0).
#[test]
fn waiters_are_batch_and_handlers_are_not() {
    let _g = serial();
    let s = Scratch::new("sched");
    let d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("p", 2));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    assert_eq!(policies(t.pid(), "mtipc-waiter"), vec![3, 3]);
    assert_eq!(policies(d.pid(), "mtipc-waiter"), vec![3]);
    // mtipcd's relay is not a waiter.
    assert_eq!(policies(d.pid(), "mtipc-relay"), vec![0]);
    let conn = attach_to(&domain, "p1").expect("attach");
    echo(&conn, b"policy");
    // The handler runs on the connection's thread until the end closes.
    assert_eq!(policies(t.pid(), "mtipc-conn-p1"), vec![0]);
    conn.close();
    wait_event(&s.file("events"), "end p1 MT_ERR_CLOSED");
}

/// Attaches to two of `n` tenants (in `procs` processes): only the target's
/// handler runs each time; the round leaves the domain clean.
fn only_target(n: usize, procs: usize) {
    let s = Scratch::new(&format!("only{n}"));
    let _d = Mtipcd::start(&s);
    let per = n / procs;
    let mut all = Vec::new();
    let mut kids = Vec::new();
    for p in 0..procs {
        let ids = ids(&format!("p{p}t"), per);
        all.extend(ids.iter().cloned());
        kids.push(Tenants::start(&s, &ids));
    }
    let domain = s.domain();
    wait_listed(&domain, &all);
    assert_eq!(listed(&domain).len(), n + 1);
    let a = all[n / 2].clone();
    let b = all[n - 1].clone();
    let t0 = Instant::now();
    attach_echo(&domain, &a);
    let first = t0.elapsed();
    assert_round_clean(&domain);
    wait_marker(&s.file("marker"), &[&a]);
    let t1 = Instant::now();
    attach_echo(&domain, &b);
    let second = t1.elapsed();
    assert_round_clean(&domain);
    // Serialised after the first: the marker has exactly both.
    wait_marker(&s.file("marker"), &[&a, &b]);
    eprintln!("{n} tenants: attach took {first:?}, then {second:?}");
}

#[test]
fn only_the_target_answers() {
    let _g = serial();
    only_target(1, 1);
    only_target(16, 2);
    only_target(256, 4);
}

#[test]
fn concurrent_attachers() {
    let _g = serial();
    let s = Scratch::new("conc");
    let _d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("c", 3));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);

    // Two threads of this process.
    for round in 0..3 {
        let dom = s.dom();
        let threads: Vec<_> = ["c0", "c1"]
            .into_iter()
            .map(|id| {
                let dom = dom.clone();
                std::thread::spawn(move || {
                    let domain = Domain::open(Some(&dom)).unwrap();
                    let conn = attach_to(&domain, id).unwrap_or_else(|e| panic!("{id}: {e}"));
                    for i in 0..5 {
                        echo(&conn, format!("{id} {round} {i}").as_bytes());
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
    }
    assert_round_clean(&domain);
    // Two CLI processes, both to the same tenant and to different ones.
    for (x, y) in [("c2", "c2"), ("c0", "c2")] {
        let mut kids: Vec<(Child, String)> = [x, y]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let msg = format!("from {i} to {id}");
                (cli_attach(&s.dom(), id, &msg, &[]), msg)
            })
            .collect();
        for (k, msg) in &mut kids {
            let st = wait_exit(k, Duration::from_secs(20)).expect("mtipc attach exits");
            let out = read_all(k.stdout.take());
            let err = read_all(k.stderr.take());
            assert!(st.success(), "mtipc attach exited {st}: {err}");
            assert_eq!(out, format!("{msg}\n"), "stderr: {err}");
            assert!(err.contains("attached to"), "{err}");
        }
    }
    assert_round_clean(&domain);
    let m = lines(&s.file("marker"));
    assert_eq!(m.len(), 6 + 4, "{m:?}");
}

#[test]
fn time_window() {
    let _g = serial();
    let s = Scratch::new("window");
    let _d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("w", 2));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);

    let start = SystemTime::now() + Duration::from_millis(400);
    let start_ms = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let opts = AttachOptions {
        start: Some(start),
        duration: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let conn = attach::attach(&domain, "w0", &opts).expect("attach");
    let returned = now_ms();
    assert!(
        returned >= start_ms,
        "attach returned {} ms before the start",
        start_ms - returned
    );
    assert_round_clean(&domain);
    echo(&conn, b"in the window");
    let first = wait_event(&s.file("events"), "first w0 ");
    let first_ms: u64 = first.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        first_ms >= start_ms,
        "the tenant had a message {} ms before the start",
        start_ms - first_ms
    );
    // The relay closes the path at start + duration: then recv is Closed
    // (not before), send fails, and the tenant sees Closed too.
    let e = expect_err(conn.recv(Some(Duration::from_secs(5))), ErrorKind::Closed);
    let closed_at = now_ms();
    assert!(
        closed_at + 2 >= start_ms + 300,
        "closed {} ms before the end of the window: {e}",
        start_ms + 300 - closed_at
    );
    assert!(
        closed_at < start_ms + 300 + 3000,
        "closed {} ms after the end of the window",
        closed_at - start_ms - 300
    );
    let sent = conn.send(b"too late");
    assert!(sent.is_err(), "a send after the window succeeded");
    wait_event(&s.file("events"), "end w0 MT_ERR_CLOSED");

    // A window without a start: no holding back, and w1 only.
    let conn = attach::attach(
        &domain,
        "w1",
        &AttachOptions {
            duration: Some(Duration::from_millis(200)),
            ..Default::default()
        },
    )
    .expect("attach w1");
    echo(&conn, b"quick");
    expect_err(conn.recv(Some(Duration::from_secs(5))), ErrorKind::Closed);
    wait_event(&s.file("events"), "end w1 MT_ERR_CLOSED");
    wait_marker(&s.file("marker"), &["w0", "w1"]);
    assert_round_clean(&domain);
}

// ---------------------------------------------------------------------------
// Faults

#[test]
fn fault_tenant_killed_while_idle() {
    let _g = serial();
    let s = Scratch::new("kidle");
    let _d = Mtipcd::start(&s);
    let mut a = Tenants::start(&s, &ids("a", 3));
    let b = Tenants::start(&s, &ids("b", 2));
    let domain = s.domain();
    wait_listed(&domain, &a.ids);
    wait_listed(&domain, &b.ids);
    attach_echo(&domain, "a1");

    a.kill9();
    let (l, cleaned) = attach::list(&domain).unwrap();
    assert_eq!(cleaned, 3, "{l:?}");
    assert!(l.iter().all(|t| !t.id.starts_with('a')), "{l:?}");
    assert_eq!(advert_dirs(&s.dom()).len(), 3, "stale directories removed");
    let e = expect_err(attach_to(&domain, "a1"), ErrorKind::NotFound);
    assert!(e.message().contains("a1"), "{e}");
    attach_echo(&domain, "b0");
    attach_echo(&domain, "b1");
    assert_round_clean(&domain);

    // Killed without anybody listing first: the next attach counts it out.
    let c = Tenants::start(&s, &ids("c", 2));
    wait_listed(&domain, &c.ids);
    let mut c = c;
    c.kill9();
    attach_echo(&domain, "b0");
    assert_round_clean(&domain);
    expect_err(attach_to(&domain, "c0"), ErrorKind::NotFound);
}

/// The timeout of an attach that must not wait for a stopped tenant: a
/// round that waited for it would end only at this deadline.
const PATIENT: Duration = Duration::from_secs(20);

/// Attaches to `id` (timeout [`PATIENT`]) and echoes once while the
/// tenant `stopped` is stopped: the round does not wait for it, so the
/// attach returns well before its deadline (in less than half of it; a
/// normal attach takes milliseconds, and no loaded machine stretches
/// that to 10 s, while a round waiting for `stopped` would take all 20).
fn attach_echo_not_waiting(domain: &Domain, id: &str, stopped: &str) {
    let opts = AttachOptions {
        timeout: PATIENT,
        ..Default::default()
    };
    let t0 = Instant::now();
    let conn = attach::attach(domain, id, &opts).unwrap_or_else(|e| panic!("attach to {id}: {e}"));
    let took = t0.elapsed();
    assert!(
        took < PATIENT / 2,
        "the attach to {id} took {took:?} of its {PATIENT:?}: it waited for {stopped}"
    );
    echo(&conn, format!("hello {id}").as_bytes());
    conn.close();
}

#[test]
fn fault_stopped_tenant_times_out() {
    let _g = serial();
    let s = Scratch::new("stop");
    let _d = Mtipcd::start(&s);
    let mut x = Tenants::start(&s, &ids("x", 1));
    let y = Tenants::start(&s, &ids("y", 2));
    let domain = s.domain();
    wait_listed(&domain, &x.ids);
    wait_listed(&domain, &y.ids);

    stop_idle(&s.dom(), x.pid(), "x0");
    let opts = AttachOptions {
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let t0 = Instant::now();
    let e = expect_err(attach::attach(&domain, "x0", &opts), ErrorKind::Timeout);
    // Not before its deadline (how long after is left to the benchmarks).
    let took = t0.elapsed();
    assert!(took >= opts.timeout, "timeout after {took:?}: {e}");
    assert!(e.message().contains("x0"), "{e}");
    assert_round_clean(&domain);
    // The others still answer while x is stopped, without waiting for it
    // (it sits at the semaphore and never takes its unit).
    attach_echo_not_waiting(&domain, "y0", "x0");
    assert_round_clean(&domain);
    x.kill9();
    attach_echo(&domain, "y1");
    assert_round_clean(&domain);
    wait_marker(&s.file("marker"), &["y0", "y1"]);
}

/// A tenant stopped in the middle of a round (its waiter marked busy, not
/// back at the semaphore): attaching to it times out naming the cause, and
/// it does not block the domain: the others are served, each round waiting
/// for it at most the grace period (round::GRACE, 100 ms).
#[test]
fn tenant_stopped_while_busy_does_not_block_the_domain() {
    let _g = serial();
    let s = Scratch::new("busy");
    let _d = Mtipcd::start(&s);
    let mut x = Tenants::start(&s, &ids("x", 1));
    let y = Tenants::start(&s, &ids("y", 1));
    let domain = s.domain();
    wait_listed(&domain, &x.ids);
    wait_listed(&domain, &y.ids);

    stop_idle(&s.dom(), x.pid(), "x0");
    // As if it had been stopped between taking its unit and coming back:
    // its state word says busy (the waiter writes it; the process is stopped).
    let sync = std::fs::OpenOptions::new()
        .write(true)
        .open(s.dom().join("adverts/x0/sync"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sync, &0u32.to_ne_bytes(), 64).unwrap();
    assert_eq!(sync_state(&s.dom(), "x0"), 0);

    for _ in 0..3 {
        attach_echo_not_waiting(&domain, "y0", "x0");
        assert_round_clean(&domain);
    }
    let opts = AttachOptions {
        timeout: Duration::from_millis(700),
        ..Default::default()
    };
    let e = expect_err(attach::attach(&domain, "x0", &opts), ErrorKind::Timeout);
    assert!(e.message().contains("still busy"), "{e}");
    assert_round_clean(&domain);
    x.kill9();
    attach_echo(&domain, "y0");
    assert_round_clean(&domain);
}

/// Waits until the `mtipc attach` process `pid` is in the middle of its
/// round: it holds the attach lock and the synchronization locks.
fn wait_mid_round(domain: &Domain, sync_of: &Path) {
    let dom = domain.path();
    wait_until(
        Duration::from_secs(10),
        &|| "the attacher holds attach.lock and the sync locks".into(),
        || {
            !lock_free(&dom.join("attach.lock"), libc::LOCK_EX)
                && !lock_free(&sync_of.join("sync"), libc::LOCK_SH)
        },
    );
}

/// The attach round marker of the domain (notify.sem, offset 96): set by
/// an attacher before it writes a response file, cleared once its round is
/// cleaned up (docs/attach.md, "Leftovers").
fn round_marker(dom: &Path) -> u32 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dom.join("notify.sem")).unwrap();
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 96).unwrap();
    u32::from_ne_bytes(b)
}

/// Stops process `pid` (SIGSTOP) and waits until the kernel shows it
/// stopped. False if it had exited already: a zombie, or already reaped
/// (the caller's `try_wait` reaps an attacher that finished before its
/// round was seen; the signal then finds no process).
fn stop_process(pid: u32) -> bool {
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) } != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ESRCH),
            "kill({pid}, SIGSTOP): {e}"
        );
        return false;
    }
    let t0 = Instant::now();
    loop {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        match st
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next()
        {
            Some('T' | 't') => return true,
            Some('Z' | 'X') | None => return false,
            _ => {}
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{pid} did not stop");
        std::thread::yield_now();
    }
}

#[test]
fn fault_attacher_killed_mid_round() {
    let _g = serial();
    let s = Scratch::new("katt");
    let _d = Mtipcd::start(&s);
    let x = Tenants::start(&s, &ids("x", 1));
    let y = Tenants::start(&s, &ids("y", 2));
    let domain = s.domain();
    wait_listed(&domain, &x.ids);
    wait_listed(&domain, &y.ids);
    let adverts = s.dom().join("adverts");

    // The target is stopped: the attacher sits in its round, holding the
    // attach lock and every synchronization lock, the response written.
    stop_idle(&s.dom(), x.pid(), "x0");
    let mut cli = cli_attach(&s.dom(), "x0", "lost", &["--timeout-ms", "30000"]);
    wait_mid_round(&domain, &adverts.join("y0"));
    assert!(adverts.join("x0/response").exists());
    assert_eq!(
        round_marker(&s.dom()),
        mtipc::internals::attach::files::round_hint("x0"),
        "the round marker is set mid-round, to the target's hint"
    );
    cli.kill().expect("kill the attacher");
    let st = cli.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    // Its round was not cleaned up: the marker stays for the next one.
    assert_eq!(
        round_marker(&s.dom()),
        mtipc::internals::attach::files::round_hint("x0")
    );

    // The next round works (it clears the leftovers, marker included) and
    // ends at zero.
    attach_echo(&domain, "y0");
    assert_round_clean(&domain);
    assert_eq!(round_marker(&s.dom()), 0);
    // The stopped target wakes up: the dead attacher's response is not
    // served, and a new round to it works.
    signal(x.pid(), libc::SIGCONT);
    attach_echo(&domain, "x0");
    assert_round_clean(&domain);
    attach_echo(&domain, "y1");
    wait_marker(&s.file("marker"), &["y0", "x0", "y1"]);

    // kill -9 at random points of rounds to a live tenant (y1). Each
    // attacher is stopped (SIGSTOP) once its round is seen under way (the
    // round marker set), a random moment later, and killed while stopped:
    // the kill landed mid-round exactly when the marker is still set then
    // (only this attacher runs rounds; the next round clears what a killed
    // one leaves). Each attacher dies of the SIGKILL, or had finished; each
    // time the next round (to y0 or x0) works, leaves the domain clean
    // (the semaphore at 0) and clears the marker. Until 8 kills landed
    // mid-round (at most 60 attempts).
    let mut rng = Rng(mono_ns() | 1);
    let (want_mid, max_tries) = (8, 60);
    let (mut tries, mut mid_round, mut killed, mut finished) = (0, 0, 0, 0);
    while mid_round < want_mid && tries < max_tries {
        let mut cli = cli_attach(&s.dom(), "y1", "maybe", &[]);
        let pid = cli.id();
        let t0 = Instant::now();
        let mut reaped = false;
        while round_marker(&s.dom()) == 0 {
            if cli.try_wait().unwrap().is_some() {
                // Finished before its round was seen (and reaped now: its
                // pid must not be signalled any more).
                reaped = true;
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no round began");
            std::hint::spin_loop();
        }
        let delay = Duration::from_micros(rng.below(10_000));
        let t1 = Instant::now();
        while t1.elapsed() < delay {
            std::hint::spin_loop();
        }
        let stopped = !reaped && stop_process(pid);
        let mid = stopped && round_marker(&s.dom()) != 0;
        cli.kill().expect("kill the attacher");
        let st = cli.wait().unwrap();
        match st.signal() {
            Some(libc::SIGKILL) => killed += 1,
            _ => {
                let err = read_all(cli.stderr.take());
                assert!(st.success() && !mid, "attacher ended {st}: {err}");
                finished += 1;
            }
        }
        mid_round += mid as u32;
        tries += 1;
        let target = if tries % 2 == 0 { "y0" } else { "x0" };
        attach_echo(&domain, target);
        let p = round_clean_problems(&domain);
        assert!(
            p.is_empty(),
            "after a kill {} ({st}): {p:?}",
            if mid { "mid-round" } else { "outside a round" }
        );
        assert_eq!(
            round_marker(&s.dom()),
            0,
            "the next round left the marker set"
        );
    }
    eprintln!(
        "{tries} attachers: {mid_round} killed mid-round, {} killed outside their round, \
         {finished} finished first",
        killed - mid_round
    );
    assert!(
        mid_round >= want_mid,
        "only {mid_round} of {tries} kills landed mid-round"
    );
    let kills = tries as usize;
    // Every round to y0 and x0 reached its handler once; y1's handler ran
    // at most once per attacher (those that got that far).
    wait_until(
        Duration::from_secs(10),
        &|| format!("marker {:?}", lines(&s.file("marker"))),
        || {
            let m = lines(&s.file("marker"));
            let n = |id: &str| m.iter().filter(|l| *l == id).count();
            n("y0") == 1 + kills / 2 && n("x0") == 1 + kills.div_ceil(2) && n("y1") <= 1 + kills
        },
    );
    assert_round_clean(&domain);
}

#[test]
fn fault_daemon_killed() {
    let _g = serial();
    let s = Scratch::new("kdaemon");
    let mut d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("d", 2));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    attach_echo(&domain, "d0");

    d.kill9();
    assert!(s.dom().join("relay.sock").exists(), "a stale socket stays");
    let e = expect_err(attach_to(&domain, "d1"), ErrorKind::Unavailable);
    assert!(e.message().contains("mtipcd"), "{e}");
    assert!(
        !s.dom().join("adverts/@mtipcd").exists(),
        "the stale @mtipcd advertisement is cleaned up"
    );
    assert_round_clean(&domain);

    let mut d2 = Mtipcd::start(&s);
    attach_echo(&domain, "d1");
    attach_echo(&domain, "d0");
    assert_round_clean(&domain);

    // Killed while a connection waits for its start time: the attacher
    // gets an error, not a hang.
    let mut cli = cli_attach(&s.dom(), "d0", "x", &["--start-in-ms", "3000"]);
    wait_until(
        Duration::from_secs(10),
        &|| "the third pairing registered".into(),
        || d2.log_text().matches("pairing registered").count() >= 3,
    );
    d2.kill9();
    let st = wait_exit(&mut cli, Duration::from_secs(20)).expect("the attacher returns");
    let err = read_all(cli.stderr.take());
    assert!(!st.success(), "{err}");
    let _d4 = Mtipcd::start(&s);
    attach_echo(&domain, "d1");
    assert_round_clean(&domain);
}

#[test]
fn fault_tenant_killed_mid_conversation() {
    let _g = serial();
    let s = Scratch::new("kconv");
    let _d = Mtipcd::start(&s);
    let mut t = Tenants::start(&s, &ids("k", 1));
    let u = Tenants::start(&s, &ids("u", 1));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    wait_listed(&domain, &u.ids);
    let conn = attach_to(&domain, "k0").expect("attach");
    echo(&conn, b"one");
    t.kill9();
    let t0 = Instant::now();
    let e = conn.recv(Some(Duration::from_secs(10))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Closed from then on, for each direction. Receiving: at once, every
    // time. Sending: the first send may still be taken by the kernel (the
    // relay holds its socket until it finds the tenant's end gone when it
    // forwards), but then every send fails, with Closed and nothing else.
    for _ in 0..3 {
        expect_err(conn.recv(Some(Duration::from_secs(5))), ErrorKind::Closed);
    }
    let mut accepted = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        match conn.send(b"two") {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} sends to a killed tenant went through"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    eprintln!("sends accepted after the tenant's death: {accepted}");
    for _ in 0..3 {
        expect_err(conn.send(b"three"), ErrorKind::Closed);
    }
    attach_echo(&domain, "u0");
    assert_round_clean(&domain);
    expect_err(attach_to(&domain, "k0"), ErrorKind::NotFound);
}

// ---------------------------------------------------------------------------
// Refusals

#[test]
fn refusals() {
    let _g = serial();
    let s = Scratch::new("refuse");
    let domain = s.domain();
    let t = Tenants::start(&s, &ids("r", 1));
    wait_listed(&domain, &t.ids);

    // No daemon.
    let e = expect_err(attach_to(&domain, "r0"), ErrorKind::Unavailable);
    assert!(e.message().contains("mtipcd"), "{e}");
    assert_round_clean(&domain);
    let mut cli = cli_attach(&s.dom(), "r0", "x", &[]);
    let st = wait_exit(&mut cli, Duration::from_secs(10)).unwrap();
    let err = read_all(cli.stderr.take());
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("MT_ERR_UNAVAILABLE") || err.contains("mtipcd"),
        "{err}"
    );

    let mut d = Mtipcd::start(&s);
    // Unknown tenant, bad id, unknown protocol.
    let e = expect_err(attach_to(&domain, "nobody"), ErrorKind::NotFound);
    assert!(e.message().contains("nobody"), "{e}");
    expect_err(attach_to(&domain, "../r0"), ErrorKind::Invalid);
    expect_err(attach_to(&domain, "@mtipcd"), ErrorKind::Invalid);
    let opts = AttachOptions {
        protocol: Some("json".into()),
        ..Default::default()
    };
    expect_err(attach::attach(&domain, "r0", &opts), ErrorKind::NotFound);
    assert_round_clean(&domain);

    // A second mtipcd on the same domain.
    let log2 = s.file("second.log");
    let mut second = spawn_mtipcd(&s.dom(), &log2);
    let st = wait_exit(&mut second, Duration::from_secs(10)).expect("second mtipcd exits");
    let text = std::fs::read_to_string(&log2).unwrap();
    assert_eq!(st.code(), Some(1), "{text}");
    assert!(text.contains("already running"), "{text}");
    assert!(d.alive());
    attach_echo(&domain, "r0");

    // SIGTERM: exit 0, socket and advertisement gone.
    let st = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
    assert!(!s.dom().join("relay.sock").exists());
    assert!(!s.dom().join("adverts/@mtipcd").exists());
    assert!(listed(&domain).iter().all(|t| t.id != "@mtipcd"));
    expect_err(attach_to(&domain, "r0"), ErrorKind::Unavailable);
    // And it starts again.
    let _d = Mtipcd::start(&s);
    attach_echo(&domain, "r0");
    assert_round_clean(&domain);
}

/// The child role `foreign` (run as uid 65534): args domain, target
/// directory. Prints what each attempt gave.
fn child_foreign(args: &[&str]) {
    let dom = Path::new(args[0]);
    match Domain::open(Some(dom)) {
        Ok(d) => match attach::attach(&d, "f0", &AttachOptions::default()) {
            Ok(_) => println!("attach ok"),
            Err(e) => println!("attach {}: {e}", e.kind().name()),
        },
        Err(e) => println!("attach {}: {e}", e.kind().name()),
    }
    let resp = Path::new(args[1]).join("response");
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&resp)
    {
        Ok(_) => println!("write ok"),
        Err(e) => println!("write {:?}", e.kind()),
    }
}

#[test]
fn foreign_uid_is_denied() {
    let _g = serial();
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip(
            "foreign_uid_is_denied",
            "needs root to run a child as uid 65534",
        );
        return;
    }
    let s = Scratch::new("foreign");
    let _d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("f", 1));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    let target = s.dom().join("adverts/f0");
    let args = [s.dom().display().to_string(), target.display().to_string()];
    // From a copy of this binary that uid 65534 can run wherever the
    // checkout is (see common::spawn_as_uid).
    let (_bin, mut child) = common::spawn_as_uid(65534, |exe| {
        common::role_command_at(exe, "MTIPC_E2E", "foreign", &args)
    });
    let st = wait_exit(&mut child, Duration::from_secs(20)).expect("foreign child exits");
    let out = read_all(child.stdout.take());
    assert!(st.success(), "{st}: {out}");
    // After the test harness's own lines.
    let mut l = out.lines().skip_while(|l| !l.starts_with("attach "));
    let a = l.next().unwrap_or_default();
    assert!(a.starts_with("attach MT_ERR_DENIED"), "{out}");
    assert_eq!(l.next(), Some("write PermissionDenied"), "{out}");
    assert!(!target.join("response").exists());
    assert!(lines(&s.file("marker")).is_empty());
    attach_echo(&domain, "f0");
    assert_round_clean(&domain);
}

#[test]
fn symlinked_response() {
    let _g = serial();
    let s = Scratch::new("symlink");
    let _d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("s", 2));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    let outside = s.file("outside.txt");
    std::fs::write(&outside, "precious\n").unwrap();
    let link = s.dom().join("adverts/s0/response");
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    // Under the attach lock no round runs: the attacher removes whatever
    // is at `response` (a link is unlinked, never followed) and writes its
    // own there (O_EXCL, O_NOFOLLOW).
    let conn = attach_to(&domain, "s0").expect("attach with a planted link");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
    echo(&conn, b"not through the link");
    conn.close();
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the link is gone"
    );
    assert_round_clean(&domain);

    // Planted in the middle of a round (after the attacher wrote its own
    // response, which it then finds replaced): still never written through.
    // Planted before the attacher writes: Denied. After: the target misses
    // its response and the round times out, cleanly.
    let quick = AttachOptions {
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    for _ in 0..6 {
        let dir = s.dom().join("adverts/s1");
        let stop = std::sync::Arc::new(std::sync::Mutex::new(false));
        let planter = {
            let (dir, outside, stop) = (dir.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || {
                while !*stop.lock().unwrap() {
                    let tmp = dir.join("planted.tmp");
                    let _ = std::os::unix::fs::symlink(&outside, &tmp);
                    let _ = std::fs::rename(&tmp, dir.join("response"));
                }
            })
        };
        let r = attach::attach(&domain, "s1", &quick);
        *stop.lock().unwrap() = true;
        planter.join().unwrap();
        let _ = std::fs::remove_file(dir.join("response"));
        match r {
            Ok(c) => echo(&c, b"raced"),
            // Planted before the attacher wrote: refused, never followed.
            Err(e) if e.kind() == ErrorKind::Denied => {
                assert!(e.message().contains("symbolic link"), "{e}")
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Timeout, "{e}"),
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
        assert_eq!(domain.semaphore().value(), 0);
    }
    attach_echo(&domain, "s1");
    attach_echo(&domain, "s0");
    assert_round_clean(&domain);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
}

// ---------------------------------------------------------------------------
// Garbage

fn plant(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

#[test]
fn garbage_files() {
    let _g = serial();
    let s = Scratch::new("garbage");
    let mut d = Mtipcd::start(&s);
    let mut t = Tenants::start(&s, &ids("g", 3));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    let adverts = s.dom().join("adverts");
    let good = std::fs::read(adverts.join("g0/advert")).unwrap();
    let mut rng = Rng(mono_ns() | 1);

    // Advertisements: random bytes, truncated, oversized, padded, another
    // id, a live pid (ours) without a waiter's files.
    plant(&adverts.join("junk1/advert"), &rng.bytes(3000));
    plant(&adverts.join("junk2/advert"), &good[..good.len() / 2]);
    let mut big = good.clone();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    plant(&adverts.join("junk3/advert"), &big);
    plant(&adverts.join("junk4/advert"), &good);
    plant(&adverts.join("junk5/sync"), &rng.bytes(128));
    plant(&adverts.join("junk5/advert"), &rng.bytes(10));
    plant(&adverts.join("junk6/advert"), b"");
    plant(&adverts.join("bad name/advert"), &good);
    plant(&adverts.join("junk7"), b"a file, not a directory");
    // Responses: garbage in live tenants' directories and the daemon's.
    plant(&adverts.join("g1/response"), &rng.bytes(500));
    plant(&adverts.join("@mtipcd/response"), &rng.bytes(5000));
    let resp = format!(
        "mtipc response 1\ntenant g2\nrelay relay.sock\npairing {}\nprotocol echo\nkey {}\nstart 0\nduration 0\nattacher {}\ncreated 0\n",
        "ab".repeat(16),
        "cd".repeat(32),
        std::process::id()
    );
    plant(
        &adverts.join("g2/response"),
        &resp.as_bytes()[..resp.len() - 12],
    );
    plant(&adverts.join("junk2/response"), resp.as_bytes());
    // A FIFO where a response would be: opening it must not block anybody.
    let fifo = std::ffi::CString::new(
        adverts
            .join("junk1/response")
            .display()
            .to_string()
            .into_bytes(),
    )
    .unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    for id in ["g0", "g1", "g0", "g2"] {
        attach_echo(&domain, id);
        assert!(d.alive(), "mtipcd died: {}", d.log_text());
        assert!(t.child.try_wait().unwrap().is_none(), "the tenants died");
    }
    // Each target's garbage response was replaced by the attacher's own
    // (and removed after the round). Garbage no attacher wrote, in a
    // directory that is never a target (mtipcd's) or not an advertisement
    // (junk*), stays: everybody reads it as garbage and skips it. (An
    // attacher removes every response only after a round whose attacher
    // died, which the round marker tells: `attacher_killed_*`.)
    let p: Vec<String> = round_clean_problems(&domain)
        .into_iter()
        .filter(|p| !p.contains("/junk") && !p.contains("@mtipcd/response"))
        .collect();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(listed(&domain).len(), 4);

    // Garbage responses planted during rounds, where the daemon's and g1's
    // waiters read them: random, truncated, oversized, a FIFO.
    let stop = std::sync::Arc::new(std::sync::Mutex::new(false));
    let planter = {
        let (adverts, stop) = (adverts.clone(), stop.clone());
        let resp = resp.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(mono_ns() | 1);
            let mut i = 0u64;
            while !*stop.lock().unwrap() {
                let dir = adverts.join(if i % 2 == 0 { "g1" } else { "@mtipcd" });
                let tmp = dir.join("planted.tmp");
                let bytes = match i % 4 {
                    0 => {
                        let n = rng.below(6000) as usize;
                        rng.bytes(n)
                    }
                    1 => resp.as_bytes()[..rng.below(resp.len() as u64) as usize].to_vec(),
                    2 => resp.repeat(2000).into_bytes(),
                    _ => resp.replace("g2", "g1").into_bytes(),
                };
                plant(&tmp, &bytes);
                let _ = std::fs::rename(&tmp, dir.join("response"));
                i += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    for id in ["g0", "g2", "g0", "g2", "g0"] {
        attach_echo(&domain, id);
        assert!(d.alive(), "mtipcd died: {}", d.log_text());
        assert!(t.child.try_wait().unwrap().is_none(), "the tenants died");
    }
    *stop.lock().unwrap() = true;
    planter.join().unwrap();
    attach_echo(&domain, "g1");
    assert!(d.alive());
    assert!(!d.log_text().contains("panicked"), "{}", d.log_text());
    wait_marker(
        &s.file("marker"),
        &["g0", "g1", "g0", "g2", "g0", "g2", "g0", "g2", "g0", "g1"],
    );
    t.kill9();
}
