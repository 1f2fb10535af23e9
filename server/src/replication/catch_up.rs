//! Which local followers are behind their leader: the signal of `/readyz`'s "catching up".
//!
//! The signal is the leader's commit index as the follower hears it. A leader puts its commit
//! index in every append (`MsgAppend.commit`), and in a heartbeat the smaller of it and what it
//! believes the follower holds (`MsgHeartbeat.commit`): both are lower bounds of the leader's
//! commit index. The driver records the largest it heard (see [`heard_from_leader`]); a
//! replica not leading whose own commit index is more than [`CATCH_UP_SLACK_ENTRIES`] below
//! it is catching up. A follower that keeps up commits what
//! each append names as soon as it takes the append (see the constant); one whose disk was
//! wiped, or that was down while the others went on, is behind by everything it missed until
//! appends of at most 1 MiB each (`max_size_per_msg`) bring it back.
//!
//! The driver publishes the groups that are behind in a [`CatchUp`](super::handle::CatchUp)
//! board (beside the driver's handle, which reads it), read by the broker
//! (`Broker::readiness`) without a round trip to the driver thread: at once when a step makes
//! a group fall behind or catch up, and every tick with fresh figures.

use raft::StateRole;
use raft::prelude::{Message, MessageType};

use super::group::Group;
use super::handle::Behind;

/// A follower at most this many raft entries below the leader's commit index counts as caught
/// up. A follower that keeps up is not behind at all once it took an append: each append names
/// a commit index no further than the entries sent before it, and the follower commits up to
/// it at once. It can trail by what a dropped append carried (a full peer queue), until the
/// leader sends it again; the slack keeps such a blip from flapping `/readyz`.
pub const CATCH_UP_SLACK_ENTRIES: u64 = 64;

/// What a message tells of the group's commit index, read before the group steps it (the
/// lost-log patch may lower a heartbeat's commit): the commit of appends and heartbeats.
pub(super) fn leader_commit_in(message: &Message) -> Option<u64> {
    matches!(
        message.msg_type,
        MessageType::MsgAppend | MessageType::MsgHeartbeat
    )
    .then_some(message.commit)
}

/// Records a commit index a leader named (from [`leader_commit_in`]), once the group stepped
/// its message (so it passed `validate::check`: it came from a voter of the group).
///
/// The largest ever heard is kept, whatever the term and whoever led: an index a leader
/// called committed stays committed, so it is a lower bound of the group's commit index
/// across elections. Forgetting it when the leader or the term changes would let a follower
/// still far behind look caught up until the new leader's first append.
pub(super) fn heard_from_leader(group: &mut Group, commit: u64) {
    group.leader_commit = group.leader_commit.max(commit);
}

/// Whether the group's replica here is behind the commit index its leaders named (see the
/// module doc). A leader is never behind: it holds everything committed.
pub(super) fn behind(group: &Group) -> Option<Behind> {
    let raft = &group.node.raft;
    if raft.state == StateRole::Leader {
        return None;
    }
    let committed = raft.raft_log.committed;
    let leader_commit = group.leader_commit;
    (leader_commit > committed.saturating_add(CATCH_UP_SLACK_ENTRIES)).then_some(Behind {
        committed,
        leader_commit,
    })
}
