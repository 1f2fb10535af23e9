//! The log seen by raft: entries and terms by raft index, the offset a raft index commits up
//! to, and truncation of a conflicting suffix. Raft indexes follow from the order of batches,
//! anchored by the log start.

use std::path::PathBuf;

use super::PartitionLog;
use crate::storage::batch::BatchHeader;
use crate::storage::error::{Error, Result};
use crate::storage::files;
use crate::storage::segment::{EntryBytes, RaftEntry};

impl PartitionLog {
    /// Stored batches with raft indexes `from..to`, each with its term, whole or as headers
    /// (`bytes`): at least one when the range is not empty, then more while the total of what
    /// is returned stays within `max_bytes` (raft-rs's `Storage::entries` contract).
    ///
    /// # Errors
    /// [`Error::RaftIndexCompacted`] below [`PartitionLog::first_raft_index`],
    /// [`Error::RaftIndexUnavailable`] when `to` passes the end.
    pub fn raft_entries(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
        bytes: EntryBytes,
    ) -> Result<Vec<RaftEntry>> {
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
            let part = segment.raft_entries(next, to, max_bytes, taken_bytes, bytes)?;
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
        let entries =
            self.raft_entries(raft_index, raft_index + 1, 0, EntryBytes::DataHeaderOnly)?;
        let entry = entries.first().ok_or(Error::RaftIndexUnavailable {
            requested: raft_index,
            last: self.last_raft_index(),
        })?;
        let header = BatchHeader::parse(&entry.batch)?;
        Ok(header.base_offset as u64 + header.offset_count())
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
}
