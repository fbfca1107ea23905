//! The files of discovery and attach (`docs/attach.md`, "Files in the
//! domain"): tenant ids, the advertisement and response files (text, parsed
//! strictly), and the synchronization file (a small shared region that is
//! also a `flock` target). Process identity (pid + start time, which tells a
//! live advertisement from a stale one), the name rules and the directory
//! operations are the foundation's (`crate::sys`).
//!
//! ```text
//! <domain>/adverts/<id>/   one directory per advertisement, mode 0700
//!     advert               the advertisement file   ([`Advert`])
//!     sync                 the synchronization file ([`SyncFile`])
//!     response             written by an attacher   ([`Response`])
//! ```
//!
//! Everything here treats the files as written by somebody else: every file
//! and directory is opened without following symbolic links (relative to an
//! already opened and checked directory), must be owned by this process's
//! uid with no group/other permission bits, is read with a size bound
//! ([`MAX_FILE`]) and parsed strictly; a parser never panics and refuses
//! anything but the canonical text with `Corrupt` and a message that names
//! the file, the line and what is wrong. Files are created owner-only under a
//! temporary name and published with `link(2)`, so nobody ever reads a
//! half-written one.
//!
//! Publishing, withdrawing and removing stale advertisements are serialised
//! between processes by a `flock(LOCK_EX)` on the `adverts` directory itself
//! (held for a few file operations, never during a round), so that two
//! processes cleaning up or replacing the same stale advertisement cannot
//! remove each other's fresh one.

use crate::error::{err, Result};
use std::path::{Path, PathBuf};

// Every submodule is hidden from cbindgen: nothing here is C API.
/// cbindgen:ignore
mod adverts;
/// cbindgen:ignore
mod format;
/// cbindgen:ignore
mod sync_file;

pub use crate::sys::ProcId;
pub use adverts::{
    list, read_advert, read_response, remove_response, round_hint, write_response, AdvertCache,
    AdvertFiles, Listed, ResponseScan,
};
pub use format::{Advert, Response, Role};
pub use sync_file::{SyncFile, STATE_BUSY, STATE_IDLE};

pub use consts::*;

// The constants live in a module of their own only so that cbindgen (which
// reads the whole crate for include/mtipc.h) leaves them out of the C API.
/// cbindgen:ignore
mod consts {
    /// Largest advertisement or response file accepted (bytes); a longer one
    /// is `Corrupt`. Readers stop after `MAX_FILE + 1` bytes.
    pub const MAX_FILE: usize = 4096;

    /// The id the daemon (mtipcd) advertises under; no tenant can take it.
    pub const DAEMON_ID: &str = "@mtipcd";

    /// Longest tenant id (bytes).
    // What validate_tenant_id enforces (through sys::MAX_NAME), named for
    // its documentation and the tests.
    #[allow(dead_code)]
    pub const MAX_ID: usize = crate::sys::MAX_NAME;

    /// Most protocol names one advertisement may list.
    pub const MAX_PROTOCOLS: usize = 16;

    /// Longest protocol name (bytes).
    pub const MAX_PROTOCOL: usize = 32;

    /// Name of the directory of advertisements inside the domain.
    pub const ADVERTS_DIR: &str = "adverts";
    /// Name of the advertisement file inside an advertisement directory.
    pub const ADVERT_FILE: &str = "advert";
    /// Name of the synchronization file inside an advertisement directory.
    pub const SYNC_FILE: &str = "sync";
    /// Name of the response file inside an advertisement directory.
    pub const RESPONSE_FILE: &str = "response";
    /// Name of mtipcd's relay socket inside the domain (what a
    /// [`Response`](super::Response)'s `relay` names today).
    pub const RELAY_SOCKET: &str = "relay.sock";

    /// How old an advertisement directory without a valid advertisement
    /// file must be before [`list`](super::list) removes it: a younger one
    /// may be in the middle of being published.
    pub const STALE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
}

/// Checks a tenant id: 1 to [`MAX_ID`] bytes of `[A-Za-z0-9_.-]`, not
/// starting with `.` or `-`. [`DAEMON_ID`] is not a tenant id. `Invalid` with
/// a message saying what is wrong otherwise.
pub fn validate_tenant_id(id: &str) -> Result<()> {
    match tenant_id_problem(id) {
        None => Ok(()),
        Some(why) => Err(err!(Invalid, "tenant id {}: {why}", shown(id))),
    }
}

/// Checks a protocol name: 1 to [`MAX_PROTOCOL`] bytes of `[a-z0-9_.-]`.
/// `Invalid` with a message saying what is wrong otherwise. (Advertisements
/// check their lists of names with the same rule, in `format`.)
#[cfg(test)]
pub fn validate_protocol(name: &str) -> Result<()> {
    match protocol_problem(name) {
        None => Ok(()),
        Some(why) => Err(err!(Invalid, "protocol name {}: {why}", shown(name))),
    }
}

/// What is wrong with `id` as a tenant id, if anything.
fn tenant_id_problem(id: &str) -> Option<String> {
    if id == DAEMON_ID {
        return Some("is reserved for the daemon (mtipcd)".to_string());
    }
    plain_name_problem(id)
}

/// What is wrong with `name` as a protocol name, if anything.
fn protocol_problem(name: &str) -> Option<String> {
    name_problem(
        name,
        MAX_PROTOCOL,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.' || b == b'-',
        "a-z 0-9 _ . -",
    )
}

/// What is wrong with the name of the relay socket, if anything: it must be
/// a plain name inside the domain (the tenant-id rules: no `/`, no leading
/// `.`), never a path.
fn relay_name_problem(name: &str) -> Option<String> {
    plain_name_problem(name)
}

/// The tenant-id rules (the plain-name rules of [`crate::sys::name`]).
fn plain_name_problem(name: &str) -> Option<String> {
    crate::sys::name_problem(name)
}

/// Length and character-set rules shared by ids and names.
fn name_problem(name: &str, max: usize, ok: impl Fn(u8) -> bool, allowed: &str) -> Option<String> {
    crate::sys::name::charset_problem(name, max, ok, allowed)
}

use crate::sys::shown;

/// The current Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// The directory of advertisements of `domain`: `<domain>/adverts`.
pub fn adverts_dir(domain: &Path) -> PathBuf {
    domain.join(ADVERTS_DIR)
}

/// The directory of the advertisement `id` of `domain`:
/// `<domain>/adverts/<id>`. `id` must be a valid tenant id or [`DAEMON_ID`]
/// (this only joins paths; callers validate ids first).
pub fn advert_dir(domain: &Path, id: &str) -> PathBuf {
    adverts_dir(domain).join(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn tenant_ids() {
        for good in ["a", "acme", "A-b_c.d", "0", "x.", "x-", &"z".repeat(64)] {
            validate_tenant_id(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            (".hidden", "starts with '.'"),
            ("-opt", "starts with '-'"),
            ("..", "starts with '.'"),
            ("a/b", "contains '/'"),
            ("a b", "contains ' '"),
            ("é", "contains 'é'"),
            ("a\0", "contains '\\0'"),
            ("a\n", "contains '\\n'"),
            (DAEMON_ID, "reserved for the daemon"),
            ("@x", "contains '@'"),
        ];
        for (bad, why) in cases {
            let e = validate_tenant_id(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid, "{bad:?}");
            assert!(e.message().contains(why), "{bad:?}: {}", e.message());
            assert!(e.message().starts_with("tenant id "), "{}", e.message());
        }
        let long = "a".repeat(65);
        let e = validate_tenant_id(&long).unwrap_err();
        assert!(e.message().contains("65 bytes long (at most 64)"), "{e}");
        // The message never carries an unbounded copy of the input.
        let huge = "a".repeat(100_000);
        assert!(validate_tenant_id(&huge).unwrap_err().message().len() < 200);
    }

    #[test]
    fn protocol_names() {
        for good in ["echo", "json", "a.b-c_d", "0", ".x", "-", &"p".repeat(32)] {
            validate_protocol(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
        for bad in ["", "Echo", "a,b", "a b", &"p".repeat(33), "é"] {
            assert_eq!(
                validate_protocol(bad).unwrap_err().kind(),
                ErrorKind::Invalid,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shown_is_bounded_and_escaped() {
        assert_eq!(shown("ab"), "\"ab\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let s = shown(&"é".repeat(100));
        assert!(s.ends_with("...") && s.chars().count() < 50, "{s}");
    }

    #[test]
    fn paths_and_time() {
        let d = Path::new("/x/dom");
        assert_eq!(adverts_dir(d), Path::new("/x/dom/adverts"));
        assert_eq!(advert_dir(d, "acme"), Path::new("/x/dom/adverts/acme"));
        // After 2020-01-01 and before 2200.
        let t = now_ms();
        assert!(t > 1_577_836_800_000 && t < 7_258_118_400_000, "{t}");
    }
}
