//! Reads of a segment: batches by offset for consumers (zero-copy), entries and terms by raft
//! index for raft (copies), and the offset for a timestamp. The sparse index gives a starting
//! position; the batches from there are walked.

use bytes::Bytes;

use crate::storage::batch;
use crate::storage::error::Result;

use super::{EntryBytes, RaftEntry, Segment};

impl Segment {
    /// Data batches from the one holding `offset` on and starting below `end_offset`, as
    /// zero-copy runs of contiguous data batches (control batches end a run and are left out).
    /// At least one batch when any holds an offset at or after `offset`, then more while the
    /// total stays within `max_bytes`.
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
    pub(super) fn position_of_raft_index(&self, raft_index: u64) -> Result<u64> {
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
        bytes: EntryBytes,
    ) -> Result<Vec<RaftEntry>> {
        let to = to.min(self.next_raft_index());
        let mut position = self.position_of_raft_index(from)?;
        let mut entries = Vec::new();
        let mut total = taken_bytes;
        for raft_index in from..to {
            let header = self.header_at(position)?;
            let size = header.total_bytes();
            let taken = match bytes {
                EntryBytes::DataHeaderOnly if !header.is_control() => batch::HEADER_BYTES,
                _ => size,
            };
            if total > 0 && total + taken > max_bytes {
                break;
            }
            // A copy, unlike consumer reads: raft reads entries that are not committed yet and
            // may be truncated while a message carrying them still waits to be sent, which must
            // neither fault on a truncated page nor see a later entry's bytes.
            let stored = self.log.view(position as usize..position as usize + taken);
            entries.push(RaftEntry {
                raft_index,
                term: header.partition_leader_epoch as u64,
                batch: Bytes::copy_from_slice(stored),
            });
            total += taken;
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
}
