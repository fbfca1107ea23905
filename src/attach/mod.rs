//! Discovery and secure attach (DESIGN.md section 1, patent US 10,528,526).
//! The protocol as built, with every file format: `docs/attach.md`.
//!
//! - [`files`]: tenant ids, the advertisement, response and synchronization
//!   files, process identity (pid + start time);
//! - [`channel`]: the TLS 1.3 message channel inside the relayed stream;
//! - [`relay`]: mtipcd's relay, which pairs the two ends of a round;
//! - [`round`]: the round's synchronization (semaphore, state words,
//!   synchronization locks), model-checked under loom.

#[cfg(not(loom))]
pub mod channel;
#[cfg(not(loom))]
pub mod files;
#[cfg(not(loom))]
pub mod relay;
pub mod round;

#[cfg(all(test, loom))]
mod loom_models;
