//! Helpers shared by the benches: where the domains go, the machine line,
//! the clock, percentiles, settings from the environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Where the bench's domains go: the directory the environment variable
/// `var` names, else where the library puts a domain by default
/// (`$XDG_RUNTIME_DIR`, else the temporary directory).
pub fn base_dir(var: &str) -> PathBuf {
    std::env::var_os(var)
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// The file system type of `path`'s mount (from /proc/self/mounts).
pub fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best = (0, "?".to_string());
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && path.starts_with(f[1]) && f[1].len() >= best.0 {
            best = (f[1].len(), f[2].to_string());
        }
    }
    best.1
}

/// The three load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// "2 CPUs online; kernel X; CPU model".
pub fn machine() -> String {
    // SAFETY: no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    format!("{ncpu} CPUs online ({model}); kernel {}", kernel.trim())
}

/// An environment variable as a number, else `default`.
pub fn env_usize(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CLOCK_MONOTONIC in nanoseconds (one clock for every process of the host).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Percentile `p` (0..=100) of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sorts a copy.
pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s
}

/// The resident set of this process, from /proc/self/status: (VmRSS,
/// RssFile + RssShmem) in bytes.
pub fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("RssFile:") + field("RssShmem:"))
}

/// "met" / "NOT met".
pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Opens (creating it if missing) the file `path`, sizes it to `len` bytes
/// and maps it shared: a small shared-memory file for a bench's own words.
pub fn map_file(path: &Path, len: u64) -> memmap2::MmapRaw {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_len(len)
        .unwrap_or_else(|e| panic!("size {}: {e}", path.display()));
    memmap2::MmapRaw::map_raw(&f).unwrap_or_else(|e| panic!("map {}: {e}", path.display()))
}

/// A fresh shared anonymous mapping of `len` bytes, zero-filled, that a
/// forked child shares (memmap2's anonymous maps are private). The caller
/// unmaps it, or leaves it to the end of the process.
pub fn map_anon_shared(len: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping; no memory of ours is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "mmap of {len} shared bytes failed");
    p as *mut u8
}

/// "Domain under DIR (FS); load average A B C": where the bench's domains
/// go (`base_dir(var)`), on which file system, and the load at the start.
pub fn where_line(var: &str) -> String {
    let dir = base_dir(var);
    format!(
        "Domain under {} ({}); load average {}",
        dir.display(),
        fs_type(&dir),
        loadavg()
    )
}
