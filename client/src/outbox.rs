//! The producer's outbox: every closed batch whose records are not yet resolved, in exactly
//! one place — the queue (closing order), the retry schedule, or in flight — with the flushes
//! waiting on them and the idempotent producer's sequencing. Pure bookkeeping, time passed in:
//! the sender task ([`crate::sender`]) does the I/O and asks the outbox what to send, retry or
//! fail.
//!
//! Invariants:
//! - the queue is sorted by batch id (closing order), retries included;
//! - the queue and the retry schedule hold no limit of their own: every batch in them holds
//!   its records' share of the producer's buffer, so their size is bounded by
//!   `buffer_bytes_max`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use strata_proto::v1::ErrorCode;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::accumulator::ClosedBatch;
use crate::error::Error;
use crate::retry::{Backoff, random_jitter};
use crate::routing::Route;
use crate::sequence::{Identity, Sequencer, Stamp, stamp_batch};

/// Batches of one partition in flight at once for an idempotent producer: the broker
/// recognizes a retry as a duplicate only among the last five batches of a producer
/// (Kafka's rule).
pub(crate) const IN_FLIGHT_PER_PARTITION_MAX: usize = 5;

/// A closed batch on its way: how often it was sent and until when it may still be.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) closed: ClosedBatch,
    /// Times sent so far.
    pub(crate) attempts: u32,
    pub(crate) deadline: Instant,
    /// The producer id, epoch and sequence written into `closed.batch` (idempotent
    /// producers, once first sent).
    pub(crate) stamp: Option<Stamp>,
}

impl Batch {
    pub(crate) fn is_of(&self, other: &Batch) -> bool {
        self.closed.partition == other.closed.partition && self.closed.topic == other.closed.topic
    }

    pub(crate) fn route(&self) -> Route {
        Route::partition(&self.closed.topic, self.closed.partition)
    }

    pub(crate) fn key(&self) -> (String, u32) {
        (self.closed.topic.clone(), self.closed.partition)
    }
}

/// A batch sent and not yet answered.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) batch: Batch,
    pub(crate) sent_at: Instant,
    /// The stream it went on, and that stream's broker.
    pub(crate) connection: u64,
    pub(crate) address: String,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// The delay between attempts of a batch.
    backoff: Backoff,
    /// How many times a batch is sent again after a retriable error.
    retries_max: u32,
    /// Closed batches in closing order, retries due put back at the front.
    pub(crate) queue: VecDeque<Batch>,
    /// Batches waiting for their retry time, by (time, batch id).
    pub(crate) retries: BTreeMap<(Instant, u64), Batch>,
    /// Batches sent and not yet answered, by request id.
    pub(crate) in_flight: HashMap<u64, InFlight>,
    /// Flushes waiting for every batch with an id below theirs to finish.
    pub(crate) flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// The idempotent producer's identity and sequences; `None` when not idempotent.
    pub(crate) sequencer: Option<Sequencer>,
}

impl Outbox {
    /// An empty outbox; `idempotent` gives it a sequencer.
    pub(crate) fn new(backoff: Backoff, retries_max: u32, idempotent: bool) -> Self {
        Self {
            backoff,
            retries_max,
            queue: VecDeque::new(),
            retries: BTreeMap::new(),
            in_flight: HashMap::new(),
            flushes: Vec::new(),
            sequencer: idempotent.then(Sequencer::default),
        }
    }

    /// Whether no batch waits or is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.retries.is_empty() && self.in_flight.is_empty()
    }

    /// Queues a batch just closed, to be delivered by `deadline`.
    pub(crate) fn push_closed(&mut self, closed: ClosedBatch, deadline: Instant) {
        self.queue.push_back(Batch {
            closed,
            attempts: 0,
            deadline,
            stamp: None,
        });
    }

    /// Puts the retries due at `now` back in the queue, in closing order: older batches
    /// first, and the batches of a partition in the order of their sequences.
    pub(crate) fn requeue_due(&mut self, now: Instant) {
        let due: Vec<(Instant, u64)> = self
            .retries
            .range(..=(now, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let batch = self.retries.remove(&key).expect("key just listed");
            let at = self
                .queue
                .partition_point(|queued| queued.closed.id < batch.closed.id);
            self.queue.insert(at, batch);
        }
    }

    /// Fails, with `error`, the batches queued or waiting for a retry whose delivery
    /// deadline passed.
    pub(crate) fn fail_expired(&mut self, now: Instant, error: &Error) {
        // Called at every wake-up of the sender: look before rebuilding the queue.
        let expired = |batch: &Batch| batch.deadline <= now;
        if !self.queue.iter().any(expired) && !self.retries.values().any(expired) {
            return;
        }
        let (expired, kept): (VecDeque<Batch>, VecDeque<Batch>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|batch| batch.deadline <= now);
        self.queue = kept;
        for batch in expired {
            self.fail(batch, error);
        }
        let expired: Vec<(Instant, u64)> = self
            .retries
            .iter()
            .filter(|(_, batch)| batch.deadline <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            let batch = self.retries.remove(&key).expect("key just listed");
            self.fail(batch, error);
        }
    }

    /// Whether another batch of `batch`'s partition may go in flight: fewer than
    /// [`IN_FLIGHT_PER_PARTITION_MAX`] are, and all of those carry the current identity.
    pub(crate) fn partition_has_room(&self, batch: &Batch, identity: Identity) -> bool {
        let mut count = 0;
        for in_flight in self.in_flight.values() {
            if !in_flight.batch.is_of(batch) {
                continue;
            }
            if in_flight.batch.stamp.map(|stamp| stamp.identity) != Some(identity) {
                return false;
            }
            count += 1;
        }
        count < IN_FLIGHT_PER_PARTITION_MAX
    }

    /// Stamps a batch with the next sequence of its partition, unless it already carries the
    /// current identity (a retry keeps its bytes, so the broker can recognize a duplicate).
    pub(crate) fn stamp(&mut self, batch: &mut Batch, identity: Identity) {
        if batch.stamp.is_some_and(|stamp| stamp.identity == identity) {
            return;
        }
        let sequencer = self.sequencer.as_mut().expect("stamping when idempotent");
        let records = i32::try_from(batch.closed.records).expect("a batch holds < 2^31 records");
        let stamp = sequencer.assign(&batch.closed.topic, batch.closed.partition, records);
        if let Some(old) = batch.stamp {
            tracing::debug!(
                topic = batch.closed.topic,
                partition = batch.closed.partition,
                old_epoch = old.identity.producer_epoch,
                epoch = stamp.identity.producer_epoch,
                "stamping a batch again under a new epoch"
            );
        }
        batch.closed.batch = stamp_batch(std::mem::take(&mut batch.closed.batch), stamp);
        batch.stamp = Some(stamp);
    }

    /// The sequence errors of an idempotent producer:
    /// - `OUT_OF_ORDER_SEQUENCE` while an earlier batch of the partition is in flight or
    ///   waits: retried, since that batch lands first. Otherwise a sequence was lost: the
    ///   epoch goes up (sequences restart at 0) and the batch is retried under it.
    /// - `INVALID_PRODUCER_EPOCH` for a batch stamped before the epoch went up: retried under
    ///   the new epoch. For one of the current epoch: fails.
    /// - `UNKNOWN_PRODUCER_ID`: fails; the next batch asks for a new identity.
    ///
    /// Anything else goes through [`Self::retry_or_fail`].
    pub(crate) fn on_idempotent_error(&mut self, batch: Batch, error: Error, now: Instant) {
        let sequencer = self.sequencer.as_mut().expect("only when idempotent");
        let current = sequencer.identity();
        let stamped_now = batch.stamp.map(|stamp| stamp.identity) == current && current.is_some();
        match error.code() {
            Some(ErrorCode::OutOfOrderSequence) => {
                let earlier = self.has_earlier_batch(&batch);
                if !earlier && stamped_now {
                    let sequencer = self.sequencer.as_mut().expect("only when idempotent");
                    raise_epoch(sequencer, &batch, "sequence lost");
                }
                self.schedule_retry(batch, error, now, true);
            }
            Some(ErrorCode::InvalidProducerEpoch) if !stamped_now => {
                self.schedule_retry(batch, error, now, true);
            }
            Some(ErrorCode::UnknownProducerId) => {
                if stamped_now {
                    sequencer.clear_identity();
                }
                self.fail(batch, &error);
            }
            _ => self.retry_or_fail(batch, error, now),
        }
    }

    /// Whether a batch of the same partition closed before `batch` is in flight or waits.
    pub(crate) fn has_earlier_batch(&self, batch: &Batch) -> bool {
        let earlier = |other: &Batch| other.is_of(batch) && other.closed.id < batch.closed.id;
        self.in_flight
            .values()
            .any(|in_flight| earlier(&in_flight.batch))
            || self.retries.values().any(earlier)
            || self.queue.iter().any(earlier)
    }

    /// Schedules another attempt when the error is retriable and the batch has attempts and
    /// time left; fails its records otherwise.
    pub(crate) fn retry_or_fail(&mut self, batch: Batch, error: Error, now: Instant) {
        let retriable = error.is_retriable();
        self.schedule_retry(batch, error, now, retriable);
    }

    /// Schedules another attempt when `retriable` and the batch has attempts and time left;
    /// fails its records otherwise.
    pub(crate) fn schedule_retry(
        &mut self,
        mut batch: Batch,
        error: Error,
        now: Instant,
        retriable: bool,
    ) {
        batch.attempts += 1;
        let retry = batch.attempts; // the n-th retry follows the n-th attempt
        let at = now + self.backoff.delay(retry, random_jitter());
        if retriable && retry <= self.retries_max && at < batch.deadline {
            tracing::debug!(
                %error,
                topic = batch.closed.topic,
                partition = batch.closed.partition,
                retry,
                "retrying batch"
            );
            self.retries.insert((at, batch.closed.id), batch);
        } else {
            self.fail(batch, &error);
        }
    }

    /// Fails a batch for good. When it carries the current identity, its sequence is lost
    /// to the broker, which would refuse every later batch of the partition: the epoch goes
    /// up so they start over at sequence 0.
    pub(crate) fn fail(&mut self, batch: Batch, error: &Error) {
        if let (Some(sequencer), Some(stamp)) = (self.sequencer.as_mut(), batch.stamp)
            && sequencer.identity() == Some(stamp.identity)
        {
            raise_epoch(sequencer, &batch, "batch failed for good");
        }
        fail(batch, error);
    }

    /// Answers the flushes whose batches have all finished.
    pub(crate) fn finish_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest = self
            .queue
            .iter()
            .chain(self.retries.values())
            .chain(self.in_flight.values().map(|in_flight| &in_flight.batch))
            .map(|batch| batch.closed.id)
            .min()
            .unwrap_or(u64::MAX);
        let (done, waiting) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(target, _)| oldest >= *target);
        self.flushes = waiting;
        for (_, done) in done {
            let _ = done.send(());
        }
    }
}

/// Raises the producer epoch, so every partition's sequences restart at 0, and says why
/// (`reason`, about `batch`).
fn raise_epoch(sequencer: &mut Sequencer, batch: &Batch, reason: &str) {
    sequencer.bump_epoch();
    tracing::info!(
        topic = batch.closed.topic,
        partition = batch.closed.partition,
        epoch = ?sequencer.identity().map(|identity| identity.producer_epoch),
        "{reason}: raised the producer epoch"
    );
}

fn fail(batch: Batch, error: &Error) {
    tracing::debug!(
        %error,
        topic = batch.closed.topic,
        partition = batch.closed.partition,
        attempts = batch.attempts,
        "batch failed"
    );
    batch.closed.outcome.failed(error.clone());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::record::{BatchResolver, DeliveryFuture};

    /// A closed batch of one record of partition `t`/0, and the future of its delivery.
    fn closed(id: u64) -> (ClosedBatch, DeliveryFuture) {
        let outcome = BatchResolver::default();
        let delivery = outcome.delivery(0);
        let closed = ClosedBatch {
            id,
            topic: "t".into(),
            partition: 0,
            batch: Bytes::new(),
            records: 1,
            outcome,
            buffer: None,
            closed_at: std::time::Instant::now(),
        };
        (closed, delivery)
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        }
    }

    /// An error a batch is retried after.
    fn retriable() -> Error {
        Error::Timeout { after_ms: 1 }
    }

    fn queued_ids(outbox: &Outbox) -> Vec<u64> {
        outbox.queue.iter().map(|batch| batch.closed.id).collect()
    }

    /// Retries that fall due go back into the queue in closing order, around the batches
    /// already queued; those not yet due stay scheduled.
    #[test]
    fn due_retries_go_back_in_closing_order() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let mut outbox = Outbox::new(backoff(), 10, false);
        let mut replies = Vec::new();
        for id in [0, 1, 2, 3] {
            let (batch, reply) = closed(id);
            replies.push(reply);
            outbox.push_closed(batch, deadline);
        }
        // Batches 3 and 1 fail in that order; 0 and 2 stay queued.
        for id in [3, 1] {
            let at = outbox
                .queue
                .iter()
                .position(|batch| batch.closed.id == id)
                .expect("queued");
            let batch = outbox.queue.remove(at).expect("queued");
            outbox.retry_or_fail(batch, retriable(), now);
        }
        assert_eq!(outbox.retries.len(), 2);
        outbox.requeue_due(now);
        assert_eq!(queued_ids(&outbox), [0, 2], "not due yet");
        outbox.requeue_due(now + Duration::from_millis(20));
        assert_eq!(queued_ids(&outbox), [0, 1, 2, 3]);
        assert!(outbox.retries.is_empty());
    }

    /// A batch fails with the error once its retries are used up, and a queued batch past its
    /// delivery deadline fails with the error given.
    #[test]
    fn retries_and_deadlines_run_out() {
        let now = Instant::now();
        let mut outbox = Outbox::new(backoff(), 1, false);
        let (batch, mut first) = closed(0);
        outbox.push_closed(batch, now + Duration::from_secs(60));
        let batch = outbox.queue.pop_front().expect("queued");
        outbox.retry_or_fail(batch, retriable(), now);
        assert!(first.try_result().is_none(), "first retry scheduled");
        outbox.requeue_due(now + Duration::from_millis(20));
        let batch = outbox.queue.pop_front().expect("due again");
        outbox.retry_or_fail(batch, retriable(), now);
        assert!(matches!(
            first.try_result(),
            Some(Err(Error::Timeout { after_ms: 1 }))
        ));
        assert!(outbox.is_empty());

        let (batch, mut late) = closed(1);
        outbox.push_closed(batch, now + Duration::from_millis(5));
        outbox.fail_expired(now, &Error::Closed);
        assert_eq!(queued_ids(&outbox), [1], "before its deadline");
        let timeout = Error::Timeout { after_ms: 5 };
        outbox.fail_expired(now + Duration::from_millis(5), &timeout);
        assert!(outbox.is_empty());
        assert!(matches!(
            late.try_result(),
            Some(Err(Error::Timeout { after_ms: 5 }))
        ));
    }
}
