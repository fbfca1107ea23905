//! `mtipc ha status|start|stop|restart|log`: the operator's commands
//! against a running HA supervisor (`mtipc-ha run`), through its control
//! socket `<domain>/ha/control.sock` (`mtipc_cli::ha::control`,
//! docs/ha.md "The operator's commands").
//!
//! `start`, `stop` and `restart` send the request, then ask for the status
//! every 20 ms until the change has taken effect for every process named
//! (or `--timeout-ms` passes: exit 3), saying on stderr what is still
//! awaited once a second after the first; then they print the resulting
//! states. `restart @GROUP` is `stop @GROUP`, then `start @GROUP`.

use mtipc::{Error, ErrorKind, Result};
use mtipc_cli::ha::control::{control_path, parse_target, Client, ClientError, Request, Target};
use serde_json::Value;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn connect(domain: &Path) -> Result<Client> {
    // While a node runs (`mtipc-ha up` holds run.lock) but its Server is
    // being restarted, the control socket is missing or refuses for a
    // moment: wait for the new Server, up to 5 s.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Client::connect(&control_path(domain)) {
            Ok(c) => return Ok(c),
            Err(ClientError::NotRunning(m)) => {
                if !node_runs(domain) || std::time::Instant::now() >= end {
                    return Err(Error::new(ErrorKind::Unavailable, m));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(ClientError::Failed(m)) => return Err(Error::new(ErrorKind::Denied, m)),
        }
    }
}

/// Whether a supervisor holds the domain's `run.lock` (its note, a pid,
/// names a running process).
fn node_runs(domain: &Path) -> bool {
    let lock = domain.join("ha").join("run.lock");
    mtipc::internals::sys::read_note(&lock)
        .and_then(|n| n.parse::<u32>().ok())
        .and_then(|pid| mtipc::internals::sys::ProcId::of(pid).ok().flatten())
        .is_some()
}

fn ask(client: &mut Client, request: &Request) -> Result<Value> {
    client
        .request(request)
        .map_err(|e| Error::new(ErrorKind::Invalid, e))
}

fn processes(status: &Value) -> &[Value] {
    status["processes"].as_array().map_or(&[], Vec::as_slice)
}

fn find<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    processes(status).iter().find(|p| p["name"] == name)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// "850ms", "12s", "3m4s", "2h5m", "3d2h".
fn uptime(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return "-".into();
    };
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The table of `names` (all processes when `None`), as text.
fn table(status: &Value, names: Option<&[String]>) -> String {
    let head = [
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "GROUP",
        "WHY",
    ];
    let rows: Vec<[String; 8]> = processes(status)
        .iter()
        .filter(|p| names.map_or(true, |n| n.iter().any(|n| p["name"] == n.as_str())))
        .map(|p| {
            [
                text(&p["name"]),
                text(&p["state"]),
                text(&p["pid"]),
                uptime(&p["uptime_ms"]),
                text(&p["restarts"]),
                text(&p["last_exit"]),
                text(&p["group"]),
                text(&p["reason"]),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(head.map(String::from)).chain(rows) {
        let mut line = String::new();
        for (k, (w, c)) in width.iter().zip(&r).enumerate() {
            if k + 1 == r.len() {
                line += c;
            } else if k == 2 || k == 4 {
                line += &format!("{c:>w$}  ");
            } else {
                line += &format!("{c:<w$}  ");
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// `mtipc ha status [--json]`.
pub fn status(domain: &Path, json: bool) -> Result<()> {
    let mut c = connect(domain)?;
    let v = ask(&mut c, &Request::Status)?;
    let s = &v["status"];
    if json {
        println!("{s}");
        return Ok(());
    }
    let stopping = if s["stopping"] == true {
        " (stopping)"
    } else {
        ""
    };
    let roles = &s["roles"];
    if roles["split"] == true {
        println!(
            "node {}: mtipc-ha up, pid {}{stopping}",
            text(&s["node"]),
            text(&roles["node_pid"])
        );
        let names = ["server", "monitor", "spawner", "master", "watcher"];
        let shown: Vec<String> = names
            .iter()
            .map(|n| format!("{n} {}", text(&roles[*n])))
            .collect();
        println!("roles: {}", shown.join(", "));
    } else {
        let pid = text(&s["supervisor_pid"]);
        println!(
            "node {}: supervisor mtipc-ha run, pid {pid}{stopping}",
            text(&s["node"])
        );
        println!("roles: not split (mtipc-ha run: one process, pid {pid}, does the work of the five roles)");
    }
    print!("{}", table(s, None));
    Ok(())
}

/// Which way an action goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `restart`.
    Restart,
}

/// Whether `p` runs (up for its dependents, or notify-starting it is not:
/// `starting` waits for `ready`).
fn running(p: &Value) -> bool {
    p["pid"].is_u64() && matches!(p["state"].as_str(), Some("up" | "ready" | "unhealthy"))
}

/// Where a process stands after an action: `Some(Ok)` done, `Some(Err)`
/// settled without the change (the reason), `None` still under way.
fn settled(
    action: Action,
    p: &Value,
    old_pid: Option<u64>,
) -> Option<std::result::Result<(), String>> {
    let state = p["state"].as_str().unwrap_or("?");
    let why = || {
        format!(
            "{} is {state}{}",
            text(&p["name"]),
            p["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )
    };
    match action {
        Action::Stop => (p["pid"].is_null() && state != "stopping").then_some(Ok(())),
        Action::Start | Action::Restart => {
            let fresh = action == Action::Start || p["pid"].as_u64() != old_pid;
            if running(p) && fresh {
                return Some(Ok(()));
            }
            if p["pid"].is_null() && state == "failed" {
                return Some(Err(why()));
            }
            if state == "held" && p["reason"].as_str().is_some_and(|r| r.contains("failed")) {
                return Some(Err(why()));
            }
            if state == "stopped" && p["wanted"] == false {
                return Some(Err(why()));
            }
            None
        }
    }
}

/// `mtipc ha start|stop|restart TARGET [--timeout-ms MS]`.
pub fn act(domain: &Path, action: Action, target: &str, timeout_ms: u64) -> Result<()> {
    let target = parse_target(target).map_err(|e| Error::new(ErrorKind::Invalid, e))?;
    let mut c = connect(domain)?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let steps: Vec<(Action, Request)> = match (action, &target) {
        (Action::Restart, Target::Group(_)) => vec![
            (Action::Stop, Request::Stop(target.clone())),
            (Action::Start, Request::Start(target.clone())),
        ],
        (Action::Start, _) => vec![(Action::Start, Request::Start(target.clone()))],
        (Action::Stop, _) => vec![(Action::Stop, Request::Stop(target.clone()))],
        (Action::Restart, _) => vec![(Action::Restart, Request::Restart(target.clone()))],
    };
    let mut last = Value::Null;
    let mut names: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for (a, request) in steps {
        let v = ask(&mut c, &request).map_err(|e| {
            let m = e.message();
            let kind = if m.starts_with("no process") || m.starts_with("no tenant group") {
                ErrorKind::NotFound
            } else {
                e.kind()
            };
            Error::new(kind, format!("{}: {m}", request.line()))
        })?;
        names = v["names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let before = &v["status"];
        let old: Vec<Option<u64>> = names
            .iter()
            .map(|n| find(before, n).and_then(|p| p["pid"].as_u64()))
            .collect();
        let t0 = Instant::now();
        let mut next_note = t0 + Duration::from_secs(1);
        loop {
            let s = ask(&mut c, &Request::Status)?["status"].take();
            let outcome: Vec<Option<std::result::Result<(), String>>> = names
                .iter()
                .zip(&old)
                .map(|(n, &o)| match find(&s, n) {
                    Some(p) => settled(a, p, o),
                    None => Some(Err(format!("{n} is gone from the table"))),
                })
                .collect();
            last = s;
            if outcome.iter().all(Option::is_some) {
                failures = outcome
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.err())
                    .collect();
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                eprint!("{}", table(&last, Some(&names)));
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{}: not done within {timeout_ms} ms (see the states above)",
                        request.line()
                    ),
                ));
            }
            if now >= next_note {
                next_note = now + Duration::from_secs(1);
                let waiting: Vec<String> = names
                    .iter()
                    .zip(&outcome)
                    .filter(|(_, o)| o.is_none())
                    .map(|(n, _)| {
                        let st = find(&last, n).map_or("?".into(), |p| text(&p["state"]));
                        format!("{n} ({st})")
                    })
                    .collect();
                eprintln!(
                    "{}: waiting {:.0} s for {}",
                    request.line(),
                    t0.elapsed().as_secs_f64(),
                    waiting.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !failures.is_empty() {
            break;
        }
    }
    print!("{}", table(&last, Some(&names)));
    if !failures.is_empty() {
        return Err(Error::new(ErrorKind::Unavailable, failures.join("; ")));
    }
    Ok(())
}

/// The log file of `name`: from the running supervisor, else from the
/// status file it left (`<domain>/ha/status.json`).
fn log_path(domain: &Path, name: &str) -> Result<PathBuf> {
    let status = match connect(domain) {
        Ok(mut c) => ask(&mut c, &Request::Status)?["status"].take(),
        Err(e) if e.kind() == ErrorKind::Unavailable => {
            let file = mtipc_cli::ha::supervisor::status_path(domain);
            let text = std::fs::read(&file).map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{} (and no status file {} to find the log by)",
                        e.message(),
                        file.display()
                    ),
                )
            })?;
            serde_json::from_slice(&text)
                .map_err(|x| Error::new(ErrorKind::Corrupt, format!("{}: {x}", file.display())))?
        }
        Err(e) => return Err(e),
    };
    let p = find(&status, name)
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no process {name:?}")))?;
    p["log"].as_str().map(PathBuf::from).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("the status does not name {name}'s log (a supervisor older than mtipc ha log)"),
        )
    })
}

/// The last `n` lines of `file` (each with its newline, the last one
/// perhaps without), read backwards from its end in blocks; none if the
/// file does not exist.
fn tail(file: &Path, n: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.seek(SeekFrom::End(0))?;
    let mut at = len;
    let mut buf: Vec<u8> = Vec::new();
    // Enough once it holds n newlines before the last byte.
    while at > 0 {
        let newlines = buf
            .iter()
            .take(buf.len().saturating_sub(1))
            .filter(|&&b| b == b'\n')
            .count();
        if newlines >= n {
            break;
        }
        let step = at.min(64 * 1024);
        at -= step;
        f.seek(SeekFrom::Start(at))?;
        let mut block = vec![0u8; step as usize];
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
    }
    let mut lines: Vec<Vec<u8>> = buf
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    // A first piece cut in the middle of a line, when the file goes on
    // before it, is not a whole line.
    if at > 0 && lines.len() > n {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

/// `mtipc ha log NAME [--lines N]`: the last N lines of the process's
/// log; from its rotated `.1` too when the current file has fewer.
pub fn log(domain: &Path, name: &str, lines: usize) -> Result<()> {
    let target = parse_target(name).map_err(|e| Error::new(ErrorKind::Invalid, e))?;
    let Target::Process(name) = target else {
        return Err(Error::new(
            ErrorKind::Invalid,
            "mtipc ha log takes a process name, not a tenant group",
        ));
    };
    let path = log_path(domain, &name)?;
    let io = |e| Error::io(path.display(), e);
    let current = tail(&path, lines).map_err(io)?;
    let mut older = Vec::new();
    if current.len() < lines {
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        older = tail(Path::new(&rotated), lines - current.len()).map_err(io)?;
    }
    if current.is_empty() && older.is_empty() && !path.exists() {
        eprintln!("({} has no log yet: {})", name, path.display());
    }
    let mut out = std::io::stdout().lock();
    for l in older.iter().chain(&current) {
        out.write_all(l).map_err(|e| Error::io("stdout", e))?;
    }
    if current.last().is_some_and(|l| l.last() != Some(&b'\n')) {
        out.write_all(b"\n").map_err(|e| Error::io("stdout", e))?;
    }
    Ok(())
}
