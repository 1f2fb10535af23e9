//! A patch to raft's protocol for a node that lost what it acknowledged (its data directory
//! replaced by an empty one): see [`survive_lost_log`].

use raft::StateRole;
use raft::prelude::{Message, MessageType};

use super::group::Group;
use super::handle::RaftGroupId;

/// Marks a follower's report that its log ends before the leader's commit index.
const LOST_LOG: &[u8] = b"strata:log-lost";

/// Raft assumes a node never loses what it acknowledged. A node whose data directory was
/// replaced by an empty one breaks that; rather than panic (a follower told to commit past its
/// log) or stall (a leader ignoring the follower's "my log is shorter" as stale), both sides
/// adjust: the follower takes a commit index no further than its log, and the leader, seeing a
/// follower reject an append below what it had acknowledged, replicates to it from its actual
/// log end (probing down to a snapshot when needed).
///
/// What a wipe loses cannot be recovered this way: the wiped node's vote in the current term
/// and its copy of the log. The log is still on the other replicas (a quorum acknowledged it);
/// wiping a quorum at once loses data, as in any raft system.
///
/// Returns a message for the leader: a follower that finds the leader's commit index beyond its
/// log tells the leader (as an append rejection) where its log ends, since an idle group sends
/// no append that would reveal it.
pub(super) fn survive_lost_log(
    id: RaftGroupId,
    group: &mut Group,
    message: &mut Message,
) -> Option<Message> {
    match message.msg_type {
        MessageType::MsgHeartbeat => {
            let last = group.node.raft.raft_log.last_index();
            if message.commit > last {
                message.commit = last;
                return Some(lost_log_report(message, last));
            }
        }
        // Only the follower's own report counts: an ordinary rejection may be stale (a
        // reordered reply to an old append) and says nothing about a lost log.
        MessageType::MsgAppendResponse
            if message.reject
                && message.context.as_ref() == LOST_LOG
                && message.term == group.node.raft.term
                && group.node.raft.state == StateRole::Leader =>
        {
            let from = message.from;
            if let Some(progress) = group.node.raft.mut_prs().get_mut(from)
                && message.reject_hint < progress.matched
            {
                tracing::warn!(
                    group = id,
                    node = from,
                    acknowledged = progress.matched,
                    log_end = message.reject_hint,
                    "a follower's log is shorter than it acknowledged (a wiped disk?): \
                     replicating to it again"
                );
                progress.matched = message.reject_hint;
                progress.become_probe();
            }
        }
        _ => {}
    }
    None
}

/// A follower's report, in answer to `heartbeat`, that its log ends at `last`.
fn lost_log_report(heartbeat: &Message, last: u64) -> Message {
    let mut reply = Message::default();
    reply.set_msg_type(MessageType::MsgAppendResponse);
    reply.to = heartbeat.from;
    reply.from = heartbeat.to;
    reply.term = heartbeat.term;
    reply.reject = true;
    reply.index = last;
    reply.reject_hint = last;
    reply.context = LOST_LOG.to_vec().into();
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report answers the heartbeat's sender in its term, as a rejection naming the log's
    /// end and marked as a lost log (so the leader does not take it for a stale rejection).
    #[test]
    fn the_report_names_the_log_end_to_the_heartbeat_sender() {
        let heartbeat = Message {
            msg_type: MessageType::MsgHeartbeat,
            from: 2,
            to: 1,
            term: 7,
            commit: 40,
            ..Message::default()
        };
        let report = lost_log_report(&heartbeat, 12);
        assert_eq!(report.msg_type, MessageType::MsgAppendResponse);
        assert_eq!((report.from, report.to, report.term), (1, 2, 7));
        assert!(report.reject);
        assert_eq!((report.index, report.reject_hint), (12, 12));
        assert_eq!(report.context.as_ref(), LOST_LOG);
    }
}
