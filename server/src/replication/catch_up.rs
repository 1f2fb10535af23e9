//! Which local followers are behind their leader: the signal of `/readyz`'s "catching up".
//!
//! The signal is the leader's commit index as the follower hears it. A leader puts its commit
//! index in every append (`MsgAppend.commit`), and in a heartbeat the smaller of it and what it
//! believes the follower holds (`MsgHeartbeat.commit`): both are lower bounds of the leader's
//! commit index. The driver records the largest it heard from the current leader in the
//! current term (see [`heard_from_leader`]); a follower whose own commit index is more than
//! [`CATCH_UP_SLACK_ENTRIES`] below it is catching up. A follower that keeps up commits what
//! each append names as soon as it takes the append (see the constant); one whose disk was
//! wiped, or that was down while the others went on, is behind by everything it missed until
//! appends of at most 1 MiB each (`max_size_per_msg`) bring it back.
//!
//! The driver publishes the groups that are behind once per tick in a [`CatchUp`] board, read
//! by the broker (`Broker::readiness`) without a round trip to the driver thread.

use std::collections::BTreeMap;
use std::sync::RwLock;

use raft::StateRole;
use raft::prelude::{Message, MessageType};

use super::group::Group;
use super::handle::RaftGroupId;

/// A follower at most this many raft entries below the leader's commit index counts as caught
/// up. A follower that keeps up is not behind at all once it took an append: each append names
/// a commit index no further than the entries sent before it, and the follower commits up to
/// it at once. It can trail by what a dropped append carried (a full peer queue), until the
/// leader sends it again; the slack keeps such a blip from flapping `/readyz`.
pub const CATCH_UP_SLACK_ENTRIES: u64 = 64;

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

    /// Replaces the board (a write only when something changed: usually nothing is behind).
    pub(super) fn publish(&self, behind: BTreeMap<RaftGroupId, Behind>) {
        if *self.behind.read().expect("catch-up lock poisoned") != behind {
            *self.behind.write().expect("catch-up lock poisoned") = behind;
        }
    }
}

/// The leader's commit index a group heard in a term: (term, commit).
pub(super) type LeaderCommit = (u64, u64);

/// What a message tells of its leader's commit index, read before the group steps it (the
/// lost-log patch may lower a heartbeat's commit): `Some((term, from, commit))` for appends and
/// heartbeats.
pub(super) fn leader_commit_in(message: &Message) -> Option<(u64, u64, u64)> {
    matches!(
        message.msg_type,
        MessageType::MsgAppend | MessageType::MsgHeartbeat
    )
    .then_some((message.term, message.from, message.commit))
}

/// Records `heard` (from [`leader_commit_in`]) once the group stepped the message, if it came
/// from the group's leader in its current term.
pub(super) fn heard_from_leader(group: &mut Group, heard: (u64, u64, u64)) {
    let (term, from, commit) = heard;
    let raft = &group.node.raft;
    if raft.term != term || raft.leader_id != from || raft.state != StateRole::Follower {
        return;
    }
    group.leader_commit = match group.leader_commit {
        (known_term, known) if known_term == term => (term, known.max(commit)),
        _ => (term, commit),
    };
}

/// Whether the group's replica here is a follower behind its leader (see the module doc).
pub(super) fn behind(group: &Group) -> Option<Behind> {
    let raft = &group.node.raft;
    let (term, leader_commit) = group.leader_commit;
    if raft.state != StateRole::Follower || raft.leader_id == 0 || term != raft.term {
        return None;
    }
    let committed = raft.raft_log.committed;
    (leader_commit > committed.saturating_add(CATCH_UP_SLACK_ENTRIES)).then_some(Behind {
        committed,
        leader_commit,
    })
}
