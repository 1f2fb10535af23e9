//! The producer: batches records per partition and sends the batches, many in flight, to each
//! partition's leader over one `ProduceStream` per broker; a batch refused because leadership
//! moved (or lost with a failed node) is retried on the new leader.
//!
//! ```text
//! send() ──(bounded channel)──▶ sender task: Accumulator ──▶ ProduceStream ──▶ broker
//!   ▲ waits for buffer room          │ linger, full batch, flush     │ replies by request_id
//!   └──────────── DeliveryFuture ◀───┴───────── offsets or error ◀───┘
//! ```
//!
//! Back-pressure comes from two bounds: the bytes of records accepted but not yet acknowledged
//! ([`ProducerConfig::buffer_bytes_max`]; `send` waits for room) and the batches in flight
//! ([`ProducerConfig::max_in_flight`]; the rest wait in the sender's queue, counted in the
//! buffer).
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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_proto::batch::{Compression, HEADER_BYTES};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::accumulator::single_record_batch_bytes_bound;
use crate::admin::Admin;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::retry::Backoff;
use crate::sender::{Command, Delivery, Sender};

/// The broker's default batch limit.
const BROKER_BATCH_BYTES_MAX: usize = 1 << 20;

/// The default batch limit: the broker's, less room for LZ4 framing on incompressible data
/// (about 0.4%) so a compressed batch never ends up above the broker's limit.
pub const BATCH_BYTES_MAX_DEFAULT: usize = BROKER_BATCH_BYTES_MAX - (16 << 10);

/// Commands queued to the sender task; each record is one, so the buffer bound
/// ([`ProducerConfig::buffer_bytes_max`]) is what holds back a fast producer, not this.
const COMMANDS_QUEUED_MAX: usize = 1024;

/// How a producer batches, sends and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
    /// The largest batch before compression, header included. At most the broker's limit
    /// (1 MiB by default); records larger than this are refused with
    /// [`Error::RecordTooLarge`].
    pub batch_bytes_max: usize,
    /// The bytes of records accepted and not yet acknowledged; `send` waits while this is
    /// used up. At least `batch_bytes_max`.
    pub buffer_bytes_max: usize,
    /// Batches sent and not yet answered, across all partitions. At least 1.
    pub max_in_flight: usize,
    /// How many times a batch is sent again after a retriable error
    /// ([`Error::is_retriable`]).
    pub retries: u32,
    /// The delay between attempts.
    pub backoff: Backoff,
    /// How long to wait for the reply to a batch; after that the stream is abandoned and its
    /// batches are retried on a new one.
    pub request_timeout: Duration,
    /// How long a batch may take from closing to its acknowledgement, retries included; after
    /// that its records fail with the last error.
    pub delivery_timeout: Duration,
    /// `None` or `Lz4`: the producer compresses, the broker stores the batch as it is.
    pub compression: Compression,
    /// Stamp batches with a producer id and sequences so retries are not stored twice, and
    /// keep each partition's batches in order (see the module documentation). Needs a broker
    /// that implements `InitProducerId`: without one, every send fails with its refusal.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            buffer_bytes_max: 32 << 20,
            max_in_flight: 16,
            retries: 10,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            compression: Compression::None,
            idempotent: true,
        }
    }
}

impl ProducerConfig {
    fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidArgument(reason));
        // Room for a header and a small record.
        let batch_bytes_min = HEADER_BYTES + 64;
        if !(batch_bytes_min..=BROKER_BATCH_BYTES_MAX * 64).contains(&self.batch_bytes_max) {
            return invalid(format!(
                "batch_bytes_max {} is outside {batch_bytes_min}..={}",
                self.batch_bytes_max,
                BROKER_BATCH_BYTES_MAX * 64
            ));
        }
        if self.buffer_bytes_max < self.batch_bytes_max
            || self.buffer_bytes_max > Semaphore::MAX_PERMITS
        {
            return invalid(format!(
                "buffer_bytes_max {} must be at least batch_bytes_max {} and at most {}",
                self.buffer_bytes_max,
                self.batch_bytes_max,
                Semaphore::MAX_PERMITS
            ));
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight must be at least 1".into());
        }
        if !matches!(self.compression, Compression::None | Compression::Lz4) {
            return invalid(format!(
                "compression {:?} is not supported: use None or Lz4",
                self.compression
            ));
        }
        Ok(())
    }
}

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// An explicit partition; without one, the key's hash picks it, and without a key the
    /// sticky round-robin does.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the Unix epoch; `send` stamps the current time when `None`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Adds a header with a null value.
    pub fn null_header(mut self, key: impl Into<String>) -> Self {
        self.headers.push((key.into(), None));
        self
    }

    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: u64,
}

/// Resolves when the broker has committed (replicated and fsynced) the record, or when it
/// failed for good. Dropping it does not cancel the send.
#[derive(Debug)]
pub struct DeliveryFuture {
    reply: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply)
            .poll(context)
            .map(|reply| reply.unwrap_or(Err(Error::Closed)))
    }
}

/// State `send` shares with the sender task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ProducerConfig,
    admin: Admin,
    /// Partition counts by topic, learned with DescribeTopic. std Mutex: never held across
    /// `.await`.
    partitions: Mutex<HashMap<String, u32>>,
    /// One permit per byte of records accepted and not yet acknowledged.
    buffer: Arc<Semaphore>,
}

impl Shared {
    /// Forgets a topic's partition count, so the next send describes it again (after the
    /// broker said the topic or partition is unknown).
    pub(crate) fn forget_partitions(&self, topic: &str) {
        self.partitions
            .lock()
            .expect("no panic while holding the lock")
            .remove(topic);
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        let cached = self
            .partitions
            .lock()
            .expect("no panic while holding the lock")
            .get(topic)
            .copied();
        if let Some(partitions) = cached {
            return Ok(partitions);
        }
        let description = self.admin.describe_topic(topic).await?;
        if description.partitions == 0 {
            return Err(Error::InvalidArgument(format!(
                "the broker describes topic {topic} with 0 partitions"
            )));
        }
        self.partitions
            .lock()
            .expect("no panic while holding the lock")
            .insert(topic.to_owned(), description.partitions);
        Ok(description.partitions)
    }
}

/// Sends records to any topics of the cluster. Made by [`Client::producer`]; idempotent
/// unless configured otherwise (see the module documentation).
///
/// `send` takes `&self`; share a producer between tasks with an `Arc`. Dropping the producer
/// still delivers what was accepted (the sender task ends when the last batch is answered);
/// [`Producer::close`] waits for that.
#[derive(Debug)]
pub struct Producer {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Producer {
    pub(crate) fn start(client: &Client, config: ProducerConfig) -> Result<Self> {
        config.validate()?;
        let shared = Arc::new(Shared {
            buffer: Arc::new(Semaphore::new(config.buffer_bytes_max)),
            config,
            admin: client.admin(),
            partitions: Mutex::new(HashMap::new()),
        });
        let (commands, receiver) = mpsc::channel(COMMANDS_QUEUED_MAX);
        let sender = Sender::new(client.clone(), Arc::clone(&shared));
        let task = tokio::spawn(sender.run(receiver));
        Ok(Self {
            commands,
            shared,
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
        let config = &self.shared.config;
        let size_bytes = single_record_batch_bytes_bound(&record);
        if size_bytes > config.batch_bytes_max {
            return Err(Error::RecordTooLarge {
                size_bytes,
                limit_bytes: config.batch_bytes_max,
            });
        }
        let partitions = self.shared.partitions(&record.topic).await?;
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
        let buffer = Arc::clone(&self.shared.buffer)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::Closed)?;
        let (reply, receiver) = oneshot::channel();
        let command = Command::Record {
            record,
            partitions,
            delivery: Delivery::new(reply, buffer),
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Closed)?;
        Ok(DeliveryFuture { reply: receiver })
    }

    /// Sends every record accepted so far without waiting for the linger, and waits until
    /// each is acknowledged or has failed (their futures say which).
    ///
    /// # Errors
    /// [`Error::Closed`] when the sender task is gone.
    pub async fn flush(&self) -> Result<()> {
        let (done, receiver) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .await
            .map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)
    }

    /// Sends what was accepted, waits for every reply, and stops the sender task.
    ///
    /// # Errors
    /// [`Error::Closed`] when the sender task ended abnormally (it panicked).
    pub async fn close(self) -> Result<()> {
        let Self { commands, task, .. } = self;
        // The sender drains and stops when the last command sender is gone.
        drop(commands);
        task.await.map_err(|_| Error::Closed)
    }

    /// The configuration the producer runs with.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are valid and each bound is checked.
    #[test]
    fn config_validation() {
        assert!(ProducerConfig::default().validate().is_ok());
        let invalid = [
            ProducerConfig {
                batch_bytes_max: 10,
                ..ProducerConfig::default()
            },
            ProducerConfig {
                buffer_bytes_max: 1000,
                ..ProducerConfig::default()
            },
            ProducerConfig {
                max_in_flight: 0,
                ..ProducerConfig::default()
            },
            ProducerConfig {
                compression: Compression::Zstd,
                ..ProducerConfig::default()
            },
        ];
        for config in invalid {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    /// The default batch limit leaves room for LZ4's framing on incompressible data.
    #[test]
    fn default_batch_fits_the_broker_after_lz4() {
        let mut builder = strata_proto::batch::BatchBuilder::new().compression(Compression::Lz4);
        let mut value = vec![0u8; 1000];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        while builder.size_bytes() + 1100 < BATCH_BYTES_MAX_DEFAULT {
            for byte in &mut value {
                // xorshift: incompressible bytes.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            builder.push(0, None, Some(&value), &[]);
        }
        assert!(builder.finish().len() <= BROKER_BATCH_BYTES_MAX);
    }
}
