//! `mtipc sessions`: the session sets of a domain (tables and request
//! areas) and its shared closures.
//!
//! For each table: capacity, live sessions (by high-level state, by bound
//! worker), requests in flight; the request area's workers by group with
//! pid, liveness (the kernel lock of the worker's process record), idle and
//! served counts, the groups' statistics and the slots by state; the
//! processes that joined the table. Then the closures with their current
//! version, the versions on disk and their readers.
//!
//! Reading is done as any other process does it: each set is opened (which
//! joins its table with one process record, let go at exit), the request
//! area read with [`Sessions::snapshot`], the table scanned slot by slot.
//! After the look, dead workers are reaped and the slots of dead submitters
//! freed, as the design asks of `mtipc sessions` (`--no-reap` to only
//! look); what was found is shown as it was found (a dead worker appears
//! dead, then "reaped").
//!
//! A table or area that cannot be opened (corrupt, other layout version,
//! not ours) is reported with its error and the others are still shown;
//! the exit status is then 1.

use mtipc::session::{requests_path, DispatchSnapshot, Session, Sessions, Table, WorkerRef};
use mtipc::{Domain, Error, ErrorKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Tables of at least this many slots get a progress indication on stderr
/// (when stderr is a terminal): a scan reads every entry (about 1 s for a
/// million slots).
pub const PROGRESS_MIN_SLOTS: u32 = 100_000;
/// Slots scanned between two looks at the clock.
const CHUNK: u32 = 16_384;
/// Time between two progress updates.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What to show and do.
pub struct Options {
    /// Only this table.
    pub name: Option<String>,
    /// Reap dead workers and free dead submitters' slots after the look.
    pub reap: bool,
    /// Show progress on stderr for big tables (stderr is a terminal).
    pub progress: bool,
}

/// An error as the report shows it.
#[derive(Serialize, Clone, Debug)]
pub struct ErrorReport {
    /// `MT_ERR_*`.
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

impl From<&Error> for ErrorReport {
    fn from(e: &Error) -> Self {
        ErrorReport {
            kind: e.kind().name(),
            message: e.message().to_string(),
        }
    }
}

/// Sessions with one high-level state.
#[derive(Serialize, Debug)]
pub struct StateCount {
    /// The state (the application's value).
    pub state: u32,
    /// Live sessions in it.
    pub sessions: u64,
}

/// Sessions bound to one worker (or to none).
#[derive(Serialize, Debug)]
pub struct WorkerSessions {
    /// The worker record (`None`: unbound sessions).
    pub worker: Option<u32>,
    /// The worker generation the binding names.
    pub gen: Option<u32>,
    /// The worker's group, if the binding names a registered worker.
    pub group: Option<u32>,
    /// Its pid, likewise.
    pub pid: Option<u32>,
    /// Its liveness, likewise (`None`: the binding names a worker that is
    /// no longer registered, a stale binding).
    pub alive: Option<bool>,
    /// Sessions bound to it.
    pub sessions: u64,
    /// Their requests in flight.
    pub in_flight: u64,
}

/// A process that joined the table.
#[derive(Serialize, Debug)]
pub struct ProcessReport {
    /// Its process record.
    pub record: u32,
    /// Its pid.
    pub pid: u32,
    /// The record's generation.
    pub gen: u16,
    /// Whether it holds the record (the kernel lock).
    pub alive: bool,
}

/// What was cleaned up after the look.
#[derive(Serialize, Debug, Default)]
pub struct Cleanup {
    /// Dead workers reaped (their requests re-queued or failed, their
    /// sessions unbound).
    pub reaped_workers: u32,
    /// Slots of dead submitters freed.
    pub reclaimed_slots: u32,
}

/// One session table (and its request area).
#[derive(Serialize, Debug)]
pub struct TableReport {
    /// The set's name.
    pub name: String,
    /// The table's file.
    pub path: PathBuf,
    /// Set when the table could not be opened; nothing else is then set.
    pub error: Option<ErrorReport>,
    /// Session slots.
    pub capacity: Option<u32>,
    /// Size of the table's region in bytes (sparse: pages are used only as
    /// entries are).
    pub region_bytes: Option<u64>,
    /// Live sessions.
    pub sessions: Option<u64>,
    /// Live entries whose contents are damaged (not counted above).
    pub damaged_entries: Option<u64>,
    /// Requests in flight, summed over the sessions.
    pub in_flight: Option<u64>,
    /// Live sessions by high-level state, by state.
    pub by_state: Vec<StateCount>,
    /// Live sessions by bound worker; unbound ones last.
    pub by_worker: Vec<WorkerSessions>,
    /// Processes that joined the table (this one excluded).
    pub processes: Vec<ProcessReport>,
    /// The request area's file.
    pub requests_path: Option<PathBuf>,
    /// The request area: workers by group, slots by state.
    pub requests: Option<DispatchSnapshot>,
    /// Why the request area is not shown (absent, or not valid).
    pub requests_error: Option<ErrorReport>,
    /// What was cleaned up after the look (`None` with `--no-reap`).
    pub cleanup: Option<Cleanup>,
    /// Time the scan of the table took, in milliseconds.
    pub scan_ms: Option<f64>,
}

impl TableReport {
    /// The request area's error when the area is there but cannot be read
    /// (corrupt, truncated, a symbolic link, another version); a table
    /// without a request area (`MT_ERR_NOT_FOUND`) is a table alone, no
    /// error.
    fn failed_requests(&self) -> Option<&ErrorReport> {
        self.requests_error
            .as_ref()
            .filter(|e| e.kind != ErrorKind::NotFound.name())
    }

    fn failed(name: String, path: PathBuf, e: &Error) -> TableReport {
        TableReport {
            name,
            path,
            error: Some(e.into()),
            capacity: None,
            region_bytes: None,
            sessions: None,
            damaged_entries: None,
            in_flight: None,
            by_state: Vec::new(),
            by_worker: Vec::new(),
            processes: Vec::new(),
            requests_path: None,
            requests: None,
            requests_error: None,
            cleanup: None,
            scan_ms: None,
        }
    }
}

/// One version file of a closure.
#[derive(Serialize, Debug)]
pub struct VersionReport {
    /// Its number.
    pub version: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Processes that hold it open.
    pub readers: u32,
}

/// One shared closure.
#[derive(Serialize, Debug)]
pub struct ClosureReport {
    /// Its name.
    pub name: String,
    /// The current version (0: none complete yet).
    pub current: u64,
    /// The versions on disk, oldest first.
    pub versions: Vec<VersionReport>,
}

/// The whole report.
#[derive(Serialize, Debug)]
pub struct Report {
    /// The domain directory.
    pub domain: PathBuf,
    /// The tables, by name.
    pub tables: Vec<TableReport>,
    /// The closures, by name.
    pub closures: Vec<ClosureReport>,
    /// Why the closures could not be listed.
    pub closures_error: Option<ErrorReport>,
}

impl Report {
    /// The kind of the first error met, if something could not be read
    /// (the exit status is then 1).
    pub fn first_error_kind(&self) -> Option<ErrorKind> {
        let name = self
            .tables
            .iter()
            .find_map(|t| t.error.as_ref().or(t.failed_requests()))
            .or(self.closures_error.as_ref())?
            .kind;
        Some(
            ErrorKind::ALL
                .iter()
                .copied()
                .find(|k| k.name() == name)
                .unwrap_or(ErrorKind::Io),
        )
    }
}

/// The closures of the domain ([`mtipc::closure::list`]).
fn closures(domain: &Domain) -> mtipc::Result<Vec<ClosureReport>> {
    let list = mtipc::closure::list(domain)?;
    Ok(list
        .into_iter()
        .map(|c| ClosureReport {
            name: c.name,
            current: c.current,
            versions: c
                .versions
                .into_iter()
                .map(|v| VersionReport {
                    version: v.version,
                    size: v.size,
                    readers: v.readers,
                })
                .collect(),
        })
        .collect())
}

/// The names of the session tables in the domain, sorted. A request area
/// without its table is listed too (opening it then says what is missing).
fn table_names(domain: &Domain) -> mtipc::Result<Vec<String>> {
    let dir = domain.path().join(mtipc::internals::session::SESSIONS_DIR);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir.display(), e)),
    };
    let mut names = std::collections::BTreeSet::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let stem = file
            .strip_suffix(".table")
            .or_else(|| file.strip_suffix(".requests"));
        // Temporary files of publish_new and anything else are not tables.
        if let Some(stem) = stem {
            if mtipc::internals::session::validate_name(stem).is_ok() {
                names.insert(stem.to_string());
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// Shows "reading NAME: NN%" on stderr, at most every [`PROGRESS_EVERY`].
struct Progress<'a> {
    name: &'a str,
    total: u32,
    last: Option<Instant>,
    shown: bool,
}

impl Progress<'_> {
    fn update(&mut self, done: u32) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY)
        {
            return;
        }
        self.last = Some(now);
        let pct = u64::from(done) * 100 / u64::from(self.total.max(1));
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\rreading session table {}: {pct:>3}% ({done} of {} slots)",
            self.name, self.total
        );
        let _ = e.flush();
        self.shown = true;
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if self.shown {
            // Erase the line.
            eprint!("\r\x1b[K");
        }
    }
}

#[derive(Default)]
struct Tally {
    sessions: u64,
    damaged: u64,
    in_flight: u64,
    by_state: BTreeMap<u32, u64>,
    /// (sessions, in_flight) by binding word (0: unbound).
    by_binding: BTreeMap<u64, (u64, u64)>,
}

impl Tally {
    fn add(&mut self, s: &Session) {
        self.sessions += 1;
        self.in_flight += u64::from(s.in_flight);
        *self.by_state.entry(s.state).or_default() += 1;
        let b = self
            .by_binding
            .entry(s.worker.map_or(0, |w| w.0))
            .or_default();
        b.0 += 1;
        b.1 += u64::from(s.in_flight);
    }
}

/// Scans the whole table, in chunks, with progress if asked.
fn scan(table: &Table, name: &str, progress: bool) -> Tally {
    let cap = table.capacity();
    let mut p = (progress && cap >= PROGRESS_MIN_SLOTS).then(|| Progress {
        name,
        total: cap,
        last: None,
        shown: false,
    });
    let mut t = Tally::default();
    let mut start = 0u32;
    while start < cap {
        let end = start.saturating_add(CHUNK).min(cap);
        for r in table.scan(start..end) {
            match r {
                Ok(s) => t.add(&s),
                Err(_) => t.damaged += 1,
            }
        }
        start = end;
        if let Some(p) = p.as_mut() {
            p.update(start);
        }
    }
    t
}

fn by_worker(t: &Tally, snap: Option<&DispatchSnapshot>) -> Vec<WorkerSessions> {
    let mut out = Vec::new();
    let mut unbound = None;
    for (&word, &(sessions, in_flight)) in &t.by_binding {
        if word == 0 {
            unbound = Some((sessions, in_flight));
            continue;
        }
        let r = WorkerRef(word);
        let found = snap.and_then(|s| {
            s.groups.iter().find_map(|g| {
                g.workers
                    .iter()
                    .find(|w| Some(w.index) == r.record() && u32::from(w.gen) == r.gen())
                    .map(|w| (g.group, w))
            })
        });
        out.push(WorkerSessions {
            worker: r.record(),
            gen: Some(r.gen()),
            group: found.map(|(g, _)| g),
            pid: found.map(|(_, w)| w.pid),
            alive: found.map(|(_, w)| w.alive),
            sessions,
            in_flight,
        });
    }
    if let Some((sessions, in_flight)) = unbound {
        out.push(WorkerSessions {
            worker: None,
            gen: None,
            group: None,
            pid: None,
            alive: None,
            sessions,
            in_flight,
        });
    }
    out
}

/// Reads one set.
fn table_report(domain: &Domain, name: &str, opts: &Options) -> TableReport {
    let path = mtipc::internals::session::table_path(domain.path(), name);
    let rpath = requests_path(domain.path(), name);
    // The set, or the table alone when its request area cannot be opened.
    let (sessions, table_only, requests_error) = match Sessions::open(domain, name) {
        Ok(s) => (Some(s), None, None),
        Err(e) => match Table::open(domain, name) {
            Ok(t) => {
                let re = if e.kind() == ErrorKind::NotFound && !rpath.exists() {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("{}: no request area (a table alone)", rpath.display()),
                    )
                } else {
                    e
                };
                (None, Some(t), Some(re))
            }
            Err(te) => return TableReport::failed(name.to_string(), path, &te),
        },
    };
    let table = match (&sessions, &table_only) {
        (Some(s), _) => s.table(),
        (None, Some(t)) => t,
        (None, None) => unreachable!("one of the two is open"),
    };
    let snapshot = sessions.as_ref().map(Sessions::snapshot);
    let t0 = Instant::now();
    let tally = scan(table, name, opts.progress);
    let scan_ms = t0.elapsed().as_secs_f64() * 1e3;
    mtipc::log::debug!(table = name, scan_ms, sessions = tally.sessions, "scanned");
    let me = table.membership().record();
    let processes = table
        .records()
        .into_iter()
        .filter(|r| r.index != me)
        .map(|r| ProcessReport {
            record: r.index,
            pid: r.pid,
            gen: r.gen,
            alive: r.alive,
        })
        .collect();
    let cleanup = match (&sessions, opts.reap) {
        (Some(s), true) => {
            let c = Cleanup {
                reaped_workers: s.reap_dead(),
                reclaimed_slots: s.reclaim(),
            };
            if c.reaped_workers > 0 || c.reclaimed_slots > 0 {
                mtipc::log::info!(
                    table = name,
                    reaped_workers = c.reaped_workers,
                    reclaimed_slots = c.reclaimed_slots,
                    "cleaned up after dead processes"
                );
            }
            Some(c)
        }
        _ => None,
    };
    TableReport {
        name: name.to_string(),
        path,
        error: None,
        capacity: Some(table.capacity()),
        region_bytes: Some(table.geometry().total),
        sessions: Some(tally.sessions),
        damaged_entries: Some(tally.damaged),
        in_flight: Some(tally.in_flight),
        by_state: tally
            .by_state
            .iter()
            .map(|(&state, &sessions)| StateCount { state, sessions })
            .collect(),
        by_worker: by_worker(&tally, snapshot.as_ref()),
        processes,
        requests_path: sessions.as_ref().map(|_| rpath),
        requests: snapshot,
        requests_error: requests_error.as_ref().map(ErrorReport::from),
        cleanup,
        scan_ms: Some(scan_ms),
    }
}

/// Builds the report.
pub fn report(domain: &Domain, opts: &Options) -> mtipc::Result<Report> {
    let names = match &opts.name {
        Some(n) => {
            mtipc::internals::session::validate_name(n)?;
            let p = mtipc::internals::session::table_path(domain.path(), n);
            if !p.exists() && !requests_path(domain.path(), n).exists() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no session table {n:?} in {}", domain.path().display()),
                ));
            }
            vec![n.clone()]
        }
        None => table_names(domain)?,
    };
    let tables = names
        .iter()
        .map(|n| table_report(domain, n, opts))
        .collect();
    let (closures, closures_error) = match closures(domain) {
        Ok(c) => (c, None),
        Err(e) => (Vec::new(), Some(ErrorReport::from(&e))),
    };
    Ok(Report {
        domain: domain.path().to_path_buf(),
        tables,
        closures,
        closures_error,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn worker_name(index: u32, gen: impl std::fmt::Display) -> String {
    format!("w{index}.{gen}")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Prints the report as text.
pub fn print_human(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "domain {}", r.domain.display())?;
    if r.tables.is_empty() {
        writeln!(out, "\nno session tables")?;
    }
    for t in &r.tables {
        writeln!(out, "\nsession table {} ({})", t.name, t.path.display())?;
        if let Some(e) = &t.error {
            writeln!(out, "  ERROR: {} ({})", e.message, e.kind)?;
            continue;
        }
        writeln!(
            out,
            "  capacity     {} sessions, region {:.1} MiB",
            opt(t.capacity),
            t.region_bytes.unwrap_or(0) as f64 / (1 << 20) as f64
        )?;
        write!(
            out,
            "  sessions     {} live, {} requests in flight",
            opt(t.sessions),
            opt(t.in_flight)
        )?;
        match t.damaged_entries {
            Some(d) if d > 0 => writeln!(out, ", {d} DAMAGED entries skipped")?,
            _ => writeln!(out)?,
        }
        if !t.by_state.is_empty() {
            let s: Vec<String> = t
                .by_state
                .iter()
                .map(|c| format!("{}: {}", c.state, c.sessions))
                .collect();
            writeln!(out, "  by state     {}", s.join(", "))?;
        }
        if !t.by_worker.is_empty() {
            writeln!(
                out,
                "  by worker    {:<10} {:>5} {:>8} {:>6} {:>9} {:>9}",
                "WORKER", "GROUP", "PID", "ALIVE", "SESSIONS", "IN-FLIGHT"
            )?;
            for w in &t.by_worker {
                let (name, alive) = match (w.worker, w.alive) {
                    (None, _) => ("unbound".to_string(), "-".to_string()),
                    (Some(i), None) => (worker_name(i, opt(w.gen)), "gone".to_string()),
                    (Some(i), Some(a)) => (
                        worker_name(i, opt(w.gen)),
                        if a { "yes" } else { "DEAD" }.to_string(),
                    ),
                };
                writeln!(
                    out,
                    "               {:<10} {:>5} {:>8} {:>6} {:>9} {:>9}",
                    name,
                    opt(w.group),
                    opt(w.pid),
                    alive,
                    w.sessions,
                    w.in_flight
                )?;
            }
        }
        match (&t.requests, &t.requests_error) {
            (Some(s), _) => {
                let workers: usize = s.groups.iter().map(|g| g.workers.len()).sum();
                writeln!(
                    out,
                    "  requests     {} ({} groups, {} of {} worker records used, max message {} bytes)",
                    opt(t.requests_path.as_ref().map(|p| p.display())),
                    s.groups.len(),
                    workers,
                    s.worker_records,
                    s.max_message
                )?;
                writeln!(
                    out,
                    "  groups       {:<6} {:>10} {:>9} {:>7} {:>8}",
                    "GROUP", "SUBMITTED", "REQUEUED", "FAILED", "WORKERS"
                )?;
                for g in &s.groups {
                    writeln!(
                        out,
                        "               {:<6} {:>10} {:>9} {:>7} {:>8}",
                        g.group,
                        g.submitted,
                        g.requeued,
                        g.failed,
                        g.workers.len()
                    )?;
                }
                if workers > 0 {
                    writeln!(
                        out,
                        "  workers      {:<6} {:<10} {:>8} {:<8} {:>6} {:>5} {:>10}",
                        "GROUP", "WORKER", "PID", "STATE", "ALIVE", "IDLE", "SERVED"
                    )?;
                    for g in &s.groups {
                        for w in &g.workers {
                            writeln!(
                                out,
                                "               {:<6} {:<10} {:>8} {:<8} {:>6} {:>5} {:>10}",
                                g.group,
                                worker_name(w.index, w.gen),
                                w.pid,
                                w.state,
                                if w.alive { "yes" } else { "DEAD" },
                                yes_no(w.idle),
                                w.served
                            )?;
                        }
                    }
                }
                let c = &s.slots;
                let total = c.free + c.filling + c.queued + c.taken + c.done + c.failed + c.damaged;
                writeln!(
                    out,
                    "  slots        {total}: free {}, filling {}, queued {}, taken {}, done {}, failed {} (abandoned {}, damaged {})",
                    c.free, c.filling, c.queued, c.taken, c.done, c.failed, c.abandoned, c.damaged
                )?;
            }
            (None, Some(e)) => writeln!(out, "  requests     {} ({})", e.message, e.kind)?,
            (None, None) => {}
        }
        if !t.processes.is_empty() {
            let p: Vec<String> = t
                .processes
                .iter()
                .map(|p| format!("{}{}", p.pid, if p.alive { "" } else { " (dead)" }))
                .collect();
            writeln!(out, "  processes    {}", p.join(", "))?;
        }
        if let Some(c) = &t.cleanup {
            if c.reaped_workers > 0 || c.reclaimed_slots > 0 {
                writeln!(
                    out,
                    "  cleaned up   {} dead worker(s) reaped, {} slot(s) of dead submitters freed",
                    c.reaped_workers, c.reclaimed_slots
                )?;
            }
        }
    }
    writeln!(out)?;
    match (&r.closures, &r.closures_error) {
        (_, Some(e)) => writeln!(out, "closures: ERROR: {} ({})", e.message, e.kind)?,
        (c, None) if c.is_empty() => writeln!(out, "no closures")?,
        (c, None) => {
            writeln!(
                out,
                "closures     {:<24} {:>8}  VERSIONS ON DISK",
                "NAME", "CURRENT"
            )?;
            for cl in c {
                let v: Vec<String> = cl
                    .versions
                    .iter()
                    .map(|v| {
                        format!(
                            "v{} ({} B, {} reader{})",
                            v.version,
                            v.size,
                            v.readers,
                            if v.readers == 1 { "" } else { "s" }
                        )
                    })
                    .collect();
                writeln!(
                    out,
                    "             {:<24} {:>8}  {}",
                    cl.name,
                    cl.current,
                    v.join(", ")
                )?;
            }
        }
    }
    Ok(())
}

/// Prints each error on stderr, as the other commands do.
pub fn print_errors(r: &Report) {
    for t in &r.tables {
        if let Some(e) = &t.error {
            eprintln!(
                "mtipc: session table {}: {} ({})",
                t.name, e.message, e.kind
            );
        }
        if let Some(e) = t.failed_requests() {
            eprintln!(
                "mtipc: request area of session table {}: {} ({})",
                t.name, e.message, e.kind
            );
        }
    }
    if let Some(e) = &r.closures_error {
        eprintln!("mtipc: closures: {} ({})", e.message, e.kind);
    }
}

/// Whether progress may be shown: stderr is a terminal.
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}
