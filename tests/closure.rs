//! Shared closures between real processes: this test binary re-executed as
//! readers and publishers (see [`child_entry`]); no thread stands in for a
//! process.
//!
//! - [`readers_hold_their_version_until_the_last_lets_go`]: 8 reader
//!   processes hold version 1 while version 2 is published; v1's file stays
//!   (and `list` counts 8 readers) until the last reader exits; each reader
//!   sees exactly v1's bytes before and after v2 is published.
//! - [`killed_readers_do_not_pin_a_version`]: readers `kill -9`ed while
//!   holding a version lose their lock with their life; the next release
//!   or publish removes the file.
//! - [`racing_publishers_and_readers`]: publisher processes race; versions
//!   are distinct and increasing per publisher; reader processes opening
//!   meanwhile always see a complete version, never an older one than
//!   before, with the content its publisher wrote for it.
//! - [`bad_version_files_are_refused`]: corrupted, truncated, symlinked,
//!   writable version files and a bad head give `Corrupt` / `Denied`, never
//!   a crash; random corruption too.
//! - [`oversized_and_too_deep_are_invalid_with_the_limit`].

mod common;

use common::Scratch;
use mtipc::closure::{self, Closure, Value, MAX_CLOSURE_SIZE, MAX_DEPTH};
use mtipc::{Domain, ErrorKind};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

/// A child process with its stdin (to tell it what to do) and a channel of
/// its stdout lines.
struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Kid {
    fn spawn(role: &str, args: &[String]) -> Kid {
        let mut child = common::role_command("MTIPC_CLOSURE", role, args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("re-exec the test binary");
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Kid {
            child,
            stdin,
            lines,
        }
    }

    /// The next line that starts with `prefix` (others are the test
    /// harness's), within 30 s.
    fn expect(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("child {}: no {prefix:?} line: {e}", self.child.id()),
            }
        }
    }

    fn tell(&mut self, cmd: &str) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{cmd}").unwrap();
        s.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "child exited with {st}");
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of test pattern `seed`, `len` long.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn version_path(dom: &Path, name: &str, v: u64) -> PathBuf {
    dom.join("closures").join(name).join(format!("v{v}"))
}

fn readers_of(d: &Domain, name: &str) -> BTreeMap<u64, u32> {
    closure::list(d)
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| c.versions.iter().map(|v| (v.version, v.readers)).collect())
        .unwrap_or_default()
}

const LEN: usize = 256 * 1024;

// ---------------------------------------------------------------------------
// Child processes

#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_CLOSURE_ROLE") else {
        return;
    };
    let args_var = std::env::var("MTIPC_CLOSURE_ARGS").unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    let d = Domain::open(Some(Path::new(args[0]))).expect("child opens the domain");
    match role.as_str() {
        "holder" => child_holder(&d, args[1], args[2].parse().unwrap()),
        "publisher" => child_publisher(&d, args[1], args[2].parse().unwrap()),
        "opener" => child_opener(&d, args[1]),
        other => panic!("unknown child role {other:?}"),
    }
    std::process::exit(0);
}

/// Opens the closure, checks that its bytes are `pattern(version)`, prints
/// "holding <version>", then for each "check" line checks them again and
/// prints "same <version>"; exits (letting go) when stdin closes.
fn child_holder(d: &Domain, name: &str, len: usize) {
    let c = Closure::open(d, name).expect("holder opens");
    let v = c.version();
    let check = |c: &Closure| {
        let b = c.bytes().expect("a bytes closure");
        assert!(b == pattern(v, len).as_slice(), "bytes of v{v} differ");
    };
    check(&c);
    let mut out = std::io::stdout().lock();
    writeln!(out, "holding {v}").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        if line.unwrap() == "check" {
            check(&c);
            writeln!(out, "same {v}").unwrap();
            out.flush().unwrap();
        }
    }
}

/// Publishes `n` maps {"by": pid, "seq": i, "data": pattern(pid * 1000 + i)}
/// and prints "published <version> <pid> <i>" after each.
fn child_publisher(d: &Domain, name: &str, n: u64) {
    let pid = std::process::id() as u64;
    let mut out = std::io::stdout().lock();
    for i in 0..n {
        let mut m = BTreeMap::new();
        m.insert("by".to_string(), Value::Int(pid as i64));
        m.insert("seq".to_string(), Value::Int(i as i64));
        m.insert(
            "data".to_string(),
            Value::Bytes(pattern(pid * 1000 + i, 1000 + (i as usize * 37) % 3000)),
        );
        let v = closure::publish(d, name, &Value::Map(m)).expect("publish");
        writeln!(out, "published {v} {pid} {i}").unwrap();
    }
    out.flush().unwrap();
}

/// Opens the closure over and over until stdin closes; checks each
/// version's content against its own fields and prints "saw <version> <by>
/// <seq>"; the versions it sees never go back.
fn child_opener(d: &Domain, name: &str) {
    let (tx, rx) = channel::<()>();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines() {}
        let _ = tx.send(());
    });
    let mut out = std::io::stdout().lock();
    let mut last = 0;
    while rx.try_recv().is_err() {
        let c = match Closure::open(d, name) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => panic!("opener: {e}"),
        };
        let v = c.version();
        assert!(v >= last, "went back from v{last} to v{v}");
        last = v;
        let r = c.root();
        let by = r.map_get(b"by").unwrap().as_int().unwrap() as u64;
        let seq = r.map_get(b"seq").unwrap().as_int().unwrap() as u64;
        let data = r.map_get(b"data").unwrap().as_bytes().unwrap();
        assert!(
            data == pattern(by * 1000 + seq, 1000 + (seq as usize * 37) % 3000).as_slice(),
            "v{v}: content is not what its publisher wrote"
        );
        writeln!(out, "saw {v} {by} {seq}").unwrap();
    }
    out.flush().unwrap();
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn readers_hold_their_version_until_the_last_lets_go() {
    let s = Scratch::create("hold");
    let d = Domain::open(Some(&s.0)).unwrap();
    let dom = s.0.display().to_string();
    assert_eq!(
        closure::publish_bytes(&d, "cfg", &pattern(1, LEN)).unwrap(),
        1
    );
    let mut kids: Vec<Kid> = (0..8)
        .map(|_| Kid::spawn("holder", &[dom.clone(), "cfg".into(), LEN.to_string()]))
        .collect();
    for k in &kids {
        assert_eq!(k.expect("holding"), "holding 1");
    }
    assert_eq!(readers_of(&d, "cfg"), BTreeMap::from([(1, 8)]));

    assert_eq!(
        closure::publish_bytes(&d, "cfg", &pattern(2, LEN)).unwrap(),
        2
    );
    assert!(
        version_path(&s.0, "cfg", 1).exists(),
        "v1 is held by 8 readers"
    );
    assert_eq!(readers_of(&d, "cfg"), BTreeMap::from([(1, 8), (2, 0)]));
    let info = closure::list(&d).unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].current, 2);
    // A new reader gets v2, with v2's bytes.
    let c2 = Closure::open(&d, "cfg").unwrap();
    assert_eq!(c2.version(), 2);
    assert!(c2.bytes().unwrap() == pattern(2, LEN).as_slice());
    // The holders still see exactly v1's bytes.
    for k in &mut kids {
        k.tell("check");
        assert_eq!(k.expect("same"), "same 1");
    }
    // They let go one by one: v1 stays until the last one has.
    let n = kids.len();
    for (i, k) in kids.drain(..).enumerate() {
        k.finish();
        let left = (n - 1 - i) as u32;
        if left > 0 {
            assert!(version_path(&s.0, "cfg", 1).exists(), "{left} readers left");
            assert_eq!(readers_of(&d, "cfg").get(&1), Some(&left));
        }
    }
    assert!(
        !version_path(&s.0, "cfg", 1).exists(),
        "the last reader removed v1"
    );
    assert_eq!(readers_of(&d, "cfg"), BTreeMap::from([(2, 1)]));
    drop(c2);
    assert!(
        version_path(&s.0, "cfg", 2).exists(),
        "the current version stays"
    );
    assert_eq!(readers_of(&d, "cfg"), BTreeMap::from([(2, 0)]));
}

#[test]
fn killed_readers_do_not_pin_a_version() {
    let s = Scratch::create("kill");
    let d = Domain::open(Some(&s.0)).unwrap();
    let dom = s.0.display().to_string();
    let args = [dom.clone(), "k".to_string(), "100".to_string()];
    closure::publish_bytes(&d, "k", &pattern(1, 100)).unwrap();
    let r1 = Kid::spawn("holder", &args);
    let r2 = Kid::spawn("holder", &args);
    r1.expect("holding 1");
    r2.expect("holding 1");
    closure::publish_bytes(&d, "k", &pattern(2, 100)).unwrap();
    r1.kill9();
    assert!(version_path(&s.0, "k", 1).exists(), "r2 still holds v1");
    assert_eq!(readers_of(&d, "k").get(&1), Some(&1));
    // r2's release collects v1: the killed reader's lock went with it.
    r2.finish();
    assert!(!version_path(&s.0, "k", 1).exists());

    // Every reader of v2 killed: nobody releases it; the next publish
    // collects it.
    let r3 = Kid::spawn("holder", &args);
    let r4 = Kid::spawn("holder", &args);
    r3.expect("holding 2");
    r4.expect("holding 2");
    closure::publish_bytes(&d, "k", &pattern(3, 100)).unwrap();
    r3.kill9();
    r4.kill9();
    assert!(version_path(&s.0, "k", 2).exists());
    assert_eq!(readers_of(&d, "k"), BTreeMap::from([(2, 0), (3, 0)]));
    closure::publish_bytes(&d, "k", &pattern(4, 100)).unwrap();
    assert!(!version_path(&s.0, "k", 2).exists());
    assert!(!version_path(&s.0, "k", 3).exists());
    assert_eq!(readers_of(&d, "k"), BTreeMap::from([(4, 0)]));

    // A release collects other versions too: r5 holds v4, r6 holds v5;
    // after v6 is published r6 is killed, and r5's release removes both
    // v4 (its own) and v5 (whose only reader is dead).
    let r5 = Kid::spawn("holder", &args);
    r5.expect("holding 4");
    closure::publish_bytes(&d, "k", &pattern(5, 100)).unwrap();
    let r6 = Kid::spawn("holder", &args);
    r6.expect("holding 5");
    closure::publish_bytes(&d, "k", &pattern(6, 100)).unwrap();
    assert!(version_path(&s.0, "k", 4).exists());
    assert!(version_path(&s.0, "k", 5).exists());
    r6.kill9();
    r5.finish();
    assert!(!version_path(&s.0, "k", 4).exists(), "r5 let go of v4");
    assert!(
        !version_path(&s.0, "k", 5).exists(),
        "r5's release collected v5"
    );
    assert_eq!(closure::collect_unused(&d, "k").unwrap(), 0);
}

#[test]
fn racing_publishers_and_readers() {
    let s = Scratch::create("race");
    let d = Domain::open(Some(&s.0)).unwrap();
    let dom = s.0.display().to_string();
    const PUBLISHERS: usize = 4;
    const EACH: u64 = 25;
    let mut openers: Vec<Kid> = (0..3)
        .map(|_| Kid::spawn("opener", &[dom.clone(), "race".into()]))
        .collect();
    let pubs: Vec<Kid> = (0..PUBLISHERS)
        .map(|_| Kid::spawn("publisher", &[dom.clone(), "race".into(), EACH.to_string()]))
        .collect();
    // version -> (publisher pid, seq)
    let mut published: HashMap<u64, (u64, u64)> = HashMap::new();
    for p in pubs {
        let mut last = 0;
        for _ in 0..EACH {
            let l = p.expect("published");
            let f: Vec<u64> = l.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
            assert!(f[0] > last, "a publisher's versions increase");
            last = f[0];
            assert!(
                published.insert(f[0], (f[1], f[2])).is_none(),
                "v{} twice",
                f[0]
            );
        }
        p.finish();
    }
    let total = PUBLISHERS as u64 * EACH;
    let mut versions: Vec<u64> = published.keys().copied().collect();
    versions.sort();
    assert_eq!(versions, (1..=total).collect::<Vec<_>>());
    let c = Closure::open(&d, "race").unwrap();
    assert_eq!(c.version(), total);
    let mut seen = 0;
    for o in &mut openers {
        drop(o.stdin.take());
    }
    for o in openers.drain(..) {
        loop {
            match o.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.starts_with("saw ") => {
                    let f: Vec<u64> = l.split(' ').skip(1).map(|x| x.parse().unwrap()).collect();
                    assert_eq!(published.get(&f[0]), Some(&(f[1], f[2])), "{l}");
                    seen += 1;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        o.finish();
    }
    assert!(seen > 0, "the openers opened something");
    drop(c);
    // Only the current version is left on disk.
    let left = closure::list(&d).unwrap();
    assert_eq!(left[0].versions.len(), 1, "{left:?}");
    assert_eq!(left[0].versions[0].version, total);
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn bad_version_files_are_refused() {
    let s = Scratch::create("bad");
    let d = Domain::open(Some(&s.0)).unwrap();
    let mut m = BTreeMap::new();
    m.insert(
        "k".to_string(),
        Value::List(vec![Value::from("x"), Value::Int(3)]),
    );
    closure::publish(&d, "c", &Value::Map(m)).unwrap();
    let v1 = version_path(&s.0, "c", 1);
    let good = std::fs::read(&v1).unwrap();
    let kind = |r: mtipc::Result<Closure>| r.map(|c| c.version()).unwrap_err().kind();
    let put = |bytes: &[u8]| {
        set_mode(&v1, 0o600);
        std::fs::write(&v1, bytes).unwrap();
        set_mode(&v1, 0o400);
    };

    // A node of an unknown kind.
    let mut bad = good.clone();
    bad[64] = 9;
    put(&bad);
    assert_eq!(kind(Closure::open(&d, "c")), ErrorKind::Corrupt);
    // Truncated, and empty.
    put(&good[..good.len() - 8]);
    assert_eq!(kind(Closure::open(&d, "c")), ErrorKind::Corrupt);
    put(&[]);
    assert_eq!(kind(Closure::open(&d, "c")), ErrorKind::Corrupt);
    // Random corruption: refused or valid, never a crash.
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] ^= (x >> 32) as u8 | 1;
        }
        put(&b);
        match Closure::open(&d, "c") {
            Ok(c) => drop(c.root().to_value()),
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Version),
                "{e}"
            ),
        }
    }
    put(&good);
    Closure::open(&d, "c").unwrap();
    // Writable: refused.
    set_mode(&v1, 0o600);
    assert_eq!(kind(Closure::open(&d, "c")), ErrorKind::Denied);
    set_mode(&v1, 0o440);
    assert_eq!(kind(Closure::open(&d, "c")), ErrorKind::Denied);
    // A symbolic link in place of the version file (to a valid copy).
    let elsewhere = s.0.join("copy");
    std::fs::write(&elsewhere, &good).unwrap();
    set_mode(&elsewhere, 0o400);
    std::fs::remove_file(&v1).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &v1).unwrap();
    assert_eq!(kind(Closure::open(&d, "c")), ErrorKind::Denied);
    // The version in the file must be the one its name says.
    std::fs::remove_file(&v1).unwrap();
    std::fs::copy(&elsewhere, &v1).unwrap();
    let v2 = version_path(&s.0, "c", 2);
    closure::publish_bytes(&d, "c", b"two").unwrap();
    set_mode(&v2, 0o600);
    std::fs::copy(&elsewhere, &v2).unwrap();
    set_mode(&v2, 0o400);
    let e = Closure::open(&d, "c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.message().contains("holds version 1, expected 2"), "{e}");
    // A corrupt head.
    let head = s.0.join("closures/c/head");
    let mut h = std::fs::read(&head).unwrap();
    h[0] ^= 0xff;
    std::fs::write(&head, &h).unwrap();
    assert_eq!(kind(Closure::open(&d, "c")), ErrorKind::Corrupt);
    assert_eq!(
        closure::publish_bytes(&d, "c", b"x").unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // A closure directory that is a symbolic link.
    std::fs::create_dir(s.0.join("real")).unwrap();
    set_mode(&s.0.join("real"), 0o700);
    std::os::unix::fs::symlink(s.0.join("real"), s.0.join("closures/linked")).unwrap();
    assert_eq!(kind(Closure::open(&d, "linked")), ErrorKind::Denied);
    assert_eq!(
        closure::publish_bytes(&d, "linked", b"x")
            .unwrap_err()
            .kind(),
        ErrorKind::Denied
    );
    // Never published; bad names.
    assert_eq!(kind(Closure::open(&d, "nothing")), ErrorKind::NotFound);
    assert_eq!(kind(Closure::open(&d, "../c")), ErrorKind::Invalid);
    assert_eq!(
        closure::publish_bytes(&d, ".hidden", b"x")
            .unwrap_err()
            .kind(),
        ErrorKind::Invalid
    );
}

#[test]
fn oversized_and_too_deep_are_invalid_with_the_limit() {
    let s = Scratch::create("big");
    let d = Domain::open(Some(&s.0)).unwrap();
    // Zeroed by the allocator lazily: no gigabyte is touched.
    let huge = vec![0u8; MAX_CLOSURE_SIZE as usize];
    let e = closure::publish_bytes(&d, "big", &huge).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.message().contains(&MAX_CLOSURE_SIZE.to_string()), "{e}");
    drop(huge);
    let mut v = Value::Int(0);
    for _ in 0..=MAX_DEPTH {
        v = Value::List(vec![v]);
    }
    let e = closure::publish(&d, "deep", &v).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.message().contains(&format!("at most {MAX_DEPTH}")), "{e}");
    // Nothing was created for either.
    assert!(closure::list(&d).unwrap().is_empty());
}

/// A deterministic stand-in for the `closure` fuzz target (run by `make
/// test`): many random mutations of valid files; the validator never
/// panics, and every file it accepts can be walked whole by the accessors.
#[test]
fn validator_survives_mutations() {
    use closure::ValueRef;
    use mtipc::internals::closure::format;
    let mut m = BTreeMap::new();
    m.insert(
        "a".to_string(),
        Value::List(vec![Value::Int(-1), Value::Float(1.5)]),
    );
    m.insert("bb".to_string(), Value::Bytes(vec![7; 13]));
    m.insert("c".to_string(), Value::Map(BTreeMap::new()));
    m.insert("dé".to_string(), Value::from("text"));
    let samples = [
        Value::Map(m),
        Value::List(vec![Value::List(vec![]), Value::from(""), Value::Int(0)]),
        Value::Bytes(b"plain".to_vec()),
    ];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    fn walk(v: ValueRef<'_>, budget: &mut u32) {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let _ = (v.as_bytes(), v.as_str(), v.as_int(), v.as_float(), v.len());
        for it in v.list_iter() {
            walk(it, budget);
        }
        for (k, it) in v.map_iter() {
            assert!(v.map_get(k.as_bytes()).is_some());
            walk(it, budget);
        }
    }
    let mut accepted = 0;
    for s in &samples {
        let good = format::encode(s, 3).unwrap();
        let c = format::validate(&good, Some(3)).unwrap();
        assert_eq!(&ValueRef::root(&good, &c).to_value(), s);
        for _ in 0..3000 {
            let mut b = good.clone();
            for _ in 0..1 + rnd(4) {
                let i = rnd(b.len());
                match rnd(3) {
                    0 => b[i] ^= 1 << rnd(8),
                    1 => b[i] = rnd(256) as u8,
                    _ => b.truncate(i),
                }
                if b.is_empty() {
                    break;
                }
            }
            if let Ok(c) = format::validate(&b, None) {
                accepted += 1;
                walk(ValueRef::root(&b, &c), &mut 10_000);
            }
        }
    }
    // Some mutations keep a file valid (a changed number or byte of data).
    assert!(accepted > 0);
}
