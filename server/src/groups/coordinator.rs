//! Consumer group coordination: membership and partition assignment.
//!
//! This is the coordinator's soft state, kept in memory on the controller's leader; committed
//! offsets are replicated metadata (see `metadata`). Losing it (a restart, a coordinator change)
//! costs members a rejoin, never an offset.
//!
//! The protocol follows Kafka's KIP-848 in spirit:
//! - A **target assignment** is computed whenever members or the subscribed topics change:
//!   balanced by partition count, and sticky (a member keeps what it has unless balance needs
//!   it elsewhere). See [`assign`].
//! - Each member **holds** a set of partitions. Held sets never overlap: a partition in a
//!   member's target that another member still holds is *pending* and is granted only after
//!   that member releases it (stops listing it in a heartbeat made with its current epoch) or
//!   leaves or expires. So no two members hold a partition at once, in any epoch.
//! - Every change of a member's assignment raises the group epoch, and the member's epoch
//!   becomes it. A commit must carry an epoch of the member's current incarnation (a member
//!   that expired and rejoined starts a new one) and name only partitions it holds.
//!
//! Everything here is pure: time is passed in, and topics are looked up through a closure, so
//! the tests drive it without a server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Why the coordinator refused a request; the node answers it as its error variant of the
/// same name (see [`ControllerPort::Error`](super::ControllerPort::Error)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("unknown member: {0}")]
    UnknownMember(String),
    #[error("stale member epoch: {0}")]
    StaleMemberEpoch(String),
    #[error("group full: {0}")]
    GroupFull(String),
}

/// A topic partition.
pub type Tp = (String, u32);

/// Session timeout when a member asks for none.
pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Most members in one group.
pub const MEMBERS_PER_GROUP_MAX: usize = 1000;
/// Most members of all groups together: the coordinator's memory is bounded (a few hundred
/// bytes a member plus its partitions); committed offsets are not affected.
pub const MEMBERS_MAX: usize = 100_000;
/// Most topics one member subscribes to.
pub const TOPICS_PER_MEMBER_MAX: usize = 1000;
/// Longest client id kept.
pub const CLIENT_ID_BYTES_MAX: usize = 255;

/// What a member should hold now (the reply to join and heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub member_id: String,
    pub member_epoch: u64,
    pub group_epoch: u64,
    pub assignment: BTreeSet<Tp>,
    pub pending: BTreeSet<Tp>,
    pub heartbeat_interval: Duration,
}

/// A member as describe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub member_epoch: u64,
    pub topics: Vec<String>,
    pub assignment: BTreeSet<Tp>,
    pub pending: BTreeSet<Tp>,
    pub session_timeout: Duration,
    pub since_heartbeat: Duration,
}

/// A group as describe and list show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub state: &'static str,
    pub group_epoch: u64,
    pub members: Vec<MemberView>,
    /// Every subscribed partition's holder.
    pub owners: BTreeMap<Tp, String>,
    pub topics: BTreeSet<String>,
}

#[derive(Debug)]
struct Member {
    client_id: String,
    topics: BTreeSet<String>,
    session_timeout: Duration,
    last_seen: Instant,
    /// Raised on every change of this member's assignment.
    epoch: u64,
    /// The epoch this incarnation joined at: anything older comes from before a rejoin.
    joined_epoch: u64,
    /// Partitions the member may be processing.
    held: BTreeSet<Tp>,
    /// The assignment last sent.
    assignment: BTreeSet<Tp>,
    pending: BTreeSet<Tp>,
    /// The offsets generation last sent: the member's commits are valid only while the group's
    /// generation still is this one.
    generation: u64,
}

#[derive(Debug)]
struct Group {
    epoch: u64,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<Tp>>,
    /// Partition counts of the subscribed topics the target was computed from.
    partitions: BTreeMap<String, u32>,
}

impl Group {
    /// The subscribed topics' partition counts as they are now (deleted topics absent).
    fn current_partitions(&self, counts: &dyn Fn(&str) -> Option<u32>) -> BTreeMap<String, u32> {
        let mut partitions = BTreeMap::new();
        for member in self.members.values() {
            for topic in &member.topics {
                if !partitions.contains_key(topic)
                    && let Some(count) = counts(topic)
                {
                    partitions.insert(topic.clone(), count);
                }
            }
        }
        partitions
    }

    /// Recomputes the target assignment; raises the epoch when it changed.
    fn retarget(&mut self, counts: &dyn Fn(&str) -> Option<u32>) {
        self.partitions = self.current_partitions(counts);
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .iter()
            .map(|(id, member)| (id.clone(), member.topics.clone()))
            .collect();
        let target = assign(&subscriptions, &self.partitions, &self.target);
        if target != self.target {
            self.target = target;
            self.epoch += 1;
        }
    }

    /// Brings `member`'s assignment as close to its target as ownership allows.
    fn reconcile(&mut self, member_id: &str) {
        let held_by_others: BTreeSet<Tp> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .flat_map(|(_, member)| member.held.iter().cloned())
            .collect();
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let member = self.members.get_mut(member_id).expect("reconciled member");
        let mut assignment = BTreeSet::new();
        let mut pending = BTreeSet::new();
        for tp in target {
            if member.held.contains(&tp) || !held_by_others.contains(&tp) {
                member.held.insert(tp.clone());
                assignment.insert(tp);
            } else {
                pending.insert(tp);
            }
        }
        member.pending = pending;
        if assignment != member.assignment {
            member.assignment = assignment;
            self.epoch += 1;
            member.epoch = self.epoch;
        }
    }

    fn reply(&self, member_id: &str) -> MemberAssignment {
        let member = &self.members[member_id];
        MemberAssignment {
            member_id: member_id.to_string(),
            member_epoch: member.epoch,
            group_epoch: self.epoch,
            assignment: member.assignment.clone(),
            pending: member.pending.clone(),
            heartbeat_interval: heartbeat_interval(member.session_timeout),
        }
    }

    fn remove_member(&mut self, member_id: &str, counts: &dyn Fn(&str) -> Option<u32>) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.epoch += 1;
            self.retarget(counts);
        }
    }

    fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "empty"
        } else if self.members.iter().all(|(id, member)| {
            member.pending.is_empty()
                && Some(&member.held) == self.target.get(id)
                && member.assignment == member.held
        }) {
            "stable"
        } else {
            "reconciling"
        }
    }
}

/// Heartbeats come three times per session timeout, so one lost heartbeat never expires a
/// member.
pub fn heartbeat_interval(session_timeout: Duration) -> Duration {
    session_timeout / 3
}

/// The coordinator's state: every group with members.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: HashMap<String, Group>,
}

/// A heartbeat request.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<'a> {
    pub group_id: &'a str,
    pub member_id: &'a str,
    /// The epoch of the last assignment the member acted on.
    pub member_epoch: u64,
    /// What it holds now.
    pub owned: &'a BTreeSet<Tp>,
}

/// A join request.
#[derive(Debug, Clone)]
pub struct Join {
    pub group: String,
    /// Empty for a new member.
    pub member_id: String,
    pub topics: Vec<String>,
    /// Zero for the default.
    pub session_timeout: Duration,
    pub client_id: String,
}

impl Coordinator {
    /// Adds a member (or restarts one that rejoins with its id: its old incarnation's holdings
    /// are dropped and its old epochs fenced). `new_id` makes an id when none is given;
    /// `epoch_seed` starts the epochs of a group created now (pass the clock in ms, so epochs
    /// keep rising across coordinator restarts).
    ///
    /// # Errors
    /// Invalid arguments, [`CoordinatorError::UnknownTopic`], [`CoordinatorError::GroupFull`].
    pub fn join(
        &mut self,
        join: Join,
        now: Instant,
        epoch_seed: u64,
        generation: u64,
        counts: &dyn Fn(&str) -> Option<u32>,
        new_id: impl FnOnce() -> String,
    ) -> Result<MemberAssignment, CoordinatorError> {
        let session_timeout = if join.session_timeout.is_zero() {
            SESSION_TIMEOUT_DEFAULT
        } else {
            join.session_timeout
        };
        if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&session_timeout) {
            return Err(CoordinatorError::InvalidArgument(format!(
                "session_timeout_ms must be {} to {} (0 for {}), got {}",
                SESSION_TIMEOUT_MIN.as_millis(),
                SESSION_TIMEOUT_MAX.as_millis(),
                SESSION_TIMEOUT_DEFAULT.as_millis(),
                session_timeout.as_millis()
            )));
        }
        if join.topics.is_empty() || join.topics.len() > TOPICS_PER_MEMBER_MAX {
            return Err(CoordinatorError::InvalidArgument(format!(
                "a member subscribes to 1 to {TOPICS_PER_MEMBER_MAX} topics, got {}",
                join.topics.len()
            )));
        }
        if let Some(missing) = join.topics.iter().find(|topic| counts(topic).is_none()) {
            return Err(CoordinatorError::UnknownTopic(missing.clone()));
        }
        if join.member_id.len() > CLIENT_ID_BYTES_MAX || join.client_id.len() > CLIENT_ID_BYTES_MAX
        {
            return Err(CoordinatorError::InvalidArgument(format!(
                "member_id and client_id are at most {CLIENT_ID_BYTES_MAX} bytes"
            )));
        }
        let members: usize = self.groups.values().map(|g| g.members.len()).sum();
        if members >= MEMBERS_MAX {
            return Err(CoordinatorError::GroupFull(format!(
                "the coordinator already tracks {MEMBERS_MAX} members, the most it may"
            )));
        }
        let group = self
            .groups
            .entry(join.group.clone())
            .or_insert_with(|| Group {
                epoch: epoch_seed,
                members: BTreeMap::new(),
                target: BTreeMap::new(),
                partitions: BTreeMap::new(),
            });
        let member_id = if join.member_id.is_empty() {
            new_id()
        } else {
            join.member_id
        };
        if !group.members.contains_key(&member_id) && group.members.len() >= MEMBERS_PER_GROUP_MAX {
            if group.members.is_empty() {
                self.groups.remove(&join.group);
            }
            return Err(CoordinatorError::GroupFull(format!(
                "group {:?} has {MEMBERS_PER_GROUP_MAX} members, the most it may have",
                join.group
            )));
        }
        // A rejoin replaces the old incarnation: what it held is released.
        group.members.remove(&member_id);
        group.epoch += 1;
        let epoch = group.epoch;
        group.members.insert(
            member_id.clone(),
            Member {
                client_id: join.client_id,
                topics: join.topics.into_iter().collect(),
                session_timeout,
                last_seen: now,
                epoch,
                joined_epoch: epoch,
                held: BTreeSet::new(),
                assignment: BTreeSet::new(),
                pending: BTreeSet::new(),
                generation,
            },
        );
        group.retarget(counts);
        group.reconcile(&member_id);
        Ok(group.reply(&member_id))
    }

    /// A member's heartbeat: `owned` is what it holds now, as of `member_epoch`.
    ///
    /// # Errors
    /// [`CoordinatorError::UnknownMember`] when it is not (or no longer) a member;
    /// [`CoordinatorError::StaleMemberEpoch`] for an epoch of a fenced incarnation.
    pub fn heartbeat(
        &mut self,
        beat: Heartbeat<'_>,
        now: Instant,
        generation: u64,
        counts: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<MemberAssignment, CoordinatorError> {
        let Heartbeat {
            group_id,
            member_id,
            member_epoch,
            owned,
        } = beat;
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        let member = group
            .members
            .get_mut(member_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        check_epoch(member_id, member, member_epoch)?;
        member.last_seen = now;
        member.generation = generation;
        if member_epoch == member.epoch {
            // The member acted on its latest assignment: what it no longer lists and is not
            // asked to keep is released.
            let target = group.target.get(member_id).cloned().unwrap_or_default();
            member
                .held
                .retain(|tp| owned.contains(tp) || target.contains(tp));
        }
        if group.current_partitions(counts) != group.partitions {
            group.retarget(counts);
        }
        group.reconcile(member_id);
        Ok(group.reply(member_id))
    }

    /// Removes a member; its partitions go to the others.
    ///
    /// # Errors
    /// [`CoordinatorError::UnknownMember`].
    pub fn leave(
        &mut self,
        group_id: &str,
        member_id: &str,
        counts: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<(), CoordinatorError> {
        let group = self
            .groups
            .get_mut(group_id)
            .filter(|group| group.members.contains_key(member_id))
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        group.remove_member(member_id, counts);
        if group.members.is_empty() {
            self.groups.remove(group_id);
        }
        Ok(())
    }

    /// Removes members not heard from within their session timeout; returns how many.
    pub fn expire(&mut self, now: Instant, counts: &dyn Fn(&str) -> Option<u32>) -> usize {
        let mut expired = 0;
        for (group_id, group) in &mut self.groups {
            let dead: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for member_id in dead {
                tracing::info!(group = %group_id, member = %member_id, "member session expired");
                group.remove_member(&member_id, counts);
                expired += 1;
            }
        }
        self.groups.retain(|_, group| !group.members.is_empty());
        expired
    }

    /// Checks that a commit may be made; returns the offsets generation it is valid for, or
    /// `None` for an operator's commit (empty member id, group without members).
    ///
    /// # Errors
    /// [`CoordinatorError::UnknownMember`], [`CoordinatorError::StaleMemberEpoch`] (also for a partition
    /// the member does not hold).
    pub fn check_commit<'a>(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: u64,
        partitions: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> Result<Option<u64>, CoordinatorError> {
        let group = self.groups.get(group_id);
        if member_id.is_empty() {
            return match group {
                Some(group) if !group.members.is_empty() => {
                    Err(CoordinatorError::UnknownMember(format!(
                        "group {group_id:?} has {} members: only they may commit (with their member id and epoch)",
                        group.members.len()
                    )))
                }
                _ => Ok(None),
            };
        }
        let member = group
            .and_then(|group| group.members.get(member_id))
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        check_epoch(member_id, member, member_epoch)?;
        for (topic, partition) in partitions {
            if !member.held.contains(&(topic.to_string(), partition)) {
                return Err(CoordinatorError::StaleMemberEpoch(format!(
                    "member {member_id:?} does not hold {topic}/{partition} (epoch {member_epoch}); \
                     heartbeat for its current assignment"
                )));
            }
        }
        Ok(Some(member.generation))
    }

    /// Whether the group has members.
    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|group| !group.members.is_empty())
    }

    /// The group as it is now, if it has members.
    pub fn view(&self, group_id: &str, now: Instant) -> Option<GroupView> {
        let group = self.groups.get(group_id)?;
        let members = group
            .members
            .iter()
            .map(|(id, member)| MemberView {
                member_id: id.clone(),
                client_id: member.client_id.clone(),
                member_epoch: member.epoch,
                topics: member.topics.iter().cloned().collect(),
                assignment: member.assignment.clone(),
                pending: member.pending.clone(),
                session_timeout: member.session_timeout,
                since_heartbeat: now.saturating_duration_since(member.last_seen),
            })
            .collect();
        let owners = group
            .members
            .iter()
            .flat_map(|(id, member)| member.held.iter().map(move |tp| (tp.clone(), id.clone())))
            .collect();
        let topics = group
            .members
            .values()
            .flat_map(|member| member.topics.iter().cloned())
            .collect();
        Some(GroupView {
            state: group.state(),
            group_epoch: group.epoch,
            members,
            owners,
            topics,
        })
    }

    /// Ids of the groups with members.
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Forgets every group (this node stopped coordinating).
    pub fn clear(&mut self) {
        self.groups.clear();
    }
}

fn unknown_member(group_id: &str, member_id: &str) -> CoordinatorError {
    CoordinatorError::UnknownMember(format!(
        "{member_id:?} is not a member of group {group_id:?} (its session expired, it left, or the \
         coordinator restarted): rejoin"
    ))
}

fn check_epoch(
    member_id: &str,
    member: &Member,
    member_epoch: u64,
) -> Result<(), CoordinatorError> {
    if member_epoch < member.joined_epoch {
        return Err(CoordinatorError::StaleMemberEpoch(format!(
            "member {member_id:?} was fenced: epoch {member_epoch} is from before it rejoined at \
             epoch {}",
            member.joined_epoch
        )));
    }
    if member_epoch > member.epoch {
        return Err(CoordinatorError::InvalidArgument(format!(
            "member {member_id:?} has epoch {}, not {member_epoch}",
            member.epoch
        )));
    }
    Ok(())
}

/// The target assignment: every partition of a subscribed topic goes to one member that
/// subscribes to its topic, counts differ by at most one where subscriptions allow, and a
/// partition stays with its `current` member unless balance needs it elsewhere.
///
/// Deterministic: members and partitions are visited in order.
pub fn assign(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    current: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut target: BTreeMap<String, BTreeSet<Tp>> = subscriptions
        .keys()
        .map(|id| (id.clone(), BTreeSet::new()))
        .collect();
    let eligible = |member: &str, tp: &Tp| subscriptions[member].contains(&tp.0);
    let exists = |tp: &Tp| partitions.get(&tp.0).is_some_and(|count| tp.1 < *count);
    let mut taken = BTreeSet::new();
    for (member, set) in current {
        if !subscriptions.contains_key(member) {
            continue;
        }
        for tp in set {
            if exists(tp) && eligible(member, tp) && taken.insert(tp.clone()) {
                target.get_mut(member).expect("member").insert(tp.clone());
            }
        }
    }
    for (topic, count) in partitions {
        for partition in 0..*count {
            let tp = (topic.clone(), partition);
            if taken.contains(&tp) {
                continue;
            }
            let least = target
                .iter()
                .filter(|(member, _)| eligible(member, &tp))
                .min_by_key(|(_, set)| set.len())
                .map(|(member, _)| member.clone());
            if let Some(member) = least {
                target.get_mut(&member).expect("member").insert(tp.clone());
                taken.insert(tp);
            }
        }
    }
    // Move partitions from fuller to emptier members until no move can even them out. Each move
    // lowers the sum of squared counts, so this ends.
    loop {
        let mut by_count: Vec<(String, usize)> = target
            .iter()
            .map(|(member, set)| (member.clone(), set.len()))
            .collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut moved = None;
        'search: for (from, from_count) in &by_count {
            for (to, to_count) in by_count.iter().rev() {
                if *from_count <= to_count + 1 {
                    break;
                }
                // Move the last partition (the one a sticky assignment added most recently
                // in order), so low partitions stay put.
                if let Some(tp) = target[from].iter().rev().find(|tp| eligible(to, tp)) {
                    moved = Some((from.clone(), to.clone(), tp.clone()));
                    break 'search;
                }
            }
        }
        let Some((from, to, tp)) = moved else {
            break;
        };
        target.get_mut(&from).expect("member").remove(&tp);
        target.get_mut(&to).expect("member").insert(tp);
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: u32) -> Tp {
        (topic.to_string(), partition)
    }

    fn counts(topic: &str) -> Option<u32> {
        match topic {
            "a" => Some(6),
            "b" => Some(3),
            _ => None,
        }
    }

    fn join(coordinator: &mut Coordinator, id: &str, now: Instant) -> MemberAssignment {
        coordinator
            .join(
                Join {
                    group: "g".to_string(),
                    member_id: id.to_string(),
                    topics: vec!["a".to_string()],
                    session_timeout: Duration::from_secs(10),
                    client_id: String::new(),
                },
                now,
                100,
                0,
                &counts,
                || unreachable!("ids given"),
            )
            .expect("join")
    }

    fn beat(
        coordinator: &mut Coordinator,
        reply: &MemberAssignment,
        now: Instant,
    ) -> MemberAssignment {
        coordinator
            .heartbeat(
                Heartbeat {
                    group_id: "g",
                    member_id: &reply.member_id,
                    member_epoch: reply.member_epoch,
                    owned: &reply.assignment,
                },
                now,
                0,
                &counts,
            )
            .expect("heartbeat")
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_releases_it() {
        let now = Instant::now();
        let mut c = Coordinator::default();
        let m1 = join(&mut c, "m1", now);
        assert_eq!(m1.assignment.len(), 6);
        let m2 = join(&mut c, "m2", now);
        // m2's share is still held by m1: pending, not granted.
        assert!(m2.assignment.is_empty());
        assert_eq!(m2.pending.len(), 3);
        // m1 learns it must give up three.
        let m1 = beat(&mut c, &m1, now);
        assert_eq!(m1.assignment.len(), 3);
        // m2 asks again before m1 released anything: still pending.
        let m2 = beat(&mut c, &m2, now);
        assert!(m2.assignment.is_empty());
        // m1 releases (reports only what it keeps, with its new epoch); then m2 gets them.
        let m1 = beat(&mut c, &m1, now);
        let m2 = beat(&mut c, &m2, now);
        assert_eq!(m2.assignment.len(), 3);
        assert!(m1.assignment.is_disjoint(&m2.assignment));
        assert!(m2.member_epoch > m1.member_epoch);
        assert_eq!(c.view("g", now).expect("group").state, "stable");
        // Sticky: m1 kept partitions it had.
        assert!(m1.assignment.contains(&tp("a", 0)));
    }

    #[test]
    fn expiry_hands_partitions_over() {
        let now = Instant::now();
        let mut c = Coordinator::default();
        let m1 = join(&mut c, "m1", now);
        let m2 = join(&mut c, "m2", now);
        let _ = m1;
        // m1 never heartbeats again; m2 keeps beating.
        let later = now + Duration::from_secs(11);
        let m2 = beat(&mut c, &m2, later);
        assert!(m2.assignment.is_empty());
        assert_eq!(c.expire(later, &counts), 1);
        let m2 = beat(&mut c, &m2, later);
        assert_eq!(m2.assignment.len(), 6);
        // The expired member is told to rejoin.
        let none = BTreeSet::new();
        let beat = Heartbeat {
            group_id: "g",
            member_id: "m1",
            member_epoch: 1,
            owned: &none,
        };
        let error = c.heartbeat(beat, later, 0, &counts).expect_err("expired");
        assert!(
            matches!(error, CoordinatorError::UnknownMember(_)),
            "{error:?}"
        );
    }

    #[test]
    fn commits_are_fenced() {
        let now = Instant::now();
        let mut c = Coordinator::default();
        let m1 = join(&mut c, "m1", now);
        let held = [("a", 0u32)];
        assert_eq!(
            c.check_commit("g", "m1", m1.member_epoch, held),
            Ok(Some(0))
        );
        // An operator may not commit while members run.
        assert!(matches!(
            c.check_commit("g", "", 0, held),
            Err(CoordinatorError::UnknownMember(_))
        ));
        // Rejoin: the old incarnation's epoch is fenced.
        let again = join(&mut c, "m1", now);
        assert!(matches!(
            c.check_commit("g", "m1", m1.member_epoch, held),
            Err(CoordinatorError::StaleMemberEpoch(_))
        ));
        assert!(c.check_commit("g", "m1", again.member_epoch, held).is_ok());
        // A partition the member does not hold.
        let m2 = join(&mut c, "m2", now);
        assert!(matches!(
            c.check_commit("g", "m2", m2.member_epoch, [("a", 0)]),
            Err(CoordinatorError::StaleMemberEpoch(_))
        ));
        c.leave("g", "m1", &counts).expect("leave");
        c.leave("g", "m2", &counts).expect("leave");
        assert!(!c.has_members("g"));
        assert_eq!(c.check_commit("g", "", 0, held), Ok(None));
    }

    #[test]
    fn join_validates() {
        let now = Instant::now();
        let mut c = Coordinator::default();
        let mut request = Join {
            group: "g".to_string(),
            member_id: String::new(),
            topics: vec!["nope".to_string()],
            session_timeout: Duration::ZERO,
            client_id: String::new(),
        };
        let id = || "x".to_string();
        assert!(matches!(
            c.join(request.clone(), now, 1, 0, &counts, id),
            Err(CoordinatorError::UnknownTopic(_))
        ));
        request.topics = vec![];
        assert!(matches!(
            c.join(request.clone(), now, 1, 0, &counts, id),
            Err(CoordinatorError::InvalidArgument(_))
        ));
        request.topics = vec!["a".to_string()];
        request.session_timeout = Duration::from_millis(10);
        assert!(matches!(
            c.join(request.clone(), now, 1, 0, &counts, id),
            Err(CoordinatorError::InvalidArgument(_))
        ));
        request.session_timeout = Duration::ZERO;
        let reply = c.join(request, now, 1, 0, &counts, id).expect("join");
        assert_eq!(reply.member_id, "x");
        assert_eq!(reply.heartbeat_interval, SESSION_TIMEOUT_DEFAULT / 3);
    }

    #[test]
    fn heterogeneous_subscriptions() {
        let mut subscriptions = BTreeMap::new();
        subscriptions.insert("m1".to_string(), BTreeSet::from(["a".to_string()]));
        subscriptions.insert(
            "m2".to_string(),
            BTreeSet::from(["a".to_string(), "b".to_string()]),
        );
        let partitions = BTreeMap::from([("a".to_string(), 6), ("b".to_string(), 3)]);
        let target = assign(&subscriptions, &partitions, &BTreeMap::new());
        // b's 3 partitions can only go to m2; a's 6 are split to even the counts out.
        assert_eq!(target["m1"].len() + target["m2"].len(), 9);
        assert!(target["m1"].len().abs_diff(target["m2"].len()) <= 1);
        assert!(target["m1"].iter().all(|(topic, _)| topic == "a"));
        assert_eq!(
            target["m2"]
                .iter()
                .filter(|(topic, _)| topic == "b")
                .count(),
            3
        );
    }

    proptest! {
        /// Any sequence of joins, leaves and heartbeats keeps holdings disjoint, and once every
        /// member has heartbeat twice the group is stable with a balanced, complete assignment.
        #[test]
        fn holdings_stay_disjoint_and_converge(ops in prop::collection::vec((0u8..3, 0u8..6), 1..60)) {
            let now = Instant::now();
            let mut c = Coordinator::default();
            let mut replies: BTreeMap<String, MemberAssignment> = BTreeMap::new();
            for (op, who) in ops {
                let id = format!("m{who}");
                match op {
                    0 => {
                        let reply = join(&mut c, &id, now);
                        replies.insert(id, reply);
                    }
                    1 => {
                        if replies.remove(&id).is_some() {
                            c.leave("g", &id, &counts).expect("leave");
                        }
                    }
                    _ => {
                        if let Some(reply) = replies.get(&id).cloned() {
                            let next = beat(&mut c, &reply, now);
                            replies.insert(id, next);
                        }
                    }
                }
                let view = c.view("g", now);
                let mut seen = BTreeSet::new();
                for reply in replies.values() {
                    for tp in &reply.assignment {
                        prop_assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
                    }
                }
                if let Some(view) = view {
                    prop_assert!(view.owners.len() <= 6);
                }
            }
            for _ in 0..3 {
                for id in replies.keys().cloned().collect::<Vec<_>>() {
                    let next = beat(&mut c, &replies[&id], now);
                    replies.insert(id, next);
                }
            }
            if !replies.is_empty() {
                let total: usize = replies.values().map(|r| r.assignment.len()).sum();
                prop_assert_eq!(total, 6);
                let max = replies.values().map(|r| r.assignment.len()).max().unwrap_or(0);
                let min = replies.values().map(|r| r.assignment.len()).min().unwrap_or(0);
                prop_assert!(max - min <= 1, "unbalanced: {max} vs {min}");
                prop_assert_eq!(c.view("g", now).expect("group").state, "stable");
            }
        }
    }
}
