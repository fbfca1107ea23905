//! Advertisement directories: publishing and withdrawing one, listing the
//! live ones (and removing the stale ones), and the response file.

use super::format::{Advert, Response, Role};
use super::sync_file::SyncFile;
use super::{
    adverts_dir, shown, tenant_id_problem, ProcId, ADVERT_FILE, DAEMON_ID, MAX_FILE, RESPONSE_FILE,
    STALE_GRACE, SYNC_FILE,
};
use crate::error::{err, Error, Result};
use crate::sys::dir::EntryType;
use crate::sys::{make_dir, Dir, FileId, Stamp};
use crate::ErrorKind;
use std::collections::HashMap;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long publishing or withdrawing waits for the `adverts` directory's
/// lock (held by others for a few file operations at a time).
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long [`list`] waits for that lock before it leaves stale entries for
/// a later call.
const LIST_LOCK_WAIT: Duration = Duration::from_secs(1);
/// Most attempts at replacing a leftover response file.
const RESPONSE_ATTEMPTS: usize = 8;

/// The files of one advertisement, owned by the advertising process: the
/// directory `adverts/<id>/`, its advertisement file and its
/// synchronization file (kept open and mapped here).
///
/// Dropping it leaves the files in place: [`AdvertFiles::withdraw`] removes
/// them; if the process exits without, the advertisement is stale and the
/// next [`list`] removes it.
#[derive(Debug)]
pub struct AdvertFiles {
    dir: PathBuf,
    /// `dir`, opened once: a waiter looks for its response there.
    kept: Dir,
    adverts: PathBuf,
    advert: Advert,
    sync: SyncFile,
}

impl AdvertFiles {
    /// Publishes `advert` in `domain`: creates `adverts/` (0700) and
    /// `adverts/<id>/` if missing, the synchronization file, then the
    /// advertisement file.
    ///
    /// `Invalid` if `advert` breaks the format's rules; `Exists` if a live
    /// advertisement with that id is already there (the message names its
    /// pid); a stale one (dead or reused pid, garbage) is removed and
    /// replaced. `Denied` if `adverts/<id>` is a symbolic link (never
    /// followed), `Corrupt` if it is not a directory.
    pub fn publish(domain: &Path, advert: &Advert) -> Result<AdvertFiles> {
        advert.validate()?;
        let adverts = open_adverts(domain, true)?
            .ok_or_else(|| err!(NotFound, "{}: missing", adverts_dir(domain).display()))?;
        if !adverts.lock_within(LOCK_WAIT)? {
            return Err(err!(
                Timeout,
                "{}: locked by another process for over {LOCK_WAIT:?}; cannot publish {}",
                adverts.path().display(),
                shown(&advert.id)
            ));
        }
        let id = advert.id.as_str();
        let path = adverts.child(id);
        match adverts.entry_type(id)? {
            None => {}
            Some(EntryType::Directory) => {
                let existing = adverts.open_at(id)?;
                match read_advert_in(&existing) {
                    Ok(a) if a.id == id && a.is_live() => {
                        let who = match a.role {
                            Role::Daemon => "mtipcd".to_string(),
                            Role::Tenant => format!("tenant {}", shown(id)),
                        };
                        return Err(err!(
                            Exists,
                            "{who} is already advertised by live process {} ({})",
                            a.pid,
                            path.display()
                        ));
                    }
                    found => {
                        crate::log::info!(
                            dir = %path.display(),
                            reason = %stale_reason(&found),
                            "replacing a stale advertisement"
                        );
                        remove_tree(&path)?;
                    }
                }
            }
            Some(EntryType::Symlink) => {
                return Err(err!(
                    Denied,
                    "{}: is a symbolic link, which mtipc never follows; remove it to advertise {}",
                    path.display(),
                    shown(id)
                ))
            }
            Some(_) => {
                return Err(err!(
                    Corrupt,
                    "{}: exists and is not a directory; remove it to advertise {}",
                    path.display(),
                    shown(id)
                ))
            }
        }
        make_dir(&path)?;
        let result = (|| {
            let dir = adverts.open_at(id)?;
            let sync = SyncFile::open_in(&dir, true)?;
            if !dir.publish(ADVERT_FILE, advert.to_text().as_bytes())? {
                return Err(err!(
                    Exists,
                    "{}: appeared while publishing",
                    dir.child(ADVERT_FILE).display()
                ));
            }
            Ok((sync, dir))
        })();
        match result {
            Ok((sync, kept)) => Ok(AdvertFiles {
                dir: path,
                kept,
                adverts: adverts.path().to_path_buf(),
                advert: advert.clone(),
                sync,
            }),
            Err(e) => {
                // Leave nothing half-made behind (we hold the lock).
                let _ = remove_tree(&path);
                Err(e)
            }
        }
    }

    /// The advertisement directory (`adverts/<id>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The response file of this advertisement, if there is one (see
    /// [`read_response`]), read through the directory opened when it was
    /// published.
    pub fn read_response(&self) -> Result<Option<Response>> {
        read_response_in(&self.kept)
    }

    /// The advertisement as published.
    pub fn advert(&self) -> &Advert {
        &self.advert
    }

    /// The synchronization file (open and mapped).
    pub fn sync(&self) -> &SyncFile {
        &self.sync
    }

    /// Removes the advertisement file, the response and synchronization
    /// files and the directory; already missing ones are fine. A directory
    /// that no longer holds this advertisement (someone else's by now) is
    /// left alone.
    pub fn withdraw(self) -> Result<()> {
        let adverts = match Dir::open(&self.adverts) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !adverts.lock_within(LOCK_WAIT)? {
            return Err(err!(
                Timeout,
                "{}: locked by another process for over {LOCK_WAIT:?}; cannot withdraw {}",
                adverts.path().display(),
                shown(&self.advert.id)
            ));
        }
        let id = self.advert.id.as_str();
        if adverts.entry_type(id)? != Some(EntryType::Directory) {
            return Ok(());
        }
        let dir = adverts.open_at(id)?;
        match read_advert_in(&dir) {
            Ok(a) if a != self.advert => {
                crate::log::warn!(
                    dir = %self.dir.display(),
                    pid = a.pid,
                    "not withdrawing: the directory holds another advertisement by now"
                );
                return Ok(());
            }
            _ => {}
        }
        // The advertisement first: from then on nobody lists it.
        dir.unlink(ADVERT_FILE)?;
        dir.unlink(RESPONSE_FILE)?;
        dir.unlink(SYNC_FILE)?;
        drop(dir);
        // Leftovers (temporary files of a killed writer) go too.
        remove_tree(&self.dir)
    }
}

/// A live advertisement found by [`list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The advertisement.
    pub advert: Advert,
    /// Its directory (`adverts/<id>`).
    pub dir: PathBuf,
}

/// What [`list`] makes of one entry of `adverts/`.
enum Entry {
    Live(Advert),
    /// Stale: to be removed. The reason is for the log.
    Stale(String),
    /// Not (yet) to be listed nor removed. `Some(why)`: it is not an
    /// advertisement of ours (reported, once per listing, in a summary);
    /// `None`: removed meanwhile, or young and half published.
    Skip(Option<String>),
}

/// How many examples of skipped entries a listing's summary names.
const SKIP_EXAMPLES: usize = 3;

/// The entries of one listing that were not advertisements: counted, a few
/// named, reported as one warning (20,000 junk files are one line, not
/// 20,000).
#[derive(Default)]
struct Skipped {
    count: usize,
    examples: Vec<String>,
}

impl Skipped {
    fn add(&mut self, why: String) {
        self.count += 1;
        if self.examples.len() < SKIP_EXAMPLES {
            self.examples.push(why);
        }
    }

    fn report(&self, dir: &Path) {
        if self.count > 0 {
            crate::log::warn!(
                dir = %dir.display(),
                count = self.count,
                "skipped {} entries that are not advertisements of this uid (left in place), such as: {}",
                self.count,
                self.examples.join("; ")
            );
        }
    }
}

/// Every live advertisement of `domain`, sorted by id, and the number of
/// stale ones removed.
///
/// Stale: the process is dead (or a zombie), or its pid was reused (another
/// start time); or the advertisement file is missing or garbage and the
/// directory is older than `STALE_GRACE` (a younger one may be half
/// published). A stale directory is removed as a whole. Symbolic links are
/// never followed: an entry that is a link, not a directory, not named like
/// an advertisement, or not owned by this uid is skipped and left in place;
/// one warning event (`crate::log`) per listing counts them and names the
/// first few. The stale advertisements removed are likewise one info event.
///
/// No `adverts/` directory: nothing advertised, `Ok((vec![], 0))`. Fails if
/// `/proc` cannot be read (without it every advertisement would look stale).
pub fn list(domain: &Path) -> Result<(Vec<Listed>, usize)> {
    list_with(domain, None, None)
}

/// What a long-lived attacher keeps about one domain's advertisements from
/// one round to the next, so that a round does not open, read and map every
/// advertisement's files again: each live advertisement's open directory,
/// its advertisement file (bytes and parsed) and its synchronization file,
/// opened and mapped once.
///
/// Each [`AdvertCache::list`] checks that the name still leads to the same
/// directory (device and inode, without following a link) and checks the
/// process again. The directory's files are looked at again (the
/// advertisement file's stamp, then its bytes if the stamp changed, and in
/// [`AdvertCache::sync`] the synchronization file's identity) unless the
/// directory itself is unchanged since a full check made well after its
/// last change (`quiet_since`: one `fstat` of the kept directory instead
/// of two `fstatat`), and at least every one to two seconds anyway.
/// Anything changed is examined afresh, as [`list`] does.
#[derive(Debug, Default)]
pub struct AdvertCache {
    entries: HashMap<String, Cached>,
}

/// One live advertisement as an [`AdvertCache`] keeps it.
#[derive(Debug)]
struct Cached {
    dir: Dir,
    dir_id: FileId,
    stamp: Stamp,
    bytes: Vec<u8>,
    advert: Advert,
    sync: Option<(SyncFile, FileId)>,
    /// The directory's own stamp at its last full check, and the clock
    /// read just before that stamp was taken (see [`quiet_since`]).
    checked: Option<(Stamp, SystemTime)>,
    /// Whether this round's listing found the directory unchanged since
    /// its last full check: [`AdvertCache::sync`] then keeps the kept
    /// synchronization file without looking at the entry again.
    quiet: bool,
}

/// How long before a full check a directory's last change must be for an
/// unchanged stamp to be trusted: longer than a tick of the kernel's
/// coarse clock (at most 10 ms), which stamps the change times. A change
/// made after the check then gets a later change time than the one kept.
const QUIET_MARGIN: Duration = Duration::from_millis(50);

/// The longest a directory goes without a full check (its advertisement
/// file's stamp and its synchronization file looked at again), plus up to
/// 1 s spread by inode number so that the entries of a domain do not all
/// come due in the same round.
const FULL_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether an advertisement directory whose stamp is `now` has changed in
/// no way since a full check that took `then` with the clock at `at`
/// (this relies on change times finer than [`QUIET_MARGIN`], as tmpfs,
/// ext4 with large inodes, xfs and btrfs keep them, and on the kernel's
/// clock not lagging by more than that; elsewhere a change could go unseen
/// until the next full check, at most about 2 s later):
/// same stamp (identity, size, change time), its last change at least
/// [`QUIET_MARGIN`] before `at`, and the check younger than
/// [`FULL_CHECK_EVERY`] (plus the spread). Entries are added to, removed
/// from and renamed in an advertisement directory (the advertisement and
/// synchronization files are published by rename) but never rewritten in
/// place by mtipc, so an unchanged directory holds the same files.
fn quiet_since(then: &Stamp, at: SystemTime, now: &Stamp, clock: SystemTime) -> bool {
    let spread = Duration::from_millis(then.id().ino() % 1024);
    then == now
        && then
            .changed()
            .and_then(|t| t.checked_add(QUIET_MARGIN))
            .is_some_and(|t| t <= at)
        && clock
            .duration_since(at)
            .is_ok_and(|d| d < FULL_CHECK_EVERY + spread)
}

impl AdvertCache {
    /// An empty cache.
    pub fn new() -> AdvertCache {
        AdvertCache::default()
    }

    /// [`list`], using and refreshing what is kept: the result is the same
    /// as `list`'s, and afterwards the cache holds exactly the live
    /// advertisements it returned.
    pub fn list(&mut self, domain: &Path) -> Result<(Vec<Listed>, usize)> {
        self.list_until(domain, None)
    }

    /// [`AdvertCache::list`] within `deadline` (an attach round's): the
    /// listing itself fails with `Timeout` when the deadline passes, and
    /// the removal of stale advertisements stops then (what is left is
    /// removed by a later listing), so that thousands of stale entries
    /// never make an attach overrun its timeout.
    pub fn list_until(
        &mut self,
        domain: &Path,
        deadline: Option<std::time::Instant>,
    ) -> Result<(Vec<Listed>, usize)> {
        let r = list_with(domain, Some(&mut self.entries), deadline);
        if r.is_err() {
            self.entries.clear();
        }
        r
    }

    /// Removes the response file of the listed advertisement `id` (a
    /// missing file is fine; an `id` not listed by the last
    /// [`AdvertCache::list`] is `NotFound`).
    pub fn remove_response(&self, id: &str) -> Result<()> {
        self.entry(id)?.dir.unlink(RESPONSE_FILE)
    }

    /// The synchronization file of the listed advertisement `id`, opened
    /// (and mapped) the first time and kept while it is still the file in
    /// the directory. `NotFound` if it is missing (withdrawn meanwhile) or
    /// `id` was not listed by the last [`AdvertCache::list`].
    pub fn sync(&mut self, id: &str) -> Result<&SyncFile> {
        let c = self
            .entries
            .get_mut(id)
            .ok_or_else(|| err!(NotFound, "advertisement {} is not listed", shown(id)))?;
        // A quiet directory (see `quiet_since`) holds the file kept.
        let reopen = if c.quiet && c.sync.is_some() {
            false
        } else {
            let current = match c.dir.entry_id(SYNC_FILE)? {
                Some((EntryType::RegularFile, fid)) => Some(fid),
                _ => None,
            };
            c.sync.as_ref().map(|(_, fid)| Some(*fid)) != Some(current)
        };
        if reopen {
            c.sync = None;
            let s = SyncFile::open_in(&c.dir, false)?;
            let fid = s.id()?;
            c.sync = Some((s, fid));
        }
        Ok(&c.sync.as_ref().expect("opened above").0)
    }

    /// The synchronization file [`AdvertCache::sync`] opened or checked for
    /// `id` (`NotFound` if it did not).
    pub fn kept_sync(&self, id: &str) -> Result<&SyncFile> {
        self.entry(id)?
            .sync
            .as_ref()
            .map(|(s, _)| s)
            .ok_or_else(|| err!(NotFound, "synchronization file of {} not open", shown(id)))
    }

    /// Forgets everything kept (closing the kept files).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn entry(&self, id: &str) -> Result<&Cached> {
        self.entries
            .get(id)
            .ok_or_else(|| err!(NotFound, "advertisement {} is not listed", shown(id)))
    }
}

fn list_with(
    domain: &Path,
    mut cache: Option<&mut HashMap<String, Cached>>,
    deadline: Option<std::time::Instant>,
) -> Result<(Vec<Listed>, usize)> {
    let late = || deadline.is_some_and(|d| std::time::Instant::now() >= d);
    let Some(adverts) = open_adverts(domain, false)? else {
        if let Some(c) = cache {
            c.clear();
        }
        return Ok((Vec::new(), 0));
    };
    ProcId::current()?;
    let mut live = Vec::new();
    let mut stale = Vec::new();
    // One /proc read per process, not per advertisement: a process often
    // advertises many tenants.
    let mut procs = Procs::default();
    let mut skipped = Skipped::default();
    // Before every stamp the listing takes (`examine_cached`).
    let clock = SystemTime::now();
    let entries =
        std::fs::read_dir(adverts.path()).map_err(|e| Error::io(adverts.path().display(), e))?;
    let mut removal = Removal::default();
    for (n, entry) in entries.enumerate() {
        if n % 64 == 63 && late() {
            // What was found stale so far goes now (at most a batch), so
            // that the next listing gets further.
            removal.flush(&adverts, &mut stale, &|| false);
            removal.report(&adverts, stale.len());
            return Err(err!(
                Timeout,
                "listing {}: the deadline passed after {n} entries",
                adverts.path().display()
            ));
        }
        let entry = entry.map_err(|e| Error::io(adverts.path().display(), e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            skipped.add(format!("{:?}: name not UTF-8", entry.file_name()));
            continue;
        };
        let found = match cache.as_deref_mut() {
            Some(c) => {
                // readdir's own type and inode number: no system call.
                let ino = entry
                    .file_type()
                    .is_ok_and(|t| t.is_dir())
                    .then(|| entry.ino());
                examine_cached(&adverts, &name, ino, clock, &mut procs, c)
            }
            None => examine(&adverts, &name, &mut procs).0,
        };
        match found {
            Entry::Live(advert) => live.push(Listed {
                dir: adverts.child(&name),
                advert,
            }),
            Entry::Stale(reason) => {
                stale.push((name, reason));
                if stale.len() >= STALE_BATCH {
                    removal.flush(&adverts, &mut stale, &late);
                }
            }
            Entry::Skip(Some(why)) => skipped.add(why),
            Entry::Skip(None) => {}
        }
    }
    skipped.report(adverts.path());
    if let Some(c) = cache {
        let ids: std::collections::HashSet<&str> =
            live.iter().map(|l| l.advert.id.as_str()).collect();
        c.retain(|name, _| ids.contains(name.as_str()));
    }
    removal.flush(&adverts, &mut stale, &late);
    removal.report(&adverts, stale.len());
    let removed = removal.removed;
    live.sort_by(|a, b| a.advert.id.cmp(&b.advert.id));
    Ok((live, removed))
}

/// Stale advertisements are removed in batches of this many while a
/// listing goes on, so that a listing cut short by its deadline has still
/// removed what it found.
const STALE_BATCH: usize = 64;

/// The stale advertisements one listing removes: under the `adverts`
/// directory's lock (taken once, at the first batch, held until the
/// listing ends), each looked at again before it goes.
#[derive(Default)]
struct Removal {
    /// `Some(true)`: the lock is ours; `Some(false)`: another process kept
    /// it, nothing is removed by this listing.
    locked: Option<bool>,
    removed: usize,
    examples: Vec<String>,
}

impl Removal {
    /// Removes the advertisements in `stale` (emptying it), stopping when
    /// `late()`.
    fn flush(&mut self, adverts: &Dir, stale: &mut Vec<(String, String)>, late: &dyn Fn() -> bool) {
        if stale.is_empty() {
            return;
        }
        if self.locked.is_none() {
            self.locked = Some(adverts.lock_within(LIST_LOCK_WAIT).unwrap_or(false));
        }
        if self.locked != Some(true) {
            return;
        }
        let batch = std::mem::take(stale);
        let mut rest = batch.into_iter();
        for (name, reason) in rest.by_ref() {
            if late() {
                stale.push((name, reason));
                break;
            }
            // Look again under the lock: a publisher may have replaced it
            // meanwhile.
            if let (Entry::Stale(_), _) = examine(adverts, &name, &mut Procs::default()) {
                let path = adverts.child(&name);
                match remove_tree(&path) {
                    Ok(()) => {
                        if self.examples.len() < SKIP_EXAMPLES {
                            self.examples.push(format!("{name} ({reason})"));
                        }
                        self.removed += 1;
                    }
                    Err(e) => crate::log::warn!(
                        dir = %path.display(),
                        error = %e,
                        "could not remove a stale advertisement"
                    ),
                }
            }
        }
        stale.extend(rest);
    }

    /// One event for the listing: how many went, and how many are left.
    fn report(&self, adverts: &Dir, left: usize) {
        if self.removed > 0 {
            crate::log::info!(
                dir = %adverts.path().display(),
                count = self.removed,
                "removed {} stale advertisements, such as: {}",
                self.removed,
                self.examples.join("; ")
            );
        }
        if left > 0 {
            let why = if self.locked == Some(false) {
                "the adverts directory was locked by another process"
            } else {
                "the listing's deadline passed"
            };
            crate::log::info!(
                dir = %adverts.path().display(),
                count = left,
                "{left} stale advertisements left for a later listing: {why}"
            );
        }
    }
}

/// The processes [`list`] has looked up in `/proc` during one call: pid ->
/// the running process with that pid, if any.
#[derive(Default)]
struct Procs(std::collections::HashMap<u32, Option<ProcId>>);

impl Procs {
    /// [`Advert::is_live`], reading `/proc/<pid>/stat` once per pid.
    fn is_live(&mut self, a: &Advert) -> bool {
        let found = *self
            .0
            .entry(a.pid)
            .or_insert_with(|| ProcId::of(a.pid).ok().flatten());
        found == Some(a.proc_id())
    }
}

/// What [`examine`] gives of a live advertisement for an [`AdvertCache`]:
/// its open directory, the bytes of its advertisement file and their stamp.
type Kept = (Dir, Vec<u8>, Stamp);

/// [`examine`], first with what `cache` kept of `name` (see
/// [`AdvertCache`]); a live advertisement examined afresh is kept.
///
/// `dir_ino` is the inode number `readdir` gave for `name` if it is a
/// directory: the kept directory is still the one under that name when the
/// numbers agree (a name now leading to another directory, or to a link,
/// is examined afresh).
fn examine_cached(
    adverts: &Dir,
    name: &str,
    dir_ino: Option<u64>,
    clock: SystemTime,
    procs: &mut Procs,
    cache: &mut HashMap<String, Cached>,
) -> Entry {
    if let Some(c) = cache.get_mut(name) {
        let same_dir = dir_ino == Some(c.dir_id.ino());
        // The clock (read once for the listing, before any stamp), then
        // the directory's own stamp, then (if it changed or is due) the
        // files: a change after this stamp gets a later change time (see
        // `quiet_since`).
        let dir_stamp = if same_dir {
            c.dir.own_stamp().ok()
        } else {
            None
        };
        c.quiet = match (&c.checked, &dir_stamp) {
            (Some((then, at)), Some(now)) => quiet_since(then, *at, now, clock),
            _ => false,
        };
        if c.quiet {
            return if procs.is_live(&c.advert) {
                Entry::Live(c.advert.clone())
            } else {
                Entry::Stale(stale_reason(&Ok(c.advert.clone())))
            };
        }
        // Unchanged file (same stamp): the kept copy. Else read it again
        // and compare.
        let same_file = same_dir
            && match c.dir.stamp(ADVERT_FILE) {
                Ok(Some(st)) if st == c.stamp => true,
                Ok(Some(_)) => match c.dir.read_small_stamped(ADVERT_FILE, MAX_FILE) {
                    Ok((b, st)) if b == c.bytes => {
                        c.stamp = st;
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
        if same_file {
            c.checked = dir_stamp.map(|st| (st, clock));
            return if procs.is_live(&c.advert) {
                Entry::Live(c.advert.clone())
            } else {
                Entry::Stale(stale_reason(&Ok(c.advert.clone())))
            };
        }
        cache.remove(name);
    }
    let (found, kept) = examine(adverts, name, procs);
    if let (Entry::Live(advert), Some((dir, bytes, stamp))) = (&found, kept) {
        if let Ok(dir_id) = dir.id() {
            cache.insert(
                name.to_string(),
                Cached {
                    dir,
                    dir_id,
                    stamp,
                    bytes,
                    advert: advert.clone(),
                    sync: None,
                    checked: None,
                    quiet: false,
                },
            );
        }
    }
    found
}

/// Classifies the entry `name` of the `adverts` directory. For a live
/// advertisement, also gives its open directory and the bytes of its
/// advertisement file.
fn examine(adverts: &Dir, name: &str, procs: &mut Procs) -> (Entry, Option<Kept>) {
    let (entry, kept) = examine_in(adverts, name, procs);
    match entry {
        Entry::Live(_) => (entry, kept),
        _ => (entry, None),
    }
}

fn examine_in(adverts: &Dir, name: &str, procs: &mut Procs) -> (Entry, Option<Kept>) {
    if name != DAEMON_ID {
        if let Some(p) = tenant_id_problem(name) {
            return (
                Entry::Skip(Some(format!("{}: name {p}", shown(name)))),
                None,
            );
        }
    }
    match adverts.entry_type(name) {
        Ok(Some(EntryType::Directory)) => {}
        Ok(None) => return (Entry::Skip(None), None), // removed meanwhile
        Ok(Some(EntryType::Symlink)) => {
            let why = format!("{name}: a symbolic link (never followed)");
            return (Entry::Skip(Some(why)), None);
        }
        Ok(Some(_)) => {
            return (Entry::Skip(Some(format!("{name}: not a directory"))), None);
        }
        Err(e) => return (Entry::Skip(Some(format!("{name}: {e}"))), None),
    }
    let dir = match adverts.open_at(name) {
        Ok(d) => d,
        Err(e) => {
            // Another uid's, or group/other bits, or gone: not ours to judge.
            let why = (e.kind() != ErrorKind::NotFound).then(|| format!("{name}: {e}"));
            return (Entry::Skip(why), None);
        }
    };
    let (found, read) = match dir.read_small_stamped(ADVERT_FILE, MAX_FILE) {
        Ok((bytes, stamp)) => {
            let what = format!("advertisement file {}", dir.child(ADVERT_FILE).display());
            (Advert::parse_in(&bytes, &what), Some((bytes, stamp)))
        }
        Err(e) => (Err(e), None),
    };
    let entry = match found {
        Ok(a) if a.id == name => {
            if procs.is_live(&a) {
                Entry::Live(a)
            } else {
                Entry::Stale(stale_reason(&Ok(a)))
            }
        }
        // An I/O error (not a missing or bad file) says nothing about it.
        Err(e) if e.kind() == ErrorKind::Io => Entry::Skip(Some(format!("{name}: {e}"))),
        other => {
            // Missing or garbage advertisement: stale once the directory
            // has not changed for STALE_GRACE.
            let old = dir
                .mtime()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_GRACE);
            if old {
                Entry::Stale(stale_reason(&other))
            } else {
                Entry::Skip(None)
            }
        }
    };
    (entry, read.map(|(bytes, stamp)| (dir, bytes, stamp)))
}

/// Why an advertisement directory holding `found` is stale (for logs).
fn stale_reason(found: &Result<Advert>) -> String {
    match found {
        Ok(a) => match ProcId::of(a.pid) {
            Ok(Some(p)) if p.start != a.start => format!(
                "pid {} was reused (start time {} instead of {})",
                a.pid, p.start, a.start
            ),
            Ok(Some(_)) => format!("advertised as {} in another directory", shown(&a.id)),
            _ => format!("process {} is gone", a.pid),
        },
        Err(e) => e.message().to_string(),
    }
}

/// Opens (creating it if `create` and missing) the domain's `adverts`
/// directory; `None` if it is missing and not to be created.
fn open_adverts(domain: &Path, create: bool) -> Result<Option<Dir>> {
    let path = adverts_dir(domain);
    if create {
        make_dir(&path)?;
    }
    match Dir::open(&path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if !create && e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the directory `path` and everything in it, never following a
/// symbolic link (a link is removed, not its target). Missing is fine.
fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

fn read_advert_in(dir: &Dir) -> Result<Advert> {
    let bytes = dir.read_small(ADVERT_FILE, MAX_FILE)?;
    let what = format!("advertisement file {}", dir.child(ADVERT_FILE).display());
    Advert::parse_in(&bytes, &what)
}

/// Reads and parses the advertisement file of the advertisement directory
/// `dir` (neither followed if a symbolic link). `NotFound` if missing,
/// `Corrupt` (naming the file and line) if not a valid advertisement.
pub fn read_advert(dir: &Path) -> Result<Advert> {
    read_advert_in(&Dir::open(dir)?)
}

/// Writes the response file `r` into the advertisement directory `dir`:
/// owner-only, written under a temporary name and linked into place, so a
/// reader sees all of it or nothing. A leftover regular file (of a dead
/// attacher) is replaced; a symbolic link at `response` is refused with
/// `Denied` and never followed; `Invalid` if `r` breaks the format's rules.
pub fn write_response(dir: &Path, r: &Response) -> Result<()> {
    r.validate()?;
    let d = Dir::open(dir)?;
    let text = r.to_text();
    let path = d.child(RESPONSE_FILE);
    for _ in 0..RESPONSE_ATTEMPTS {
        if d.publish(RESPONSE_FILE, text.as_bytes())? {
            return Ok(());
        }
        match d.entry_type(RESPONSE_FILE)? {
            Some(EntryType::RegularFile) => d.unlink(RESPONSE_FILE)?,
            None => {}
            Some(EntryType::Symlink) => {
                return Err(err!(
                    Denied,
                    "{}: is a symbolic link, which mtipc never follows (not written)",
                    path.display()
                ))
            }
            Some(_) => {
                return Err(err!(
                    Corrupt,
                    "{}: not a regular file (not written)",
                    path.display()
                ))
            }
        }
    }
    Err(err!(
        Exists,
        "{}: another response keeps appearing; not written",
        path.display()
    ))
}

/// Reads the response file of the advertisement directory `dir`: `None` if
/// there is none. At most `MAX_FILE` + 1 bytes are read; anything
/// but a valid response is `Corrupt` (naming the file and line); a symbolic
/// link is `Denied`, never followed.
pub fn read_response(dir: &Path) -> Result<Option<Response>> {
    read_response_in(&Dir::open(dir)?)
}

fn read_response_in(d: &Dir) -> Result<Option<Response>> {
    let bytes = match d.read_small(RESPONSE_FILE, MAX_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let what = format!("response file {}", d.child(RESPONSE_FILE).display());
    Response::parse_in(&bytes, &what).map(Some)
}

/// Removes the response file of `dir` (a missing one, or a missing
/// directory, is fine). A symbolic link there is removed, not followed.
pub fn remove_response(dir: &Path) -> Result<()> {
    match Dir::open(dir) {
        Ok(d) => d.unlink(RESPONSE_FILE),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The round marker's value while an attacher's round for `tenant` runs:
/// FNV-1a of the id with the lowest bit set (never 0, the marker's "no
/// round"). A hint for mtipcd, which looks in the directories of the ids
/// with this hash first ([`ResponseScan::hinted`]); nothing trusts it.
pub fn round_hint(tenant: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in tenant.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 1
}

/// The daemon's look at every advertisement directory for a response, once
/// per round, keeping each directory open from one round to the next (a
/// name that now leads to another directory is opened again).
#[derive(Debug, Default)]
pub struct ResponseScan {
    dirs: HashMap<String, (Dir, FileId)>,
}

impl ResponseScan {
    /// A scan that keeps nothing yet.
    pub fn new() -> ResponseScan {
        ResponseScan::default()
    }

    /// The responses in the kept directories whose name has the round hint
    /// `hint` ([`round_hint`]), without listing the domain: empty if no
    /// kept directory has that hash (the caller then runs [`Self::scan`]).
    /// The caller must check what it finds (a valid response of a live
    /// attacher) and fall back to the scan otherwise: a kept directory may
    /// have been replaced since, and the hint is anyone's to write.
    pub fn hinted(&self, domain: &Path, hint: u32) -> Vec<(PathBuf, Result<Option<Response>>)> {
        if hint == 0 {
            return Vec::new();
        }
        let adverts = adverts_dir(domain);
        self.dirs
            .iter()
            .filter(|(name, _)| round_hint(name) == hint)
            .map(|(name, (dir, _))| (adverts.join(name), read_response_in(dir)))
            .collect()
    }

    /// Every advertisement directory of `domain` (named like a tenant id)
    /// with what its response file holds: `Ok(None)` for none, an error for
    /// an unreadable or invalid one. A directory that vanishes meanwhile is
    /// left out.
    pub fn scan(&mut self, domain: &Path) -> Result<Vec<(PathBuf, Result<Option<Response>>)>> {
        let Some(adverts) = open_adverts(domain, false)? else {
            self.dirs.clear();
            return Ok(Vec::new());
        };
        let entries = std::fs::read_dir(adverts.path())
            .map_err(|e| Error::io(adverts.path().display(), e))?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if tenant_id_problem(&name).is_some() {
                continue;
            }
            // readdir's own type and inode number: no system call.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let ino = entry.ino();
            if self
                .dirs
                .get(&name)
                .map_or(true, |(_, kept)| kept.ino() != ino)
            {
                match adverts.open_at(&name).and_then(|d| Ok((d.id()?, d))) {
                    Ok((id, d)) => {
                        self.dirs.insert(name.clone(), (d, id));
                    }
                    Err(_) => {
                        self.dirs.remove(&name);
                        continue;
                    }
                }
            }
            let (dir, _) = &self.dirs[&name];
            out.push((adverts.child(&name), read_response_in(dir)));
            seen.insert(name);
        }
        self.dirs.retain(|name, _| seen.contains(name));
        Ok(out)
    }
}
