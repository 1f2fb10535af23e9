//! Kafka's classic consumer group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), for
//! Kafka clients: the coordinator's soft state on the controller's leader, beside Strata's own
//! [`coordinator`](super::coordinator). Committed offsets are not here: both kinds of groups
//! share the replicated store ([`offsets`](super::offsets)).
//!
//! The protocol, as Kafka's broker runs it with client-side assignors:
//! - A group is `Empty`, `PreparingRebalance` (waiting for members to join), `CompletingRebalance`
//!   (waiting for the leader's assignment) or `Stable`.
//! - A join from a new member, a leave, an expired session, or a join that changes what a member
//!   supports (or comes from the leader) starts a rebalance. Members learn of it from their
//!   heartbeats (REBALANCE_IN_PROGRESS) and rejoin.
//! - The **join barrier**: the rebalance completes when every known member has rejoined, or when
//!   the rebalance timeout (the largest of the members') passes; members that did not rejoin are
//!   removed. Completing raises the generation, selects the protocol (one every member supports,
//!   by the members' votes for their most preferred), keeps the leader if it rejoined (else the
//!   first member), and answers every waiting join: the leader's answer carries every member's
//!   metadata for the selected protocol.
//! - SyncGroup waits for the leader's assignment, then hands each member its bytes; the group is
//!   `Stable`.
//! - Requests carry the generation and member id; a stale generation is ILLEGAL_GENERATION, a
//!   member the group does not know is UNKNOWN_MEMBER_ID.
//!
//! Waiting requests are never threads: a join or sync that must wait gets a
//! [`oneshot::Receiver`] that a later step (another member's request, [`Classic::tick`])
//! answers; the caller awaits it with a deadline. Everything here is pure: time is passed in.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::coordinator::{MEMBERS_MAX, MEMBERS_PER_GROUP_MAX};

pub use super::classic_types::*;

#[derive(Debug)]
struct Member {
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    /// Joined during the current rebalance.
    joined: bool,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    assignment: Bytes,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn answer_join(&mut self, outcome: JoinOutcome) {
        if let Some(waiter) = self.join_waiter.take() {
            // The receiver is gone when the client stopped waiting: nothing to tell it.
            let _ = waiter.send(outcome);
        }
    }

    fn answer_sync(&mut self, outcome: SyncOutcome) {
        if let Some(waiter) = self.sync_waiter.take() {
            let _ = waiter.send(outcome);
        }
    }
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// When a rebalance stops waiting for members (meaningful in `PreparingRebalance`).
    rebalance_deadline: Instant,
}

impl Group {
    fn new(protocol_type: String, now: Instant) -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            protocol_type,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            rebalance_deadline: now,
        }
    }

    /// The protocols every member supports.
    fn candidates(&self) -> Vec<String> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| self.members.values().all(|member| member.supports(name)))
            .collect()
    }

    /// Each member votes for its most preferred candidate; the most votes win, ties going to
    /// the earlier name.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(name))
            {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|(_, count)| *count == most)
            .map(|(name, _)| name.to_string())
    }

    /// Starts a rebalance: waiting syncs are told to rejoin, and every member must join again.
    fn prepare_rebalance(&mut self, now: Instant) {
        for member in self.members.values_mut() {
            member.answer_sync(Err(ClassicError::RebalanceInProgress));
            member.joined = false;
        }
        let timeout = self
            .members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = now + timeout;
    }

    /// Completes the rebalance once every member joined or its deadline passed.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        if !self.members.values().all(|member| member.joined) && now < self.rebalance_deadline {
            return;
        }
        // Members that did not rejoin in time are out.
        self.members.retain(|_, member| member.joined);
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        // Every member joined with a protocol in the candidates of the members before it, so
        // one exists; the fallback only keeps this total.
        let protocol = self.select_protocol().unwrap_or_default();
        let leader = match self.leader.take() {
            Some(leader) if self.members.contains_key(&leader) => leader,
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        let everyone: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, member)| (id.clone(), member.metadata(&protocol)))
            .collect();
        for (id, member) in &mut self.members {
            member.assignment = Bytes::new();
            member.last_seen = now;
            member.answer_join(Ok(JoinResponse {
                generation: self.generation,
                protocol_name: protocol.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                },
            }));
        }
        self.protocol = Some(protocol);
        self.leader = Some(leader);
        self.state = State::CompletingRebalance;
    }

    /// The current generation's join answer for `member_id` (a rejoin that changes nothing).
    fn current_join(&self, member_id: &str) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, member)| (id.clone(), member.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation: self.generation,
            protocol_name: protocol,
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Removes a member (it left or expired) and rebalances the rest.
    fn remove_member(&mut self, member_id: &str, now: Instant) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        let gone = || ClassicError::UnknownMember(format!("{member_id:?} left the group"));
        member.answer_join(Err(gone()));
        member.answer_sync(Err(gone()));
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        if matches!(self.state, State::Stable | State::CompletingRebalance) {
            self.prepare_rebalance(now);
        }
        self.maybe_complete_join(now);
    }
}

/// Every classic group with members.
#[derive(Debug, Default)]
pub struct Classic {
    groups: HashMap<String, Group>,
}

fn unknown_member(group: &str, member_id: &str) -> ClassicError {
    ClassicError::UnknownMember(format!(
        "{member_id:?} is not a member of group {group:?} (its session expired, it left, or the \
         coordinator moved): rejoin with an empty member id"
    ))
}

fn answered<T>(outcome: T) -> oneshot::Receiver<T> {
    let (sender, receiver) = oneshot::channel();
    let _ = sender.send(outcome);
    receiver
}

impl Classic {
    /// A JoinGroup. The receiver is answered when the rebalance completes (at once when the
    /// member's join completes it, or changes nothing); `new_id` makes the id of a new member.
    ///
    /// # Errors
    /// Invalid arguments (session timeout, protocols), [`ClassicError::InconsistentGroupProtocol`]
    /// (another protocol type, or no protocol in common with the members),
    /// [`ClassicError::UnknownMember`] for an id the group does not know,
    /// [`ClassicError::GroupFull`].
    pub fn join(
        &mut self,
        request: JoinRequest,
        now: Instant,
        new_id: impl FnOnce() -> String,
    ) -> Result<oneshot::Receiver<JoinOutcome>, ClassicError> {
        request.validate()?;
        let members_total: usize = self.groups.values().map(|g| g.members.len()).sum();
        if let Some(group) = self.groups.get(&request.group)
            && !group.members.is_empty()
        {
            if group.protocol_type != request.protocol_type {
                return Err(ClassicError::InconsistentGroupProtocol(format!(
                    "group {:?} runs protocol type {:?}, not {:?}",
                    request.group, group.protocol_type, request.protocol_type
                )));
            }
            let candidates = group.candidates();
            let others_support = |name: &str| {
                group
                    .members
                    .iter()
                    .filter(|(id, _)| **id != request.member_id)
                    .all(|(_, member)| member.supports(name))
            };
            if !request
                .protocols
                .iter()
                .any(|(name, _)| others_support(name))
            {
                return Err(ClassicError::InconsistentGroupProtocol(format!(
                    "group {:?}'s members support {candidates:?}: none of the member's protocols",
                    request.group
                )));
            }
        }
        let group = self
            .groups
            .entry(request.group.clone())
            .or_insert_with(|| Group::new(request.protocol_type.clone(), now));
        if group.members.is_empty() {
            group.protocol_type = request.protocol_type.clone();
        }
        let (sender, receiver) = oneshot::channel();
        if request.member_id.is_empty() {
            if group.members.len() >= MEMBERS_PER_GROUP_MAX || members_total >= MEMBERS_MAX {
                let full = format!(
                    "group {:?} has {} members, and the coordinator {members_total}: at most \
                     {MEMBERS_PER_GROUP_MAX} and {MEMBERS_MAX}",
                    request.group,
                    group.members.len()
                );
                if group.members.is_empty() {
                    self.groups.remove(&request.group);
                }
                return Err(ClassicError::GroupFull(full));
            }
            // Kafka's form: the client id, then a unique part.
            let member_id = format!("{}-{}", request.client_id, new_id());
            if group.state != State::PreparingRebalance {
                group.prepare_rebalance(now);
            }
            group.members.insert(
                member_id,
                Member {
                    client_id: request.client_id,
                    client_host: request.client_host,
                    session_timeout: request.session_timeout,
                    rebalance_timeout: request.rebalance_timeout,
                    protocols: request.protocols,
                    last_seen: now,
                    joined: true,
                    join_waiter: Some(sender),
                    sync_waiter: None,
                    assignment: Bytes::new(),
                },
            );
            // A new member's timeout counts too.
            group.rebalance_deadline = group
                .rebalance_deadline
                .max(now + request.rebalance_timeout);
            group.maybe_complete_join(now);
            return Ok(receiver);
        }
        let Some(member) = group.members.get_mut(&request.member_id) else {
            let error = unknown_member(&request.group, &request.member_id);
            if group.members.is_empty() {
                self.groups.remove(&request.group);
            }
            return Err(error);
        };
        let changed = member.protocols != request.protocols;
        member.last_seen = now;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
        let rebalance = match group.state {
            State::PreparingRebalance => false,
            State::CompletingRebalance => changed,
            State::Stable => changed || is_leader,
            State::Empty => true,
        };
        if group.state != State::PreparingRebalance && !rebalance {
            // Nothing changes: the member gets this generation again.
            return Ok(answered(Ok(group.current_join(&request.member_id))));
        }
        if rebalance {
            group.prepare_rebalance(now);
        }
        let member = group
            .members
            .get_mut(&request.member_id)
            .expect("the member was found above");
        member.protocols = request.protocols;
        member.joined = true;
        // A second join while one waits: the older waiter is told to rejoin.
        member.answer_join(Err(ClassicError::RebalanceInProgress));
        member.join_waiter = Some(sender);
        group.maybe_complete_join(now);
        Ok(receiver)
    }

    /// A SyncGroup. From the leader (with `assignments`, member id and bytes) during
    /// `CompletingRebalance`, it hands every member its assignment; from another member, the
    /// receiver is answered once the leader's assignment arrives (at once when the group is
    /// stable).
    ///
    /// # Errors
    /// [`ClassicError::UnknownMember`], [`ClassicError::IllegalGeneration`],
    /// [`ClassicError::RebalanceInProgress`], an assignment too long.
    pub fn sync(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<oneshot::Receiver<SyncOutcome>, ClassicError> {
        let group = self.check_generation(group_id, generation, member_id)?;
        if let Some((id, assignment)) = assignments
            .iter()
            .find(|(_, assignment)| assignment.len() > ASSIGNMENT_BYTES_MAX)
        {
            return Err(ClassicError::InvalidArgument(format!(
                "an assignment is at most {ASSIGNMENT_BYTES_MAX} bytes, got {} for {id:?}",
                assignment.len()
            )));
        }
        match group.state {
            State::Empty | State::PreparingRebalance => Err(ClassicError::RebalanceInProgress),
            State::Stable => Ok(answered(Ok(group.members[member_id].assignment.clone()))),
            State::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                let member = group
                    .members
                    .get_mut(member_id)
                    .expect("checked by check_generation");
                member.last_seen = now;
                member.answer_sync(Err(ClassicError::RebalanceInProgress));
                member.sync_waiter = Some(sender);
                if group.leader.as_deref() == Some(member_id) {
                    // Members the leader left out get an empty assignment; ids the group does
                    // not know are ignored.
                    let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, member) in &mut group.members {
                        member.assignment = assigned.remove(id).unwrap_or_default();
                        let assignment = member.assignment.clone();
                        member.answer_sync(Ok(assignment));
                    }
                    group.state = State::Stable;
                }
                Ok(receiver)
            }
        }
    }

    /// A Heartbeat: keeps the member's session.
    ///
    /// # Errors
    /// [`ClassicError::UnknownMember`], [`ClassicError::IllegalGeneration`], and
    /// [`ClassicError::RebalanceInProgress`] while the group waits for members to rejoin.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        now: Instant,
    ) -> Result<(), ClassicError> {
        let group = self.check_generation(group_id, generation, member_id)?;
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_seen = now;
        }
        match group.state {
            State::PreparingRebalance => Err(ClassicError::RebalanceInProgress),
            State::Empty | State::CompletingRebalance | State::Stable => Ok(()),
        }
    }

    /// A LeaveGroup: the member is removed and the others rebalance.
    ///
    /// # Errors
    /// [`ClassicError::UnknownMember`].
    pub fn leave(
        &mut self,
        group_id: &str,
        member_id: &str,
        now: Instant,
    ) -> Result<(), ClassicError> {
        let group = self
            .groups
            .get_mut(group_id)
            .filter(|group| group.members.contains_key(member_id))
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        group.remove_member(member_id, now);
        self.forget_empty();
        Ok(())
    }

    /// Removes members whose session expired (a member waiting in a join is not expired: the
    /// rebalance deadline bounds that wait) and completes rebalances whose deadline passed.
    /// Returns how many members were removed.
    pub fn tick(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for (group_id, group) in &mut self.groups {
            let dead: Vec<String> = group
                .members
                .iter()
                .filter(|(_, member)| {
                    member.join_waiter.is_none()
                        && now.saturating_duration_since(member.last_seen) > member.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            for member_id in dead {
                tracing::info!(group = %group_id, member = %member_id, "Kafka group member's session expired");
                group.remove_member(&member_id, now);
                expired += 1;
            }
            group.maybe_complete_join(now);
        }
        self.forget_empty();
        expired
    }

    /// Checks a commit's generation and member (Kafka's rules): generation -1 is a consumer
    /// outside any group, allowed while the group has no members; otherwise the member must be
    /// in the group's current generation, and not in the middle of its assignment.
    ///
    /// # Errors
    /// [`ClassicError::UnknownMember`], [`ClassicError::IllegalGeneration`],
    /// [`ClassicError::RebalanceInProgress`].
    pub fn check_commit(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        now: Instant,
    ) -> Result<CommitFrom, ClassicError> {
        let group = self
            .groups
            .get_mut(group_id)
            .filter(|group| !group.members.is_empty());
        let Some(group) = group else {
            if generation < 0 {
                return Ok(CommitFrom::Simple);
            }
            return Err(if member_id.is_empty() {
                ClassicError::IllegalGeneration(format!(
                    "group {group_id:?} has no generation {generation}: it has no members"
                ))
            } else {
                unknown_member(group_id, member_id)
            });
        };
        if group.state == State::CompletingRebalance {
            return Err(ClassicError::RebalanceInProgress);
        }
        let current = group.generation;
        let member = group
            .members
            .get_mut(member_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        if generation != current {
            return Err(ClassicError::IllegalGeneration(format!(
                "group {group_id:?} is at generation {current}, not {generation}: rejoin"
            )));
        }
        member.last_seen = now;
        Ok(CommitFrom::Member)
    }

    /// A member's session timeout, if it is a member.
    pub fn session_timeout(&self, group_id: &str, member_id: &str) -> Option<Duration> {
        Some(
            self.groups
                .get(group_id)?
                .members
                .get(member_id)?
                .session_timeout,
        )
    }

    /// Whether the group has members.
    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|group| !group.members.is_empty())
    }

    /// The group as it is now, if it has members.
    pub fn view(&self, group_id: &str) -> Option<GroupView> {
        let group = self.groups.get(group_id)?;
        let protocol = group.protocol.clone().unwrap_or_default();
        Some(GroupView {
            state: group.state,
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            members: group
                .members
                .iter()
                .map(|(id, member)| MemberView {
                    member_id: id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    metadata: member.metadata(&protocol),
                    assignment: member.assignment.clone(),
                })
                .collect(),
            protocol,
        })
    }

    /// Ids of the groups with members.
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Forgets every group (this node stopped coordinating); waiting requests see their
    /// receivers closed.
    pub fn clear(&mut self) {
        self.groups.clear();
    }

    fn check_generation(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<&mut Group, ClassicError> {
        let group = self
            .groups
            .get_mut(group_id)
            .filter(|group| group.members.contains_key(member_id))
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        if generation != group.generation {
            return Err(ClassicError::IllegalGeneration(format!(
                "group {group_id:?} is at generation {}, not {generation}: rejoin",
                group.generation
            )));
        }
        Ok(group)
    }

    /// Groups without members hold nothing worth keeping (offsets live in the metadata).
    fn forget_empty(&mut self) {
        self.groups.retain(|_, group| !group.members.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    fn request(member_id: &str, protocols: &[(&str, &str)]) -> JoinRequest {
        JoinRequest {
            group: "g".to_string(),
            member_id: member_id.to_string(),
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            protocol_type: "consumer".to_string(),
            protocols: protocols
                .iter()
                .map(|(name, metadata)| {
                    (
                        name.to_string(),
                        Bytes::copy_from_slice(metadata.as_bytes()),
                    )
                })
                .collect(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
        }
    }

    fn ids(names: &'static [&'static str]) -> impl FnMut() -> String {
        let mut names = names.iter();
        move || names.next().expect("an id").to_string()
    }

    fn ready<T: std::fmt::Debug>(receiver: &mut oneshot::Receiver<T>) -> T {
        receiver.try_recv().expect("answered")
    }

    fn pending<T: std::fmt::Debug>(receiver: &mut oneshot::Receiver<T>) {
        assert_eq!(
            receiver.try_recv().expect_err("still waiting"),
            oneshot::error::TryRecvError::Empty
        );
    }

    /// A group of two members, stable at generation 2 ("client-a" leads); returns the time.
    fn two_stable(c: &mut Classic) -> Instant {
        let now = Instant::now();
        let mut a = c
            .join(request("", &[("range", "ma")]), now, || "a".to_string())
            .expect("join a");
        let a = ready(&mut a).expect("a joined");
        assert_eq!((a.generation, a.leader.as_str()), (1, "client-a"));
        let mut sync_a = c
            .sync(
                "g",
                1,
                "client-a",
                vec![("client-a".into(), "x".into())],
                now,
            )
            .expect("sync a");
        assert_eq!(ready(&mut sync_a), Ok(Bytes::from("x")));
        // b's join starts a rebalance; a learns of it from its heartbeat and rejoins.
        let mut b = c
            .join(request("", &[("range", "mb")]), now, || "b".to_string())
            .expect("join b");
        pending(&mut b);
        assert_eq!(
            c.heartbeat("g", 1, "client-a", now),
            Err(ClassicError::RebalanceInProgress)
        );
        let mut a = c
            .join(
                request("client-a", &[("range", "ma")]),
                now,
                || unreachable!(),
            )
            .expect("rejoin a");
        let a = ready(&mut a).expect("a rejoined");
        let b = ready(&mut b).expect("b joined");
        assert_eq!((a.generation, b.generation), (2, 2));
        assert_eq!(
            (a.leader.as_str(), b.leader.as_str()),
            ("client-a", "client-a")
        );
        // The leader sees every member's metadata; the follower sees none.
        assert_eq!(
            a.members,
            vec![
                ("client-a".to_string(), Bytes::from("ma")),
                ("client-b".to_string(), Bytes::from("mb"))
            ]
        );
        assert!(b.members.is_empty());
        let mut sync_b = c.sync("g", 2, "client-b", Vec::new(), now).expect("sync b");
        pending(&mut sync_b);
        let assignments = vec![
            ("client-a".to_string(), Bytes::from("pa")),
            ("client-b".to_string(), Bytes::from("pb")),
        ];
        let mut sync_a = c
            .sync("g", 2, "client-a", assignments, now)
            .expect("sync a");
        assert_eq!(ready(&mut sync_a), Ok(Bytes::from("pa")));
        assert_eq!(ready(&mut sync_b), Ok(Bytes::from("pb")));
        assert_eq!(c.view("g").expect("group").state, State::Stable);
        now
    }

    /// Join barrier, leader election, protocol metadata for the leader, sync hand-out.
    #[test]
    fn two_members_rebalance_through_join_and_sync() {
        let mut c = Classic::default();
        let now = two_stable(&mut c);
        assert_eq!(c.heartbeat("g", 2, "client-b", now), Ok(()));
        // A stable group answers a sync at once.
        let mut again = c.sync("g", 2, "client-b", Vec::new(), now).expect("sync");
        assert_eq!(ready(&mut again), Ok(Bytes::from("pb")));
        let view = c.view("g").expect("group");
        assert_eq!((view.generation, view.protocol.as_str()), (2, "range"));
        assert_eq!(view.members[1].assignment, Bytes::from("pb"));
        assert_eq!(view.members[1].metadata, Bytes::from("mb"));
    }

    /// A member that does not rejoin within the rebalance timeout is removed when it passes.
    #[test]
    fn the_barrier_gives_up_on_members_at_the_rebalance_timeout() {
        let mut c = Classic::default();
        let now = two_stable(&mut c);
        // b leaves nothing behind but silence; a new member c joins.
        let mut joined_c = c
            .join(request("", &[("range", "mc")]), now, || "c".to_string())
            .expect("join c");
        let mut a = c
            .join(
                request("client-a", &[("range", "ma")]),
                now,
                || unreachable!(),
            )
            .expect("rejoin a");
        pending(&mut a);
        // b keeps its session alive without rejoining: the barrier waits for it until the
        // rebalance timeout.
        for seconds in [5, 14, 23] {
            let at = now + Duration::from_secs(seconds);
            assert_eq!(
                c.heartbeat("g", 2, "client-b", at),
                Err(ClassicError::RebalanceInProgress)
            );
            assert_eq!(c.tick(at), 0);
            pending(&mut a);
        }
        c.tick(now + REBALANCE - Duration::from_millis(1));
        pending(&mut a);
        c.tick(now + REBALANCE);
        let a = ready(&mut a).expect("a");
        let joined_c = ready(&mut joined_c).expect("c");
        assert_eq!((a.generation, joined_c.generation), (3, 3));
        assert_eq!(a.members.len(), 2, "b was removed: {:?}", a.members);
        assert!(matches!(
            c.heartbeat("g", 3, "client-b", now + REBALANCE),
            Err(ClassicError::UnknownMember(_))
        ));
    }

    /// Session expiry removes a silent member and starts a rebalance; the survivor rejoins
    /// alone and leads.
    #[test]
    fn expiry_removes_silent_members_and_rebalances() {
        let mut c = Classic::default();
        let now = two_stable(&mut c);
        let later = now + Duration::from_secs(8);
        assert_eq!(c.heartbeat("g", 2, "client-b", later), Ok(()));
        let expired_at = now + SESSION + Duration::from_millis(1);
        assert_eq!(c.tick(expired_at), 1, "a expired, b did not");
        assert_eq!(c.view("g").expect("group").state, State::PreparingRebalance);
        assert_eq!(
            c.heartbeat("g", 2, "client-b", expired_at),
            Err(ClassicError::RebalanceInProgress)
        );
        let mut b = c
            .join(
                request("client-b", &[("range", "mb")]),
                expired_at,
                || unreachable!(),
            )
            .expect("rejoin b");
        let b = ready(&mut b).expect("b");
        assert_eq!((b.generation, b.leader.as_str()), (3, "client-b"));
        assert!(matches!(
            c.sync("g", 2, "client-a", Vec::new(), expired_at),
            Err(ClassicError::UnknownMember(_))
        ));
    }

    /// Stale generations and unknown members are refused; commits follow Kafka's rules.
    #[test]
    fn generations_and_members_are_fenced() {
        let mut c = Classic::default();
        let now = two_stable(&mut c);
        assert!(matches!(
            c.heartbeat("g", 1, "client-a", now),
            Err(ClassicError::IllegalGeneration(_))
        ));
        assert!(matches!(
            c.sync("g", 3, "client-a", Vec::new(), now),
            Err(ClassicError::IllegalGeneration(_))
        ));
        assert!(matches!(
            c.heartbeat("g", 2, "nobody", now),
            Err(ClassicError::UnknownMember(_))
        ));
        assert!(matches!(
            c.join(request("nobody", &[("range", "")]), now, || unreachable!()),
            Err(ClassicError::UnknownMember(_))
        ));
        assert_eq!(
            c.check_commit("g", 2, "client-a", now),
            Ok(CommitFrom::Member)
        );
        assert!(matches!(
            c.check_commit("g", 1, "client-a", now),
            Err(ClassicError::IllegalGeneration(_))
        ));
        // A consumer outside the group may not commit while it has members.
        assert!(matches!(
            c.check_commit("g", -1, "", now),
            Err(ClassicError::UnknownMember(_))
        ));
        assert_eq!(c.check_commit("other", -1, "", now), Ok(CommitFrom::Simple));
        assert!(matches!(
            c.check_commit("other", 1, "", now),
            Err(ClassicError::IllegalGeneration(_))
        ));
        // Commits during a rebalance's join phase still carry the old generation (eager
        // clients commit before they rejoin).
        c.leave("g", "client-b", now).expect("leave");
        assert_eq!(
            c.check_commit("g", 2, "client-a", now),
            Ok(CommitFrom::Member)
        );
    }

    /// Leaving rebalances the rest; the last member leaving empties the group.
    #[test]
    fn leave_rebalances_and_the_last_leave_empties_the_group() {
        let mut c = Classic::default();
        let now = two_stable(&mut c);
        c.leave("g", "client-a", now).expect("a leaves");
        assert!(matches!(
            c.leave("g", "client-a", now),
            Err(ClassicError::UnknownMember(_))
        ));
        let mut b = c
            .join(
                request("client-b", &[("range", "mb")]),
                now,
                || unreachable!(),
            )
            .expect("rejoin b");
        let b = ready(&mut b).expect("b");
        assert_eq!((b.generation, b.leader.as_str()), (3, "client-b"));
        c.leave("g", "client-b", now).expect("b leaves");
        assert!(!c.has_members("g"));
        assert!(c.view("g").is_none());
        assert_eq!(c.check_commit("g", -1, "", now), Ok(CommitFrom::Simple));
    }

    /// A sync waiting for the leader hears REBALANCE_IN_PROGRESS when a rebalance starts, and
    /// a member that leaves while its join waits is answered.
    #[test]
    fn waiting_requests_are_answered_when_the_group_moves_on() {
        let mut c = Classic::default();
        let now = Instant::now();
        let mut a = c
            .join(request("", &[("range", "")]), now, ids(&["a"]))
            .expect("join a");
        ready(&mut a).expect("a");
        let mut sync_a = c.sync("g", 1, "client-a", Vec::new(), now);
        // The leader's own sync completes the generation with what it sent (nothing here).
        assert_eq!(ready(sync_a.as_mut().expect("sync")), Ok(Bytes::new()));
        let mut b = c
            .join(request("", &[("range", "")]), now, ids(&["b"]))
            .expect("join b");
        pending(&mut b);
        let mut a = c
            .join(request("client-a", &[("range", "")]), now, ids(&[]))
            .expect("rejoin a");
        ready(&mut a).expect("a");
        ready(&mut b).expect("b");
        let mut sync_b = c.sync("g", 2, "client-b", Vec::new(), now).expect("sync b");
        pending(&mut sync_b);
        // A third member joins before the leader synced: b is told to rejoin.
        let mut third = c
            .join(request("", &[("range", "")]), now, ids(&["c"]))
            .expect("join c");
        assert_eq!(ready(&mut sync_b), Err(ClassicError::RebalanceInProgress));
        c.leave("g", "client-c", now).expect("c leaves");
        assert!(matches!(
            ready(&mut third),
            Err(ClassicError::UnknownMember(_))
        ));
    }

    /// The protocol is one every member supports, chosen by the members' preference.
    #[test]
    fn the_protocol_is_one_all_members_support_by_preference() {
        let mut c = Classic::default();
        let now = Instant::now();
        let mut a = c
            .join(
                request("", &[("cooperative-sticky", "a1"), ("range", "a2")]),
                now,
                ids(&["a"]),
            )
            .expect("join a");
        assert_eq!(
            ready(&mut a).expect("a").protocol_name,
            "cooperative-sticky"
        );
        // b supports only range: a new member with no common protocol is refused, one with
        // range is accepted and range wins.
        assert!(matches!(
            c.join(request("", &[("roundrobin", "")]), now, ids(&["x"])),
            Err(ClassicError::InconsistentGroupProtocol(_))
        ));
        let mut b = c
            .join(request("", &[("range", "b")]), now, ids(&["b"]))
            .expect("join b");
        let mut a = c
            .join(
                request("client-a", &[("cooperative-sticky", "a1"), ("range", "a2")]),
                now,
                ids(&[]),
            )
            .expect("rejoin a");
        let a = ready(&mut a).expect("a");
        ready(&mut b).expect("b");
        assert_eq!(a.protocol_name, "range");
        // The leader gets each member's metadata of the selected protocol.
        assert_eq!(a.members[0].1, Bytes::from("a2"));
        // Another protocol type is refused while the group has members.
        let mut connect = request("", &[("range", "")]);
        connect.protocol_type = "connect".to_string();
        assert!(matches!(
            c.join(connect, now, ids(&["y"])),
            Err(ClassicError::InconsistentGroupProtocol(_))
        ));
    }

    /// Votes: the protocol most members prefer wins among those all support.
    #[test]
    fn votes_pick_the_most_preferred_common_protocol() {
        let mut c = Classic::default();
        let now = Instant::now();
        let mut first = c
            .join(request("", &[("x", ""), ("y", "")]), now, ids(&["a"]))
            .expect("a");
        ready(&mut first).expect("a");
        let mut b = c
            .join(request("", &[("y", ""), ("x", "")]), now, ids(&["b"]))
            .expect("b");
        let mut third = c
            .join(request("", &[("y", ""), ("x", "")]), now, ids(&["c"]))
            .expect("c");
        let mut a = c
            .join(request("client-a", &[("x", ""), ("y", "")]), now, ids(&[]))
            .expect("rejoin a");
        assert_eq!(ready(&mut a).expect("a").protocol_name, "y");
        ready(&mut b).expect("b");
        ready(&mut third).expect("c");
    }

    /// A follower rejoining a stable group with unchanged metadata gets the current generation
    /// at once; a changed subscription (as cooperative clients send after revoking) starts a
    /// rebalance.
    #[test]
    fn rejoins_that_change_nothing_keep_the_generation() {
        let mut c = Classic::default();
        let now = two_stable(&mut c);
        let mut b = c
            .join(request("client-b", &[("range", "mb")]), now, ids(&[]))
            .expect("rejoin b");
        let b = ready(&mut b).expect("b");
        assert_eq!(b.generation, 2);
        assert_eq!(c.view("g").expect("group").state, State::Stable);
        let mut b = c
            .join(request("client-b", &[("range", "mb-owned")]), now, ids(&[]))
            .expect("rejoin b changed");
        pending(&mut b);
        assert_eq!(c.view("g").expect("group").state, State::PreparingRebalance);
    }

    /// Bad joins are refused with what is valid; the member bound holds.
    #[test]
    fn invalid_joins_are_refused() {
        let mut c = Classic::default();
        let now = Instant::now();
        let mut short = request("", &[("range", "")]);
        short.session_timeout = Duration::from_millis(10);
        assert!(matches!(
            c.join(short, now, ids(&["a"])),
            Err(ClassicError::InvalidSessionTimeout(_))
        ));
        assert!(matches!(
            c.join(request("", &[]), now, ids(&["a"])),
            Err(ClassicError::InconsistentGroupProtocol(_))
        ));
        let mut big = request("", &[("range", "")]);
        big.protocols[0].1 = Bytes::from(vec![0u8; MEMBER_METADATA_BYTES_MAX + 1]);
        assert!(matches!(
            c.join(big, now, ids(&["a"])),
            Err(ClassicError::InvalidArgument(_))
        ));
        assert!(
            c.group_ids().is_empty(),
            "refused joins leave nothing behind"
        );
        let mut counter = 0u32;
        for _ in 0..MEMBERS_PER_GROUP_MAX {
            counter += 1;
            let id = counter.to_string();
            c.join(request("", &[("range", "")]), now, move || id)
                .expect("within the bound");
        }
        assert!(matches!(
            c.join(request("", &[("range", "")]), now, ids(&["over"])),
            Err(ClassicError::GroupFull(_))
        ));
    }
}
