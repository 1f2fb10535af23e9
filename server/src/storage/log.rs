//! The partition log: ordered segments that together form one partition's raft log.
//!
//! Each batch is one raft entry. Raft indexes follow from the order of batches, anchored by the
//! log-start checkpoint; offsets are stamped into each batch at append from the log before it,
//! so every replica that appends the same entries assigns the same offsets. Control batches take
//! a raft index and no offset.
//!
//! This file owns [`PartitionLog`]'s core: its config, append and rolling, group-commit sync and
//! reads by offset. Further `impl PartitionLog` blocks live in child modules, one per concern:
//! - `open`: opening a partition directory and recovering it after a crash;
//! - `raft`: the raft-index view (entries, terms, truncating a conflicting suffix);
//! - `start`: moving the log start (retention, reset to a snapshot's start).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, ControlType};
use super::checkpoint::LogStart;
use super::error::{Error, Result};
use super::fault::Faults;
use super::files;
use super::segment::{self, Segment, SegmentInfo};

mod open;
mod raft;
mod start;

pub use start::RetentionOutcome;

/// Largest `segment_bytes_max`: index entries hold 32-bit positions.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 31;

/// Limits and layout of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment when the next batch would make the active one larger than this.
    pub segment_bytes_max: u64,
    /// Roll to a new segment when the active one received its first append this long ago.
    pub segment_ms_max: i64,
    /// Add an index entry after about this many bytes of log.
    pub index_interval_bytes: u64,
    /// Largest batch `append` accepts, independent of `segment_bytes_max`: a batch larger than
    /// a segment gets a segment of its own, so every batch a producer may send can be stored
    /// whatever the topic's segment size.
    pub batch_bytes_max: usize,
    /// Failure injection for tests; `None` in production.
    pub faults: Option<Arc<Faults>>,
}

impl Default for LogConfig {
    /// Kafka's defaults: 1 GiB segments, rolled weekly, an index entry per 4 KiB, batches up to
    /// 1 MiB.
    fn default() -> Self {
        Self {
            segment_bytes_max: 1 << 30,
            segment_ms_max: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            batch_bytes_max: 1 << 20,
            faults: None,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::InvalidConfig(message));
        if self.segment_bytes_max < 1024 || self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return fail(format!(
                "segment_bytes_max {} must be between 1024 and {SEGMENT_BYTES_LIMIT}",
                self.segment_bytes_max
            ));
        }
        if self.segment_ms_max < 1 {
            return fail(format!(
                "segment_ms_max {} must be at least 1",
                self.segment_ms_max
            ));
        }
        if self.index_interval_bytes < 1 {
            return fail("index_interval_bytes must be at least 1".to_string());
        }
        // A segment holds at most segment_bytes_max plus one batch; index positions are 32-bit.
        if self.batch_bytes_max < batch::HEADER_BYTES
            || self.batch_bytes_max as u64 > SEGMENT_BYTES_LIMIT
        {
            return fail(format!(
                "batch_bytes_max {} must be between {} and {SEGMENT_BYTES_LIMIT}",
                self.batch_bytes_max,
                batch::HEADER_BYTES,
            ));
        }
        Ok(())
    }

    /// How much of a segment file to map: room for a full segment and the batch that rolls it.
    fn capacity_bytes(&self) -> usize {
        (self.segment_bytes_max as usize) + self.batch_bytes_max
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub raft_index: u64,
    /// The offset of the batch's first record (for a control batch, the next offset).
    pub base_offset: u64,
    /// The offset the next record will take.
    pub next_offset: u64,
}

/// fsyncs taken by [`PartitionLog::begin_sync`], to run without the log borrowed.
#[must_use = "appends are durable only once the sync completes"]
pub struct PendingSync {
    handles: Vec<files::SyncHandle>,
}

impl PendingSync {
    /// Runs the fsyncs.
    ///
    /// # Errors
    /// The first I/O error. The log must then be failed ([`PartitionLog::fail_sync`]): after a
    /// failed fsync the kernel may have dropped the pages.
    pub fn complete(self) -> Result<()> {
        self.handles.iter().try_for_each(files::SyncHandle::sync)
    }
}

/// One partition's log. Not thread-safe by itself: the owner serializes access (`&mut self` for
/// every change); [`Bytes`] it hands out may be sent anywhere.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    start: LogStart,
    /// Oldest first; never empty. The last one is the active segment.
    segments: Vec<Segment>,
    last_term: u64,
    /// Set when an I/O error left memory unsure of the disk; see [`Error::Failed`].
    failed: Option<String>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("start", &self.start)
            .field("segments", &self.segments.len())
            .field("next_offset", &self.next_offset())
            .field("last_raft_index", &self.last_raft_index())
            .finish()
    }
}

impl PartitionLog {
    /// Creates the files of a new, empty segment and makes their names durable. On error no
    /// half-created segment is left behind to collide with the next attempt.
    fn new_segment(&self, base_offset: u64, base_raft_index: u64) -> Result<Segment> {
        let segment = Segment::create(
            &self.dir,
            base_offset,
            base_raft_index,
            self.config.capacity_bytes(),
            self.config.index_interval_bytes,
            self.config.faults.clone(),
        )
        .inspect_err(|_| {
            for name in [
                segment::log_file_name(base_offset),
                segment::index_file_name(base_offset),
            ] {
                let _ = fs::remove_file(self.dir.join(name));
            }
        })?;
        files::sync_dir(&self.dir, self.config.faults.as_deref())?;
        Ok(segment)
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(reason) => Err(Error::Failed {
                path: self.dir.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// Records that memory no longer matches the disk, and returns the error that caused it.
    fn fail(&mut self, error: Error) -> Error {
        self.failed = Some(error.to_string());
        error
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has a segment")
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.start.start_offset
    }

    /// The offset the next record will take.
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset()
    }

    /// Bytes of the log's segment files as written (their indexes not included), from memory:
    /// no file is statted.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size_bytes).sum()
    }

    /// The raft entry before the first stored batch, and the log start offset.
    pub fn log_start(&self) -> LogStart {
        self.start
    }

    /// Raft index of the first stored batch (one past [`LogStart::prev_raft_index`]).
    pub fn first_raft_index(&self) -> u64 {
        self.start.prev_raft_index + 1
    }

    /// Raft index of the last stored batch; [`LogStart::prev_raft_index`] when none is stored.
    pub fn last_raft_index(&self) -> u64 {
        self.active().next_raft_index() - 1
    }

    /// Term of the last stored batch, or of the entry before the log when it is empty.
    pub fn last_term(&self) -> u64 {
        self.last_term
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments.iter().map(Segment::info).collect()
    }

    /// Appends a batch as the next raft entry, written by a leader of `term`. The batch's framing
    /// is checked (lengths, record count; not the CRC-32C, which the caller has checked), then
    /// it is stored with its base offset and leader
    /// epoch stamped: the stamp goes into a copy of the header only, and the rest is written
    /// from `batch` as it is (no copy of the records). Rolls to a new segment first when the
    /// active one is full or old. Durable only after [`PartitionLog::sync`].
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`], [`Error::InvalidBatch`], [`Error::InvalidTerm`] (terms never
    /// decrease and must fit in 31 bits), I/O errors. On error nothing was appended.
    pub fn append(&mut self, batch: &[u8], term: u64, now_ms: i64) -> Result<AppendInfo> {
        self.check_usable()?;
        if batch.len() > self.config.batch_bytes_max {
            return Err(Error::BatchTooLarge {
                size_bytes: batch.len(),
                limit_bytes: self.config.batch_bytes_max,
            });
        }
        // Framing only: the CRC was checked once where the batch entered the node (a producer's
        // admission, a follower's check of the leader's message, recovery of what is on disk),
        // and checking it again here would read every byte a second time on the hot path.
        let mut header = BatchHeader::validate_framing(batch)?;
        let epoch = i32::try_from(term).map_err(|_| Error::InvalidTerm {
            term,
            reason: "the batch format's leader epoch holds at most 2^31 - 1",
        })?;
        if term < self.last_term {
            return Err(Error::InvalidTerm {
                term,
                reason: "terms never decrease along the log",
            });
        }
        let base_offset = self.next_offset();
        let next_offset = base_offset + header.offset_count();
        if next_offset > i64::MAX as u64 {
            return Err(Error::InvalidBatch(batch::BatchError::InvalidRecordCount {
                record_count: header.record_count,
                reason: "offsets would pass 2^63 - 1",
            }));
        }
        if self.should_roll(batch.len(), &header, now_ms) {
            self.roll()?;
        }
        let (head, tail) = batch.split_at(batch::HEADER_BYTES);
        let mut head: [u8; batch::HEADER_BYTES] = head.try_into().expect("validated header");
        batch::stamp(&mut head, base_offset, epoch);
        header.base_offset = base_offset as i64;
        header.partition_leader_epoch = epoch;
        let raft_index = self.active().next_raft_index();
        if let Err((error, consistent)) = self.active_mut().append(&head, tail, &header, now_ms) {
            return Err(if consistent { error } else { self.fail(error) });
        }
        self.last_term = term;
        assert_eq!(
            self.next_offset(),
            next_offset,
            "the log ends after the batch"
        );
        assert_eq!(
            self.active().next_raft_index(),
            raft_index + 1,
            "one batch is one raft entry"
        );
        Ok(AppendInfo {
            raft_index,
            base_offset,
            next_offset,
        })
    }

    /// Appends a control batch (see [`ControlType`]) as the next raft entry. It takes no offset.
    ///
    /// # Errors
    /// As [`PartitionLog::append`].
    pub fn append_control(
        &mut self,
        kind: ControlType,
        payload: &[u8],
        term: u64,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let batch = batch::control_batch(kind, now_ms, payload);
        self.append(&batch, term, now_ms)
    }

    fn should_roll(&self, batch_bytes: usize, header: &BatchHeader, now_ms: i64) -> bool {
        let active = self.active();
        // A segment that covers no offset yet is never rolled: its successor would start at the
        // same offset and take the same file name.
        if active.next_offset() == active.base_offset() {
            return false;
        }
        let full = active.size_bytes() + batch_bytes as u64 > self.config.segment_bytes_max;
        let old = active
            .first_append_ms()
            .is_some_and(|first| now_ms.saturating_sub(first) >= self.config.segment_ms_max);
        // Index entries hold offsets relative to the segment's base in 32 bits.
        let relative_end = active.next_offset() + header.offset_count() - active.base_offset();
        full || old || relative_end > u64::from(u32::MAX)
    }

    /// Seals the active segment (fsync, so every segment but the last is whole on disk) and
    /// starts a new one.
    fn roll(&mut self) -> Result<()> {
        // Else the next segment would start at the same offset and take the same file name.
        assert!(
            self.active().base_offset() < self.active().next_offset(),
            "a sealed segment covers at least one offset"
        );
        if let Err(error) = self.active_mut().seal() {
            return Err(self.fail(error));
        }
        let (base_offset, base_raft_index) =
            (self.active().next_offset(), self.active().next_raft_index());
        // A failure here may leave the new segment's files on disk, perhaps not durably named:
        // appending on to the old segment would then contradict them after a restart.
        match self.new_segment(base_offset, base_raft_index) {
            Ok(segment) => {
                self.segments.push(segment);
                Ok(())
            }
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Gives back the space the active segment holds ahead of its end for large appends, if
    /// none came since the last call (see `Segment::give_back_idle_slack`). Called at every
    /// retention check. A failed log is left alone (its reopen cuts the file anyway).
    ///
    /// # Errors
    /// The I/O error of the cut (the log stays usable: nothing it holds changed).
    pub fn give_back_idle_slack(&mut self) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.active_mut().give_back_idle_slack()
    }

    /// Makes every append before it durable: one fsync covers all of them (group commit).
    ///
    /// # Errors
    /// An I/O error moves the log to the failed state: after a failed fsync the kernel may have
    /// dropped the unsynced pages, so only a reopen knows what is on disk.
    pub fn sync(&mut self) -> Result<()> {
        let pending = self.begin_sync()?;
        if let Err(error) = pending.complete() {
            return Err(self.fail(error));
        }
        Ok(())
    }

    /// The first half of [`PartitionLog::sync`]: takes what must be fsynced, so that the fsync
    /// itself ([`PendingSync::complete`]) can run without holding the log (readers keep reading
    /// meanwhile). Appends made after this call are not covered.
    ///
    /// # Errors
    /// A failed log; an I/O error duplicating a handle.
    pub fn begin_sync(&mut self) -> Result<PendingSync> {
        self.check_usable()?;
        let mut handles = Vec::new();
        for at in 0..self.segments.len() {
            match self.segments[at].take_unsynced() {
                Ok(Some(handle)) => handles.push(handle),
                Ok(None) => {}
                Err(error) => return Err(self.fail(error)),
            }
        }
        Ok(PendingSync { handles })
    }

    /// Records that a [`PendingSync`] failed: memory no longer knows what is on disk.
    pub fn fail_sync(&mut self, error: &Error) {
        self.failed = Some(error.to_string());
    }

    /// Reads data batches from the one that holds `offset`: zero-copy runs of whole stored
    /// batches, in order, control batches left out. The first batch may begin before `offset`
    /// (a batch is never split); the reader skips records below it. Returns at least one batch
    /// when one exists at or after `offset`, then more while the total stays within `max_bytes`.
    /// Reading at [`PartitionLog::next_offset`] returns nothing.
    ///
    /// The caller bounds reads to committed offsets; see `MappedFile` for why.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] when `offset` is below the log start or past the next
    /// offset, with the valid range.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>> {
        self.read_below(offset, u64::MAX, max_bytes)
    }

    /// [`PartitionLog::read`], but only batches that start below `end_offset` (the high
    /// watermark, for a broker serving committed data).
    ///
    /// # Errors
    /// As [`PartitionLog::read`].
    pub fn read_below(&self, offset: u64, end_offset: u64, max_bytes: usize) -> Result<Vec<Bytes>> {
        self.check_usable()?;
        let next_offset = self.next_offset();
        if offset < self.start.start_offset || offset > next_offset {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                log_start: self.start.start_offset,
                next_offset,
            });
        }
        let first = self
            .segments
            .partition_point(|segment| segment.next_offset() <= offset)
            .min(self.segments.len() - 1);
        for segment in &self.segments[first..] {
            if segment.base_offset() >= end_offset && segment.base_offset() > offset {
                break;
            }
            let spans = segment.read(offset, end_offset, max_bytes)?;
            if !spans.is_empty() {
                return Ok(spans);
            }
        }
        Ok(Vec::new())
    }

    /// The largest batch [`PartitionLog::append`] accepts.
    pub fn batch_bytes_max(&self) -> usize {
        self.config.batch_bytes_max
    }

    /// Changes the size at which the active segment rolls, for segments from now on.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] outside the limits [`LogConfig`] allows.
    pub fn set_segment_bytes_max(&mut self, segment_bytes_max: u64) -> Result<()> {
        let config = LogConfig {
            segment_bytes_max,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The first offset whose record timestamp is at or after `timestamp`; `None` when every
    /// stored record is older (a consumer then starts at [`PartitionLog::next_offset`]).
    ///
    /// # Errors
    /// I/O and corruption errors only.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        self.check_usable()?;
        for segment in &self.segments {
            if segment.max_timestamp().is_some_and(|max| max >= timestamp) {
                return segment.offset_for_timestamp(timestamp);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
