//! # Groups: consumer groups
//!
//! A consumer group is a set of members sharing a topic's partitions, plus the offsets the
//! group has committed (a "group" here is never a raft group: those are
//! [`replication::RaftGroupId`](crate::replication::RaftGroupId)s).
//!
//! - [`coordinator`]: the pure coordinator: membership (soft state), incremental assignment,
//!   expiry, with time passed in.
//! - [`members`]: the broker's membership requests (join, heartbeat, leave) and views of
//!   groups (list, describe with lag, delete).
//! - [`offsets`]: commit (checked against the partitions' high watermarks), fetch and reset of
//!   committed offsets. Committed offsets are replicated through the controller
//!   ([`broker::metadata`](crate::broker::metadata)).

pub mod coordinator;
pub mod members;
pub mod offsets;
