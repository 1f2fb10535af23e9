//! The producer's sender task: one event loop that owns the accumulator, the queue of closed
//! batches, the batches in flight on `ProduceStream`s and those waiting to be retried. It
//! reacts to three things — a command from `send`/`flush`, a reply from a broker, a timer
//! (linger, retry, reconnect, request or delivery timeout) — and after each one sends what it
//! can. Owning everything in one task means no locks on the hot path.
//!
//! Each batch goes to its partition's leader, as the client's metadata says when the batch is
//! sent: one `ProduceStream` per broker in use, replies matched by request id. A batch refused
//! with `NOT_LEADER`, `UNAVAILABLE` or lost with its stream tells the client's metadata what it
//! learned (the hinted leader, or that it must ask the cluster again) and is retried after its
//! backoff, with the same bytes, wherever the partition's leader is by then. A stream that
//! fails makes only its own broker wait for the reconnect backoff.
//!
//! Invariants:
//! - every record accepted is in exactly one of: an open batch, the queue, the retry map, in
//!   flight; until its delivery resolves;
//! - `in_flight.len() <= max_in_flight`, so no stream's request channel (that capacity) ever
//!   fills;
//! - there is at most one stream per broker address, and at most one per broker in the
//!   cluster (plus the list the client was given) is open;
//! - request ids are never reused, so a reply can only match the request it answers;
//! - the queue and the retry map hold no limit of their own: every record in them holds its
//!   share of the producer's buffer, so their size is bounded by `buffer_bytes_max`;
//! - the queue is sorted by batch id (closing order), retries included.
//!
//! Each partition's batches leave in order: a batch is sent only when no earlier batch of its
//! partition was held back in the same pass. An idempotent producer also keeps them in order
//! across retries and leader changes: a batch is sent only when no earlier batch of its
//! partition waits (in the queue or for a retry), at most
//! [`IN_FLIGHT_PER_PARTITION_MAX`] per partition are in flight, and none is sent under a new
//! epoch while one stamped under an older epoch is still in flight. A batch gets its sequence
//! ([`Sequencer`]) when it is first sent, and keeps it on every retry unless the epoch changed
//! in between, in which case it is stamped again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::produce_request::{Payload, Target};
use strata_proto::v1::{ErrorCode, InitProducerIdRequest, ProduceRequest, ProduceResponse};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt as _, StreamMap, StreamNotifyClose};

use crate::accumulator::{Accumulator, BatchLimits, ClosedBatch};
use crate::client::{Client, broker_client};
use crate::error::{Error, Result};
use crate::partitioner::Partitioner;
use crate::producer::{ProducerRecord, RecordMetadata, Shared};
use crate::retry::random_jitter;
use crate::routing::Route;
use crate::sequence::{Identity, Sequencer, Stamp, stamp_batch};

/// Batches of one partition in flight at once for an idempotent producer: the broker
/// recognizes a retry as a duplicate only among the last five batches of a producer
/// (Kafka's rule).
pub(crate) const IN_FLIGHT_PER_PARTITION_MAX: usize = 5;

/// Commands handled per wake-up before the sender looks at timers and sends: enough to fill
/// batches under load, few enough to keep replies flowing.
const COMMANDS_PER_WAKE_MAX: usize = 512;

/// What `send` and `flush` ask of the sender.
#[derive(Debug)]
pub(crate) enum Command {
    Record {
        record: ProducerRecord,
        partitions: u32,
        delivery: Delivery,
    },
    /// Close every open batch and reply once all of them, and all before, are finished.
    Flush(oneshot::Sender<()>),
}

/// One record's way back to its `DeliveryFuture`, holding the record's share of the buffer
/// until it resolves.
#[derive(Debug)]
pub(crate) struct Delivery {
    reply: oneshot::Sender<Result<RecordMetadata>>,
    _buffer: OwnedSemaphorePermit,
}

impl Delivery {
    pub(crate) fn new(
        reply: oneshot::Sender<Result<RecordMetadata>>,
        buffer: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            reply,
            _buffer: buffer,
        }
    }

    fn resolve(self, result: Result<RecordMetadata>) {
        // The application may have dropped the future: nobody to tell.
        let _ = self.reply.send(result);
    }
}

/// A closed batch on its way: how often it was sent and until when it may still be.
#[derive(Debug)]
struct Batch {
    closed: ClosedBatch<Delivery>,
    /// Times sent so far.
    attempts: u32,
    deadline: Instant,
    /// The producer id, epoch and sequence written into `closed.batch` (idempotent
    /// producers, once first sent).
    stamp: Option<Stamp>,
}

impl Batch {
    fn is_of(&self, other: &Batch) -> bool {
        self.closed.partition == other.closed.partition && self.closed.topic == other.closed.topic
    }

    fn route(&self) -> Route {
        Route::partition(&self.closed.topic, self.closed.partition)
    }

    fn key(&self) -> (String, u32) {
        (self.closed.topic.clone(), self.closed.partition)
    }
}

#[derive(Debug)]
struct InFlight {
    batch: Batch,
    sent_at: Instant,
    /// The stream it went on, and that stream's broker.
    connection: u64,
    address: String,
}

/// An open `ProduceStream`; its replies are in [`Sender::replies`] under `id`.
#[derive(Debug)]
struct Connection {
    id: u64,
    requests: mpsc::Sender<ProduceRequest>,
}

/// A broker whose stream failed: how many times in a row, and no new stream before `at`.
#[derive(Debug, Clone, Copy)]
struct Reconnect {
    failures: u32,
    at: Instant,
}

pub(crate) struct Sender {
    client: Client,
    shared: Arc<Shared>,
    accumulator: Accumulator<Delivery>,
    /// Closed batches in closing order, retries due put back at the front.
    queue: VecDeque<Batch>,
    /// Batches waiting for their retry time, by (time, batch id).
    retries: BTreeMap<(Instant, u64), Batch>,
    in_flight: HashMap<u64, InFlight>,
    /// Open streams by broker address.
    connections: HashMap<String, Connection>,
    /// The replies of every open stream, by connection id; a stream's end comes as `None`.
    replies: StreamMap<u64, StreamNotifyClose<tonic::Streaming<ProduceResponse>>>,
    next_connection_id: u64,
    /// Brokers whose last stream failed, by address; removed at their next reply.
    reconnects: HashMap<String, Reconnect>,
    /// Why the last stream or call failed: what batches that time out while waiting fail
    /// with.
    last_error: Option<Error>,
    /// Flushes waiting for every batch with an id below theirs to finish.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    next_request_id: u64,
    /// The idempotent producer's identity and sequences; `None` when not idempotent.
    sequencer: Option<Sequencer>,
    /// No `InitProducerId` before this, after a failed one.
    init_at: Option<Instant>,
    /// `InitProducerId` calls failed in a row, for its backoff.
    init_failures: u32,
}

impl Sender {
    pub(crate) fn new(client: Client, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let limits = BatchLimits {
            batch_bytes_max: config.batch_bytes_max,
            linger: config.linger,
            compression: config.compression,
        };
        let seed = (random_jitter() * f64::from(u32::MAX)) as u32;
        let sequencer = config.idempotent.then(Sequencer::default);
        Self {
            client,
            accumulator: Accumulator::new(limits, Partitioner::new(seed)),
            shared,
            queue: VecDeque::new(),
            retries: BTreeMap::new(),
            in_flight: HashMap::new(),
            connections: HashMap::new(),
            replies: StreamMap::new(),
            next_connection_id: 0,
            reconnects: HashMap::new(),
            last_error: None,
            flushes: Vec::new(),
            next_request_id: 0,
            sequencer,
            init_at: None,
            init_failures: 0,
        }
    }

    /// Runs until every command sender is gone and every accepted record is resolved.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut accepting = true;
        loop {
            let now = Instant::now();
            self.accumulator.close_expired(now.into_std());
            self.expire(now);
            self.send_ready(now).await;
            self.finish_flushes();
            if !accepting && self.is_idle() {
                break;
            }
            // A far-off wake-up stands for "no timer": the branch must have a future.
            let wake = self
                .next_wake(now)
                .unwrap_or_else(|| now + Duration::from_secs(3600));
            tokio::select! {
                command = commands.recv(), if accepting => match command {
                    Some(command) => {
                        self.handle(command);
                        for _ in 1..COMMANDS_PER_WAKE_MAX {
                            match commands.try_recv() {
                                Ok(command) => self.handle(command),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        accepting = false;
                        self.accumulator.close_all(Instant::now().into_std());
                    }
                },
                reply = self.replies.next(), if !self.replies.is_empty() => {
                    if let Some((connection, reply)) = reply {
                        self.on_reply(connection, reply, Instant::now());
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Record {
                record,
                partitions,
                delivery,
            } => {
                self.accumulator
                    .append(&record, partitions, delivery, Instant::now().into_std());
            }
            Command::Flush(done) => {
                self.accumulator.close_all(Instant::now().into_std());
                self.flushes.push((self.accumulator.next_batch_id(), done));
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.accumulator.is_empty()
            && self.queue.is_empty()
            && self.retries.is_empty()
            && self.in_flight.is_empty()
    }

    /// The earliest timer: a linger, a retry, a reconnect, an `InitProducerId`, a request or
    /// delivery timeout. Reconnect and init times already passed are no timers: a queue that
    /// waits for something else (room in flight, an earlier batch) must not spin.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let config = &self.shared.config;
        let linger = self.accumulator.next_expiry().map(Instant::from_std);
        let retry = self.retries.keys().next().map(|(at, _)| *at);
        let waiting = !self.queue.is_empty();
        let reconnect = self
            .reconnects
            .values()
            .map(|reconnect| reconnect.at)
            .filter(|at| waiting && *at > now)
            .min();
        let init = self.init_at.filter(|at| waiting && *at > now);
        let request = self
            .in_flight
            .values()
            .map(|in_flight| in_flight.sent_at + config.request_timeout)
            .min();
        let delivery = self.queue.front().map(|batch| batch.deadline);
        [linger, retry, reconnect, init, request, delivery]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fails batches past their delivery deadline, and abandons each stream on which a
    /// request has waited longer than the request timeout.
    fn expire(&mut self, now: Instant) {
        let request_timeout = self.shared.config.request_timeout;
        let delivery_timeout = self.shared.config.delivery_timeout;
        let mut late: Vec<u64> = self
            .in_flight
            .values()
            .filter(|in_flight| in_flight.sent_at + request_timeout <= now)
            .map(|in_flight| in_flight.connection)
            .collect();
        late.sort_unstable();
        late.dedup();
        for connection in late {
            let error = Error::Timeout {
                after_ms: request_timeout.as_millis() as u64,
            };
            self.connection_lost(connection, error, now);
        }
        let error = self.last_error.clone().unwrap_or(Error::Timeout {
            after_ms: delivery_timeout.as_millis() as u64,
        });
        let (expired, kept): (VecDeque<Batch>, VecDeque<Batch>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|batch| batch.deadline <= now);
        self.queue = kept;
        for batch in expired {
            self.fail(batch, &error);
        }
        let expired: Vec<(Instant, u64)> = self
            .retries
            .iter()
            .filter(|(_, batch)| batch.deadline <= now)
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            let batch = self.retries.remove(&key).expect("key just listed");
            self.fail(batch, &error);
        }
    }

    /// Moves closed batches and due retries to the queue and sends from its front while
    /// there is room in flight and a stream (or the right to open one).
    async fn send_ready(&mut self, now: Instant) {
        let delivery_timeout = self.shared.config.delivery_timeout;
        while let Some(closed) = self.accumulator.pop_ready() {
            let deadline = Instant::from_std(closed.closed_at) + delivery_timeout;
            self.queue.push_back(Batch {
                closed,
                attempts: 0,
                deadline,
                stamp: None,
            });
        }
        let due: Vec<(Instant, u64)> = self
            .retries
            .range(..=(now, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        // Due retries go back in closing order: older batches first, and the batches of a
        // partition in the order of their sequences.
        for key in due {
            let batch = self.retries.remove(&key).expect("key just listed");
            let at = self
                .queue
                .partition_point(|queued| queued.closed.id < batch.closed.id);
            self.queue.insert(at, batch);
        }
        if let Some(front) = self.queue.front() {
            // Once per pass, when a failure made the metadata stale (or it was never read).
            let route = front.route();
            self.client.refresh_if_needed(&route).await;
        }
        if self.sequencer.is_some() && !self.queue.is_empty() && !self.ensure_identity(now).await {
            return;
        }
        // Idempotent only: the first batch waiting for a retry, by partition.
        let mut retrying: HashMap<(String, u32), u64> = HashMap::new();
        if self.sequencer.is_some() {
            for batch in self.retries.values() {
                let first = retrying.entry(batch.key()).or_insert(u64::MAX);
                *first = (*first).min(batch.closed.id);
            }
        }
        // The partitions a batch was held back from in this pass: their later batches wait.
        let mut held: HashSet<(String, u32)> = HashSet::new();
        let mut skipped: Vec<Batch> = Vec::new();
        while self.in_flight.len() < self.shared.config.max_in_flight {
            let Some(mut batch) = self.queue.pop_front() else {
                break;
            };
            let key = batch.key();
            if held.contains(&key) {
                skipped.push(batch);
                continue;
            }
            let identity = if self.sequencer.is_some() {
                let Some(identity) = self.sequencer.as_ref().and_then(Sequencer::identity) else {
                    self.queue.push_front(batch);
                    break;
                };
                let behind_retry = retrying.get(&key).is_some_and(|id| *id < batch.closed.id);
                if behind_retry || !self.partition_has_room(&batch, identity) {
                    held.insert(key);
                    skipped.push(batch);
                    continue;
                }
                Some(identity)
            } else {
                None
            };
            let route = batch.route();
            let address = self.client.cached_route(&route);
            let backing_off = self
                .reconnects
                .get(&address)
                .is_some_and(|reconnect| reconnect.at > now);
            if !self.connections.contains_key(&address) && backing_off {
                held.insert(key);
                skipped.push(batch);
                continue;
            }
            if let Some(identity) = identity {
                self.stamp(&mut batch, identity);
            }
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            let request = ProduceRequest {
                request_id,
                topic: batch.closed.topic.clone(),
                target: Some(Target::Partition(batch.closed.partition)),
                payload: Some(Payload::Batch(batch.closed.batch.clone())),
            };
            let connection = match self.connections.get(&address) {
                Some(connection) => match connection.requests.try_send(request) {
                    Ok(()) => connection.id,
                    Err(_) => {
                        // The stream ended under us: its end (or error) is still to be read,
                        // but the batch can go again on the next stream now.
                        let error =
                            Error::Rpc(tonic::Status::unavailable("the produce stream closed"));
                        self.connection_lost(connection.id, error.clone(), now);
                        self.retry_or_fail(batch, error, now);
                        held.insert(key);
                        continue;
                    }
                },
                None => match self.open_stream(&address, request).await {
                    Ok(connection) => connection,
                    Err(error) => {
                        self.stream_failed(&address, error.clone(), now);
                        self.client.note_error(&route, &address, &error);
                        self.retry_or_fail(batch, error, now);
                        held.insert(key);
                        continue;
                    }
                },
            };
            let previous = self.in_flight.insert(
                request_id,
                InFlight {
                    batch,
                    sent_at: now,
                    connection,
                    address,
                },
            );
            assert!(previous.is_none());
        }
        for batch in skipped.into_iter().rev() {
            self.queue.push_front(batch);
        }
    }

    /// Whether another batch of `batch`'s partition may go in flight: fewer than
    /// [`IN_FLIGHT_PER_PARTITION_MAX`] are, and all of those carry the current identity.
    fn partition_has_room(&self, batch: &Batch, identity: Identity) -> bool {
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
    fn stamp(&mut self, batch: &mut Batch, identity: Identity) {
        if batch.stamp.is_some_and(|stamp| stamp.identity == identity) {
            return;
        }
        let sequencer = self.sequencer.as_mut().expect("stamping when idempotent");
        let records =
            i32::try_from(batch.closed.deliveries.len()).expect("a batch holds < 2^31 records");
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

    /// Makes sure the idempotent producer has an identity, calling `InitProducerId` when it
    /// has none (at the first send, or after the epochs ran out or the broker forgot it).
    /// Returns whether it has one. A failure waits for the backoff; one that is not
    /// retriable fails the batches waiting for it.
    async fn ensure_identity(&mut self, now: Instant) -> bool {
        let sequencer = self.sequencer.as_mut().expect("only when idempotent");
        if sequencer.identity().is_some() {
            return true;
        }
        if self.init_at.is_some_and(|at| at > now) {
            return false;
        }
        let limit = self.shared.config.request_timeout;
        // One attempt (following hints to the controller leader): a failure waits for this
        // loop's own backoff, so replies keep flowing meanwhile.
        let reply = self
            .client
            .call_at(&Route::Controller, limit, 0, |channel| async move {
                broker_client(channel)
                    .init_producer_id(InitProducerIdRequest {})
                    .await
            })
            .await
            .and_then(|(reply, _)| {
                let identity = Identity {
                    producer_id: reply.producer_id,
                    producer_epoch: i16::try_from(reply.producer_epoch).unwrap_or(-1),
                };
                if identity.producer_id < 0 || identity.producer_epoch < 0 {
                    return Err(Error::InvalidArgument(format!(
                        "InitProducerId answered producer id {} epoch {}",
                        reply.producer_id, reply.producer_epoch
                    )));
                }
                Ok(identity)
            });
        match reply {
            Ok(identity) => {
                tracing::debug!(
                    producer_id = identity.producer_id,
                    epoch = identity.producer_epoch,
                    "idempotent producer identity"
                );
                self.sequencer
                    .as_mut()
                    .expect("only when idempotent")
                    .set_identity(identity);
                self.init_failures = 0;
                self.init_at = None;
                true
            }
            Err(error) => {
                self.init_failures = self.init_failures.saturating_add(1);
                let delay = self
                    .shared
                    .config
                    .backoff
                    .delay(self.init_failures, random_jitter());
                self.init_at = Some(now + delay);
                tracing::debug!(%error, "InitProducerId failed");
                if !error.is_retriable() {
                    for batch in std::mem::take(&mut self.queue) {
                        self.fail(batch, &error);
                    }
                }
                self.last_error = Some(error);
                false
            }
        }
    }

    /// Opens a stream to `address` with its first request already queued, so a broker that
    /// waits for the first message before answering the call still answers. Returns the new
    /// connection's id.
    async fn open_stream(&mut self, address: &str, first: ProduceRequest) -> Result<u64> {
        let channel = self.client.channel(address)?;
        let (requests, receiver) = mpsc::channel(self.shared.config.max_in_flight);
        requests
            .try_send(first)
            .expect("a new channel has room for one request");
        let limit = self.shared.config.request_timeout;
        let mut broker = broker_client(channel);
        let call = broker.produce_stream(ReceiverStream::new(receiver));
        let responses = match tokio::time::timeout(limit, call).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(Error::from_status(status)),
            Err(_) => {
                return Err(Error::Timeout {
                    after_ms: limit.as_millis() as u64,
                });
            }
        };
        let id = self.next_connection_id;
        self.next_connection_id += 1;
        self.replies.insert(id, StreamNotifyClose::new(responses));
        let previous = self
            .connections
            .insert(address.to_owned(), Connection { id, requests });
        assert!(previous.is_none(), "one stream per broker");
        Ok(id)
    }

    fn on_reply(
        &mut self,
        connection: u64,
        reply: Option<Result<ProduceResponse, tonic::Status>>,
        now: Instant,
    ) {
        let response = match reply {
            Some(Ok(response)) => response,
            None => {
                let status = tonic::Status::unavailable("the broker ended the produce stream");
                self.connection_lost(connection, Error::Rpc(status), now);
                return;
            }
            Some(Err(status)) => {
                self.connection_lost(connection, Error::from_status(status), now);
                return;
            }
        };
        let Some(in_flight) = self.in_flight.remove(&response.request_id) else {
            tracing::warn!(
                request_id = response.request_id,
                "produce reply for no request in flight"
            );
            return;
        };
        self.reconnects.remove(&in_flight.address);
        let batch = in_flight.batch;
        if let Some(detail) = response.error {
            let error = Error::from_detail(detail);
            if error.is_unknown_topic() {
                self.shared.forget_partitions(&batch.closed.topic);
            }
            self.client
                .note_error(&batch.route(), &in_flight.address, &error);
            if self.sequencer.is_some() {
                self.on_idempotent_error(batch, error, now);
            } else {
                self.retry_or_fail(batch, error, now);
            }
            return;
        }
        let records = batch.closed.deliveries.len() as u64;
        if response.partition != batch.closed.partition
            || response.last_offset.checked_sub(response.base_offset) != Some(records - 1)
        {
            tracing::warn!(
                topic = batch.closed.topic,
                partition = batch.closed.partition,
                records,
                reply_partition = response.partition,
                base_offset = response.base_offset,
                last_offset = response.last_offset,
                "produce reply does not match its batch"
            );
        }
        for (delta, delivery) in batch.closed.deliveries.into_iter().enumerate() {
            delivery.resolve(Ok(RecordMetadata {
                partition: response.partition,
                offset: response.base_offset + delta as u64,
            }));
        }
    }

    /// A stream failed: every batch in flight on it is retried (or failed), its broker waits
    /// for the reconnect backoff, and the client's metadata learns what the failure says
    /// about the leaders of those batches.
    fn connection_lost(&mut self, connection: u64, error: Error, now: Instant) {
        self.replies.remove(&connection);
        let address = self
            .connections
            .iter()
            .find(|(_, open)| open.id == connection)
            .map(|(address, _)| address.clone());
        if let Some(address) = &address {
            self.connections.remove(address);
        }
        let lost_ids: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, in_flight)| in_flight.connection == connection)
            .map(|(request_id, _)| *request_id)
            .collect();
        let mut lost: Vec<(u64, InFlight)> = lost_ids
            .into_iter()
            .map(|request_id| {
                let in_flight = self.in_flight.remove(&request_id).expect("just listed");
                (request_id, in_flight)
            })
            .collect();
        tracing::debug!(%error, ?address, lost = lost.len(), "produce stream lost");
        if let Some(address) = address.or_else(|| lost.first().map(|(_, f)| f.address.clone())) {
            self.stream_failed(&address, error.clone(), now);
            let mut routes: Vec<Route> = lost.iter().map(|(_, f)| f.batch.route()).collect();
            routes.dedup();
            if routes.is_empty() {
                routes.push(Route::Any);
            }
            for route in routes {
                self.client.note_error(&route, &address, &error);
            }
        }
        // Retry in the order they were sent.
        lost.sort_by_key(|(request_id, _)| *request_id);
        for (_, in_flight) in lost {
            self.retry_or_fail(in_flight.batch, error.clone(), now);
        }
    }

    fn stream_failed(&mut self, address: &str, error: Error, now: Instant) {
        let failures = self
            .reconnects
            .get(address)
            .map_or(1, |reconnect| reconnect.failures.saturating_add(1));
        let delay = self.shared.config.backoff.delay(failures, random_jitter());
        self.reconnects.insert(
            address.to_owned(),
            Reconnect {
                failures,
                at: now + delay,
            },
        );
        self.last_error = Some(error);
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
    fn on_idempotent_error(&mut self, batch: Batch, error: Error, now: Instant) {
        let sequencer = self.sequencer.as_mut().expect("only when idempotent");
        let current = sequencer.identity();
        let stamped_now = batch.stamp.map(|stamp| stamp.identity) == current && current.is_some();
        match error.code() {
            Some(ErrorCode::OutOfOrderSequence) => {
                let earlier = self.has_earlier_batch(&batch);
                if !earlier && stamped_now {
                    let sequencer = self.sequencer.as_mut().expect("only when idempotent");
                    sequencer.bump_epoch();
                    tracing::info!(
                        topic = batch.closed.topic,
                        partition = batch.closed.partition,
                        epoch = ?sequencer.identity().map(|identity| identity.producer_epoch),
                        "sequence lost: raised the producer epoch"
                    );
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
    fn has_earlier_batch(&self, batch: &Batch) -> bool {
        let earlier = |other: &Batch| other.is_of(batch) && other.closed.id < batch.closed.id;
        self.in_flight
            .values()
            .any(|in_flight| earlier(&in_flight.batch))
            || self.retries.values().any(earlier)
            || self.queue.iter().any(earlier)
    }

    /// Schedules another attempt when the error is retriable and the batch has attempts and
    /// time left; fails its records otherwise.
    fn retry_or_fail(&mut self, batch: Batch, error: Error, now: Instant) {
        let retriable = error.is_retriable();
        self.schedule_retry(batch, error, now, retriable);
    }

    /// Schedules another attempt when `retriable` and the batch has attempts and time left;
    /// fails its records otherwise.
    fn schedule_retry(&mut self, mut batch: Batch, error: Error, now: Instant, retriable: bool) {
        batch.attempts += 1;
        let config = &self.shared.config;
        let retry = batch.attempts; // the n-th retry follows the n-th attempt
        let at = now + config.backoff.delay(retry, random_jitter());
        if retriable && retry <= config.retries && at < batch.deadline {
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
    fn fail(&mut self, batch: Batch, error: &Error) {
        if let (Some(sequencer), Some(stamp)) = (self.sequencer.as_mut(), batch.stamp)
            && sequencer.identity() == Some(stamp.identity)
        {
            sequencer.bump_epoch();
            tracing::info!(
                topic = batch.closed.topic,
                partition = batch.closed.partition,
                epoch = ?sequencer.identity().map(|identity| identity.producer_epoch),
                "batch failed for good: raised the producer epoch"
            );
        }
        fail(batch, error);
    }

    /// Answers the flushes whose batches have all finished.
    fn finish_flushes(&mut self) {
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

fn fail(batch: Batch, error: &Error) {
    tracing::debug!(
        %error,
        topic = batch.closed.topic,
        partition = batch.closed.partition,
        attempts = batch.attempts,
        "batch failed"
    );
    for delivery in batch.closed.deliveries {
        delivery.resolve(Err(error.clone()));
    }
}
