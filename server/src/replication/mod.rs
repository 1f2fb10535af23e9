//! # Replication: every partition, and the controller, is a raft group
//!
//! - [`raft_storage`]: `raft::Storage` over a [`PartitionLog`](crate::storage::PartitionLog) plus
//!   the group's hard state file; the partition log is the raft log.
//! - [`driver`]: the thread that owns and drives every local group: ticks, proposals matched to
//!   replies by id, the Ready loop with group-commit fsync, committed entries applied through
//!   each group's [`StateMachine`](driver::StateMachine).
//! - [`validate`]: what a peer's raft message must satisfy before a group steps it.
//!
//! This layer knows nothing of gRPC or topics: a group is an id, a log and a state machine.

pub mod driver;
pub mod raft_storage;
#[cfg(test)]
mod simulation;
pub mod validate;

pub use driver::{
    Committed, DriverHandle, GroupId, GroupSpec, NoPeers, Outbox, ProposeError, StateMachine,
};
