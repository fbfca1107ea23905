//! The five roles of `mtipc-ha up` under `kill -9`: for each role, 40
//! times (`MTIPC_HA_KILLS` to change it), the role is killed while the
//! node's processes start, run and stop: every other time a `mtipc ha
//! restart @g` in flight, the kill at a random moment within its first
//! 120 ms; the other times right after (0 to 3 ms) a `kill -9` of `g1`,
//! which restarts at once (its backoff is 0) on the Spawner's standing
//! order. After
//! each kill: the role runs again (another pid), every process that should
//! run is running, none twice, none orphaned and no zombie left under the
//! node (all checked through `/proc`: each supervised process is found by
//! the `MTIPC_HA_PROCESS` the Spawner gives it), and the processes outside
//! the group in flight were never restarted (same pids from the first
//! round to the last: a role that comes back takes them up).
//!
//! Also: the node process killed (the roles end, every process group is
//! killed: nothing is left); the whole tree killed at once (the next `up`
//! of the domain stops what the last one left before it starts anything).

#[path = "../../tests/common/mod.rs"]
mod common;
mod ha_node;

use common::Scratch;
use ha_node::{alive, supervised};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VAR: &str = "MTIPC_HA_ROLES_CHILD";

/// The application side: `notify` says ready and heartbeats every 50 ms.
#[test]
fn child_entry() {
    let Some((role, _)) = common::child_role(VAR) else {
        return;
    };
    assert_eq!(role, "notify");
    mtipc::ha::ready().unwrap();
    loop {
        // Unavailable while the Monitor is being restarted: go on.
        let _ = mtipc::ha::heartbeat();
        std::thread::sleep(Duration::from_millis(50));
    }
}

const ROLES: [&str; 5] = ["spawner", "monitor", "server", "master", "watcher"];

struct Node {
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let exe = std::env::current_exe().unwrap();
        let app = format!(
            "[{}, \"child_entry\", \"--exact\", \"--nocapture\", \"--test-threads=1\", \"-q\"]\nenv = {{ {VAR}_ROLE = \"notify\" }}",
            serde_json::to_string(&exe.display().to_string()).unwrap()
        );
        // The group's processes restart at once if they end (a backoff
        // of 0, and no cap in the way of g1's kills): they run under the
        // Spawner's standing orders, which the group's restarts call off.
        let sleeper = |name: &str, extra: &str| {
            let restart = if extra.contains("tenant_group") {
                "restart_backoff_ms = 0\nrestart_max = 1000000"
            } else {
                "restart_backoff_ms = 10"
            };
            format!("[[process]]\nname = \"{name}\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1000 & exec sleep 1000\"]\n{restart}\nstop_timeout_ms = 2000\n{extra}\n")
        };
        let text = format!(
            "[node]\nname = \"k\"\ndomain = \"{dom}\"\n\n{a}{b}{c}\
             [[process]]\nname = \"app\"\ncommand = {app}\nready = \"notify\"\nwatchdog_ms = 1000\nmonitor_ms = 100\ndepends_on = [\"a\"]\n\n\
             {g1}{g2}{g3}",
            dom = dir.join("dom").display(),
            a = sleeper("a", ""),
            b = sleeper("b", "depends_on = [\"a\"]"),
            c = sleeper("c", "depends_on = [\"b\"]\npriority = 5"),
            g1 = sleeper("g1", "tenant_group = \"g\""),
            g2 = sleeper("g2", "tenant_group = \"g\"\ndepends_on = [\"g1\"]"),
            g3 = sleeper("g3", "tenant_group = \"g\"\ndepends_on = [\"g2\"]"),
        );
        let config = dir.join("node.toml");
        std::fs::write(&config, text).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mtipc-ha"))
            .arg("up")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Node {
            dir: dir.to_path_buf(),
            child: Some(child),
        }
    }

    fn domain(&self) -> PathBuf {
        self.dir.join("dom")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn mtipc(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mtipc"));
        c.arg("--domain")
            .arg(self.domain())
            .arg("ha")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// The status from the running Server, if one answers.
    fn status(&self) -> Option<Value> {
        let o = self.mtipc(&["status", "--json"]).output().ok()?;
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// The role's pid from its lock's note, if that process runs.
    fn role(&self, r: &str) -> Option<u32> {
        let note = std::fs::read_to_string(self.domain().join(format!("ha/role-{r}.lock"))).ok()?;
        let (pid, start) = note.trim().split_once(':')?;
        let pid: u32 = pid.parse().ok()?;
        (start_time(pid)? == start.parse::<u64>().ok()? && !zombie(pid)).then_some(pid)
    }

    /// Waits (up to 20 s) until every role runs and every process is
    /// running as it should (up, or ready for `app`); the status then.
    fn settled(&self, what: &str) -> Value {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let roles_up = ROLES.iter().all(|r| self.role(r).is_some());
            if let (true, Some(s)) = (roles_up, self.status()) {
                let ok = s["processes"].as_array().is_some_and(|ps| {
                    ps.iter().all(|p| {
                        let want = if p["name"] == "app" { "ready" } else { "up" };
                        p["state"] == want && p["pid"].as_u64().is_some_and(|pid| alive(pid as u32))
                    })
                });
                if ok {
                    return s;
                }
            }
            assert!(
                Instant::now() < end,
                "{what}: never settled: {:?}\n--- log:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: as above.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(200));
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_supervised(&self.domain());
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Field 22 (index 19 after the command).
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn zombie(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] == "Z")
}

fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn kill_supervised(domain: &Path) {
    for (pid, _, _) in supervised(domain) {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// The checks after each kill: each configured process runs exactly once
/// (one session leader of its name, the status's pid); nothing else of
/// the node runs but their own children (`sleep &`, in their sessions);
/// no zombie under the node's process or its roles.
fn check(node: &Node, s: &Value, what: &str) {
    let ps = s["processes"].as_array().unwrap();
    let found = supervised(&node.domain());
    for p in ps {
        let name = p["name"].as_str().unwrap();
        let leaders: Vec<u32> = found
            .iter()
            .filter(|f| f.1 == name && f.2)
            .map(|f| f.0)
            .collect();
        assert_eq!(
            leaders,
            [p["pid"].as_u64().unwrap() as u32],
            "{what}: {name} runs as {leaders:?}; status {p}\n--- log:\n{}",
            node.log()
        );
    }
    let sessions: Vec<u32> = ps
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect();
    for (pid, name, _) in &found {
        // SAFETY: getsid has no memory effects.
        let sid = unsafe { libc::getsid(*pid as i32) } as u32;
        assert!(
            sessions.contains(&sid),
            "{what}: pid {pid} ({name}) is not in the session of a supervised process: orphaned"
        );
    }
    let mut tree = vec![node.pid()];
    tree.extend(ROLES.iter().filter_map(|r| node.role(r)));
    // A zombie is reaped within a round: give it one.
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let zombies: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&p| zombie(p) && ppid(p).is_some_and(|pp| tree.contains(&pp)))
            .collect();
        if zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "{what}: zombies under the node: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small random number (no crate: the clock's nanoseconds and a mix).
fn rand_below(n: u64, k: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = t ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % n
}

fn kills() -> usize {
    std::env::var("MTIPC_HA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

fn pids_outside_g(s: &Value) -> BTreeMap<String, u64> {
    s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["group"] != "g")
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn kill_role_repeatedly(role: &str) {
    let d = Scratch::create(&format!("roles-{role}"));
    let node = Node::start(&d.0);
    let first = node.settled("start");
    check(&node, &first, "start");
    let steady = pids_outside_g(&first);
    let n = kills();
    for k in 0..n {
        let what = format!("{role} kill {}/{n}", k + 1);
        let victim = node.role(role).expect("the role runs");
        if k % 2 == 0 {
            // Processes starting and stopping: a group restart in flight.
            let mut restart = node
                .mtipc(&["restart", "@g", "--timeout-ms", "20000"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rand_below(120, k as u64)));
            // SAFETY: kill has no memory effects.
            assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
            // The restart may fail with its Server gone; the group is
            // wanted again either way.
            let _ = restart.wait();
        } else {
            // A process that is restarted at once (on the Spawner's
            // standing order) killed, the role killed while that happens.
            let s = node.status().expect("a status");
            let g1 = s["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "g1")
                .and_then(|p| p["pid"].as_u64())
                .expect("g1 runs");
            // SAFETY: kill has no memory effects.
            assert_eq!(unsafe { libc::kill(g1 as i32, libc::SIGKILL) }, 0);
            std::thread::sleep(Duration::from_micros(rand_below(3000, k as u64)));
            // SAFETY: as above.
            assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
        }
        let end = Instant::now() + Duration::from_secs(10);
        while node.role(role).map_or(true, |p| p == victim) {
            assert!(
                Instant::now() < end,
                "{what}: the role did not come back\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let o = node
            .mtipc(&["start", "@g", "--timeout-ms", "20000"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{what}: start @g: {}\n--- log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            node.log()
        );
        let s = node.settled(&what);
        check(&node, &s, &what);
        assert_eq!(
            pids_outside_g(&s),
            steady,
            "{what}: a process outside the group was restarted\n--- log:\n{}",
            node.log()
        );
    }
}

#[test]
fn kill_the_spawner() {
    kill_role_repeatedly("spawner");
}

#[test]
fn kill_the_monitor() {
    kill_role_repeatedly("monitor");
}

#[test]
fn kill_the_server() {
    kill_role_repeatedly("server");
}

#[test]
fn kill_the_master() {
    kill_role_repeatedly("master");
}

#[test]
fn kill_the_master_watcher() {
    kill_role_repeatedly("watcher");
}

#[test]
fn the_node_process_killed_leaves_nothing() {
    let d = Scratch::create("roles-node");
    let mut node = Node::start(&d.0);
    let s = node.settled("start");
    let roles: Vec<u32> = ROLES.iter().filter_map(|r| node.role(r)).collect();
    assert_eq!(roles.len(), 5);
    let procs: Vec<u32> = supervised(&node.domain()).iter().map(|f| f.0).collect();
    assert!(procs.len() >= s["processes"].as_array().unwrap().len());
    let mut c = node.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = roles
            .iter()
            .chain(&procs)
            .copied()
            .filter(|&p| alive(p))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "left running after the node process was killed: {left:?}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_killed_whole_is_cleaned_up_by_the_next() {
    let d = Scratch::create("roles-whole");
    let mut node = Node::start(&d.0);
    node.settled("start");
    let roles: Vec<u32> = ROLES.iter().filter_map(|r| node.role(r)).collect();
    let mut everything = roles.clone();
    everything.push(node.pid());
    // Stop all of the tree first (so none can react), then kill it.
    for &p in &everything {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(p as i32, libc::SIGSTOP) };
    }
    for &p in &everything {
        // SAFETY: as above.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    let mut c = node.child.take().unwrap();
    c.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let left: Vec<u32> = supervised(&node.domain()).iter().map(|f| f.0).collect();
    assert!(
        !left.is_empty(),
        "the processes outlive a tree killed whole"
    );
    // The next node of the domain stops them before it starts its own.
    let again = Node::start(&d.0);
    let s = again.settled("restart");
    check(&again, &s, "after a whole-tree kill");
    for p in left {
        assert!(!alive(p), "pid {p}, left by the killed node, still runs");
    }
    assert!(
        again
            .log()
            .contains("left running by a node that was killed"),
        "{}",
        again.log()
    );
}
