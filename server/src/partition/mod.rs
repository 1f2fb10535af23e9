//! # Partition: one partition replica's world
//!
//! Everything one replica of one partition owns and does, below the broker (which routes a
//! topic and partition to a [`PartitionReplica`]) and above replication (which drives the
//! partition's raft group and calls its state machine):
//!
//! - this module: [`PartitionReplica`], the handle the broker keeps per local partition, and
//!   [`group_id`], the one mapping from a topic's partition to its raft group.
//! - [`machine`]: [`PartitionMachine`], the partition's state machine: apply, produce
//!   admission (idempotence), leadership changes, retention from the topic's config.
//! - [`producers`]: the producer table (idempotence): the batches of each idempotent producer
//!   the partition holds, rebuilt from the log, so a retried batch is never stored twice.
//! - [`admission`]: the checks a produced batch passes before it is proposed.
//! - [`reads`]: where a read starts ([`StartFrom`]), fetch (long poll), read, and the
//!   timestamp lookups.
//! - [`error`]: [`PartitionError`], what admission and reads fail with.
//!
//! Words: a partition's *offset* is the logical number of a record; a *raft group* (its
//! [`RaftGroupId`]) is the partition's replication group, never a consumer group.

pub mod admission;
pub mod error;
pub mod machine;
pub mod producers;
pub mod reads;

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

pub use admission::{BATCH_BYTES_MAX, validate_producer_batch};
pub use error::PartitionError;
pub use machine::{PartitionMachine, RetentionSource};
pub use reads::{
    FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, Fetched, ListedOffsets, StartFrom,
};

use crate::replication::RaftGroupId;
use crate::storage::PartitionLog;

/// The raft group of a topic's partition: the topic's id in the high 32 bits, the partition in
/// the low ones. Topic ids are never reused, so a deleted topic's groups never come back.
pub const fn group_id(topic_id: u64, partition: u32) -> RaftGroupId {
    (topic_id << 32) | partition as u64
}

/// The topic id of a partition's raft group (the inverse of [`group_id`]).
pub const fn topic_id_of(group: RaftGroupId) -> u64 {
    group >> 32
}

/// A partition this node holds a replica of.
pub struct PartitionReplica {
    pub topic: String,
    pub partition: u32,
    pub group: RaftGroupId,
    pub log: Arc<RwLock<PartitionLog>>,
    /// The offset after the last committed entry: readers see offsets below it.
    pub high_watermark: watch::Receiver<u64>,
    pub leader: watch::Receiver<u64>,
    /// The raft term this node last knew of the partition's group (Kafka's leader epoch).
    pub term: Arc<std::sync::atomic::AtomicU64>,
    /// While this node leads it: the replicas that have everything committed.
    pub in_sync: watch::Receiver<Vec<u64>>,
    /// The topic's traffic counters (shared by its partitions on this node): produce and the
    /// reads count into them with atomic adds, no label lookup.
    pub traffic: crate::metrics::data::TopicTraffic,
}

impl PartitionReplica {
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log
            .read()
            .expect("log lock poisoned")
            .log_start_offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition's raft group and back: the topic id in the high half, the partition in the
    /// low half, never the controller's group 0.
    #[test]
    fn group_ids_round_trip() {
        for (topic_id, partition) in [(1, 0), (1, 7), (42, u32::MAX), (u32::MAX as u64, 3)] {
            let group = group_id(topic_id, partition);
            assert_ne!(group, crate::replication::CONTROLLER);
            assert_eq!(topic_id_of(group), topic_id);
            assert_eq!(group as u32, partition);
        }
        assert_eq!(group_id(1, 0), 1 << 32);
    }
}
