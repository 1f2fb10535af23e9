//! The group consumer: members of a consumer group share the partitions of their topics, and
//! the group remembers how far it got (committed offsets) across restarts.
//!
//! ```text
//!                 ┌─ reader task per owned partition (Subscribe with credit) ─┐
//! coordinator ────┤                                                            ├─▶ merged channel ─▶ next()
//! task: join,     └────────────────────────────────────────────────────────────┘      (bounded)
//! heartbeat, reconcile, auto-commit         ▲ start/stop/seek                   positions ◀─┘
//! ```
//!
//! The coordinator task joins the group, heartbeats every `heartbeat_interval_ms` reporting
//! the partitions it holds, and reconciles the reply: a partition newly in the assignment starts
//! at the group's committed offset (or [`GroupConsumerConfig::offset_reset`] when there is
//! none); a partition gone from it is revoked — its reader stops, the application is told
//! ([`GroupConsumer::assignment_changes`], [`GroupConsumerConfig::on_revoke`]), its position is
//! committed, and only then does the next heartbeat stop listing it, which is when the group
//! hands it to another member. When an operator resets the group's offsets
//! (`offsets_generation` changes), every owned partition restarts at its new committed offset
//! and the records already buffered are dropped.
//!
//! # Delivery: at least once
//!
//! A partition's position is the offset after the last record the application *processed*. A
//! record counts as processed once the application calls [`GroupConsumer::next`] again (as
//! Kafka's auto-commit does) or calls [`GroupConsumer::commit`], which commits every record
//! handed out so far. Auto-commit ([`GroupConsumerConfig::auto_commit`]) commits processed
//! positions in the background. After a crash, a rebalance, or a session that expired, the
//! partition restarts at the last committed offset, so a record may be delivered again — never
//! skipped. Process records idempotently:
//!
//! ```no_run
//! use std::collections::HashMap;
//! use strata_client::{Client, GroupConsumerConfig};
//!
//! # async fn example(client: Client) -> strata_client::Result<()> {
//! let mut consumer = client
//!     .group_consumer(GroupConsumerConfig::new("billing", ["orders"]))
//!     .await?;
//! // An upsert keyed by a business id: applying the same order twice changes nothing.
//! let mut totals: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
//! while let Some(record) = consumer.next().await? {
//!     if let (Some(order_id), Some(value)) = (record.key, record.value) {
//!         totals.insert(order_id.to_vec(), value.to_vec());
//!     }
//! #   break;
//! }
//! consumer.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Where no business id exists, remember the highest `(partition, offset)` applied per
//! partition next to the results, in the same transaction, and skip records at or below it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_proto::batch::Header;
use strata_proto::v1::{
    CommitOffsetsRequest, ErrorCode, FetchCommittedOffsetsRequest, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, MemberAssignment, OffsetCommit, TopicPartition,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::consumer::{CREDIT_BYTES_MIN, ConsumerConfig, StartFrom};
use crate::error::{Error, Result};
use crate::retry::{Backoff, random_jitter};

/// Assignment changes kept for a slow listener of [`GroupConsumer::assignment_changes`];
/// one that falls further behind misses the oldest (and is told so by the channel).
const ASSIGNMENT_CHANGES_QUEUED_MAX: usize = 64;

/// Signals from commits to the coordinator (heartbeat now, rejoin): one of each suffices.
const SIGNALS_QUEUED_MAX: usize = 4;

/// Attempts of a commit that fails with a retriable error.
const COMMIT_ATTEMPTS_MAX: u32 = 5;

/// The heartbeat interval before the coordinator names one, and the longest accepted.
const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(3);
const HEARTBEAT_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Where a partition starts when the group has no committed offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The first offset still stored.
    #[default]
    Earliest,
    /// The next offset to be written.
    Latest,
    /// Neither: [`GroupConsumer::next`] returns [`Error::NoCommittedOffset`] and the
    /// partition is not read.
    Error,
}

/// Runs before revoked partitions are committed and released: a chance to finish work on
/// their records and commit ([`Committer::commit`]). The consumer waits for the returned
/// future.
pub type RevokeHook =
    Arc<dyn Fn(AssignmentChange) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How a [`GroupConsumer`] joins its group and reads.
#[derive(Clone)]
pub struct GroupConsumerConfig {
    /// 1 to 255 characters of `[a-zA-Z0-9._:-]`.
    pub group_id: String,
    /// Existing topics, at least one.
    pub topics: Vec<String>,
    /// A member not heard from for this long loses its partitions. 1 s to 300 s.
    pub session_timeout: Duration,
    /// Commit processed positions this often; `None` commits only on [`GroupConsumer::commit`],
    /// revocation and close.
    pub auto_commit: Option<Duration>,
    pub offset_reset: OffsetReset,
    /// Free text shown by DescribeGroup (host, process).
    pub client_id: String,
    /// Each partition reader's credit window and resubscription policy: a reader buffers at
    /// most `credit_bytes` of batches.
    pub consumer: ConsumerConfig,
    /// Records waiting in the merged channel between the readers and `next`.
    pub records_queued_max: usize,
    /// The delay between attempts of a call that failed with a retriable error.
    pub backoff: Backoff,
    /// See [`RevokeHook`].
    pub on_revoke: Option<RevokeHook>,
}

impl fmt::Debug for GroupConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConsumerConfig")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("session_timeout", &self.session_timeout)
            .field("auto_commit", &self.auto_commit)
            .field("offset_reset", &self.offset_reset)
            .field("client_id", &self.client_id)
            .field("consumer", &self.consumer)
            .field("records_queued_max", &self.records_queued_max)
            .field("backoff", &self.backoff)
            .field("on_revoke", &self.on_revoke.as_ref().map(|_| "hook"))
            .finish()
    }
}

impl GroupConsumerConfig {
    /// The defaults for `group_id` reading `topics`: a 10 s session, auto-commit every 5 s,
    /// earliest without a committed offset.
    pub fn new(
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            session_timeout: Duration::from_secs(10),
            auto_commit: Some(Duration::from_secs(5)),
            offset_reset: OffsetReset::Earliest,
            client_id: String::new(),
            consumer: ConsumerConfig::default(),
            records_queued_max: 1024,
            backoff: Backoff::default(),
            on_revoke: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidArgument(reason));
        if self.group_id.is_empty() || self.group_id.len() > 255 {
            return invalid(format!(
                "group id {:?} must have 1 to 255 characters",
                self.group_id
            ));
        }
        if self.topics.is_empty() {
            return invalid("a group consumer needs at least one topic".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.session_timeout) {
            return invalid(format!(
                "session_timeout {:?} is outside 1s..=300s",
                self.session_timeout
            ));
        }
        if self.auto_commit.is_some_and(|every| every.is_zero()) {
            return invalid("auto_commit must be positive".into());
        }
        if self.consumer.credit_bytes < CREDIT_BYTES_MIN {
            return invalid(format!(
                "credit_bytes {} is below the minimum of {CREDIT_BYTES_MIN}",
                self.consumer.credit_bytes
            ));
        }
        if self.records_queued_max == 0 {
            return invalid("records_queued_max must be at least 1".into());
        }
        Ok(())
    }
}

/// A record read by a group consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl GroupRecord {
    /// The value of the first header named `key`, when it has one.
    pub fn header(&self, key: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|header| header.key == key)
            .and_then(|header| header.value.as_ref())
    }
}

/// Partitions that left and joined this member's assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentChange {
    /// No longer read. Their processed positions are committed right after the change is
    /// announced (and after [`GroupConsumerConfig::on_revoke`]), unless `lost`.
    pub revoked: Vec<TopicPartition>,
    /// Read from now on.
    pub assigned: Vec<TopicPartition>,
    /// The member's session ended (it was fenced or expired): the revoked partitions already
    /// belong to others and are not committed.
    pub lost: bool,
}

/// One partition's progress, shared by `next`, commits and the coordinator.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// Which reader's records count; older ones are dropped.
    generation: u64,
    /// One past the last record processed; `None` until the reader resolved its start.
    processed: Option<u64>,
    /// One past the last record handed out by `next`.
    handed_out: Option<u64>,
    /// What the group holds, as far as this member knows.
    committed: Option<u64>,
    /// Whether records of this partition are still handed out (false once revoking).
    reading: bool,
}

/// The member's identity in the group.
#[derive(Debug, Clone, Default)]
struct Member {
    member_id: String,
    member_epoch: u64,
}

#[derive(Debug)]
enum Signal {
    HeartbeatNow,
    Rejoin,
}

/// What the consumer, its committers and its coordinator share.
struct Shared {
    /// Group calls go through the client to the coordinator (the controller leader).
    client: Client,
    config: GroupConsumerConfig,
    request_timeout: Duration,
    /// std Mutex: never held across `.await`.
    positions: Mutex<HashMap<TopicPartition, Position>>,
    member: Mutex<Member>,
    signals: mpsc::Sender<Signal>,
    changes: broadcast::Sender<AssignmentChange>,
}

impl Shared {
    fn member(&self) -> Member {
        self.member
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }

    fn positions(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, Position>> {
        self.positions
            .lock()
            .expect("no panic while holding the lock")
    }

    /// Commits positions that moved past what the group holds: every handed-out record when
    /// `handed_out`, else the processed ones; only `only` when given.
    async fn commit(&self, handed_out: bool, only: Option<&[TopicPartition]>) -> Result<()> {
        let offsets: Vec<OffsetCommit> = {
            let mut positions = self.positions();
            positions
                .iter_mut()
                .filter(|(partition, _)| only.is_none_or(|only| only.contains(partition)))
                .filter_map(|(partition, position)| {
                    if handed_out && position.handed_out.is_some() {
                        position.processed = position.handed_out;
                    }
                    let offset = position.processed?;
                    (position.committed != Some(offset)).then(|| OffsetCommit {
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                        offset,
                        metadata: String::new(),
                    })
                })
                .collect()
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let member = self.member();
        if member.member_id.is_empty() {
            return Ok(());
        }
        let request = CommitOffsetsRequest {
            group_id: self.config.group_id.clone(),
            member_id: member.member_id,
            member_epoch: member.member_epoch,
            offsets,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reply = self
                .client
                .groups_call(|mut groups| {
                    let request = request.clone();
                    async move { groups.commit_offsets(request).await }
                })
                .await;
            let error = match reply {
                Ok(_) => break,
                Err(error) => error,
            };
            match error.code() {
                // The member moved on (a rebalance or a reset): this commit is void; the
                // heartbeat brings the current epoch.
                Some(ErrorCode::StaleMemberEpoch) => {
                    let _ = self.signals.try_send(Signal::HeartbeatNow);
                    return Err(error);
                }
                Some(ErrorCode::UnknownMember) => {
                    let _ = self.signals.try_send(Signal::Rejoin);
                    return Err(error);
                }
                _ if error.is_retriable() && attempt < COMMIT_ATTEMPTS_MAX => {
                    let delay = self.config.backoff.delay(attempt, random_jitter());
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(error),
            }
        }
        let mut positions = self.positions();
        for offset in &request.offsets {
            let partition = TopicPartition {
                topic: offset.topic.clone(),
                partition: offset.partition,
            };
            if let Some(position) = positions.get_mut(&partition) {
                position.committed = Some(offset.offset);
            }
        }
        Ok(())
    }
}

/// Commits a [`GroupConsumer`]'s positions from elsewhere (a [`RevokeHook`], another task).
/// Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    shared: Arc<Shared>,
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer")
            .field("group_id", &self.shared.config.group_id)
            .finish()
    }
}

impl Committer {
    /// Commits the position after every record handed out so far, of every partition owned.
    ///
    /// # Errors
    /// `STALE_MEMBER_EPOCH` (the assignment moved on: not retried, the consumer heartbeats at
    /// once), `UNKNOWN_MEMBER` (the session ended: the consumer rejoins), other refusals,
    /// and retriable failures that outlasted a few attempts.
    pub async fn commit(&self) -> Result<()> {
        self.shared.commit(true, None).await
    }
}

/// An item from a partition reader: a record of one generation of that reader, or its error.
type Item = Result<(TopicPartition, u64, strata_proto::batch::Record)>;

/// A member of a consumer group, reading the partitions assigned to it as one stream. Made by
/// [`Client::group_consumer`]. See the module documentation.
///
/// Dropping it stops reading and leaves the group in the background without committing;
/// [`GroupConsumer::close`] commits first and waits.
pub struct GroupConsumer {
    shared: Arc<Shared>,
    records: mpsc::Receiver<Item>,
    /// The last record handed out: processed once `next` is called again.
    last: Option<(TopicPartition, u64, u64)>,
    /// Dropping it tells the coordinator to stop.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group_id", &self.shared.config.group_id)
            .field("member", &self.shared.member())
            .finish()
    }
}

pub(crate) async fn start(client: &Client, config: GroupConsumerConfig) -> Result<GroupConsumer> {
    config.validate()?;
    let (signals, signal_receiver) = mpsc::channel(SIGNALS_QUEUED_MAX);
    let (changes, _) = broadcast::channel(ASSIGNMENT_CHANGES_QUEUED_MAX);
    let (records_sender, records) = mpsc::channel(config.records_queued_max);
    let shared = Arc::new(Shared {
        client: client.clone(),
        request_timeout: client.config().request_timeout,
        config,
        positions: Mutex::new(HashMap::new()),
        member: Mutex::new(Member::default()),
        signals,
        changes,
    });
    let mut coordinator = Coordinator {
        client: client.clone(),
        shared: Arc::clone(&shared),
        records: records_sender,
        readers: HashMap::new(),
        next_generation: 0,
        heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
        offsets_generation: None,
    };
    // Join before returning, so a bad group id or topic fails here.
    let assignment = coordinator.join().await?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(coordinator.run(assignment, signal_receiver, stopped));
    Ok(GroupConsumer {
        shared,
        records,
        last: None,
        stop: Some(stop),
        task: Some(task),
    })
}

impl GroupConsumer {
    /// The next record of any owned partition, waiting for one if need be; each partition's
    /// records come in offset order. Marks the record returned before as processed.
    /// `Ok(None)` once the consumer stopped for good (after an error it already returned).
    ///
    /// Cancel safe: dropping the future loses no record.
    ///
    /// # Errors
    /// A partition reader's failure (the broker's refusal, a corrupt batch, failures that
    /// outlasted the resubscription attempts: that partition stops being read),
    /// [`Error::NoCommittedOffset`] with [`OffsetReset::Error`], or the coordinator's
    /// failure to stay in the group (a refusal that is not retriable).
    pub async fn next(&mut self) -> Result<Option<GroupRecord>> {
        if let Some((partition, generation, offset)) = self.last.take() {
            let mut positions = self.shared.positions();
            if let Some(position) = positions.get_mut(&partition)
                && position.generation == generation
            {
                position.processed = Some(offset);
            }
        }
        loop {
            let (partition, generation, record) = match self.records.recv().await {
                None => return Ok(None),
                Some(item) => item?,
            };
            let next_offset = record.offset + 1;
            {
                let mut positions = self.shared.positions();
                let Some(position) = positions.get_mut(&partition) else {
                    continue;
                };
                if position.generation != generation || !position.reading {
                    // Revoked, or sought elsewhere since the reader sent it.
                    continue;
                }
                position.handed_out = Some(next_offset);
            }
            let record = GroupRecord {
                topic: partition.topic.clone(),
                partition: partition.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record.headers,
            };
            self.last = Some((partition, generation, next_offset));
            return Ok(Some(record));
        }
    }

    /// Commits the position after every record handed out so far, of every partition owned,
    /// and waits for the group to store it.
    ///
    /// # Errors
    /// As [`Committer::commit`].
    pub async fn commit(&self) -> Result<()> {
        self.shared.commit(true, None).await
    }

    /// Like [`Self::commit`], in the background; a failure is logged (and a stale epoch or
    /// lost session handled as in `commit`).
    pub fn commit_async(&self) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            if let Err(error) = shared.commit(true, None).await {
                tracing::warn!(%error, group = shared.config.group_id, "commit failed");
            }
        });
    }

    /// A handle that commits this consumer's positions, for a [`RevokeHook`] or another task.
    pub fn committer(&self) -> Committer {
        Committer {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Every assignment change from now on, in order.
    pub fn assignment_changes(&self) -> broadcast::Receiver<AssignmentChange> {
        self.shared.changes.subscribe()
    }

    /// The partitions read now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut owned: Vec<TopicPartition> = self
            .shared
            .positions()
            .iter()
            .filter(|(_, position)| position.reading)
            .map(|(partition, _)| partition.clone())
            .collect();
        owned.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        owned
    }

    /// The member id the group gave this consumer (empty before joining).
    pub fn member_id(&self) -> String {
        self.shared.member().member_id
    }

    /// Commits every record handed out, stops reading and leaves the group, so its partitions
    /// go to the other members at once.
    ///
    /// # Errors
    /// The commit's failure (as [`Self::commit`]); the consumer leaves the group anyway.
    pub async fn close(mut self) -> Result<()> {
        let committed = self.commit().await;
        self.stop.take();
        if let Some(mut task) = self.task.take() {
            // The coordinator may be busy (joining again against an unreachable broker):
            // leaving is best effort, bounded by two request timeouts.
            let limit = self.shared.request_timeout * 2;
            if tokio::time::timeout(limit, &mut task).await.is_err() {
                task.abort();
            }
        }
        committed
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Dropping `stop` ends the coordinator, which stops the readers and leaves the group
        // on its own: nothing here waits.
        self.stop.take();
    }
}

/// The coordinator task's state. See the module documentation.
struct Coordinator {
    client: Client,
    shared: Arc<Shared>,
    records: mpsc::Sender<Item>,
    /// One reader task per partition owned and being read.
    readers: HashMap<TopicPartition, JoinHandle<()>>,
    next_generation: u64,
    heartbeat_interval: Duration,
    offsets_generation: Option<u64>,
}

impl Coordinator {
    /// Joins (or rejoins with the member id it has), retrying retriable failures.
    async fn join(&mut self) -> Result<MemberAssignment> {
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
                .client
                .groups_call(|mut groups| {
                    let request = request.clone();
                    async move { groups.join_group(request).await }
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

    async fn run(
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
                .client
                .groups_call(|mut groups| {
                    let request = request.clone();
                    async move { groups.leave_group(request).await }
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
        let owned: Vec<TopicPartition> = self.shared.positions().keys().cloned().collect();
        let request = HeartbeatRequest {
            group_id: self.shared.config.group_id.clone(),
            member_id: member.member_id,
            member_epoch: member.member_epoch,
            owned,
        };
        self.shared
            .client
            .groups_call(|mut groups| {
                let request = request.clone();
                async move { groups.heartbeat(request).await }
            })
            .await
    }

    /// The session ended: drops every partition without committing (they are others' now)
    /// and joins again with the same member id.
    async fn rejoin(&mut self) -> Result<bool> {
        self.stop_readers();
        let lost: Vec<TopicPartition> = self.shared.positions().drain().map(|(p, _)| p).collect();
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
        let owned: HashSet<TopicPartition> = self.shared.positions().keys().cloned().collect();
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

    /// Stops reading `revoked`, tells the application, commits their processed positions
    /// and forgets them, so the next heartbeat no longer lists them.
    async fn revoke(&mut self, revoked: &[TopicPartition]) {
        for partition in revoked {
            if let Some(reader) = self.readers.remove(partition) {
                reader.abort();
            }
            if let Some(position) = self.shared.positions().get_mut(partition) {
                position.reading = false;
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
        let mut positions = self.shared.positions();
        for partition in revoked {
            positions.remove(partition);
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
            .client
            .groups_call(|mut groups| {
                let request = request.clone();
                async move { groups.fetch_committed_offsets(request).await }
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
            self.shared.positions().insert(
                partition.clone(),
                Position {
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
                client: self.client.clone(),
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
    client: Client,
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
            let error = match self
                .client
                .subscribe(topic, partition, from, config.consumer)
                .await
            {
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
                    source: Box::new(error),
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
        let mut positions = self.shared.positions();
        if let Some(position) = positions.get_mut(&self.partition)
            && position.generation == self.generation
            && position.processed.is_none()
        {
            position.processed = Some(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are valid and each bound is checked.
    #[test]
    fn config_validation() {
        assert!(GroupConsumerConfig::new("g", ["t"]).validate().is_ok());
        let invalid = [
            GroupConsumerConfig::new("", ["t"]),
            GroupConsumerConfig::new("g".repeat(256), ["t"]),
            GroupConsumerConfig::new("g", Vec::<String>::new()),
            GroupConsumerConfig {
                session_timeout: Duration::from_millis(999),
                ..GroupConsumerConfig::new("g", ["t"])
            },
            GroupConsumerConfig {
                auto_commit: Some(Duration::ZERO),
                ..GroupConsumerConfig::new("g", ["t"])
            },
            GroupConsumerConfig {
                records_queued_max: 0,
                ..GroupConsumerConfig::new("g", ["t"])
            },
        ];
        for config in invalid {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    /// A record's header lookup finds the first header with a value.
    #[test]
    fn header_lookup() {
        let record = GroupRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: vec![
                Header {
                    key: "a".into(),
                    value: Some(Bytes::from_static(b"1")),
                },
                Header {
                    key: "a".into(),
                    value: Some(Bytes::from_static(b"2")),
                },
            ],
        };
        assert_eq!(record.header("a"), Some(&Bytes::from_static(b"1")));
        assert_eq!(record.header("b"), None);
    }
}
