//! Topic admin: create (placement checked against the nodes' resources), delete, alter a
//! config; and the lookups of a topic and its partitions in this node's metadata.

use std::sync::Arc;
use std::time::Duration;

use super::{Broker, BrokerError};
use crate::controller::metadata::{self, Command, Topic, TopicConfig};
use crate::partition::PartitionReplica;
use crate::storage;

impl Broker {
    pub fn topic(&self, name: &str) -> Result<Topic, BrokerError> {
        self.metadata
            .read()
            .expect("metadata lock poisoned")
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// Creates a topic, then waits until its partitions are open on this node.
    ///
    /// # Errors
    /// Invalid name, counts or config; [`BrokerError::TopicExists`].
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<Topic, BrokerError> {
        metadata::validate_topic_name(name).map_err(BrokerError::InvalidTopicName)?;
        if partitions == 0 || partitions > metadata::PARTITIONS_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "partitions must be 1 to {}, got {partitions}",
                metadata::PARTITIONS_MAX
            )));
        }
        validate_config(&config)?;
        let nodes = self.members().await;
        if replication_factor == 0 || replication_factor as usize > nodes.len() {
            return Err(BrokerError::InvalidArgument(format!(
                "replication factor must be 1 to {} (the number of nodes), got {replication_factor}",
                nodes.len()
            )));
        }
        let offset = self.metadata().topics.len();
        let replicas = metadata::place_replicas(&nodes, partitions, replication_factor, offset);
        self.check_resources_for(&nodes, &replicas)?;
        self.propose_metadata(Command::CreateTopic {
            name: name.to_string(),
            config,
            replication_factor,
            replicas,
            now_ms: self.clock.now_ms(),
        })
        .await?;
        self.reconcile().await?;
        self.wait_for_leaders(name).await?;
        self.topic(name)
    }

    /// Refuses a placement that would take a node past its file-descriptor budget (every node
    /// is taken to run under this one's limits: nodes are configured alike), or new partitions
    /// while this node's disk is down to its reserve (which is kept for deletes).
    fn check_resources_for(
        &self,
        nodes: &[u64],
        placement: &[Vec<u64>],
    ) -> Result<(), BrokerError> {
        let hosting = |node: u64, replicas: &[Vec<u64>]| {
            replicas.iter().filter(|r| r.contains(&node)).count() as u64
        };
        let bytes = hosting(self.node_id, placement) * crate::resources::PARTITION_CREATE_BYTES;
        self.resources
            .disk
            .admit(self.node_id, "creating topics", bytes)?;
        let metadata = self.metadata();
        for node in nodes {
            let hosted = metadata
                .topics
                .values()
                .map(|topic| hosting(*node, &topic.replicas))
                .sum();
            self.resources
                .fds
                .check(*node, hosted, hosting(*node, placement))?;
        }
        Ok(())
    }

    /// Waits until every local partition of `name` has a leader.
    async fn wait_for_leaders(&self, name: &str) -> Result<(), BrokerError> {
        let replicas: Vec<Arc<PartitionReplica>> = self
            .replicas
            .read()
            .expect("lock")
            .values()
            .filter(|r| r.topic == name)
            .cloned()
            .collect();
        for replica in replicas {
            let mut leader = replica.leader.clone();
            let wait = leader.wait_for(|leader| *leader != 0);
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .map_err(|_| {
                    BrokerError::Timeout(format!("no leader for {name}/{}", replica.partition))
                })?
                .map_err(|_| BrokerError::ShuttingDown)?;
        }
        Ok(())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.topic(name)?;
        self.propose_metadata(Command::DeleteTopic {
            name: name.to_string(),
        })
        .await?;
        self.reconcile().await
    }

    /// Changes the fields of `changes` that are set; returns the topic as it is now.
    pub async fn alter_topic(
        &self,
        name: &str,
        changes: ConfigChanges,
    ) -> Result<Topic, BrokerError> {
        let mut config = self.topic(name)?.config;
        if let Some(retention_ms) = changes.retention_ms {
            config.retention_ms = Some(retention_ms);
        }
        if let Some(retention_bytes) = changes.retention_bytes {
            config.retention_bytes = Some(retention_bytes);
        }
        if let Some(segment_bytes) = changes.segment_bytes {
            config.segment_bytes = segment_bytes;
        }
        validate_config(&config)?;
        self.propose_metadata(Command::AlterTopic {
            name: name.to_string(),
            config,
        })
        .await?;
        self.reconcile().await?;
        self.topic(name)
    }

    pub(super) fn local_replicas(&self, name: &str) -> Vec<Arc<PartitionReplica>> {
        self.replicas
            .read()
            .expect("lock")
            .values()
            .filter(|r| r.topic == name)
            .cloned()
            .collect()
    }

    /// The topic, when it has `partition`.
    ///
    /// # Errors
    /// [`BrokerError::UnknownTopic`], [`BrokerError::UnknownPartition`].
    pub(crate) fn check_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<metadata::Topic, BrokerError> {
        let known = self.topic(topic)?;
        if partition >= known.partitions() {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: known.partitions(),
            });
        }
        Ok(known)
    }
}

/// The config fields an alter request sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
}

/// Checks a topic config against the node's limits (also used by a validate-only create).
pub(crate) fn validate_config(config: &TopicConfig) -> Result<(), BrokerError> {
    if config.segment_bytes < 1024 || config.segment_bytes > storage::log::SEGMENT_BYTES_LIMIT {
        return Err(BrokerError::InvalidConfig(format!(
            "segment_bytes must be 1024 to {}, got {}",
            storage::log::SEGMENT_BYTES_LIMIT,
            config.segment_bytes
        )));
    }
    if config.retention_ms == Some(0) {
        return Err(BrokerError::InvalidConfig(
            "retention_ms must be at least 1 (leave it unset to keep forever)".to_string(),
        ));
    }
    Ok(())
}
