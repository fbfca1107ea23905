//! Loom models of the shim's [`SharedBufs`] cells, one invariant each: a
//! payload copied through the cells is checked against its hand-over, so
//! that the request area's payload copies (which go through them) are too.

use super::{AtomicU32, Ordering, SharedBufs};
use loom::sync::Arc;
use loom::thread;

struct Handover {
    bufs: SharedBufs,
    ready: AtomicU32,
}

fn handover() -> Arc<Handover> {
    Arc::new(Handover {
        bufs: SharedBufs::on_heap(4, 1),
        ready: AtomicU32::new(0),
    })
}

fn write(h: &Handover, v: [u8; 4]) {
    // SAFETY: 4 bytes into a 4-byte buffer; loom checks the ownership.
    h.bufs.with_mut(0, |p| unsafe {
        std::ptr::copy_nonoverlapping(v.as_ptr(), p, 4)
    });
}

fn read(h: &Handover) -> [u8; 4] {
    let mut v = [0u8; 4];
    // SAFETY: 4 bytes of a 4-byte buffer; loom checks the ownership.
    h.bufs.with(0, |p| unsafe {
        std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), 4)
    });
    v
}

/// A payload handed over by a release store and an acquire load is read
/// whole by the receiver, and loom finds no race.
#[test]
fn payload_handed_over_is_read_whole() {
    loom::model(|| {
        let h = handover();
        let h2 = h.clone();
        let writer = thread::spawn(move || {
            write(&h2, [1, 2, 3, 4]);
            h2.ready.store(1, Ordering::Release);
        });
        if h.ready.load(Ordering::Acquire) == 1 {
            assert_eq!(read(&h), [1, 2, 3, 4]);
        }
        writer.join().unwrap();
    });
}

/// A payload read without the hand-over (the flag's store and load are
/// relaxed) is a data race, and loom reports it: the cells are not a
/// window loom cannot see through.
#[test]
#[should_panic(expected = "Causality violation")]
fn payload_read_without_handover_is_a_race() {
    loom::model(|| {
        let h = handover();
        let h2 = h.clone();
        let writer = thread::spawn(move || {
            write(&h2, [1, 2, 3, 4]);
            h2.ready.store(1, Ordering::Relaxed);
        });
        if h.ready.load(Ordering::Relaxed) == 1 {
            read(&h);
        }
        writer.join().unwrap();
    });
}
