//! The driver's async side: raft group ids ([`RaftGroupId`], the [`CONTROLLER`]'s),
//! [`DriverHandle`], through which the broker adds and removes groups, proposes, changes
//! membership and steps peers' messages; the commands it queues for the
//! driver thread; what a new group needs ([`GroupSpec`]); and the typed answers
//! ([`Committed`], [`ProposeError`]) a caller gets back. The [`Outbox`] is the other way out of
//! the driver: raft messages for other nodes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::prelude::{ConfChange, Message};
use tokio::sync::{oneshot, watch};

use super::machine::{AnyMachine, Erased, StateMachine};
use crate::storage::PartitionLog;

/// Identifies a raft group on this node: 0 is the controller, a partition's is
/// `partition::group_id(topic_id, partition)`. In this crate "group" alone is a consumer group;
/// a raft group is always named by this type.
pub type RaftGroupId = u64;

/// The controller's group: never quiet (its heartbeats keep every node's liveness fresh), and
/// it hears from any node (its joining nodes are in its metadata, which this layer does not see).
pub const CONTROLLER: RaftGroupId = 0;

/// Most commands waiting for the driver; past this, callers get [`ProposeError::Overloaded`].
pub const COMMAND_QUEUE_MAX: usize = 8192;

/// Where raft messages for other nodes go (the node-to-node transport). Called on the driver
/// thread: it must not block (drop the message when a queue is full; raft sends again).
pub trait Outbox: Send + Sync {
    fn send(&self, to: u64, group: RaftGroupId, message: Message);

    /// Whether `node` was heard from recently (any traffic); quiet groups rely on it to
    /// notice a dead leader.
    fn alive(&self, _node: u64) -> bool {
        true
    }
}

/// An outbox for a node alone: there is nobody to send to.
pub struct NoPeers;

impl Outbox for NoPeers {
    fn send(&self, to: u64, group: RaftGroupId, message: Message) {
        tracing::debug!(group, to, kind = ?message.msg_type, "no transport to peer");
    }
}

/// A committed proposal, with what applying it told the proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    pub raft_index: u64,
    /// The offset after the entry: its last offset plus one.
    pub next_offset: u64,
    /// The machine's outcome of applying the entry (its `StateMachine::Outcome`).
    pub outcome: T,
}

/// The answer to a proposal to a group whose machine is an `M`.
pub type Proposed<M> =
    Result<Committed<<M as StateMachine>::Outcome>, ProposeError<<M as StateMachine>::Refusal>>;

/// What a committed membership change tells its proposer: `Err` with the reason when this node
/// could not apply it (its raft state file could not be written, or the change did not parse).
/// The reason is for people; nobody matches it.
pub type ConfChangeOutcome = Result<(), String>;

/// Why a proposal did not commit. `R` is the machine's refusal at admission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError<R = Infallible> {
    #[error("this node does not lead the group (leader: {leader_id})")]
    NotLeader { leader_id: u64 },
    #[error("no such raft group on this node")]
    UnknownGroup,
    #[error("the node is overloaded: {COMMAND_QUEUE_MAX} commands are waiting")]
    Overloaded,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("raft dropped the proposal: {0}")]
    Dropped(String),
    /// The group's storage failed on this node, which stopped the group (and only it).
    #[error("the partition's replica on this node is stopped: {0}")]
    Stopped(String),
    /// The group's machine refused the proposal before it entered the log.
    #[error("{0}")]
    Refused(R),
}

impl<R> ProposeError<R> {
    /// The same error with its refusal mapped by `f`.
    pub fn map_refusal<S>(self, f: impl FnOnce(R) -> S) -> ProposeError<S> {
        self.try_map_refusal(|refusal| Some(f(refusal)))
    }

    /// The same error with its refusal mapped by `f`; a refusal `f` cannot map becomes
    /// [`ProposeError::UnknownGroup`] (see [`typed`]).
    pub(super) fn try_map_refusal<S>(self, f: impl FnOnce(R) -> Option<S>) -> ProposeError<S> {
        match self {
            Self::NotLeader { leader_id } => ProposeError::NotLeader { leader_id },
            Self::UnknownGroup => ProposeError::UnknownGroup,
            Self::Overloaded => ProposeError::Overloaded,
            Self::ShuttingDown => ProposeError::ShuttingDown,
            Self::Dropped(reason) => ProposeError::Dropped(reason),
            Self::Stopped(reason) => ProposeError::Stopped(reason),
            Self::Refused(refusal) => f(refusal).map_or(ProposeError::UnknownGroup, |refusal| {
                ProposeError::Refused(refusal)
            }),
        }
    }
}

/// What a new group needs; `M` is its state machine.
pub struct GroupSpec<M> {
    pub id: RaftGroupId,
    pub log: Arc<RwLock<PartitionLog>>,
    /// Voters of a group created now; ignored when its state file exists.
    pub voters: Vec<u64>,
    pub machine: M,
    /// Raft index the machine has already applied (its snapshot's), 0 to replay the log.
    pub applied: u64,
    /// Whether raft must apply entries through the machine after a restart (true for the
    /// controller, whose state lives in memory) or may take everything committed as applied
    /// (partitions, whose state is the log).
    pub replay_committed: bool,
    /// High watermark updates (the offset after the last committed entry).
    pub high_watermark: watch::Sender<u64>,
    /// Leader updates (0: unknown).
    pub leader: watch::Sender<u64>,
    /// The group's raft term as this node last knew it (Kafka's leader epoch); written by the
    /// driver, read by anyone.
    pub term: Arc<AtomicU64>,
    /// While this node leads: the voters whose log holds everything committed.
    pub in_sync: watch::Sender<Vec<u64>>,
    /// The node that should lead when it is caught up (leaders spread evenly); `None` to let
    /// elections decide.
    pub preferred_leader: Option<u64>,
    /// Told the group's id and the reason when its storage failed and the driver stopped the
    /// group (see `Driver::stop_group`); the owner may reopen its log and add it again.
    pub stopped: Option<tokio::sync::mpsc::UnboundedSender<(RaftGroupId, String)>>,
}

/// A group spec whose machine's type is erased, as the driver keeps it.
pub(crate) type ErasedSpec = GroupSpec<Box<dyn AnyMachine>>;

impl<M: StateMachine> GroupSpec<M> {
    /// The spec with its machine boxed behind [`AnyMachine`].
    pub(super) fn erase(self) -> ErasedSpec {
        GroupSpec {
            id: self.id,
            log: self.log,
            voters: self.voters,
            machine: Box::new(self.machine),
            applied: self.applied,
            replay_committed: self.replay_committed,
            high_watermark: self.high_watermark,
            leader: self.leader,
            term: self.term,
            in_sync: self.in_sync,
            preferred_leader: self.preferred_leader,
            stopped: self.stopped,
        }
    }
}

/// A proposal's result with the machine's types erased, as the driver sends it back.
pub(crate) type ErasedResult = Result<Committed<Erased>, ProposeError<Erased>>;

/// Gives an erased result its types back: `O` and `R` are the outcome and refusal types of the
/// machine (or the conf change) the proposal went to.
///
/// A value of another type means the group was replaced, since the proposal was sent, by a
/// group of another machine type under the same id; it is answered as
/// [`ProposeError::UnknownGroup`] (no group of the caller's type), never a panic.
pub(crate) fn typed<O, R>(result: ErasedResult) -> Result<Committed<O>, ProposeError<R>>
where
    O: Clone + 'static,
    R: Clone + 'static,
{
    match result {
        Ok(committed) => match committed.outcome.downcast_ref::<O>() {
            Some(outcome) => Ok(Committed {
                raft_index: committed.raft_index,
                next_offset: committed.next_offset,
                outcome: outcome.clone(),
            }),
            None => Err(ProposeError::UnknownGroup),
        },
        Err(error) => Err(error.try_map_refusal(|refusal| refusal.downcast_ref::<R>().cloned())),
    }
}

/// Where the driver sends a proposal's result.
pub(crate) type Reply = oneshot::Sender<ErasedResult>;

/// What a [`DriverHandle`] asks of the driver thread (and the simulation, which plays the
/// handle's part, of its drivers).
pub(crate) enum Command {
    AddGroup(Box<ErasedSpec>, oneshot::Sender<Result<(), String>>),
    RemoveGroup(RaftGroupId, oneshot::Sender<()>),
    Propose {
        group: RaftGroupId,
        /// The entry's data, handed to raft as it is: no copy on the way to the log.
        data: Bytes,
        reply: Reply,
    },
    /// A raft membership change, answered once committed and applied (its outcome a
    /// [`ConfChangeOutcome`]).
    ProposeConfChange {
        group: RaftGroupId,
        change: ConfChange,
        reply: Reply,
    },
    /// Messages from another node, with the address of the stream they came on (for logs).
    Step(Vec<(RaftGroupId, Message)>, Arc<str>),
    /// The voters a group should have; its leader changes the membership to match.
    SetVoters(RaftGroupId, Vec<u64>),
    /// The voters of a group's applied configuration (`None`: no such group here).
    Voters(RaftGroupId, oneshot::Sender<Option<Vec<u64>>>),
    /// Whether a member's log holds everything the group committed (`None`: this node does not
    /// lead the group, so it cannot tell).
    CaughtUp(RaftGroupId, u64, oneshot::Sender<Option<bool>>),
    /// Hand every led group to another voter; reply when none is led here any more, or at the
    /// deadline.
    HandOver(Instant, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The async side of the driver.
#[derive(Clone)]
pub struct DriverHandle {
    commands: SyncSender<Command>,
    catch_up: Arc<CatchUp>,
}

impl DriverHandle {
    pub(super) fn new(commands: SyncSender<Command>, catch_up: Arc<CatchUp>) -> Self {
        Self { commands, catch_up }
    }

    /// Whether `group`'s replica here is a follower behind its leader, as of the driver's
    /// last tick (see [`super::catch_up`]).
    pub fn behind(&self, group: RaftGroupId) -> Option<Behind> {
        self.catch_up.behind(group)
    }

    fn send<R>(&self, command: Command) -> Result<(), ProposeError<R>> {
        self.commands
            .try_send(command)
            .map_err(|error| match error {
                TrySendError::Full(_) => ProposeError::Overloaded,
                TrySendError::Disconnected(_) => ProposeError::ShuttingDown,
            })
    }

    /// Proposes `data` to `group`, whose machine is an `M`, and waits until it commits (which
    /// includes the fsync of a quorum, here the local one).
    ///
    /// # Errors
    /// See [`ProposeError`]; a group of another machine type is [`ProposeError::UnknownGroup`].
    pub async fn propose<M: StateMachine>(
        &self,
        group: RaftGroupId,
        data: impl Into<Bytes>,
    ) -> Proposed<M> {
        self.submit::<M>(group, data.into())?.await
    }

    /// Queues a proposal now and returns a future of its commit. Proposals submitted one after
    /// another reach raft in that order, so a caller that submits in order (a produce stream)
    /// keeps its order in the log even while it waits for many commits at once.
    ///
    /// # Errors
    /// The driver's queue is full, or the driver stopped.
    pub fn submit<M: StateMachine>(
        &self,
        group: RaftGroupId,
        data: Bytes,
    ) -> Result<impl Future<Output = Proposed<M>> + Send + use<M>, ProposeError<M::Refusal>> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Propose { group, data, reply })?;
        Ok(async move {
            let result = receiver.await.map_err(|_| ProposeError::ShuttingDown)?;
            typed::<M::Outcome, M::Refusal>(result)
        })
    }

    /// Proposes a membership change of `group` and waits until it is committed and applied.
    ///
    /// # Errors
    /// See [`ProposeError`]; membership changes are never refused at admission.
    pub async fn propose_conf_change(
        &self,
        group: RaftGroupId,
        change: ConfChange,
    ) -> Result<Committed<ConfChangeOutcome>, ProposeError> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::ProposeConfChange {
            group,
            change,
            reply,
        })?;
        let result = receiver.await.map_err(|_| ProposeError::ShuttingDown)?;
        typed::<ConfChangeOutcome, Infallible>(result)
    }

    /// Sets the voters `group` should have (its replicas in the metadata). Its leader adds the
    /// missing ones, and once they have caught up removes the others, one change at a time,
    /// handing leadership over first when it is itself leaving.
    pub fn set_voters(&self, group: RaftGroupId, voters: Vec<u64>) {
        if let Err(error) = self.send::<Infallible>(Command::SetVoters(group, voters)) {
            tracing::warn!(group, %error, "could not pass a group's voters to the driver");
        }
    }

    /// The voters of `group`'s applied configuration on this node.
    pub async fn voters(&self, group: RaftGroupId) -> Option<Vec<u64>> {
        let (reply, receiver) = oneshot::channel();
        self.send::<Infallible>(Command::Voters(group, reply))
            .ok()?;
        receiver.await.ok()?
    }

    /// Whether `member`'s log holds everything `group` committed, as its leader sees it;
    /// `None` when this node does not lead the group (or is overloaded).
    pub async fn caught_up(&self, group: RaftGroupId, member: u64) -> Option<bool> {
        let (reply, receiver) = oneshot::channel();
        self.send::<Infallible>(Command::CaughtUp(group, member, reply))
            .ok()?;
        receiver.await.ok()?
    }

    /// Hands raft messages from other nodes to their groups; dropped when the driver is
    /// overloaded (raft sends again).
    pub fn step(&self, messages: Vec<(RaftGroupId, Message)>, peer: Arc<str>) {
        if let Err(error) = self.send::<Infallible>(Command::Step(messages, peer)) {
            tracing::debug!(%error, "dropping raft messages from a peer");
        }
    }

    /// Adds a group (or does nothing when one with its id runs here already).
    ///
    /// # Errors
    /// The group's raft state could not be opened, or the driver stopped.
    pub async fn add_group<M: StateMachine>(&self, spec: GroupSpec<M>) -> Result<(), String> {
        let (reply, receiver) = oneshot::channel();
        self.send::<Infallible>(Command::AddGroup(Box::new(spec.erase()), reply))
            .map_err(|e| e.to_string())?;
        receiver
            .await
            .map_err(|_| "the driver stopped".to_string())?
    }

    pub async fn remove_group(&self, group: RaftGroupId) {
        let (reply, receiver) = oneshot::channel();
        if self
            .send::<Infallible>(Command::RemoveGroup(group, reply))
            .is_ok()
        {
            let _ = receiver.await;
        }
    }

    /// Hands the leadership of every group this node leads to a caught-up voter (before a
    /// graceful stop, so a rolling restart costs no election timeout); returns once it has, or
    /// after `limit`.
    pub async fn hand_over_leadership(&self, limit: Duration) {
        let (reply, receiver) = oneshot::channel();
        if self
            .send::<Infallible>(Command::HandOver(Instant::now() + limit, reply))
            .is_ok()
        {
            let _ = receiver.await;
        }
    }

    /// Stops the driver after it has synced every log and written every raft state.
    pub async fn shutdown(&self) {
        let (reply, receiver) = oneshot::channel();
        if self.send::<Infallible>(Command::Shutdown(reply)).is_ok() {
            let _ = receiver.await;
        }
    }
}

/// A follower behind its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    /// The follower's commit index.
    pub committed: u64,
    /// The leader's commit index, as last heard.
    pub leader_commit: u64,
}

/// The groups of this node whose replica is behind its leader, as of the driver's last tick.
#[derive(Debug, Default)]
pub struct CatchUp {
    behind: RwLock<BTreeMap<RaftGroupId, Behind>>,
}

impl CatchUp {
    /// Whether `group`'s replica here is behind its leader, and by how much.
    pub fn behind(&self, group: RaftGroupId) -> Option<Behind> {
        self.behind
            .read()
            .expect("catch-up lock poisoned")
            .get(&group)
            .copied()
    }

    /// Sets whether one group is behind, at once: the driver calls it when a step changes
    /// that, so that `/readyz` never sees a replica's new leader before it sees the replica
    /// behind it (the leader becomes known in the same step).
    pub(super) fn set(&self, group: RaftGroupId, behind: Option<Behind>) {
        let mut board = self.behind.write().expect("catch-up lock poisoned");
        match behind {
            Some(behind) => board.insert(group, behind),
            None => board.remove(&group),
        };
    }

    /// Replaces the board, each tick (a write only when something changed: usually nothing is
    /// behind): the figures of groups still catching up, and groups that left.
    pub(super) fn publish(&self, behind: BTreeMap<RaftGroupId, Behind>) {
        if *self.behind.read().expect("catch-up lock poisoned") != behind {
            tracing::debug!(?behind, "followers behind their leader");
            *self.behind.write().expect("catch-up lock poisoned") = behind;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A typed outcome survives erasure; an outcome of another type is an unknown group, not a
    /// panic.
    #[test]
    fn erased_results_come_back_typed() {
        let committed = |outcome: Erased| Committed {
            raft_index: 7,
            next_offset: 9,
            outcome,
        };
        let back: Result<Committed<u32>, ProposeError<Infallible>> =
            typed(Ok(committed(Arc::new(5u32))));
        assert_eq!(
            back,
            Ok(Committed {
                raft_index: 7,
                next_offset: 9,
                outcome: 5
            })
        );
        let wrong: Result<Committed<String>, ProposeError<Infallible>> =
            typed(Ok(committed(Arc::new(5u32))));
        assert_eq!(wrong, Err(ProposeError::UnknownGroup));
        let refused: Result<Committed<()>, ProposeError<String>> =
            typed(Err(ProposeError::Refused(Arc::new("late".to_string()))));
        assert_eq!(refused, Err(ProposeError::Refused("late".to_string())));
        let other: Result<Committed<()>, ProposeError<String>> =
            typed(Err(ProposeError::NotLeader { leader_id: 3 }));
        assert_eq!(other, Err(ProposeError::NotLeader { leader_id: 3 }));
    }
}
