//! Request area validation (`mtipc::internals::session::requests::validate`) on
//! arbitrary bytes: it must never panic or read out of bounds, and whatever
//! it accepts is a region of exactly the size its capacities give, whose
//! header re-encodes to itself, and whose every state word decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc::internals::session::requests::{read_geometry, validate, Geometry, SlotWord, WorkerWord};

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = validate(data) {
        assert_eq!(g.total_size, data.len() as u64);
        let again = Geometry::new(g.groups, g.workers, g.slots, g.max_message)
            .expect("accepted geometry is valid");
        assert_eq!(again, g);
        assert_eq!(g.encode()[..], data[64..128]);
        for i in 0..g.slots as usize {
            let at = g.words_off as usize + 8 * i;
            let w = u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
            let d = SlotWord::decode(w, g.groups, g.workers).expect("accepted slot word");
            assert_eq!(d.encode(), w, "a state word decodes to itself");
        }
        for i in 0..g.workers as usize {
            let at = g.workers_off as usize + 64 * i;
            let w = u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
            let d = WorkerWord::decode(w, g.groups).expect("accepted worker word");
            assert_eq!(d.encode(), w);
        }
    }
    // The prefix reader alone (what open uses to learn the file's size).
    let _ = read_geometry(data);
});
