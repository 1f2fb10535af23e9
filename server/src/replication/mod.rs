//! # Replication: every partition, and the controller, is a raft group
//!
//! - [`raft_storage`]: `raft::Storage` over a [`PartitionLog`](crate::storage::PartitionLog) plus
//!   the group's hard state file; the partition log is the raft log.
//! - [`machine`]: the interface to each group's [`StateMachine`]: admission ([`Admission`]),
//!   typed outcomes and refusals, erased inside the driver.
//! - [`handle`]: the async side, [`DriverHandle`], and group ids: groups added and removed,
//!   proposals answered with [`Committed`] or [`ProposeError`], peers' messages stepped.
//! - `group`: one group as the driver holds it: raft node, machine, proposals in flight.
//! - [`driver`]: the thread that owns and drives every local group: ticks, commands,
//!   admission of proposals, proposals matched to replies by id.
//! - `fsync`: the threads that fsync the logs of a round in parallel with the driver's own.
//! - `ready`: the Ready round with group-commit fsync; committed entries applied through the
//!   machines, invariants asserted.
//! - `membership`: voters moved toward the metadata's replicas; leadership hand-over.
//! - `quiescence`: idle groups stop ticking; leaders balanced toward preferred nodes.
//! - `lost_log`: the protocol patch for a node whose disk was wiped.
//! - [`catch_up`]: which local followers are behind their leader (for `/readyz`).
//! - [`validate`]: what a peer's raft message must satisfy before a group steps it.
//!
//! Imports point one way: `machine <- handle <- group <- {membership, quiescence, lost_log}
//! <- driver <- ready` (ready adds the Ready round to the driver), and `validate <- driver`, `fsync <- driver`,
//! `group <- catch_up <- {handle, driver}`.
//!
//! This layer knows nothing of gRPC, topics or producers: a group is an id, a log and a state
//! machine whose outcomes it carries typed.

pub mod catch_up;
pub mod driver;
mod fsync;
mod group;
pub mod handle;
mod lost_log;
pub mod machine;
mod membership;
mod quiescence;
pub mod raft_storage;
mod ready;
pub mod validate;

pub use handle::{
    CONTROLLER, Committed, ConfChangeOutcome, DriverHandle, GroupSpec, NoPeers, Outbox,
    ProposeError, Proposed, RaftGroupId,
};
pub use machine::{Admission, StateMachine};
