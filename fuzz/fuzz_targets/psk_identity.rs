//! The attach channel's PSK identity parser
//! (`mtipc::internals::attach::parse_psk_identity`: the bytes an attacher,
//! or anyone on the relayed path, puts in its ClientHello) on arbitrary
//! bytes: never panics, its refusal is one line, and what it accepts is
//! exactly the canonical identity of the key it returns.
//!
//! Random bytes rarely are 64 lowercase hex digits, so each input is also
//! used as a recipe: the first 32 bytes are a key, the rest (position,
//! byte) edits of its canonical identity, a lone last byte truncates.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::attach::{parse_psk_identity, psk_identity};

fn check(identity: &[u8]) {
    match parse_psk_identity(identity) {
        Ok(k) => assert_eq!(psk_identity(&k).as_bytes(), identity),
        Err(e) => assert!(!e.message().contains('\n'), "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 32 {
        let key: [u8; 32] = data[..32].try_into().unwrap();
        let mut id = psk_identity(&key).into_bytes();
        assert_eq!(parse_psk_identity(&id).unwrap(), key);
        for edit in data[32..].chunks(2) {
            let pos = usize::from(edit[0]) % (id.len() + 1);
            match edit.get(1) {
                Some(&b) if pos < id.len() => id[pos] = b,
                Some(&b) => id.push(b),
                None => id.truncate(pos),
            }
        }
        check(&id);
    }
});
