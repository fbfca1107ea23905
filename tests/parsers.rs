//! A quick, deterministic stand-in for the fuzz targets under `fuzz/`, run by
//! `make test`: the parsers of files other processes write see valid inputs,
//! every truncation of them, and many random mutations, and must never panic
//! or accept anything but the canonical form: the layout file, a region
//! header, an advertisement, an attach response, a relay hello, a session
//! table region, a request area, a volume record, the permit arbiter
//! region, an HA hooks message and the attach channel's PSK identity (with
//! the PSK derivation against an independent HKDF). (`make fuzz` runs the real
//! coverage-guided fuzzers.)

use mtipc::internals::attach::files::{Advert, Response, Role, DAEMON_ID};
use mtipc::internals::attach::relay::{hello_line, parse_hello, End, Hello, MAX_HELLO};
use mtipc::internals::attach::{derive_psk, parse_psk_identity, psk_identity, PSK_IDENTITY_LEN};
use mtipc::internals::domain::{layout_text, parse_layout};
use mtipc::internals::session::layout::{validate_prefix, PREFIX};
use mtipc::internals::session::requests::{
    read_geometry, validate as validate_requests, Geometry as RequestGeometry, SlotWord,
    WorkerWord, MAGIC as REQUESTS_MAGIC,
};
use mtipc::internals::session::validate_region;
use mtipc::internals::shm::{validate, RegionHeader, HEADER_SIZE};
use mtipc::session::Geometry as TableGeometry;
use mtipc::{ErrorKind, LAYOUT_VERSION};

/// xorshift64*: reproducible pseudo-random bytes without a dependency.
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
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.truncate(i);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, b"0123456789\n "[rng.below(12)]);
            }
        }
    }
    v
}

#[test]
fn layout_parser_survives_mutations() {
    let good = layout_text(LAYOUT_VERSION).into_bytes();
    assert_eq!(parse_layout(&good).unwrap(), LAYOUT_VERSION);
    for i in 0..good.len() {
        let e = parse_layout(&good[..i]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for _ in 0..50_000 {
        let input = mutate(&mut rng, &good);
        if let Ok(v) = parse_layout(&input) {
            // Accepted only if it is the canonical text for what it returned.
            assert_eq!(layout_text(v).into_bytes(), input);
            accepted += 1;
        }
    }
    assert!(
        accepted > 0,
        "mutations never produced a valid other version"
    );
}

#[test]
fn region_validation_survives_mutations() {
    let mut good = RegionHeader {
        magic: *b"MTIPCSEM",
        layout_version: LAYOUT_VERSION,
        header_size: HEADER_SIZE as u32,
        total_size: 128,
    }
    .encode()
    .to_vec();
    good.resize(128, 0);
    validate(&good, b"MTIPCSEM", 128, "t").unwrap();
    for i in 0..good.len() {
        assert_eq!(
            validate(&good[..i], b"MTIPCSEM", 128, "t")
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
    }
    let mut rng = Rng(42);
    for _ in 0..50_000 {
        let input = mutate(&mut rng, &good[..32]);
        let mut full = input.clone();
        full.resize(128, 0);
        if validate(&full, b"MTIPCSEM", 128, "t").is_ok() {
            let h = RegionHeader::decode(&full).unwrap();
            assert_eq!(h.magic, *b"MTIPCSEM");
            assert_eq!(h.layout_version, LAYOUT_VERSION);
            assert_eq!(h.total_size, 128);
        }
        let _ = validate(&input, b"MTIPCSEM", input.len() as u64, "t");
    }
}

/// Mutations that matter for the text formats: besides random bytes, swap
/// in characters of the formats' alphabets (hex digits, separators, id
/// characters) so that many mutants stay close to valid.
fn mutate_text(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = mutate(rng, base);
    if rng.below(2) == 0 && !v.is_empty() {
        const ALPHABET: &[u8] = b"0123456789abcdefABCDEF,-_.@ \n\r/";
        let i = rng.below(v.len());
        v[i] = ALPHABET[rng.below(ALPHABET.len())];
    }
    v
}

fn sample_adverts() -> Vec<Advert> {
    let tenant = Advert {
        id: "acme".to_string(),
        role: Role::Tenant,
        pid: 4242,
        start: 1_234_567,
        uid: 1000,
        protocols: vec!["echo".to_string(), "json".to_string()],
        fingerprint: Some([0x3f; 32]),
        created_ms: 1_732_540_000_123,
    };
    let daemon = Advert {
        id: DAEMON_ID.to_string(),
        role: Role::Daemon,
        pid: 0,
        start: 0,
        uid: 0,
        protocols: vec!["relay".to_string()],
        fingerprint: None,
        created_ms: 10,
    };
    vec![tenant, daemon]
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
fn advert_parser_survives_mutations() {
    let mut rng = Rng(0xadfe_7715);
    let mut accepted = 0;
    for good in sample_adverts() {
        let text = good.to_text().into_bytes();
        assert_eq!(Advert::parse(&text).unwrap(), good);
        for i in 0..text.len() {
            let e = Advert::parse(&text[..i]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
        }
        for _ in 0..50_000 {
            let input = mutate_text(&mut rng, &text);
            match Advert::parse(&input) {
                // Accepted only if it is the canonical text of what it gave.
                Ok(a) => {
                    assert_eq!(a.to_text().into_bytes(), input);
                    a.validate().unwrap();
                    accepted += 1;
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}"),
            }
        }
    }
    assert!(
        accepted > 0,
        "mutations never produced another valid advert"
    );
}

#[test]
fn response_parser_survives_mutations() {
    let good = sample_response();
    let text = good.to_text().into_bytes();
    assert_eq!(Response::parse(&text).unwrap(), good);
    for i in 0..text.len() {
        let e = Response::parse(&text[..i]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
    }
    let mut rng = Rng(0x5e59_0a5e);
    let mut accepted = 0;
    for _ in 0..100_000 {
        let input = mutate_text(&mut rng, &text);
        match Response::parse(&input) {
            Ok(r) => {
                assert_eq!(r.to_text().into_bytes(), input);
                r.validate().unwrap();
                accepted += 1;
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}"),
        }
    }
    assert!(
        accepted > 0,
        "mutations never produced another valid response"
    );
    // One parser never takes the other's file.
    assert!(Advert::parse(&text).is_err());
    assert!(Response::parse(sample_adverts()[0].to_text().as_bytes()).is_err());
}

#[test]
fn relay_hello_parser_survives_mutations() {
    let pairing = [
        0x9c, 0x1f, 0x00, 0x7a, 0x55, 0xaa, 0x01, 0x10, 0xfe, 0xef, 0x42, 0x24, 0x99, 0x0f, 0xf0,
        0x3c,
    ];
    let mut rng = Rng(0x5eed_1e55_0bad_cafe);
    let mut accepted = 0;
    for end in [End::Tenant, End::Attacher] {
        let good = hello_line(end, &pairing).into_bytes();
        assert_eq!(parse_hello(&good).unwrap(), Hello { end, pairing });
        for i in 0..good.len() {
            let e = parse_hello(&good[..i]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
        }
        for _ in 0..50_000 {
            let input = mutate(&mut rng, &good);
            match parse_hello(&input) {
                Ok(h) => {
                    // Accepted only if it is the canonical line for what it returned.
                    assert_eq!(hello_line(h.end, &h.pairing).into_bytes(), input);
                    assert!(input.len() <= MAX_HELLO);
                    accepted += 1;
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corrupt);
                    // The relay sends the message back on one line.
                    assert!(!e.message().contains('\n'), "{e}");
                }
            }
        }
    }
    assert!(accepted > 0, "mutations never produced another valid hello");
    // Oversized input is refused whatever it holds.
    let mut long = hello_line(End::Tenant, &pairing).into_bytes();
    long.splice(0..0, vec![b' '; MAX_HELLO]);
    assert_eq!(parse_hello(&long).unwrap_err().kind(), ErrorKind::Corrupt);
}

#[test]
fn psk_identity_parser_survives_mutations() {
    let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
    let good = psk_identity(&key).into_bytes();
    assert_eq!(good.len(), PSK_IDENTITY_LEN);
    assert_eq!(parse_psk_identity(&good).unwrap(), key);
    for i in 0..good.len() {
        let e = parse_psk_identity(&good[..i]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
    }
    let mut upper = good.clone();
    upper.make_ascii_uppercase();
    assert!(parse_psk_identity(&upper).is_err(), "uppercase hex refused");
    let mut rng = Rng(0x0ddc_0ffe_e123_4567);
    let mut accepted = 0;
    for _ in 0..50_000 {
        let input = mutate(&mut rng, &good);
        match parse_psk_identity(&input) {
            Ok(k) => {
                // Accepted only in its canonical form.
                assert_eq!(psk_identity(&k).into_bytes(), input);
                accepted += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt);
                assert!(!e.message().contains('\n'), "{e}");
            }
        }
    }
    assert!(
        accepted > 0,
        "mutations never produced another valid identity"
    );
}

/// HMAC-SHA256 through OpenSSL's signer: the building block of an HKDF
/// written out here, independently of the library's.
fn hmac(key: &[u8], data: &[&[u8]]) -> [u8; 32] {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;
    let k = PKey::hmac(key).unwrap();
    let mut s = Signer::new(MessageDigest::sha256(), &k).unwrap();
    for d in data {
        s.update(d).unwrap();
    }
    s.sign_to_vec().unwrap().try_into().unwrap()
}

#[test]
fn psk_derivation_is_the_documented_hkdf() {
    let dh = [0x11u8; 32];
    let otk = [0x22u8; 32];
    let tenant = [0x33u8; 32];
    let attacher = [0x44u8; 32];
    // RFC 5869: PRK = HMAC(salt, IKM); OKM = T(1) = HMAC(PRK, info || 0x01).
    let prk = hmac(b"mtipc attach psk 1", &[&dh, &otk]);
    let okm = hmac(&prk, &[&tenant, &attacher, &[1]]);
    assert_eq!(derive_psk(&dh, &otk, &tenant, &attacher).unwrap(), okm);
    // The order of the public keys matters: the info binds who is who.
    assert_ne!(derive_psk(&dh, &otk, &attacher, &tenant).unwrap(), okm);
}

/// A table region of capacity 3 and 8 process records, as `Table::create`
/// makes it (prefix, then zeros).
fn session_region() -> Vec<u8> {
    let g = TableGeometry::new(3, 8).unwrap();
    let mut v = g.encode().to_vec();
    v.resize(g.total as usize, 0);
    v
}

#[test]
fn session_region_parser_survives_mutations() {
    let good = session_region();
    let g = validate_region(&good).unwrap();
    assert_eq!((g.capacity, g.records, g.total), (3, 8, good.len() as u64));
    for i in 0..good.len() {
        let e = validate_region(&good[..i]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
    }
    let mut rng = Rng(0x7ab1_e5e5);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..50_000 {
        // The prefix mutated, then the region at its own length (padded or
        // cut to the good one's) and as it came out.
        let input = mutate(&mut rng, &good[..PREFIX]);
        let mut full = input.clone();
        full.resize(good.len(), 0);
        for bytes in [&full, &input] {
            match validate_region(bytes) {
                // Accepted only if it is exactly the region a table of that
                // geometry is made with (as the fuzz target checks).
                Ok(g) => {
                    assert_eq!(g.total, bytes.len() as u64);
                    assert_eq!(TableGeometry::new(g.capacity, g.records).unwrap(), g);
                    assert_eq!(g.encode()[..], bytes[..PREFIX]);
                    accepted += 1;
                }
                Err(e) => {
                    assert!(
                        matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Version),
                        "{e}"
                    );
                    refused += 1;
                }
            }
        }
        // The prefix check alone, for a file of another length.
        let _ = validate_prefix(&input, 1 << 20, "t");
    }
    println!("session region mutants: {accepted} accepted, {refused} refused");
    assert!(accepted > 0, "no mutant was the good region again");
    assert!(refused > 0);
}

/// A request area of 2 groups, 3 worker records, 4 slots of 8 bytes, as
/// `Sessions::create` makes it (region header, area header, zeros).
fn request_region() -> Vec<u8> {
    let g = RequestGeometry::new(2, 3, 4, 8).unwrap();
    let mut v = RegionHeader {
        magic: *REQUESTS_MAGIC,
        layout_version: LAYOUT_VERSION,
        header_size: HEADER_SIZE as u32,
        total_size: g.total_size,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(&g.encode());
    v.resize(g.total_size as usize, 0);
    v
}

/// What an accepted request area must be (as the fuzz target checks): of
/// the size its capacities give, its header re-encoding to itself, every
/// state word decoding to itself, every length within max_message.
fn check_accepted_request_region(g: &RequestGeometry, bytes: &[u8]) {
    assert_eq!(g.total_size, bytes.len() as u64);
    assert_eq!(
        RequestGeometry::new(g.groups, g.workers, g.slots, g.max_message).unwrap(),
        *g
    );
    assert_eq!(g.encode()[..], bytes[HEADER_SIZE..HEADER_SIZE + 64]);
    let le64 =
        |at: u64| u64::from_le_bytes(bytes[at as usize..at as usize + 8].try_into().unwrap());
    let le32 =
        |at: u64| u32::from_le_bytes(bytes[at as usize..at as usize + 4].try_into().unwrap());
    for i in 0..u64::from(g.slots) {
        let w = le64(g.words_off + 8 * i);
        let d = SlotWord::decode(w, g.groups, g.workers).expect("accepted slot word");
        assert_eq!(d.encode(), w, "slot word {w:#x} decodes to itself");
        let h = g.heads_off + 64 * i;
        assert!(le32(h + 16) <= g.max_message && le32(h + 20) <= g.max_message);
    }
    for i in 0..u64::from(g.workers) {
        let w = le64(g.workers_off + 64 * i);
        let d = WorkerWord::decode(w, g.groups).expect("accepted worker word");
        assert_eq!(d.encode(), w, "worker word {w:#x} decodes to itself");
    }
}

#[test]
fn request_region_parser_survives_mutations() {
    let good = request_region();
    let g = validate_requests(&good).unwrap();
    assert_eq!((g.groups, g.workers, g.slots, g.max_message), (2, 3, 4, 8));
    check_accepted_request_region(&g, &good);
    for i in 0..good.len() {
        let e = validate_requests(&good[..i]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
    }
    for i in 0..128 {
        let e = read_geometry(&good[..i]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "prefix of {i} bytes");
    }
    let refused_ok = |e: &mtipc::Error| {
        assert!(
            matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Version),
            "{e}"
        )
    };
    let mut rng = Rng(0x4e9_0e57);
    let (mut accepted, mut refused) = (0, 0);
    // The two headers mutated (the rest as in the good area).
    for _ in 0..50_000 {
        let input = mutate(&mut rng, &good[..128]);
        let mut full = input.clone();
        full.resize(good.len(), 0);
        for bytes in [&full, &input] {
            match validate_requests(bytes) {
                Ok(g) => {
                    check_accepted_request_region(&g, bytes);
                    accepted += 1;
                }
                Err(e) => {
                    refused_ok(&e);
                    refused += 1;
                }
            }
        }
        let _ = read_geometry(&input);
    }
    // A few bits flipped in what validation reads past the headers: the
    // worker state words, the slot state words, the slot heads' lengths.
    // Many such values are valid (other generations, states, groups,
    // shorter lengths), many are not.
    let mut fields: Vec<usize> = Vec::new();
    for i in 0..g.workers as usize {
        fields.extend((0..8).map(|b| g.workers_off as usize + 64 * i + b));
    }
    for i in 0..g.slots as usize {
        fields.extend((0..8).map(|b| g.words_off as usize + 8 * i + b));
        fields.extend((16..24).map(|b| g.heads_off as usize + 64 * i + b));
    }
    let (mut words_accepted, mut words_refused) = (0, 0);
    for _ in 0..50_000 {
        let mut bytes = good.clone();
        for _ in 0..1 + rng.below(3) {
            bytes[fields[rng.below(fields.len())]] ^= 1 << rng.below(8);
        }
        match validate_requests(&bytes) {
            Ok(g) => {
                check_accepted_request_region(&g, &bytes);
                words_accepted += 1;
            }
            Err(e) => {
                refused_ok(&e);
                words_refused += 1;
            }
        }
    }
    println!(
        "request area mutants: headers {accepted} accepted, {refused} refused; \
         state words and heads {words_accepted} accepted, {words_refused} refused"
    );
    assert!(accepted > 0, "no header mutant was the good area again");
    assert!(refused > 0);
    assert!(
        words_accepted > 0 && words_refused > 0,
        "state word mutants: {words_accepted} accepted, {words_refused} refused"
    );
}

/// The volume record parser (fuzz target `volume`): truncations and random
/// mutations of a valid record never panic, and what it accepts encodes
/// back to the same record.
#[test]
fn volume_record_survives_mutations() {
    use mtipc::permit::volume::{parse, VolumeRecord};
    let good = VolumeRecord {
        dir: "/srv/gw".into(),
        max_transfers: 4,
        lease_ms: 30_000,
        etcd: Some("http://127.0.0.1:2379".into()),
    }
    .encode();
    let base = good.as_bytes();
    for n in 0..base.len() {
        let _ = parse(&base[..n]);
    }
    let mut rng = Rng(0x5eed_0011);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let m = mutate(&mut rng, base);
        if let Ok(r) = parse(&m) {
            accepted += 1;
            assert_eq!(parse(r.encode().as_bytes()).unwrap(), r);
        }
    }
    assert!(accepted > 0, "some mutations keep a valid record");
}

/// The permit arbiter region's validation (fuzz target `arbiter_region`):
/// random bytes written over a valid empty region never panic; a bad entry
/// state, mode or path length is `Corrupt`.
#[test]
fn arbiter_region_survives_mutations() {
    use mtipc::internals::permit::{validate as validate_arbiter, MAGIC, REGION_SIZE};
    let mut region = vec![0u8; REGION_SIZE];
    let header = RegionHeader {
        magic: *MAGIC,
        layout_version: LAYOUT_VERSION,
        header_size: HEADER_SIZE as u32,
        total_size: REGION_SIZE as u64,
    };
    region[..HEADER_SIZE].copy_from_slice(&header.encode());
    validate_arbiter(&region).unwrap();
    let entries = REGION_SIZE - 1024 * 512;
    for (off, val) in [(0, 3u8), (4, 9), (12, 0xff)] {
        let mut bad = region.clone();
        bad[entries + 512 * 5] = 1; // a waiting entry...
        bad[entries + 512 * 5 + 4] = 2; // ...of a valid mode
        validate_arbiter(&bad).unwrap();
        bad[entries + 512 * 5 + off] = val;
        bad[entries + 512 * 5 + off + 1] = if off == 12 { 0xff } else { 0 };
        let e = validate_arbiter(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "offset {off}: {e}");
    }
    let mut rng = Rng(0x5eed_0012);
    for _ in 0..2_000 {
        let mut m = region.clone();
        for _ in 0..8 {
            let at = rng.next() as usize % REGION_SIZE;
            m[at] = rng.next() as u8;
        }
        let _ = validate_arbiter(&m);
        let _ = validate_arbiter(&m[..rng.next() as usize % REGION_SIZE]);
    }
}

/// The HA hooks' message parser (fuzz target `ha_message`): each message,
/// every truncation and many mutations of it never panic, a refusal is
/// one line, and what is accepted is the canonical encoding of what it
/// returns, within the size limit.
#[test]
fn ha_message_parser_survives_mutations() {
    use mtipc::ha::Role as HaRole;
    use mtipc::internals::ha::{parse, Health, Message, MAX_MESSAGE};
    let all = [
        Message::Hello {
            pid: 4242,
            start: 123_456_789,
        },
        Message::Ready,
        Message::Heartbeat,
        Message::Polls(true),
        Message::Health {
            seq: 17,
            health: Health::Fail,
        },
        Message::Role {
            role: HaRole::Standby,
            epoch: 99,
        },
        Message::HealthPoll { seq: 18 },
    ];
    let check = |bytes: &[u8]| match parse(bytes) {
        Ok(m) => {
            assert_eq!(m.encode().as_bytes(), bytes);
            assert!(bytes.len() <= MAX_MESSAGE);
            true
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corrupt);
            assert!(!e.message().contains('\n'), "{e}");
            false
        }
    };
    let mut rng = Rng(0x5eed_0013);
    let mut accepted = 0;
    for m in all {
        let good = m.encode().into_bytes();
        assert_eq!(parse(&good).unwrap(), m);
        for n in 0..good.len() {
            check(&good[..n]);
        }
        for _ in 0..10_000 {
            if check(&mutate_text(&mut rng, &good)) {
                accepted += 1;
            }
        }
    }
    assert!(accepted > 0, "some mutations are still messages");
}
