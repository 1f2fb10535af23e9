//! # Broker: topics, partitions and the requests on them
//!
//! - [`metadata`]: the controller's replicated metadata and its state machine.
//! - [`error`]: [`BrokerError`], what every request can fail with.
//! - `restart`: partition replicas whose storage failed are dropped and opened again after a
//!   growing delay; the node serves everything else meanwhile.
//! - this module: [`Broker`], which owns the local partitions, reconciles them with the
//!   metadata, and serves produce, fetch, offset lookups and admin changes. It knows nothing of
//!   gRPC: the service layer translates.

pub mod error;
pub mod metadata;
mod restart;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

pub use error::BrokerError;
use metadata::{Command, Controller, Metadata, Node, Topic, TopicConfig};

use crate::partition::producers::SequenceError;
use crate::partition::{
    BATCH_BYTES_MAX, Fetched, PartitionMachine, PartitionReplica, RetentionSource, StartFrom,
    group_id, topic_id_of,
};
use crate::replication::{DriverHandle, GroupId, GroupSpec, ProposeError};
use crate::storage::batch::BatchHeader;
use crate::storage::{self, LogConfig, PartitionLog, RetentionPolicy};

/// The controller's raft group.
pub const CONTROLLER_GROUP: GroupId = 0;
/// Bytes of produced batches this node holds while they wait to commit (in the driver's queue,
/// raft's unstable log and the write path). Producers wait for room beyond it.
pub const PRODUCE_BYTES_IN_FLIGHT_MAX: usize = 256 << 20;
/// How long a produce waits for its batch to commit before it answers with a timeout.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a starting node asks again whether its metadata has caught up.
const METADATA_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// How long a starting node waits for the controller's leader to answer how far it applied.
const METADATA_ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a starting node waits for its metadata to reach the leader's before asking again
/// (the leader may have changed).
const METADATA_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Controller segments are small so that compaction after a snapshot frees space soon.
const CONTROLLER_SEGMENT_BYTES: u64 = 64 << 10;
/// How long `AddNode` waits for a new node, added as a learner, to hold the controller's whole
/// committed log before it gives up and takes the node out again.
const ADD_NODE_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `AddNode` looks at the new node's progress meanwhile.
const ADD_NODE_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What [`Broker::start`] needs to know of this node.
pub struct Start {
    pub node_id: u64,
    /// The address other nodes and clients reach this node at.
    pub address: String,
    pub data_dir: PathBuf,
    /// The nodes of a new cluster (this one included), by id.
    pub cluster: BTreeMap<u64, String>,
    /// Make this node the controller's only voter first (`--force-new-cluster`).
    pub force_new_cluster: bool,
    /// The node's descriptor budget and disk reserve.
    pub resources: Arc<crate::resources::Resources>,
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
    stopped: RwLock<HashMap<GroupId, restart::Stopped>>,
    /// Where the driver and reconcile report a group that stopped. Unbounded, yet bounded by
    /// the number of partitions: a group reports once, then is out until opened again.
    stopped_groups: tokio::sync::mpsc::UnboundedSender<(GroupId, String)>,
    /// Room for produced bytes waiting to commit, in KiB.
    produce_budget: Arc<tokio::sync::Semaphore>,
    /// Consumer group membership (soft state; meaningful while this node leads the controller).
    pub(crate) coordinator: std::sync::Mutex<crate::groups::coordinator::Coordinator>,
    /// Producer ids this node may hand out.
    pub(crate) producer_ids: tokio::sync::Mutex<std::ops::Range<u64>>,
    /// The nodes this one was started with (its own address included).
    pub(crate) cluster: BTreeMap<u64, String>,
    /// The descriptor budget (checked by topic creates) and the disk reserve (by produce).
    resources: Arc<crate::resources::Resources>,
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
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<u64, String>>,
    {
        let Start {
            node_id,
            address,
            data_dir,
            cluster,
            force_new_cluster,
            resources,
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
                id: CONTROLLER_GROUP,
                log: Arc::new(RwLock::new(log)),
                voters: cluster.keys().copied().collect(),
                machine: Box::new(controller),
                applied,
                replay_committed: true,
                high_watermark,
                leader,
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
            coordinator: std::sync::Mutex::new(crate::groups::coordinator::Coordinator::default()),
            producer_ids: tokio::sync::Mutex::new(0..0),
            cluster,
            resources,
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
        tokio::spawn(Self::run_coordinator(Arc::downgrade(&broker)));
        tokio::spawn(Self::register_nodes(Arc::downgrade(&broker)));
        Ok(broker)
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Waits until the controller has a leader: at once alone, once a quorum of the cluster is
    /// up otherwise (however long that takes; the node serves its peers meanwhile).
    async fn wait_for_controller(&self) -> Result<(), BrokerError> {
        let mut leader = self.controller_leader.clone();
        loop {
            let wait = leader.wait_for(|leader| *leader != 0);
            match tokio::time::timeout(Duration::from_secs(10), wait).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(_)) => return Err(BrokerError::ShuttingDown),
                Err(_) => tracing::warn!(
                    nodes = ?self.cluster.keys().collect::<Vec<_>>(),
                    "waiting for the controller to elect a leader (a majority of the nodes must be up)"
                ),
            }
        }
    }

    /// The offset after the last controller entry this node has applied to its metadata.
    pub fn controller_high_watermark(&self) -> u64 {
        *self.controller_high_watermark.borrow()
    }

    /// Waits until this node's metadata is loaded; the node must not answer requests about
    /// topics before (it would call existing topics unknown). Loaded means: the metadata holds
    /// everything the controller had applied when this node asked. On the controller's leader
    /// its own registration is the barrier (it commits after every earlier entry); elsewhere
    /// `applied_at(address)` asks the leader for its [`Broker::controller_high_watermark`] and
    /// this node waits until its own reaches it. Knowing the leader is not enough: a restarted
    /// node learns who leads from the first heartbeat, before the entries it missed while down
    /// arrive.
    ///
    /// Retries (asking whoever leads then) until loaded.
    ///
    /// # Errors
    /// [`BrokerError::ShuttingDown`] when the driver stops first.
    async fn wait_for_metadata<F, Fut>(&self, applied_at: F) -> Result<(), BrokerError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<u64, String>>,
    {
        let mut retry = tokio::time::interval(METADATA_RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut attempts: u64 = 0;
        loop {
            retry.tick().await;
            attempts += 1;
            if attempts.is_multiple_of(40) {
                tracing::warn!(
                    attempts,
                    "still loading the metadata from the controller's leader"
                );
            }
            let leader = *self.controller_leader.borrow();
            if leader == self.node_id {
                match self.register_self().await {
                    Ok(()) => return Ok(()),
                    Err(BrokerError::ShuttingDown) => return Err(BrokerError::ShuttingDown),
                    Err(error) => {
                        tracing::debug!(%error, "the metadata barrier did not commit; retrying");
                        continue;
                    }
                }
            }
            let Some(address) = self.node_address(leader) else {
                continue;
            };
            let target = match tokio::time::timeout(METADATA_ASK_TIMEOUT, applied_at(address)).await
            {
                Ok(Ok(target)) => target,
                Ok(Err(error)) => {
                    tracing::debug!(leader, %error, "asking the controller's leader how far it applied failed");
                    continue;
                }
                Err(_) => continue,
            };
            let mut applied = self.controller_high_watermark.clone();
            let caught_up = applied.wait_for(|applied| *applied >= target);
            match tokio::time::timeout(METADATA_CATCH_UP_TIMEOUT, caught_up).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(_)) => return Err(BrokerError::ShuttingDown),
                Err(_) => tracing::warn!(
                    target,
                    applied = self.controller_high_watermark(),
                    "the metadata did not catch up with the controller's leader in time; asking again"
                ),
            }
        }
    }

    /// A node's address: from the metadata, else from the initial cluster; `None` for node 0
    /// (no leader) or a node known nowhere.
    fn node_address(&self, node: u64) -> Option<String> {
        if node == 0 {
            return None;
        }
        self.metadata
            .read()
            .expect("metadata lock poisoned")
            .nodes
            .get(&node)
            .map(|n| n.address.clone())
            .or_else(|| self.cluster.get(&node).cloned())
            .filter(|address| !address.is_empty())
    }

    /// On the controller's leader: registers every node of the initial cluster whose address
    /// the metadata lacks (a node that is not the leader cannot propose itself).
    async fn register_nodes(broker: std::sync::Weak<Self>) {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            if *broker.controller_leader.borrow() != broker.node_id {
                continue;
            }
            // Only members: a node removed from the cluster stays out.
            let members = broker.members().await;
            let missing: Vec<Node> = {
                let metadata = broker.metadata.read().expect("metadata lock poisoned");
                broker
                    .cluster
                    .iter()
                    .filter(|(id, address)| {
                        members.contains(id)
                            && metadata.nodes.get(id).map(|n| &n.address) != Some(*address)
                    })
                    .map(|(id, address)| Node {
                        id: *id,
                        address: address.clone(),
                    })
                    .collect()
            };
            for node in missing {
                if let Err(error) = broker.propose_metadata(Command::RegisterNode(node)).await {
                    tracing::debug!(%error, "registering a node failed; will retry");
                }
            }
        }
    }

    /// Adds node `node_id` at `address`: registers it, then makes it a voter of the controller
    /// (a raft conf change, committed before this returns). New topics may then use it.
    ///
    /// # Errors
    /// Invalid arguments, [`BrokerError::NotLeader`] off the controller's leader.
    pub async fn add_node(&self, node_id: u64, address: &str) -> Result<(), BrokerError> {
        if node_id == 0 {
            return Err(BrokerError::InvalidArgument(
                "node_id must be at least 1".to_string(),
            ));
        }
        if address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(BrokerError::InvalidArgument(format!(
                "address {address:?} is not HOST:PORT"
            )));
        }
        if let Some(known) = self.metadata().nodes.get(&node_id)
            && known.address != address
        {
            return Err(BrokerError::InvalidArgument(format!(
                "node {node_id} is already in the cluster at {}",
                known.address
            )));
        }
        self.propose_metadata(Command::RegisterNode(Node {
            id: node_id,
            address: address.to_string(),
        }))
        .await?;
        // A learner first: it receives the log but does not count toward the quorum, so a node
        // that never answers (or is not what it claimed) cannot cost the controller its quorum.
        // Only once it holds everything committed does it become a voter.
        use raft::prelude::ConfChangeType;
        self.change_controller_membership(ConfChangeType::AddLearnerNode, node_id)
            .await?;
        let deadline = tokio::time::Instant::now() + ADD_NODE_CATCH_UP_TIMEOUT;
        loop {
            match self.driver.caught_up(CONTROLLER_GROUP, node_id).await {
                Some(true) => {
                    return self
                        .change_controller_membership(ConfChangeType::AddNode, node_id)
                        .await;
                }
                Some(false) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(ADD_NODE_POLL_INTERVAL).await;
                }
                Some(false) => break,
                None => {
                    // Leadership moved: the node stays a learner (harmless to the quorum); an
                    // AddNode on the new leader promotes it or takes it out.
                    let leader_id = *self.controller_leader.borrow();
                    return Err(self.propose_error(ProposeError::NotLeader { leader_id }));
                }
            }
        }
        // Rolled back: out of the controller, then out of the metadata.
        self.change_controller_membership(ConfChangeType::RemoveNode, node_id)
            .await?;
        self.propose_metadata(Command::DeregisterNode { node: node_id })
            .await?;
        Err(BrokerError::Unavailable(format!(
            "node {node_id} did not catch up with the controller's log within {} s, so it was \
             not added (it had been added as a learner, and was taken out again): check that it \
             runs and reaches the other nodes, then add it again",
            ADD_NODE_CATCH_UP_TIMEOUT.as_secs()
        )))
    }

    /// Adds `node_id` to, or removes it from, the controller's voters; returns once committed
    /// and applied here.
    async fn change_controller_membership(
        &self,
        kind: raft::prelude::ConfChangeType,
        node_id: u64,
    ) -> Result<(), BrokerError> {
        let mut change = raft::prelude::ConfChange::default();
        change.set_change_type(kind);
        change.node_id = node_id;
        self.driver
            .propose_conf_change(CONTROLLER_GROUP, change)
            .await
            .map_err(|e| self.controller_error(e))?
            .outcome
            .map_err(BrokerError::Storage)
    }

    /// Moves every replica off node `node_id`, then removes it from the controller; see the
    /// proto's `Admin.RemoveNode`. `voters_at(address, groups)` asks another node for the
    /// applied voters of its groups (the service layer's peer client). Returns the partitions
    /// still moving and whether the node is gone.
    ///
    /// # Errors
    /// Invalid arguments (unknown node, too few nodes left), NOT_LEADER off the controller's
    /// leader.
    pub async fn remove_node<F, Fut>(
        &self,
        node_id: u64,
        voters_at: F,
    ) -> Result<(Vec<(String, u32)>, bool), BrokerError>
    where
        F: Fn(String, Vec<GroupId>) -> Fut,
        Fut: Future<Output = Result<Vec<(GroupId, Option<Vec<u64>>)>, String>>,
    {
        let leader = *self.controller_leader.borrow();
        if leader != self.node_id {
            return Err(self.controller_error(ProposeError::NotLeader { leader_id: leader }));
        }
        let metadata = self.metadata();
        let nodes = self.members().await;
        if !nodes.contains(&node_id) {
            return Err(BrokerError::InvalidArgument(format!(
                "node {node_id} is not in the cluster (nodes: {nodes:?})"
            )));
        }
        // Checked before anything moves: with one node there is nowhere to move its replicas
        // nor anyone to hand the controller to, so asking again could never succeed.
        if nodes.len() == 1 {
            return Err(BrokerError::InvalidArgument(format!(
                "node {node_id} is the cluster's only node: the last node cannot be removed \
                 (add another node first, or stop this one)"
            )));
        }
        if node_id == self.node_id {
            // The controller's leader cannot remove itself: move the leadership first.
            self.driver
                .hand_over_leadership(Duration::from_secs(2))
                .await;
            return Err(BrokerError::Unavailable(format!(
                "node {node_id} led the controller; its leadership is moving: call again"
            )));
        }
        let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != node_id).collect();
        // Replicas per node, to place moved ones on the least loaded.
        let mut load: HashMap<u64, usize> = others.iter().map(|n| (*n, 0)).collect();
        for topic in metadata.topics.values() {
            for replicas in &topic.replicas {
                for node in replicas {
                    *load.entry(*node).or_default() += 1;
                }
            }
        }
        for topic in metadata.topics.values() {
            for (partition, replicas) in topic.replicas.iter().enumerate() {
                let Some(at) = replicas.iter().position(|n| *n == node_id) else {
                    continue;
                };
                let Some(target) = others
                    .iter()
                    .filter(|n| !replicas.contains(n))
                    .min_by_key(|n| (load[*n], **n))
                    .copied()
                else {
                    return Err(BrokerError::InvalidArgument(format!(
                        "cannot move {}/{partition} off node {node_id}: every other node already \
                         holds a replica of it (add a node first)",
                        topic.name
                    )));
                };
                *load.entry(target).or_default() += 1;
                let mut moved = replicas.clone();
                moved[at] = target;
                self.propose_metadata(Command::ReassignReplicas {
                    name: topic.name.clone(),
                    partition: partition as u32,
                    replicas: moved,
                })
                .await?;
            }
        }
        self.reconcile().await?;
        // Still moving: partitions where some replica of the new set has not applied exactly
        // the new set as the group's voters. Every replica is asked: a replica that was just
        // added starts out with the new set as its own guess, so only the replicas that were
        // members before prove that the change committed.
        let metadata = self.metadata();
        let mut asked: BTreeMap<u64, Vec<GroupId>> = BTreeMap::new();
        let mut wanted: Vec<(String, u32, GroupId, Vec<u64>)> = Vec::new();
        for topic in metadata.topics.values() {
            for (partition, replicas) in topic.replicas.iter().enumerate() {
                let group = group_id(topic.id, partition as u32);
                let mut voters = replicas.clone();
                voters.sort_unstable();
                for node in replicas {
                    asked.entry(*node).or_default().push(group);
                }
                wanted.push((topic.name.clone(), partition as u32, group, voters));
            }
        }
        let mut answers: HashMap<(u64, GroupId), Option<Vec<u64>>> = HashMap::new();
        for (node, groups) in asked {
            if node == self.node_id {
                for group in groups {
                    answers.insert((node, group), self.driver.voters(group).await);
                }
                continue;
            }
            let address = metadata
                .nodes
                .get(&node)
                .map(|n| n.address.clone())
                .or_else(|| self.cluster.get(&node).cloned())
                .unwrap_or_default();
            match voters_at(address, groups).await {
                Ok(replies) => {
                    for (group, voters) in replies {
                        answers.insert((node, group), voters);
                    }
                }
                Err(error) => {
                    tracing::debug!(node, %error, "asking a node for its groups' voters failed");
                }
            }
        }
        let mut moving = Vec::new();
        for (name, partition, group, voters) in wanted {
            let done = voters.iter().all(|node| {
                answers
                    .get(&(*node, group))
                    .and_then(Option::as_ref)
                    .is_some_and(|applied| *applied == voters)
            });
            if !done {
                moving.push((name, partition));
            }
        }
        if !moving.is_empty() {
            return Ok((moving, false));
        }
        // Every replica has moved: the node leaves the controller and the metadata.
        if self
            .driver
            .voters(CONTROLLER_GROUP)
            .await
            .is_some_and(|voters| voters.contains(&node_id))
        {
            self.change_controller_membership(raft::prelude::ConfChangeType::RemoveNode, node_id)
                .await?;
        }
        if self.metadata().nodes.contains_key(&node_id) {
            self.propose_metadata(Command::DeregisterNode { node: node_id })
                .await?;
        }
        Ok((Vec::new(), true))
    }

    /// The cluster's members: the controller's voters (the initial cluster, plus nodes added,
    /// minus nodes removed), sorted.
    async fn members(&self) -> Vec<u64> {
        let mut voters = self
            .driver
            .voters(CONTROLLER_GROUP)
            .await
            .unwrap_or_else(|| vec![self.node_id]);
        voters.sort_unstable();
        voters
    }

    /// Ticks whenever the metadata changes.
    pub fn metadata_changes(&self) -> watch::Receiver<u64> {
        self.metadata_changed.clone()
    }

    /// Registers this node's address. Always proposed, even when the metadata already has it:
    /// its commit is also the barrier after which every entry replayed at startup is applied,
    /// so the first reconcile sees the whole metadata before the node starts serving.
    async fn register_self(&self) -> Result<(), BrokerError> {
        self.propose_metadata(Command::RegisterNode(Node {
            id: self.node_id,
            address: self.address.clone(),
        }))
        .await
    }

    async fn reconcile_on_change(broker: std::sync::Weak<Self>) {
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
    async fn reconcile(&self) -> Result<(), BrokerError> {
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
                *config.write().expect("config lock poisoned") = topic.config;
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
            .or_insert_with(|| Arc::new(RwLock::new(topic.config)))
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
                machine: Box::new(PartitionMachine::new(config, log.clone())),
                applied: 0,
                replay_committed: false,
                high_watermark: high_watermark_tx,
                leader: leader_tx,
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
            in_sync,
        };
        self.replicas
            .write()
            .expect("lock")
            .insert((topic.name.clone(), partition), Arc::new(replica));
        self.stopped.write().expect("lock").remove(&group);
        Ok(())
    }

    pub(crate) async fn propose_metadata(&self, command: Command) -> Result<(), BrokerError> {
        let batch = command.to_batch(crate::now_ms());
        // The controller's log refuses a batch beyond its limit, which raft would take as a
        // storage failure: refuse it here instead.
        if batch.len() > CONTROLLER_SEGMENT_BYTES as usize {
            return Err(BrokerError::InvalidArgument(format!(
                "the change for {} is {} bytes encoded, more than the controller takes in one \
                 change ({CONTROLLER_SEGMENT_BYTES} bytes)",
                command_subject(&command),
                batch.len()
            )));
        }
        let committed = self
            .driver
            .propose(CONTROLLER_GROUP, batch)
            .await
            .map_err(|e| self.controller_error(e))?;
        // Wait until this node has applied it (it has: the proposer applies before replying).
        committed.outcome.map_err(|reason| match reason.as_str() {
            metadata::TOPIC_EXISTS => BrokerError::TopicExists(command_subject(&command)),
            metadata::TOPIC_MISSING => BrokerError::UnknownTopic(command_subject(&command)),
            metadata::GROUP_MISSING => BrokerError::UnknownGroup(command_subject(&command)),
            metadata::OFFSETS_RESET => BrokerError::StaleMemberEpoch(format!(
                "the offsets of group {:?} were reset after this member's last heartbeat: \
                 heartbeat, then continue from the new committed offsets",
                command_subject(&command)
            )),
            _ => BrokerError::Storage(reason),
        })
    }

    fn propose_error(&self, error: ProposeError) -> BrokerError {
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
                let address = self
                    .metadata
                    .read()
                    .expect("metadata lock poisoned")
                    .nodes
                    .get(&leader_id)
                    .map(|node| node.address.clone())
                    .or_else(|| self.cluster.get(&leader_id).cloned())
                    .filter(|address| !address.is_empty());
                BrokerError::NotControllerLeader { leader_id, address }
            }
            other => self.propose_error(other),
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
            now_ms: crate::now_ms(),
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

    fn local_replicas(&self, name: &str) -> Vec<Arc<PartitionReplica>> {
        self.replicas
            .read()
            .expect("lock")
            .values()
            .filter(|r| r.topic == name)
            .cloned()
            .collect()
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

    /// Appends a batch (already validated by [`validate_producer_batch`]) to a partition and
    /// waits until it is committed.
    pub async fn produce(
        &self,
        topic: &str,
        target: Target,
        batch: Vec<u8>,
    ) -> Result<Produced, BrokerError> {
        let permit = self.produce_permit(batch.len()).await?;
        self.start_produce(topic, target, batch, permit)?.await
    }

    /// Waits for room for `bytes` of produced data (see [`PRODUCE_BYTES_IN_FLIGHT_MAX`]).
    pub async fn produce_permit(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, BrokerError> {
        let kib = bytes
            .div_ceil(1024)
            .clamp(1, PRODUCE_BYTES_IN_FLIGHT_MAX >> 10) as u32;
        self.produce_budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| BrokerError::ShuttingDown)
    }

    /// Queues a batch for a partition now (in call order) and returns a future of its commit;
    /// see [`DriverHandle::submit`]. `permit` (from [`Broker::produce_permit`]) is held until
    /// the batch commits.
    pub fn start_produce(
        &self,
        topic: &str,
        target: Target,
        batch: Vec<u8>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<impl Future<Output = Result<Produced, BrokerError>> + Send + use<>, BrokerError>
    {
        let known = self.topic(topic)?;
        let partitions = known.partitions();
        let partition = match target {
            Target::Partition(partition) => partition,
            Target::Key(key) => strata_proto::partitioner::partition_for_key(&key, partitions),
            Target::Any => self.round_robin.fetch_add(1, Ordering::Relaxed) % partitions,
        };
        let replica = self.replica(topic, partition)?;
        let header =
            BatchHeader::parse(&batch).map_err(|e| BrokerError::CorruptBatch(e.to_string()))?;
        if header.producer_id >= 0 && !self.producer_id_known(header.producer_id) {
            // The controller's leader knows every id handed out; another node's copy of the
            // metadata may not have caught up with the newest block yet.
            return Err(if *self.controller_leader.borrow() == self.node_id {
                BrokerError::UnknownProducerId(header.producer_id)
            } else {
                BrokerError::Unavailable(format!(
                    "producer id {} is not in this node's metadata yet: retry",
                    header.producer_id
                ))
            });
        }
        // Last check before the batch is proposed: raft must never meet a full disk here.
        self.resources
            .disk
            .admit(self.node_id, "produce", batch.len() as u64)?;
        let count = header.offset_count();
        let committed = self
            .driver
            .submit(replica.group, batch)
            .map_err(|e| self.propose_error(e))?;
        let metadata = self.metadata.clone();
        Ok(async move {
            // The batch's bytes count against the budget until it has committed.
            let _permit = permit;
            let committed = tokio::time::timeout(PRODUCE_TIMEOUT, committed)
                .await
                .map_err(|_| {
                    BrokerError::Timeout(format!(
                        "the batch did not commit within {PRODUCE_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| propose_error(&metadata, e))?;
            committed.outcome.map_err(BrokerError::Storage)?;
            Ok(Produced {
                partition,
                base_offset: committed.next_offset - count,
                last_offset: committed.next_offset - 1,
            })
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

/// A topic's config, shared by its local partitions' machines, is where their retention
/// comes from (an alter changes it in place; see `Broker::reconcile`).
impl RetentionSource for RwLock<TopicConfig> {
    fn retention(&self) -> RetentionPolicy {
        self.read().expect("config lock poisoned").retention()
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

fn propose_error(metadata: &RwLock<Metadata>, error: ProposeError) -> BrokerError {
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
        ProposeError::Sequence(SequenceError::OutOfOrder {
            producer_id,
            expected,
            got,
        }) => BrokerError::OutOfOrderSequence {
            producer_id,
            expected,
            got,
        },
        ProposeError::Sequence(error @ SequenceError::StaleEpoch { .. }) => {
            BrokerError::InvalidProducerEpoch(error.to_string())
        }
    }
}

/// What a command is about, for its error messages.
fn command_subject(command: &Command) -> String {
    match command {
        Command::CreateTopic { name, .. }
        | Command::DeleteTopic { name }
        | Command::AlterTopic { name, .. } => name.clone(),
        Command::CommitOffsets { group, .. }
        | Command::ResetOffsets { group, .. }
        | Command::DeleteGroup { group } => group.clone(),
        Command::RegisterNode(node) => format!("node {}", node.id),
        Command::ReassignReplicas { name, .. } => name.clone(),
        Command::DeregisterNode { node } => format!("node {node}"),
        Command::AllocateProducerIds { node, .. } => format!("node {node}"),
    }
}

/// The config fields an alter request sets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
}

fn validate_config(config: &TopicConfig) -> Result<(), BrokerError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
