//! An end's side of the relay: connect, send the hello, wait for `ok`.

use super::hello::{hello_line, short};
use super::End;
use crate::attach::files::{self, DAEMON_ID};
use crate::error::{err, Error, Result};
use crate::sys::net::{self as sys, RecvFlags};
use crate::sys::ProcId;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest answer line read from the relay (`err <reason>\n`).
const MAX_ANSWER: usize = 512;

/// Who must be listening at the relay socket: the process (pid and start
/// time) and uid that the domain's daemon advertisement names. An end
/// checks the listener's credentials against it before it says anything:
/// a listener planted at `relay.sock` by someone else (while the domain was
/// briefly writable, say) learns nothing, not even a pairing id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The daemon process.
    pub proc: ProcId,
    /// Its uid.
    pub uid: u32,
}

impl Listener {
    /// The daemon that the advertisement `adverts/@mtipcd` of `domain`
    /// names. No (readable) advertisement: `Unavailable`, mtipcd is not
    /// running.
    pub fn of_daemon(domain: &Path) -> Result<Listener> {
        match files::read_advert(&files::advert_dir(domain, DAEMON_ID)) {
            Ok(a) => Ok(Listener::of(&a)),
            Err(e) => Err(err!(
                Unavailable,
                "mtipcd is not running on domain {} (its advertisement: {})",
                domain.display(),
                e.message()
            )),
        }
    }

    /// The process an advertisement (the daemon's, already read and
    /// checked by a listing) names.
    pub fn of(advert: &files::Advert) -> Listener {
        Listener {
            proc: advert.proc_id(),
            uid: advert.uid,
        }
    }

    /// This process (a relay served in-process, in tests and benchmarks).
    pub fn this_process() -> Result<Listener> {
        Ok(Listener {
            proc: ProcId::current()?,
            uid: crate::sys::euid(),
        })
    }

    /// `Ok` if the peer of `stream` (the process that listens at `shown`)
    /// is this listener, alive with the advertised start time; `Denied`
    /// naming both otherwise.
    fn check(&self, stream: &UnixStream, shown: &dyn std::fmt::Display) -> Result<()> {
        let cred = sys::peer_cred(stream)
            .map_err(|e| Error::io(format_args!("relay socket {shown}: peer credentials"), e))?;
        let same_proc = cred.pid == self.proc.pid
            && matches!(ProcId::of(cred.pid), Ok(Some(p)) if p == self.proc);
        if same_proc && cred.uid == self.uid {
            return Ok(());
        }
        Err(err!(
            Denied,
            "the listener at {shown} (pid {}, uid {}) is not the domain's mtipcd (pid {}, uid {}, \
             as advertised): nothing sent",
            cred.pid,
            cred.uid,
            self.proc.pid,
            self.uid
        ))
    }
}

/// Connects to the relay socket at `path` as `end` of `pairing`, sends the
/// hello and waits (within `timeout`) for `ok`, which the relay sends once
/// both ends are there. The returned stream is the relayed path (blocking,
/// no timeouts set): bytes written before the pairing's start time are held
/// by the relay, not lost.
///
/// The listener must be `expect` (checked with `SO_PEERCRED` and its start
/// time before the hello is sent): [`Denied`](crate::ErrorKind::Denied)
/// otherwise, with nothing sent.
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
pub fn connect(
    path: &Path,
    end: End,
    pairing: &[u8; 16],
    timeout: Duration,
    expect: &Listener,
) -> Result<UnixStream> {
    let started = Instant::now();
    let shown = path.display();
    let tag = short(pairing);
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            err!(Unavailable, "mtipcd is not running (no relay at {shown})")
        }
        _ => super::socket_error(format_args!("relay socket {shown}"), e),
    })?;
    expect.check(&stream, &shown)?;
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
