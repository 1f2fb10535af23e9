//! The Ready round over every group: take what raft has ready, install snapshots, append
//! entries to the partition logs, write hard state, fsync every written log once (group
//! commit), and only then send what promises persistence and apply what committed, answering
//! the proposals. Controller snapshots are taken here, every [`SNAPSHOT_EVERY_ENTRIES`].
//!
//! Invariants asserted in production (a broken one is a bug; the driver thread's panic stops
//! the process, see `driver::start`): entries apply one after another by raft index, never
//! past the commit index; the appended entries awaiting apply stay in raft-index order.

use std::collections::HashSet;

use bytes::Bytes;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType};
use raft::{Ready, SnapshotStatus, StateRole, Storage};

use super::driver::Driver;
use super::group::{Group, fail_pending, proposal_id, sync_leadership};
use super::handle::{Committed, ConfChangeOutcome, Outbox, ProposeError, RaftGroupId};
use super::machine::Erased;
use super::quiescence;
use super::raft_storage::snapshot_owner_data;

/// Controller snapshots are taken after this many applied entries.
const SNAPSHOT_EVERY_ENTRIES: u64 = 1000;

impl Driver {
    /// One round of the Ready loop over every group: appends, one fsync per written log,
    /// then what must wait for persistence.
    pub(crate) fn process_ready(&mut self) {
        let now = self.clock.now_ms();
        let mut readies = Vec::new();
        let mut failed: Vec<(RaftGroupId, String)> = Vec::new();
        for (id, group) in &mut self.groups {
            match persist_ready(*id, group, &*self.outbox, now) {
                Ok(Some(ready)) => readies.push((*id, ready)),
                Ok(None) => {}
                Err(reason) => failed.push((*id, reason)),
            }
        }
        for (id, reason) in failed {
            self.stop_group(id, &reason);
        }
        if readies.is_empty() {
            return;
        }
        for (id, reason) in self.sync_dirty_logs() {
            self.stop_group(id, &reason);
        }
        let mut failed = Vec::new();
        for (id, mut ready) in readies {
            // A group stopped by its fsync sends nothing that claims persistence.
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            send_messages(&*self.outbox, id, group, ready.take_persisted_messages());
            let mut light = group.node.advance(ready);
            if let Some(commit) = light.commit_index() {
                group.node.mut_store().set_commit(commit);
            }
            send_messages(&*self.outbox, id, group, light.take_messages());
            if let Err(error) = apply_committed(group, light.take_committed_entries()) {
                failed.push((id, error));
                continue;
            }
            group.node.advance_apply();
            maybe_snapshot(id, group);
        }
        for (id, reason) in failed {
            self.stop_group(id, &reason);
        }
    }

    /// Fsyncs every log written this round, in parallel (see [`super::fsync`]): one fsync
    /// covers every batch appended to that log since the last one. Returns the groups whose
    /// fsync failed, with the error: after a failed fsync the page cache may have dropped the
    /// data, so no promise of durability can be kept for them.
    pub(super) fn sync_dirty_logs(&mut self) -> Vec<(RaftGroupId, String)> {
        let mut failed = Vec::new();
        let mut pending = Vec::new();
        for (id, group) in &mut self.groups {
            if !group.dirty {
                continue;
            }
            group.dirty = false;
            match group.node.store().begin_sync() {
                Ok(sync) => pending.push((*id, sync)),
                Err(error) => failed.push((*id, format!("fsync failed: {error}"))),
            }
        }
        let mut unanswered: HashSet<RaftGroupId> = pending.iter().map(|(id, _)| *id).collect();
        for (id, result) in self.fsyncs.complete_all(pending) {
            unanswered.remove(&id);
            if let Err(error) = result {
                if let Some(group) = self.groups.get(&id) {
                    group.node.store().fail_sync(&error);
                }
                failed.push((id, format!("fsync failed: {error}")));
            }
        }
        // Not known to be durable: such a group must not promise persistence. Stopping it
        // (the caller does, for every failed group) reopens its log from the disk.
        for id in unanswered {
            failed.push((
                id,
                "fsync failed: its fsync thread ended without an answer".into(),
            ));
        }
        failed
    }
}

/// The first half of a group's Ready round, before the fsync: soft state, messages that need
/// no persistence, a snapshot, entries committed before, the append of new entries (not yet
/// synced) and the hard state. Returns the Ready to finish after the fsync, if any.
///
/// # Errors
/// The group's storage failed (or its machine could not take over as leader): it must stop.
fn persist_ready(
    id: RaftGroupId,
    group: &mut Group,
    outbox: &dyn Outbox,
    now_ms: i64,
) -> Result<Option<Ready>, String> {
    if !group.node.has_ready() {
        return Ok(None);
    }
    let mut ready = group.node.ready();
    if ready.ss().is_some() || !ready.entries().is_empty() || !ready.committed_entries().is_empty()
    {
        group.idle_ticks = 0;
    }
    if ready.ss().is_some() || ready.hs().is_some() {
        group
            .term
            .store(group.node.raft.term, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(soft) = ready.ss() {
        tracing::debug!(group = id, leader = soft.leader_id, role = ?soft.raft_state, "soft state");
        group.leader.send_replace(soft.leader_id);
        if soft.leader_id != 0 && soft.leader_id != group.last_leader {
            group.last_leader = soft.leader_id;
            group.metrics.leader_changes.inc();
        }
        if soft.raft_state != StateRole::Leader {
            let leader_id = soft.leader_id;
            fail_pending(group, ProposeError::NotLeader { leader_id });
        }
        sync_leadership(group)?;
    }
    if ready.hs().is_some() && quiescence::leads_with_a_commit_of_its_term(group) {
        quiescence::publish_in_sync(group.node.raft.id, outbox, group);
    }
    send_messages(outbox, id, group, ready.take_messages());
    if !ready.snapshot().is_empty() {
        let snapshot = ready.snapshot().clone();
        group
            .node
            .mut_store()
            .apply_snapshot(&snapshot)
            .map_err(|e| e.to_string())
            .and_then(|()| group.machine.restore(&snapshot_owner_data(&snapshot.data)))
            .map_err(|error| format!("installing a snapshot failed: {error}"))?;
        group.appended.clear();
        group.applied = snapshot.get_metadata().index;
        group
            .high_watermark
            .send_replace(snapshot_start(&snapshot.data));
    }
    apply_committed(group, ready.take_committed_entries())?;
    if !ready.entries().is_empty() {
        let next_offsets = group
            .node
            .mut_store()
            .append(ready.entries(), now_ms)
            .map_err(|error| format!("appending raft entries failed: {error}"))?;
        let first = ready.entries()[0].index;
        group.appended.retain(|(index, _, _)| *index < first);
        for (entry, next_offset) in ready.entries().iter().zip(next_offsets) {
            if let Some((last, _, _)) = group.appended.back() {
                assert!(
                    *last < entry.index,
                    "appended entries out of raft-index order: {} after {last}",
                    entry.index
                );
            }
            group
                .appended
                .push_back((entry.index, next_offset, proposal_id(entry)));
        }
        group.dirty = true;
    }
    if let Some(hard_state) = ready.hs() {
        group
            .node
            .mut_store()
            .set_hard_state(hard_state)
            .map_err(|error| format!("writing the raft state failed: {error}"))?;
    }
    Ok(Some(ready))
}

fn snapshot_start(data: &Bytes) -> u64 {
    super::raft_storage::snapshot_start_offset(data).unwrap_or(0)
}

/// Hands `messages` to the outbox.
///
/// A snapshot is reported to raft as sent as soon as it is handed over. raft-rs holds a
/// follower it sent a snapshot to in its snapshot state, sending it nothing more, until the
/// application reports how the sending went; a snapshot the transport dropped (a link down
/// while a wiped node restarts) would hold that follower there for good. Reported at once,
/// the leader probes the follower next: a follower that got the snapshot goes on from it, and
/// one that did not rejects the probe and is sent the snapshot again. A partition's snapshot
/// is metadata only, so sending it again costs nothing.
fn send_messages(outbox: &dyn Outbox, id: RaftGroupId, group: &mut Group, messages: Vec<Message>) {
    let mut snapshots_to = Vec::new();
    for message in messages {
        if message.msg_type == MessageType::MsgSnapshot {
            snapshots_to.push(message.to);
        }
        outbox.send(message.to, id, message);
    }
    for to in snapshots_to {
        group.node.report_snapshot(to, SnapshotStatus::Finish);
    }
}

/// Applies committed entries and answers their proposals.
///
/// # Errors
/// A committed entry could not be read back: the group must stop.
///
/// # Panics
/// An entry that does not follow the last applied one, or lies past the commit index: raft
/// hands committed entries over in order, so either is a bug.
pub(super) fn apply_committed(group: &mut Group, entries: Vec<Entry>) -> Result<(), String> {
    for entry in entries {
        assert!(
            entry.index == group.applied + 1,
            "applying raft index {} after {}",
            entry.index,
            group.applied
        );
        assert!(
            entry.index <= group.node.raft.raft_log.committed,
            "applying raft index {} beyond the commit index {}",
            entry.index,
            group.node.raft.raft_log.committed
        );
        let mut proposal = proposal_id(&entry);
        let next_offset = match group
            .appended
            .iter()
            .position(|(index, _, _)| *index == entry.index)
        {
            Some(at) => {
                let (_, next, appended_proposal) = group.appended[at];
                group.appended.drain(..=at);
                proposal = proposal.or(appended_proposal);
                next
            }
            None => {
                let log = group.node.store().log().clone();
                let next = log
                    .read()
                    .expect("log lock poisoned")
                    .offset_after_raft_index(entry.index);
                next.map_err(|error| format!("reading committed entry failed: {error}"))?
            }
        };
        let outcome: Erased = match entry.entry_type {
            // A leader's empty entry: no proposal owns it (empty proposals are refused).
            EntryType::EntryNormal if entry.data.is_empty() => std::sync::Arc::new(()),
            EntryType::EntryNormal => group.machine.apply(&entry, next_offset),
            EntryType::EntryConfChange => {
                std::sync::Arc::new(apply_conf_change(group, &entry, false))
            }
            EntryType::EntryConfChangeV2 => {
                std::sync::Arc::new(apply_conf_change(group, &entry, true))
            }
        };
        group.applied = entry.index;
        group.high_watermark.send_replace(next_offset);
        group.applied_since_snapshot += 1;
        if let Some(pending) = proposal.and_then(|id| group.pending.remove(&id)) {
            group.metrics.committed(pending.proposed_at.elapsed());
            pending.resolve(Ok(Committed {
                raft_index: entry.index,
                next_offset,
                outcome,
            }));
        }
        if let Some(waiters) = group.waiting.remove(&entry.index) {
            for (reply, committed) in waiters {
                let _ = reply.send(Ok(committed));
            }
        }
    }
    Ok(())
}

fn apply_conf_change(group: &mut Group, entry: &Entry, v2: bool) -> ConfChangeOutcome {
    use protobuf::Message as _;
    let conf_state = if v2 {
        let change = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| e.to_string())?;
        group.node.apply_conf_change(&change)
    } else {
        let change = ConfChange::parse_from_bytes(&entry.data).map_err(|e| e.to_string())?;
        group.node.apply_conf_change(&change)
    }
    .map_err(|e| e.to_string())?;
    group
        .node
        .mut_store()
        .set_conf_state(conf_state)
        .map_err(|e| e.to_string())
}

/// Gives raft a fresh owner snapshot every [`SNAPSHOT_EVERY_ENTRIES`] applied entries, for
/// groups whose machine keeps state beyond the log.
fn maybe_snapshot(id: RaftGroupId, group: &mut Group) {
    if group.applied_since_snapshot < SNAPSHOT_EVERY_ENTRIES {
        return;
    }
    group.applied_since_snapshot = 0;
    let Some(data) = group.machine.snapshot() else {
        return;
    };
    let applied = group.node.raft.raft_log.applied;
    let term = match group.node.store().term(applied) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(group = id, %error, "snapshot term lookup failed");
            return;
        }
    };
    group
        .node
        .mut_store()
        .set_owner_snapshot(applied, term, data);
}
