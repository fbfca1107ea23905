//! The HA hooks' message parser (`mtipc::internals::ha::parse`), which
//! both the library (reading the Monitor) and the Monitor (reading a
//! supervised process) run on what the other end sent: never panics, its
//! refusal is one line, and what it accepts is exactly the canonical
//! encoding of the message it returns, within `MAX_MESSAGE`.
//!
//! Random bytes rarely spell a keyword, so each input is also used after
//! each keyword of the protocol and a space.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::ha::{parse, MAX_MESSAGE};

fn check(bytes: &[u8]) {
    match parse(bytes) {
        Ok(m) => {
            assert_eq!(m.encode().as_bytes(), bytes);
            assert!(bytes.len() <= MAX_MESSAGE);
        }
        Err(e) => assert!(!e.message().contains('\n'), "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    for word in ["hello 1 ", "health ", "role active ", "role ", "health? ", "polls "] {
        let mut v = word.as_bytes().to_vec();
        v.extend_from_slice(data);
        check(&v);
    }
});
