//! [`ControllerPort`]: what the consumer groups need of the node they run on, and nothing more.
//! The broker implements it; tests may implement it over a plain [`Metadata`].

use std::future::Future;
use std::sync::{Arc, RwLockReadGuard};

use super::GroupError;
use super::coordinator::CoordinatorError;
use crate::clock::SharedClock;
use crate::controller::metadata::{Command, Metadata, Topic};
use crate::partition::{PartitionError, PartitionReplica};

/// The node as the consumer groups see it: the controller's metadata and commands, the
/// partition replicas a commit is checked against, and the clock.
///
/// Errors are the node's own type ([`ControllerPort::Error`]); the groups' refusals convert
/// into it, so a request fails with the same error whether the groups or the node decided it.
pub trait ControllerPort: Send + Sync {
    /// What a request can fail with.
    type Error: From<GroupError>
        + From<CoordinatorError>
        + From<PartitionError>
        + std::fmt::Display
        + Send;

    /// This node's id.
    fn node_id(&self) -> u64;

    /// The controller's leader as this node knows it; 0 while none is known.
    fn controller_leader(&self) -> u64;

    /// The error for a request that only the controller's leader serves, which is `leader_id`
    /// (0: none known), naming where it is.
    fn not_controller_leader(&self, leader_id: u64) -> Self::Error;

    /// This node's copy of the metadata. A read lock: hold it briefly and never across an
    /// `.await`.
    fn read_metadata(&self) -> RwLockReadGuard<'_, Metadata>;

    /// A node's address, from the metadata or else the initial cluster; `None` when unknown.
    fn node_address(&self, node: u64) -> Option<String>;

    /// Proposes `command` to the controller and waits until it is applied on this node.
    ///
    /// # Errors
    /// The controller's refusal of the command, or why it could not be proposed.
    fn propose(&self, command: Command) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The topic `name`.
    ///
    /// # Errors
    /// An unknown topic.
    fn topic(&self, name: &str) -> Result<Topic, Self::Error>;

    /// Checks that `topic` exists and has `partition`.
    ///
    /// # Errors
    /// An unknown topic or partition.
    fn check_partition(&self, topic: &str, partition: u32) -> Result<(), Self::Error>;

    /// The local replica of a partition.
    ///
    /// # Errors
    /// An unknown partition, or one this node does not hold open (naming who holds it).
    fn replica(&self, topic: &str, partition: u32) -> Result<Arc<PartitionReplica>, Self::Error>;

    /// The local replica of a partition, if this node has it open.
    fn local_replica(&self, topic: &str, partition: u32) -> Option<Arc<PartitionReplica>>;

    /// The time of day, for commit stamps, lag and retention of abandoned groups.
    fn clock(&self) -> &SharedClock;
}
