//! The record accumulator: gathers records into one open batch per partition and closes a batch
//! when the next record does not fit, when it has lingered long enough, or on a flush. Pure:
//! `now` comes in with every call, so the tests need no clock.
//!
//! `send` appends to it directly, under the lock of a [`SharedAccumulator`] that the sender
//! task drains, as Kafka's producer does: a record costs no message to the sender task and no
//! wake-up of it (only a batch opening or closing wakes it), and no channel of its own: each
//! batch carries one [`BatchResolver`] whose futures its records get back.
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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use strata_proto::batch::{BatchBuilder, Compression, HEADER_BYTES};
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::partitioner::{Partitioner, Target};
use crate::record::{BatchResolver, DeliveryFuture, ProducerRecord};

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
pub(crate) struct ClosedBatch {
    /// Increasing in closing order.
    pub(crate) id: u64,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) batch: Bytes,
    pub(crate) records: usize,
    /// Resolves the futures of its records.
    pub(crate) outcome: BatchResolver,
    /// Its records' share of the producer's buffer, given back when the batch is dropped
    /// (resolved).
    pub(crate) buffer: Option<OwnedSemaphorePermit>,
    pub(crate) closed_at: Instant,
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    /// The bytes its buffer was sized for when it opened (counted in
    /// [`Accumulator::reserved_bytes`] until it closes).
    reserved: usize,
    records: usize,
    outcome: BatchResolver,
    buffer: Option<OwnedSemaphorePermit>,
    opened_at: Instant,
    /// The topic's partition count when the batch opened, for the sticky partitioner.
    partitions: u32,
}

/// What [`Accumulator::append`] did with a record.
#[derive(Debug)]
pub(crate) struct Appended {
    pub(crate) delivery: DeliveryFuture,
    /// A batch opened (a linger to wait for) or closed (a batch to send): the sender task
    /// has something new to do.
    pub(crate) wake_sender: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Accumulator {
    limits: BatchLimits,
    partitioner: Partitioner,
    /// Open batches by topic, then partition.
    open: HashMap<String, BTreeMap<u32, OpenBatch>>,
    ready: VecDeque<ClosedBatch>,
    next_batch_id: u64,
    /// The buffer bytes a new batch starts with room for: those of the last batch closed, with
    /// an eighth more room (batches of a steady load differ by a record or two, and a buffer
    /// that grows copies the whole batch).
    capacity_bytes: usize,
    /// What the open batches were sized for, in all: at most
    /// [`BatchLimits::reserved_bytes_max`].
    reserved_bytes: usize,
    /// Buffers of acknowledged batches, for the next batches ([`Self::recycle`]); at most
    /// [`SPARE_BUFFERS_MAX`].
    spare: Vec<BytesMut>,
    /// The sender task stopped without being asked to ([`Self::abandon`]): nothing will
    /// send what is appended.
    abandoned: bool,
}

impl Accumulator {
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
            reserved_bytes: 0,
            spare: Vec::new(),
            abandoned: false,
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

    /// Adds a record of a topic with `partitions` partitions, holding `buffer` (its share of
    /// the producer's buffer) until its batch resolves. Closes the partition's open batch
    /// first when the record does not fit in it.
    ///
    /// # Panics
    /// When the record could not fit even in an empty batch, or its explicit partition is out
    /// of range: the producer checks both before it accepts a record.
    pub(crate) fn append(
        &mut self,
        record: &ProducerRecord,
        partitions: u32,
        buffer: Option<OwnedSemaphorePermit>,
        now: Instant,
    ) -> Appended {
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
        let spare = &mut self.spare;
        let reserved_bytes = &mut self.reserved_bytes;
        let batches = match self.open.get_mut(record.topic.as_str()) {
            Some(batches) => batches,
            None => self.open.entry(record.topic.clone()).or_default(),
        };
        let mut opened = false;
        let open = batches.entry(partition).or_insert_with(|| {
            *reserved_bytes += capacity_bytes;
            opened = true;
            OpenBatch {
                builder: new_builder(spare, capacity_bytes).compression(compression),
                reserved: capacity_bytes,
                records: 0,
                outcome: BatchResolver::default(),
                buffer: None,
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
        let delivery = open.outcome.delivery(open.records);
        open.records += 1;
        match (&mut open.buffer, buffer) {
            (Some(held), Some(buffer)) => held.merge(buffer),
            (held, buffer) => *held = held.take().or(buffer),
        }
        assert!(open.builder.size_bytes() <= self.limits.batch_bytes_max);
        Appended {
            delivery,
            wake_sender: opened || full,
        }
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

    /// Closes every open batch (a flush, or a full buffer); whether there was one.
    pub(crate) fn close_all(&mut self, now: Instant) -> bool {
        let all: Vec<(String, u32)> = self
            .open
            .iter()
            .flat_map(|(topic, batches)| batches.keys().map(move |p| (topic.clone(), *p)))
            .collect();
        let closed = !all.is_empty();
        for (topic, partition) in all {
            self.close(&topic, partition, now);
        }
        closed
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
    pub(crate) fn pop_ready(&mut self) -> Option<ClosedBatch> {
        self.ready.pop_front()
    }

    /// The id the next batch to close will get: every batch closed so far has a smaller one.
    pub(crate) fn next_batch_id(&self) -> u64 {
        self.next_batch_id
    }

    /// Drops every batch, open or waiting, which fails their records with
    /// [`crate::Error::Closed`] and gives their share of the buffer back, and marks the
    /// accumulator abandoned: for the sender task's end when it was not asked to end
    /// ([`AbandonUnlessFinished`]), after which nothing would send them.
    pub(crate) fn abandon(&mut self) {
        self.open.clear();
        self.ready.clear();
        self.reserved_bytes = 0;
        self.abandoned = true;
    }

    /// Whether [`Self::abandon`] was called: `send` then refuses records.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned
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
        assert!(open.records > 0);
        self.reserved_bytes -= open.reserved;
        let size_bytes = open.builder.size_bytes();
        self.capacity_bytes = (size_bytes + size_bytes / 8).min(self.limits.batch_bytes_max);
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
            records: open.records,
            outcome: open.outcome,
            buffer: open.buffer,
            closed_at: now,
        });
        self.next_batch_id += 1;
    }
}

/// The accumulator shared by `send`, which appends, and the sender task, which closes and
/// takes batches; with the notification that wakes the sender task.
#[derive(Debug)]
pub(crate) struct SharedAccumulator {
    accumulator: Mutex<Accumulator>,
    /// Notified when a record opens or closes a batch.
    pub(crate) batches_changed: Notify,
}

impl SharedAccumulator {
    pub(crate) fn new(accumulator: Accumulator) -> Self {
        Self {
            accumulator: Mutex::new(accumulator),
            batches_changed: Notify::new(),
        }
    }

    /// Held for a record's append, or for a step of the sender task's loop: never across an
    /// `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Accumulator> {
        // Every method leaves the accumulator whole before it could panic (the asserts come
        // before the changes they guard): a poisoned lock still guards a consistent one.
        self.accumulator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Held by the sender task: abandons the accumulator ([`Accumulator::abandon`]) when the task
/// stops before [`Self::finished`], that is when it panicked or its runtime shut down and
/// dropped it. Without this, the records of batches still open or waiting would wait for
/// their acknowledgement until the producer itself is dropped, and `send` would keep
/// accepting records nobody sends.
#[derive(Debug)]
pub(crate) struct AbandonUnlessFinished {
    accumulator: Arc<SharedAccumulator>,
    finished: bool,
}

impl AbandonUnlessFinished {
    pub(crate) fn new(accumulator: Arc<SharedAccumulator>) -> Self {
        Self {
            accumulator,
            finished: false,
        }
    }

    /// The task ended as asked, with everything sent and answered.
    pub(crate) fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for AbandonUnlessFinished {
    fn drop(&mut self) {
        if !self.finished {
            self.accumulator.lock().abandon();
        }
    }
}

#[cfg(test)]
#[path = "accumulator_tests.rs"]
mod tests;
