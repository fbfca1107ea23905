//! The advertisement file parser (`mtipc::internals::attach::files::Advert::parse`) on
//! arbitrary bytes: never panics, and what it accepts is exactly the
//! canonical text of the advertisement it returns (which also validates).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::attach::files::Advert;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Advert::parse(data) {
        assert_eq!(a.to_text().as_bytes(), data);
        a.validate().expect("an accepted advertisement is valid");
    }
});
