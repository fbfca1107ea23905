//! Helpers shared by the integration tests (`mod common;`): the lock that
//! runs a file's tests one at a time, scratch directories removed on drop,
//! reproducible pseudo-random numbers, waiting for and reading a child, and
//! child processes that are this test binary re-executed in a role
//! (the test `child_entry` reads `<VAR>_ROLE` and `<VAR>_ARGS`, the
//! arguments joined with U+001F, and talks back in "@@ " lines).
//!
//! Not every test file uses every item, hence the `#[allow(dead_code)]`s.

use mtipc::Domain;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Held by a test so that the tests of a file run one at a time (a test
/// that panicked does not poison it for the others).
#[allow(dead_code)]
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the host.
#[allow(dead_code)]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// xorshift64*: reproducible pseudo-random numbers without a dependency
/// (seed with an odd number, e.g. `Rng(seed | 1)`).
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Child processes that are killed and reaped however the test ends.
#[derive(Default)]
#[allow(dead_code)]
pub struct Kids(pub Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // On a child already reaped this does nothing (no pid reuse risk).
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A scratch path `<temp dir>/mtipc-<test file>-<tag>-<pid>-<ns>`, removed
/// (recursively) on drop.
pub struct Scratch(pub PathBuf);

#[allow(dead_code)]
impl Scratch {
    /// The path only: the first `Domain::open` of it creates the directory.
    pub fn new(tag: &str) -> Scratch {
        Scratch(std::env::temp_dir().join(format!(
            "mtipc-{}-{tag}-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            mono_ns()
        )))
    }

    /// The directory, created (mode 0777 less the umask).
    pub fn create(tag: &str) -> Scratch {
        let s = Scratch::new(tag);
        std::fs::create_dir(&s.0).unwrap();
        s
    }

    /// The domain at the scratch path.
    pub fn domain(&self) -> Domain {
        Domain::open(Some(&self.0)).unwrap()
    }

    /// The scratch path as a string (for a child's arguments).
    pub fn path(&self) -> String {
        self.0.display().to_string()
    }

    /// The scratch path.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This test binary again, running its test `child_entry` as `role` with
/// `args` (in `<var>_ROLE` and `<var>_ARGS`); stdin null, stdout piped,
/// stderr inherited (change them before spawning if need be).
#[allow(dead_code)]
pub fn role_command(var: &str, role: &str, args: &[String]) -> Command {
    role_command_at(&std::env::current_exe().unwrap(), var, role, args)
}

/// In a child made by [`role_command`]: its role and arguments (from
/// `<var>_ROLE` and `<var>_ARGS`); `None` in the test process itself.
#[allow(dead_code)]
pub fn child_role(var: &str) -> Option<(String, Vec<String>)> {
    let role = std::env::var(format!("{var}_ROLE")).ok()?;
    let args = std::env::var(format!("{var}_ARGS")).unwrap_or_default();
    Some((role, args.split('\u{1f}').map(str::to_owned).collect()))
}

/// [`role_command`] with this test binary at another path `exe` (a copy
/// or a link of it).
#[allow(dead_code)]
pub fn role_command_at(exe: &Path, var: &str, role: &str, args: &[String]) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "child_entry",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(format!("{var}_ROLE"), role)
    .env(format!("{var}_ARGS"), args.join("\u{1f}"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    c
}

/// In a child: one protocol line ("@@ <line>") on stdout, flushed.
#[allow(dead_code)]
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {line}").unwrap();
    out.flush().unwrap();
}

/// In the parent: reads `child`'s stdout up to its protocol line
/// "@@ WANT..." (see [`say`]) and returns that line without the "@@ ".
/// Fails if the child's stdout ends first. Lines read past it stay in a
/// buffer dropped here: use it for a child that says nothing more until
/// the parent acts.
#[allow(dead_code)]
pub fn wait_said(child: &mut Child, want: &str) -> String {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(child.stdout.as_mut().expect("piped stdout"));
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).unwrap();
        assert!(n > 0, "child ended before saying {want:?}");
        if let Some(l) = line.trim_end().strip_prefix("@@ ") {
            if l.starts_with(want) {
                return l.to_owned();
            }
        }
    }
}

/// Kills `child` with SIGKILL, reaps it and checks that SIGKILL ended it.
#[allow(dead_code)]
pub fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

/// Polls `child` (every millisecond) until it exits, or `within` passes
/// (`None`: still running, not killed).
#[allow(dead_code)]
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Everything left to read from `r` (a child's `stdout.take()` or
/// `stderr.take()`) as text, read errors ignored; "" for `None`.
#[allow(dead_code)]
pub fn read_all(r: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// Says that the test `test` did not run its checks, and why: on stderr,
/// and as a line appended to the file `$MTIPC_SKIP_LOG` if it is set
/// (`make test` sets it and lists the file in its summary, so that no
/// skip goes unseen). The test returns after calling it.
#[allow(dead_code)]
pub fn skip(test: &str, reason: &str) {
    let line = format!(
        "rust tests/{}.rs {test}: {reason}",
        env!("CARGO_CRATE_NAME")
    );
    eprintln!("skipped: {line}");
    if let Some(path) = std::env::var_os("MTIPC_SKIP_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot append to $MTIPC_SKIP_LOG {path:?}: {e}"));
        // One write(2) per line: tests of a file run in parallel threads.
        f.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
}

/// Spawns this test binary as user and group `uid`: the command `make`
/// builds around a path of the binary, run as `uid`, from a hard link (or a
/// copy) of the binary in a fresh mode-0755 directory. The checkout, and so
/// `current_exe`, may be under a directory `uid` cannot traverse (such as
/// /root), and a temporary directory may be mounted noexec: each candidate
/// (the temporary directory, /tmp, /var/tmp, /dev/shm) is tried until the
/// spawn works; none working is a failure, not a skip. Returns the
/// directory (removed on drop) with the child. Needs root.
#[allow(dead_code)]
pub fn spawn_as_uid(uid: u32, make: impl Fn(&Path) -> Command) -> (Scratch, Child) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let mut tried = Vec::new();
    let bases: [PathBuf; 4] = [
        std::env::temp_dir(),
        "/tmp".into(),
        "/var/tmp".into(),
        "/dev/shm".into(),
    ];
    for base in bases {
        let dir = Scratch(base.join(format!(
            "mtipc-{}-bin-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            mono_ns()
        )));
        if let Err(e) = std::fs::create_dir(&dir.0) {
            tried.push(format!("{}: {e}", dir.0.display()));
            continue;
        }
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.0.join(exe.file_name().unwrap());
        if std::fs::hard_link(&exe, &copy).is_err() {
            std::fs::copy(&exe, &copy).unwrap();
        }
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = make(&copy);
        c.uid(uid).gid(uid);
        match c.spawn() {
            Ok(child) => return (dir, child),
            Err(e) => tried.push(format!("{}: {e}", copy.display())),
        }
    }
    panic!("uid {uid} can run this test binary from none of: {tried:?}");
}

/// Gives `raw` to the process a `Command` starts as its descriptor 3 (the
/// library's helper, as the Spawner hands the Monitor connection over).
#[allow(unused_imports)]
pub use mtipc::internals::ha::give_as_fd3;

/// The sockets process `pid` holds: each descriptor's number and its
/// `flags` (octal in `/proc/PID/fdinfo`, e.g. `O_CLOEXEC`).
#[allow(dead_code)]
pub fn sockets_of(pid: u32) -> Vec<(String, u32)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            let fd = e.file_name().to_string_lossy().into_owned();
            if !link.to_string_lossy().starts_with("socket:") {
                return None;
            }
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())?;
            Some((fd, flags))
        })
        .collect()
}
