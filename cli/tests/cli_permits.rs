//! `mtipc volume add|ls` and `mtipc permits`: the built binary run against
//! a scratch domain whose volumes this test process (through the Rust API)
//! and its children (this test binary re-executed in a role) hold permits
//! on:
//!
//! - [`volume_add_and_ls`]: a volume recorded and listed (text and JSON);
//!   a duplicate, a directory others may write, a bad lease, a bad etcd
//!   list refused with exit status 1 and the status on stderr;
//! - [`permits_show_a_holder`]: a permit held here shows with this pid,
//!   its path, mode and token (JSON and text); one volume by name; an
//!   unknown one;
//! - [`permits_show_the_queue_in_grant_order`]: three requests of this
//!   process and then one of a child: the child's is shown before this
//!   process's second (round robin over instances, FIFO within one), and
//!   the tokens granted follow the order shown; grants per instance after
//!   they ran;
//! - [`permits_show_a_killed_holder_reclaimed`]: a child holding a permit
//!   is `kill -9`ed; `mtipc permits` reclaims it and shows it reclaimed
//!   (dead), with the child's pid and token;
//! - [`permits_report_an_unreadable_volume_and_go_on`]: a corrupt record
//!   next to a good volume.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{kill9, role_command, say, wait_said, Kids, Scratch};
use mtipc::permit::{volume, Mode, Volume, VolumeOpts};
use mtipc::Domain;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const MTIPC: &str = env!("CARGO_BIN_EXE_mtipc");
const VAR: &str = "MTIPC_PERMITS";

/// Runs `mtipc --domain DOM ARGS` with pipes.
fn mtipc(dom: &str, args: &[&str]) -> Output {
    Command::new(MTIPC)
        .args(["--domain", dom])
        .args(args)
        .env_remove("MTIPC_LOG")
        .output()
        .expect("run mtipc")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the command, which must succeed, and parses its stdout as JSON.
fn json(dom: &str, args: &[&str]) -> Value {
    let out = mtipc(dom, args);
    assert!(
        out.status.success(),
        "mtipc {args:?}: {}\n{}",
        out.status,
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(&out), stderr(&out)))
}

/// A scratch directory with a domain `dom/` and a directory `vol/` (mode
/// 0755) for volumes.
struct Setup {
    s: Scratch,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let s = Scratch::create(tag);
        let vol = s.dir().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
        Setup { s }
    }

    fn dom(&self) -> String {
        self.s.dir().join("dom").display().to_string()
    }

    fn domain(&self) -> Domain {
        Domain::open(Some(self.s.dir().join("dom").as_ref())).unwrap()
    }

    fn vol(&self) -> PathBuf {
        self.s.dir().join("vol")
    }

    /// Records volume `gw` on `vol/` with the Rust API.
    fn gw(&self, opts: &VolumeOpts) -> Domain {
        let d = self.domain();
        volume::create(&d, "gw", &self.vol(), opts).unwrap();
        d
    }
}

/// The volume `name` of a `permits --json` report.
fn vol<'v>(report: &'v Value, name: &str) -> &'v Value {
    report["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {report:#}"))
}

/// Polls `mtipc permits --json` until `cond` holds for it (10 s at most).
fn permits_until(dom: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = json(dom, &["permits", "--json"]);
        if cond(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "not within 10 s: {what}: {v:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Not a test of its own: the entry point of the child processes.
#[test]
fn child_entry() {
    let Some((role, args)) = common::child_role(VAR) else {
        return;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Domain::open(Some(args[0].as_ref())).unwrap();
    let v = Volume::open(&d, "gw").unwrap();
    match role.as_str() {
        // `hold <domain> <path>`: takes a write permit, says "held
        // <token>", and sleeps until killed.
        "hold" => {
            let p = v
                .request(args[1], Mode::Write, Duration::from_secs(10))
                .unwrap();
            say(&format!("held {}", p.token()));
            std::thread::sleep(Duration::from_secs(120));
        }
        // `wait <domain> <path>`: waits (30 s at most) for a write permit
        // on <path>, releases it at once, says "granted <token>".
        "wait" => {
            let p = v
                .request(args[1], Mode::Write, Duration::from_secs(30))
                .unwrap();
            say(&format!("granted {}", p.token()));
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn volume_add_and_ls() {
    let s = Setup::new("add");
    let dom = s.dom();
    let vol = s.vol().display().to_string();
    let out = mtipc(
        &dom,
        &[
            "volume",
            "add",
            "gw",
            &vol,
            "--max-transfers",
            "4",
            "--lease-ms",
            "1500",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("volume gw recorded in "), "{text}");
    assert!(text.contains(&format!("dir            {vol}\n")), "{text}");
    assert!(text.contains("max transfers  4\n"), "{text}");
    assert!(text.contains("lease          1500 ms\n"), "{text}");
    assert!(text.contains("backend        shm"), "{text}");
    // What was recorded is what the library reads.
    let rec = volume::read(&s.domain(), "gw").unwrap();
    assert_eq!(rec.dir, s.vol());
    assert_eq!((rec.max_transfers, rec.lease_ms, rec.etcd), (4, 1500, None));

    // The same name again: refused, the record unchanged.
    let out = mtipc(&dom, &["volume", "add", "gw", &vol]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("mtipc: volume gw exists already")
            && stderr(&out).contains("(MT_ERR_EXISTS)"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(volume::read(&s.domain(), "gw").unwrap().lease_ms, 1500);

    // A directory other users may write: refused, nothing recorded.
    let open = s.s.dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = mtipc(&dom, &["volume", "add", "open", open.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mode 0777 lets other users change it (MT_ERR_DENIED)"),
        "{}",
        stderr(&out)
    );
    // A lease out of range, a bad endpoint list, a missing directory.
    for (args, status) in [
        (
            vec!["volume", "add", "v2", &vol, "--lease-ms", "1"],
            "MT_ERR_INVALID",
        ),
        (
            vec!["volume", "add", "v2", &vol, "--etcd", "ftp://x"],
            "MT_ERR_INVALID",
        ),
        (
            vec!["volume", "add", "v2", "/nonexistent/dir"],
            "MT_ERR_NOT_FOUND",
        ),
        (vec!["volume", "add", "bad name", &vol], "MT_ERR_INVALID"),
    ] {
        let out = mtipc(&dom, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with("mtipc: ") && stderr(&out).contains(status),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // Bad usage is exit status 2 (clap).
    let out = mtipc(&dom, &["volume", "add", "v2", &vol, "--max-transfers", "x"]);
    assert_eq!(out.status.code(), Some(2));

    // An etcd volume, with a directory given relative to the current one.
    let out = Command::new(MTIPC)
        .current_dir(s.s.dir())
        .args(["--domain", &dom, "volume", "add", "remote", "vol"])
        .args(["--etcd", "http://127.0.0.1:2379,http://10.0.0.2:2379"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("backend        etcd http://127.0.0.1:2379,http://10.0.0.2:2379"),
        "{}",
        stdout(&out)
    );

    let out = mtipc(&dom, &["volume", "ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(head, ["VOLUME", "CAP", "LEASE", "BACKEND", "DIR"]);
    let gw: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(gw, ["gw", "4", "1500ms", "shm", vol.as_str()], "{text}");
    let remote: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        remote,
        [
            "remote",
            "no",
            "cap",
            "30000ms",
            "etcd",
            vol.as_str(),
            "(etcd",
            "http://127.0.0.1:2379,http://10.0.0.2:2379)"
        ],
        "{text}"
    );

    let v = json(&dom, &["volume", "ls", "--json"]);
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2, "{v:#}");
    assert_eq!(list[0]["name"], "gw");
    assert_eq!(list[0]["dir"], vol.as_str());
    assert_eq!(list[0]["max_transfers"], 4);
    assert_eq!(list[0]["lease_ms"], 1500);
    assert_eq!(list[0]["backend"], "shm");
    assert!(list[0]["etcd"].is_null() && list[0]["error"].is_null());
    assert_eq!(list[1]["name"], "remote");
    assert_eq!(list[1]["max_transfers"], 0);
    assert_eq!(list[1]["lease_ms"], 30000);
    assert_eq!(list[1]["backend"], "etcd");
    assert_eq!(
        list[1]["etcd"],
        "http://127.0.0.1:2379,http://10.0.0.2:2379"
    );

    // An empty domain lists nothing.
    let empty = Setup::new("add-empty");
    assert_eq!(
        json(&empty.dom(), &["volume", "ls", "--json"]),
        Value::Array(vec![])
    );
}

#[test]
fn permits_show_a_holder() {
    let s = Setup::new("holder");
    let d = s.gw(&VolumeOpts {
        lease: Some(Duration::from_secs(60)),
        ..VolumeOpts::default()
    });
    let dom = s.dom();
    let v = Volume::open(&d, "gw").unwrap();
    let first = v.request("rec/a.wav", Mode::Write, Duration::ZERO).unwrap();
    drop(first);
    let p = v.request("rec/b.wav", Mode::Write, Duration::ZERO).unwrap();
    let r = v.request("in/c.txt", Mode::Read, Duration::ZERO).unwrap();
    assert_eq!((p.token(), r.token()), (2, 3));

    let report = json(&dom, &["permits", "--json"]);
    assert_eq!(report["domain"], dom.as_str());
    let gw = vol(&report, "gw");
    assert!(gw["error"].is_null(), "{gw:#}");
    assert_eq!(gw["dir"], s.vol().display().to_string());
    assert_eq!(gw["backend"], "shm");
    assert_eq!(gw["last_token"], 3);
    assert_eq!(gw["lease_ms"], 60_000);
    let holders = gw["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 2, "{gw:#}");
    let me = u64::from(std::process::id());
    let b = holders.iter().find(|h| h["path"] == "rec/b.wav").unwrap();
    assert_eq!(b["instance"]["pid"], me);
    assert_eq!(b["instance"]["host"], "");
    assert!(b["instance"]["start"].as_u64().unwrap() > 0, "{b:#}");
    assert_eq!(b["mode"], "write");
    assert_eq!(b["token"], 2);
    let left = b["lease_left_ms"].as_u64().unwrap();
    assert!(left > 50_000 && left <= 60_000, "{b:#}");
    let c = holders.iter().find(|h| h["path"] == "in/c.txt").unwrap();
    assert_eq!(
        (c["mode"].as_str(), c["token"].as_u64()),
        (Some("read"), Some(3))
    );
    assert_eq!(gw["queue"], Value::Array(vec![]));
    assert_eq!(gw["reclaimed"], Value::Array(vec![]));
    // Grants per instance, as objects.
    let grants = gw["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{gw:#}");
    assert_eq!(grants[0]["instance"]["pid"], me);
    assert_eq!(grants[0]["grants"], 3);

    // One volume by name; the text form.
    let one = json(&dom, &["permits", "gw", "--json"]);
    assert_eq!(one["volumes"].as_array().unwrap().len(), 1);
    let out = mtipc(&dom, &["permits", "gw"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("volume gw ({})", s.vol().display())),
        "{text}"
    );
    assert!(text.contains("last token 3"), "{text}");
    let row = text
        .lines()
        .find(|l| l.ends_with("rec/b.wav"))
        .unwrap_or_else(|| panic!("no holder row: {text}"));
    let f: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        f[..5],
        ["pid", &me.to_string(), "write", "2", f[4]],
        "{row}"
    );
    assert!(text.contains("queue        empty"), "{text}");
    assert!(text.contains("reclaimed    none"), "{text}");

    // Released: gone from the holders.
    drop(p);
    drop(r);
    let gw = json(&dom, &["permits", "gw", "--json"])["volumes"][0].clone();
    assert_eq!(gw["holders"], Value::Array(vec![]));

    // An unknown volume: exit status 1, nothing on stdout.
    let out = mtipc(&dom, &["permits", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("no volume nope") && stderr(&out).contains("(MT_ERR_NOT_FOUND)"),
        "{}",
        stderr(&out)
    );
    // A domain without volumes.
    let empty = Setup::new("holder-empty");
    let out = mtipc(&empty.dom(), &["permits"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("no volumes"), "{}", stdout(&out));
}

#[test]
fn permits_show_the_queue_in_grant_order() {
    let s = Setup::new("queue");
    // One transfer at a time: holding it makes every request below wait.
    let d = s.gw(&VolumeOpts {
        max_transfers: 1,
        ..VolumeOpts::default()
    });
    let dom = s.dom();
    let v = Volume::open(&d, "gw").unwrap();
    let gate = v.request("gate", Mode::Write, Duration::ZERO).unwrap();
    // Three requests of this process, in this order...
    let mut waiters = Vec::new();
    for k in 0..3 {
        let v = v.clone();
        waiters.push(std::thread::spawn(move || {
            let path = format!("a-{k}");
            let p = v.request(&path, Mode::Write, Duration::from_secs(30));
            p.map(|p| (p.token(), path))
        }));
        let n = k + 1;
        permits_until(&dom, "this process's requests queued", |r| {
            vol(r, "gw")["queue"].as_array().unwrap().len() == n
        });
    }
    // ...then one of another process: granted before this process's
    // second (round robin over instances), though it came last.
    let mut kids = Kids::default();
    kids.0.push(
        role_command(VAR, "wait", &[dom.clone(), "b-0".into()])
            .spawn()
            .unwrap(),
    );
    let child = u64::from(kids.0[0].id());
    let report = permits_until(&dom, "the child's request queued", |r| {
        vol(r, "gw")["queue"].as_array().unwrap().len() == 4
    });
    let queue = vol(&report, "gw")["queue"].as_array().unwrap().clone();
    let order: Vec<&str> = queue.iter().map(|w| w["path"].as_str().unwrap()).collect();
    let at = |p: &str| order.iter().position(|o| *o == p).unwrap();
    assert!(at("a-0") < at("a-1") && at("a-1") < at("a-2"), "{order:?}");
    assert!(at("b-0") < at("a-1"), "round robin: {order:?}");
    let me = u64::from(std::process::id());
    for w in &queue {
        let pid = if w["path"] == "b-0" { child } else { me };
        assert_eq!(w["instance"]["pid"], pid, "{w:#}");
        assert_eq!(w["mode"], "write", "{w:#}");
    }
    // The text form numbers them in the same order.
    let text = stdout(&mtipc(&dom, &["permits"]));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("  queue"))
        .skip(1)
        .take(4)
        .map(|l| l.split_whitespace().collect())
        .collect();
    for (i, (row, path)) in rows.iter().zip(&order).enumerate() {
        assert_eq!(row[0], (i + 1).to_string(), "{text}");
        assert_eq!(row.last().unwrap(), path, "{text}");
    }

    drop(gate);
    let mut granted: Vec<(u64, String)> = waiters
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let line = wait_said(&mut kids.0[0], "granted");
    granted.push((line["granted ".len()..].parse().unwrap(), "b-0".into()));
    assert!(kids.0[0].wait().unwrap().success());
    // The tokens (2 to 5, the gate had 1) follow the order shown.
    granted.sort();
    let tokens: Vec<u64> = granted.iter().map(|g| g.0).collect();
    assert_eq!(tokens, [2, 3, 4, 5]);
    let by_token: Vec<&str> = granted.iter().map(|g| g.1.as_str()).collect();
    assert_eq!(by_token, order, "granted in the order shown");
    let report = json(&dom, &["permits", "--json"]);
    let gw = vol(&report, "gw");
    assert_eq!(gw["queue"], Value::Array(vec![]));
    assert_eq!(gw["last_token"], 5);
    // Grants per instance: the child has exited, so only this process
    // (the gate and its three) is still known.
    let grants = gw["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{gw:#}");
    assert_eq!(grants[0]["instance"]["pid"], me);
    assert_eq!(grants[0]["grants"], 4);
}

#[test]
fn permits_show_a_killed_holder_reclaimed() {
    let s = Setup::new("killed");
    let d = s.gw(&VolumeOpts::default());
    let dom = s.dom();
    let mut kids = Kids::default();
    kids.0.push(
        role_command(VAR, "hold", &[dom.clone(), "rec/x.wav".into()])
            .spawn()
            .unwrap(),
    );
    let line = wait_said(&mut kids.0[0], "held");
    let token: u64 = line["held ".len()..].parse().unwrap();
    let pid = u64::from(kids.0[0].id());

    let report = json(&dom, &["permits", "--json"]);
    let gw = vol(&report, "gw");
    let holders = gw["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{gw:#}");
    assert_eq!(holders[0]["instance"]["pid"], pid);
    assert_eq!(holders[0]["token"], token);
    assert_eq!(holders[0]["path"], "rec/x.wav");
    assert_eq!(gw["grants"][0]["instance"]["pid"], pid);

    kill9(&mut kids.0[0]);
    // The next look reclaims it: no holder, one reclaimed permit.
    let report = json(&dom, &["permits", "--json"]);
    let gw = vol(&report, "gw");
    assert_eq!(gw["holders"], Value::Array(vec![]), "{gw:#}");
    let rec = gw["reclaimed"].as_array().unwrap();
    assert_eq!(rec.len(), 1, "{gw:#}");
    assert_eq!(rec[0]["instance"]["pid"], pid);
    assert_eq!(rec[0]["token"], token);
    assert_eq!(rec[0]["path"], "rec/x.wav");
    assert_eq!(rec[0]["reason"], "dead");
    // A dead instance's grants are no longer listed.
    assert_eq!(gw["grants"], Value::Array(vec![]), "{gw:#}");
    // Reclaimed once: a second look shows the same single entry.
    let again = json(&dom, &["permits", "gw", "--json"]);
    assert_eq!(
        again["volumes"][0]["reclaimed"].as_array().unwrap().len(),
        1
    );
    let text = stdout(&mtipc(&dom, &["permits"]));
    let row = text
        .lines()
        .skip_while(|l| !l.starts_with("  reclaimed"))
        .nth(1)
        .unwrap_or_else(|| panic!("no reclaimed row: {text}"));
    let f: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        f,
        [
            "pid",
            &pid.to_string(),
            &token.to_string(),
            "dead",
            "rec/x.wav"
        ],
        "{text}"
    );
    // The path is free again, with the next token.
    let v = Volume::open(&d, "gw").unwrap();
    let p = v.request("rec/x.wav", Mode::Write, Duration::ZERO).unwrap();
    assert_eq!(p.token(), token + 1);
}

#[test]
fn permits_report_an_unreadable_volume_and_go_on() {
    let s = Setup::new("corrupt");
    let d = s.gw(&VolumeOpts::default());
    let dom = s.dom();
    volume::create(&d, "broken", &s.vol(), &VolumeOpts::default()).unwrap();
    let rec = d.path().join("volumes/broken.volume");
    std::fs::remove_file(&rec).unwrap();
    std::fs::write(&rec, b"mtipc-volume 1\ndir relative\n").unwrap();
    std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = mtipc(&dom, &["permits", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let broken = vol(&report, "broken");
    assert_eq!(broken["error"]["kind"], "MT_ERR_CORRUPT", "{broken:#}");
    assert!(broken.get("holders").is_none(), "{broken:#}");
    assert!(vol(&report, "gw")["error"].is_null());
    assert_eq!(vol(&report, "gw")["holders"], Value::Array(vec![]));
    assert!(
        stderr(&out).contains("mtipc: volume broken: ")
            && stderr(&out).contains("(MT_ERR_CORRUPT)"),
        "{}",
        stderr(&out)
    );
    let out = mtipc(&dom, &["volume", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("broken") && text.contains("ERROR: "),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("gw ")), "{text}");
    let out = mtipc(&dom, &["permits"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("volume gw ("), "{}", stdout(&out));
}
