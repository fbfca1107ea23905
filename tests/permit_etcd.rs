//! The etcd backend of the permit arbiter against a real etcd (Debian's
//! `etcd-server`, started by each test on loopback: tests/common/etcd.rs),
//! with real processes where it matters: the children are this test binary
//! re-executed in a role (see [`child_entry`]).
//!
//! - grant, status and release; wait 0 gives `Deferred`; a wait that runs
//!   out gives `Timeout` and leaves nothing queued; tokens strictly increase;
//! - the fair order across instances: one process queues four requests,
//!   three others one each, and each of the three is granted before the
//!   first's second;
//! - two volumes on one etcd do not interfere; two "hosts" (two domains on
//!   one volume directory and one etcd) exclude each other;
//! - a holder whose lease ran out is fenced (renew and put), and the volume
//!   is unchanged; a holder killed with `kill -9` is reclaimed when its
//!   lease runs out, and a waiter gets the permit; a waiter killed with
//!   `kill -9` leaves the queue; a waiter whose idle lease ran out while
//!   it waited is still granted;
//! - etcd killed while a request waits: `Unavailable` or `Timeout` within
//!   the wait; renew with etcd gone: `Unavailable` while the lease may live,
//!   then `Fenced`.

mod common;
#[path = "common/etcd.rs"]
mod etcd_server;

use common::{kill9, role_command, say, serial, Kids, Scratch};
use etcd_server::Etcd;
use mtipc::permit::{volume, Mode, ReclaimReason, Volume, VolumeOpts};
use mtipc::{Domain, ErrorKind};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdout};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROLE: &str = "MTIPC_PE";

/// A domain, a volume directory and an etcd.
struct Env {
    etcd: Etcd,
    dom: Scratch,
    dir: Scratch,
    domain: Domain,
}

impl Env {
    fn new(tag: &str) -> Env {
        let etcd = Etcd::start();
        let dom = Scratch::new(&format!("{tag}-dom"));
        let domain = dom.domain();
        let dir = Scratch::create(&format!("{tag}-vol"));
        std::fs::set_permissions(dir.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Env {
            etcd,
            dom,
            dir,
            domain,
        }
    }

    /// Records volume `name` (lease `lease_ms`, cap `cap`) on this etcd in
    /// `domain`, and opens it.
    fn volume_in(&self, domain: &Domain, name: &str, lease_ms: u64, cap: u32) -> Arc<Volume> {
        let opts = VolumeOpts {
            max_transfers: cap,
            lease: Some(Duration::from_millis(lease_ms)),
            etcd: Some(self.etcd.url()),
        };
        volume::create(domain, name, self.dir.dir(), &opts).unwrap();
        Volume::open(domain, name).unwrap()
    }

    fn volume(&self, name: &str, lease_ms: u64, cap: u32) -> Arc<Volume> {
        self.volume_in(&self.domain, name, lease_ms, cap)
    }
}

fn me() -> u32 {
    std::process::id()
}

/// A child's "@@ " lines, read as they come.
struct Lines(BufReader<ChildStdout>);

impl Lines {
    fn of(child: &mut Child) -> Lines {
        Lines(BufReader::new(child.stdout.take().unwrap()))
    }

    /// The next protocol line (without "@@ "); panics at the end.
    fn next(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.0.read_line(&mut line).unwrap();
            assert!(n > 0, "the child ended without saying more");
            if let Some(rest) = line.strip_prefix("@@ ") {
                return rest.trim_end().to_owned();
            }
        }
    }
}

/// Polls `f` every 20 ms until it is true; panics after `within`.
fn until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn grant_status_and_release() {
    let _s = serial();
    let env = Env::new("grant");
    let v = env.volume("gw", 1000, 0);
    let p = v
        .request("a/f", Mode::Write, Duration::from_secs(2))
        .unwrap();
    assert!(p.token() > 0);
    // Started with --heartbeat-interval 50 --election-timeout 500, etcd
    // grants a 1 s lease as 1 s, and the permit reports what it granted.
    assert_eq!(p.lease(), Duration::from_secs(1));
    let st = v.status().unwrap();
    assert_eq!(st.holders.len(), 1, "{st:?}");
    let h = &st.holders[0];
    assert_eq!(h.instance.pid, me());
    assert_eq!(h.instance.host, mtipc::internals::sys::host_name());
    assert_eq!(
        (h.mode, h.path.as_str(), h.token),
        (Mode::Write, "a/f", p.token())
    );
    assert!(h.lease_left_ms <= 1000, "{h:?}");
    assert!(st.queue.is_empty());
    assert_eq!(st.last_token, p.token());
    assert_eq!(st.lease_ms, 1000);
    assert_eq!(st.grants.len(), 1);
    assert_eq!((st.grants[0].0.pid, st.grants[0].1), (me(), 1));

    // A transfer through it lands.
    let src = env.dir.dir().join("..").join(format!("pe-src-{}", me()));
    std::fs::write(&src, b"hello").unwrap();
    p.put(&src).unwrap();
    std::fs::remove_file(&src).unwrap();
    assert_eq!(std::fs::read(env.dir.dir().join("a/f")).unwrap(), b"hello");
    p.renew().unwrap();
    let t1 = p.token();
    drop(p);
    let st = v.status().unwrap();
    assert!(st.holders.is_empty(), "{st:?}");
    let p2 = v.request("a/f", Mode::Read, Duration::ZERO).unwrap();
    assert!(p2.token() > t1);
    assert_eq!(v.status().unwrap().grants[0].1, 2);
}

#[test]
fn wait_zero_defers_and_leaves_nothing() {
    let _s = serial();
    let env = Env::new("defer");
    let v = env.volume("gw", 5000, 0);
    let w = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    for mode in [Mode::Write, Mode::Read] {
        let t = Instant::now();
        let e = v.request("f", mode, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Deferred, "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    // Other paths are free; reads share.
    let g = v.request("g", Mode::Read, Duration::ZERO).unwrap();
    let g2 = v.request("g", Mode::Read, Duration::ZERO).unwrap();
    assert!(g2.token() > g.token());
    assert_eq!(
        v.request("g", Mode::Write, Duration::ZERO)
            .unwrap_err()
            .kind(),
        ErrorKind::Deferred
    );
    let st = v.status().unwrap();
    assert!(st.queue.is_empty(), "{st:?}");
    assert_eq!(st.holders.len(), 3);
    drop((w, g, g2));
}

#[test]
fn timed_out_wait_leaves_no_trace() {
    let _s = serial();
    let env = Env::new("timeout");
    let v = env.volume("gw", 5000, 0);
    let w = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    let t = Instant::now();
    let e = v
        .request("f", Mode::Write, Duration::from_millis(300))
        .unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let st = v.status().unwrap();
    assert!(st.queue.is_empty(), "{st:?}");
    drop(w);
    // Nothing left blocks the path.
    v.request("f", Mode::Write, Duration::ZERO).unwrap();
}

#[test]
fn tokens_strictly_increase() {
    let _s = serial();
    let env = Env::new("tokens");
    let v = env.volume("gw", 5000, 0);
    let mut last = 0;
    for i in 0..20 {
        let path = format!("p{}", i % 3);
        let mode = if i % 2 == 0 { Mode::Write } else { Mode::Read };
        let p = v.request(&path, mode, Duration::from_secs(2)).unwrap();
        assert!(p.token() > last, "{} after {last}", p.token());
        last = p.token();
        // A second, concurrent permit of another path.
        let q = v
            .request("other", Mode::Write, Duration::from_secs(2))
            .unwrap();
        assert!(q.token() > last);
        last = q.token();
    }
    // Waiters granted one after another, too.
    let hold = v.request("w", Mode::Write, Duration::ZERO).unwrap();
    let hold_token = hold.token();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let v = Arc::clone(&v);
            std::thread::spawn(move || {
                let p = v
                    .request("w", Mode::Write, Duration::from_secs(10))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
                p.token()
            })
        })
        .collect();
    until(Duration::from_secs(5), "3 queued", || {
        v.status().unwrap().queue.len() == 3
    });
    drop(hold);
    let mut tokens: Vec<u64> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3);
    assert!(tokens[0] > hold_token);
}

#[test]
fn fair_order_across_instances() {
    let _s = serial();
    let env = Env::new("fair");
    let v = env.volume("gw", 5000, 0);
    let hold = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    let args = |n: u32| {
        vec![
            env.dom.path(),
            "gw".to_string(),
            "f".to_string(),
            n.to_string(),
        ]
    };
    let mut kids = Kids::default();
    // The flooder queues four requests first...
    kids.0
        .push(role_command(ROLE, "queue", &args(4)).spawn().unwrap());
    until(Duration::from_secs(10), "the flooder's 4 requests", || {
        v.status().unwrap().queue.len() == 4
    });
    // ...then three instances one each.
    for _ in 0..3 {
        kids.0
            .push(role_command(ROLE, "queue", &args(1)).spawn().unwrap());
    }
    until(Duration::from_secs(10), "7 requests queued", || {
        v.status().unwrap().queue.len() == 7
    });
    let flooder = kids.0[0].id();
    let singles: Vec<u32> = kids.0[1..].iter().map(|c| c.id()).collect();
    let st = v.status().unwrap();
    let order: Vec<u32> = st.queue.iter().map(|w| w.instance.pid).collect();
    // Grant order: the flooder's first, the three others, then the
    // flooder's other three.
    assert_eq!(order[0], flooder, "{order:?}");
    let mut mid = order[1..4].to_vec();
    mid.sort();
    let mut want = singles.clone();
    want.sort();
    assert_eq!(mid, want, "{order:?}");
    assert_eq!(&order[4..], &[flooder; 3], "{order:?}");

    drop(hold);
    let mut grants: Vec<(u64, u32)> = Vec::new();
    for c in &mut kids.0 {
        let pid = c.id();
        let mut lines = Lines::of(c);
        loop {
            let l = lines.next();
            if l == "done" {
                break;
            }
            let token: u64 = l.strip_prefix("granted ").unwrap().parse().unwrap();
            grants.push((token, pid));
        }
    }
    for c in &mut kids.0 {
        assert!(c.wait().unwrap().success());
    }
    grants.sort();
    let by_token: Vec<u32> = grants.iter().map(|g| g.1).collect();
    assert_eq!(
        by_token, order,
        "grants in token order against the status's order"
    );
}

#[test]
fn two_volumes_do_not_interfere() {
    let _s = serial();
    let env = Env::new("twovol");
    let a = env.volume("va", 5000, 1);
    let b = env.volume("vb", 5000, 1);
    let pa = a.request("f", Mode::Write, Duration::ZERO).unwrap();
    // Same path, same etcd, another volume: free, and its cap is its own.
    let pb = b.request("f", Mode::Write, Duration::ZERO).unwrap();
    assert_eq!(
        a.request("g", Mode::Write, Duration::ZERO)
            .unwrap_err()
            .kind(),
        ErrorKind::Deferred,
        "va's cap of 1"
    );
    let (sa, sb) = (a.status().unwrap(), b.status().unwrap());
    assert_eq!(sa.holders.len(), 1);
    assert_eq!(sb.holders.len(), 1);
    assert_eq!(sa.holders[0].token, pa.token());
    assert_eq!(sb.holders[0].token, pb.token());
    drop(pa);
    assert!(a.status().unwrap().holders.is_empty());
    assert_eq!(b.status().unwrap().holders.len(), 1);
}

#[test]
fn two_hosts_exclude_each_other() {
    let _s = serial();
    let env = Env::new("hosts");
    // Host B: another domain, recording the same volume directory under
    // the same name on the same etcd.
    let dom_b = Scratch::new("hosts-dom-b");
    let domain_b = dom_b.domain();
    let a = env.volume("shared", 5000, 0);
    let b = env.volume_in(&domain_b, "shared", 5000, 0);
    let pa = a.request("counter", Mode::Write, Duration::ZERO).unwrap();
    assert_eq!(
        b.request("counter", Mode::Read, Duration::ZERO)
            .unwrap_err()
            .kind(),
        ErrorKind::Deferred
    );
    let local = Scratch::create("hosts-local");
    let zero = local.dir().join("zero");
    std::fs::write(&zero, b"0").unwrap();
    pa.put(&zero).unwrap();
    drop(pa);

    // Host B's process and this one each add 1 to the counter file 15
    // times, reading it and writing it back under a write permit.
    const N: u32 = 15;
    let mut kids = Kids::default();
    let args = vec![
        dom_b.path(),
        "shared".to_string(),
        N.to_string(),
        local.path(),
    ];
    kids.0
        .push(role_command(ROLE, "counter", &args).spawn().unwrap());
    bump(&a, N, local.dir(), "a");
    let mut lines = Lines::of(&mut kids.0[0]);
    assert_eq!(lines.next(), "done");
    assert!(kids.0[0].wait().unwrap().success());
    let text = std::fs::read_to_string(env.dir.dir().join("counter")).unwrap();
    assert_eq!(text, (2 * N).to_string());
}

/// Adds 1 to the volume's file `counter`, `n` times, each under a write
/// permit, through local files in `local` named after `who`.
fn bump(v: &Arc<Volume>, n: u32, local: &Path, who: &str) {
    let tmp = local.join(format!("{who}-{}", me()));
    for _ in 0..n {
        let p = v
            .request("counter", Mode::Write, Duration::from_secs(30))
            .unwrap();
        p.get(&tmp).unwrap();
        let k: u32 = std::fs::read_to_string(&tmp).unwrap().parse().unwrap();
        std::thread::sleep(Duration::from_millis(3));
        std::fs::write(&tmp, (k + 1).to_string()).unwrap();
        p.put(&tmp).unwrap();
    }
}

#[test]
fn expired_holder_is_fenced() {
    let _s = serial();
    let env = Env::new("fenced");
    let v = env.volume("gw", 1000, 0);
    let p = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    let local = Scratch::create("fenced-local");
    let src = local.dir().join("src");
    std::fs::write(&src, b"v1").unwrap();
    p.put(&src).unwrap();
    // Stop renewing: the 1 s lease runs out.
    std::thread::sleep(Duration::from_millis(2500));
    let e = p.renew().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    std::fs::write(&src, b"v2").unwrap();
    let e = p.put(&src).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    assert_eq!(std::fs::read(env.dir.dir().join("f")).unwrap(), b"v1");
    let names: Vec<_> = std::fs::read_dir(env.dir.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("f")],
        "no temporary left"
    );
    // The path is free again, and the lost permit is in the history.
    let q = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    assert!(q.token() > p.token());
    until(Duration::from_secs(5), "the reclaimed record", || {
        let st = v.status().unwrap();
        st.reclaimed
            .iter()
            .any(|r| r.token == p.token() && r.reason == ReclaimReason::Expired)
    });
}

/// A waiter whose permit lease ran out while it waited (an idle lease is
/// not kept alive) is still granted when its turn comes. etcd revokes an
/// expired lease some time after its end (its lessor looks every 500 ms),
/// so a grant transaction sent in between lands on the lapsed lease, takes
/// the request out of the queue, and then loses its holder key with the
/// lease. The request used to find its queue key gone and return
/// `Unavailable`; each round releases the holder at another moment after
/// the waiter's lease ended, to land in that window.
#[test]
fn waiter_whose_lease_lapsed_is_granted() {
    let _s = serial();
    let env = Env::new("lapsed");
    let holder = env.volume("gw", 1000, 0);
    for round in 0..5u32 {
        let h = holder.request("f", Mode::Write, Duration::ZERO).unwrap();
        // The waiter's own arbiter: an empty pool, so its request takes a
        // new lease (1 s) when it starts.
        let w = Volume::open(&env.domain, "gw").unwrap();
        let t0 = Instant::now();
        let waiter = std::thread::spawn(move || {
            w.request("f", Mode::Write, Duration::from_secs(10))
                .map(|p| p.token())
        });
        until(Duration::from_secs(5), "the request queued", || {
            holder.status().unwrap().queue.len() == 1
        });
        let release_at = Duration::from_millis(1040 + 70 * u64::from(round));
        while t0.elapsed() < release_at {
            h.renew().unwrap();
            std::thread::sleep(
                Duration::from_millis(200).min(release_at.saturating_sub(t0.elapsed())),
            );
        }
        let held = h.token();
        drop(h);
        let token = waiter
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(token > held);
        let st = holder.status().unwrap();
        assert!(st.queue.is_empty(), "{st:?}");
    }
}

#[test]
fn killed_holder_is_reclaimed() {
    let _s = serial();
    let env = Env::new("killed");
    let v = env.volume("gw", 1000, 0);
    let mut kids = Kids::default();
    let args = vec![env.dom.path(), "gw".to_string(), "f".to_string()];
    kids.0
        .push(role_command(ROLE, "hold", &args).spawn().unwrap());
    let mut lines = Lines::of(&mut kids.0[0]);
    let token: u64 = lines
        .next()
        .strip_prefix("granted ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        v.request("f", Mode::Write, Duration::ZERO)
            .unwrap_err()
            .kind(),
        ErrorKind::Deferred
    );
    let dead_pid = kids.0[0].id();
    kill9(&mut kids.0[0]);
    let t = Instant::now();
    let p = v
        .request("f", Mode::Write, Duration::from_secs(10))
        .unwrap();
    let took = t.elapsed();
    assert!(p.token() > token);
    // A 1 s lease, and etcd's lessor looks every 500 ms.
    assert!(took < Duration::from_secs(4), "{took:?}");
    let st = v.status().unwrap();
    let r = st
        .reclaimed
        .iter()
        .find(|r| r.token == token)
        .unwrap_or_else(|| panic!("{st:?}"));
    assert_eq!((r.instance.pid, r.reason), (dead_pid, ReclaimReason::Dead));
}

#[test]
fn killed_waiter_leaves_the_queue() {
    let _s = serial();
    let env = Env::new("waiter");
    let v = env.volume("gw", 5000, 0);
    let hold = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    let mut kids = Kids::default();
    let args = vec![
        env.dom.path(),
        "gw".to_string(),
        "f".to_string(),
        "1".to_string(),
    ];
    kids.0
        .push(role_command(ROLE, "queue", &args).spawn().unwrap());
    until(
        Duration::from_secs(10),
        "the child's request queued",
        || v.status().unwrap().queue.len() == 1,
    );
    kill9(&mut kids.0[0]);
    // Its session lease (2 s) runs out, and its queue key with it.
    until(
        Duration::from_secs(6),
        "the dead waiter's request gone",
        || v.status().unwrap().queue.is_empty(),
    );
    drop(hold);
    v.request("f", Mode::Write, Duration::ZERO).unwrap();
}

#[test]
fn etcd_killed_while_a_request_waits() {
    let _s = serial();
    let mut env = Env::new("etcdkill");
    let v = env.volume("gw", 5000, 0);
    let hold = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    let waiter = {
        let v = Arc::clone(&v);
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = v.request("f", Mode::Write, Duration::from_secs(3));
            (r.map(|p| p.token()), t.elapsed())
        })
    };
    until(Duration::from_secs(5), "the request queued", || {
        v.status().unwrap().queue.len() == 1
    });
    env.etcd.kill();
    let (r, took) = waiter.join().unwrap();
    let e = r.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e}"
    );
    assert!(took < Duration::from_millis(3000 + 1000), "{took:?}");
    // A new request with etcd gone: Unavailable, not a hang.
    let t = Instant::now();
    let e = v
        .request("g", Mode::Write, Duration::from_millis(200))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(hold);
}

#[test]
fn renew_with_etcd_gone_reports_the_permit_lost() {
    let _s = serial();
    let mut env = Env::new("renew");
    let v = env.volume("gw", 3000, 0);
    let p = v.request("f", Mode::Write, Duration::ZERO).unwrap();
    assert_eq!(p.lease(), Duration::from_secs(3));
    let granted = Instant::now();
    env.etcd.kill();
    // While the lease may still be alive: Unavailable; once it cannot be
    // (its 3 s without a renewal): Fenced, for good.
    let mut unavailable = 0;
    let e = loop {
        let e = p.renew().unwrap_err();
        let at = granted.elapsed();
        match e.kind() {
            ErrorKind::Unavailable => {
                assert!(at < Duration::from_secs(3), "{at:?}: {e}");
                unavailable += 1;
            }
            ErrorKind::Fenced => break e,
            _ => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(unavailable > 0);
    let at = granted.elapsed();
    assert!(
        at >= Duration::from_millis(2900) && at < Duration::from_millis(4500),
        "{at:?}: {e}"
    );
    assert_eq!(p.renew().unwrap_err().kind(), ErrorKind::Fenced);
    let local = Scratch::create("renew-local");
    let src = local.dir().join("src");
    std::fs::write(&src, b"late").unwrap();
    assert_eq!(p.put(&src).unwrap_err().kind(), ErrorKind::Fenced);
    assert!(!env.dir.dir().join("f").exists());
}

// ---------------------------------------------------------------------------
// Child roles.

/// Not a test of its own: the entry point of the child processes. Without
/// `MTIPC_PE_ROLE` it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(format!("{ROLE}_ROLE")) else {
        return;
    };
    let args_var = std::env::var(format!("{ROLE}_ARGS")).unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    let domain = Domain::open(Some(args[0].as_ref())).unwrap();
    let v = Volume::open(&domain, args[1]).unwrap();
    match role.as_str() {
        // queue <domain> <volume> <path> <n>: n concurrent write requests
        // of <path>; says "granted <token>" for each, holds it 30 ms; then
        // "done".
        "queue" => {
            let n: usize = args[3].parse().unwrap();
            let path = args[2].to_owned();
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let (v, path) = (Arc::clone(&v), path.clone());
                    std::thread::spawn(move || {
                        let p = v
                            .request(&path, Mode::Write, Duration::from_secs(60))
                            .unwrap();
                        say(&format!("granted {}", p.token()));
                        std::thread::sleep(Duration::from_millis(30));
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            say("done");
        }
        // hold <domain> <volume> <path>: a write permit, never renewed nor
        // released; says "granted <token>", then waits to be killed.
        "hold" => {
            let p = v
                .request(args[2], Mode::Write, Duration::from_secs(10))
                .unwrap();
            say(&format!("granted {}", p.token()));
            loop {
                std::thread::sleep(Duration::from_millis(100));
                // SAFETY: getppid has no preconditions.
                if unsafe { libc::getppid() } == 1 {
                    break;
                }
            }
            std::mem::forget(p);
        }
        // counter <domain> <volume> <n> <local dir>: bump() n times.
        "counter" => {
            bump(&v, args[2].parse().unwrap(), Path::new(args[3]), "b");
            say("done");
        }
        other => panic!("unknown child role {other:?}"),
    }
    std::process::exit(0);
}
