//! ListOffsets (v1–4): the earliest offset (-2), the latest (-1, the high watermark), or the
//! first offset whose record timestamp is at or after a time, resolved on the partition's
//! leader by the broker's one lookup ([`Broker::list_offsets`], as the gRPC ListOffsets). The
//! isolation level is ignored: without transactions, read-committed and read-uncommitted see
//! the same offsets.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::context::Context;
use super::error::code;
use super::fetch::leader_replica;
use crate::broker::{Broker, BrokerError};
use crate::partition::StartFrom;
use crate::security::acl::{Operation, ResourceType};

/// Kafka's timestamp asking for the latest offset.
const LATEST_TIMESTAMP: i64 = -1;
/// Kafka's timestamp asking for the earliest offset.
const EARLIEST_TIMESTAMP: i64 = -2;

/// Answers a ListOffsets request. The leader epoch (v4) is -1, "unknown", which clients
/// accept: the epoch check it enables is optional.
pub async fn handle(
    context: &Context,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let broker = context.frontend.broker();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let allowed = broker.as_ref().map_err(Clone::clone).and_then(|broker| {
                context
                    .access
                    .check(broker, ResourceType::Topic, &name, Operation::Describe)
            });
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let answer = match (&allowed, &broker) {
                        (Ok(()), Ok(broker)) => {
                            list(broker, &name, partition.partition_index, partition.timestamp)
                        }
                        (Err(error), _) | (_, Err(error)) => Err(error.clone()),
                    };
                    match answer {
                        Ok((offset, timestamp, epoch)) => ListOffsetsPartitionResponse::default()
                            .with_partition_index(partition.partition_index)
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            // Only v4+ carries it (-1 is its absent value).
                            .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                        Err(error) => {
                            tracing::debug!(topic = name, partition = partition.partition_index, %error, "Kafka list offsets refused");
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(code(&error).code())
                                .with_offset(-1)
                                .with_timestamp(-1)
                                .with_leader_epoch(-1)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The offset and its record's timestamp for `timestamp` (Kafka's -2, -1 or a time) on the
/// leader of `topic`/`partition`. A time after every record: offset -1 and timestamp -1, as
/// Kafka answers. Third: the leader's current epoch (its raft term). Kafka gives the epoch of
/// the batch at the offset, which clients use only to validate a position through
/// OffsetForLeaderEpoch; that API is not served, so clients never do, and the current term is
/// never older than the offset's.
///
/// # Errors
/// Unknown topic or partition, not the leader, an invalid timestamp.
fn list(
    broker: &Broker,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64, i32), BrokerError> {
    let replica = leader_replica(broker, topic, partition)?;
    let epoch =
        i32::try_from(replica.term.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i32::MAX);
    let start = match timestamp {
        EARLIEST_TIMESTAMP => StartFrom::Earliest,
        LATEST_TIMESTAMP => StartFrom::Latest,
        time if time >= 0 => StartFrom::Timestamp(time),
        other => {
            return Err(BrokerError::InvalidArgument(format!(
                "timestamp {other} is not a time, -1 (latest) or -2 (earliest)"
            )));
        }
    };
    let listed = broker.list_offsets(topic, replica.partition, start)?;
    let StartFrom::Timestamp(_) = start else {
        return Ok((listed.offset as i64, -1, epoch));
    };
    if listed.offset >= listed.high_watermark {
        return Ok((-1, -1, -1));
    }
    let found = replica
        .timestamp_at(listed.offset, listed.high_watermark)
        .unwrap_or(-1);
    Ok((listed.offset as i64, found, epoch))
}
