//! Process-local atomics: counters, flags and settings of one process that
//! are never placed in shared memory.
//!
//! These are never loom's: they stay std's atomics under `cfg(loom)` too,
//! and loom does not model them. That is right for state no other process
//! sees and no shared-memory protocol depends on (a log level, a search
//! hint, a stop flag, a test's counter); anything a protocol over shared
//! memory relies on uses the loom-switchable [`super::AtomicU32`] and
//! [`super::AtomicU64`] instead. They exist so that `clippy.toml` can
//! forbid std's atomics everywhere outside `crate::sync` and each use
//! still says which kind it is (`local::AtomicU32`).
//!
//! Each is `#[repr(transparent)]` over std's type with `#[inline]`
//! forwarding methods and a `const fn new` (usable in a `static`).

use super::Ordering;

/// Defines one process-local atomic integer newtype.
macro_rules! local_atomic {
    ($(#[$doc:meta])* $name:ident, $int:ty) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Default)]
        pub struct $name(std::sync::atomic::$name);

        impl $name {
            /// A new atomic holding `v`.
            #[inline]
            pub const fn new(v: $int) -> $name {
                $name(std::sync::atomic::$name::new(v))
            }

            /// Loads the value.
            #[inline]
            pub fn load(&self, order: Ordering) -> $int {
                self.0.load(order)
            }

            /// Stores `v`.
            #[inline]
            pub fn store(&self, v: $int, order: Ordering) {
                self.0.store(v, order)
            }

            /// Stores `v`, returning the previous value.
            #[inline]
            pub fn swap(&self, v: $int, order: Ordering) -> $int {
                self.0.swap(v, order)
            }

            /// Stores `new` if the value is `current`; returns the
            /// previous value, `Ok` if it was `current`.
            #[inline]
            pub fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange(current, new, success, failure)
            }

            /// Adds `v` (wrapping), returning the previous value.
            #[inline]
            pub fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_add(v, order)
            }

            /// Subtracts `v` (wrapping), returning the previous value.
            #[inline]
            pub fn fetch_sub(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_sub(v, order)
            }

            /// Maximum with `v`, returning the previous value.
            #[inline]
            pub fn fetch_max(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_max(v, order)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

local_atomic!(
    /// A process-local 8-bit atomic (never loom's).
    AtomicU8,
    u8
);
local_atomic!(
    /// A process-local 32-bit atomic (never loom's).
    AtomicU32,
    u32
);
local_atomic!(
    /// A process-local 64-bit atomic (never loom's).
    AtomicU64,
    u64
);
local_atomic!(
    /// A process-local pointer-sized atomic (never loom's).
    AtomicUsize,
    usize
);

/// A process-local atomic boolean (never loom's).
#[repr(transparent)]
#[derive(Default)]
pub struct AtomicBool(std::sync::atomic::AtomicBool);

impl AtomicBool {
    /// A new atomic holding `v`.
    #[inline]
    pub const fn new(v: bool) -> AtomicBool {
        AtomicBool(std::sync::atomic::AtomicBool::new(v))
    }

    /// Loads the value.
    #[inline]
    pub fn load(&self, order: Ordering) -> bool {
        self.0.load(order)
    }

    /// Stores `v`.
    #[inline]
    pub fn store(&self, v: bool, order: Ordering) {
        self.0.store(v, order)
    }

    /// Stores `v`, returning the previous value.
    #[inline]
    pub fn swap(&self, v: bool, order: Ordering) -> bool {
        self.0.swap(v, order)
    }
}

impl std::fmt::Debug for AtomicBool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}
