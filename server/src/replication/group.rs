//! One raft group as the driver holds it: its raft node and machine, the proposals waiting for
//! their entries to commit (matched by the proposal id carried in each entry's context), and
//! the bookkeeping shared by the driver's concerns (what was appended, whether the machine
//! knows it leads, when it last did anything).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use raft::prelude::Entry;
use raft::{RawNode, StateRole};
use tokio::sync::watch;

use super::handle::{Committed, ErasedResult, ProposeError, RaftGroupId, Reply};
use super::machine::{AnyMachine, Erased};
use super::raft_storage::RaftStorage;

/// A proposal raft took, waiting for its entry to commit.
pub(super) struct Pending {
    pub(super) reply: Reply,
    /// Replies owed to retries of the same batch that came while it was in flight.
    pub(super) duplicates: Vec<Reply>,
    /// When raft took it (the start of its commit latency).
    pub(super) proposed_at: Instant,
}

impl Pending {
    /// Answers the proposal and every retry of it with `result`.
    pub(super) fn resolve(self, result: ErasedResult) {
        for duplicate in self.duplicates {
            let _ = duplicate.send(result.clone());
        }
        let _ = self.reply.send(result);
    }
}

pub(super) struct Group {
    pub(super) node: RawNode<RaftStorage>,
    pub(super) machine: Box<dyn AnyMachine>,
    pub(super) pending: HashMap<u64, Pending>,
    /// Answers to retried batches whose original is in the log but not committed yet, by the
    /// original's raft index.
    pub(super) waiting: BTreeMap<u64, Vec<(Reply, Committed<Erased>)>>,
    /// Entries appended but not applied yet: (raft index, offset after it, proposal id), in
    /// raft-index order, each index one more than the one before. The proposal id travels in
    /// the entry's context, which the log does not store, so it is remembered here when raft
    /// hands the entry over for persistence.
    pub(super) appended: VecDeque<(u64, u64, Option<u64>)>,
    /// The raft index of the last entry applied through the machine (or taken as applied:
    /// the start, a snapshot). Entries apply one after another from here.
    pub(super) applied: u64,
    pub(super) high_watermark: watch::Sender<u64>,
    pub(super) leader: watch::Sender<u64>,
    pub(super) term: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(super) in_sync: watch::Sender<Vec<u64>>,
    pub(super) preferred_leader: Option<u64>,
    pub(super) stopped: Option<tokio::sync::mpsc::UnboundedSender<(RaftGroupId, String)>>,
    /// Ticks since the group last did anything but heartbeats.
    pub(super) idle_ticks: u64,
    /// The voters the group should have, when told (see `DriverHandle::set_voters`).
    pub(super) desired_voters: Option<Vec<u64>>,
    /// The log was written and needs an fsync this round.
    pub(super) dirty: bool,
    pub(super) applied_since_snapshot: u64,
    /// Whether the machine was told it leads (see [`sync_leadership`]).
    pub(super) machine_leads: bool,
    /// The raft series of the group's kind.
    pub(super) metrics: crate::metrics::raft::GroupRaftMetrics,
    /// The last leader this node knew of (0: none yet), to count leader changes.
    pub(super) last_leader: u64,
    /// The largest commit index a leader named to this replica (see `catch_up`).
    pub(super) leader_commit: u64,
}

/// The voters of a group's applied configuration, sorted.
pub(super) fn current_voters(node: &RawNode<RaftStorage>) -> Vec<u64> {
    let mut voters: Vec<u64> = node.raft.prs().conf().voters().ids().iter().collect();
    voters.sort_unstable();
    voters
}

/// Whether `node_id` is the group's only voter.
pub(super) fn alone(node: &RawNode<RaftStorage>, node_id: u64) -> bool {
    let voters = node.raft.prs().conf().voters().ids();
    voters.len() == 1 && voters.contains(node_id)
}

/// Remembers a proposal raft took (its reply comes when it commits), or answers at once when
/// raft refused it.
pub(super) fn track(group: &mut Group, proposal: u64, proposed: raft::Result<()>, reply: Reply) {
    group.idle_ticks = 0;
    match proposed {
        Ok(()) => {
            group.metrics.proposals.inc();
            let previous = group.pending.insert(
                proposal,
                Pending {
                    reply,
                    duplicates: Vec::new(),
                    proposed_at: Instant::now(),
                },
            );
            assert!(previous.is_none(), "proposal id {proposal} used twice");
        }
        Err(error) => {
            let _ = reply.send(Err(ProposeError::Dropped(error.to_string())));
        }
    }
}

/// Fails every proposal the group owes an answer, and every retry waiting on one.
pub(super) fn fail_pending(group: &mut Group, error: ProposeError<Erased>) {
    for (_, pending) in group.pending.drain() {
        pending.resolve(Err(error.clone()));
    }
    for (_, waiters) in std::mem::take(&mut group.waiting) {
        for (reply, _) in waiters {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// Tells the group's machine when raft's role changed from leading to not leading or back.
///
/// Raft changes role inside `step` (a vote response makes a candidate leader), and a proposal
/// may be handled right after in the same round, before the Ready that announces the change.
/// So this runs before every admission as well as on each soft-state change: a new leader
/// must admit against the producer state rebuilt from its log, never the follower's view,
/// which lacks the uncommitted tail (a retried batch whose original sits there would be
/// stored twice). Raft's log is persisted by then: raft-rs makes a node leader only when its
/// whole log is.
///
/// # Errors
/// The machine could not rebuild its state: the group must stop.
pub(super) fn sync_leadership(group: &mut Group) -> Result<(), String> {
    let leads = group.node.raft.state == StateRole::Leader;
    if leads != group.machine_leads {
        let committed = group.node.raft.raft_log.committed;
        group.machine.leadership(leads, committed)?;
        group.machine_leads = leads;
    }
    Ok(())
}

/// The proposal id a leader put in an entry's context.
pub(super) fn proposal_id(entry: &Entry) -> Option<u64> {
    let bytes: [u8; 8] = entry.context.get(..8)?.try_into().ok()?;
    (entry.context.len() == 8).then(|| u64::from_be_bytes(bytes))
}

impl Group {
    /// Runs the group's retention policy, if its machine has one, up to what raft applied, with
    /// ages measured at `now_ms`, and gives back the space its log holds ahead for large
    /// appends if it took none since the last run. A failure is logged and tried again next
    /// time: both only free space.
    pub(super) fn run_retention(&mut self, now_ms: i64) {
        let Some((policy, raft_index_max)) = self.machine.retention() else {
            return;
        };
        let applied = self.node.raft.raft_log.applied.min(raft_index_max);
        let log = self.node.store().log().clone();
        let mut written = log.write().expect("log lock poisoned");
        if let Err(error) = written.give_back_idle_slack() {
            tracing::warn!(%error, "giving back space held ahead of a quiet log failed");
        }
        let outcome = written.apply_retention(&policy, now_ms, applied);
        drop(written);
        match outcome {
            Ok(outcome) if outcome.segments_removed > 0 => tracing::info!(
                dir = %log.read().expect("log lock poisoned").dir().display(),
                segments = outcome.segments_removed,
                bytes = outcome.bytes_removed,
                log_start_offset = outcome.log_start_offset,
                "retention removed segments"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "retention failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only an eight-byte context is a proposal id: a leader's empty entry, or a context of
    /// another length, names no proposal.
    #[test]
    fn proposal_ids_come_from_eight_byte_contexts() {
        let entry = |context: &[u8]| Entry {
            context: context.to_vec().into(),
            ..Entry::default()
        };
        assert_eq!(
            proposal_id(&entry(&(1u64 << 40 | 7).to_be_bytes())),
            Some(1 << 40 | 7)
        );
        assert_eq!(proposal_id(&entry(&[])), None);
        assert_eq!(proposal_id(&entry(&[0; 7])), None);
        assert_eq!(proposal_id(&entry(&[0; 9])), None);
    }
}
