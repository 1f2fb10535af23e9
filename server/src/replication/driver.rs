//! The raft driver: one thread that owns every local raft group, ticks them, steps their
//! proposals, and runs their Ready loops together so that one round of appends across all
//! groups is followed by one round of fsyncs (group commit), before any message that promises
//! persistence is sent and before any proposal is acknowledged.
//!
//! This file owns the thread, its loop, command dispatch, adding and stopping groups, and
//! admission of proposals. The Ready round is in `ready`, membership changes and
//! hand-over in `membership`, quiet groups and leader balance in
//! `quiescence`, the lost-log patch in `lost_log`.
//!
//! The driver does blocking file I/O, so it runs on its own OS thread, not on the async
//! runtime. Async callers talk to it through [`DriverHandle`] over a bounded channel; replies come
//! back on oneshot channels. Proposals are matched to replies by an id carried in the raft
//! entry's context, never by order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::prelude::{ConfChange, Entry, Message, MessageType};
use raft::{RawNode, StateRole, Storage};
use tokio::sync::oneshot;

use super::catch_up;
use super::fsync::SyncPool;
use super::group::{Group, alone, fail_pending, sync_leadership, track};
use super::handle::CatchUp;
use super::handle::{
    COMMAND_QUEUE_MAX, CONTROLLER, Command, Committed, DriverHandle, ErasedSpec, Outbox,
    ProposeError, RaftGroupId, Reply,
};
use super::machine::Admission;
use super::raft_storage::RaftStorage;
use super::{lost_log, membership, quiescence};
use crate::clock::SharedClock;

/// How often raft is ticked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

/// Starts the driver thread for node `node_id`; retention runs every `retention_interval`
/// with the time of day from `clock`; messages for other nodes go to `outbox`.
pub fn start(
    node_id: u64,
    retention_interval: Duration,
    outbox: Arc<dyn Outbox>,
    clock: SharedClock,
    metrics: Arc<crate::metrics::Metrics>,
) -> DriverHandle {
    let retention_every_ticks =
        (retention_interval.as_millis() / TICK_INTERVAL.as_millis()).max(1) as u64;
    let (commands, receiver) = sync_channel(COMMAND_QUEUE_MAX);
    let catch_up = Arc::new(CatchUp::default());
    let published = catch_up.clone();
    std::thread::Builder::new()
        .name("raft-driver".to_string())
        .spawn(move || {
            let mut driver = Driver::new(
                node_id,
                outbox,
                receiver,
                retention_every_ticks,
                clock,
                false,
                metrics,
            );
            driver.catch_up = published;
            // A storage failure stops only its group (see `Driver::stop_group`). What is left
            // to panic is a broken invariant, a bug: stop the whole process rather than leave a
            // server that accepts requests it can never commit; nothing acknowledged depends on
            // memory, and a restart recovers from the disk.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.run())).is_err() {
                tracing::error!("the raft driver failed; stopping the process");
                std::process::abort();
            }
        })
        .expect("spawning the raft driver thread");
    DriverHandle::new(commands, catch_up)
}

/// Every local raft group and what drives them, owned by the driver thread. Visible to the
/// crate (not only to replication) for the deterministic simulation (`crate::simulation`),
/// which runs drivers without their threads; everything else goes through [`DriverHandle`].
pub(crate) struct Driver {
    node_id: u64,
    pub(super) outbox: Arc<dyn Outbox>,
    /// A leadership hand-over in progress: its deadline and whom to tell when done.
    handing_over: Option<(Instant, oneshot::Sender<()>)>,
    pub(super) groups: HashMap<RaftGroupId, Group>,
    commands: Receiver<Command>,
    next_proposal_id: u64,
    ticks: u64,
    retention_every_ticks: u64,
    /// Peer messages dropped by [`super::validate::check`] since start.
    rejected_messages: u64,
    /// The time of day: control batches and segment rolls are stamped with it, and retention
    /// measures age by it.
    pub(super) clock: SharedClock,
    /// Runs the fsyncs of a round that wrote several logs.
    pub(super) fsyncs: SyncPool,
    /// Every election timeout is the same (the simulation's replays then take the same path:
    /// raft-rs draws randomized timeouts from a generator of its own).
    fixed_election_timeout: bool,
    /// The node's metrics (raft and fsync series are counted here).
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    /// Where the groups whose replica here is behind its leader are published (see
    /// `catch_up`): at once when a step changes that, and each tick with fresh figures.
    catch_up: Arc<CatchUp>,
}

impl Driver {
    fn new(
        node_id: u64,
        outbox: Arc<dyn Outbox>,
        commands: Receiver<Command>,
        retention_every_ticks: u64,
        clock: SharedClock,
        fixed_election_timeout: bool,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            node_id,
            outbox,
            handing_over: None,
            groups: HashMap::new(),
            commands,
            // Proposal ids travel in entries that other nodes see too: the node id in the
            // high bits keeps them from matching another node's.
            next_proposal_id: node_id << 40 | 1,
            ticks: 0,
            retention_every_ticks,
            rejected_messages: 0,
            clock,
            fsyncs: SyncPool::start(),
            fixed_election_timeout,
            metrics,
            catch_up: Arc::default(),
        }
    }

    /// A driver without its thread, for the deterministic simulation: the caller feeds it
    /// commands and runs its ticks and Ready rounds.
    #[cfg(test)]
    pub(crate) fn for_simulation(node_id: u64, outbox: Arc<dyn Outbox>) -> Self {
        let (_, commands) = sync_channel(1);
        Self::new(
            node_id,
            outbox,
            commands,
            u64::MAX,
            crate::clock::system(),
            true,
            crate::metrics::Metrics::new(),
        )
    }

    /// Peer messages refused since start, for the simulation.
    #[cfg(test)]
    pub(crate) fn rejected_messages(&self) -> u64 {
        self.rejected_messages
    }

    /// A group's raft state in a line, for the simulation's failure messages.
    #[cfg(test)]
    pub(crate) fn describe(&self, id: RaftGroupId) -> String {
        match self.groups.get(&id) {
            Some(group) => {
                let raft = &group.node.raft;
                format!(
                    "{:?} term {} leader {} last {} committed {} applied {} progress {:?}",
                    raft.state,
                    raft.term,
                    raft.leader_id,
                    raft.raft_log.last_index(),
                    raft.raft_log.committed,
                    raft.raft_log.applied,
                    raft.prs()
                        .iter()
                        .map(|(id, p)| (*id, p.matched, p.next_idx, format!("{:?}", p.state)))
                        .collect::<Vec<_>>()
                )
            }
            None => "no such group".to_string(),
        }
    }

    fn run(mut self) {
        let mut next_tick = Instant::now() + TICK_INTERVAL;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match self.commands.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            };
            // Take everything that queued up meanwhile: that is the group commit.
            let mut commands: Vec<Command> = first.into_iter().collect();
            while commands.len() < COMMAND_QUEUE_MAX {
                match self.commands.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            for command in commands {
                if let Some(done) = self.handle(command) {
                    self.stop();
                    let _ = done.send(());
                    return;
                }
            }
            if Instant::now() >= next_tick {
                next_tick += TICK_INTERVAL;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + TICK_INTERVAL;
                }
                self.tick();
            }
            self.process_ready();
            self.check_hand_over();
        }
    }

    /// Handles one command; returns the reply channel of a shutdown.
    pub(crate) fn handle(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::AddGroup(spec, reply) => {
                let _ = reply.send(self.add_erased(*spec));
            }
            Command::RemoveGroup(id, reply) => {
                if let Some(mut group) = self.groups.remove(&id) {
                    fail_pending(&mut group, ProposeError::UnknownGroup);
                }
                let _ = reply.send(());
            }
            Command::Propose { group, data, reply } => self.propose(group, data, reply),
            Command::ProposeConfChange {
                group,
                change,
                reply,
            } => self.propose_conf_change(group, change, reply),
            Command::SetVoters(id, voters) => {
                if let Some(group) = self.groups.get_mut(&id) {
                    membership::set_desired_voters(group, voters);
                }
            }
            Command::CaughtUp(id, member, reply) => {
                let caught_up = self
                    .groups
                    .get(&id)
                    .and_then(|group| membership::member_caught_up(&group.node, member));
                let _ = reply.send(caught_up);
            }
            Command::Voters(id, reply) => {
                let voters = self
                    .groups
                    .get(&id)
                    .map(|group| super::group::current_voters(&group.node));
                let _ = reply.send(voters);
            }
            Command::Step(messages, peer) => self.step(messages, &peer),
            Command::HandOver(deadline, reply) => {
                self.handing_over = Some((deadline, reply));
                self.transfer_leaderships();
            }
            Command::Shutdown(reply) => return Some(reply),
        }
        None
    }

    /// Steps peers' messages into their groups, after [`super::validate::check`] (a refused
    /// message is counted and logged by samples).
    fn step(&mut self, messages: Vec<(RaftGroupId, Message)>, peer: &str) {
        for (id, mut message) in messages {
            let Some(group) = self.groups.get_mut(&id) else {
                // Not created here yet (the metadata naming it is still on its way), or
                // removed: raft sends again.
                continue;
            };
            let batch_bytes_max = group
                .node
                .store()
                .log()
                .read()
                .expect("log lock poisoned")
                .batch_bytes_max();
            let checked = super::validate::check(
                id,
                &group.node,
                group.desired_voters.as_deref(),
                batch_bytes_max,
                &message,
            );
            if let Err(rejection) = checked {
                self.rejected_messages += 1;
                // Logged by samples, so a flood of them does not flood the log too.
                if !self.rejected_messages.is_power_of_two() {
                    continue;
                }
                tracing::warn!(
                    group = id,
                    %peer,
                    from = message.from,
                    kind = ?message.msg_type,
                    term = message.term,
                    %rejection,
                    rejected_total = self.rejected_messages,
                    "dropped a raft message from a peer"
                );
                continue;
            }
            // Read before the lost-log patch, which may lower a heartbeat's commit index.
            let leader_commit = catch_up::leader_commit_in(&message);
            let kind = message.msg_type;
            if let Some(reply) = lost_log::survive_lost_log(id, group, &mut message) {
                self.outbox.send(reply.to, id, reply);
            }
            if !matches!(
                message.msg_type,
                MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
            ) {
                group.idle_ticks = 0;
            }
            let role = group.node.raft.state;
            let was_behind = catch_up::behind(group).is_some();
            if let Err(error) = group.node.step(message) {
                tracing::debug!(group = id, %error, "raft refused a message");
            }
            if let Some(heard) = leader_commit {
                catch_up::heard_from_leader(group, heard);
                let behind = catch_up::behind(group);
                if behind.is_some() != was_behind {
                    self.catch_up.set(id, behind);
                }
            }
            // A leader handing its leadership over tells this node to campaign at once.
            if kind == MessageType::MsgTimeoutNow && role != group.node.raft.state {
                group.metrics.elections.inc();
            }
        }
    }

    /// Adds a group of any machine type; see [`Driver::add_erased`].
    #[cfg(test)]
    pub(crate) fn add_group<M: super::StateMachine>(
        &mut self,
        spec: super::GroupSpec<M>,
    ) -> Result<(), String> {
        self.add_erased(spec.erase())
    }

    /// Opens a group's raft state over its log and starts driving it (nothing when one with
    /// its id runs here already).
    ///
    /// # Errors
    /// The raft state or the log could not be read.
    pub(super) fn add_erased(&mut self, spec: ErasedSpec) -> Result<(), String> {
        if self.groups.contains_key(&spec.id) {
            return Ok(());
        }
        let mut storage =
            RaftStorage::open(spec.log.clone(), &spec.voters).map_err(|e| e.to_string())?;
        storage.set_apply_reads_header_only(spec.machine.applies_header_only());
        let first = storage.first_index().map_err(|e| e.to_string())?;
        let last = storage.last_index().map_err(|e| e.to_string())?;
        // In a group this node alone votes in, every entry in its (opened, hence fsynced) log is
        // on a quorum's disk: committed. The commit index is persisted lazily (see
        // raft_storage), so restore it here rather than leave acknowledged records invisible
        // until the next commit.
        if storage.conf_state().voters == [self.node_id] && storage.hard_state().commit < last {
            storage.set_commit(last);
        }
        let hard_state = storage.hard_state().clone();
        // Partitions: everything committed is applied (their state is the log). The controller
        // replays from its snapshot.
        let applied = if spec.replay_committed {
            spec.applied.max(first - 1).min(last)
        } else {
            hard_state.commit.max(first - 1).min(last)
        };
        // A machine that replays from its own snapshot (the controller) applied only committed
        // entries, but the lazily persisted commit may lag behind its snapshot after a kill -9;
        // raft refuses (panics on) an applied index beyond the commit at start.
        if storage.hard_state().commit < applied {
            storage.set_commit(applied);
        }
        let config = raft::Config {
            id: self.node_id,
            // Elections after 0.5 to 1 s without a leader (raft randomizes within twice the
            // election tick); heartbeats every tick.
            election_tick: 5,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        let config = if self.fixed_election_timeout {
            raft::Config {
                min_election_tick: config.election_tick,
                max_election_tick: config.election_tick + 1,
                ..config
            }
        } else {
            config
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&config, storage, &logger).map_err(|e| e.to_string())?;
        let high_watermark = spec
            .log
            .read()
            .expect("log lock poisoned")
            .offset_after_raft_index(applied)
            .map_err(|e| e.to_string())?;
        spec.high_watermark.send_replace(high_watermark);
        let metrics = self.metrics.raft.for_group(spec.id);
        // A group this node alone votes in need not wait an election timeout.
        if alone(&node, self.node_id) {
            node.campaign().map_err(|e| e.to_string())?;
            metrics.elections.inc();
        }
        self.groups.insert(
            spec.id,
            Group {
                node,
                machine: spec.machine,
                pending: HashMap::new(),
                waiting: BTreeMap::new(),
                appended: VecDeque::new(),
                applied,
                high_watermark: spec.high_watermark,
                leader: spec.leader,
                term: spec.term,
                in_sync: spec.in_sync,
                preferred_leader: spec.preferred_leader,
                stopped: spec.stopped,
                idle_ticks: 0,
                desired_voters: None,
                dirty: false,
                applied_since_snapshot: 0,
                machine_leads: false,
                metrics,
                last_leader: 0,
                leader_commit: 0,
            },
        );
        Ok(())
    }

    /// The next proposal id; ids are unique on this node and carry its id in the high bits.
    fn next_proposal(&mut self) -> u64 {
        let proposal = self.next_proposal_id;
        self.next_proposal_id += 1;
        proposal
    }

    /// The group `id` when this node leads it; otherwise answers `reply` with why not.
    fn leading(&mut self, id: RaftGroupId, reply: Reply) -> Option<(&mut Group, Reply)> {
        let Some(group) = self.groups.get_mut(&id) else {
            let _ = reply.send(Err(ProposeError::UnknownGroup));
            return None;
        };
        if group.node.raft.state != StateRole::Leader {
            let leader_id = group.node.raft.leader_id;
            let _ = reply.send(Err(ProposeError::NotLeader { leader_id }));
            return None;
        }
        Some((group, reply))
    }

    fn propose_conf_change(&mut self, id: RaftGroupId, change: ConfChange, reply: Reply) {
        let proposal = self.next_proposal();
        let Some((group, reply)) = self.leading(id, reply) else {
            return;
        };
        let proposed = group
            .node
            .propose_conf_change(proposal.to_be_bytes().to_vec(), change);
        track(group, proposal, proposed, reply);
    }

    /// Admits `data` through the group's machine and hands it to raft, or answers a retry as
    /// its original, or answers the machine's refusal.
    pub(super) fn propose(&mut self, id: RaftGroupId, data: Bytes, reply: Reply) {
        // An empty entry is what a new leader appends to commit its term: the driver applies
        // it as nothing, so a proposal of nothing would have no outcome to answer with.
        if data.is_empty() {
            let reason = "an empty proposal carries nothing to apply".to_string();
            let _ = reply.send(Err(ProposeError::Dropped(reason)));
            return;
        }
        let proposal = self.next_proposal();
        let Some((group, reply)) = self.leading(id, reply) else {
            return;
        };
        if let Err(error) = sync_leadership(group) {
            let _ = reply.send(Err(ProposeError::Stopped(error.clone())));
            self.stop_group(id, &error);
            return;
        }
        match group.machine.admit(&data, proposal) {
            Ok(Admission::Append) => {}
            Ok(Admission::Duplicate {
                raft_index,
                next_offset,
                outcome,
            }) => {
                let committed = Committed {
                    raft_index,
                    next_offset,
                    outcome,
                };
                if raft_index <= group.node.raft.raft_log.applied {
                    let _ = reply.send(Ok(committed));
                } else {
                    // In this leader's log from an earlier term, not committed yet: answer
                    // once it is (raft commits it with this term's first entry).
                    group
                        .waiting
                        .entry(raft_index)
                        .or_default()
                        .push((reply, committed));
                }
                return;
            }
            Ok(Admission::DuplicateOf(original)) => {
                match group.pending.get_mut(&original) {
                    Some(pending) => pending.duplicates.push(reply),
                    None => {
                        let _ = reply.send(Err(ProposeError::Dropped(
                            "the original of this retried batch is no longer in flight".to_string(),
                        )));
                    }
                }
                return;
            }
            Err(refusal) => {
                let _ = reply.send(Err(ProposeError::Refused(refusal)));
                return;
            }
        }
        let proposed = group
            .node
            .raft
            .step(proposal_message(group.node.raft.id, proposal, data));
        if proposed.is_err() {
            group.machine.dropped(proposal);
        }
        track(group, proposal, proposed, reply);
    }

    pub(crate) fn tick(&mut self) {
        self.ticks += 1;
        let retention_due = self.ticks.is_multiple_of(self.retention_every_ticks);
        let leadership_due = self
            .ticks
            .is_multiple_of(quiescence::LEADERSHIP_CHECK_TICKS);
        let now_ms = self.clock.now_ms();
        let mut behind = BTreeMap::new();
        for (id, group) in &mut self.groups {
            if *id != CONTROLLER && quiescence::quiet(self.node_id, &*self.outbox, group) {
                // Nothing to do and everyone knows it: no heartbeats (see `quiet`).
            } else {
                let leader = group.node.raft.state == StateRole::Leader;
                // For a non-leader, `tick` is true when the election timeout passed and raft
                // stepped its own MsgHup: a campaign, unless raft declined it (a membership
                // change still to apply), which leaves it a follower.
                if group.node.tick() && !leader && group.node.raft.state != StateRole::Follower {
                    group.metrics.elections.inc();
                }
                group.idle_ticks += 1;
            }
            if let Some(lag) = catch_up::behind(group) {
                behind.insert(*id, lag);
            }
            if leadership_due && group.node.raft.state == StateRole::Leader {
                quiescence::check_leadership(self.node_id, &*self.outbox, group);
                membership::change_membership(*id, self.node_id, group);
            }
            if retention_due {
                group.run_retention(now_ms);
            }
        }
        self.catch_up.publish(behind);
    }

    /// Asks each group this node leads (with other voters) to move its leadership elsewhere
    /// (see [`membership::hand_over`]).
    fn transfer_leaderships(&mut self) {
        for group in self.groups.values_mut() {
            membership::hand_over(self.node_id, group);
        }
    }

    /// Whether a hand-over in progress is done (no group with other voters is led here) or
    /// out of time; then it is answered.
    fn check_hand_over(&mut self) {
        let Some((deadline, _)) = &self.handing_over else {
            return;
        };
        let node_id = self.node_id;
        let done = self
            .groups
            .values()
            .all(|group| membership::handed_over(node_id, group));
        if done || Instant::now() >= *deadline {
            if let Some((_, reply)) = self.handing_over.take() {
                let _ = reply.send(());
            }
        } else {
            // A transfer that raft abandoned (its election timeout passed) is tried again.
            self.transfer_leaderships();
        }
    }

    /// Stops a group whose storage failed (an append, an fsync, the raft state file, a
    /// snapshot, a read of a committed entry): its proposals fail, it leaves the driver, and
    /// its owner hears why through `stopped`. The node goes on serving every other group.
    ///
    /// This is what a crash of that group alone would do: everything the group acknowledged
    /// is on disk (persisted messages go out only after a successful fsync), and what raft
    /// held in memory is lost as in any crash. The owner reopens the log, which recovers what
    /// is on disk, and adds the group again; its peers bring it up to date.
    pub(super) fn stop_group(&mut self, id: RaftGroupId, reason: &str) {
        let Some(mut group) = self.groups.remove(&id) else {
            return;
        };
        tracing::error!(
            group = id,
            %reason,
            "storage failed: stopping this group; the node serves its other groups"
        );
        fail_pending(&mut group, ProposeError::Stopped(reason.to_string()));
        group.leader.send_replace(0);
        if let Some(stopped) = &group.stopped {
            // The owner may be gone (shutting down): then nobody reopens the group.
            let _ = stopped.send((id, reason.to_string()));
        }
    }

    pub(super) fn stop(&mut self) {
        for (id, reason) in self.sync_dirty_logs() {
            tracing::error!(group = id, %reason, "final fsync failed");
        }
        for (id, group) in &mut self.groups {
            fail_pending(group, ProposeError::ShuttingDown);
            if let Err(error) = group.node.store().sync() {
                tracing::error!(group = id, %error, "final fsync failed");
            }
            if let Err(error) = group.node.mut_store().persist() {
                tracing::error!(group = id, %error, "writing the raft state failed");
            }
        }
        self.groups.clear();
    }
}

/// The message `RawNode::propose` builds, but over `data` as it is: `RawNode::propose` takes a
/// `Vec<u8>`, and a produced batch arrives as a slice of its gRPC frame (`Bytes`), which would
/// have to be copied into a `Vec` first. raft-rs's `Entry.data` is itself `Bytes`, so the batch
/// reaches the log's `pwrite` without a copy.
fn proposal_message(from: u64, proposal: u64, data: Bytes) -> Message {
    let entry = Entry {
        data,
        context: Bytes::copy_from_slice(&proposal.to_be_bytes()),
        ..Entry::default()
    };
    let mut message = Message {
        from,
        ..Message::default()
    };
    message.set_msg_type(MessageType::MsgPropose);
    message.set_entries(vec![entry].into());
    message
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
