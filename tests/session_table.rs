//! The session table between real processes: this test binary re-executed
//! as a child (see [`child_entry`]); no thread stands in for a process.
//!
//! - [`concurrent_processes_never_share_a_slot`]: 4 processes create,
//!   look up, update and end sessions on one small table at once (often
//!   full); each checks after every step that its sessions hold exactly its
//!   data; at the end the table holds exactly the sessions they kept.
//! - [`killed_lock_holder_is_taken_over_by_another_process`]: a process is
//!   `kill -9`ed while holding an entry lock in the middle of an update;
//!   another process takes the lock over (once) and finds the entry as it
//!   was before the update.
//! - Churning processes killed at random moments
//!   ([`killed_at_random_moments_leave_the_table_consistent`]): every
//!   session left is consistent, every lock can be had, and every slot can
//!   be used again.
//! - [`full_table_and_stale_ids_across_processes`]: `Full`; an id of an
//!   ended session is `NotFound` after another process reused its slot.
//! - [`corrupt_and_truncated_files`]: `Corrupt`, never a crash.

mod common;

use common::{kill9, say, serial, Scratch};
use mtipc::session::{SessionId, Table};
use mtipc::{Domain, ErrorKind};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, ChildStdout};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Helpers

/// This test binary again, running [`child_entry`] as `role`.
fn spawn_role(role: &str, args: &[String]) -> Child {
    common::role_command("MTIPC_ST", role, args)
        .spawn()
        .expect("spawn child")
}

/// The child's protocol lines ("@@ ..."), without the prefix, until one
/// starting with `until` (included) or the end of its output.
fn read_until(out: &mut BufReader<ChildStdout>, until: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            return lines;
        }
        if let Some(l) = line.trim_end().strip_prefix("@@ ") {
            lines.push(l.to_string());
            if l.starts_with(until) {
                return lines;
            }
        }
    }
}

fn id_of(s: &str) -> SessionId {
    SessionId(s.parse().unwrap())
}

/// Every live session must hold `user == "<tenant>-<state>"` (what the
/// churning children write, in one create or one update).
fn assert_consistent(t: &Table) -> usize {
    let mut n = 0;
    for s in t.sessions() {
        let user = String::from_utf8(s.user.clone()).unwrap();
        assert_eq!(
            user,
            format!("{}-{}", s.tenant, s.state),
            "session {}",
            s.id
        );
        n += 1;
    }
    n
}

// ---------------------------------------------------------------------------
// Children

/// Not a test of its own: the entry point of the child processes. Without
/// `MTIPC_ST_ROLE` it does nothing.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("MTIPC_ST_ROLE") else {
        return;
    };
    let args_var = std::env::var("MTIPC_ST_ARGS").unwrap_or_default();
    let args: Vec<&str> = args_var.split('\u{1f}').collect();
    let domain = Domain::open(Some(Path::new(args[0]))).expect("child opens the domain");
    let table = Table::open(&domain, "t").expect("child opens the table");
    match role {
        ref r if r == "churn" => child_churn(&table, args[1], args[2].parse().unwrap()),
        ref r if r == "stall" => {
            table
                .test_stall_update(id_of(args[1]), 999, b"half-written")
                .unwrap();
            say("stalled");
            std::thread::sleep(Duration::from_secs(120));
        }
        ref r if r == "takeover" => {
            let g = table
                .lock_entry(id_of(args[1]), Duration::from_secs(5))
                .unwrap();
            let s = table.lookup(g.id()).unwrap();
            say(&format!(
                "repaired={} state={} user={}",
                g.was_repaired(),
                s.state,
                String::from_utf8_lossy(&s.user)
            ));
            table.update_locked(&g, 2, Some(b"after")).unwrap();
        }
        ref r if r == "fill" => loop {
            match table.create_session("filler", 0, b"") {
                Ok(id) => say(&format!("id {}", id.0)),
                Err(e) if e.kind() == ErrorKind::Full => break say("full"),
                Err(e) => panic!("{e}"),
            }
        },
        ref r if r == "create" => {
            let id = table.create_session("late", 7, b"late").unwrap();
            say(&format!("id {}", id.0));
        }
        other => panic!("unknown child role {other:?}"),
    }
    drop(table);
    std::process::exit(0);
}

/// Creates, checks, updates, checks and ends sessions of tenant `tenant`,
/// holding up to 6 at a time (ending its oldest when the table is full);
/// `iterations` times (0: until killed). After each step, every session it
/// holds must still show its own data. Prints the ids it keeps at the end.
fn child_churn(t: &Table, tenant: &str, iterations: u64) {
    let mut held: Vec<(SessionId, u32)> = Vec::new();
    let mut k: u32 = 0;
    let check = |held: &[(SessionId, u32)]| {
        for &(id, state) in held {
            let s = t
                .lookup(id)
                .unwrap_or_else(|e| panic!("{tenant}: own session {id}: {e}"));
            assert_eq!(
                s.tenant, tenant,
                "{id}: another process's session in my slot"
            );
            assert_eq!(s.state, state);
            assert_eq!(s.user, format!("{tenant}-{state}").into_bytes());
        }
    };
    let mut i = 0u64;
    while iterations == 0 || i < iterations {
        i += 1;
        k = k.wrapping_add(1);
        match t.create_session(tenant, k, format!("{tenant}-{k}").as_bytes()) {
            Ok(id) => held.push((id, k)),
            Err(e) if e.kind() == ErrorKind::Full => {
                if let Some((id, _)) = (!held.is_empty()).then(|| held.remove(0)) {
                    t.end(id).unwrap();
                    assert_eq!(t.lookup(id).unwrap_err().kind(), ErrorKind::NotFound);
                }
                continue;
            }
            Err(e) => panic!("{tenant}: create: {e}"),
        }
        check(&held);
        // Update one, end one now and then.
        let j = (k as usize) % held.len();
        k = k.wrapping_add(1);
        t.update(held[j].0, k, Some(format!("{tenant}-{k}").as_bytes()))
            .unwrap();
        held[j].1 = k;
        check(&held);
        if held.len() > 6 {
            let (id, _) = held.remove(0);
            t.end(id).unwrap();
        }
    }
    for (id, _) in &held {
        say(&format!("kept {}", id.0));
    }
    say("done");
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn concurrent_processes_never_share_a_slot() {
    let _g = serial();
    let s = Scratch::new("churn");
    let t = Table::create(&s.domain(), "t", 20).unwrap();
    let dom = s.0.display().to_string();
    let mut kids: Vec<Child> = (0..4)
        .map(|i| spawn_role("churn", &[dom.clone(), format!("c{i}"), "3000".into()]))
        .collect();
    let mut kept = BTreeSet::new();
    for k in &mut kids {
        let mut out = BufReader::new(k.stdout.take().unwrap());
        let lines = read_until(&mut out, "done");
        assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
        for l in &lines[..lines.len() - 1] {
            let id = id_of(l.strip_prefix("kept ").unwrap());
            assert!(kept.insert(id), "session {id} kept by two processes");
        }
        assert!(k.wait().unwrap().success());
    }
    let live: BTreeSet<_> = t.sessions().map(|s| s.id).collect();
    assert_eq!(live, kept, "the table holds exactly the sessions kept");
    let slots: BTreeSet<_> = live.iter().map(|id| id.slot()).collect();
    assert_eq!(slots.len(), live.len());
    assert_eq!(assert_consistent(&t), kept.len());
    // No lock left held.
    for id in &live {
        drop(t.lock_entry(*id, Duration::ZERO).unwrap());
    }
}

#[test]
fn killed_lock_holder_is_taken_over_by_another_process() {
    let _g = serial();
    let s = Scratch::new("stall");
    let t = Table::create(&s.domain(), "t", 4).unwrap();
    let id = t.create_session("acme", 1, b"before").unwrap();
    let dom = s.0.display().to_string();

    let mut staller = spawn_role("stall", &[dom.clone(), id.0.to_string()]);
    let mut out = BufReader::new(staller.stdout.take().unwrap());
    assert_eq!(read_until(&mut out, "stalled"), ["stalled"]);
    // The half-written update is invisible; the holder is alive, so its
    // lock is not taken over.
    let seen = t.lookup(id).unwrap();
    assert_eq!((seen.state, &seen.user[..]), (1, &b"before"[..]));
    let r = t.lock_entry(id, Duration::from_millis(100));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Timeout);
    let stall_pid = staller.id();
    let rec = t
        .records()
        .into_iter()
        .find(|r| r.pid == stall_pid)
        .unwrap();
    assert!(rec.alive);

    kill9(&mut staller);
    let rec = t
        .records()
        .into_iter()
        .find(|r| r.index == rec.index)
        .unwrap();
    assert!(!rec.alive, "{rec:?}");

    let mut taker = spawn_role("takeover", &[dom.clone(), id.0.to_string()]);
    let mut out = BufReader::new(taker.stdout.take().unwrap());
    assert_eq!(
        read_until(&mut out, "repaired"),
        ["repaired=true state=1 user=before"]
    );
    assert!(taker.wait().unwrap().success());
    let after = t.lookup(id).unwrap();
    assert_eq!((after.state, &after.user[..]), (2, &b"after"[..]));
    // Taken over once: the next locker finds a normal, free lock.
    let g = t.lock_entry(id, Duration::ZERO).unwrap();
    assert!(!g.was_repaired());
}

#[test]
fn killed_at_random_moments_leave_the_table_consistent() {
    let _g = serial();
    let s = Scratch::new("kill");
    let cap = 16;
    let t = Table::create(&s.domain(), "t", cap).unwrap();
    let dom = s.0.display().to_string();
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut seen = 0;
    for round in 0..12 {
        let mut kids: Vec<Child> = (0..3)
            .map(|i| spawn_role("churn", &[dom.clone(), format!("r{round}c{i}"), "0".into()]))
            .collect();
        for k in &mut kids {
            std::thread::sleep(Duration::from_micros(2_000 + rand(40_000)));
            kill9(k);
        }
        seen = seen.max(assert_consistent(&t));
    }
    assert!(
        seen > 0,
        "the children were killed before they made any session"
    );
    // Every lock can be had (dead holders are taken over) ...
    let live: Vec<SessionId> = t.sessions().map(|s| s.id).collect();
    for id in &live {
        let g = t.lock_entry(*id, Duration::from_secs(2)).unwrap();
        t.end_locked(g);
    }
    assert_eq!(t.sessions().count(), 0);
    // ... and every slot can be used again, including one whose creator
    // died holding its lock.
    for i in 0..cap {
        t.create_session("again", i, b"").unwrap();
    }
    assert_eq!(
        t.create_session("again", 0, b"").unwrap_err().kind(),
        ErrorKind::Full
    );
    assert_eq!(t.records().iter().filter(|r| r.alive).count(), 1);
}

#[test]
fn full_table_and_stale_ids_across_processes() {
    let _g = serial();
    let s = Scratch::new("full");
    let t = Table::create(&s.domain(), "t", 5).unwrap();
    let dom = s.0.display().to_string();
    let mut filler = spawn_role("fill", std::slice::from_ref(&dom));
    let mut out = BufReader::new(filler.stdout.take().unwrap());
    let lines = read_until(&mut out, "full");
    assert!(filler.wait().unwrap().success());
    assert_eq!(lines.len(), 6, "{lines:?}");
    let ids: Vec<SessionId> = lines[..5]
        .iter()
        .map(|l| id_of(l.strip_prefix("id ").unwrap()))
        .collect();
    assert_eq!(
        t.create_session("x", 0, b"").unwrap_err().kind(),
        ErrorKind::Full
    );
    t.end(ids[2]).unwrap();
    let mut late = spawn_role("create", std::slice::from_ref(&dom));
    let mut out = BufReader::new(late.stdout.take().unwrap());
    let line = read_until(&mut out, "id");
    assert!(late.wait().unwrap().success());
    let new = id_of(line[0].strip_prefix("id ").unwrap());
    assert_eq!(new.slot(), ids[2].slot(), "the freed slot is reused");
    assert_ne!(new, ids[2]);
    assert_eq!(t.lookup(ids[2]).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        t.update(ids[2], 0, None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(t.lookup(new).unwrap().tenant, "late");
}

#[test]
fn corrupt_and_truncated_files() {
    let _g = serial();
    let s = Scratch::new("corrupt");
    let d = s.domain();
    let t = Table::create(&d, "t", 8).unwrap();
    let path = t.path().to_path_buf();
    let total = t.geometry().total;
    drop(t);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut orig = vec![0u8; 128];
    f.read_exact_at(&mut orig, 0).unwrap();
    let refused = |what: &str| {
        let e = Table::open(&d, "t").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
    };
    f.set_len(total / 2).unwrap();
    refused("truncated");
    f.set_len(total).unwrap();
    Table::open(&d, "t").unwrap();
    f.set_len(total + 4096).unwrap();
    refused("too long");
    f.set_len(total).unwrap();
    for (at, what) in [
        (0, "magic"),
        (16, "total size"),
        (64, "capacity"),
        (72, "entry size"),
        (96, "entries offset"),
        (110, "reserved"),
    ] {
        f.write_all_at(&[0xa5], at).unwrap();
        refused(what);
        f.write_all_at(&orig[at as usize..at as usize + 1], at)
            .unwrap();
    }
    // A capacity that claims more than the file holds is refused before
    // anything is mapped past the end.
    f.write_all_at(&1_000_000u32.to_le_bytes(), 64).unwrap();
    refused("capacity beyond the file");
    f.write_all_at(&orig, 0).unwrap();
    let t = Table::open(&d, "t").unwrap();
    // Garbage in an entry: a lookup says Corrupt, nothing crashes.
    let id = t.create_session("acme", 1, b"x").unwrap();
    let entry_at = t.geometry().entries_off + 256 * u64::from(id.slot().unwrap());
    f.write_all_at(&[0xff; 8], entry_at + 96 + 4).unwrap(); // user length of buffer 0
    assert_eq!(t.lookup(id).unwrap_err().kind(), ErrorKind::Corrupt);
    f.write_all_at(b"bad id!!", entry_at + 32).unwrap();
    assert_eq!(t.lookup(id).unwrap_err().kind(), ErrorKind::Corrupt);
    // A bogus holder word (record out of range) counts as dead: taken over.
    f.write_all_at(&0x7fff_0001u32.to_le_bytes(), entry_at)
        .unwrap();
    let g = t.lock_entry(id, Duration::from_secs(1)).unwrap();
    assert!(g.was_repaired());
}
