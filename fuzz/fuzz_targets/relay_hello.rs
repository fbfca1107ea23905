//! The relay's hello parser (`mtipc::internals::attach::relay::parse_hello`) on
//! arbitrary bytes: never panics, its refusal is one line, and what it
//! accepts is exactly the canonical line for the hello it returns.
//!
//! Random bytes rarely spell `tenant` and 32 hex digits, so each input is
//! used three ways: as the line itself; after the fixed prefix
//! `mtipc relay 1 `; and as a recipe for a near-valid line (byte 0 picks
//! the end, bytes 1..17 the pairing id, the rest are (position, byte) edits
//! of the canonical line, a lone last byte truncates).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::attach::relay::{hello_line, parse_hello, End, Hello, MAX_HELLO};

fn check(line: &[u8]) {
    match parse_hello(line) {
        Ok(h) => {
            assert_eq!(hello_line(h.end, &h.pairing).as_bytes(), line);
            assert!(line.len() <= MAX_HELLO);
        }
        Err(e) => assert!(!e.message().contains('\n'), "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);

    let mut prefixed = b"mtipc relay 1 ".to_vec();
    prefixed.extend_from_slice(data);
    check(&prefixed);

    if data.len() >= 17 {
        let end = if data[0] & 1 == 0 {
            End::Tenant
        } else {
            End::Attacher
        };
        let pairing: [u8; 16] = data[1..17].try_into().unwrap();
        let mut line = hello_line(end, &pairing).into_bytes();
        assert_eq!(parse_hello(&line).unwrap(), Hello { end, pairing });
        for edit in data[17..].chunks(2) {
            let pos = usize::from(edit[0]) % (line.len() + 1);
            match edit.get(1) {
                Some(&b) if pos < line.len() => line[pos] = b,
                Some(&b) => line.push(b),
                None => line.truncate(pos),
            }
        }
        check(&line);
    }
});
