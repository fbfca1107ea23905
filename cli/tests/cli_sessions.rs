//! `mtipc sessions`: the built binary run against a domain with real worker
//! processes (this test binary re-executed in the `worker` role), one of
//! them killed with `kill -9` so that its liveness shows dead; human and
//! `--json` output (parsed with serde_json); a corrupt table next to a good
//! one; a table without a request area; a 1,000,000-slot table read under a
//! pseudo-terminal (progress on stderr) and through pipes (none).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{say, Scratch};
use mtipc::session::{SessionId, Sessions, SessionsConfig, Table};
use mtipc::Domain;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

const MTIPC: &str = env!("CARGO_BIN_EXE_mtipc");
const NAME: &str = "calls";

/// Runs `mtipc --domain D sessions ARGS` with pipes (stderr not a tty).
fn mtipc(dom: &str, args: &[&str]) -> Output {
    Command::new(MTIPC)
        .args(["--domain", dom, "sessions"])
        .args(args)
        .env_remove("MTIPC_LOG")
        .output()
        .expect("run mtipc")
}

fn json(dom: &str, args: &[&str]) -> (Value, Output) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = mtipc(dom, &a);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn table<'v>(v: &'v Value, name: &str) -> &'v Value {
    v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {v:#}"))
}

/// All workers of the report's table, flattened: (group, pid, alive, served).
fn workers(t: &Value) -> Vec<(u64, u64, bool, u64)> {
    let mut out = Vec::new();
    for g in t["requests"]["groups"].as_array().unwrap() {
        for w in g["workers"].as_array().unwrap() {
            out.push((
                g["group"].as_u64().unwrap(),
                w["pid"].as_u64().unwrap(),
                w["alive"].as_bool().unwrap(),
                w["served"].as_u64().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Worker processes

struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Proc {
    /// A worker process of `group`: answers each request with its bytes,
    /// except requests starting with "hold", which it keeps unanswered.
    fn worker(dom: &str, group: u32) -> Proc {
        let mut child =
            common::role_command("MTIPC_CLI", "worker", &[dom.into(), group.to_string()])
                .spawn()
                .expect("spawn worker");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "worker ended early");
            if line.starts_with("@@ ready") {
                break;
            }
        }
        Proc { child, out }
    }

    fn pid(&self) -> u64 {
        u64::from(self.child.id())
    }

    /// Waits for the worker to say it holds a request.
    fn holding(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "worker ended");
            if line.starts_with("@@ holding") {
                return;
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

/// Not a test of its own: the entry point of the worker processes.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_CLI_ROLE") else {
        return;
    };
    assert_eq!(role, "worker");
    let args = std::env::var("MTIPC_CLI_ARGS").unwrap();
    let args: Vec<&str> = args.split('\u{1f}').collect();
    let d = Domain::open(Some(args[0].as_ref())).unwrap();
    let s = Sessions::open(&d, NAME).unwrap();
    let mut w = s.register_worker(args[1].parse().unwrap()).unwrap();
    say("ready");
    let mut held = None;
    loop {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } == 1 {
            std::process::exit(0);
        }
        if held.is_some() {
            // One open request per worker: it takes no other meanwhile.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let Some(r) = w.next(Some(Duration::from_millis(300))).unwrap() else {
            continue;
        };
        if r.bytes().starts_with(b"hold") {
            // Keep it taken and unanswered until killed.
            held = Some(r);
            say("holding");
            continue;
        }
        let b = r.bytes().to_vec();
        r.respond(&b).unwrap();
    }
}

fn config() -> SessionsConfig {
    SessionsConfig {
        capacity: 256,
        groups: 2,
        slots: 16,
        max_message: 256,
        workers: 8,
    }
}

// ---------------------------------------------------------------------------
// Tests

/// Three workers in two groups, eight sessions in two states, five of them
/// bound by requests; one request held by the group-1 worker, which is
/// then killed. The report shows it all, the dead worker as dead (with
/// `--no-reap`, twice), then reaps it: its held request fails for the
/// submitter and the next report has no worker in group 1.
#[test]
fn workers_sessions_and_a_dead_worker() {
    let sc = Scratch::new("dead");
    let d = sc.domain();
    let s = Sessions::create(&d, NAME, config()).unwrap();
    let w0a = Proc::worker(&sc.path(), 0);
    let w0b = Proc::worker(&sc.path(), 0);
    let mut w1 = Proc::worker(&sc.path(), 1);

    let mut ids: Vec<SessionId> = Vec::new();
    for i in 0..8 {
        let state = if i < 5 { 1 } else { 2 };
        ids.push(s.table().create_session("acme", state, b"u").unwrap());
    }
    // Sessions 0-3 to group 0 (two requests each), 4 to group 1.
    for &id in &ids[..4] {
        for k in 0..2 {
            let msg = format!("m{k}");
            let r = s
                .submit(id, 0, msg.as_bytes())
                .unwrap()
                .wait_vec(Some(Duration::from_secs(10)));
            assert_eq!(r.unwrap(), msg.as_bytes());
        }
    }
    let r = s
        .submit(ids[4], 1, b"x")
        .unwrap()
        .wait_vec(Some(Duration::from_secs(10)));
    assert_eq!(r.unwrap(), b"x");
    // A request that group 1's worker keeps: in flight, slot taken.
    let mut held = s.submit(ids[4], 1, b"hold").unwrap();
    w1.holding();

    // All alive.
    let (v, out) = json(&sc.path(), &["--no-reap"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = table(&v, NAME);
    assert!(t["error"].is_null());
    assert_eq!(t["capacity"], 256);
    assert_eq!(t["sessions"], 8);
    assert_eq!(t["in_flight"], 1);
    assert_eq!(t["damaged_entries"], 0);
    let by_state: Vec<(u64, u64)> = t["by_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["state"].as_u64().unwrap(),
                c["sessions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_state, vec![(1, 5), (2, 3)]);
    let ws = workers(t);
    assert_eq!(ws.len(), 3, "{ws:?}");
    let mut pids0 = vec![w0a.pid(), w0b.pid()];
    pids0.sort();
    assert_eq!(
        ws.iter()
            .filter(|w| w.0 == 0)
            .map(|w| w.1)
            .collect::<Vec<_>>(),
        pids0
    );
    assert_eq!(
        ws.iter()
            .filter(|w| w.0 == 1)
            .map(|w| w.1)
            .collect::<Vec<_>>(),
        vec![w1.pid()]
    );
    assert!(ws.iter().all(|w| w.2), "all alive: {ws:?}");
    // Served: 8 in group 0 (spread over its two workers), 1 in group 1.
    assert_eq!(ws.iter().filter(|w| w.0 == 0).map(|w| w.3).sum::<u64>(), 8);
    assert_eq!(ws.iter().filter(|w| w.0 == 1).map(|w| w.3).sum::<u64>(), 1);
    // By worker: 4 sessions bound in group 0, 1 in group 1 (with the
    // request in flight), 3 unbound.
    let bw = t["by_worker"].as_array().unwrap();
    let sum = |f: &dyn Fn(&Value) -> bool| -> u64 {
        bw.iter()
            .filter(|w| f(w))
            .map(|w| w["sessions"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum(&|w| w["group"] == 0), 4);
    assert_eq!(sum(&|w| w["group"] == 1), 1);
    assert_eq!(sum(&|w| w["worker"].is_null()), 3);
    let g1 = bw.iter().find(|w| w["group"] == 1).unwrap();
    assert_eq!(g1["pid"].as_u64(), Some(w1.pid()));
    assert_eq!(g1["in_flight"], 1);
    assert_eq!(t["requests"]["slots"]["taken"], 1);
    assert_eq!(t["requests"]["slots"]["free"], 15);
    assert_eq!(t["requests"]["groups"][0]["submitted"], 8);
    assert_eq!(t["requests"]["groups"][1]["submitted"], 2);
    assert!(t["cleanup"].is_null(), "--no-reap cleans nothing");
    // The test process and the three workers joined the table.
    let procs: Vec<u64> = t["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    for pid in [
        u64::from(std::process::id()),
        w0a.pid(),
        w0b.pid(),
        w1.pid(),
    ] {
        assert!(procs.contains(&pid), "{pid} not in {procs:?}");
    }
    assert_eq!(
        v["closures"],
        serde_json::json!([]),
        "no closures published"
    );

    // Kill group 1's only worker while it holds the request.
    let dead = w1.pid();
    w1.kill9();
    for _ in 0..2 {
        let (v, out) = json(&sc.path(), &["--no-reap"]);
        assert!(out.status.success());
        let t = table(&v, NAME);
        let ws = workers(t);
        assert!(
            ws.contains(&(1, dead, false, 1)),
            "dead worker shown dead: {ws:?}"
        );
        assert_eq!(ws.iter().filter(|w| w.2).count(), 2);
        let g1 = t["by_worker"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["group"] == 1)
            .unwrap();
        assert_eq!(g1["alive"], false);
        assert_eq!(t["in_flight"], 1);
        assert_eq!(t["requests"]["slots"]["taken"], 1);
        // Its process record is free for the next process that joins (this
        // very report's, possibly): listed dead, or not at all.
        let procs = t["processes"].as_array().unwrap();
        assert!(
            !procs
                .iter()
                .any(|p| p["pid"].as_u64() == Some(dead) && p["alive"] == true),
            "{procs:?}"
        );
    }
    // Human output, still without reaping.
    let out = mtipc(&sc.path(), &["--no-reap"]);
    assert!(out.status.success());
    let h = text(&out);
    assert!(h.contains(&format!("session table {NAME} (")), "{h}");
    assert!(h.contains("capacity     256 sessions"), "{h}");
    assert!(
        h.contains("sessions     8 live, 1 requests in flight"),
        "{h}"
    );
    assert!(h.contains("by state     1: 5, 2: 3"), "{h}");
    let dead_line = h
        .lines()
        .find(|l| l.contains(&format!(" {dead} ")) && l.contains("active"))
        .unwrap_or_else(|| panic!("no worker line for {dead}: {h}"));
    assert!(dead_line.contains("DEAD"), "{dead_line}");
    for pid in [w0a.pid(), w0b.pid()] {
        let l = h
            .lines()
            .find(|l| l.contains(&format!(" {pid} ")) && l.contains("active"))
            .unwrap_or_else(|| panic!("no worker line for {pid}: {h}"));
        assert!(l.contains(" yes "), "{l}");
    }
    assert!(
        h.contains("slots        16: free 15, filling 0, queued 0, taken 1"),
        "{h}"
    );
    assert!(h.contains("\nno closures\n"), "{h}");

    // Now with reaping (the default): shown dead, then reaped.
    let (v, out) = json(&sc.path(), &[]);
    assert!(out.status.success());
    let t = table(&v, NAME);
    assert!(workers(t).contains(&(1, dead, false, 1)));
    assert_eq!(t["cleanup"]["reaped_workers"], 1);
    // Its request failed (group 1 has no worker left): the submitter hears it.
    let e = held.wait(Some(Duration::from_secs(5))).unwrap_err();
    assert_eq!(e.kind(), mtipc::ErrorKind::Unavailable);
    drop(held);
    let (v, _) = json(&sc.path(), &[]);
    let t = table(&v, NAME);
    let ws = workers(t);
    assert_eq!(ws.len(), 2, "the dead worker is gone: {ws:?}");
    assert!(ws.iter().all(|w| w.0 == 0 && w.2));
    assert_eq!(t["in_flight"], 0);
    assert_eq!(t["requests"]["slots"]["free"], 16);
    assert_eq!(t["requests"]["groups"][1]["failed"], 1);
    assert_eq!(t["cleanup"]["reaped_workers"], 0);
    // Its session is unbound now: 4 bound (group 0), 4 unbound.
    let bw = t["by_worker"].as_array().unwrap();
    let unbound = bw.iter().find(|w| w["worker"].is_null()).unwrap();
    assert_eq!(unbound["sessions"], 4);
    assert!(
        bw.iter().all(|w| w["worker"].is_null() || w["group"] == 0),
        "{bw:?}"
    );
    drop((w0a, w0b));
}

/// A corrupt table file gives a clear error (exit status 1, the error on
/// stderr and in the report) and the good table is still shown; a table
/// without a request area is shown with what it has.
#[test]
fn corrupt_table_and_table_alone() {
    let sc = Scratch::new("corrupt");
    let d = sc.domain();
    let s = Sessions::create(&d, NAME, config()).unwrap();
    s.table().create_session("acme", 7, b"").unwrap();
    let alone = Table::create(&d, "alone", 32).unwrap();
    alone.create_session("beta", 3, b"").unwrap();
    alone.create_session("beta", 3, b"").unwrap();
    // A third session whose entry is damaged: user data length 200 in its
    // current buffer (buffer 0 after a create; at offset 100 of the entry).
    let hurt = alone.create_session("beta", 3, b"").unwrap();
    let off = alone.geometry().entries_off + u64::from(hurt.slot().unwrap()) * 256 + 100;
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new()
            .write(true)
            .open(alone.path())
            .unwrap(),
        &200u32.to_le_bytes(),
        off,
    )
    .unwrap();
    assert_eq!(
        alone.lookup(hurt).unwrap_err().kind(),
        mtipc::ErrorKind::Corrupt
    );
    // "bad": the right name, garbage inside, owner-only like ours.
    let bad = sc.0.join("sessions/bad.table");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&bad)
        .unwrap();
    f.write_all(&[0xa5; 8192]).unwrap();
    drop(f);
    // "short": a valid table cut short.
    Table::create(&d, "short", 64).unwrap();
    let short = sc.0.join("sessions/short.table");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(4096)
        .unwrap();

    let (v, out) = json(&sc.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("session table bad:") && err.contains("MT_ERR_CORRUPT"),
        "{err}"
    );
    assert!(err.contains("session table short:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let names: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alone", "bad", "calls", "short"]);
    assert_eq!(table(&v, "bad")["error"]["kind"], "MT_ERR_CORRUPT");
    assert!(table(&v, "bad")["capacity"].is_null());
    assert_eq!(table(&v, "short")["error"]["kind"], "MT_ERR_CORRUPT");
    let calls = table(&v, NAME);
    assert!(calls["error"].is_null());
    assert_eq!(calls["sessions"], 1);
    assert_eq!(calls["by_state"][0]["state"], 7);
    let a = table(&v, "alone");
    assert!(a["error"].is_null());
    assert_eq!(a["sessions"], 2);
    assert_eq!(a["damaged_entries"], 1);
    assert_eq!(a["capacity"], 32);
    assert!(a["requests"].is_null());
    assert_eq!(a["requests_error"]["kind"], "MT_ERR_NOT_FOUND");

    let out = mtipc(&sc.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let h = text(&out);
    assert!(
        h.contains("session table bad (") && h.contains("ERROR:"),
        "{h}"
    );
    assert!(h.contains("session table calls ("), "{h}");
    assert!(h.contains("no request area"), "{h}");
    assert!(
        h.contains("2 live, 0 requests in flight, 1 DAMAGED entries skipped"),
        "{h}"
    );

    // --name: only that one; an unknown name is an error.
    let (v, out) = json(&sc.path(), &["--name", NAME]);
    assert!(out.status.success());
    assert_eq!(v["tables"].as_array().unwrap().len(), 1);
    let out = mtipc(&sc.path(), &["--name", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MT_ERR_NOT_FOUND"));
    let out = mtipc(&sc.path(), &["--name", "../x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MT_ERR_INVALID"));
    drop(s);
}

/// A table of 1,000,000 slots: the scan shows progress on stderr when
/// stderr is a terminal (run under `script`, which gives it a pty), and
/// none through a pipe; the counts are right either way.
/// A request area that is there but cannot be read (truncated, garbage,
/// replaced by a symbolic link) is an error of the report: shown, on
/// stderr, exit status 1 (it used to be 0). A table alone stays no error.
#[test]
fn unreadable_request_area_is_an_error() {
    for damage in ["truncated", "garbage", "symlink"] {
        let sc = Scratch::new(&format!("requests-{damage}"));
        let d = sc.domain();
        let s = Sessions::create(&d, NAME, config()).unwrap();
        let rpath = s.requests_path().to_path_buf();
        drop(s);
        match damage {
            "truncated" => std::fs::OpenOptions::new()
                .write(true)
                .open(&rpath)
                .unwrap()
                .set_len(100)
                .unwrap(),
            "garbage" => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&rpath)
                    .unwrap();
                std::os::unix::fs::FileExt::write_at(&f, &[0xa5; 64], 0).unwrap();
            }
            _ => {
                let elsewhere = sc.path().to_string() + "/elsewhere";
                std::fs::rename(&rpath, &elsewhere).unwrap();
                std::os::unix::fs::symlink(&elsewhere, &rpath).unwrap();
            }
        }
        let (v, out) = json(&sc.path(), &[]);
        assert_eq!(out.status.code(), Some(1), "{damage}: {v}");
        let t = table(&v, NAME);
        assert!(t["error"].is_null(), "{damage}: the table itself is fine");
        let kind = t["requests_error"]["kind"].as_str().unwrap().to_string();
        let want = if damage == "symlink" {
            "MT_ERR_DENIED"
        } else {
            "MT_ERR_CORRUPT"
        };
        assert_eq!(kind, want, "{damage}: {v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("request area of session table {NAME}")) && err.contains(want),
            "{damage}: {err}"
        );
    }
    // A table without a request area is a table alone: exit status 0.
    let sc = Scratch::new("requests-alone");
    let d = sc.domain();
    Table::create(&d, NAME, 16).unwrap();
    let (v, out) = json(&sc.path(), &[]);
    assert!(out.status.success(), "{v}");
    assert_eq!(
        table(&v, NAME)["requests_error"]["kind"],
        "MT_ERR_NOT_FOUND"
    );
}

#[test]
fn big_table_progress_only_on_a_tty() {
    let sc = Scratch::new("big");
    let d = sc.domain();
    let t = Table::create(&d, "big", 1_000_000).unwrap();
    for _ in 0..100 {
        t.create_session("acme", 1, b"").unwrap();
    }
    let (v, out) = json(&sc.path(), &[]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "no progress through a pipe: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = table(&v, "big");
    assert_eq!(b["capacity"], 1_000_000);
    assert_eq!(b["sessions"], 100);
    assert!(b["region_bytes"].as_u64().unwrap() <= 256 << 20);

    // Under a pseudo-terminal: stdout and stderr both go to the pty, which
    // `script` copies to its stdout.
    let cmd = format!("{MTIPC} --domain {} sessions --name big", sc.path());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    assert!(out.status.success(), "{out:?}");
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(
        all.contains("reading session table big:"),
        "no progress shown: {all}"
    );
    assert!(all.contains("of 1000000 slots"), "{all}");
    assert!(all.contains("sessions     100 live"), "{all}");
}

/// Closures: current version, the versions on disk (a superseded one that
/// a reader still holds) and the readers of each (one per open).
#[test]
fn closures_with_versions_and_readers() {
    let sc = Scratch::new("closures");
    let d = sc.domain();
    assert_eq!(mtipc::closure::publish_bytes(&d, "cfg", b"one").unwrap(), 1);
    let old = mtipc::closure::Closure::open(&d, "cfg").unwrap();
    assert_eq!(
        mtipc::closure::publish_bytes(&d, "cfg", b"two!").unwrap(),
        2
    );
    let r1 = mtipc::closure::Closure::open(&d, "cfg").unwrap();
    let r2 = mtipc::closure::Closure::open(&d, "cfg").unwrap();
    mtipc::closure::publish_bytes(&d, "alone", b"x").unwrap();

    let (v, out) = json(&sc.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["tables"], serde_json::json!([]));
    let c = v["closures"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0]["name"], "alone");
    assert_eq!(c[0]["current"], 1);
    assert_eq!(c[0]["versions"][0]["readers"], 0);
    assert_eq!(c[1]["name"], "cfg");
    assert_eq!(c[1]["current"], 2);
    let vs: Vec<(u64, u64)> = c[1]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["readers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(vs, [(1, 1), (2, 2)]);
    // One line, compact (as `ls --json`; scripts grep it).
    let raw = String::from_utf8_lossy(&out.stdout);
    assert_eq!(raw.matches('\n').count(), 1, "{raw}");
    assert!(raw.contains("\"readers\":1"), "{raw}");
    let out = mtipc(&sc.path(), &[]);
    let h = text(&out);
    assert!(h.contains("no session tables"), "{h}");
    let line = h
        .lines()
        .find(|l| l.contains(" cfg "))
        .unwrap_or_else(|| panic!("{h}"));
    assert!(
        line.contains("v1 (") && line.contains("1 reader)"),
        "{line}"
    );
    assert!(
        line.contains("v2 (") && line.contains("2 readers)"),
        "{line}"
    );

    // The old version goes when its last reader does.
    drop(old);
    let (v, _) = json(&sc.path(), &[]);
    let vs: Vec<u64> = v["closures"][1]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(vs, [2]);
    drop((r1, r2));
}
