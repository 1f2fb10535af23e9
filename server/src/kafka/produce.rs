//! Produce: v3–7 served through the broker's one produce path ([`Broker::produce_permit`] and
//! [`Broker::start_produce`], as the gRPC service does); v0–2 advertised (librdkafka checks
//! that v0 is, before it will compress) and answered UNSUPPORTED_FOR_MESSAGE_FORMAT, parsed by
//! hand because the codec crate dropped those versions.
//!
//! Each partition's `records` is one or more RecordBatch v2, kept as the slice of the request
//! frame the client sent (no copy): split by the batch length field, each batch validated with
//! [`validate_producer_batch`], then submitted in order. The partitions of a request proceed
//! concurrently and are answered in request order. acks 0 gets no response at all; acks 1 and
//! -1 are answered once the batches commit (Strata commits on a quorum either way).
//!
//! Idempotent batches go through the partition's producer table: a retried batch the
//! partition holds is answered with its original offsets (the broker's commit future returns
//! them), so a retry never sees DUPLICATE_SEQUENCE_NUMBER where Kafka answers success.
//! Transactional produce is refused: Strata has no transactions.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::context::Context;
use super::error::code;
use super::frame::FrameError;
use crate::broker::{Broker, BrokerError, Produced, Target};
use crate::partition::validate_producer_batch;
use crate::security::acl::{Operation, ResourceType};
use crate::storage::batch::split_batches;

/// The first Produce version served; older ones carry message formats v0/v1 only.
pub const FIRST_SERVED_VERSION: i16 = 3;

/// Answers a Produce request (v3+); `None` for acks 0, which gets no response.
pub async fn handle(context: &Context, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let broker = context.frontend.broker();
    let transactional = request.transactional_id.is_some();
    if transactional {
        tracing::info!(
            remote = ?context.connection.remote,
            "Kafka transactional produce refused: Strata has no transactions"
        );
    }
    let topics = request.topic_data.into_iter().map(|topic| {
        let broker = broker.clone();
        async move {
            let name = topic.name.0.to_string();
            let refusal = match &broker {
                Err(error) => Some(code(error)),
                Ok(_) if transactional => Some(ResponseError::TransactionalIdAuthorizationFailed),
                Ok(broker) => context
                    .access
                    .check(broker, ResourceType::Topic, &name, Operation::Write)
                    .err()
                    .map(|error| code(&error)),
            };
            let partitions = topic.partition_data.into_iter().map(|data| {
                let name = name.as_str();
                let broker = broker.as_ref().ok();
                async move {
                    match (refusal, broker) {
                        (None, Some(broker)) => {
                            produce_partition(broker, name, data.index, data.records, acks).await
                        }
                        (refusal, _) => failed(
                            data.index,
                            refusal.unwrap_or(ResponseError::LeaderNotAvailable),
                        ),
                    }
                }
            });
            let partition_responses = join_all(partitions).await;
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses)
        }
    });
    let responses = join_all(topics).await;
    (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

fn failed(partition: i32, error: ResponseError) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(partition)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

/// Validates and submits one partition's batches in order, then (acks ≠ 0) waits for their
/// commits. The answer's base offset is the first batch's.
async fn produce_partition(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    acks: i16,
) -> PartitionProduceResponse {
    let produced = match submit(broker, topic, partition, records, acks).await {
        Ok(produced) => produced,
        Err(error) => {
            tracing::debug!(topic, partition, %error, "Kafka produce refused");
            return failed(partition, code(&error));
        }
    };
    let log_start_offset = u32::try_from(partition)
        .ok()
        .and_then(|partition| broker.replica(topic, partition).ok())
        .map_or(-1, |replica| replica.log_start_offset() as i64);
    PartitionProduceResponse::default()
        .with_index(partition)
        .with_base_offset(produced.map_or(-1, |p| p.base_offset as i64))
        .with_log_append_time_ms(-1)
        .with_log_start_offset(log_start_offset)
}

/// The produce of one partition: `Ok(None)` for acks 0 (its commits are awaited in a task of
/// their own, which holds the produce budget until they are in).
async fn submit(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    acks: i16,
) -> Result<Option<Produced>, BrokerError> {
    let partition = u32::try_from(partition)
        .map_err(|_| BrokerError::InvalidArgument(format!("partition {partition} is negative")))?;
    // Unknown topics and partitions are answered before any batch is checked.
    broker.replica(topic, partition)?;
    let batches = split(records.unwrap_or_default())?;
    for batch in &batches {
        validate_producer_batch(batch)?;
    }
    let mut commits = Vec::with_capacity(batches.len());
    for batch in batches {
        let permit = broker.produce_permit(batch.len()).await?;
        commits.push(broker.start_produce(topic, Target::Partition(partition), batch, permit)?);
    }
    if acks == 0 {
        let topic = topic.to_string();
        tokio::spawn(async move {
            for committed in join_all(commits).await {
                if let Err(error) = committed {
                    tracing::debug!(topic, partition, %error, "Kafka produce with acks 0 failed");
                }
            }
        });
        return Ok(None);
    }
    let mut first = None;
    for committed in join_all(commits).await {
        let produced = committed?;
        first.get_or_insert(produced);
    }
    Ok(first)
}

/// Splits a partition's `records` into its RecordBatches by their length fields, without
/// copying.
///
/// # Errors
/// [`BrokerError::CorruptBatch`] for no batch at all, or bytes that are not whole batches.
pub fn split(records: Bytes) -> Result<Vec<Bytes>, BrokerError> {
    if records.is_empty() {
        return Err(BrokerError::CorruptBatch(
            "the partition's records are empty: send one or more RecordBatch v2".to_string(),
        ));
    }
    split_batches(records)
        .map(|split| {
            split
                .map(|(_, batch)| batch)
                .map_err(|e| BrokerError::CorruptBatch(format!("records: {e}")))
        })
        .collect()
}

/// Answers a Produce request of v0–2 (message formats v0/v1, which Strata does not store):
/// UNSUPPORTED_FOR_MESSAGE_FORMAT for every partition, as Kafka answers a format it cannot
/// take; `Ok(None)` for acks 0. The whole frame is returned.
///
/// # Errors
/// [`FrameError::Malformed`] when the body cannot be parsed.
pub fn answer_old_version(
    version: i16,
    correlation_id: i32,
    body: Bytes,
) -> Result<Option<Bytes>, FrameError> {
    let parsed = OldRequest::parse(body)
        .map_err(|why| FrameError::Malformed(format!("Produce v{version} request: {why}")))?;
    if parsed.acks == 0 {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    put_len(&mut body, parsed.topics.len());
    for (name, partitions) in &parsed.topics {
        put_len16(&mut body, name.len());
        body.put_slice(name);
        put_len(&mut body, partitions.len());
        for partition in partitions {
            body.put_i32(*partition);
            body.put_i16(ResponseError::UnsupportedForMessageFormat.code());
            body.put_i64(-1);
            if version >= 2 {
                // log_append_time
                body.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        // throttle_time_ms
        body.put_i32(0);
    }
    let mut frame = BytesMut::with_capacity(8 + body.len());
    frame.put_i32(4 + body.len() as i32);
    frame.put_i32(correlation_id);
    frame.put_slice(&body);
    Ok(Some(frame.freeze()))
}

/// Array lengths are bounded by the request, itself bounded by the frame limit.
fn put_len(buf: &mut BytesMut, len: usize) {
    buf.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}

fn put_len16(buf: &mut BytesMut, len: usize) {
    buf.put_i16(i16::try_from(len).unwrap_or(i16::MAX));
}

/// What an answer to a Produce v0–2 needs: acks and the topic and partition names.
#[derive(Debug, PartialEq, Eq)]
struct OldRequest {
    acks: i16,
    topics: Vec<(Bytes, Vec<i32>)>,
}

impl OldRequest {
    /// Parses `acks: i16, timeout: i32, [name: string, [index: i32, records: bytes]]`.
    fn parse(mut body: Bytes) -> Result<Self, String> {
        let acks = take_i16(&mut body)?;
        let _timeout_ms = take_i32(&mut body)?;
        let topic_count = take_count(&mut body, 2 + 4)?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let name_len = take_i16(&mut body)?;
            let name_len = usize::try_from(name_len)
                .map_err(|_| format!("topic name length {name_len} is negative"))?;
            let name = take_bytes(&mut body, name_len)?;
            let partition_count = take_count(&mut body, 4 + 4)?;
            let mut partitions = Vec::with_capacity(partition_count);
            for _ in 0..partition_count {
                partitions.push(take_i32(&mut body)?);
                let records_len = take_i32(&mut body)?;
                // -1: null records.
                if records_len >= 0 {
                    take_bytes(&mut body, records_len as usize)?;
                }
            }
            topics.push((name, partitions));
        }
        Ok(Self { acks, topics })
    }
}

fn take_i16(body: &mut Bytes) -> Result<i16, String> {
    body.try_get_i16().map_err(|_| "cut short".to_string())
}

fn take_i32(body: &mut Bytes) -> Result<i32, String> {
    body.try_get_i32().map_err(|_| "cut short".to_string())
}

fn take_bytes(body: &mut Bytes, len: usize) -> Result<Bytes, String> {
    if body.remaining() < len {
        return Err(format!("{len} bytes announced, {} left", body.remaining()));
    }
    Ok(body.split_to(len))
}

/// An array count, bounded by what the remaining bytes could hold (each element takes at
/// least `element_bytes_min`), so a forged count cannot make the node allocate.
fn take_count(body: &mut Bytes, element_bytes_min: usize) -> Result<usize, String> {
    let count = take_i32(body)?;
    let count = usize::try_from(count).map_err(|_| format!("array count {count} is negative"))?;
    if count > body.remaining() / element_bytes_min {
        return Err(format!(
            "array count {count} exceeds what the {} remaining bytes hold",
            body.remaining()
        ));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::records::{Record, build_batch};

    fn batch(values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .map(|value| Record {
                timestamp_ms: 1,
                value: Some(Bytes::copy_from_slice(value.as_bytes())),
                ..Record::default()
            })
            .collect();
        build_batch(&records, 1).expect("a valid batch")
    }

    /// Several batches in one partition's records come apart at their length fields, each a
    /// batch that validates; a trailing partial batch, garbage, or nothing at all is refused.
    #[test]
    fn records_split_into_whole_batches() {
        let first = batch(&["a", "b"]);
        let second = batch(&["c"]);
        let mut both = BytesMut::new();
        both.put_slice(&first);
        both.put_slice(&second);
        let both = both.freeze();
        let split_up = split(both.clone()).expect("two whole batches");
        assert_eq!(split_up, vec![first.clone(), second.clone()]);
        for batch in &split_up {
            validate_producer_batch(batch).expect("each batch validates");
        }
        // The pieces are slices of the request's bytes, not copies.
        assert_eq!(split_up[0].as_ptr(), both.as_ptr());

        let cut = both.slice(..both.len() - 1);
        assert!(matches!(split(cut), Err(BrokerError::CorruptBatch(_))));
        assert!(matches!(
            split(Bytes::from_static(&[1, 2, 3])),
            Err(BrokerError::CorruptBatch(_))
        ));
        assert!(matches!(
            split(Bytes::new()),
            Err(BrokerError::CorruptBatch(m)) if m.contains("empty")
        ));
    }

    fn old_request(acks: i16) -> Bytes {
        let mut body = BytesMut::new();
        body.put_i16(acks);
        body.put_i32(1000);
        body.put_i32(2);
        for (name, partitions) in [("ab", &[0, 3][..]), ("c", &[1][..])] {
            body.put_i16(name.len() as i16);
            body.put_slice(name.as_bytes());
            body.put_i32(partitions.len() as i32);
            for partition in partitions {
                body.put_i32(*partition);
                body.put_i32(3);
                body.put_slice(b"xyz");
            }
        }
        body.freeze()
    }

    /// Produce v0–2 is read by hand: every partition answered UNSUPPORTED_FOR_MESSAGE_FORMAT in
    /// the version's layout; acks 0 gets nothing.
    #[test]
    fn old_versions_are_answered_unsupported_for_message_format() {
        let parsed = OldRequest::parse(old_request(1)).expect("parses");
        assert_eq!(parsed.acks, 1);
        assert_eq!(
            parsed.topics,
            vec![
                (Bytes::from_static(b"ab"), vec![0, 3]),
                (Bytes::from_static(b"c"), vec![1]),
            ]
        );
        for version in 0..=2 {
            let frame = answer_old_version(version, 9, old_request(-1))
                .expect("answered")
                .expect("acks -1 gets a response");
            let mut frame = &frame[..];
            assert_eq!(frame.get_i32() as usize, frame.len());
            assert_eq!(frame.get_i32(), 9);
            assert_eq!(frame.get_i32(), 2);
            assert_eq!(frame.get_i16(), 2);
            assert_eq!(&frame[..2], b"ab");
            frame.advance(2);
            assert_eq!(frame.get_i32(), 2);
            assert_eq!(frame.get_i32(), 0);
            assert_eq!(frame.get_i16(), 43);
            assert_eq!(frame.get_i64(), -1);
            let per_partition = if version >= 2 { 8 } else { 0 };
            let throttle = if version >= 1 { 4 } else { 0 };
            // Partition 3 of "ab", then topic "c" with partition 1.
            let rest = (4 + 2 + 8 + per_partition) + (2 + 1 + 4) + (4 + 2 + 8 + per_partition);
            assert_eq!(frame.len(), per_partition + rest + throttle);
        }
        assert_eq!(
            answer_old_version(0, 9, old_request(0)).expect("parses"),
            None
        );
    }

    /// Cut, negative or inflated lengths are errors, never panics or large allocations.
    #[test]
    fn malformed_old_requests_are_errors() {
        let whole = old_request(1);
        for cut in 0..whole.len() {
            assert!(
                answer_old_version(0, 1, whole.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        let mut inflated = BytesMut::new();
        inflated.put_i16(1);
        inflated.put_i32(0);
        inflated.put_i32(i32::MAX);
        assert!(OldRequest::parse(inflated.freeze()).is_err());
        let mut negative = BytesMut::new();
        negative.put_i16(1);
        negative.put_i32(0);
        negative.put_i32(1);
        negative.put_i16(-5);
        assert!(OldRequest::parse(negative.freeze()).is_err());
    }
}
