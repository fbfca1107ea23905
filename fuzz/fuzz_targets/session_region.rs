//! Session table region validation (`mtipc::internals::session::validate_region`) on
//! arbitrary bytes: it must never panic or read out of bounds, and whatever
//! it accepts must be exactly the region a table of that geometry is made
//! with (header re-encodes to itself, size recomputed from the capacity).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::session::validate_region;
use mtipc::session::Geometry;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = validate_region(data) {
        assert_eq!(g.total, data.len() as u64);
        let again = Geometry::new(g.capacity, g.records).expect("accepted geometry is valid");
        assert_eq!(again, g);
        assert_eq!(g.encode()[..], data[..g.encode().len()]);
    }
    // Also as the prefix of a file of another length.
    let _ = mtipc::internals::session::layout::validate_prefix(data, 1 << 20, "fuzz");
});
