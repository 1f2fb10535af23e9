//! # Data metrics: what flows through the node's partitions, per topic
//!
//! Counted where it happens:
//! - `strata_topic_records_in_total{topic}`, `strata_topic_bytes_in_total{topic}`: records and
//!   stored batch bytes produced to the topic and committed, counted by the node that took the
//!   produce (the partition's leader), once per batch in the broker's one produce path, so
//!   gRPC, the JSON API and Kafka clients all count. Replication to followers is not counted,
//!   nor a batch whose producer went away before its commit (the wait for it was dropped).
//! - `strata_topic_records_out_total{topic}`, `strata_topic_bytes_out_total{topic}`: records
//!   and bytes sent to consumers by Fetch, Subscribe and Kafka Fetch. Bytes are the stored
//!   bytes of the data batches sent; for a reply of decoded records (`decode` in Fetch and
//!   Subscribe), the records' bytes in the reply. Control batches (the log's own, which
//!   consumers skip) count neither. Reading a partition once from its start thus counts
//!   what was produced to it.
//! - `strata_subscriptions`: subscriptions open on this node.
//!
//! Read at scrape time ([`scrape`]):
//! - `strata_connections{listener}`: open connections per listener (`grpc`, `kafka`, `http`).
//! - `strata_produce_budget_bytes_in_use`: bytes of produced batches waiting to commit, held
//!   from the node's budget ([`crate::broker::PRODUCE_BYTES_IN_FLIGHT_MAX`]), in KiB steps.
//! - `strata_topic_disk_bytes{topic}`: bytes of the topic's local segments, as the logs know
//!   them (no file is statted).
//! - `strata_disk_free_bytes`, `strata_disk_total_bytes`: the data volume's space.
//!
//! A topic's counters are created when its first partition opens here
//! ([`DataMetrics::topic`]) and its series removed when its last partition leaves
//! ([`DataMetrics::remove_topic`]), so the series are bounded by the topics this node holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::storage::batch::BatchHeader;

/// The label of a per-topic series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

/// The label of a per-listener series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

/// One topic's traffic counters: handles into the node's families, kept beside each local
/// partition of the topic so that counting is an atomic add, never a label lookup.
/// Cloning it (one per produce waiting for its commit) is one reference count.
#[derive(Debug, Clone, Default)]
pub struct TopicTraffic(Arc<TrafficCounters>);

#[derive(Debug, Default)]
pub struct TrafficCounters {
    records_in: Counter<u64, AtomicU64>,
    bytes_in: Counter<u64, AtomicU64>,
    records_out: Counter<u64, AtomicU64>,
    bytes_out: Counter<u64, AtomicU64>,
}

impl std::ops::Deref for TopicTraffic {
    type Target = TrafficCounters;

    fn deref(&self) -> &TrafficCounters {
        &self.0
    }
}

impl TopicTraffic {
    /// A committed produce of one batch of `bytes` holding `records` records.
    pub fn produced(&self, bytes: usize, records: u64) {
        self.bytes_in.inc_by(bytes as u64);
        self.records_in.inc_by(records);
    }

    /// Stored batches sent to a consumer as they are (runs of whole batches); the data
    /// batches among them count.
    pub fn sent_batches(&self, runs: &[Bytes]) {
        let mut bytes = 0;
        let mut records = 0;
        for run in runs {
            let (run_bytes, run_records) = data_in_run(run);
            bytes += run_bytes;
            records += run_records;
        }
        if bytes > 0 {
            self.bytes_out.inc_by(bytes);
            self.records_out.inc_by(records);
        }
    }

    /// Decoded records sent to a consumer: `records` of them, `bytes` in the reply.
    pub fn sent_records(&self, records: usize, bytes: usize) {
        if records > 0 {
            self.records_out.inc_by(records as u64);
            self.bytes_out.inc_by(bytes as u64);
        }
    }
}

/// The bytes and records of the data batches in a run of whole stored batches (control
/// batches are the log's own: consumers skip them). Reads the headers only; a run the log
/// handed out is well formed, and a header that does not parse ends the count rather than
/// the reply.
fn data_in_run(run: &[u8]) -> (u64, u64) {
    let mut bytes = 0;
    let mut records = 0;
    let mut rest = run;
    while let Ok(header) = BatchHeader::parse(rest) {
        let Some(next) = rest.get(header.total_bytes()..) else {
            break;
        };
        if next.len() == rest.len() {
            break;
        }
        if !header.is_control() {
            bytes += (rest.len() - next.len()) as u64;
            records += u64::from(header.record_count.max(0).unsigned_abs());
        }
        rest = next;
    }
    (bytes, records)
}

/// The data families of a node (see the module doc).
pub struct DataMetrics {
    records_in: Family<TopicLabel, Counter<u64, AtomicU64>>,
    bytes_in: Family<TopicLabel, Counter<u64, AtomicU64>>,
    records_out: Family<TopicLabel, Counter<u64, AtomicU64>>,
    bytes_out: Family<TopicLabel, Counter<u64, AtomicU64>>,
    /// Subscriptions open now.
    pub subscriptions: Gauge<i64, AtomicI64>,
    connections: Family<ListenerLabel, Gauge<i64, AtomicI64>>,
}

impl DataMetrics {
    /// The families, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            records_in: Family::default(),
            bytes_in: Family::default(),
            records_out: Family::default(),
            bytes_out: Family::default(),
            subscriptions: Gauge::default(),
            connections: Family::default(),
        };
        registry.register(
            "topic_records_in",
            "Records produced to the topic and committed, through this node",
            metrics.records_in.clone(),
        );
        registry.register(
            "topic_bytes_in",
            "Stored batch bytes produced to the topic and committed, through this node",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "topic_records_out",
            "Records of the topic sent to consumers by this node",
            metrics.records_out.clone(),
        );
        registry.register(
            "topic_bytes_out",
            "Bytes of the topic's records sent to consumers by this node",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "subscriptions",
            "Subscriptions open on this node",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "connections",
            "Connections open per listener",
            metrics.connections.clone(),
        );
        metrics
    }

    /// The counters of `topic`, created (at zero) if it has none yet: taken once when a
    /// partition of the topic opens here, and kept with it.
    pub fn topic(&self, topic: &str) -> TopicTraffic {
        let label = TopicLabel {
            topic: topic.to_string(),
        };
        TopicTraffic(Arc::new(TrafficCounters {
            records_in: self.records_in.get_or_create_owned(&label),
            bytes_in: self.bytes_in.get_or_create_owned(&label),
            records_out: self.records_out.get_or_create_owned(&label),
            bytes_out: self.bytes_out.get_or_create_owned(&label),
        }))
    }

    /// Removes `topic`'s series: its last partition left this node. Handles still held count
    /// into counters no scrape shows.
    pub fn remove_topic(&self, topic: &str) {
        let label = TopicLabel {
            topic: topic.to_string(),
        };
        self.records_in.remove(&label);
        self.bytes_in.remove(&label);
        self.records_out.remove(&label);
        self.bytes_out.remove(&label);
    }

    /// The open-connection gauge of `listener` (`grpc`, `kafka` or `http`), which the
    /// listener's connection limit counts with.
    pub fn connections(&self, listener: &'static str) -> Gauge<i64, AtomicI64> {
        self.connections
            .get_or_create_owned(&ListenerLabel { listener })
    }

    /// A subscription that counts as open until dropped.
    pub fn subscription(&self) -> OpenSubscription {
        self.subscriptions.inc();
        OpenSubscription(self.subscriptions.clone())
    }
}

/// Counts one open subscription in `strata_subscriptions` until dropped.
pub struct OpenSubscription(Gauge<i64, AtomicI64>);

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What [`scrape`] reads from the broker: a snapshot taken under the broker's locks, encoded
/// after they are released.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DataSnapshot {
    /// Bytes of local segments per topic.
    pub topic_disk_bytes: Vec<(String, u64)>,
    pub produce_budget_bytes_in_use: u64,
    /// Free and total bytes of the data volume, when they could be read.
    pub disk_space: Option<(u64, u64)>,
}

/// Registers the scrape-time data series (see the module doc) with the values in `snapshot`.
pub fn scrape(registry: &mut Registry, snapshot: DataSnapshot) {
    let disk: Family<TopicLabel, Gauge<i64, AtomicI64>> = Family::default();
    for (topic, bytes) in snapshot.topic_disk_bytes {
        disk.get_or_create(&TopicLabel { topic })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    registry.register(
        "topic_disk_bytes",
        "Bytes of the topic's segments on this node",
        disk,
    );
    let budget: Gauge<i64, AtomicI64> = Gauge::default();
    budget.set(i64::try_from(snapshot.produce_budget_bytes_in_use).unwrap_or(i64::MAX));
    registry.register(
        "produce_budget_bytes_in_use",
        "Bytes of produced batches waiting to commit, held from the node's produce budget",
        budget,
    );
    if let Some((free, total)) = snapshot.disk_space {
        let free_gauge: Gauge<i64, AtomicI64> = Gauge::default();
        free_gauge.set(i64::try_from(free).unwrap_or(i64::MAX));
        registry.register(
            "disk_free_bytes",
            "Bytes free on the data directory's volume",
            free_gauge,
        );
        let total_gauge: Gauge<i64, AtomicI64> = Gauge::default();
        total_gauge.set(i64::try_from(total).unwrap_or(i64::MAX));
        registry.register(
            "disk_total_bytes",
            "Bytes of the data directory's volume",
            total_gauge,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::BatchBuilder;

    fn batch(records: usize) -> Bytes {
        let mut builder = BatchBuilder::new();
        for i in 0..records {
            builder.push(1000 + i as i64, None, Some(b"value"), &[]);
        }
        builder.finish().into()
    }

    /// Records of a run of several batches are the sum of their headers' counts, and its
    /// bytes those of its batches.
    #[test]
    fn records_are_counted_from_the_headers_of_a_run() {
        let (first, second) = (batch(3), batch(5));
        let mut run = Vec::new();
        run.extend_from_slice(&first);
        run.extend_from_slice(&second);
        assert_eq!(data_in_run(&run), (run.len() as u64, 8));
        assert_eq!(data_in_run(&[]), (0, 0));
        // A cut run counts the whole batches before the cut.
        assert_eq!(data_in_run(&run[..run.len() - 1]), (first.len() as u64, 3));
    }

    /// Counting through a topic's handle shows in its family; removing the topic removes
    /// its series, and a topic opened again starts from zero.
    #[test]
    fn a_topic_counts_through_its_handle_and_is_removed() {
        let mut registry = Registry::default();
        let metrics = DataMetrics::new(&mut registry);
        let traffic = metrics.topic("t");
        traffic.produced(100, 4);
        traffic.sent_batches(&[batch(2), batch(3)]);
        let label = TopicLabel {
            topic: "t".to_string(),
        };
        assert_eq!(metrics.records_in.get_or_create(&label).get(), 4);
        assert_eq!(metrics.bytes_in.get_or_create(&label).get(), 100);
        assert_eq!(metrics.records_out.get_or_create(&label).get(), 5);
        metrics.remove_topic("t");
        assert!(metrics.records_in.get(&label).is_none());
        assert!(metrics.bytes_out.get(&label).is_none());
        assert_eq!(metrics.topic("t").records_in.get(), 0);
    }
}
