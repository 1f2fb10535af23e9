//! What a broker request can fail with. Each variant maps to one stable protocol error code in
//! the service layer; messages say what was wrong and what is valid.

use crate::groups::GroupError;
use crate::groups::coordinator::CoordinatorError;
use crate::partition::{BATCH_BYTES_MAX, PartitionError};
use crate::resources::ResourceError;
use crate::storage;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}: valid partitions are 0 to {}", partitions - 1)]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(
        "offset {requested} is out of range: valid offsets are {log_start} to {high_watermark} \
         ({high_watermark} is the next offset to be written)"
    )]
    OffsetOutOfRange {
        requested: u64,
        log_start: u64,
        high_watermark: u64,
    },
    #[error("batch of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("corrupt or malformed batch: {0}")]
    CorruptBatch(String),
    #[error("this node does not lead the partition; the leader is node {leader_id}{}", address.as_ref().map(|a| format!(" at {a}")).unwrap_or_default())]
    NotLeader {
        leader_id: u64,
        address: Option<String>,
    },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("unknown member: {0}")]
    UnknownMember(String),
    #[error("stale member epoch: {0}")]
    StaleMemberEpoch(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("group {0:?} still has members: it can be deleted once they have left")]
    GroupNotEmpty(String),
    #[error("invalid group id: {0}")]
    InvalidGroupId(String),
    #[error("group full: {0}")]
    GroupFull(String),
    #[error(
        "out of order sequence from producer {producer_id}: expected {expected}, got {got} \
         (a batch in between was not stored; start a new producer epoch)"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    #[error("unknown producer id {0}: ask InitProducerId for one")]
    UnknownProducerId(i64),
    /// A request only the controller's leader serves (admin changes, consumer groups) reached
    /// another node. Maps to NOT_LEADER with the controller leader's id and address.
    #[error(
        "this node does not lead the cluster's controller (which serves admin changes and \
         consumer groups); the controller's leader is node {leader_id}{}: send the request there",
        address.as_ref().map(|a| format!(" at {a}")).unwrap_or_default()
    )]
    NotControllerLeader {
        leader_id: u64,
        address: Option<String>,
    },
    /// A produce request larger than the service decodes (checked by the gRPC layer before the
    /// batch is looked at). Maps to RECORD_TOO_LARGE.
    #[error(
        "produce request of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes \
         (one batch of at most {batch_limit_bytes} bytes plus the request's framing)"
    )]
    RequestTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
        batch_limit_bytes: usize,
    },
    /// Out of disk space (down to the reserve) or file descriptors; the message names the
    /// numbers. Retriable once the resource is freed.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// No credentials the node accepts; the message says what is required.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The principal lacks the ACL for the operation on the resource.
    #[error(
        "{principal} is not allowed to {operation} {resource}: an ACL must allow it (see \
         `strata acl create`)"
    )]
    AuthorizationFailed {
        principal: String,
        operation: String,
        /// `topic "orders"`, `group "g"` or `the cluster`.
        resource: String,
    },
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
}

impl BrokerError {
    pub fn storage(error: storage::Error) -> Self {
        match error {
            storage::Error::OffsetOutOfRange {
                requested,
                log_start,
                next_offset,
            } => Self::OffsetOutOfRange {
                requested,
                log_start,
                high_watermark: next_offset,
            },
            storage::Error::BatchTooLarge {
                size_bytes,
                limit_bytes,
            } => Self::RecordTooLarge {
                size_bytes,
                limit_bytes,
            },
            storage::Error::InvalidBatch(error) => Self::CorruptBatch(error.to_string()),
            other => Self::Storage(other.to_string()),
        }
    }
}

impl From<PartitionError> for BrokerError {
    fn from(error: PartitionError) -> Self {
        match error {
            PartitionError::Storage(error) => Self::storage(error),
            PartitionError::Batch(error) => Self::CorruptBatch(error.to_string()),
            PartitionError::TooLarge { size_bytes } => Self::RecordTooLarge {
                size_bytes,
                limit_bytes: BATCH_BYTES_MAX,
            },
            PartitionError::InvalidArgument(reason) => Self::InvalidArgument(reason),
            PartitionError::ShuttingDown => Self::ShuttingDown,
        }
    }
}

impl From<ResourceError> for BrokerError {
    fn from(error: ResourceError) -> Self {
        Self::ResourceExhausted(error.to_string())
    }
}

impl From<CoordinatorError> for BrokerError {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::InvalidArgument(reason) => Self::InvalidArgument(reason),
            CoordinatorError::UnknownTopic(topic) => Self::UnknownTopic(topic),
            CoordinatorError::UnknownMember(reason) => Self::UnknownMember(reason),
            CoordinatorError::StaleMemberEpoch(reason) => Self::StaleMemberEpoch(reason),
            CoordinatorError::GroupFull(reason) => Self::GroupFull(reason),
        }
    }
}

impl From<GroupError> for BrokerError {
    fn from(error: GroupError) -> Self {
        match error {
            GroupError::InvalidGroupId(reason) => Self::InvalidGroupId(reason),
            GroupError::InvalidArgument(reason) => Self::InvalidArgument(reason),
            GroupError::UnknownGroup(group) => Self::UnknownGroup(group),
            GroupError::GroupNotEmpty(group) => Self::GroupNotEmpty(group),
            GroupError::OffsetOutOfRange {
                requested,
                log_start,
                high_watermark,
            } => Self::OffsetOutOfRange {
                requested,
                log_start,
                high_watermark,
            },
            GroupError::Unavailable(reason) => Self::Unavailable(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal the groups decide reaches the client as the broker error of the same name
    /// with the same values (so the same code and message as before the groups moved below
    /// the broker).
    #[test]
    fn group_refusals_keep_their_variant_and_message() {
        let refusals = [
            GroupError::InvalidGroupId("bad".to_string()),
            GroupError::InvalidArgument("too many".to_string()),
            GroupError::UnknownGroup("g".to_string()),
            GroupError::GroupNotEmpty("g".to_string()),
            GroupError::OffsetOutOfRange {
                requested: 9,
                log_start: 2,
                high_watermark: 4,
            },
            GroupError::Unavailable("retry".to_string()),
        ];
        for refusal in refusals {
            let error = BrokerError::from(refusal.clone());
            let same_variant = match (&refusal, &error) {
                (GroupError::InvalidGroupId(a), BrokerError::InvalidGroupId(b))
                | (GroupError::InvalidArgument(a), BrokerError::InvalidArgument(b))
                | (GroupError::UnknownGroup(a), BrokerError::UnknownGroup(b))
                | (GroupError::GroupNotEmpty(a), BrokerError::GroupNotEmpty(b))
                | (GroupError::Unavailable(a), BrokerError::Unavailable(b)) => a == b,
                (
                    GroupError::OffsetOutOfRange { .. },
                    BrokerError::OffsetOutOfRange {
                        requested: 9,
                        log_start: 2,
                        high_watermark: 4,
                    },
                ) => true,
                _ => false,
            };
            assert!(same_variant, "{refusal:?} became {error:?}");
        }
    }
}
