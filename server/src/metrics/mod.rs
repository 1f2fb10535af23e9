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

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;

use crate::broker::Broker;

pub mod lag;
pub mod raft;

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
    /// Raft series, counted by the driver (see [`raft`]).
    pub raft: raft::RaftMetrics,
}

impl Metrics {
    /// The node's metrics, every family registered under the `strata` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("strata");
        let raft = raft::RaftMetrics::register(&mut registry);
        Arc::new(Self { registry, raft })
    }

    /// The exposition of every series: those counted as they happen, then those read from
    /// `broker` now (none while the node starts and has no broker yet).
    ///
    /// # Errors
    /// Only if formatting into a `String` fails, which it does not.
    pub fn encode(
        &self,
        broker: Option<&Broker>,
        options: ScrapeOptions,
    ) -> Result<String, fmt::Error> {
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)?;
        if let Some(broker) = broker {
            let mut scraped = Registry::with_prefix("strata");
            broker.scrape_metrics(&mut scraped, options);
            encode_registry(&mut text, &scraped)?;
        }
        encode_eof(&mut text)?;
        Ok(text)
    }
}

impl Broker {
    /// Registers the series read at scrape time (see the module doc) in `registry`, with
    /// their values now.
    pub fn scrape_metrics(&self, registry: &mut Registry, options: ScrapeOptions) {
        use prometheus_client::metrics::gauge::Gauge;
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
        raft::scrape_partitions(self, registry);
        lag::scrape_lag(self, registry, options);
    }
}
