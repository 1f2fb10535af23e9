//! Capture's data in the controller metadata: the topic configs' capture defaults and format,
//! and each partition's [`CapturePosition`]. The commands that move the position are in
//! [`capture`](super::capture).

use serde::{Deserialize, Serialize};

/// Default longest time a capture window stays open (`capture.interval-ms`): Event Hubs
/// Capture's five minutes.
pub const CAPTURE_INTERVAL_MS_DEFAULT: u64 = 300_000;
/// Default committed bytes at which a capture window closes (`capture.max-bytes`).
pub const CAPTURE_MAX_BYTES_DEFAULT: u64 = 256 << 20;

pub(super) fn capture_interval_ms_default() -> u64 {
    CAPTURE_INTERVAL_MS_DEFAULT
}

pub(super) fn capture_max_bytes_default() -> u64 {
    CAPTURE_MAX_BYTES_DEFAULT
}

pub(super) fn capture_block_retention_default() -> bool {
    true
}

/// The file format of captured windows (`capture.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureFormat {
    /// Apache Parquet, one file per window, the schema of `strata_analytics::record_schema`.
    #[default]
    Parquet,
}

impl CaptureFormat {
    /// The config value's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureFormat::Parquet => "parquet",
        }
    }

    /// The format spelled `text`.
    ///
    /// # Errors
    /// An unknown format, with the valid ones.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "parquet" => Ok(CaptureFormat::Parquet),
            other => Err(format!(
                "capture.format {other:?} is not supported: the only valid value is \"parquet\""
            )),
        }
    }
}

/// How far one partition has been captured: the replicated half of capture's exactly-once
/// protocol (see `crate::capture`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePosition {
    /// Every offset below this is in a published capture file (or was lost to retention
    /// with `capture.block-retention=false`).
    pub next_offset: u64,
    /// The window a leader has opened and not yet reported published: `(first, last)`
    /// offsets, inclusive.
    pub pending: Option<(u64, u64)>,
    /// When the last window was reported published (the proposer's clock).
    pub captured_ms: i64,
}
