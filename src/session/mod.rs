//! Sessions (DESIGN.md section 2, patent US 9,923,975); the design as
//! built: `docs/session.md`.
//!
//! The API: [`Table`], the session table as a file of the domain, and
//! [`Sessions`], a table plus its request area, with [`Worker`],
//! [`Request`] and [`Ticket`].
//!
//! Inside (not API; the fuzz targets and tests reach the layouts through
//! the hidden `mtipc::internals::session`):
//!
//! - process records and kernel-lock liveness come from `crate::shm::records`,
//!   shared by the session table and the request area;
//! - `entry`: the table's entries and every operation on them (lock with
//!   dead-holder takeover, sequence-locked reads), model-checked under loom;
//! - `layout`: the table region's byte layout and its validation;
//! - `table`: the table over its file;
//! - `requests`: the request/response area's byte layout and validation;
//! - `dispatch`: every change of a request slot or worker record
//!   (submit, take, respond, failover), model-checked under loom;
//! - `sessions` and `worker`: [`Sessions`], [`Worker`] and their handles.

mod dispatch;
mod entry;
#[cfg(not(loom))]
pub(crate) mod layout;
pub(crate) mod requests;
#[cfg(not(loom))]
mod sessions;
#[cfg(not(loom))]
pub(crate) mod table;
#[cfg(not(loom))]
mod worker;

#[cfg(all(test, loom))]
mod loom_models;
#[cfg(all(test, loom))]
mod loom_models_dispatch;

#[cfg(not(loom))]
pub use crate::shm::records::Membership;
pub use crate::shm::records::{Holder, Liveness, RecordInfo, DEFAULT_RECORDS};
pub use entry::{
    EntryGuard, Session, SessionId, WorkerRef, MAX_CAPACITY, MAX_TENANT, MAX_USER_DATA,
};
#[cfg(not(loom))]
pub use layout::Geometry;
#[cfg(not(loom))]
pub use requests::Geometry as RequestGeometry;
#[cfg(not(loom))]
pub use sessions::{
    requests_path, DispatchSnapshot, GroupSnapshot, Response, Sessions, SessionsConfig, SlotCounts,
    Ticket, WorkerSnapshot,
};
#[cfg(not(loom))]
pub use table::{Table, LOCK_TIMEOUT};
#[cfg(not(loom))]
pub use worker::{Request, Worker, PEER_CHECK};
