//! A real etcd for tests and benchmarks: Debian's `etcd` (package
//! `etcd-server`, which `scripts/ensure-deps.sh` installs) started on
//! loopback, on free ports, in a temporary data directory, with
//! `--heartbeat-interval 50 --election-timeout 500` so that a 1 s lease is
//! granted as 1 s (DESIGN.md, "Beyond one host"). [`Etcd::start`] waits
//! until it answers; dropping it kills it (SIGKILL), waits for it and
//! removes the directory. A test that cannot start etcd fails, loudly: it
//! never skips.
//!
//! Std only, so that any test or bench can include it:
//! `#[path = "common/etcd.rs"] mod etcd_server;` from tests/,
//! `#[path = "../../tests/common/etcd.rs"] mod etcd_server;` from
//! cli/tests/, `#[path = "../tests/common/etcd.rs"]` from benches/.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer after it is started.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running etcd, killed on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    /// The client port on 127.0.0.1.
    pub port: u16,
}

/// The etcd binary: `$MTIPC_ETCD`, else `etcd` on the PATH, else
/// Debian's `/usr/bin/etcd`.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MTIPC_ETCD") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| "/usr/bin/etcd".into())
}

/// A port nobody listens on now (the kernel's pick; another process could
/// take it before etcd binds it, which `start` retries).
fn free_port() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let p = l.local_addr().unwrap().port();
    (l, p)
}

impl Etcd {
    /// Starts an etcd and waits until it answers. Panics (with etcd's log)
    /// if it cannot.
    pub fn start() -> Etcd {
        let mut why = Vec::new();
        for _ in 0..3 {
            match Etcd::try_start() {
                Ok(e) => return e,
                Err(e) => why.push(e),
            }
        }
        panic!(
            "cannot start etcd ({}; Debian package etcd-server, installed by \
             scripts/ensure-deps.sh): {}",
            binary().display(),
            why.join("\n---\n")
        );
    }

    fn try_start() -> Result<Etcd, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("mtipc-etcd-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let log = dir.join("etcd.log");
        let (l1, port) = free_port();
        let (l2, peer) = free_port();
        drop((l1, l2));
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let logf = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(binary())
            .arg("--name")
            .arg("mtipc-test")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("mtipc-test={peer_url}"))
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary().display()))?;
        let mut e = Etcd {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if e.healthy() {
                return Ok(e);
            }
            if let Some(st) = e.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("etcd exited ({st}):\n{}", e.log_tail()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd did not answer within {READY_WITHIN:?}:\n{}",
                    e.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:<port>`, as a volume's `etcd` endpoint list.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether etcd says it is healthy (`GET /health`).
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("\"health\":\"true\"")
    }

    /// Kills etcd now (SIGKILL) and waits for it; the data directory stays
    /// until drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The data directory (etcd's log is `etcd.log` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last lines of etcd's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
