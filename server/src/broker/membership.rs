//! Cluster membership: which nodes the cluster has (the controller's voters) and their
//! addresses; adding a node (as a learner first, a voter once caught up) and removing one
//! (its replicas moved off first).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use super::{Broker, BrokerError};
use crate::controller::metadata::{Command, Metadata, Node};
use crate::partition::group_id;
use crate::replication::CONTROLLER;
use crate::replication::{ProposeError, RaftGroupId};

/// How long `AddNode` waits for a new node, added as a learner, to hold the controller's whole
/// committed log before it gives up and takes the node out again.
const ADD_NODE_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often `AddNode` looks at the new node's progress meanwhile.
const ADD_NODE_POLL_INTERVAL: Duration = Duration::from_millis(50);

impl Broker {
    /// A node's address: from the metadata, else from the initial cluster; `None` for node 0
    /// (no leader) or a node known nowhere.
    pub(crate) fn node_address(&self, node: u64) -> Option<String> {
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
    pub(super) async fn register_nodes(broker: std::sync::Weak<Self>) {
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
                        kafka_address: None,
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

    /// Keeps this node's Kafka listener address in the metadata (where every node's Metadata
    /// answers find it): checks every second and, when the metadata lacks it or has another,
    /// proposes [`Command::SetKafkaAddress`] on the controller's leader, itself or through
    /// `set_at` (node id, address, this node's id, its Kafka address), which asks the leader
    /// (only the leader proposes). Ends when the broker is dropped.
    pub async fn publish_kafka_address<F, Fut>(broker: std::sync::Weak<Self>, set_at: F)
    where
        F: Fn(u64, String, u64, Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let (known, registered) = {
                let metadata = broker.metadata.read().expect("metadata lock poisoned");
                let node = metadata.nodes.get(&broker.node_id);
                (
                    node.and_then(|node| node.kafka_address.clone()),
                    node.is_some(),
                )
            };
            if !registered || known == broker.kafka_address {
                continue;
            }
            let leader = *broker.controller_leader.borrow();
            let outcome = if leader == broker.node_id {
                broker
                    .propose_metadata(Command::SetKafkaAddress {
                        node: broker.node_id,
                        kafka_address: broker.kafka_address.clone(),
                    })
                    .await
                    .map_err(|e| e.to_string())
            } else if let Some(address) = broker.node_address(leader) {
                set_at(
                    leader,
                    address,
                    broker.node_id,
                    broker.kafka_address.clone(),
                )
                .await
            } else {
                continue;
            };
            if let Err(error) = outcome {
                tracing::debug!(%error, "recording this node's Kafka address failed; will retry");
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
            kafka_address: None,
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
            match self.driver.caught_up(CONTROLLER, node_id).await {
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
    pub(super) async fn change_controller_membership(
        &self,
        kind: raft::prelude::ConfChangeType,
        node_id: u64,
    ) -> Result<(), BrokerError> {
        let mut change = raft::prelude::ConfChange::default();
        change.set_change_type(kind);
        change.node_id = node_id;
        self.driver
            .propose_conf_change(CONTROLLER, change)
            .await
            .map_err(|e| self.controller_error(e))?
            .outcome
            .map_err(BrokerError::Storage)
    }

    /// Moves every replica off node `node_id`, then removes it from the controller; see the
    /// proto's `Admin.RemoveNode`. `voters_at(node, address, groups)` asks another node for the
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
        F: Fn(u64, String, Vec<RaftGroupId>) -> Fut,
        Fut: Future<Output = Result<Vec<(RaftGroupId, Option<Vec<u64>>)>, String>>,
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
        self.move_replicas_off(node_id, &nodes, &metadata).await?;
        self.reconcile().await?;
        let moving = self.still_moving(voters_at).await;
        if !moving.is_empty() {
            return Ok((moving, false));
        }
        // Every replica has moved: the node leaves the controller and the metadata.
        if self
            .driver
            .voters(CONTROLLER)
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

    /// Proposes a new replica set for every partition with a replica on `node_id`: that
    /// replica goes to the least loaded other member of `nodes` that holds none of it.
    ///
    /// # Errors
    /// [`BrokerError::InvalidArgument`] when every other node already holds a replica of a
    /// partition; the controller's errors.
    async fn move_replicas_off(
        &self,
        node_id: u64,
        nodes: &[u64],
        metadata: &Metadata,
    ) -> Result<(), BrokerError> {
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
        Ok(())
    }

    /// The partitions still moving after a removal: those where some replica of the new set
    /// has not applied exactly the new set as its group's voters. `voters_at(node, address, groups)`
    /// asks another node; a node that does not answer counts as not done.
    async fn still_moving<F, Fut>(&self, voters_at: F) -> Vec<(String, u32)>
    where
        F: Fn(u64, String, Vec<RaftGroupId>) -> Fut,
        Fut: Future<Output = Result<Vec<(RaftGroupId, Option<Vec<u64>>)>, String>>,
    {
        // Every replica is asked: a replica that was just added starts out with the new set as
        // its own guess, so only the replicas that were members before prove that the change
        // committed.
        let metadata = self.metadata();
        let mut asked: BTreeMap<u64, Vec<RaftGroupId>> = BTreeMap::new();
        let mut wanted: Vec<(String, u32, RaftGroupId, Vec<u64>)> = Vec::new();
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
        let mut answers: HashMap<(u64, RaftGroupId), Option<Vec<u64>>> = HashMap::new();
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
            match voters_at(node, address, groups).await {
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
        moving
    }

    /// The cluster's members: the controller's voters (the initial cluster, plus nodes added,
    /// minus nodes removed), sorted.
    pub(super) async fn members(&self) -> Vec<u64> {
        let mut voters = self
            .driver
            .voters(CONTROLLER)
            .await
            .unwrap_or_else(|| vec![self.node_id]);
        voters.sort_unstable();
        voters
    }
}
