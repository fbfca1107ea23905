//! The volume record parser (`permit::volume::parse`) on arbitrary bytes:
//! never panics, and what it accepts encodes back to a record it parses
//! the same way.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::permit::volume::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse(data) {
        assert_eq!(parse(r.encode().as_bytes()).unwrap(), r);
    }
});
