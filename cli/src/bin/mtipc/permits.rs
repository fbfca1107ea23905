//! `mtipc volume add|ls` and `mtipc permits`: the gateway volumes of a
//! domain (DESIGN.md section 3) and what their arbiters hold.
//!
//! `volume add` records a volume ([`volume::create`]); `volume ls` reads
//! the records ([`volume::list`]); `permits` opens each volume as any
//! process using it does ([`Volume::open`]: the shared-memory arbiter is
//! mapped and this process joins it with a process record, let go at
//! exit) and prints [`Volume::status`], which first reclaims the permits
//! of dead holders and of run-out leases, as every look at the arbiter
//! does.
//!
//! A volume whose record or arbiter cannot be read (corrupt, not ours, an
//! etcd volume in a build without etcd) is reported with its error and the
//! others are still shown; the exit status is then 1.

use mtipc::permit::{volume, Status, Volume, VolumeOpts, VolumeRecord};
use mtipc::{Domain, Error, ErrorKind};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An error as the reports show it.
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

/// What a volume record says, as `volume ls` and `permits` show it.
#[derive(Serialize, Debug)]
pub struct VolumeReport {
    /// The volume's name.
    pub name: String,
    /// Its directory (`None` when the record could not be read).
    pub dir: Option<PathBuf>,
    /// Cap on concurrent transfers; 0: no cap.
    pub max_transfers: Option<u32>,
    /// The lease of a permit, in milliseconds, as recorded.
    pub lease_ms: Option<u64>,
    /// Where the permits are kept: `"shm"` (this host's shared memory) or
    /// `"etcd"`.
    pub backend: Option<&'static str>,
    /// The etcd endpoints of an etcd volume.
    pub etcd: Option<String>,
    /// Why the record could not be read; nothing above is then set.
    pub error: Option<ErrorReport>,
}

impl VolumeReport {
    fn of(name: String, rec: &mtipc::Result<VolumeRecord>) -> VolumeReport {
        match rec {
            Ok(r) => VolumeReport {
                name,
                dir: Some(r.dir.clone()),
                max_transfers: Some(r.max_transfers),
                lease_ms: Some(r.lease_ms),
                backend: Some(backend(r)),
                etcd: r.etcd.clone(),
                error: None,
            },
            Err(e) => VolumeReport {
                name,
                dir: None,
                max_transfers: None,
                lease_ms: None,
                backend: None,
                etcd: None,
                error: Some(e.into()),
            },
        }
    }
}

fn backend(r: &VolumeRecord) -> &'static str {
    if r.etcd.is_some() {
        "etcd"
    } else {
        "shm"
    }
}

fn cap_text(cap: u32) -> String {
    if cap == 0 {
        "no cap".to_string()
    } else {
        cap.to_string()
    }
}

/// `mtipc volume add NAME DIR ...`: records the volume and prints what was
/// recorded. A relative `dir` is taken from the current directory.
pub fn add(
    domain: &Domain,
    name: &str,
    dir: &Path,
    max_transfers: u32,
    lease_ms: Option<u64>,
    etcd: Option<String>,
) -> mtipc::Result<()> {
    let dir = std::path::absolute(dir).map_err(|e| Error::io(dir.display(), e))?;
    let opts = VolumeOpts {
        max_transfers,
        lease: lease_ms.map(Duration::from_millis),
        etcd,
    };
    let rec = volume::create(domain, name, &dir, &opts)?;
    let path = volume::record_path(domain.path(), name);
    let mut out = std::io::stdout().lock();
    let written = (|| -> std::io::Result<()> {
        writeln!(out, "volume {name} recorded in {}", path.display())?;
        writeln!(out, "  dir            {}", rec.dir.display())?;
        writeln!(out, "  max transfers  {}", cap_text(rec.max_transfers))?;
        writeln!(out, "  lease          {} ms", rec.lease_ms)?;
        match &rec.etcd {
            None => writeln!(out, "  backend        shm (this host's shared memory)")?,
            Some(e) => writeln!(out, "  backend        etcd {e}")?,
        }
        Ok(())
    })();
    written.map_err(|e| Error::io("stdout", e))
}

/// `mtipc volume ls`: every volume of the domain with its directory, cap,
/// lease and backend; a record that cannot be read is listed with its
/// error (then the exit status is 1).
pub fn ls(domain: &Domain, json: bool) -> mtipc::Result<()> {
    let list: Vec<VolumeReport> = volume::list(domain)?
        .into_iter()
        .map(|(name, rec)| VolumeReport::of(name, &rec))
        .collect();
    emit(json, list.as_slice(), print_volumes)?;
    let errors = list.iter().map(|v| (v.name.as_str(), v.error.as_ref()));
    report_errors(errors, "some volume records could not be read (see above)")
}

/// Writes `value` to stdout as one line of JSON, or as text by `print`.
fn emit<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    print: impl FnOnce(&T, &mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> mtipc::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        print(value, &mut out)
    };
    written.map_err(|e| Error::io("stdout", e))
}

/// Says on stderr which volumes could not be read; an error of the first
/// one's kind (so the exit status is 1) if any could not.
fn report_errors<'a>(
    volumes: impl Iterator<Item = (&'a str, Option<&'a ErrorReport>)>,
    summary: &str,
) -> mtipc::Result<()> {
    let mut failed = None;
    for (name, e) in volumes {
        if let Some(e) = e {
            eprintln!("mtipc: volume {name}: {} ({})", e.message, e.kind);
            failed.get_or_insert(e.kind);
        }
    }
    match failed {
        Some(kind) => Err(Error::new(kind_named(kind), summary)),
        None => Ok(()),
    }
}

fn print_volumes(list: &[VolumeReport], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24} {:>7} {:>9}  {:<7}  DIR",
        "VOLUME", "CAP", "LEASE", "BACKEND"
    )?;
    for v in list {
        if let Some(e) = &v.error {
            writeln!(out, "{:<24} ERROR: {} ({})", v.name, e.message, e.kind)?;
            continue;
        }
        let dash = || "-".to_string();
        write!(
            out,
            "{:<24} {:>7} {:>7}ms  {:<7}  {}",
            v.name,
            v.max_transfers.map_or_else(dash, cap_text),
            v.lease_ms.map_or_else(dash, |l| l.to_string()),
            v.backend.unwrap_or("-"),
            v.dir
                .as_ref()
                .map_or_else(dash, |d| d.display().to_string()),
        )?;
        // The endpoints go last: they may be long.
        match &v.etcd {
            Some(e) => writeln!(out, "  (etcd {e})")?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

/// One volume in `mtipc permits`: its record, then what its arbiter says
/// (the fields of [`Status`], in the same object).
#[derive(Serialize, Debug)]
pub struct PermitsReport {
    /// The volume's name.
    pub name: String,
    /// Its directory (`None` when the record could not be read).
    pub dir: Option<PathBuf>,
    /// Cap on concurrent transfers; 0: no cap.
    pub max_transfers: Option<u32>,
    /// `"shm"` or `"etcd"`.
    pub backend: Option<&'static str>,
    /// The etcd endpoints of an etcd volume.
    pub etcd: Option<String>,
    /// Why the volume could not be read; then no status follows.
    pub error: Option<ErrorReport>,
    /// `holders`, `queue` (in grant order), `grants` (per instance),
    /// `reclaimed` (oldest first), `last_token`, `lease_ms` (as granted).
    #[serde(flatten)]
    pub status: Option<Status>,
}

/// The whole `mtipc permits` report.
#[derive(Serialize, Debug)]
pub struct Report {
    /// The domain directory.
    pub domain: PathBuf,
    /// The volumes, by name.
    pub volumes: Vec<PermitsReport>,
}

fn permits_of(domain: &Domain, name: String, rec: mtipc::Result<VolumeRecord>) -> PermitsReport {
    let v = VolumeReport::of(name, &rec);
    let mut report = PermitsReport {
        name: v.name,
        dir: v.dir,
        max_transfers: v.max_transfers,
        backend: v.backend,
        etcd: v.etcd,
        error: v.error,
        status: None,
    };
    if report.error.is_none() {
        match Volume::open(domain, &report.name).and_then(|v| v.status()) {
            Ok(st) => report.status = Some(st),
            Err(e) => report.error = Some((&e).into()),
        }
    }
    report
}

/// `mtipc permits [VOLUME]`: per volume (every one, or the one named) its
/// holders, queue in grant order, grants per instance, reclaimed permits,
/// last token and lease. Printed even when some volume could not be read
/// (each error also on stderr); then exit status 1.
pub fn permits(domain: &Domain, name: Option<String>, json: bool) -> mtipc::Result<()> {
    let records = match name {
        Some(n) => {
            let rec = volume::read(domain, &n);
            if let Err(e) = &rec {
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Invalid) {
                    return rec.map(|_| ());
                }
            }
            vec![(n, rec)]
        }
        None => volume::list(domain)?,
    };
    let report = Report {
        domain: domain.path().to_path_buf(),
        volumes: records
            .into_iter()
            .map(|(n, rec)| permits_of(domain, n, rec))
            .collect(),
    };
    emit(json, &report, print_permits)?;
    let errors = report
        .volumes
        .iter()
        .map(|v| (v.name.as_str(), v.error.as_ref()));
    report_errors(errors, "some volumes could not be read (see above)")
}

fn kind_named(name: &str) -> ErrorKind {
    ErrorKind::ALL
        .iter()
        .copied()
        .find(|k| k.name() == name)
        .unwrap_or(ErrorKind::Io)
}

/// "12.3 s", "850 ms": a lease left.
fn left(ms: u64) -> String {
    if ms >= 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// Prints the report as text.
pub fn print_permits(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "domain {}", r.domain.display())?;
    if r.volumes.is_empty() {
        writeln!(out, "\nno volumes")?;
    }
    for vol in &r.volumes {
        write!(out, "\nvolume {}", vol.name)?;
        if let Some(d) = &vol.dir {
            write!(out, " ({})", d.display())?;
        }
        writeln!(out)?;
        if let (Some(cap), Some(backend)) = (vol.max_transfers, vol.backend) {
            let backend = match &vol.etcd {
                Some(e) => format!("etcd {e}"),
                None => backend.to_string(),
            };
            writeln!(
                out,
                "  settings     max transfers {}, backend {backend}",
                cap_text(cap)
            )?;
        }
        let Some(st) = &vol.status else {
            if let Some(e) = &vol.error {
                writeln!(out, "  ERROR: {} ({})", e.message, e.kind)?;
            }
            continue;
        };
        writeln!(
            out,
            "  lease        {} ms; last token {}",
            st.lease_ms, st.last_token
        )?;
        if st.holders.is_empty() {
            writeln!(out, "  holders      none")?;
        } else {
            writeln!(
                out,
                "  holders      {:<20} {:<5} {:>8} {:>10}  PATH",
                "INSTANCE", "MODE", "TOKEN", "LEASE LEFT"
            )?;
            for h in &st.holders {
                writeln!(
                    out,
                    "               {:<20} {:<5} {:>8} {:>10}  {}",
                    h.instance.to_string(),
                    h.mode.to_string(),
                    h.token,
                    left(h.lease_left_ms),
                    h.path
                )?;
            }
        }
        if st.queue.is_empty() {
            writeln!(out, "  queue        empty")?;
        } else {
            writeln!(
                out,
                "  queue        {:>3} {:<20} {:<5}  PATH   (in grant order)",
                "#", "INSTANCE", "MODE"
            )?;
            for (i, w) in st.queue.iter().enumerate() {
                writeln!(
                    out,
                    "               {:>3} {:<20} {:<5}  {}",
                    i + 1,
                    w.instance.to_string(),
                    w.mode.to_string(),
                    w.path
                )?;
            }
        }
        if st.grants.is_empty() {
            writeln!(out, "  grants       none")?;
        } else {
            writeln!(out, "  grants       {:<20} {:>8}", "INSTANCE", "GRANTS")?;
            for (inst, n) in &st.grants {
                writeln!(out, "               {:<20} {:>8}", inst.to_string(), n)?;
            }
        }
        if st.reclaimed.is_empty() {
            writeln!(out, "  reclaimed    none")?;
        } else {
            writeln!(
                out,
                "  reclaimed    {:<20} {:>8} {:<8} PATH   (oldest first)",
                "INSTANCE", "TOKEN", "REASON"
            )?;
            for c in &st.reclaimed {
                let reason = match c.reason {
                    mtipc::permit::ReclaimReason::Dead => "dead",
                    mtipc::permit::ReclaimReason::Expired => "expired",
                };
                writeln!(
                    out,
                    "               {:<20} {:>8} {:<8} {}",
                    c.instance.to_string(),
                    c.token,
                    reason,
                    c.path
                )?;
            }
        }
    }
    Ok(())
}
