//! The group consumer's coordinator task (join, heartbeat, reconcile assignments, revoke,
//! auto-commit, leave) and its partition readers, which feed one merged channel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::{
    ErrorCode, FetchCommittedOffsetsRequest, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    MemberAssignment, TopicPartition,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::consumer::{self, StartFrom};
use crate::error::{Error, Result};
use crate::group_config::{AssignmentChange, OffsetReset};
use crate::group_state::{Progress, Shared, Signal};
use crate::retry::random_jitter;

/// The heartbeat interval before the coordinator names one, and the longest accepted.
const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// An item from a partition reader: a record of one generation of that reader, or its error.
pub(crate) type Item = Result<(TopicPartition, u64, strata_proto::batch::Record)>;

/// The coordinator task's state. See the module documentation.
pub(crate) struct Coordinator {
    cluster: Cluster,
    shared: Arc<Shared>,
    records: mpsc::Sender<Item>,
    /// One reader task per partition owned and being read.
    readers: HashMap<TopicPartition, JoinHandle<()>>,
    next_generation: u64,
    heartbeat_interval: Duration,
    offsets_generation: Option<u64>,
}

impl Coordinator {
    /// A coordinator for the member `shared` describes, sending its readers' records to
    /// `records`. It joins on [`Self::join`] and runs on [`Self::run`].
    pub(crate) fn new(cluster: Cluster, shared: Arc<Shared>, records: mpsc::Sender<Item>) -> Self {
        Self {
            cluster,
            shared,
            records,
            readers: HashMap::new(),
            next_generation: 0,
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            offsets_generation: None,
        }
    }

    /// Joins (or rejoins with the member id it has), retrying retriable failures.
    pub(crate) async fn join(&mut self) -> Result<MemberAssignment> {
        let config = &self.shared.config;
        let mut failures = 0;
        loop {
            let request = JoinGroupRequest {
                group_id: config.group_id.clone(),
                member_id: self.shared.member().member_id,
                topics: config.topics.clone(),
                session_timeout_ms: u32::try_from(config.session_timeout.as_millis())
                    .expect("validated: at most 300 s"),
                client_id: config.client_id.clone(),
            };
            let reply = self
                .shared
                .cluster
                .groups_call(&request, |mut groups, request| async move {
                    groups.join_group(request).await
                })
                .await;
            match reply {
                Ok(assignment) => return Ok(assignment),
                Err(error) if error.is_retriable() => {
                    failures += 1;
                    let delay = config.backoff.delay(failures, random_jitter());
                    tracing::debug!(%error, ?delay, group = config.group_id, "joining again");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub(crate) async fn run(
        mut self,
        assignment: MemberAssignment,
        mut signals: mpsc::Receiver<Signal>,
        mut stopped: oneshot::Receiver<()>,
    ) {
        let result = self.serve(assignment, &mut signals, &mut stopped).await;
        self.stop_readers();
        if let Err(error) = result {
            let _ = self.records.send(Err(error)).await;
        }
        let member = self.shared.member();
        if !member.member_id.is_empty() {
            let request = LeaveGroupRequest {
                group_id: self.shared.config.group_id.clone(),
                member_id: member.member_id,
            };
            let left = self
                .shared
                .cluster
                .groups_call(&request, |mut groups, request| async move {
                    groups.leave_group(request).await
                })
                .await;
            if let Err(error) = left {
                tracing::debug!(%error, "leaving the group failed");
            }
        }
    }

    /// Heartbeats, reconciles and auto-commits until stopped; returns the error that ended
    /// it otherwise.
    async fn serve(
        &mut self,
        assignment: MemberAssignment,
        signals: &mut mpsc::Receiver<Signal>,
        stopped: &mut oneshot::Receiver<()>,
    ) -> Result<()> {
        let released = self.reconcile(assignment).await?;
        let auto_commit = self.shared.config.auto_commit;
        let now = tokio::time::Instant::now();
        // A far-off time stands for "never": the branch must have a future.
        let never = Duration::from_secs(365 * 24 * 3600);
        let mut commit_at = now + auto_commit.unwrap_or(never);
        let mut heartbeat_at = if released {
            now
        } else {
            now + self.heartbeat_interval
        };
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = &mut *stopped => return Ok(()),
                Some(signal) = signals.recv() => {
                    match signal {
                        Signal::HeartbeatNow => heartbeat_at = tokio::time::Instant::now(),
                        Signal::Rejoin => {
                            let released = self.rejoin().await?;
                            heartbeat_at = self.next_heartbeat(released, 0);
                        }
                    }
                    continue;
                }
                () = tokio::time::sleep_until(commit_at) => {
                    if let Err(error) = self.shared.commit(false, None).await {
                        tracing::warn!(%error, group = self.shared.config.group_id, "auto-commit failed");
                    }
                    commit_at = tokio::time::Instant::now() + auto_commit.unwrap_or(never);
                    continue;
                }
                () = tokio::time::sleep_until(heartbeat_at) => {}
            }
            let released = match self.heartbeat().await {
                Ok(assignment) => {
                    failures = 0;
                    self.reconcile(assignment).await?
                }
                Err(error)
                    if matches!(
                        error.code(),
                        Some(ErrorCode::UnknownMember | ErrorCode::StaleMemberEpoch)
                    ) =>
                {
                    tracing::info!(%error, group = self.shared.config.group_id, "rejoining");
                    failures = 0;
                    self.rejoin().await?
                }
                Err(error) if error.is_retriable() => {
                    tracing::debug!(%error, "heartbeat failed");
                    failures = failures.saturating_add(1);
                    false
                }
                Err(error) => return Err(error),
            };
            heartbeat_at = self.next_heartbeat(released, failures);
        }
    }

    /// When to heartbeat next: at once after releasing partitions (so they reach their new
    /// owner), after a backoff after failures, else after the interval.
    fn next_heartbeat(&self, released: bool, failures: u32) -> tokio::time::Instant {
        let wait = if released {
            Duration::ZERO
        } else if failures > 0 {
            self.shared
                .config
                .backoff
                .delay(failures, random_jitter())
                .min(self.heartbeat_interval)
        } else {
            self.heartbeat_interval
        };
        tokio::time::Instant::now() + wait
    }

    async fn heartbeat(&self) -> Result<MemberAssignment> {
        let member = self.shared.member();
        let owned: Vec<TopicPartition> = self.shared.progress().keys().cloned().collect();
        let request = HeartbeatRequest {
            group_id: self.shared.config.group_id.clone(),
            member_id: member.member_id,
            member_epoch: member.member_epoch,
            owned,
        };
        self.shared
            .cluster
            .groups_call(&request, |mut groups, request| async move {
                groups.heartbeat(request).await
            })
            .await
    }

    /// The session ended: drops every partition without committing (they are others' now)
    /// and joins again with the same member id.
    async fn rejoin(&mut self) -> Result<bool> {
        self.stop_readers();
        let lost: Vec<TopicPartition> = self.shared.progress().drain().map(|(p, _)| p).collect();
        if !lost.is_empty() {
            let _ = self.shared.changes.send(AssignmentChange {
                revoked: lost,
                assigned: Vec::new(),
                lost: true,
            });
        }
        self.offsets_generation = None;
        let assignment = self.join().await?;
        self.reconcile(assignment).await
    }

    /// Acts on an assignment: revokes, starts, or restarts after a reset. Returns whether a
    /// partition was released, so the next heartbeat goes at once.
    async fn reconcile(&mut self, assignment: MemberAssignment) -> Result<bool> {
        {
            let mut member = self
                .shared
                .member
                .lock()
                .expect("no panic while holding the lock");
            member.member_id.clone_from(&assignment.member_id);
        }
        if assignment.heartbeat_interval_ms > 0 {
            self.heartbeat_interval =
                Duration::from_millis(u64::from(assignment.heartbeat_interval_ms))
                    .min(HEARTBEAT_INTERVAL_MAX);
        }
        let target: HashSet<TopicPartition> = assignment.assignment.iter().cloned().collect();
        let owned: HashSet<TopicPartition> = self.shared.progress().keys().cloned().collect();
        let mut revoked: Vec<TopicPartition> = owned.difference(&target).cloned().collect();
        let mut assigned: Vec<TopicPartition> = target.difference(&owned).cloned().collect();
        revoked.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        assigned.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let reset = self
            .offsets_generation
            .is_some_and(|seen| seen != assignment.offsets_generation);
        // Commits from here on, those of the revoked partitions included, carry the epoch of
        // this assignment: the member's current one.
        self.shared
            .member
            .lock()
            .expect("no panic while holding the lock")
            .member_epoch = assignment.member_epoch;
        if !revoked.is_empty() {
            self.revoke(&revoked).await;
        }
        let mut starts = assigned.clone();
        if reset {
            tracing::info!(group = self.shared.config.group_id, "offsets were reset");
            starts.extend(
                owned
                    .intersection(&target)
                    .cloned()
                    .collect::<Vec<TopicPartition>>(),
            );
        }
        if !starts.is_empty() {
            self.start_readers(&starts).await?;
        }
        self.offsets_generation = Some(assignment.offsets_generation);
        if !assigned.is_empty() {
            let _ = self.shared.changes.send(AssignmentChange {
                revoked: Vec::new(),
                assigned,
                lost: false,
            });
        }
        Ok(!revoked.is_empty())
    }

    /// Stops reading `revoked`, tells the application, commits their processed progress
    /// and forgets them, so the next heartbeat no longer lists them.
    async fn revoke(&mut self, revoked: &[TopicPartition]) {
        for partition in revoked {
            if let Some(reader) = self.readers.remove(partition) {
                reader.abort();
            }
            if let Some(entry) = self.shared.progress().get_mut(partition) {
                entry.reading = false;
            }
        }
        let change = AssignmentChange {
            revoked: revoked.to_vec(),
            assigned: Vec::new(),
            lost: false,
        };
        let _ = self.shared.changes.send(change.clone());
        if let Some(hook) = &self.shared.config.on_revoke {
            hook(change).await;
        }
        if let Err(error) = self.shared.commit(false, Some(revoked)).await {
            tracing::warn!(%error, "commit of revoked partitions failed");
        }
        let mut progress = self.shared.progress();
        for partition in revoked {
            progress.remove(partition);
        }
    }

    /// Starts (or restarts, at a new generation) a reader for each partition, at its
    /// committed offset or the reset policy's.
    async fn start_readers(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let request = FetchCommittedOffsetsRequest {
            group_id: self.shared.config.group_id.clone(),
            partitions: partitions.to_vec(),
        };
        let reply = self
            .shared
            .cluster
            .groups_call(&request, |mut groups, request| async move {
                groups.fetch_committed_offsets(request).await
            })
            .await?;
        let committed: HashMap<TopicPartition, Option<u64>> = reply
            .offsets
            .into_iter()
            .map(|offset| {
                let partition = TopicPartition {
                    topic: offset.topic,
                    partition: offset.partition,
                };
                (partition, offset.offset)
            })
            .collect();
        for partition in partitions {
            if let Some(reader) = self.readers.remove(partition) {
                reader.abort();
            }
            let committed = committed.get(partition).copied().flatten();
            let generation = self.next_generation;
            self.next_generation += 1;
            self.shared.progress().insert(
                partition.clone(),
                Progress {
                    generation,
                    processed: committed,
                    handed_out: None,
                    committed,
                    reading: true,
                },
            );
            let from = match (committed, self.shared.config.offset_reset) {
                (Some(offset), _) => StartFrom::Offset(offset),
                (None, OffsetReset::Earliest) => StartFrom::Earliest,
                (None, OffsetReset::Latest) => StartFrom::Latest,
                (None, OffsetReset::Error) => {
                    let error = Error::NoCommittedOffset {
                        group: self.shared.config.group_id.clone(),
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                    };
                    if self.records.send(Err(error)).await.is_err() {
                        return Err(Error::Closed);
                    }
                    continue;
                }
            };
            let reader = Reader {
                cluster: self.cluster.clone(),
                shared: Arc::clone(&self.shared),
                partition: partition.clone(),
                generation,
                records: self.records.clone(),
            };
            self.readers
                .insert(partition.clone(), tokio::spawn(reader.run(from)));
        }
        Ok(())
    }

    fn stop_readers(&mut self) {
        for (_, reader) in self.readers.drain() {
            reader.abort();
        }
    }
}

/// Reads one partition into the merged channel, tagged with its generation.
struct Reader {
    cluster: Cluster,
    shared: Arc<Shared>,
    partition: TopicPartition,
    generation: u64,
    records: mpsc::Sender<Item>,
}

impl Reader {
    /// Subscribes at `from` and forwards records until aborted. When the subscription ends
    /// (a broker restarted, leadership moved) it subscribes again from where it was; an
    /// offset out of range restarts at the reset policy; other errors go to the application
    /// and end the reader.
    async fn run(self, mut from: StartFrom) {
        let config = &self.shared.config;
        let (topic, partition) = (self.partition.topic.as_str(), self.partition.partition);
        let mut failures = 0u32;
        loop {
            let subscribed =
                consumer::subscribe(&self.cluster, topic, partition, from, config.consumer).await;
            let error = match subscribed {
                Ok(mut consumer) => {
                    self.started(consumer.next_offset());
                    let error = loop {
                        match consumer.next().await {
                            Ok(Some(record)) => {
                                failures = 0;
                                let item = Ok((self.partition.clone(), self.generation, record));
                                if self.records.send(item).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => {
                                break Error::Rpc(tonic::Status::unavailable(
                                    "the broker ended the subscription",
                                ));
                            }
                            Err(error) => break error,
                        }
                    };
                    from = StartFrom::Offset(consumer.next_offset());
                    error
                }
                Err(error) => error,
            };
            let reset = match config.offset_reset {
                OffsetReset::Earliest => Some(StartFrom::Earliest),
                OffsetReset::Latest => Some(StartFrom::Latest),
                OffsetReset::Error => None,
            };
            if error.code() == Some(ErrorCode::OffsetOutOfRange)
                && let Some(reset) = reset
            {
                tracing::info!(%error, topic, partition, "offset out of range: resetting");
                from = reset;
                continue;
            }
            failures += 1;
            if !error.is_retriable() || failures > config.consumer.resubscribe_max {
                let error = Error::PartitionFailed {
                    topic: topic.to_owned(),
                    partition,
                    error: Box::new(error),
                };
                let _ = self.records.send(Err(error)).await;
                return;
            }
            let delay = config.consumer.backoff.delay(failures, random_jitter());
            tokio::time::sleep(delay).await;
        }
    }

    /// Records where the reader starts, when nothing was committed (so a commit keeps a
    /// `Latest` start even before any record arrives).
    fn started(&self, offset: u64) {
        let mut progress = self.shared.progress();
        if let Some(entry) = progress.get_mut(&self.partition)
            && entry.generation == self.generation
            && entry.processed.is_none()
        {
            entry.processed = Some(offset);
        }
    }
}
