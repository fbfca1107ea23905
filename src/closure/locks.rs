//! Who holds a closure version: `flock(LOCK_SH)` holders of its file, as the
//! kernel lists them in `/proc/locks`.
//!
//! A line of `/proc/locks` looks like
//! `12: FLOCK  ADVISORY  READ  4242 fd:01:1234567 0 EOF`: the lock's class,
//! mode, type, the pid that took it, the file as `major:minor:inode` (major
//! and minor in hex), the range. Lines with `->` are waiters, not holders.

use std::collections::HashMap;

/// A file as `/proc/locks` names it: device major, minor, inode.
pub type FileKey = (u32, u32, u64);

/// The file key of a `stat` result.
pub fn key_of(md: &std::fs::Metadata) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    let dev = md.dev();
    (rustix::fs::major(dev), rustix::fs::minor(dev), md.ino())
}

/// Counts the shared `flock` holders of each file in the text of
/// `/proc/locks`. Lines that do not parse are skipped (the file is the
/// kernel's, but its format is not worth failing for).
pub fn flock_readers(text: &str) -> HashMap<FileKey, u32> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 6 || t[1] == "->" || t[1] != "FLOCK" || t[3] != "READ" {
            continue;
        }
        let mut parts = t[5].split(':');
        let (Some(maj), Some(min), Some(ino), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(maj), Ok(min), Ok(ino)) = (
            u32::from_str_radix(maj, 16),
            u32::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        *out.entry((maj, min, ino)).or_insert(0) += 1;
    }
    out
}

/// [`flock_readers`] of this host's `/proc/locks` (empty if unreadable).
///
/// The file is read with one `read(2)` into a buffer large enough for all
/// of it: the kernel builds each `read` of `/proc/locks` under its lock
/// list's lock, but between two reads locks come and go, and the entries
/// after a removed one shift, so a file read in pieces can show a lock
/// twice (seen: 9 readers counted for 8 holders on a busy host, whose
/// `/proc/locks` was longer than one read). If the buffer fills up, the
/// file is read again from the start with a larger one.
pub fn read_flock_readers() -> HashMap<FileKey, u32> {
    use std::io::Read;
    let mut size = 64 * 1024;
    while size <= 64 * 1024 * 1024 {
        let Ok(mut f) = std::fs::File::open("/proc/locks") else {
            return HashMap::new();
        };
        let mut buf = vec![0u8; size];
        let n = loop {
            match f.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return HashMap::new(),
            }
        };
        if n < size {
            return flock_readers(&String::from_utf8_lossy(&buf[..n]));
        }
        size *= 4;
    }
    HashMap::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_holders_not_waiters() {
        let text = "1: FLOCK  ADVISORY  READ  4242 fd:01:1234567 0 EOF\n\
                    2: FLOCK  ADVISORY  READ  4243 fd:01:1234567 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 4244 fd:01:1234567 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 4245 fd:01:99 0 EOF\n\
                    4: POSIX  ADVISORY  READ  4246 fd:01:1234567 0 EOF\n\
                    5: OFDLCK ADVISORY  READ  -1 fd:01:1234567 0 0\n\
                    6: FLOCK  ADVISORY  READ  4247 00:2d:77 0 EOF\n\
                    garbage\n\
                    7: FLOCK  ADVISORY  READ  1 zz:01:5 0 EOF\n";
        let m = flock_readers(text);
        assert_eq!(m.get(&(0xfd, 1, 1234567)), Some(&2));
        assert_eq!(m.get(&(0, 0x2d, 77)), Some(&1));
        assert_eq!(m.get(&(0xfd, 1, 99)), None);
        assert_eq!(m.len(), 2);
    }
}
