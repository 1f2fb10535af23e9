//! # Broker: topics, cluster and routing
//!
//! [`Broker`] is what every frontend calls. It owns this node's local partition replicas
//! (the map from a topic's partition to its [`PartitionReplica`]) and routes requests to them;
//! what a replica does is [`crate::partition`]'s, consumer groups are [`crate::groups`]', and
//! the replicated metadata and its state machine are [`crate::controller`]'s.
//! It knows nothing of gRPC: the service layer translates.
//!
//! - this module: [`Broker`], its start (controller first, then the metadata, then the
//!   partitions), routing (a partition's local replica, or who holds it), propose errors.
//! - `controller_client`: waiting for the controller and the metadata, proposing commands.
//! - `topics`: topic admin (create, delete, alter) and topic lookups.
//! - `membership`: the cluster's nodes: add (learner first) and remove (replicas moved off).
//! - `reconcile`: local partitions follow the metadata (open, stop, configs, replica sets).
//! - `produce`: the produce path and its node-wide byte budget.
//! - `data_metrics`: what the data metrics read at scrape time, per-topic traffic counters.
//! - `producer_ids`: blocks of producer ids for idempotent producers.
//! - `groups_port`: the broker as the consumer groups'
//!   [`ControllerPort`](crate::groups::ControllerPort).
//! - [`security`]: users and ACLs (create, change, delete, list through the controller), the
//!   ACL filter, what the authorizer reads, and the bootstrap user.
//! - `restart`: partition replicas whose storage failed are dropped and opened again after a
//!   growing delay; the node serves everything else meanwhile.
//! - [`error`]: [`BrokerError`], what every request can fail with.
//!
//! What every frontend shares, so that none builds it again:
//! - [`records`]: records to a batch for produce, stored batches to records for reads.
//! - [`subscribe`]: subscriptions, paced by the consumer's credit.
//! - [`fetch`]: fetches and offset lookups by topic, partition and start.
//! - [`describe`]: a topic's partitions as this node sees them.

mod controller_client;
mod data_metrics;
pub mod describe;
pub mod error;
pub mod fetch;
mod groups_port;
pub mod lag;
mod membership;
mod produce;
mod producer_ids;
pub mod readiness;
mod reconcile;
pub mod records;
mod restart;
mod scrape;
pub mod security;
pub mod subscribe;
pub(crate) mod topics;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::controller::machine::Controller;
use crate::controller::metadata::{Metadata, TopicConfig};
pub use error::BrokerError;
pub use topics::{ConfigChanges, ConfigName};

use crate::clock::SharedClock;
use crate::groups::{GroupRequests, Groups};
use crate::partition::producers::SequenceError;
use crate::partition::{Fetched, PartitionReplica, StartFrom, group_id};
use crate::replication::{CONTROLLER, DriverHandle, GroupSpec, ProposeError, RaftGroupId};
use crate::storage::{LogConfig, PartitionLog};

/// Bytes of produced batches this node holds while they wait to commit (in the driver's queue,
/// raft's unstable log and the write path). Producers wait for room beyond it.
pub const PRODUCE_BYTES_IN_FLIGHT_MAX: usize = 256 << 20;
/// How long a produce waits for its batch to commit before it answers with a timeout.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Controller segments are small so that compaction after a snapshot frees space soon.
pub(super) const CONTROLLER_SEGMENT_BYTES: u64 = 64 << 10;
/// What [`Broker::start`] needs to know of this node.
pub struct Start {
    pub node_id: u64,
    /// The address other nodes and clients reach this node at.
    pub address: String,
    /// The address Kafka clients reach this node at, when it runs a Kafka listener.
    pub kafka_address: Option<String>,
    pub data_dir: PathBuf,
    /// The nodes of a new cluster (this one included), by id.
    pub cluster: BTreeMap<u64, String>,
    /// Make this node the controller's only voter first (`--force-new-cluster`).
    pub force_new_cluster: bool,
    /// The node's descriptor budget and disk reserve.
    pub resources: Arc<crate::resources::Resources>,
    /// Where the node reads the time of day.
    pub clock: SharedClock,
    /// The node's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The result of a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: u32,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// Which partition a produce goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Partition(u32),
    Key(Bytes),
    Any,
}

pub struct Broker {
    pub(crate) node_id: u64,
    address: String,
    /// See [`Start::kafka_address`].
    kafka_address: Option<String>,
    data_dir: PathBuf,
    driver: DriverHandle,
    pub(crate) metadata: Arc<RwLock<Metadata>>,
    metadata_changed: watch::Receiver<u64>,
    pub(crate) replicas: RwLock<HashMap<(String, u32), Arc<PartitionReplica>>>,
    configs: RwLock<HashMap<u64, Arc<RwLock<TopicConfig>>>>,
    pub(crate) controller_leader: watch::Receiver<u64>,
    /// The offset after the last controller entry applied here (see
    /// [`Broker::wait_for_metadata`]).
    controller_high_watermark: watch::Receiver<u64>,
    round_robin: AtomicU32,
    /// Serializes reconciliation: two passes at once would open one partition twice.
    reconciling: tokio::sync::Mutex<()>,
    /// Partition groups whose storage failed (the driver stopped them, or they could not be
    /// opened), until they run again; see `restart`.
    stopped: RwLock<HashMap<RaftGroupId, restart::Stopped>>,
    /// Where the driver and reconcile report a group that stopped. Unbounded, yet bounded by
    /// the number of partitions: a group reports once, then is out until opened again.
    stopped_groups: tokio::sync::mpsc::UnboundedSender<(RaftGroupId, String)>,
    /// Room for produced bytes waiting to commit, in KiB.
    produce_budget: Arc<tokio::sync::Semaphore>,
    /// Consumer groups: the coordinator's soft state (meaningful while this node leads the
    /// controller); served through [`Broker::groups`].
    groups: Arc<Groups>,
    /// Producer ids this node may hand out.
    pub(crate) producer_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    /// The nodes this one was started with (its own address included).
    pub(crate) cluster: BTreeMap<u64, String>,
    /// The descriptor budget (checked by topic creates) and the disk reserve (by produce).
    resources: Arc<crate::resources::Resources>,
    /// The time of day, for stamping commands and batches and for group expiry.
    pub(crate) clock: SharedClock,
    /// The node's metrics (see [`crate::metrics`]).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl Broker {
    /// Starts the controller group, waits until the metadata is loaded (see
    /// `Broker::wait_for_metadata`; `applied_at` asks another node how far it applied the
    /// controller's log), then opens the partitions this node holds.
    ///
    /// With `force_new_cluster`, first makes this node the controller's only voter (see
    /// [`force_alone`](crate::replication::raft_storage::force_alone)); once it leads, it
    /// records the removal of every other member in the controller's log, so a replay of that
    /// log ends with the same membership.
    ///
    /// # Errors
    /// Storage or raft errors while opening the controller.
    pub async fn start<F, Fut>(
        start: Start,
        driver: DriverHandle,
        applied_at: F,
    ) -> Result<Arc<Self>, BrokerError>
    where
        F: Fn(u64, String) -> Fut,
        Fut: Future<Output = Result<u64, String>>,
    {
        let Start {
            node_id,
            address,
            kafka_address,
            data_dir,
            cluster,
            force_new_cluster,
            resources,
            clock,
            metrics,
        } = start;
        let controller_dir = data_dir.join("controller");
        let log_config = LogConfig {
            segment_bytes_max: CONTROLLER_SEGMENT_BYTES,
            batch_bytes_max: CONTROLLER_SEGMENT_BYTES as usize,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&controller_dir, log_config).map_err(BrokerError::storage)?;
        let forced_out = if force_new_cluster {
            let members = crate::replication::raft_storage::force_alone(&log, node_id)
                .map_err(|e| BrokerError::Storage(e.to_string()))?;
            tracing::warn!(
                ?members,
                "--force-new-cluster: this node is now the controller's only voter"
            );
            members
                .into_iter()
                .filter(|member| *member != node_id)
                .collect()
        } else {
            Vec::new()
        };
        let metadata = Arc::new(RwLock::new(Metadata::default()));
        let (changed, metadata_changed) = watch::channel(0);
        let (controller, applied) = Controller::load(&controller_dir, metadata.clone(), changed)
            .map_err(BrokerError::Storage)?;
        let (high_watermark, controller_high_watermark) = watch::channel(0);
        let (leader, controller_leader) = watch::channel(0);
        let (in_sync, _) = watch::channel(Vec::new());
        let (stopped_groups, stopped_receiver) = tokio::sync::mpsc::unbounded_channel();
        driver
            .add_group(GroupSpec {
                id: CONTROLLER,
                log: Arc::new(RwLock::new(log)),
                voters: cluster.keys().copied().collect(),
                machine: controller,
                applied,
                replay_committed: true,
                high_watermark,
                leader,
                term: Default::default(),
                in_sync,
                preferred_leader: None,
                // The controller's state lives in memory beside its log: reopening it means
                // reloading the node, so its failure is only reported (see `restart`).
                stopped: Some(stopped_groups.clone()),
            })
            .await
            .map_err(BrokerError::Storage)?;
        let broker = Arc::new(Self {
            node_id,
            address,
            kafka_address,
            data_dir,
            driver,
            metadata,
            metadata_changed,
            replicas: RwLock::new(HashMap::new()),
            configs: RwLock::new(HashMap::new()),
            controller_leader,
            controller_high_watermark,
            round_robin: AtomicU32::new(0),
            reconciling: tokio::sync::Mutex::new(()),
            stopped: RwLock::new(HashMap::new()),
            stopped_groups,
            produce_budget: Arc::new(tokio::sync::Semaphore::new(
                PRODUCE_BYTES_IN_FLIGHT_MAX >> 10,
            )),
            groups: Arc::new(Groups::default()),
            producer_ids: tokio::sync::Mutex::new(0..0),
            cluster,
            resources,
            clock,
            metrics,
        });
        broker.wait_for_controller().await?;
        tracing::debug!("controller has a leader");
        for member in forced_out {
            broker
                .change_controller_membership(raft::prelude::ConfChangeType::RemoveNode, member)
                .await?;
        }
        broker.wait_for_metadata(applied_at).await?;
        tracing::debug!("metadata loaded");
        broker.reconcile().await?;
        tracing::debug!("partitions reconciled");
        tokio::spawn(Self::reconcile_on_change(Arc::downgrade(&broker)));
        tokio::spawn(Self::restart_stopped(
            Arc::downgrade(&broker),
            stopped_receiver,
        ));
        tokio::spawn(Groups::run_expiry(
            Arc::downgrade(&broker.groups),
            Arc::downgrade(&broker),
        ));
        tokio::spawn(Self::register_nodes(Arc::downgrade(&broker)));
        Ok(broker)
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The node's data directory (capture spools files for a bucket under it).
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The address Kafka clients reach this node at, when it runs a Kafka listener.
    pub fn kafka_address(&self) -> Option<&str> {
        self.kafka_address.as_deref()
    }

    /// Consumer groups' requests (join, heartbeat, offsets, ...), served by this node's
    /// [`Groups`] with the broker as their [`ControllerPort`](crate::groups::ControllerPort).
    pub fn groups(&self) -> GroupRequests<'_, Self> {
        self.groups.serve(self)
    }

    /// Ticks whenever the metadata changes.
    pub fn metadata_changes(&self) -> watch::Receiver<u64> {
        self.metadata_changed.clone()
    }

    fn propose_error(&self, error: ProposeError<SequenceError>) -> BrokerError {
        propose_error(&self.metadata, error)
    }

    /// [`Broker::propose_error`] for the controller's group: a refusal names the controller's
    /// leader (not a partition's), with its address from the metadata, or from the initial
    /// cluster while the metadata does not have it yet.
    pub(crate) fn controller_error(&self, error: ProposeError) -> BrokerError {
        match error {
            ProposeError::NotLeader { leader_id: 0 } => BrokerError::Unavailable(
                "the cluster's controller has no leader right now (an election is running): \
                 retry shortly"
                    .to_string(),
            ),
            ProposeError::NotLeader { leader_id } => {
                let address = self.node_address(leader_id);
                BrokerError::NotControllerLeader { leader_id, address }
            }
            other => self.propose_error(other.map_refusal(|never| match never {})),
        }
    }

    /// A snapshot of the metadata.
    pub fn metadata(&self) -> Metadata {
        self.metadata
            .read()
            .expect("metadata lock poisoned")
            .clone()
    }

    pub fn controller_leader(&self) -> u64 {
        *self.controller_leader.borrow()
    }

    /// The local replica of a partition.
    ///
    /// # Errors
    /// Unknown topic or partition; [`BrokerError::NotLeader`] when another node holds it.
    pub fn replica(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionReplica>, BrokerError> {
        let known = self.check_partition(topic, partition)?;
        self.replicas
            .read()
            .expect("lock")
            .get(&(topic.to_string(), partition))
            .cloned()
            .ok_or_else(|| {
                let group = group_id(known.id, partition);
                if let Some(reason) = self.stopped_reason(group) {
                    return self.propose_error(ProposeError::Stopped(reason));
                }
                let replicas = &known.replicas[partition as usize];
                match missing_replica(self.node_id, replicas) {
                    MissingReplica::Elsewhere(leader_id) => {
                        self.propose_error(ProposeError::NotLeader { leader_id })
                    }
                    MissingReplica::NotOpenHere => BrokerError::Unavailable(format!(
                        "partition {topic}/{partition} is placed on this node but is not open \
                         here (it is being opened, or opening it failed: see this node's log): \
                         retry shortly"
                    )),
                }
            })
    }

    /// Where a read of a local replica starts; see [`PartitionReplica::resolve`].
    pub fn resolve(
        &self,
        replica: &PartitionReplica,
        start: StartFrom,
    ) -> Result<u64, BrokerError> {
        Ok(replica.resolve(start)?)
    }

    /// A long-poll read of a local replica; see [`PartitionReplica::fetch`].
    pub async fn fetch(
        &self,
        replica: &PartitionReplica,
        offset: u64,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched, BrokerError> {
        Ok(replica
            .fetch(offset, max_bytes, min_bytes, max_wait)
            .await?)
    }

    /// A read of a local replica that does not wait; see [`PartitionReplica::read`].
    pub fn read(
        &self,
        replica: &PartitionReplica,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Fetched, BrokerError> {
        Ok(replica.read(offset, max_bytes)?)
    }
}

/// Why a partition this node was asked about has no local replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingReplica {
    /// Another node holds it: the first of its replicas, which leads when it can.
    Elsewhere(u64),
    /// It is placed on this node, but its log is not open (being opened, or opening failed,
    /// e.g. on a full disk). Pointing the client at "the leader" would name this node itself.
    NotOpenHere,
}

fn missing_replica(node_id: u64, replicas: &[u64]) -> MissingReplica {
    match replicas.first() {
        _ if replicas.contains(&node_id) => MissingReplica::NotOpenHere,
        Some(first) => MissingReplica::Elsewhere(*first),
        // Placement never makes an empty replica set; treat one like a partition not open.
        None => MissingReplica::NotOpenHere,
    }
}

fn propose_error(metadata: &RwLock<Metadata>, error: ProposeError<SequenceError>) -> BrokerError {
    match error {
        ProposeError::NotLeader { leader_id: 0 } => BrokerError::Unavailable(
            "no leader is known right now (an election is running): retry shortly".to_string(),
        ),
        ProposeError::NotLeader { leader_id } => {
            let address = metadata
                .read()
                .expect("metadata lock poisoned")
                .nodes
                .get(&leader_id)
                .map(|node| node.address.clone());
            BrokerError::NotLeader { leader_id, address }
        }
        ProposeError::UnknownGroup => {
            BrokerError::Unavailable("the partition is not open on this node".to_string())
        }
        ProposeError::Overloaded => BrokerError::Unavailable(error.to_string()),
        ProposeError::ShuttingDown => BrokerError::ShuttingDown,
        ProposeError::Dropped(reason) => BrokerError::Unavailable(reason),
        ProposeError::Stopped(_) => BrokerError::Unavailable(error.to_string()),
        ProposeError::Refused(SequenceError::OutOfOrder {
            producer_id,
            expected,
            got,
        }) => BrokerError::OutOfOrderSequence {
            producer_id,
            expected,
            got,
        },
        ProposeError::Refused(error @ SequenceError::StaleEpoch { .. }) => {
            BrokerError::InvalidProducerEpoch(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage;

    /// A partition placed on this node but not open (its log could not be created, e.g. on a
    /// full disk) is "not open here", never "not leader, the leader is this node".
    #[test]
    fn a_partition_placed_here_but_not_open_does_not_name_this_node_as_leader() {
        assert_eq!(missing_replica(1, &[1]), MissingReplica::NotOpenHere);
        assert_eq!(missing_replica(2, &[1, 2, 3]), MissingReplica::NotOpenHere);
        assert_eq!(missing_replica(1, &[]), MissingReplica::NotOpenHere);
        assert_eq!(missing_replica(4, &[3, 1, 2]), MissingReplica::Elsewhere(3));
    }

    /// A storage failure while a topic's partition is created maps to STORAGE-class errors
    /// with the cause, not to a leadership answer.
    #[test]
    fn a_storage_failure_is_a_storage_error() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let error = BrokerError::storage(storage::Error::Io {
            operation: "creating",
            path: PathBuf::from("/data/topics/1-t/00000"),
            source: io,
        });
        assert!(matches!(error, BrokerError::Storage(_)), "{error:?}");
        assert!(error.to_string().contains("No space left"), "{error}");
    }
}
