//! Consumer-group lag, read at scrape time: `strata_group_lag_records{group,topic}` and
//! `strata_group_lag_seconds{group,topic}`, and with `/metrics?partitions=true` the same per
//! partition (`{group,topic,partition}`).
//!
//! **Each node reports only the partitions it leads**, so summing `lag_records` over the nodes
//! counts every partition once (`sum by (group, topic)`), and the worst `lag_seconds` is the
//! maximum over the nodes (`max by (group, topic)`). A partition that leaves the node, or
//! whose leadership moves, leaves this node's output at the next scrape.
//!
//! Committed offsets come from the replicated metadata (every node has them); the high
//! watermark and the record timestamp from this node's leader replica: one bounded read (the
//! first batch at the committed offset) per lagging partition, never a scan. A group counts
//! for a partition only once it committed an offset there, as in Kafka's tools.

use std::collections::BTreeMap;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Broker;
use crate::metrics::ScrapeOptions;

/// How far one consumer group is behind on one partition this node leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// The high watermark minus the committed offset (0 when the commit is at or past it).
    pub records: u64,
    /// Now minus the timestamp of the first record at or after the committed offset, in
    /// milliseconds; 0 when caught up (or when that record's timestamp lies in the future).
    pub lag_ms: i64,
}

impl Broker {
    /// The lag of every consumer group on every partition this node leads where the group
    /// committed an offset, measured at `now_ms` (see the module doc), ordered by group,
    /// topic and partition.
    pub fn group_lag(&self, now_ms: i64) -> Vec<PartitionLag> {
        let node = self.node_id();
        let led: Vec<_> = self
            .replicas
            .read()
            .expect("lock")
            .values()
            .filter(|replica| *replica.leader.borrow() == node)
            .cloned()
            .collect();
        if led.is_empty() {
            return Vec::new();
        }
        // The committed offsets on the partitions led here, copied out so that the metadata
        // lock is not held while logs are read.
        let mut committed: Vec<(String, String, u32, u64)> = Vec::new();
        {
            let metadata = self.metadata.read().expect("lock");
            for (group, offsets) in &metadata.groups {
                for replica in &led {
                    if let Some(offset) = offsets
                        .offsets
                        .get(&replica.topic)
                        .and_then(|partitions| partitions.get(&replica.partition))
                    {
                        committed.push((
                            group.clone(),
                            replica.topic.clone(),
                            replica.partition,
                            offset.offset,
                        ));
                    }
                }
            }
        }
        let by_partition: BTreeMap<(&str, u32), &crate::partition::PartitionReplica> = led
            .iter()
            .map(|replica| ((replica.topic.as_str(), replica.partition), &**replica))
            .collect();
        let mut lags: Vec<PartitionLag> = committed
            .into_iter()
            .filter_map(|(group, topic, partition, offset)| {
                let replica = by_partition.get(&(topic.as_str(), partition))?;
                let high_watermark = replica.high_watermark();
                let records = high_watermark.saturating_sub(offset);
                let lag_ms = if records == 0 {
                    0
                } else {
                    replica
                        .timestamp_at(offset, high_watermark)
                        .map_or(0, |timestamp| (now_ms - timestamp).max(0))
                };
                Some(PartitionLag {
                    group,
                    topic,
                    partition,
                    records,
                    lag_ms,
                })
            })
            .collect();
        lags.sort_unstable_by(|a, b| {
            (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition))
        });
        lags
    }
}

/// Lag per group and topic summed (records) or at its worst (seconds) over `lags`.
fn by_topic(lags: &[PartitionLag]) -> BTreeMap<(&str, &str), (u64, i64)> {
    let mut totals: BTreeMap<(&str, &str), (u64, i64)> = BTreeMap::new();
    for lag in lags {
        let total = totals
            .entry((lag.group.as_str(), lag.topic.as_str()))
            .or_default();
        total.0 += lag.records;
        total.1 = total.1.max(lag.lag_ms);
    }
    totals
}

/// Registers the lag gauges (see the module doc) with their values now.
pub fn scrape_lag(broker: &Broker, registry: &mut Registry, options: ScrapeOptions) {
    let lags = broker.group_lag(broker.clock.now_ms());
    let records: Family<[(&'static str, String); 2], Gauge> = Family::default();
    let seconds: Family<[(&'static str, String); 2], Gauge<f64, std::sync::atomic::AtomicU64>> =
        Family::default();
    for ((group, topic), (lag_records, lag_ms)) in by_topic(&lags) {
        let labels = [("group", group.to_string()), ("topic", topic.to_string())];
        records
            .get_or_create(&labels)
            .set(i64::try_from(lag_records).unwrap_or(i64::MAX));
        seconds.get_or_create(&labels).set(lag_ms as f64 / 1000.0);
    }
    registry.register(
        "group_lag_records",
        "Records a consumer group has not committed yet, over the partitions of the topic this \
         node leads (sum over nodes for the topic's total)",
        records,
    );
    registry.register(
        "group_lag_seconds",
        "Age of the oldest record a consumer group has not committed yet, over the partitions \
         of the topic this node leads (max over nodes); 0 when caught up",
        seconds,
    );
    if !options.partition_lag {
        return;
    }
    let records: Family<[(&'static str, String); 3], Gauge> = Family::default();
    let seconds: Family<[(&'static str, String); 3], Gauge<f64, std::sync::atomic::AtomicU64>> =
        Family::default();
    for lag in &lags {
        let labels = [
            ("group", lag.group.clone()),
            ("topic", lag.topic.clone()),
            ("partition", lag.partition.to_string()),
        ];
        records
            .get_or_create(&labels)
            .set(i64::try_from(lag.records).unwrap_or(i64::MAX));
        seconds
            .get_or_create(&labels)
            .set(lag.lag_ms as f64 / 1000.0);
    }
    registry.register(
        "group_partition_lag_records",
        "Records a consumer group has not committed yet on a partition this node leads",
        records,
    );
    registry.register(
        "group_partition_lag_seconds",
        "Age of the oldest record a consumer group has not committed yet on a partition this \
         node leads; 0 when caught up",
        seconds,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(group: &str, topic: &str, partition: u32, records: u64, lag_ms: i64) -> PartitionLag {
        PartitionLag {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            records,
            lag_ms,
        }
    }

    /// Per group and topic, records add up over partitions and seconds take the worst.
    #[test]
    fn topic_lag_sums_records_and_takes_the_oldest_age() {
        let lags = [
            lag("g", "t", 0, 5, 100),
            lag("g", "t", 1, 7, 2500),
            lag("g", "u", 0, 0, 0),
            lag("h", "t", 0, 1, 10),
        ];
        let totals = by_topic(&lags);
        assert_eq!(totals.len(), 3);
        assert_eq!(totals[&("g", "t")], (12, 2500));
        assert_eq!(totals[&("g", "u")], (0, 0));
        assert_eq!(totals[&("h", "t")], (1, 10));
    }
}
