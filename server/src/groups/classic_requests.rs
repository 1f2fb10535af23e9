//! The requests of Kafka's classic group protocol, served on the controller's leader: the
//! [`classic`](super::classic) state machine behind [`Groups`](super::Groups)' lock, with the
//! waits of join and sync as async waits with deadlines, and commits of classic members
//! checked against the classic generation and stored like every commit (same high-watermark
//! check, same replicated store).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::classic::{ClassicError, CommitFrom, GroupView, JoinRequest, JoinResponse};
use super::offsets::ReplicaOffsets;
use super::{ControllerPort, GroupRequests};
use crate::controller::metadata::OffsetEntry;

/// How much longer than its group's rebalance timeout a join waits before it answers
/// REBALANCE_IN_PROGRESS (the client joins again): the expiry loop completes a rebalance at
/// its deadline within one of its ticks, and this leaves room for that.
const JOIN_WAIT_MARGIN: Duration = Duration::from_secs(5);
/// How long a sync waits for the leader's assignment, at most, beyond the member's session
/// timeout (by then the leader's session expired, which answers the sync anyway).
const SYNC_WAIT_MARGIN: Duration = Duration::from_secs(5);

/// Why a classic request failed: the node's error (not the coordinator, unavailable, a
/// commit's storage) or the protocol's own refusal.
#[derive(Debug)]
pub enum ClassicFailure<E> {
    Node(E),
    Group(ClassicError),
}

impl<E: std::fmt::Display> std::fmt::Display for ClassicFailure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(error) => error.fmt(f),
            Self::Group(error) => error.fmt(f),
        }
    }
}

impl<E> From<ClassicError> for ClassicFailure<E> {
    fn from(error: ClassicError) -> Self {
        Self::Group(error)
    }
}

impl<P: ControllerPort> GroupRequests<'_, P> {
    fn classic_coordinator(&self, group: &str) -> Result<(), ClassicFailure<P::Error>> {
        super::validate_group_id(group).map_err(|e| ClassicFailure::Node(e.into()))?;
        self.ensure_coordinator().map_err(ClassicFailure::Node)
    }

    /// The failure of a wait whose answer was dropped: the node stopped coordinating (its
    /// groups were cleared), else the member is gone.
    fn wait_dropped(&self, group: &str) -> ClassicFailure<P::Error> {
        match self.ensure_coordinator() {
            Err(error) => ClassicFailure::Node(error),
            Ok(()) => ClassicFailure::Group(ClassicError::UnknownMember(format!(
                "the member left group {group:?} while its request waited"
            ))),
        }
    }

    /// JoinGroup: waits until the rebalance completes (at most the rebalance timeout plus a
    /// margin; then REBALANCE_IN_PROGRESS and the client joins again).
    ///
    /// # Errors
    /// [`ClassicFailure::Node`] off the coordinator; the protocol's refusals, among them
    /// INCONSISTENT_GROUP_PROTOCOL while Strata members use the group id.
    pub async fn classic_join(
        &self,
        request: JoinRequest,
    ) -> Result<JoinResponse, ClassicFailure<P::Error>> {
        self.classic_coordinator(&request.group)?;
        let group = request.group.clone();
        let wait = request.rebalance_timeout + JOIN_WAIT_MARGIN;
        let receiver = {
            let coordinator = self.groups.coordinator();
            if coordinator.has_members(&group) {
                return Err(ClassicError::InconsistentGroupProtocol(format!(
                    "group {group:?} is a Strata consumer group with members: a Kafka client \
                     may join once they have left, or use another group id"
                ))
                .into());
            }
            let mut classic = self.groups.classic();
            classic.join(request, Instant::now(), super::members::new_member_id)?
        };
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(outcome)) => Ok(outcome?),
            Ok(Err(_dropped)) => Err(self.wait_dropped(&group)),
            Err(_elapsed) => Err(ClassicError::RebalanceInProgress.into()),
        }
    }

    /// SyncGroup: the member's assignment, once the leader sent it.
    ///
    /// # Errors
    /// As [`GroupRequests::classic_join`]; UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION,
    /// REBALANCE_IN_PROGRESS.
    pub async fn classic_sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Bytes, ClassicFailure<P::Error>> {
        self.classic_coordinator(group)?;
        let (receiver, wait) = {
            let mut classic = self.groups.classic();
            let receiver =
                classic.sync(group, generation, member_id, assignments, Instant::now())?;
            let session = classic
                .session_timeout(group, member_id)
                .unwrap_or_default();
            (receiver, session + SYNC_WAIT_MARGIN)
        };
        match tokio::time::timeout(wait, receiver).await {
            Ok(Ok(outcome)) => Ok(outcome?),
            Ok(Err(_dropped)) => Err(self.wait_dropped(group)),
            Err(_elapsed) => Err(ClassicError::RebalanceInProgress.into()),
        }
    }

    /// Heartbeat.
    ///
    /// # Errors
    /// As [`GroupRequests::classic_sync`].
    pub fn classic_heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(), ClassicFailure<P::Error>> {
        self.classic_coordinator(group)?;
        Ok(self
            .groups
            .classic()
            .heartbeat(group, generation, member_id, Instant::now())?)
    }

    /// LeaveGroup of one member.
    ///
    /// # Errors
    /// UNKNOWN_MEMBER_ID, or off the coordinator.
    pub fn classic_leave(
        &self,
        group: &str,
        member_id: &str,
    ) -> Result<(), ClassicFailure<P::Error>> {
        self.classic_coordinator(group)?;
        Ok(self
            .groups
            .classic()
            .leave(group, member_id, Instant::now())?)
    }

    /// OffsetCommit from a Kafka client: a member of the classic group's current generation,
    /// or (generation -1) a consumer outside any group while the group has no members of
    /// either kind. `offsets` were checked by [`GroupRequests::check_kafka_commit_entries`];
    /// they are stored as every commit is (high-watermark check, replicated).
    ///
    /// # Errors
    /// The protocol's refusals; the node's (off the coordinator, offsets out of range,
    /// unavailable).
    pub async fn classic_commit<F, Fut>(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: Vec<OffsetEntry>,
        offsets_at: F,
    ) -> Result<(), ClassicFailure<P::Error>>
    where
        F: Fn(u64, String, String) -> Fut,
        Fut: Future<Output = Result<Vec<ReplicaOffsets>, String>>,
    {
        self.classic_coordinator(group)?;
        {
            let coordinator = self.groups.coordinator();
            let from =
                self.groups
                    .classic()
                    .check_commit(group, generation, member_id, Instant::now())?;
            if from == CommitFrom::Simple && coordinator.has_members(group) {
                return Err(ClassicError::UnknownMember(format!(
                    "group {group:?} is a Strata consumer group with members: only they may commit"
                ))
                .into());
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let offsets_generation = self.group_generation(group);
        self.store_commit(group, offsets_generation, offsets, offsets_at)
            .await
            .map_err(ClassicFailure::Node)
    }

    /// Checks one partition of a Kafka commit as every commit's entries are checked (the
    /// partition exists, the metadata is not too long).
    ///
    /// # Errors
    /// The node's error for that partition.
    pub fn check_kafka_commit_entries(&self, entry: &OffsetEntry) -> Result<(), P::Error> {
        self.check_commit_entries(std::slice::from_ref(entry))
    }

    /// The classic group `group`, if it has members.
    pub fn classic_view(&self, group: &str) -> Option<GroupView> {
        self.groups.classic().view(group)
    }

    /// Ids of the classic groups with members.
    pub fn classic_group_ids(&self) -> Vec<String> {
        self.groups.classic().group_ids()
    }

    /// Fails unless this node coordinates groups (leads the controller).
    ///
    /// # Errors
    /// The node's error naming the coordinator.
    pub fn check_coordinator(&self) -> Result<(), P::Error> {
        self.ensure_coordinator()
    }
}
