//! Shared closures (DESIGN.md section 2, docs/session.md "Shared closures"):
//! an immutable value published under a name, which other processes map
//! read-only with no copy.
//!
//! A value is bytes, or a tree of maps (string keys), lists, strings,
//! 64-bit integers and floats ([`Value`]), laid out with offsets, never
//! pointers (the file format: `src/closure/format/mod.rs`). Each published
//! version is its own file `<domain>/closures/<name>/v<N>`, written complete
//! (`sys::fs::publish_new`), read-only (0400) and never changed; the small
//! region `head` next to it holds the last version handed out and the
//! current one (`src/closure/head.rs`).
//!
//! - [`publish`] / [`publish_bytes`] claim a new version number, write its
//!   file, make it current, and remove superseded versions no reader holds.
//! - [`Closure::open`] maps the current version read-only, validates it in
//!   one pass, and holds `flock(LOCK_SH)` on its file while it is open;
//!   [`Closure::root`] gives zero-copy [`ValueRef`]s.
//! - A superseded version is removed by whoever first takes
//!   `flock(LOCK_EX | LOCK_NB)` on it: the next publisher, or the reader
//!   letting go of it last. A reader killed with `kill -9` loses its lock
//!   with its life, so the next publish or release collects the file.
//! - [`list`] reports the closures of a domain with their versions on disk
//!   and the readers of each (from `/proc/locks`), for `mtipc sessions`.

#[cfg(not(loom))]
pub(crate) mod format;
mod head;
#[cfg(not(loom))]
mod locks;
#[cfg(not(loom))]
mod store;

#[cfg(all(test, loom))]
mod loom_models;

#[cfg(not(loom))]
pub use format::{Kind, TreeBuilder, Value, ValueRef, MAX_CLOSURE_SIZE, MAX_DEPTH};
#[cfg(not(loom))]
pub use store::{
    collect_unused, list, publish, publish_bytes, validate_name, Closure, ClosureInfo, VersionInfo,
    MAX_NAME,
};
