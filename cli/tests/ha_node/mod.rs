//! The node both HA test files run: `mtipc-ha run` or `mtipc-ha up` (the
//! test's [`mode`]) over a configuration written into a scratch directory,
//! its domain `DIR/dom`, its stderr in `DIR/stderr`; stopped (SIGTERM,
//! then SIGKILL) when dropped. [`both!`] makes each listed test run under
//! both programs (`run::NAME` and `up::NAME`). Each test
//! file adds its own methods in an `impl Node` block of its own (the
//! status read from the file, or asked of `mtipc ha`).
//!
//! Included with `mod ha_node;` (not every file uses every item).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

thread_local! {
    static MODE: Cell<&'static str> = const { Cell::new("run") };
}

/// The program this test runs: `"run"` or `"up"`.
#[allow(dead_code)]
pub fn mode() -> &'static str {
    MODE.with(Cell::get)
}

/// Sets [`mode`] for this test's thread.
#[allow(dead_code)]
pub fn set_mode(m: &'static str) {
    MODE.with(|c| c.set(m));
}

/// `both!(a, b)`: tests `run::a`, `up::a`, `run::b`, `up::b`, each calling
/// the function of that name with [`mode`] set.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod run {
            $( #[test] fn $name() { $crate::ha_node::set_mode("run"); super::$name(); } )*
        }
        mod up {
            $( #[test] fn $name() { $crate::ha_node::set_mode("up"); super::$name(); } )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both;

/// A node running `mtipc-ha run` over the processes in `body`.
pub struct Node {
    pub dir: PathBuf,
    pub child: Option<Child>,
}

#[allow(dead_code)]
impl Node {
    /// Writes `DIR/node.toml` (node "t", domain `DIR/dom`, then `body`)
    /// and starts `mtipc-ha run` (or `up`: [`mode`]) on it.
    pub fn start(dir: &Path, body: &str) -> Node {
        Node::start_env(dir, body, &[])
    }

    /// [`Node::start`] with `env` set for the supervisor (and inherited by
    /// its roles and processes).
    pub fn start_env(dir: &Path, body: &str, env: &[(&str, &str)]) -> Node {
        let config = dir.join("node.toml");
        let text = format!(
            "[node]\nname = \"t\"\ndomain = \"{}\"\n\n{body}",
            dir.join("dom").display()
        );
        std::fs::write(&config, text).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mtipc-ha"))
            .arg(mode())
            .arg(&config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Node {
            dir: dir.to_path_buf(),
            child: Some(child),
        }
    }

    /// The node's domain.
    pub fn domain(&self) -> PathBuf {
        self.dir.join("dom")
    }

    /// The supervisor's pid (`up`: the node process's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What the supervisor wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while c.try_wait().unwrap().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A string as a TOML string (JSON's quoting is valid TOML).
#[allow(dead_code)]
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Every live process (not a zombie) of the node of `domain`, as `/proc`
/// shows them: (pid, its `MTIPC_HA_PROCESS`, whether it leads its
/// session). The supervisor's processes are found by the variables it
/// gives them (this node's `MTIPC_HA_SOCKET`); what they fork inherits
/// the variables, but does not lead the session.
#[allow(dead_code)]
pub fn supervised(domain: &Path) -> Vec<(u32, String, bool)> {
    let sock = format!(
        "MTIPC_HA_SOCKET={}",
        domain.join("ha/monitor.sock").display()
    );
    let mut out = Vec::new();
    for d in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = d.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if !vars.contains(&sock.as_bytes()) || !alive(pid) {
            continue;
        }
        let Some(name) = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"MTIPC_HA_PROCESS="))
            .map(|n| String::from_utf8_lossy(n).into_owned())
        else {
            continue;
        };
        // SAFETY: getsid has no memory effects.
        let leader = unsafe { libc::getsid(pid as i32) } == pid as i32;
        out.push((pid, name, leader));
    }
    out
}

/// The live processes that the supervisor of `domain` started as `name`
/// ([`supervised`] session leaders of that name), in pid order.
#[allow(dead_code)]
pub fn live_named(domain: &Path, name: &str) -> Vec<u32> {
    let mut v: Vec<u32> = supervised(domain)
        .into_iter()
        .filter(|(_, n, leader)| n == name && *leader)
        .map(|(pid, _, _)| pid)
        .collect();
    v.sort_unstable();
    v
}

/// Whether `pid` runs and is not a zombie (`/proc/<pid>/stat`'s state).
#[allow(dead_code)]
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rfind(')')
                .map(|k| !st[k + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
