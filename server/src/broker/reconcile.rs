//! Reconciliation: this node's local partition replicas follow the metadata. Partitions placed
//! here are opened (their raft groups started), those of deleted topics are stopped and their
//! files removed, config changes reach the running replicas, and replica set changes reach the
//! groups' leaders.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::{Broker, BrokerError};
use crate::controller::metadata::{Metadata, Topic, TopicConfig};
use crate::partition::{
    BATCH_BYTES_MAX, PartitionMachine, PartitionReplica, RetentionSource, group_id, topic_id_of,
};
use crate::replication::GroupSpec;
use crate::storage::{LogConfig, PartitionLog, RetentionPolicy};

impl Broker {
    pub(super) async fn reconcile_on_change(broker: std::sync::Weak<Self>) {
        let Some(mut changed) = broker.upgrade().map(|b| b.metadata_changed.clone()) else {
            return;
        };
        while changed.changed().await.is_ok() {
            let Some(broker) = broker.upgrade() else {
                return;
            };
            if let Err(error) = broker.reconcile().await {
                tracing::error!(%error, "reconciling partitions with the metadata failed");
            }
        }
    }

    /// Starts groups for partitions this node replicates and stops (and deletes) those of
    /// topics that are gone.
    pub(super) async fn reconcile(&self) -> Result<(), BrokerError> {
        let _reconciling = self.reconciling.lock().await;
        let topics: Vec<Topic> = self
            .metadata
            .read()
            .expect("metadata lock poisoned")
            .topics
            .values()
            .cloned()
            .collect();
        let mut wanted = HashMap::new();
        for topic in &topics {
            for (partition, replicas) in topic.replicas.iter().enumerate() {
                if replicas.contains(&self.node_id) {
                    wanted.insert((topic.name.clone(), partition as u32), (topic, replicas));
                }
            }
            // Config changes reach every node through the metadata, so they are applied here
            // (not only by the node that handled the alter request).
            let config = self.configs.read().expect("lock").get(&topic.id).cloned();
            if let Some(config) = config
                && *config.read().expect("config lock poisoned") != topic.config
            {
                *config.write().expect("config lock poisoned") = topic.config.clone();
                for replica in self.local_replicas(&topic.name) {
                    replica
                        .log
                        .write()
                        .expect("log lock poisoned")
                        .set_segment_bytes_max(topic.config.segment_bytes)
                        .map_err(BrokerError::storage)?;
                }
            }
        }
        let existing: Vec<(String, u32)> = self
            .replicas
            .read()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        for key in existing {
            let group = self.replicas.read().expect("lock")[&key].group;
            // A partition of a live topic that was moved off this node stays until its leader
            // has taken this node out of the group (see `Broker::remove_node`); only a deleted
            // topic's partitions go at once.
            let moved = topics
                .iter()
                .find(|t| t.name == key.0 && t.id == topic_id_of(group));
            if let Some(topic) = moved
                && !wanted.contains_key(&key)
            {
                if let Some(replicas) = topic.replicas.get(key.1 as usize) {
                    self.driver.set_voters(group, replicas.clone());
                }
                continue;
            }
            let stale = match wanted.get(&key) {
                None => true,
                Some((topic, _)) => topic_id_of(group) != topic.id,
            };
            if stale {
                let replica = self.replicas.write().expect("lock").remove(&key);
                if let Some(replica) = replica {
                    self.driver.remove_group(replica.group).await;
                    let dir = replica
                        .log
                        .read()
                        .expect("log lock poisoned")
                        .dir()
                        .to_path_buf();
                    drop(replica);
                    self.forget_topic_traffic(&key.0);
                    if let Err(error) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), %error, "removing a deleted partition failed");
                    }
                }
            }
        }
        for ((name, partition), (topic, replicas)) in wanted {
            let running = self
                .replicas
                .read()
                .expect("lock")
                .get(&(name.clone(), partition))
                .map(|replica| replica.group);
            let group = match running {
                Some(group) => group,
                None => {
                    let group = group_id(topic.id, partition);
                    // One partition that cannot be opened stops only itself.
                    if let Err(error) = self.start_partition(topic, partition, replicas).await {
                        let reason = format!("opening {name}/{partition} failed: {error}");
                        let _ = self.stopped_groups.send((group, reason));
                        continue;
                    }
                    group
                }
            };
            // The leader makes the group's membership match (a replica set that changed).
            self.driver.set_voters(group, replicas.clone());
        }
        Ok(())
    }

    fn partition_dir(&self, topic: &Topic, partition: u32) -> PathBuf {
        self.data_dir
            .join("topics")
            .join(format!("{}-{}", topic.id, topic.name))
            .join(format!("{partition:05}"))
    }

    async fn start_partition(
        &self,
        topic: &Topic,
        partition: u32,
        replicas: &[u64],
    ) -> Result<(), BrokerError> {
        let config = self
            .configs
            .write()
            .expect("lock")
            .entry(topic.id)
            .or_insert_with(|| Arc::new(RwLock::new(topic.config.clone())))
            .clone();
        let log_config = LogConfig {
            segment_bytes_max: topic.config.segment_bytes,
            // The limit produce checks before proposing: a replica's append never refuses a
            // batch raft committed (a larger one than the segment gets a segment of its own).
            batch_bytes_max: BATCH_BYTES_MAX,
            ..LogConfig::default()
        };
        let dir = self.partition_dir(topic, partition);
        let log = PartitionLog::open(&dir, log_config).map_err(BrokerError::storage)?;
        let log = Arc::new(RwLock::new(log));
        let (high_watermark_tx, high_watermark) = watch::channel(0);
        let (leader_tx, leader) = watch::channel(0);
        let term = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (in_sync_tx, in_sync) = watch::channel(Vec::new());
        let group = group_id(topic.id, partition);
        // A replica a move adds joins a group whose voters are the previous replicas; its
        // leader then adds it (see `Topic::previous_replicas`).
        let voters = match topic.previous_replicas.get(&partition) {
            Some(previous) if !previous.contains(&self.node_id) => {
                let mut voters = previous.clone();
                voters.push(self.node_id);
                voters
            }
            _ => replicas.to_vec(),
        };
        self.driver
            .add_group(GroupSpec {
                id: group,
                log: log.clone(),
                voters,
                machine: PartitionMachine::new(
                    Arc::new(PartitionRetention {
                        config,
                        metadata: self.metadata.clone(),
                        topic: topic.name.clone(),
                        topic_id: topic.id,
                        partition,
                    }),
                    log.clone(),
                ),
                applied: 0,
                replay_committed: false,
                high_watermark: high_watermark_tx,
                leader: leader_tx,
                term: term.clone(),
                in_sync: in_sync_tx,
                // The first replica leads when it can: placement spreads first replicas evenly.
                preferred_leader: (replicas.len() > 1).then(|| replicas[0]),
                stopped: Some(self.stopped_groups.clone()),
            })
            .await
            .map_err(BrokerError::Storage)?;
        let replica = PartitionReplica {
            topic: topic.name.clone(),
            partition,
            group,
            log,
            high_watermark,
            leader,
            term,
            in_sync,
            traffic: self.topic_traffic(&topic.name),
        };
        self.replicas
            .write()
            .expect("lock")
            .insert((topic.name.clone(), partition), Arc::new(replica));
        self.stopped.write().expect("lock").remove(&group);
        Ok(())
    }
}

/// A topic's config, shared by its local partitions' machines, is where their retention
/// comes from (an alter changes it in place; see `Broker::reconcile`). Alone it knows no
/// capture position, so a captured topic keeps everything (see [`PartitionRetention`]).
impl RetentionSource for RwLock<TopicConfig> {
    fn retention(&self) -> RetentionPolicy {
        self.read().expect("config lock poisoned").retention(0)
    }
}

/// One partition's retention: its topic's shared config, floored by the partition's capture
/// position in this node's metadata. A position read a little late is only lower, so it
/// keeps more, never less.
pub(super) struct PartitionRetention {
    pub(super) config: Arc<RwLock<TopicConfig>>,
    pub(super) metadata: Arc<RwLock<Metadata>>,
    pub(super) topic: String,
    pub(super) topic_id: u64,
    pub(super) partition: u32,
}

impl RetentionSource for PartitionRetention {
    fn retention(&self) -> RetentionPolicy {
        let capture_next_offset = self
            .metadata
            .read()
            .expect("metadata lock poisoned")
            .topics
            .get(&self.topic)
            .filter(|topic| topic.id == self.topic_id)
            .map_or(0, |topic| {
                topic.capture_position(self.partition).next_offset
            });
        self.config
            .read()
            .expect("config lock poisoned")
            .retention(capture_next_offset)
    }
}
