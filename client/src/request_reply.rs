//! Request and reply over topics: a [`Requester`] sends a record carrying a `correlation-id`
//! and a `reply-to` header and waits for the record on its reply topic with the same
//! `correlation-id`; a [`Responder`] reads requests as a member of a consumer group, calls a
//! handler, and produces the handler's answer to the request's `reply-to` topic.
//!
//! The requester reads every partition of its reply topic, from the latest offset when it
//! starts, so a responder may reply to any partition; replies to requests it does not wait for
//! (another requester's, or one that timed out) are ignored. Share a reply topic between
//! requesters only when that traffic is small, or give each its own.
//!
//! A responder replies at least once: after a crash or rebalance a request may be handled
//! again, and its reply sent twice; the requester takes the first and drops the rest.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::consumer::{ConsumerConfig, PartitionConsumer, StartFrom};
use crate::error::{Error, Result};
use crate::group::{GroupConsumer, GroupRecord};
use crate::group_config::GroupConsumerConfig;
use crate::producer::Producer;
use crate::producer_config::ProducerConfig;
use crate::record::ProducerRecord;
use crate::retry::{Backoff, random_jitter};

/// The header naming the request a record answers (or is).
pub const CORRELATION_ID_HEADER: &str = "correlation-id";
/// The header naming the topic a request's reply goes to.
pub const REPLY_TO_HEADER: &str = "reply-to";

/// How a [`Requester`] sends and waits.
#[derive(Debug, Clone)]
pub struct RequesterConfig {
    /// Requests sent and not yet answered (or timed out); `request` waits for room beyond.
    pub pending_max: usize,
    pub producer: ProducerConfig,
    /// Each reply-topic partition reader's credit.
    pub consumer: ConsumerConfig,
}

impl Default for RequesterConfig {
    fn default() -> Self {
        Self {
            pending_max: 1024,
            producer: ProducerConfig::default(),
            consumer: ConsumerConfig::default(),
        }
    }
}

/// The requests waiting for their reply, by correlation id. Pure bookkeeping.
#[derive(Debug)]
struct Pending {
    waiting: HashMap<String, oneshot::Sender<GroupRecord>>,
    limit: usize,
}

impl Pending {
    fn new(limit: usize) -> Self {
        Self {
            waiting: HashMap::new(),
            limit,
        }
    }

    /// Starts waiting for the reply to `correlation_id`.
    ///
    /// # Panics
    /// When the id is already waiting (ids are unique), or the limit is reached (callers hold
    /// a slot of the requester's semaphore, which has `limit` permits).
    fn register(&mut self, correlation_id: &str) -> oneshot::Receiver<GroupRecord> {
        assert!(self.waiting.len() < self.limit);
        let (sender, receiver) = oneshot::channel();
        let previous = self.waiting.insert(correlation_id.to_owned(), sender);
        assert!(previous.is_none(), "correlation ids are unique");
        receiver
    }

    /// Hands a reply to its request; returns whether one was waiting for it.
    fn resolve(&mut self, correlation_id: &str, reply: GroupRecord) -> bool {
        match self.waiting.remove(correlation_id) {
            Some(sender) => sender.send(reply).is_ok(),
            None => false,
        }
    }

    /// Stops waiting (the request timed out or was dropped).
    fn cancel(&mut self, correlation_id: &str) {
        self.waiting.remove(correlation_id);
    }

    fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// A correlation id: the requester's random prefix and its request number, in hex. Unique
/// across requesters with overwhelming probability, and within one for sure.
fn correlation_id(prefix: u64, sequence: u64) -> String {
    format!("{prefix:016x}-{sequence:x}")
}

/// Removes its request from the pending map when dropped: a timed-out or cancelled request
/// leaves nothing behind.
struct PendingGuard<'a> {
    pending: &'a Mutex<Pending>,
    correlation_id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .expect("no panic while holding the lock")
            .cancel(self.correlation_id);
    }
}

/// Sends requests and waits for their replies. See the module documentation. Dropping it
/// stops its reply readers.
#[derive(Debug)]
pub struct Requester {
    producer: Producer,
    reply_topic: String,
    /// std Mutex: never held across `.await`.
    pending: Arc<Mutex<Pending>>,
    slots: Semaphore,
    prefix: u64,
    next_sequence: AtomicU64,
    readers: Vec<JoinHandle<()>>,
}

impl Requester {
    /// A requester whose replies come on `reply_topic` (which must exist), with the default
    /// [`RequesterConfig`]. Starts reading every partition of the reply topic at its latest
    /// offset before returning.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION` for the reply topic; an invalid producer configuration;
    /// transport errors.
    pub async fn new(client: &Client, reply_topic: &str) -> Result<Self> {
        Self::with_config(client, reply_topic, RequesterConfig::default()).await
    }

    /// Like [`Requester::new`], with a configuration.
    ///
    /// # Errors
    /// As [`Requester::new`], and [`Error::InvalidArgument`] for `pending_max` 0.
    pub async fn with_config(
        client: &Client,
        reply_topic: &str,
        config: RequesterConfig,
    ) -> Result<Self> {
        if config.pending_max == 0 || config.pending_max > Semaphore::MAX_PERMITS {
            return Err(Error::InvalidArgument(format!(
                "pending_max {} is outside 1..={}",
                config.pending_max,
                Semaphore::MAX_PERMITS
            )));
        }
        let description = client.admin().describe_topic(reply_topic).await?;
        let pending = Arc::new(Mutex::new(Pending::new(config.pending_max)));
        let mut readers = Vec::new();
        for partition in 0..description.partitions {
            let consumer = client
                .subscribe(reply_topic, partition, StartFrom::Latest, config.consumer)
                .await?;
            let reader = read_replies(
                client.clone(),
                consumer,
                Arc::clone(&pending),
                config.consumer,
            );
            readers.push(tokio::spawn(reader));
        }
        Ok(Self {
            producer: client.producer(config.producer)?,
            reply_topic: reply_topic.to_owned(),
            pending,
            slots: Semaphore::new(config.pending_max),
            prefix: std::collections::hash_map::RandomState::new().hash_one(reply_topic),
            next_sequence: AtomicU64::new(0),
            readers,
        })
    }

    /// Sends `value` (with `key`) to `topic` as a request and returns its reply. `timeout`
    /// covers all of it: waiting for room among the pending requests, the send, and the
    /// reply.
    ///
    /// Cancel safe: dropping the future forgets the request (a late reply is ignored).
    ///
    /// # Errors
    /// [`Error::NoReply`] when no reply arrived in time; the producer's errors for the send.
    pub async fn request(
        &self,
        topic: &str,
        key: Option<Bytes>,
        value: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<GroupRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let correlation_id = correlation_id(self.prefix, sequence);
        let no_reply = || Error::NoReply {
            correlation_id: correlation_id.clone(),
            after_ms: timeout.as_millis() as u64,
        };
        let _slot = tokio::time::timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| no_reply())?
            .map_err(|_| Error::Closed)?;
        let reply = self
            .pending
            .lock()
            .expect("no panic while holding the lock")
            .register(&correlation_id);
        let _guard = PendingGuard {
            pending: &self.pending,
            correlation_id: &correlation_id,
        };
        let mut record = ProducerRecord::new(topic, value)
            .header(CORRELATION_ID_HEADER, correlation_id.clone())
            .header(REPLY_TO_HEADER, self.reply_topic.clone());
        record.key = key;
        let delivery = tokio::time::timeout_at(deadline, self.producer.send(record))
            .await
            .map_err(|_| no_reply())??;
        tokio::time::timeout_at(deadline, delivery)
            .await
            .map_err(|_| no_reply())??;
        tokio::time::timeout_at(deadline, reply)
            .await
            .map_err(|_| no_reply())?
            .map_err(|_| Error::Closed)
    }

    /// Requests sent and waiting for their reply.
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .expect("no panic while holding the lock")
            .len()
    }

    /// The topic replies come on.
    pub fn reply_topic(&self) -> &str {
        &self.reply_topic
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Reads one reply partition for as long as the requester lives, handing each reply to its
/// request. A failed subscription is started again where it stopped, after a backoff.
async fn read_replies(
    client: Client,
    mut consumer: PartitionConsumer,
    pending: Arc<Mutex<Pending>>,
    config: ConsumerConfig,
) {
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };
    let mut failures = 0u32;
    loop {
        match consumer.next().await {
            Ok(Some(record)) => {
                failures = 0;
                let reply = GroupRecord {
                    topic: consumer.topic().to_owned(),
                    partition: consumer.partition(),
                    offset: record.offset,
                    timestamp: record.timestamp,
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                };
                let Some(correlation_id) = reply.header(CORRELATION_ID_HEADER) else {
                    continue;
                };
                let correlation_id = String::from_utf8_lossy(correlation_id).into_owned();
                pending
                    .lock()
                    .expect("no panic while holding the lock")
                    .resolve(&correlation_id, reply);
            }
            result => {
                failures = failures.saturating_add(1);
                let (topic, partition) = (consumer.topic().to_owned(), consumer.partition());
                if let Err(error) = result {
                    tracing::warn!(%error, topic, partition, "reading replies failed");
                }
                loop {
                    tokio::time::sleep(backoff.delay(failures, random_jitter())).await;
                    let from = StartFrom::Offset(consumer.next_offset());
                    match client.subscribe(&topic, partition, from, config).await {
                        Ok(next) => {
                            consumer = next;
                            break;
                        }
                        Err(error) => {
                            failures = failures.saturating_add(1);
                            tracing::warn!(%error, topic, partition, "subscribing to replies failed");
                        }
                    }
                }
            }
        }
    }
}

/// Answers requests: a member of a consumer group on the request topic that calls a handler
/// for each request and produces its answer to the request's `reply-to` topic, with the same
/// `correlation-id`. See the module documentation.
#[derive(Debug)]
pub struct Responder {
    consumer: GroupConsumer,
    producer: Producer,
}

impl Responder {
    /// Joins the group `config` names, on the request topics it lists.
    ///
    /// # Errors
    /// As [`Client::group_consumer`] and [`Client::producer`].
    pub async fn new(client: &Client, config: GroupConsumerConfig) -> Result<Self> {
        let producer = client.producer(ProducerConfig::default())?;
        let consumer = client.group_consumer(config).await?;
        Ok(Self { consumer, producer })
    }

    /// Handles requests until `shutdown` completes, then commits and leaves the group. Each
    /// reply is acknowledged by the broker before the next request is read, so a committed
    /// request has always been answered. Records without a `correlation-id` or `reply-to`
    /// header are skipped.
    ///
    /// # Errors
    /// The group consumer's errors ([`GroupConsumer::next`]) and a reply that could not be
    /// stored; the consumer then leaves without committing the request being answered.
    pub async fn run<H, F>(
        mut self,
        mut handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()>
    where
        H: FnMut(GroupRecord) -> F,
        F: Future<Output = Bytes>,
    {
        let served = async {
            while let Some(request) = self.consumer.next().await? {
                let (Some(correlation_id), Some(reply_to)) = (
                    request.header(CORRELATION_ID_HEADER).cloned(),
                    request.header(REPLY_TO_HEADER).cloned(),
                ) else {
                    tracing::warn!(
                        topic = request.topic,
                        partition = request.partition,
                        offset = request.offset,
                        "request without correlation-id or reply-to: skipped"
                    );
                    continue;
                };
                let reply_to = String::from_utf8_lossy(&reply_to).into_owned();
                let value = handler(request).await;
                let reply = ProducerRecord::new(reply_to, value)
                    .header(CORRELATION_ID_HEADER, correlation_id);
                self.producer.send(reply).await?.await?;
            }
            Ok::<(), Error>(())
        };
        let result = tokio::select! {
            result = served => result,
            () = shutdown => Ok(()),
        };
        let Self { consumer, producer } = self;
        if result.is_ok() {
            consumer.close().await?;
        }
        producer.close().await?;
        result
    }
}

#[cfg(test)]
mod tests {
    use strata_proto::batch::Header;

    use super::*;

    fn reply(correlation_id: &str) -> GroupRecord {
        GroupRecord {
            topic: "replies".into(),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"answer")),
            headers: vec![Header {
                key: CORRELATION_ID_HEADER.into(),
                value: Some(Bytes::from(correlation_id.to_owned())),
            }],
        }
    }

    /// A reply reaches the request with its correlation id, once; unknown, duplicate and
    /// cancelled ids are dropped.
    #[test]
    fn replies_match_requests() {
        let mut pending = Pending::new(4);
        let mut first = pending.register("a");
        let mut second = pending.register("b");
        assert_eq!(pending.len(), 2);
        assert!(!pending.resolve("zzz", reply("zzz")));
        assert!(pending.resolve("b", reply("b")));
        assert!(
            !pending.resolve("b", reply("b")),
            "a duplicate reply is dropped"
        );
        assert_eq!(
            second
                .try_recv()
                .expect("resolved")
                .header(CORRELATION_ID_HEADER),
            Some(&Bytes::from_static(b"b"))
        );
        assert!(first.try_recv().is_err(), "still waiting");
        pending.cancel("a");
        assert!(!pending.resolve("a", reply("a")), "cancelled");
        assert_eq!(pending.len(), 0);
    }

    /// A request whose caller went away does not count as delivered.
    #[test]
    fn dropped_receiver_is_not_resolved() {
        let mut pending = Pending::new(1);
        drop(pending.register("a"));
        assert!(!pending.resolve("a", reply("a")));
        assert_eq!(pending.len(), 0);
    }

    /// The limit is an invariant: registering past it is a bug.
    #[test]
    #[should_panic]
    fn limit_holds() {
        let mut pending = Pending::new(1);
        let _a = pending.register("a");
        let _b = pending.register("b");
    }

    /// Ids differ by sequence and by prefix.
    #[test]
    fn correlation_ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .flat_map(|sequence| [correlation_id(1, sequence), correlation_id(2, sequence)])
            .collect();
        assert_eq!(ids.len(), 2000);
        assert_eq!(correlation_id(0xab, 0x10), "00000000000000ab-10");
    }
}
