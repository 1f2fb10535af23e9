//! One segment: a `{base_offset:020}.log` of batches and its sparse `.index`.
//!
//! A segment knows the offset and raft index of its first batch; every later batch's offset and
//! raft index follow from the batches before it (one batch is one raft entry). The log file is
//! append-only and read through a memory map; reads return zero-copy [`Bytes`].
//!
//! Descriptors are budgeted (see `crate::resources`): reads go through the maps, which need
//! none, so a sealed segment holds no descriptor, and the active segment holds only its `.log`
//! (written on every append). Its `.index` gets an entry once per index interval of log, so it
//! is reopened by path for that write and closed again. A partition at rest therefore costs one
//! descriptor however many segments it holds; sealed segments cost only address space (two maps
//! each).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{self, BatchHeader, HEADER_BYTES};
use super::error::{Error, Result};
use super::fault::Faults;
use super::files::MappedFile;
use super::index::{ENTRY_BYTES, IndexEntry, IndexView};

/// Disk space kept allocated past the end of the active segment's log, so that the small
/// entries a node appends by itself (a new leader's no-op, a configuration change) fit even
/// when the disk is full. Topped up once less than half is left; given back when sealed.
const LOG_SLACK_BYTES: u64 = 16 << 10;

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
    /// The whole stored batch.
    pub batch: Bytes,
}

/// How to treat a batch that fails its checks while a segment is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The last segment: bytes after the last good batch are a torn write and are cut off.
    TruncateTornTail,
    /// A sealed segment was fsynced before the next one was created: damage is an error.
    Strict,
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

/// A batch that failed its checks during a walk.
struct Invalid {
    position: u64,
    reason: String,
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
    /// End of the blocks allocated ahead of the log end (see [`LOG_SLACK_BYTES`]); 0 if none.
    slack_end: u64,
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
        );
        segment.keep_slack();
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
        );
        segment.recover(recovery)?;
        if recovery == Recovery::TruncateTornTail {
            // The active segment: blocks allocated ahead by the last run are found again here
            // (allocating an allocated range takes no space).
            segment.keep_slack();
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
        }
    }

    fn recover(&mut self, recovery: Recovery) -> Result<()> {
        let log_length = self.log.file_length()?;
        let start = match recovery {
            Recovery::Strict => self.load_index(log_length)?,
            // The last segment may end in a torn write, and its index may point into it: always
            // rebuild both from the batches that pass every check.
            Recovery::TruncateTornTail => None,
        };
        if start.is_none() {
            self.index.set_length(0)?;
            self.index_entries = 0;
        }
        let from = self.tail_at(start);
        let (tail, entries, invalid) = self.walk(from, log_length, true);
        if let Some(invalid) = invalid {
            match recovery {
                Recovery::Strict => {
                    return Err(Error::Corrupt {
                        path: self.log.path().to_path_buf(),
                        position: invalid.position,
                        reason: invalid.reason,
                    });
                }
                Recovery::TruncateTornTail => {
                    self.log.set_length(invalid.position)?;
                }
            }
        }
        if recovery == Recovery::TruncateTornTail {
            // Whatever survived in the page cache is made durable now, so everything the open
            // log holds is on disk (the raft layer relies on it; see the driver).
            self.log.sync()?;
        }
        // The index is a hint: on a full disk the node must still start (and serve reads and
        // deletes), so entries that cannot be written are left out; lookups then walk further.
        match self.write_index_entries(&entries) {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if is_disk_full(&source) => {}
            Err(error) => return Err(error),
        }
        self.tail = tail;
        Ok(())
    }

    /// Reads and checks the index. Returns the last entry when every entry is trustworthy,
    /// `None` when the index must be rebuilt from the log.
    fn load_index(&mut self, log_length: u64) -> Result<Option<IndexEntry>> {
        let index_length = self.index.file_length()? as usize;
        if !index_length.is_multiple_of(ENTRY_BYTES) {
            return Ok(None);
        }
        let log = self.log.view(0..log_length as usize);
        let bytes = self.index.view(0..index_length);
        let mut previous: Option<IndexEntry> = None;
        for chunk in bytes.chunks_exact(ENTRY_BYTES) {
            let chunk: &[u8; ENTRY_BYTES] = chunk.try_into().expect("exact chunk");
            let Some(entry) = IndexEntry::decode(chunk) else {
                return Ok(None);
            };
            if !entry.follows(previous.as_ref()) {
                return Ok(None);
            }
            let position = entry.position as usize;
            if position + HEADER_BYTES > log.len() {
                return Ok(None);
            }
            match BatchHeader::parse(&log[position..]) {
                Ok(header)
                    if header.base_offset as u64
                        == self.base_offset + u64::from(entry.relative_offset) => {}
                _ => return Ok(None),
            }
            previous = Some(entry);
        }
        self.index_entries = index_length / ENTRY_BYTES;
        Ok(previous)
    }

    /// The walk state at an index entry (or at the start of the segment).
    fn tail_at(&self, entry: Option<IndexEntry>) -> Tail {
        match entry {
            None => Tail {
                position: 0,
                next_offset: self.base_offset,
                batch_count: 0,
                max_timestamp: i64::MIN,
                last_term: 0,
                bytes_since_index_entry: 0,
            },
            Some(entry) => Tail {
                position: u64::from(entry.position),
                next_offset: self.base_offset + u64::from(entry.relative_offset),
                batch_count: u64::from(entry.relative_raft_index),
                max_timestamp: entry.max_timestamp_before,
                last_term: 0,
                bytes_since_index_entry: 0,
            },
        }
    }

    /// Walks the batches from `from` to `end`, checking framing, offsets, terms and (with
    /// `check_crc`) checksums. Returns where the walk ended, the index entries due on the way,
    /// and the first bad batch if there was one.
    fn walk(
        &self,
        from: Tail,
        end: u64,
        check_crc: bool,
    ) -> (Tail, Vec<IndexEntry>, Option<Invalid>) {
        let log = self.log.view(0..end as usize);
        let mut tail = from;
        let mut entries = Vec::new();
        while tail.position < end {
            let position = tail.position as usize;
            let header = match check_batch(&log[position..], &tail, check_crc) {
                Ok(header) => header,
                Err(reason) => {
                    let invalid = Invalid {
                        position: tail.position,
                        reason,
                    };
                    return (tail, entries, Some(invalid));
                }
            };
            if let Some(entry) = self.index_entry_due(&tail) {
                entries.push(entry);
                tail.bytes_since_index_entry = 0;
            }
            advance(&mut tail, &header);
        }
        (tail, entries, None)
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
        let written = self
            .log
            .write_at(head, position)
            .and_then(|()| self.log.write_at(tail, position + head.len() as u64));
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
        self.keep_slack();
        Ok(())
    }

    /// Keeps about [`LOG_SLACK_BYTES`] allocated past the end of the log (best effort: on a
    /// full disk there is nothing to take, and appends then fail as they would have).
    fn keep_slack(&mut self) {
        let end = self.tail.position;
        if self.slack_end >= end + LOG_SLACK_BYTES / 2 {
            return;
        }
        if self.log.allocate_ahead(end, LOG_SLACK_BYTES) {
            self.slack_end = end + LOG_SLACK_BYTES;
        }
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
        if self.slack_end > self.tail.position {
            // Cutting the file at its own length frees the blocks allocated past it (a hole
            // punched past the end would not: file systems clamp punches to the length).
            self.log.set_length(self.tail.position)?;
            self.slack_end = 0;
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

    /// Data batches from the one holding `offset` on and starting below `end_offset`, as
    /// zero-copy runs of contiguous data batches (control batches end a run and are left out). At least one batch when any holds
    /// an offset at or after `offset`, then more while the total stays within `max_bytes`.
    pub(crate) fn read(
        &self,
        offset: u64,
        end_offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>> {
        let relative = offset.saturating_sub(self.base_offset);
        let hint = self
            .index_view()
            .last_where(|e| u64::from(e.relative_offset) <= relative);
        let mut position = hint.map_or(0, |e| u64::from(e.position));
        let mut expected_offset =
            self.base_offset + hint.map_or(0, |e| u64::from(e.relative_offset));
        let mut spans = Vec::new();
        let mut span_start: Option<u64> = None;
        let mut total = 0usize;
        while position < self.tail.position {
            let header = self.header_at(position)?;
            if header.base_offset as u64 >= end_offset {
                break;
            }
            // The CRC does not cover the base offset: check it follows the batch before.
            if header.base_offset as u64 != expected_offset {
                return Err(self.corrupt(
                    position,
                    format!(
                        "base offset {} where {expected_offset} was expected",
                        header.base_offset
                    ),
                ));
            }
            expected_offset += header.offset_count();
            let size = header.total_bytes() as u64;
            let last_offset = (header.base_offset as u64 + header.offset_count()).checked_sub(1);
            let wanted = !header.is_control() && last_offset.is_some_and(|last| last >= offset);
            if wanted {
                if total > 0 && total + size as usize > max_bytes {
                    break;
                }
                span_start.get_or_insert(position);
                total += size as usize;
            } else if let Some(start) = span_start.take() {
                spans.push(self.log.slice(start as usize..position as usize));
            }
            position += size;
        }
        if let Some(start) = span_start {
            spans.push(self.log.slice(start as usize..position as usize));
        }
        Ok(spans)
    }

    /// Position of the batch with raft index `raft_index`, which must be in this segment or
    /// equal to [`Segment::next_raft_index`] (the end).
    fn position_of_raft_index(&self, raft_index: u64) -> Result<u64> {
        let relative = raft_index - self.base_raft_index;
        let hint = self
            .index_view()
            .last_where(|e| u64::from(e.relative_raft_index) <= relative);
        let (mut position, mut count) = hint.map_or((0, 0), |e| {
            (u64::from(e.position), u64::from(e.relative_raft_index))
        });
        while count < relative {
            position += self.header_at(position)?.total_bytes() as u64;
            count += 1;
        }
        Ok(position)
    }

    /// Batches with raft indexes from `from` up to `to` (exclusive, clipped to this segment)
    /// while the total, counting `taken_bytes` already collected elsewhere, stays within
    /// `max_bytes`; but at least one when nothing was taken yet.
    pub(crate) fn raft_entries(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
        taken_bytes: usize,
    ) -> Result<Vec<RaftEntry>> {
        let to = to.min(self.next_raft_index());
        let mut position = self.position_of_raft_index(from)?;
        let mut entries = Vec::new();
        let mut total = taken_bytes;
        for raft_index in from..to {
            let header = self.header_at(position)?;
            let size = header.total_bytes();
            if total > 0 && total + size > max_bytes {
                break;
            }
            // A copy, unlike consumer reads: raft reads entries that are not committed yet and
            // may be truncated while a message carrying them still waits to be sent, which must
            // neither fault on a truncated page nor see a later entry's bytes.
            let stored = self.log.view(position as usize..position as usize + size);
            entries.push(RaftEntry {
                raft_index,
                term: header.partition_leader_epoch as u64,
                batch: Bytes::copy_from_slice(stored),
            });
            total += size;
            position += size as u64;
        }
        Ok(entries)
    }

    /// Term of the batch with raft index `raft_index` (in this segment).
    pub(crate) fn term_of(&self, raft_index: u64) -> Result<u64> {
        let position = self.position_of_raft_index(raft_index)?;
        Ok(self.header_at(position)?.partition_leader_epoch as u64)
    }

    /// The first offset whose record timestamp is at or after `timestamp`, if this segment
    /// holds one. For a compressed batch, whose records the broker does not decode, the
    /// batch's base offset.
    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let hint = self
            .index_view()
            .last_where(|e| e.max_timestamp_before < timestamp);
        let mut position = hint.map_or(0, |e| u64::from(e.position));
        while position < self.tail.position {
            let header = self.header_at(position)?;
            let size = header.total_bytes();
            if !header.is_control() && header.max_timestamp >= timestamp {
                let bytes = self.log.slice(position as usize..position as usize + size);
                // Damage is an error; records the producer encoded badly (under a valid CRC)
                // or compressed are not ours to judge here: answer with the batch's start.
                if let Err(error) = header.check_crc(&bytes) {
                    return Err(self.corrupt(position, error.to_string()));
                }
                let found = match batch::decode_records(&bytes) {
                    Ok(records) => records
                        .iter()
                        .find(|r| r.timestamp >= timestamp)
                        .map_or(header.base_offset as u64, |r| r.offset),
                    Err(_) => header.base_offset as u64,
                };
                return Ok(Some(found));
            }
            position += size as u64;
        }
        Ok(None)
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
        // Truncating freed every block past the new end, those allocated ahead included.
        self.slack_end = 0;
        self.keep_slack();
        Ok(())
    }
}

/// Checks the batch at the start of `bytes` against everything known before it.
fn check_batch(bytes: &[u8], tail: &Tail, check_crc: bool) -> Result<BatchHeader, String> {
    let header = BatchHeader::parse(bytes).map_err(|e| e.to_string())?;
    let size = header.total_bytes();
    if size > bytes.len() {
        return Err(format!(
            "batch of {size} bytes runs past the end of the file ({} bytes left)",
            bytes.len()
        ));
    }
    if header.base_offset < 0 || header.base_offset as u64 != tail.next_offset {
        return Err(format!(
            "batch base offset {} where {} was expected",
            header.base_offset, tail.next_offset
        ));
    }
    if header.partition_leader_epoch < 0 || (header.partition_leader_epoch as u64) < tail.last_term
    {
        return Err(format!(
            "batch term {} after term {}",
            header.partition_leader_epoch, tail.last_term
        ));
    }
    if check_crc {
        header
            .check_crc(&bytes[..size])
            .map_err(|e| e.to_string())?;
    }
    Ok(header)
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

/// True for the errors of a file system without room (ENOSPC, EDQUOT).
fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Room for every index entry a segment of `capacity_bytes` can need, with some to spare.
fn index_capacity_bytes(capacity_bytes: usize, index_interval_bytes: u64) -> usize {
    (capacity_bytes / index_interval_bytes.max(1) as usize + 2) * ENTRY_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(index_file_name(42), "00000000000000000042.index");
        let table = [
            ("00000000000000000042.log", Some(42)),
            ("18446744073709551615.log", Some(u64::MAX)),
            ("0000000000000000042.log", None),
            ("0000000000000000004x.log", None),
            ("00000000000000000042.index", None),
            ("99999999999999999999.log", None),
        ];
        for (name, expected) in table {
            assert_eq!(parse_log_file_name(name), expected, "{name}");
        }
    }

    fn small_log(dir: &Path) -> super::super::PartitionLog {
        let config = super::super::LogConfig {
            segment_bytes_max: 1024,
            batch_bytes_max: 1024,
            index_interval_bytes: 256,
            ..super::super::LogConfig::default()
        };
        super::super::PartitionLog::open(dir, config).expect("open")
    }

    fn fill(log: &mut super::super::PartitionLog, batches: usize) {
        for at in 0..batches {
            let mut builder = batch::BatchBuilder::new();
            builder.push(at as i64, None, Some(&[7u8; 200][..]), &[]);
            let batch = builder.finish();
            log.append(&batch, 1, at as i64).expect("append");
        }
        log.sync().expect("sync");
    }

    /// Sealed segments hold no descriptor (after a roll and after a reopen), reads of them
    /// still work through their maps, and a truncation back into a sealed segment reopens it.
    #[test]
    fn sealed_segments_hold_no_file_descriptors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = small_log(dir.path());
        fill(&mut log, 30);
        let check = |log: &super::super::PartitionLog| {
            let segments = log.segments();
            assert!(segments.len() > 3, "{} segments", segments.len());
            let (active, sealed) = segments.split_last().expect("a segment");
            assert_eq!(active.open_files, 1);
            for segment in sealed {
                assert_eq!(segment.open_files, 0, "{:?}", segment.log_path);
            }
        };
        check(&log);
        assert_eq!(log.read(0, 1 << 20).expect("read").len(), 1);
        // The active segment keeps blocks allocated past its end; sealed ones gave theirs back.
        // (Where fallocate is not supported both are plain files, and only the second holds.)
        let allocated = |info: &SegmentInfo| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&info.log_path).expect("stat").blocks() * 512
        };
        let segments = log.segments();
        let (active, sealed) = segments.split_last().expect("a segment");
        let slack_supported = allocated(active) >= active.size_bytes + LOG_SLACK_BYTES / 2;
        println!("active segment: {} bytes allocated", allocated(active));
        for segment in sealed {
            assert!(
                allocated(segment) <= segment.size_bytes.next_multiple_of(4096),
                "{} bytes allocated for {}",
                allocated(segment),
                segment.size_bytes
            );
        }
        drop(log);
        let mut log = small_log(dir.path());
        check(&log);
        let entries = log.raft_entries(1, 31, 1 << 20).expect("entries");
        assert_eq!(entries.len(), 30);
        // Back into the first segment: it becomes active again, with its files reopened.
        log.truncate_from_raft_index(3).expect("truncate");
        let segments = log.segments();
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].open_files, 1);
        fill(&mut log, 30);
        check(&log);
        assert_eq!(log.last_raft_index(), 32);
        if slack_supported {
            let segments = log.segments();
            let active = segments.last().expect("a segment");
            assert!(allocated(active) >= active.size_bytes + LOG_SLACK_BYTES / 2);
        }
    }
}
