//! The broker's consumer group and producer id requests: the coordinator's soft state
//! ([`groups`](super::groups)) joined with the replicated offsets ([`metadata`](super::metadata))
//! and the partitions' high watermarks (for lag).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::groups::{GroupView, Heartbeat, Join, MemberAssignment, Tp};
use super::metadata::{self, Command, CommittedOffset, OffsetEntry};
use super::{Broker, BrokerError, Position};
use crate::storage::batch::{split_batches, timestamp_at};

/// Longest metadata string kept with a committed offset (Kafka's default too).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Most partitions one commit, heartbeat or fetch may name.
pub const PARTITIONS_PER_REQUEST_MAX: usize = 100_000;
/// How often expired members are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(250);
/// A group without members whose newest commit is older than this is deleted, offsets and all
/// (Kafka's default `offsets.retention.minutes`), so the metadata does not grow with every
/// group that ever existed.
pub const GROUP_OFFSETS_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the coordinator looks for such groups.
const GROUP_RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Committed offsets by partition; `None` where the group has not committed.
pub type CommittedOffsets = Vec<(Tp, Option<CommittedOffset>)>;

/// Where a reset moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
    Shift(i64),
}

/// One partition of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<CommittedOffset>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub lag_records: Option<u64>,
    pub lag_ms: Option<i64>,
    pub owner: Option<String>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: &'static str,
    pub group_epoch: u64,
    pub offsets_generation: u64,
    pub view: Option<GroupView>,
    pub partitions: Vec<PartitionLag>,
}

/// A listed group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub state: &'static str,
    pub members: u32,
    pub group_epoch: u64,
}

impl Broker {
    /// Removes expired members, and forgets every group when this node stops coordinating.
    pub(super) async fn run_coordinator(broker: Weak<Self>) {
        let mut interval = tokio::time::interval(EXPIRY_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retention_due = Instant::now() + GROUP_RETENTION_INTERVAL;
        loop {
            interval.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let leading = *broker.controller_leader.borrow() == broker.node_id;
            {
                let metadata = broker.metadata.read().expect("metadata lock poisoned");
                let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
                let mut coordinator = broker
                    .coordinator
                    .lock()
                    .expect("coordinator lock poisoned");
                if leading {
                    coordinator.expire(Instant::now(), &counts);
                } else {
                    coordinator.clear();
                }
            }
            if leading && Instant::now() >= retention_due {
                retention_due = Instant::now() + GROUP_RETENTION_INTERVAL;
                broker.delete_abandoned_groups().await;
            }
        }
    }

    /// Deletes groups without members whose newest commit is older than
    /// [`GROUP_OFFSETS_RETENTION`].
    async fn delete_abandoned_groups(&self) {
        let horizon = crate::now_ms() - GROUP_OFFSETS_RETENTION.as_millis() as i64;
        let abandoned: Vec<String> = {
            let metadata = self.metadata.read().expect("metadata lock poisoned");
            let coordinator = self.coordinator.lock().expect("coordinator lock poisoned");
            metadata
                .groups
                .iter()
                .filter(|(id, group)| {
                    let newest = group
                        .offsets
                        .values()
                        .flat_map(|p| p.values())
                        .map(|c| c.commit_ms)
                        .max()
                        .unwrap_or(i64::MIN);
                    newest < horizon && !coordinator.has_members(id)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for group in abandoned {
            tracing::info!(%group, "deleting a group without members or recent commits");
            if let Err(error) = self.propose_metadata(Command::DeleteGroup { group }).await {
                tracing::warn!(%error, "deleting an abandoned group failed");
            }
        }
    }

    /// Fails unless this node coordinates groups (leads the controller).
    fn ensure_coordinator(&self) -> Result<(), BrokerError> {
        let leader_id = *self.controller_leader.borrow();
        if leader_id == self.node_id {
            return Ok(());
        }
        Err(super::propose_error(
            &self.metadata,
            crate::replication::ProposeError::NotLeader { leader_id },
        ))
    }

    fn group_generation(&self, group: &str) -> u64 {
        self.metadata
            .read()
            .expect("metadata lock poisoned")
            .groups
            .get(group)
            .map_or(0, |g| g.generation)
    }

    pub fn join_group(&self, join: Join) -> Result<(MemberAssignment, u64), BrokerError> {
        metadata::validate_group_id(&join.group).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        let metadata = self.metadata.read().expect("metadata lock poisoned");
        let generation = metadata.groups.get(&join.group).map_or(0, |g| g.generation);
        let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
        let seed = crate::now_ms().max(0) as u64;
        let reply = self
            .coordinator
            .lock()
            .expect("coordinator lock poisoned")
            .join(
                join,
                Instant::now(),
                seed,
                generation,
                &counts,
                new_member_id,
            )?;
        Ok((reply, generation))
    }

    pub fn heartbeat(&self, beat: Heartbeat<'_>) -> Result<(MemberAssignment, u64), BrokerError> {
        metadata::validate_group_id(beat.group_id).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        let metadata = self.metadata.read().expect("metadata lock poisoned");
        let generation = metadata
            .groups
            .get(beat.group_id)
            .map_or(0, |g| g.generation);
        let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
        let reply = self
            .coordinator
            .lock()
            .expect("coordinator lock poisoned")
            .heartbeat(beat, Instant::now(), generation, &counts)?;
        Ok((reply, generation))
    }

    pub fn leave_group(&self, group: &str, member_id: &str) -> Result<(), BrokerError> {
        metadata::validate_group_id(group).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        let metadata = self.metadata.read().expect("metadata lock poisoned");
        let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
        self.coordinator
            .lock()
            .expect("coordinator lock poisoned")
            .leave(group, member_id, &counts)
    }

    /// Commits offsets for a member (or, with an empty member id, for an operator while the
    /// group has no members). Replicated before it returns.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: u64,
        offsets: Vec<OffsetEntry>,
    ) -> Result<(), BrokerError> {
        metadata::validate_group_id(group).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        if offsets.len() > PARTITIONS_PER_REQUEST_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "a commit names at most {PARTITIONS_PER_REQUEST_MAX} partitions, got {}",
                offsets.len()
            )));
        }
        for entry in &offsets {
            if entry.metadata.len() > OFFSET_METADATA_BYTES_MAX {
                return Err(BrokerError::InvalidArgument(format!(
                    "offset metadata is at most {OFFSET_METADATA_BYTES_MAX} bytes, got {} for {}/{}",
                    entry.metadata.len(),
                    entry.topic,
                    entry.partition
                )));
            }
            self.check_partition(&entry.topic, entry.partition)?;
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let generation = {
            let checked = self
                .coordinator
                .lock()
                .expect("coordinator lock poisoned")
                .check_commit(
                    group,
                    member_id,
                    member_epoch,
                    offsets.iter().map(|e| (e.topic.as_str(), e.partition)),
                )?;
            checked.unwrap_or_else(|| self.group_generation(group))
        };
        // Large commits go as several controller changes (each partition's offset stands on
        // its own, as in Kafka), each checked against the same generation.
        for offsets in chunks(offsets) {
            self.propose_metadata(Command::CommitOffsets {
                group: group.to_string(),
                generation,
                offsets,
                now_ms: crate::now_ms(),
            })
            .await?;
        }
        Ok(())
    }

    /// The topic, when it has `partition`.
    ///
    /// # Errors
    /// [`BrokerError::UnknownTopic`], [`BrokerError::UnknownPartition`].
    pub(super) fn check_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<super::metadata::Topic, BrokerError> {
        let known = self.topic(topic)?;
        if partition >= known.partitions() {
            return Err(BrokerError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: known.partitions(),
            });
        }
        Ok(known)
    }

    /// The group's committed offsets of `partitions` (all it has when empty), and its offsets
    /// generation.
    pub fn committed_offsets(
        &self,
        group: &str,
        partitions: &[Tp],
    ) -> Result<(CommittedOffsets, u64), BrokerError> {
        metadata::validate_group_id(group).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        if partitions.len() > PARTITIONS_PER_REQUEST_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "a request names at most {PARTITIONS_PER_REQUEST_MAX} partitions, got {}",
                partitions.len()
            )));
        }
        let metadata = self.metadata.read().expect("metadata lock poisoned");
        let stored = metadata.groups.get(group);
        let generation = stored.map_or(0, |g| g.generation);
        let lookup = |topic: &str, partition: u32| {
            stored
                .and_then(|g| g.offsets.get(topic))
                .and_then(|p| p.get(&partition))
                .cloned()
        };
        let offsets = if partitions.is_empty() {
            stored
                .into_iter()
                .flat_map(|g| g.offsets.iter())
                .flat_map(|(topic, partitions)| {
                    partitions
                        .iter()
                        .map(move |(p, c)| ((topic.clone(), *p), Some(c.clone())))
                })
                .collect()
        } else {
            partitions
                .iter()
                .map(|(topic, partition)| ((topic.clone(), *partition), lookup(topic, *partition)))
                .collect()
        };
        Ok((offsets, generation))
    }

    /// Sets a group's offsets of `topic` (its `partitions`, or all), also while members run;
    /// returns the new offsets and the generation after the reset.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
        dry_run: bool,
    ) -> Result<(Vec<(u32, u64)>, u64), BrokerError> {
        metadata::validate_group_id(group).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        let known = self.topic(topic)?;
        let partitions: Vec<u32> = if partitions.is_empty() {
            (0..known.partitions()).collect()
        } else {
            let unique: BTreeSet<u32> = partitions.iter().copied().collect();
            unique.into_iter().collect()
        };
        let mut offsets = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let replica = self.replica(topic, partition)?;
            let log_start = replica.log_start_offset();
            let high_watermark = replica.high_watermark();
            let clamp = |offset: u64| offset.clamp(log_start, high_watermark);
            let offset = match to {
                ResetTo::Earliest => log_start,
                ResetTo::Latest => high_watermark,
                ResetTo::Offset(offset) => clamp(offset),
                ResetTo::Timestamp(timestamp) => {
                    self.resolve(&replica, Position::Timestamp(timestamp))?
                }
                ResetTo::Shift(by) => {
                    let committed = self
                        .committed_offsets(group, &[(topic.to_string(), partition)])?
                        .0
                        .into_iter()
                        .next()
                        .and_then(|(_, c)| c)
                        .map_or(log_start, |c| c.offset);
                    clamp(committed.saturating_add_signed(by))
                }
            };
            offsets.push((partition, offset));
        }
        if dry_run {
            return Ok((offsets, self.group_generation(group)));
        }
        let entries = offsets
            .iter()
            .map(|(partition, offset)| OffsetEntry {
                topic: topic.to_string(),
                partition: *partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect();
        // A reset of many partitions goes as several changes, each raising the generation, so
        // members re-read their offsets after each and end at the final ones.
        for offsets in chunks(entries) {
            self.propose_metadata(Command::ResetOffsets {
                group: group.to_string(),
                offsets,
                now_ms: crate::now_ms(),
            })
            .await?;
        }
        Ok((offsets, self.group_generation(group)))
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        metadata::validate_group_id(group).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        if self
            .coordinator
            .lock()
            .expect("coordinator lock poisoned")
            .has_members(group)
        {
            return Err(BrokerError::GroupNotEmpty(group.to_string()));
        }
        self.propose_metadata(Command::DeleteGroup {
            group: group.to_string(),
        })
        .await
    }

    pub fn list_groups(&self) -> Result<Vec<GroupListing>, BrokerError> {
        self.ensure_coordinator()?;
        let now = Instant::now();
        let mut ids: BTreeSet<String> = self
            .metadata
            .read()
            .expect("metadata lock poisoned")
            .groups
            .keys()
            .cloned()
            .collect();
        let coordinator = self.coordinator.lock().expect("coordinator lock poisoned");
        ids.extend(coordinator.group_ids());
        Ok(ids
            .into_iter()
            .map(|group_id| match coordinator.view(&group_id, now) {
                Some(view) => GroupListing {
                    group_id,
                    state: view.state,
                    members: view.members.len() as u32,
                    group_epoch: view.group_epoch,
                },
                None => GroupListing {
                    group_id,
                    state: "empty",
                    members: 0,
                    group_epoch: 0,
                },
            })
            .collect())
    }

    /// Members, assignments, committed offsets and lag of a group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        metadata::validate_group_id(group).map_err(BrokerError::InvalidGroupId)?;
        self.ensure_coordinator()?;
        let view = self
            .coordinator
            .lock()
            .expect("coordinator lock poisoned")
            .view(group, Instant::now());
        let (stored, counts) = {
            let metadata = self.metadata.read().expect("metadata lock poisoned");
            let stored = metadata.groups.get(group).cloned();
            let counts: BTreeMap<String, u32> = metadata
                .topics
                .values()
                .map(|t| (t.name.clone(), t.partitions()))
                .collect();
            (stored, counts)
        };
        if view.is_none() && stored.is_none() {
            return Err(BrokerError::UnknownGroup(group.to_string()));
        }
        let mut topics: BTreeSet<String> =
            view.as_ref().map(|v| v.topics.clone()).unwrap_or_default();
        if let Some(stored) = &stored {
            topics.extend(stored.offsets.keys().cloned());
        }
        let now_ms = crate::now_ms();
        let mut partitions = Vec::new();
        for topic in topics {
            let Some(count) = counts.get(&topic) else {
                continue;
            };
            for partition in 0..*count {
                let committed = stored
                    .as_ref()
                    .and_then(|s| s.offsets.get(&topic))
                    .and_then(|p| p.get(&partition))
                    .cloned();
                let owner = view
                    .as_ref()
                    .and_then(|v| v.owners.get(&(topic.clone(), partition)).cloned());
                let (log_start_offset, high_watermark, lag_ms) =
                    match self.replica(&topic, partition) {
                        Ok(replica) => {
                            let high_watermark = replica.high_watermark();
                            let lag_ms = committed.as_ref().map(|c| {
                                if c.offset >= high_watermark {
                                    0
                                } else {
                                    self.timestamp_at(&replica, c.offset, high_watermark)
                                        .map_or(0, |ts| (now_ms - ts).max(0))
                                }
                            });
                            (replica.log_start_offset(), high_watermark, lag_ms)
                        }
                        Err(_) => (0, 0, None),
                    };
                partitions.push(PartitionLag {
                    lag_records: committed
                        .as_ref()
                        .map(|c| high_watermark.saturating_sub(c.offset)),
                    topic: topic.clone(),
                    partition,
                    committed,
                    log_start_offset,
                    high_watermark,
                    lag_ms,
                    owner,
                });
            }
        }
        Ok(GroupDescription {
            state: view.as_ref().map_or("empty", |v| v.state),
            group_epoch: view.as_ref().map_or(0, |v| v.group_epoch),
            offsets_generation: stored.as_ref().map_or(0, |s| s.generation),
            view,
            partitions,
        })
    }

    /// The timestamp of the first record at or after `offset` (below `end`), if any is stored.
    fn timestamp_at(
        &self,
        replica: &super::PartitionReplica,
        offset: u64,
        end: u64,
    ) -> Option<i64> {
        let log = replica.log.read().expect("log lock poisoned");
        let from = offset.max(log.log_start_offset());
        let runs = log.read_below(from, end, 1).ok()?;
        drop(log);
        for run in runs {
            for split in split_batches(run) {
                let (header, batch) = split.ok()?;
                if header.is_control() {
                    continue;
                }
                // One streaming pass through a bounded buffer: a compressed batch is never
                // decompressed whole to find one timestamp.
                if let Some(timestamp) = timestamp_at(&batch, from).ok()? {
                    return Some(timestamp);
                }
            }
        }
        None
    }

    /// A fresh producer id (epoch 0) for an idempotent producer. Ids come from a block this
    /// node took from the controller; a new block is taken when it runs out.
    pub async fn init_producer_id(&self) -> Result<i64, BrokerError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.is_empty() {
            // Another node may take the block first: ask again (bounded).
            let mut attempts = 0;
            loop {
                let first = self
                    .metadata
                    .read()
                    .expect("metadata lock poisoned")
                    .next_producer_id;
                match self
                    .propose_metadata(Command::AllocateProducerIds {
                        node: self.node_id,
                        first,
                    })
                    .await
                {
                    Ok(()) => {
                        *ids = first..first + metadata::PRODUCER_ID_BLOCK;
                        break;
                    }
                    Err(BrokerError::Storage(reason))
                        if reason == metadata::PRODUCER_IDS_TAKEN && attempts < 10 =>
                    {
                        attempts += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        let id = ids.next().expect("a non-empty block");
        Ok(id as i64)
    }

    /// Whether the cluster handed out `producer_id`.
    pub(super) fn producer_id_known(&self, producer_id: i64) -> bool {
        let next = self
            .metadata
            .read()
            .expect("metadata lock poisoned")
            .next_producer_id;
        producer_id >= 0 && (producer_id as u64) < next
    }
}

/// Encoded size of the offsets in one controller change, at most: well inside the
/// controller's limit per change (one entry alone is at most ~25 KiB: a 200-byte topic name and
/// 4 KiB of metadata, escaped).
const OFFSETS_CHANGE_BYTES_MAX: usize = 32 << 10;

/// Splits offsets into runs small enough for one controller change each.
fn chunks(offsets: Vec<OffsetEntry>) -> Vec<Vec<OffsetEntry>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for entry in offsets {
        // Its JSON, as the change will carry it (plus a separator).
        let size = serde_json::to_vec(&entry).map_or(0, |json| json.len()) + 1;
        if bytes + size > OFFSETS_CHANGE_BYTES_MAX && bytes > 0 {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        chunks.last_mut().expect("a chunk").push(entry);
    }
    chunks
}

/// A member id: 16 random hex digits (std's randomly keyed hasher, fed a counter and the clock).
fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_i64(crate::now_ms());
    format!("{:016x}", hasher.finish())
}
