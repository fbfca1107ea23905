//! The library's events for Python: they go to the `logging` logger
//! `mtipc` (levels ERROR, WARNING, INFO, DEBUG, and 5 for trace).
//!
//! The core calls its logger on whatever thread emitted the event, often one
//! of its own threads that holds no GIL, sometimes inside a lock. Taking the
//! GIL there could deadlock with a Python thread that holds the GIL and waits
//! for that lock, so the logger here only queues the event (bounded; events
//! past the bound are counted and reported as one warning). A daemon thread
//! of the package (`mtipc/_log.py`) takes the queued events with the GIL
//! released and hands them to `logging`; it also tells the core which level
//! the `mtipc` logger has now (`_log_level`), so that events nobody would
//! see are not even formatted.

use mtipc::log::Level;
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Events queued at most; more are dropped and counted.
const QUEUE_MAX: usize = 10_000;

#[derive(Default)]
struct Queue {
    events: VecDeque<(u8, String, String)>,
    dropped: u64,
    /// Set by `_log_stop` (at exit): `_log_take` returns `None` from then on.
    stopped: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

fn shared() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        })
    })
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    s.queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// Installs the queueing logger for events up to the Python level `level`
/// (a `logging` level number: 40 error, 30 warning, 20 info, 10 debug, 5 or
/// less trace); above 40 (CRITICAL, or the logger disabled) removes it.
#[pyfunction]
pub fn _log_level(level: i64) {
    let max = match level {
        ..=5 => Some(Level::Trace),
        6..=10 => Some(Level::Debug),
        11..=20 => Some(Level::Info),
        21..=30 => Some(Level::Warn),
        31..=40 => Some(Level::Error),
        _ => None,
    };
    match max {
        None => mtipc::log::clear_logger(),
        Some(max) => {
            let s = Arc::clone(shared());
            mtipc::log::set_logger(
                Arc::new(move |l: Level, t: &str, m: &str| {
                    let mut q = lock(&s);
                    if q.events.len() >= QUEUE_MAX {
                        q.dropped += 1;
                        return;
                    }
                    q.events.push_back((l as u8, t.to_string(), m.to_string()));
                    drop(q);
                    s.ready.notify_one();
                }),
                max,
            );
        }
    }
}

/// Waits up to `timeout` seconds (GIL released) for queued events and
/// returns them all, oldest first, as `(python_level, target, message)`;
/// events dropped because the queue was full are reported as one warning
/// at the end. `None` once `_log_stop` was called: the thread ends.
#[pyfunction]
pub fn _log_take(py: Python<'_>, timeout: f64) -> Option<Vec<(u32, String, String)>> {
    let wait = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
    let (events, dropped) = py.detach(|| {
        let s = shared();
        let mut q = lock(s);
        if q.events.is_empty() && q.dropped == 0 && !q.stopped {
            q = s
                .ready
                .wait_timeout(q, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if q.stopped {
            return None;
        }
        Some((
            std::mem::take(&mut q.events),
            std::mem::take(&mut q.dropped),
        ))
    })?;
    let mut out: Vec<(u32, String, String)> = events
        .into_iter()
        .map(|(l, t, m)| (py_level(l), t, m))
        .collect();
    if dropped > 0 {
        out.push((
            30,
            "mtipc::log".into(),
            format!("{dropped} events dropped: the log queue was full ({QUEUE_MAX})"),
        ));
    }
    Some(out)
}

/// Ends the delivery thread's wait (called at exit, before the interpreter
/// finalizes: no thread may then be inside `_log_take`). Events emitted
/// later are dropped.
#[pyfunction]
pub fn _log_stop() {
    mtipc::log::clear_logger();
    let s = shared();
    lock(s).stopped = true;
    s.ready.notify_all();
}

/// The `logging` level of a core level.
fn py_level(l: u8) -> u32 {
    match Level::from_u32(u32::from(l)) {
        Some(Level::Error) => 40,
        Some(Level::Warn) => 30,
        Some(Level::Info) => 20,
        Some(Level::Debug) => 10,
        _ => 5,
    }
}
