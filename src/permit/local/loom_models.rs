//! Loom models of the shared-memory permit arbiter (DESIGN.md
//! "Correctness"), one invariant each, over the very code of [`super::core`].
//! Run by `make test-loom`.
//!
//! Each thread stands for a process: it has its own holder word. Liveness
//! is faked: a holder listed as dead is dead, every other one alive. Time
//! is a shared counter the threads read under the lock.

use super::core::{Ctx, HeapArb, Req, HELD, REASON_DEAD};
use crate::permit::Mode;
use crate::shm::records::{Holder, Liveness};
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Fake {
    dead: Holder,
}

impl Liveness for Fake {
    fn is_alive(&self, h: Holder) -> bool {
        !h.is_none() && h != self.dead
    }
}

const ALL_ALIVE: Fake = Fake { dead: Holder::NONE };

fn cx(live: &Fake, record: u32, cap: u32, lease_ns: u64) -> Ctx<'_> {
    Ctx {
        me: Holder::new(record, 1),
        live,
        cap,
        lease_ns,
    }
}

fn req(path: &str, mode: Mode) -> Req<'_> {
    Req {
        path: path.as_bytes(),
        mode,
    }
}

/// (a) No two conflicting grants: two processes ask for a write permit on
/// one path at once (without waiting); while one holds it, the other is
/// never granted it.
#[test]
fn no_two_conflicting_grants() {
    loom::model(|| {
        let arb = Arc::new(HeapArb::new(2, 2));
        let holding = Arc::new(AtomicUsize::new(0));
        let spawn = |record: u32| {
            let (arb, holding) = (arb.clone(), holding.clone());
            thread::spawn(move || {
                let a = arb.arb();
                let c = cx(&ALL_ALIVE, record, 0, u64::MAX / 2);
                let g = a.lock(&c, None).unwrap();
                let i = g.enqueue(&c, req("f", Mode::Write)).unwrap();
                g.grant_pass(&c, 0, Some(i));
                let held = a.entries[i].state.load(crate::sync::Ordering::Relaxed) == HELD;
                if !held {
                    assert!(g.withdraw(&c, i, 0));
                    return false;
                }
                let token = g.describe(i).3;
                drop(g);
                assert_eq!(holding.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                holding.fetch_sub(1, Ordering::SeqCst);
                let g = a.lock(&c, None).unwrap();
                assert!(g.release(&c, i, token, 0));
                true
            })
        };
        let (x, y) = (spawn(0), spawn(1));
        let (x, y) = (x.join().unwrap(), y.join().unwrap());
        assert!(x || y, "one of them was granted");
    });
}

/// (b) The fair order holds: while a permit blocks everything (cap 1),
/// process A queues two requests and process B one, concurrently; B's is
/// granted before A's second, whatever the interleaving.
#[test]
fn fair_order_holds() {
    loom::model(|| {
        let arb = Arc::new(HeapArb::new(4, 3));
        let a = arb.arb();
        let h = cx(&ALL_ALIVE, 2, 1, u64::MAX / 2);
        let hold = {
            let g = a.lock(&h, None).unwrap();
            let i = g.enqueue(&h, req("gate", Mode::Write)).unwrap();
            g.grant_pass(&h, 0, Some(i));
            i
        };
        let ta = {
            let arb = arb.clone();
            thread::spawn(move || {
                let a = arb.arb();
                let c = cx(&ALL_ALIVE, 0, 1, u64::MAX / 2);
                let first = a
                    .lock(&c, None)
                    .unwrap()
                    .enqueue(&c, req("a1", Mode::Write));
                let second = a
                    .lock(&c, None)
                    .unwrap()
                    .enqueue(&c, req("a2", Mode::Write));
                (first.unwrap(), second.unwrap())
            })
        };
        let tb = {
            let arb = arb.clone();
            thread::spawn(move || {
                let a = arb.arb();
                let c = cx(&ALL_ALIVE, 1, 1, u64::MAX / 2);
                let g = a.lock(&c, None).unwrap();
                g.enqueue(&c, req("b1", Mode::Write)).unwrap()
            })
        };
        let (_a1, a2) = ta.join().unwrap();
        let b1 = tb.join().unwrap();
        // Release in turn and see who gets the single slot.
        let mut cur = hold;
        let mut order = Vec::new();
        for _ in 0..3 {
            let g = a.lock(&h, None).unwrap();
            let (owner, _, _, token, _) = g.describe(cur);
            let by_owner = Ctx { me: owner, ..h };
            assert!(g.release(&by_owner, cur, token, 0));
            cur = g.held()[0];
            order.push(cur);
        }
        let pos = |i| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(b1) < pos(a2), "B's only request after A's second");
    });
}

/// (c) A dead holder is reclaimed exactly once while two processes race
/// to reclaim it.
#[test]
fn dead_holder_reclaimed_once() {
    loom::model(|| {
        let arb = Arc::new(HeapArb::new(2, 3));
        let dead = Holder::new(2, 1);
        {
            let a = arb.arb();
            let c = cx(&ALL_ALIVE, 2, 0, u64::MAX / 2);
            let g = a.lock(&c, None).unwrap();
            let i = g.enqueue(&c, req("x", Mode::Write)).unwrap();
            g.grant_pass(&c, 0, Some(i));
        }
        let spawn = |record: u32| {
            let arb = arb.clone();
            thread::spawn(move || {
                let live = Fake { dead };
                let a = arb.arb();
                let c = cx(&live, record, 0, u64::MAX / 2);
                let g = a.lock(&c, None).unwrap();
                g.sweep(&c, 1)
            })
        };
        let (x, y) = (spawn(0), spawn(1));
        let freed = x.join().unwrap() + y.join().unwrap();
        assert_eq!(freed, 1, "reclaimed exactly once");
        let a = arb.arb();
        let c = cx(&ALL_ALIVE, 0, 0, 1);
        let g = a.lock(&c, None).unwrap();
        let r = g.reclaimed();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].2, REASON_DEAD);
        assert_eq!(a.head.reclaims.load(crate::sync::Ordering::Relaxed), 1);
    });
}

/// (d) A fenced holder's commit never lands: a holder whose lease runs out
/// commits while another process reclaims the permit and is granted the
/// path. The file's writers' tokens only ever increase: the old holder's
/// write lands before the new grant, or not at all.
#[test]
fn fenced_commit_never_lands() {
    loom::model(|| {
        let arb = Arc::new(HeapArb::new(2, 2));
        let clock = Arc::new(AtomicU64::new(0));
        let file = Arc::new(AtomicU64::new(0));
        let lease = 10;
        let (i, token) = {
            let a = arb.arb();
            let c = cx(&ALL_ALIVE, 0, 0, lease);
            let g = a.lock(&c, None).unwrap();
            let i = g.enqueue(&c, req("f", Mode::Write)).unwrap();
            g.grant_pass(&c, 0, Some(i));
            (i, g.describe(i).3)
        };
        let old = {
            let (arb, clock, file) = (arb.clone(), clock.clone(), file.clone());
            thread::spawn(move || {
                let a = arb.arb();
                let c = cx(&ALL_ALIVE, 0, 0, lease);
                let g = a.lock(&c, None).unwrap();
                if g.current(&c, i, token, clock.load(Ordering::SeqCst)) {
                    assert!(file.load(Ordering::SeqCst) < token);
                    file.store(token, Ordering::SeqCst);
                }
            })
        };
        let new = {
            let (arb, clock, file) = (arb.clone(), clock.clone(), file.clone());
            thread::spawn(move || {
                clock.store(lease + 5, Ordering::SeqCst);
                let a = arb.arb();
                let c = cx(&ALL_ALIVE, 1, 0, lease);
                let g = a.lock(&c, None).unwrap();
                let now = clock.load(Ordering::SeqCst);
                g.sweep(&c, now);
                let j = g.enqueue(&c, req("f", Mode::Write)).unwrap();
                g.grant_pass(&c, now, Some(j));
                let (_, _, _, t, _) = g.describe(j);
                assert!(
                    g.current(&c, j, t, now),
                    "granted once the old lease ran out"
                );
                assert!(file.load(Ordering::SeqCst) < t);
                file.store(t, Ordering::SeqCst);
            })
        };
        old.join().unwrap();
        new.join().unwrap();
        assert_eq!(
            file.load(Ordering::SeqCst),
            token + 1,
            "the new holder's write is last"
        );
    });
}
