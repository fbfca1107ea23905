//! Process identity: a pid and the process's start time, so that a pid the
//! kernel has reused for another process is not taken for the one that
//! published something (an advertisement, a worker record, a permit).

use crate::error::{err, Error, Result};
use std::io::Read;

/// A process: its pid and its start time (field 22 of `/proc/<pid>/stat`,
/// clock ticks since boot). Two processes never share both within a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId {
    /// The process id.
    pub pid: u32,
    /// The start time, clock ticks since boot.
    pub start: u64,
}

/// This host's name (the `nodename` of uname(2)), with control characters
/// replaced by `?`: it names the host of a permit's instance in a status
/// report, and goes into records other hosts read.
pub fn host_name() -> String {
    let uts = rustix::system::uname();
    uts.nodename()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What `/proc/<pid>/stat` says that matters here.
struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    state: u8,
    /// Field 4: the parent's pid.
    ppid: u32,
    /// Field 22.
    start: u64,
}

/// Longest `/proc/<pid>/stat` read; the real line is a few hundred bytes.
const MAX_STAT: u64 = 4096;

impl ProcId {
    /// The calling process. Fails only if `/proc` cannot be read (mtipc
    /// needs it to tell live advertisements from stale ones).
    pub fn current() -> Result<ProcId> {
        let pid = std::process::id();
        match read_stat(pid)? {
            Some(s) => Ok(ProcId {
                pid,
                start: s.start,
            }),
            None => Err(err!(
                Io,
                "/proc/{pid}/stat (this process) cannot be found: is /proc mounted?"
            )),
        }
    }

    /// The process with `pid`, if one is running: `None` if there is no
    /// such process, or it has exited and not been reaped yet (a zombie).
    pub fn of(pid: u32) -> Result<Option<ProcId>> {
        Ok(read_stat(pid)?
            .filter(|s| s.state != b'Z' && s.state != b'X')
            .map(|s| ProcId {
                pid,
                start: s.start,
            }))
    }

    /// The parent of this process, if it is running:
    /// `None` if there is no such process (or it is a zombie, or the pid
    /// was reused).
    pub fn parent_of(&self) -> Result<Option<u32>> {
        Ok(read_stat(self.pid)?
            .filter(|s| s.state != b'Z' && s.state != b'X' && s.start == self.start)
            .map(|s| s.ppid))
    }

    /// Whether this process is still running: a process with this pid
    /// exists, is not a zombie, and has this start time (else the pid was
    /// reused). An unreadable `/proc` counts as not alive.
    pub fn is_alive(&self) -> bool {
        matches!(ProcId::of(self.pid), Ok(Some(p)) if p == *self)
    }
}

/// Reads and parses `/proc/<pid>/stat`; `None` if there is no such process.
fn read_stat(pid: u32) -> Result<Option<Stat>> {
    // pid 0 is not a process; /proc/0 does not exist, but do not ask.
    if pid == 0 || pid > i32::MAX as u32 {
        return Ok(None);
    }
    let path = format!("/proc/{pid}/stat");
    // Room for the whole line from the start: one read (and the one that
    // finds the end), not std's small probes growing an empty vector
    // (six reads for a line of 300 bytes).
    let mut buf = Vec::with_capacity(1024);
    let read = std::fs::File::open(&path).and_then(|f| f.take(MAX_STAT).read_to_end(&mut buf));
    match read {
        Ok(_) => {}
        // ENOENT: no such pid. ESRCH: it exited while we read.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(Error::io(&path, e)),
    }
    parse_stat(&buf)
        .map(Some)
        .ok_or_else(|| err!(Io, "{path}: unexpected content (no state or start time)"))
}

/// Fields 3, 4 and 22 of a stat line. The command name (field 2) is in
/// parentheses and may itself contain `)` and spaces: fields are counted
/// from the last `)`.
fn parse_stat(buf: &[u8]) -> Option<Stat> {
    let close = buf.iter().rposition(|&b| b == b')')?;
    let mut fields = buf[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let ppid = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    // Fields 5..=21 come between the parent and the start time.
    let start = fields.nth(22 - 5)?;
    let start = std::str::from_utf8(start).ok()?.parse().ok()?;
    Some(Stat { state, ppid, start })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_parsing() {
        let line = b"4242 (we ird) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                     1234567 1000 100 18446744073709551615\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.start, 1_234_567);
        assert_eq!(s.ppid, 1);
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(b"1 (x) S 1 2").is_none());
        assert!(parse_stat(b"1 (x)").is_none());
    }

    #[test]
    fn current_process() {
        let me = ProcId::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
        assert_eq!(ProcId::of(me.pid).unwrap(), Some(me));
        assert!(!ProcId {
            pid: me.pid,
            start: me.start + 1
        }
        .is_alive());
        assert_eq!(ProcId::of(0).unwrap(), None);
        assert_eq!(ProcId::of(u32::MAX).unwrap(), None);
    }

    #[test]
    fn host_name_is_printable() {
        let h = host_name();
        assert!(!h.is_empty());
        assert!(!h.chars().any(char::is_control));
    }
}
