//! The cluster's view of every partition, whichever node is asked: who leads it (at which raft
//! term), which replicas are in sync, and its offsets. A node knows these only of the
//! partitions it holds, so the view is gathered: this node's replicas, and every other node's
//! own view (its `ClusterInfo` asked with [`LOCAL_VIEW_METADATA_KEY`], concurrently, each
//! bounded by a timeout of a second). A node that does not answer is left out and named in
//! [`Gathered::unanswered`], so a reader can tell a report that may be stale.
//!
//! Of several reports on a partition the one with the highest raft term wins, and at equal
//! terms the leader's own (it alone knows the in-sync replicas); its offsets come with it
//! (the leader's high watermark is the newest), except that the high watermark is the highest
//! any replica reported, since committed offsets never go back.
//!
//! One implementation for every frontend: gRPC's DescribeTopic and ClusterInfo (and so the
//! HTTP JSON API and the console, which call them) and Kafka's Metadata. For ClusterInfo and
//! Metadata, which clients ask often, the view is kept for [`FRESH_FOR`] and gathered by one
//! request at a time, so a burst of requests costs one round of questions; a topic's
//! description is gathered afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::broker::Broker;
use crate::broker::describe::PartitionState;
use crate::security::tls::Tls;
use crate::service::Liveness;

/// How long a gathered view answers. Short: a Kafka client that met NOT_LEADER asks Metadata
/// again and must soon see the new leader.
pub const FRESH_FOR: Duration = Duration::from_millis(500);

/// How long a gathering waits for each other node's answer (asked concurrently).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The request metadata key that asks `ClusterInfo` for the answering node's own view only
/// (what its replicas know), as nodes ask each other while gathering: a gathered answer would
/// make every node ask every other in turn.
pub const LOCAL_VIEW_METADATA_KEY: &str = "strata-local-view";

/// One partition as last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLeader {
    /// 0: no leader known.
    pub leader: u64,
    /// The raft term of the report (Kafka's leader epoch).
    pub term: u64,
    /// The replicas with everything committed, when the report came from the leader.
    pub in_sync: Vec<u64>,
    /// The reporting replica's first offset on disk.
    pub log_start_offset: u64,
    /// The highest high watermark any replica reported.
    pub high_watermark: u64,
    /// The reporting replica's log size on disk.
    pub size_bytes: u64,
    /// Whether the report came from the leader itself.
    by_leader: bool,
}

/// Partitions by topic and partition.
pub type Leaders = BTreeMap<(String, u32), PartitionLeader>;

/// One gathering's result.
#[derive(Debug)]
pub struct Gathered {
    pub leaders: Leaders,
    /// When the questions were asked.
    pub at: Instant,
    /// The nodes of the metadata that gave no answer (not heard from, or the question
    /// failed): what others say of partitions they lead may be out of date.
    pub unanswered: BTreeSet<u64>,
}

impl Gathered {
    /// How long ago the view was gathered, in milliseconds.
    pub fn age_ms(&self) -> u64 {
        u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The cluster-wide view and how to refresh it.
pub struct ClusterView {
    tls: Option<Arc<Tls>>,
    alive: Liveness,
    cached: tokio::sync::Mutex<Option<Arc<Gathered>>>,
}

impl ClusterView {
    /// A view that asks other nodes over `tls` (node-to-node TLS, when on); `alive` answers
    /// [`Self::alive`].
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

    /// The view, gathered at most [`FRESH_FOR`] ago.
    pub async fn get(&self, broker: &Broker) -> Arc<Gathered> {
        let mut cached = self.cached.lock().await;
        if let Some(gathered) = cached.as_ref()
            && gathered.at.elapsed() < FRESH_FOR
        {
            return gathered.clone();
        }
        let gathered = Arc::new(self.gather(broker).await);
        *cached = Some(gathered.clone());
        gathered
    }

    /// The view gathered now (and kept for [`Self::get`]): for a person's one request
    /// (describe a topic), where a view from before the records they just produced would
    /// mislead, and a round of questions costs little.
    pub async fn fresh(&self, broker: &Broker) -> Arc<Gathered> {
        let gathered = Arc::new(self.gather(broker).await);
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_none_or(|kept| kept.at < gathered.at) {
            *cached = Some(gathered.clone());
        }
        gathered
    }

    async fn gather(&self, broker: &Broker) -> Gathered {
        let at = Instant::now();
        let metadata = broker.metadata();
        let mut leaders = Leaders::new();
        for topic in metadata.topics.values() {
            for state in broker.partition_states(topic) {
                learn(&mut leaders, broker.node_id(), &topic.name, &state);
            }
        }
        let mut unanswered = BTreeSet::new();
        let mut asked = Vec::new();
        // Every other node is asked, not only those heard from: a node hears only from the
        // nodes it shares raft groups with, so its liveness says nothing of the others. A dead
        // node's question fails at once (connection refused) or at the timeout.
        for node in metadata.nodes.values() {
            if node.id == broker.node_id() {
                continue;
            }
            let tls = self.tls.clone();
            let (id, address) = (node.id, node.address.clone());
            asked.push(async move {
                // Bounded as a whole: the call's own timeout does not cover connecting, which
                // to a node cut off by the network waits for the OS to give up.
                let answer = tokio::time::timeout(
                    ASK_TIMEOUT,
                    crate::service::partition_states_at(tls, id, address),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {ASK_TIMEOUT:?}")));
                (id, answer)
            });
        }
        for (node, answer) in join_all(asked).await {
            match answer {
                Ok(states) => {
                    for (topic, state) in &states {
                        learn(&mut leaders, node, topic, state);
                    }
                }
                Err(error) => {
                    unanswered.insert(node);
                    tracing::debug!(node, %error, "asking a node about its replicas failed");
                }
            }
        }
        Gathered {
            leaders,
            at,
            unanswered,
        }
    }
}

/// Merges what `reporter` says of one partition into `leaders` (see the module doc).
fn learn(leaders: &mut Leaders, reporter: u64, topic: &str, state: &PartitionState) {
    if state.leader_term == 0 && state.leader_node_id == 0 {
        // The reporter holds no replica: it knows nothing.
        return;
    }
    let mut report = PartitionLeader {
        leader: state.leader_node_id,
        term: state.leader_term,
        by_leader: state.leader_node_id == reporter && reporter != 0,
        in_sync: state.in_sync_node_ids.clone(),
        log_start_offset: state.log_start_offset,
        high_watermark: state.high_watermark,
        size_bytes: state.size_bytes,
    };
    let key = (topic.to_string(), state.partition);
    match leaders.get_mut(&key) {
        None => {
            leaders.insert(key, report);
        }
        Some(known) => {
            let high_watermark = known.high_watermark.max(report.high_watermark);
            if (report.term, report.by_leader) > (known.term, known.by_leader) {
                report.high_watermark = high_watermark;
                *known = report;
            } else {
                known.high_watermark = high_watermark;
            }
        }
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

    /// The leader's offsets come with its report, but the high watermark is the highest any
    /// replica reported, in any order.
    #[test]
    fn offsets_come_from_the_winning_report_and_the_highest_high_watermark() {
        let with_offsets = |leader, term, log_start, high_watermark| PartitionState {
            log_start_offset: log_start,
            high_watermark,
            ..state(leader, term, &[])
        };
        let orders: [&[(u64, PartitionState)]; 2] = [
            &[
                (2, with_offsets(1, 3, 5, 90)),
                (1, with_offsets(1, 3, 10, 80)),
            ],
            &[
                (1, with_offsets(1, 3, 10, 80)),
                (2, with_offsets(1, 3, 5, 90)),
            ],
        ];
        for order in orders {
            let mut leaders = Leaders::new();
            for (reporter, report) in order {
                learn(&mut leaders, *reporter, "t", report);
            }
            let known = &leaders[&("t".to_string(), 0)];
            assert_eq!(
                (known.leader, known.log_start_offset, known.high_watermark),
                (1, 10, 90),
                "{order:?}"
            );
        }
    }
}
