//! The messages of the HA hooks protocol (`docs/ha.md` "The hooks
//! protocol"): one message per `SOCK_SEQPACKET` packet, ASCII words
//! separated by one space, no newline, at most [`MAX_MESSAGE`] bytes.
//!
//! From the application (the library) to the Monitor:
//!
//! ```text
//! hello 1 <pid> <start>        first, once: protocol version, pid, start time
//! ready                        the application called mt_ha_ready
//! heartbeat                    the application called mt_ha_heartbeat
//! polls on|off                 a health callback is registered (on) or removed
//! health <seq> ok|fail|none    the answer to the poll <seq> (none: no callback)
//! ```
//!
//! From the Monitor to the application:
//!
//! ```text
//! role active|standby|none <epoch>   first, as the answer to hello; then on every change
//! health? <seq>                      poll the health callback
//! ```
//!
//! Numbers are decimal without sign or leading zeros (`0` itself
//! excepted). Both ends treat what they receive as hostile: [`parse`]
//! accepts exactly what [`Message::encode`] produces and nothing else.

use crate::error::{err, Result};
use crate::ha::Role;
use std::fmt;

/// Longest message (bytes).
pub const MAX_MESSAGE: usize = 64;

/// The protocol version `hello` carries.
pub const VERSION: u32 = 1;

/// What the health callback said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// It returned healthy.
    Ok,
    /// It returned unhealthy (or panicked).
    Fail,
    /// No health callback is registered.
    None,
}

impl Health {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Fail => "fail",
            Health::None => "none",
        }
    }
}

/// One message of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// Application → Monitor, first: who connects (checked against the
    /// socket's peer credentials and `/proc`).
    Hello {
        /// The process id.
        pid: u32,
        /// Its start time (clock ticks since boot, `/proc/<pid>/stat`).
        start: u64,
    },
    /// Application → Monitor: `mt_ha_ready` was called.
    Ready,
    /// Application → Monitor: `mt_ha_heartbeat` was called.
    Heartbeat,
    /// Application → Monitor: a health callback is registered (`true`:
    /// poll it) or was removed (`false`). A connection starts without
    /// polls: an application without a callback has nothing to answer
    /// them with (and no library thread reading its connection).
    Polls(bool),
    /// Application → Monitor: the answer to the poll `seq`.
    Health {
        /// The poll's sequence number.
        seq: u64,
        /// What the callback said.
        health: Health,
    },
    /// Monitor → application: the node's role and its fencing epoch.
    Role {
        /// The role.
        role: Role,
        /// The epoch of the term (0 for none).
        epoch: u64,
    },
    /// Monitor → application: call the health callback and answer `seq`.
    HealthPoll {
        /// The sequence number the answer carries.
        seq: u64,
    },
}

impl Message {
    /// Whether the application sends this message (else the Monitor does).
    pub fn from_application(&self) -> bool {
        matches!(
            self,
            Message::Hello { .. }
                | Message::Ready
                | Message::Heartbeat
                | Message::Polls(_)
                | Message::Health { .. }
        )
    }

    /// The message's bytes on the wire.
    pub fn encode(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Hello { pid, start } => write!(f, "hello {VERSION} {pid} {start}"),
            Message::Ready => f.write_str("ready"),
            Message::Heartbeat => f.write_str("heartbeat"),
            Message::Polls(on) => f.write_str(if *on { "polls on" } else { "polls off" }),
            Message::Health { seq, health } => write!(f, "health {seq} {}", health.as_str()),
            Message::Role { role, epoch } => write!(f, "role {} {epoch}", role.as_str()),
            Message::HealthPoll { seq } => write!(f, "health? {seq}"),
        }
    }
}

/// Parses one message. Accepts exactly the bytes [`Message::encode`]
/// gives for the message it returns; anything else is
/// [`Corrupt`](crate::ErrorKind::Corrupt) with a one-line reason.
pub fn parse(bytes: &[u8]) -> Result<Message> {
    if bytes.len() > MAX_MESSAGE {
        return Err(err!(
            Corrupt,
            "HA message of {} bytes (at most {MAX_MESSAGE})",
            bytes.len()
        ));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(err!(Corrupt, "HA message \"{}\" is not text", shown(bytes)));
    };
    if text.is_empty() {
        return Err(err!(Corrupt, "empty HA message"));
    }
    let words: Vec<&str> = text.split(' ').collect();
    let bad = |why: &str| err!(Corrupt, "HA message \"{}\": {why}", shown(bytes));
    let arity = |n: usize| {
        if words.len() == n {
            Ok(())
        } else {
            Err(bad(&format!("{} takes {} words", words[0], n)))
        }
    };
    let m = match words[0] {
        "hello" => {
            arity(4)?;
            let version = number(words[1]).ok_or_else(|| bad("bad version"))?;
            if version != u64::from(VERSION) {
                return Err(bad(&format!(
                    "protocol version {version}, this library speaks {VERSION}"
                )));
            }
            let pid = number(words[2])
                .filter(|&p| p >= 1 && p <= i32::MAX as u64)
                .ok_or_else(|| bad("bad pid"))?;
            let start = number(words[3]).ok_or_else(|| bad("bad start time"))?;
            Message::Hello {
                pid: pid as u32,
                start,
            }
        }
        "ready" => {
            arity(1)?;
            Message::Ready
        }
        "heartbeat" => {
            arity(1)?;
            Message::Heartbeat
        }
        "polls" => {
            arity(2)?;
            match words[1] {
                "on" => Message::Polls(true),
                "off" => Message::Polls(false),
                _ => return Err(bad("polls is not on or off")),
            }
        }
        "health" => {
            arity(3)?;
            let seq = number(words[1]).ok_or_else(|| bad("bad sequence number"))?;
            let health = match words[2] {
                "ok" => Health::Ok,
                "fail" => Health::Fail,
                "none" => Health::None,
                _ => return Err(bad("health is not ok, fail or none")),
            };
            Message::Health { seq, health }
        }
        "role" => {
            arity(3)?;
            let role = match words[1] {
                "active" => Role::Active,
                "standby" => Role::Standby,
                "none" => Role::None,
                _ => return Err(bad("role is not active, standby or none")),
            };
            let epoch = number(words[2]).ok_or_else(|| bad("bad epoch"))?;
            Message::Role { role, epoch }
        }
        "health?" => {
            arity(2)?;
            let seq = number(words[1]).ok_or_else(|| bad("bad sequence number"))?;
            Message::HealthPoll { seq }
        }
        _ => return Err(bad("unknown message")),
    };
    Ok(m)
}

/// A decimal number in canonical form (no sign, no leading zero but `0`).
fn number(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    s.parse().ok()
}

/// Untrusted bytes for a one-line message: at most 40, escaped.
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

    fn all() -> Vec<Message> {
        vec![
            Message::Hello { pid: 1, start: 0 },
            Message::Hello {
                pid: i32::MAX as u32,
                start: u64::MAX,
            },
            Message::Ready,
            Message::Heartbeat,
            Message::Polls(true),
            Message::Polls(false),
            Message::Health {
                seq: 0,
                health: Health::Ok,
            },
            Message::Health {
                seq: u64::MAX,
                health: Health::Fail,
            },
            Message::Health {
                seq: 7,
                health: Health::None,
            },
            Message::Role {
                role: Role::Active,
                epoch: 1,
            },
            Message::Role {
                role: Role::Standby,
                epoch: u64::MAX,
            },
            Message::Role {
                role: Role::None,
                epoch: 0,
            },
            Message::HealthPoll { seq: 12 },
        ]
    }

    #[test]
    fn messages_round_trip_within_the_limit() {
        for m in all() {
            let text = m.encode();
            assert!(text.len() <= MAX_MESSAGE, "{text}");
            assert_eq!(parse(text.as_bytes()).unwrap(), m, "{text}");
        }
        assert_eq!(
            Message::Hello { pid: 42, start: 9 }.encode(),
            "hello 1 42 9"
        );
        assert_eq!(
            Message::Role {
                role: Role::Active,
                epoch: 1
            }
            .encode(),
            "role active 1"
        );
        assert!(Message::Ready.from_application());
        assert!(Message::Polls(true).from_application());
        assert_eq!(Message::Polls(false).encode(), "polls off");
        assert!(!Message::HealthPoll { seq: 1 }.from_application());
    }

    #[test]
    fn anything_else_is_refused_in_one_line() {
        for bad in [
            &b""[..],
            b"ready ",
            b" ready",
            b"ready\n",
            b"READY",
            b"ready 1",
            b"hello 1 42",
            b"hello 2 42 9",
            b"hello 1 0 9",
            b"hello 1 2147483648 9",
            b"hello 1 042 9",
            b"hello 1 42 18446744073709551616",
            b"hello 1 +42 9",
            b"health 1 maybe",
            b"health x ok",
            b"role leader 1",
            b"role active",
            b"role active -1",
            b"role active 1 2",
            b"health?",
            b"polls",
            b"polls yes",
            b"polls on on",
            b"polls ON",
            b"health? 01",
            b"hello  1 42 9",
            b"\xff\xfe",
            b"ready\0",
            &[b'x'; 65],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{:?}", bad.escape_ascii());
            assert!(!e.message().contains('\n'), "{e}");
        }
    }
}
