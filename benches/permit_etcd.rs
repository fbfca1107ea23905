//! Uncontended permit request + release on a volume kept in etcd, with a
//! baseline measured in the same run against the same server: etcd's own
//! lock API (`concurrency` Lock, etcd-client's `lock` + `unlock`).
//!
//! The bench starts a real etcd (tests/common/etcd.rs: loopback, its own
//! data directory, `--heartbeat-interval 50 --election-timeout 500`), makes
//! a domain with a volume on it, and alternates sample by sample:
//!
//! - permit: `Volume::request("f", Write, 5 s)` then dropping the permit
//!   (release), from this thread (the library runs the calls on this
//!   thread's own current-thread runtime and connection);
//! - lock: `lock("mtipc-bench", lease)` then `unlock(key)` on a client of
//!   the bench's own current-thread tokio runtime, with one lease granted
//!   before the run (how a lock user holds a session), the most favourable
//!   case for the lock;
//! - for context only (not the baseline): the lock with its own lease,
//!   `lease_grant` + `lock` + `unlock` + `lease_revoke` each time, which
//!   is what a permit's own lease costs the lock API.
//!
//! Every etcd write is a raft entry fsync'ed to etcd's WAL; on this
//! machine's disk that dominates both methods.
//!
//! Run: `cargo bench --bench permit_etcd` (`make bench`). Environment:
//! `PERMIT_ETCD_SAMPLES` (default 400 per method), `PERMIT_ETCD_WARMUP`
//! (default 30 per method, discarded).

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/etcd.rs"]
mod etcd_server;

use common::{env_usize, loadavg, machine, met, now_ns, pct, sorted};
use etcd_client::{Client, LockOptions};
use mtipc::permit::{volume, Mode, Volume, VolumeOpts};
use mtipc::Domain;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Permit = 0,
    Lock = 1,
    LockOwnLease = 2,
}

const METHODS: [Method; 3] = [Method::Permit, Method::Lock, Method::LockOwnLease];

fn main() {
    // `cargo bench` passes `--bench`; run any other way (`cargo test
    // --all-targets` runs bench targets too) this is only a quick smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let samples = env_usize("PERMIT_ETCD_SAMPLES", if full { 400 } else { 5 }).max(2);
    let warmup = env_usize("PERMIT_ETCD_WARMUP", if full { 30 } else { 1 });
    if !full {
        println!("(not run by `cargo bench`: smoke run with few samples)");
    }
    let etcd = etcd_server::Etcd::start();
    let base = std::env::temp_dir().join(format!("mtipc-bench-permit-etcd-{}", std::process::id()));
    std::fs::create_dir_all(base.join("vol")).unwrap();
    std::fs::set_permissions(base.join("vol"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let d = Domain::open(Some(&base.join("dom"))).expect("open the bench domain");
    let opts = VolumeOpts {
        max_transfers: 0,
        lease: None,
        etcd: Some(etcd.url()),
    };
    volume::create(&d, "bench", &base.join("vol"), &opts).expect("create the volume");
    let v = Volume::open(&d, "bench").expect("open the volume");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = rt
        .block_on(Client::connect([etcd.url()], None))
        .expect("connect");
    let session = rt
        .block_on(client.lease_grant(30, None))
        .expect("lease grant")
        .id();

    let mut by: [Vec<f64>; 3] = Default::default();
    let total = (samples + warmup) * METHODS.len();
    for i in 0..total {
        let m = METHODS[(i + i / METHODS.len()) % METHODS.len()];
        let t0 = now_ns();
        match m {
            Method::Permit => {
                let p = v
                    .request("f", Mode::Write, Duration::from_secs(5))
                    .expect("request");
                drop(p);
            }
            Method::Lock => rt.block_on(async {
                let r = client
                    .lock("mtipc-bench", Some(LockOptions::new().with_lease(session)))
                    .await
                    .expect("lock");
                client.unlock(r.key()).await.expect("unlock");
            }),
            Method::LockOwnLease => rt.block_on(async {
                let l = client.lease_grant(30, None).await.expect("grant").id();
                let r = client
                    .lock("mtipc-bench-own", Some(LockOptions::new().with_lease(l)))
                    .await
                    .expect("lock");
                client.unlock(r.key()).await.expect("unlock");
                client.lease_revoke(l).await.expect("revoke");
            }),
        }
        let us = (now_ns() - t0) as f64 / 1000.0;
        if i >= warmup * METHODS.len() {
            by[m as usize].push(us);
        }
    }
    let s: Vec<Vec<f64>> = by.iter().map(|v| sorted(v)).collect();
    println!("Uncontended request + release on an etcd volume, against etcd's lock + unlock");
    println!(
        "on the same server (etcd on 127.0.0.1, data in {}); {} samples per method after {} \
         warm-up, interleaved.",
        etcd.dir().display(),
        s[0].len(),
        warmup
    );
    println!("{}; load average {}.", machine(), loadavg());
    println!();
    println!("| method | p50 µs | p90 µs | p99 µs | min µs |");
    println!("|---|---:|---:|---:|---:|");
    for (m, name) in [
        (Method::Permit, "permit: request + release"),
        (
            Method::Lock,
            "baseline: lock + unlock (one lease for the run)",
        ),
        (
            Method::LockOwnLease,
            "context: lease grant + lock + unlock + revoke",
        ),
    ] {
        let v = &s[m as usize];
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            pct(v, 50.0),
            pct(v, 90.0),
            pct(v, 99.0),
            pct(v, 0.0)
        );
    }
    let ratio = pct(&s[0], 50.0) / pct(&s[1], 50.0);
    println!();
    println!(
        "ratio permit / lock + unlock: p50 {ratio:.2} (target <= 1: {}); against the lock with its own lease: p50 {:.2}",
        met(ratio <= 1.0),
        pct(&s[0], 50.0) / pct(&s[2], 50.0)
    );
    drop(v);
    let _ = std::fs::remove_dir_all(&base);
}
