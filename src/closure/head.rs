//! The two counters of a closure's `head` region, shared by every process
//! that publishes or opens the closure: the last version handed out and the
//! current version. Plain atomics of [`crate::sync`], so that the loom
//! models check this very code.
//!
//! - A publisher *claims* a version with one `fetch_add` on `next`: two
//!   publishers never get the same number, whatever they race with, and a
//!   publisher that dies after claiming only leaves a gap.
//! - Once the version's file is complete and linked, the publisher
//!   *advances* `current` to it unless a larger version is current already
//!   (a compare-and-swap loop that only ever raises it): `current` never goes
//!   back, and it always names a version whose file was complete when it
//!   was set.

use crate::error::{err, Result};
use crate::sync::{AtomicU64, Ordering};

/// Versions past this are refused (the counter would be near wrapping:
/// only a corrupt head gets there).
pub const MAX_VERSION: u64 = 1 << 62;

/// The counters at offset 64 of the `head` region.
#[repr(C)]
#[derive(Debug)]
pub struct HeadCore {
    next: AtomicU64,
    current: AtomicU64,
}

impl HeadCore {
    /// Fresh counters (no version handed out).
    pub fn new() -> HeadCore {
        HeadCore {
            next: AtomicU64::new(0),
            current: AtomicU64::new(0),
        }
    }

    /// Hands out a version number no other call ever gets (1, 2, ...).
    pub fn claim(&self) -> Result<u64> {
        let v = self.next.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        if v == 0 || v > MAX_VERSION {
            return Err(err!(
                Corrupt,
                "closure head: version counter at {v}, past the limit {MAX_VERSION}"
            ));
        }
        Ok(v)
    }

    /// Makes `v` current unless a larger version already is.
    pub fn advance(&self, v: u64) {
        let mut cur = self.current.load(Ordering::Acquire);
        while cur < v {
            match self
                .current
                .compare_exchange(cur, v, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The current version (0: none published yet).
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// The last version handed out.
    #[cfg(loom)]
    pub fn last_claimed(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }
}

impl Default for HeadCore {
    fn default() -> HeadCore {
        HeadCore::new()
    }
}
