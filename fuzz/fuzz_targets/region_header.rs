//! Region header validation (`mtipc::internals::shm::validate`) on arbitrary bytes:
//! it must never panic, and whatever it accepts must re-encode to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::shm::{validate, RegionHeader, HEADER_SIZE};

fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    if validate(data, b"MTIPCSEM", size, "fuzz").is_ok() {
        let h = RegionHeader::decode(data).expect("accepted input has a header");
        assert_eq!(h.encode()[..24], data[..24]);
        assert_eq!(h.total_size, size);
        assert_eq!(h.header_size as usize, HEADER_SIZE);
    }
    // Also against a fixed expected size, as the domain uses it.
    let _ = validate(data, b"MTIPCSEM", 128, "fuzz");
});
