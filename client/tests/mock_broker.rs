//! The producer and consumer against an in-process fake broker that misbehaves on purpose:
//! replies out of order, refuses some requests as NOT_LEADER, refuses others for good, and
//! checks that a subscriber's credit is never exceeded, stores batches and then loses the
//! reply, or never answers. The fake keeps partitions as lists of batches in memory and
//! deduplicates idempotent batches by sequence; it is here to test the client's side of the
//! protocol, not the broker.
//!
//! Two fakes can share one set of partitions and play two nodes of a cluster: the one that does
//! not lead answers NOT_LEADER naming the other, as a follower does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use strata_client::proto::batch::{BatchHeader, decode_records, stamp};
use strata_client::proto::partitioner::partition_for_key;
use strata_client::proto::v1::admin_server::{Admin, AdminServer};
use strata_client::proto::v1::broker_server::{Broker, BrokerServer};
use strata_client::proto::v1::produce_request::{Payload, Target};
use strata_client::proto::v1::start_position::Position;
use strata_client::proto::v1::subscribe_request::Request as SubscribeRequestKind;
use strata_client::proto::v1::*;
use strata_client::{
    Backoff, Client, ConsumerConfig, DeliveryFuture, Error, PartitionConsumer, ProducerConfig,
    ProducerRecord, Record, RecordMetadata, StartFrom,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// How the fake broker misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Every n-th produce request (counting from 1) is refused with NOT_LEADER; 0 for none.
    not_leader_every: u64,
    /// Hold each reply until the next request arrives (or 20 ms pass), then answer the newer
    /// request first.
    swap_replies: bool,
    /// Refuse batches of this partition with RECORD_TOO_LARGE.
    refuse_partition: Option<u32>,
    /// End each produce stream with UNAVAILABLE at its n-th request, which is dropped unread
    /// (as if the connection broke before it arrived); 0 for never.
    break_produce_stream_at: u64,
    /// End each subscription with UNAVAILABLE after it sent this many messages; 0 for never.
    break_subscription_after: u64,
    /// Store every n-th produce request (counting from 1), then end its stream with
    /// UNAVAILABLE instead of replying, as if the reply was lost; 0 for never.
    lose_reply_every: u64,
    /// Refuse the first produce request of each partition with NOT_LEADER, as a node does
    /// just before it becomes leader, and serve the requests pipelined behind it.
    not_leader_first: bool,
    /// Read this many produce requests of a stream (or what arrived when none came for
    /// 100 ms) before answering any of them, so a client that pipelines has that many in
    /// flight; the third of each of the first three such groups is refused with NOT_LEADER
    /// (retriable), in the middle of the pipeline. 0 for no grouping.
    pipeline_groups_of: usize,
    /// Store every batch and never answer: the client's batches stay in flight.
    hold_replies: bool,
}

/// What the fake remembers of an idempotent producer on one partition.
#[derive(Debug, Default)]
struct ProducerState {
    epoch: i16,
    next_sequence: i32,
    /// The last batches stored: (base sequence, base offset, last offset).
    recent: Vec<(i32, u64, u64)>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Stored batches with their base offsets stamped.
    batches: Vec<(u64, Bytes)>,
    next_offset: u64,
    producers: HashMap<i64, ProducerState>,
    /// Produce requests seen for this partition.
    requests: u64,
}

#[derive(Debug)]
struct State {
    topics: HashMap<String, u32>,
    partitions: HashMap<(String, u32), Partition>,
    faults: Faults,
    produce_requests: AtomicU64,
    /// Woken at every produce request counted in `produce_requests`.
    produced: Arc<tokio::sync::Notify>,
    next_producer_id: AtomicU64,
    /// The most credit a subscriber ever had outstanding (granted and not yet used): a
    /// client that grants only what it consumed keeps this at its window.
    credit_outstanding_max: AtomicU64,
    /// With `pipeline_groups_of`: the most requests of one partition read in one group, all
    /// sent before any was answered.
    pipelined_per_partition_max: AtomicU64,
    /// With `pipeline_groups_of`: requests refused in the middle of a group.
    refused_mid_pipeline: AtomicU64,
}

/// What one node of a pair keeps to itself.
#[derive(Debug, Default)]
struct Node {
    /// When set, this node does not lead: it refuses partition calls and `InitProducerId` with
    /// NOT_LEADER naming this (node id, address).
    redirect: Mutex<Option<(u64, String)>>,
    /// Requests it refused that way.
    redirected: AtomicU64,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>, Arc<Node>);

fn refusal(code: ErrorCode, grpc: tonic::Code, message: &str) -> (ErrorDetail, Status) {
    let detail = ErrorDetail {
        code: code as i32,
        message: message.to_owned(),
        ..ErrorDetail::default()
    };
    let mut status = Status::with_details(grpc, message, Bytes::from(detail.encode_to_vec()));
    status.metadata_mut().insert(
        "strata-error-code",
        code.as_str_name().parse().expect("ASCII"),
    );
    (detail, status)
}

impl Fake {
    /// Produce requests seen so far, on every stream.
    fn produce_requests(&self) -> u64 {
        self.0
            .lock()
            .expect("lock")
            .produce_requests
            .load(Ordering::SeqCst)
    }

    /// Returns once `count` produce requests were seen, on every stream.
    async fn produce_requests_reach(&self, count: u64) {
        let produced = Arc::clone(&self.0.lock().expect("lock").produced);
        loop {
            // Registered before the count is read, so a request counted in between wakes it.
            let mut notified = std::pin::pin!(produced.notified());
            notified.as_mut().enable();
            if self.produce_requests() >= count {
                return;
            }
            notified.await;
        }
    }

    /// The NOT_LEADER refusal when this node does not lead, counted.
    fn not_leader(&self) -> Option<(ErrorDetail, Status)> {
        let redirect = self.1.redirect.lock().expect("lock").clone()?;
        self.1.redirected.fetch_add(1, Ordering::SeqCst);
        let (leader, address) = redirect;
        let (mut detail, _) = refusal(
            ErrorCode::NotLeader,
            tonic::Code::FailedPrecondition,
            "not the leader",
        );
        detail.leader_node_id = Some(leader);
        detail.leader_address = Some(address);
        let mut status = Status::with_details(
            tonic::Code::FailedPrecondition,
            "not the leader",
            Bytes::from(detail.encode_to_vec()),
        );
        status.metadata_mut().insert(
            "strata-error-code",
            ErrorCode::NotLeader.as_str_name().parse().expect("ASCII"),
        );
        Some((detail, status))
    }

    fn set_redirect(&self, redirect: Option<(u64, SocketAddr)>) {
        *self.1.redirect.lock().expect("lock") =
            redirect.map(|(leader, address)| (leader, address.to_string()));
    }

    fn describe(&self, name: &str) -> Result<TopicDescription, Status> {
        let state = self.0.lock().expect("lock");
        let partitions = *state.topics.get(name).ok_or_else(|| {
            refusal(
                ErrorCode::UnknownTopicOrPartition,
                tonic::Code::NotFound,
                "no such topic",
            )
            .1
        })?;
        Ok(TopicDescription {
            name: name.to_owned(),
            partitions,
            replication_factor: 1,
            config: Some(TopicConfig::default()),
            partition_info: Vec::new(),
            ..TopicDescription::default()
        })
    }

    fn produce(&self, request: ProduceRequest) -> ProduceResponse {
        if let Some((detail, _)) = self.not_leader() {
            return ProduceResponse {
                request_id: request.request_id,
                error: Some(detail),
                ..ProduceResponse::default()
            };
        }
        let mut state = self.0.lock().expect("lock");
        let count = state.produce_requests.fetch_add(1, Ordering::SeqCst) + 1;
        state.produced.notify_waiters();
        let reply_error = |code, message: &str| ProduceResponse {
            request_id: request.request_id,
            error: Some(refusal(code, tonic::Code::Unknown, message).0),
            ..ProduceResponse::default()
        };
        let every = state.faults.not_leader_every;
        if every > 0 && count.is_multiple_of(every) {
            return reply_error(ErrorCode::NotLeader, "try again");
        }
        let Some(Target::Partition(partition)) = request.target else {
            return reply_error(ErrorCode::InvalidArgument, "the client names partitions");
        };
        if state.faults.refuse_partition == Some(partition) {
            return reply_error(ErrorCode::RecordTooLarge, "refused for good");
        }
        let Some(Payload::Batch(batch)) = request.payload else {
            return reply_error(ErrorCode::InvalidArgument, "the client sends batches");
        };
        let header = match BatchHeader::validate(&batch) {
            Ok(header) => header,
            Err(_) => return reply_error(ErrorCode::CorruptBatch, "bad batch"),
        };
        let not_leader_first = state.faults.not_leader_first;
        let log = state
            .partitions
            .entry((request.topic.clone(), partition))
            .or_default();
        log.requests += 1;
        if not_leader_first && log.requests == 1 {
            return reply_error(ErrorCode::NotLeader, "not the leader yet");
        }
        if header.producer_id >= 0 {
            let producer = log.producers.entry(header.producer_id).or_default();
            if header.producer_epoch < producer.epoch {
                return reply_error(ErrorCode::InvalidProducerEpoch, "old epoch");
            }
            if header.producer_epoch > producer.epoch {
                *producer = ProducerState {
                    epoch: header.producer_epoch,
                    ..ProducerState::default()
                };
            }
            let duplicate = producer
                .recent
                .iter()
                .find(|(sequence, _, _)| *sequence == header.base_sequence);
            if let Some((_, base_offset, last_offset)) = duplicate {
                return ProduceResponse {
                    request_id: request.request_id,
                    partition,
                    base_offset: *base_offset,
                    last_offset: *last_offset,
                    error: None,
                };
            }
            if header.base_sequence != producer.next_sequence {
                return reply_error(ErrorCode::OutOfOrderSequence, "gap");
            }
            producer.next_sequence = header.base_sequence + header.record_count;
            let base_offset = log.next_offset;
            producer.recent.push((
                header.base_sequence,
                base_offset,
                base_offset + header.offset_count() - 1,
            ));
            if producer.recent.len() > 5 {
                producer.recent.remove(0);
            }
        }
        let base_offset = log.next_offset;
        let mut stored = BytesMut::from(&batch[..]);
        stamp(&mut stored, base_offset, 0);
        log.batches.push((base_offset, stored.freeze()));
        log.next_offset += header.offset_count();
        ProduceResponse {
            request_id: request.request_id,
            partition,
            base_offset,
            last_offset: log.next_offset - 1,
            error: None,
        }
    }

    /// Answers a produce stream in groups of `size` requests (see
    /// [`Faults::pipeline_groups_of`]).
    async fn answer_in_groups(
        self,
        mut inbound: Streaming<ProduceRequest>,
        replies: mpsc::Sender<Result<ProduceResponse, Status>>,
        size: usize,
    ) {
        let mut open = true;
        while open {
            let mut group = Vec::new();
            while group.len() < size {
                match tokio::time::timeout(Duration::from_millis(100), inbound.message()).await {
                    Ok(Ok(Some(request))) => group.push(request),
                    Ok(_) => {
                        open = false;
                        break;
                    }
                    Err(_) if group.is_empty() => {}
                    Err(_) => break,
                }
            }
            let mut per_partition: HashMap<u32, u64> = HashMap::new();
            for request in &group {
                if let Some(Target::Partition(partition)) = request.target {
                    *per_partition.entry(partition).or_default() += 1;
                }
            }
            let refuse_third = {
                let state = self.0.lock().expect("lock");
                let deepest = per_partition.values().copied().max().unwrap_or(0);
                state
                    .pipelined_per_partition_max
                    .fetch_max(deepest, Ordering::SeqCst);
                let refuse =
                    group.len() == size && state.refused_mid_pipeline.load(Ordering::SeqCst) < 3;
                if refuse {
                    state.refused_mid_pipeline.fetch_add(1, Ordering::SeqCst);
                }
                refuse
            };
            for (i, request) in group.into_iter().enumerate() {
                let reply = if refuse_third && i == 2 {
                    ProduceResponse {
                        request_id: request.request_id,
                        error: Some(
                            refusal(
                                ErrorCode::NotLeader,
                                tonic::Code::Unknown,
                                "refused mid-pipeline",
                            )
                            .0,
                        ),
                        ..ProduceResponse::default()
                    }
                } else {
                    self.produce(request)
                };
                if replies.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The stored batches from the one holding `offset` on.
    fn batches_from(&self, topic: &str, partition: u32, offset: u64) -> (Vec<Bytes>, u64) {
        let state = self.0.lock().expect("lock");
        let Some(log) = state.partitions.get(&(topic.to_owned(), partition)) else {
            return (Vec::new(), 0);
        };
        let batches = log
            .batches
            .iter()
            .filter(|(base, batch)| {
                let header = BatchHeader::parse(batch).expect("stored batches parse");
                base + header.offset_count() > offset
            })
            .map(|(_, batch)| batch.clone())
            .collect();
        (batches, log.next_offset)
    }
}

/// Implements a service trait for `Fake`: the methods given, and every method listed after
/// `unimplemented` as an `UNIMPLEMENTED` refusal the tests never reach. The attribute is
/// emitted with the whole impl so `async_trait` sees the listed methods too.
macro_rules! fake_service {
    (
        impl $service:ident { $($methods:tt)* }
        unimplemented { $($name:ident($request:ty) -> $response:ty;)* }
    ) => {
        #[tonic::async_trait]
        impl $service for Fake {
            $($methods)*

            $(
                async fn $name(
                    &self,
                    _: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    Err(Status::unimplemented("fake"))
                }
            )*
        }
    };
}

fake_service! {
    impl Admin {
        async fn create_topic(
            &self,
            request: Request<CreateTopicRequest>,
        ) -> Result<Response<TopicDescription>, Status> {
            let request = request.into_inner();
            self.0
                .lock()
                .expect("lock")
                .topics
                .insert(request.name.clone(), request.partitions);
            Ok(Response::new(self.describe(&request.name)?))
        }

        async fn describe_topic(
            &self,
            request: Request<DescribeTopicRequest>,
        ) -> Result<Response<TopicDescription>, Status> {
            Ok(Response::new(self.describe(&request.into_inner().name)?))
        }
    }
    unimplemented {
        remove_node(RemoveNodeRequest) -> RemoveNodeResponse;
        add_node(AddNodeRequest) -> AddNodeResponse;
        delete_topic(DeleteTopicRequest) -> DeleteTopicResponse;
        list_topics(ListTopicsRequest) -> ListTopicsResponse;
        alter_topic_config(AlterTopicConfigRequest) -> TopicDescription;
        add_partitions(AddPartitionsRequest) -> TopicDescription;
        cluster_info(ClusterInfoRequest) -> ClusterInfoResponse;
        create_user(CreateUserRequest) -> CreateUserResponse;
        set_password(SetPasswordRequest) -> SetPasswordResponse;
        delete_user(DeleteUserRequest) -> DeleteUserResponse;
        list_users(ListUsersRequest) -> ListUsersResponse;
        create_acls(CreateAclsRequest) -> CreateAclsResponse;
        delete_acls(DeleteAclsRequest) -> DeleteAclsResponse;
        list_acls(ListAclsRequest) -> ListAclsResponse;
    }
}

type ReplyStream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Broker for Fake {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        Ok(Response::new(self.produce(request.into_inner())))
    }

    type ProduceStreamStream = ReplyStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (replies, receiver) = mpsc::channel(64);
        let fake = self.clone();
        let faults = fake.0.lock().expect("lock").faults;
        let swap = faults.swap_replies;
        if faults.pipeline_groups_of > 0 {
            tokio::spawn(fake.answer_in_groups(inbound, replies, faults.pipeline_groups_of));
            return Ok(Response::new(ReceiverStream::new(receiver)));
        }
        tokio::spawn(async move {
            let mut held: Option<ProduceResponse> = None;
            let mut received = 0u64;
            loop {
                let wait = if held.is_some() {
                    Duration::from_millis(20)
                } else {
                    Duration::from_secs(3600)
                };
                let next = tokio::time::timeout(wait, inbound.message()).await;
                match next {
                    Ok(Ok(Some(request))) => {
                        received += 1;
                        let lose = faults.lose_reply_every;
                        let count = fake.produce_requests();
                        if lose > 0 && (count + 1).is_multiple_of(lose) {
                            fake.produce(request);
                            if let Some(earlier) = held.take() {
                                let _ = replies.send(Ok(earlier)).await;
                            }
                            let _ = replies.send(Err(Status::unavailable("reply lost"))).await;
                            break;
                        }
                        if received == faults.break_produce_stream_at {
                            if let Some(earlier) = held.take() {
                                let _ = replies.send(Ok(earlier)).await;
                            }
                            let _ = replies.send(Err(Status::unavailable("cut"))).await;
                            break;
                        }
                        let reply = fake.produce(request);
                        if faults.hold_replies {
                            continue;
                        }
                        if !swap {
                            let _ = replies.send(Ok(reply)).await;
                        } else if let Some(earlier) = held.take() {
                            let _ = replies.send(Ok(reply)).await;
                            let _ = replies.send(Ok(earlier)).await;
                        } else {
                            held = Some(reply);
                        }
                    }
                    Ok(_) => break,
                    Err(_) => {
                        let earlier = held.take().expect("waited only while holding");
                        let _ = replies.send(Ok(earlier)).await;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn fetch(&self, _: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type SubscribeStream = ReplyStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if let Some((_, status)) = self.not_leader() {
            return Err(status);
        }
        let mut inbound = request.into_inner();
        let Some(SubscribeRequest {
            request: Some(SubscribeRequestKind::Start(start)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("start first"));
        };
        let Some(Position::Offset(mut offset)) = start.start.and_then(|start| start.position)
        else {
            return Err(Status::invalid_argument("the client resolves its start"));
        };
        let (replies, receiver) = mpsc::channel(4);
        let fake = self.clone();
        let break_after = fake.0.lock().expect("lock").faults.break_subscription_after;
        tokio::spawn(async move {
            let mut granted = 0u64;
            let mut sent = 0u64;
            let mut messages = 0u64;
            loop {
                if messages > 0 && messages == break_after {
                    let _ = replies.send(Err(Status::unavailable("cut"))).await;
                    break;
                }
                // Leadership moved away: end the subscription as a follower does.
                if let Some((_, status)) = fake.not_leader() {
                    let _ = replies.send(Err(status)).await;
                    break;
                }
                // Take any credit that arrived, then send what it allows.
                match tokio::time::timeout(Duration::from_millis(2), inbound.message()).await {
                    Ok(Ok(Some(SubscribeRequest {
                        request: Some(SubscribeRequestKind::Credit(credit)),
                    }))) => granted += credit.bytes,
                    Ok(Ok(Some(_))) | Err(_) => {}
                    Ok(Ok(None) | Err(_)) => break,
                }
                let (batches, high_watermark) =
                    fake.batches_from(&start.topic, start.partition, offset);
                let mut out = Vec::new();
                for batch in batches {
                    if sent + batch.len() as u64 > granted {
                        break;
                    }
                    sent += batch.len() as u64;
                    let header = BatchHeader::parse(&batch).expect("stored");
                    offset = header.base_offset as u64 + header.offset_count();
                    out.push(batch);
                }
                fake.0
                    .lock()
                    .expect("lock")
                    .credit_outstanding_max
                    .fetch_max(granted - sent, Ordering::SeqCst);
                if out.is_empty() {
                    continue;
                }
                let reply = SubscribeResponse {
                    batches: out,
                    records: Vec::new(),
                    next_offset: offset,
                    high_watermark,
                };
                if replies.send(Ok(reply)).await.is_err() {
                    break;
                }
                messages += 1;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        if let Some((_, status)) = self.not_leader() {
            return Err(status);
        }
        let state = self.0.lock().expect("lock");
        let producer_id = state.next_producer_id.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(InitProducerIdResponse {
            producer_id: producer_id as i64,
            producer_epoch: 0,
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        if let Some((_, status)) = self.not_leader() {
            return Err(status);
        }
        let request = request.into_inner();
        let (_, high_watermark) = self.batches_from(&request.topic, request.partition, 0);
        let offset = match request.position.and_then(|position| position.position) {
            Some(Position::Offset(offset)) => offset,
            Some(Position::Latest(_)) => high_watermark,
            _ => 0,
        };
        Ok(Response::new(ListOffsetsResponse {
            offset,
            log_start_offset: 0,
            high_watermark,
        }))
    }
}

fn state(faults: Faults, partitions: u32) -> Arc<Mutex<State>> {
    Arc::new(Mutex::new(State {
        topics: HashMap::from([("t".to_owned(), partitions)]),
        partitions: HashMap::new(),
        faults,
        produce_requests: AtomicU64::new(0),
        produced: Arc::new(tokio::sync::Notify::new()),
        next_producer_id: AtomicU64::new(1),
        credit_outstanding_max: AtomicU64::new(0),
        pipelined_per_partition_max: AtomicU64::new(0),
        refused_mid_pipeline: AtomicU64::new(0),
    }))
}

/// Starts the fake on a free loopback port, with topic `t` of `partitions` partitions.
async fn start(faults: Faults, partitions: u32) -> (Fake, SocketAddr) {
    let fake = Fake(state(faults, partitions), Arc::default());
    let address = serve(fake.clone()).await;
    (fake, address)
}

/// Starts the fake as [`start`] does and connects a client to it.
async fn start_client(faults: Faults, partitions: u32) -> (Fake, Client) {
    let (fake, address) = start(faults, partitions).await;
    let client = Client::connect(&address.to_string())
        .await
        .expect("connect");
    (fake, client)
}

/// Two fakes sharing topic `t` of `partitions` partitions, as nodes 1 and 2; neither
/// redirects yet.
async fn start_pair(partitions: u32) -> [(Fake, SocketAddr); 2] {
    let shared = state(Faults::default(), partitions);
    let first = Fake(Arc::clone(&shared), Arc::default());
    let second = Fake(shared, Arc::default());
    let first_address = serve(first.clone()).await;
    let second_address = serve(second.clone()).await;
    [(first, first_address), (second, second_address)]
}

async fn serve(fake: Fake) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tonic::transport::Server::builder()
        .add_service(AdminServer::new(fake.clone()))
        .add_service(BrokerServer::new(fake.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    address
}

/// Both partitions of topic `t` hold `records` records each, every one once, in send order
/// (the tests send value `i` to partition `i % 2`).
fn assert_stored_once_in_order(fake: &Fake, records: u32) {
    for partition in 0..2u32 {
        let (batches, next_offset) = fake.batches_from("t", partition, 0);
        assert_eq!(
            next_offset,
            u64::from(records),
            "partition {partition} holds each record once"
        );
        let values: Vec<u32> = batches
            .iter()
            .flat_map(|batch| decode_records(batch).expect("stored batches decode"))
            .map(|record| {
                let value = record.value.expect("a value");
                std::str::from_utf8(&value)
                    .expect("UTF-8")
                    .parse()
                    .expect("a number")
            })
            .collect();
        let expected: Vec<u32> = (0..records).map(|i| i * 2 + partition).collect();
        assert_eq!(values, expected, "partition {partition} in send order");
    }
}

/// Retries after 1 ms, at most 10 ms apart.
fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(10),
    }
}

/// A consumer that subscribes again after 1 ms, at most 10 ms apart.
fn fast_resubscribe() -> ConsumerConfig {
    ConsumerConfig {
        backoff: fast_backoff(),
        ..ConsumerConfig::default()
    }
}

fn fast_retries() -> ProducerConfig {
    ProducerConfig {
        batch_bytes_max: 4096,
        backoff: fast_backoff(),
        request_timeout: Duration::from_secs(5),
        ..ProducerConfig::default()
    }
}

/// 5000 keyed records through a broker that swaps replies and refuses every third request as
/// NOT_LEADER: every record is acknowledged once, keys land where they hash, and each
/// partition's offsets are dense (every offset acknowledged exactly once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_out_of_order_replies() {
    let faults = Faults {
        not_leader_every: 3,
        swap_replies: true,
        ..Faults::default()
    };
    let (fake, client) = start_client(faults, 4).await;
    let producer = client.producer(fast_retries()).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..5000u32 {
        let key = format!("key-{}", i % 97);
        let record = ProducerRecord::new("t", format!("value-{i}")).key(key.clone());
        deliveries.push((key, producer.send(record).await.expect("accepted")));
    }
    producer.flush().await.expect("flush");
    let mut offsets: HashMap<u32, Vec<u64>> = HashMap::new();
    for (key, delivery) in deliveries {
        let stored = delivered(delivery).await;
        assert_eq!(stored.partition, partition_for_key(key.as_bytes(), 4));
        offsets
            .entry(stored.partition)
            .or_default()
            .push(stored.offset);
    }
    for (partition, mut list) in offsets {
        list.sort_unstable();
        let expected: Vec<u64> = (0..list.len() as u64).collect();
        assert_eq!(list, expected, "partition {partition}");
    }
    producer.close().await.expect("close");
    let requests = fake.produce_requests();
    assert!(requests > 3, "several batches, some retried: {requests}");
}

/// A non-retriable refusal fails the records of that batch with the broker's code, and only
/// those; other partitions still succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusal_fails_the_batch() {
    let faults = Faults {
        refuse_partition: Some(1),
        ..Faults::default()
    };
    let (_fake, client) = start_client(faults, 2).await;
    let producer = client.producer(fast_retries()).expect("producer");
    let refused = producer
        .send(ProducerRecord::new("t", "x").partition(1))
        .await
        .expect("accepted");
    let stored = producer
        .send(ProducerRecord::new("t", "y").partition(0))
        .await
        .expect("accepted");
    let error = refused.await.expect_err("refused");
    assert_eq!(error.code(), Some(ErrorCode::RecordTooLarge), "{error}");
    assert_eq!(stored.await.expect("stored").offset, 0);
    // Unknown topics and partitions are refused before anything is queued.
    let error = producer
        .send(ProducerRecord::new("nope", "z"))
        .await
        .expect_err("no topic");
    assert!(error.is_unknown_topic(), "{error}");
    let error = producer
        .send(ProducerRecord::new("t", "z").partition(2))
        .await
        .expect_err("no partition");
    assert!(matches!(error, Error::UnknownPartition { .. }), "{error}");
    producer.close().await.expect("close");
}

/// A subscriber starting mid-batch gets exactly the records from its offset on, in order; with
/// the smallest credit window it still reads several windows' worth, and never has more than
/// one window granted and unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_skips_to_the_offset_within_credit() {
    let (fake, client) = start_client(Faults::default(), 1).await;
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    // Large values, so 3000 records take several credit windows (about 9 MiB).
    let value = vec![b'v'; 3000];
    let mut last = None;
    for i in 0..3000u32 {
        let mut value = value.clone();
        value[..4].copy_from_slice(&i.to_be_bytes());
        last = Some(
            producer
                .send(ProducerRecord::new("t", value))
                .await
                .expect("accepted"),
        );
    }
    producer.close().await.expect("close");
    assert_eq!(last.expect("sent").await.expect("stored").offset, 2999);

    let config = ConsumerConfig {
        credit_bytes: strata_client::CREDIT_BYTES_MIN,
        ..ConsumerConfig::default()
    };
    let mut consumer = client
        .subscribe("t", 0, StartFrom::Offset(7), config)
        .await
        .expect("subscribe");
    for expected in 7..3000u64 {
        let record = next_record(&mut consumer).await;
        assert_eq!(record.offset, expected);
        let value = record.value.expect("value");
        assert_eq!(
            u32::from_be_bytes(value[..4].try_into().expect("4 bytes")),
            expected as u32
        );
        assert_eq!(consumer.next_offset(), expected + 1);
    }
    assert_eq!(consumer.high_watermark(), 3000);
    let outstanding = fake
        .0
        .lock()
        .expect("lock")
        .credit_outstanding_max
        .load(Ordering::SeqCst);
    assert!(outstanding <= config.credit_bytes, "{outstanding}");

    // The batches the broker stores decode to what was sent.
    let (batches, _) = fake.batches_from("t", 0, 0);
    let records: usize = batches
        .iter()
        .map(|batch| decode_records(batch).expect("decodes").len())
        .sum();
    assert_eq!(records, 3000);
}

/// Produce streams that break every fifth request and subscriptions that break after every
/// second message: the producer retries the requests lost with the stream, the consumer
/// subscribes again from its next offset, and every record arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_are_resumed() {
    let faults = Faults {
        break_produce_stream_at: 5,
        break_subscription_after: 2,
        ..Faults::default()
    };
    let (_fake, client) = start_client(faults, 1).await;
    let producer = client.producer(fast_retries()).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..2000u32 {
        let record = ProducerRecord::new("t", i.to_be_bytes().to_vec());
        deliveries.push(producer.send(record).await.expect("accepted"));
    }
    producer.close().await.expect("close");
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(
            delivery
                .await
                .expect("delivered despite broken streams")
                .offset,
        );
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..2000).collect::<Vec<u64>>());

    let mut consumer = client
        .subscribe("t", 0, StartFrom::Earliest, fast_resubscribe())
        .await
        .expect("subscribe");
    let mut values = Vec::new();
    while values.len() < 2000 {
        let record = next_record(&mut consumer).await;
        assert_eq!(record.offset, values.len() as u64);
        values.push(record.value.expect("value"));
    }
    let mut unique: Vec<u32> = values
        .iter()
        .map(|value| u32::from_be_bytes(value[..].try_into().expect("4 bytes")))
        .collect();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 2000);
}

/// An idempotent producer through a broker that stores every fifth request and then loses its
/// reply (the stream breaks): the retries are recognized as duplicates, so every record is
/// stored exactly once, in the order it was sent within its partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_are_not_stored_twice() {
    let faults = Faults {
        lose_reply_every: 5,
        ..Faults::default()
    };
    let (fake, client) = start_client(faults, 2).await;
    let producer = client.producer(fast_retries()).expect("producer");
    produce_all(&producer, 0..2000).await;
    producer.close().await.expect("close");
    assert_stored_once_in_order(&fake, 1000);
}

/// The order seen broken while new leaders settled: each partition's first batch is refused
/// with NOT_LEADER while the batches pipelined behind it arrive (the fake, like the broker,
/// refuses them as out of order until the first is stored). Every record is stored once, in
/// send order, at the offset its delivery names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_batch_is_not_overtaken() {
    let faults = Faults {
        not_leader_first: true,
        ..Faults::default()
    };
    let (fake, client) = start_client(faults, 2).await;
    let config = ProducerConfig {
        // Small batches, so several are in flight behind the refused one.
        batch_bytes_max: 256,
        ..fast_retries()
    };
    let producer = client.producer(config).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..400u32 {
        let record = ProducerRecord::new("t", format!("{i:05}")).partition(i % 2);
        deliveries.push((i, producer.send(record).await.expect("accepted")));
    }
    producer.flush().await.expect("flush");
    for (i, delivery) in deliveries {
        let stored = delivered(delivery).await;
        assert_eq!(stored.partition, i % 2);
        assert_eq!(stored.offset, u64::from(i / 2), "record {i}");
    }
    producer.close().await.expect("close");
    assert_stored_once_in_order(&fake, 200);
}

/// The producer keeps several batches of a partition in flight by default (the fake answers
/// nothing until it has read 8 requests, and sees at least 3 of one partition among them), and
/// a batch refused in the middle of the pipeline (NOT_LEADER, retriable; the broker then
/// refuses the batches behind it as out of order) is retried without reordering or duplicating
/// anything: every record is stored once, in send order, at the offset its delivery names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_mid_pipeline_keeps_order() {
    let faults = Faults {
        pipeline_groups_of: 8,
        ..Faults::default()
    };
    let (fake, client) = start_client(faults, 2).await;
    let defaults = ProducerConfig::default();
    let config = ProducerConfig {
        // Small batches, so the pipeline fills; in flight as by default.
        batch_bytes_max: 256,
        max_in_flight: defaults.max_in_flight,
        idempotent: defaults.idempotent,
        ..fast_retries()
    };
    let producer = client.producer(config).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..1000u32 {
        let record = ProducerRecord::new("t", format!("{i}")).partition(i % 2);
        deliveries.push((i, producer.send(record).await.expect("accepted")));
    }
    producer.flush().await.expect("flush");
    for (i, delivery) in deliveries {
        let stored = delivered(delivery).await;
        assert_eq!(stored.partition, i % 2);
        assert_eq!(stored.offset, u64::from(i / 2), "record {i}");
    }
    producer.close().await.expect("close");
    assert_stored_once_in_order(&fake, 500);
    let state = fake.0.lock().expect("lock");
    assert!(
        state.pipelined_per_partition_max.load(Ordering::SeqCst) >= 3,
        "several batches of a partition in flight at once"
    );
    assert_eq!(state.refused_mid_pipeline.load(Ordering::SeqCst), 3);
}

/// A `send` that finds the producer's buffer full sends the open batches at once instead of
/// leaving them to their linger: no record can join them until an acknowledgement frees
/// room. With every reply held and a 60 s linger, the batch left open behind the first full
/// one still reaches the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_sends_the_open_batches() {
    let faults = Faults {
        hold_replies: true,
        ..Faults::default()
    };
    let (fake, client) = start_client(faults, 1).await;
    let producer = client
        .producer(ProducerConfig {
            linger: Duration::from_secs(60),
            batch_bytes_max: 4096,
            buffer_bytes_max: 8192,
            ..ProducerConfig::default()
        })
        .expect("producer");
    // About 36 records of 100 bytes fill a batch and about 47 the buffer: the first batch
    // closes when a record does not fit, the second is open when the buffer runs out.
    let sending = tokio::spawn(async move {
        let mut deliveries = Vec::new();
        for i in 0..100 {
            let record = ProducerRecord::new("t", vec![i as u8; 100]);
            deliveries.push(producer.send(record).await.expect("accepted"));
        }
        deliveries
    });
    if tokio::time::timeout(Duration::from_secs(20), fake.produce_requests_reach(2))
        .await
        .is_err()
    {
        panic!(
            "the open batch was not sent when the buffer ran out ({} requests)",
            fake.produce_requests()
        );
    }
    assert!(
        !sending.is_finished(),
        "the buffer holds fewer than 100 records"
    );
    sending.abort();
}

/// The outcome of a delivery, which must resolve within 10 s (the tests flush first).
async fn delivered(delivery: DeliveryFuture) -> RecordMetadata {
    tokio::time::timeout(Duration::from_secs(10), delivery)
        .await
        .expect("resolved after flush")
        .expect("delivered")
}

/// The next record of a partition, which must arrive within 10 s, with no error (the consumer
/// subscribes again by itself when a stream breaks) and the stream open.
async fn next_record(consumer: &mut PartitionConsumer) -> Record {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a record in time")
        .expect("no error")
        .expect("stream open")
}

/// Reads `count` records of a partition, each within a bounded wait, and returns their values.
async fn read(consumer: &mut PartitionConsumer, count: usize) -> Vec<String> {
    let mut values = Vec::new();
    while values.len() < count {
        let record = next_record(consumer).await;
        let value = record.value.expect("a value");
        values.push(String::from_utf8(value.to_vec()).expect("UTF-8"));
    }
    values
}

/// Produces `range` as values to partitions 0 and 1 (by parity) and waits for every delivery.
async fn produce_all(producer: &strata_client::Producer, range: std::ops::Range<u32>) {
    let mut deliveries = Vec::new();
    for i in range {
        let record = ProducerRecord::new("t", format!("{i:05}")).partition(i % 2);
        deliveries.push(producer.send(record).await.expect("accepted"));
    }
    producer.flush().await.expect("flush");
    for delivery in deliveries {
        delivered(delivery).await;
    }
}

/// Two nodes, the client given only the one that does not lead: the producer (its
/// InitProducerId included) and a subscriber follow its NOT_LEADER hint to the leader. Then
/// leadership moves to the first node: the batches refused by the old leader and the
/// subscription it ends follow the new hint, and every record is stored once, in send order,
/// and read once, in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_subscribe_follow_the_leader() {
    let [(first, first_address), (second, second_address)] = start_pair(2).await;
    first.set_redirect(Some((2, second_address)));
    let client = Client::connect(&first_address.to_string())
        .await
        .expect("connect");
    let producer = client.producer(fast_retries()).expect("producer");
    produce_all(&producer, 0..400).await;
    let redirected = first.1.redirected.load(Ordering::SeqCst);
    assert!(redirected >= 1, "the first node refused: {redirected}");

    let mut consumer = client
        .subscribe("t", 0, StartFrom::Earliest, fast_resubscribe())
        .await
        .expect("subscribe through the hint");
    let expected: Vec<String> = (0..200).map(|i| format!("{:05}", i * 2)).collect();
    assert_eq!(read(&mut consumer, 200).await, expected);

    // Leadership moves to the first node.
    first.set_redirect(None);
    second.set_redirect(Some((1, first_address)));
    produce_all(&producer, 400..800).await;
    producer.close().await.expect("close");
    assert!(second.1.redirected.load(Ordering::SeqCst) >= 1);

    let expected: Vec<String> = (200..400).map(|i| format!("{:05}", i * 2)).collect();
    assert_eq!(read(&mut consumer, 200).await, expected);
    assert_eq!(consumer.next_offset(), 400);

    assert_stored_once_in_order(&first, 400);
}
