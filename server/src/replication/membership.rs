//! Membership policy: a group's leader moves its voters toward the replicas the metadata names
//! (add the missing first, remove the leaving once everyone desired has caught up, one change
//! at a time, handing leadership over first when the leader itself leaves), and a node hands
//! the leadership of every group it leads to a caught-up voter before a graceful stop.

use raft::prelude::{ConfChange, ConfChangeType};
use raft::{RawNode, StateRole};

use super::group::{Group, alone, current_voters};
use super::handle::RaftGroupId;
use super::raft_storage::RaftStorage;

/// What a leader does next to move its group toward the desired voters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MembershipStep {
    /// Nothing now: no desired voters, the voters match, a change is pending, or a desired
    /// voter has not caught up yet.
    Wait,
    Add(u64),
    Remove(u64),
    /// The leader itself is leaving: hand leadership to this desired voter first.
    HandTo(u64),
}

/// The next step from `current` voters toward `desired`, on the leader `node_id`, where
/// `caught_up(node)` says whether a voter's log holds everything committed. Missing voters are
/// added first (they catch up as followers); then, once every desired voter has everything
/// committed, a voter that is leaving is removed. A leader that is itself leaving hands its
/// leadership to a desired voter instead, and the new leader removes it.
pub(super) fn membership_step(
    node_id: u64,
    current: &[u64],
    desired: &[u64],
    caught_up: impl Fn(u64) -> bool,
) -> MembershipStep {
    if desired.is_empty() || current == desired {
        return MembershipStep::Wait;
    }
    if let Some(missing) = desired.iter().find(|node| !current.contains(node)) {
        return MembershipStep::Add(*missing);
    }
    if !desired
        .iter()
        .all(|node| *node == node_id || caught_up(*node))
    {
        return MembershipStep::Wait;
    }
    let Some(leaving) = current.iter().find(|node| !desired.contains(node)).copied() else {
        return MembershipStep::Wait;
    };
    if leaving != node_id {
        return MembershipStep::Remove(leaving);
    }
    match desired.iter().find(|node| **node != node_id) {
        Some(target) => MembershipStep::HandTo(*target),
        None => MembershipStep::Wait,
    }
}

/// On a group's leader: one step toward its desired voters (see [`membership_step`]), when no
/// change is pending and no leadership transfer runs.
pub(super) fn change_membership(id: RaftGroupId, node_id: u64, group: &mut Group) {
    let Some(desired) = group.desired_voters.as_deref() else {
        return;
    };
    if group.node.raft.has_pending_conf() {
        return;
    }
    let current = current_voters(&group.node);
    let raft = &group.node.raft;
    // Caught up: holds everything committed (a busy group's log end moves on all the time).
    let committed = raft.raft_log.committed;
    let step = membership_step(node_id, &current, desired, |node| {
        raft.prs()
            .get(node)
            .is_some_and(|progress| progress.matched >= committed)
    });
    if current != desired {
        tracing::debug!(group = id, ?current, ?desired, transferee = ?raft.lead_transferee, "membership differs");
    }
    let mut change = ConfChange::default();
    match step {
        MembershipStep::Wait => return,
        MembershipStep::HandTo(target) => {
            if raft.lead_transferee.is_none() {
                group.node.transfer_leader(target);
            }
            return;
        }
        MembershipStep::Add(node) => {
            change.set_change_type(ConfChangeType::AddNode);
            change.node_id = node;
        }
        MembershipStep::Remove(node) => {
            change.set_change_type(ConfChangeType::RemoveNode);
            change.node_id = node;
        }
    }
    tracing::info!(group = id, change = ?change.get_change_type(), node = change.node_id, "changing a group's membership");
    if let Err(error) = group.node.propose_conf_change(Vec::new(), change) {
        tracing::warn!(group = id, %error, "proposing a membership change failed");
    }
}

/// Records the voters `group` should have; the first is its preferred leader.
pub(super) fn set_desired_voters(group: &mut Group, mut voters: Vec<u64>) {
    // The first replica is the preferred leader (a moved replica set may have a new first);
    // then the set, sorted.
    group.preferred_leader = (voters.len() > 1).then(|| voters[0]);
    voters.sort_unstable();
    if group.desired_voters.as_ref() != Some(&voters) {
        group.desired_voters = Some(voters);
        group.idle_ticks = 0;
    }
}

/// Whether `member`'s log holds everything the group committed, as its leader sees it; `None`
/// when `node` does not lead.
pub(super) fn member_caught_up(node: &RawNode<RaftStorage>, member: u64) -> Option<bool> {
    let raft = &node.raft;
    (raft.state == StateRole::Leader).then(|| {
        let committed = raft.raft_log.committed;
        raft.prs()
            .get(member)
            .is_some_and(|progress| progress.matched >= committed)
    })
}

/// When this node (`node_id`) leads `group` and no transfer runs: asks raft to move the
/// leadership to the most caught-up active voter, which raft brings up to date and sends
/// MsgTimeoutNow, so it campaigns at once.
pub(super) fn hand_over(node_id: u64, group: &mut Group) {
    let raft = &group.node.raft;
    if raft.state != StateRole::Leader || raft.lead_transferee.is_some() {
        return;
    }
    let target = raft
        .prs()
        .iter()
        .filter(|(id, progress)| **id != node_id && progress.recent_active)
        .max_by_key(|(id, progress)| (progress.matched, std::cmp::Reverse(**id)))
        .map(|(id, _)| *id);
    if let Some(target) = target {
        group.node.transfer_leader(target);
    }
}

/// Whether `group` needs no hand-over from `node_id`: another node leads it, or `node_id` is
/// its only voter.
pub(super) fn handed_over(node_id: u64, group: &Group) -> bool {
    group.node.raft.state != StateRole::Leader || alone(&group.node, node_id)
}

#[cfg(test)]
mod tests {
    use super::MembershipStep::{Add, HandTo, Remove, Wait};
    use super::*;

    /// The membership steps of a leader (node 1), table-driven: add before remove, remove only
    /// once every desired voter caught up, hand over when the leader itself leaves.
    #[test]
    fn membership_steps() {
        let everyone = |_: u64| true;
        let not_4 = |node: u64| node != 4;
        // (current voters, desired voters, which nodes caught up, the step).
        type Case<'a> = (
            &'a [u64],
            &'a [u64],
            &'a dyn Fn(u64) -> bool,
            MembershipStep,
        );
        let cases: [Case; 8] = [
            (&[1, 2, 3], &[1, 2, 3], &everyone, Wait),
            (&[1, 2, 3], &[], &everyone, Wait),
            (&[1, 2, 3], &[1, 2, 3, 4], &everyone, Add(4)),
            (&[1, 2, 3], &[1, 2, 4], &not_4, Add(4)),
            (&[1, 2, 3, 4], &[1, 2, 4], &not_4, Wait),
            (&[1, 2, 3, 4], &[1, 2, 4], &everyone, Remove(3)),
            (&[1, 2, 3, 4], &[2, 3, 4], &everyone, HandTo(2)),
            // The leader does not wait for itself: its own progress is not tracked as caught up.
            (&[1, 2, 3], &[1, 2], &|node: u64| node != 1, Remove(3)),
        ];
        for (current, desired, caught_up, expected) in cases {
            assert_eq!(
                membership_step(1, current, desired, caught_up),
                expected,
                "current {current:?} desired {desired:?}"
            );
        }
    }
}
