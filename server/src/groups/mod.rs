//! # Groups: consumer groups
//!
//! A consumer group is a set of members sharing a topic's partitions, plus the offsets the
//! group has committed (a "group" here is never a raft group: those are
//! [`replication::RaftGroupId`](crate::replication::RaftGroupId)s).
//!
//! [`Groups`] is the component the broker owns: the coordinator's soft state. Its requests are
//! served by [`GroupRequests`], which reaches the rest of the node only through a
//! [`ControllerPort`] (the metadata, controller commands, partition replicas, the clock): this
//! module sits below the broker and knows nothing of it.
//!
//! - [`coordinator`]: the pure coordinator: membership (soft state), incremental assignment,
//!   expiry, with time passed in.
//! - [`port`]: [`ControllerPort`], what the groups need of the node.
//! - [`members`]: membership requests (join, heartbeat, leave), views of groups (list, describe
//!   with lag, delete) and the expiry loop.
//! - [`offsets`]: commit (checked against the partitions' high watermarks), fetch and reset of
//!   committed offsets. Committed offsets are replicated through the controller
//!   ([`controller::metadata`](crate::controller::metadata)).
//! - [`error`]: [`GroupError`], the refusals the groups decide themselves.
//! - [`classic`]: Kafka's classic rebalance protocol (join, sync, heartbeat, leave), pure, with
//!   time passed in; [`classic_requests`] serves it (waits with deadlines, commits checked
//!   against its generations). A Kafka group and a Strata group of one name share committed
//!   offsets; while one kind has members, the other kind's joins are refused.

pub mod classic;
pub mod classic_requests;
pub mod classic_types;
pub mod coordinator;
pub mod error;
pub mod members;
pub mod offsets;
pub mod port;

use std::sync::Mutex;

pub use error::GroupError;
pub use port::ControllerPort;

use coordinator::Coordinator;

/// Consumer groups on this node: the coordinator's membership state, meaningful while this node
/// leads the controller (it is cleared when it stops leading; committed offsets live in the
/// controller's metadata, not here).
#[derive(Debug, Default)]
pub struct Groups {
    coordinator: Mutex<Coordinator>,
    /// Kafka clients' groups. Lock order: `coordinator` before `classic` (a join of either
    /// kind holds both to check the other kind has no members).
    classic: Mutex<classic::Classic>,
}

impl Groups {
    /// The groups' requests, served with what `port` gives them.
    pub fn serve<'a, P: ControllerPort>(&'a self, port: &'a P) -> GroupRequests<'a, P> {
        GroupRequests { groups: self, port }
    }

    fn coordinator(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.coordinator.lock().expect("coordinator lock poisoned")
    }

    // std Mutex: never held across .await.
    fn classic(&self) -> std::sync::MutexGuard<'_, classic::Classic> {
        self.classic.lock().expect("classic groups lock poisoned")
    }
}

/// The consumer groups' requests (see [`members`] and [`offsets`]): [`Groups`]' state and the
/// node's [`ControllerPort`], borrowed for one request.
pub struct GroupRequests<'a, P: ControllerPort> {
    groups: &'a Groups,
    port: &'a P,
}

/// Checks a group id, as every group request does first.
fn validate_group_id(group: &str) -> Result<(), GroupError> {
    crate::controller::metadata::validate_group_id(group).map_err(GroupError::InvalidGroupId)
}

#[cfg(test)]
mod port_tests;
