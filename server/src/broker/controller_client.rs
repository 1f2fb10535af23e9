//! How this node talks to the controller's raft group: it waits for the controller to have a
//! leader and for the metadata to be loaded before serving, and proposes metadata commands,
//! turning the controller's refusals into [`BrokerError`]s.

use std::future::Future;
use std::time::Duration;

use super::{Broker, BrokerError, CONTROLLER_SEGMENT_BYTES};
use crate::controller::machine::Controller;
use crate::controller::metadata::{Command, CommandRefusal, Node};
use crate::replication::CONTROLLER;

/// How often a starting node asks again whether its metadata has caught up.
const METADATA_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// How long a starting node waits for the controller's leader to answer how far it applied.
const METADATA_ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a starting node waits for its metadata to reach the leader's before asking again
/// (the leader may have changed).
const METADATA_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

impl Broker {
    /// Waits until the controller has a leader: at once alone, once a quorum of the cluster is
    /// up otherwise (however long that takes; the node serves its peers meanwhile).
    pub(super) async fn wait_for_controller(&self) -> Result<(), BrokerError> {
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
    /// `applied_at(node, address)` asks the leader for its [`Broker::controller_high_watermark`] and
    /// this node waits until its own reaches it. Knowing the leader is not enough: a restarted
    /// node learns who leads from the first heartbeat, before the entries it missed while down
    /// arrive.
    ///
    /// Retries (asking whoever leads then) until loaded.
    ///
    /// # Errors
    /// [`BrokerError::ShuttingDown`] when the driver stops first.
    pub(super) async fn wait_for_metadata<F, Fut>(&self, applied_at: F) -> Result<(), BrokerError>
    where
        F: Fn(u64, String) -> Fut,
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
            let target = match tokio::time::timeout(
                METADATA_ASK_TIMEOUT,
                applied_at(leader, address),
            )
            .await
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

    /// Registers this node's address. Always proposed, even when the metadata already has it:
    /// its commit is also the barrier after which every entry replayed at startup is applied,
    /// so the first reconcile sees the whole metadata before the node starts serving.
    pub(super) async fn register_self(&self) -> Result<(), BrokerError> {
        self.propose_metadata(Command::RegisterNode(Node {
            id: self.node_id,
            address: self.address.clone(),
            kafka_address: None,
        }))
        .await
    }

    pub(crate) async fn propose_metadata(&self, command: Command) -> Result<(), BrokerError> {
        // Wait until this node has applied it (it has: the proposer applies before replying).
        self.propose_command(&command)
            .await?
            .map_err(|refusal| match refusal {
                CommandRefusal::TopicExists => BrokerError::TopicExists(command_subject(&command)),
                CommandRefusal::TopicMissing => {
                    BrokerError::UnknownTopic(command_subject(&command))
                }
                CommandRefusal::GroupMissing => {
                    BrokerError::UnknownGroup(command_subject(&command))
                }
                CommandRefusal::OffsetsReset => BrokerError::StaleMemberEpoch(format!(
                    "the offsets of group {:?} were reset after this member's last heartbeat: \
                     heartbeat, then continue from the new committed offsets",
                    command_subject(&command)
                )),
                CommandRefusal::UserExists => BrokerError::UserExists(command_subject(&command)),
                CommandRefusal::UserMissing => BrokerError::UnknownUser(command_subject(&command)),
                CommandRefusal::Invalid(reason) => BrokerError::InvalidArgument(reason),
                refusal @ (CommandRefusal::ProducerIdsTaken
                | CommandRefusal::Undecodable(_)
                | CommandRefusal::UsersExist
                | CommandRefusal::CaptureMoved(_)) => BrokerError::Storage(refusal.to_string()),
            })
    }

    /// Proposes `command` to the controller and waits until it is committed and applied here;
    /// returns the controller's refusal, if it refused the command.
    pub(crate) async fn propose_command(
        &self,
        command: &Command,
    ) -> Result<Result<(), CommandRefusal>, BrokerError> {
        let batch = command.to_batch(self.clock.now_ms());
        // The controller's log refuses a batch beyond its limit, which raft would take as a
        // storage failure: refuse it here instead.
        if batch.len() > CONTROLLER_SEGMENT_BYTES as usize {
            return Err(BrokerError::InvalidArgument(format!(
                "the change for {} is {} bytes encoded, more than the controller takes in one \
                 change ({CONTROLLER_SEGMENT_BYTES} bytes)",
                command_subject(command),
                batch.len()
            )));
        }
        let committed = self
            .driver
            .propose::<Controller>(CONTROLLER, batch)
            .await
            .map_err(|e| self.controller_error(e))?;
        Ok(committed.outcome)
    }
}

/// What a command is about, for its error messages.
fn command_subject(command: &Command) -> String {
    match command {
        Command::CreateTopic { name, .. }
        | Command::DeleteTopic { name }
        | Command::AlterTopic { name, .. }
        | Command::AddPartitions { name, .. } => name.clone(),
        Command::CommitOffsets { group, .. }
        | Command::ResetOffsets { group, .. }
        | Command::DeleteGroup { group } => group.clone(),
        Command::RegisterNode(node) => format!("node {}", node.id),
        Command::ReassignReplicas { name, .. } => name.clone(),
        Command::CaptureWindowOpen {
            topic, partition, ..
        }
        | Command::CaptureWindowDone {
            topic, partition, ..
        } => format!("{topic}/{partition}"),
        Command::DeregisterNode { node } | Command::SetKafkaAddress { node, .. } => {
            format!("node {node}")
        }
        Command::AllocateProducerIds { node, .. } => format!("node {node}"),
        Command::PutUser { name, .. } | Command::DeleteUser { name } => name.clone(),
        Command::CreateAcls { acls } | Command::DeleteAcls { acls } => {
            format!("{} ACLs", acls.len())
        }
    }
}
