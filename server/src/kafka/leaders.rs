//! Who leads each partition, cluster-wide, for Metadata: Kafka clients send produce and fetch
//! straight to a partition's leader, whichever node they asked, and a node knows leaders only
//! of the partitions it holds. So the view is gathered: this node's replicas, and every other
//! live node's answer to `ClusterInfo` (asked concurrently, each bounded by a timeout; a node
//! that does not answer is left out). Of several reports on a partition the one with the
//! highest raft term wins, and at equal terms the leader's own (it alone knows the in-sync
//! replicas). The view is kept for [`FRESH_FOR`] and gathered by one request at a time, so a
//! burst of Metadata requests costs one round of questions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::broker::Broker;
use crate::broker::describe::PartitionState;
use crate::security::tls::Tls;
use crate::service::Liveness;

/// How long a gathered view answers Metadata. Short: a client that met NOT_LEADER asks
/// Metadata again and must soon see the new leader.
pub const FRESH_FOR: Duration = Duration::from_millis(500);

/// One partition's leadership as last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLeader {
    /// 0: no leader known.
    pub leader: u64,
    /// The raft term of the report (Kafka's leader epoch).
    pub term: u64,
    /// The replicas with everything committed, when the report came from the leader.
    pub in_sync: Vec<u64>,
    /// Whether the report came from the leader itself.
    by_leader: bool,
}

/// Partition leaders by topic and partition.
pub type Leaders = BTreeMap<(String, u32), PartitionLeader>;

/// The cluster-wide view and how to refresh it.
pub struct LeaderView {
    tls: Option<Arc<Tls>>,
    alive: Liveness,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Leaders>)>>,
}

impl LeaderView {
    /// A view that asks other nodes over `tls` (node-to-node TLS, when on) and skips the nodes
    /// `alive` says are down.
    pub fn new(tls: Option<Arc<Tls>>, alive: Liveness) -> Self {
        Self {
            tls,
            alive,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether node `node` is heard from (this node always is).
    pub fn alive(&self, broker: &Broker, node: u64) -> bool {
        node == broker.node_id() || (self.alive)(node)
    }

    /// The leaders, gathered at most [`FRESH_FOR`] ago.
    pub async fn get(&self, broker: &Broker) -> Arc<Leaders> {
        let mut cached = self.cached.lock().await;
        if let Some((at, leaders)) = cached.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return leaders.clone();
        }
        let leaders = Arc::new(self.gather(broker).await);
        *cached = Some((Instant::now(), leaders.clone()));
        leaders
    }

    async fn gather(&self, broker: &Broker) -> Leaders {
        let metadata = broker.metadata();
        let mut leaders = Leaders::new();
        for topic in metadata.topics.values() {
            for state in broker.partition_states(topic) {
                learn(&mut leaders, broker.node_id(), &topic.name, &state);
            }
        }
        let asked = metadata
            .nodes
            .values()
            .filter(|node| node.id != broker.node_id() && (self.alive)(node.id))
            .map(|node| {
                let tls = self.tls.clone();
                let (id, address) = (node.id, node.address.clone());
                async move {
                    (
                        id,
                        crate::service::partition_states_at(tls, id, address).await,
                    )
                }
            });
        for (node, answer) in join_all(asked).await {
            match answer {
                Ok(states) => {
                    for (topic, state) in &states {
                        learn(&mut leaders, node, topic, state);
                    }
                }
                Err(error) => {
                    tracing::debug!(node, %error, "asking a node about its replicas failed");
                }
            }
        }
        leaders
    }
}

/// Merges what `reporter` says of one partition into `leaders` (see the module doc).
fn learn(leaders: &mut Leaders, reporter: u64, topic: &str, state: &PartitionState) {
    if state.leader_term == 0 && state.leader_node_id == 0 {
        // The reporter holds no replica: it knows nothing.
        return;
    }
    let report = PartitionLeader {
        leader: state.leader_node_id,
        term: state.leader_term,
        by_leader: state.leader_node_id == reporter && reporter != 0,
        in_sync: state.in_sync_node_ids.clone(),
    };
    let key = (topic.to_string(), state.partition);
    let newer = leaders
        .get(&key)
        .is_none_or(|known| (report.term, report.by_leader) > (known.term, known.by_leader));
    if newer {
        leaders.insert(key, report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: u64, term: u64, in_sync: &[u64]) -> PartitionState {
        PartitionState {
            partition: 0,
            leader_node_id: leader,
            leader_term: term,
            in_sync_node_ids: in_sync.to_vec(),
            ..PartitionState::default()
        }
    }

    #[test]
    fn the_highest_term_wins_and_the_leaders_own_report_at_equal_terms() {
        let mut leaders = Leaders::new();
        // A follower still names the old leader; the new leader reports a higher term.
        learn(&mut leaders, 2, "t", &state(1, 4, &[]));
        learn(&mut leaders, 3, "t", &state(3, 5, &[3, 2]));
        learn(&mut leaders, 1, "t", &state(1, 4, &[1, 2, 3]));
        let known = &leaders[&("t".to_string(), 0)];
        assert_eq!(
            (known.leader, known.term, known.in_sync.clone()),
            (3, 5, vec![3, 2])
        );

        // At equal terms the leader's report (with its in-sync replicas) wins, in any order.
        let mut leaders = Leaders::new();
        learn(&mut leaders, 1, "t", &state(1, 7, &[1, 2]));
        learn(&mut leaders, 2, "t", &state(1, 7, &[]));
        assert_eq!(leaders[&("t".to_string(), 0)].in_sync, vec![1, 2]);

        // A node without a replica says nothing; an election in progress (no leader, a
        // higher term) makes the leader unknown.
        learn(&mut leaders, 3, "t", &state(0, 0, &[]));
        assert_eq!(leaders[&("t".to_string(), 0)].leader, 1);
        learn(&mut leaders, 2, "t", &state(0, 8, &[]));
        assert_eq!(leaders[&("t".to_string(), 0)].leader, 0);
    }
}
