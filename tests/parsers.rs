//! A quick, deterministic stand-in for the fuzz targets under `fuzz/`, run by
//! `make test`: the parsers of files other processes write see valid inputs,
//! every truncation of them, and many random mutations, and must never panic
//! or accept anything but the canonical form. (`make fuzz` runs the real
//! coverage-guided fuzzers.)

use mtipc::attach::files::{Advert, Response, Role, DAEMON_ID};
use mtipc::attach::relay::{hello_line, parse_hello, End, Hello, MAX_HELLO};
use mtipc::domain::{layout_text, parse_layout};
use mtipc::shm::{validate, RegionHeader, HEADER_SIZE};
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
