//! The producer: batches records per partition and sends the batches, many in flight, to each
//! partition's leader over one `ProduceStream` per broker; a batch refused because leadership
//! moved (or lost with a failed node) is retried on the new leader.
//!
//! ```text
//! send() ──(lock, append)──▶ Accumulator ◀── sender task ──▶ ProduceStream ──▶ broker
//!   ▲ waits for buffer room     │ linger, full batch/buffer, flush │ replies by request_id
//!   └──── DeliveryFuture ◀──────┴── its batch's outcome ◀── offsets or error ◀───┘
//! ```
//!
//! Back-pressure comes from two bounds: the bytes of records accepted but not yet acknowledged
//! ([`ProducerConfig::buffer_bytes_max`]; `send` waits for room) and the batches in flight
//! ([`ProducerConfig::max_in_flight`]; the rest wait in the sender's queue, counted in the
//! buffer). A batch closes when its linger is up, when the next record does not fit, on a
//! flush, and when a `send` finds the buffer full: nothing joins it until an acknowledgement
//! frees room, so it is sent as soon as it may be.
//!
//! The producer runs on either tokio runtime. Its sender task has little to do per record (only
//! a batch opening or closing wakes it), so one thread carries it: on a current-thread
//! runtime a record crosses no thread between `send` and the socket, which is how the `strata`
//! CLI produces (closed-loop latency p50 380 → 310 µs against the multi-thread runtime on the
//! test machine, BENCHMARKS.md).
//!
//! # Idempotence
//!
//! By default ([`ProducerConfig::idempotent`]) the producer asks the broker for a producer id
//! (`InitProducerId`, before its first batch) and stamps every batch with that id, an epoch and
//! a per-partition sequence. A retry sends the same bytes, so a batch whose reply was lost is
//! acknowledged with its original offsets instead of being stored twice; each partition's
//! batches are sent in order, at most five in flight, and land in the order they were sent.
//!
//! When a batch fails for good (an error that is not retriable, or its retries or
//! `delivery_timeout` ran out) its sequence is lost, and the broker would refuse every later
//! batch of the partition. The producer then raises its epoch, which restarts every
//! partition's sequences at 0; batches of the old epoch still to be sent are stamped again.
//! That leaves one small window for a duplicate: a batch whose earlier attempt was stored but
//! not acknowledged (a lost reply), retried only after the epoch went up, is stored again
//! under the new epoch, because the broker cannot tie the two stamps together.
//!
//! Without idempotence delivery is at least once: a batch whose reply was lost is sent again
//! and may be stored twice, and with more than one batch in flight a retried batch may land
//! after a later one of the same partition. Records of one partition that succeed on their
//! first attempt keep their order.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::accumulator::{SharedAccumulator, single_record_batch_bytes_bound};
use crate::admin::{Admin, PartitionCounts};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::producer_config::ProducerConfig;
use crate::record::{DeliveryFuture, ProducerRecord};
use crate::sender::Sender;

/// Flushes queued to the sender task: each caller waits for its own, so a few are plenty.
const FLUSHES_QUEUED_MAX: usize = 16;

/// Sends records to any topics of the cluster. Made by
/// [`Client::producer`](crate::Client::producer); idempotent unless configured otherwise (see
/// the module documentation).
///
/// `send` takes `&self`; share a producer between tasks with an `Arc`. Dropping the producer
/// still delivers what was accepted (the sender task ends when the last batch is answered);
/// [`Producer::close`] waits for that.
#[derive(Debug)]
pub struct Producer {
    /// Where `send` appends records; shared with the sender task.
    accumulator: Arc<SharedAccumulator>,
    /// Flush requests to the sender task; closing it (dropping the producer) tells the task
    /// to send what was accepted and end.
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    config: ProducerConfig,
    /// Partition counts by topic, shared with the sender task, which forgets a topic the
    /// broker no longer knows.
    partitions: Arc<PartitionCounts>,
    /// One permit per byte of records accepted and not yet acknowledged.
    buffer: Arc<Semaphore>,
    task: JoinHandle<()>,
}

impl Producer {
    pub(crate) fn start(cluster: &Cluster, config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let partitions = Arc::new(PartitionCounts::new(Admin::new(cluster.clone())));
        let buffer = Arc::new(Semaphore::new(config.buffer_bytes_max));
        let (flushes, receiver) = mpsc::channel(FLUSHES_QUEUED_MAX);
        let sender = Sender::new(cluster.clone(), config.clone(), Arc::clone(&partitions));
        let accumulator = sender.accumulator();
        let task = tokio::spawn(sender.run(receiver));
        Ok(Self {
            accumulator,
            flushes,
            config,
            partitions,
            buffer,
            task,
        })
    }

    /// Accepts a record, waiting while the buffer is full, and returns the future of its
    /// acknowledgement. The first `.await` is back-pressure; the second is the delivery:
    ///
    /// ```no_run
    /// # async fn example(producer: &strata_client::Producer) -> strata_client::Result<()> {
    /// use strata_client::ProducerRecord;
    /// let delivery = producer.send(ProducerRecord::new("orders", "hello")).await?;
    /// let stored = delivery.await?;
    /// println!("partition {} offset {}", stored.partition, stored.offset);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The first time it sees a topic, `send` describes it to learn its partition count.
    ///
    /// # Errors
    /// Before accepting: [`Error::RecordTooLarge`], [`Error::UnknownPartition`], the broker's
    /// `UNKNOWN_TOPIC_OR_PARTITION` for a topic that does not exist, [`Error::Closed`] when
    /// the sender task is gone. The delivery then fails with the broker's error when it is not
    /// retriable or the retries and `delivery_timeout` run out.
    pub async fn send(&self, mut record: ProducerRecord) -> Result<DeliveryFuture> {
        let config = &self.config;
        let size_bytes = single_record_batch_bytes_bound(&record);
        if size_bytes > config.batch_bytes_max {
            return Err(Error::RecordTooLarge {
                size_bytes,
                limit_bytes: config.batch_bytes_max,
            });
        }
        let partitions = self.partitions.get(&record.topic).await?;
        if let Some(partition) = record.partition
            && partition >= partitions
        {
            return Err(Error::UnknownPartition {
                topic: record.topic,
                partition,
                partitions,
            });
        }
        record.timestamp_ms.get_or_insert_with(now_ms);
        let permits = u32::try_from(size_bytes).expect("batch_bytes_max fits in u32");
        let buffer = match Arc::clone(&self.buffer).try_acquire_many_owned(permits) {
            Ok(buffer) => buffer,
            Err(TryAcquireError::NoPermits) => {
                // The buffer is full: no record joins the open batches until an
                // acknowledgement frees room, so they go now rather than after their linger
                // (or after the next acknowledgement and this record, which would leave the
                // pipe empty meanwhile). Kafka's producer sends every batch once its buffer
                // pool has a waiter, for the same reason.
                if self.accumulator.lock().close_all(Instant::now()) {
                    self.accumulator.batches_changed.notify_one();
                }
                Arc::clone(&self.buffer)
                    .acquire_many_owned(permits)
                    .await
                    .map_err(|_| Error::Closed)?
            }
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
        };
        let appended = {
            let mut accumulator = self.accumulator.lock();
            if accumulator.is_abandoned() {
                // The sender task is gone (it panicked): nothing would send the record.
                return Err(Error::Closed);
            }
            accumulator.append(&record, partitions, Some(buffer), Instant::now())
        };
        if appended.wake_sender {
            self.accumulator.batches_changed.notify_one();
        }
        Ok(appended.delivery)
    }

    /// Sends every record accepted so far without waiting for the linger, and waits until
    /// each is acknowledged or has failed (their futures say which).
    ///
    /// # Errors
    /// [`Error::Closed`] when the sender task is gone.
    pub async fn flush(&self) -> Result<()> {
        let (done, receiver) = oneshot::channel();
        self.flushes.send(done).await.map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)
    }

    /// Sends what was accepted, waits for every reply, and stops the sender task.
    ///
    /// # Errors
    /// [`Error::Closed`] when the sender task ended abnormally (it panicked).
    pub async fn close(self) -> Result<()> {
        let Self { flushes, task, .. } = self;
        // The sender drains and stops when the flush channel closes.
        drop(flushes);
        task.await.map_err(|_| Error::Closed)
    }

    /// The configuration the producer runs with.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}
