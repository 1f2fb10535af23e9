//! Space ahead of the active segment's log end: zeros written ahead for small appends
//! ([`Segment::write_ahead`]), blocks allocated ahead ([`Segment::keep_slack`]), and the
//! large slack given back once the partition goes quiet ([`Segment::give_back_idle_slack`]).

use super::Segment;
use crate::storage::error::Result;

/// Disk space kept allocated past the end of the active segment's log, so that the small
/// entries a node appends by itself (a new leader's no-op, a configuration change) fit even
/// when the disk is full. Topped up once less than half is left; given back when sealed.
pub(super) const LOG_SLACK_BYTES: u64 = 16 << 10;
/// Disk space kept allocated past the end of the log after an append too large to write zeros
/// ahead for ([`WRITE_AHEAD_APPEND_MAX_BYTES`]), so that such appends find their blocks
/// allocated. See [`Segment::keep_slack`].
pub(super) const LOG_SLACK_LARGE_BYTES: u64 = 4 << 20;
/// Large appends keep [`LOG_SLACK_LARGE_BYTES`] only on a file system with at least this much
/// free; below it they keep [`LOG_SLACK_BYTES`], as small ones do. See [`Segment::keep_slack`].
pub(super) const LOG_SLACK_LARGE_FREE_MIN_BYTES: u64 = 1 << 30;

/// Zeros written ahead of the active segment's log end, the first time it runs low after the
/// segment was created or opened; each refill writes twice as much, up to
/// [`WRITE_AHEAD_MAX_BYTES`]. See [`Segment::write_ahead`].
pub(super) const WRITE_AHEAD_MIN_BYTES: u64 = 64 << 10;
/// The most zeros written ahead of the log end (and so the most disk an active segment holds
/// beyond its data, besides [`LOG_SLACK_BYTES`]).
pub(super) const WRITE_AHEAD_MAX_BYTES: u64 = 1 << 20;

/// Only appends up to this size write zeros ahead. The zeros save each fsync a metadata write
/// (about the time the disk takes to write 100–200 KB here) but cost their own bytes of
/// disk bandwidth, so they pay for small appends (single records, a trickle) and not for
/// large batches, whose fsyncs measured no faster with them.
pub(super) const WRITE_AHEAD_APPEND_MAX_BYTES: u64 = 64 << 10;

/// Where a segment stands between appends and the checks of
/// [`Segment::give_back_idle_slack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quiet {
    /// Opened, not checked yet: what the last run left allocated past the end is unknown, so
    /// the first check gives it back.
    Opened,
    /// An append came since the last check.
    Appended,
    /// Checked with no append since: the next check gives back the large slack, if held.
    Checked,
    /// Nothing more to give back until an append comes.
    Settled,
}

impl Segment {
    /// Keeps zeros written ahead of the log end, so that appends overwrite blocks the file
    /// already has instead of extending it. An `fdatasync` after an append that extends the
    /// file must also make the file's metadata durable (the new length, the extent that became
    /// written): a journal commit on a journaled ext4 or XFS, a synchronous write of the inode
    /// on this machine's ext4, which has no journal (`ext4_fsync_nojournal` in the profile).
    /// One after an overwrite inside the file writes the data and flushes the disk, nothing
    /// more. On ext4 here, appending 1.1 KB and fsyncing, one at a time: p50 0.32–0.38
    /// ms extending the file against 0.20–0.26 ms overwriting zeros, p99 1.1–2.2 against
    /// 0.4–1.7 ms (BENCHMARKS.md). Blocks merely allocated (`fallocate`, as
    /// [`LOG_SLACK_BYTES`]) do not help: they are unwritten extents, and writing them changes
    /// the extent tree, which is again metadata to make durable.
    ///
    /// What it costs: every byte goes through the page cache twice (zeros, then data), and the
    /// fsync after a refill writes the zeros and the metadata too (one refill per up to
    /// [`WRITE_AHEAD_MAX_BYTES`] appended, so for single records one fsync in about 500 or
    /// more). The first refill writes [`WRITE_AHEAD_MIN_BYTES`]; the next comes once half of
    /// that is appended, and each reaches twice as far ahead as the one before, so a partition
    /// receiving a trickle refills once per 32 KiB appended at first and holds little disk
    /// ahead, while a busy one soon refills once per half MiB. Large appends do not refill
    /// (see [`WRITE_AHEAD_APPEND_MAX_BYTES`]).
    /// The zeros past the log end are cut off at the next open (a torn tail, see `recovery`)
    /// or when the segment is sealed.
    ///
    /// Best effort: after a refill that fails (a full disk) the segment writes no more zeros
    /// until it is opened again; appends then extend the file, as without them.
    pub(super) fn write_ahead(&mut self) {
        let end = self.tail.position;
        let window = self.write_ahead_window;
        if window > 0 && self.written_end.saturating_sub(end) >= window / 2 {
            return;
        }
        let window = if window == 0 {
            WRITE_AHEAD_MIN_BYTES
        } else {
            (window * 2).min(WRITE_AHEAD_MAX_BYTES)
        };
        let from = self.written_end.max(end);
        let to = (end + window).min(self.write_ahead_limit);
        if to <= from {
            return;
        }
        match self.log.write_zeros(from, to - from) {
            Ok(()) => {
                self.written_end = to;
                self.write_ahead_window = window;
            }
            Err(error) => {
                // Not again for this segment (until it is reopened): on a full disk every
                // append would otherwise pay for a write that fails.
                tracing::debug!(%error, "could not write zeros ahead of the log end");
                self.write_ahead_limit = 0;
            }
        }
    }

    /// Keeps about [`LOG_SLACK_BYTES`] allocated past the end of the log (best effort: on a
    /// full disk there is nothing to take, and appends then fail as they would have). Zeros
    /// written ahead ([`Segment::write_ahead`]) are allocated blocks too.
    ///
    /// After an append of `appended` bytes too large for zeros, it keeps
    /// [`LOG_SLACK_LARGE_BYTES`] instead (never past the segment's capacity). Such appends
    /// (256 records of 1 KiB: 265 KB) otherwise ran past the 16 KiB kept, so the writeback
    /// before each one's fsync allocated its blocks, and the fsync wrote the block bitmap and
    /// group descriptor besides the data and the inode; each also paid for an `fallocate`.
    /// Allocated 4 MiB at a time, that happens once per 8 such appends; writing into blocks
    /// allocated this way still changes the extent tree (they are unwritten extents), so the
    /// inode is still written. Measured on one node, one 265 KB batch in flight: the server's
    /// CPU per GB 1.96–2.12 → 1.85–1.91 s; on three nodes 102–111k → 112–124k records/s
    /// (BENCHMARKS.md). The cost: a segment taking large appends holds up to 4 MiB of disk
    /// past its end while they come; [`Segment::give_back_idle_slack`] gives it back once
    /// its partition goes quiet (Redpanda holds 32 MiB per active segment, quiet or not).
    ///
    /// Only while the file system has [`LOG_SLACK_LARGE_FREE_MIN_BYTES`] free: near a full
    /// disk, space matters more than the fsync's cost, the space held ahead counts as used
    /// against the node's disk reserve, and a restart gives it back (cutting a torn tail
    /// frees every block past it), so produce refused at the reserve would be taken again
    /// after a restart. The free space is read (`statvfs`, a few microseconds) only when a
    /// large append finds less than half of the large slack left: once per 2 MiB appended
    /// on a roomy disk, at every large append below the threshold.
    pub(super) fn keep_slack(&mut self, appended: usize) {
        let end = self.tail.position;
        let large = appended as u64 > WRITE_AHEAD_APPEND_MAX_BYTES;
        let wanted = if large {
            LOG_SLACK_LARGE_BYTES
        } else {
            LOG_SLACK_BYTES
        };
        if self.slack_end.max(self.written_end) >= end + wanted / 2 {
            return;
        }
        let slack = if large
            && crate::resources::disk_space(self.log.path())
                .is_ok_and(|(free, _)| free >= LOG_SLACK_LARGE_FREE_MIN_BYTES)
        {
            // The capacity bounds it: 0 here only once a refill of zeros failed (a full disk),
            // and then the small slack is all there may be.
            let room = self.write_ahead_limit.saturating_sub(end);
            LOG_SLACK_LARGE_BYTES.min(room).max(LOG_SLACK_BYTES)
        } else {
            LOG_SLACK_BYTES
        };
        if self.slack_end.max(self.written_end) >= end + slack / 2 {
            // The slack chosen may be the small one (too little free, or the segment ends
            // soon), and that may be held already.
            return;
        }
        if self.log.allocate_ahead(end, slack) {
            self.slack_end = end + slack;
            return;
        }
        // A disk too full for the large slack may still hold the small one (tried once: on a
        // full disk a small append must not pay for two refused calls).
        if slack > LOG_SLACK_BYTES
            && self.slack_end.max(self.written_end) < end + LOG_SLACK_BYTES / 2
            && self.log.allocate_ahead(end, LOG_SLACK_BYTES)
        {
            self.slack_end = end + LOG_SLACK_BYTES;
        }
    }

    /// Gives back the space held past the end when no append came since the last call (the
    /// log calls it for its active segment at every retention check, every 10 s by default):
    /// a partition that took large appends and went quiet holds its 4 MiB
    /// ([`LOG_SLACK_LARGE_BYTES`]) for one to two checks, then 16 KiB again. The next large
    /// append takes the large slack again. At most once per quiet spell, and only when more
    /// than [`LOG_SLACK_BYTES`] may be held: after large appends, or after an open (blocks
    /// the last run allocated ahead survive a restart, so the first check after one frees
    /// them).
    ///
    /// Cutting the file at its own length frees the blocks allocated past it and changes no
    /// byte of it (nor its length: zeros written ahead stay), so nothing needs an fsync: a
    /// crash before the cut is written just leaves the blocks allocated.
    pub(crate) fn give_back_idle_slack(&mut self) -> Result<()> {
        let length = self.written_end.max(self.tail.position);
        match self.quiet {
            Quiet::Appended => {
                self.quiet = Quiet::Checked;
                return Ok(());
            }
            Quiet::Settled => return Ok(()),
            Quiet::Checked if self.slack_end <= length + LOG_SLACK_BYTES => {
                self.quiet = Quiet::Settled;
                return Ok(());
            }
            Quiet::Checked | Quiet::Opened => {}
        }
        self.log.set_length(length)?;
        self.quiet = Quiet::Settled;
        self.slack_end = 0;
        self.keep_slack(0);
        Ok(())
    }
}
