//! What a group consumer, its [`Committer`]s and its coordinator share: each owned
//! partition's progress (processed, handed out, committed), the member's identity in the
//! group, and the commit call that moves the group's offsets.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_proto::v1::{CommitOffsetsRequest, ErrorCode, OffsetCommit, TopicPartition};
use tokio::sync::{broadcast, mpsc};

use crate::cluster::Cluster;
use crate::error::Result;
use crate::group_config::{AssignmentChange, GroupConsumerConfig};
use crate::retry::random_jitter;

/// Attempts of a commit that fails with a retriable error.
const COMMIT_ATTEMPTS_MAX: u32 = 5;

/// One partition's progress, shared by `next`, commits and the coordinator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Which reader's records count; older ones are dropped.
    pub(crate) generation: u64,
    /// One past the last record processed; `None` until the reader resolved its start.
    pub(crate) processed: Option<u64>,
    /// One past the last record handed out by `next`.
    pub(crate) handed_out: Option<u64>,
    /// What the group holds, as far as this member knows.
    pub(crate) committed: Option<u64>,
    /// Whether records of this partition are still handed out (false once revoking).
    pub(crate) reading: bool,
}

/// The member's identity in the group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Member {
    pub(crate) member_id: String,
    pub(crate) member_epoch: u64,
}

/// What a commit asks of the coordinator after the group refused it.
#[derive(Debug)]
pub(crate) enum Signal {
    HeartbeatNow,
    Rejoin,
}

/// What the consumer, its committers and its coordinator share.
pub(crate) struct Shared {
    /// Group calls go through the cluster handle to the coordinator (the controller leader).
    pub(crate) cluster: Cluster,
    pub(crate) config: GroupConsumerConfig,
    pub(crate) request_timeout: Duration,
    /// std Mutex: never held across `.await`.
    pub(crate) progress: Mutex<HashMap<TopicPartition, Progress>>,
    pub(crate) member: Mutex<Member>,
    pub(crate) signals: mpsc::Sender<Signal>,
    pub(crate) changes: broadcast::Sender<AssignmentChange>,
}

impl Shared {
    pub(crate) fn member(&self) -> Member {
        self.member
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }

    pub(crate) fn progress(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, Progress>> {
        self.progress
            .lock()
            .expect("no panic while holding the lock")
    }

    /// Commits progress that moved past what the group holds: every handed-out record when
    /// `handed_out`, else the processed ones; only `only` when given.
    pub(crate) async fn commit(
        &self,
        handed_out: bool,
        only: Option<&[TopicPartition]>,
    ) -> Result<()> {
        let offsets: Vec<OffsetCommit> = {
            let mut progress = self.progress();
            progress
                .iter_mut()
                .filter(|(partition, _)| only.is_none_or(|only| only.contains(partition)))
                .filter_map(|(partition, entry)| {
                    if handed_out && entry.handed_out.is_some() {
                        entry.processed = entry.handed_out;
                    }
                    let offset = entry.processed?;
                    (entry.committed != Some(offset)).then(|| OffsetCommit {
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
                .cluster
                .groups_call(&request, |mut groups, request| async move {
                    groups.commit_offsets(request).await
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
        let mut progress = self.progress();
        for offset in &request.offsets {
            let partition = TopicPartition {
                topic: offset.topic.clone(),
                partition: offset.partition,
            };
            if let Some(entry) = progress.get_mut(&partition) {
                entry.committed = Some(offset.offset);
            }
        }
        Ok(())
    }
}

/// Commits a [`GroupConsumer`](crate::GroupConsumer)'s progress from elsewhere (a
/// [`RevokeHook`](crate::RevokeHook), another task). Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer")
            .field("group_id", &self.shared.config.group_id)
            .finish()
    }
}

impl Committer {
    /// Commits the offset after every record handed out so far, of every partition owned.
    ///
    /// # Errors
    /// `STALE_MEMBER_EPOCH` (the assignment moved on: not retried, the consumer heartbeats at
    /// once), `UNKNOWN_MEMBER` (the session ended: the consumer rejoins), other refusals,
    /// and retriable failures that outlasted a few attempts.
    pub async fn commit(&self) -> Result<()> {
        self.shared.commit(true, None).await
    }
}
