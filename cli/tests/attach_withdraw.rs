//! Withdrawing an advertisement while an attacher's handshake is still in
//! progress (its connection opens later): the handler is never called after
//! the withdrawal returned, and the attacher gets an error or a closed
//! connection, not a hang.

#![allow(clippy::disallowed_types)] // the test's own counter

use mtipc::attach::{self, AttachOptions};
use mtipc::Domain;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn no_handler_call_after_withdraw_returns() {
    let dir = std::env::temp_dir().join(format!("mtipc-withdraw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("dom");
    let domain = Domain::open(Some(&path)).unwrap();
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mtipcd"))
            .arg("--domain")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while !attach::list(&domain)
        .unwrap()
        .0
        .iter()
        .any(|t| t.id == "@mtipcd")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "mtipcd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let ad = attach::advertise(
        &domain,
        "late",
        &["msg"],
        Arc::new(move |_conn| {
            c2.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();

    // The connection opens 1.5 s from now: the round completes at once, the
    // handshake waits for the start time.
    let p2 = path.clone();
    let attacher = std::thread::spawn(move || {
        let d = Domain::open(Some(&p2)).unwrap();
        let opts = AttachOptions {
            start: Some(SystemTime::now() + Duration::from_millis(1500)),
            ..AttachOptions::default()
        };
        attach::attach(&d, "late", &opts)
    });
    std::thread::sleep(Duration::from_millis(500));
    ad.withdraw().unwrap();
    let after = calls.load(Ordering::SeqCst);
    let result = attacher.join().unwrap();
    // Give a (wrong) late handler call time to happen.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(after, 0);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "handler called after withdraw returned"
    );
    // The tenant closes the connection instead of handing it over: the
    // attacher sees an error at once or, if the handshake had completed,
    // Closed on its first receive.
    match result {
        Err(e) => println!("attach failed: {e}"),
        Ok(conn) => {
            let e = conn.recv(Some(Duration::from_secs(5))).unwrap_err();
            assert_eq!(e.kind(), mtipc::ErrorKind::Closed, "{e}");
            println!("attached, then: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
