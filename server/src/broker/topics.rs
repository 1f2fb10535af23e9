//! Topic admin: create (placement checked against the nodes' resources), delete, alter a
//! config; and the lookups of a topic and its partitions in this node's metadata.

use std::sync::Arc;
use std::time::Duration;

use super::{Broker, BrokerError};
use crate::capture::target::CaptureTarget;
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
        probe_capture(&config).await?;
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
        {
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
        }
        // The disk last: admitting counts the bytes against the reserve, which a create the
        // descriptor budget refuses must not do.
        let bytes = hosting(self.node_id, placement) * crate::resources::PARTITION_CREATE_BYTES;
        self.resources
            .disk
            .admit(self.node_id, "creating topics", bytes)?;
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
        let capture_dir_before = config.capture_dir.clone();
        if let Some(capture_dir) = changes.capture_dir {
            config.capture_dir = Some(capture_dir);
        }
        if let Some(capture_interval_ms) = changes.capture_interval_ms {
            config.capture_interval_ms = capture_interval_ms;
        }
        if let Some(capture_max_bytes) = changes.capture_max_bytes {
            config.capture_max_bytes = capture_max_bytes;
        }
        if let Some(capture_format) = changes.capture_format {
            config.capture_format = capture_format;
        }
        if let Some(capture_block_retention) = changes.capture_block_retention {
            config.capture_block_retention = capture_block_retention;
        }
        let defaults = TopicConfig::default();
        for name in changes.unset {
            match name {
                ConfigName::RetentionMs => config.retention_ms = None,
                ConfigName::RetentionBytes => config.retention_bytes = None,
                ConfigName::SegmentBytes => config.segment_bytes = defaults.segment_bytes,
                ConfigName::CaptureDir => config.capture_dir = None,
                ConfigName::CaptureIntervalMs => {
                    config.capture_interval_ms = defaults.capture_interval_ms;
                }
                ConfigName::CaptureMaxBytes => {
                    config.capture_max_bytes = defaults.capture_max_bytes;
                }
                ConfigName::CaptureFormat => config.capture_format = defaults.capture_format,
                ConfigName::CaptureBlockRetention => {
                    config.capture_block_retention = defaults.capture_block_retention;
                }
            }
        }
        validate_config(&config)?;
        // Only a new target is probed: an alter of the interval must not fail because the
        // target is briefly unwritable (the runner retries that).
        if config.capture_dir != capture_dir_before {
            probe_capture(&config).await?;
        }
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
    pub capture_dir: Option<String>,
    pub capture_interval_ms: Option<u64>,
    pub capture_max_bytes: Option<u64>,
    pub capture_format: Option<metadata::CaptureFormat>,
    pub capture_block_retention: Option<bool>,
    /// Values taken back to their defaults: retention unlimited, the default segment size,
    /// no capture, the capture defaults. Never one of the values set above (the frontend
    /// refuses that).
    pub unset: Vec<ConfigName>,
}

/// A topic config value by name, as the wire names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigName {
    RetentionMs,
    RetentionBytes,
    SegmentBytes,
    CaptureDir,
    CaptureIntervalMs,
    CaptureMaxBytes,
    CaptureFormat,
    CaptureBlockRetention,
}

impl ConfigName {
    /// Every name, in the wire's spelling.
    pub const ALL: [(&'static str, ConfigName); 8] = [
        ("retention_ms", ConfigName::RetentionMs),
        ("retention_bytes", ConfigName::RetentionBytes),
        ("segment_bytes", ConfigName::SegmentBytes),
        ("capture_dir", ConfigName::CaptureDir),
        ("capture_interval_ms", ConfigName::CaptureIntervalMs),
        ("capture_max_bytes", ConfigName::CaptureMaxBytes),
        ("capture_format", ConfigName::CaptureFormat),
        ("capture_block_retention", ConfigName::CaptureBlockRetention),
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
                    "cannot unset {text:?}: the config names are retention_ms, retention_bytes, \
                     segment_bytes, capture_dir, capture_interval_ms, capture_max_bytes, \
                     capture_format and capture_block_retention"
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
    if config.capture_interval_ms < CAPTURE_INTERVAL_MS_MIN {
        return Err(BrokerError::InvalidConfig(format!(
            "capture.interval-ms must be at least {CAPTURE_INTERVAL_MS_MIN}, got {}",
            config.capture_interval_ms
        )));
    }
    if config.capture_max_bytes < CAPTURE_MAX_BYTES_MIN {
        return Err(BrokerError::InvalidConfig(format!(
            "capture.max-bytes must be at least {CAPTURE_MAX_BYTES_MIN}, got {}",
            config.capture_max_bytes
        )));
    }
    if let Some(dir) = &config.capture_dir {
        CaptureTarget::parse(dir).map_err(BrokerError::InvalidConfig)?;
    }
    Ok(())
}

/// Shortest `capture.interval-ms`: a window a second at least (each costs two controller
/// commands and a file).
pub const CAPTURE_INTERVAL_MS_MIN: u64 = 1_000;
/// Smallest `capture.max-bytes`.
pub const CAPTURE_MAX_BYTES_MIN: u64 = 1024;

/// Checks, on the node handling the request, that the capture target can be written (a
/// directory is created if missing); nothing is left behind when it cannot.
async fn probe_capture(config: &TopicConfig) -> Result<(), BrokerError> {
    let Some(dir) = &config.capture_dir else {
        return Ok(());
    };
    let target = CaptureTarget::parse(dir).map_err(BrokerError::InvalidConfig)?;
    target.probe().await.map_err(BrokerError::InvalidConfig)
}
