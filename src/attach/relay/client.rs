//! An end's side of the relay: connect, send the hello, wait for `ok`.

use super::hello::{hello_line, short};
use super::End;
use crate::error::{err, Error, Result};
use crate::sys::net::{self as sys, RecvFlags};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest answer line read from the relay (`err <reason>\n`).
const MAX_ANSWER: usize = 512;

/// Connects to the relay socket at `path` as `end` of `pairing`, sends the
/// hello and waits (within `timeout`) for `ok`, which the relay sends once
/// both ends are there. The returned stream is the relayed path (blocking,
/// no timeouts set): bytes written before the pairing's start time are held
/// by the relay, not lost.
///
/// Errors: no relay listening at `path` (`ENOENT`, `ECONNREFUSED`):
/// [`Unavailable`](crate::ErrorKind::Unavailable). The relay's refusal
/// `err <reason>` carries the reason: an unknown pairing is
/// [`NotFound`](crate::ErrorKind::NotFound), a busy or full relay
/// [`Full`](crate::ErrorKind::Full), a relay shutting down
/// [`Unavailable`](crate::ErrorKind::Unavailable), anything else (wrong
/// uid or pid, a second connection for the end, a bad hello)
/// [`Denied`](crate::ErrorKind::Denied). No answer within `timeout`:
/// [`Timeout`](crate::ErrorKind::Timeout).
pub fn connect(path: &Path, end: End, pairing: &[u8; 16], timeout: Duration) -> Result<UnixStream> {
    let started = Instant::now();
    let shown = path.display();
    let tag = short(pairing);
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            err!(Unavailable, "mtipcd is not running (no relay at {shown})")
        }
        _ => super::socket_error(format_args!("relay socket {shown}"), e),
    })?;
    let timed_out = || {
        err!(
            Timeout,
            "the relay at {shown} did not pair the {end} end of pairing {tag} within {timeout:?}: \
             the {} end did not connect",
            end.other()
        )
    };
    let remaining = || {
        timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
    };

    let hello = hello_line(end, pairing);
    let mut sent = 0;
    while sent < hello.len() {
        let left = remaining().ok_or_else(timed_out)?;
        stream
            .set_write_timeout(Some(left))
            .map_err(|e| Error::io(format_args!("relay socket {shown}"), e))?;
        match sys::send(&stream, &hello.as_bytes()[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            // The relay refused and closed before reading: its reason is
            // still ours to read.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(Error::io(format_args!("relay socket {shown}"), e)),
        }
    }

    // Byte by byte: what follows the answer's newline is the relayed
    // stream, which belongs to the caller.
    let mut answer = Vec::with_capacity(16);
    loop {
        let left = remaining().ok_or_else(timed_out)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| Error::io(format_args!("relay socket {shown}"), e))?;
        let mut b = [0u8; 1];
        match sys::recv(&stream, &mut b, RecvFlags::empty()) {
            Ok(0) => {
                return Err(err!(
                    Closed,
                    "the relay at {shown} closed the connection of the {end} end of pairing {tag} \
                     without an answer"
                ))
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => {
                answer.push(b[0]);
                if answer.len() >= MAX_ANSWER {
                    return Err(err!(
                        Corrupt,
                        "the relay at {shown} answered more than {MAX_ANSWER} bytes without a newline"
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(err!(
                    Closed,
                    "the relay at {shown} reset the connection of the {end} end of pairing {tag}"
                ))
            }
            Err(e) => return Err(Error::io(format_args!("relay socket {shown}"), e)),
        }
    }

    if answer == b"ok" {
        let reset = stream
            .set_read_timeout(None)
            .and_then(|()| stream.set_write_timeout(None));
        reset.map_err(|e| Error::io(format_args!("relay socket {shown}"), e))?;
        return Ok(stream);
    }
    let Some(reason) = answer.strip_prefix(b"err ") else {
        return Err(err!(
            Corrupt,
            "the relay at {shown} answered \"{}\", neither ok nor err",
            answer.escape_ascii()
        ));
    };
    let reason = reason.escape_ascii().to_string();
    let message = format!("the relay at {shown} refused the {end} end of pairing {tag}: {reason}");
    let kind = refusal_kind(&reason);
    Err(Error::new(kind, message))
}

/// The error kind of a relay's refusal reason (the reasons are written by
/// this module's relay, see `mod.rs`).
fn refusal_kind(reason: &str) -> crate::ErrorKind {
    use crate::ErrorKind;
    if reason.starts_with("unknown pairing") {
        ErrorKind::NotFound
    } else if reason.starts_with("relay busy") || reason.starts_with("relay full") {
        ErrorKind::Full
    } else if reason.starts_with("relay shutting down") {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn refusal_kinds() {
        assert_eq!(
            refusal_kind("unknown pairing 01020304: not registered within 10 s"),
            ErrorKind::NotFound
        );
        assert_eq!(refusal_kind("relay busy: 1024 ..."), ErrorKind::Full);
        assert_eq!(refusal_kind("relay full: 1024 ..."), ErrorKind::Full);
        assert_eq!(refusal_kind("relay shutting down"), ErrorKind::Unavailable);
        assert_eq!(refusal_kind("pid 4 is not the tenant"), ErrorKind::Denied);
        assert_eq!(refusal_kind("bad hello: ..."), ErrorKind::Denied);
    }
}
