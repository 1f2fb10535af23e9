//! Capture's part of the controller metadata: the topic configs' capture defaults and format,
//! each partition's [`CapturePosition`], and the two compare-and-set commands that move it
//! (`CaptureWindowOpen`, `CaptureWindowDone`; the exactly-once argument is in `crate::capture`).

use serde::{Deserialize, Serialize};

use super::metadata::{CommandRefusal, Metadata, Topic};

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

impl Metadata {
    /// `CaptureWindowOpen`: records `first..=last` as `partition`'s pending window, only if
    /// its position is `expected_next` with nothing pending.
    pub(super) fn open_capture_window(
        &mut self,
        topic: &str,
        topic_id: u64,
        partition: u32,
        expected_next: u64,
        first: u64,
        last: u64,
    ) -> Result<(), CommandRefusal> {
        if first < expected_next || last < first {
            return Err(CommandRefusal::Invalid(format!(
                "capture window {first}..={last} must start at or after {expected_next} \
                 and not end before it starts"
            )));
        }
        let known = self.captured_topic_mut(topic, topic_id, partition)?;
        let mut position = known.capture_position(partition);
        if position.next_offset != expected_next || position.pending.is_some() {
            return Err(CommandRefusal::CaptureMoved(format!(
                "{topic}/{partition} is at {} with {:?} pending, not at {expected_next} \
                 with none",
                position.next_offset, position.pending
            )));
        }
        position.pending = Some((first, last));
        known.capture.insert(partition, position);
        Ok(())
    }

    /// `CaptureWindowDone`: moves `partition`'s position past `window`, only if that window
    /// is the pending one.
    pub(super) fn finish_capture_window(
        &mut self,
        topic: &str,
        topic_id: u64,
        partition: u32,
        window: (u64, u64),
        now_ms: i64,
    ) -> Result<(), CommandRefusal> {
        let (first, last) = window;
        let known = self.captured_topic_mut(topic, topic_id, partition)?;
        let pending = known.capture_position(partition).pending;
        if pending != Some(window) {
            return Err(CommandRefusal::CaptureMoved(format!(
                "{topic}/{partition} has {pending:?} pending, not {first}..={last}"
            )));
        }
        let position = CapturePosition {
            next_offset: last + 1,
            pending: None,
            captured_ms: now_ms,
        };
        known.capture.insert(partition, position);
        Ok(())
    }

    /// The topic with this name and id (a topic deleted and re-created under the name is
    /// another topic), when it has `partition`.
    fn captured_topic_mut(
        &mut self,
        name: &str,
        topic_id: u64,
        partition: u32,
    ) -> Result<&mut Topic, CommandRefusal> {
        let topic = self
            .topics
            .get_mut(name)
            .filter(|topic| topic.id == topic_id)
            .ok_or(CommandRefusal::TopicMissing)?;
        if partition >= topic.partitions() {
            return Err(CommandRefusal::Invalid(format!(
                "topic {name} has no partition {partition}"
            )));
        }
        Ok(topic)
    }
}
