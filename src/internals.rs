//! Not part of the API: the internals that the fuzz targets, benches, tests
//! and the programs of this repository reach into. Nothing here is stable;
//! an application uses the crate's public modules only. (`#[doc(hidden)]`
//! in `lib.rs`, so `cargo doc` does not show it.)
//!
//! The submodules mirror the crate's own paths: `mtipc::internals::X::Y`
//! is `crate::X::Y`. Each re-export says who needs it.

/// Discovery and attach: the files, the round, the relay, the daemon.
pub mod attach {
    // mtipcd: the daemon it runs (advertisement, waiter, relay).
    pub use crate::attach::Daemon;
    // The attach files and their parsers: fuzz/advert, fuzz/response,
    // tests/attach_files, tests/parsers, benches/attach_latency.
    pub use crate::attach::files;
    // mtipcd's relay and its hello line: fuzz/relay_hello,
    // tests/attach_relay, tests/parsers, benches/attach_latency (phases).
    pub use crate::attach::relay;
    // The round's state words: tests/attach_files (WATCHED),
    // benches/attach_latency (phases).
    pub use crate::attach::round;
    // A tenant's TLS key, for a channel without a round:
    // tests/attach_channel, benches/attach_latency.
    pub use crate::attach::channel::ServerKey;
    // The domain's attach files, each phase by hand: benches/attach_latency
    // (phases).
    pub use crate::attach::{ATTACH_LOCK, HANDSHAKE_TIMEOUT, RELAY_SOCKET};
}

/// Sessions: the region layouts and their validation, the table files.
pub mod session {
    // The request area's layout and validation: fuzz/request_region,
    // tests/parsers.
    pub use crate::session::requests;
    // The session table region's validation: fuzz/session_region,
    // tests/parsers.
    pub use crate::session::layout::{self, validate_region};
    // Where the tables of a domain are: the `mtipc sessions` command.
    pub use crate::session::table::{table_path, validate_name, SESSIONS_DIR};
}

/// Shared closures: the file format.
pub mod closure {
    // The closure file's encoder and validator: fuzz/closure, tests/closure.
    pub use crate::closure::format;
}

/// The region header of every shared-memory file.
pub mod shm {
    // fuzz/region_header, tests/parsers, cli/tests/multiprocess (the
    // semaphore's futex word after the header).
    pub use crate::shm::{validate, RegionHeader, HEADER_SIZE};
}

/// The domain's `layout` file.
pub mod domain {
    // The layout file's text and parser: fuzz/domain_layout, tests/parsers,
    // cli/tests/multiprocess.
    pub use crate::domain::{layout_text, parse_layout};
    // This process's effective uid: tests/attach_files.
    pub use crate::sys::euid;
}

/// Process identity.
pub mod sys {
    // A process's pid and start time: tests/attach_relay.
    pub use crate::sys::ProcId;
}

/// The loom shim's atomics and futex (`clippy.toml` forbids std's atomics
/// outside `src/sync`, in this workspace's other crates too).
pub mod sync {
    // Shared words in a mapping of their own: benches (wake_latency,
    // closure_read, session_rtt, attach_latency), cli/tests/multiprocess.
    pub use crate::sync::{AtomicU32, AtomicU64, Futex, Ordering};
    // Process-local atomics: tests/attach_relay, benches/session_table,
    // cli/tests/attach_withdraw.
    pub use crate::sync::local;
    // A stop flag between threads: the Python binding (a worker's and a
    // request's state), tests/session_dispatch.
    pub use crate::sync::Flag;
}

/// The C ABI, for what Rust code checks of it.
pub mod ffi {
    // The library's version string as C sees it: tests/header.
    pub use crate::ffi::mt_version;
}
