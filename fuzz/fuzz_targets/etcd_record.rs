//! The etcd permit arbiter's record parser (the values of its keys in etcd,
//! which any process with access to the cluster could have written) on
//! arbitrary bytes: never panics, and the canonical text of what it accepts
//! parses to itself again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::permit::fuzz_etcd_record;

fuzz_target!(|data: &[u8]| {
    if let Some(text) = fuzz_etcd_record(data) {
        assert_eq!(fuzz_etcd_record(text.as_bytes()).as_deref(), Some(text.as_str()));
    }
});
