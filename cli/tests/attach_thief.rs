//! Other users of the notification semaphore (issue 10): a loop of
//! `mtipc sem wait` processes takes units meant for attach rounds, yet every
//! attach reaches its target (the attacher tops the count up while the
//! target or mtipcd has not taken a unit); and a count that no round
//! explains (2,000,000,000 posted by hand) does not make mtipcd's or a
//! tenant's waiter spin. Real processes: mtipcd and mtipc as built, a tenant
//! process.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "attach_e2e/common.rs"]
mod e2e;

use common::serial;
use e2e::*;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The entry point of the tenant processes (role `tenant`); without
/// `MTIPC_E2E_ROLE` it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_E2E_ROLE") else {
        return;
    };
    let args_var = std::env::var("MTIPC_E2E_ARGS").unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    match role.as_str() {
        "tenant" => child_tenant(&args),
        other => panic!("unknown child role {other:?}"),
    }
    std::process::exit(0);
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the line; `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn attaches_reach_their_target_while_others_take_posts() {
    let _g = serial();
    let s = Scratch::new("thief");
    let d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("v", 1));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);

    // The thief: `mtipc sem wait` processes, one after the other.
    let stop = Arc::new(Mutex::new(false));
    let taken = Arc::new(Mutex::new(0u32));
    let (stop2, taken2, dom) = (Arc::clone(&stop), Arc::clone(&taken), s.dom());
    let thief = std::thread::spawn(move || {
        while !*stop2.lock().unwrap() {
            let st = Command::new(env!("CARGO_BIN_EXE_mtipc"))
                .arg("--domain")
                .arg(&dom)
                .args(["sem", "wait", "--timeout-ms", "300"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if st.success() {
                *taken2.lock().unwrap() += 1;
            }
        }
    });
    // Let it be waiting before the first round.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..10 {
        attach_echo(&domain, &t.ids[0]);
    }
    *stop.lock().unwrap() = true;
    thief.join().unwrap();
    let taken = *taken.lock().unwrap();
    assert!(
        taken >= 1,
        "the thief took no unit: the test did not test anything"
    );
    eprintln!("the thief took {taken} units of 10 rounds; all 10 attaches reached their target");
    assert_eq!(domain.semaphore().value(), 0);

    // A count no round explains: the waiters take a unit now and then, but
    // do not spin through it.
    let sem = domain.semaphore();
    sem.post(2_000_000_000).unwrap();
    let before = (cpu_ticks(d.pid()), cpu_ticks(t.pid()));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let secs = t0.elapsed().as_secs_f64();
    let used = (cpu_ticks(d.pid()) - before.0, cpu_ticks(t.pid()) - before.1);
    // A waiter that spins through the count burns its whole CPU share: on
    // this 2-core machine at least 50 ticks a second even when loaded. One
    // that backs off wakes a few times a second.
    let limit = (10.0 * secs) as u64;
    assert!(
        used.0 <= limit && used.1 <= limit,
        "CPU ticks in {secs:.1} s with a garbage count: mtipcd {}, tenant {} (limit {limit})",
        used.0,
        used.1
    );
    let left = sem.value();
    assert!(
        left > 1_999_000_000,
        "the waiters consumed {} units",
        2_000_000_000 - left
    );
    // The next attach works, and its round clears the count.
    attach_echo(&domain, &t.ids[0]);
    assert_eq!(sem.value(), 0);
    drop(d);
}
