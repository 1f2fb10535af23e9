//! # Fsync latency: `strata_fsync_duration_seconds`
//!
//! A histogram of every `fdatasync` of a log segment (partition logs and the controller's),
//! whichever thread runs it (the raft driver's or the fsync pool's), with the fixed buckets
//! [`FSYNC_BUCKETS_SECONDS`].
//!
//! Process-wide: storage times its fsyncs into [`FSYNC_SECONDS`] without knowing of a node,
//! and each node's registry shows it. A process serves one node (tests that run several in
//! one process see their sum).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the fsync latency buckets, in seconds: from 50 µs (a write cache) to 5 s
/// (a disk in trouble).
pub const FSYNC_BUCKETS_SECONDS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    5.0,
];

/// Every log fsync of the process (see the module doc).
pub static FSYNC_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(FSYNC_BUCKETS_SECONDS));

/// Records an fsync that started at `started` and has just returned.
pub fn observe(started: Instant) {
    FSYNC_SECONDS.observe(started.elapsed().as_secs_f64());
}
