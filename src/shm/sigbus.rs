//! A file that another process truncates under a live mapping makes the
//! next access past its new end raise `SIGBUS`, which kills the process.
//! mtipc's regions are files that every process of the domain's owner may
//! write, so one careless `truncate -s 0 notify.sem` (or a hostile one)
//! would kill mtipcd, the tenants, the workers and the readers at once.
//!
//! Instead, every mapping of a region is registered here ([`guard`]), and a
//! `SIGBUS` handler, installed once per process in front of the handler
//! that was there (as libwayland-server does for its clients' pools), looks
//! the faulting address up: inside a registered region, it maps anonymous
//! zero pages over the whole region (so the faulting access and every
//! later one complete, reading zeros) and marks the region broken; the
//! region's owner then reports `MT_ERR_CORRUPT` ([`Guard::check`]) for it
//! and nothing worse happens. Any other `SIGBUS` (not in an mtipc region)
//! goes to the previous handler, or, if there was none, kills the process
//! as it would have without mtipc.
//!
//! The handler only reads atomics and calls `mmap(2)`, both
//! async-signal-safe. Registration takes a free slot of a fixed table
//! ([`SLOTS`] regions per process: past that, a region is simply not
//! protected and a warning is logged once). An application that installs
//! its own `SIGBUS` handler later replaces this one: it then sees mtipc's
//! faults too.

use crate::error::{err, Result};
// Process-local (the table lives in this process, not in shared memory).
use crate::sync::local::AtomicU64;
use crate::sync::Ordering;
use std::sync::Once;

/// Regions a process can have registered at once.
pub const SLOTS: usize = 4096;

/// One registered mapping: its start address (0: free slot), length, and
/// whether a `SIGBUS` hit it.
struct Slot {
    start: AtomicU64,
    len: AtomicU64,
    broken: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicU64::new(0),
    len: AtomicU64::new(0),
    broken: AtomicU64::new(0),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

static INSTALL: Once = Once::new();
static FULL_WARNED: Once = Once::new();

/// The handler that was installed before ours (set once, before ours is
/// installed; the handler reads it with one atomic load).
static PREVIOUS: std::sync::OnceLock<libc::sigaction> = std::sync::OnceLock::new();

/// The registration of one mapping (see the module docs). Dropping it
/// forgets the mapping: drop it before the mapping is unmapped (declare
/// it before the map in the owning struct).
#[derive(Debug)]
pub struct Guard {
    slot: Option<usize>,
}

/// Registers the mapping at `ptr` of `len` bytes, installing the handler
/// on first use.
pub fn guard(ptr: *const u8, len: usize) -> Guard {
    INSTALL.call_once(install);
    if len == 0 {
        return Guard { slot: None };
    }
    let start = ptr as u64;
    for (i, s) in TABLE.iter().enumerate() {
        if s.start.load(Ordering::Relaxed) != 0 {
            continue;
        }
        // Claim the slot with its length first, then publish the start:
        // the handler reads the start, then the length.
        if s.len
            .compare_exchange(0, len as u64, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        s.broken.store(0, Ordering::Relaxed);
        s.start.store(start, Ordering::Release);
        return Guard { slot: Some(i) };
    }
    FULL_WARNED.call_once(|| {
        crate::log::warn!(
            "more than {SLOTS} mapped regions in this process: the ones past that are not \
             protected from SIGBUS (a file truncated under them kills the process)"
        )
    });
    Guard { slot: None }
}

impl Guard {
    /// Whether a `SIGBUS` hit the region (another process truncated its
    /// file): its contents now read as zeros and mean nothing.
    pub fn is_broken(&self) -> bool {
        self.slot
            .is_some_and(|i| TABLE[i].broken.load(Ordering::Acquire) != 0)
    }

    /// `Corrupt` naming `what` if the region is broken ([`Guard::is_broken`]).
    pub fn check(&self, what: &dyn std::fmt::Display) -> Result<()> {
        if self.is_broken() {
            return Err(err!(
                Corrupt,
                "{what}: the file was truncated under this process's mapping (SIGBUS caught); \
                 its contents are gone for this process: recreate it"
            ));
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let s = &TABLE[i];
            s.start.store(0, Ordering::Release);
            s.broken.store(0, Ordering::Relaxed);
            s.len.store(0, Ordering::Release);
        }
    }
}

fn install() {
    // SAFETY: sigaction with a zeroed struct (a valid value) to read the
    // current action, then with our handler, whose fields are set as
    // SA_SIGINFO requires; PREVIOUS is set before our handler can run.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
            return;
        }
        let _ = PREVIOUS.set(old);
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        libc::sigemptyset(&mut new.sa_mask);
        libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut());
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as u64;
    for s in TABLE.iter() {
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        let len = s.len.load(Ordering::Acquire);
        if addr - start >= len {
            continue;
        }
        // SAFETY: the range is a live mapping of ours (registered until
        // its Guard is dropped, before the unmap); MAP_FIXED replaces it
        // with private zero pages of the same size, so every access that
        // was valid stays valid. mmap is async-signal-safe.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            s.broken.store(1, Ordering::Release);
            return;
        }
        break;
    }
    // Not ours (or the remap failed): what would have happened without us.
    // SAFETY: PREVIOUS was set before this handler was installed; the
    // previous handler is called as the kernel would have called it (its
    // sa_sigaction is a function of the type its flags say).
    unsafe {
        match PREVIOUS.get() {
            Some(prev)
                if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN =>
            {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(prev.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
                    f(sig);
                }
            }
            _ => {
                // Default action: restore it; returning re-executes the
                // faulting access, which now kills the process with SIGBUS.
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}
