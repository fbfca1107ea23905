//! The supervisor's control socket, `<domain>/ha/control.sock`: how
//! `mtipc ha status|start|stop|restart|log` reach a running `mtipc-ha run`
//! (docs/ha.md "The control socket"). The HA Server role will answer the
//! same protocol.
//!
//! **Protocol.** A `SOCK_STREAM` UNIX socket, mode 0600 in the owner-only
//! `<domain>/ha`. Every connection's peer is checked with `SO_PEERCRED`:
//! the supervisor's uid or root, else one error line and the connection is
//! closed. A request is one line of at most [`MAX_REQUEST`] bytes (the
//! newline included) of printable ASCII words separated by single spaces:
//!
//! ```text
//! status
//! start NAME | start @GROUP
//! stop NAME  | stop @GROUP
//! restart NAME
//! ```
//!
//! Each request gets one line, a JSON object: `{"ok":true,"status":S}` for
//! `status`; `{"ok":true,"names":[...],"status":S}` for an action (the
//! names it applies to, in start order; `S` as it was just *before* the
//! change, so that a client can tell new pids from old); or
//! `{"ok":false,"error":"why"}`. `S` is the status file's object
//! ([`super::supervisor::Status`]) plus `roles`. An action only says what
//! is wanted (the engine's calls); the client waits for the change by
//! asking `status` again. Several requests may follow on one connection;
//! it is closed after [`IDLE_TIMEOUT`] without a request, after a request
//! that is too long or not UTF-8, and beyond [`MAX_CONNECTIONS`]
//! connections at once.
//!
//! **Serving.** A thread of the supervisor accepts, checks the peer and
//! reads the lines (one thread per connection, so a slow or hostile
//! client holds only its own); each parsed request goes to the
//! supervisor's loop through a channel, and the thread pokes the loop's
//! wake pipe (the one its signal handlers use), so the loop answers it in
//! its next round, between its other duties, and never blocks on a
//! client's socket.

use super::supervisor::Supervisor;
use mtipc::internals::sync::local::AtomicU32;
use mtipc::internals::sync::Ordering;
use mtipc::log::Level;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// The longest request line, its newline included.
pub const MAX_REQUEST: usize = 1024;
/// Connections served at once; more are answered with an error and closed.
pub const MAX_CONNECTIONS: u32 = 32;
/// A connection without a request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection's thread waits for the loop's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

const TARGET: &str = "mtipc-ha";

/// The control socket's path under a domain.
pub fn control_path(domain: &Path) -> PathBuf {
    domain.join("ha").join("control.sock")
}

/// What an action applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One process, by name.
    Process(String),
    /// The members of a tenant group (`@GROUP`).
    Group(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Process(n) => f.write_str(n),
            Target::Group(g) => write!(f, "@{g}"),
        }
    }
}

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The table.
    Status,
    /// Want the target (in start order).
    Start(Target),
    /// Stop the target (in reverse order).
    Stop(Target),
    /// Stop the process if it runs, then start it (a process only).
    Restart(Target),
}

impl Request {
    /// The request's line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Request::Status => "status".into(),
            Request::Start(t) => format!("start {t}"),
            Request::Stop(t) => format!("stop {t}"),
            Request::Restart(t) => format!("restart {t}"),
        }
    }
}

/// Whether `name` follows the tenant-id rule: 1 to 64 bytes of
/// `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses a target: `NAME` or `@GROUP`, each by the tenant-id rule.
pub fn parse_target(word: &str) -> Result<Target, String> {
    let (group, name) = match word.strip_prefix('@') {
        Some(g) => (true, g),
        None => (false, word),
    };
    if !valid_name(name) {
        let what = if group {
            "tenant group"
        } else {
            "process name"
        };
        return Err(format!(
            "bad {what} {:?}: 1 to 64 bytes of A-Z a-z 0-9 _ . -, not starting with . or -",
            name.chars().take(80).collect::<String>()
        ));
    }
    Ok(if group {
        Target::Group(name.into())
    } else {
        Target::Process(name.into())
    })
}

/// Parses one request line (without its newline). Anything but the forms
/// of the module documentation is refused with the reason: bytes that are
/// not printable ASCII, empty words (two spaces, a leading or trailing
/// one), an unknown verb, a missing or extra word, a bad name.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() >= MAX_REQUEST {
        return Err(format!("request longer than {} bytes", MAX_REQUEST - 1));
    }
    if let Some(b) = line.iter().find(|&&b| !(0x20..0x7f).contains(&b)) {
        return Err(format!(
            "request has a byte that is not printable ASCII (0x{b:02x})"
        ));
    }
    // Printable ASCII: valid UTF-8.
    let text = std::str::from_utf8(line).map_err(|e| e.to_string())?;
    let words: Vec<&str> = text.split(' ').collect();
    if words.iter().any(|w| w.is_empty()) {
        return Err("empty request, or words not separated by single spaces".into());
    }
    match words.as_slice() {
        ["status"] => Ok(Request::Status),
        ["start", t] => Ok(Request::Start(parse_target(t)?)),
        ["stop", t] => Ok(Request::Stop(parse_target(t)?)),
        ["restart", t] => match parse_target(t)? {
            Target::Group(g) => Err(format!(
                "restart @{g}: a tenant group restarts as stop @{g}, then start @{g} (mtipc ha restart @{g} does both)"
            )),
            p => Ok(Request::Restart(p)),
        },
        [verb @ ("status" | "start" | "stop" | "restart"), ..] => Err(format!(
            "{verb}: wrong number of arguments (status; start|stop NAME|@GROUP; restart NAME)"
        )),
        [verb, ..] => Err(format!(
            "unknown request {:?} (status; start|stop NAME|@GROUP; restart NAME)",
            verb.chars().take(40).collect::<String>()
        )),
        [] => Err("empty request".into()),
    }
}

/// An error answer.
pub fn error_answer(why: &str) -> String {
    json!({ "ok": false, "error": why }).to_string()
}

/// The status as the control socket gives it: the status file's object,
/// with `roles` (the five roles' pids under `mtipc-ha up`; under
/// `mtipc-ha run`, that one process does their work).
pub fn status_value(sup: &Supervisor) -> Value {
    let status = sup.status();
    let pid = status.supervisor_pid;
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    if v.get("roles").is_none() {
        v["roles"] = json!({
            "split": false,
            "supervisor_pid": pid,
            "note": "mtipc-ha run: one process does the work of the five roles",
        });
    }
    v
}

/// Applies one request to the table and returns its answer line (no
/// newline). `node_stopping`: the node is stopping (SIGTERM), so nothing
/// may be started.
pub fn answer(sup: &mut Supervisor, request: &Request, node_stopping: bool) -> String {
    if *request == Request::Status {
        return json!({ "ok": true, "status": status_value(sup) }).to_string();
    }
    if node_stopping && !matches!(request, Request::Stop(_)) {
        return error_answer("the node is stopping (mtipc-ha run got its stop signal)");
    }
    let before = status_value(sup);
    let names: Vec<String> = match request {
        Request::Status => unreachable!(),
        Request::Start(t) | Request::Stop(t) | Request::Restart(t) => match t {
            Target::Process(n) => vec![n.clone()],
            Target::Group(g) => sup
                .status()
                .processes
                .into_iter()
                .filter(|p| p.group.as_deref() == Some(g.as_str()))
                .map(|p| p.name)
                .collect(),
        },
    };
    let done = match request {
        Request::Status => Ok(()),
        Request::Start(Target::Process(n)) => sup.start(n),
        Request::Start(Target::Group(g)) => sup.start_group(g),
        Request::Stop(Target::Process(n)) => sup.stop(n),
        Request::Stop(Target::Group(g)) => sup.stop_group(g),
        Request::Restart(Target::Process(n)) => sup.restart(n),
        Request::Restart(Target::Group(g)) => Err(format!("restart @{g}: not a request")),
    };
    match done {
        Ok(()) => {
            mtipc::log::emit(Level::Info, TARGET, &format!("control: {}", request.line()));
            json!({ "ok": true, "names": names, "status": before }).to_string()
        }
        Err(why) => error_answer(&why),
    }
}

/// A request waiting for the loop, and where its answer goes.
struct Pending {
    request: Request,
    reply: SyncSender<String>,
}

/// The control socket of a supervisor: its accepting thread runs for the
/// life of the process; the loop calls [`Control::serve`] every round.
pub struct Control {
    path: PathBuf,
    rx: Receiver<Pending>,
}

impl Control {
    /// Listens at `path` (a stale socket there is removed first: the
    /// caller holds the domain's `run.lock`; mode 0600) and starts the
    /// accepting thread. `wake` ends the loop's wait (async-signal-safe
    /// or not: it is called from threads).
    pub fn bind(path: &Path, wake: fn()) -> std::io::Result<Control> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket: the control socket does not replace it",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = super::listen_at(path)?;
        let (tx, rx) = mpsc::sync_channel::<Pending>(64);
        let active = Arc::new(AtomicU32::new(0));
        std::thread::Builder::new()
            .name("mtipc-ha-control".into())
            .spawn(move || accept_loop(listener, tx, wake, active))?;
        Ok(Control {
            path: path.to_path_buf(),
            rx,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers every request waiting (called by the loop between rounds).
    pub fn serve(&self, sup: &mut Supervisor, node_stopping: bool) {
        self.serve_with(sup, node_stopping, |_| {});
    }

    /// As [`Control::serve`], with `prepare` called once before the first
    /// answer when a request is waiting (the Server refreshes the roles'
    /// pids there, not on every round).
    pub fn serve_with(
        &self,
        sup: &mut Supervisor,
        node_stopping: bool,
        prepare: impl FnOnce(&mut Supervisor),
    ) {
        let mut prepare = Some(prepare);
        while let Ok(p) = self.rx.try_recv() {
            if let Some(f) = prepare.take() {
                f(sup);
            }
            let a = answer(sup, &p.request, node_stopping);
            let _ = p.reply.send(a);
        }
    }
}

impl Drop for Control {
    /// The socket file goes with the supervisor: `mtipc ha` then finds no
    /// supervisor rather than a refused connection.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a peer of uid `peer` may use the control socket of a
/// supervisor running as `own`: the same uid, or root.
pub fn allowed(peer: u32, own: u32) -> bool {
    peer == own || peer == 0
}

/// Whether a client running as `own` talks to a control socket served by
/// uid `server`: its own uid's, or root's; and root talks to any (an
/// operator as root may ask a user's supervisor, which lets root in).
pub fn trusted(server: u32, own: u32) -> bool {
    server == own || server == 0 || own == 0
}

fn accept_loop(
    listener: UnixListener,
    tx: SyncSender<Pending>,
    wake: fn(),
    active: Arc<AtomicU32>,
) {
    let own = mtipc::internals::sys::euid();
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                mtipc::log::emit(Level::Warn, TARGET, &format!("control: accept: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let peer = match mtipc::internals::sys::peer_cred(&stream) {
            Ok(p) => p,
            Err(e) => {
                mtipc::log::emit(Level::Warn, TARGET, &format!("control: SO_PEERCRED: {e}"));
                continue;
            }
        };
        if !allowed(peer.uid, own) {
            mtipc::log::emit(
                Level::Warn,
                TARGET,
                &format!(
                    "control: refused pid {} (uid {}): not uid {own} or root",
                    peer.pid, peer.uid
                ),
            );
            let _ = writeln!(
                stream,
                "{}",
                error_answer(&format!(
                    "refused: uid {} is neither the supervisor's uid {own} nor root",
                    peer.uid
                ))
            );
            continue;
        }
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            let _ = writeln!(
                stream,
                "{}",
                error_answer(&format!("busy: {MAX_CONNECTIONS} connections already"))
            );
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let tx = tx.clone();
        let count = Arc::clone(&active);
        let spawned = std::thread::Builder::new()
            .name("mtipc-ha-control-conn".into())
            .spawn(move || {
                connection(stream, &tx, wake);
                count.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            mtipc::log::emit(Level::Warn, TARGET, &format!("control: thread: {e}"));
        }
    }
}

/// Serves one connection: its requests, one line each, until it closes,
/// idles out, or sends a line too long.
fn connection(stream: UnixStream, tx: &SyncSender<Pending>, wake: fn()) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_REQUEST as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            let why = if line.len() >= MAX_REQUEST {
                format!("request longer than {} bytes", MAX_REQUEST - 1)
            } else {
                "request not ended by a newline".into()
            };
            let _ = writeln!(out, "{}", error_answer(&why));
            return;
        }
        line.pop();
        let answer = match parse_request(&line) {
            Err(why) => error_answer(&why),
            Ok(request) => {
                let (reply, answer) = mpsc::sync_channel(1);
                if tx.send(Pending { request, reply }).is_err() {
                    return;
                }
                wake();
                answer.recv_timeout(ANSWER_TIMEOUT).unwrap_or_else(|e| {
                    error_answer(match e {
                        mpsc::RecvTimeoutError::Timeout => {
                            "the supervisor did not answer within 10 s"
                        }
                        mpsc::RecvTimeoutError::Disconnected => "the supervisor is exiting",
                    })
                })
            }
        };
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// Why a client could not talk to a supervisor.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens at the path (no file, or a stale socket).
    NotRunning(String),
    /// Any other failure, with the reason.
    Failed(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(s) | ClientError::Failed(s) => f.write_str(s),
        }
    }
}

/// A connection to a supervisor's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    out: UnixStream,
}

impl Client {
    /// Connects to `path`, and refuses a listener that runs as neither
    /// this uid nor root, unless this process is root ([`trusted`],
    /// `SO_PEERCRED`). A missing socket or one nothing
    /// listens on is [`ClientError::NotRunning`].
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            let shown = path.display();
            match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => ClientError::NotRunning(format!(
                    "no HA supervisor runs on this domain ({shown}: {e})"
                )),
                _ => ClientError::Failed(format!("HA control socket {shown}: {e}")),
            }
        })?;
        let own = mtipc::internals::sys::euid();
        let peer = mtipc::internals::sys::peer_cred(&stream)
            .map_err(|e| ClientError::Failed(format!("SO_PEERCRED: {e}")))?;
        if !trusted(peer.uid, own) {
            return Err(ClientError::Failed(format!(
                "{} is served by uid {} (pid {}), neither this uid {own} nor root: refused",
                path.display(),
                peer.uid,
                peer.pid
            )));
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
        let out = stream
            .try_clone()
            .map_err(|e| ClientError::Failed(e.to_string()))?;
        Ok(Client {
            reader: BufReader::new(stream),
            out,
        })
    }

    /// Sends one request and returns its answer's object when it says
    /// `"ok": true`; else the error it gives.
    pub fn request(&mut self, request: &Request) -> Result<Value, String> {
        self.raw(&request.line())
    }

    /// Sends `line` (a newline is added) and reads one answer.
    pub fn raw(&mut self, line: &str) -> Result<Value, String> {
        // A refused connection may be closed before the request is
        // written (EPIPE): the refusal's line is still there to read.
        let sent = writeln!(self.out, "{line}");
        let mut answer = String::new();
        match self.reader.read_line(&mut answer) {
            Ok(0) => {
                return Err(match sent {
                    Err(e) => format!("control socket: {e}"),
                    Ok(()) => "the supervisor closed the connection".into(),
                })
            }
            Ok(_) => {}
            Err(e) => return Err(format!("control socket: {e}")),
        }
        let v: Value = serde_json::from_str(&answer)
            .map_err(|e| format!("bad answer from the supervisor: {e}"))?;
        if v["ok"] == true {
            Ok(v)
        } else {
            Err(v["error"]
                .as_str()
                .unwrap_or("the supervisor refused the request")
                .to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request(b"status"), Ok(Request::Status));
        assert_eq!(
            parse_request(b"start db"),
            Ok(Request::Start(Target::Process("db".into())))
        );
        assert_eq!(
            parse_request(b"stop @acme"),
            Ok(Request::Stop(Target::Group("acme".into())))
        );
        assert_eq!(
            parse_request(b"restart web.1"),
            Ok(Request::Restart(Target::Process("web.1".into())))
        );
        for r in [
            Request::Status,
            Request::Start(Target::Group("g".into())),
            Request::Restart(Target::Process("p".into())),
        ] {
            assert_eq!(parse_request(r.line().as_bytes()), Ok(r));
        }
    }

    #[test]
    fn hostile_requests_are_refused_with_a_reason() {
        let refused = |line: &[u8], what: &str| {
            let e = parse_request(line).unwrap_err();
            assert!(e.contains(what), "{:?}: {e}", String::from_utf8_lossy(line));
        };
        refused(b"", "empty");
        refused(b"status ", "single spaces");
        refused(b" status", "single spaces");
        refused(b"start  db", "single spaces");
        refused(b"status x", "wrong number");
        refused(b"start", "wrong number");
        refused(b"stop a b", "wrong number");
        refused(b"kill db", "unknown request");
        refused(b"STATUS", "unknown request");
        refused(b"start db\r", "printable");
        refused(b"start d\x00b", "printable");
        refused(b"start \xc3\xa9", "printable");
        refused(b"start \tdb", "printable");
        refused(b"start ../x", "bad process name");
        refused(b"start -x", "bad process name");
        refused(b"start .x", "bad process name");
        refused(b"stop @", "bad tenant group");
        refused(b"stop @@g", "bad tenant group");
        refused(b"start a/b", "bad process name");
        refused(
            format!("start {}", "x".repeat(65)).as_bytes(),
            "bad process name",
        );
        refused(b"restart @g", "stop @g, then start @g");
        refused(&[b'a'; MAX_REQUEST], "longer than");
        assert!(parse_request(format!("start {}", "x".repeat(64)).as_bytes()).is_ok());
    }

    /// Random lines (bytes from a small alphabet that makes valid
    /// requests likely, and any byte): never a panic, and whatever is
    /// accepted is exactly its canonical line.
    #[test]
    fn random_lines_never_panic_and_accepted_ones_are_canonical() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words: [&[u8]; 10] = [
            b"status", b"start", b"stop", b"restart", b" ", b"@", b"db", b"-", b"\xff", b"\n",
        ];
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut line = Vec::new();
            for _ in 0..next() % 6 {
                match next() % 4 {
                    0 => line.push((next() % 256) as u8),
                    _ => line.extend_from_slice(words[(next() % 10) as usize]),
                }
            }
            if let Ok(r) = parse_request(&line) {
                accepted += 1;
                assert_eq!(r.line().as_bytes(), &line[..]);
            }
        }
        assert!(accepted > 100, "{accepted}");
    }

    #[test]
    fn only_the_same_uid_or_root() {
        assert!(allowed(1000, 1000));
        assert!(allowed(0, 1000));
        assert!(allowed(0, 0));
        assert!(!allowed(65534, 1000));
        assert!(!allowed(1000, 0));
        assert!(trusted(1000, 1000));
        assert!(trusted(0, 1000));
        assert!(trusted(1000, 0));
        assert!(!trusted(65534, 1000));
    }
}
