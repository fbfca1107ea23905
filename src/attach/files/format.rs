//! The two text formats: the advertisement file and the response file
//! (`docs/attach.md`). Writers produce the canonical text; parsers accept
//! exactly the canonical text and nothing else, so `to_text(parse(x)) == x`
//! for every accepted `x`.

use super::{
    protocol_problem, relay_name_problem, shown, tenant_id_problem, DAEMON_ID, MAX_FILE,
    MAX_PROTOCOLS,
};
use crate::attach::hex;
use crate::error::{err, Error, Result};
use std::fmt;

const ADVERT_MAGIC: &str = "mtipc advert";
const RESPONSE_MAGIC: &str = "mtipc response";
const FORMAT_VERSION: &str = "1";

/// Which side an advertisement is: a tenant, or the daemon (mtipcd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A tenant process: it can be attached to.
    Tenant,
    /// mtipcd, which runs the relay; it advertises as [`DAEMON_ID`].
    Daemon,
}

impl Role {
    /// The word in the file: `tenant` or `daemon`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tenant => "tenant",
            Role::Daemon => "daemon",
        }
    }

    /// The role an advertisement with `id` must have.
    pub fn of_id(id: &str) -> Role {
        if id == DAEMON_ID {
            Role::Daemon
        } else {
            Role::Tenant
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content of an advertisement file (`adverts/<id>/advert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// The tenant id, or [`DAEMON_ID`] for the daemon.
    pub id: String,
    /// Tenant or daemon; the daemon iff `id` is [`DAEMON_ID`].
    pub role: Role,
    /// The advertising process.
    pub pid: u32,
    /// Its start time (field 22 of `/proc/<pid>/stat`), see [`super::ProcId`].
    pub start: u64,
    /// Its uid.
    pub uid: u32,
    /// The protocols it speaks: 1 to 16 names of `[a-z0-9_.-]`, 1 to 32 bytes.
    pub protocols: Vec<String>,
    /// The tenant's key: its raw 32-byte X25519 public key, which the
    /// attacher pins (docs/attach.md, "The channel"); `None` for (and only
    /// for) the daemon.
    pub fingerprint: Option<[u8; 32]>,
    /// When it was made, Unix time in ms.
    pub created_ms: u64,
}

impl Advert {
    /// An advertisement of the calling process (pid, start time, uid, now)
    /// for `id`, with the role `id` implies. `Invalid` if a field breaks the
    /// format's rules (see [`Advert::validate`]).
    pub fn for_this_process(
        id: &str,
        protocols: Vec<String>,
        fingerprint: Option<[u8; 32]>,
    ) -> Result<Advert> {
        let me = super::ProcId::current()?;
        let a = Advert {
            id: id.to_string(),
            role: Role::of_id(id),
            pid: me.pid,
            start: me.start,
            uid: crate::sys::euid(),
            protocols,
            fingerprint,
            created_ms: super::now_ms(),
        };
        a.validate()?;
        Ok(a)
    }

    /// The canonical text of the advertisement file. Only an advertisement
    /// that passes [`Advert::validate`] gives a text [`Advert::parse`]
    /// accepts.
    pub fn to_text(&self) -> String {
        let fingerprint = match &self.fingerprint {
            Some(f) => hex(f),
            None => "-".to_string(),
        };
        format!(
            "{ADVERT_MAGIC} {FORMAT_VERSION}\nid {}\nrole {}\npid {}\nstart {}\nuid {}\n\
             protocols {}\nfingerprint {fingerprint}\ncreated {}\n",
            self.id,
            self.role,
            self.pid,
            self.start,
            self.uid,
            self.protocols.join(","),
            self.created_ms
        )
    }

    /// Checks the fields against the format's rules: the id (a tenant id or
    /// [`DAEMON_ID`]), the role that goes with it, the protocol names, and a
    /// fingerprint for a tenant and none for the daemon. `Invalid` otherwise.
    pub fn validate(&self) -> Result<()> {
        let problem = (|| {
            if self.id != DAEMON_ID {
                if let Some(p) = tenant_id_problem(&self.id) {
                    return Some(format!("id {}: {p}", shown(&self.id)));
                }
            }
            if let Some(p) = role_problem(&self.id, self.role) {
                return Some(p);
            }
            if let Some(p) = protocols_problem(self.protocols.iter().map(String::as_str)) {
                return Some(p);
            }
            fingerprint_problem(self.role, self.fingerprint.is_some())
        })();
        match problem {
            None => Ok(()),
            Some(p) => Err(err!(Invalid, "advertisement: {p}")),
        }
    }

    /// Parses an advertisement file's content. `Corrupt` for anything but
    /// the canonical text (see `docs/attach.md`), with a message naming the
    /// line and what is wrong with it. Never panics; allocates at most a few
    /// times the input, which it refuses beyond [`MAX_FILE`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Advert> {
        Advert::parse_in(bytes, "advertisement")
    }

    /// [`Advert::parse`], with `what` (the file) starting every message.
    pub(super) fn parse_in(bytes: &[u8], what: &str) -> Result<Advert> {
        const KEYS: [&str; 8] = [
            "id",
            "role",
            "pid",
            "start",
            "uid",
            "protocols",
            "fingerprint",
            "created",
        ];
        let v = split_lines(bytes, what, ADVERT_MAGIC, &KEYS)?;
        let bad = |line: usize, msg: String| line_error(what, line, msg);
        // Line numbers: the magic line is 1, KEYS[i] is on line i + 2.
        let id = v[0];
        if id != DAEMON_ID {
            if let Some(p) = tenant_id_problem(id) {
                return Err(bad(2, format!("id {}: {p}", shown(id))));
            }
        }
        let role = match v[1] {
            "tenant" => Role::Tenant,
            "daemon" => Role::Daemon,
            other => {
                return Err(bad(
                    3,
                    format!("role {} is neither \"tenant\" nor \"daemon\"", shown(other)),
                ))
            }
        };
        if let Some(p) = role_problem(id, role) {
            return Err(bad(3, p));
        }
        let pid = number::<u32>("pid", v[2]).map_err(|m| bad(4, m))?;
        let start = number::<u64>("start", v[3]).map_err(|m| bad(5, m))?;
        let uid = number::<u32>("uid", v[4]).map_err(|m| bad(6, m))?;
        if let Some(p) = protocols_problem(v[5].split(',')) {
            return Err(bad(7, p));
        }
        let protocols = v[5].split(',').map(str::to_string).collect();
        let fingerprint = match (role, v[6]) {
            (Role::Daemon, "-") => None,
            (Role::Daemon, other) => {
                return Err(bad(
                    8,
                    format!(
                        "the daemon has no TLS key: its fingerprint must be \"-\", found {}",
                        shown(other)
                    ),
                ))
            }
            (Role::Tenant, "-") => {
                return Err(bad(
                    8,
                    "a tenant's fingerprint is \"-\" (a tenant must have a TLS key fingerprint)"
                        .to_string(),
                ))
            }
            (Role::Tenant, h) => Some(hex_array::<32>("fingerprint", h).map_err(|m| bad(8, m))?),
        };
        let created_ms = number::<u64>("created", v[7]).map_err(|m| bad(9, m))?;
        Ok(Advert {
            id: id.to_string(),
            role,
            pid,
            start,
            uid,
            protocols,
            fingerprint,
            created_ms,
        })
    }

    /// The advertising process's identity.
    pub fn proc_id(&self) -> super::ProcId {
        super::ProcId {
            pid: self.pid,
            start: self.start,
        }
    }

    /// Whether the advertising process is still running (same pid and same
    /// start time, not a zombie). A stale advertisement is not live.
    pub fn is_live(&self) -> bool {
        self.proc_id().is_alive()
    }
}

/// The role must be the daemon's iff the id is [`DAEMON_ID`].
fn role_problem(id: &str, role: Role) -> Option<String> {
    match (role, id == DAEMON_ID) {
        (Role::Daemon, false) => Some(format!(
            "role daemon but id {} (only {DAEMON_ID} is the daemon)",
            shown(id)
        )),
        (Role::Tenant, true) => Some(format!("role tenant but id {DAEMON_ID} (the daemon's id)")),
        _ => None,
    }
}

fn fingerprint_problem(role: Role, has_fingerprint: bool) -> Option<String> {
    match (role, has_fingerprint) {
        (Role::Daemon, true) => Some("the daemon has no TLS key: no fingerprint".to_string()),
        (Role::Tenant, false) => Some("a tenant must have a TLS key fingerprint".to_string()),
        _ => None,
    }
}

/// Checks a list of protocol names (1 to [`MAX_PROTOCOLS`], each valid).
/// Stops at the first problem, so it reads at most `MAX_PROTOCOLS + 1` names.
fn protocols_problem<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut n = 0;
    for name in names {
        n += 1;
        if n > MAX_PROTOCOLS {
            return Some(format!(
                "protocols: more than {MAX_PROTOCOLS} names (at most {MAX_PROTOCOLS})"
            ));
        }
        if let Some(p) = protocol_problem(name) {
            return Some(format!("protocols: name {n} {}: {p}", shown(name)));
        }
    }
    if n == 0 {
        return Some(format!("protocols: none (1 to {MAX_PROTOCOLS} names)"));
    }
    None
}

/// The content of a response file (`adverts/<tenant>/response`), written by
/// an attacher for the tenant it attaches to. `Debug` shows the one-time key
/// as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The tenant the response is addressed to.
    pub tenant: String,
    /// The relay socket's name inside the domain (a name, never a path;
    /// [`super::RELAY_SOCKET`] today).
    pub relay: String,
    /// The pairing id both ends present to the relay (16 random bytes).
    pub pairing: [u8; 16],
    /// The protocol the attacher asks for (one of the advertised ones).
    pub protocol: String,
    /// The one-time key the attacher sends through the channel (32 random
    /// bytes).
    pub key: [u8; 32],
    /// Unix time in ms before which the relay passes no byte.
    pub start_ms: u64,
    /// Ms the path stays open from `start_ms`; 0: until an end closes.
    pub duration_ms: u64,
    /// The attacher's pid (the relay checks it with `SO_PEERCRED`).
    pub attacher_pid: u32,
    /// When it was made, Unix time in ms.
    pub created_ms: u64,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("tenant", &self.tenant)
            .field("relay", &self.relay)
            .field("pairing", &hex(&self.pairing))
            .field("protocol", &self.protocol)
            .field("key", &"<redacted>")
            .field("start_ms", &self.start_ms)
            .field("duration_ms", &self.duration_ms)
            .field("attacher_pid", &self.attacher_pid)
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

impl Response {
    /// The canonical text of the response file. Only a response that passes
    /// [`Response::validate`] gives a text [`Response::parse`] accepts.
    pub fn to_text(&self) -> String {
        format!(
            "{RESPONSE_MAGIC} {FORMAT_VERSION}\ntenant {}\nrelay {}\npairing {}\nprotocol {}\n\
             key {}\nstart {}\nduration {}\nattacher {}\ncreated {}\n",
            self.tenant,
            self.relay,
            hex(&self.pairing),
            self.protocol,
            hex(&self.key),
            self.start_ms,
            self.duration_ms,
            self.attacher_pid,
            self.created_ms
        )
    }

    /// Checks the fields against the format's rules (a tenant id, a relay
    /// name that is not a path, a protocol name). `Invalid` otherwise.
    pub fn validate(&self) -> Result<()> {
        let problem = if let Some(p) = tenant_id_problem(&self.tenant) {
            Some(format!("tenant {}: {p}", shown(&self.tenant)))
        } else if let Some(p) = relay_name_problem(&self.relay) {
            Some(format!("relay {}: {p}", shown(&self.relay)))
        } else {
            protocol_problem(&self.protocol)
                .map(|p| format!("protocol {}: {p}", shown(&self.protocol)))
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(err!(Invalid, "response: {p}")),
        }
    }

    /// Parses a response file's content: `Corrupt` for anything but the
    /// canonical text, as [`Advert::parse`].
    pub fn parse(bytes: &[u8]) -> Result<Response> {
        Response::parse_in(bytes, "response")
    }

    /// [`Response::parse`], with `what` (the file) starting every message.
    pub(super) fn parse_in(bytes: &[u8], what: &str) -> Result<Response> {
        const KEYS: [&str; 9] = [
            "tenant", "relay", "pairing", "protocol", "key", "start", "duration", "attacher",
            "created",
        ];
        let v = split_lines(bytes, what, RESPONSE_MAGIC, &KEYS)?;
        let bad = |line: usize, msg: String| line_error(what, line, msg);
        if let Some(p) = tenant_id_problem(v[0]) {
            return Err(bad(2, format!("tenant {}: {p}", shown(v[0]))));
        }
        if let Some(p) = relay_name_problem(v[1]) {
            return Err(bad(
                3,
                format!(
                    "relay {}: {p} (a socket name inside the domain)",
                    shown(v[1])
                ),
            ));
        }
        let pairing = hex_array::<16>("pairing", v[2]).map_err(|m| bad(4, m))?;
        if let Some(p) = protocol_problem(v[3]) {
            return Err(bad(5, format!("protocol {}: {p}", shown(v[3]))));
        }
        let key = hex_array::<32>("key", v[4]).map_err(|m| bad(6, m))?;
        let start_ms = number::<u64>("start", v[5]).map_err(|m| bad(7, m))?;
        let duration_ms = number::<u64>("duration", v[6]).map_err(|m| bad(8, m))?;
        let attacher_pid = number::<u32>("attacher", v[7]).map_err(|m| bad(9, m))?;
        let created_ms = number::<u64>("created", v[8]).map_err(|m| bad(10, m))?;
        Ok(Response {
            tenant: v[0].to_string(),
            relay: v[1].to_string(),
            pairing,
            protocol: v[3].to_string(),
            key,
            start_ms,
            duration_ms,
            attacher_pid,
            created_ms,
        })
    }
}

fn line_error(what: &str, line: usize, msg: String) -> Error {
    err!(Corrupt, "{what}: line {line}: {msg}")
}

/// Splits a file into its lines and checks the structure: size, UTF-8, the
/// magic line `"<magic> 1"`, then exactly one `"<key> <value>"` line per key
/// in order, each ending in `\n`, and nothing after. Returns the values.
fn split_lines<'a, const N: usize>(
    bytes: &'a [u8],
    what: &str,
    magic: &str,
    keys: &[&str; N],
) -> Result<[&'a str; N]> {
    if bytes.len() > MAX_FILE {
        return Err(err!(
            Corrupt,
            "{what}: larger than {MAX_FILE} bytes (at most {MAX_FILE})"
        ));
    }
    if bytes.is_empty() {
        return Err(err!(Corrupt, "{what}: empty"));
    }
    let mut rest = bytes;
    // Takes the next line (without its '\n') as text.
    let mut next_line = |n: usize, expected: &str| -> Result<&'a str> {
        if rest.is_empty() {
            return Err(line_error(
                what,
                n,
                format!("missing (expected {expected:?}): the file is truncated"),
            ));
        }
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(line_error(
                what,
                n,
                "no newline at its end: the file is truncated".to_string(),
            ));
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        std::str::from_utf8(line).map_err(|e| {
            line_error(
                what,
                n,
                format!("not UTF-8 text (byte {} of the line)", e.valid_up_to()),
            )
        })
    };
    let first = next_line(1, &format!("{magic} {FORMAT_VERSION}"))?;
    if let Some(version) = first.strip_prefix(magic).and_then(|r| r.strip_prefix(' ')) {
        if version != FORMAT_VERSION {
            return Err(line_error(
                what,
                1,
                format!(
                    "format version {} (this mtipc reads version {FORMAT_VERSION})",
                    shown(version)
                ),
            ));
        }
    } else {
        return Err(line_error(
            what,
            1,
            format!(
                "expected \"{magic} {FORMAT_VERSION}\", found {}: not an mtipc {} file",
                shown(first),
                magic.trim_start_matches("mtipc ")
            ),
        ));
    }
    let mut values = [""; N];
    for (i, key) in keys.iter().enumerate() {
        let n = i + 2;
        let line = next_line(n, &format!("{key} <value>"))?;
        if let Some(value) = line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
            values[i] = value;
            continue;
        }
        if line == *key {
            return Err(line_error(what, n, format!("{key} has no value")));
        }
        let found = line.split(' ').next().unwrap_or("");
        let msg = match keys.iter().position(|k| *k == found) {
            Some(j) if j < i => format!("duplicate {found:?} line (expected {key:?} here)"),
            Some(_) => format!("{found:?} line out of order (expected {key:?} here)"),
            None => format!("expected \"{key} <value>\", found {}", shown(line)),
        };
        return Err(line_error(what, n, msg));
    }
    if !rest.is_empty() {
        return Err(line_error(
            what,
            N + 2,
            format!(
                "unexpected data after the last line ({:?}): {}",
                keys[N - 1],
                shown(&String::from_utf8_lossy(&rest[..rest.len().min(64)]))
            ),
        ));
    }
    Ok(values)
}

/// A number of a file: decimal digits, no sign, no leading zero (`0`
/// itself allowed), fitting `T`.
fn number<T: std::str::FromStr>(key: &str, s: &str) -> std::result::Result<T, String> {
    if s.is_empty() {
        return Err(format!("{key} is empty"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{key} {} is not a decimal number", shown(s)));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("{key} {} has a leading zero", shown(s)));
    }
    s.parse::<T>().map_err(|_| {
        format!(
            "{key} {} is too large (at most {} bits)",
            shown(s),
            std::mem::size_of::<T>() * 8
        )
    })
}

/// `N` bytes written as `2N` lowercase hex digits.
fn hex_array<const N: usize>(key: &str, s: &str) -> std::result::Result<[u8; N], String> {
    if s.len() != 2 * N {
        return Err(format!(
            "{key} is {} characters long; expected {} lowercase hex digits",
            s.chars().count(),
            2 * N
        ));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Err(format!(
            "{key} has an uppercase hex digit {:?} (lowercase only)",
            c as char
        )),
        _ => Err(format!(
            "{key} has {:?}, not a lowercase hex digit",
            s.chars().find(|c| !c.is_ascii_hexdigit()).unwrap_or('?')
        )),
    };
    let b = s.as_bytes();
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::files::{MAX_ID, MAX_PROTOCOL};
    use crate::ErrorKind;

    /// xorshift64*: reproducible pseudo-random values without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// A number with a random number of significant bits (so small
        /// values, 0 and the maximum all come up).
        fn number(&mut self) -> u64 {
            match self.below(8) {
                0 => 0,
                1 => u64::MAX,
                _ => self.next() >> self.below(64),
            }
        }
        fn name(&mut self, alphabet: &[u8], first: &[u8], max: usize) -> String {
            let len = 1 + self.below(max);
            let mut s = String::new();
            s.push(first[self.below(first.len())] as char);
            for _ in 1..len {
                s.push(alphabet[self.below(alphabet.len())] as char);
            }
            s
        }
        fn tenant_id(&mut self) -> String {
            const FIRST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";
            const ALL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
            self.name(ALL, FIRST, MAX_ID)
        }
        fn protocol(&mut self) -> String {
            const ALL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_.-";
            self.name(ALL, ALL, MAX_PROTOCOL)
        }
        fn bytes<const N: usize>(&mut self) -> [u8; N] {
            let mut b = [0u8; N];
            for x in &mut b {
                *x = self.next() as u8;
            }
            b
        }
        fn advert(&mut self) -> Advert {
            let daemon = self.below(5) == 0;
            let n = 1 + self.below(MAX_PROTOCOLS);
            Advert {
                id: if daemon {
                    DAEMON_ID.to_string()
                } else {
                    self.tenant_id()
                },
                role: if daemon { Role::Daemon } else { Role::Tenant },
                pid: self.number() as u32,
                start: self.number(),
                uid: self.number() as u32,
                protocols: (0..n).map(|_| self.protocol()).collect(),
                fingerprint: if daemon { None } else { Some(self.bytes()) },
                created_ms: self.number(),
            }
        }
        fn response(&mut self) -> Response {
            Response {
                tenant: self.tenant_id(),
                relay: if self.below(2) == 0 {
                    super::super::RELAY_SOCKET.to_string()
                } else {
                    self.tenant_id()
                },
                pairing: self.bytes(),
                protocol: self.protocol(),
                key: self.bytes(),
                start_ms: self.number(),
                duration_ms: self.number(),
                attacher_pid: self.number() as u32,
                created_ms: self.number(),
            }
        }
    }

    fn sample_advert() -> Advert {
        Advert {
            id: "acme".to_string(),
            role: Role::Tenant,
            pid: 4242,
            start: 1_234_567,
            uid: 1000,
            protocols: vec!["echo".to_string(), "json".to_string()],
            fingerprint: Some([0x3f; 32]),
            created_ms: 1_732_540_000_123,
        }
    }

    fn sample_response() -> Response {
        Response {
            tenant: "acme".to_string(),
            relay: "relay.sock".to_string(),
            pairing: [0x9c; 16],
            protocol: "echo".to_string(),
            key: [0x5b; 32],
            start_ms: 1_732_540_000_500,
            duration_ms: 30_000,
            attacher_pid: 4343,
            created_ms: 1_732_540_000_123,
        }
    }

    #[test]
    fn advert_text_is_the_documented_one() {
        let f = "3f".repeat(32);
        assert_eq!(
            sample_advert().to_text(),
            format!(
                "mtipc advert 1\nid acme\nrole tenant\npid 4242\nstart 1234567\nuid 1000\n\
                 protocols echo,json\nfingerprint {f}\ncreated 1732540000123\n"
            )
        );
        let mut d = sample_advert();
        d.id = DAEMON_ID.to_string();
        d.role = Role::Daemon;
        d.fingerprint = None;
        d.protocols = vec!["relay".to_string()];
        d.pid = 0;
        let t = d.to_text();
        assert!(t.contains("\nid @mtipcd\nrole daemon\npid 0\n"), "{t}");
        assert!(t.contains("\nfingerprint -\n"), "{t}");
        assert_eq!(Advert::parse(t.as_bytes()).unwrap(), d);
    }

    #[test]
    fn response_text_is_the_documented_one() {
        let r = sample_response();
        assert_eq!(
            r.to_text(),
            format!(
                "mtipc response 1\ntenant acme\nrelay relay.sock\npairing {}\nprotocol echo\n\
                 key {}\nstart 1732540000500\nduration 30000\nattacher 4343\n\
                 created 1732540000123\n",
                "9c".repeat(16),
                "5b".repeat(32)
            )
        );
        let dbg = format!("{r:?}");
        assert!(dbg.contains("<redacted>") && !dbg.contains("5b5b"), "{dbg}");
    }

    #[test]
    fn generated_adverts_round_trip() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..5000 {
            let a = rng.advert();
            a.validate().unwrap_or_else(|e| panic!("{a:?}: {e}"));
            let text = a.to_text();
            assert!(text.len() <= MAX_FILE, "{}", text.len());
            let back = Advert::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, a);
            assert_eq!(back.to_text(), text);
        }
    }

    #[test]
    fn generated_responses_round_trip() {
        let mut rng = Rng(7);
        for _ in 0..5000 {
            let r = rng.response();
            r.validate().unwrap_or_else(|e| panic!("{r:?}: {e}"));
            let text = r.to_text();
            assert!(text.len() <= MAX_FILE);
            let back = Response::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, r);
            assert_eq!(back.to_text(), text);
        }
    }

    /// The sample text with line `n` (1-based) replaced by `new` (`None`:
    /// removed).
    fn with_line(text: &str, n: usize, new: Option<&str>) -> String {
        let mut lines: Vec<&str> = text.lines().collect();
        match new {
            Some(l) => lines[n - 1] = l,
            None => {
                lines.remove(n - 1);
            }
        }
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn refused(result: Result<impl fmt::Debug>, input: &[u8], needle: &str) {
        match result {
            Ok(v) => panic!("accepted {:?} as {v:?}", String::from_utf8_lossy(input)),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
                assert!(
                    e.message().contains(needle),
                    "input {:?}\nmessage {:?}\nwanted {needle:?}",
                    String::from_utf8_lossy(input),
                    e.message()
                );
                assert!(e.message().len() < 400, "long message: {e}");
            }
        }
    }

    #[test]
    fn malformed_adverts_are_refused() {
        let good = sample_advert().to_text();
        let fp = "3f".repeat(32);
        let line = |n: usize, l: &str| with_line(&good, n, Some(l));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "advertisement: empty"),
            ("x".repeat(MAX_FILE + 1), "larger than 4096 bytes"),
            (line(1, "mtipc advert 2"), "line 1: format version \"2\""),
            (
                line(1, "mtipc response 1"),
                "line 1: expected \"mtipc advert 1\"",
            ),
            (line(1, "mtipc advert 1 "), "line 1: format version"),
            (line(2, "id bad/id"), "line 2: id \"bad/id\": contains '/'"),
            (line(2, "id .x"), "line 2: id \".x\": starts with '.'"),
            (line(2, "id "), "line 2: id \"\": is empty"),
            (line(2, &format!("id {}", "a".repeat(65))), "65 bytes long"),
            (line(2, "id a\0b"), "contains '\\0'"),
            (line(3, "role admin"), "line 3: role \"admin\" is neither"),
            (
                line(3, "role daemon"),
                "line 3: role daemon but id \"acme\"",
            ),
            (line(3, "role Tenant"), "line 3: role \"Tenant\""),
            (line(4, "pid 01"), "line 4: pid \"01\" has a leading zero"),
            (line(4, "pid 00"), "line 4: pid \"00\" has a leading zero"),
            (
                line(4, "pid +1"),
                "line 4: pid \"+1\" is not a decimal number",
            ),
            (line(4, "pid -1"), "is not a decimal number"),
            (
                line(4, "pid  1"),
                "line 4: pid \" 1\" is not a decimal number",
            ),
            (line(4, "pid 1 "), "is not a decimal number"),
            (line(4, "pid 0x10"), "is not a decimal number"),
            (line(4, "pid ١"), "is not a decimal number"),
            (
                line(4, "pid 4294967296"),
                "line 4: pid \"4294967296\" is too large",
            ),
            (line(4, "pid"), "line 4: pid has no value"),
            (line(4, "pid "), "line 4: pid is empty"),
            (line(4, "pid\t1"), "line 4: expected \"pid <value>\""),
            (line(4, "id acme"), "line 4: duplicate \"id\" line"),
            (line(4, "uid 1"), "line 4: \"uid\" line out of order"),
            (
                line(4, "PID 1"),
                "line 4: expected \"pid <value>\", found \"PID 1\"",
            ),
            (line(5, "start 18446744073709551616"), "line 5: start"),
            (line(5, &format!("start {}", "9".repeat(400))), "too large"),
            (line(6, "uid 1.0"), "line 6: uid \"1.0\""),
            (
                line(7, "protocols "),
                "line 7: protocols: name 1 \"\": is empty",
            ),
            (line(7, "protocols echo,,json"), "name 2 \"\": is empty"),
            (line(7, "protocols echo,"), "name 2 \"\": is empty"),
            (line(7, "protocols Echo"), "name 1 \"Echo\": contains 'E'"),
            (line(7, "protocols echo json"), "contains ' '"),
            (
                line(7, &format!("protocols {}", "p".repeat(33))),
                "33 bytes long (at most 32)",
            ),
            (
                line(7, &format!("protocols {}", vec!["p"; 17].join(","))),
                "line 7: protocols: more than 16 names",
            ),
            (
                line(8, &format!("fingerprint {}", fp.to_uppercase())),
                "line 8: fingerprint has an uppercase hex digit 'F'",
            ),
            (
                line(8, &format!("fingerprint {}", &fp[1..])),
                "line 8: fingerprint is 63 characters long; expected 64",
            ),
            (
                line(8, &format!("fingerprint {}g", &fp[1..])),
                "fingerprint has 'g', not a lowercase hex digit",
            ),
            (
                line(8, "fingerprint -"),
                "line 8: a tenant's fingerprint is \"-\"",
            ),
            (line(8, "fingerprint é"), "expected 64"),
            (line(9, "created 1e9"), "line 9: created \"1e9\""),
            (good.trim_end().to_string(), "line 9: no newline at its end"),
            (
                good.replace('\n', "\r\n"),
                "line 1: format version \"1\\r\"",
            ),
            (
                with_line(&good, 6, None),
                "line 6: \"protocols\" line out of order",
            ),
            (
                good.lines().take(5).map(|l| format!("{l}\n")).collect(),
                "line 6: missing (expected \"uid <value>\"): the file is truncated",
            ),
            (
                format!("{good}extra\n"),
                "line 10: unexpected data after the last line",
            ),
            (format!("{good}\n"), "line 10: unexpected data"),
            (format!("{good}\0"), "line 10"),
        ];
        for (input, needle) in &cases {
            refused(Advert::parse(input.as_bytes()), input.as_bytes(), needle);
        }
        // Not UTF-8.
        let mut b = good.clone().into_bytes();
        b[17] = 0xff; // in "id acme"
        refused(
            Advert::parse(&b),
            &b,
            "line 2: not UTF-8 text (byte 2 of the line)",
        );
        // The daemon: its own id, role and no fingerprint.
        let mut d = sample_advert();
        d.id = DAEMON_ID.to_string();
        d.role = Role::Daemon;
        d.fingerprint = None;
        let dt = d.to_text();
        for (input, needle) in [
            (
                with_line(&dt, 3, Some("role tenant")),
                "line 3: role tenant but id @mtipcd",
            ),
            (
                with_line(&dt, 8, Some(&format!("fingerprint {fp}"))),
                "line 8: the daemon has no TLS key",
            ),
            (
                with_line(&dt, 2, Some("id @other")),
                "line 2: id \"@other\": contains '@'",
            ),
        ] {
            refused(Advert::parse(input.as_bytes()), input.as_bytes(), needle);
        }
    }

    #[test]
    fn malformed_responses_are_refused() {
        let good = sample_response().to_text();
        let line = |n: usize, l: &str| with_line(&good, n, Some(l));
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "response: empty"),
            (
                line(1, "mtipc advert 1"),
                "line 1: expected \"mtipc response 1\"",
            ),
            (
                line(2, "tenant @mtipcd"),
                "line 2: tenant \"@mtipcd\": is reserved",
            ),
            (line(2, "tenant -x"), "starts with '-'"),
            (
                line(3, "relay /tmp/evil.sock"),
                "line 3: relay \"/tmp/evil.sock\": contains '/'",
            ),
            (
                line(3, "relay ../relay.sock"),
                "line 3: relay \"../relay.sock\": contains '/'",
            ),
            (line(3, ".relay.sock"), "line 3: expected \"relay <value>\""),
            (
                line(3, "relay .relay.sock"),
                "line 3: relay \".relay.sock\": starts with '.'",
            ),
            (line(3, "relay .."), "starts with '.'"),
            (line(3, "relay "), "line 3: relay \"\": is empty"),
            (
                line(4, &format!("pairing {}", "9c".repeat(15))),
                "line 4: pairing is 30",
            ),
            (
                line(4, &format!("pairing {}", "9C".repeat(16))),
                "uppercase hex digit 'C'",
            ),
            (line(5, "protocol Echo"), "line 5: protocol \"Echo\""),
            (line(5, "protocol echo,json"), "contains ','"),
            (
                line(6, &format!("key {}", "5b".repeat(33))),
                "line 6: key is 66",
            ),
            (line(6, &format!("key {}", "zz".repeat(32))), "key has 'z'"),
            (
                line(7, "start 007"),
                "line 7: start \"007\" has a leading zero",
            ),
            (line(8, "duration -1"), "line 8: duration"),
            (
                line(9, "attacher 99999999999"),
                "line 9: attacher \"99999999999\" is too large",
            ),
            (line(10, "created"), "line 10: created has no value"),
            (line(10, "start 1"), "line 10: duplicate \"start\" line"),
            (format!("{good}x"), "line 11: unexpected data"),
            (good[..good.len() - 1].to_string(), "line 10: no newline"),
            ("x".repeat(MAX_FILE + 1), "larger than 4096 bytes"),
        ];
        for (input, needle) in &cases {
            refused(Response::parse(input.as_bytes()), input.as_bytes(), needle);
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for good in [sample_advert().to_text(), sample_response().to_text()] {
            for i in 0..good.len() {
                let b = &good.as_bytes()[..i];
                assert_eq!(
                    Advert::parse(b).err().map(|e| e.kind()),
                    Some(ErrorKind::Corrupt)
                );
                assert_eq!(
                    Response::parse(b).err().map(|e| e.kind()),
                    Some(ErrorKind::Corrupt)
                );
            }
        }
    }

    #[test]
    fn validate_refuses_what_parse_would() {
        let ok = sample_advert();
        ok.validate().unwrap();
        let mut cases = Vec::new();
        let mut a = ok.clone();
        a.id = "a/b".to_string();
        cases.push((a, "id \"a/b\""));
        let mut a = ok.clone();
        a.role = Role::Daemon;
        cases.push((a, "role daemon but id"));
        let mut a = ok.clone();
        a.fingerprint = None;
        cases.push((a, "must have a TLS key"));
        let mut a = ok.clone();
        a.protocols = vec![];
        cases.push((a, "protocols: none"));
        let mut a = ok.clone();
        a.protocols = vec!["x".to_string(); 17];
        cases.push((a, "more than 16"));
        let mut a = ok.clone();
        a.id = DAEMON_ID.to_string();
        a.role = Role::Daemon;
        cases.push((a, "daemon has no TLS key"));
        for (a, needle) in cases {
            let e = a.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Invalid);
            assert!(e.message().contains(needle), "{e}");
            assert!(Advert::parse(a.to_text().as_bytes()).is_err());
        }
        let mut r = sample_response();
        r.relay = "/x".to_string();
        assert_eq!(r.validate().unwrap_err().kind(), ErrorKind::Invalid);
        let mut r = sample_response();
        r.tenant = DAEMON_ID.to_string();
        assert_eq!(r.validate().unwrap_err().kind(), ErrorKind::Invalid);
        let mut r = sample_response();
        r.protocol = "A".to_string();
        assert_eq!(r.validate().unwrap_err().kind(), ErrorKind::Invalid);
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(hex(&[0, 0x0f, 0xf0, 0xff]), "000ff0ff");
        assert_eq!(hex_array::<2>("k", "0aff").unwrap(), [0x0a, 0xff]);
        assert!(hex_array::<2>("k", "0aF f").is_err());
        // Multi-byte characters of the right byte length do not panic.
        assert!(hex_array::<2>("k", "éé").is_err());
        assert!(hex_array::<1>("k", "é").is_err());
    }
}
