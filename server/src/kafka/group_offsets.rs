//! OffsetCommit (2–6) and OffsetFetch (1–5): committed offsets in the same replicated store as
//! Strata's own groups, so `strata group describe` shows a Kafka group's lag too.
//!
//! A commit comes from a member of the classic group's current generation, or (generation -1,
//! as Kafka's `assign()` consumers send) from a consumer outside any group while the group has
//! no members. Each offset must lie at or below its partition's high watermark, as every
//! commit's. ACLs as Kafka's: group Read to commit and topic Read for each committed topic;
//! group Describe to fetch, and topic Describe for each topic fetched. Refused partitions
//! get their own error codes; the others are committed.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::context::Context;
use super::error::{classic_code, code, group_code};
use crate::controller::metadata::OffsetEntry;
use crate::groups::classic_requests::ClassicFailure;
use crate::groups::coordinator::Tp;
use crate::groups::offsets::{OFFSET_METADATA_BYTES_MAX, PARTITIONS_PER_REQUEST_MAX};
use crate::security::acl::{Operation, ResourceType};

/// Each topic's answers for its partitions, in request order: (partition, error; `None` for
/// committed).
type Answers = Vec<(TopicName, Vec<(i32, Option<ResponseError>)>)>;

/// Answers an OffsetCommit.
pub async fn commit(context: &Context, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let mut answers: Answers = request
        .topics
        .iter()
        .map(|topic| {
            (
                topic.name.clone(),
                topic
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, None))
                    .collect(),
            )
        })
        .collect();
    let whole = commit_partitions(context, &request, &mut answers)
        .await
        .err();
    let topics = answers
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            let error = whole.or(error).map_or(0, |e| e.code());
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(error)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Commits the partitions that pass their checks, writing each partition's refusal into
/// `answers`.
///
/// # Errors
/// The error of every partition when the whole request is refused (group access, not the
/// coordinator, too many partitions).
async fn commit_partitions(
    context: &Context,
    request: &OffsetCommitRequest,
    answers: &mut Answers,
) -> Result<(), ResponseError> {
    let group = request.group_id.0.to_string();
    let partitions_total: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    if partitions_total > PARTITIONS_PER_REQUEST_MAX {
        return Err(ResponseError::InvalidRequest);
    }
    let broker = context
        .group_access(&group, Operation::Read)
        .map_err(|failure| classic_code(&failure))?;
    let requests = broker.groups();
    requests
        .check_coordinator()
        .map_err(|error| group_code(&error))?;
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let name = topic.name.0.to_string();
        let readable = context
            .access
            .allows(&broker, ResourceType::Topic, &name, Operation::Read);
        for (p, partition) in topic.partitions.iter().enumerate() {
            let metadata = partition
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let refusal = if !readable {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if partition.partition_index < 0 {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if partition.committed_offset < 0 {
                Some(ResponseError::OffsetOutOfRange)
            } else if metadata.len() > OFFSET_METADATA_BYTES_MAX {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                answers[t].1[p].1 = Some(refusal);
                continue;
            }
            let entry = OffsetEntry {
                topic: name.clone(),
                partition: partition.partition_index as u32,
                offset: partition.committed_offset as u64,
                metadata,
            };
            if let Err(error) = requests.check_kafka_commit_entries(&entry) {
                answers[t].1[p].1 = Some(code(&error));
                continue;
            }
            valid.push(entry);
            slots.push((t, p));
        }
    }
    let peer_tls = context.frontend.peer_tls.clone();
    let outcome = requests
        .classic_commit(
            &group,
            request.generation_id_or_member_epoch,
            &request.member_id,
            valid,
            |node, address, topic| {
                crate::service::replica_offsets_at(peer_tls.clone(), node, address, topic)
            },
        )
        .await;
    // The commit stands or falls as a whole for the partitions that passed their checks (it
    // is one replicated change).
    let verdict = outcome.err().map(|failure| {
        if let ClassicFailure::Node(error) = &failure {
            tracing::debug!(%group, %error, "Kafka offset commit failed");
        }
        classic_code(&failure)
    });
    for (t, p) in slots {
        answers[t].1[p].1 = verdict;
    }
    Ok(())
}

/// Answers an OffsetFetch: -1 for partitions without a commit; topics null (v2+) = every
/// committed partition of the topics the principal may describe.
pub fn fetch(context: &Context, version: i16, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = request.group_id.0.to_string();
    let requested: Option<Vec<(TopicName, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name, topic.partition_indexes))
            .collect()
    });
    let partition = |index: i32, offset: i64, metadata: String, error: Option<ResponseError>| {
        OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(-1)
            .with_metadata(Some(StrBytes::from_string(metadata)))
            .with_error_code(error.map_or(0, |e| e.code()))
    };
    // A refusal of the whole request: in the top-level error code from v2, in every
    // partition's before.
    let refuse_all = |error: ResponseError| {
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(error.code());
        }
        let topics = requested
            .iter()
            .flatten()
            .map(|(name, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(name.clone())
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|index| partition(*index, -1, String::new(), Some(error)))
                            .collect(),
                    )
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    };
    let broker = match context.group_access(&group, Operation::Describe) {
        Ok(broker) => broker,
        Err(failure) => return refuse_all(classic_code(&failure)),
    };
    let describable = |topic: &str| {
        context
            .access
            .allows(&broker, ResourceType::Topic, topic, Operation::Describe)
    };
    let asked: Vec<Tp> = requested
        .iter()
        .flatten()
        .filter(|(name, _)| describable(name.0.as_str()))
        .flat_map(|(name, partitions)| {
            partitions
                .iter()
                .filter(|index| **index >= 0)
                .map(|index| (name.0.to_string(), *index as u32))
        })
        .collect();
    // Nothing the principal may describe (or nothing asked): answered without the store.
    let committed = if requested.is_some() && asked.is_empty() {
        Ok((Vec::new(), 0))
    } else {
        broker.groups().committed_offsets(&group, &asked)
    };
    let committed = match committed {
        Ok((committed, _generation)) => committed,
        Err(error) => return refuse_all(group_code(&error)),
    };
    let found: std::collections::BTreeMap<Tp, (i64, String)> = committed
        .into_iter()
        .filter_map(|(tp, offset)| {
            let offset = offset?;
            Some((tp, (offset.offset as i64, offset.metadata)))
        })
        .collect();
    let topics = match requested {
        Some(requested) => requested
            .into_iter()
            .map(|(name, partitions)| {
                let allowed = describable(name.0.as_str());
                let answers = partitions
                    .into_iter()
                    .map(|index| {
                        if !allowed {
                            return partition(
                                index,
                                -1,
                                String::new(),
                                Some(ResponseError::TopicAuthorizationFailed),
                            );
                        }
                        let key = (name.0.to_string(), index.max(0) as u32);
                        match found.get(&key) {
                            Some((offset, metadata)) if index >= 0 => {
                                partition(index, *offset, metadata.clone(), None)
                            }
                            _ => partition(index, -1, String::new(), None),
                        }
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(answers)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<
                String,
                Vec<OffsetFetchResponsePartition>,
            > = Default::default();
            for ((topic, index), (offset, metadata)) in found {
                if describable(&topic) {
                    by_topic.entry(topic).or_default().push(partition(
                        i32::try_from(index).unwrap_or(i32::MAX),
                        offset,
                        metadata,
                        None,
                    ));
                }
            }
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(partitions)
                })
                .collect()
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}
