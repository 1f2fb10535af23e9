//! # Service: the gRPC face of the broker (`strata.v1`)
//!
//! Translates requests into [`Broker`] calls and [`BrokerError`]s into `tonic::Status`: every
//! failure carries a stable [`ErrorCode`] in an encoded [`ErrorDetail`] (the status details) and
//! in the `strata-error-code` metadata, beside a message that says what was wrong and what is
//! valid. This is the only module that knows `tonic::Status`. [`request_limit`] holds the
//! produce request size limit and answers tonic's own refusal of larger requests.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message as _;
use strata_proto::v1 as pb;
use strata_proto::v1::admin_server::Admin;
use strata_proto::v1::broker_server::Broker as BrokerService;
use strata_proto::v1::{ErrorCode, ErrorDetail};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use std::collections::BTreeSet;

use strata_proto::v1::groups_server::Groups;

use crate::broker::metadata::{CommittedOffset, OffsetEntry, Topic, TopicConfig};
use crate::broker::{Broker, BrokerError, ConfigChanges, Target};
use crate::groups::coordinator::{Heartbeat, Join, MemberAssignment, Tp};
use crate::groups::offsets::{
    COMMIT_CHECK_TIMEOUT, PARTITIONS_PER_REQUEST_MAX, ReplicaOffsets, ResetTo,
};
use crate::partition::{self, FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, StartFrom};
use crate::storage::batch::{BatchBuilder, decode_batch, split_batches};

pub mod request_limit;

/// Produce requests one stream may have in flight; the stream stops reading beyond this (and
/// every stream waits for the node-wide byte budget, `PRODUCE_BYTES_IN_FLIGHT_MAX`).
pub const STREAM_IN_FLIGHT_MAX: usize = 1024;
/// Replies waiting to be written on one stream.
const STREAM_REPLIES_MAX: usize = 1024;
/// Largest chunk a subscription sends in one message.
const SUBSCRIBE_CHUNK_BYTES_MAX: u64 = 1 << 20;
/// Most records a simple client may send in one produce.
const RECORDS_PER_REQUEST_MAX: usize = 100_000;

/// Whether a node is alive (heard from recently); the peer transport knows.
pub type Liveness = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// The `strata.v1` services over one broker.
#[derive(Clone)]
pub struct Service {
    /// `None` while the node starts (its controller has no leader yet): requests are answered
    /// UNAVAILABLE meanwhile, while the peer service already carries raft traffic.
    broker: watch::Receiver<Option<Arc<Broker>>>,
    alive: Liveness,
}

impl Service {
    pub fn new(broker: watch::Receiver<Option<Arc<Broker>>>, alive: Liveness) -> Self {
        Self { broker, alive }
    }

    fn broker(&self) -> Result<Arc<Broker>, Status> {
        self.broker.borrow().clone().ok_or_else(|| {
            status(BrokerError::Unavailable(
                "the node is starting: metadata not loaded yet (waiting for the cluster's \
                 controller to have a leader and for this node's metadata to catch up with it): \
                 retry shortly"
                    .to_string(),
            ))
        })
    }
}

/// The stable details of an error and the gRPC code it maps to.
fn error_detail_and_code(error: &BrokerError) -> (ErrorDetail, tonic::Code) {
    let mut detail = ErrorDetail {
        message: error.to_string(),
        ..ErrorDetail::default()
    };
    let (code, grpc) = match error {
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
            (ErrorCode::UnknownTopicOrPartition, tonic::Code::NotFound)
        }
        BrokerError::TopicExists(_) => (ErrorCode::TopicAlreadyExists, tonic::Code::AlreadyExists),
        BrokerError::InvalidTopicName(_) => {
            (ErrorCode::InvalidTopicName, tonic::Code::InvalidArgument)
        }
        BrokerError::InvalidConfig(_) => (ErrorCode::InvalidConfig, tonic::Code::InvalidArgument),
        BrokerError::InvalidArgument(_) => {
            (ErrorCode::InvalidArgument, tonic::Code::InvalidArgument)
        }
        BrokerError::OffsetOutOfRange {
            log_start,
            high_watermark,
            ..
        } => {
            detail.valid_range = Some(pb::OffsetRange {
                log_start_offset: *log_start,
                next_offset: *high_watermark,
            });
            (ErrorCode::OffsetOutOfRange, tonic::Code::OutOfRange)
        }
        BrokerError::RecordTooLarge { limit_bytes, .. } => {
            detail.limit_bytes = Some(*limit_bytes as u64);
            (ErrorCode::RecordTooLarge, tonic::Code::InvalidArgument)
        }
        BrokerError::CorruptBatch(_) => (ErrorCode::CorruptBatch, tonic::Code::InvalidArgument),
        BrokerError::NotLeader { leader_id, address } => {
            detail.leader_node_id = Some(*leader_id);
            detail.leader_address = address.clone();
            (ErrorCode::NotLeader, tonic::Code::FailedPrecondition)
        }
        BrokerError::Timeout(_) => (ErrorCode::Timeout, tonic::Code::DeadlineExceeded),
        BrokerError::Unavailable(_) => (ErrorCode::Unavailable, tonic::Code::Unavailable),
        BrokerError::ShuttingDown => (ErrorCode::ShuttingDown, tonic::Code::Unavailable),
        BrokerError::Storage(_) => (ErrorCode::Storage, tonic::Code::Internal),
        BrokerError::UnknownMember(_) => (ErrorCode::UnknownMember, tonic::Code::NotFound),
        BrokerError::StaleMemberEpoch(_) => {
            (ErrorCode::StaleMemberEpoch, tonic::Code::FailedPrecondition)
        }
        BrokerError::UnknownGroup(_) => (ErrorCode::UnknownGroup, tonic::Code::NotFound),
        BrokerError::GroupNotEmpty(_) => {
            (ErrorCode::GroupNotEmpty, tonic::Code::FailedPrecondition)
        }
        BrokerError::InvalidGroupId(_) => (ErrorCode::InvalidGroupId, tonic::Code::InvalidArgument),
        BrokerError::GroupFull(_) => (ErrorCode::GroupFull, tonic::Code::ResourceExhausted),
        BrokerError::OutOfOrderSequence { expected, .. } => {
            detail.expected_sequence = Some(*expected);
            (
                ErrorCode::OutOfOrderSequence,
                tonic::Code::FailedPrecondition,
            )
        }
        BrokerError::InvalidProducerEpoch(_) => (
            ErrorCode::InvalidProducerEpoch,
            tonic::Code::FailedPrecondition,
        ),
        BrokerError::UnknownProducerId(_) => (
            ErrorCode::UnknownProducerId,
            tonic::Code::FailedPrecondition,
        ),
        BrokerError::NotControllerLeader { leader_id, address } => {
            detail.leader_node_id = Some(*leader_id);
            detail.leader_address = address.clone();
            (ErrorCode::NotLeader, tonic::Code::FailedPrecondition)
        }
        BrokerError::RequestTooLarge { limit_bytes, .. } => {
            detail.limit_bytes = Some(*limit_bytes as u64);
            (ErrorCode::RecordTooLarge, tonic::Code::InvalidArgument)
        }
        BrokerError::ResourceExhausted(_) => {
            (ErrorCode::ResourceExhausted, tonic::Code::ResourceExhausted)
        }
    };
    detail.code = code as i32;
    (detail, grpc)
}

/// The status of an error: its gRPC code, its message, the encoded [`ErrorDetail`] as details
/// and the code's name in the `strata-error-code` metadata.
pub fn status(error: BrokerError) -> Status {
    let (detail, grpc) = error_detail_and_code(&error);
    let name = detail.code().as_str_name();
    let mut status = Status::with_details(
        grpc,
        detail.message.clone(),
        Bytes::from(detail.encode_to_vec()),
    );
    if let Ok(value) = name.parse() {
        status.metadata_mut().insert("strata-error-code", value);
    }
    status
}

/// The details alone, for replies on a produce stream (which stays open on a failed request).
fn error_detail(error: &BrokerError) -> ErrorDetail {
    error_detail_and_code(error).0
}

fn invalid(message: impl Into<String>) -> Status {
    status(BrokerError::InvalidArgument(message.into()))
}

fn topic_description(broker: &Broker, topic: &Topic) -> pb::TopicDescription {
    let partition_info = topic
        .replicas
        .iter()
        .enumerate()
        .map(|(partition, replicas)| {
            let partition = partition as u32;
            let mut info = pb::PartitionInfo {
                partition,
                replica_node_ids: replicas.clone(),
                ..pb::PartitionInfo::default()
            };
            if let Ok(replica) = broker.replica(&topic.name, partition) {
                info.leader_node_id = *replica.leader.borrow();
                info.high_watermark = replica.high_watermark();
                info.log_start_offset = replica.log_start_offset();
                if info.leader_node_id == broker.node_id() {
                    info.in_sync_node_ids = if replicas.len() == 1 {
                        replicas.clone()
                    } else {
                        replica.in_sync.borrow().clone()
                    };
                }
            }
            info
        })
        .collect();
    pb::TopicDescription {
        name: topic.name.clone(),
        partitions: topic.partitions(),
        replication_factor: topic.replication_factor,
        config: Some(config_to_proto(&topic.config)),
        partition_info,
    }
}

fn config_to_proto(config: &TopicConfig) -> pb::TopicConfig {
    pb::TopicConfig {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: Some(config.segment_bytes),
    }
}

fn position(start: Option<pb::StartPosition>) -> Result<StartFrom, Status> {
    use pb::start_position::Position as P;
    match start.and_then(|s| s.position) {
        None | Some(P::Earliest(_)) => Ok(StartFrom::Earliest),
        Some(P::Latest(_)) => Ok(StartFrom::Latest),
        Some(P::Offset(offset)) => Ok(StartFrom::Offset(offset)),
        Some(P::TimestampMs(timestamp)) => Ok(StartFrom::Timestamp(timestamp)),
    }
}

/// Records decoded from stored batches for one reply.
struct DecodedRun {
    records: Vec<pb::Record>,
    /// Where the next read starts when decoding stopped before the last batch; `None` when
    /// every batch was decoded.
    stopped_at: Option<u64>,
    /// Encoded bytes of `records` in the reply.
    decoded_bytes: usize,
}

/// Decodes stored batches into records at or after `from`, one batch at a time, skipping
/// control batches. Budgeted by DECODED bytes, not stored ones (a small LZ4 batch can expand
/// 250 times): it stops before the batch that would take the records' encoded size past
/// `decoded_bytes_max`, except that the first batch always goes in so every reply makes
/// progress. A reply is thus at most `max(decoded_bytes_max, one batch)`, and one batch
/// decodes to at most [`DECOMPRESSED_BYTES_MAX`](crate::storage::batch::DECOMPRESSED_BYTES_MAX)
/// bytes of records (the codec's cap).
fn decode(batches: &[Bytes], from: u64, decoded_bytes_max: usize) -> Result<DecodedRun, Status> {
    let mut run = DecodedRun {
        records: Vec::new(),
        stopped_at: None,
        decoded_bytes: 0,
    };
    let mut next_offset = from;
    for stored in batches {
        for split in split_batches(stored.clone()) {
            let (header, batch) = split.map_err(|e| {
                status(BrokerError::Storage(format!(
                    "stored data after offset {next_offset} is not a whole batch: {e}"
                )))
            })?;
            if header.is_control() {
                continue;
            }
            let decoded = decode_batch(&batch).map_err(|e| {
                status(BrokerError::Storage(format!(
                    "stored batch at offset {} does not decode: {e}",
                    header.base_offset
                )))
            })?;
            let records: Vec<pb::Record> = decoded
                .records
                .into_iter()
                .filter(|r| r.offset >= from)
                .map(|r| pb::Record {
                    offset: r.offset,
                    timestamp_ms: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| pb::RecordHeader {
                            key: h.key,
                            value: h.value,
                        })
                        .collect(),
                })
                .collect();
            // Each record's size in the reply: its tag, length prefix and body.
            let size: usize = records
                .iter()
                .map(|r| 1 + prost::length_delimiter_len(r.encoded_len()) + r.encoded_len())
                .sum();
            let total = run.decoded_bytes.saturating_add(size);
            if !run.records.is_empty() && total > decoded_bytes_max {
                run.stopped_at = Some(next_offset);
                return Ok(run);
            }
            run.decoded_bytes = total;
            run.records.extend(records);
            next_offset = (header.base_offset as u64).saturating_add(header.offset_count());
        }
    }
    Ok(run)
}

#[tonic::async_trait]
impl Admin for Service {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let request = request.into_inner();
        let given = request.config.unwrap_or_default();
        let config = TopicConfig {
            retention_ms: given.retention_ms,
            retention_bytes: given.retention_bytes,
            segment_bytes: given
                .segment_bytes
                .unwrap_or(TopicConfig::default().segment_bytes),
        };
        let topic = self
            .broker()?
            .create_topic(
                &request.name,
                request.partitions,
                request.replication_factor,
                config,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(topic_description(&*self.broker()?, &topic)))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.broker()?
            .delete_topic(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let broker = self.broker()?;
        let topics = broker
            .metadata()
            .topics
            .values()
            .map(|topic| topic_description(&broker, topic))
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let topic = self
            .broker()?
            .topic(&request.into_inner().name)
            .map_err(status)?;
        Ok(Response::new(topic_description(&*self.broker()?, &topic)))
    }

    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let request = request.into_inner();
        let config = request.config.unwrap_or_default();
        let changes = ConfigChanges {
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
        };
        let topic = self
            .broker()?
            .alter_topic(&request.name, changes)
            .await
            .map_err(status)?;
        Ok(Response::new(topic_description(&*self.broker()?, &topic)))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let request = request.into_inner();
        let broker = self.broker()?;
        // A voter that cannot be reached would count against the quorum from the start.
        if request.node_id != 0 && !(self.alive)(request.node_id) {
            return Err(status(BrokerError::Unavailable(format!(
                "node {} has not been heard from: start it first (with an --initial-cluster list \
                 that includes it and the current nodes), then add it",
                request.node_id
            ))));
        }
        broker
            .add_node(request.node_id, &request.address)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AddNodeResponse {}))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let request = request.into_inner();
        let (moving, removed) = self
            .broker()?
            .remove_node(request.node_id, |address, groups| async move {
                crate::peer::group_voters(&address, groups).await
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RemoveNodeResponse {
            moving: moving
                .into_iter()
                .map(|(topic, partition)| pb::TopicPartition { topic, partition })
                .collect(),
            removed,
        }))
    }

    async fn cluster_info(
        &self,
        _request: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        let broker = self.broker()?;
        let metadata = broker.metadata();
        let nodes = metadata
            .nodes
            .values()
            .map(|node| pb::NodeInfo {
                node_id: node.id,
                address: node.address.clone(),
                alive: (self.alive)(node.id),
            })
            .collect();
        let topics = metadata
            .topics
            .values()
            .map(|topic| topic_description(&broker, topic))
            .collect();
        Ok(Response::new(pb::ClusterInfoResponse {
            nodes,
            controller_leader_node_id: broker.controller_leader(),
            topics,
            controller_high_watermark: broker.controller_high_watermark(),
        }))
    }
}

/// Turns a produce request into (topic, target, batch), validating it.
fn produce_input(request: pb::ProduceRequest) -> Result<(String, Target, Bytes), BrokerError> {
    use pb::produce_request::{Payload, Target as T};
    let target = match request.target {
        Some(T::Partition(partition)) => Target::Partition(partition),
        Some(T::PartitionKey(key)) => Target::Key(key),
        None => Target::Any,
    };
    let batch = match request.payload {
        Some(Payload::Batch(batch)) => batch,
        Some(Payload::Records(list)) => {
            if list.records.is_empty() {
                return Err(BrokerError::InvalidArgument(
                    "records is empty: send at least one record".to_string(),
                ));
            }
            if list.records.len() > RECORDS_PER_REQUEST_MAX {
                return Err(BrokerError::InvalidArgument(format!(
                    "{} records in one request: at most {RECORDS_PER_REQUEST_MAX}",
                    list.records.len()
                )));
            }
            let now = crate::now_ms();
            let mut builder = BatchBuilder::new();
            for record in &list.records {
                let headers: Vec<(&str, Option<&[u8]>)> = record
                    .headers
                    .iter()
                    .map(|h| (h.key.as_str(), h.value.as_deref()))
                    .collect();
                let timestamp = if record.timestamp_ms == 0 {
                    now
                } else {
                    record.timestamp_ms
                };
                builder.push(
                    timestamp,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    &headers,
                );
                if builder.size_bytes() > partition::BATCH_BYTES_MAX {
                    return Err(BrokerError::RecordTooLarge {
                        size_bytes: builder.size_bytes(),
                        limit_bytes: partition::BATCH_BYTES_MAX,
                    });
                }
            }
            builder.finish().freeze()
        }
        None => {
            return Err(BrokerError::InvalidArgument(
                "payload is missing: send a batch or records".to_string(),
            ));
        }
    };
    if request.topic.is_empty() {
        return Err(BrokerError::InvalidArgument("topic is empty".to_string()));
    }
    partition::validate_producer_batch(&batch)?;
    Ok((request.topic, target, batch))
}

async fn produce_one(
    broker: &Broker,
    request: pb::ProduceRequest,
) -> Result<pb::ProduceResponse, BrokerError> {
    let request_id = request.request_id;
    let (topic, target, batch) = produce_input(request)?;
    let produced = broker.produce(&topic, target, batch.to_vec()).await?;
    Ok(pb::ProduceResponse {
        request_id,
        partition: produced.partition,
        base_offset: produced.base_offset,
        last_offset: produced.last_offset,
        error: None,
    })
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl BrokerService for Service {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let response = produce_one(&*self.broker()?, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(response))
    }

    type ProduceStreamStream = BoxStream<pb::ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (replies, outbound) = mpsc::channel(STREAM_REPLIES_MAX);
        let broker = self.broker()?;
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(STREAM_IN_FLIGHT_MAX));
            while let Some(message) = inbound.next().await {
                let request = match message {
                    Ok(request) => request,
                    Err(error) => {
                        // A message above the decoding limit ends the stream (tonic cannot
                        // skip it): with RECORD_TOO_LARGE, not tonic's bare status.
                        let error = request_limit::oversized_request(&error).map_or(error, status);
                        let _ = replies.send(Err(error)).await;
                        break;
                    }
                };
                // Back-pressure: stop reading the stream while the in-flight limit is reached.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                // Validation and submission happen here, in stream order, so batches for one
                // partition keep their order; only the wait for the commit runs concurrently.
                let request_id = request.request_id;
                let submitted = match produce_input(request) {
                    Ok((topic, target, batch)) => match broker.produce_permit(batch.len()).await {
                        Ok(room) => broker.start_produce(&topic, target, batch.to_vec(), room),
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                };
                let replies = replies.clone();
                tokio::spawn(async move {
                    let outcome = match submitted {
                        Ok(committed) => committed.await,
                        Err(error) => Err(error),
                    };
                    let reply = match outcome {
                        Ok(produced) => pb::ProduceResponse {
                            request_id,
                            partition: produced.partition,
                            base_offset: produced.base_offset,
                            last_offset: produced.last_offset,
                            error: None,
                        },
                        Err(error) => pb::ProduceResponse {
                            request_id,
                            error: Some(error_detail(&error)),
                            ..pb::ProduceResponse::default()
                        },
                    };
                    let _ = replies.send(Ok(reply)).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let request = request.into_inner();
        if request.max_wait_ms > FETCH_WAIT_MS_MAX {
            return Err(invalid(format!(
                "max_wait_ms {} is too long: at most {FETCH_WAIT_MS_MAX}",
                request.max_wait_ms
            )));
        }
        if request.max_bytes > FETCH_BYTES_MAX {
            return Err(invalid(format!(
                "max_bytes {} is too large: at most {FETCH_BYTES_MAX}",
                request.max_bytes
            )));
        }
        let max_bytes = if request.max_bytes == 0 {
            FETCH_BYTES_DEFAULT
        } else {
            request.max_bytes
        };
        let replica = self
            .broker()?
            .replica(&request.topic, request.partition)
            .map_err(status)?;
        let offset = self
            .broker()?
            .resolve(&replica, position(request.start)?)
            .map_err(status)?;
        let fetched = self
            .broker()?
            .fetch(
                &replica,
                offset,
                max_bytes as usize,
                request.min_bytes as usize,
                Duration::from_millis(u64::from(request.max_wait_ms)),
            )
            .await
            .map_err(status)?;
        let (batches, records, next_offset) = if request.decode {
            // Decoded replies are budgeted by decoded bytes: the same max_bytes.
            let decoded = decode(&fetched.batches, offset, max_bytes as usize)?;
            let next_offset = decoded.stopped_at.unwrap_or(fetched.next_offset);
            (Vec::new(), decoded.records, next_offset)
        } else {
            (fetched.batches, Vec::new(), fetched.next_offset)
        };
        Ok(Response::new(pb::FetchResponse {
            partition: request.partition,
            batches,
            records,
            next_offset,
            high_watermark: fetched.high_watermark,
            log_start_offset: fetched.log_start_offset,
        }))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        use pb::subscribe_request::Request as R;
        let mut inbound = request.into_inner();
        let start = match inbound.next().await {
            Some(Ok(pb::SubscribeRequest {
                request: Some(R::Start(start)),
            })) => start,
            Some(Err(error)) => return Err(error),
            _ => return Err(invalid("the first message of a subscription must be start")),
        };
        let replica = self
            .broker()?
            .replica(&start.topic, start.partition)
            .map_err(status)?;
        let mut offset = self
            .broker()?
            .resolve(&replica, position(start.start)?)
            .map_err(status)?;
        let (replies, outbound) = mpsc::channel(16);
        let broker = self.broker()?;
        tokio::spawn(async move {
            let mut credit_bytes: u64 = 0;
            let mut high_watermark = replica.high_watermark.clone();
            let mut inbound_open = true;
            loop {
                // Send while credit covers whole batches.
                if credit_bytes > 0 {
                    let budget = credit_bytes.min(SUBSCRIBE_CHUNK_BYTES_MAX) as usize;
                    match broker.read(&replica, offset, budget) {
                        Ok(fetched) => {
                            let size: u64 = fetched.batches.iter().map(|b| b.len() as u64).sum();
                            if size > 0 && size <= credit_bytes {
                                let message = if start.decode {
                                    // Budgeted by decoded bytes, and credit pays for the
                                    // decoded bytes sent: what waits in the reply queue is
                                    // bounded by what the client granted (plus one batch),
                                    // however far the batches expand.
                                    decode(&fetched.batches, offset, budget).map(|decoded| {
                                        credit_bytes -=
                                            (decoded.decoded_bytes as u64).min(credit_bytes);
                                        offset = decoded.stopped_at.unwrap_or(fetched.next_offset);
                                        pb::SubscribeResponse {
                                            records: decoded.records,
                                            next_offset: offset,
                                            high_watermark: fetched.high_watermark,
                                            ..pb::SubscribeResponse::default()
                                        }
                                    })
                                } else {
                                    credit_bytes -= size;
                                    offset = fetched.next_offset;
                                    Ok(pb::SubscribeResponse {
                                        batches: fetched.batches,
                                        next_offset: offset,
                                        high_watermark: fetched.high_watermark,
                                        ..pb::SubscribeResponse::default()
                                    })
                                };
                                let failed = message.is_err();
                                if replies.send(message).await.is_err() || failed {
                                    return;
                                }
                                continue;
                            }
                        }
                        Err(error) => {
                            let _ = replies.send(Err(status(error))).await;
                            return;
                        }
                    }
                }
                // Nothing to send: wait for credit or new data.
                let seen = replica.high_watermark();
                tokio::select! {
                    message = inbound.next(), if inbound_open => match message {
                        Some(Ok(pb::SubscribeRequest { request: Some(R::Credit(credit)) })) => {
                            credit_bytes = credit_bytes.saturating_add(credit.bytes);
                        }
                        Some(Ok(_)) => {
                            let _ = replies.send(Err(invalid("after start, a subscription takes only credit"))).await;
                            return;
                        }
                        Some(Err(_)) | None => {
                            inbound_open = false;
                            if credit_bytes == 0 {
                                return;
                            }
                        }
                    },
                    changed = async { high_watermark.wait_for(|hw| *hw > seen).await.map(|_| ()) }, if credit_bytes > 0 => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = replies.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let replica = self
            .broker()?
            .replica(&request.topic, request.partition)
            .map_err(status)?;
        let offset = self
            .broker()?
            .resolve(&replica, position(request.position)?)
            .map_err(status)?;
        Ok(Response::new(pb::ListOffsetsResponse {
            offset,
            log_start_offset: replica.log_start_offset(),
            high_watermark: replica.high_watermark(),
        }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let producer_id = self.broker()?.init_producer_id().await.map_err(status)?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
}

/// Asks the node at `address` (the controller's leader) how far it has applied the
/// controller's log, for a starting node (see [`Broker::start`]).
///
/// # Errors
/// Connection and call failures, as text.
pub async fn controller_high_watermark_at(address: String) -> Result<u64, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let info = pb::admin_client::AdminClient::new(channel)
        .cluster_info(pb::ClusterInfoRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(info.controller_high_watermark)
}

/// Asks the node at `address` about its replicas of `topic` (its `DescribeTopic`), to check a
/// commit against their high watermarks.
async fn replica_offsets_at(address: String, topic: String) -> Result<Vec<ReplicaOffsets>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(COMMIT_CHECK_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let described = pb::admin_client::AdminClient::new(channel)
        .describe_topic(pb::DescribeTopicRequest { name: topic })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(described
        .partition_info
        .into_iter()
        .map(|p| ReplicaOffsets {
            partition: p.partition,
            log_start_offset: p.log_start_offset,
            high_watermark: p.high_watermark,
            leader_node_id: p.leader_node_id,
        })
        .collect())
}

fn topic_partitions(partitions: Vec<pb::TopicPartition>) -> Result<Vec<Tp>, Status> {
    if partitions.len() > PARTITIONS_PER_REQUEST_MAX {
        return Err(invalid(format!(
            "a request names at most {PARTITIONS_PER_REQUEST_MAX} partitions, got {}",
            partitions.len()
        )));
    }
    Ok(partitions
        .into_iter()
        .map(|tp| (tp.topic, tp.partition))
        .collect())
}

fn to_proto_partitions(partitions: &BTreeSet<Tp>) -> Vec<pb::TopicPartition> {
    partitions
        .iter()
        .map(|(topic, partition)| pb::TopicPartition {
            topic: topic.clone(),
            partition: *partition,
        })
        .collect()
}

fn member_assignment(reply: MemberAssignment, generation: u64) -> pb::MemberAssignment {
    pb::MemberAssignment {
        assignment: to_proto_partitions(&reply.assignment),
        pending: to_proto_partitions(&reply.pending),
        member_id: reply.member_id,
        member_epoch: reply.member_epoch,
        group_epoch: reply.group_epoch,
        heartbeat_interval_ms: reply.heartbeat_interval.as_millis() as u32,
        offsets_generation: generation,
    }
}

fn committed_to_proto(
    (topic, partition): Tp,
    committed: Option<CommittedOffset>,
) -> pb::CommittedOffset {
    match committed {
        Some(c) => pb::CommittedOffset {
            topic,
            partition,
            offset: Some(c.offset),
            metadata: c.metadata,
            commit_timestamp_ms: c.commit_ms,
        },
        None => pb::CommittedOffset {
            topic,
            partition,
            ..pb::CommittedOffset::default()
        },
    }
}

#[tonic::async_trait]
impl Groups for Service {
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::MemberAssignment>, Status> {
        let request = request.into_inner();
        let join = Join {
            group: request.group_id,
            member_id: request.member_id,
            topics: request.topics,
            session_timeout: Duration::from_millis(u64::from(request.session_timeout_ms)),
            client_id: request.client_id,
        };
        let (reply, generation) = self.broker()?.join_group(join).map_err(status)?;
        Ok(Response::new(member_assignment(reply, generation)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::MemberAssignment>, Status> {
        let request = request.into_inner();
        let owned: BTreeSet<Tp> = topic_partitions(request.owned)?.into_iter().collect();
        let (reply, generation) = self
            .broker()?
            .heartbeat(Heartbeat {
                group_id: &request.group_id,
                member_id: &request.member_id,
                member_epoch: request.member_epoch,
                owned: &owned,
            })
            .map_err(status)?;
        Ok(Response::new(member_assignment(reply, generation)))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        let request = request.into_inner();
        self.broker()?
            .leave_group(&request.group_id, &request.member_id)
            .map_err(status)?;
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let request = request.into_inner();
        let offsets = request
            .offsets
            .into_iter()
            .map(|o| OffsetEntry {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        self.broker()?
            .commit_offsets(
                &request.group_id,
                &request.member_id,
                request.member_epoch,
                offsets,
                replica_offsets_at,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<pb::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<pb::FetchCommittedOffsetsResponse>, Status> {
        let request = request.into_inner();
        let partitions = topic_partitions(request.partitions)?;
        let (offsets, generation) = self
            .broker()?
            .committed_offsets(&request.group_id, &partitions)
            .map_err(status)?;
        Ok(Response::new(pb::FetchCommittedOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(tp, c)| committed_to_proto(tp, c))
                .collect(),
            offsets_generation: generation,
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let groups = self.broker()?.list_groups().map_err(status)?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups
                .into_iter()
                .map(|g| pb::GroupListing {
                    group_id: g.group_id,
                    state: g.state.to_string(),
                    members: g.members,
                    group_epoch: g.group_epoch,
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let request = request.into_inner();
        let described = self
            .broker()?
            .describe_group(&request.group_id)
            .map_err(status)?;
        let members = described
            .view
            .iter()
            .flat_map(|view| view.members.iter())
            .map(|m| pb::MemberDescription {
                member_id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                member_epoch: m.member_epoch,
                topics: m.topics.clone(),
                assignment: to_proto_partitions(&m.assignment),
                pending: to_proto_partitions(&m.pending),
                session_timeout_ms: m.session_timeout.as_millis() as u32,
                last_heartbeat_ms_ago: m.since_heartbeat.as_millis() as u64,
            })
            .collect();
        let partitions = described
            .partitions
            .into_iter()
            .map(|p| pb::PartitionLag {
                topic: p.topic,
                partition: p.partition,
                committed_offset: p.committed.as_ref().map(|c| c.offset),
                metadata: p.committed.map(|c| c.metadata).unwrap_or_default(),
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                lag_records: p.lag_records,
                lag_ms: p.lag_ms,
                owner_member_id: p.owner.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::DescribeGroupResponse {
            group_id: request.group_id,
            state: described.state.to_string(),
            group_epoch: described.group_epoch,
            offsets_generation: described.offsets_generation,
            members,
            partitions,
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let request = request.into_inner();
        self.broker()?
            .delete_group(&request.group_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        use pb::reset_offsets_request::To;
        let request = request.into_inner();
        let to = match request.to {
            Some(To::Earliest(_)) => ResetTo::Earliest,
            Some(To::Latest(_)) => ResetTo::Latest,
            Some(To::Offset(offset)) => ResetTo::Offset(offset),
            Some(To::TimestampMs(timestamp)) => ResetTo::Timestamp(timestamp),
            Some(To::ShiftBy(by)) => ResetTo::Shift(by),
            None => {
                return Err(invalid(
                    "reset needs a target: earliest, latest, offset, timestamp_ms or shift_by",
                ));
            }
        };
        let (offsets, generation) = self
            .broker()?
            .reset_offsets(
                &request.group_id,
                &request.topic,
                &request.partitions,
                to,
                request.dry_run,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ResetOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset)| pb::CommittedOffset {
                    topic: request.topic.clone(),
                    partition,
                    offset: Some(offset),
                    ..pb::CommittedOffset::default()
                })
                .collect(),
            offsets_generation: generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller refusal is NOT_LEADER with the controller leader's id and address; a request
    /// over the size limit is RECORD_TOO_LARGE with the limit; a storage failure (a partition
    /// that could not be created) is STORAGE, never a leadership answer.
    #[test]
    fn new_errors_map_to_stable_codes_with_their_details() {
        let (detail, grpc) = error_detail_and_code(&BrokerError::NotControllerLeader {
            leader_id: 3,
            address: Some("10.0.0.3:9092".to_string()),
        });
        assert_eq!(
            (detail.code(), grpc),
            (ErrorCode::NotLeader, tonic::Code::FailedPrecondition)
        );
        assert_eq!(detail.leader_node_id, Some(3));
        assert_eq!(detail.leader_address.as_deref(), Some("10.0.0.3:9092"));
        assert!(detail.message.contains("controller"), "{}", detail.message);

        let (detail, grpc) = error_detail_and_code(&BrokerError::RequestTooLarge {
            size_bytes: 5_000_000,
            limit_bytes: 1_114_112,
            batch_limit_bytes: partition::BATCH_BYTES_MAX,
        });
        assert_eq!(
            (detail.code(), grpc),
            (ErrorCode::RecordTooLarge, tonic::Code::InvalidArgument)
        );
        assert_eq!(detail.limit_bytes, Some(1_114_112));
        assert!(detail.message.contains("5000000"), "{}", detail.message);

        let (detail, _) =
            error_detail_and_code(&BrokerError::Storage("No space left on device".to_string()));
        assert_eq!(detail.code(), ErrorCode::Storage);
        assert_eq!(detail.leader_node_id, None);
    }
}
