//! Not part of the API: what the fuzz targets, benches and tests of this
//! repository, its programs (`cli/`) and its Python binding take from
//! inside the crate. Nothing here is stable, and an application uses the
//! public modules only. `lib.rs` declares this module `#[doc(hidden)]`, so
//! `cargo doc` does not show it.
//!
//! The submodules mirror the crate's own paths (`mtipc::internals::X::Y`
//! is the crate's `X::Y`), and each re-export names who needs it.

/// Discovery and attach: the files, the round, the relay, the daemon.
pub mod attach {
    // mtipcd: the daemon it runs (its advertisement, waiter and relay).
    pub use crate::attach::daemon::Daemon;
    // A tenant's TLS key, for a channel without a round: tests/attach_channel,
    // benches/attach_latency.
    pub use crate::attach::channel::ServerKey;
    // The channel's PSK: its identity's parser (fuzz/psk_identity,
    // tests/parsers) and its derivation (tests/parsers).
    pub use crate::attach::channel::{
        derive_psk, parse_psk_identity, psk_identity, PSK_IDENTITY_LEN,
    };
    // The domain's attach files, each phase by hand: benches/attach_latency.
    pub use crate::attach::consts::{ATTACH_LOCK, HANDSHAKE_TIMEOUT, RELAY_SOCKET};

    /// The advertisement, response and synchronization files.
    pub mod files {
        // The parsers: fuzz/advert, fuzz/response, tests/parsers.
        pub use crate::attach::files::{Advert, Response, Role, DAEMON_ID};
        // The files' life cycle: tests/attach_files, benches/attach_latency.
        pub use crate::attach::files::{
            advert_dir, adverts_dir, list, now_ms, read_advert, read_response, remove_response,
            round_hint, write_response, AdvertCache, AdvertFiles, Listed, ProcId, ResponseScan,
            SyncFile, RELAY_SOCKET, STATE_BUSY, STATE_IDLE,
        };
    }

    /// mtipcd's relay.
    pub mod relay {
        // The hello line: fuzz/relay_hello, tests/parsers, tests/attach_relay.
        pub use crate::attach::relay::{hello_line, parse_hello, End, Hello, MAX_HELLO};
        // The relay itself and its clients: tests/attach_relay,
        // benches/attach_latency.
        pub use crate::attach::relay::{connect, Listener, Options, Pairing, Relay, RelayStats};
    }

    /// The round's synchronization.
    pub mod round {
        // A watched state word: tests/attach_files.
        pub use crate::attach::round::WATCHED;
        // Waiting for a state: benches/attach_latency.
        pub use crate::attach::round::wait_state;
    }
}

/// Sessions: the region layouts and their validation, the table files.
pub mod session {
    // The session table region's validation: fuzz/session_region,
    // tests/parsers.
    pub use crate::session::layout::validate_region;
    // Where the tables of a domain are: the `mtipc sessions` command.
    pub use crate::session::table::{table_path, validate_name, SESSIONS_DIR};

    /// The session table region's layout.
    pub mod layout {
        // fuzz/session_region, tests/parsers.
        pub use crate::session::layout::{validate_prefix, PREFIX};
    }

    /// The request area's layout.
    pub mod requests {
        // Its validation and state words: fuzz/request_region, tests/parsers.
        pub use crate::session::requests::{
            read_geometry, validate, Geometry, SlotWord, WorkerWord, MAGIC,
        };
    }
}

/// Shared closures.
pub mod closure {
    /// The closure file format.
    pub mod format {
        // The encoder and the validator: fuzz/closure, tests/closure.
        pub use crate::closure::format::{encode, file_header, validate, FILE_HEADER};
    }
}

/// Permits: the shared-memory arbiter's region.
pub mod permit {
    // The arbiter region's layout and validation: fuzz/arbiter_region,
    // tests/parsers.
    pub use crate::permit::local::{validate, MAGIC, REGION_SIZE};
    // The etcd backend's record parser: fuzz/etcd_record.
    #[cfg(feature = "etcd")]
    pub use crate::permit::etcd::fuzz_record as fuzz_etcd_record;
}

/// HA: the Monitor's side of the hooks and the protocol's messages.
pub mod ha {
    // The Monitor's socket: tests/ha_hooks, the HA Monitor (mtipc-ha).
    pub use crate::ha::endpoint::{ConnId, Endpoint, Event, HELLO_TIMEOUT};
    // The connection the Spawner makes for a child: mtipc-ha's Spawner,
    // tests/ha_hooks.
    pub use crate::ha::inherit::Preconnect;
    // A child started with a connection as its descriptor 3, as the
    // Spawner starts one: tests/ha_hooks (through tests/common).
    pub use crate::ha::inherit::give_as_fd3;
    // The messages: fuzz/ha_message, tests/parsers.
    pub use crate::ha::proto::{parse, Health, Message, MAX_MESSAGE};
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
    // The default domain (as mt_domain_open(NULL)): mtipc-ha run, for a
    // configuration without `domain`.
    pub use crate::domain::default_path;
}

/// Process identity.
pub mod sys {
    // A process's pid and start time: tests/attach_relay.
    pub use crate::sys::ProcId;
    // The host name a permit instance carries: tests/permit_etcd.
    pub use crate::sys::host_name;
    // Atomic, durable replace of a file, an owner-only directory and a
    // lock file with its note: the HA supervisor's status file, its
    // directories and its run.lock (cli/src/ha, mtipc-ha run).
    pub use crate::sys::fs::{make_dir, read_note, replace, LockFile};
    // A connected UNIX socket's peer (SO_PEERCRED): the HA supervisor's
    // control socket and `mtipc ha` (cli/src/ha/control.rs).
    pub use crate::sys::net::{peer_cred, PeerCred};
    // An epoll set: the HA Monitor's wake descriptor (cli/src/ha/roles/monitor.rs),
    // and the HA log thread's set of output pipes with its wake pipe
    // (cli/src/ha/spawn.rs).
    pub use crate::sys::net::{drain, pipe, poke, Epoll};
    // The effective uid: the same checks.
    pub use crate::sys::euid;
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
    // A flag between threads: the Python binding (a worker closed, a
    // request answered), tests/session_dispatch (a stop request).
    pub use crate::sync::Flag;
}

/// The C ABI, for what Rust code checks of it.
pub mod ffi {
    // The library's version string as C sees it: tests/header.
    pub use crate::ffi::mt_version;
}
