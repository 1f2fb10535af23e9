//! What a node reads from its broker for `/metrics` at scrape time (see [`crate::metrics`]):
//! partitions led, partition health (under-replicated and leaderless), consumer lag
//! ([`super::lag`]) and the traffic snapshot. The broker knows the metric types; the metrics
//! module knows nothing of the broker.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Broker;
use crate::metrics::ScrapeOptions;

impl Broker {
    /// Registers the series read at scrape time in `registry`, with their values now.
    pub fn scrape_metrics(&self, registry: &mut Registry, options: ScrapeOptions) {
        let led: Gauge = Gauge::default();
        let node = self.node_id();
        let count = self
            .replicas
            .read()
            .expect("lock")
            .values()
            .filter(|replica| *replica.leader.borrow() == node)
            .count();
        led.set(count as i64);
        registry.register(
            "partitions_led",
            "Partitions whose raft leader is this node",
            led,
        );
        scrape_partitions(self, registry);
        super::lag::scrape_lag(self, registry, options);
        crate::metrics::data::scrape(registry, self.data_snapshot());
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
fn scrape_partitions(broker: &Broker, registry: &mut Registry) {
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
