//! The HA configuration file (DESIGN.md section 4, `docs/ha.md`
//! "Configuration"): one TOML file with the node (`[node]`) and its
//! processes (`[[process]]`), read and checked as a whole, and the orders
//! the roles start and stop the processes in.
//!
//! [`Config::load`] (or [`Config::parse`]) refuses a bad file with every
//! [`Problem`] it finds, each with the line it is on and the reason: a
//! TOML syntax error, an unknown key (a typo never passes silently), a
//! duplicate process name, an unknown dependency, a dependency cycle (the
//! cycle named), a value out of range or of the wrong type, an unknown
//! enum value or signal name, an empty command, a name that breaks the
//! tenant-id rule. A good file gives a [`Config`] whose values are all
//! filled in (the defaults written in [`defaults`]) and whose
//! [`start_order`](Config::start_order) is computed: a topological order
//! where a process comes after everything it depends on, and among the
//! processes whose dependencies are all placed the lowest `priority` comes
//! first, then the lowest name. The stop order is its reverse, and a
//! tenant group's members keep the same relative order.
//!
//! Only with the cargo feature `ha-config` (the programs turn it on): the
//! library linked by an application carries neither `toml` nor `serde`.

use crate::sys::name_problem;
use serde::Deserialize;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The default of every optional key (docs/ha.md lists them too).
pub mod defaults {
    /// `monitor_ms`: how often the Monitor checks a process.
    pub const MONITOR_MS: u64 = 1000;
    /// `priority`.
    pub const PRIORITY: i32 = 0;
    /// `restart_backoff_ms`: the first restart's delay.
    pub const RESTART_BACKOFF_MS: u64 = 100;
    /// `restart_backoff_max_ms`: the delay doubles up to this.
    pub const RESTART_BACKOFF_MAX_MS: u64 = 30_000;
    /// `restart_max`: restarts allowed within `restart_window_ms`.
    pub const RESTART_MAX: u32 = 10;
    /// `restart_window_ms`.
    pub const RESTART_WINDOW_MS: u64 = 60_000;
    /// `stop_timeout_ms`: after the stop signal, SIGKILL this much later.
    pub const STOP_TIMEOUT_MS: u64 = 10_000;
    /// `cwd`.
    pub const CWD: &str = "/";
    /// `log_max_bytes`: a log file is rotated when it reaches this size.
    pub const LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
    /// `log_keep`: rotated files kept (`NAME.log.1` ... `NAME.log.N`).
    pub const LOG_KEEP: u32 = 5;
    /// Where log files go when `log` is not absolute, under the domain.
    pub const LOG_DIR: &str = "ha/log";
}

/// The limits values are checked against.
pub mod limits {
    /// `monitor_ms` and a non-zero `watchdog_ms` are at least this.
    pub const MIN_PERIOD_MS: u64 = 10;
    /// The largest duration any `*_ms` key takes: one day.
    pub const MAX_MS: u64 = 86_400_000;
    /// `priority` is within ±this.
    pub const MAX_PRIORITY: i64 = 1_000_000;
    /// The largest `restart_max`.
    pub const MAX_RESTARTS: u64 = 1_000_000;
    /// The smallest `log_max_bytes`.
    pub const MIN_LOG_BYTES: u64 = 4096;
    /// The largest `log_keep`.
    pub const MAX_LOG_KEEP: u64 = 100;
    /// The most processes one node runs.
    pub const MAX_PROCESSES: usize = 4096;
    /// The longest configuration file read (bytes).
    pub const MAX_FILE: u64 = 4 * 1024 * 1024;
    /// The longest path (bytes) a `cwd`, `log` or `domain` may be.
    pub const MAX_PATH: usize = 4096;
}

/// When the Spawner restarts a process that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Whatever the exit status (the default).
    Always,
    /// Only after a non-zero exit status or a signal.
    OnFailure,
    /// Never: an exited process stays `stopped` (or `failed`).
    Never,
}

/// When a started process counts as up (for its dependents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// As soon as it is started (the default).
    Started,
    /// Once it has called `mt_ha_ready` (the `notify` readiness).
    Notify,
}

/// Where a process runs in a duplex pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Only on the active node (the default: a process that knows nothing
    /// of the pair never runs twice).
    Active,
    /// On both nodes (it learns its node's role through `mt_ha_on_role`).
    Everywhere,
}

macro_rules! words {
    ($t:ty { $($word:literal => $v:ident),+ $(,)? }) => {
        impl $t {
            /// The word the file uses.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $word),+ }
            }
            fn parse(s: &str) -> Option<$t> {
                match s { $($word => Some(<$t>::$v),)+ _ => None }
            }
            fn expected() -> &'static str {
                concat!($($word, " "),+)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
words!(Restart { "always" => Always, "on-failure" => OnFailure, "never" => Never });
words!(Ready { "started" => Started, "notify" => Notify });
words!(Placement { "active" => Active, "everywhere" => Everywhere });

/// The signals `stop_signal` may name (with or without `SIG`).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ABRT", libc::SIGABRT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("WINCH", libc::SIGWINCH),
];

/// A signal to stop a process with: its name (without `SIG`) and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    /// `"TERM"`, `"INT"`, ...
    pub name: &'static str,
    /// `libc::SIGTERM`, ...
    pub number: i32,
}

impl Signal {
    /// SIGTERM, the default `stop_signal`.
    pub const TERM: Signal = Signal {
        name: "TERM",
        number: libc::SIGTERM,
    };

    /// The signal named `s` (`"TERM"`, `"SIGTERM"`; upper case only).
    pub fn parse(s: &str) -> Option<Signal> {
        let bare = s.strip_prefix("SIG").unwrap_or(s);
        SIGNALS
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|&(name, number)| Signal { name, number })
    }
}

/// The peer of a duplex pair (`[node] peer`), kept for the duplex roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `address`: where the peer's Server listens (`host:port`).
    pub address: String,
    /// `key`: the pin of the peer's key, `sha256:` and 64 hex digits.
    pub key: String,
}

/// The `[node]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `name`: this node's name (the tenant-id rule).
    pub name: String,
    /// `domain`: the domain directory; `None`: as `mt_domain_open(NULL)`.
    pub domain: Option<PathBuf>,
    /// Duplex only, parsed and kept (not used yet): `listen`.
    pub listen: Option<String>,
    /// Duplex only: `key`, this node's private key file.
    pub key: Option<PathBuf>,
    /// Duplex only: `lease_ms`, the witness lease.
    pub lease_ms: Option<u64>,
    /// Duplex only: `peer`.
    pub peer: Option<Peer>,
    /// Duplex only: `witness`, etcd endpoints.
    pub witness: Vec<String>,
}

/// One `[[process]]`, with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// `name` (the tenant-id rule), unique in the file.
    pub name: String,
    /// The line of its `[[process]]` header (for messages).
    pub line: usize,
    /// `command`: the program and its arguments (not empty; the program
    /// not empty).
    pub command: Vec<String>,
    /// `depends_on`: names of processes of the file (no duplicates).
    pub depends_on: Vec<String>,
    /// `monitor_ms`: how often the Monitor checks it.
    pub monitor_ms: u64,
    /// `priority`: lower starts first among those whose dependencies are up.
    pub priority: i32,
    /// `tenant_group`: the group it starts and stops with, if any.
    pub tenant_group: Option<String>,
    /// `restart`.
    pub restart: Restart,
    /// `restart_backoff_ms`: the delay before the first restart; it doubles
    /// after each restart up to `restart_backoff_max_ms`.
    pub restart_backoff_ms: u64,
    /// `restart_backoff_max_ms`.
    pub restart_backoff_max_ms: u64,
    /// `restart_max`: at most this many restarts within any
    /// `restart_window_ms`; past it the process is `failed`.
    pub restart_max: u32,
    /// `restart_window_ms`.
    pub restart_window_ms: u64,
    /// `ready`.
    pub ready: Ready,
    /// `watchdog_ms`: heartbeats expected at least this often; 0: none.
    pub watchdog_ms: u64,
    /// `placement`.
    pub placement: Placement,
    /// `env`: variables set over the environment mtipc-ha runs with.
    pub env: BTreeMap<String, String>,
    /// `cwd`: the working directory (absolute).
    pub cwd: PathBuf,
    /// `user`: the user (name or number) it runs as; `None`: mtipc-ha's.
    pub user: Option<String>,
    /// `stop_signal`.
    pub stop_signal: Signal,
    /// `stop_timeout_ms`: SIGKILL this long after the stop signal.
    pub stop_timeout_ms: u64,
    /// `log`: its stdout and stderr; `None`: `<domain>/ha/log/<name>.log`.
    /// A relative path is taken under `<domain>/ha/log/`.
    pub log: Option<PathBuf>,
    /// `log_max_bytes`: the log is rotated when it reaches this size.
    pub log_max_bytes: u64,
    /// `log_keep`: rotated logs kept.
    pub log_keep: u32,
}

impl Process {
    /// The file its stdout and stderr go to, in the domain `domain`.
    pub fn log_file(&self, domain: &Path) -> PathBuf {
        let dir = domain.join(defaults::LOG_DIR);
        match &self.log {
            None => dir.join(format!("{}.log", self.name)),
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => dir.join(p),
        }
    }
}

/// A checked configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (as given).
    pub file: PathBuf,
    /// `[node]`.
    pub node: Node,
    /// The processes in start order (see the module documentation).
    pub processes: Vec<Process>,
}

/// One thing wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The line (from 1) it is on.
    pub line: usize,
    /// What is wrong, one line.
    pub reason: String,
}

/// Why a configuration file was refused: the file and every problem found
/// (by line). Displayed as one `FILE:LINE: reason` line per problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (as given).
    pub file: PathBuf,
    /// The problems, sorted by line; never empty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}: {}", self.file.display(), p.line, p.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// As the library's error: `Invalid`, with every problem in the
    /// message. (Not a `From`: a second conversion into `Error` would
    /// leave `?` on untyped results ambiguous elsewhere in the crate.)
    pub fn into_error(self) -> crate::Error {
        crate::Error::new(crate::ErrorKind::Invalid, self.to_string())
    }
}

impl Config {
    /// Reads and checks the file at `path` (at most
    /// [`limits::MAX_FILE`] bytes of UTF-8). A file that cannot be read
    /// is one problem at line 1.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let fail = |reason: String| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem { line: 1, reason }],
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(limits::MAX_FILE + 1).read_to_end(&mut bytes))
            .map_err(|e| fail(format!("cannot read the file: {e}")))?;
        if bytes.len() as u64 > limits::MAX_FILE {
            return Err(fail(format!(
                "the file is larger than {} bytes",
                limits::MAX_FILE
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
            ConfigError {
                file: path.to_path_buf(),
                problems: vec![Problem {
                    line,
                    reason: "the file is not valid UTF-8".into(),
                }],
            }
        })?;
        Config::parse(&text, path)
    }

    /// Checks the text of a configuration file; `file` is only used in
    /// messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let lines = Lines::new(text);
        let fail = |problems: Vec<Problem>| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| lines.of(s.start));
            fail(vec![Problem {
                line,
                reason: one_line(e.message()),
            }])
        })?;
        let mut c = Checker {
            lines: &lines,
            problems: Vec::new(),
        };
        let node = c.node(raw.node);
        let mut processes = Vec::new();
        let mut deps_at = Vec::new();
        if raw.process.len() > limits::MAX_PROCESSES {
            c.at(
                raw.process[limits::MAX_PROCESSES].span().start,
                format!("more than {} processes in one node", limits::MAX_PROCESSES),
            );
        }
        for p in raw.process {
            let (p, deps) = c.process(p);
            processes.push(p);
            deps_at.push(deps);
        }
        let order = c.order(&processes, &deps_at);
        if !c.problems.is_empty() {
            c.problems.sort_by_key(|p| p.line);
            return Err(fail(c.problems));
        }
        let mut slots: Vec<Option<Process>> = processes.into_iter().map(Some).collect();
        let processes = order
            .into_iter()
            .map(|i| slots[i].take().expect("each index once"))
            .collect();
        Ok(Config {
            file: file.to_path_buf(),
            node: node.expect("no problems: the node is good"),
            processes,
        })
    }

    /// The processes in start order.
    pub fn start_order(&self) -> impl DoubleEndedIterator<Item = &Process> {
        self.processes.iter()
    }

    /// The processes in stop order: the start order reversed.
    pub fn stop_order(&self) -> impl Iterator<Item = &Process> {
        self.processes.iter().rev()
    }

    /// The process named `name`.
    pub fn process(&self, name: &str) -> Option<&Process> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// The tenant groups, by name, each with its members in start order
    /// (stop a group in the reverse of that order).
    pub fn groups(&self) -> BTreeMap<&str, Vec<&Process>> {
        let mut g: BTreeMap<&str, Vec<&Process>> = BTreeMap::new();
        for p in &self.processes {
            if let Some(name) = &p.tenant_group {
                g.entry(name.as_str()).or_default().push(p);
            }
        }
        g
    }

    /// The members of tenant group `group` in start order (empty for a
    /// group no process names).
    pub fn group(&self, group: &str) -> Vec<&Process> {
        self.processes
            .iter()
            .filter(|p| p.tenant_group.as_deref() == Some(group))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The file as serde reads it: every key known (deny_unknown_fields), values
// with their spans, checked afterwards by `Checker`.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: Spanned<RawNode>,
    #[serde(default)]
    process: Vec<Spanned<RawProcess>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    domain: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    lease_ms: Option<Spanned<i64>>,
    peer: Option<Spanned<RawPeer>>,
    witness: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    name: Spanned<String>,
    command: Spanned<Vec<Spanned<String>>>,
    depends_on: Option<Vec<Spanned<String>>>,
    monitor_ms: Option<Spanned<i64>>,
    priority: Option<Spanned<i64>>,
    tenant_group: Option<Spanned<String>>,
    restart: Option<Spanned<String>>,
    restart_backoff_ms: Option<Spanned<i64>>,
    restart_backoff_max_ms: Option<Spanned<i64>>,
    restart_max: Option<Spanned<i64>>,
    restart_window_ms: Option<Spanned<i64>>,
    ready: Option<Spanned<String>>,
    watchdog_ms: Option<Spanned<i64>>,
    placement: Option<Spanned<String>>,
    env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    cwd: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    stop_signal: Option<Spanned<String>>,
    stop_timeout_ms: Option<Spanned<i64>>,
    log: Option<Spanned<String>>,
    log_max_bytes: Option<Spanned<i64>>,
    log_keep: Option<Spanned<i64>>,
}

/// Byte offsets to line numbers.
struct Lines {
    /// The offset of each line's first byte.
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// The line (from 1) of byte `offset`.
    fn of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).max(1)
    }
}

/// A message of toml's on one line (its messages may span several).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Gathers the problems of a file while its values are converted.
struct Checker<'l> {
    lines: &'l Lines,
    problems: Vec<Problem>,
}

/// Where each `depends_on` entry of a process is (for refusals found once
/// every process is known).
type DepSpans = Vec<usize>;

impl Checker<'_> {
    fn at(&mut self, offset: usize, reason: String) {
        self.problems.push(Problem {
            line: self.lines.of(offset),
            reason,
        });
    }

    fn name(&mut self, what: &str, s: &Spanned<String>) -> bool {
        match name_problem(s.get_ref()) {
            None => true,
            Some(why) => {
                self.at(
                    s.span().start,
                    format!("{what} {}: {why}", crate::sys::shown(s.get_ref())),
                );
                false
            }
        }
    }

    /// A `*_ms` or count in `min..=max`.
    fn number(&mut self, key: &str, v: &Option<Spanned<i64>>, min: u64, max: u64) -> Option<u64> {
        let v = v.as_ref()?;
        let n = *v.get_ref();
        if n < 0 || (n as u64) < min || (n as u64) > max {
            let why = if n < 0 {
                "is negative".to_string()
            } else if n == 0 && min > 0 {
                "must not be 0".to_string()
            } else {
                "is out of range".to_string()
            };
            self.at(
                v.span().start,
                format!("{key} = {n} {why} (allowed: {min} to {max})"),
            );
            return None;
        }
        Some(n as u64)
    }

    fn word<T: Copy>(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        parse: fn(&str) -> Option<T>,
        expected: &str,
    ) -> Option<T> {
        let v = v.as_ref()?;
        let r = parse(v.get_ref());
        if r.is_none() {
            self.at(
                v.span().start,
                format!(
                    "{key} = {} is not one of: {}",
                    crate::sys::shown(v.get_ref()),
                    expected.trim_end().replace(' ', ", ")
                ),
            );
        }
        r
    }

    fn text(&mut self, key: &str, v: &Spanned<String>) -> bool {
        let s = v.get_ref();
        if s.contains('\0') {
            self.at(v.span().start, format!("{key} contains a NUL character"));
            return false;
        }
        true
    }

    fn path(&mut self, key: &str, v: &Spanned<String>, absolute: bool) -> Option<PathBuf> {
        if !self.text(key, v) {
            return None;
        }
        let s = v.get_ref();
        if s.is_empty() {
            self.at(v.span().start, format!("{key} is empty"));
            return None;
        }
        if s.len() > limits::MAX_PATH {
            self.at(
                v.span().start,
                format!("{key} is longer than {} bytes", limits::MAX_PATH),
            );
            return None;
        }
        if absolute && !s.starts_with('/') {
            self.at(
                v.span().start,
                format!("{key} = {} is not an absolute path", crate::sys::shown(s)),
            );
            return None;
        }
        Some(PathBuf::from(s))
    }

    fn node(&mut self, raw: Spanned<RawNode>) -> Option<Node> {
        let before = self.problems.len();
        let n = raw.into_inner();
        self.name("node name", &n.name);
        let domain = n.domain.as_ref().and_then(|d| self.path("domain", d, true));
        let listen = n.listen.as_ref().and_then(|l| {
            let s = l.get_ref();
            if s.parse::<std::net::SocketAddr>().is_err() {
                self.at(
                    l.span().start,
                    format!(
                        "listen = {} is not an address and port (\"10.0.0.1:7400\")",
                        crate::sys::shown(s)
                    ),
                );
                return None;
            }
            Some(s.clone())
        });
        let key = n.key.as_ref().and_then(|k| self.path("key", k, true));
        let lease_ms = self.number("lease_ms", &n.lease_ms, 100, limits::MAX_MS);
        let peer = n.peer.map(|p| {
            let p = p.into_inner();
            let key = p.key.get_ref();
            let hex = key.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.at(
                    p.key.span().start,
                    format!(
                        "peer key = {} is not a pin (\"sha256:\" and 64 hex digits)",
                        crate::sys::shown(key)
                    ),
                );
            }
            if p.address.get_ref().is_empty() {
                self.at(p.address.span().start, "peer address is empty".into());
            }
            Peer {
                address: p.address.into_inner(),
                key: p.key.into_inner(),
            }
        });
        let mut witness = Vec::new();
        for w in n.witness.unwrap_or_default() {
            let s = w.get_ref();
            if !(s.starts_with("http://") || s.starts_with("https://")) || s.contains(',') {
                self.at(
                    w.span().start,
                    format!(
                        "witness {} is not one http:// or https:// URL",
                        crate::sys::shown(s)
                    ),
                );
            }
            witness.push(w.into_inner());
        }
        (self.problems.len() == before).then(|| Node {
            name: n.name.into_inner(),
            domain,
            listen,
            key,
            lease_ms,
            peer,
            witness,
        })
    }

    /// Converts one process, recording its problems; a bad value is
    /// replaced by its default, so that the process still takes part in
    /// the checks of names and dependencies (a dependent of a process
    /// with a bad value is not told it depends on an unknown one). Also
    /// returns where its `depends_on` entries are.
    fn process(&mut self, raw: Spanned<RawProcess>) -> (Process, DepSpans) {
        use defaults as d;
        let line = self.lines.of(raw.span().start);
        let p = raw.into_inner();
        self.name("process name", &p.name);

        let argv = p.command.get_ref();
        if argv.is_empty() {
            self.at(p.command.span().start, "command is empty".into());
        } else if argv[0].get_ref().is_empty() {
            self.at(argv[0].span().start, "command's program is empty".into());
        }
        for a in argv {
            self.text("command", a);
        }

        let mut depends_on = Vec::new();
        let mut dep_spans = Vec::new();
        for dep in p.depends_on.iter().flatten() {
            if !self.name("depends_on entry", dep) {
                continue;
            }
            if depends_on.contains(dep.get_ref()) {
                self.at(
                    dep.span().start,
                    format!(
                        "depends_on names {} twice",
                        crate::sys::shown(dep.get_ref())
                    ),
                );
                continue;
            }
            depends_on.push(dep.get_ref().clone());
            dep_spans.push(dep.span().start);
        }

        let monitor_ms = self
            .number(
                "monitor_ms",
                &p.monitor_ms,
                limits::MIN_PERIOD_MS,
                limits::MAX_MS,
            )
            .unwrap_or(d::MONITOR_MS);
        let priority = match &p.priority {
            Some(v) if v.get_ref().unsigned_abs() > limits::MAX_PRIORITY as u64 => {
                self.at(
                    v.span().start,
                    format!(
                        "priority = {} is out of range (allowed: -{m} to {m})",
                        v.get_ref(),
                        m = limits::MAX_PRIORITY
                    ),
                );
                d::PRIORITY
            }
            Some(v) => *v.get_ref() as i32,
            None => d::PRIORITY,
        };
        let tenant_group = p
            .tenant_group
            .as_ref()
            .and_then(|g| self.name("tenant_group", g).then(|| g.get_ref().clone()));
        let restart = self
            .word("restart", &p.restart, Restart::parse, Restart::expected())
            .unwrap_or(Restart::Always);
        let restart_backoff_ms = self
            .number(
                "restart_backoff_ms",
                &p.restart_backoff_ms,
                0,
                limits::MAX_MS,
            )
            .unwrap_or(d::RESTART_BACKOFF_MS);
        let restart_backoff_max_ms = self.number(
            "restart_backoff_max_ms",
            &p.restart_backoff_max_ms,
            0,
            limits::MAX_MS,
        );
        let restart_backoff_max_ms = match restart_backoff_max_ms {
            Some(max) if max < restart_backoff_ms => {
                let v = p.restart_backoff_max_ms.as_ref().expect("given");
                self.at(
                    v.span().start,
                    format!(
                        "restart_backoff_max_ms = {max} is less than restart_backoff_ms ({restart_backoff_ms})"
                    ),
                );
                max
            }
            Some(max) => max,
            None => d::RESTART_BACKOFF_MAX_MS.max(restart_backoff_ms),
        };
        let restart_max = self
            .number("restart_max", &p.restart_max, 1, limits::MAX_RESTARTS)
            .map_or(d::RESTART_MAX, |n| n as u32);
        let restart_window_ms = self
            .number("restart_window_ms", &p.restart_window_ms, 1, limits::MAX_MS)
            .unwrap_or(d::RESTART_WINDOW_MS);
        let ready = self
            .word("ready", &p.ready, Ready::parse, Ready::expected())
            .unwrap_or(Ready::Started);
        let watchdog_ms = match &p.watchdog_ms {
            Some(v) if *v.get_ref() == 0 => 0,
            _ => self
                .number(
                    "watchdog_ms",
                    &p.watchdog_ms,
                    limits::MIN_PERIOD_MS,
                    limits::MAX_MS,
                )
                .unwrap_or(0),
        };
        let placement = self
            .word(
                "placement",
                &p.placement,
                Placement::parse,
                Placement::expected(),
            )
            .unwrap_or(Placement::Active);

        let mut env = BTreeMap::new();
        for (k, v) in p.env.into_iter().flatten() {
            let name = k.get_ref();
            let good = !name.is_empty()
                && !name.as_bytes()[0].is_ascii_digit()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !good {
                self.at(
                    k.span().start,
                    format!(
                        "env name {} is not a variable name (A-Z a-z 0-9 _, not starting with a digit)",
                        crate::sys::shown(name)
                    ),
                );
            } else if name == crate::ha::SOCKET_ENV
                || name == crate::ha::FD_ENV
                || name == "MTIPC_HA_PROCESS"
            {
                self.at(
                    k.span().start,
                    format!("env must not set {name}: the Spawner sets it"),
                );
            }
            self.text("env value", &v);
            env.insert(k.into_inner(), v.into_inner());
        }
        let cwd = match &p.cwd {
            Some(c) => self.path("cwd", c, true).unwrap_or_default(),
            None => PathBuf::from(d::CWD),
        };
        let user = p.user.as_ref().and_then(|u| {
            let s = u.get_ref();
            let numeric = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let ok = numeric
                || crate::sys::name::charset_problem(
                    s,
                    32,
                    |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.',
                    "A-Z a-z 0-9 _ - .",
                )
                .is_none()
                    && !s.starts_with('-');
            if !ok {
                self.at(
                    u.span().start,
                    format!(
                        "user = {} is not a user name or number",
                        crate::sys::shown(s)
                    ),
                );
            }
            ok.then(|| s.clone())
        });
        let stop_signal = match &p.stop_signal {
            None => Signal::TERM,
            Some(s) => Signal::parse(s.get_ref()).unwrap_or_else(|| {
                let names: Vec<_> = SIGNALS.iter().map(|(n, _)| *n).collect();
                self.at(
                    s.span().start,
                    format!(
                        "stop_signal = {} is not a signal name (one of: {})",
                        crate::sys::shown(s.get_ref()),
                        names.join(", ")
                    ),
                );
                Signal::TERM
            }),
        };
        let stop_timeout_ms = self
            .number("stop_timeout_ms", &p.stop_timeout_ms, 1, limits::MAX_MS)
            .unwrap_or(d::STOP_TIMEOUT_MS);
        let log = p.log.as_ref().and_then(|l| {
            let path = self.path("log", l, false)?;
            let bad = path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
                && !path.is_absolute();
            if bad {
                self.at(
                    l.span().start,
                    "log: a relative path must stay under the log directory (no ..)".into(),
                );
                return None;
            }
            Some(path)
        });
        let log_max_bytes = self
            .number(
                "log_max_bytes",
                &p.log_max_bytes,
                limits::MIN_LOG_BYTES,
                u64::MAX >> 1,
            )
            .unwrap_or(d::LOG_MAX_BYTES);
        let log_keep = self
            .number("log_keep", &p.log_keep, 0, limits::MAX_LOG_KEEP)
            .map_or(d::LOG_KEEP, |n| n as u32);

        (
            Process {
                name: p.name.into_inner(),
                line,
                command: p
                    .command
                    .into_inner()
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
                depends_on,
                monitor_ms,
                priority,
                tenant_group,
                restart,
                restart_backoff_ms,
                restart_backoff_max_ms,
                restart_max,
                restart_window_ms,
                ready,
                watchdog_ms,
                placement,
                env,
                cwd,
                user,
                stop_signal,
                stop_timeout_ms,
                log,
                log_max_bytes,
                log_keep,
            },
            dep_spans,
        )
    }

    /// The start order (indices into `ps`): duplicate names, unknown
    /// dependencies and cycles are refused here. Kahn's algorithm with the
    /// ready set ordered by (priority, name).
    fn order(&mut self, ps: &[Process], dep_spans: &[DepSpans]) -> Vec<usize> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut known = true;
        for (i, p) in ps.iter().enumerate() {
            if let Some(&first) = index.get(p.name.as_str()) {
                known = false;
                self.problems.push(Problem {
                    line: p.line,
                    reason: format!(
                        "process {} is defined twice (first at line {})",
                        crate::sys::shown(&p.name),
                        ps[first].line
                    ),
                });
            } else {
                index.insert(&p.name, i);
            }
        }
        for (p, spans) in ps.iter().zip(dep_spans) {
            for (dep, &at) in p.depends_on.iter().zip(spans) {
                if !index.contains_key(dep.as_str()) {
                    known = false;
                    self.at(
                        at,
                        format!(
                            "process {} depends on {}, which is not a process of this file",
                            crate::sys::shown(&p.name),
                            crate::sys::shown(dep)
                        ),
                    );
                }
            }
        }
        if !known {
            return Vec::new();
        }
        // dependents[i]: the processes that depend on i.
        let mut waiting: Vec<usize> = ps.iter().map(|p| p.depends_on.len()).collect();
        let mut dependents = vec![Vec::new(); ps.len()];
        for (i, p) in ps.iter().enumerate() {
            for dep in &p.depends_on {
                dependents[index[dep.as_str()]].push(i);
            }
        }
        let key = |i: usize| std::cmp::Reverse((ps[i].priority, ps[i].name.as_str(), i));
        let mut ready: BinaryHeap<_> = (0..ps.len())
            .filter(|&i| waiting[i] == 0)
            .map(key)
            .collect();
        let mut order = Vec::with_capacity(ps.len());
        while let Some(std::cmp::Reverse((_, _, i))) = ready.pop() {
            order.push(i);
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.push(key(d));
                }
            }
        }
        if order.len() < ps.len() {
            let cycle = find_cycle(ps, &index, &waiting);
            let first = cycle[0];
            let next = &ps[cycle[1 % cycle.len()]].name;
            let at = ps[first]
                .depends_on
                .iter()
                .position(|d| d == next)
                .map(|k| dep_spans[first][k]);
            let names: Vec<&str> = cycle
                .iter()
                .chain(std::iter::once(&first))
                .map(|&i| ps[i].name.as_str())
                .collect();
            let reason = format!("dependency cycle: {}", names.join(" -> "));
            match at {
                Some(at) => self.at(at, reason),
                None => self.problems.push(Problem {
                    line: ps[first].line,
                    reason,
                }),
            }
        }
        order
    }
}

/// A cycle among the processes left unordered (`waiting[i] > 0`): each
/// depends on the next, the last on the first. Starts from the unordered
/// process that comes first in the file, so the message is stable.
fn find_cycle(ps: &[Process], index: &HashMap<&str, usize>, waiting: &[usize]) -> Vec<usize> {
    // Every unordered process has an unordered dependency: walking them
    // must come back to a process already on the path.
    let mut at = (0..ps.len()).find(|&i| waiting[i] > 0).expect("a cycle");
    let mut path: Vec<usize> = Vec::new();
    loop {
        if let Some(pos) = path.iter().position(|&p| p == at) {
            let mut cycle = path.split_off(pos);
            // Begin with the member that comes first in the file.
            let min = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
            cycle.rotate_left(min);
            return cycle;
        }
        path.push(at);
        at = ps[at]
            .depends_on
            .iter()
            .map(|d| index[d.as_str()])
            .find(|&d| waiting[d] > 0)
            .expect("an unordered process has an unordered dependency");
    }
}

#[cfg(test)]
mod tests;
