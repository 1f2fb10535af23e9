//! # Capture metrics: what the node's capture leaders wrote (see `crate::capture`)
//!
//! Counted by the node that published the file (the partition's leader), once per window:
//! - `strata_capture_files_total`: capture files published.
//! - `strata_capture_records_total`: records in them.
//! - `strata_capture_bytes_total`: bytes of the files (Parquet, compressed).
//! - `strata_capture_errors_total`: windows that failed (write, publish or a proposal) and
//!   will be retried.
//!
//! Node-wide, no label: the per-partition detail is in the log and `strata topic describe`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// The capture counters.
#[derive(Debug, Clone, Default)]
pub struct CaptureMetrics {
    pub files: Counter,
    pub records: Counter,
    pub bytes: Counter,
    pub errors: Counter,
}

impl CaptureMetrics {
    /// The counters, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "capture_files",
            "Capture files published by this node",
            metrics.files.clone(),
        );
        registry.register(
            "capture_records",
            "Records in the capture files this node published",
            metrics.records.clone(),
        );
        registry.register(
            "capture_bytes",
            "Bytes of the capture files this node published",
            metrics.bytes.clone(),
        );
        registry.register(
            "capture_errors",
            "Capture windows that failed on this node and will be retried",
            metrics.errors.clone(),
        );
        metrics
    }
}
