//! The group consumer: members of a consumer group share the partitions of their topics, and
//! the group remembers how far it got (committed offsets) across restarts.
//!
//! ```text
//!                 ┌─ reader task per owned partition (Subscribe with credit) ─┐
//! coordinator ────┤                                                            ├─▶ merged channel ─▶ next()
//! task: join,     └────────────────────────────────────────────────────────────┘      (bounded)
//! heartbeat, reconcile, auto-commit         ▲ start/stop/seek                    progress ◀─┘
//! ```
//!
//! The coordinator task joins the group, heartbeats every `heartbeat_interval_ms` reporting
//! the partitions it holds, and reconciles the reply: a partition newly in the assignment starts
//! at the group's committed offset (or [`GroupConsumerConfig::offset_reset`] when there is
//! none); a partition gone from it is revoked — its reader stops, the application is told
//! ([`GroupConsumer::assignment_changes`], [`GroupConsumerConfig::on_revoke`]), its progress is
//! committed, and only then does the next heartbeat stop listing it, which is when the group
//! hands it to another member. When an operator resets the group's offsets
//! (`offsets_generation` changes), every owned partition restarts at its new committed offset
//! and the records already buffered are dropped.
//!
//! # Delivery: at least once
//!
//! A partition's progress is the offset after the last record the application *processed*. A
//! record counts as processed once the application calls [`GroupConsumer::next`] again (as
//! Kafka's auto-commit does) or calls [`GroupConsumer::commit`], which commits every record
//! handed out so far. Auto-commit ([`GroupConsumerConfig::auto_commit`]) commits processed
//! progress in the background. After a crash, a rebalance, or a session that expired, the
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

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_proto::batch::Header;
use strata_proto::v1::TopicPartition;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::group_config::{AssignmentChange, GroupConsumerConfig};
use crate::group_coordinator::{Coordinator, Item};
use crate::group_state::{Committer, Member, Shared};

/// Assignment changes kept for a slow listener of [`GroupConsumer::assignment_changes`];
/// one that falls further behind misses the oldest (and is told so by the channel).
const ASSIGNMENT_CHANGES_QUEUED_MAX: usize = 64;

/// Signals from commits to the coordinator (heartbeat now, rejoin): one of each suffices.
const SIGNALS_QUEUED_MAX: usize = 4;

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

/// A member of a consumer group, reading the partitions assigned to it as one stream. Made by
/// [`Client::group_consumer`](crate::Client::group_consumer). See the module documentation.
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

pub(crate) async fn start(cluster: &Cluster, config: GroupConsumerConfig) -> Result<GroupConsumer> {
    config.validate()?;
    let (signals, signal_receiver) = mpsc::channel(SIGNALS_QUEUED_MAX);
    let (changes, _) = broadcast::channel(ASSIGNMENT_CHANGES_QUEUED_MAX);
    let (records_sender, records) = mpsc::channel(config.records_queued_max);
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        request_timeout: cluster.config().request_timeout,
        config,
        progress: Mutex::new(HashMap::new()),
        member: Mutex::new(Member::default()),
        signals,
        changes,
    });
    let mut coordinator = Coordinator::new(cluster.clone(), Arc::clone(&shared), records_sender);
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
    /// A partition reader's failure (the broker's refusal, a corrupt batch, failures that outlasted
    /// the resubscription attempts: that partition stops being read),
    /// [`Error::NoCommittedOffset`](crate::Error::NoCommittedOffset) with
    /// [`OffsetReset::Error`](crate::OffsetReset::Error), or the coordinator's failure to stay in
    /// the group (a refusal that is not retriable).
    pub async fn next(&mut self) -> Result<Option<GroupRecord>> {
        if let Some((partition, generation, offset)) = self.last.take() {
            let mut progress = self.shared.progress();
            if let Some(entry) = progress.get_mut(&partition)
                && entry.generation == generation
            {
                entry.processed = Some(offset);
            }
        }
        loop {
            let (partition, generation, record) = match self.records.recv().await {
                None => return Ok(None),
                Some(item) => item?,
            };
            let next_offset = record.offset + 1;
            {
                let mut progress = self.shared.progress();
                let Some(entry) = progress.get_mut(&partition) else {
                    continue;
                };
                if entry.generation != generation || !entry.reading {
                    // Revoked, or sought elsewhere since the reader sent it.
                    continue;
                }
                entry.handed_out = Some(next_offset);
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

    /// Commits the offset after every record handed out so far, of every partition owned,
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

    /// A handle that commits this consumer's progress, for a [`RevokeHook`](crate::RevokeHook) or
    /// another task.
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
            .progress()
            .iter()
            .filter(|(_, entry)| entry.reading)
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

#[cfg(test)]
mod tests {
    use super::*;

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
