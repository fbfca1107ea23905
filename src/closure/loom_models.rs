//! Loom model of a closure's head counters ([`super::head`]), one
//! invariant: publishers racing get distinct versions, and `current` never
//! goes back and ends at the largest version published. Run by
//! `make test-loom`.

use super::head::HeadCore;
use loom::sync::Arc;
use loom::thread;

#[test]
fn loom_models_closure_versions_distinct_and_current_monotonic() {
    loom::model(|| {
        let head = Arc::new(HeadCore::new());
        let publishers: Vec<_> = (0..2)
            .map(|_| {
                let h = head.clone();
                thread::spawn(move || {
                    let v = h.claim().unwrap();
                    h.advance(v);
                    v
                })
            })
            .collect();
        // A reader meanwhile: what it sees as current never decreases.
        let reader = {
            let h = head.clone();
            thread::spawn(move || {
                let a = h.current();
                let b = h.current();
                assert!(a <= b, "current went back from {a} to {b}");
            })
        };
        let mut vs: Vec<u64> = publishers.into_iter().map(|t| t.join().unwrap()).collect();
        reader.join().unwrap();
        vs.sort();
        assert_eq!(vs, [1, 2], "versions are distinct and dense");
        assert_eq!(head.current(), 2);
        assert_eq!(head.last_claimed(), 2);
    });
}
