//! Reads from one partition replica: where a read starts ([`StartFrom`]), fetch (a long poll
//! on the high watermark), read, and the timestamp lookups. Readers see only committed offsets
//! (below the high watermark) and stored batches as they are.

use std::time::Duration;

use bytes::Bytes;

use super::{PartitionError, PartitionReplica};
use crate::storage::batch;

/// Longest a fetch may wait for data.
pub const FETCH_WAIT_MS_MAX: u32 = 60_000;
/// Largest fetch response.
pub const FETCH_BYTES_MAX: u32 = 64 << 20;
/// Fetch size when the request names none.
pub const FETCH_BYTES_DEFAULT: u32 = 1 << 20;
/// Where a read starts (the client names the same idea `StartFrom`). Not a *position*, which
/// is a byte position inside a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

/// Where a position resolves to on a partition, with the partition's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffsets {
    pub offset: u64,
    pub log_start_offset: u64,
    pub high_watermark: u64,
}

/// What a fetch found.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Runs of whole stored batches.
    pub batches: Vec<Bytes>,
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// The counters of the topic read: the frontend counts what it sends of `batches` there.
    pub traffic: crate::metrics::data::TopicTraffic,
}

impl PartitionReplica {
    /// Resolves where a read starts to an offset within `log_start..=high_watermark`.
    pub fn resolve(&self, start: StartFrom) -> Result<u64, PartitionError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().expect("log lock poisoned");
        let log_start = log.log_start_offset();
        let offset = match start {
            StartFrom::Earliest => log_start,
            StartFrom::Latest => high_watermark,
            StartFrom::Offset(offset) => offset,
            StartFrom::Timestamp(timestamp) => log
                .offset_for_timestamp(timestamp)?
                .unwrap_or(high_watermark)
                .min(high_watermark),
        };
        if offset < log_start || offset > high_watermark {
            return Err(out_of_range(offset, log_start, high_watermark));
        }
        Ok(offset)
    }

    /// Reads committed batches from `offset`, waiting up to `max_wait` for at least
    /// `min_bytes` (long poll).
    pub async fn fetch(
        &self,
        offset: u64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched, PartitionError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut high_watermark = self.high_watermark.clone();
        loop {
            let fetched = self.read(offset, max_bytes)?;
            let bytes: usize = fetched.batches.iter().map(Bytes::len).sum();
            if bytes >= min_bytes.max(1) || tokio::time::Instant::now() >= deadline {
                return Ok(fetched);
            }
            // Wait for the high watermark to move (or the deadline), then read again.
            let seen = fetched.high_watermark;
            let moved = high_watermark.wait_for(|hw| *hw > seen);
            match tokio::time::timeout_at(deadline, moved).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(PartitionError::ShuttingDown),
                Err(_) => return self.read(offset, max_bytes),
            }
        }
    }

    /// Reads committed batches from `offset` without waiting.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetched, PartitionError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().expect("log lock poisoned");
        let log_start = log.log_start_offset();
        if offset < log_start || offset > high_watermark {
            return Err(out_of_range(offset, log_start, high_watermark));
        }
        let batches = if offset == high_watermark {
            Vec::new()
        } else {
            log.read_below(offset, high_watermark, max_bytes)?
        };
        drop(log);
        let next_offset = match batches.last() {
            Some(run) => last_next_offset(run).unwrap_or(offset),
            None => offset,
        };
        Ok(Fetched {
            batches,
            next_offset,
            high_watermark,
            log_start_offset: log_start,
            traffic: self.traffic.clone(),
        })
    }

    /// The timestamp of the first record at or after `offset` (below `end`), if any is stored.
    pub fn timestamp_at(&self, offset: u64, end: u64) -> Option<i64> {
        let log = self.log.read().expect("log lock poisoned");
        let from = offset.max(log.log_start_offset());
        let runs = log.read_below(from, end, 1).ok()?;
        drop(log);
        for run in runs {
            for split in batch::split_batches(run) {
                let (header, batch) = split.ok()?;
                if header.is_control() {
                    continue;
                }
                // One streaming pass through a bounded buffer: a compressed batch is never
                // decompressed whole to find one timestamp.
                if let Some(timestamp) = batch::timestamp_at(&batch, from).ok()? {
                    return Some(timestamp);
                }
            }
        }
        None
    }
}

/// The offset after the last batch of a run of batches.
fn last_next_offset(run: &Bytes) -> Option<u64> {
    let mut next = None;
    for split in strata_proto::batch::split_batches(run.clone()) {
        let (header, _) = split.ok()?;
        next = Some(header.base_offset as u64 + header.offset_count());
    }
    next
}

/// A read outside `log_start..=high_watermark`: for a reader the partition ends at its high
/// watermark, so that is the range's end.
fn out_of_range(requested: u64, log_start: u64, high_watermark: u64) -> PartitionError {
    PartitionError::Storage(crate::storage::Error::OffsetOutOfRange {
        requested,
        log_start,
        next_offset: high_watermark,
    })
}

#[cfg(test)]
#[path = "reads_tests.rs"]
mod tests;
