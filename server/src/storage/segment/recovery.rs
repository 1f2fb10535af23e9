//! Recovery of a segment when it is opened: checking its index against the log (rebuilding it
//! when in doubt), walking and checking the batches it does not cover, and dealing with a bad
//! batch as the segment's [`Recovery`] mode says. Truncation reuses the same walk.

use crate::storage::batch::{BatchHeader, HEADER_BYTES};
use crate::storage::error::{Error, Result};
use crate::storage::index::{ENTRY_BYTES, IndexEntry};

use super::{Segment, Tail, advance};

/// How to treat a batch that fails its checks while a segment is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The last segment: bytes after the last good batch are a torn write and are cut off.
    TruncateTornTail,
    /// A sealed segment was fsynced before the next one was created: damage is an error.
    Strict,
}

/// A batch that failed its checks during a walk.
pub(super) struct Invalid {
    pub(super) position: u64,
    pub(super) reason: String,
}

impl Segment {
    /// Brings the walk state, the index and (under [`Recovery::TruncateTornTail`]) the log
    /// length in line with the batches that pass every check.
    pub(super) fn recover(&mut self, recovery: Recovery) -> Result<()> {
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
    pub(super) fn tail_at(&self, entry: Option<IndexEntry>) -> Tail {
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
    pub(super) fn walk(
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

/// True for the errors of a file system without room (ENOSPC, EDQUOT).
fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
