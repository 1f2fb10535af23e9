//! Idempotent producer state of one partition: for each producer id, its epoch and its last
//! few batches' sequence ranges, so that a retried batch the log already holds is recognised
//! (and answered with its original offsets) and a gap in the sequence is refused.
//!
//! The state is a function of the log: [`ProducerTable::rebuild`] recomputes it from the
//! batch headers (producer id, epoch, base sequence, record count), starting from the
//! latest snapshot file ([`SNAPSHOT_FILE`], written every [`SNAPSHOT_EVERY_BYTES`] of appended
//! data) so that opening a large log reads only its tail. The leader keeps it current as it
//! admits proposals; every batch it admits is recorded as in flight until it commits.
//!
//! Order is a promise: a batch is admitted only right after its producer's previous one. A
//! producer the table does not know (new, evicted, or whose batches retention removed), and a
//! producer at a new epoch, must start at sequence 0; anything else is refused as out of order
//! with 0 expected. Accepting any sequence there would let a later batch, sent while an earlier
//! one was refused (say with NOT_LEADER by a node that became leader a moment later), be stored
//! first; the producer would then retry the earlier one behind it. A producer whose state was
//! lost learns it from that refusal of its first unacknowledged batch and starts a new epoch at
//! 0, which reorders nothing: every batch after it is refused until it is stored.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::storage::batch::{BatchHeader, split_batches};
use crate::storage::{EntryBytes, Error, PartitionLog, Result};

/// Batches remembered per producer, as in Kafka: a producer keeps at most this many in flight
/// per partition, so any retry is of one of them.
pub const BATCHES_PER_PRODUCER: usize = 5;
/// Producers remembered per partition; the least recently active is forgotten beyond it.
pub const PRODUCERS_MAX: usize = 10_000;
/// The state is written to disk after this many bytes of batches were applied since the last
/// time; a restart reads at most about this much of the log.
pub const SNAPSHOT_EVERY_BYTES: u64 = 8 << 20;
/// The snapshot's file name in the partition directory.
pub const SNAPSHOT_FILE: &str = "producers.snapshot";
/// Read size while rebuilding.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Admitted under this proposal id, not committed yet.
    InFlight(u64),
    /// In the log: the offset after its last record, and its raft index when it may not be
    /// committed yet (0 when it is known committed). A leader answers a duplicate of an
    /// uncommitted batch only once that index commits.
    Stored { next_offset: u64, raft_index: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BatchMeta {
    first_sequence: i32,
    last_sequence: i32,
    state: BatchState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// Order of last activity, for eviction.
    touched: u64,
}

/// What to do with a proposed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Append it.
    Append,
    /// A copy of a batch the log holds or is about to: answer as for that one.
    Duplicate(BatchState),
}

/// Why a proposed batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} sent sequence {got}; the partition expected {expected}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} sent epoch {got}; the partition has seen epoch {current}")]
    StaleEpoch {
        producer_id: i64,
        got: i16,
        current: i16,
    },
}

/// The sequence after `last`: sequences wrap from `i32::MAX` to 0.
pub fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

/// The last sequence of a batch of `count` records starting at `first`.
fn last_sequence(first: i32, count: i32) -> i32 {
    ((i64::from(first) + i64::from(count.max(1)) - 1) % (i64::from(i32::MAX) + 1)) as i32
}

/// The producer state of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<i64, Producer>,
    clock: u64,
    /// Bytes applied since the last snapshot.
    unsnapshotted_bytes: u64,
}

impl ProducerTable {
    /// Checks a batch proposed with id `proposal`; an admitted batch is recorded as in flight.
    ///
    /// # Errors
    /// A sequence gap or an older epoch.
    pub fn admit(
        &mut self,
        header: &BatchHeader,
        proposal: u64,
    ) -> std::result::Result<Admission, SequenceError> {
        if header.producer_id < 0 || header.is_control() {
            return Ok(Admission::Append);
        }
        let (first, last, clock) = self.sequences(header);
        let producer = self.producers.get(&header.producer_id);
        if let Some(producer) = producer
            && header.producer_epoch < producer.epoch
        {
            return Err(SequenceError::StaleEpoch {
                producer_id: header.producer_id,
                got: header.producer_epoch,
                current: producer.epoch,
            });
        }
        let newest = producer
            .filter(|producer| producer.epoch == header.producer_epoch)
            .and_then(|producer| {
                let held = producer
                    .batches
                    .iter()
                    .find(|b| b.first_sequence == first && b.last_sequence == last);
                Some((held, producer.batches.back()?))
            });
        let expected = match newest {
            Some((Some(held), _)) => return Ok(Admission::Duplicate(held.state)),
            Some((None, newest)) => next_sequence(newest.last_sequence),
            // Unknown here, or a new epoch: the sequence starts over (see the module doc).
            None => 0,
        };
        if first != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: header.producer_id,
                expected,
                got: first,
            });
        }
        self.record(
            header.producer_id,
            header.producer_epoch,
            BatchMeta {
                first_sequence: first,
                last_sequence: last,
                state: BatchState::InFlight(proposal),
            },
            clock,
        );
        Ok(Admission::Append)
    }

    /// A batch was committed (`raft_index` 0), or found in the log while rebuilding (with its
    /// raft index when beyond the commit index); `next_offset` is the offset after it.
    ///
    /// A new leader's table was rebuilt from its whole log, and the leader then applies the
    /// entries it had not applied yet: batches the table has already seen, perhaps older than
    /// the ones it remembers. Those change nothing. Recorded again, they would become the
    /// producer's newest batch and push out newer ones, in flight ones included, and a retry
    /// of one of those would be admitted and stored twice.
    pub fn stored(&mut self, header: &BatchHeader, next_offset: u64, raft_index: u64) {
        self.unsnapshotted_bytes += header.total_bytes() as u64;
        if header.producer_id < 0 || header.is_control() {
            return;
        }
        let (first, last, clock) = self.sequences(header);
        if let Some(producer) = self.producers.get_mut(&header.producer_id) {
            if header.producer_epoch < producer.epoch {
                return;
            }
            if producer.epoch == header.producer_epoch {
                if let Some(held) = producer
                    .batches
                    .iter_mut()
                    .find(|b| b.first_sequence == first && b.last_sequence == last)
                {
                    held.state = BatchState::Stored {
                        next_offset,
                        raft_index,
                    };
                    producer.touched = clock;
                    return;
                }
                let seen_past_it = producer.batches.iter().any(|b| {
                    matches!(b.state, BatchState::Stored { next_offset: after, .. } if after >= next_offset)
                });
                if seen_past_it {
                    return;
                }
            }
        }
        self.record(
            header.producer_id,
            header.producer_epoch,
            BatchMeta {
                first_sequence: first,
                last_sequence: last,
                state: BatchState::Stored {
                    next_offset,
                    raft_index,
                },
            },
            clock,
        );
    }

    /// A batch's first and last sequence, and the activity clock's next tick.
    fn sequences(&mut self, header: &BatchHeader) -> (i32, i32, u64) {
        self.clock += 1;
        let first = header.base_sequence;
        (first, last_sequence(first, header.record_count), self.clock)
    }

    fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMeta, clock: u64) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= PRODUCERS_MAX {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(_, p)| p.touched)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.producers.remove(&oldest);
            }
        }
        let producer = self.producers.entry(producer_id).or_insert(Producer {
            epoch,
            batches: VecDeque::new(),
            touched: clock,
        });
        if epoch > producer.epoch {
            producer.epoch = epoch;
            producer.batches.clear();
        }
        producer.touched = clock;
        producer.batches.push_back(batch);
        while producer.batches.len() > BATCHES_PER_PRODUCER {
            producer.batches.pop_front();
        }
    }

    /// Forgets the batch admitted under `proposal`: raft dropped that proposal, so it never
    /// reached the log. Every other batch in flight did, and stays known: forgetting them
    /// would let a retry of one of them be stored a second time.
    pub fn forget_proposal(&mut self, proposal: u64) {
        for producer in self.producers.values_mut() {
            producer
                .batches
                .retain(|b| b.state != BatchState::InFlight(proposal));
        }
        self.producers.retain(|_, p| !p.batches.is_empty());
    }

    /// Forgets batches still in flight: this node stopped leading (the log decides their
    /// fate; [`ProducerTable::rebuild`] reads it when it leads again).
    pub fn forget_in_flight(&mut self) {
        for producer in self.producers.values_mut() {
            producer
                .batches
                .retain(|b| !matches!(b.state, BatchState::InFlight(_)));
        }
        self.producers.retain(|_, p| !p.batches.is_empty());
    }

    /// Whether a snapshot is due.
    pub fn snapshot_due(&self) -> bool {
        self.unsnapshotted_bytes >= SNAPSHOT_EVERY_BYTES
    }

    /// Writes the committed state as of `next_offset` (the offset after everything applied)
    /// to the partition directory, atomically.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write_snapshot(&mut self, dir: &Path, next_offset: u64) -> Result<()> {
        let mut body = BytesMut::new();
        body.put_u64(next_offset);
        let stored: Vec<(&i64, &Producer)> = self.producers.iter().collect();
        body.put_u32(stored.len() as u32);
        for (id, producer) in stored {
            let batches: Vec<&BatchMeta> = producer
                .batches
                .iter()
                .filter(|b| matches!(b.state, BatchState::Stored { .. }))
                .collect();
            body.put_i64(*id);
            body.put_i16(producer.epoch);
            body.put_u8(batches.len() as u8);
            for batch in batches {
                let BatchState::Stored { next_offset, .. } = batch.state else {
                    unreachable!("filtered")
                };
                body.put_i32(batch.first_sequence);
                body.put_i32(batch.last_sequence);
                body.put_u64(next_offset);
            }
        }
        let mut file = BytesMut::with_capacity(body.len() + 4);
        file.put_u32(crc32fast::hash(&body));
        file.put_slice(&body);
        crate::storage::files::replace_atomically(&dir.join(SNAPSHOT_FILE), &file, None)?;
        self.unsnapshotted_bytes = 0;
        Ok(())
    }

    /// Reads a snapshot: the state and the offset it covers up to. `None` when there is none or
    /// it is damaged (the log is then read from its start).
    fn read_snapshot(dir: &Path) -> Option<(Self, u64)> {
        let bytes = std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
        let mut buf = Bytes::from(bytes);
        if buf.len() < 16 {
            return None;
        }
        let crc = buf.get_u32();
        if crc32fast::hash(&buf) != crc {
            tracing::warn!(dir = %dir.display(), "damaged producer snapshot ignored");
            return None;
        }
        let next_offset = buf.get_u64();
        let producers = buf.get_u32();
        let mut table = Self::default();
        for _ in 0..producers {
            if buf.remaining() < 11 {
                return None;
            }
            let id = buf.get_i64();
            let epoch = buf.get_i16();
            let batches = buf.get_u8();
            let mut producer = Producer {
                epoch,
                batches: VecDeque::new(),
                touched: 0,
            };
            for _ in 0..batches {
                if buf.remaining() < 16 {
                    return None;
                }
                producer.batches.push_back(BatchMeta {
                    first_sequence: buf.get_i32(),
                    last_sequence: buf.get_i32(),
                    state: BatchState::Stored {
                        next_offset: buf.get_u64(),
                        raft_index: 0,
                    },
                });
            }
            table.producers.insert(id, producer);
        }
        Some((table, next_offset))
    }

    /// Recomputes the state from the log: every batch in it, committed or not (the caller is
    /// about to lead, and a leader's log is what will commit). Batches up to raft index
    /// `committed` are read by header alone, from the snapshot on when it still lies within the
    /// log; those beyond it are recorded with their raft index, so that a duplicate of one is
    /// answered only once it commits.
    ///
    /// # Errors
    /// Read errors of the log.
    pub fn rebuild(log: &PartitionLog, committed: u64) -> Result<Self> {
        let start = log.log_start_offset();
        let committed = committed.clamp(
            log.first_raft_index().saturating_sub(1),
            log.last_raft_index(),
        );
        let committed_end = log.offset_after_raft_index(committed)?;
        let (mut table, mut offset) = match Self::read_snapshot(log.dir()) {
            Some((table, covered)) if covered >= start && covered <= committed_end => {
                (table, covered)
            }
            _ => (Self::default(), start),
        };
        while offset < committed_end {
            let runs = log.read_below(offset, committed_end, SCAN_CHUNK_BYTES)?;
            let mut advanced = offset;
            for run in runs {
                for split in split_batches(run) {
                    let (header, _) = split.map_err(Error::InvalidBatch)?;
                    let next = header.base_offset as u64 + header.offset_count();
                    if next > offset {
                        table.stored(&header, next, 0);
                    }
                    advanced = advanced.max(next);
                }
            }
            if advanced == offset {
                break;
            }
            offset = advanced;
        }
        // The uncommitted tail: small (what one leader had in flight).
        let mut index = committed + 1;
        let last = log.last_raft_index();
        while index <= last {
            let entries = log.raft_entries(
                index,
                last + 1,
                SCAN_CHUNK_BYTES,
                EntryBytes::DataHeaderOnly,
            )?;
            let Some(newest) = entries.last().map(|e| e.raft_index) else {
                break;
            };
            for entry in entries {
                let header = BatchHeader::parse(&entry.batch).map_err(Error::InvalidBatch)?;
                let next = header.base_offset as u64 + header.offset_count();
                table.stored(&header, next, entry.raft_index);
            }
            index = newest + 1;
        }
        table.unsnapshotted_bytes = 0;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LogConfig;
    use crate::storage::batch::BatchBuilder;

    fn batch(producer_id: i64, epoch: i16, sequence: i32, records: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new().producer(producer_id, epoch, sequence);
        for i in 0..records {
            builder.push(1, None, Some(format!("v{i}").as_bytes()), &[]);
        }
        builder.finish().to_vec()
    }

    fn header(bytes: &[u8]) -> BatchHeader {
        BatchHeader::parse(bytes).expect("header")
    }

    #[test]
    fn admits_in_order_refuses_gaps_and_spots_duplicates() {
        let mut table = ProducerTable::default();
        let b0 = batch(7, 0, 0, 3);
        let b1 = batch(7, 0, 3, 2);
        assert_eq!(table.admit(&header(&b0), 1), Ok(Admission::Append));
        assert_eq!(
            table.admit(&header(&b0), 2),
            Ok(Admission::Duplicate(BatchState::InFlight(1)))
        );
        table.stored(&header(&b0), 3, 0);
        assert_eq!(
            table.admit(&header(&b0), 3),
            Ok(Admission::Duplicate(BatchState::Stored {
                next_offset: 3,
                raft_index: 0
            }))
        );
        assert_eq!(
            table.admit(&header(&batch(7, 0, 4, 1)), 4),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 3,
                got: 4
            })
        );
        assert_eq!(table.admit(&header(&b1), 5), Ok(Admission::Append));
        // A new epoch starts over; the old one is refused from then on.
        assert_eq!(
            table.admit(&header(&batch(7, 1, 0, 1)), 6),
            Ok(Admission::Append)
        );
        assert!(matches!(
            table.admit(&header(&batch(7, 0, 5, 1)), 7),
            Err(SequenceError::StaleEpoch { .. })
        ));
        // Non-idempotent batches pass untouched.
        assert_eq!(
            table.admit(&header(&batch(-1, -1, -1, 1)), 8),
            Ok(Admission::Append)
        );
        // Forgetting in-flight batches leaves only stored ones.
        table.forget_in_flight();
        assert_eq!(
            table.admit(&header(&b0), 9),
            Ok(Admission::Append),
            "epoch 1's only batch was in flight, so producer 7 is unknown again"
        );
    }

    /// The reordering the strict start prevents: batch 0 of a producer is refused (the node did
    /// not lead yet) while batch 1, pipelined behind it, reaches the same node once it leads.
    /// Batch 1 must be refused too, or it would be stored before batch 0's retry.
    #[test]
    fn an_unknown_producer_or_a_new_epoch_starts_at_zero() {
        let mut table = ProducerTable::default();
        let first = batch(7, 0, 0, 3);
        let second = batch(7, 0, 3, 2);
        assert_eq!(
            table.admit(&header(&second), 1),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 0,
                got: 3
            })
        );
        assert_eq!(table.admit(&header(&first), 2), Ok(Admission::Append));
        assert_eq!(table.admit(&header(&second), 3), Ok(Admission::Append));
        // A new epoch starts over at 0, whatever the old one reached.
        assert_eq!(
            table.admit(&header(&batch(7, 1, 5, 1)), 4),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 0,
                got: 5
            })
        );
        assert_eq!(
            table.admit(&header(&batch(7, 1, 0, 1)), 5),
            Ok(Admission::Append)
        );
    }

    /// A dropped proposal is forgotten alone: a batch admitted before it is in the log, and
    /// its retry is still recognized.
    #[test]
    fn a_dropped_proposal_is_forgotten_alone() {
        let mut table = ProducerTable::default();
        let first = batch(7, 0, 0, 2);
        let second = batch(7, 0, 2, 2);
        assert_eq!(table.admit(&header(&first), 1), Ok(Admission::Append));
        assert_eq!(table.admit(&header(&second), 2), Ok(Admission::Append));
        table.forget_proposal(2);
        assert_eq!(
            table.admit(&header(&first), 3),
            Ok(Admission::Duplicate(BatchState::InFlight(1))),
            "the retry of a batch in the log is no new batch"
        );
        assert_eq!(table.admit(&header(&second), 4), Ok(Admission::Append));
    }

    /// A new leader rebuilt its table from its log, then applies older committed entries it
    /// had not applied yet: the table's newest batch, and the batch in flight after it, stay
    /// what they were, so a retry of the in-flight batch is still recognised.
    #[test]
    fn applying_batches_older_than_the_remembered_ones_changes_nothing() {
        let mut table = ProducerTable::default();
        let mut next_offset = 0;
        let mut headers = Vec::new();
        for sequence in 0..(BATCHES_PER_PRODUCER as i32 + 3) {
            let bytes = batch(7, 0, sequence, 1);
            let header = header(&bytes);
            next_offset += 1;
            table.stored(&header, next_offset, 0);
            headers.push((header, next_offset));
        }
        let newest = batch(7, 0, BATCHES_PER_PRODUCER as i32 + 3, 1);
        assert_eq!(table.admit(&header(&newest), 1), Ok(Admission::Append));
        for (header, next_offset) in &headers {
            table.stored(header, *next_offset, 0);
        }
        // An older epoch's batch, too.
        table.stored(&header(&batch(7, -1, 0, 1)), 1, 0);
        assert_eq!(
            table.admit(&header(&newest), 2),
            Ok(Admission::Duplicate(BatchState::InFlight(1)))
        );
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(last_sequence(i32::MAX, 2), 0);
        let mut table = ProducerTable::default();
        // The log already holds the producer's batch before the wrap.
        table.stored(&header(&batch(1, 0, i32::MAX - 3, 2)), 2, 0);
        let near_end = batch(1, 0, i32::MAX - 1, 2);
        assert_eq!(table.admit(&header(&near_end), 1), Ok(Admission::Append));
        assert_eq!(
            table.admit(&header(&batch(1, 0, 0, 1)), 2),
            Ok(Admission::Append)
        );
    }

    #[test]
    fn only_the_last_batches_are_remembered() {
        let mut table = ProducerTable::default();
        for i in 0..7 {
            let b = batch(1, 0, i, 1);
            assert_eq!(table.admit(&header(&b), i as u64), Ok(Admission::Append));
        }
        // Batch 0 fell out of the window: its retry is a gap.
        assert!(matches!(
            table.admit(&header(&batch(1, 0, 0, 1)), 9),
            Err(SequenceError::OutOfOrder { expected: 7, .. })
        ));
        assert!(matches!(
            table.admit(&header(&batch(1, 0, 6, 1)), 9),
            Ok(Admission::Duplicate(_))
        ));
    }

    #[test]
    fn rebuild_from_log_and_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
        let mut expected = ProducerTable::default();
        let mut next = 0;
        for i in 0..20i64 {
            let producer = i % 3;
            let b = batch(producer, 0, (i as i32 / 3) * 2, 2);
            log.append(&b, 1, 0).expect("append");
            next += 2;
            expected.stored(&header(&b), next, 0);
            if i == 9 {
                // A snapshot halfway: the rebuild starts there.
                let mut half = ProducerTable::rebuild(&log, u64::MAX).expect("rebuild");
                half.write_snapshot(dir.path(), log.next_offset())
                    .expect("snapshot");
            }
        }
        let rebuilt = ProducerTable::rebuild(&log, u64::MAX).expect("rebuild");
        for producer in 0..3 {
            let mine = &rebuilt.producers[&producer];
            let theirs = &expected.producers[&producer];
            assert_eq!(mine.batches, theirs.batches, "producer {producer}");
        }
        // A damaged snapshot is ignored: the whole log is read.
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"garbage garbage garbage").expect("write");
        let rebuilt = ProducerTable::rebuild(&log, u64::MAX).expect("rebuild");
        assert_eq!(
            rebuilt.producers[&1].batches,
            expected.producers[&1].batches
        );
        // Beyond the commit index, batches carry their raft index (the log was appended with
        // raft indexes 1..=20, one per batch).
        let rebuilt = ProducerTable::rebuild(&log, 18).expect("rebuild");
        let newest = rebuilt.producers[&1].batches.back().expect("batches").state;
        assert_eq!(
            newest,
            BatchState::Stored {
                next_offset: 40,
                raft_index: 20
            }
        );
    }

    #[test]
    fn evicts_the_least_recently_active() {
        let mut table = ProducerTable::default();
        for id in 0..=PRODUCERS_MAX as i64 {
            table
                .admit(&header(&batch(id, 0, 0, 1)), id as u64)
                .expect("admit");
        }
        assert_eq!(table.producers.len(), PRODUCERS_MAX);
        assert!(!table.producers.contains_key(&0));
    }
}
