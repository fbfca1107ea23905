//! Loom models of the session table (docs/session.md, DESIGN.md
//! "Correctness"), one invariant each, over the very code of
//! [`super::entry`]. Run by `make test-loom`.
//!
//! Each thread stands for a process: it has its own holder word. Liveness
//! is faked: a holder listed as dead is dead, every other one alive.

use super::entry::{Actor, Entries, SessionId};
use crate::error::ErrorKind;
use crate::shm::records::{Holder, Liveness};
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Every holder is alive except `dead`.
struct Fake {
    dead: Holder,
}

impl Liveness for Fake {
    fn is_alive(&self, h: Holder) -> bool {
        !h.is_none() && h != self.dead
    }
}

const ALL_ALIVE: Fake = Fake { dead: Holder::NONE };

fn actor(live: &Fake, record: u32) -> Actor<'_> {
    Actor {
        me: Holder::new(record, 1),
        live,
    }
}

/// (a) Two processes creating sessions at once never own one slot: both
/// succeed (two slots), in different slots, and each slot holds what its
/// creator wrote.
#[test]
fn create_never_shares_a_slot() {
    loom::model(|| {
        let es = Arc::new(Entries::on_heap(2));
        let spawn = |record: u32, tenant: &'static str| {
            let es = es.clone();
            thread::spawn(move || {
                let mut cursor = 0;
                es.create(
                    actor(&ALL_ALIVE, record),
                    &mut cursor,
                    tenant,
                    record,
                    tenant.as_bytes(),
                )
                .expect("a slot is free for each creator")
            })
        };
        let a = spawn(0, "a");
        let b = spawn(1, "b");
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a.slot(), b.slot(), "two sessions in one slot");
        let (sa, sb) = (es.lookup(a).unwrap(), es.lookup(b).unwrap());
        assert_eq!((sa.tenant.as_str(), sa.user.as_slice()), ("a", &b"a"[..]));
        assert_eq!((sb.tenant.as_str(), sb.user.as_slice()), ("b", &b"b"[..]));
        assert_eq!(es.entry(0).lock_word() | es.entry(1).lock_word(), 0);
    });
}

/// (b) A stale id never resolves: while one process ends a session and
/// creates another one in the same slot, a lookup of the old id sees the
/// old session whole or `NotFound`, never (part of) the new one.
#[test]
fn stale_id_never_resolves() {
    loom::model(|| {
        let es = Arc::new(Entries::on_heap(1));
        let mut cursor = 0;
        let old = es
            .create(actor(&ALL_ALIVE, 0), &mut cursor, "old", 1, b"old-data")
            .unwrap();
        let w = {
            let es = es.clone();
            thread::spawn(move || {
                let a = actor(&ALL_ALIVE, 0);
                es.end_locked(es.lock(a, old, None).unwrap());
                let mut cursor = 0;
                es.create(a, &mut cursor, "new", 2, b"new").unwrap()
            })
        };
        match es.lookup(old) {
            Ok(s) => {
                assert_eq!(s.id, old);
                assert_eq!(
                    (s.tenant.as_str(), s.state, s.user.as_slice()),
                    ("old", 1, &b"old-data"[..]),
                    "a stale id resolved to other data"
                );
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound),
        }
        let new: SessionId = w.join().unwrap();
        assert_eq!(new.slot(), old.slot());
        assert_ne!(new, old);
        assert_eq!(es.lookup(old).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(es.lookup(new).unwrap().tenant, "new");
    });
}

/// (c) The entry lock of a dead holder is taken over exactly once while two
/// processes race for it: one of them repairs, both get the lock in turn
/// (their changes under it are both kept), and the lock ends free.
#[test]
fn dead_holder_is_reclaimed_once() {
    loom::model(|| {
        let es = Arc::new(Entries::on_heap(1));
        let dead = Holder::new(7, 1);
        let live = Arc::new(Fake { dead });
        let mut cursor = 0;
        let id = es
            .create(actor(&live, 7), &mut cursor, "t", 0, b"")
            .unwrap();
        // The holder "dies" with the lock held.
        std::mem::forget(es.lock(actor(&live, 7), id, None).unwrap());
        let repairs = Arc::new(AtomicU32::new(0));
        let racer = |record: u32| {
            let (es, live, repairs) = (es.clone(), live.clone(), repairs.clone());
            thread::spawn(move || {
                let g = es.lock(actor(&live, record), id, None).unwrap();
                if g.was_repaired() {
                    repairs.fetch_add(1, Ordering::Relaxed);
                }
                g.add_in_flight(1);
            })
        };
        let (a, b) = (racer(0), racer(1));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(
            repairs.load(Ordering::Relaxed),
            1,
            "taken over more than once"
        );
        assert_eq!(
            es.lookup(id).unwrap().in_flight,
            2,
            "an update under the lock was lost"
        );
        assert_eq!(es.entry(0).lock_word(), 0);
    });
}
