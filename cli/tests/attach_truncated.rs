//! The domain's semaphore file truncated under a running mtipcd and a
//! running tenant (issue 10: it killed both with SIGBUS). Both live on,
//! their waiters stop with an error event, and an attach is refused with
//! `Corrupt` naming the file, until the domain is recreated.
//! Real processes: mtipcd as built and a tenant process.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "attach_e2e/common.rs"]
mod e2e;

use common::serial;
use e2e::*;
use mtipc::ErrorKind;
use std::time::Duration;

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

#[test]
fn a_truncated_semaphore_kills_nobody() {
    let _g = serial();
    let s = Scratch::new("truncated");
    let mut d = Mtipcd::start(&s);
    let mut t = Tenants::start(&s, &ids("z", 1));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    attach_echo(&domain, &t.ids[0]);

    std::fs::OpenOptions::new()
        .write(true)
        .open(s.dom().join("notify.sem"))
        .unwrap()
        .set_len(0)
        .unwrap();
    // Their waiters look at the count at least every 100 ms.
    std::thread::sleep(Duration::from_millis(600));
    assert!(d.alive(), "mtipcd died: {}", d.log_text());
    assert!(t.alive(), "the tenant process died");
    // This process's own mapping is broken too: Corrupt, not SIGBUS.
    let e = domain.semaphore().post(1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // A new open of the domain sees the short file.
    let e = mtipc::Domain::open(Some(&s.dom())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.message().contains("notify.sem"), "{e}");
    let log = d.log_text();
    assert!(
        log.contains("waiter stops: the domain's semaphore is gone"),
        "mtipcd's log: {log}"
    );
    assert!(d.alive() && t.alive());
}
