//! The one line each end sends first: `mtipc relay 1 <tenant|attacher> <pairing>\n`.

use crate::attach::hex;
use crate::error::{err, Result};
use std::fmt;

/// Longest hello line the relay reads (bytes, newline included). A peer that
/// sends this many bytes without a newline is refused.
pub const MAX_HELLO: usize = 128;

/// The only version of the relay's wire protocol.
const VERSION: &[u8] = b"1";

/// Which end of a pairing a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// The tenant that found the response file addressed to it.
    Tenant,
    /// The attacher that wrote the response file.
    Attacher,
}

impl End {
    /// Both ends, in index order.
    pub const BOTH: [End; 2] = [End::Tenant, End::Attacher];

    /// The word used on the wire: `tenant` or `attacher`.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Tenant => "tenant",
            End::Attacher => "attacher",
        }
    }

    /// The end on the other side of the pairing.
    pub fn other(self) -> End {
        match self {
            End::Tenant => End::Attacher,
            End::Attacher => End::Tenant,
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            End::Tenant => 0,
            End::Attacher => 1,
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed hello: which end connects, for which pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The end this connection claims to be (checked with `SO_PEERCRED`).
    pub end: End,
    /// The pairing id from the response file.
    pub pairing: [u8; 16],
}

/// The hello line an end sends: `mtipc relay 1 <end> <32 lowercase hex>\n`.
pub fn hello_line(end: End, pairing: &[u8; 16]) -> String {
    format!("mtipc relay 1 {end} {}\n", hex(pairing))
}

/// Parses a hello line. Accepts exactly the text [`hello_line`] produces
/// (one line, newline included, at most [`MAX_HELLO`] bytes); anything else
/// is [`Corrupt`](crate::ErrorKind::Corrupt) with a one-line message that
/// says what is wrong (the relay sends it back to the peer).
pub fn parse_hello(line: &[u8]) -> Result<Hello> {
    if line.len() > MAX_HELLO {
        return Err(err!(
            Corrupt,
            "relay hello is {} bytes, more than {MAX_HELLO}",
            line.len()
        ));
    }
    let Some(body) = line.strip_suffix(b"\n") else {
        return Err(err!(Corrupt, "relay hello does not end with a newline"));
    };
    if body.contains(&b'\n') {
        return Err(err!(Corrupt, "relay hello has more than one line"));
    }
    let Some(rest) = body.strip_prefix(b"mtipc relay ") else {
        return Err(err!(
            Corrupt,
            "relay hello does not start with \"mtipc relay \": \"{}\"",
            shown(body)
        ));
    };
    let (version, rest) = split_word(rest);
    if version != VERSION {
        return Err(err!(
            Corrupt,
            "relay hello asks for protocol version \"{}\"; this relay speaks version 1",
            shown(version)
        ));
    }
    let Some(rest) = rest else {
        return Err(err!(Corrupt, "relay hello names no end after the version"));
    };
    let (end, rest) = split_word(rest);
    let end = match end {
        b"tenant" => End::Tenant,
        b"attacher" => End::Attacher,
        other => {
            return Err(err!(
                Corrupt,
                "relay hello names the end \"{}\"; expected tenant or attacher",
                shown(other)
            ))
        }
    };
    let Some(id) = rest else {
        return Err(err!(Corrupt, "relay hello has no pairing id"));
    };
    let pairing = parse_id(id).ok_or_else(|| {
        err!(
            Corrupt,
            "relay hello's pairing id \"{}\" is not 32 lowercase hex digits",
            shown(id)
        )
    })?;
    Ok(Hello { end, pairing })
}

/// Splits at the first space: the word before it and, if there was a
/// space, everything after it.
fn split_word(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

fn parse_id(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut id = [0u8; 16];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        id[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(id)
}

/// The first 8 hex digits of a pairing id, as logs and messages show it.
pub(crate) fn short(id: &[u8; 16]) -> String {
    hex(&id[..4])
}

/// Untrusted bytes made printable for a one-line message: at most 40 bytes,
/// escaped (no control character, no newline survives).
fn shown(bytes: &[u8]) -> String {
    const LIMIT: usize = 40;
    let mut s = bytes[..bytes.len().min(LIMIT)].escape_ascii().to_string();
    if bytes.len() > LIMIT {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const ID: [u8; 16] = [
        0x9c, 0x1f, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xfe, 0xff,
    ];

    #[test]
    fn line_round_trips() {
        for end in End::BOTH {
            let line = hello_line(end, &ID);
            assert!(line.len() <= MAX_HELLO);
            let h = parse_hello(line.as_bytes()).unwrap();
            assert_eq!(h, Hello { end, pairing: ID });
        }
        assert_eq!(
            hello_line(End::Tenant, &ID),
            "mtipc relay 1 tenant 9c1f000102030405060708090a0bfeff\n"
        );
        assert_eq!(short(&ID), "9c1f0001");
    }

    fn bad(line: &[u8], needle: &str) {
        let e = parse_hello(line).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(
            e.message().contains(needle),
            "{:?}: {e}",
            line.escape_ascii()
        );
        assert!(!e.message().contains('\n'), "one line: {e}");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let id = "9c1f000102030405060708090a0bfeff";
        bad(b"", "newline");
        bad(format!("mtipc relay 1 tenant {id}").as_bytes(), "newline");
        bad(
            format!("mtipc relay 1 tenant {id}\n\n").as_bytes(),
            "more than one line",
        );
        bad(&[b'x'; 200], "200 bytes");
        bad(b"GET / HTTP/1.1\n", "does not start");
        bad(
            format!("mtipc relay 2 tenant {id}\n").as_bytes(),
            "version \"2\"",
        );
        bad(b"mtipc relay 1\n", "no end");
        bad(
            format!("mtipc relay 1 daemon {id}\n").as_bytes(),
            "\"daemon\"",
        );
        bad(b"mtipc relay 1 tenant\n", "no pairing id");
        bad(b"mtipc relay 1 tenant \n", "not 32 lowercase hex");
        bad(
            format!("mtipc relay 1 tenant {}\n", id.to_uppercase()).as_bytes(),
            "lowercase hex",
        );
        bad(
            format!("mtipc relay 1 tenant {id}0\n").as_bytes(),
            "32 lowercase",
        );
        bad(
            format!("mtipc relay 1 tenant {id} \n").as_bytes(),
            "32 lowercase",
        );
        bad(
            format!("mtipc relay 1  tenant {id}\n").as_bytes(),
            "end \"\"",
        );
        bad(format!("mtipc relay 1 tenant {id}\r\n").as_bytes(), "\\r");
        bad(b"mtipc relay 1 \x1b[31m\x00\n", "\\x1b[31m\\x00");
    }

    #[test]
    fn shown_is_bounded_and_printable() {
        let s = shown(&[0u8; 100]);
        assert!(s.ends_with("..."));
        assert!(s.len() <= 40 * 4 + 3);
        assert!(s.chars().all(|c| c.is_ascii_graphic()));
    }
}
