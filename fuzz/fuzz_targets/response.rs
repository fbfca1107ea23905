//! The response file parser (`mtipc::internals::attach::files::Response::parse`) on
//! arbitrary bytes: never panics, and what it accepts is exactly the
//! canonical text of the response it returns (which also validates).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::attach::files::Response;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Response::parse(data) {
        assert_eq!(r.to_text().as_bytes(), data);
        r.validate().expect("an accepted response is valid");
    }
});
