//! # Groups: consumer groups
//!
//! A consumer group is a set of members sharing a topic's partitions, plus the offsets the
//! group has committed (a "group" here is never a raft group: those are
//! [`replication::GroupId`](crate::replication::GroupId)s).
//!
//! - [`coordinator`]: the pure coordinator: membership (soft state), incremental assignment,
//!   expiry, with time passed in.
//! - [`offsets`]: the broker's group requests: join, heartbeat, leave, commit (checked against
//!   the partitions' high watermarks), fetch and reset of committed offsets, list and describe
//!   with lag. Committed offsets are replicated through the controller
//!   ([`broker::metadata`](crate::broker::metadata)).

pub mod coordinator;
pub mod offsets;
