//! Quiet groups and leader balance: an idle group stops ticking (no heartbeats, so thousands
//! of idle partitions cost next to nothing) and wakes on any activity; a leader publishes its
//! in-sync voters and hands leadership to its group's preferred leader once that one is
//! caught up, so leaders stay spread over the nodes.

use raft::StateRole;

use super::group::{Group, current_voters};
use super::handle::Outbox;

/// Ticks without activity after which a group may go quiet.
pub(super) const QUIET_AFTER_TICKS: u64 = 30;

/// How often (in ticks) a leader refreshes its in-sync replicas and hands leadership to its
/// group's preferred leader when that one is caught up.
pub(super) const LEADERSHIP_CHECK_TICKS: u64 = 3;

/// Whether an idle group may skip this tick, sending no heartbeats (so thousands of idle
/// partitions cost next to nothing). A group is quiet after [`QUIET_AFTER_TICKS`] without
/// proposals or appends, when everything is committed and applied and:
/// - on the leader: every voter has the whole log (a follower that lags keeps it ticking);
/// - on a follower: its leader's node is alive (heard from recently: the transport keeps every
///   pair of nodes in touch). When the leader's node goes silent the follower ticks again and
///   elects a new leader, a few seconds later than for a busy group.
///
/// Any proposal or append wakes the group on every node.
pub(super) fn quiet(node_id: u64, outbox: &dyn Outbox, group: &Group) -> bool {
    if group.idle_ticks < QUIET_AFTER_TICKS || !group.pending.is_empty() {
        return false;
    }
    let raft = &group.node.raft;
    let log = &raft.raft_log;
    let last = log.last_index();
    if log.committed != last || log.applied != last {
        return false;
    }
    match raft.state {
        StateRole::Leader => {
            group
                .desired_voters
                .as_ref()
                .is_none_or(|desired| *desired == current_voters(&group.node))
                && raft
                    .prs()
                    .iter()
                    .all(|(id, progress)| *id == node_id || progress.matched == last)
        }
        StateRole::Follower => raft.leader_id != 0 && outbox.alive(raft.leader_id),
        _ => false,
    }
}

/// For a group this node leads: publishes which voters are in sync, and hands leadership to
/// the preferred leader once it has the whole log (so leaders stay spread over the nodes, and
/// return where they belong after a node comes back).
///
/// In sync: this node, and each voter whose log holds everything committed and whose node
/// was heard from recently ([`Outbox::alive`]). Without the second condition a node that died
/// while its group was idle would stay in sync for good, since nothing new is committed
/// that it could miss (as Kafka drops a replica from its ISR after a time without fetches).
pub(super) fn check_leadership(node_id: u64, outbox: &dyn Outbox, group: &mut Group) {
    publish_in_sync(node_id, outbox, group);
    let raft = &group.node.raft;
    let last = raft.raft_log.last_index();
    let Some(preferred) = group.preferred_leader else {
        return;
    };
    if preferred == node_id || raft.lead_transferee.is_some() {
        return;
    }
    let caught_up = raft
        .prs()
        .get(preferred)
        .is_some_and(|progress| progress.recent_active && progress.matched == last);
    if caught_up {
        group.node.transfer_leader(preferred);
    }
}

/// Whether this node leads the group and has committed an entry of its own term: only then
/// do its followers' progress figures say what they hold (a new leader starts them at zero).
pub(super) fn leads_with_a_commit_of_its_term(group: &Group) -> bool {
    let raft = &group.node.raft;
    raft.state == StateRole::Leader
        && raft
            .raft_log
            .term(raft.raft_log.committed)
            .is_ok_and(|term| term == raft.term)
}

/// For a group this node leads: publishes which voters are in sync (see [`check_leadership`]).
/// Called on every leadership check, and whenever a leader's hard state changes once it has
/// committed in its term (its first commit as leader among them), so a new partition's
/// in-sync set is known from its first commit, not from the next check.
pub(super) fn publish_in_sync(node_id: u64, outbox: &dyn Outbox, group: &Group) {
    let raft = &group.node.raft;
    let committed = raft.raft_log.committed;
    let mut in_sync: Vec<u64> = raft
        .prs()
        .iter()
        .filter(|(id, progress)| {
            **id == node_id || (progress.matched >= committed && outbox.alive(**id))
        })
        .map(|(id, _)| *id)
        .collect();
    in_sync.sort_unstable();
    group.in_sync.send_if_modified(|current| {
        let changed = *current != in_sync;
        if changed {
            *current = in_sync;
        }
        changed
    });
}
