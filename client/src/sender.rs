//! The producer's sender task: one event loop that drains the accumulator `send` appends to
//! ([`SharedAccumulator`]), and owns the outbox of closed batches ([`Outbox`]: queued, in
//! flight on `ProduceStream`s, waiting to be retried) and the streams. It reacts to four
//! things — a batch opened or closed by `send`, a `flush`, a reply from a broker, a timer
//! (linger, retry, reconnect, request or delivery timeout) — and after each one sends what it
//! can. The accumulator's lock is the only one, held for an append or one step of the loop;
//! everything after a batch closes is this task's alone.
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
//! - the outbox's own invariants (closing order, bounded by the buffer) hold.
//!
//! Each partition's batches leave in order: a batch is sent only when no earlier batch of its
//! partition was held back in the same pass. An idempotent producer also keeps them in order across
//! retries and leader changes: a batch is sent only when no earlier batch of its partition waits
//! (in the queue or for a retry), at most
//! [`IN_FLIGHT_PER_PARTITION_MAX`](crate::outbox::IN_FLIGHT_PER_PARTITION_MAX) per partition are in
//! flight, and none is sent under a new epoch while one stamped under an older epoch is still in
//! flight. A batch gets its sequence ([`Sequencer`]) when it is first sent, and keeps it on every
//! retry unless the epoch changed in between, in which case it is stamped again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::produce_request::{Payload, Target};
use strata_proto::v1::{InitProducerIdRequest, ProduceRequest, ProduceResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::{StreamExt as _, StreamMap, StreamNotifyClose};

use crate::accumulator::{AbandonUnlessFinished, Accumulator, BatchLimits, SharedAccumulator};
use crate::admin::PartitionCounts;
use crate::cluster::{Cluster, broker_client};
use crate::error::{Error, Result};
use crate::outbox::{Batch, InFlight, Outbox};
use crate::partitioner::Partitioner;
use crate::produce_stream::produce_stream;
use crate::producer_config::ProducerConfig;
use crate::retry::random_jitter;
use crate::routing::Route;
use crate::sequence::{Identity, Sequencer};

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
    cluster: Cluster,
    config: ProducerConfig,
    /// Shared with the producer; a topic the broker no longer knows is forgotten.
    partitions: Arc<PartitionCounts>,
    accumulator: Arc<SharedAccumulator>,
    /// Every closed batch not yet resolved, and the idempotent producer's sequences.
    outbox: Outbox,
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
    next_request_id: u64,
    /// No `InitProducerId` before this, after a failed one.
    init_at: Option<Instant>,
    /// `InitProducerId` calls failed in a row, for its backoff.
    init_failures: u32,
}

impl Sender {
    pub(crate) fn new(
        cluster: Cluster,
        config: ProducerConfig,
        partitions: Arc<PartitionCounts>,
    ) -> Self {
        let limits = BatchLimits {
            batch_bytes_max: config.batch_bytes_max,
            linger: config.linger,
            compression: config.compression,
            stamped_on_send: config.idempotent,
            reserved_bytes_max: config.buffer_bytes_max,
        };
        let seed = (random_jitter() * f64::from(u32::MAX)) as u32;
        let outbox = Outbox::new(config.backoff, config.retries, config.idempotent);
        Self {
            cluster,
            accumulator: Arc::new(SharedAccumulator::new(Accumulator::new(
                limits,
                Partitioner::new(seed),
            ))),
            config,
            partitions,
            outbox,
            connections: HashMap::new(),
            replies: StreamMap::new(),
            next_connection_id: 0,
            reconnects: HashMap::new(),
            last_error: None,
            next_request_id: 0,
            init_at: None,
            init_failures: 0,
        }
    }

    /// The accumulator `send` appends to.
    pub(crate) fn accumulator(&self) -> Arc<SharedAccumulator> {
        Arc::clone(&self.accumulator)
    }

    /// Runs until the producer is gone (`flushes` closed) and every accepted record is
    /// resolved. Each flush request is answered once every batch closed before it is.
    pub(crate) async fn run(mut self, mut flushes: mpsc::Receiver<oneshot::Sender<()>>) {
        let ending = AbandonUnlessFinished::new(Arc::clone(&self.accumulator));
        let mut accepting = true;
        loop {
            let now = Instant::now();
            self.accumulator.lock().close_expired(now.into_std());
            self.expire(now);
            self.send_ready(now).await;
            self.outbox.finish_flushes();
            if !accepting && self.is_idle() {
                break;
            }
            // A far-off wake-up stands for "no timer": the branch must have a future.
            let wake = self
                .next_wake(now)
                .unwrap_or_else(|| now + Duration::from_secs(3600));
            tokio::select! {
                () = self.accumulator.batches_changed.notified() => {}
                flush = flushes.recv(), if accepting => {
                    let mut accumulator = self.accumulator.lock();
                    accumulator.close_all(Instant::now().into_std());
                    match flush {
                        Some(done) => {
                            let closed = accumulator.next_batch_id();
                            self.outbox.flushes.push((closed, done));
                        }
                        // The producer is gone: what it accepted is sent, then the task ends.
                        None => accepting = false,
                    }
                }
                reply = self.replies.next(), if !self.replies.is_empty() => {
                    if let Some((connection, reply)) = reply {
                        self.on_reply(connection, reply, Instant::now());
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        ending.finished();
    }

    fn is_idle(&self) -> bool {
        self.accumulator.lock().is_empty() && self.outbox.is_empty()
    }

    /// The earliest timer: a linger, a retry, a reconnect, an `InitProducerId`, a request or
    /// delivery timeout. Reconnect and init times already passed are no timers: a queue that
    /// waits for something else (room in flight, an earlier batch) must not spin.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let config = &self.config;
        let linger = self.accumulator.lock().next_expiry().map(Instant::from_std);
        let retry = self.outbox.retries.keys().next().map(|(at, _)| *at);
        let waiting = !self.outbox.queue.is_empty();
        let reconnect = self
            .reconnects
            .values()
            .map(|reconnect| reconnect.at)
            .filter(|at| waiting && *at > now)
            .min();
        let init = self.init_at.filter(|at| waiting && *at > now);
        let request = self
            .outbox
            .in_flight
            .values()
            .map(|in_flight| in_flight.sent_at + config.request_timeout)
            .min();
        let delivery = self.outbox.queue.front().map(|batch| batch.deadline);
        [linger, retry, reconnect, init, request, delivery]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fails batches past their delivery deadline, and abandons each stream on which a
    /// request has waited longer than the request timeout.
    fn expire(&mut self, now: Instant) {
        let request_timeout = self.config.request_timeout;
        let delivery_timeout = self.config.delivery_timeout;
        let mut late: Vec<u64> = self
            .outbox
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
        self.outbox.fail_expired(now, &error);
    }

    /// Moves closed batches and due retries to the queue and sends from its front while
    /// there is room in flight and a stream (or the right to open one).
    async fn send_ready(&mut self, now: Instant) {
        let delivery_timeout = self.config.delivery_timeout;
        {
            let mut accumulator = self.accumulator.lock();
            while let Some(closed) = accumulator.pop_ready() {
                let deadline = Instant::from_std(closed.closed_at) + delivery_timeout;
                self.outbox.push_closed(closed, deadline);
            }
        }
        self.outbox.requeue_due(now);
        if let Some(front) = self.outbox.queue.front() {
            // Once per pass, when a failure made the metadata stale (or it was never read).
            let route = front.route();
            self.cluster.refresh_if_needed(&route).await;
        }
        if self.outbox.sequencer.is_some()
            && !self.outbox.queue.is_empty()
            && !self.ensure_identity(now).await
        {
            return;
        }
        // Idempotent only: the first batch waiting for a retry, by partition.
        let mut retrying: HashMap<(String, u32), u64> = HashMap::new();
        if self.outbox.sequencer.is_some() {
            for batch in self.outbox.retries.values() {
                let first = retrying.entry(batch.key()).or_insert(u64::MAX);
                *first = (*first).min(batch.closed.id);
            }
        }
        // The partitions a batch was held back from in this pass: their later batches wait.
        let mut held: HashSet<(String, u32)> = HashSet::new();
        let mut skipped: Vec<Batch> = Vec::new();
        while self.outbox.in_flight.len() < self.config.max_in_flight {
            let Some(mut batch) = self.outbox.queue.pop_front() else {
                break;
            };
            let key = batch.key();
            if held.contains(&key) {
                skipped.push(batch);
                continue;
            }
            let identity = if self.outbox.sequencer.is_some() {
                let Some(identity) = self.outbox.sequencer.as_ref().and_then(Sequencer::identity)
                else {
                    self.outbox.queue.push_front(batch);
                    break;
                };
                let behind_retry = retrying.get(&key).is_some_and(|id| *id < batch.closed.id);
                if behind_retry || !self.outbox.partition_has_room(&batch, identity) {
                    held.insert(key);
                    skipped.push(batch);
                    continue;
                }
                Some(identity)
            } else {
                None
            };
            let route = batch.route();
            let address = self.cluster.cached_route(&route);
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
                self.outbox.stamp(&mut batch, identity);
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
                        self.outbox.retry_or_fail(batch, error, now);
                        held.insert(key);
                        continue;
                    }
                },
                None => match self.open_stream(&address, request).await {
                    Ok(connection) => connection,
                    Err(error) => {
                        self.stream_failed(&address, error.clone(), now);
                        self.cluster.note_error(&route, &address, &error);
                        self.outbox.retry_or_fail(batch, error, now);
                        held.insert(key);
                        continue;
                    }
                },
            };
            let previous = self.outbox.in_flight.insert(
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
            self.outbox.queue.push_front(batch);
        }
    }

    /// Makes sure the idempotent producer has an identity, calling `InitProducerId` when it
    /// has none (at the first send, or after the epochs ran out or the broker forgot it).
    /// Returns whether it has one. A failure waits for the backoff; one that is not
    /// retriable fails the batches waiting for it.
    async fn ensure_identity(&mut self, now: Instant) -> bool {
        let sequencer = self
            .outbox
            .sequencer
            .as_mut()
            .expect("only when idempotent");
        if sequencer.identity().is_some() {
            return true;
        }
        if self.init_at.is_some_and(|at| at > now) {
            return false;
        }
        let limit = self.config.request_timeout;
        // One attempt (following hints to the controller leader): a failure waits for this
        // loop's own backoff, so replies keep flowing meanwhile.
        let reply = self
            .cluster
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
                self.outbox
                    .sequencer
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
                    .config
                    .backoff
                    .delay(self.init_failures, random_jitter());
                self.init_at = Some(now + delay);
                tracing::debug!(%error, "InitProducerId failed");
                if !error.is_retriable() {
                    for batch in std::mem::take(&mut self.outbox.queue) {
                        self.outbox.fail(batch, &error);
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
        let channel = self.cluster.channel(address)?;
        let (requests, receiver) = mpsc::channel(self.config.max_in_flight);
        requests
            .try_send(first)
            .expect("a new channel has room for one request");
        let limit = self.config.request_timeout;
        let call = produce_stream(channel, receiver);
        let responses = match tokio::time::timeout(limit, call).await {
            Ok(Ok(responses)) => responses,
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
        let Some(in_flight) = self.outbox.in_flight.remove(&response.request_id) else {
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
                self.partitions.forget(&batch.closed.topic);
            }
            self.cluster
                .note_error(&batch.route(), &in_flight.address, &error);
            if self.outbox.sequencer.is_some() {
                self.outbox.on_idempotent_error(batch, error, now);
            } else {
                self.outbox.retry_or_fail(batch, error, now);
            }
            return;
        }
        let records = batch.closed.records as u64;
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
        let closed = batch.closed;
        closed
            .outcome
            .stored(response.partition, response.base_offset);
        // The buffer is recycled before the records' share of the producer's buffer goes
        // back: a `send` waiting for that room opens its next batch in it, not in fresh
        // memory (a page fault per 4 KiB).
        self.accumulator.lock().recycle(closed.batch);
        drop(closed.buffer);
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
            .outbox
            .in_flight
            .iter()
            .filter(|(_, in_flight)| in_flight.connection == connection)
            .map(|(request_id, _)| *request_id)
            .collect();
        let mut lost: Vec<(u64, InFlight)> = lost_ids
            .into_iter()
            .map(|request_id| {
                let in_flight = self
                    .outbox
                    .in_flight
                    .remove(&request_id)
                    .expect("just listed");
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
                self.cluster.note_error(&route, &address, &error);
            }
        }
        // Retry in the order they were sent.
        lost.sort_by_key(|(request_id, _)| *request_id);
        for (_, in_flight) in lost {
            self.outbox
                .retry_or_fail(in_flight.batch, error.clone(), now);
        }
    }

    fn stream_failed(&mut self, address: &str, error: Error, now: Instant) {
        let failures = self
            .reconnects
            .get(address)
            .map_or(1, |reconnect| reconnect.failures.saturating_add(1));
        let delay = self.config.backoff.delay(failures, random_jitter());
        self.reconnects.insert(
            address.to_owned(),
            Reconnect {
                failures,
                at: now + delay,
            },
        );
        self.last_error = Some(error);
    }
}
