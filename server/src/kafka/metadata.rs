//! Metadata (v0–7): the nodes with a Kafka listener (each at its advertised Kafka address),
//! the controller (the controller's raft leader, which also coordinates consumer groups), and
//! each requested topic's partitions with their raft leader, replicas and in-sync replicas, so
//! clients send produce and fetch straight to leaders. The leader epoch is the leader's raft
//! term (clamped to i32).
//!
//! Topics the principal may not describe are left out of an all-topics answer and refused
//! with TOPIC_AUTHORIZATION_FAILED when named. A named topic that does not exist is created
//! when `--kafka-auto-create-topics` is on, the client allows it (v4+; always before) and the
//! principal may create it (Kafka's rule), with one partition and up to three replicas.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::context::Context;
use super::error::code;
use crate::broker::{Broker, BrokerError};
use crate::controller::metadata::{Metadata, Topic, TopicConfig};
use crate::security::acl::{CLUSTER_RESOURCE_NAME, Operation, ResourceType};
use crate::service::cluster_view::PartitionLeader;

/// Replicas of an auto-created topic, at most (fewer on a smaller cluster); Kafka's default
/// replication factor in production setups.
const AUTO_CREATE_REPLICAS_MAX: usize = 3;

/// Answers a Metadata request.
pub async fn handle(context: &Context, version: i16, request: MetadataRequest) -> MetadataResponse {
    let broker = match context.frontend.broker() {
        Ok(broker) => broker,
        Err(error) => return starting(&request, &error),
    };
    let metadata = broker.metadata();
    // v0 has no null: an empty list means every topic.
    let named: Option<Vec<String>> = match request.topics {
        Some(topics) if version >= 1 || !topics.is_empty() => Some(
            topics
                .into_iter()
                .filter_map(|topic| topic.name.map(|name| name.0.to_string()))
                .collect(),
        ),
        _ => None,
    };
    let may_auto_create =
        context.frontend.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let gathered = context.frontend.leaders(&broker).await;
    let leaders = &gathered.leaders;
    let mut topics = Vec::new();
    match named {
        None => {
            for topic in metadata.topics.values() {
                if context.access.allows(
                    &broker,
                    ResourceType::Topic,
                    &topic.name,
                    Operation::Describe,
                ) {
                    topics.push(describe(topic, leaders, version));
                }
            }
        }
        Some(names) => {
            for name in names {
                let answer = match metadata.topics.get(&name) {
                    _ if !context.access.allows(
                        &broker,
                        ResourceType::Topic,
                        &name,
                        Operation::Describe,
                    ) =>
                    {
                        refused(&name, ResponseError::TopicAuthorizationFailed)
                    }
                    Some(topic) => describe(topic, leaders, version),
                    None if may_auto_create => auto_create(context, &broker, &name).await,
                    None => refused(&name, ResponseError::UnknownTopicOrPartition),
                };
                topics.push(answer);
            }
        }
    }
    let mut response = MetadataResponse::default()
        .with_brokers(brokers(&broker, &metadata, |node| {
            context.frontend.alive(&broker, node)
        }))
        .with_topics(topics);
    if version >= 1 {
        let controller = broker.controller_leader();
        response.controller_id = BrokerId(if controller == 0 {
            -1
        } else {
            node_id(controller)
        });
    }
    response
}

/// The answer while the node starts: no brokers, and every named topic LEADER_NOT_AVAILABLE
/// (clients retry).
fn starting(request: &MetadataRequest, error: &BrokerError) -> MetadataResponse {
    let topics = request
        .topics
        .iter()
        .flatten()
        .filter_map(|topic| topic.name.as_ref())
        .map(|name| refused(name.0.as_str(), code(error)))
        .collect();
    MetadataResponse::default().with_topics(topics)
}

/// Every live node with a Kafka listener, at its advertised Kafka address.
/// This node is listed at its own address even before the metadata has it (the address is
/// recorded through the controller moments after the node starts serving).
fn brokers(
    broker: &Broker,
    metadata: &Metadata,
    alive: impl Fn(u64) -> bool,
) -> Vec<MetadataResponseBroker> {
    metadata
        .nodes
        .values()
        .filter(|node| alive(node.id))
        .filter_map(|node| {
            let address = if node.id == broker.node_id() {
                broker.kafka_address()
            } else {
                node.kafka_address.as_deref()
            }?;
            let (host, port) = split_host_port(address)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(node_id(node.id)))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(port),
            )
        })
        .collect()
}

/// `host:port` or `[v6]:port`, as Kafka's clients take them apart.
pub(super) fn split_host_port(address: &str) -> Option<(&str, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok()?;
    Some((host, i32::from(port)))
}

/// A Strata node id as Kafka's 32-bit broker id (node ids are small in practice; one that is
/// not is clamped, which makes the client fail to find it rather than find another).
pub fn node_id(id: u64) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

fn refused(name: &str, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
}

/// A topic's partitions with their leaders as the cluster last reported them.
fn describe(
    topic: &Topic,
    leaders: &BTreeMap<(String, u32), PartitionLeader>,
    version: i16,
) -> MetadataResponseTopic {
    let partitions = topic
        .replicas
        .iter()
        .enumerate()
        .map(|(partition, replicas)| {
            let partition = partition as u32;
            let known = leaders.get(&(topic.name.clone(), partition));
            let replica_nodes: Vec<BrokerId> =
                replicas.iter().map(|id| BrokerId(node_id(*id))).collect();
            let mut answer = MetadataResponsePartition::default()
                .with_partition_index(partition as i32)
                .with_replica_nodes(replica_nodes.clone());
            match known {
                Some(leader) if leader.leader != 0 => {
                    answer.leader_id = BrokerId(node_id(leader.leader));
                    answer.isr_nodes = if leader.in_sync.is_empty() {
                        vec![answer.leader_id]
                    } else {
                        leader
                            .in_sync
                            .iter()
                            .map(|id| BrokerId(node_id(*id)))
                            .collect()
                    };
                    if version >= 7 {
                        answer.leader_epoch = i32::try_from(leader.term).unwrap_or(i32::MAX);
                    }
                }
                _ => {
                    answer.error_code = ResponseError::LeaderNotAvailable.code();
                    answer.leader_id = BrokerId(-1);
                }
            }
            answer
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions)
}

/// Creates `name` for a Metadata request (see the module doc). The new topic's partitions
/// have no leader yet: LEADER_NOT_AVAILABLE, as Kafka answers, and the client asks again.
async fn auto_create(context: &Context, broker: &Broker, name: &str) -> MetadataResponseTopic {
    let allowed = context.access.allows(
        broker,
        ResourceType::Cluster,
        CLUSTER_RESOURCE_NAME,
        Operation::Create,
    ) || context
        .access
        .allows(broker, ResourceType::Topic, name, Operation::Create);
    if !allowed {
        return refused(name, ResponseError::TopicAuthorizationFailed);
    }
    if let Err(why) = crate::controller::metadata::validate_topic_name(name) {
        return refused(name, code(&BrokerError::InvalidTopicName(why)));
    }
    let replicas = broker
        .metadata()
        .nodes
        .len()
        .clamp(1, AUTO_CREATE_REPLICAS_MAX) as u32;
    // Only the controller's leader creates topics: another node asks it, as itself (the
    // client's right to create was checked above).
    let leader = broker.controller_leader();
    let created = if leader == broker.node_id() {
        broker
            .create_topic(name, 1, replicas, TopicConfig::default())
            .await
            .map(|_| ())
    } else {
        match broker.node_address(leader) {
            Some(address) => {
                crate::service::create_topic_at(
                    context.frontend.peer_tls.clone(),
                    leader,
                    address,
                    name.to_string(),
                    1,
                    replicas,
                )
                .await
            }
            None => Err(BrokerError::Unavailable(
                "the controller has no leader: the topic cannot be created now".to_string(),
            )),
        }
    };
    match created {
        Ok(_) | Err(BrokerError::TopicExists(_)) => {
            refused(name, ResponseError::LeaderNotAvailable)
        }
        Err(error) => {
            tracing::debug!(topic = name, %error, "Kafka auto-create failed");
            refused(name, code(&error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_as_kafka_clients_do() {
        assert_eq!(split_host_port("127.0.0.1:9093"), Some(("127.0.0.1", 9093)));
        assert_eq!(split_host_port("[::1]:9093"), Some(("::1", 9093)));
        assert_eq!(
            split_host_port("kafka.example:19092"),
            Some(("kafka.example", 19092))
        );
        assert_eq!(split_host_port("nohost"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }
}
