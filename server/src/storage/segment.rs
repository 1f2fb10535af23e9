//! One segment: a `{base_offset:020}.log` of batches and its sparse `.index`.
//!
//! A segment knows the offset and raft index of its first batch; every later batch's offset and
//! raft index follow from the batches before it (one batch is one raft entry). The log file is
//! append-only and read through a memory map; reads return zero-copy [`Bytes`]. The active
//! segment's file may run on past its last batch with zeros written ahead, so that small
//! appends overwrite blocks instead of growing the file (see [`Segment::write_ahead`]); a
//! sealed segment's file ends at its last batch.
//!
//! Descriptors are budgeted (see `crate::resources`): reads go through the maps, which need
//! none, so a sealed segment holds no descriptor, and the active segment holds only its `.log`
//! (written on every append). Its `.index` gets an entry once per index interval of log, so it
//! is reopened by path for that write and closed again. A partition at rest therefore costs one
//! descriptor however many segments it holds; sealed segments cost only address space (two maps
//! each).
//!
//! This file owns the segment's files, appends, sync and sealing, and its file names; child
//! modules hold further `impl Segment` blocks: `recovery` (checking and rebuilding at open),
//! `read` (reads by offset, by raft index and by time) and `ahead` (the zeros and blocks kept
//! ahead of the active segment's end).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::BatchHeader;
use super::error::{Error, Result};
use super::fault::Faults;
use super::files::MappedFile;
use super::index::{ENTRY_BYTES, IndexEntry, IndexView};

mod ahead;
mod read;
mod recovery;

use ahead::WRITE_AHEAD_APPEND_MAX_BYTES;
#[cfg(test)]
use ahead::{
    LOG_SLACK_BYTES, LOG_SLACK_LARGE_BYTES, LOG_SLACK_LARGE_FREE_MIN_BYTES, WRITE_AHEAD_MAX_BYTES,
    WRITE_AHEAD_MIN_BYTES,
};

pub(crate) use recovery::Recovery;

/// Suffix of a segment's log file.
pub const LOG_SUFFIX: &str = ".log";
/// Suffix of a segment's index file.
pub const INDEX_SUFFIX: &str = ".index";

/// The file name of the log of the segment starting at `base_offset`.
pub fn log_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{LOG_SUFFIX}")
}

/// The file name of the index of the segment starting at `base_offset`.
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}{INDEX_SUFFIX}")
}

/// Parses `{base_offset:020}.log`; `None` for any other name.
pub fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(LOG_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a segment looks like from outside, for retention, tools and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: u64,
    pub base_raft_index: u64,
    /// The offset after the segment's last record (equal to `base_offset` when it holds none).
    pub next_offset: u64,
    pub batch_count: u64,
    pub size_bytes: u64,
    /// Largest record timestamp, `None` while the segment holds no data batch.
    pub max_timestamp: Option<i64>,
    pub index_entries: usize,
    pub log_path: PathBuf,
    /// File descriptors the segment holds: 1 for the active segment (its log), 0 once sealed.
    pub open_files: usize,
}

/// One stored batch as the raft layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftEntry {
    pub raft_index: u64,
    pub term: u64,
    /// The stored batch: whole, or its header only (see [`EntryBytes`]).
    pub batch: Bytes,
}

/// How much of each batch a read of raft entries copies out of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryBytes {
    /// The whole batch (for a follower, or a state machine that reads the records).
    Whole,
    /// A data batch's header only ([`HEADER_BYTES`](batch::HEADER_BYTES)); control batches
    /// whole. For readers of headers (applying a partition's entries, rebuilding its producer
    /// table): a committed batch is not copied to be looked at.
    DataHeaderOnly,
}

/// Where the walk of a segment stands: everything known about the batches before `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tail {
    position: u64,
    next_offset: u64,
    batch_count: u64,
    /// `i64::MIN` until a data batch is seen.
    max_timestamp: i64,
    /// Term of the batch before `position`, 0 when unknown.
    last_term: u64,
    bytes_since_index_entry: u64,
}

pub(crate) struct Segment {
    base_offset: u64,
    base_raft_index: u64,
    log: MappedFile,
    index: MappedFile,
    index_entries: usize,
    tail: Tail,
    index_interval_bytes: u64,
    /// Time of the first append since this process opened or created the segment; the age that
    /// rolls a segment counts from it. Local and not persisted: segment boundaries need not match
    /// across replicas, and a producer's timestamps must not decide how often we roll.
    first_append_ms: Option<i64>,
    /// Appends not yet covered by an fsync.
    dirty: bool,
    /// End of the blocks allocated ahead of the log end (see [`ahead::LOG_SLACK_BYTES`]); 0 if
    /// none.
    slack_end: u64,
    /// End of the zeros written past the log end ([`Segment::write_ahead`]), which is the
    /// file's length when above the log end; 0 if none.
    written_end: u64,
    /// How far ahead of the log end the last refill wrote zeros (0 before the first): the
    /// next refill comes once less than half of it is left, and writes twice as far.
    write_ahead_window: u64,
    /// No zeros are written past this: the end of a full segment and the batch that rolls it;
    /// 0 once a refill failed.
    write_ahead_limit: u64,
    /// Where the segment stands for [`Segment::give_back_idle_slack`].
    quiet: ahead::Quiet,
}

impl Segment {
    /// Creates the files of a new, empty segment. The caller fsyncs the directory.
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        base_raft_index: u64,
        capacity_bytes: usize,
        index_interval_bytes: u64,
        faults: Option<Arc<Faults>>,
    ) -> Result<Self> {
        let log = MappedFile::open(
            &dir.join(log_file_name(base_offset)),
            true,
            capacity_bytes,
            faults.clone(),
        )?;
        let index = MappedFile::open(
            &dir.join(index_file_name(base_offset)),
            true,
            index_capacity_bytes(capacity_bytes, index_interval_bytes),
            faults,
        )?;
        let mut segment = Self::new(
            base_offset,
            base_raft_index,
            log,
            index,
            index_interval_bytes,
            capacity_bytes as u64,
        );
        segment.keep_slack(0);
        segment.quiet = ahead::Quiet::Checked;
        segment.index.close();
        Ok(segment)
    }

    /// Opens an existing segment and recovers it: validates the index against the log and
    /// rebuilds it when in doubt, walks the batches the index does not cover, and deals with a
    /// bad batch as `recovery` says. A missing `.index` is rebuilt.
    ///
    /// # Errors
    /// I/O errors; [`Error::Corrupt`] for a bad batch under [`Recovery::Strict`].
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        base_raft_index: u64,
        capacity_bytes: usize,
        index_interval_bytes: u64,
        recovery: Recovery,
        faults: Option<Arc<Faults>>,
    ) -> Result<Self> {
        let log = MappedFile::open(
            &dir.join(log_file_name(base_offset)),
            false,
            capacity_bytes,
            faults.clone(),
        )?;
        let index_path = dir.join(index_file_name(base_offset));
        let index_capacity = index_capacity_bytes(capacity_bytes, index_interval_bytes);
        let index = match MappedFile::open(&index_path, false, index_capacity, faults.clone()) {
            Ok(index) => index,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                MappedFile::open(&index_path, true, index_capacity, faults)?
            }
            Err(error) => return Err(error),
        };
        let mut segment = Self::new(
            base_offset,
            base_raft_index,
            log,
            index,
            index_interval_bytes,
            capacity_bytes as u64,
        );
        segment.recover(recovery)?;
        if recovery == Recovery::TruncateTornTail {
            // The active segment: blocks allocated ahead by the last run are found again here
            // (allocating an allocated range takes no space).
            segment.keep_slack(0);
            segment.index.close();
        }
        if recovery == Recovery::Strict {
            // A sealed segment no longer changes. An index rebuilt just now need not be synced:
            // it is a hint, validated at every open.
            segment.close_files();
        }
        Ok(segment)
    }

    fn new(
        base_offset: u64,
        base_raft_index: u64,
        log: MappedFile,
        index: MappedFile,
        index_interval_bytes: u64,
        write_ahead_limit: u64,
    ) -> Self {
        Self {
            base_offset,
            base_raft_index,
            log,
            index,
            index_entries: 0,
            tail: Tail {
                position: 0,
                next_offset: base_offset,
                batch_count: 0,
                max_timestamp: i64::MIN,
                last_term: 0,
                bytes_since_index_entry: 0,
            },
            index_interval_bytes,
            first_append_ms: None,
            dirty: false,
            slack_end: 0,
            written_end: 0,
            write_ahead_window: 0,
            write_ahead_limit,
            quiet: ahead::Quiet::Opened,
        }
    }

    /// The index entry to add before a batch appended at `tail.position`, if one is due.
    fn index_entry_due(&self, tail: &Tail) -> Option<IndexEntry> {
        (tail.position > 0 && tail.bytes_since_index_entry >= self.index_interval_bytes).then(
            || IndexEntry {
                relative_offset: (tail.next_offset - self.base_offset) as u32,
                relative_raft_index: tail.batch_count as u32,
                position: tail.position as u32,
                max_timestamp_before: tail.max_timestamp,
            },
        )
    }

    fn write_index_entries(&mut self, entries: &[IndexEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        let position = (self.index_entries * ENTRY_BYTES) as u64;
        if let Err(error) = self.index.write_at(&bytes, position) {
            self.index.set_length(position)?;
            return Err(error);
        }
        self.index_entries += entries.len();
        Ok(())
    }

    fn index_view(&self) -> IndexView<'_> {
        IndexView::new(self.index.view(0..self.index_entries * ENTRY_BYTES))
    }

    /// Appends a validated batch given as its stamped header (`head`) and the rest (`tail`).
    /// On error the segment is unchanged on disk, unless
    /// rolling back the partial write failed too: then the error says so and the caller must
    /// treat the log as failed ([`Segment::append`] returns `Err((error, false))`).
    pub(crate) fn append(
        &mut self,
        head: &[u8],
        tail: &[u8],
        header: &BatchHeader,
        now_ms: i64,
    ) -> Result<(), (Error, bool)> {
        // Offsets are dense: the log stamps each batch with the offset after the last one.
        assert_eq!(
            header.base_offset as u64, self.tail.next_offset,
            "a batch is appended at its segment's next offset"
        );
        let position = self.tail.position;
        let entry = self.index_entry_due(&self.tail);
        let written = self.log.write_parts_at([head, tail], position);
        if let Err(error) = written {
            let consistent = self.log.set_length(position).is_ok();
            return Err((error, consistent));
        }
        if let Some(entry) = entry {
            let written = self.write_index_entries(&[entry]);
            // One entry per index interval: not worth a descriptor held between them.
            self.index.close();
            if let Err(error) = written {
                let consistent = self.log.set_length(position).is_ok();
                return Err((error, consistent));
            }
            self.tail.bytes_since_index_entry = 0;
        }
        advance(&mut self.tail, header);
        self.first_append_ms.get_or_insert(now_ms);
        self.dirty = true;
        self.quiet = ahead::Quiet::Appended;
        if (head.len() + tail.len()) as u64 <= WRITE_AHEAD_APPEND_MAX_BYTES {
            self.write_ahead();
        }
        self.keep_slack(head.len() + tail.len());
        Ok(())
    }

    /// Makes every append to this segment durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.log.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// A handle that makes every append so far durable when synced, if any is not yet; the
    /// segment counts them as synced from now on (the caller must complete the sync or fail
    /// the log).
    pub(crate) fn take_unsynced(&mut self) -> Result<Option<super::files::SyncHandle>> {
        if !self.dirty {
            return Ok(None);
        }
        // Appends are written through an open file and a file is closed only once synced
        // (see `close_files`), so a dirty segment always yields a handle.
        let handle = self.log.sync_handle();
        self.dirty = false;
        Ok(handle)
    }

    /// Closes the segment's file descriptors; reads keep working through the maps, and the
    /// next change reopens the files. Only a segment with nothing left to sync may be closed.
    pub(crate) fn close_files(&mut self) {
        assert!(!self.dirty, "a segment is closed only once synced");
        self.log.close();
        self.index.close();
    }

    /// File descriptors the segment holds now (0 to 2).
    pub(crate) fn open_files(&self) -> usize {
        usize::from(self.log.is_open()) + usize::from(self.index.is_open())
    }

    /// Makes the segment whole on disk before the next one is created: its log, and its index
    /// too, so that recovery can trust a sealed segment's index after a crash.
    ///
    /// A sealed segment no longer changes, so its files are closed (see the module doc).
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.sync()?;
        self.index.sync()?;
        if self.slack_end.max(self.written_end) > self.tail.position {
            // Cutting the file at its own length frees the blocks allocated past it (a hole
            // punched past the end would not: file systems clamp punches to the length).
            self.log.set_length(self.tail.position)?;
            if self.written_end > self.tail.position {
                // The zeros written ahead made the file longer than its batches: the new length
                // must be durable before the next segment exists, because a sealed segment is
                // opened strictly and zeros after its last batch would be damage.
                self.log.sync()?;
            }
            self.slack_end = 0;
            self.written_end = 0;
        }
        self.close_files();
        Ok(())
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub(crate) fn base_raft_index(&self) -> u64 {
        self.base_raft_index
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.tail.next_offset
    }

    /// The raft index the next batch appended here would take.
    pub(crate) fn next_raft_index(&self) -> u64 {
        self.base_raft_index + self.tail.batch_count
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.tail.position
    }

    /// Term of the first batch; `None` for an empty segment.
    pub(crate) fn first_term(&self) -> Result<Option<u64>> {
        if self.tail.position == 0 {
            return Ok(None);
        }
        Ok(Some(self.header_at(0)?.partition_leader_epoch as u64))
    }

    /// Term of the last batch; `None` for an empty segment.
    pub(crate) fn last_term(&self) -> Option<u64> {
        (self.tail.batch_count > 0).then_some(self.tail.last_term)
    }

    pub(crate) fn max_timestamp(&self) -> Option<i64> {
        (self.tail.max_timestamp != i64::MIN).then_some(self.tail.max_timestamp)
    }

    pub(crate) fn first_append_ms(&self) -> Option<i64> {
        self.first_append_ms
    }

    /// The segment's files: its log, then its index.
    pub(crate) fn paths(&self) -> impl Iterator<Item = PathBuf> + use<> {
        [
            self.log.path().to_path_buf(),
            self.index.path().to_path_buf(),
        ]
        .into_iter()
    }

    pub(crate) fn log_path(&self) -> &Path {
        self.log.path()
    }

    pub(crate) fn info(&self) -> SegmentInfo {
        SegmentInfo {
            base_offset: self.base_offset,
            base_raft_index: self.base_raft_index,
            next_offset: self.tail.next_offset,
            batch_count: self.tail.batch_count,
            size_bytes: self.tail.position,
            max_timestamp: self.max_timestamp(),
            index_entries: self.index_entries,
            log_path: self.log.path().to_path_buf(),
            open_files: self.open_files(),
        }
    }

    fn corrupt(&self, position: u64, reason: String) -> Error {
        Error::Corrupt {
            path: self.log.path().to_path_buf(),
            position,
            reason,
        }
    }

    /// Header of the batch at `position`, which must be a batch boundary below the end. Stored
    /// bytes can rot after they were checked, so a header that no longer parses, or whose batch
    /// runs past the end, is a corruption error rather than a panic.
    fn header_at(&self, position: u64) -> Result<BatchHeader> {
        let end = self.tail.position as usize;
        let bytes = self.log.view(position as usize..end);
        let header =
            BatchHeader::parse(bytes).map_err(|e| self.corrupt(position, e.to_string()))?;
        if header.total_bytes() > bytes.len() {
            return Err(self.corrupt(
                position,
                format!(
                    "batch of {} bytes runs past the end of the log",
                    header.total_bytes()
                ),
            ));
        }
        Ok(header)
    }

    /// Removes the batch with raft index `raft_index` and every batch after it. The files' new
    /// lengths are durable after the next [`Segment::sync`].
    pub(crate) fn truncate_from_raft_index(&mut self, raft_index: u64) -> Result<()> {
        let position = self.position_of_raft_index(raft_index)?;
        let view = self.index_view();
        let kept_entries = view.count_where(|e| u64::from(e.position) < position);
        let kept = kept_entries.checked_sub(1).map(|at| view.get(at));
        self.log.set_length(position)?;
        self.index.set_length((kept_entries * ENTRY_BYTES) as u64)?;
        self.index_entries = kept_entries;
        let from = self.tail_at(kept);
        let (tail, entries, invalid) = self.walk(from, position, false);
        // A segment that was sealed was opened trusting its index, so bytes before its last
        // index entry were not walked then: they may have rotted since.
        if let Some(invalid) = invalid {
            return Err(self.corrupt(invalid.position, invalid.reason));
        }
        // Entries are due here only when the index interval changed since they were written.
        self.write_index_entries(&entries)?;
        // Truncation is rare (a raft leader change); making it durable at once means a crash
        // can never bring back index entries for batches that are gone.
        self.log.sync()?;
        self.index.sync()?;
        self.index.close();
        self.tail = tail;
        self.dirty = true;
        // Truncating freed every block past the new end, those allocated or written ahead
        // included.
        self.slack_end = 0;
        self.written_end = 0;
        self.keep_slack(0);
        Ok(())
    }
}

fn advance(tail: &mut Tail, header: &BatchHeader) {
    let size = header.total_bytes() as u64;
    tail.position += size;
    tail.next_offset += header.offset_count();
    tail.batch_count += 1;
    if !header.is_control() {
        tail.max_timestamp = tail.max_timestamp.max(header.max_timestamp);
    }
    tail.last_term = header.partition_leader_epoch as u64;
    tail.bytes_since_index_entry += size;
}

/// Room for every index entry a segment of `capacity_bytes` can need, with some to spare.
fn index_capacity_bytes(capacity_bytes: usize, index_interval_bytes: u64) -> usize {
    (capacity_bytes / index_interval_bytes.max(1) as usize + 2) * ENTRY_BYTES
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
