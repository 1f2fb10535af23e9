//! Moving the log start: retention removes the oldest sealed segments, and a reset empties the
//! log to restart it after a raft snapshot's index. Both anchor the new start in the log-start
//! checkpoint before any file goes, so a crash never leaves a log with a gap.

use std::path::PathBuf;

use super::PartitionLog;
use crate::storage::checkpoint::{Checkpoint, LogStart};
use crate::storage::error::{Error, Result};
use crate::storage::files;
use crate::storage::retention::{self, RetentionPolicy, SegmentMeta};
use crate::storage::segment::Segment;

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_removed: usize,
    pub bytes_removed: u64,
    pub log_start_offset: u64,
}

impl PartitionLog {
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
        let next_base_offsets: Vec<u64> = self
            .segments
            .iter()
            .skip(1)
            .map(Segment::base_offset)
            .collect();
        let mut count = retention::cap_at_floor(
            retention::plan(&metas, policy, now_ms),
            &next_base_offsets,
            policy.offset_floor,
        );
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
