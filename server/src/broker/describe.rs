//! What this node knows of a topic's partitions, for the frontends' describe answers: the
//! replica set from the metadata, and from the local replica (when this node holds one) the
//! leader, the offsets and, while it leads, the replicas in sync.

use super::Broker;
use crate::controller::metadata::Topic;

/// One partition as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: u32,
    /// Where the metadata places the partition.
    pub replica_node_ids: Vec<u64>,
    /// 0 when no leader is known or this node holds no replica.
    pub leader_node_id: u64,
    /// The raft term this node last knew (Kafka's leader epoch); 0 when it holds no replica.
    pub leader_term: u64,
    /// 0 when this node holds no replica.
    pub log_start_offset: u64,
    /// 0 when this node holds no replica.
    pub high_watermark: u64,
    /// The replicas with everything committed, filled only while this node leads the
    /// partition (a single replica is always in sync with itself).
    pub in_sync_node_ids: Vec<u64>,
    /// Bytes of the local replica's log on disk; 0 when this node holds no replica.
    pub size_bytes: u64,
}

impl Broker {
    /// The partitions of `topic` as this node sees them, in partition order.
    pub fn partition_states(&self, topic: &Topic) -> Vec<PartitionState> {
        topic
            .replicas
            .iter()
            .enumerate()
            .map(|(partition, replicas)| {
                let partition = partition as u32;
                let mut state = PartitionState {
                    partition,
                    replica_node_ids: replicas.clone(),
                    ..PartitionState::default()
                };
                if let Ok(replica) = self.replica(&topic.name, partition) {
                    state.leader_node_id = *replica.leader.borrow();
                    state.leader_term = replica.term.load(std::sync::atomic::Ordering::Relaxed);
                    state.high_watermark = replica.high_watermark();
                    state.log_start_offset = replica.log_start_offset();
                    state.size_bytes = replica.log.read().expect("log lock").size_bytes();
                    if state.leader_node_id == self.node_id() {
                        state.in_sync_node_ids = if replicas.len() == 1 {
                            replicas.clone()
                        } else {
                            replica.in_sync.borrow().clone()
                        };
                    }
                }
                state
            })
            .collect()
    }
}
