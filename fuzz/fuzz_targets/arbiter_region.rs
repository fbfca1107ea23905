//! The permit arbiter region's validation (`permit::local::validate`) on
//! arbitrary bytes, placed over a valid empty region so that the fuzzer
//! reaches the entry checks: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::permit::{validate, MAGIC, REGION_SIZE};
use mtipc::internals::shm::{RegionHeader, HEADER_SIZE};

fuzz_target!(|data: &[u8]| {
    let _ = validate(data);
    let mut region = vec![0u8; REGION_SIZE];
    let header = RegionHeader {
        magic: *MAGIC,
        layout_version: mtipc::LAYOUT_VERSION,
        header_size: HEADER_SIZE as u32,
        total_size: REGION_SIZE as u64,
    };
    region[..HEADER_SIZE].copy_from_slice(&header.encode());
    // The fuzzer's bytes as (offset, value) pairs written into the region.
    for pair in data.chunks_exact(5) {
        let off = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]) as usize % REGION_SIZE;
        region[off] = pair[4];
    }
    let _ = validate(&region);
});
