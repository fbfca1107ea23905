//! A region file truncated under a live mapping (issue 10): the access past
//! the new end raises SIGBUS, which mtipc catches for its own regions (the
//! region becomes `Corrupt`, the process lives on) and passes on for any
//! other mapping (the application's own handler runs, or the process dies
//! as it would have without mtipc). Each case runs in a child process (this
//! test binary re-executed), whose exit tells what happened.

mod common;

use common::{read_all, role_command, wait_exit, Scratch};
use mtipc::{closure, Domain};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Cuts the file at `path` to 0 bytes (as another process could).
fn truncate(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Opens the domain at `dir` (which installs mtipc's handler), then reads
/// past the end of a file of its own that it truncated under its own
/// mapping, which mtipc did not make: a SIGBUS that is not mtipc's.
fn fault_in_own_mapping(dir: &Path) {
    drop(Domain::open(Some(dir)).unwrap());
    let f = dir.join("own");
    std::fs::write(&f, vec![1u8; 8192]).unwrap();
    let file = std::fs::File::open(&f).unwrap();
    // SAFETY: a private read-only view; the file is truncated below to make
    // the next read fault on purpose.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    truncate(&f);
    let x = std::hint::black_box(&map[4096]);
    println!("not killed: {x}");
}

/// The child roles. Each prints what it saw and exits 0 unless noted.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_SIGBUS_ROLE") else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("MTIPC_SIGBUS_ARGS").unwrap());
    match role.as_str() {
        // The domain's semaphore file cut under the mapping.
        "semaphore" => {
            let d = Domain::open(Some(&dir)).unwrap();
            let sem = d.semaphore();
            sem.post(1).unwrap();
            truncate(&dir.join("notify.sem"));
            let e = sem.post(1).unwrap_err();
            println!("post: {:?} {}", e.kind(), e.message());
            let e = sem.wait(Some(Duration::from_millis(50))).unwrap_err();
            println!("wait: {:?}", e.kind());
            let _ = sem.value(); // reads zeros, does not die
            println!("check: {:?}", sem.check().unwrap_err().kind());
        }
        // A closure version cut under its reader.
        "closure" => {
            let d = Domain::open(Some(&dir)).unwrap();
            closure::publish_bytes(&d, "cfg", &[7u8; 20_000]).unwrap();
            let c = closure::Closure::open(&d, "cfg").unwrap();
            assert_eq!(c.bytes().unwrap()[19_999], 7);
            truncate(&dir.join("closures/cfg/v1"));
            let b = c.bytes().map(|b| b.to_vec()).unwrap_or_default();
            println!("bytes after: {} zero", b.iter().all(|&x| x == 0));
            println!("check: {:?}", c.check().unwrap_err().kind());
        }
        // A session set: the request area, then the table, cut under a
        // worker waiting for requests and a submitter.
        "sessions" => {
            use mtipc::session::{Sessions, SessionsConfig};
            let d = Domain::open(Some(&dir)).unwrap();
            let s = Sessions::create(&d, "calls", SessionsConfig::default()).unwrap();
            let id = s.table().create_session("acme", 1, b"").unwrap();
            let s2 = s.clone();
            let worker = std::thread::spawn(move || {
                let mut w = s2.register_worker(0).unwrap();
                w.next(Some(Duration::from_secs(20)))
                    .map(|r| r.is_some())
                    .map_err(|e| e.kind())
            });
            std::thread::sleep(Duration::from_millis(300));
            truncate(s.requests_path());
            let e = s.submit(id, 0, b"hello").unwrap_err();
            println!("submit: {:?} {}", e.kind(), e.message());
            println!("worker: {:?}", worker.join().unwrap());
            truncate(s.table().path());
            println!("lookup: {:?}", s.table().lookup(id).unwrap_err().kind());
            let e = s.table().create_session("acme", 1, b"").unwrap_err();
            println!("create: {:?}", e.kind());
        }
        // A mapping that is not mtipc's: the default action still kills.
        "foreign" => {
            println!("reading");
            fault_in_own_mapping(&dir);
        }
        // The application's own SIGBUS handler, installed before mtipc's,
        // still gets the faults that are not mtipc's.
        "app-handler" => {
            extern "C" fn handler(_: libc::c_int) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(42) }
            }
            // SAFETY: installs a plain handler for SIGBUS.
            unsafe { libc::signal(libc::SIGBUS, handler as *const () as libc::sighandler_t) };
            fault_in_own_mapping(&dir);
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Runs `role` on a fresh domain; its exit status and stdout.
fn run(role: &str) -> (std::process::ExitStatus, String) {
    let s = Scratch::new(&format!("sigbus-{role}"));
    let dir = s.0.join("dom");
    std::fs::create_dir_all(&s.0).unwrap();
    let mut c = role_command("MTIPC_SIGBUS", role, &[]);
    c.env("MTIPC_SIGBUS_ARGS", &dir).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let st = wait_exit(&mut child, Duration::from_secs(30)).expect("child stuck");
    let out = read_all(child.stdout.take());
    (st, out)
}

#[test]
fn a_truncated_semaphore_is_corrupt_not_fatal() {
    let (st, out) = run("semaphore");
    assert!(st.success(), "{st}: {out}");
    assert!(out.contains("post: Corrupt "), "{out}");
    assert!(
        out.contains("truncated under this process's mapping"),
        "{out}"
    );
    assert!(out.contains("wait: Corrupt"), "{out}");
    assert!(out.contains("check: Corrupt"), "{out}");
}

#[test]
fn a_truncated_closure_is_corrupt_not_fatal() {
    let (st, out) = run("closure");
    assert!(st.success(), "{st}: {out}");
    assert!(out.contains("bytes after: true zero"), "{out}");
    assert!(out.contains("check: Corrupt"), "{out}");
}

#[test]
fn truncated_session_files_are_corrupt_not_fatal() {
    let (st, out) = run("sessions");
    assert!(st.success(), "{st}: {out}");
    assert!(out.contains("submit: Corrupt "), "{out}");
    assert!(out.contains("worker: Err(Corrupt)"), "{out}");
    assert!(out.contains("lookup: Corrupt"), "{out}");
    assert!(out.contains("create: Corrupt"), "{out}");
}

#[test]
fn other_mappings_still_die_of_sigbus() {
    let (st, out) = run("foreign");
    assert_eq!(st.signal(), Some(libc::SIGBUS), "{st}: {out}");
    assert!(
        out.contains("reading") && !out.contains("not killed"),
        "{out}"
    );
}

#[test]
fn the_applications_handler_still_runs() {
    let (st, out) = run("app-handler");
    assert_eq!(st.code(), Some(42), "{st}: {out}");
}
