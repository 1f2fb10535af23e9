//! Topic admin over Kafka: CreateTopics (v2–3), DeleteTopics (v1–3) and DescribeConfigs
//! (v1–2), the versions the codec crate still decodes (as Kafka 4 dropped older ones),
//! through the broker's topic calls (as the gRPC Admin service) under the same ACL rules:
//! create on the topic or the cluster, delete on the topic, describe-configs or describe on
//! the topic.
//!
//! Topic configs Strata has: `retention.ms`, `retention.bytes` (-1: unlimited, Kafka's
//! spelling of "unset") and `segment.bytes`; any other key is INVALID_CONFIG naming it.
//! DescribeConfigs also reports `cleanup.policy=delete`, read-only (Strata does not compact).
//! Creating and deleting are controller commands: a node that does not lead the controller
//! answers NOT_CONTROLLER, and the client sends the request to Metadata's controller_id.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::context::Context;
use super::error::code;
use crate::broker::topics::validate_config;
use crate::broker::{Broker, BrokerError};
use crate::controller::metadata::{self, CaptureFormat, SEGMENT_BYTES_DEFAULT, TopicConfig};
use crate::security::acl::{CLUSTER_RESOURCE_NAME, Operation, ResourceType};

/// Replicas of a topic created with replication factor -1 ("the default"), at most.
const DEFAULT_REPLICAS_MAX: usize = 3;
/// Partitions of a topic created with -1 (Kafka's `num.partitions` default).
const DEFAULT_PARTITIONS: u32 = 1;

/// Kafka's resource types in DescribeConfigs.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources: set on the topic, or the default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// The answer for a refused topic: its code, and the message (the broker's own words).
fn refusal(error: &BrokerError) -> (ResponseError, String) {
    let kafka = match error {
        BrokerError::NotControllerLeader { .. } => ResponseError::NotController,
        other => code(other),
    };
    (kafka, error.to_string())
}

/// This node leads the controller, or the NOT_CONTROLLER refusal naming who does.
fn controller_here(broker: &Broker) -> Result<(), BrokerError> {
    let leader = broker.controller_leader();
    if leader == broker.node_id() {
        return Ok(());
    }
    Err(BrokerError::NotControllerLeader {
        leader_id: leader,
        address: None,
    })
}

/// Answers CreateTopics.
pub async fn create_topics(
    context: &Context,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let validate_only = request.validate_only;
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.clone();
        let outcome = create_topic(context, topic, validate_only).await;
        let mut result = CreatableTopicResult::default().with_name(name);
        result.error_message = None;
        if let Err(error) = outcome {
            let (kafka, message) = refusal(&error);
            tracing::debug!(topic = %result.name.0, %error, "Kafka CreateTopics refused");
            result.error_code = kafka.code();
            result.error_message = Some(StrBytes::from_string(message));
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create_topic(
    context: &Context,
    topic: CreatableTopic,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let broker = context.frontend.broker()?;
    let name = topic.name.0.to_string();
    let allowed =
        context.access.allows(
            &broker,
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME,
            Operation::Create,
        ) || context
            .access
            .allows(&broker, ResourceType::Topic, &name, Operation::Create);
    if !allowed {
        return Err(context
            .access
            .denied(ResourceType::Topic, &name, Operation::Create));
    }
    controller_here(&broker)?;
    if !topic.assignments.is_empty() {
        return Err(BrokerError::InvalidArgument(
            "manual replica assignments are not supported: Strata places replicas; send \
             num_partitions and replication_factor"
                .to_string(),
        ));
    }
    let partitions = match topic.num_partitions {
        -1 => DEFAULT_PARTITIONS,
        count => u32::try_from(count).unwrap_or(0),
    };
    let nodes = broker.metadata().nodes.len();
    let replication_factor = match topic.replication_factor {
        -1 => nodes.clamp(1, DEFAULT_REPLICAS_MAX) as u32,
        count => u32::try_from(count).unwrap_or(0),
    };
    let config = topic_config(&topic)?;
    if validate_only {
        metadata::validate_topic_name(&name).map_err(BrokerError::InvalidTopicName)?;
        if broker.topic(&name).is_ok() {
            return Err(BrokerError::TopicExists(name));
        }
        if partitions == 0 || partitions > metadata::PARTITIONS_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "partitions must be 1 to {}, got {}",
                metadata::PARTITIONS_MAX,
                topic.num_partitions
            )));
        }
        if replication_factor == 0 || replication_factor as usize > nodes {
            return Err(BrokerError::InvalidArgument(format!(
                "replication factor must be 1 to {nodes} (the number of nodes), got {}",
                topic.replication_factor
            )));
        }
        return validate_config(&config);
    }
    broker
        .create_topic(&name, partitions, replication_factor, config)
        .await
        .map(|_| ())
}

/// A created topic's config from its Kafka configs.
///
/// # Errors
/// [`BrokerError::InvalidConfig`] naming a key Strata does not have, or a value that is not a
/// number in range.
fn topic_config(topic: &CreatableTopic) -> Result<TopicConfig, BrokerError> {
    let mut config = TopicConfig::default();
    for entry in &topic.configs {
        let key = entry.name.as_str();
        let value = entry.value.as_deref().unwrap_or("");
        let number = || {
            value.trim().parse::<i64>().map_err(|_| {
                BrokerError::InvalidConfig(format!("{key} must be a number, got {value:?}"))
            })
        };
        // -1 is Kafka's "unlimited", which is Strata's unset.
        let limit = |number: i64| -> Result<Option<u64>, BrokerError> {
            match number {
                -1 => Ok(None),
                n => u64::try_from(n).map(Some).map_err(|_| {
                    BrokerError::InvalidConfig(format!("{key} must be -1 or at least 0, got {n}"))
                }),
            }
        };
        match key {
            "retention.ms" => config.retention_ms = limit(number()?)?,
            "retention.bytes" => config.retention_bytes = limit(number()?)?,
            "segment.bytes" => {
                config.segment_bytes = u64::try_from(number()?).map_err(|_| {
                    BrokerError::InvalidConfig(format!(
                        "segment.bytes must be positive, got {value}"
                    ))
                })?;
            }
            "capture.dir" => config.capture_dir = Some(value.to_string()),
            "capture.interval-ms" | "capture.max-bytes" => {
                let number = u64::try_from(number()?).map_err(|_| {
                    BrokerError::InvalidConfig(format!("{key} must be positive, got {value}"))
                })?;
                if key == "capture.interval-ms" {
                    config.capture_interval_ms = number;
                } else {
                    config.capture_max_bytes = number;
                }
            }
            "capture.format" => {
                config.capture_format =
                    CaptureFormat::parse(value).map_err(BrokerError::InvalidConfig)?;
            }
            "capture.block-retention" => {
                config.capture_block_retention = match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "capture.block-retention must be true or false, got {other:?}"
                        )));
                    }
                };
            }
            other => {
                return Err(BrokerError::InvalidConfig(format!(
                    "config {other:?} is not supported: Strata's topic configs are retention.ms, \
                     retention.bytes, segment.bytes, capture.dir, capture.interval-ms, \
                     capture.max-bytes, capture.format and capture.block-retention"
                )));
            }
        }
    }
    Ok(config)
}

/// Answers DeleteTopics (v1–3 carry topic names and no error message: refusals are logged).
pub async fn delete_topics(
    context: &Context,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut results = Vec::with_capacity(request.topic_names.len());
    for name in request.topic_names {
        let outcome = delete_topic(context, name.0.as_str()).await;
        let mut result = DeletableTopicResult::default().with_name(Some(name));
        result.error_message = None;
        if let Err(error) = outcome {
            tracing::info!(topic = ?result.name, %error, "Kafka DeleteTopics refused");
            result.error_code = refusal(&error).0.code();
        }
        results.push(result);
    }
    DeleteTopicsResponse::default().with_responses(results)
}

async fn delete_topic(context: &Context, name: &str) -> Result<(), BrokerError> {
    let broker = context.frontend.broker()?;
    context
        .access
        .check(&broker, ResourceType::Topic, name, Operation::Delete)?;
    broker.topic(name)?;
    controller_here(&broker)?;
    broker.delete_topic(name).await
}

/// Answers DescribeConfigs: a topic's configs, and an empty list for a broker.
pub async fn describe_configs(
    context: &Context,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            result.error_message = None;
            match describe(context, &resource) {
                Ok(configs) => result.configs = configs,
                Err(error) => {
                    tracing::debug!(resource = %resource.resource_name, %error, "Kafka DescribeConfigs refused");
                    let (kafka, message) = refusal(&error);
                    result.error_code = kafka.code();
                    result.error_message = Some(StrBytes::from_string(message));
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn describe(
    context: &Context,
    resource: &DescribeConfigsResource,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    let broker = context.frontend.broker()?;
    let name = resource.resource_name.as_str();
    match resource.resource_type {
        RESOURCE_BROKER => return Ok(Vec::new()),
        RESOURCE_TOPIC => {}
        other => {
            return Err(BrokerError::InvalidArgument(format!(
                "resource type {other} is not described here: topics (2) and brokers (4) are"
            )));
        }
    }
    let allowed = [Operation::DescribeConfigs, Operation::Describe]
        .into_iter()
        .any(|operation| {
            context
                .access
                .allows(&broker, ResourceType::Topic, name, operation)
        });
    if !allowed {
        return Err(context
            .access
            .denied(ResourceType::Topic, name, Operation::DescribeConfigs));
    }
    let topic = broker.topic(name)?;
    let wanted = |key: &str| {
        resource
            .configuration_keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
    };
    Ok(topic_configs(&topic.config)
        .into_iter()
        .filter(|config| wanted(config.name.as_str()))
        .collect())
}

/// A topic's configs as Kafka names them, each with its source (set on the topic or the
/// default).
fn topic_configs(config: &TopicConfig) -> Vec<DescribeConfigsResourceResult> {
    let entry = |name: &'static str, value: String, set: bool, read_only: bool| {
        DescribeConfigsResourceResult::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(Some(StrBytes::from_string(value)))
            .with_read_only(read_only)
            .with_config_source(if set { SOURCE_TOPIC } else { SOURCE_DEFAULT })
    };
    let limit = |value: Option<u64>| value.map_or_else(|| "-1".to_string(), |v| v.to_string());
    let defaults = TopicConfig::default();
    vec![
        entry(
            "retention.ms",
            limit(config.retention_ms),
            config.retention_ms.is_some(),
            false,
        ),
        entry(
            "retention.bytes",
            limit(config.retention_bytes),
            config.retention_bytes.is_some(),
            false,
        ),
        entry(
            "segment.bytes",
            config.segment_bytes.to_string(),
            config.segment_bytes != SEGMENT_BYTES_DEFAULT,
            false,
        ),
        entry("cleanup.policy", "delete".to_string(), false, true),
        entry(
            "capture.dir",
            config.capture_dir.clone().unwrap_or_default(),
            config.capture_dir.is_some(),
            false,
        ),
        entry(
            "capture.interval-ms",
            config.capture_interval_ms.to_string(),
            config.capture_interval_ms != defaults.capture_interval_ms,
            false,
        ),
        entry(
            "capture.max-bytes",
            config.capture_max_bytes.to_string(),
            config.capture_max_bytes != defaults.capture_max_bytes,
            false,
        ),
        entry(
            "capture.format",
            config.capture_format.as_str().to_string(),
            config.capture_format != defaults.capture_format,
            false,
        ),
        entry(
            "capture.block-retention",
            config.capture_block_retention.to_string(),
            config.capture_block_retention != defaults.capture_block_retention,
            false,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;

    fn with_configs(configs: &[(&str, &str)]) -> CreatableTopic {
        CreatableTopic::default().with_configs(
            configs
                .iter()
                .map(|(name, value)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(name.to_string()))
                        .with_value(Some(StrBytes::from_string(value.to_string())))
                })
                .collect(),
        )
    }

    /// The three configs Strata has are read (-1 meaning unset); anything else is refused
    /// naming the key.
    #[test]
    fn topic_configs_are_read_and_others_refused() {
        let config = topic_config(&with_configs(&[
            ("retention.ms", "60000"),
            ("retention.bytes", "-1"),
            ("segment.bytes", "1048576"),
        ]))
        .expect("valid configs");
        assert_eq!(
            config,
            TopicConfig {
                retention_ms: Some(60_000),
                retention_bytes: None,
                segment_bytes: 1 << 20,
                ..TopicConfig::default()
            }
        );
        let captured = topic_config(&with_configs(&[
            ("capture.dir", "/capture"),
            ("capture.interval-ms", "5000"),
            ("capture.block-retention", "false"),
        ]))
        .expect("capture configs");
        assert_eq!(captured.capture_dir.as_deref(), Some("/capture"));
        assert_eq!(captured.capture_interval_ms, 5000);
        assert!(!captured.capture_block_retention);
        for bad in [
            ("capture.format", "avro"),
            ("capture.block-retention", "yes"),
        ] {
            let refused = topic_config(&with_configs(&[bad]));
            assert!(
                matches!(&refused, Err(BrokerError::InvalidConfig(m)) if m.contains(bad.0)),
                "{refused:?}"
            );
        }
        let refused = topic_config(&with_configs(&[("cleanup.policy", "compact")]));
        assert!(
            matches!(&refused, Err(BrokerError::InvalidConfig(m)) if m.contains("cleanup.policy")),
            "{refused:?}"
        );
        let refused = topic_config(&with_configs(&[("retention.ms", "soon")]));
        assert!(
            matches!(&refused, Err(BrokerError::InvalidConfig(m)) if m.contains("retention.ms"))
        );
        let refused = topic_config(&with_configs(&[("retention.bytes", "-7")]));
        assert!(matches!(&refused, Err(BrokerError::InvalidConfig(_))));

        let described = topic_configs(&config);
        let names: Vec<&str> = described.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "retention.ms",
                "retention.bytes",
                "segment.bytes",
                "cleanup.policy",
                "capture.dir",
                "capture.interval-ms",
                "capture.max-bytes",
                "capture.format",
                "capture.block-retention",
            ]
        );
        assert_eq!(described[0].config_source, SOURCE_TOPIC);
        assert_eq!(described[1].value.as_deref(), Some("-1"));
        assert_eq!(described[1].config_source, SOURCE_DEFAULT);
        assert!(described[3].read_only);
    }
}
