//! High availability on one node (issue 12, "Benchmark"): the HA
//! supervisor `mtipc-ha` against s6 and runit, all supervising the same
//! small C program (`ha_restart/app.c`, compiled here with gcc against the
//! release `libmtipc.so`). Three parts:
//!
//! 1. **Restart after `kill -9`** of the supervised process until its
//!    supervisor records it ready again, with a new pid. The program says
//!    it is ready the way each supervisor wants: `mt_ha_ready()` under
//!    mtipc-ha; a newline on its `notification-fd` under `s6-supervise`;
//!    nothing under `runsv` (runit has no readiness protocol: its figure
//!    is until runsv records the new pid, i.e. "started"). Each
//!    supervisor's own record is observed the same way: inotify on the
//!    directory of its status file (`<domain>/ha/status.json`; s6's
//!    `supervise/status`; runit's `supervise/status`, all replaced by a
//!    rename), the file read and decoded at each event (and every
//!    `FALLBACK_MS` without one, in case an event was missed: such finds
//!    are counted and printed). The clock starts just before `kill(2)`.
//!    The three supervisors run side by side and their processes are
//!    killed in turn (s6, runit, mtipc-ha, s6, ...), so that a change of
//!    the machine's load touches all three alike; `HA_BENCH_GAP_MS`
//!    (default 300 ms) between a ready and the next kill, and each
//!    process has run at least 1.1 s when it is killed: both s6-supervise
//!    and runsv wait a second before restarting a service that ran less
//!    than a second, which is not what is measured.
//!    mtipc-ha's configuration: `restart_backoff_ms` =
//!    `$HA_BENCH_BACKOFF_MS`, default 0 (restart at once, as s6 and runit
//!    do; the configuration's default is 100 ms, and before 8a1e783 the
//!    least it accepted was 1), `restart_window_ms = 1000` (so a backoff
//!    does not double from kill to kill: they are more than a window
//!    apart).
//! 2. **Start of 100 processes** in a dependency graph of depth 10 (10
//!    levels of 10; each process depends on every process of the level
//!    above; all `ready = "notify"`, the same program): from spawning
//!    `mtipc-ha` until its status file says all 100 `ready`. The floor
//!    is the critical path: 10 times one process's own start-to-ready
//!    (spawned by this bench against a hooks endpoint of its own,
//!    `mtipc::internals::ha::Endpoint`, until its `ready` arrives),
//!    and, as a second floor that counts the width, 10 times the time to
//!    start 10 such processes at once until all 10 are ready.
//! 3. **CPU while supervising 100 idle processes** at `monitor_ms` 200
//!    (all `ready = "notify"`, the same program): utime + stime from
//!    `/proc/PID/stat` of every `mtipc-ha` process of the run (the one
//!    started and its descendants whose executable is the `mtipc-ha`
//!    binary: the five roles once `up` exists) over `HA_BENCH_CPU_S`
//!    (default 10) seconds, after the node is ready and 2 s of settling.
//!
//! The supervisor's subcommand is `$MTIPC_HA_BENCH_CMD`: `run` (default,
//! the single-process supervisor) or `up` (the five roles). Run: `cargo
//! bench -p mtipc-cli --bench ha_restart` (`make bench`, which builds the
//! release programs and `libmtipc.so` first). Environment:
//! `HA_BENCH_KILLS` (default 50 per supervisor), `HA_BENCH_BACKOFF_MS`, `HA_BENCH_GAP_MS`,
//! `HA_BENCH_START_RUNS` (default 5), `HA_BENCH_CPU_S`, `HA_BENCH_PARTS`
//! (default `restart,start,cpu`), `HA_BENCH_DIR` (where the scratch
//! directory goes; default `$XDG_RUNTIME_DIR`, else the temporary
//! directory), `MTIPC_HA` (the `mtipc-ha` binary; default the release
//! build beside this bench), `MTIPC_LIB_DIR` (where `libmtipc.so` is;
//! default the same directory). s6 and runit come from Debian
//! (`scripts/ensure-deps.sh`); without them the bench fails.

use mtipc::ha::Role;
use mtipc::internals::ha::{Endpoint, Event};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../benches/common/mod.rs"]
mod common;
use common::{base_dir, env_usize, fs_type, loadavg, machine, met, now_ns, pct, sorted};

/// Re-read the status file this often when no inotify event came.
const FALLBACK_MS: i32 = 10;
/// The least time a process runs between two kills (s6-supervise and
/// runsv delay the restart of a service that ran less than a second).
const MIN_UPTIME: Duration = Duration::from_millis(1100);
/// Limit for any one wait of the bench.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------
// Paths and tools

/// The directory of this bench's binary's profile (`target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the bench lives in target/<profile>/deps")
        .to_path_buf()
}

fn mtipc_ha_path() -> PathBuf {
    let p = std::env::var_os("MTIPC_HA")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("mtipc-ha"));
    assert!(
        p.exists(),
        "{} is missing: build the programs first (cargo build --release --bins), or set MTIPC_HA",
        p.display()
    );
    p.canonicalize().expect("canonical path of mtipc-ha")
}

fn lib_dir() -> PathBuf {
    let d = std::env::var_os("MTIPC_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(profile_dir);
    assert!(
        d.join("libmtipc.so").exists(),
        "{}/libmtipc.so is missing: build it first (cargo build --release -p mtipc --lib), or set MTIPC_LIB_DIR",
        d.display()
    );
    d
}

/// The full path of `prog` in `PATH`, or a loud failure: the baselines
/// are part of the bench.
fn tool(prog: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(prog);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{prog} is not installed: the baselines need Debian's s6 and runit \
         (scripts/ensure-deps.sh installs them; apt-get install s6 runit)"
    );
}

/// Compiles the supervised program into `dir/app`, linked to a copy of
/// `lib/libmtipc.so` in `dir/lib` under its soname too (cargo writes only
/// `libmtipc.so`; build.rs gives it the soname `libmtipc.so.N`).
fn build_app(dir: &Path, lib: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ha_restart/app.c");
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let libdir = dir.join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let so = libdir.join("libmtipc.so");
    std::fs::copy(lib.join("libmtipc.so"), &so).expect("copy libmtipc.so");
    let elf = Command::new("readelf")
        .args(["-d"])
        .arg(&so)
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&elf.stdout);
    let soname = text
        .lines()
        .find_map(|l| {
            l.split_once("Library soname: [")
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(n, _)| n.to_string())
        })
        .expect("libmtipc.so has no soname");
    std::os::unix::fs::symlink("libmtipc.so", libdir.join(&soname)).unwrap();
    let out = dir.join("app");
    let st = Command::new("gcc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .arg(format!("-I{}", include.display()))
        .arg(format!("-L{}", libdir.display()))
        .arg("-lmtipc")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .status()
        .expect("gcc");
    assert!(st.success(), "gcc failed on {}", src.display());
    out
}

// ---------------------------------------------------------------------
// Observing a status file

/// An inotify watch on one directory.
struct Watch {
    fd: OwnedFd,
}

impl Watch {
    fn new(dir: &Path) -> Watch {
        // SAFETY: no memory is passed.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let mask = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_CREATE | libc::IN_MODIFY;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
        assert!(
            wd >= 0,
            "inotify_add_watch {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Watch { fd }
    }

    /// Waits at most `ms` for events and drains them: whether any came.
    fn wait(&self, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n <= 0 {
            return false;
        }
        self.drain();
        true
    }

    fn drain(&self) {
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
    }
}

/// What a supervisor records about its one supervised process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Obs {
    /// The pid, if it runs.
    pid: Option<u32>,
    /// Ready: mtipc `ready`, s6's ready flag; runit: running.
    ready: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mtipc,
    S6,
    Runit,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mtipc => "mtipc-ha",
            Kind::S6 => "s6-supervise",
            Kind::Runit => "runsv",
        }
    }
}

/// Decodes a status file (None: missing, half-written or not understood).
fn read_obs(kind: Kind, path: &Path) -> Option<Obs> {
    let bytes = std::fs::read(path).ok()?;
    match kind {
        Kind::Mtipc => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let p = v["processes"].as_array()?.first()?;
            Some(Obs {
                pid: p["pid"].as_u64().map(|x| x as u32),
                ready: p["state"].as_str() == Some("ready"),
            })
        }
        Kind::S6 => {
            // s6 2.11 (Debian 12): 35 bytes: stamp (tain, 12),
            // readystamp (12), pid (u64 big-endian), wstat (u16), flags
            // (paused 1, finishing 2, wantup 4, ready 8); later versions
            // add the pgid (u64) after the pid: 43 bytes. Checked against
            // s6-svstat at setup.
            let flags = match bytes.len() {
                35 => bytes[34],
                43 => bytes[42],
                _ => return None,
            };
            let pid = u64::from_be_bytes(bytes[24..32].try_into().unwrap()) as u32;
            // While ./finish runs (s6-supervise forks for it even when
            // there is none), the pid is finish's: the service is down.
            let up = pid != 0 && flags & 2 == 0;
            Some(Obs {
                pid: up.then_some(pid),
                ready: up && flags & 8 != 0,
            })
        }
        Kind::Runit => {
            // runit: 20 bytes: tai64n (12), pid (u32 little-endian),
            // paused, want, term, run-or-finish.
            if bytes.len() != 20 {
                return None;
            }
            let pid = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
            Some(Obs {
                pid: (pid != 0).then_some(pid),
                ready: pid != 0,
            })
        }
    }
}

/// One kill and what followed, in ns from just before the kill.
#[derive(Clone, Copy, Default)]
struct Sample {
    /// The supervisor recorded the process gone (no pid).
    down: Option<u64>,
    /// It recorded a new pid, not ready yet.
    spawned: Option<u64>,
    /// The new process's main() began (its own stamp: after the
    /// supervisor's fork and exec and the dynamic loader).
    main: Option<u64>,
    /// The new process was done notifying (its own stamp).
    notified: Option<u64>,
    /// It recorded the new pid ready.
    ready: u64,
    /// The ready state was found by the fallback re-read, not an event.
    by_fallback: bool,
}

/// A supervisor of the one program, with its status file.
struct Supervised {
    kind: Kind,
    child: Option<Child>,
    /// When its process was last seen ready.
    ready_since: std::cell::Cell<Instant>,
    /// Where its processes append their stamps (`HA_BENCH_STAMPS`).
    stamps: PathBuf,
    status: PathBuf,
    watch: Watch,
}

impl Supervised {
    /// Waits until `pred` holds for the status, by event or fallback.
    /// Returns the observation and whether the last find was a fallback.
    fn wait_for(&self, mut pred: impl FnMut(Option<Obs>) -> bool, what: &str) -> (Obs, bool) {
        let end = Instant::now() + PATIENCE;
        let mut by_fallback = false;
        loop {
            let o = read_obs(self.kind, &self.status);
            if pred(o) {
                return (
                    o.unwrap_or(Obs {
                        pid: None,
                        ready: false,
                    }),
                    by_fallback,
                );
            }
            assert!(
                Instant::now() < end,
                "{}: waited {PATIENCE:?} for {what}; last status {o:?}",
                self.kind.name()
            );
            by_fallback = !self.watch.wait(FALLBACK_MS);
        }
    }

    /// The stamps of process `pid` (written just after it notified:
    /// waited for up to 200 ms).
    fn stamp_of(&self, pid: u32) -> Option<(u64, u64)> {
        let end = Instant::now() + Duration::from_millis(200);
        loop {
            let text = std::fs::read_to_string(&self.stamps).unwrap_or_default();
            let found = text.lines().rev().find_map(|l| {
                let f: Vec<u64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
                (f.len() == 3 && f[0] == pid as u64).then(|| (f[1], f[2]))
            });
            if found.is_some() || Instant::now() > end {
                return found;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn initial_ready(&self) -> u32 {
        let (o, _) = self.wait_for(|o| o.is_some_and(|o| o.ready), "the first ready");
        o.pid.unwrap()
    }

    /// Kills the process with SIGKILL and times its return.
    fn kill_once(&self, pause: Duration) -> Sample {
        let old = self.initial_ready();
        // Both s6-supervise and runsv wait a second before restarting a
        // service that ran less than a second: keep clear of it.
        let up = self.ready_since.get().elapsed();
        std::thread::sleep(pause.max(MIN_UPTIME.saturating_sub(up)));
        let now = read_obs(self.kind, &self.status).expect("status");
        assert_eq!(
            now.pid,
            Some(old),
            "{}: the process changed by itself",
            self.kind.name()
        );
        self.watch.drain();
        let t0 = now_ns();
        // SAFETY: kill has no memory effects.
        let r = unsafe { libc::kill(old as i32, libc::SIGKILL) };
        assert_eq!(r, 0, "kill {old}: {}", std::io::Error::last_os_error());
        let mut s = Sample::default();
        let end = Instant::now() + PATIENCE;
        let mut fallback = false;
        let trace = std::env::var_os("HA_BENCH_TRACE").is_some();
        let mut last = None;
        loop {
            let o = read_obs(self.kind, &self.status);
            let t = now_ns() - t0;
            if trace && o != last {
                eprintln!("{} kill {old}: +{:.3} ms {o:?}", self.kind.name(), ms(t));
                last = o;
            }
            if let Some(o) = o {
                match o.pid {
                    None => {
                        s.down.get_or_insert(t);
                    }
                    Some(p) if p != old => {
                        if o.ready {
                            s.ready = t;
                            s.by_fallback = fallback;
                            self.ready_since.set(Instant::now());
                            if let Some((m, n)) = self.stamp_of(p) {
                                s.main = Some(m.saturating_sub(t0));
                                s.notified = Some(n.saturating_sub(t0));
                            }
                            return s;
                        }
                        s.spawned.get_or_insert(t);
                    }
                    Some(_) => {}
                }
            }
            assert!(
                Instant::now() < end,
                "{}: not ready again {PATIENCE:?} after kill -9 of {old}; last status {o:?}",
                self.kind.name()
            );
            fallback = !self.watch.wait(FALLBACK_MS);
        }
    }

    /// Stops the supervisor and its process.
    fn stop(mut self) {
        self.end();
    }

    /// SIGTERM to the supervisor (each stops its process and exits on
    /// it), SIGKILL after 5 s; then the process if it was left.
    fn end(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let last = read_obs(self.kind, &self.status).and_then(|o| o.pid);
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_none() {
            eprintln!(
                "{}: still running 5 s after SIGTERM; SIGKILL",
                self.kind.name()
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(p) = last {
            // The process, if the supervisor left it (it should not have).
            // SAFETY: kill has no memory effects.
            if unsafe { libc::kill(p as i32, 0) } == 0 && proc_is_app(p) {
                eprintln!("{}: left pid {p} running; SIGKILL", self.kind.name());
                // SAFETY: as above.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.end();
    }
}

/// Whether `pid` runs the bench's program (not a reused pid).
fn proc_is_app(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.file_name().is_some_and(|n| n == "app"))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------
// Starting each supervisor

fn toml_str(s: &Path) -> String {
    serde_json::to_string(&s.display().to_string()).unwrap()
}

/// Writes the node's configuration: `[node]` then `body`.
fn write_node(dir: &Path, body: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let domain = dir.join("dom");
    let config = dir.join("node.toml");
    let text = format!(
        "[node]\nname = \"bench\"\ndomain = {}\n\n{body}",
        toml_str(&domain)
    );
    std::fs::write(&config, text).unwrap();
    (config, domain)
}

/// Starts `mtipc-ha <sub> CONFIG` (stderr to `dir/stderr`).
fn start_mtipc(ha: &Path, sub: &str, dir: &Path, config: &Path, stamps: Option<&Path>) -> Child {
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut cmd = Command::new(ha);
    if let Some(p) = stamps {
        cmd.env("HA_BENCH_STAMPS", p);
    }
    cmd.arg(sub)
        .arg(config)
        .env_remove("MTIPC_HA_SOCKET")
        .env_remove("HA_BENCH_NOTIFY_FD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn mtipc-ha")
}

/// Waits until `path` exists (a directory a supervisor creates).
fn wait_exists(path: &Path, who: &str) {
    let end = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < end,
            "{who}: {} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// mtipc-ha's restart backoff in the restart part: `$HA_BENCH_BACKOFF_MS`,
/// else 0 (restart at once, as s6-supervise and runsv do a service that
/// ran more than a second; mtipc-ha accepts 0 since 8a1e783, 1 before).
fn backoff_ms() -> usize {
    env_usize("HA_BENCH_BACKOFF_MS", 0)
}

fn mtipc_one(ha: &Path, sub: &str, dir: &Path, app: &Path) -> Supervised {
    let b = backoff_ms();
    let body = format!(
        "[[process]]\nname = \"app\"\ncommand = [{}]\nready = \"notify\"\n\
         restart_backoff_ms = {b}\nrestart_backoff_max_ms = {b}\n\
         restart_window_ms = 1000\nrestart_max = 1000000\n",
        toml_str(app)
    );
    let (config, domain) = write_node(dir, &body);
    let stamps = dir.join("stamps");
    let child = start_mtipc(ha, sub, dir, &config, Some(&stamps));
    let ha_dir = domain.join("ha");
    wait_exists(&ha_dir, "mtipc-ha");
    let watch = Watch::new(&ha_dir);
    Supervised {
        kind: Kind::Mtipc,
        child: Some(child),
        ready_since: std::cell::Cell::new(Instant::now()),
        stamps,
        status: ha_dir.join("status.json"),
        watch,
    }
}

/// A service directory whose `run` is the program itself (no shell).
fn service_dir(dir: &Path, app: &Path, notification_fd: Option<u32>) -> PathBuf {
    let svc = dir.join("svc");
    std::fs::create_dir_all(svc.join("supervise")).unwrap();
    std::os::unix::fs::symlink(app, svc.join("run")).unwrap();
    if let Some(fd) = notification_fd {
        std::fs::write(svc.join("notification-fd"), format!("{fd}\n")).unwrap();
    }
    svc
}

fn s6_one(dir: &Path, app: &Path) -> Supervised {
    std::fs::create_dir_all(dir).unwrap();
    let svc = service_dir(dir, app, Some(3));
    let stamps = dir.join("stamps");
    let child = Command::new(tool("s6-supervise"))
        .arg(&svc)
        .env("HA_BENCH_STAMPS", &stamps)
        .env("HA_BENCH_NOTIFY_FD", "3")
        .env_remove("MTIPC_HA_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("spawn s6-supervise");
    let watch = Watch::new(&svc.join("supervise"));
    let s = Supervised {
        kind: Kind::S6,
        child: Some(child),
        ready_since: std::cell::Cell::new(Instant::now()),
        stamps,
        status: svc.join("supervise/status"),
        watch,
    };
    // Our reading of the status file against s6's own.
    let pid = s.initial_ready();
    let out = Command::new(tool("s6-svstat"))
        .args(["-o", "pid,ready"])
        .arg(&svc)
        .output()
        .expect("s6-svstat");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        [pid.to_string().as_str(), "true"],
        "s6-svstat disagrees with this bench's reading of supervise/status"
    );
    s
}

fn runit_one(dir: &Path, app: &Path) -> Supervised {
    std::fs::create_dir_all(dir).unwrap();
    let svc = service_dir(dir, app, None);
    let stamps = dir.join("stamps");
    let child = Command::new(tool("runsv"))
        .arg(&svc)
        .env("HA_BENCH_STAMPS", &stamps)
        .env_remove("HA_BENCH_NOTIFY_FD")
        .env_remove("MTIPC_HA_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("spawn runsv");
    let watch = Watch::new(&svc.join("supervise"));
    let s = Supervised {
        kind: Kind::Runit,
        child: Some(child),
        ready_since: std::cell::Cell::new(Instant::now()),
        stamps,
        status: svc.join("supervise/status"),
        watch,
    };
    let pid = s.initial_ready();
    let out = Command::new(tool("sv"))
        .arg("status")
        .arg(&svc)
        .output()
        .expect("sv status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("run:") && text.contains(&format!("(pid {pid})")),
        "sv status disagrees with this bench's reading of supervise/status: {text}"
    );
    s
}

// ---------------------------------------------------------------------
// Part 1: restart after kill -9

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

struct Restart {
    kind: Kind,
    samples: Vec<Sample>,
}

impl Restart {
    fn ready_ms(&self) -> Vec<f64> {
        sorted(&self.samples.iter().map(|s| ms(s.ready)).collect::<Vec<_>>())
    }
    fn p(&self, p: f64) -> f64 {
        pct(&self.ready_ms(), p)
    }
}

fn part_restart(ha: &Path, sub: &str, root: &Path, app: &Path) -> Vec<Restart> {
    let kills = env_usize("HA_BENCH_KILLS", 50);
    let pause = Duration::from_millis(env_usize("HA_BENCH_GAP_MS", 300) as u64);
    println!(
        "\n## 1. Restart after kill -9 until ready again ({kills} kills each; the three supervisors run side by side and are killed in turn, {} ms apart, each process up >= {} ms before its kill; mtipc-ha's restart_backoff_ms = {})",
        pause.as_millis(),
        MIN_UPTIME.as_millis(),
        backoff_ms()
    );
    let kinds = [Kind::S6, Kind::Runit, Kind::Mtipc];
    let sups: Vec<Supervised> = kinds
        .iter()
        .map(|&kind| {
            let dir = root.join(format!("restart-{}", kind.name()));
            let sup = match kind {
                Kind::Mtipc => mtipc_one(ha, sub, &dir, app),
                Kind::S6 => s6_one(&dir, app),
                Kind::Runit => runit_one(&dir, app),
            };
            sup.initial_ready();
            sup
        })
        .collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::with_capacity(kills); sups.len()];
    for _ in 0..kills {
        for (i, sup) in sups.iter().enumerate() {
            samples[i].push(sup.kill_once(pause));
        }
    }
    for sup in sups {
        sup.stop();
    }
    let out: Vec<Restart> = kinds
        .iter()
        .zip(samples)
        .map(|(&kind, samples)| Restart { kind, samples })
        .collect();
    let s6_p50 = out.iter().find(|r| r.kind == Kind::S6).unwrap().p(50.0);
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>11}   phases (p50, ms from the kill): down / new pid / main() / notified / ready",
        "supervisor", "p50 ms", "p90 ms", "min ms", "max ms", "p50 vs s6"
    );
    for r in &out {
        let phase = |f: &dyn Fn(&Sample) -> Option<u64>| {
            let v: Vec<f64> = r.samples.iter().filter_map(f).map(ms).collect();
            if v.is_empty() {
                "-".to_string()
            } else if v.len() == r.samples.len() {
                format!("{:.2}", pct(&sorted(&v), 50.0))
            } else {
                format!("{:.2} (seen {}x)", pct(&sorted(&v), 50.0), v.len())
            }
        };
        let v = r.ready_ms();
        let fallback = r.samples.iter().filter(|s| s.by_fallback).count();
        println!(
            "{:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2}x   {} / {} / {} / {} / {:.2}{}{}",
            r.kind.name(),
            pct(&v, 50.0),
            pct(&v, 90.0),
            v[0],
            v[v.len() - 1],
            pct(&v, 50.0) / s6_p50,
            phase(&|s| s.down),
            phase(&|s| s.spawned),
            phase(&|s| s.main),
            phase(&|s| s.notified),
            pct(&v, 50.0),
            if r.kind == Kind::Runit {
                "  (runit: no readiness protocol; until the new pid is recorded)"
            } else {
                ""
            },
            if fallback > 0 {
                format!("  [{fallback} found by the {FALLBACK_MS} ms re-read, not an event]")
            } else {
                String::new()
            },
        );
    }
    println!("per kill, p50 / p90 in ms: kill -> main() of the new process (the supervisor sees the death, waits, forks, execs; the loader) | main() -> notified (the program's own part) | notified -> recorded ready (the supervisor takes note)");
    for r in &out {
        let d = |f: &dyn Fn(&Sample) -> Option<u64>| {
            let v = sorted(&r.samples.iter().filter_map(f).map(ms).collect::<Vec<_>>());
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2} / {:.2}", pct(&v, 50.0), pct(&v, 90.0))
            }
        };
        println!(
            "{:<14} {} | {} | {}",
            r.kind.name(),
            d(&|s| s.main),
            d(&|s| Some(s.notified? - s.main?)),
            d(&|s| Some(s.ready.saturating_sub(s.notified?))),
        );
    }
    let m = out.iter().find(|r| r.kind == Kind::Mtipc).unwrap().p(50.0);
    println!(
        "target: mtipc-ha {sub} median <= s6's: {:.2} ms vs {:.2} ms: {}",
        m,
        s6_p50,
        met(m <= s6_p50)
    );
    out
}

// ---------------------------------------------------------------------
// Parts 2 and 3: many processes

/// The states of every process of an mtipc status file, by name.
fn mtipc_states(path: &Path) -> Option<Vec<(String, String)>> {
    let bytes = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(
        v["processes"]
            .as_array()?
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("").to_string(),
                    p["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// Waits until all `n` processes are ready; the time it was seen.
fn wait_all_ready(ha_dir: &Path, n: usize, child: &mut Child) -> Instant {
    wait_exists(ha_dir, "mtipc-ha");
    let watch = Watch::new(ha_dir);
    let status = ha_dir.join("status.json");
    let end = Instant::now() + PATIENCE;
    loop {
        if let Some(st) = mtipc_states(&status) {
            if st.len() == n && st.iter().all(|(_, s)| s == "ready") {
                return Instant::now();
            }
        }
        if let Some(e) = child.try_wait().unwrap() {
            panic!("mtipc-ha exited ({e}) before all were ready");
        }
        assert!(
            Instant::now() < end,
            "not all {n} ready after {PATIENCE:?}: {:?}",
            mtipc_states(&status)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, s)| s != "ready")
                .take(5)
                .collect::<Vec<_>>()
        );
        watch.wait(FALLBACK_MS);
    }
}

/// A started `mtipc-ha`, stopped (SIGTERM, which stops its processes in
/// order) when dropped, a panic included.
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            stop_child(c, "mtipc-ha");
        }
    }
}

fn stop_child(mut c: Child, what: &str) {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(20);
    while c.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            eprintln!("{what}: still running 20 s after SIGTERM; SIGKILL");
            let _ = c.kill();
            let _ = c.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The configuration of `levels` levels of `width` processes, each
/// depending on every process of the level above.
fn graph_body(app: &Path, levels: usize, width: usize, monitor_ms: Option<u64>) -> String {
    let mut b = String::new();
    for l in 0..levels {
        for i in 0..width {
            b += &format!(
                "[[process]]\nname = \"l{l}p{i}\"\ncommand = [{}]\nready = \"notify\"\n",
                toml_str(app)
            );
            if let Some(m) = monitor_ms {
                b += &format!("monitor_ms = {m}\n");
            }
            if l > 0 {
                let deps: Vec<String> = (0..width).map(|j| format!("\"l{}p{j}\"", l - 1)).collect();
                b += &format!("depends_on = [{}]\n", deps.join(", "));
            }
            b += "\n";
        }
    }
    b
}

/// Starts `n` copies of the program at once against this bench's own
/// hooks endpoint and times them until each said ready: the time until
/// all are ready, in ns.
fn own_start_to_ready(app: &Path, sock: &Path, n: usize) -> u64 {
    let mut ep = Endpoint::bind(sock, Role::Active, 1).expect("bench endpoint");
    let t0 = Instant::now();
    let mut kids: Vec<Child> = (0..n)
        .map(|_| {
            Command::new(app)
                .env("MTIPC_HA_SOCKET", sock)
                .env_remove("HA_BENCH_NOTIFY_FD")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn app")
        })
        .collect();
    let mut ready = 0;
    while ready < n {
        let left = PATIENCE.saturating_sub(t0.elapsed());
        assert!(
            !left.is_zero(),
            "the program did not say ready in {PATIENCE:?}"
        );
        if let Some(Event::Ready { .. }) = ep.next_event(left).expect("endpoint") {
            ready += 1;
        }
    }
    let t = t0.elapsed().as_nanos() as u64;
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    drop(ep);
    t
}

/// Starts the program with a pipe as its notification descriptor (as
/// s6-supervise does) and times it until the newline: ns.
fn own_start_to_notify(app: &Path) -> u64 {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut fds = [0; 2];
    // SAFETY: a valid array of two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w = wr.as_raw_fd();
    let mut cmd = Command::new(app);
    cmd.env("HA_BENCH_NOTIFY_FD", "3")
        .env_remove("MTIPC_HA_SOCKET")
        .stdin(Stdio::null());
    // SAFETY: dup2 only, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn app");
    drop(wr);
    let mut f = std::fs::File::from(rd);
    let mut b = [0u8; 1];
    assert_eq!(f.read(&mut b).expect("read the notification"), 1);
    let t = t0.elapsed().as_nanos() as u64;
    let _ = child.kill();
    let _ = child.wait();
    t
}

/// The program's own start, without a supervisor: sorted ms.
struct Own {
    /// One process, spawn to its `ready` on this bench's hooks endpoint.
    one: Vec<f64>,
    /// Ten at once, until all ten are ready.
    ten: Vec<f64>,
    /// One process, spawn to its newline on a notification descriptor.
    fd: Vec<f64>,
}

fn measure_own(root: &Path, app: &Path) -> Own {
    let dir = root.join("own");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("hooks.sock");
    let one: Vec<f64> = (0..30)
        .map(|_| ms(own_start_to_ready(app, &sock, 1)))
        .collect();
    let ten: Vec<f64> = (0..10)
        .map(|_| ms(own_start_to_ready(app, &sock, 10)))
        .collect();
    let fd: Vec<f64> = (0..30).map(|_| ms(own_start_to_notify(app))).collect();
    let sp = sorted(
        &(0..30)
            .map(|_| ms(spawn_returns(app, true)))
            .collect::<Vec<_>>(),
    );
    let sp_posix = sorted(
        &(0..30)
            .map(|_| ms(spawn_returns(app, false)))
            .collect::<Vec<_>>(),
    );
    let own = Own {
        one: sorted(&one),
        ten: sorted(&ten),
        fd: sorted(&fd),
    };
    println!("\n## 0. The program's own start, no supervisor (spawned by this bench)");
    println!(
        "spawn to its `ready` on this bench's hooks endpoint (mt_ha_ready: connect, hello, role, ready; 30 runs): p50 {:.2} ms, p90 {:.2} ms",
        pct(&own.one, 50.0),
        pct(&own.one, 90.0)
    );
    println!(
        "spawn to its newline on a notification descriptor (s6's way; 30 runs): p50 {:.2} ms, p90 {:.2} ms",
        pct(&own.fd, 50.0),
        pct(&own.fd, 90.0)
    );
    println!(
        "std's Command::spawn with a pre_exec (fork, then wait until the child has exec'd, as mtipc-ha starts a process run as another user; 30 runs): p50 {:.2} ms, p90 {:.2} ms",
        pct(&sp, 50.0),
        pct(&sp, 90.0)
    );
    println!(
        "std's Command::spawn without (posix_spawn, the child sharing this bench's memory until its exec, as mtipc-ha starts the others; 30 runs): p50 {:.2} ms, p90 {:.2} ms",
        pct(&sp_posix, 50.0),
        pct(&sp_posix, 90.0)
    );
    println!(
        "10 spawned at once, until all 10 said ready on the hooks endpoint (10 runs): p50 {:.2} ms, p90 {:.2} ms",
        pct(&own.ten, 50.0),
        pct(&own.ten, 90.0)
    );
    own
}

/// How long `Command::spawn` takes: with a `pre_exec` (`setsid`; std
/// then forks, as mtipc-ha starts a process run as another user), or
/// without (std then calls `posix_spawn`, whose child shares the parent's
/// memory until its exec, as mtipc-ha starts the others); either waits
/// until the child has exec'd (or failed to): ns until `spawn` returns.
fn spawn_returns(app: &Path, fork: bool) -> u64 {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(app);
    cmd.env_remove("MTIPC_HA_SOCKET")
        .env_remove("HA_BENCH_NOTIFY_FD")
        .stdin(Stdio::null());
    if fork {
        // SAFETY: setsid only, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    } else {
        cmd.process_group(0);
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn app");
    let t = t0.elapsed().as_nanos() as u64;
    let _ = child.kill();
    let _ = child.wait();
    t
}

fn part_start(ha: &Path, sub: &str, root: &Path, app: &Path, own: &Own) {
    let runs = env_usize("HA_BENCH_START_RUNS", 5);
    println!("\n## 2. Start of 100 processes, dependency graph of depth 10 (10 levels of 10), until all ready ({runs} runs)");
    let (one, ten) = (&own.one, &own.ten);
    let floor = 10.0 * pct(one, 50.0);
    let floor_wide = 10.0 * pct(ten, 50.0);
    let mut times = Vec::new();
    for r in 0..runs {
        let d = root.join(format!("start-{r}"));
        let (config, domain) = write_node(&d, &graph_body(app, 10, 10, None));
        let t0 = Instant::now();
        let mut node = Guard(Some(start_mtipc(ha, sub, &d, &config, None)));
        let t1 = wait_all_ready(&domain.join("ha"), 100, node.child());
        times.push((t1 - t0).as_secs_f64() * 1e3);
        drop(node);
    }
    let t = sorted(&times);
    println!(
        "mtipc-ha {sub}: spawn of mtipc-ha to all 100 ready: p50 {:.1} ms, min {:.1} ms, max {:.1} ms",
        pct(&t, 50.0),
        t[0],
        t[t.len() - 1]
    );
    println!(
        "floor (critical path: 10 x one process's start-to-ready p50): {floor:.1} ms -> {:.2}x the floor",
        pct(&t, 50.0) / floor
    );
    println!(
        "floor counting the width (10 x 10-at-once p50): {floor_wide:.1} ms -> {:.2}x",
        pct(&t, 50.0) / floor_wide
    );
}

/// (pid, start time, exe, ppid, utime + stime ticks) of every process.
fn proc_table() -> Vec<(u32, u64, Option<PathBuf>, u32, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state): field N is f[N - 3].
        let num = |n: usize| {
            f.get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        out.push((pid, num(22), exe, num(4) as u32, num(14) + num(15)));
    }
    out
}

/// The `mtipc-ha` processes of the run started as `root`: (pid, start) ->
/// ticks.
fn ha_cpu(root: u32, ha: &Path) -> HashMap<(u32, u64), u64> {
    let t = proc_table();
    let parent: HashMap<u32, u32> = t.iter().map(|p| (p.0, p.3)).collect();
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parent.get(&pid) {
                Some(&pp) if pp != 0 => pid = pp,
                _ => return false,
            }
        }
        false
    };
    t.iter()
        .filter(|p| p.2.as_deref() == Some(ha) && descends(p.0))
        .map(|p| ((p.0, p.1), p.4))
        .collect()
}

fn part_cpu(ha: &Path, sub: &str, root: &Path, app: &Path) -> f64 {
    let secs = env_usize("HA_BENCH_CPU_S", 10).max(1);
    println!("\n## 3. CPU of the supervisor, 100 idle processes at monitor_ms 200, over {secs} s");
    let d = root.join("cpu");
    let (config, domain) = write_node(&d, &graph_body(app, 1, 100, Some(200)));
    let mut node = Guard(Some(start_mtipc(ha, sub, &d, &config, None)));
    wait_all_ready(&domain.join("ha"), 100, node.child());
    let pid = node.child().id();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let a = ha_cpu(pid, ha);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs as u64));
    let b = ha_cpu(pid, ha);
    let wall = t0.elapsed().as_secs_f64();
    let ticks: u64 = b
        .iter()
        .map(|(k, v)| v.saturating_sub(*a.get(k).unwrap_or(&0)))
        .sum();
    let gone = a.keys().filter(|k| !b.contains_key(k)).count();
    let pct_core = ticks as f64 / hz / wall * 100.0;
    // Which process spent what: the role (`mtipc-ha role NAME ...`) or the
    // subcommand, from its command line.
    let mut by: Vec<(String, u64)> = b
        .iter()
        .map(|(k, v)| {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", k.0)).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|&c| c == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let name = match args.get(1).map(String::as_str) {
                Some("role") => args.get(2).cloned().unwrap_or_default(),
                Some(s) => s.to_string(),
                None => "?".into(),
            };
            (name, v.saturating_sub(*a.get(k).unwrap_or(&0)))
        })
        .collect();
    by.sort();
    println!(
        "per process (ticks): {}",
        by.iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "mtipc-ha {sub}: {} mtipc-ha process(es) (pids {:?}); {ticks} ticks of 1/{hz} s in {wall:.1} s = {pct_core:.2} % of one core",
        b.len(),
        b.keys().map(|k| k.0).collect::<Vec<_>>()
    );
    if gone > 0 {
        println!("({gone} mtipc-ha process(es) ended during the window: their last ticks are not counted)");
    }
    let still = mtipc_states(&domain.join("ha/status.json"))
        .unwrap_or_default()
        .iter()
        .filter(|(_, s)| s == "ready")
        .count();
    println!("processes still ready at the end: {still} of 100");
    println!("target: <= 1 % of one core: {}", met(pct_core <= 1.0));
    drop(node);
    pct_core
}

/// Where the scratch directory goes: `$HA_BENCH_DIR`, else
/// `$XDG_RUNTIME_DIR` (where a node's domain goes by default), else
/// `/dev/shm`, else the temporary directory. A tmpfs: the status files
/// are written on every change, mtipc-ha's and s6's with fsync.
fn bench_dir() -> PathBuf {
    if std::env::var_os("HA_BENCH_DIR").is_some() || std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return base_dir("HA_BENCH_DIR");
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn main() {
    let sub = std::env::var("MTIPC_HA_BENCH_CMD").unwrap_or_else(|_| "run".into());
    assert!(
        sub == "run" || sub == "up",
        "MTIPC_HA_BENCH_CMD must be run or up, not {sub:?}"
    );
    let parts = std::env::var("HA_BENCH_PARTS").unwrap_or_else(|_| "restart,start,cpu".into());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    let ha = mtipc_ha_path();
    let lib = lib_dir();
    // The subcommand must exist in this build (`up` comes with the roles).
    let help = Command::new(&ha)
        .args([sub.as_str(), "--help"])
        .output()
        .expect("mtipc-ha --help");
    assert!(
        help.status.success(),
        "{} has no `{sub}` subcommand (MTIPC_HA_BENCH_CMD={sub}): {}",
        ha.display(),
        String::from_utf8_lossy(&help.stderr).trim()
    );
    // The baselines first: missing tools fail before anything runs.
    for t in ["s6-supervise", "s6-svstat", "runsv", "sv", "gcc"] {
        tool(t);
    }
    let root = bench_dir().join(format!("mtipc-bench-ha-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let app = build_app(&root, &lib);
    println!("# HA supervisor: mtipc-ha {sub} ({})", ha.display());
    println!("{}", machine());
    println!(
        "Scratch directory (domain, service directories) under {} ({}); load average {}",
        bench_dir().display(),
        fs_type(&bench_dir()),
        loadavg()
    );
    let s6v = Command::new("dpkg-query")
        .args(["-W", "-f=s6 ${Version}, runit ", "s6"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let rv = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "runit"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    println!("baselines: {s6v}{rv} (Debian packages)");
    let own = measure_own(&root, &app);
    if parts.contains(&"restart") {
        part_restart(&ha, &sub, &root, &app);
    }
    if parts.contains(&"start") {
        part_start(&ha, &sub, &root, &app, &own);
    }
    if parts.contains(&"cpu") {
        part_cpu(&ha, &sub, &root, &app);
    }
    let _ = std::fs::remove_dir_all(&root);
}
