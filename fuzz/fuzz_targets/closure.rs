//! The closure file validator (`mtipc::internals::closure::format::validate`) on
//! arbitrary bytes, then a walk of every accessor over what it accepted:
//! never panics, never reads out of bounds, and an accepted file (if its tree
//! is small) re-encodes from its value to a file the validator accepts too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::closure::{Kind, ValueRef};
use mtipc::internals::closure::format;

/// Visits values depth first; `budget` bounds the work (a valid file may
/// share nodes, so a full walk of a DAG could be exponential).
fn walk(v: ValueRef<'_>, budget: &mut u32) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    let _ = (v.kind(), v.len(), v.is_empty(), v.as_int(), v.as_float());
    let _ = (v.as_bytes(), v.as_str(), v.str_with_nul());
    match v.kind() {
        Kind::List => {
            assert!(v.list_get(v.len()).is_none());
            for it in v.list_iter() {
                walk(it, budget);
            }
        }
        Kind::Map => {
            assert!(v.map_entry(v.len()).is_none());
            for (i, (k, val)) in v.map_iter().enumerate() {
                assert_eq!(v.map_find(k.as_bytes()), Some(i));
                assert_eq!(v.map_key(i).and_then(|k| k.as_str()), Some(k));
                walk(val, budget);
            }
        }
        _ => {}
    }
}

fn check(data: &[u8]) {
    if let Ok(c) = format::validate(data, None) {
        let root = ValueRef::root(data, &c);
        let mut budget = 10_000;
        walk(root, &mut budget);
        // A whole walk under the budget: the tree is small enough to copy.
        if budget > 0 {
            let v = root.to_value();
            let again = format::encode(&v, c.version).expect("re-encodes");
            format::validate(&again, Some(c.version)).expect("re-encoded file is valid");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a whole file...
    check(data);
    // ...and as the data area behind a valid file header (root offset from
    // the first two bytes), so that the fuzzer gets to the nodes at once.
    if let [a, b, rest @ ..] = data {
        let mut body = rest.to_vec();
        body.resize((body.len() + 7) & !7, 0);
        let total = (format::FILE_HEADER + body.len()) as u64;
        let root = u16::from_le_bytes([*a, *b]) as u64 * 8;
        let mut file = format::file_header(total, 1, root).to_vec();
        file.extend_from_slice(&body);
        check(&file);
    }
});
