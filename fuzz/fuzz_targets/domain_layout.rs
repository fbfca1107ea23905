//! The domain's `layout` file parser on arbitrary bytes: never panics, and
//! what it accepts is exactly the canonical text for the version it returns.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::domain::{layout_text, parse_layout};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_layout(data) {
        assert_eq!(layout_text(v).as_bytes(), data);
    }
});
