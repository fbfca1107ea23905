//! One relayed pairing: tells both ends `ok`, holds every byte until the
//! start time, then copies both ways until the window ends or an end closes.

use super::hello::short;
use super::{End, Pairing, Shared};
use crate::log::{debug, info, warn};
use crate::sys::net::{self as sys, Events, RecvFlags, Shutdown};
use rustix::event::PollFd;
use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes buffered per direction.
const BUF: usize = 64 * 1024;

/// Two connected ends and their pairing, handed to the forwarding thread.
pub(super) struct Link {
    pub pairing: Pairing,
    pub tenant: UnixStream,
    pub attacher: UnixStream,
    pub linger: Duration,
}

/// Why a relayed pairing was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// `start + duration` came.
    Duration,
    /// One end closed (or stopped reading) and what remained was delivered.
    EndClosed(End),
    /// One end closed but the rest could not be delivered within the linger time.
    Linger(End),
    /// Both ends were gone before the start time.
    BothGone,
    /// The relay is shutting down.
    Shutdown,
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Duration => f.write_str("its duration has passed"),
            Close::EndClosed(e) => write!(f, "the {e} end closed"),
            Close::Linger(e) => write!(
                f,
                "the {e} end closed and the rest was not delivered in time"
            ),
            Close::BothGone => f.write_str("both ends closed before the start time"),
            Close::Shutdown => f.write_str("the relay is shutting down"),
        }
    }
}

/// The start and the end of the window, as instants of the monotonic
/// clock, from the pairing's Unix times (read once, so a wall-clock step
/// during the relay changes nothing). `None` start: never (beyond what the
/// clock represents); `None` end: until an end closes.
fn window(p: &Pairing, now: Instant, unix_now: Duration) -> (Option<Instant>, Option<Instant>) {
    let start = match Duration::from_millis(p.start_ms).checked_sub(unix_now) {
        None => Some(now),
        Some(ahead) => now.checked_add(ahead),
    };
    let end = match p.duration_ms {
        0 => None,
        ms => start.and_then(|s| s.checked_add(Duration::from_millis(ms))),
    };
    (start, end)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Relays one pairing to its end; closes both connections.
pub(super) fn relay(link: Link, shared: &Shared) {
    let Link {
        pairing,
        tenant,
        attacher,
        linger,
    } = link;
    let tag = short(&pairing.id);
    let socks = [tenant, attacher];
    for (s, end) in socks.iter().zip(End::BOTH) {
        // Three bytes into a new socket's buffer go at once.
        match sys::send(s, b"ok\n") {
            Ok(3) => {}
            Ok(_) => warn!(pairing = %tag, end = %end, "relay: short write of ok"),
            Err(e) => warn!(pairing = %tag, end = %end, error = %e, "relay: could not send ok"),
        }
    }
    let (start, end) = window(&pairing, Instant::now(), unix_now());
    info!(
        pairing = %tag,
        tenant_pid = pairing.tenant_pid,
        attacher_pid = pairing.attacher_pid,
        opens_in_ms = ?start.map(|s| s.saturating_duration_since(Instant::now()).as_millis() as u64),
        duration_ms = pairing.duration_ms,
        "relay: paired; both ends told ok"
    );
    let mut f = Forwarder {
        socks: &socks,
        shared,
        dirs: [Dir::new(), Dir::new()],
        first_closed: None,
    };
    let reason = match f.wait_for_start(start) {
        Some(reason) => reason,
        None => f.copy(end, linger),
    };
    let delivered = [f.dirs[0].delivered, f.dirs[1].delivered];
    for s in &socks {
        sys::shutdown(s, Shutdown::Both);
    }
    drop(socks);
    if reason == Close::Duration {
        shared.count(|s| s.closed_by_duration += 1);
    }
    info!(
        pairing = %tag,
        tenant_pid = pairing.tenant_pid,
        attacher_pid = pairing.attacher_pid,
        tenant_to_attacher = delivered[0],
        attacher_to_tenant = delivered[1],
        "relay: pairing closed: {reason}"
    );
}

/// One direction: bytes read from `socks[i]` for `socks[1 - i]`.
struct Dir {
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
    /// The source sent end-of-file (or failed).
    src_eof: bool,
    /// The destination no longer takes bytes.
    dst_broken: bool,
    /// Nothing more will go this way (and the half-close was passed on).
    finished: bool,
    delivered: u64,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            buf: vec![0u8; BUF].into_boxed_slice(),
            lo: 0,
            hi: 0,
            src_eof: false,
            dst_broken: false,
            finished: false,
            delivered: 0,
        }
    }

    fn wants_read(&self) -> bool {
        !self.finished && !self.src_eof && !self.dst_broken && self.hi - self.lo < BUF
    }

    fn wants_write(&self) -> bool {
        !self.finished && !self.dst_broken && self.lo < self.hi
    }
}

struct Forwarder<'a> {
    socks: &'a [UnixStream; 2],
    shared: &'a Shared,
    /// `dirs[i]` reads from `socks[i]` and writes to `socks[1 - i]`.
    dirs: [Dir; 2],
    /// The end that closed first, and when.
    first_closed: Option<(End, Instant)>,
}

impl Forwarder<'_> {
    /// Waits for the start time without reading a byte (what an end sends
    /// early stays in its socket's queue). Returns why to close instead, if
    /// the pairing ends before it starts.
    fn wait_for_start(&mut self, start: Option<Instant>) -> Option<Close> {
        let mut gone = [false; 2];
        loop {
            if self.shared.stopping() {
                return Some(Close::Shutdown);
            }
            if start.is_some_and(|s| Instant::now() >= s) {
                return None;
            }
            if gone == [true, true] {
                return Some(Close::BothGone);
            }
            for (i, end) in End::BOTH.into_iter().enumerate() {
                // An end that closed with nothing left to deliver: the other
                // end is shut down now, not at the start time.
                if gone[i] && sys::pending_bytes(&self.socks[i]) == 0 {
                    return Some(Close::EndClosed(end));
                }
            }
            // The stop pipe, then the ends not gone yet, with no event
            // asked: only a hang-up wakes us.
            let mut fds = vec![sys::watch(&self.shared.stop_r, Events::IN)];
            let mut which = Vec::new();
            for (i, sock) in self.socks.iter().enumerate() {
                if !gone[i] {
                    fds.push(sys::watch(sock, Events::empty()));
                    which.push(i);
                }
            }
            if let Err(e) = sys::poll(&mut fds, start) {
                warn!(error = %e, "relay: poll failed before the start time");
                return Some(Close::Shutdown);
            }
            if !fds[0].revents().is_empty() {
                return Some(Close::Shutdown);
            }
            for (f, &i) in fds[1..].iter().zip(&which) {
                if f.revents().intersects(Events::HUP | Events::ERR) {
                    gone[i] = true;
                }
            }
        }
    }

    /// Copies both ways until `end`, or until both directions are finished
    /// (an end closed and the rest was delivered), or the linger time after
    /// the first close passed, or the relay shuts down.
    fn copy(&mut self, end: Option<Instant>, linger: Duration) -> Close {
        loop {
            if self.shared.stopping() {
                return Close::Shutdown;
            }
            let now = Instant::now();
            if end.is_some_and(|e| now >= e) {
                return Close::Duration;
            }
            self.finish_directions(now);
            let linger_end = self.first_closed.map(|(_, at)| at + linger);
            if let Some((who, _)) = self.first_closed {
                if self.dirs.iter().all(|d| d.finished) {
                    return Close::EndClosed(who);
                }
                if linger_end.is_some_and(|l| now >= l) {
                    return Close::Linger(who);
                }
            }

            // The stop pipe, then each end that has something to do.
            let mut fds: Vec<PollFd<'_>> = vec![sys::watch(&self.shared.stop_r, Events::IN)];
            let mut asked = Vec::new();
            for s in 0..2 {
                let mut events = Events::empty();
                if self.dirs[s].wants_read() {
                    events |= Events::IN;
                }
                if self.dirs[1 - s].wants_write() {
                    events |= Events::OUT;
                }
                if !events.is_empty() {
                    fds.push(sys::watch(&self.socks[s], events));
                    asked.push((s, events));
                }
            }
            let deadline = [end, linger_end].into_iter().flatten().min();
            if let Err(e) = sys::poll(&mut fds, deadline) {
                warn!(error = %e, "relay: poll failed while relaying");
                return Close::Shutdown;
            }
            if !fds[0].revents().is_empty() {
                return Close::Shutdown;
            }
            let got: Vec<Events> = fds[1..].iter().map(|f| f.revents()).collect();
            drop(fds);
            let any = Events::HUP | Events::ERR;
            for ((s, events), revents) in asked.into_iter().zip(got) {
                if events.contains(Events::IN) && revents.intersects(Events::IN | any) {
                    self.read_from(s);
                }
                if events.contains(Events::OUT) && revents.intersects(Events::OUT | any) {
                    self.write_to(s);
                }
            }
        }
    }

    /// Marks the directions that can carry nothing more, and passes their
    /// close on: end-of-file from one end becomes a write shutdown towards
    /// the other; an end that stopped taking bytes gets its sender's read
    /// side shut down (the sender's writes then fail).
    fn finish_directions(&mut self, now: Instant) {
        for i in 0..2 {
            let d = &mut self.dirs[i];
            if d.finished || !(d.dst_broken || (d.src_eof && d.lo == d.hi)) {
                continue;
            }
            d.finished = true;
            let closed = if d.dst_broken {
                sys::shutdown(&self.socks[i], Shutdown::Read);
                End::BOTH[1 - i]
            } else {
                sys::shutdown(&self.socks[1 - i], Shutdown::Write);
                End::BOTH[i]
            };
            debug!(end = %closed, "relay: one direction finished");
            self.first_closed.get_or_insert((closed, now));
        }
    }

    /// Reads from `socks[s]` into `dirs[s]`.
    fn read_from(&mut self, s: usize) {
        let d = &mut self.dirs[s];
        if d.lo == d.hi {
            d.lo = 0;
            d.hi = 0;
        } else if d.hi == BUF {
            d.buf.copy_within(d.lo..d.hi, 0);
            d.hi -= d.lo;
            d.lo = 0;
        }
        match sys::recv(&self.socks[s], &mut d.buf[d.hi..], RecvFlags::empty()) {
            Ok(0) => d.src_eof = true,
            Ok(n) => d.hi += n,
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                debug!(end = %End::BOTH[s], error = %e, "relay: read failed; taken as end-of-file");
                d.src_eof = true;
            }
        }
    }

    /// Writes from `dirs[1 - s]` to `socks[s]`.
    fn write_to(&mut self, s: usize) {
        let d = &mut self.dirs[1 - s];
        match sys::send(&self.socks[s], &d.buf[d.lo..d.hi]) {
            Ok(n) => {
                d.lo += n;
                d.delivered += n as u64;
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                debug!(end = %End::BOTH[s], error = %e, "relay: write failed; that end takes no more");
                d.dst_broken = true;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairing(start_ms: u64, duration_ms: u64) -> Pairing {
        Pairing {
            id: [0; 16],
            tenant_pid: 1,
            attacher_pid: 2,
            start_ms,
            duration_ms,
        }
    }

    #[test]
    fn window_from_unix_times() {
        let now = Instant::now();
        let unix = Duration::from_millis(1_000_000);
        // Start in the past: at once.
        let (s, e) = window(&pairing(900_000, 500), now, unix);
        assert_eq!(s, Some(now));
        assert_eq!(e, Some(now + Duration::from_millis(500)));
        // Start ahead, to the nanosecond (no early opening by rounding).
        let unix = Duration::from_nanos(1_000_000_000_400_000);
        let (s, e) = window(&pairing(1_000_000_250, 0), now, unix);
        assert_eq!(s, Some(now + Duration::from_nanos(249_600_000)));
        assert_eq!(e, None, "duration 0: until an end closes");
        // Beyond what the clock represents: never opens, never times out.
        let (s, e) = window(&pairing(u64::MAX, u64::MAX), now, unix);
        assert_eq!(s, now.checked_add(Duration::from_millis(u64::MAX) - unix));
        if s.is_some() {
            assert!(e.is_none() || e > s);
        }
        let (_, e) = window(&pairing(0, u64::MAX), now, unix);
        assert_eq!(e, now.checked_add(Duration::from_millis(u64::MAX)));
    }
}
