//! Raft series: what the driver counts as it happens ([`RaftMetrics`]: leader changes,
//! elections, proposals, commit latency) and the partition health gauges read at scrape time
//! ([`scrape_partitions`]: under-replicated and leaderless partitions).
//!
//! Counted series are labelled by the kind of raft group only (`group="controller"` or
//! `group="partition"`), never per partition: two series per family whatever the number of
//! partitions. The driver keeps the handles of its group's kind ([`GroupRaftMetrics`]), so
//! counting is an atomic add, never a label lookup.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::broker::Broker;
use crate::replication::{CONTROLLER, RaftGroupId};

/// Upper bounds (seconds) of `strata_raft_commit_latency_seconds`'s buckets: from 0.5 ms (a
/// group of one on a fast disk) to 10 s (a quorum lost for a while); the same on every node,
/// so histograms sum across nodes.
pub const COMMIT_LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label set of the counted raft series: the kind of group.
type KindLabel = [(&'static str, &'static str); 1];

fn kind_label(group: RaftGroupId) -> KindLabel {
    if group == CONTROLLER {
        [("group", "controller")]
    } else {
        [("group", "partition")]
    }
}

fn commit_latency_histogram() -> Histogram {
    Histogram::new(COMMIT_LATENCY_BUCKETS_SECONDS)
}

/// The raft families, registered once per node.
pub struct RaftMetrics {
    leader_changes: Family<KindLabel, Counter>,
    elections: Family<KindLabel, Counter>,
    proposals: Family<KindLabel, Counter>,
    commit_latency: Family<KindLabel, Histogram, fn() -> Histogram>,
}

impl RaftMetrics {
    /// The families, registered in `registry` (under its prefix: `strata_raft_…`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            leader_changes: Family::default(),
            elections: Family::default(),
            proposals: Family::default(),
            commit_latency: Family::new_with_constructor(
                commit_latency_histogram as fn() -> Histogram,
            ),
        };
        // Both kinds are created now, so each series reads 0 before its first event instead
        // of being absent (a rate over an absent series is no rate at all).
        for group in [CONTROLLER, 1 << 32] {
            metrics.for_group(group);
        }
        registry.register(
            "raft_leader_changes",
            "Times this node saw a raft group's leader become another node (a first leader \
             counts), by group kind",
            metrics.leader_changes.clone(),
        );
        registry.register(
            "raft_elections",
            "Elections (campaigns) this node started, pre-vote rounds included, by group kind",
            metrics.elections.clone(),
        );
        registry.register(
            "raft_proposals",
            "Entries this node proposed to raft as leader (batches, metadata commands, \
             membership changes), by group kind",
            metrics.proposals.clone(),
        );
        registry.register_with_unit(
            "raft_commit_latency",
            "On the leader, from a proposal handed to raft until its entry committed and \
             applied, by group kind",
            Unit::Seconds,
            metrics.commit_latency.clone(),
        );
        metrics
    }

    /// The handles of `group`'s kind, for the driver to keep with the group.
    pub fn for_group(&self, group: RaftGroupId) -> GroupRaftMetrics {
        let label = kind_label(group);
        GroupRaftMetrics {
            leader_changes: self.leader_changes.get_or_create_owned(&label),
            elections: self.elections.get_or_create_owned(&label),
            proposals: self.proposals.get_or_create_owned(&label),
            commit_latency: self.commit_latency.get_or_create_owned(&label),
        }
    }
}

/// One group kind's raft series (clones share the counts).
#[derive(Clone, Debug)]
pub struct GroupRaftMetrics {
    pub leader_changes: Counter,
    pub elections: Counter,
    pub proposals: Counter,
    pub commit_latency: Histogram,
}

impl GroupRaftMetrics {
    /// Records a proposal that committed `latency` after raft took it.
    pub fn committed(&self, latency: Duration) {
        self.commit_latency.observe(latency.as_secs_f64());
    }
}

/// Partition health as one node sees it at scrape time.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PartitionHealth {
    /// Partitions this node leads whose in-sync replicas are fewer than their replicas.
    pub under_replicated: Vec<(String, u32)>,
    /// Partitions the metadata places on this node whose replica here knows no leader (or is
    /// not open yet).
    pub leaderless: Vec<(String, u32)>,
}

impl Broker {
    /// Which partitions are under-replicated and which leaderless, as this node sees them
    /// (see [`PartitionHealth`]). Each under-replicated partition is reported by its leader
    /// only, so summing over nodes counts it once; a leaderless partition is reported by each
    /// of its replicas that sees no leader.
    ///
    /// In sync is what the leader publishes every few ticks (see
    /// `replication::quiescence::check_leadership`): a voter whose log holds everything
    /// committed and whose node was heard from recently.
    pub fn partition_health(&self) -> PartitionHealth {
        let node = self.node_id();
        let placed = self.placed_here();
        let replicas = self.replicas.read().expect("lock");
        let mut health = PartitionHealth::default();
        for (topic, partition, replica_count) in placed {
            let Some(replica) = replicas.get(&(topic.clone(), partition)) else {
                health.leaderless.push((topic, partition));
                continue;
            };
            let leader = *replica.leader.borrow();
            if leader == 0 {
                health.leaderless.push((topic, partition));
            } else if leader == node && replica_count > 1 {
                // Empty until the new leader's first check (a few ticks): not known yet, so
                // not reported.
                let in_sync = replica.in_sync.borrow().len();
                if in_sync > 0 && in_sync < replica_count {
                    health.under_replicated.push((topic, partition));
                }
            }
        }
        health.under_replicated.sort_unstable();
        health.leaderless.sort_unstable();
        health
    }
}

/// Registers the partition health gauges with their values now:
/// `strata_partitions_under_replicated` and `strata_partitions_leaderless` (counts), and
/// `strata_partition_under_replicated{topic,partition}` and
/// `strata_partition_leaderless{topic,partition}` (value 1), listed only for the partitions
/// that are so right now: per-partition series only while there is something to see, gone
/// once the partition recovers or leaves the node.
pub fn scrape_partitions(broker: &Broker, registry: &mut Registry) {
    let health = broker.partition_health();
    let count = |partitions: &[(String, u32)]| {
        let gauge: Gauge = Gauge::default();
        gauge.set(partitions.len() as i64);
        gauge
    };
    let each = |partitions: &[(String, u32)]| {
        let family: Family<[(&'static str, String); 2], Gauge> = Family::default();
        for (topic, partition) in partitions {
            family
                .get_or_create(&[
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                ])
                .set(1);
        }
        family
    };
    registry.register(
        "partitions_under_replicated",
        "Partitions this node leads whose in-sync replicas are fewer than their replicas",
        count(&health.under_replicated),
    );
    registry.register(
        "partitions_leaderless",
        "Partitions placed on this node whose replica here knows no leader",
        count(&health.leaderless),
    );
    registry.register(
        "partition_under_replicated",
        "1 for each partition this node leads that is under-replicated (listed only then)",
        each(&health.under_replicated),
    );
    registry.register(
        "partition_leaderless",
        "1 for each partition placed on this node that knows no leader here (listed only then)",
        each(&health.leaderless),
    );
}
