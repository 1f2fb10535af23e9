//! The partition log: ordered segments that together form one partition's raft log.
//!
//! Each batch is one raft entry. Raft indexes follow from the order of batches, anchored by the
//! log-start checkpoint; offsets are stamped into each batch at append from the log before it,
//! so every replica that appends the same entries assigns the same offsets. Control batches take
//! a raft index and no offset.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, ControlType};
use super::checkpoint::{Checkpoint, LogStart};
use super::error::{Error, IoContext, Result};
use super::fault::Faults;
use super::files::{self, DELETED_SUFFIX, TMP_SUFFIX};
use super::retention::{self, RetentionPolicy, SegmentMeta};
use super::segment::{self, INDEX_SUFFIX, LOG_SUFFIX, RaftEntry, Recovery, Segment, SegmentInfo};

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

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_removed: usize,
    pub bytes_removed: u64,
    pub log_start_offset: u64,
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
    /// Opens the log in `dir`, creating it when missing, and recovers it: leftovers of
    /// interrupted deletions are removed, sealed segments are checked (their indexes rebuilt
    /// when in doubt), and the torn tail of the last segment is cut off.
    ///
    /// # Errors
    /// An invalid config; I/O errors; [`Error::Corrupt`] for damage a crash cannot explain (a bad
    /// batch in a sealed segment, a damaged checkpoint, segments that do not follow each other).
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let faults = config.faults.clone();
        if !dir.exists() {
            fs::create_dir_all(&dir).context("create directory", &dir)?;
            if let Some(parent) = dir.parent() {
                files::sync_dir(parent, faults.as_deref())?;
            }
        }
        let mut bases = Vec::new();
        let mut index_bases = Vec::new();
        for entry in fs::read_dir(&dir).context("list", &dir)? {
            let entry = entry.context("list", &dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(DELETED_SUFFIX) || name.ends_with(TMP_SUFFIX) {
                fs::remove_file(entry.path()).context("unlink", &entry.path())?;
            } else if let Some(base) = segment::parse_log_file_name(name) {
                bases.push(base);
            } else if let Some(digits) = name.strip_suffix(INDEX_SUFFIX) {
                let log_name = format!("{digits}{LOG_SUFFIX}");
                if let Some(base) = segment::parse_log_file_name(&log_name) {
                    index_bases.push(base);
                }
            }
        }
        bases.sort_unstable();

        // An index without its log is left from an interrupted removal.
        let orphans: Vec<PathBuf> = index_bases
            .iter()
            .filter(|base| bases.binary_search(base).is_err())
            .map(|base| dir.join(segment::index_file_name(*base)))
            .collect();
        if !orphans.is_empty() {
            files::remove_files(&dir, &orphans, faults.as_deref())?;
        }

        let checkpoint = Checkpoint::read(&dir)?;
        let start = checkpoint.start;
        // A pending reset means every segment present predates it; segments below the start
        // offset were being removed by retention when the process stopped.
        let stale: Vec<u64> = if checkpoint.reset_pending {
            std::mem::take(&mut bases)
        } else {
            let keep_from = bases.partition_point(|base| *base < start.start_offset);
            bases.drain(..keep_from).collect()
        };
        if !stale.is_empty() {
            let paths = segment_paths(&dir, &stale);
            files::remove_files(&dir, &paths, faults.as_deref())?;
        }

        let mut log = Self {
            dir,
            config,
            start,
            segments: Vec::with_capacity(bases.len().max(1)),
            last_term: start.prev_term,
            failed: None,
        };
        if bases.is_empty() {
            let segment = log.new_segment(start.start_offset, start.prev_raft_index + 1)?;
            log.segments.push(segment);
        }
        if checkpoint.reset_pending {
            Checkpoint {
                start,
                reset_pending: false,
            }
            .write(&log.dir, faults.as_deref())?;
        }
        let mut next = (start.start_offset, start.prev_raft_index + 1);
        for (position, base) in bases.iter().enumerate() {
            if *base != next.0 {
                return Err(Error::Corrupt {
                    path: log.dir.join(segment::log_file_name(*base)),
                    position: 0,
                    reason: format!(
                        "segment starts at offset {base} but the log before it ends at offset {}",
                        next.0
                    ),
                });
            }
            let recovery = if position + 1 == bases.len() {
                Recovery::TruncateTornTail
            } else {
                Recovery::Strict
            };
            let segment = Segment::open(
                &log.dir,
                *base,
                next.1,
                log.config.capacity_bytes(),
                log.config.index_interval_bytes,
                recovery,
                faults.clone(),
            )?;
            // Terms never decrease; the leader epoch is outside the CRC, so check it across
            // segment boundaries too (inside a segment the walk does).
            let term_before = log
                .segments
                .iter()
                .rev()
                .find_map(Segment::last_term)
                .unwrap_or(start.prev_term);
            if let Some(first_term) = segment.first_term()?
                && first_term < term_before
            {
                return Err(Error::Corrupt {
                    path: segment.log_path().to_path_buf(),
                    position: 0,
                    reason: format!("batch term {first_term} after term {term_before}"),
                });
            }
            next = (segment.next_offset(), segment.next_raft_index());
            log.segments.push(segment);
        }
        log.last_term = log.term(log.last_raft_index())?;
        Ok(log)
    }

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

    /// Appends a batch as the next raft entry, written by a leader of `term`. The batch is
    /// validated (framing, CRC-32C, record count), then stored with its base offset and leader
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
        let mut header = BatchHeader::validate(batch)?;
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

    /// Stored batches with raft indexes `from..to`, each with its term: at least one when the
    /// range is not empty, then more while the total stays within `max_bytes` (raft-rs's
    /// `Storage::entries` contract).
    ///
    /// # Errors
    /// [`Error::RaftIndexCompacted`] below [`PartitionLog::first_raft_index`],
    /// [`Error::RaftIndexUnavailable`] when `to` passes the end.
    pub fn raft_entries(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<RaftEntry>> {
        self.check_usable()?;
        let first = self.first_raft_index();
        let last = self.last_raft_index();
        if from < first {
            return Err(Error::RaftIndexCompacted {
                requested: from,
                first,
            });
        }
        if to > last + 1 {
            return Err(Error::RaftIndexUnavailable {
                requested: to - 1,
                last,
            });
        }
        let mut entries: Vec<RaftEntry> = Vec::new();
        let mut next = from;
        let mut taken_bytes = 0usize;
        for segment in &self.segments[self.segment_of_raft_index(from)..] {
            if next >= to {
                break;
            }
            let part = segment.raft_entries(next, to, max_bytes, taken_bytes)?;
            let complete = next + part.len() as u64 == segment.next_raft_index().min(to);
            next += part.len() as u64;
            taken_bytes += part.iter().map(|entry| entry.batch.len()).sum::<usize>();
            entries.extend(part);
            if !complete {
                break;
            }
        }
        Ok(entries)
    }

    /// The segment holding `raft_index` (the last one for the end of the log).
    fn segment_of_raft_index(&self, raft_index: u64) -> usize {
        self.segments
            .partition_point(|segment| segment.base_raft_index() <= raft_index)
            .saturating_sub(1)
    }

    /// Term of the entry at `raft_index`; the entry just before the log counts.
    ///
    /// # Errors
    /// [`Error::RaftIndexCompacted`], [`Error::RaftIndexUnavailable`].
    pub fn term(&self, raft_index: u64) -> Result<u64> {
        self.check_usable()?;
        let last = self.last_raft_index();
        if raft_index == self.start.prev_raft_index {
            return Ok(self.start.prev_term);
        }
        if raft_index < self.start.prev_raft_index {
            return Err(Error::RaftIndexCompacted {
                requested: raft_index,
                first: self.first_raft_index(),
            });
        }
        if raft_index > last {
            return Err(Error::RaftIndexUnavailable {
                requested: raft_index,
                last,
            });
        }
        self.segments[self.segment_of_raft_index(raft_index)].term_of(raft_index)
    }

    /// The offset after the batch at `raft_index` (for the entry just before the log, the log
    /// start offset): what the high watermark becomes once that entry commits.
    ///
    /// # Errors
    /// [`Error::RaftIndexCompacted`], [`Error::RaftIndexUnavailable`].
    pub fn offset_after_raft_index(&self, raft_index: u64) -> Result<u64> {
        self.check_usable()?;
        if raft_index == self.start.prev_raft_index {
            return Ok(self.start.start_offset);
        }
        if raft_index == self.last_raft_index() {
            return Ok(self.next_offset());
        }
        let entries = self.raft_entries(raft_index, raft_index + 1, 0)?;
        let entry = entries.first().ok_or(Error::RaftIndexUnavailable {
            requested: raft_index,
            last: self.last_raft_index(),
        })?;
        let header = BatchHeader::parse(&entry.batch)?;
        Ok(header.base_offset as u64 + header.offset_count())
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

    /// Removes the batch at `raft_index` and every batch after it, as raft does with a
    /// conflicting suffix. Offsets of the removed batches are taken again by later appends.
    /// Durable after the next [`PartitionLog::sync`].
    ///
    /// # Errors
    /// [`Error::RaftIndexCompacted`] at or below the log start's raft index,
    /// [`Error::RaftIndexUnavailable`] past the end plus one; I/O errors, after which the log
    /// is failed.
    pub fn truncate_from_raft_index(&mut self, raft_index: u64) -> Result<()> {
        self.check_usable()?;
        let last = self.last_raft_index();
        if raft_index <= self.start.prev_raft_index {
            return Err(Error::RaftIndexCompacted {
                requested: raft_index,
                first: self.first_raft_index(),
            });
        }
        if raft_index > last + 1 {
            return Err(Error::RaftIndexUnavailable {
                requested: raft_index,
                last,
            });
        }
        if raft_index == last + 1 {
            return Ok(());
        }
        let at = self.segment_of_raft_index(raft_index);
        // Drop whole segments that start at or after the cut; the first segment always stays.
        let keep = if at > 0 && self.segments[at].base_raft_index() == raft_index {
            at
        } else {
            at + 1
        };
        // Newest first, each removal durable before the next: a crash leaves a shorter log,
        // never one with a gap (which open rejects).
        while self.segments.len() > keep {
            let segment = self.segments.pop().expect("more segments than kept");
            let paths: Vec<PathBuf> = segment.paths().collect();
            drop(segment);
            if let Err(error) =
                files::remove_files(&self.dir, &paths, self.config.faults.as_deref())
            {
                return Err(self.fail(error));
            }
        }
        if self.active().next_raft_index() > raft_index
            && let Err(error) = self.active_mut().truncate_from_raft_index(raft_index)
        {
            return Err(self.fail(error));
        }
        match self.term(raft_index - 1) {
            Ok(term) => self.last_term = term,
            Err(error) => return Err(self.fail(error)),
        }
        Ok(())
    }

    /// Empties the log and restarts it after `start`, as installing a raft snapshot does (the
    /// partition's state is its log, so a snapshot is only this anchor). The next append takes
    /// raft index `start.prev_raft_index + 1` and offset `start.start_offset`.
    ///
    /// Crash-safe: the checkpoint is written first with a reset-pending flag, so a crash at any
    /// point leaves either the old log or the new, empty one.
    ///
    /// # Errors
    /// [`Error::InvalidTerm`] for a term past 2^31 - 1; I/O errors, after which the log is failed
    /// (reopening completes the reset).
    pub fn reset(&mut self, start: LogStart) -> Result<()> {
        self.check_usable()?;
        if i32::try_from(start.prev_term).is_err() {
            return Err(Error::InvalidTerm {
                term: start.prev_term,
                reason: "the batch format's leader epoch holds at most 2^31 - 1",
            });
        }
        if let Err(error) = self.reset_files(start) {
            return Err(self.fail(error));
        }
        self.start = start;
        self.last_term = start.prev_term;
        Ok(())
    }

    fn reset_files(&mut self, start: LogStart) -> Result<()> {
        let faults = self.config.faults.clone();
        Checkpoint {
            start,
            reset_pending: true,
        }
        .write(&self.dir, faults.as_deref())?;
        // The old segments stay in memory until the new one exists, so that a failed reset
        // leaves a (failed) log that still answers its getters.
        let paths: Vec<PathBuf> = self.segments.iter().flat_map(Segment::paths).collect();
        files::remove_files(&self.dir, &paths, faults.as_deref())?;
        let segment = self.new_segment(start.start_offset, start.prev_raft_index + 1)?;
        self.segments = vec![segment];
        Checkpoint {
            start,
            reset_pending: false,
        }
        .write(&self.dir, faults.as_deref())
    }

    /// Removes the oldest sealed segments that `policy` lets go (see [`retention::plan`]), but
    /// none holding a raft index above `raft_index_max` (the caller passes what raft has applied,
    /// so retention never removes entries raft still needs). The log start advances first, in
    /// the checkpoint, then the files go, renamed and unlinked.
    ///
    /// # Errors
    /// I/O errors. If the checkpoint was written the removal has happened logically; leftover
    /// files are removed at the next open.
    pub fn apply_retention(
        &mut self,
        policy: &RetentionPolicy,
        now_ms: i64,
        raft_index_max: u64,
    ) -> Result<RetentionOutcome> {
        self.check_usable()?;
        let metas: Vec<SegmentMeta> = self
            .segments
            .iter()
            .map(|segment| SegmentMeta {
                size_bytes: segment.size_bytes(),
                max_timestamp: segment.max_timestamp(),
            })
            .collect();
        let mut count = retention::plan(&metas, policy, now_ms);
        while count > 0 && self.segments[count - 1].next_raft_index() - 1 > raft_index_max {
            count -= 1;
        }
        if count == 0 {
            return Ok(RetentionOutcome {
                log_start_offset: self.start.start_offset,
                ..RetentionOutcome::default()
            });
        }
        let first_kept = &self.segments[count];
        let prev_raft_index = first_kept.base_raft_index() - 1;
        let start = LogStart {
            prev_raft_index,
            prev_term: self.segments[count - 1].term_of(prev_raft_index)?,
            start_offset: first_kept.base_offset(),
        };
        let faults = self.config.faults.clone();
        // A failed write of the checkpoint may have renamed it without a durable directory
        // entry: memory cannot tell which start the disk holds, so the log fails.
        let written = Checkpoint {
            start,
            reset_pending: false,
        }
        .write(&self.dir, faults.as_deref());
        if let Err(error) = written {
            return Err(self.fail(error));
        }
        self.start = start;
        let removed: Vec<Segment> = self.segments.drain(..count).collect();
        let bytes_removed = removed.iter().map(Segment::size_bytes).sum();
        let paths: Vec<PathBuf> = removed.iter().flat_map(Segment::paths).collect();
        drop(removed);
        // The start has moved; files left behind are removed at the next open.
        if let Err(error) = files::remove_files(&self.dir, &paths, faults.as_deref()) {
            return Err(self.fail(error));
        }
        Ok(RetentionOutcome {
            segments_removed: count,
            bytes_removed,
            log_start_offset: start.start_offset,
        })
    }
}

fn segment_paths(dir: &Path, bases: &[u64]) -> Vec<PathBuf> {
    bases
        .iter()
        .flat_map(|base| {
            [
                dir.join(segment::log_file_name(*base)),
                dir.join(segment::index_file_name(*base)),
            ]
        })
        .collect()
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
