//! Permits on a volume whose arbiter lives in the domain's shared memory
//! (issue 11, DESIGN.md section 3), with real processes where it matters:
//!
//! - [`grant_defer_timeout_and_tokens`]: grants, `Deferred` for a wait of
//!   0, `Timeout` that leaves no trace in the queue, strictly increasing
//!   tokens, reads sharing and writes excluding;
//! - [`transfers_are_whole_and_fenced_after_the_lease`]: put and get copy
//!   whole files; once the lease ran out, renew and put are `Fenced` and
//!   the volume's file is unchanged, with no temporary file left;
//! - [`bad_paths_and_modes_write_nothing`]: absolute paths, `..`, empty and
//!   oversized paths, a link out of the volume, a put with a read permit;
//! - [`unsafe_volume_directories_are_refused`], [`corrupt_arbiter_is_refused`];
//! - [`dead_holder_is_reclaimed_at_once`]: a holder process `kill -9`ed;
//!   the next request is granted at once, the reclaim is reported;
//! - [`newcomer_names_the_killed_holder`]: a process that first opens the
//!   volume after the kill (as `mtipc permits` does) reclaims the permit
//!   and names the dead holder, not itself;
//! - [`waiter_gets_the_permit_of_a_killed_holder`];
//! - [`fair_order_across_processes`]: one process queues ten requests, two
//!   others one each: each of the two is granted before the first one's
//!   second request.

mod common;

use common::{kill9, role_command, say, wait_said, Kids, Scratch};
use mtipc::permit::{volume, Mode, ReclaimReason, Volume, VolumeOpts};
use mtipc::{Domain, ErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VAR: &str = "MTIPC_PERMIT";

/// A domain and a volume directory (mode 0755) in one scratch directory.
fn setup(tag: &str, opts: &VolumeOpts) -> (Scratch, Domain, PathBuf) {
    let s = Scratch::create(tag);
    let d = Domain::open(Some(&s.dir().join("domain"))).unwrap();
    let vol = s.dir().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
    volume::create(&d, "gw", &vol, opts).unwrap();
    (s, d, vol)
}

#[test]
fn child_entry() {
    let Some((role, args)) = common::child_role(VAR) else {
        return;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Domain::open(Some(args[0].as_ref())).unwrap();
    let v = Volume::open(&d, "gw").unwrap();
    match role.as_str() {
        // `hold <domain> <path>`: takes a write permit and sleeps.
        "hold" => {
            let p = v
                .request(args[1], Mode::Write, Duration::from_secs(10))
                .unwrap();
            say(&format!("held {}", p.token()));
            std::thread::sleep(Duration::from_secs(60));
        }
        // `queue <domain> <n> <tag>`: n threads each request a write
        // permit on `<tag>-<k>` (waiting up to 30 s), hold it 5 ms and say
        // "granted <tag> <k> <mono ns>".
        "queue" => {
            let n: usize = args[1].parse().unwrap();
            let tag = args[2].to_owned();
            let threads: Vec<_> = (0..n)
                .map(|k| {
                    let v = v.clone();
                    let tag = tag.clone();
                    let t = std::thread::spawn(move || {
                        let p = v
                            .request(&format!("{tag}-{k}"), Mode::Write, Duration::from_secs(30))
                            .unwrap();
                        say(&format!("granted {tag} {k} {}", common::mono_ns()));
                        std::thread::sleep(Duration::from_millis(5));
                        drop(p);
                    });
                    // Queued in order within the process.
                    std::thread::sleep(Duration::from_millis(20));
                    t
                })
                .collect();
            say("queued");
            for t in threads {
                t.join().unwrap();
            }
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn grant_defer_timeout_and_tokens() {
    let (_s, d, _vol) = setup("grant", &VolumeOpts::default());
    let v = Volume::open(&d, "gw").unwrap();
    let w = v.request("a/b.txt", Mode::Write, Duration::ZERO).unwrap();
    assert_eq!(w.token(), 1);
    let e = v
        .request("a/b.txt", Mode::Read, Duration::ZERO)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deferred, "{e}");
    let t = Instant::now();
    let e = v
        .request("a/b.txt", Mode::Write, Duration::from_millis(60))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t.elapsed() >= Duration::from_millis(60));
    let st = v.status().unwrap();
    assert!(
        st.queue.is_empty(),
        "a wait that ran out left {:?}",
        st.queue
    );
    assert_eq!(st.holders.len(), 1);
    assert_eq!(st.holders[0].path, "a/b.txt");
    assert_eq!(st.holders[0].instance.pid, std::process::id());
    // Another path is free; reads share once the write is gone.
    let other = v.request("a/c.txt", Mode::Write, Duration::ZERO).unwrap();
    drop(w);
    let r1 = v.request("a/b.txt", Mode::Read, Duration::ZERO).unwrap();
    let r2 = v.request("a/b.txt", Mode::Read, Duration::ZERO).unwrap();
    let tokens = [other.token(), r1.token(), r2.token()];
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert!(tokens[0] > 1);
    // A waiting writer is granted when the last reader leaves.
    let v2 = v.clone();
    let waiter = std::thread::spawn(move || {
        v2.request("a/b.txt", Mode::Write, Duration::from_secs(5))
            .map(|p| p.token())
    });
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(v.status().unwrap().queue.len(), 1);
    drop(r1);
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(
        v.status().unwrap().queue.len(),
        1,
        "one reader still holds it"
    );
    drop(r2);
    let tw = waiter.join().unwrap().unwrap();
    assert!(tw > tokens[2]);
}

fn temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            out.push(name);
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn transfers_are_whole_and_fenced_after_the_lease() {
    let opts = VolumeOpts {
        lease: Some(Duration::from_millis(150)),
        ..VolumeOpts::default()
    };
    let (s, d, vol) = setup("xfer", &opts);
    let v = Volume::open(&d, "gw").unwrap();
    let src = s.dir().join("src.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let p = v
        .request("rec/2026/call.wav", Mode::Write, Duration::ZERO)
        .unwrap();
    assert_eq!(p.put(&src).unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(vol.join("rec/2026/call.wav")).unwrap(), data);
    let back = s.dir().join("back.bin");
    assert_eq!(p.get(&back).unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    p.renew().unwrap();
    std::thread::sleep(Duration::from_millis(250));
    // The lease ran out: the permit is lost, and its put changes nothing.
    std::fs::write(&src, b"late bytes").unwrap();
    assert_eq!(p.put(&src).unwrap_err().kind(), ErrorKind::Fenced);
    assert_eq!(p.renew().unwrap_err().kind(), ErrorKind::Fenced);
    assert_eq!(std::fs::read(vol.join("rec/2026/call.wav")).unwrap(), data);
    assert_eq!(temp_files(&vol), Vec::<String>::new());
    let st = v.status().unwrap();
    assert!(st.holders.is_empty());
    assert_eq!(st.reclaimed.len(), 1);
    assert_eq!(st.reclaimed[0].reason, ReclaimReason::Expired);
    assert_eq!(st.reclaimed[0].token, p.token());
    // Another instance may now write it.
    let q = v
        .request("rec/2026/call.wav", Mode::Write, Duration::ZERO)
        .unwrap();
    assert!(q.token() > p.token());
}

#[test]
fn bad_paths_and_modes_write_nothing() {
    let (s, d, vol) = setup("paths", &VolumeOpts::default());
    let v = Volume::open(&d, "gw").unwrap();
    let long = "x".repeat(401);
    for bad in [
        "/etc/passwd",
        "../x",
        "a/../../x",
        "",
        "a//b",
        "./a",
        "a/.",
        long.as_str(),
    ] {
        let e = v.request(bad, Mode::Write, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{bad:?}: {e}");
    }
    let outside = s.dir().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, vol.join("link")).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    let src = s.dir().join("src");
    std::fs::write(&src, b"payload").unwrap();
    let p = v.request("link/x", Mode::Write, Duration::ZERO).unwrap();
    assert_eq!(p.put(&src).unwrap_err().kind(), ErrorKind::Denied);
    let r = v
        .request("link/secret", Mode::Read, Duration::ZERO)
        .unwrap();
    let dst = s.dir().join("dst");
    assert_eq!(r.get(&dst).unwrap_err().kind(), ErrorKind::Denied);
    assert!(!dst.exists());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written outside the volume"
    );
    let e = r.put(&src).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "put with a read permit: {e}");
    // A link that stays inside the volume is fine.
    std::fs::create_dir(vol.join("real")).unwrap();
    std::os::unix::fs::symlink("real", vol.join("alias")).unwrap();
    let ok = v.request("alias/f", Mode::Write, Duration::ZERO).unwrap();
    ok.put(&src).unwrap();
    assert_eq!(std::fs::read(vol.join("real/f")).unwrap(), b"payload");
    assert_eq!(temp_files(&vol), Vec::<String>::new());
}

#[test]
fn unsafe_volume_directories_are_refused() {
    let s = Scratch::create("unsafe");
    let d = Domain::open(Some(&s.dir().join("domain"))).unwrap();
    let open = s.dir().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = volume::create(&d, "gw", &open, &VolumeOpts::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    let e = volume::create(&d, "gw", Path::new("relative"), &VolumeOpts::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    let e = volume::create(&d, "bad name", &open, &VolumeOpts::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    let bad_lease = VolumeOpts {
        lease: Some(Duration::from_millis(1)),
        ..VolumeOpts::default()
    };
    assert_eq!(
        volume::create(&d, "gw", &open, &bad_lease)
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid
    );
    volume::create(&d, "gw", &open, &VolumeOpts::default()).unwrap();
    assert_eq!(
        volume::create(&d, "gw", &open, &VolumeOpts::default())
            .unwrap_err()
            .kind(),
        ErrorKind::Exists
    );
    assert_eq!(
        Volume::open(&d, "nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(volume::list(&d)
        .unwrap()
        .iter()
        .any(|(n, r)| n == "gw" && r.is_ok()));
}

#[test]
fn corrupt_arbiter_is_refused() {
    let (_s, d, _vol) = setup("corrupt", &VolumeOpts::default());
    drop(Volume::open(&d, "gw").unwrap());
    let region = d.path().join("volumes/gw.arbiter");
    let mut bytes = std::fs::read(&region).unwrap();
    let first_entry = bytes.len() - 1024 * 512;
    bytes[first_entry] = 7; // an entry state that does not exist
    std::fs::write(&region, &bytes).unwrap();
    let e = Volume::open(&d, "gw").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    std::fs::write(&region, &bytes[..4096]).unwrap();
    assert_eq!(
        Volume::open(&d, "gw").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let rec = d.path().join("volumes/gw.volume");
    std::fs::write(&rec, b"mtipc-volume 1\ndir /x\n").unwrap();
    assert_eq!(
        Volume::open(&d, "gw").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn dead_holder_is_reclaimed_at_once() {
    let (s, d, _vol) = setup("dead", &VolumeOpts::default());
    let mut kids = Kids::default();
    let mut c = role_command(
        VAR,
        "hold",
        &[s.dir().join("domain").display().to_string(), "x".into()],
    )
    .spawn()
    .unwrap();
    wait_said(&mut c, "held");
    let pid = c.id();
    kids.0.push(c);
    let v = Volume::open(&d, "gw").unwrap();
    kill9(&mut kids.0[0]);
    let t = Instant::now();
    let p = v.request("x", Mode::Write, Duration::ZERO).unwrap();
    let took = t.elapsed();
    assert_eq!(p.token(), 2);
    let st = v.status().unwrap();
    assert_eq!(st.reclaimed.len(), 1, "{st:?}");
    assert_eq!(st.reclaimed[0].reason, ReclaimReason::Dead);
    assert_eq!(st.reclaimed[0].instance.pid, pid);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn newcomer_names_the_killed_holder() {
    let (s, d, _vol) = setup("newcomer", &VolumeOpts::default());
    let mut kids = Kids::default();
    let mut c = role_command(
        VAR,
        "hold",
        &[s.dir().join("domain").display().to_string(), "x".into()],
    )
    .spawn()
    .unwrap();
    wait_said(&mut c, "held");
    let pid = c.id();
    kids.0.push(c);
    kill9(&mut kids.0[0]);
    // This process joins the arbiter only now, after the holder died: it
    // must not take (and overwrite) the dead holder's process record
    // before its sweep has reported it.
    let v = Volume::open(&d, "gw").unwrap();
    let st = v.status().unwrap();
    assert!(st.holders.is_empty(), "{st:?}");
    assert_eq!(st.reclaimed.len(), 1, "{st:?}");
    let r = &st.reclaimed[0];
    assert_eq!(r.reason, ReclaimReason::Dead);
    assert_eq!(
        r.instance.pid,
        pid,
        "the dead holder, not {}",
        std::process::id()
    );
    assert!(r.instance.start > 0, "{r:?}");
    assert_eq!((r.token, r.path.as_str()), (1, "x"));
}

#[test]
fn waiter_gets_the_permit_of_a_killed_holder() {
    let (s, d, _vol) = setup("waiter", &VolumeOpts::default());
    let mut c = role_command(
        VAR,
        "hold",
        &[s.dir().join("domain").display().to_string(), "x".into()],
    )
    .spawn()
    .unwrap();
    wait_said(&mut c, "held");
    let v = Volume::open(&d, "gw").unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        kill9(&mut c);
        Instant::now()
    });
    let p = v.request("x", Mode::Write, Duration::from_secs(5)).unwrap();
    let granted = Instant::now();
    let killed = killer.join().unwrap();
    assert_eq!(p.token(), 2);
    // The poller looks every 2 ms; leave room for a loaded machine.
    assert!(granted.duration_since(killed) < Duration::from_millis(500));
}

#[test]
fn fair_order_across_processes() {
    let opts = VolumeOpts {
        max_transfers: 1,
        ..VolumeOpts::default()
    };
    let (s, d, _vol) = setup("fair", &opts);
    let v = Volume::open(&d, "gw").unwrap();
    // Holding the only transfer slot makes every request below wait.
    let gate = v.request("gate", Mode::Write, Duration::ZERO).unwrap();
    let dom = s.dir().join("domain").display().to_string();
    let mut kids = Kids::default();
    for (n, tag) in [("10", "flood"), ("1", "b"), ("1", "c")] {
        let mut c = role_command(VAR, "queue", &[dom.clone(), n.into(), tag.into()])
            .spawn()
            .unwrap();
        wait_said(&mut c, "queued");
        kids.0.push(c);
    }
    // The queue as the arbiter will grant it.
    std::thread::sleep(Duration::from_millis(50));
    let st = v.status().unwrap();
    let order: Vec<String> = st.queue.iter().map(|w| w.path.clone()).collect();
    assert_eq!(order.len(), 12, "{order:?}");
    assert_eq!(order[..3], ["flood-0", "b-0", "c-0"], "{order:?}");
    drop(gate);
    let mut grants: Vec<(u64, String)> = Vec::new();
    for c in &mut kids.0 {
        let out = common::read_all(c.stdout.take());
        for l in out.lines().filter_map(|l| l.strip_prefix("@@ granted ")) {
            let f: Vec<&str> = l.split(' ').collect();
            grants.push((f[2].parse().unwrap(), format!("{}-{}", f[0], f[1])));
        }
        assert!(c.wait().unwrap().success());
    }
    grants.sort();
    let got: Vec<String> = grants.into_iter().map(|g| g.1).collect();
    assert_eq!(got, order, "grants follow the fair order");
}
