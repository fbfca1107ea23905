//! The volume record: `<domain>/volumes/<name>.volume`, a small text file
//! that says where a gateway volume is and how its permits are kept.
//!
//! ```text
//! mtipc-volume 1
//! dir /srv/gateway/recordings
//! max_transfers 4
//! lease_ms 30000
//! etcd http://127.0.0.1:2379,http://10.0.0.2:2379
//! ```
//!
//! The first line is the format and its version; then one `key value` per
//! line, each key once, in any order; `etcd` is absent for a volume whose
//! arbiter lives in this host's shared memory. The record is published
//! once, atomically, and never changed. Another process wrote it, so
//! [`parse`] treats it as hostile input (fuzz target `volume`).

use crate::error::{err, Error, Result};
use crate::Domain;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directory of the volume records and arbiter regions, inside the domain.
pub const VOLUMES_DIR: &str = "volumes";

/// The lease a permit gets when the volume does not say (30 s).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The longest lease a volume may give (one day).
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// The shortest lease a volume may give (10 ms: shorter ones would expire
/// between a grant and the holder's first step).
pub const MIN_LEASE: Duration = Duration::from_millis(10);

/// The largest cap on concurrent transfers.
pub const MAX_TRANSFERS: u32 = 4096;

/// Largest record file read.
pub const MAX_RECORD: usize = 8192;

/// Longest list of etcd endpoints, in bytes.
pub const MAX_ETCD: usize = 2048;

const MAGIC_LINE: &str = "mtipc-volume 1";

/// How a volume is created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeOpts {
    /// Cap on concurrent transfers; 0: no cap.
    pub max_transfers: u32,
    /// The lease of a permit; `None`: [`DEFAULT_LEASE`].
    pub lease: Option<Duration>,
    /// etcd endpoints (`http://host:port`, comma separated); `None`: this
    /// host's shared memory.
    pub etcd: Option<String>,
}

/// What a volume record says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VolumeRecord {
    /// The volume's directory (absolute, as given at creation).
    pub dir: PathBuf,
    /// Cap on concurrent transfers; 0: no cap.
    pub max_transfers: u32,
    /// The lease of a permit, in milliseconds.
    pub lease_ms: u64,
    /// etcd endpoints, if the volume's permits are kept in etcd.
    pub etcd: Option<String>,
}

impl VolumeRecord {
    /// The lease of a permit.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// The record as stored.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{MAGIC_LINE}\ndir {}\nmax_transfers {}\nlease_ms {}\n",
            self.dir.display(),
            self.max_transfers,
            self.lease_ms
        );
        if let Some(e) = &self.etcd {
            s.push_str(&format!("etcd {e}\n"));
        }
        s
    }
}

/// The path of volume `name`'s record in `domain`.
pub fn record_path(domain: &Path, name: &str) -> PathBuf {
    domain.join(VOLUMES_DIR).join(format!("{name}.volume"))
}

/// Checks a volume name: the tenant-id rule of docs/attach.md.
pub fn check_name(name: &str) -> Result<()> {
    crate::sys::check_name("volume name", name)
}

/// Checks the etcd endpoint list: one or more `http://host:port` (or
/// `https://`), comma separated, printable ASCII, at most [`MAX_ETCD`]
/// bytes.
pub fn check_etcd(urls: &str) -> Result<()> {
    if urls.is_empty() || urls.len() > MAX_ETCD {
        return Err(err!(
            Invalid,
            "etcd endpoints: 1 to {MAX_ETCD} bytes, not {}",
            urls.len()
        ));
    }
    for u in urls.split(',') {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"))
            .ok_or_else(|| {
                err!(
                    Invalid,
                    "etcd endpoint {}: must start with http:// or https://",
                    crate::sys::shown(u)
                )
            })?;
        let ok = !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_/".contains(&b));
        if !ok {
            return Err(err!(
                Invalid,
                "etcd endpoint {}: expected http://host:port",
                crate::sys::shown(u)
            ));
        }
    }
    Ok(())
}

/// Checks a volume directory: absolute, printable (the record is line
/// based), an existing directory that is not a symbolic link, owned by this
/// uid and writable by nobody else (others could swap files under a
/// permit's holder, as they could in a domain).
pub fn check_dir(dir: &Path) -> Result<()> {
    let shown = dir.display();
    let text = dir
        .to_str()
        .ok_or_else(|| err!(Invalid, "volume directory {shown}: not UTF-8"))?;
    if !dir.is_absolute()
        || text.len() > crate::domain::MAX_PATH
        || text.chars().any(char::is_control)
    {
        return Err(err!(
            Invalid,
            "volume directory {}: must be an absolute path of at most {} bytes without control characters",
            crate::sys::shown(text),
            crate::domain::MAX_PATH
        ));
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| Error::io(&shown, e))?;
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(err!(Invalid, "volume directory {shown}: not a directory"));
    }
    let me = crate::sys::euid();
    if md.uid() != me {
        return Err(err!(
            Denied,
            "volume directory {shown}: owned by uid {}, not by this process's uid {me}",
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(err!(
            Denied,
            "volume directory {shown}: mode {:04o} lets other users change it",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Records the volume `name` in `domain`: its directory `dir` and
/// `opts`. `Exists` if a volume of that name is there already (even with
/// the same settings); `Invalid`/`Denied` for a bad name, directory,
/// lease, cap or endpoint list.
pub fn create(domain: &Domain, name: &str, dir: &Path, opts: &VolumeOpts) -> Result<VolumeRecord> {
    check_name(name)?;
    check_dir(dir)?;
    let lease = opts.lease.unwrap_or(DEFAULT_LEASE);
    if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
        return Err(err!(
            Invalid,
            "lease of {} ms: must be {} ms to {} ms",
            lease.as_millis(),
            MIN_LEASE.as_millis(),
            MAX_LEASE.as_millis()
        ));
    }
    if opts.max_transfers > MAX_TRANSFERS {
        return Err(err!(
            Invalid,
            "max_transfers {}: at most {MAX_TRANSFERS}",
            opts.max_transfers
        ));
    }
    if let Some(e) = &opts.etcd {
        check_etcd(e)?;
    }
    let rec = VolumeRecord {
        dir: dir.to_path_buf(),
        max_transfers: opts.max_transfers,
        lease_ms: lease.as_millis() as u64,
        etcd: opts.etcd.clone(),
    };
    let vdir = domain.path().join(VOLUMES_DIR);
    crate::sys::fs::make_dir(&vdir)?;
    crate::sys::fs::check_dir_private(&vdir)?;
    let path = record_path(domain.path(), name);
    if !crate::sys::fs::publish_bytes(&path, rec.encode().as_bytes())? {
        return Err(err!(
            Exists,
            "volume {name} exists already ({})",
            path.display()
        ));
    }
    crate::sys::fs::sync_parent(&path)?;
    Ok(rec)
}

/// Reads the record of volume `name`. `NotFound` if there is none;
/// `Corrupt` if it does not parse; `Denied` if the file is not ours and
/// owner-only.
pub fn read(domain: &Domain, name: &str) -> Result<VolumeRecord> {
    check_name(name)?;
    let path = record_path(domain.path(), name);
    let bytes = read_record(&path).map_err(|e| {
        if e.kind() == crate::ErrorKind::NotFound {
            err!(NotFound, "no volume {name} in {}", domain.path().display())
        } else {
            e
        }
    })?;
    parse(&bytes).map_err(|e| err!(Corrupt, "{}: {}", path.display(), e.message()))
}

fn read_record(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = crate::sys::fs::open_checked(path, false)?;
    let mut bytes = Vec::new();
    f.take(MAX_RECORD as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path.display(), e))?;
    Ok(bytes)
}

/// The volumes of `domain`, by name, with their records (or the error that
/// reading one gave).
pub fn list(domain: &Domain) -> Result<Vec<(String, Result<VolumeRecord>)>> {
    let dir = domain.path().join(VOLUMES_DIR);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir.display(), e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir.display(), e))?;
        let file = ent.file_name();
        let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".volume")) else {
            continue;
        };
        if crate::sys::name_problem(name).is_some() {
            continue;
        }
        out.push((name.to_owned(), read(domain, name)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Parses a volume record (hostile input: any bytes give a record or an
/// error naming the fault, never a panic).
pub fn parse(bytes: &[u8]) -> Result<VolumeRecord> {
    if bytes.len() > MAX_RECORD {
        return Err(err!(
            Corrupt,
            "volume record longer than {MAX_RECORD} bytes"
        ));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| err!(Corrupt, "volume record is not UTF-8"))?;
    let mut lines = text.split('\n');
    if lines.next() != Some(MAGIC_LINE) {
        return Err(err!(
            Corrupt,
            "not a volume record (first line is not `{MAGIC_LINE}`)"
        ));
    }
    let (mut dir, mut cap, mut lease, mut etcd) = (None, None, None, None);
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i + 2;
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| err!(Corrupt, "line {n}: expected `key value`"))?;
        let dup = match key {
            "dir" => dir.replace(value).is_some(),
            "max_transfers" => cap.replace(value).is_some(),
            "lease_ms" => lease.replace(value).is_some(),
            "etcd" => etcd.replace(value).is_some(),
            _ => {
                return Err(err!(
                    Corrupt,
                    "line {n}: unknown key {}",
                    crate::sys::shown(key)
                ))
            }
        };
        if dup {
            return Err(err!(Corrupt, "line {n}: {key} given twice"));
        }
    }
    let dir = dir.ok_or_else(|| err!(Corrupt, "no dir line"))?;
    let d = Path::new(dir);
    if !d.is_absolute() || dir.len() > crate::domain::MAX_PATH || dir.chars().any(char::is_control)
    {
        return Err(err!(
            Corrupt,
            "dir {}: not an absolute path",
            crate::sys::shown(dir)
        ));
    }
    let number = |what: &str, v: Option<&str>| -> Result<u64> {
        let v = v.ok_or_else(|| err!(Corrupt, "no {what} line"))?;
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err!(
                Corrupt,
                "{what} {}: not a number",
                crate::sys::shown(v)
            ));
        }
        v.parse::<u64>()
            .map_err(|_| err!(Corrupt, "{what} {}: out of range", crate::sys::shown(v)))
    };
    let max_transfers = number("max_transfers", cap)?;
    if max_transfers > u64::from(MAX_TRANSFERS) {
        return Err(err!(
            Corrupt,
            "max_transfers {max_transfers}: at most {MAX_TRANSFERS}"
        ));
    }
    let lease_ms = number("lease_ms", lease)?;
    if !(MIN_LEASE.as_millis() as u64..=MAX_LEASE.as_millis() as u64).contains(&lease_ms) {
        return Err(err!(Corrupt, "lease_ms {lease_ms}: out of range"));
    }
    if let Some(e) = etcd {
        check_etcd(e).map_err(|e| err!(Corrupt, "{}", e.message()))?;
    }
    Ok(VolumeRecord {
        dir: d.to_path_buf(),
        max_transfers: max_transfers as u32,
        lease_ms,
        etcd: etcd.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> VolumeRecord {
        VolumeRecord {
            dir: PathBuf::from("/srv/gw"),
            max_transfers: 4,
            lease_ms: 30_000,
            etcd: Some("http://127.0.0.1:2379,http://[::1]:2379".into()),
        }
    }

    #[test]
    fn record_round_trips() {
        let r = rec();
        assert_eq!(parse(r.encode().as_bytes()).unwrap(), r);
        let local = VolumeRecord {
            etcd: None,
            ..rec()
        };
        assert_eq!(parse(local.encode().as_bytes()).unwrap(), local);
    }

    #[test]
    fn bad_records_are_corrupt() {
        let good = rec().encode();
        let cases = [
            String::new(),
            "mtipc-volume 2\n".into(),
            good.replace("dir /srv/gw", "dir srv/gw"),
            good.replace("lease_ms 30000", "lease_ms 0"),
            good.replace("lease_ms 30000", "lease_ms 99999999999999999999"),
            good.replace("lease_ms 30000", "lease_ms -1"),
            good.replace("max_transfers 4", "max_transfers 5000"),
            good.replace("etcd http", "etcd ftp"),
            good.replace("max_transfers 4\n", ""),
            format!("{good}dir /x\n"),
            format!("{good}colour blue\n"),
            format!("{good}nospace\n"),
            good.replace("/srv/gw", "/srv/\u{1}gw"),
        ];
        for c in cases {
            let e = parse(c.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{c:?}: {e}");
        }
        assert!(parse(&[0xff, 0xfe]).is_err());
        assert!(parse(&vec![b'a'; MAX_RECORD + 1]).is_err());
    }

    #[test]
    fn etcd_lists() {
        assert!(check_etcd("http://127.0.0.1:2379").is_ok());
        assert!(check_etcd("http://a:1,https://b:2").is_ok());
        for bad in [
            "",
            "127.0.0.1:2379",
            "http://",
            "http://a b:1",
            "http://a:1,",
        ] {
            assert_eq!(
                check_etcd(bad).unwrap_err().kind(),
                crate::ErrorKind::Invalid,
                "{bad}"
            );
        }
    }
}
