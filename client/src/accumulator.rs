//! The record accumulator: gathers records into one open batch per partition and closes a batch
//! when the next record does not fit, when it has lingered long enough, or on a flush. Pure:
//! `now` comes in with every call, and what each record's sender gets back is a type parameter
//! (`D`), so the tests need neither a clock nor channels.
//!
//! Each record is framed straight into its batch's buffer as it is appended (no record
//! objects kept, no per-record allocation), and the buffer is sized from the batches closed
//! before, so it seldom grows (and copies) on the way. The CRC is computed once: at closing,
//! or, for an idempotent producer, by the stamp of its id and sequence when the batch is first
//! sent (closing leaves it unsealed).
//!
//! Closed batches wait in a FIFO queue ([`Accumulator::pop_ready`]) until the sender has room
//! in flight; each gets an id, increasing in closing order, that `flush` uses to know which
//! batches it waits for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use strata_proto::batch::{BatchBuilder, Compression, HEADER_BYTES};

use crate::partitioner::{Partitioner, Target};
use crate::record::ProducerRecord;

/// The largest a record's framing adds to its key, value and headers: the length, attributes,
/// timestamp and offset deltas, the key, value and header-count lengths (as varints at their
/// widest: 5 bytes, 10 for the timestamp).
const RECORD_FRAMING_BYTES_MAX: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
/// The largest a header's framing adds to its key and value: two varint lengths.
const HEADER_FRAMING_BYTES_MAX: usize = 5 + 5;

/// Buffers of acknowledged batches kept for the next batches to reuse: a batch's buffer is
/// large (up to `batch_bytes_max`), and fresh memory costs an allocation and a page fault per
/// 4 KiB touched; a few cover the batches in flight at a steady load. This memory is the
/// producer's own, beside `buffer_bytes_max` (which counts records).
const SPARE_BUFFERS_MAX: usize = 4;

/// A builder for a new batch: in a spare buffer holding `capacity_bytes` when there is one,
/// else in a new buffer of that size (the last batch's).
fn new_builder(spare: &mut Vec<BytesMut>, capacity_bytes: usize) -> BatchBuilder {
    while let Some(buffer) = spare.pop() {
        if buffer.capacity() >= capacity_bytes {
            return BatchBuilder::with_buffer(buffer);
        }
        // Smaller than batches have become: let it go.
    }
    BatchBuilder::with_capacity(capacity_bytes)
}

/// An upper bound on the bytes `record` takes inside a batch, before compression.
pub(crate) fn record_bytes_bound(record: &ProducerRecord) -> usize {
    let key = record.key.as_ref().map_or(0, |key| key.len());
    let value = record.value.as_ref().map_or(0, |value| value.len());
    let headers: usize = record
        .headers
        .iter()
        .map(|(key, value)| {
            HEADER_FRAMING_BYTES_MAX + key.len() + value.as_ref().map_or(0, |value| value.len())
        })
        .sum();
    RECORD_FRAMING_BYTES_MAX + key + value + headers
}

/// An upper bound on the size of a batch holding only `record`.
pub(crate) fn single_record_batch_bytes_bound(record: &ProducerRecord) -> usize {
    HEADER_BYTES + record_bytes_bound(record)
}

/// How batches are cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// The largest uncompressed batch, header included.
    pub(crate) batch_bytes_max: usize,
    /// How long a batch stays open for more records after its first.
    pub(crate) linger: Duration,
    pub(crate) compression: Compression,
    /// Batches are stamped with a producer id and sequence when first sent, which writes
    /// their CRC: closing leaves them unsealed (CRC 0), so the records are read once.
    pub(crate) stamped_on_send: bool,
    /// The most bytes the open batches' buffers are sized for up front, all together (the
    /// producer's `buffer_bytes_max`). A new batch is sized from the last batch closed; without
    /// this bound, after one large batch a keyed producer over many partitions would reserve
    /// that size for every partition it opens a batch on, memory far beyond the records held.
    pub(crate) reserved_bytes_max: usize,
}

/// A batch no longer accepting records, encoded and ready to send (once stamped, with
/// [`BatchLimits::stamped_on_send`]).
#[derive(Debug)]
pub(crate) struct ClosedBatch<D> {
    /// Increasing in closing order.
    pub(crate) id: u64,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) batch: Bytes,
    /// One per record, in offset order.
    pub(crate) deliveries: Vec<D>,
    pub(crate) closed_at: Instant,
}

#[derive(Debug)]
struct OpenBatch<D> {
    builder: BatchBuilder,
    /// The bytes its buffer was sized for when it opened (counted in
    /// [`Accumulator::reserved_bytes`] until it closes).
    reserved: usize,
    deliveries: Vec<D>,
    opened_at: Instant,
    /// The topic's partition count when the batch opened, for the sticky partitioner.
    partitions: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Accumulator<D> {
    limits: BatchLimits,
    partitioner: Partitioner,
    /// Open batches by topic, then partition.
    open: HashMap<String, BTreeMap<u32, OpenBatch<D>>>,
    ready: VecDeque<ClosedBatch<D>>,
    next_batch_id: u64,
    /// The buffer bytes and record count a new batch starts with room for: those of the last
    /// batch closed, with an eighth more room (batches of a steady load differ by a record or
    /// two, and a buffer that grows copies the whole batch).
    capacity_bytes: usize,
    capacity_records: usize,
    /// What the open batches were sized for, in all: at most
    /// [`BatchLimits::reserved_bytes_max`].
    reserved_bytes: usize,
    /// Buffers of acknowledged batches, for the next batches ([`Self::recycle`]); at most
    /// [`SPARE_BUFFERS_MAX`].
    spare: Vec<BytesMut>,
}

impl<D> Accumulator<D> {
    /// # Panics
    /// When the limit cannot hold a batch header.
    pub(crate) fn new(limits: BatchLimits, partitioner: Partitioner) -> Self {
        assert!(limits.batch_bytes_max > HEADER_BYTES);
        Self {
            limits,
            partitioner,
            open: HashMap::new(),
            ready: VecDeque::new(),
            next_batch_id: 0,
            capacity_bytes: 0,
            capacity_records: 0,
            reserved_bytes: 0,
            spare: Vec::new(),
        }
    }

    /// Takes back the buffer of a batch that is done with (acknowledged), for a next batch
    /// to write into. Kept only when nothing else holds it and fewer than
    /// [`SPARE_BUFFERS_MAX`] are kept already.
    pub(crate) fn recycle(&mut self, batch: Bytes) {
        if self.spare.len() >= SPARE_BUFFERS_MAX {
            return;
        }
        if let Ok(buffer) = batch.try_into_mut() {
            self.spare.push(buffer);
        }
    }

    /// Adds a record of a topic with `partitions` partitions and returns the partition it
    /// went to. Closes the partition's open batch first when the record does not fit in it.
    ///
    /// # Panics
    /// When the record could not fit even in an empty batch, or its explicit partition is out
    /// of range: the producer checks both before it accepts a record.
    pub(crate) fn append(
        &mut self,
        record: &ProducerRecord,
        partitions: u32,
        delivery: D,
        now: Instant,
    ) -> u32 {
        let bound = record_bytes_bound(record);
        assert!(HEADER_BYTES + bound <= self.limits.batch_bytes_max);
        let target = match (record.partition, &record.key) {
            (Some(partition), _) => Target::Partition(partition),
            (None, Some(key)) => Target::Key(key),
            (None, None) => Target::Any,
        };
        let mut partition = self
            .partitioner
            .partition(&record.topic, &target, partitions);
        let full = self
            .open
            .get(record.topic.as_str())
            .and_then(|batches| batches.get(&partition))
            .is_some_and(|open| open.builder.size_bytes() + bound > self.limits.batch_bytes_max);
        if full {
            self.close(&record.topic, partition, now);
            // Closing may have moved unkeyed records on to the next partition.
            partition = self
                .partitioner
                .partition(&record.topic, &target, partitions);
        }
        let compression = self.limits.compression;
        // A new batch is sized like the last one closed, within what is left of the bound on
        // all open batches' buffers (past it, a batch starts empty and grows as records come).
        let room = self
            .limits
            .reserved_bytes_max
            .saturating_sub(self.reserved_bytes);
        let capacity_bytes = self.capacity_bytes.min(room);
        let capacity_records = (self.capacity_records * capacity_bytes)
            .checked_div(self.capacity_bytes)
            .unwrap_or(self.capacity_records);
        let spare = &mut self.spare;
        let reserved_bytes = &mut self.reserved_bytes;
        let batches = match self.open.get_mut(record.topic.as_str()) {
            Some(batches) => batches,
            None => self.open.entry(record.topic.clone()).or_default(),
        };
        let open = batches.entry(partition).or_insert_with(|| {
            *reserved_bytes += capacity_bytes;
            OpenBatch {
                builder: new_builder(spare, capacity_bytes).compression(compression),
                reserved: capacity_bytes,
                deliveries: Vec::with_capacity(capacity_records),
                opened_at: now,
                partitions,
            }
        });
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
            .collect();
        open.builder.push(
            record.timestamp_ms.unwrap_or(0),
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        open.deliveries.push(delivery);
        assert!(open.builder.size_bytes() <= self.limits.batch_bytes_max);
        partition
    }

    /// Closes every batch that has lingered its time by `now`.
    pub(crate) fn close_expired(&mut self, now: Instant) {
        let linger = self.limits.linger;
        let expired: Vec<(String, u32)> = self
            .open
            .iter()
            .flat_map(|(topic, batches)| {
                batches
                    .iter()
                    .filter(move |(_, open)| open.opened_at + linger <= now)
                    .map(move |(partition, _)| (topic.clone(), *partition))
            })
            .collect();
        for (topic, partition) in expired {
            self.close(&topic, partition, now);
        }
    }

    /// Closes every open batch (a flush).
    pub(crate) fn close_all(&mut self, now: Instant) {
        let all: Vec<(String, u32)> = self
            .open
            .iter()
            .flat_map(|(topic, batches)| batches.keys().map(move |p| (topic.clone(), *p)))
            .collect();
        for (topic, partition) in all {
            self.close(&topic, partition, now);
        }
    }

    /// When the oldest open batch will have lingered its time; `None` with no open batch.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.open
            .values()
            .flat_map(|batches| batches.values())
            .map(|open| open.opened_at + self.limits.linger)
            .min()
    }

    /// The oldest closed batch not yet taken.
    pub(crate) fn pop_ready(&mut self) -> Option<ClosedBatch<D>> {
        self.ready.pop_front()
    }

    /// The id the next batch to close will get: every batch closed so far has a smaller one.
    pub(crate) fn next_batch_id(&self) -> u64 {
        self.next_batch_id
    }

    /// Whether no batch is open and none waits to be taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.open.values().all(BTreeMap::is_empty)
    }

    fn close(&mut self, topic: &str, partition: u32, now: Instant) {
        let batches = self.open.get_mut(topic).expect("closing an open batch");
        let open = batches.remove(&partition).expect("closing an open batch");
        if batches.is_empty() {
            self.open.remove(topic);
        }
        self.partitioner
            .on_batch_closed(topic, partition, open.partitions);
        assert!(!open.deliveries.is_empty());
        self.reserved_bytes -= open.reserved;
        let size_bytes = open.builder.size_bytes();
        self.capacity_bytes = (size_bytes + size_bytes / 8).min(self.limits.batch_bytes_max);
        self.capacity_records = open.deliveries.len() + open.deliveries.len() / 8;
        let batch = if self.limits.stamped_on_send {
            open.builder.finish_unsealed()
        } else {
            open.builder.finish()
        };
        self.ready.push_back(ClosedBatch {
            id: self.next_batch_id,
            topic: topic.to_owned(),
            partition,
            batch: batch.freeze(),
            deliveries: open.deliveries,
            closed_at: now,
        });
        self.next_batch_id += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::batch::{BatchHeader, decode_records};

    const LINGER: Duration = Duration::from_millis(5);

    fn accumulator(batch_bytes_max: usize) -> Accumulator<usize> {
        Accumulator::new(
            BatchLimits {
                batch_bytes_max,
                linger: LINGER,
                compression: Compression::None,
                stamped_on_send: false,
                reserved_bytes_max: 32 << 20,
            },
            Partitioner::new(0),
        )
    }

    fn record(value: &str) -> ProducerRecord {
        ProducerRecord::new("t", value.as_bytes().to_vec()).timestamp_ms(1_000)
    }

    /// A new batch is sized like the last one closed, but the open batches together are sized
    /// for at most `reserved_bytes_max`: after one large batch, one record on each of many
    /// partitions does not reserve that size on every one of them.
    #[test]
    fn open_batches_are_sized_within_the_bound() {
        let reserved_bytes_max = 256 << 10;
        let mut accumulator = Accumulator::new(
            BatchLimits {
                batch_bytes_max: 1 << 20,
                linger: LINGER,
                compression: Compression::None,
                stamped_on_send: false,
                reserved_bytes_max,
            },
            Partitioner::new(0),
        );
        let now = Instant::now();
        let large = ProducerRecord::new("t", vec![7u8; 1024])
            .partition(0)
            .timestamp_ms(1_000);
        for delivery in 0..200 {
            accumulator.append(&large, 100, delivery, now);
        }
        accumulator.close_all(now);
        let last_batch = accumulator.capacity_bytes;
        assert!(last_batch > 200 << 10, "{last_batch}");
        let small = record("x");
        for partition in 1..100 {
            accumulator.append(&small.clone().partition(partition), 100, 0, now);
        }
        assert_eq!(accumulator.open["t"][&1].reserved, last_batch);
        assert!(
            accumulator.reserved_bytes <= reserved_bytes_max,
            "{} bytes reserved",
            accumulator.reserved_bytes
        );
        accumulator.close_all(now);
        assert_eq!(accumulator.reserved_bytes, 0);
    }

    /// The bound really bounds: a batch of one record is never larger than the estimate, for
    /// small and large fields and headers.
    #[test]
    fn size_bound_holds() {
        let records = [
            ProducerRecord::new("t", Vec::new()),
            ProducerRecord::new("t", vec![7u8; 300]).key(vec![1u8; 200]),
            ProducerRecord::new("t", vec![7u8; 70_000])
                .header("trace", vec![0u8; 129])
                .null_header("empty")
                .timestamp_ms(i64::MAX),
        ];
        for record in records {
            let mut builder = BatchBuilder::new();
            let headers: Vec<(&str, Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_deref()))
                .collect();
            builder.push(
                record.timestamp_ms.unwrap_or(0),
                record.key.as_deref(),
                record.value.as_deref(),
                &headers,
            );
            assert!(builder.finish().len() <= single_record_batch_bytes_bound(&record));
        }
    }

    /// Records lingering together make one batch, closed only when the linger has passed.
    #[test]
    fn linger_closes_a_batch() {
        let mut acc = accumulator(1 << 20);
        let start = Instant::now();
        for i in 0..3 {
            let record = record("v").partition(1);
            assert_eq!(
                acc.append(&record, 2, i, start + Duration::from_millis(i as u64)),
                1
            );
        }
        assert_eq!(acc.next_expiry(), Some(start + LINGER));
        acc.close_expired(start + LINGER - Duration::from_millis(1));
        assert!(acc.pop_ready().is_none());
        acc.close_expired(start + LINGER);
        let batch = acc.pop_ready().expect("closed by linger");
        assert_eq!(batch.partition, 1);
        assert_eq!(batch.deliveries, [0, 1, 2]);
        let records = decode_records(&batch.batch).expect("valid batch");
        assert_eq!(records.len(), 3);
        assert!(acc.is_empty());
        assert_eq!(acc.next_expiry(), None);
    }

    /// A record that does not fit closes the open batch; the record starts the next one.
    #[test]
    fn full_batch_closes() {
        let value = "x".repeat(100);
        let bound = record_bytes_bound(&record(&value));
        // Room for exactly three records at their bound.
        let mut acc = accumulator(HEADER_BYTES + 3 * bound);
        let now = Instant::now();
        for i in 0..7 {
            acc.append(&record(&value).partition(0), 1, i, now);
        }
        let first = acc.pop_ready().expect("first full batch");
        let second = acc.pop_ready().expect("second full batch");
        assert!(acc.pop_ready().is_none());
        assert_eq!(first.deliveries, [0, 1, 2]);
        assert_eq!(second.deliveries, [3, 4, 5]);
        assert!(first.id < second.id);
        acc.close_all(now);
        assert_eq!(acc.pop_ready().expect("flushed").deliveries, [6]);
        assert_eq!(acc.next_batch_id(), 3);
    }

    /// Unkeyed records fill one partition's batch, then move to the next partition when it
    /// closes; keyed records go where their key hashes.
    #[test]
    fn sticky_batches_rotate() {
        let value = "y".repeat(50);
        let bound = record_bytes_bound(&record(&value));
        let mut acc = accumulator(HEADER_BYTES + 2 * bound);
        let now = Instant::now();
        let partitions: Vec<u32> = (0..6)
            .map(|i| acc.append(&record(&value), 3, i, now))
            .collect();
        assert_eq!(partitions, [0, 0, 1, 1, 2, 2]);
        let keyed = record(&value).key(b"user-42".to_vec());
        let expected = strata_proto::partitioner::partition_for_key(b"user-42", 3);
        assert_eq!(acc.append(&keyed, 3, 99, now), expected);
    }

    /// A flush closes the batches of every topic and partition, in one pass.
    #[test]
    fn close_all_closes_every_partition() {
        let mut acc = accumulator(1 << 20);
        let now = Instant::now();
        acc.append(&record("a").partition(0), 2, 0, now);
        acc.append(&record("b").partition(1), 2, 1, now);
        acc.append(
            &ProducerRecord::new("other", b"c".to_vec()).partition(0),
            1,
            2,
            now,
        );
        acc.close_all(now);
        let mut closed = Vec::new();
        while let Some(batch) = acc.pop_ready() {
            closed.push((batch.topic, batch.partition, batch.deliveries));
        }
        closed.sort();
        assert_eq!(
            closed,
            [
                ("other".to_owned(), 0, vec![2]),
                ("t".to_owned(), 0, vec![0]),
                ("t".to_owned(), 1, vec![1]),
            ]
        );
        assert!(acc.is_empty());
    }

    /// Compressed batches, in every codec, carry the codec and decode back to the records.
    #[test]
    fn compressed_batches_decode() {
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut acc = Accumulator::new(
                BatchLimits {
                    batch_bytes_max: 1 << 20,
                    linger: LINGER,
                    compression,
                    stamped_on_send: false,
                    reserved_bytes_max: 32 << 20,
                },
                Partitioner::new(0),
            );
            let now = Instant::now();
            for i in 0..100 {
                acc.append(&record(&"z".repeat(200)).partition(0), 1, i, now);
            }
            acc.close_all(now);
            let batch = acc.pop_ready().expect("one batch");
            assert!(
                batch.batch.len() < 100 * 200 / 4,
                "{compression}: compressible values compress"
            );
            let header = strata_proto::batch::BatchHeader::parse(&batch.batch).expect("header");
            assert_eq!(header.compression().expect("codec"), compression);
            assert_eq!(decode_records(&batch.batch).expect("decodes").len(), 100);
        }
    }

    /// A producer that stamps batches when it sends them gets them unsealed (no CRC yet),
    /// and the stamp makes them valid; the buffer of a batch is sized from the one before.
    #[test]
    fn batches_stamped_on_send_close_unsealed() {
        let mut acc = Accumulator::new(
            BatchLimits {
                batch_bytes_max: 1 << 20,
                linger: LINGER,
                compression: Compression::None,
                stamped_on_send: true,
                reserved_bytes_max: 32 << 20,
            },
            Partitioner::new(0),
        );
        let now = Instant::now();
        for round in 0..2 {
            for i in 0..20 {
                acc.append(&record(&"s".repeat(100)).partition(0), 1, i, now);
            }
            acc.close_all(now);
            let closed = acc.pop_ready().expect("one batch");
            assert!(
                BatchHeader::validate(&closed.batch).is_err(),
                "round {round}: unsealed until stamped"
            );
            let stamp = crate::sequence::Stamp {
                identity: crate::sequence::Identity {
                    producer_id: 1,
                    producer_epoch: 0,
                },
                base_sequence: round * 20,
            };
            let sealed = crate::sequence::stamp_batch(closed.batch, stamp);
            let header = BatchHeader::validate(&sealed).expect("valid once stamped");
            assert_eq!(header.record_count, 20);
            assert!(acc.capacity_bytes >= sealed.len(), "sized from this batch");
        }
    }

    /// The buffer of an acknowledged batch is written again by the next batch (no new
    /// allocation), only when nothing else holds it, and never more than a few are kept.
    #[test]
    fn acknowledged_buffers_are_reused() {
        let mut acc = accumulator(1 << 20);
        let now = Instant::now();
        let close_one = |acc: &mut Accumulator<usize>| {
            acc.append(&record(&"r".repeat(500)).partition(0), 1, 0, now);
            acc.close_all(now);
            acc.pop_ready().expect("one batch").batch
        };
        let first = close_one(&mut acc);
        let first_at = first.as_ptr();
        acc.recycle(first);
        let second = close_one(&mut acc);
        assert_eq!(
            second.as_ptr(),
            first_at,
            "written into the recycled buffer"
        );
        let held = second.clone();
        acc.recycle(second);
        assert!(
            acc.spare.is_empty(),
            "a buffer still held elsewhere is not reused"
        );
        drop(held);
        for _ in 0..SPARE_BUFFERS_MAX + 2 {
            let batch = close_one(&mut acc);
            acc.recycle(batch);
        }
        let batches: Vec<Bytes> = (0..SPARE_BUFFERS_MAX + 2)
            .map(|_| close_one(&mut acc))
            .collect();
        for batch in batches {
            acc.recycle(batch);
        }
        assert_eq!(acc.spare.len(), SPARE_BUFFERS_MAX);
    }
}
