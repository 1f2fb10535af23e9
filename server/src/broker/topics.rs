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

    /// Grows topic `name` to `total` partitions: the new ones are placed on the cluster's
    /// nodes as [`Self::create_topic`] places them, then opened by the reconcile; waits until
    /// those on this node have a leader. Existing partitions are untouched.
    ///
    /// # Errors
    /// [`BrokerError::UnknownTopic`]; [`BrokerError::InvalidArgument`] when `total` is not
    /// larger than the current count or above the limit, or the topic grew meanwhile.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<Topic, BrokerError> {
        let topic = self.topic(name)?;
        let now = topic.partitions();
        if total <= now || total > metadata::PARTITIONS_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "topic {name} has {now} partitions: the new total must be {} to {} (it is the \
                 count after adding, not the number to add), got {total}",
                now + 1,
                metadata::PARTITIONS_MAX
            )));
        }
        let nodes = self.members().await;
        if topic.replication_factor as usize > nodes.len() {
            return Err(BrokerError::InvalidArgument(format!(
                "topic {name} has replication factor {} but the cluster has {} nodes",
                topic.replication_factor,
                nodes.len()
            )));
        }
        let offset = self.metadata().topics.len();
        let mut replicas =
            metadata::place_replicas(&nodes, total, topic.replication_factor, offset);
        let added = replicas.split_off(now as usize);
        self.check_resources_for(&nodes, &added)?;
        self.propose_metadata(Command::AddPartitions {
            name: name.to_string(),
            from: now,
            replicas: added,
        })
        .await?;
        self.reconcile().await?;
        self.wait_for_leaders(name).await?;
        self.topic(name)
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
        for name in changes.unset {
            match name {
                ConfigName::RetentionMs => config.retention_ms = None,
                ConfigName::RetentionBytes => config.retention_bytes = None,
                ConfigName::SegmentBytes => {
                    config.segment_bytes = TopicConfig::default().segment_bytes;
                }
            }
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
    /// Values taken back to their defaults: retention unlimited, the default segment size.
    /// Never one of the values set above (the frontend refuses that).
    pub unset: Vec<ConfigName>,
}

/// A topic config value by name, as the wire names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigName {
    RetentionMs,
    RetentionBytes,
    SegmentBytes,
}

impl ConfigName {
    /// Every name, in the wire's spelling.
    pub const ALL: [(&'static str, ConfigName); 3] = [
        ("retention_ms", ConfigName::RetentionMs),
        ("retention_bytes", ConfigName::RetentionBytes),
        ("segment_bytes", ConfigName::SegmentBytes),
    ];

    /// The name spelled `text` on the wire.
    ///
    /// # Errors
    /// An unknown name, with the valid ones.
    pub fn parse(text: &str) -> Result<Self, BrokerError> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, config)| *config)
            .ok_or_else(|| {
                BrokerError::InvalidConfig(format!(
                    "cannot unset {text:?}: the config names are retention_ms, retention_bytes \
                     and segment_bytes"
                ))
            })
    }
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
