//! # Metrics: what a node measures, for `/metrics`
//!
//! One [`Metrics`] per node, created by [`run`](crate::run) and handed to the broker and the
//! raft driver. It holds two kinds of series:
//! - **counted where they happen** (requests, bytes and records in and out, fsync and commit
//!   latencies, elections): prometheus-client counters and histograms registered once in
//!   [`Metrics::new`]. A hot path keeps the handle of its series (a topic's counters live with
//!   its replica), so counting is an atomic add, never a label lookup.
//! - **read at scrape time** (partitions led, under-replicated partitions, consumer lag, disk
//!   bytes, the process's CPU and memory): computed from the broker's state by
//!   [`Metrics::encode`] on each scrape, so they cost nothing between scrapes and a partition
//!   that leaves the node leaves the output with it.
//!
//! Label cardinality is bounded: series per topic, per API method and per consumer group;
//! per-partition series only where a gauge needs them (see each family's doc).
//!
//! ## Series
//! | name | type | labels | module |
//! |---|---|---|---|
//! | `strata_topic_records_in_total`, `strata_topic_bytes_in_total` | counter | `topic` | [`data`] |
//! | `strata_topic_records_out_total`, `strata_topic_bytes_out_total` | counter | `topic` | [`data`] |
//! | `strata_topic_disk_bytes` | gauge (scrape) | `topic` | [`data`] |
//! | `strata_disk_free_bytes`, `strata_disk_total_bytes` | gauge (scrape) | | [`data`] |
//! | `strata_connections` | gauge | `listener` (`grpc`, `kafka`, `http`) | [`data`] |
//! | `strata_subscriptions` | gauge | | [`data`] |
//! | `strata_produce_budget_bytes_in_use` | gauge (scrape) | | [`data`] |
//! | `strata_requests_total` | counter | `frontend`, `method` | [`requests`] |
//! | `strata_request_errors_total` | counter | `frontend`, `method`, `code` | [`requests`] |
//! | `strata_request_duration_seconds` | histogram | `frontend`, `method` | [`requests`] |
//! | `strata_capture_files_total`, `strata_capture_records_total`, `strata_capture_bytes_total`, `strata_capture_errors_total` | counter | | [`capture`] |
//! | `strata_fsync_duration_seconds` | histogram | | [`fsync`] |
//! | `strata_process_cpu_seconds_total` | counter (scrape) | | [`process`] |
//! | `strata_process_resident_memory_bytes`, `strata_process_memory_maps` | gauge (scrape) | | [`process`] |
//! | `strata_partitions_led` | gauge (scrape) | | `broker::scrape` |
//! | `strata_raft_leader_changes_total`, `strata_raft_elections_total`, `strata_raft_proposals_total` | counter | `group` (`controller`, `partition`) | [`raft`] |
//! | `strata_raft_commit_latency_seconds` | histogram | `group` | [`raft`] |
//! | `strata_partitions_under_replicated`, `strata_partitions_leaderless` | gauge (scrape) | | `broker::scrape` |
//! | `strata_partition_under_replicated`, `strata_partition_leaderless` | gauge (scrape), only while true | `topic`, `partition` | `broker::scrape` |
//! | `strata_group_lag_records`, `strata_group_lag_seconds` | gauge (scrape), partitions this node leads | `group`, `topic` | `broker::lag` |
//! | `strata_group_partition_lag_records`, `strata_group_partition_lag_seconds` | gauge (scrape), `?partitions=true` only | `group`, `topic`, `partition` | `broker::lag` |
//!
//! Bounds: `topic` takes the topics with a partition on this node (a topic's series go when
//! its last local partition does); `method` the entries of each frontend's method table plus
//! `other`; `code` the proto's error codes and gRPC's codes; `listener` three values; `group`
//! (raft) two values; consumer `group` the groups with committed offsets on partitions this
//! node leads. Per-partition series exist only while a partition is under-replicated or
//! leaderless, or when a scrape asks for partition lag. Histogram buckets are fixed constants
//! ([`requests::LATENCY_BUCKETS_SECONDS`], [`fsync::FSYNC_BUCKETS_SECONDS`],
//! [`raft::COMMIT_LATENCY_BUCKETS_SECONDS`]), so the same series sum across nodes.

pub mod capture;
pub mod data;
pub mod fsync;
pub mod process;
pub mod raft;
pub mod requests;

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text (OpenMetrics 1.0, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What to include beyond the default series on a scrape (query parameters of `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeOptions {
    /// Consumer lag per partition as well as per group and topic (`?partitions=true`).
    pub partition_lag: bool,
}

/// A node's metrics (see the module doc).
pub struct Metrics {
    registry: Registry,
    /// Traffic per topic, subscriptions and connections ([`data`]).
    pub data: data::DataMetrics,
    /// Requests per frontend and method ([`requests`]).
    pub requests: requests::RequestMetrics,
    /// Raft series, counted by the driver (see [`raft`]).
    pub raft: raft::RaftMetrics,
    /// Capture files, records, bytes and errors ([`capture`]).
    pub capture: capture::CaptureMetrics,
}

impl Metrics {
    /// The node's metrics, every family registered under the `strata` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("strata");
        let data = data::DataMetrics::new(&mut registry);
        let requests = requests::RequestMetrics::new(&mut registry);
        registry.register(
            "fsync_duration_seconds",
            "Time an fdatasync of a log segment takes",
            fsync::FSYNC_SECONDS.clone(),
        );
        let raft = raft::RaftMetrics::register(&mut registry);
        let capture = capture::CaptureMetrics::new(&mut registry);
        Arc::new(Self {
            registry,
            data,
            requests,
            raft,
            capture,
        })
    }

    /// The exposition of every series: those counted as they happen, the process's, then
    /// those `scrape` registers now (the broker's, `Broker::scrape_metrics`; none while the
    /// node starts and has no broker yet).
    ///
    /// # Errors
    /// Only if formatting into a `String` fails, which it does not.
    pub fn encode(&self, scrape: impl FnOnce(&mut Registry)) -> Result<String, fmt::Error> {
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)?;
        let mut scraped = Registry::with_prefix("strata");
        process::scrape(&mut scraped);
        scrape(&mut scraped);
        encode_registry(&mut text, &scraped)?;
        encode_eof(&mut text)?;
        Ok(text)
    }
}
