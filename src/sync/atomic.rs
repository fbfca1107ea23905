//! The atomics of shared-memory logic, as newtypes (tokio's `loom/` shim is
//! the model).
//!
//! Outside loom each type is `#[repr(transparent)]` over std's atomic of the
//! same width, so it has the layout of the integer and can be placed in a
//! mapping shared with other processes; every method is `#[inline]` and
//! forwards to std's, so the code is the same as with std's type. Under
//! `cfg(loom)` the same types wrap loom's atomics, which record every
//! access for the model checker (their `new` is then not `const`: loom has
//! no `const fn` constructors).
//!
//! Being newtypes, they are not std's types, which is what lets
//! `clippy.toml` forbid std's atomics everywhere outside this module.

use super::Ordering;

/// Defines one loom-switchable atomic integer newtype.
macro_rules! shared_atomic {
    ($(#[$doc:meta])* $name:ident, $int:ty) => {
        $(#[$doc])*
        #[cfg_attr(not(loom), repr(transparent))]
        #[derive(Default)]
        pub struct $name(
            #[cfg(not(loom))] std::sync::atomic::$name,
            #[cfg(loom)] loom::sync::atomic::$name,
        );

        // Same size and alignment as the integer (and std's atomic): the
        // records of the mapped regions rely on it.
        #[cfg(not(loom))]
        const _: () = {
            assert!(std::mem::size_of::<$name>() == std::mem::size_of::<$int>());
            assert!(std::mem::align_of::<$name>() == std::mem::size_of::<$int>());
            assert!(
                std::mem::size_of::<$name>()
                    == std::mem::size_of::<std::sync::atomic::$name>()
            );
            assert!(
                std::mem::align_of::<$name>()
                    == std::mem::align_of::<std::sync::atomic::$name>()
            );
        };

        impl $name {
            /// A new atomic holding `v`.
            #[cfg(not(loom))]
            #[inline]
            pub const fn new(v: $int) -> $name {
                $name(std::sync::atomic::$name::new(v))
            }

            /// A new atomic holding `v` (loom: not `const`).
            #[cfg(loom)]
            #[cfg_attr(loom, track_caller)]
            pub fn new(v: $int) -> $name {
                $name(loom::sync::atomic::$name::new(v))
            }

            /// std's atomic inside, for system calls that take it (the
            /// futex). Not under loom, which has no such thing.
            #[cfg(not(loom))]
            #[inline]
            #[allow(dead_code)] // AtomicU64 has no futex
            pub(crate) fn as_std(&self) -> &std::sync::atomic::$name {
                &self.0
            }

            /// Loads the value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn load(&self, order: Ordering) -> $int {
                self.0.load(order)
            }

            /// Stores `v`.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn store(&self, v: $int, order: Ordering) {
                self.0.store(v, order)
            }

            /// Stores `v`, returning the previous value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn swap(&self, v: $int, order: Ordering) -> $int {
                self.0.swap(v, order)
            }

            /// Stores `new` if the value is `current`; returns the
            /// previous value, `Ok` if it was `current`.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange(current, new, success, failure)
            }

            /// As [`compare_exchange`](Self::compare_exchange), but may
            /// fail spuriously (for loops).
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn compare_exchange_weak(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange_weak(current, new, success, failure)
            }

            /// Adds `v` (wrapping), returning the previous value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_add(v, order)
            }

            /// Subtracts `v` (wrapping), returning the previous value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn fetch_sub(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_sub(v, order)
            }

            /// Bitwise or with `v`, returning the previous value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn fetch_or(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_or(v, order)
            }

            /// Bitwise and with `v`, returning the previous value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn fetch_and(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_and(v, order)
            }

            /// Maximum with `v`, returning the previous value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn fetch_max(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_max(v, order)
            }

            /// Minimum with `v`, returning the previous value.
            #[inline]
            #[cfg_attr(loom, track_caller)]
            pub fn fetch_min(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_min(v, order)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

shared_atomic!(
    /// A 32-bit atomic of shared-memory logic (loom's under `cfg(loom)`).
    AtomicU32,
    u32
);
shared_atomic!(
    /// A 64-bit atomic of shared-memory logic (loom's under `cfg(loom)`).
    AtomicU64,
    u64
);
