//! Helpers of `tests/attach_e2e.rs`: scratch domains, the `mtipcd` and
//! `mtipc` programs, tenant processes (this test binary re-executed in a
//! child role), and checks that a round left nothing behind. Helpers
//! shared with the other test files are in `tests/common/mod.rs`. Also
//! used by `attach_faults.rs`, which needs only some of them.

#![allow(dead_code)]

use crate::common::{mono_ns, wait_exit};
use mtipc::attach::{self, AttachOptions, Conn};
use mtipc::{Domain, ErrorKind};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A scratch directory (mode 0755, so another uid may look into it) with
/// the domain at `dom/` inside; removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "mtipc-e2e-{tag}-{}-{}",
            std::process::id(),
            mono_ns()
        ));
        std::fs::create_dir(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(p)
    }

    /// The domain directory (created by the first `Domain::open`).
    pub fn dom(&self) -> PathBuf {
        self.0.join("dom")
    }

    pub fn domain(&self) -> Domain {
        Domain::open(Some(&self.dom())).expect("open the domain")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Polls `cond` every few ms until it holds; panics with `what` after
/// `within`.
pub fn wait_until(within: Duration, what: &dyn Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(3));
    }
}

// ---------------------------------------------------------------------------
// The daemon

/// A running `mtipcd` (stderr in `<scratch>/mtipcd-<n>.log`), killed and
/// reaped on drop if still running.
pub struct Mtipcd {
    pub child: Child,
    pub log: PathBuf,
    dom: PathBuf,
}

pub fn spawn_mtipcd(dom: &Path, log: &Path) -> Child {
    let err = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_mtipcd"))
        .arg("--domain")
        .arg(dom)
        .args(["--log", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn mtipcd")
}

impl Mtipcd {
    /// Starts mtipcd on the scratch domain and waits until it is listed and
    /// its relay socket exists.
    pub fn start(s: &Scratch) -> Mtipcd {
        let mut d = Mtipcd::start_unlisted(s);
        let domain = s.domain();
        let pid = d.child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listed(&domain)
            .iter()
            .any(|t| t.id == "@mtipcd" && t.pid == pid)
        {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("mtipcd exited {st}: {}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "mtipcd not listed in 10 s: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(3));
        }
        d
    }

    /// Starts mtipcd and waits until its relay socket and its
    /// advertisement file exist, without listing the advertisements (a
    /// listing removes stale ones, which a test may want to keep).
    pub fn start_unlisted(s: &Scratch) -> Mtipcd {
        let log = s.file(&format!("mtipcd-{}.log", mono_ns()));
        let dom = s.dom();
        let mut d = Mtipcd {
            child: spawn_mtipcd(&dom, &log),
            log,
            dom,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(d.dom.join("relay.sock").exists() && d.dom.join("adverts/@mtipcd/advert").exists())
        {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("mtipcd exited {st}: {}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "mtipcd not up in 10 s: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(3));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, and its exit status within 10 s.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("mtipcd did not stop on SIGTERM: {}", self.log_text()))
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let st = self.child.wait().unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    }
}

impl Drop for Mtipcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- mtipcd log ({})\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dom;
    }
}

// ---------------------------------------------------------------------------
// Tenant processes

/// A child role's body: its arguments.
pub type ChildRole = fn(&[&str]);

/// What each test file's `child_entry` test does: without
/// `MTIPC_E2E_ROLE` nothing; else it runs that role (`tenant`, or one of
/// `more`) with the arguments of `MTIPC_E2E_ARGS` and exits.
pub fn run_child_role(more: &[(&str, ChildRole)]) {
    let Ok(role) = std::env::var("MTIPC_E2E_ROLE") else {
        return;
    };
    let args_var = std::env::var("MTIPC_E2E_ARGS").unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    match more.iter().find(|(name, _)| *name == role) {
        Some((_, f)) => f(&args),
        None if role == "tenant" => child_tenant(&args),
        None => panic!("unknown child role {role:?}"),
    }
    std::process::exit(0);
}

/// This test binary again, running `child_entry` as `role`.
pub fn role_command(role: &str, args: &[String]) -> Command {
    crate::common::role_command("MTIPC_E2E", role, args)
}

/// A process advertising some tenants (role `tenant`): each connection
/// handled appends `<id>\n` to the marker file; the handler echoes every
/// message and writes `first <id> <unix ms>` (first message) and
/// `end <id> <MT_ERR_...>` (how the connection ended) to the events file.
/// Killed and reaped on drop.
pub struct Tenants {
    pub child: Child,
    pub ids: Vec<String>,
    _out: BufReader<ChildStdout>,
}

impl Tenants {
    pub fn start(s: &Scratch, ids: &[String]) -> Tenants {
        let args = vec![
            s.dom().display().to_string(),
            s.file("marker").display().to_string(),
            s.file("events").display().to_string(),
            ids.join(","),
        ];
        let mut child = role_command("tenant", &args).spawn().expect("spawn tenant");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        // The test harness prints its own lines first.
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                let st = child.wait().unwrap();
                panic!("tenant process exited ({st}) before it was ready: {seen:?}");
            }
            if line == "ready\n" {
                break;
            }
            seen.push_str(&line);
        }
        Tenants {
            child,
            ids: ids.to_vec(),
            _out: out,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 and reap.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tenants {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The child role `tenant`: args domain, marker, events, comma-separated
/// ids.
pub fn child_tenant(args: &[&str]) {
    let domain = Domain::open(Some(Path::new(args[0]))).expect("tenant opens the domain");
    let marker = PathBuf::from(args[1]);
    let events = PathBuf::from(args[2]);
    let mut ads = Vec::new();
    for id in args[3].split(',') {
        let (marker, events, me) = (marker.clone(), events.clone(), id.to_string());
        let handler: attach::Handler = std::sync::Arc::new(move |conn: Conn| {
            append(&marker, &format!("{me}\n"));
            let mut first = true;
            loop {
                match conn.recv(None) {
                    Ok(m) => {
                        if first {
                            append(&events, &format!("first {me} {}\n", now_ms()));
                            first = false;
                        }
                        if let Err(e) = conn.send(&m) {
                            append(&events, &format!("end {me} {}\n", e.kind().name()));
                            return;
                        }
                    }
                    Err(e) => {
                        append(&events, &format!("end {me} {}\n", e.kind().name()));
                        return;
                    }
                }
            }
        });
        ads.push(attach::advertise(&domain, id, &["echo"], handler).expect("advertise"));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Appends one line in one write (O_APPEND: lines never interleave).
pub fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Discovery and rounds

pub fn listed(domain: &Domain) -> Vec<attach::TenantInfo> {
    attach::list(domain).expect("list").0
}

/// Waits until every id of `want` is listed.
pub fn wait_listed(domain: &Domain, want: &[String]) {
    wait_until(
        Duration::from_secs(20),
        &|| format!("{} tenants listed", want.len()),
        || {
            let l = listed(domain);
            want.iter().all(|w| l.iter().any(|t| &t.id == w))
        },
    );
}

/// Attaches with the default options.
pub fn attach_to(domain: &Domain, id: &str) -> mtipc::Result<Conn> {
    attach::attach(domain, id, &AttachOptions::default())
}

/// One echo exchange.
pub fn echo(conn: &Conn, msg: &[u8]) {
    conn.send(msg).expect("send");
    let back = conn.recv(Some(Duration::from_secs(10))).expect("recv");
    assert!(
        back == msg,
        "echo of {} bytes came back as {} bytes",
        msg.len(),
        back.len()
    );
}

/// Attaches to `id`, echoes one message and closes.
pub fn attach_echo(domain: &Domain, id: &str) {
    let conn = attach_to(domain, id).unwrap_or_else(|e| panic!("attach to {id}: {e}"));
    echo(&conn, format!("hello {id}").as_bytes());
    conn.close();
}

/// The `state` word of an advertisement's synchronization file (offset 64,
/// docs/attach.md): 1 = its waiter is at the semaphore.
pub fn sync_state(dom: &Path, id: &str) -> u32 {
    let b = std::fs::read(dom.join("adverts").join(id).join("sync")).unwrap_or_default();
    b.get(64..68)
        .map_or(u32::MAX, |w| u32::from_ne_bytes(w.try_into().unwrap()))
}

/// SIGSTOPs the process of tenant `id` while its waiter is idle at the
/// semaphore (a waiter stopped in the middle of a round is another case,
/// tested by `tenant_stopped_while_busy_does_not_block_the_domain`).
pub fn stop_idle(dom: &Path, pid: u32, id: &str) {
    for _ in 0..100 {
        wait_until(
            Duration::from_secs(10),
            &|| format!("{id}'s waiter idle"),
            || sync_state(dom, id) == 1,
        );
        signal(pid, libc::SIGSTOP);
        wait_until(
            Duration::from_secs(10),
            &|| format!("process {pid} stopped"),
            || {
                let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            },
        );
        if sync_state(dom, id) == 1 {
            return;
        }
        signal(pid, libc::SIGCONT);
    }
    panic!("could not stop {id} while idle");
}

/// Is the `flock` on `path` free? (Takes it with LOCK_NB and drops it.)
/// A missing file is free.
pub fn lock_free(path: &Path, op: libc::c_int) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return true;
    };
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
    rc == 0
}

/// Every advertisement directory's path.
pub fn advert_dirs(dom: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dom.join("adverts")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// What a finished round must leave: semaphore 0, no response file, the
/// attach lock and every synchronization lock free.
pub fn round_clean_problems(domain: &Domain) -> Vec<String> {
    let dom = domain.path();
    let mut p = Vec::new();
    let v = domain.semaphore().value();
    if v != 0 {
        p.push(format!("semaphore value {v}"));
    }
    for d in advert_dirs(dom) {
        if std::fs::symlink_metadata(d.join("response")).is_ok() {
            p.push(format!("{}/response exists", d.display()));
        }
        // Shared: a waiter on its way back holds LOCK_SH for an instant;
        // only an attacher's LOCK_EX must be gone.
        if !lock_free(&d.join("sync"), libc::LOCK_SH) {
            p.push(format!("{}/sync is locked exclusively", d.display()));
        }
    }
    if !lock_free(&dom.join("attach.lock"), libc::LOCK_EX) {
        p.push("attach.lock is held".into());
    }
    p
}

pub fn assert_round_clean(domain: &Domain) {
    let p = round_clean_problems(domain);
    assert!(p.is_empty(), "round not cleaned up: {p:?}");
}

/// Waits until the marker file holds exactly `want` (in any order).
pub fn wait_marker(marker: &Path, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let got = || {
        let mut l = lines(marker);
        l.sort();
        l
    };
    wait_until(
        Duration::from_secs(10),
        &|| format!("marker {:?}, want {want:?}", got()),
        || got() == want,
    );
}

/// Waits for a line of the events file that starts with `prefix`.
pub fn wait_event(events: &Path, prefix: &str) -> String {
    let mut found = String::new();
    wait_until(
        Duration::from_secs(10),
        &|| format!("event {prefix:?} in {:?}", lines(events)),
        || match lines(events).into_iter().find(|l| l.starts_with(prefix)) {
            Some(l) => {
                found = l;
                true
            }
            None => false,
        },
    );
    found
}

/// `mtipc --domain D attach T --send MSG [extra]`, output piped.
pub fn cli_attach(dom: &Path, tenant: &str, msg: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mtipc"))
        .arg("--domain")
        .arg(dom)
        .args(["attach", tenant, "--send", msg])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mtipc attach")
}

/// Expects the error kind of `r`.
pub fn expect_err<T>(r: mtipc::Result<T>, kind: ErrorKind) -> mtipc::Error {
    match r {
        Ok(_) => panic!("expected {kind:?}, got success"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            e
        }
    }
}
