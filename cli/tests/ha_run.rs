//! `mtipc-ha run CONFIG`, the real program supervising real processes
//! (shell scripts, and this test binary re-executed as an application
//! that uses the hooks of `mtipc::ha`): dependency order and priority,
//! `notify` readiness gating dependents, the environment, working
//! directory and descriptors a process gets, its log rotated by size, a
//! crash loop held to its cap with a growing backoff, the watchdog, a stop
//! signal ignored until SIGKILL, a command that cannot be executed, and
//! SIGTERM stopping everything in reverse order with nothing left behind
//! (checked through `/proc`). The state is read from the status file.

#[path = "../../tests/common/mod.rs"]
mod common;
mod ha_node;

use common::Scratch;
use ha_node::{toml_str, Node};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "MTIPC_HA_RUN_CHILD";

/// The application side, when this binary runs under `mtipc-ha`:
/// `$MTIPC_HA_RUN_CHILD` is `MODE FILE [MS]`.
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let file = Path::new(parts[1]);
    let ms = |k: usize| Duration::from_millis(parts[k].parse().unwrap());
    match parts[0] {
        // Says ready MS after it starts; stamps both.
        "notify" => {
            stamp(file, "start");
            std::thread::sleep(ms(2));
            stamp(file, "ready");
            mtipc::ha::ready().unwrap();
            std::thread::sleep(Duration::from_secs(1000));
        }
        // Heartbeats every 20 ms for MS, then stops heartbeating.
        "heartbeat" => {
            stamp(file, "start");
            let until = Instant::now() + ms(2);
            while Instant::now() < until {
                mtipc::ha::heartbeat().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            mtipc::ha::heartbeat().unwrap();
            stamp(file, "last-heartbeat");
            std::thread::sleep(Duration::from_secs(1000));
        }
        // Ready; healthy while FILE does not exist.
        "health" => {
            let sick = file.to_path_buf();
            mtipc::ha::set_health(Some(std::sync::Arc::new(move || !sick.exists()))).unwrap();
            mtipc::ha::ready().unwrap();
            std::thread::sleep(Duration::from_secs(1000));
        }
        m => panic!("unknown mode {m}"),
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Appends `WHAT NS PID` to `file`.
fn stamp(file: &Path, what: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    writeln!(f, "{what} {} {}", now_ns(), std::process::id()).unwrap();
}

/// The lines of a stamp file: (what, ns, pid).
fn stamps(file: &Path) -> Vec<(String, u128, u32)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[0].to_string(),
                w[1].parse().unwrap(),
                w[2].parse().unwrap(),
            )
        })
        .collect()
}

impl Node {
    /// The status file, if it is there and parses.
    fn status(&self) -> Option<Value> {
        let text = std::fs::read(self.dir.join("dom/ha/status.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn process(&self, name: &str) -> Option<Value> {
        let s = self.status()?;
        s["processes"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    }

    /// Waits until `name`'s entry satisfies `pred`; the entry.
    fn wait(&self, name: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + within;
        loop {
            if let Some(p) = self.process(name) {
                if pred(&p) {
                    return p;
                }
            }
            assert!(
                Instant::now() < end,
                "{name} never got there: {:?}\n--- mtipc-ha's log:\n{}",
                self.process(name),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_state(&self, name: &str, state: &str, within: Duration) -> Value {
        self.wait(name, within, |p| p["state"] == state)
    }

    /// SIGTERM, then waits for the exit (within `within`); its status.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let end = Instant::now() + within;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < end,
                "mtipc-ha did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A shell command as a TOML array.
fn sh(script: &str) -> String {
    format!("[\"/bin/sh\", \"-c\", {}]", toml_str(script))
}

/// This test binary as an application in `mode`.
fn app(mode: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    format!(
        "[{}, \"child_entry\", \"--exact\", \"--nocapture\", \"--test-threads=1\", \"-q\"]\nenv = {{ {CHILD} = {} }}",
        toml_str(&exe.display().to_string()),
        toml_str(mode)
    )
}

/// Whether `pid` exists at all (a zombie does).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn dependency_order_priority_notify_environment() {
    let d = Scratch::create("order");
    let f = |name: &str| d.0.join(format!("stamps-{name}"));
    // b and c have no dependencies: b first (priority 1 < 5); a after
    // both are ready; n (ready 300 ms after it starts) after a; z after n
    // is ready. The dependencies are `notify` applications that stamp
    // before they say ready, so their dependents' stamps must come later.
    let body = format!(
        r#"
[[process]]
name = "z"
command = {z}
depends_on = ["n"]

[[process]]
name = "n"
command = {n}
depends_on = ["a"]
ready = "notify"

[[process]]
name = "a"
command = {a}
depends_on = ["b", "c"]
ready = "notify"

[[process]]
name = "c"
command = {c}
priority = 5
ready = "notify"

[[process]]
name = "b"
command = {b}
priority = 1
ready = "notify"

[[process]]
name = "e"
command = {e}
env = {{ GREETING = "hello there" }}
cwd = "{cwd}"
"#,
        z = sh(&format!(
            "echo start $(date +%s%N) $$ >> {}; exec sleep 1000",
            f("z").display()
        )),
        n = app(&format!("notify {} 300", f("n").display())),
        a = app(&format!("notify {} 0", f("a").display())),
        c = app(&format!("notify {} 0", f("c").display())),
        b = app(&format!("notify {} 0", f("b").display())),
        e = sh(&format!(
            "echo \"$GREETING|$MTIPC_HA_SOCKET|$(pwd)\" > {env}; echo $$ > {pid}; exec sleep 1000",
            env = d.0.join("env").display(),
            pid = d.0.join("pid").display(),
        )),
        cwd = d.0.display(),
    );
    let mut node = Node::start(&d.0, &body);
    node.wait_state("z", "up", Duration::from_secs(20));
    assert_eq!(node.process("n").unwrap()["state"], "ready");
    // "up" is the exec; the stamp follows shortly.
    let at = |name: &str, what: &str| {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(x) = stamps(&f(name)).into_iter().find(|x| x.0 == what) {
                return x;
            }
            assert!(Instant::now() < end, "{name} has no {what} stamp");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Priority among b and c, started in the same round: b was spawned
    // first, so it has the lower pid (their own stamps may race).
    assert!(
        at("b", "start").2 < at("c", "start").2,
        "b (priority 1) spawned before c (5)"
    );
    let a = at("a", "start").1;
    assert!(
        a > at("b", "ready").1 && a > at("c", "ready").1,
        "a after b and c are ready"
    );
    assert!(
        at("n", "start").1 > at("a", "ready").1,
        "n after a is ready"
    );
    let (nstart, nready) = (at("n", "start").1, at("n", "ready").1);
    assert!(nready - nstart >= 300_000_000);
    let z = at("z", "start").1;
    assert!(
        z > nready,
        "z starts only after n said ready: z {z} ready {nready}"
    );
    // The environment, working directory and descriptors e gets.
    let env = std::fs::read_to_string(d.0.join("env")).unwrap();
    let sock = d.0.join("dom/ha/monitor.sock");
    assert_eq!(
        env.trim(),
        format!("hello there|{}|{}", sock.display(), d.0.display())
    );
    // Its descriptors, once it runs sleep: only stdin, stdout, stderr
    // (everything of the supervisor's is close-on-exec).
    let pid = std::fs::read_to_string(d.0.join("pid"))
        .unwrap()
        .trim()
        .to_string();
    let end = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|p| p.to_string_lossy().contains("sleep"))
    {
        assert!(Instant::now() < end, "e never ran sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "only stdin, stdout, stderr inherited");
    // A `notify` process also gets its connection to the Monitor as
    // descriptor 3 (`MTIPC_HA_FD=3:<the Spawner's pid>`), hello said by
    // the Spawner, which its hooks took: moved to a close-on-exec
    // descriptor of their own, 3 closed.
    let n = node.process("n").unwrap()["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{n}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v.starts_with(b"MTIPC_HA_FD=3:")),
        "MTIPC_HA_FD=3:<pid> in n's environment"
    );
    let sockets = common::sockets_of(n as u32);
    assert_eq!(
        sockets.len(),
        1,
        "one connection to the Monitor: {sockets:?}"
    );
    let (fd, flags) = &sockets[0];
    assert_ne!(fd, "3", "moved off descriptor 3");
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "close-on-exec: {flags:o}"
    );
    // Its own session and process group.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(fields[2], pid, "pgid is its pid");
    assert_eq!(fields[3], pid, "sid is its pid");
    // Owner-only: the directories, the socket, the status file, the logs.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(d.0.join("dom").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ha"), 0o700);
    assert_eq!(mode("ha/log"), 0o700);
    assert_eq!(mode("ha/monitor.sock"), 0o600);
    assert_eq!(mode("ha/status.json"), 0o600);
    assert_eq!(mode("ha/log/e.log"), 0o600);
    assert!(node.terminate(Duration::from_secs(10)).success());
}

fn crash_loop_is_capped_and_backs_off() {
    let d = Scratch::create("crash");
    let s = d.0.join("stamps");
    let body = format!(
        r#"
[[process]]
name = "crash"
command = {}
restart_backoff_ms = 50
restart_backoff_max_ms = 300
restart_max = 4
restart_window_ms = 60000

[[process]]
name = "after"
command = ["/bin/sleep", "1000"]
depends_on = ["crash"]
"#,
        sh(&format!(
            "echo x $(date +%s%N) $$ >> {}; exit 7",
            s.display()
        ))
    );
    let node = Node::start(&d.0, &body);
    let p = node.wait_state("crash", "failed", Duration::from_secs(10));
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.contains("exit 7") && reason.contains("restart_max"),
        "{reason}"
    );
    assert_eq!(p["restarts"], 4);
    // Nothing more: the cap holds.
    std::thread::sleep(Duration::from_millis(500));
    let st = stamps(&s);
    assert_eq!(st.len(), 5, "1 start + 4 restarts: {st:?}");
    let gaps: Vec<u128> = st
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) / 1_000_000)
        .collect();
    // 50, 100, 200, 300 ms (doubling, capped), each plus the run time.
    for (g, want) in gaps.iter().zip([50, 100, 200, 300]) {
        assert!(*g >= want, "gap {g} ms < backoff {want} ms: {gaps:?}");
    }
    assert!(gaps[2] > gaps[0] + 80, "the backoff grows: {gaps:?}");
    // Its dependent (started while crash was up, between crashes) ...
    let after = node.process("after").unwrap();
    assert!(
        after["state"] == "up" || after["state"] == "held",
        "{after}"
    );
}

fn watchdog_restarts_a_silent_process() {
    let d = Scratch::create("watchdog");
    let f = d.0.join("stamps");
    let body = format!(
        r#"
[[process]]
name = "w"
command = {}
watchdog_ms = 200
monitor_ms = 50
restart_backoff_ms = 10
stop_timeout_ms = 1000
"#,
        app(&format!("heartbeat {} 300", f.display()))
    );
    let node = Node::start(&d.0, &body);
    node.wait("w", Duration::from_secs(10), |p| {
        p["restarts"].as_u64() >= Some(1) && p["state"] == "up"
    });
    let end = Instant::now() + Duration::from_secs(5);
    let st = loop {
        let st = stamps(&f);
        if st.iter().filter(|x| x.0 == "start").count() >= 2 || Instant::now() > end {
            break st;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let last = st.iter().find(|x| x.0 == "last-heartbeat").unwrap().1;
    let again = st.iter().filter(|x| x.0 == "start").nth(1).unwrap().1;
    let ms = (again - last) / 1_000_000;
    // watchdog_ms + monitor_ms, plus the 10 ms backoff and the time to
    // stop and exec again (this test binary starting).
    assert!(ms >= 200, "restarted before the watchdog expired: {ms} ms");
    assert!(
        ms <= 200 + 50 + 10 + 250,
        "restarted {ms} ms after the last heartbeat"
    );
    let p = node.process("w").unwrap();
    assert!(p["last_exit"].as_str().unwrap().contains("watchdog"), "{p}");
}

fn ignored_stop_signal_gets_sigkill() {
    let d = Scratch::create("stopkill");
    let body = format!(
        r#"
[[process]]
name = "stubborn"
command = {}
stop_timeout_ms = 400
"#,
        sh(&format!(
            "trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done",
            d.0.join("pid").display()
        ))
    );
    let mut node = Node::start(&d.0, &body);
    node.wait_state("stubborn", "up", Duration::from_secs(10));
    // Its pid is written once the trap is set.
    let end = Instant::now() + Duration::from_secs(5);
    while !d.0.join("pid").exists() {
        assert!(Instant::now() < end, "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    assert!(node.terminate(Duration::from_secs(10)).success());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2000),
        "stopped in {took:?}"
    );
    let p = node.process("stubborn").unwrap();
    assert_eq!(p["state"], "stopped");
    assert_eq!(p["last_exit"], "signal SIGKILL");
    let pid: u32 = std::fs::read_to_string(d.0.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!exists(pid), "killed and reaped");
    assert!(node.log().contains("sent SIGKILL to the group"));
}

fn command_that_cannot_execute_fails_with_its_reason() {
    let d = Scratch::create("exec");
    let body = r#"
[[process]]
name = "bad"
command = ["/nonexistent/program", "x"]
restart_backoff_ms = 100
restart_max = 2

[[process]]
name = "user"
command = ["/bin/sleep", "1000"]
depends_on = ["bad"]
"#;
    let t = Instant::now();
    let node = Node::start(&d.0, body);
    let p = node.wait("bad", Duration::from_secs(10), |p| {
        p["state"] == "failed" && p["reason"].as_str().unwrap_or("").contains("restart_max")
    });
    // Two retries, 100 then 200 ms apart: not faster than the backoff.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot execute \"/nonexistent/program\"")
            && reason.contains("No such file or directory"),
        "{reason}"
    );
    assert_eq!(p["restarts"], 2);
    let u = node.process("user").unwrap();
    assert_eq!(u["state"], "held");
    assert_eq!(u["reason"], "dependency bad failed");
    let log = node.log();
    assert_eq!(log.matches("bad: ").filter(|_| true).count(), 3, "{log}");
}

/// A bare name is looked up in the `PATH` of the process's `env` (a
/// directory not searchable and a file not executable are passed over),
/// and a script without `#!` is run by `/bin/sh`, as `execvp` does; a name
/// found only as a file that cannot be executed is `Permission denied`.
fn path_lookup_and_scripts_without_interpreter_line() {
    use std::os::unix::fs::PermissionsExt;
    let d = Scratch::create("path");
    let first = d.0.join("first");
    let bin = d.0.join("bin");
    std::fs::create_dir(&first).unwrap();
    std::fs::create_dir(&bin).unwrap();
    // Found first, but not executable: passed over.
    std::fs::write(first.join("greet"), "echo wrong > \"$OUT\"\n").unwrap();
    std::fs::set_permissions(first.join("greet"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        bin.join("greet"),
        "echo \"hello $1\" > \"$OUT\"\nexec sleep 1000\n",
    )
    .unwrap();
    std::fs::set_permissions(bin.join("greet"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = d.0.join("out");
    let body = format!(
        r#"
[[process]]
name = "greet"
command = ["greet", "you"]
env = {{ PATH = "{first}:{bin}:/usr/bin:/bin", OUT = "{out}" }}

[[process]]
name = "denied"
command = ["greet"]
env = {{ PATH = "{first}" }}
restart = "never"
"#,
        first = first.display(),
        bin = bin.display(),
        out = out.display(),
    );
    let node = Node::start(&d.0, &body);
    node.wait_state("greet", "up", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&out).map_or(true, |t| t.is_empty()) {
        assert!(Instant::now() < end, "greet never wrote {}", out.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello you\n");
    let p = node.wait("denied", Duration::from_secs(10), |p| {
        p["state"] == "failed"
    });
    let reason = p["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot execute \"greet\"") && reason.contains("Permission denied"),
        "{reason}"
    );
}

fn sigterm_stops_in_reverse_order_and_leaves_nothing() {
    let d = Scratch::create("term");
    let dir = d.0.display().to_string();
    // Each records its pid and a background child's (same group), then
    // stamps the moment its stop signal arrives.
    let script = |name: &str| {
        sh(&format!(
            "trap 'echo {name} $(date +%s%N) $$ >> {dir}/stopped; exit 0' TERM; \
             sleep 1000 & echo $$ $! > {dir}/pids-{name}.tmp; \
             mv {dir}/pids-{name}.tmp {dir}/pids-{name}; sleep 1000 & wait"
        ))
    };
    let body = format!(
        r#"
[[process]]
name = "a"
command = {}

[[process]]
name = "b"
command = {}
depends_on = ["a"]
tenant_group = "g"

[[process]]
name = "c"
command = {}
depends_on = ["b"]
tenant_group = "g"

[[process]]
name = "chatty"
command = {}
log_max_bytes = 4096
log_keep = 2
"#,
        script("a"),
        script("b"),
        script("c"),
        sh("i=0; while [ $i -lt 60 ]; do printf '%0499d\\n' $i; i=$((i+1)); done; exec sleep 1000"),
    );
    let mut node = Node::start(&d.0, &body);
    node.wait_state("c", "up", Duration::from_secs(10));
    let log = d.0.join("dom/ha/log/chatty.log");
    let end = Instant::now() + Duration::from_secs(5);
    while !PathBuf::from(format!("{}.2", log.display())).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut pids = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    for name in ["a", "b", "c"] {
        let f = d.0.join(format!("pids-{name}"));
        while !f.exists() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in std::fs::read_to_string(&f).unwrap().split_whitespace() {
            pids.push(p.parse::<u32>().unwrap());
        }
    }
    assert_eq!(pids.len(), 6);
    assert!(pids.iter().all(|&p| exists(p)));
    let chatty = node.process("chatty").unwrap()["pid"].as_u64().unwrap() as u32;
    let mut sup = vec![node.pid()];
    if ha_node::mode() == "up" {
        // The five roles go too (the status file shows each once it runs).
        let end = Instant::now() + Duration::from_secs(5);
        let roles = loop {
            let s = node.status().unwrap();
            let r: Vec<Option<u64>> = ["server", "monitor", "spawner", "master", "watcher"]
                .iter()
                .map(|r| s["roles"][r].as_u64())
                .collect();
            if r.iter().all(Option::is_some) {
                break r;
            }
            assert!(Instant::now() < end, "roles: {}", s["roles"]);
            std::thread::sleep(Duration::from_millis(10));
        };
        sup.extend(roles.into_iter().map(|p| p.unwrap() as u32));
    }
    let st = node.terminate(Duration::from_secs(10));
    assert!(st.success(), "{st:?}\n{}", node.log());
    let stopped = stamps(&d.0.join("stopped"));
    let order: Vec<&str> = stopped.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(order, ["c", "b", "a"], "reverse order");
    for p in pids.iter().chain([&chatty]).chain(&sup) {
        assert!(!exists(*p), "pid {p} is left (orphan or zombie)");
    }
    let s = node.status().unwrap();
    for p in s["processes"].as_array().unwrap() {
        assert_eq!(p["state"], "stopped", "{p}");
    }
    // The log was rotated: chatty.log, .1 and .2, nothing beyond, each at
    // most its limit (a single write may take a fresh file whole).
    let size = |k: &str| std::fs::metadata(format!("{}{k}", log.display())).map(|m| m.len());
    assert!(size("").is_ok() && size(".1").is_ok() && size(".2").is_ok());
    assert!(size(".3").is_err());
    assert!(size(".1").unwrap() <= 4096, "{:?}", size(".1"));
}

fn health_callback_makes_unhealthy_and_back() {
    let d = Scratch::create("health");
    let sick = d.0.join("sick");
    let body = format!(
        r#"
[[process]]
name = "h"
command = {}
ready = "notify"
monitor_ms = 50
"#,
        app(&format!("health {}", sick.display()))
    );
    let node = Node::start(&d.0, &body);
    let p = node.wait_state("h", "ready", Duration::from_secs(10));
    std::fs::write(&sick, "").unwrap();
    let q = node.wait_state("h", "unhealthy", Duration::from_secs(5));
    assert_eq!(q["reason"], "the health callback said fail");
    assert_eq!(q["pid"], p["pid"], "unhealthy is not restarted");
    std::fs::remove_file(&sick).unwrap();
    let r = node.wait_state("h", "ready", Duration::from_secs(5));
    assert_eq!(r["pid"], p["pid"]);
    assert_eq!(r["restarts"], 0);
}

/// The uid a running process has (`/proc/<pid>/status`, real uid).
fn uid_of(pid: u64) -> u32 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = st.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn user_is_switched_by_root_and_refused_otherwise() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip(
            "user_is_switched_by_root_and_refused_otherwise",
            "needs root (switching users)",
        );
        return;
    }
    let d = Scratch::create("user");
    // As root: the process runs as nobody (uid 65534).
    let body = r#"
[[process]]
name = "n"
command = ["/bin/sleep", "1000"]
user = "65534"
"#;
    let mut node = Node::start(&d.0, body);
    let p = node.wait_state("n", "up", Duration::from_secs(10));
    assert_eq!(uid_of(p["pid"].as_u64().unwrap()), 65534);
    assert!(node.terminate(Duration::from_secs(10)).success());
    drop(node);
    // As nobody: switching to root is refused with the reason.
    let d2 = Scratch::create("user2");
    std::os::unix::fs::chown(&d2.0, Some(65534), Some(65534)).unwrap();
    let config = d2.0.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"t\"\ndomain = \"{}\"\n\n[[process]]\nname = \"r\"\ncommand = [\"/bin/sleep\", \"1000\"]\nuser = \"root\"\nrestart = \"never\"\n",
            d2.0.join("dom").display()
        ),
    )
    .unwrap();
    let child = {
        use std::os::unix::process::CommandExt;
        // A copy of the program in the scratch directory: the checkout
        // may be where uid 65534 cannot go (/root).
        let exe = d2.0.join("mtipc-ha");
        std::fs::copy(env!("CARGO_BIN_EXE_mtipc-ha"), &exe).unwrap();
        Command::new(&exe)
            .arg(ha_node::mode())
            .arg(&config)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return common::skip(
                "user_is_switched_by_root_and_refused_otherwise",
                &format!("mtipc-ha cannot be run as uid 65534 from a copy in /tmp: {e}"),
            )
        }
    };
    let node = Node {
        dir: d2.0.clone(),
        child: None,
    };
    let end = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        if let Some(p) = node.process("r") {
            if p["state"] == "failed" {
                break p["reason"].as_str().unwrap().to_string();
            }
        }
        if Instant::now() > end || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            common::skip(
                "user_is_switched_by_root_and_refused_otherwise",
                "mtipc-ha could not run as uid 65534 from a copy in /tmp (noexec?)",
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(
        reason.contains("user \"root\" (uid 0): mtipc-ha runs as uid 65534, not root"),
        "{reason}"
    );
}

fn what_a_dead_leader_leaves_in_its_group_is_killed_and_reaped() {
    let d = Scratch::create("leftover");
    let bg = d.0.join("bg");
    let body = format!(
        r#"
[[process]]
name = "leader"
command = {}
restart = "never"
"#,
        sh(&format!(
            "sleep 1000 & echo $! > {b}.tmp; mv {b}.tmp {b}; exit 1",
            b = bg.display()
        ))
    );
    let node = Node::start(&d.0, &body);
    let p = node.wait_state("leader", "failed", Duration::from_secs(10));
    assert_eq!(p["reason"], "exit 1; restart policy");
    let pid: u32 = std::fs::read_to_string(&bg)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while exists(pid) {
        assert!(
            Instant::now() < end,
            "the leader's background child {pid} is left: {}",
            std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the supervisor on a configuration of `processes` (a process `a`
/// first, which would touch `ran` if started) that it must refuse: exit 1,
/// nothing set up, nothing started. Its stderr and the file's path.
fn refused(tag: &str, processes: &str) -> (String, std::path::PathBuf) {
    let d = Scratch::create(tag);
    let config = d.0.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"t\"\ndomain = \"{}\"\n\n[[process]]\nname = \"a\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}\"]\n{processes}",
            d.0.join("dom").display(),
            d.0.join("ran").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mtipc-ha"))
        .arg(ha_node::mode())
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!d.0.join("dom").exists(), "nothing set up");
    assert!(!d.0.join("ran").exists(), "nothing started");
    (err, config)
}

fn a_refused_file_starts_nothing() {
    let (err, config) = refused("refused", "depends_on = [\"nope\"]\n");
    assert!(
        err.contains(&format!("{}:8: ", config.display())) && err.contains("nope"),
        "{err}"
    );
}

/// A `notify` process (or one with a watchdog) run as another user cannot
/// reach the hooks' socket: it would wait forever, so the node is refused
/// before anything starts, naming the line. The same process without
/// `notify` and watchdog is accepted (`user_is_switched_by_root...`).
fn a_notify_process_of_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return common::skip(
            "a_notify_process_of_another_user_is_refused",
            "needs root (another user is only reachable by root)",
        );
    }
    let (err, config) = refused(
        "notify-user",
        "\n[[process]]\nname = \"n\"\ncommand = [\"/bin/sleep\", \"1000\"]\nuser = \"65534\"\nready = \"notify\"\nwatchdog_ms = 1000\n",
    );
    assert!(
        err.contains(&format!(
            "{}:9: process n: ready = \"notify\" and watchdog_ms",
            config.display()
        )) && err.contains("uid 65534")
            && err.contains("cannot reach"),
        "{err}"
    );
}

fn a_second_supervisor_of_the_domain_is_refused() {
    let d = Scratch::create("second");
    let node = Node::start(
        &d.0,
        "[[process]]\nname = \"s\"\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    );
    let first = node.wait_state("s", "up", Duration::from_secs(10));
    let out = Command::new(env!("CARGO_BIN_EXE_mtipc-ha"))
        .arg(ha_node::mode())
        .arg(d.0.join("node.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another supervisor runs this domain (pid {} holds",
            node.pid()
        )),
        "{err}"
    );
    // The first one is untouched.
    std::thread::sleep(Duration::from_millis(50));
    let now = node.process("s").unwrap();
    assert_eq!(now["pid"], first["pid"]);
    assert_eq!(now["state"], "up");
}

fn a_second_sigterm_kills_at_once() {
    let d = Scratch::create("twice");
    let body = format!(
        r#"
[[process]]
name = "stubborn"
command = {}
stop_timeout_ms = 20000
"#,
        sh(&format!(
            "trap '' TERM; echo $$ > {}; while :; do sleep 0.05; done",
            d.0.join("pid").display()
        ))
    );
    let mut node = Node::start(&d.0, &body);
    node.wait_state("stubborn", "up", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(5);
    while !d.0.join("pid").exists() {
        assert!(Instant::now() < end, "no pid file");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(node.pid() as i32, libc::SIGTERM) };
    node.wait_state("stubborn", "stopping", Duration::from_secs(5));
    let t = Instant::now();
    assert!(node.terminate(Duration::from_secs(5)).success());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    if ha_node::mode() == "run" {
        let p = node.process("stubborn").unwrap();
        assert_eq!(p["last_exit"], "signal SIGKILL");
    } else {
        // `up` kills every group and role at once: no Server is left to
        // write the exit down; the process is gone.
        let pid: u32 = std::fs::read_to_string(d.0.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!exists(pid), "pid {pid} is left");
    }
    assert!(node.log().contains("second stop signal"));
}

/// The restart policies with a backoff of `backoff` ms: `on-failure`
/// after exit 0 runs once and is `stopped`, after exit 2 is restarted up
/// to its cap and `failed`; `always` restarts exit 0 too, up to its cap;
/// `never` runs once.
fn policies(backoff: u64) {
    let d = Scratch::create(&format!("policies-{backoff}"));
    let count = |name: &str| {
        sh(&format!(
            "echo x 0 $$ >> {}; {}",
            d.0.join(name).display(),
            if name.ends_with("ok") {
                "exit 0"
            } else {
                "exit 2"
            }
        ))
    };
    let body = format!(
        r#"
[[process]]
name = "onfail-ok"
command = {}
restart = "on-failure"
restart_backoff_ms = {b}

[[process]]
name = "onfail-bad"
command = {}
restart = "on-failure"
restart_backoff_ms = {b}
restart_max = 2

[[process]]
name = "always-ok"
command = {}
restart = "always"
restart_backoff_ms = {b}
restart_max = 2

[[process]]
name = "never-ok"
command = {}
restart = "never"
"#,
        count("onfail-ok"),
        count("onfail-bad"),
        count("always-ok"),
        count("never-ok"),
        b = backoff,
    );
    let node = Node::start(&d.0, &body);
    let p = node.wait_state("onfail-ok", "stopped", Duration::from_secs(10));
    assert_eq!(p["reason"], "exited (exit 0)");
    let p = node.wait_state("onfail-bad", "failed", Duration::from_secs(10));
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .starts_with("exit 2; 2 restarts"),
        "{p}"
    );
    // always restarts a clean exit too, up to its cap.
    let p = node.wait_state("always-ok", "failed", Duration::from_secs(10));
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .starts_with("exit 0; 2 restarts"),
        "{p}"
    );
    let p = node.wait_state("never-ok", "stopped", Duration::from_secs(10));
    assert_eq!(p["reason"], "exited (exit 0)");
    std::thread::sleep(Duration::from_millis(100));
    let runs = |n: &str| stamps(&d.0.join(n)).len();
    assert_eq!(
        [
            runs("onfail-ok"),
            runs("onfail-bad"),
            runs("always-ok"),
            runs("never-ok")
        ],
        [1, 3, 3, 1]
    );
}

fn restart_policies() {
    policies(10);
}

/// `restart_backoff_ms = 0`: restarted at once (under `up`, by the
/// Spawner on the Server's standing order, without asking); the policies
/// and the caps hold as with a backoff.
fn restart_policies_at_once() {
    policies(0);
}

/// `restart_backoff_ms = 0` (restarted at once: under `up` the Spawner
/// starts the process again on the Server's standing order, without
/// asking): a process killed with `kill -9` at varying moments after its
/// start is followed by exactly one new process each time, counted as a
/// restart, and its dependent is left alone.
fn restart_at_once_keeps_one_process() {
    let d = Scratch::create("atonce");
    let body = format!(
        r#"
[[process]]
name = "steady"
command = {}
restart_backoff_ms = 0
restart_max = 1000

[[process]]
name = "dep"
command = ["/bin/sleep", "1000"]
depends_on = ["steady"]
restart_backoff_ms = 0
"#,
        sh(&format!(
            "echo x 0 $$ >> {}; exec sleep 1000",
            d.0.join("steady").display()
        )),
    );
    // At debug level the Spawner says when it used an order.
    let node = Node::start_env(&d.0, &body, &[("MTIPC_LOG", "debug")]);
    let dep = node.wait_state("dep", "up", Duration::from_secs(10))["pid"].clone();
    let mut p = node.wait_state("steady", "up", Duration::from_secs(10));
    let mut pids = vec![p["pid"].as_u64().unwrap()];
    let kills = 20;
    for k in 1..=kills {
        let old = p["pid"].as_u64().unwrap();
        // At once after the start is seen, or up to 20 ms later.
        std::thread::sleep(Duration::from_millis(5 * (k % 5)));
        // SAFETY: kill has no memory effects.
        assert_eq!(unsafe { libc::kill(old as i32, libc::SIGKILL) }, 0);
        p = node.wait("steady", Duration::from_secs(10), |p| {
            p["state"] == "up" && p["pid"].as_u64().is_some_and(|n| n != old) && p["restarts"] == k
        });
        let new = p["pid"].as_u64().unwrap();
        pids.push(new);
        assert_eq!(
            ha_node::live_named(&node.domain(), "steady"),
            vec![new as u32],
            "kill {k}: one process of the name, the status's\n--- log:\n{}",
            node.log()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let p = node.process("steady").unwrap();
    assert_eq!(p["restarts"], kills);
    assert_eq!(p["pid"].as_u64(), pids.last().copied());
    // Every start stamped (a process killed before its shell got to the
    // stamp has none) was one the status showed: nothing started twice.
    let st = stamps(&d.0.join("steady"));
    assert!(st.len() <= pids.len(), "{st:?} against {pids:?}");
    for (_, _, pid) in &st {
        assert!(
            pids.contains(&u64::from(*pid)),
            "pid {pid} of {st:?} not in {pids:?}"
        );
    }
    assert_eq!(
        node.process("dep").unwrap()["pid"],
        dep,
        "the dependent was left alone"
    );
    if ha_node::mode() == "up" {
        // The restarts took the standing orders' path: most of the kills
        // (one that lands before its process's order was read takes the
        // Server's).
        let used = node
            .log()
            .lines()
            .filter(|l| l.contains("started again at once (standing order)"))
            .count();
        assert!(used >= 10, "{used} restarts on an order\n{}", node.log());
    }
}

/// The output of 40 processes reaches their 40 logs through one thread
/// of the process that keeps the logs (`run`, or `up`'s node process),
/// not one thread each; and a process that writes much more than a pipe
/// holds (1 MiB) neither blocks nor loses any of it.
fn logs_of_many_processes_take_one_thread() {
    let d = Scratch::create("logs");
    let mut body = String::new();
    for k in 0..40 {
        body += &format!(
            "[[process]]\nname = \"p{k}\"\ncommand = {}\n\n",
            sh(&format!("echo hello from p{k}; exec sleep 1000"))
        );
    }
    body += &format!(
        "[[process]]\nname = \"big\"\ncommand = {}\n",
        sh("head -c 1048576 /dev/zero; echo; echo done; exec sleep 1000")
    );
    let node = Node::start(&d.0, &body);
    let logs = node.domain().join("ha/log");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let said = (0..40)
            .filter(|k| {
                std::fs::read_to_string(logs.join(format!("p{k}.log")))
                    .is_ok_and(|t| t == format!("hello from p{k}\n"))
            })
            .count();
        let big = std::fs::read(logs.join("big.log")).unwrap_or_default();
        if said == 40 && big.ends_with(b"\ndone\n") {
            assert_eq!(big.len(), 1048576 + 6, "the big log is whole");
            assert!(big[..1048576].iter().all(|&b| b == 0));
            break;
        }
        assert!(
            Instant::now() < end,
            "{said} of 40 logs, big {} bytes\n{}",
            big.len(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let threads = std::fs::read_dir(format!("/proc/{}/task", node.pid()))
        .unwrap()
        .count();
    assert!(
        threads <= 8,
        "{threads} threads in the process that keeps 41 logs"
    );
}

// Every test runs against both programs: `mtipc-ha run` (one process)
// and `mtipc-ha up` (the five roles).
ha_node::both!(
    dependency_order_priority_notify_environment,
    crash_loop_is_capped_and_backs_off,
    watchdog_restarts_a_silent_process,
    ignored_stop_signal_gets_sigkill,
    command_that_cannot_execute_fails_with_its_reason,
    path_lookup_and_scripts_without_interpreter_line,
    sigterm_stops_in_reverse_order_and_leaves_nothing,
    health_callback_makes_unhealthy_and_back,
    user_is_switched_by_root_and_refused_otherwise,
    what_a_dead_leader_leaves_in_its_group_is_killed_and_reaped,
    a_refused_file_starts_nothing,
    a_notify_process_of_another_user_is_refused,
    a_second_supervisor_of_the_domain_is_refused,
    a_second_sigterm_kills_at_once,
    restart_policies,
    restart_policies_at_once,
    restart_at_once_keeps_one_process,
    logs_of_many_processes_take_one_thread,
);
