//! Who leads each partition, cluster-wide, for Metadata: Kafka clients send produce and fetch
//! straight to a partition's leader, whichever node they asked.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::broker::Broker;

/// One partition's leadership as last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLeader {
    /// 0: no leader known.
    pub leader: u64,
    /// The leader's raft term (Kafka's leader epoch).
    pub term: u64,
    /// The replicas with everything committed (reported by the leader).
    pub in_sync: Vec<u64>,
}

/// Partition leaders by topic and partition.
pub type Leaders = BTreeMap<(String, u32), PartitionLeader>;

/// The leaders this node knows of: its own replicas' view.
pub fn local(broker: &Broker) -> Arc<Leaders> {
    let metadata = broker.metadata();
    let mut leaders = Leaders::new();
    for topic in metadata.topics.values() {
        for state in broker.partition_states(topic) {
            if state.leader_node_id == 0 {
                continue;
            }
            leaders.insert(
                (topic.name.clone(), state.partition),
                PartitionLeader {
                    leader: state.leader_node_id,
                    term: 0,
                    in_sync: state.in_sync_node_ids,
                },
            );
        }
    }
    Arc::new(leaders)
}
