//! What the HA roles read from each other and from the files another role
//! wrote (`mtipc_cli::ha::roles::wire`): the lines between Server,
//! Spawner, Monitor and the node process, the Spawner's state file and the
//! status file a restarted Server takes up. Never panics; what is
//! accepted encodes and parses back to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mtipc_cli::ha::monitor::Seen;
use mtipc_cli::ha::roles::wire::{self, FromSpawner, NodeExit, SpawnerState, ToMonitor, ToNode, ToSpawner};
use mtipc_cli::ha::supervisor::Status;

fn round<T>(data: &[u8])
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + std::fmt::Debug,
{
    if let Ok(v) = wire::parse::<T>(data) {
        let line = wire::line(&v);
        let again = wire::parse::<T>(&line[..line.len() - 1]).expect("its own encoding parses");
        assert_eq!(format!("{v:?}"), format!("{again:?}"));
    }
}

fuzz_target!(|data: &[u8]| {
    round::<ToSpawner>(data);
    round::<FromSpawner>(data);
    round::<ToMonitor>(data);
    round::<Seen>(data);
    round::<ToNode>(data);
    round::<NodeExit>(data);
    round::<SpawnerState>(data);
    round::<Status>(data);
});
