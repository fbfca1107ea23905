//! `mtipc ha status|start|stop|restart|log`, the real `mtipc` program
//! against the real `mtipc-ha run` supervising real processes (shell
//! scripts that stamp their start and their stop signal): the status as a
//! table and as JSON; one process stopped and started (a new pid, the
//! others keep theirs); a tenant group stopped in reverse order and
//! started in order while the other group runs on untouched; restart; an
//! unknown name or group; a process's log, rotated; no supervisor; another
//! uid refused (as root).

#[path = "../../tests/common/mod.rs"]
mod common;
mod ha_node;

use common::Scratch;
use ha_node::{toml_str, Node};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

impl Node {
    /// [`Node::start`], then waits until the supervisor serves its
    /// control socket.
    fn serving(dir: &Path, body: &str) -> Node {
        let node = Node::start(dir, body);
        let end = Instant::now() + Duration::from_secs(10);
        while !node.domain().join("ha/control.sock").exists() {
            assert!(Instant::now() < end, "no control socket:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        node
    }

    /// `mtipc --domain DOM ha ARGS`.
    fn mtipc(&self, args: &[&str]) -> Output {
        mtipc(&self.domain(), args)
    }

    /// `mtipc ha ARGS`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.mtipc(args);
        assert!(
            o.status.success(),
            "mtipc ha {args:?}: {:?}\nstdout: {}\nstderr: {}\n--- mtipc-ha's log:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `mtipc ha status --json`.
    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// name -> pid, from `mtipc ha status --json`.
    fn pids(&self) -> Vec<(String, Option<u64>)> {
        self.status()["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["pid"].as_u64()))
            .collect()
    }

    fn process(&self, name: &str) -> Value {
        self.status()["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    }
}

fn mtipc(domain: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtipc"))
        .arg("--domain")
        .arg(domain)
        .arg("ha")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A process that stamps `start NAME NS` into `DIR/stamps` once its
/// TERM trap is set, `stop NAME NS` when its stop signal comes, and says
/// hello on its output.
fn stamper(dir: &Path, name: &str, extra: &str) -> String {
    let f = dir.join("stamps").display().to_string();
    let script = format!(
        "trap 'echo stop {name} $(date +%s%N) >> {f}; exit 0' TERM; \
         echo hello from {name}; echo start {name} $(date +%s%N) >> {f}; sleep 1000 & wait"
    );
    format!(
        "[[process]]\nname = \"{name}\"\ncommand = [\"/bin/sh\", \"-c\", {}]\n{extra}\n\n",
        toml_str(&script)
    )
}

/// The stamps: (what, name, ns).
fn stamps(dir: &Path) -> Vec<(String, String, u128)> {
    std::fs::read_to_string(dir.join("stamps"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[1].to_string(), w[2].parse().unwrap())
        })
        .collect()
}

/// Waits until `n` stamps are there (the traps set); returns them sorted
/// by time, then empties the file.
fn take_stamps(dir: &Path, n: usize) -> Vec<(String, String)> {
    let end = Instant::now() + Duration::from_secs(10);
    let mut s = stamps(dir);
    while s.len() < n {
        assert!(Instant::now() < end, "only {s:?}, want {n}");
        std::thread::sleep(Duration::from_millis(10));
        s = stamps(dir);
    }
    std::fs::write(dir.join("stamps"), "").unwrap();
    s.sort_by_key(|x| x.2);
    s.into_iter().map(|(w, n, _)| (w, n)).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// x1, x2 and x3 were spawned in that order: their pids increase (pids
/// are handed out in increasing order, barring a wrap of pid_max, which
/// a test run does not meet).
fn assert_spawned_in_order(pids: &[(String, Option<u64>)]) {
    let x: Vec<u64> = ["x1", "x2", "x3"]
        .iter()
        .map(|n| pid_of(pids, n).unwrap())
        .collect();
    assert!(x.windows(2).all(|w| w[0] < w[1]), "{x:?}");
}

fn pid_of(pids: &[(String, Option<u64>)], name: &str) -> Option<u64> {
    pids.iter().find(|(n, _)| n == name).unwrap().1
}

fn status_start_stop_restart_and_groups() {
    let d = Scratch::create("ops");
    let dir = d.0.clone();
    let body = format!(
        "{}{}{}{}",
        stamper(&dir, "x1", "tenant_group = \"x\""),
        stamper(&dir, "x2", "tenant_group = \"x\"\ndepends_on = [\"x1\"]"),
        stamper(&dir, "x3", "tenant_group = \"x\"\ndepends_on = [\"x2\"]"),
        stamper(&dir, "y1", "tenant_group = \"y\""),
    );
    let node = Node::serving(&dir, &body);
    take_stamps(&dir, 4);
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(node.domain().join("ha/control.sock")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    // Status as JSON: every process up, the supervisor's pid; under `run`
    // the roles not split (no role pids invented), under `up` the five
    // roles' pids, each a live mtipc-ha process.
    let s = node.status();
    assert_eq!(s["node"], "t");
    if ha_node::mode() == "run" {
        assert_eq!(s["supervisor_pid"], node.pid());
        assert_eq!(s["roles"]["split"], false);
        assert_eq!(s["roles"]["supervisor_pid"], node.pid());
    } else {
        assert_eq!(s["roles"]["split"], true);
        assert_eq!(s["roles"]["node_pid"], node.pid());
        assert_eq!(s["supervisor_pid"], s["roles"]["server"]);
        for r in ["server", "monitor", "spawner", "master", "watcher"] {
            let pid = s["roles"][r].as_u64().unwrap_or_else(|| panic!("{r}: {s}"));
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            let words: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            assert_eq!(words[1], b"role", "{r}");
            assert_eq!(words[2], r.as_bytes());
        }
    }
    let ps = s["processes"].as_array().unwrap();
    let names: Vec<&str> = ps.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["x1", "x2", "x3", "y1"]);
    for p in ps {
        assert_eq!(p["state"], "up", "{p}");
        assert!(p["pid"].as_u64().is_some());
        assert_eq!(p["restarts"], 0);
        assert!(p["uptime_ms"].as_u64().is_some());
    }
    assert_eq!(ps[3]["group"], "y");

    // As a table: a header, one row per process with its state, pid and
    // group, and the supervisor's pid.
    let text = node.ok(&["status"]);
    let lines: Vec<&str> = text.lines().collect();
    if ha_node::mode() == "run" {
        assert!(
            lines[0].contains(&format!("supervisor mtipc-ha run, pid {}", node.pid())),
            "{text}"
        );
        assert!(lines[1].contains("roles: not split"), "{text}");
    } else {
        assert!(
            lines[0].contains(&format!("mtipc-ha up, pid {}", node.pid())),
            "{text}"
        );
        assert!(
            lines[1].starts_with(&format!("roles: server {}, monitor", s["roles"]["server"])),
            "{text}"
        );
    }
    let head: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        head,
        ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST", "EXIT", "GROUP", "WHY"]
    );
    for (row, p) in lines[3..].iter().zip(ps) {
        let w: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(w[0], p["name"].as_str().unwrap(), "{text}");
        assert_eq!(w[1], "up", "{text}");
        assert_eq!(w[2], p["pid"].as_u64().unwrap().to_string(), "{text}");
        assert_eq!(w[4], "0", "{text}");
        assert_eq!(w[6], p["group"].as_str().unwrap(), "{text}");
    }
    assert_eq!(lines.len(), 7, "{text}");

    // One process stopped, then started: a new pid; the others keep theirs.
    let before = node.pids();
    let out = node.ok(&["stop", "y1"]);
    assert!(out.lines().nth(1).unwrap().starts_with("y1 "), "{out}");
    assert!(out.contains("stopped"), "{out}");
    let y1 = node.process("y1");
    assert_eq!(y1["state"], "stopped");
    assert!(y1["pid"].is_null());
    assert_eq!(take_stamps(&dir, 1), pairs(&[("stop", "y1")]));
    let out = node.ok(&["start", "y1"]);
    assert!(out.contains(" up "), "{out}");
    take_stamps(&dir, 1);
    let after = node.pids();
    assert_ne!(pid_of(&after, "y1"), pid_of(&before, "y1"));
    assert!(pid_of(&after, "y1").is_some());
    for n in ["x1", "x2", "x3"] {
        assert_eq!(pid_of(&after, n), pid_of(&before, n), "{n}");
    }

    // A tenant group stopped: its members in reverse order, from the
    // stamps; the other group's process keeps its pid.
    let before = node.pids();
    node.ok(&["stop", "@x"]);
    assert_eq!(
        take_stamps(&dir, 3),
        pairs(&[("stop", "x3"), ("stop", "x2"), ("stop", "x1")])
    );
    let mid = node.pids();
    for n in ["x1", "x2", "x3"] {
        assert_eq!(pid_of(&mid, n), None, "{n}");
    }
    assert_eq!(pid_of(&mid, "y1"), pid_of(&before, "y1"));
    // Started again, in order: spawned one after the other (each
    // `ready = "started"` is up at its exec, so all three may start in one
    // round and their own stamps race): increasing pids.
    node.ok(&["start", "@x"]);
    assert_eq!(
        sorted(take_stamps(&dir, 3)),
        pairs(&[("start", "x1"), ("start", "x2"), ("start", "x3")])
    );
    let after = node.pids();
    assert_spawned_in_order(&after);
    assert_eq!(pid_of(&after, "y1"), pid_of(&before, "y1"));
    for n in ["x1", "x2", "x3"] {
        assert!(pid_of(&after, n).is_some(), "{n}");
        assert_ne!(pid_of(&after, n), pid_of(&before, n), "{n}");
    }

    // restart NAME: a new pid when it returns, the others untouched, not
    // counted as a policy restart.
    let before = node.pids();
    let out = node.ok(&["restart", "x2"]);
    assert!(out.contains(" up "), "{out}");
    let after = node.pids();
    assert!(pid_of(&after, "x2").is_some());
    assert_ne!(pid_of(&after, "x2"), pid_of(&before, "x2"));
    for n in ["x1", "x3", "y1"] {
        assert_eq!(pid_of(&after, n), pid_of(&before, n), "{n}");
    }
    assert_eq!(node.process("x2")["restarts"], 0);
    assert_eq!(
        take_stamps(&dir, 2),
        pairs(&[("stop", "x2"), ("start", "x2")])
    );

    // restart @GROUP: stopped in reverse order, then started in order.
    node.ok(&["restart", "@x"]);
    let s = take_stamps(&dir, 6);
    assert_eq!(
        s[..3],
        pairs(&[("stop", "x3"), ("stop", "x2"), ("stop", "x1")])
    );
    assert_eq!(
        sorted(s[3..].to_vec()),
        pairs(&[("start", "x1"), ("start", "x2"), ("start", "x3")])
    );
    let after = node.pids();
    assert_spawned_in_order(&after);
    assert_eq!(pid_of(&after, "y1"), pid_of(&before, "y1"));

    // Unknown names and groups, bad names: exit 1 with the reason, and
    // nothing changed.
    let before = node.pids();
    for (args, why) in [
        (&["stop", "nope"][..], "no process \"nope\""),
        (&["restart", "nope"][..], "no process \"nope\""),
        (&["start", "@nope"][..], "no tenant group \"nope\""),
        (&["stop", "../x"][..], "bad process name"),
        (&["log", "nope"][..], "no process \"nope\""),
    ] {
        let o = node.mtipc(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(node.pids(), before);

    // The log: the process's output.
    let out = node.ok(&["log", "y1"]);
    assert_eq!(out, "hello from y1\nhello from y1\n");
    assert_eq!(node.ok(&["log", "y1", "--lines", "1"]), "hello from y1\n");
    assert_eq!(node.ok(&["log", "x2", "--lines", "0"]), "");
}

fn log_reads_the_current_file_then_the_rotated_one() {
    let d = Scratch::create("log");
    let dir = d.0.clone();
    // 1000 numbered lines of 10 bytes each, in files of at most 4096
    // bytes: p.log.2, p.log.1 and p.log.
    let body = format!(
        "[[process]]\nname = \"p\"\ncommand = [\"/bin/sh\", \"-c\", {}]\nlog_max_bytes = 4096\nlog_keep = 2\nrestart = \"never\"\n",
        toml_str("i=1000; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; sleep 1000")
    );
    let node = Node::serving(&dir, &body);
    let end = Instant::now() + Duration::from_secs(10);
    let log = node.domain().join("ha/log/p.log");
    // Written once the file holds the last line (the log thread may lag
    // the process).
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .ends_with("line 1999\n")
    {
        assert!(Instant::now() < end, "{}", node.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let current = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(current < 410 && current > 10, "{current}");
    assert!(node.domain().join("ha/log/p.log.1").exists());
    let want = |n: usize| -> String { (2000 - n..2000).map(|i| format!("line {i}\n")).collect() };
    assert_eq!(node.ok(&["log", "p"]), want(50));
    assert_eq!(node.ok(&["log", "p", "--lines", "3"]), want(3));
    // More than the current file holds: the rotated .1 before it.
    assert_eq!(
        node.ok(&["log", "p", "--lines", &(current + 5).to_string()]),
        want(current + 5)
    );
    assert_eq!(
        node.ok(&["log", "p", "--lines", &current.to_string()]),
        want(current)
    );
}

fn no_supervisor_is_an_error() {
    let d = Scratch::create("none");
    let dom = d.0.join("dom");
    // No domain at all; then a domain whose supervisor is gone but left a
    // socket file behind (nothing listens).
    for stale in [false, true] {
        if stale {
            std::fs::create_dir_all(dom.join("ha")).unwrap();
            let l = std::os::unix::net::UnixListener::bind(dom.join("ha/control.sock")).unwrap();
            drop(l);
        }
        for args in [
            &["status"][..],
            &["stop", "x"][..],
            &["status", "--json"][..],
        ] {
            let o = mtipc(&dom, args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?} {stale}: {err}");
            assert!(
                err.contains("no HA supervisor runs on this domain"),
                "{args:?}: {err}"
            );
            assert!(o.stdout.is_empty());
        }
    }
    // After a supervisor stopped: its socket is gone with it, and the log
    // is still found through the status file it left.
    let d2 = Scratch::create("gone");
    let mut node = Node::serving(
        &d2.0,
        "[[process]]\nname = \"e\"\ncommand = [\"/bin/sh\", \"-c\", \"echo bye; sleep 1000\"]\n",
    );
    let end = Instant::now() + Duration::from_secs(10);
    while node.ok(&["log", "e"]) != "bye\n" {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = node.child.take().unwrap();
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(!node.domain().join("ha/control.sock").exists());
    let o = node.mtipc(&["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no HA supervisor runs"));
    assert_eq!(node.ok(&["log", "e"]), "bye\n");
}

fn another_uid_is_refused() {
    const TEST: &str = "another_uid_is_refused";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip(TEST, "needs root (a client switched to uid 65534)");
        return;
    }
    let d = Scratch::create("uid");
    let dir = d.0.clone();
    let node = Node::serving(
        &dir,
        "[[process]]\nname = \"s\"\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    );
    // A copy of mtipc where uid 65534 can run it (the checkout may be
    // where it cannot go).
    let exe = dir.join("mtipc");
    std::fs::copy(env!("CARGO_BIN_EXE_mtipc"), &exe).unwrap();
    let as_nobody = |args: &[&str]| -> std::io::Result<Output> {
        use std::os::unix::process::CommandExt;
        Command::new(&exe)
            .arg("--domain")
            .arg(node.domain())
            .arg("ha")
            .args(args)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
    };
    let pid_before = node.process("s")["pid"].clone();
    // The modes as the supervisor made them: the owner-only directory
    // keeps uid 65534 out.
    let o = match as_nobody(&["status"]) {
        Ok(o) => o,
        Err(e) => return common::skip(TEST, &format!("cannot run a copy of mtipc as 65534: {e}")),
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // The modes loosened (as a careless operator might): the peer check
    // still refuses uid 65534, for status and for a stop.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: PathBuf, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(dir.clone(), 0o755);
    mode(node.domain(), 0o755);
    mode(node.domain().join("ha"), 0o755);
    mode(node.domain().join("ha/control.sock"), 0o666);
    for args in [&["status"][..], &["stop", "s"][..]] {
        let o = as_nobody(args).unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("refused: uid 65534 is neither the supervisor's uid 0 nor root"),
            "{args:?}: {err}"
        );
    }
    assert!(
        node.log().contains("control: refused pid"),
        "{}",
        node.log()
    );
    let s = node.process("s");
    assert_eq!(s["state"], "up");
    assert_eq!(s["pid"], pid_before);
}

fn waits_show_progress_time_out_and_report_failures() {
    let d = Scratch::create("wait");
    let dir = d.0.clone();
    // slow ignores its stop signal (and so does its sleep, which inherits
    // the ignored signal): it goes with SIGKILL 2500 ms later.
    let body = r#"
[[process]]
name = "slow"
command = ["/bin/sh", "-c", "trap '' TERM; sleep 1000"]
stop_timeout_ms = 2500

[[process]]
name = "bad"
command = ["/nonexistent/program"]
restart = "never"

[[process]]
name = "dep"
command = ["/bin/sleep", "1000"]
depends_on = ["bad"]
"#;
    let node = Node::serving(&dir, body);
    let end = Instant::now() + Duration::from_secs(10);
    while node.process("slow")["state"] != "up" || node.process("dep")["state"] != "held" {
        assert!(Instant::now() < end, "{}", node.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    // Past --timeout-ms: exit 3, the states on stderr.
    let t0 = Instant::now();
    let o = node.mtipc(&["stop", "slow", "--timeout-ms", "300"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(t0.elapsed() < Duration::from_millis(2000));
    assert!(err.contains("stop slow: not done within 300 ms"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("slow ") && l.contains("stopping")),
        "{err}"
    );
    // Waiting on: a progress line once a second, then done (SIGKILL).
    let o = node.mtipc(&["stop", "slow"]);
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("stop slow: waiting 1 s for slow (stopping)"),
        "{err}"
    );
    assert!(out.contains("signal SIGKILL"), "{out}");
    assert!(t0.elapsed() >= Duration::from_millis(2400));
    assert_eq!(node.process("slow")["state"], "stopped");
    // A start that cannot take effect: exit 1 with the reason.
    let o = node.mtipc(&["start", "bad"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad is failed: cannot execute"), "{err}");
    let o = node.mtipc(&["start", "dep"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("dep is held: dependency bad failed"), "{err}");
    // While the node stops (slow holds it up): starts are refused, the
    // status says so.
    node.ok(&["start", "slow"]);
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(node.pid() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(2);
    while node.status()["stopping"] != true {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = node.mtipc(&["start", "bad"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the node is stopping"), "{err}");
    assert!(node
        .ok(&["status"])
        .lines()
        .next()
        .unwrap()
        .ends_with("(stopping)"));
}

fn hostile_requests_on_the_wire() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let d = Scratch::create("wire");
    let node = Node::serving(
        &d.0,
        "[[process]]\nname = \"s\"\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    );
    let sock = node.domain().join("ha/control.sock");
    let answer = |r: &mut BufReader<UnixStream>| -> Option<Value> {
        let mut line = String::new();
        match r.read_line(&mut line).unwrap() {
            0 => None,
            _ => Some(serde_json::from_str(&line).unwrap()),
        }
    };
    let c = UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    // Refused with a reason, the connection kept.
    for (line, why) in [
        (&b"status x\n"[..], "wrong number of arguments"),
        (b"\xff\xfe\n", "not printable ASCII"),
        (b"start s\0\n", "not printable ASCII"),
        (b"\n", "empty"),
        (b"delete s\n", "unknown request"),
        (b"stop @../x\n", "bad tenant group"),
        (b"restart @g\n", "stop @g, then start @g"),
    ] {
        w.write_all(line).unwrap();
        let a = answer(&mut r).unwrap();
        assert_eq!(a["ok"], false, "{a}");
        assert!(a["error"].as_str().unwrap().contains(why), "{a}");
    }
    w.write_all(b"status\n").unwrap();
    let a = answer(&mut r).unwrap();
    assert_eq!(a["ok"], true);
    assert_eq!(a["status"]["processes"][0]["name"], "s");
    // Pipelined requests: one answer each, in order.
    w.write_all(b"status\nstop nope\nstatus\n").unwrap();
    assert_eq!(answer(&mut r).unwrap()["ok"], true);
    assert_eq!(answer(&mut r).unwrap()["ok"], false);
    assert_eq!(answer(&mut r).unwrap()["ok"], true);
    // A line too long: an error, then the connection is closed.
    w.write_all(&[b'a'; 5000]).unwrap();
    let a = answer(&mut r).unwrap();
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("longer than 1023 bytes"),
        "{a}"
    );
    assert!(answer(&mut r).is_none());
    // A connection that ends mid-line; one that says nothing.
    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(b"stat").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut r = BufReader::new(c);
    let a = answer(&mut r).unwrap();
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("not ended by a newline"),
        "{a}"
    );
    drop(UnixStream::connect(&sock).unwrap());
    // The supervisor serves on, its process untouched.
    let s = node.process("s");
    assert_eq!(s["state"], "up");
    assert_eq!(s["restarts"], 0);
}

fn root_may_ask_a_supervisor_of_another_uid() {
    const TEST: &str = "root_may_ask_a_supervisor_of_another_uid";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip(TEST, "needs root (a supervisor run as uid 65534)");
        return;
    }
    use std::os::unix::process::CommandExt;
    let d = Scratch::create("nobody");
    let dir = d.0.clone();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"t\"\ndomain = \"{}\"\n\n[[process]]\nname = \"s\"\ncommand = [\"/bin/sleep\", \"1000\"]\n",
            dir.join("dom").display()
        ),
    )
    .unwrap();
    // Copies of the programs where uid 65534 can run them.
    let ha = dir.join("mtipc-ha");
    let ctl = dir.join("mtipc");
    std::fs::copy(env!("CARGO_BIN_EXE_mtipc-ha"), &ha).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_mtipc"), &ctl).unwrap();
    let child = Command::new(&ha)
        .arg(ha_node::mode())
        .arg(&config)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return common::skip(TEST, &format!("cannot run mtipc-ha as 65534: {e}")),
    };
    let node = Node {
        dir: dir.clone(),
        child: Some(child),
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !node.domain().join("ha/control.sock").exists() {
        if Instant::now() > end {
            return common::skip(TEST, "mtipc-ha did not come up as uid 65534 (noexec /tmp?)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Root asks it (its peer check lets root in; root trusts it).
    let s = node.status();
    if ha_node::mode() == "run" {
        assert_eq!(s["supervisor_pid"], node.pid());
    } else {
        assert_eq!(s["roles"]["node_pid"], node.pid());
    }
    let pid = node.process("s")["pid"].as_u64();
    // Its own uid too, through the copy.
    let o = Command::new(&ctl)
        .arg("--domain")
        .arg(node.domain())
        .args(["ha", "restart", "s"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let now = node.process("s");
    assert_eq!(now["state"], "up");
    assert_ne!(now["pid"].as_u64(), pid);
    node.ok(&["stop", "s"]);
    assert_eq!(node.process("s")["state"], "stopped");
}

/// Processes restarted at once (`restart_backoff_ms = 0`; under `up`, by
/// the Spawner on the Server's standing order) stop when asked and stay
/// stopped. One that runs: stopped and started 5 times, it starts exactly
/// once each time (its stop signal calls its order off: nothing is
/// started to be killed). One that ends every 20 ms, stopped and started
/// 10 times: a stop that crosses one of its ends leaves nothing running
/// (a process started again on the order while the stop was on its way
/// is killed; once the stop is asked for, a new process of it would run
/// on, so one left over would be seen), and nothing starts it again
/// until it is started.
fn processes_restarted_at_once_stop_when_asked() {
    let d = Scratch::create("atonce");
    let steady = d.0.join("steady");
    let flap = d.0.join("flap");
    let hold = d.0.join("hold");
    let body = format!(
        "[[process]]\nname = \"steady\"\ncommand = [\"/bin/sh\", \"-c\", {}]\nrestart_backoff_ms = 0\n\n\
         [[process]]\nname = \"flap\"\ncommand = [\"/bin/sh\", \"-c\", {}]\n\
         restart_backoff_ms = 0\nrestart_max = 1000000\nrestart_window_ms = 1000\n",
        toml_str(&format!("echo $$ >> {}; exec sleep 1000", steady.display())),
        toml_str(&format!(
            "echo $$ >> {}; [ -e {} ] && exec sleep 1000; sleep 0.02; exit 1",
            flap.display(),
            hold.display()
        ))
    );
    let node = Node::serving(&d.0, &body);
    let starts = |f: &Path| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < end, "{what}\n{}", node.log());
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let not_wanted = "not wanted now";
    for round in 1..=5 {
        wait_for(&format!("steady round {round}: its start"), &|| {
            starts(&steady) == round
        });
        node.ok(&["stop", "steady"]);
        wait_for(&format!("steady round {round}: stopped"), &|| {
            node.process("steady")["state"] == "stopped"
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            starts(&steady),
            round,
            "steady round {round}\n{}",
            node.log()
        );
        assert_eq!(
            ha_node::live_named(&node.domain(), "steady"),
            Vec::<u32>::new()
        );
        node.ok(&["start", "steady"]);
    }
    assert!(!node.log().contains(not_wanted), "{}", node.log());
    for round in 0..10 {
        // Flapping: three more starts.
        let from = starts(&flap);
        wait_for(&format!("flap round {round}: it restarts"), &|| {
            starts(&flap) >= from + 3
        });
        std::fs::write(&hold, "").unwrap();
        node.ok(&["stop", "flap"]);
        wait_for(&format!("flap round {round}: stopped"), &|| {
            node.process("flap")["state"] == "stopped"
        });
        std::thread::sleep(Duration::from_millis(300));
        let p = node.process("flap");
        assert_eq!(
            p["state"],
            "stopped",
            "flap round {round}: {p}\n{}",
            node.log()
        );
        assert!(p["pid"].is_null(), "flap round {round}: {p}");
        assert_eq!(
            ha_node::live_named(&node.domain(), "flap"),
            Vec::<u32>::new(),
            "flap round {round}: a process of the name still runs\n{}",
            node.log()
        );
        let n = starts(&flap);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            starts(&flap),
            n,
            "flap round {round}: started while stopped\n{}",
            node.log()
        );
        std::fs::remove_file(&hold).unwrap();
        node.ok(&["start", "flap"]);
    }
}

// Every test runs against both programs: `mtipc-ha run` (one process)
// and `mtipc-ha up` (the five roles).
ha_node::both!(
    status_start_stop_restart_and_groups,
    log_reads_the_current_file_then_the_rotated_one,
    no_supervisor_is_an_error,
    another_uid_is_refused,
    waits_show_progress_time_out_and_report_failures,
    hostile_requests_on_the_wire,
    root_may_ask_a_supervisor_of_another_uid,
    processes_restarted_at_once_stop_when_asked,
);
