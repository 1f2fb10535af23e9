//! Fetch (v4–10): reads of the partitions' leaders through the broker's read path
//! ([`Broker::read`], which serves stored batches as they are), as a long poll: when the
//! first read finds fewer than `min_bytes`, the fetch waits (asynchronously, holding no
//! thread) for any of its partitions' high watermarks to move, up to `max_wait_ms`, and reads
//! again.
//!
//! Sizes follow Kafka's rules since 2.x: each partition gets at most `partition_max_bytes` and
//! the response at most `max_bytes`, except that the first partition with data gets at least
//! one whole batch, however large, so a consumer always makes progress. The response is thus
//! bounded by `max_bytes` plus one batch.
//!
//! Fetch sessions (KIP-227) are declined: every response carries session id 0, so clients
//! send full fetches. An incremental fetch of a session this node does not hold (session id
//! set, epoch not -1) gets FETCH_SESSION_ID_NOT_FOUND, on which clients start over with a full
//! fetch; a session id with epoch -1 (closing the session) is answered as a full fetch.
//! Transactions do not exist, so the last stable offset is the high watermark and no
//! transaction is ever aborted.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::sync::watch;

use super::context::Context;
use super::error::code;
use crate::broker::{Broker, BrokerError};
use crate::partition::{FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, PartitionReplica};
use crate::security::acl::{Operation, ResourceType};

/// The session epoch a client sends to close its session (KIP-227's FINAL_EPOCH).
const FINAL_EPOCH: i32 = -1;

/// Answers a Fetch request.
pub async fn handle(context: &Context, request: FetchRequest) -> FetchResponse {
    if request.session_id != 0 && request.session_epoch != FINAL_EPOCH {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let broker = match context.frontend.broker() {
        Ok(broker) => broker,
        Err(error) => return refuse_all(request, code(&error)),
    };
    let limits = Limits::of(&request);
    // Partitions resolved once (authorization, leadership); then read until enough arrived or
    // the wait is over.
    let mut topics: Vec<(FetchableTopicResponse, Vec<Wanted>)> = Vec::new();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let allowed = context
            .access
            .check(&broker, ResourceType::Topic, &name, Operation::Read);
        let wanted = topic
            .partitions
            .into_iter()
            .map(|partition| Wanted {
                index: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
                replica: match &allowed {
                    Err(error) => Err(code(error)),
                    Ok(()) => leader_replica(&broker, &name, partition.partition)
                        .map_err(|error| code(&error)),
                },
            })
            .collect();
        topics.push((
            FetchableTopicResponse::default().with_topic(topic.topic),
            wanted,
        ));
    }
    let deadline = tokio::time::Instant::now() + limits.max_wait;
    let mut stopped = false;
    loop {
        let mut read = read_all(&broker, &topics, limits.max_bytes);
        let waited_enough = stopped || tokio::time::Instant::now() >= deadline;
        if read.bytes >= limits.min_bytes || read.failed || waited_enough {
            for ((topic, _), partitions) in topics.iter_mut().zip(read.answers.drain(..)) {
                topic.partitions = partitions;
            }
            return FetchResponse::default()
                .with_session_id(0)
                .with_responses(topics.into_iter().map(|(topic, _)| topic).collect());
        }
        // Not enough yet: wait for any partition's high watermark to pass what was read.
        // A partition that stopped (the node shuts down) ends the wait: the next pass
        // answers with what there is.
        stopped = !wait_for_more(read.watermarks, deadline).await;
    }
}

/// A request's size and wait limits, clamped to the node's (Kafka clients send their
/// configured values, which may exceed them; a fetch is answered within them, not refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    max_wait: Duration,
    /// 0 (or less) answers at once; Kafka's consumers send 1 (wait for any data).
    min_bytes: usize,
    max_bytes: usize,
}

impl Limits {
    fn of(request: &FetchRequest) -> Self {
        let max_wait_ms = request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX as i32) as u64;
        Self {
            max_wait: Duration::from_millis(max_wait_ms),
            min_bytes: usize::try_from(request.min_bytes).unwrap_or(0),
            max_bytes: request.max_bytes.clamp(0, FETCH_BYTES_MAX as i32) as usize,
        }
    }
}

/// One requested partition, resolved.
struct Wanted {
    index: i32,
    offset: i64,
    max_bytes: usize,
    /// The local replica this node leads, or the error to answer.
    replica: Result<Arc<PartitionReplica>, ResponseError>,
}

/// The local replica of a partition this node leads.
///
/// # Errors
/// Unknown topic or partition; [`BrokerError::NotLeader`] off the leader, so the client
/// refreshes its metadata (Kafka serves consumers from leaders only before v11).
pub(super) fn leader_replica(
    broker: &Broker,
    topic: &str,
    partition: i32,
) -> Result<Arc<PartitionReplica>, BrokerError> {
    let partition = u32::try_from(partition)
        .map_err(|_| BrokerError::InvalidArgument(format!("partition {partition} is negative")))?;
    let replica = broker.replica(topic, partition)?;
    let leader = *replica.leader.borrow();
    if leader != broker.node_id() {
        return Err(BrokerError::NotLeader {
            leader_id: leader,
            address: None,
        });
    }
    Ok(replica)
}

/// One pass over every partition of a fetch.
struct Read {
    /// Per topic, its partitions' answers in request order.
    answers: Vec<Vec<PartitionData>>,
    bytes: usize,
    /// A partition answered an error: the fetch returns at once, as Kafka's does.
    failed: bool,
    /// The high watermark seen per partition read, to wait on.
    watermarks: Vec<(watch::Receiver<u64>, u64)>,
}

fn read_all(
    broker: &Broker,
    topics: &[(FetchableTopicResponse, Vec<Wanted>)],
    max_bytes: usize,
) -> Read {
    let mut read = Read {
        answers: Vec::with_capacity(topics.len()),
        bytes: 0,
        failed: false,
        watermarks: Vec::new(),
    };
    for (_, wanted) in topics {
        let mut answers = Vec::with_capacity(wanted.len());
        for partition in wanted {
            let answer = match read_partition(broker, partition, max_bytes, &mut read) {
                Ok(answer) => answer,
                Err(error) => {
                    read.failed = true;
                    error_answer(partition.index, error)
                }
            };
            answers.push(answer);
        }
        read.answers.push(answers);
    }
    read
}

fn read_partition(
    broker: &Broker,
    wanted: &Wanted,
    max_bytes: usize,
    read: &mut Read,
) -> Result<PartitionData, ResponseError> {
    let replica = wanted.replica.as_ref().map_err(|error| *error)?;
    let offset = u64::try_from(wanted.offset).map_err(|_| ResponseError::OffsetOutOfRange)?;
    let room = max_bytes.saturating_sub(read.bytes).min(wanted.max_bytes);
    let fetched = if room == 0 && read.bytes > 0 {
        // The response is full: only the bounds, no read.
        broker.read(replica, offset, 0).map(|mut fetched| {
            fetched.batches.clear();
            fetched
        })
    } else {
        broker.read(replica, offset, room.max(1))
    }
    .map_err(|error| {
        tracing::debug!(topic = %replica.topic, partition = replica.partition, %error, "Kafka fetch refused");
        code(&error)
    })?;
    read.watermarks
        .push((replica.high_watermark.clone(), fetched.high_watermark));
    let mut batches = fetched.batches;
    let bytes: usize = batches.iter().map(Bytes::len).sum();
    // At least one batch for the first partition with data; after that, what fits.
    if read.bytes > 0 && bytes > room {
        batches.clear();
    }
    fetched.traffic.sent_batches(&batches);
    let records = concat(batches);
    read.bytes += records.len();
    let high_watermark = fetched.high_watermark as i64;
    Ok(PartitionData::default()
        .with_partition_index(wanted.index)
        .with_high_watermark(high_watermark)
        .with_last_stable_offset(high_watermark)
        .with_log_start_offset(fetched.log_start_offset as i64)
        .with_records(Some(records)))
}

/// Runs of stored batches as one `records` field: the run itself when there is one (no copy),
/// else the runs end to end.
fn concat(mut runs: Vec<Bytes>) -> Bytes {
    match runs.len() {
        0 => Bytes::new(),
        1 => runs.pop().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(runs.iter().map(Bytes::len).sum());
            for run in runs {
                joined.extend_from_slice(&run);
            }
            joined.freeze()
        }
    }
}

fn error_answer(partition: i32, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(error.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
}

/// Every partition of `request` answered `error` (the node is starting).
fn refuse_all(request: FetchRequest, error: ResponseError) -> FetchResponse {
    let responses = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| error_answer(partition.partition, error))
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}

/// Waits until a high watermark passes the one seen, or `deadline`. `false` when a partition's
/// replica closed (its sender dropped).
async fn wait_for_more(
    watermarks: Vec<(watch::Receiver<u64>, u64)>,
    deadline: tokio::time::Instant,
) -> bool {
    if watermarks.is_empty() {
        tokio::time::sleep_until(deadline).await;
        return true;
    }
    let waits = watermarks.into_iter().map(|(mut receiver, seen)| {
        async move { receiver.wait_for(|hw| *hw > seen).await.is_ok() }.boxed()
    });
    match tokio::time::timeout_at(deadline, futures::future::select_all(waits)).await {
        Ok((moved, _, _)) => moved,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients' configured values beyond the node's limits are clamped, negative ones are 0.
    #[test]
    fn limits_are_clamped_to_the_node() {
        let request = FetchRequest::default()
            .with_max_wait_ms(i32::MAX)
            .with_min_bytes(-3)
            .with_max_bytes(i32::MAX);
        assert_eq!(
            Limits::of(&request),
            Limits {
                max_wait: Duration::from_millis(u64::from(FETCH_WAIT_MS_MAX)),
                min_bytes: 0,
                max_bytes: FETCH_BYTES_MAX as usize,
            }
        );
        let request = FetchRequest::default()
            .with_max_wait_ms(-1)
            .with_min_bytes(1)
            .with_max_bytes(-1);
        assert_eq!(
            Limits::of(&request),
            Limits {
                max_wait: Duration::ZERO,
                min_bytes: 1,
                max_bytes: 0,
            }
        );
    }

    /// One run goes out as it is stored; several are joined.
    #[test]
    fn runs_join_into_one_records_field() {
        let run = Bytes::from_static(b"abc");
        assert_eq!(concat(vec![run.clone()]).as_ptr(), run.as_ptr());
        assert_eq!(
            concat(vec![run, Bytes::from_static(b"de")]),
            Bytes::from_static(b"abcde")
        );
        assert!(concat(Vec::new()).is_empty());
    }
}
