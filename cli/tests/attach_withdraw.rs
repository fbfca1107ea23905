//! Withdrawing an advertisement while an attacher's handshake is still in
//! progress (its connection opens later): the handler is never called after
//! the withdrawal returned, and the attacher gets a closed connection (or,
//! should the tenant close during the handshake, that refusal), not a hang
//! or any other error.

use mtipc::attach::{self, AttachOptions};
use mtipc::internals::sync::{local::AtomicU32, Ordering};
use mtipc::Domain;
use std::process::{Child, Command};
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
    let log = dir.join("mtipcd.log");
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mtipcd"))
            .arg("--domain")
            .arg(&path)
            .stderr(std::fs::File::create(&log).unwrap())
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

    // The connection opens 2 s from now: the round completes at once, the
    // handshake waits for the start time.
    let start = SystemTime::now() + Duration::from_millis(2000);
    let p2 = path.clone();
    let attacher = std::thread::spawn(move || {
        let d = Domain::open(Some(&p2)).unwrap();
        let opts = AttachOptions {
            start: Some(start),
            ..AttachOptions::default()
        };
        attach::attach(&d, "late", &opts)
    });
    // The round is over: mtipcd took part in it (it registered the pairing)
    // and the attacher released the attach lock since.
    let t0 = Instant::now();
    while !(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("round: pairing registered")
        && attach_lock_free(&path))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the round did not end; mtipcd's log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    ad.withdraw().unwrap();
    assert!(
        SystemTime::now() < start,
        "the withdrawal came after the start time: the test did not withdraw mid-handshake"
    );
    let after = calls.load(Ordering::SeqCst);
    assert_eq!(after, 0, "handler called before the start time");
    let result = attacher.join().unwrap();
    // The tenant completes the handshake, then finds the advertisement
    // withdrawn and closes the connection instead of handing it over: the
    // attacher's first receive is Closed. (Closing during the handshake
    // would be refused as such: Closed, or Denied naming the key.) A
    // handler call would come before that close, so none can follow now.
    match result {
        Ok(conn) => {
            let e = conn.recv(Some(Duration::from_secs(5))).unwrap_err();
            assert_eq!(e.kind(), mtipc::ErrorKind::Closed, "{e}");
        }
        Err(e) => match e.kind() {
            mtipc::ErrorKind::Closed => {}
            mtipc::ErrorKind::Denied => assert!(
                e.message()
                    .contains("instead of accepting the one-time key"),
                "{e}"
            ),
            _ => panic!("attach failed otherwise than by the tenant's close: {e}"),
        },
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "handler called after withdraw returned"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether nobody holds the domain's attach lock (a non-blocking try).
fn attach_lock_free(domain: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(domain.join("attach.lock")) else {
        return true;
    };
    // SAFETY: flock on a descriptor we own (closed, and so unlocked, on drop).
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}
