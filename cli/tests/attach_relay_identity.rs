//! Tenants and attachers check who listens at `relay.sock` before they say
//! anything (issue 10): a listener planted there in place of mtipcd's (the
//! real socket moved aside, as someone could while the domain was briefly
//! writable) gets connections but not one byte, the attach is refused with
//! `Denied`, and attaches work again once the real socket is back.
//! Real processes: mtipcd as built and a tenant process.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "attach_e2e/common.rs"]
mod e2e;

use common::serial;
use e2e::*;
use mtipc::ErrorKind;
use std::io::Read;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
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

/// What the planted listener saw: connections accepted, bytes received.
#[derive(Default)]
struct Seen {
    accepted: usize,
    bytes: usize,
}

#[test]
fn a_planted_relay_listener_learns_nothing() {
    let _g = serial();
    let s = Scratch::new("planted");
    let d = Mtipcd::start(&s);
    let t = Tenants::start(&s, &ids("p", 1));
    let domain = s.domain();
    wait_listed(&domain, &t.ids);
    attach_echo(&domain, &t.ids[0]);

    // Move mtipcd's socket aside (it keeps listening on it) and listen at
    // relay.sock ourselves.
    let sock = s.dom().join("relay.sock");
    let aside = s.dom().join("relay.sock.real");
    std::fs::rename(&sock, &aside).unwrap();
    let planted = UnixListener::bind(&sock).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for c in planted.incoming() {
            let Ok(mut c) = c else { return };
            seen2.lock().unwrap().accepted += 1;
            let seen3 = Arc::clone(&seen2);
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 256];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen3.lock().unwrap().bytes += n;
                }
            });
        }
    });

    for _ in 0..3 {
        let e = attach_to(&domain, &t.ids[0]).expect_err("attach through a planted relay");
        assert_eq!(e.kind(), ErrorKind::Denied, "{e}");
        assert!(
            e.message().contains("is not the domain's mtipcd"),
            "{}",
            e.message()
        );
        assert!(
            e.message()
                .contains(&format!("pid {}, uid", std::process::id())),
            "the message names the planted listener: {}",
            e.message()
        );
    }
    // The tenants that woke for those rounds connected too, and were just
    // as careful; give their threads a moment.
    std::thread::sleep(Duration::from_millis(300));
    let seen = seen.lock().unwrap();
    assert!(seen.accepted >= 3, "{} connections", seen.accepted);
    assert_eq!(
        seen.bytes, 0,
        "the planted listener received bytes (a hello names the pairing)"
    );

    // The real socket back: attaches work again, the daemon never left.
    std::fs::remove_file(&sock).unwrap();
    std::fs::rename(&aside, &sock).unwrap();
    attach_echo(&domain, &t.ids[0]);
    assert_eq!(domain.semaphore().value(), 0);
    drop(d);
}
