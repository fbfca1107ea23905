//! `ATTACH_PHASES=1`: where the time of one attach goes.
//!
//! `mtipc::attach::attach` has no hooks, so this is a step-by-step replica
//! of it written with the same public pieces (`files::AdvertCache`,
//! the domain's `Semaphore`, `files::write_response`, `relay::connect`,
//! `Conn::connect`) in the order of `attacher.rs` and `round.rs`, with a
//! timestamp after each step. The bench prints its total next to the real
//! attach's so the replica can be checked against it.

use mtipc::attach::Conn;
use mtipc::internals::attach::files::{
    self, AdvertCache, ProcId, Response, ResponseScan, SyncFile, STATE_BUSY, STATE_IDLE,
};
use mtipc::internals::attach::relay::{self, End};
use mtipc::internals::attach::round;
use mtipc::internals::attach::{ATTACH_LOCK, HANDSHAKE_TIMEOUT, RELAY_SOCKET};
use mtipc::internals::sync::Futex;
use mtipc::Domain;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The steps, in order; each sample records the time at its end.
pub const STEPS: [&str; 12] = [
    "attach lock (open + flock)",
    "list advertisements (kept)",
    "sync files (kept, checked)",
    "reset sem + wait all IDLE",
    "write response",
    "flock every sync file",
    "post N",
    "relay ok (tenant + mtipcd)",
    "wait all BUSY",
    "reset, unlock, rm response",
    "TLS handshake (PSK + X25519)",
    "echo 64 bytes",
];

fn wait_state(state: &Futex, want: u32, p: &ProcId) {
    let until = Instant::now() + Duration::from_secs(5);
    assert!(
        round::wait_state(state, want, &|| p.is_alive(), Some(until)),
        "state never became {want}"
    );
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b
}

thread_local! {
    /// What the replica keeps between rounds, per domain, as `attach` does.
    static CACHES: RefCell<HashMap<PathBuf, AdvertCache>> = RefCell::new(HashMap::new());
}

/// One replicated attach to `target` plus one echo: the step end times, in
/// ns from the start.
pub fn one(domain: &Domain, target: &str, msg: &[u8]) -> Vec<u64> {
    CACHES.with(|c| {
        let mut c = c.borrow_mut();
        let cache = c.entry(domain.path().to_path_buf()).or_default();
        one_with(domain, target, msg, cache)
    })
}

fn one_with(domain: &Domain, target: &str, msg: &[u8], cache: &mut AdvertCache) -> Vec<u64> {
    let mut marks = Vec::with_capacity(STEPS.len());
    let t0 = Instant::now();
    let mut mark = || marks.push(t0.elapsed().as_nanos() as u64);

    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(domain.path().join(ATTACH_LOCK))
        .expect("attach.lock");
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    mark();
    let (listed, _) = cache.list(domain.path()).expect("list");
    let t = listed
        .iter()
        .find(|l| l.advert.id == target)
        .expect("target");
    let fingerprint = t.advert.fingerprint.expect("fingerprint");
    // As `attach` after a clean round (the round marker not set): only the
    // target's `response` entry is cleared before writing.
    cache.remove_response(target).expect("remove leftover");
    mark();
    for l in &listed {
        cache.sync(&l.advert.id).expect("sync");
    }
    let cache: &AdvertCache = cache;
    let syncs: Vec<(&SyncFile, ProcId)> = listed
        .iter()
        .map(|l| (cache.kept_sync(&l.advert.id).unwrap(), l.advert.proc_id()))
        .collect();
    mark();
    let sem = domain.semaphore();
    sem.reset();
    for (s, p) in &syncs {
        wait_state(s.state(), STATE_IDLE, p);
    }
    mark();
    let now = files::now_ms();
    let response = Response {
        tenant: target.to_string(),
        relay: RELAY_SOCKET.to_string(),
        pairing: random::<16>(),
        protocol: t.advert.protocols[0].clone(),
        key: random::<32>(),
        start_ms: now,
        duration_ms: 0,
        attacher_pid: std::process::id(),
        created_ms: now,
    };
    files::write_response(&t.dir, &response).expect("write response");
    mark();
    for (s, _) in &syncs {
        s.lock_exclusive().expect("lock");
    }
    mark();
    sem.post(syncs.len() as u32).expect("post");
    mark();
    let daemon = relay::Listener::of_daemon(domain.path()).expect("mtipcd's advertisement");
    let stream = relay::connect(
        &domain.path().join(RELAY_SOCKET),
        End::Attacher,
        &response.pairing,
        Duration::from_secs(5),
        &daemon,
    )
    .expect("relay");
    mark();
    for (s, p) in &syncs {
        wait_state(s.state(), STATE_BUSY, p);
    }
    mark();
    sem.reset();
    for (s, _) in &syncs {
        s.unlock().expect("unlock");
    }
    files::remove_response(&t.dir).expect("remove response");
    drop(lock);
    mark();
    let conn =
        Conn::connect(stream, &fingerprint, &response.key, HANDSHAKE_TIMEOUT).expect("handshake");
    mark();
    conn.send(msg).expect("send");
    let m = conn.recv(Some(Duration::from_secs(10))).expect("echo");
    assert_eq!(m, msg);
    mark();
    marks
}

/// The per-advertisement work of a round, each part timed alone on an idle
/// domain (median of 5): what the attacher, each waiter and mtipcd do once
/// per advertisement.
pub fn isolated(domain: &Domain) -> Vec<(String, u64)> {
    let (listed, _) = files::list(domain.path()).expect("list");
    let n = listed.len();
    let time = |f: &mut dyn FnMut()| {
        let mut v: Vec<u64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_nanos() as u64
            })
            .collect();
        v.sort_unstable();
        v[2]
    };
    let pids: Vec<ProcId> = listed.iter().map(|l| l.advert.proc_id()).collect();
    let mut kept = AdvertCache::new();
    kept.list(domain.path()).unwrap();
    for l in &listed {
        kept.sync(&l.advert.id).unwrap();
    }
    let mut scan = ResponseScan::new();
    scan.scan(domain.path()).unwrap();
    let mut distinct = pids.clone();
    distinct.sort_by_key(|p| p.pid);
    distinct.dedup();
    vec![
        (
            format!("files::list ({n} advertisements)"),
            time(&mut || {
                files::list(domain.path()).unwrap();
            }),
        ),
        (
            format!("  of which liveness: /proc/<pid>/stat x {n}"),
            time(&mut || {
                for p in &pids {
                    assert!(p.is_alive());
                }
            }),
        ),
        (
            format!("  liveness once per distinct pid ({})", distinct.len()),
            time(&mut || {
                for p in &distinct {
                    assert!(p.is_alive());
                }
            }),
        ),
        (
            format!("SyncFile::open x {n} (open + mmap + validate)"),
            time(&mut || {
                for l in &listed {
                    SyncFile::open(&l.dir).unwrap();
                }
            }),
        ),
        (
            format!("read_response x {n} (none there)"),
            time(&mut || {
                for l in &listed {
                    assert!(files::read_response(&l.dir).unwrap().is_none());
                }
            }),
        ),
        (
            format!("AdvertCache::list ({n}, all kept from a first call)"),
            time(&mut || {
                kept.list(domain.path()).unwrap();
            }),
        ),
        (
            format!("AdvertCache::sync x {n} (kept: checked only)"),
            time(&mut || {
                for l in &listed {
                    kept.sync(&l.advert.id).unwrap();
                }
            }),
        ),
        (
            format!("ResponseScan::scan ({n} kept directories: mtipcd's scan)"),
            time(&mut || {
                assert_eq!(scan.scan(domain.path()).unwrap().len(), n - 1);
            }),
        ),
        (
            format!("ResponseScan::hinted ({n} kept: mtipcd's look with the round hint)"),
            time(&mut || {
                let hint = files::round_hint(&listed[listed.len() - 1].advert.id);
                assert!(!scan.hinted(domain.path(), hint).is_empty());
            }),
        ),
    ]
}
