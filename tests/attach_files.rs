//! The attach files on a real domain directory: process identity, publish /
//! list / withdraw, stale advertisements (a killed child, a reused pid,
//! garbage), symbolic links planted where mtipc writes or reads (never
//! followed), the response file, and the synchronization file's validation
//! and locks.

use mtipc::internals::attach::files::{
    self, advert_dir, adverts_dir, list, read_advert, read_response, remove_response, round_hint,
    write_response, Advert, AdvertCache, AdvertFiles, ProcId, Response, ResponseScan, Role,
    SyncFile, DAEMON_ID, STATE_BUSY, STATE_IDLE,
};
use mtipc::{Domain, ErrorKind};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

/// A fresh domain under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static SEQ: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
        let seq = {
            let mut g = SEQ.lock().unwrap_or_else(|e| e.into_inner());
            *g += 1;
            *g
        };
        let p = std::env::temp_dir().join(format!(
            "mtipc-attach-{tag}-{}-{}-{seq}",
            std::process::id(),
            files::now_ms()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap();
        let d = p.join("dom");
        Domain::open(Some(&d)).unwrap();
        Scratch(p)
    }

    fn domain(&self) -> PathBuf {
        self.0.join("dom")
    }

    fn outside(&self) -> PathBuf {
        self.0.join("outside")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn advert_of(id: &str, p: ProcId) -> Advert {
    let daemon = id == DAEMON_ID;
    Advert {
        id: id.to_string(),
        role: if daemon { Role::Daemon } else { Role::Tenant },
        pid: p.pid,
        start: p.start,
        uid: mtipc::internals::domain::euid(),
        protocols: vec!["echo".to_string()],
        fingerprint: if daemon { None } else { Some([7; 32]) },
        created_ms: files::now_ms(),
    }
}

fn my_advert(id: &str) -> Advert {
    advert_of(id, ProcId::current().unwrap())
}

fn response_for(tenant: &str) -> Response {
    Response {
        tenant: tenant.to_string(),
        relay: files::RELAY_SOCKET.to_string(),
        pairing: [1; 16],
        protocol: "echo".to_string(),
        key: [2; 32],
        start_ms: 10,
        duration_ms: 0,
        attacher_pid: std::process::id(),
        created_ms: files::now_ms(),
    }
}

/// Writes `bytes` as an owner-only file at `path` (replacing what was there).
fn write_private(path: &Path, bytes: &[u8]) {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Makes an advertisement directory by hand (what a process that died
/// would have left), holding `advert_text` if given.
fn plant_dir(domain: &Path, id: &str, advert_text: Option<&[u8]>) -> PathBuf {
    let ads = adverts_dir(domain);
    let _ = fs::create_dir(&ads);
    fs::set_permissions(&ads, fs::Permissions::from_mode(0o700)).unwrap();
    let d = advert_dir(domain, id);
    fs::create_dir(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    if let Some(t) = advert_text {
        write_private(&d.join("advert"), t);
    }
    d
}

/// Sets a directory's modification time `secs` seconds into the past.
fn age_dir(dir: &Path, secs: u64) {
    let f = fs::File::open(dir).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

fn ids(listed: &[files::Listed]) -> Vec<&str> {
    listed.iter().map(|l| l.advert.id.as_str()).collect()
}

fn spawn_sleeper() -> Child {
    Command::new("sleep").arg("30").spawn().unwrap()
}

// ---- process identity ----------------------------------------------------

#[test]
fn proc_id_of_self_dead_child_zombie_and_reused_pid() {
    let me = ProcId::current().unwrap();
    assert_eq!(me.pid, std::process::id());
    assert!(me.start > 0);
    assert!(me.is_alive());
    assert_eq!(ProcId::of(me.pid).unwrap(), Some(me));

    // A pid reused by another process: same pid, another start time.
    let reused = ProcId {
        pid: me.pid,
        start: me.start + 1,
    };
    assert!(!reused.is_alive());

    // A child that ran and was reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    let live = ProcId::of(pid).unwrap();
    child.wait().unwrap();
    assert_eq!(ProcId::of(pid).unwrap(), None);
    if let Some(p) = live {
        assert!(!p.is_alive());
    }

    // A child that exited and is not reaped yet: a zombie is not alive.
    let mut child = spawn_sleeper();
    let p = ProcId::of(child.id()).unwrap().expect("the child runs");
    assert!(p.is_alive());
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.is_alive() {
        assert!(std::time::Instant::now() < deadline, "still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(fs::metadata(format!("/proc/{}", p.pid)).is_ok(), "a zombie");
    assert_eq!(ProcId::of(p.pid).unwrap(), None);
    child.wait().unwrap();
}

// ---- publish / list / withdraw ------------------------------------------

#[test]
fn publish_list_withdraw() {
    let s = Scratch::new("plw");
    let dom = s.domain();
    assert_eq!(list(&dom).unwrap().0.len(), 0, "no adverts dir yet");

    let a = my_advert("acme");
    let files = AdvertFiles::publish(&dom, &a).unwrap();
    let dir = advert_dir(&dom, "acme");
    assert_eq!(files.dir(), dir);
    assert_eq!(files.advert(), &a);
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&adverts_dir(&dom)), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("advert")), 0o600);
    assert_eq!(mode(&dir.join("sync")), 0o600);
    assert_eq!(
        fs::read(dir.join("advert")).unwrap(),
        a.to_text().as_bytes()
    );
    assert_eq!(read_advert(&dir).unwrap(), a);
    assert_eq!(
        files
            .sync()
            .state()
            .load(std::sync::atomic::Ordering::SeqCst),
        STATE_BUSY
    );
    // Only the three names: no temporary file left behind.
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["advert", "sync"]);

    let d = my_advert(DAEMON_ID);
    let daemon = AdvertFiles::publish(&dom, &d).unwrap();
    let b = my_advert("beta");
    let beta = AdvertFiles::publish(&dom, &b).unwrap();
    let (listed, removed) = list(&dom).unwrap();
    assert_eq!(removed, 0);
    assert_eq!(ids(&listed), ["@mtipcd", "acme", "beta"]);
    assert_eq!(listed[1].advert, a);
    assert_eq!(listed[1].dir, dir);

    write_response(&dir, &response_for("acme")).unwrap();
    files.withdraw().unwrap();
    assert!(!dir.exists());
    assert_eq!(ids(&list(&dom).unwrap().0), ["@mtipcd", "beta"]);
    daemon.withdraw().unwrap();
    beta.withdraw().unwrap();
    assert_eq!(list(&dom).unwrap(), (vec![], 0));
    // The adverts directory itself stays.
    assert!(adverts_dir(&dom).is_dir());
}

#[test]
fn publish_refuses_an_invalid_advert() {
    let s = Scratch::new("inv");
    let mut a = my_advert("acme");
    a.id = "../escape".to_string();
    let e = AdvertFiles::publish(&s.domain(), &a).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    assert!(!s.0.join("escape").exists());
    let mut a = my_advert("acme");
    a.fingerprint = None;
    assert_eq!(
        AdvertFiles::publish(&s.domain(), &a).unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

#[test]
fn a_live_advert_is_not_replaced() {
    let s = Scratch::new("twice");
    let dom = s.domain();
    let first = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    let e = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    let pid = std::process::id().to_string();
    assert!(e.message().contains(&pid), "{e}");
    assert!(e.message().contains("\"acme\""), "{e}");

    // Another live process (a child) holds the id: Exists as well.
    let mut child = spawn_sleeper();
    let p = ProcId::of(child.id()).unwrap().unwrap();
    let other = advert_of("kid", p);
    let text = other.to_text();
    plant_dir(&dom, "kid", Some(text.as_bytes()));
    let e = AdvertFiles::publish(&dom, &my_advert("kid")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(e.message().contains(&child.id().to_string()), "{e}");
    assert_eq!(ids(&list(&dom).unwrap().0), ["acme", "kid"]);
    child.kill().unwrap();
    child.wait().unwrap();

    // Same for the daemon's id.
    let _d = AdvertFiles::publish(&dom, &my_advert(DAEMON_ID)).unwrap();
    let e = AdvertFiles::publish(&dom, &my_advert(DAEMON_ID)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists);
    assert!(
        e.message().starts_with("mtipcd is already advertised"),
        "{e}"
    );
    first.withdraw().unwrap();
}

#[test]
fn concurrent_publishers_of_one_id_get_one_winner() {
    let s = Scratch::new("race");
    let dom = s.domain();
    for round in 0..10 {
        let results: Vec<_> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|_| sc.spawn(|| AdvertFiles::publish(&dom, &my_advert("race"))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut won = Vec::new();
        for r in results {
            match r {
                Ok(f) => won.push(f),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Exists, "round {round}: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}");
        won.pop().unwrap().withdraw().unwrap();
        assert!(!advert_dir(&dom, "race").exists());
    }
}

// ---- stale advertisements -------------------------------------------------

#[test]
fn the_advert_of_a_killed_child_is_removed_by_list() {
    let s = Scratch::new("killed");
    let dom = s.domain();
    let mut child = spawn_sleeper();
    let p = ProcId::of(child.id()).unwrap().unwrap();
    let text = advert_of("victim", p).to_text();
    let dir = plant_dir(&dom, "victim", Some(text.as_bytes()));
    SyncFile::open_or_create(&dir).unwrap();
    write_private(&dir.join(".advert.tmp.1.2"), b"leftover");
    let (listed, removed) = list(&dom).unwrap();
    assert_eq!((ids(&listed), removed), (vec!["victim"], 0));
    assert!(listed[0].advert.is_live());

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!listed[0].advert.is_live());
    let (listed, removed) = list(&dom).unwrap();
    assert_eq!((listed.len(), removed), (0, 1));
    assert!(!dir.exists(), "the whole directory is removed");
    assert_eq!(list(&dom).unwrap(), (vec![], 0));
}

#[test]
fn a_reused_pid_is_stale_and_a_stale_advert_is_replaced() {
    let s = Scratch::new("reused");
    let dom = s.domain();
    let me = ProcId::current().unwrap();
    // Our pid, but another start time: the pid was reused (by us).
    let old = advert_of(
        "ghost",
        ProcId {
            pid: me.pid,
            start: me.start - 1,
        },
    );
    let dir = plant_dir(&dom, "ghost", Some(old.to_text().as_bytes()));
    write_private(
        &dir.join("response"),
        response_for("ghost").to_text().as_bytes(),
    );
    assert!(!old.is_live());
    // publish replaces it (and its leftover response).
    let f = AdvertFiles::publish(&dom, &my_advert("ghost")).unwrap();
    assert_eq!(read_advert(&dir).unwrap(), my_advert_like(&dir));
    assert_eq!(read_response(&dir).unwrap(), None);
    f.withdraw().unwrap();

    // list removes it.
    plant_dir(&dom, "ghost", Some(old.to_text().as_bytes()));
    assert_eq!(list(&dom).unwrap(), (vec![], 1));
    assert!(!dir.exists());
}

/// The advertisement now in `dir` must be this process's.
fn my_advert_like(dir: &Path) -> Advert {
    let a = read_advert(dir).unwrap();
    assert_eq!(a.proc_id(), ProcId::current().unwrap());
    a
}

#[test]
fn garbage_is_removed_only_once_older_than_the_grace_period() {
    let s = Scratch::new("garbage");
    let dom = s.domain();
    let no_file = plant_dir(&dom, "nofile", None);
    let garbage = plant_dir(&dom, "garbage", Some(b"mtipc advert 1\nid garbage\n"));
    let wrong_id_text = my_advert("other").to_text();
    let wrong_id = plant_dir(&dom, "wrongid", Some(wrong_id_text.as_bytes()));
    let bad_mode = plant_dir(
        &dom,
        "badmode",
        Some(my_advert("badmode").to_text().as_bytes()),
    );
    fs::set_permissions(bad_mode.join("advert"), fs::Permissions::from_mode(0o644)).unwrap();
    let all = [&no_file, &garbage, &wrong_id, &bad_mode];

    // Young: possibly being published; neither listed nor removed.
    assert_eq!(list(&dom).unwrap(), (vec![], 0));
    for d in all {
        assert!(d.exists(), "{}", d.display());
    }
    for d in all {
        age_dir(d, 11);
    }
    assert_eq!(list(&dom).unwrap(), (vec![], 4));
    for d in all {
        assert!(!d.exists(), "{}", d.display());
    }
}

#[test]
fn entries_that_are_not_advert_directories_are_skipped_and_kept() {
    let s = Scratch::new("skip");
    let dom = s.domain();
    let live = AdvertFiles::publish(&dom, &my_advert("real")).unwrap();
    let ads = adverts_dir(&dom);
    // A regular file, a hidden directory, a badly named one, a directory
    // open to others: skipped, never removed.
    write_private(&ads.join("afile"), b"x");
    fs::create_dir(ads.join(".hidden")).unwrap();
    fs::create_dir(ads.join("bad name")).unwrap();
    let open = plant_dir(&dom, "open", None);
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    for p in [ads.join(".hidden"), ads.join("bad name"), open.clone()] {
        age_dir(&p, 60);
    }
    let (listed, removed) = list(&dom).unwrap();
    assert_eq!((ids(&listed), removed), (vec!["real"], 0));
    for p in ["afile", ".hidden", "bad name", "open"] {
        assert!(ads.join(p).exists(), "{p}");
    }
    live.withdraw().unwrap();
}

// ---- symbolic links ---------------------------------------------------------

#[test]
fn a_symlink_as_advert_directory_is_never_followed() {
    let s = Scratch::new("symdir");
    let dom = s.domain();
    // A directory elsewhere that looks like a stale advertisement.
    let outside = s.outside();
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    let dead = advert_of("evil", ProcId { pid: 0, start: 1 });
    write_private(&outside.join("advert"), dead.to_text().as_bytes());
    age_dir(&outside, 60);
    fs::create_dir(adverts_dir(&dom)).unwrap();
    fs::set_permissions(adverts_dir(&dom), fs::Permissions::from_mode(0o700)).unwrap();
    let link = advert_dir(&dom, "evil");
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    // list: skipped, neither the link nor its target removed.
    assert_eq!(list(&dom).unwrap(), (vec![], 0));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(outside.join("advert").exists());

    // publish under that id: Denied, nothing written through the link.
    let e = AdvertFiles::publish(&dom, &my_advert("evil")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(e.message().contains("symbolic link"), "{e}");
    assert!(!outside.join("sync").exists());

    // Reading or writing through it: Denied.
    for e in [
        read_advert(&link).unwrap_err(),
        read_response(&link).unwrap_err(),
        write_response(&link, &response_for("evil")).unwrap_err(),
        SyncFile::open_or_create(&link).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert!(e.message().contains("symbolic link"), "{e}");
    }
    assert!(!outside.join("response").exists());
    assert!(!outside.join("sync").exists());

    // The adverts directory itself as a link: Denied.
    let s2 = Scratch::new("symads");
    let dom2 = s2.domain();
    std::os::unix::fs::symlink(adverts_dir(&dom), adverts_dir(&dom2)).unwrap();
    assert_eq!(list(&dom2).unwrap_err().kind(), ErrorKind::Denied);
    assert_eq!(
        AdvertFiles::publish(&dom2, &my_advert("x"))
            .unwrap_err()
            .kind(),
        ErrorKind::Denied
    );
}

#[test]
fn a_symlink_at_response_is_never_followed() {
    let s = Scratch::new("symresp");
    let dom = s.domain();
    let f = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    let dir = f.dir().to_path_buf();
    let target = s.outside();
    write_private(&target, b"precious");
    std::os::unix::fs::symlink(&target, dir.join("response")).unwrap();

    let e = write_response(&dir, &response_for("acme")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(e.message().contains("symbolic link"), "{e}");
    assert!(e.message().contains("response"), "{e}");
    assert_eq!(fs::read(&target).unwrap(), b"precious");

    let e = read_response(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");

    // Removing it removes the link, not its target.
    remove_response(&dir).unwrap();
    assert!(fs::symlink_metadata(dir.join("response")).is_err());
    assert_eq!(fs::read(&target).unwrap(), b"precious");

    // A link at `advert` makes the advertisement unreadable (Denied).
    std::os::unix::fs::symlink(&target, dir.join("other")).unwrap();
    f.withdraw().unwrap();
    let d = plant_dir(&dom, "linked", None);
    std::os::unix::fs::symlink(&target, d.join("advert")).unwrap();
    assert_eq!(read_advert(&d).unwrap_err().kind(), ErrorKind::Denied);
    assert_eq!(fs::read(&target).unwrap(), b"precious");
}

// ---- the response file ------------------------------------------------------

#[test]
fn response_write_read_replace_remove() {
    let s = Scratch::new("resp");
    let dom = s.domain();
    let f = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    let dir = f.dir().to_path_buf();
    assert_eq!(read_response(&dir).unwrap(), None);
    let r = response_for("acme");
    write_response(&dir, &r).unwrap();
    let md = fs::symlink_metadata(dir.join("response")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(read_response(&dir).unwrap(), Some(r.clone()));

    // A leftover (of a dead attacher) is replaced.
    let mut r2 = r.clone();
    r2.pairing = [9; 16];
    write_response(&dir, &r2).unwrap();
    assert_eq!(read_response(&dir).unwrap(), Some(r2));

    // Invalid responses are not written.
    let mut bad = r.clone();
    bad.relay = "/tmp/x.sock".to_string();
    assert_eq!(
        write_response(&dir, &bad).unwrap_err().kind(),
        ErrorKind::Invalid
    );

    // A corrupt one is refused with the path and the line.
    write_private(
        &dir.join("response"),
        r.to_text().replace("duration 0", "duration 00").as_bytes(),
    );
    let e = read_response(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    let want = format!(
        "response file {}: line 8: duration \"00\" has a leading zero",
        dir.join("response").display()
    );
    assert_eq!(e.message(), want);

    // An oversized one: refused without reading it all.
    write_private(&dir.join("response"), &vec![b'a'; 1 << 20]);
    let e = read_response(&dir).unwrap_err();
    assert!(e.message().contains("larger than 4096 bytes"), "{e}");

    // A directory there: Corrupt, and not replaced.
    remove_response(&dir).unwrap();
    remove_response(&dir).unwrap();
    fs::create_dir(dir.join("response")).unwrap();
    assert_eq!(
        write_response(&dir, &r).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    assert_eq!(read_response(&dir).unwrap_err().kind(), ErrorKind::Corrupt);
    fs::remove_dir(dir.join("response")).unwrap();

    // Group/other permission bits: Denied.
    write_private(&dir.join("response"), r.to_text().as_bytes());
    fs::set_permissions(dir.join("response"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(read_response(&dir).unwrap_err().kind(), ErrorKind::Denied);
    f.withdraw().unwrap();
    // No directory: nothing to remove.
    remove_response(&dir).unwrap();
}

#[test]
fn advert_file_errors_name_the_file_and_line() {
    let s = Scratch::new("msg");
    let dom = s.domain();
    let text = my_advert("acme").to_text();
    let bad = text.replacen(&format!("pid {}", std::process::id()), "pid 01", 1);
    let dir = plant_dir(&dom, "acme", Some(bad.as_bytes()));
    let e = read_advert(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(
        e.message(),
        format!(
            "advertisement file {}: line 4: pid \"01\" has a leading zero",
            dir.join("advert").display()
        )
    );
    fs::remove_file(dir.join("advert")).unwrap();
    assert_eq!(read_advert(&dir).unwrap_err().kind(), ErrorKind::NotFound);
}

// ---- the synchronization file ----------------------------------------------

#[test]
fn sync_file_is_validated() {
    let s = Scratch::new("sync");
    let dom = s.domain();
    let dir = plant_dir(&dom, "acme", None);
    let e = SyncFile::open(&dir).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let sf = SyncFile::open_or_create(&dir).unwrap();
    assert_eq!(sf.path(), dir.join("sync"));
    let good = fs::read(dir.join("sync")).unwrap();
    assert_eq!(good.len(), 128);
    assert_eq!(&good[..8], b"MTSYNC\0\0");
    drop(sf);

    let check = |bytes: &[u8], kind: ErrorKind, needle: &str| {
        write_private(&dir.join("sync"), bytes);
        for e in [
            SyncFile::open(&dir).unwrap_err(),
            SyncFile::open_or_create(&dir).unwrap_err(),
        ] {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.message().contains(needle), "{e}");
            assert!(e.message().contains("sync"), "{e}");
        }
        // Never replaced by the refusal.
        assert_eq!(fs::read(dir.join("sync")).unwrap(), bytes);
    };
    check(&[0xa5; 128], ErrorKind::Corrupt, "bad magic");
    check(b"", ErrorKind::Corrupt, "truncated");
    check(&good[..100], ErrorKind::Corrupt, "100 bytes");
    check(
        &[good.clone(), vec![0; 4096]].concat(),
        ErrorKind::Corrupt,
        "4224 bytes",
    );
    let mut sem = good.clone();
    sem[..8].copy_from_slice(b"MTIPCSEM");
    check(&sem, ErrorKind::Corrupt, "bad magic");
    let mut other_version = good.clone();
    other_version[8] = 99;
    check(&other_version, ErrorKind::Version, "layout version 99");
    let mut bad_total = good.clone();
    bad_total[16] = 64;
    check(&bad_total, ErrorKind::Corrupt, "size of 64");

    write_private(&dir.join("sync"), &good);
    fs::set_permissions(dir.join("sync"), fs::Permissions::from_mode(0o660)).unwrap();
    assert_eq!(SyncFile::open(&dir).unwrap_err().kind(), ErrorKind::Denied);
    fs::remove_file(dir.join("sync")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("sync")).unwrap();
    assert_eq!(SyncFile::open(&dir).unwrap_err().kind(), ErrorKind::Denied);
}

#[test]
fn sync_state_is_shared_and_locks_exclude() {
    let s = Scratch::new("lock");
    let dom = s.domain();
    let f = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    let waiter = f.sync();
    let attacher = SyncFile::open(f.dir()).unwrap();
    use std::sync::atomic::Ordering::SeqCst;
    waiter.set_state(STATE_IDLE);
    assert_eq!(attacher.state().load(SeqCst), STATE_IDLE);

    // The attacher's exclusive lock holds the waiter's shared one back.
    attacher.lock_exclusive().unwrap();
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            waiter.lock_shared().unwrap();
            waiter.unlock().unwrap();
            waiter.set_state(STATE_BUSY);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            attacher.state().load(SeqCst),
            STATE_IDLE,
            "still locked out"
        );
        attacher.unlock().unwrap();
        h.join().unwrap();
    });
    assert_eq!(attacher.state().load(SeqCst), STATE_BUSY);

    // A shared lock holds an exclusive one back; a timed attempt times out.
    waiter.lock_shared().unwrap();
    assert!(!attacher.try_lock_exclusive().unwrap());
    let e = attacher
        .lock_exclusive_within(Duration::from_millis(30))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    waiter.unlock().unwrap();
    attacher
        .lock_exclusive_within(Duration::from_secs(5))
        .unwrap();
    attacher.unlock().unwrap();

    // The state word is a futex other processes' mappings wake on: a
    // sleeper that marked it WATCHED is woken by the change (well before
    // its 10 s timeout), and the change clears the mark.
    use mtipc::internals::attach::round::WATCHED;
    let w = attacher.state();
    assert!(w
        .atomic()
        .compare_exchange(STATE_BUSY, STATE_BUSY | WATCHED, SeqCst, SeqCst)
        .is_ok());
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            waiter.set_state(STATE_IDLE);
        });
        let t = std::time::Instant::now();
        while attacher.state_value() != STATE_IDLE {
            w.wait(STATE_BUSY | WATCHED, Some(Duration::from_secs(10)));
        }
        let slept = t.elapsed();
        assert!(slept < Duration::from_secs(5), "not woken: {slept:?}");
    });
    assert_eq!(attacher.state().load(SeqCst), STATE_IDLE, "mark cleared");

    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SyncFile>();
    assert_send_sync::<AdvertFiles>();
    drop(attacher);
    f.withdraw().unwrap();
}

#[test]
fn withdraw_leaves_someone_elses_advert_alone() {
    let s = Scratch::new("withdraw");
    let dom = s.domain();
    let f = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    // The directory now holds another process's advertisement (as if ours
    // had been taken for stale and replaced).
    let mut child = spawn_sleeper();
    let p = ProcId::of(child.id()).unwrap().unwrap();
    let other = advert_of("acme", p).to_text();
    write_private(&f.dir().join("advert"), other.as_bytes());
    let dir = f.dir().to_path_buf();
    f.withdraw().unwrap();
    assert_eq!(fs::read(dir.join("advert")).unwrap(), other.as_bytes());
    child.kill().unwrap();
    child.wait().unwrap();
    // Already withdrawn (directory gone): fine.
    let f = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    fs::remove_dir_all(f.dir()).unwrap();
    f.withdraw().unwrap();
}

#[test]
fn adverts_directory_open_to_others_is_refused() {
    let s = Scratch::new("perm");
    let dom = s.domain();
    fs::create_dir(adverts_dir(&dom)).unwrap();
    fs::set_permissions(adverts_dir(&dom), fs::Permissions::from_mode(0o750)).unwrap();
    let e = list(&dom).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
    assert!(e.message().contains("adverts"), "{e}");
    assert_eq!(
        AdvertFiles::publish(&dom, &my_advert("a"))
            .unwrap_err()
            .kind(),
        ErrorKind::Denied
    );
    // A file where the adverts directory should be.
    let s2 = Scratch::new("perm2");
    write_private(&adverts_dir(&s2.domain()), b"x");
    assert_eq!(list(&s2.domain()).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn an_advert_cache_lists_what_list_lists_and_sees_every_replacement() {
    let s = Scratch::new("cache");
    let dom = s.domain();
    let mut cache = AdvertCache::new();
    assert_eq!(cache.list(&dom).unwrap(), (vec![], 0));

    let acme = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    let beta = AdvertFiles::publish(&dom, &my_advert("beta")).unwrap();
    let first = cache.list(&dom).unwrap();
    assert_eq!(first, list(&dom).unwrap());
    assert_eq!(ids(&first.0), ["acme", "beta"]);
    // Kept: the second look answers the same, and the same open sync file
    // (its lock excludes a fresh one, so it is the real file).
    assert_eq!(cache.list(&dom).unwrap(), first);
    let kept = cache.sync("acme").unwrap() as *const SyncFile;
    assert!(cache.sync("acme").unwrap().try_lock_exclusive().unwrap());
    assert!(!SyncFile::open(acme.dir())
        .unwrap()
        .try_lock_exclusive()
        .unwrap());
    cache.sync("acme").unwrap().unlock().unwrap();
    assert_eq!(kept, cache.sync("acme").unwrap() as *const SyncFile);

    // Withdrawn and advertised again under the same id (new directory, new
    // advertisement, new sync file): the cache follows.
    acme.withdraw().unwrap();
    assert_eq!(ids(&cache.list(&dom).unwrap().0), ["beta"]);
    assert_eq!(
        cache.sync("acme").unwrap_err().kind(),
        ErrorKind::NotFound,
        "a withdrawn advertisement is forgotten"
    );
    let mut again = my_advert("acme");
    again.created_ms += 1;
    let acme2 = AdvertFiles::publish(&dom, &again).unwrap();
    let (listed, _) = cache.list(&dom).unwrap();
    assert_eq!(listed, list(&dom).unwrap().0);
    assert_eq!(listed[0].advert, again);
    let sync = cache.sync("acme").unwrap();
    sync.set_state(STATE_IDLE);
    assert_eq!(
        acme2
            .sync()
            .state()
            .load(std::sync::atomic::Ordering::SeqCst),
        STATE_IDLE,
        "the kept sync file is the new advertisement's"
    );

    // The advertisement file replaced in place (same directory): read again.
    let mut edited = again.clone();
    edited.protocols = vec!["other".to_string()];
    let adv = acme2.dir().join("advert");
    fs::remove_file(&adv).unwrap();
    write_private(&adv, edited.to_text().as_bytes());
    assert_eq!(cache.list(&dom).unwrap().0[0].advert, edited);

    // The sync file replaced in place: the next `sync` opens the new one.
    let old_sync = cache.sync("acme").unwrap() as *const SyncFile;
    let sync_path = acme2.dir().join("sync");
    let bytes = fs::read(&sync_path).unwrap();
    fs::remove_file(&sync_path).unwrap();
    write_private(&sync_path, &bytes);
    cache.list(&dom).unwrap();
    let fresh = SyncFile::open(acme2.dir()).unwrap();
    assert!(cache.sync("acme").unwrap().try_lock_exclusive().unwrap());
    assert!(
        !fresh.try_lock_exclusive().unwrap(),
        "the kept sync file must be the one now in the directory"
    );
    let _ = old_sync;

    // A dead process's advertisement kept from before is stale, and removed.
    let child = spawn_sleeper();
    let pid = child.id();
    let dead = advert_of("gone", ProcId::of(pid).unwrap().unwrap());
    let gone = plant_dir(&dom, "gone", Some(dead.to_text().as_bytes()));
    assert_eq!(ids(&cache.list(&dom).unwrap().0), ["acme", "beta", "gone"]);
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ids(&cache.list(&dom).unwrap().0), ["acme", "beta"]);
    assert!(!gone.exists());

    // remove_response goes through the kept directory.
    write_response(beta.dir(), &response_for("beta")).unwrap();
    cache.remove_response("beta").unwrap();
    assert_eq!(read_response(beta.dir()).unwrap(), None);
    beta.withdraw().unwrap();
    // `acme`'s directory holds an advertisement edited behind its back:
    // withdraw leaves it (not its own any more); remove it by hand.
    acme2.withdraw().unwrap();
    assert_eq!(ids(&cache.list(&dom).unwrap().0), ["acme"]);
    fs::remove_dir_all(advert_dir(&dom, "acme")).unwrap();
    assert_eq!(cache.list(&dom).unwrap(), (vec![], 0));
}

/// A directory unchanged since a full check made well after its last
/// change is trusted without its files being looked at (docs/attach.md,
/// "What a process keeps between rounds"): a file rewritten in place, which
/// mtipc never does, is seen only when the next full check comes due (at
/// most about two seconds), while an entry added, removed or renamed in the
/// directory is seen at the next listing.
#[test]
fn an_advert_cache_trusts_a_quiet_directory_and_sees_its_entries_change() {
    let s = Scratch::new("quiet");
    let dom = s.domain();
    let orig = my_advert("acme");
    let acme = AdvertFiles::publish(&dom, &orig).unwrap();
    let mut cache = AdvertCache::new();
    cache.list(&dom).unwrap();
    cache.sync("acme").unwrap();
    // Its last change now lies well before the next (full) check, which
    // records the directory's stamp; the one after may trust it.
    std::thread::sleep(Duration::from_millis(120));
    cache.list(&dom).unwrap();
    cache.sync("acme").unwrap();

    // Rewritten in place: same inode, so the directory does not change.
    let mut edited = orig.clone();
    edited.protocols = vec!["other".to_string()];
    let adv = acme.dir().join("advert");
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&adv)
        .unwrap();
    f.write_all(edited.to_text().as_bytes()).unwrap();
    drop(f);
    let begun = std::time::Instant::now();
    assert_eq!(
        cache.list(&dom).unwrap().0[0].advert,
        orig,
        "a quiet directory's files are not looked at"
    );
    loop {
        if cache.list(&dom).unwrap().0[0].advert == edited {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(4),
            "the full check never came due"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Quiet again, then the sync file replaced by a rename (an entry of the
    // directory changes): the next listing looks, and `sync` opens the new
    // file.
    std::thread::sleep(Duration::from_millis(120));
    cache.list(&dom).unwrap();
    cache.sync("acme").unwrap();
    let sync_path = acme.dir().join("sync");
    let tmp = acme.dir().join("sync.new");
    write_private(&tmp, &fs::read(&sync_path).unwrap());
    fs::rename(&tmp, &sync_path).unwrap();
    cache.list(&dom).unwrap();
    let fresh = SyncFile::open(acme.dir()).unwrap();
    assert!(cache.sync("acme").unwrap().try_lock_exclusive().unwrap());
    assert!(
        !fresh.try_lock_exclusive().unwrap(),
        "the kept sync file must be the one now in the directory"
    );
    cache.sync("acme").unwrap().unlock().unwrap();

    // A new advertisement beside it is listed at once, and one withdrawn
    // is gone at once.
    let beta = AdvertFiles::publish(&dom, &my_advert("beta")).unwrap();
    assert_eq!(ids(&cache.list(&dom).unwrap().0), ["acme", "beta"]);
    beta.withdraw().unwrap();
    assert_eq!(ids(&cache.list(&dom).unwrap().0), ["acme"]);
    drop(acme);
}

#[test]
fn a_response_scan_finds_each_response_and_follows_replaced_directories() {
    let s = Scratch::new("scan");
    let dom = s.domain();
    let mut scan = ResponseScan::new();
    assert!(scan.scan(&dom).unwrap().is_empty());
    let a = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    let b = AdvertFiles::publish(&dom, &my_advert("beta")).unwrap();
    let found = |scan: &mut ResponseScan| {
        let mut v: Vec<(String, Option<String>)> = scan
            .scan(&dom)
            .unwrap()
            .into_iter()
            .map(|(d, r)| {
                let name = d.file_name().unwrap().to_str().unwrap().to_string();
                (name, r.unwrap().map(|r| r.tenant))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        found(&mut scan),
        [("acme".into(), None), ("beta".into(), None)]
    );
    write_response(b.dir(), &response_for("beta")).unwrap();
    assert_eq!(
        found(&mut scan),
        [("acme".into(), None), ("beta".into(), Some("beta".into()))]
    );
    // acme withdrawn and advertised again: the scan reads the new directory.
    a.withdraw().unwrap();
    assert_eq!(found(&mut scan), [("beta".into(), Some("beta".into()))]);
    let a2 = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    write_response(a2.dir(), &response_for("acme")).unwrap();
    assert_eq!(
        found(&mut scan),
        [
            ("acme".into(), Some("acme".into())),
            ("beta".into(), Some("beta".into()))
        ]
    );
    assert_eq!(
        a2.read_response().unwrap().map(|r| r.tenant),
        Some("acme".into())
    );
    a2.withdraw().unwrap();
    b.withdraw().unwrap();
    assert!(scan.scan(&dom).unwrap().is_empty());
}

#[test]
fn the_round_hint_reads_only_the_named_kept_directory() {
    // Never 0 (the marker's "no round"), and it tells ids apart.
    for id in ["acme", "beta", "t000", "t001", "@mtipcd", ""] {
        assert_eq!(round_hint(id) & 1, 1, "{id}");
    }
    assert_ne!(round_hint("t000"), round_hint("t001"));
    assert_eq!(round_hint("acme"), round_hint("acme"));

    let s = Scratch::new("hint");
    let dom = s.domain();
    let mut scan = ResponseScan::new();
    let a = AdvertFiles::publish(&dom, &my_advert("acme")).unwrap();
    let b = AdvertFiles::publish(&dom, &my_advert("beta")).unwrap();
    // Nothing kept yet: the hint finds nothing (the daemon then scans).
    assert!(scan.hinted(&dom, round_hint("beta")).is_empty());
    assert_eq!(scan.scan(&dom).unwrap().len(), 2);
    write_response(b.dir(), &response_for("beta")).unwrap();
    write_response(a.dir(), &response_for("acme")).unwrap();
    let hinted = scan.hinted(&dom, round_hint("beta"));
    assert_eq!(hinted.len(), 1);
    assert_eq!(hinted[0].0, b.dir());
    assert_eq!(
        hinted[0]
            .1
            .as_ref()
            .unwrap()
            .as_ref()
            .map(|r| r.tenant.as_str()),
        Some("beta")
    );
    // No round (0) and a hint of no kept id: nothing.
    assert!(scan.hinted(&dom, 0).is_empty());
    assert!(scan.hinted(&dom, round_hint("gamma")).is_empty());
    // beta withdrawn and advertised again: its kept directory is gone, so
    // the hint finds no response (the daemon then scans, which reads the
    // new one).
    remove_response(b.dir()).unwrap();
    b.withdraw().unwrap();
    let b2 = AdvertFiles::publish(&dom, &my_advert("beta")).unwrap();
    write_response(b2.dir(), &response_for("beta")).unwrap();
    assert!(scan
        .hinted(&dom, round_hint("beta"))
        .iter()
        .all(|(_, r)| !matches!(r, Ok(Some(_)))));
    assert_eq!(
        scan.scan(&dom)
            .unwrap()
            .into_iter()
            .filter(|(_, r)| matches!(r, Ok(Some(_))))
            .count(),
        2
    );
    assert_eq!(scan.hinted(&dom, round_hint("beta")).len(), 1);
    a.withdraw().unwrap();
    b2.withdraw().unwrap();
}

/// 20,000 junk files in `adverts/` are one warning per listing that counts
/// them and names a few, not 20,000 warnings (issue 10). The logger is
/// process-wide: only this test of the file installs one, and it keeps
/// the events of its own thread.
#[test]
fn junk_entries_are_one_warning_per_listing() {
    use mtipc::log::{clear_logger, set_logger, Level};
    use std::sync::{Arc, Mutex};
    let s = Scratch::new("junk");
    let adverts = adverts_dir(&s.domain());
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&adverts)
        .unwrap();
    use std::os::unix::fs::DirBuilderExt;
    for i in 0..20_000 {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(adverts.join(format!("junk{i:05}")))
            .unwrap();
    }
    std::os::unix::fs::symlink("/", adverts.join("link")).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (e2, me) = (Arc::clone(&events), std::thread::current().id());
    set_logger(
        Arc::new(move |l: Level, _t: &str, m: &str| {
            if std::thread::current().id() == me {
                e2.lock().unwrap().push((l, m.to_string()));
            }
        }),
        Level::Trace,
    );
    let listed = list(&s.domain());
    clear_logger();
    let (live, removed) = listed.unwrap();
    assert!(live.is_empty());
    assert_eq!(removed, 0);
    let events = events.lock().unwrap();
    let warnings: Vec<&String> = events
        .iter()
        .filter(|(l, _)| *l == Level::Warn)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "{:?}",
        &warnings[..warnings.len().min(5)]
    );
    assert!(
        warnings[0].starts_with("skipped 20001 entries that are not advertisements"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("not a directory"), "{}", warnings[0]);
    assert_eq!(
        fs::read_dir(&adverts).unwrap().count(),
        20_001,
        "left in place"
    );
}
