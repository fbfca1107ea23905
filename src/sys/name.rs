//! Names that become file names in the domain (tenant ids, session table
//! names, closure names, volume names): checked before any path is built.

use crate::error::{err, Result};

/// Longest name (bytes).
pub const MAX_NAME: usize = 64;

/// What is wrong with `name` as a plain name, if anything: 1 to
/// [`MAX_NAME`] bytes of `[A-Za-z0-9_.-]`, not starting with `.` or `-`
/// (so never `.`, `..`, a hidden or temporary file, or an option-like
/// name). Guarantees a non-empty name when it returns `None`.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    charset_problem(name, MAX_NAME, ok, "A-Z a-z 0-9 _ . -").or_else(|| match name.as_bytes()[0] {
        b'.' => Some("starts with '.'".to_string()),
        b'-' => Some("starts with '-'".to_string()),
        _ => None,
    })
}

/// `Invalid` ("`what` "name": why") unless `name` is a plain name
/// ([`name_problem`]).
pub fn check_name(what: &str, name: &str) -> Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(why) => Err(err!(Invalid, "{what} {}: {why}", shown(name))),
    }
}

/// Length and character-set rules: what is wrong with `name` if it is
/// empty, longer than `max` bytes, or has a character `ok` refuses
/// (`allowed` describes the accepted ones). Guarantees a non-empty name
/// when it returns `None`.
pub fn charset_problem(
    name: &str,
    max: usize,
    ok: impl Fn(u8) -> bool,
    allowed: &str,
) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_string());
    }
    if name.len() > max {
        return Some(format!("is {} bytes long (at most {max})", name.len()));
    }
    if let Some(c) = name.chars().find(|&c| !c.is_ascii() || !ok(c as u8)) {
        return Some(format!("contains {c:?} (allowed: {allowed})"));
    }
    None
}

/// A string from untrusted input as shown in a message: quoted and escaped,
/// and cut after 40 characters so a message stays short.
pub fn shown(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((i, _)) => format!("{:?}...", &s[..i]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names() {
        for good in ["a", "acme", "A-b_c.d", "0", "x.", "x-", &"z".repeat(64)] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".x",
            "-x",
            "a/b",
            "a b",
            "é",
            "a\0b",
            &"z".repeat(65),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        let e = check_name("volume name", "../x").unwrap_err();
        assert_eq!(
            e.message(),
            "volume name \"../x\": contains '/' (allowed: A-Z a-z 0-9 _ . -)"
        );
        assert_eq!(shown(&"y".repeat(50)), format!("{:?}...", "y".repeat(40)));
    }
}
