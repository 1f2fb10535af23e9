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
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

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
