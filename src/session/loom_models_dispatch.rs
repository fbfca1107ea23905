//! Loom models of the request area (docs/session.md, "The request/response
//! area"; DESIGN.md "Correctness"), one invariant each, over the very code
//! of [`super::dispatch`] and the table's [`super::entry`] (entry locks,
//! bindings, `in_flight`). Run by `make test-loom`.
//!
//! Each thread stands for a process with its own holder word. Liveness is
//! faked: a holder is dead once the model says so. Futex waits have no
//! timeouts under loom, so a lost wake-up shows up as a deadlock; the one
//! place where the real code relies on a timeout (a waiting submitter looks
//! at its worker every 100 ms, because a dead process wakes nobody) is
//! modelled by the dying thread ringing the submitter's futex once after
//! its death: "some time later, the wait's timeout fires".

use super::dispatch::{Core, EntriesEnv, Outcome};
use super::entry::{Actor, Entries, SessionId};
use super::requests::{Geometry, GroupRec, SlotHead, SlotState, WorkerId, WorkerRec, WorkerState};
use crate::shm::records::{Holder, Liveness};
use crate::sync::{AtomicU32, AtomicU64, Ordering, SharedBufs};
use loom::sync::Arc;
use loom::thread;

/// Holders are alive unless named in `dead` (set by the model when a
/// thread "dies").
struct Fake {
    dead: AtomicU32,
}

impl Liveness for Fake {
    fn is_alive(&self, h: Holder) -> bool {
        !h.is_none() && h.0 != self.dead.load(Ordering::SeqCst)
    }
}

fn holder(process: u32) -> Holder {
    Holder::new(process, 1)
}

fn env<'a>(entries: &'a Entries, live: &'a Fake, process: u32) -> EntriesEnv<'a> {
    EntriesEnv {
        entries,
        actor: Actor {
            me: holder(process),
            live,
        },
    }
}

/// A request area on the heap: one slot, `workers` worker records, two
/// groups, messages of up to 8 bytes; plus a table of one session.
struct World {
    core: Core,
    entries: Entries,
    live: Fake,
    session: SessionId,
    _groups: Box<[GroupRec]>,
    _workers: Box<[WorkerRec]>,
    _words: Box<[AtomicU64]>,
    _heads: Box<[SlotHead]>,
}

impl World {
    fn new(workers: u32) -> World {
        let geo = Geometry::new(2, workers, 1, 8).unwrap();
        let groups: Box<[GroupRec]> = (0..2).map(|_| GroupRec::new()).collect();
        let wrecs: Box<[WorkerRec]> = (0..workers).map(|_| WorkerRec::new()).collect();
        let words: Box<[AtomicU64]> = (0..1).map(|_| AtomicU64::new(0)).collect();
        let heads: Box<[SlotHead]> = (0..1).map(|_| SlotHead::new()).collect();
        // The slot's request and response buffers, one loom cell each: a
        // payload access not ordered by the hand-over fails the model.
        let bufs = SharedBufs::on_heap(geo.buf_size as usize, 2);
        // SAFETY: every array has the length the geometry gives and lives
        // as long as the world (dropped after `core`, which is only pointers).
        let core = unsafe {
            Core::from_parts(
                geo,
                groups.as_ptr(),
                wrecs.as_ptr(),
                words.as_ptr(),
                heads.as_ptr(),
                bufs,
            )
        };
        let entries = Entries::on_heap(1);
        let live = Fake {
            dead: AtomicU32::new(0),
        };
        let session = {
            let e = env(&entries, &live, 9);
            let mut cursor = 0;
            entries.create(e.actor, &mut cursor, "t", 0, b"").unwrap()
        };
        World {
            core,
            entries,
            live,
            session,
            _groups: groups,
            _workers: wrecs,
            _words: words,
            _heads: heads,
        }
    }

    fn env(&self, process: u32) -> EntriesEnv<'_> {
        env(&self.entries, &self.live, process)
    }

    fn register(&self, process: u32) -> WorkerId {
        self.core
            .register(&self.env(process), 0, process, 0)
            .unwrap()
    }

    /// Submits `req` as `process` and waits for the outcome; returns the
    /// response bytes, and frees the slot.
    fn submit_and_wait(&self, process: u32, req: &[u8]) -> Result<Vec<u8>, crate::ErrorKind> {
        let e = self.env(process);
        let (i, fw) = self.core.claim(&e, req).unwrap();
        let qw = self.core.queue(&e, i, fw, self.session.0, 0).unwrap();
        let out = match self.core.wait(&e, i, qw.gen, None, 0, &mut None).unwrap() {
            // SAFETY: the slot is done and ours until collected.
            Outcome::Done(n) => Ok(unsafe { self.core.with_response(i, n, <[u8]>::to_vec) }),
            Outcome::Failed(k) => Err(k),
        };
        self.core.collect(i, qw.gen);
        out
    }

    /// Worker `w` (of `process`) serves one request: waits for it and
    /// answers `resp`. Returns the request bytes.
    fn serve_one(&self, process: u32, w: WorkerId, resp: &[u8]) -> Vec<u8> {
        let e = self.env(process);
        let mut cursor = 0;
        loop {
            if let Some(t) = self.core.next_once(&e, w, 0, &mut cursor, None, 0, false) {
                // SAFETY: the slot is taken by `w`.
                let req = unsafe { self.core.with_request(t.slot, 4, <[u8]>::to_vec) };
                // The one request, being served, is counted exactly once.
                assert_eq!(self.in_flight(), 1, "in_flight while served");
                self.core.respond(&e, w, t.slot, t.word, resp).unwrap();
                return req;
            }
        }
    }

    fn in_flight(&self) -> u32 {
        self.entries.lookup(self.session).unwrap().in_flight
    }

    fn binding(&self) -> Option<WorkerId> {
        self.entries
            .lookup(self.session)
            .unwrap()
            .worker
            .and_then(|r| WorkerId::from_ref(r, self.core.geometry().workers))
    }

    /// The one dead worker of the model was reaped exactly once: one
    /// compare-and-swap of its record to *reaping* succeeded, whoever tried.
    fn assert_reaped_once(&self) {
        assert_eq!(
            self.core.reaps.load(Ordering::Relaxed),
            1,
            "successful reaps of the dead worker"
        );
    }

    fn assert_quiet(&self) {
        assert_eq!(self.in_flight(), 0, "in_flight left over");
        assert_eq!(self.core.slot_word(0).unwrap().state, SlotState::Free);
        assert_eq!(self.entries.entry(0).lock_word(), 0, "entry lock left held");
    }
}

/// (a) A request is handed off exactly once: submit → take → respond →
/// wake, with the worker asleep or busy at any point. The submitter gets
/// the worker's response, the session ends bound to the worker with
/// nothing in flight, the slot free.
#[test]
fn request_handed_off_once() {
    loom::model(|| {
        let world = Arc::new(World::new(1));
        let w = world.register(1);
        let worker = {
            let world = world.clone();
            thread::spawn(move || world.serve_one(1, w, b"pong"))
        };
        let got = world.submit_and_wait(0, b"ping");
        assert_eq!(worker.join().unwrap(), b"ping");
        assert_eq!(got.as_deref(), Ok(&b"pong"[..]));
        assert_eq!(world.core.worker(w.index).served.load(Ordering::SeqCst), 1);
        assert_eq!(world.binding(), Some(w));
        world.assert_quiet();
    });
}

/// (b) A request for a session bound to a dead worker is answered exactly
/// once, by the live worker of the group, while the submitter's check and
/// an idle peer's check race to reap the dead worker: it is reaped once
/// (its record ends free), the session ends bound to the live worker (or
/// unbound), and `in_flight` ends at 0. Exactly one of the two reapers'
/// compare-and-swaps succeeds.
#[test]
fn dead_workers_request_is_answered_once() {
    loom::model(|| {
        let world = Arc::new(World::new(2));
        let dead = world.register(2);
        world
            .entries
            .lock(world.env(2).actor, world.session, None)
            .unwrap()
            .set_binding(Some(dead.to_ref()));
        world.live.dead.store(holder(2).0, Ordering::SeqCst);
        let live = world.register(1);

        let worker = {
            let world = world.clone();
            thread::spawn(move || world.serve_one(1, live, b"pong"))
        };
        let peer = {
            let world = world.clone();
            thread::spawn(move || world.core.check_peers(&world.env(3), 0))
        };
        let got = world.submit_and_wait(0, b"ping");
        assert_eq!(worker.join().unwrap(), b"ping");
        peer.join().unwrap();
        assert_eq!(got.as_deref(), Ok(&b"pong"[..]));
        let ww = world.core.worker_word(dead.index).unwrap();
        assert_eq!(ww.state, WorkerState::Free, "dead worker not reaped");
        world.assert_reaped_once();
        assert_eq!(
            world.core.worker(live.index).served.load(Ordering::SeqCst),
            1
        );
        assert_ne!(world.binding(), Some(dead));
        world.assert_quiet();
    });
}

/// (c) A worker that dies after taking a request (or before it could):
/// the request is served again by the other worker of the group and
/// answered exactly once, with that worker's response; the dead worker is
/// reaped exactly once (by the submitter's check, however many times it
/// looks).
#[test]
fn worker_dying_mid_request_is_replaced() {
    loom::model(|| {
        let world = Arc::new(World::new(2));
        let doomed = world.register(2);
        world
            .entries
            .lock(world.env(2).actor, world.session, None)
            .unwrap()
            .set_binding(Some(doomed.to_ref()));
        let live = world.register(1);

        let dying = {
            let world = world.clone();
            thread::spawn(move || {
                let mut cursor = 0;
                // Takes the request if it is there already, never answers.
                let took = world
                    .core
                    .take(&world.env(2), doomed, 0, &mut cursor, false);
                world.live.dead.store(holder(2).0, Ordering::SeqCst);
                // "Later, the submitter's wait times out and looks again."
                world.core.ring_slot(0);
                took.is_some()
            })
        };
        let worker = {
            let world = world.clone();
            thread::spawn(move || world.serve_one(1, live, b"live"))
        };
        let got = world.submit_and_wait(0, b"ping");
        dying.join().unwrap();
        assert_eq!(worker.join().unwrap(), b"ping");
        assert_eq!(got.as_deref(), Ok(&b"live"[..]));
        assert_eq!(
            world.core.worker(live.index).served.load(Ordering::SeqCst),
            1
        );
        world.assert_reaped_once();
        world.assert_quiet();
    });
}

/// (e) A worker that dies after writing its response into the slot and
/// before marking it done (README: "answered once even when a worker dies
/// after writing its response but before marking it done"): the request
/// is served again by the other worker of the group; the submitter gets
/// exactly one answer, the live worker's (never the bytes the dead one
/// left), and the dead worker is reaped exactly once.
#[test]
fn worker_dying_after_writing_its_response_is_answered_once() {
    loom::model(|| {
        let world = Arc::new(World::new(2));
        let doomed = world.register(2);
        world
            .entries
            .lock(world.env(2).actor, world.session, None)
            .unwrap()
            .set_binding(Some(doomed.to_ref()));
        let live = world.register(1);

        let dying = {
            let world = world.clone();
            thread::spawn(move || {
                let e = world.env(2);
                let mut cursor = 0;
                // The request is queued to this worker (its session is
                // bound here): it takes it, writes its response, dies.
                let t = loop {
                    if let Some(t) =
                        world
                            .core
                            .next_once(&e, doomed, 0, &mut cursor, None, 0, false)
                    {
                        break t;
                    }
                };
                world.core.write_response(t.slot, b"deadresp");
                world.live.dead.store(holder(2).0, Ordering::SeqCst);
                // "Later, the submitter's wait times out and looks again."
                world.core.ring_slot(0);
            })
        };
        let worker = {
            let world = world.clone();
            thread::spawn(move || world.serve_one(1, live, b"ok"))
        };
        let got = world.submit_and_wait(0, b"ping");
        dying.join().unwrap();
        assert_eq!(worker.join().unwrap(), b"ping");
        assert_eq!(got.as_deref(), Ok(&b"ok"[..]));
        assert_eq!(
            world.core.worker(live.index).served.load(Ordering::SeqCst),
            1
        );
        let ww = world.core.worker_word(doomed.index).unwrap();
        assert_eq!(ww.state, WorkerState::Free, "dead worker not reaped");
        world.assert_reaped_once();
        world.assert_quiet();
    });
}

/// (d) The summary of queued slots never hides a request: two requests in
/// a row through one slot, so the worker's scan after the first (which
/// finds the slot's bit set and the slot no longer queued, and clears the
/// bit) races with the submitter queuing the second (which sets it). Both
/// are answered, once each, and the worker never sleeps through one.
#[test]
fn summary_never_hides_a_request() {
    loom::model(|| {
        let world = Arc::new(World::new(1));
        let w = world.register(1);
        let worker = {
            let world = world.clone();
            thread::spawn(move || {
                let a = world.serve_one(1, w, b"one");
                let b = world.serve_one(1, w, b"two");
                (a, b)
            })
        };
        let first = world.submit_and_wait(0, b"ping");
        let second = world.submit_and_wait(0, b"pong");
        let (a, b) = worker.join().unwrap();
        assert_eq!((a.as_slice(), b.as_slice()), (&b"ping"[..], &b"pong"[..]));
        assert_eq!(first.as_deref(), Ok(&b"one"[..]));
        assert_eq!(second.as_deref(), Ok(&b"two"[..]));
        assert_eq!(world.core.worker(w.index).served.load(Ordering::SeqCst), 2);
        world.assert_quiet();
    });
}
