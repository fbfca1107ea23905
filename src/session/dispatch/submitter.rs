//! The submitter's side: claim a slot, queue it, poll, collect, the
//! waiting submitter's check, withdrawal, and freeing the slots of dead
//! submitters.

use super::Outcome;
use super::{sc_fence, Core, EntryOps, Env};
use crate::error::{err, ErrorKind, Result};
use crate::session::requests::SLOT_GEN_MASK;
use crate::session::requests::{SlotState, SlotWord, WorkerId, WorkerState};
use crate::shm::records::Holder;
use crate::sync::Ordering;

impl Core {
    /// Claims a free slot for this process and copies `bytes` in. When a
    /// pass finds none, frees the slots of dead submitters and tries once
    /// more; then `Full`.
    pub fn claim<E: Env>(&self, env: &E, bytes: &[u8]) -> Result<(u32, SlotWord)> {
        if bytes.len() > self.geo.max_message as usize {
            return Err(err!(
                Invalid,
                "request of {} bytes is larger than the area's max_message of {} bytes",
                bytes.len(),
                self.geo.max_message
            ));
        }
        let n = self.geo.slots;
        for pass in 0..2 {
            let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            for k in 0..n {
                let i = (start + k) % n;
                let Some(w) = self.slot_word(i) else { continue };
                if w.state != SlotState::Free {
                    continue;
                }
                let fw = SlotWord {
                    state: SlotState::Filling,
                    claimant: env.me(),
                    gen: (w.gen + 1) & SLOT_GEN_MASK,
                    ..w
                };
                if self.cas(i, w, fw) {
                    // The next claim starts here: the slot this process
                    // used last is free again by then, and its words and
                    // buffers are still in this CPU's caches.
                    self.cursor.store(i, Ordering::Relaxed);
                    let h = self.head(i);
                    h.submitter.store(env.me().0, Ordering::Relaxed);
                    h.sleeping.store(0, Ordering::Relaxed);
                    h.resp_len.store(0, Ordering::Relaxed);
                    h.status.store(0, Ordering::Relaxed);
                    h.req_len.store(bytes.len() as u32, Ordering::Relaxed);
                    self.copy_in(i, false, bytes);
                    return Ok((i, fw));
                }
            }
            if pass == 0 && self.reclaim(env) == 0 {
                break;
            }
        }
        Err(err!(
            Full,
            "all {n} request slots are in use (by live submitters)"
        ))
    }

    /// Queues the filled slot `i` (word `fw`) for `session` to group `g`:
    /// under the session's entry lock, `in_flight + 1` and the slot queued
    /// to the session's worker if it is registered in `g`, else to an idle
    /// worker of `g` (which binds the session when it takes the request),
    /// else to any worker of `g`; then rings the worker. On error the slot
    /// is freed.
    pub fn queue<E: Env>(
        &self,
        env: &E,
        i: u32,
        fw: SlotWord,
        session: u64,
        g: u32,
    ) -> Result<SlotWord> {
        let h = self.head(i);
        h.session.store(session, Ordering::SeqCst);
        let entry = match self.lock(env, session) {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.cas(i, fw, SlotWord::free(fw.gen));
                return Err(err!(
                    NotFound,
                    "session {session:#x} does not exist (ended?)"
                ));
            }
            Err(e) => {
                self.cas(i, fw, SlotWord::free(fw.gen));
                return Err(e);
            }
        };
        let mut entry = entry;
        let bound = entry
            .binding()
            .and_then(|b| WorkerId::from_ref(b, self.geo.workers))
            .filter(|&t| self.is_registered(t, g).is_some());
        // Not bound: to a worker that is free now, not to whichever busy
        // worker finishes first (the "a free worker of the group").
        let reserved = match bound {
            Some(_) => None,
            None => self.reserve_idle(g),
        };
        let target = bound.or(reserved);
        let mut qw = fw.with(SlotState::Queued, g, target);
        // Counted first, so a queued or taken slot is always counted (a
        // worker may take it before this lock is released). If this
        // process dies in between, the next holder recounts.
        let before = entry.in_flight();
        entry.set_in_flight(before.saturating_add(1));
        if !self.cas(i, fw, qw) {
            entry.set_in_flight(before);
            if let Some(r) = reserved {
                self.ring_reserved(r.index);
            }
            return Err(err!(
                Corrupt,
                "request slot {i} changed while its submitter filled it"
            ));
        }
        sc_fence();
        if let Some(t) = target {
            // The worker may have been reaped between the check and the
            // queueing; its reaper's scan then may have missed this slot.
            // Either that scan sees the slot, or this check sees the record
            // change (both are sequentially consistent).
            if self.is_registered(t, g).is_none() {
                let aw = qw.with(SlotState::Queued, g, None);
                if self.cas(i, qw, aw) {
                    qw = aw;
                }
            }
        }
        drop(entry);
        self.group(g).submitted.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = reserved {
            self.ring_reserved(r.index);
        }
        match qw.worker {
            Some(_) if reserved.is_some() => {}
            Some(t) => self.ring_worker(t.index),
            None => self.ring_any(g),
        }
        Ok(qw)
    }

    /// Where the request in slot `i` (generation `gen`) is: `Some` once it
    /// is answered or failed.
    pub fn poll(&self, i: u32, gen: u32) -> Result<Option<Outcome>> {
        let w = self
            .slot_word(i)
            .ok_or_else(|| err!(Corrupt, "request slot {i} has a damaged state word"))?;
        if w.gen != gen || matches!(w.state, SlotState::Free | SlotState::Filling) {
            return Err(err!(
                Corrupt,
                "request slot {i} was reused while its submitter waited for it"
            ));
        }
        Ok(match w.state {
            SlotState::Done => {
                let len = self.head(i).resp_len.load(Ordering::SeqCst);
                if len > self.geo.max_message {
                    return Err(err!(
                        Corrupt,
                        "request slot {i}: response length {len} beyond max_message"
                    ));
                }
                Some(Outcome::Done(len))
            }
            SlotState::Failed => {
                let code = self.head(i).status.load(Ordering::SeqCst);
                let kind = ErrorKind::ALL
                    .iter()
                    .copied()
                    .find(|k| k.code() == code)
                    .unwrap_or(ErrorKind::Unavailable);
                Some(Outcome::Failed(kind))
            }
            _ => None,
        })
    }

    /// Frees a done or failed slot (the submitter has read it).
    pub fn collect(&self, i: u32, gen: u32) {
        if let Some(w) = self.slot_word(i) {
            if w.gen == gen && matches!(w.state, SlotState::Done | SlotState::Failed) {
                self.cas(i, w, SlotWord::free(gen));
            }
        }
    }

    /// The waiting submitter's periodic check of slot `i`: if the worker it
    /// is queued to or taken by is dead, reap it; if it names a worker that
    /// is gone, move it off; if it waits for any worker of a group that
    /// has none alive, fail it.
    pub fn check_request<E: Env>(&self, env: &E, i: u32, gen: u32) {
        let Some(w) = self.slot_word(i) else { return };
        if w.gen != gen || !w.state.in_flight() {
            return;
        }
        match w.worker {
            Some(x) => match self.worker_word(x.index) {
                Some(ww) if ww.gen == x.gen && ww.state == WorkerState::Active => {
                    if !env.is_alive(ww.holder) {
                        self.reap(env, x);
                    }
                }
                Some(ww) if ww.gen == x.gen && ww.state == WorkerState::Reaping => {
                    if !env.is_alive(ww.holder) {
                        self.reap(env, x);
                    }
                }
                // The record was freed or reused: an orphan.
                _ => self.move_off(env, i, w, x),
            },
            None => {
                if w.state == SlotState::Queued && !self.group_has_live(env, w.group, None) {
                    self.fail_queued(env, i, w);
                }
            }
        }
    }

    fn fail_queued<E: Env>(&self, env: &E, i: u32, w: SlotWord) {
        let session = self.head(i).session.load(Ordering::SeqCst);
        if self.slot_word(i) != Some(w) {
            return;
        }
        let Ok(mut entry) = self.lock(env, session) else {
            return;
        };
        // Re-check under the lock: a worker may have registered and taken it.
        if self.group_has_live(env, w.group, None) {
            return;
        }
        self.head(i)
            .status
            .store(ErrorKind::Unavailable.code(), Ordering::SeqCst);
        if self.cas(i, w, w.with(SlotState::Failed, w.group, None)) {
            if let Some(e) = entry.as_mut() {
                e.set_in_flight(e.in_flight().saturating_sub(1));
            }
            self.group(w.group).failed.fetch_add(1, Ordering::Relaxed);
        }
        drop(entry);
        self.ring_slot(i);
    }

    /// The submitter no longer waits for slot `i` (its ticket was dropped,
    /// or it died): a queued request is withdrawn, a taken one is marked so
    /// that its worker frees it, an answered one is freed.
    pub fn abandon<E: Env>(&self, env: &E, i: u32, gen: u32) {
        loop {
            let Some(w) = self.slot_word(i) else { return };
            if w.gen != gen {
                return;
            }
            match w.state {
                SlotState::Free => return,
                SlotState::Filling => {
                    if self.cas(i, w, SlotWord::free(gen)) {
                        return;
                    }
                }
                SlotState::Done | SlotState::Failed => {
                    if self.cas(i, w, SlotWord::free(gen)) {
                        return;
                    }
                }
                SlotState::Taken => {
                    if w.abandoned
                        || self.cas(
                            i,
                            w,
                            SlotWord {
                                abandoned: true,
                                ..w
                            },
                        )
                    {
                        return;
                    }
                }
                SlotState::Queued => {
                    let session = self.head(i).session.load(Ordering::SeqCst);
                    if self.slot_word(i) != Some(w) {
                        continue;
                    }
                    let entry = self.lock(env, session);
                    if self.cas(i, w, SlotWord::free(gen)) {
                        if let Ok(Some(mut e)) = entry {
                            e.set_in_flight(e.in_flight().saturating_sub(1));
                        }
                        return;
                    }
                    if entry.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Frees the slots whose submitter is dead (what a submitter does when
    /// it finds no free slot). Returns how many it freed or handed over.
    pub fn reclaim<E: Env>(&self, env: &E) -> u32 {
        let mut known: Vec<(Holder, bool)> = Vec::new();
        let mut alive = |h: Holder| -> bool {
            if let Some(&(_, a)) = known.iter().find(|(k, _)| *k == h) {
                return a;
            }
            let a = env.is_alive(h);
            known.push((h, a));
            a
        };
        let mut n = 0;
        for i in 0..self.geo.slots {
            let Some(w) = self.slot_word(i) else { continue };
            match w.state {
                SlotState::Free => {}
                SlotState::Filling => {
                    if !alive(w.claimant) && self.cas(i, w, SlotWord::free(w.gen)) {
                        n += 1;
                    }
                }
                _ => {
                    if w.abandoned {
                        continue; // its worker frees it
                    }
                    let s = Holder(self.head(i).submitter.load(Ordering::SeqCst));
                    if self.slot_word(i) == Some(w) && !alive(s) {
                        self.abandon(env, i, w.gen);
                        n += 1;
                    }
                }
            }
        }
        n
    }
}
