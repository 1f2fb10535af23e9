//! A consumer group's committed offsets: commit (checked against the partitions' high
//! watermarks, asking the replicas that hold them), fetch and reset. Offsets are replicated
//! through the controller ([`controller::metadata`](crate::controller::metadata)); a member's
//! right to commit is the coordinator's ([`coordinator`](super::coordinator)) to decide.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use super::coordinator::{CoordinatorError, Tp};
use super::{ControllerPort, GroupError, GroupRequests};
use crate::controller::metadata::{Command, CommittedOffset, OffsetEntry};
use crate::partition::{ListedOffsets, StartFrom};

/// Longest metadata string kept with a committed offset (Kafka's default too).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Most partitions one commit, heartbeat or fetch may name.
pub const PARTITIONS_PER_REQUEST_MAX: usize = 100_000;
/// How long a commit (or a reset) waits for another node's answer about its partitions' offsets.
pub const COMMIT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What one node reports about a partition of a topic, to check commits against: its replica's
/// log start and high watermark, and which node it sees leading the partition (zeros where it
/// holds no replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaOffsets {
    pub partition: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub leader_node_id: u64,
}

/// What is known about one partition's valid commit range while a commit is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct KnownRange {
    log_start: u64,
    /// The highest high watermark any replica reported. Replicas' high watermarks never
    /// exceed what the partition has committed, so an offset at or below it is valid.
    high_watermark: u64,
    /// Whether the partition's leader was among the answers: only then is an offset above
    /// `high_watermark` surely invalid (a follower's high watermark lags its leader's).
    leader_answered: bool,
}

impl KnownRange {
    fn learn(&mut self, node: u64, answer: &ReplicaOffsets) {
        if answer.high_watermark > self.high_watermark {
            self.high_watermark = answer.high_watermark;
            self.log_start = answer.log_start_offset;
        }
        if answer.leader_node_id == node && node != 0 {
            self.leader_answered = true;
        }
    }
}

/// The verdict on committing `offset` to a partition whose replicas said `known`.
fn commit_verdict(
    topic: &str,
    partition: u32,
    offset: u64,
    known: KnownRange,
) -> Result<(), GroupError> {
    if offset <= known.high_watermark {
        // Equal is valid: it means "everything read", the usual commit after a fetch.
        return Ok(());
    }
    if known.leader_answered {
        return Err(GroupError::OffsetOutOfRange {
            requested: offset,
            log_start: known.log_start,
            high_watermark: known.high_watermark,
        });
    }
    Err(GroupError::Unavailable(format!(
        "offset {offset} of {topic}/{partition} cannot be checked right now: it is above the \
         highest high watermark known ({}) and the partition's leader did not answer; retry",
        known.high_watermark
    )))
}

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

impl<P: ControllerPort> GroupRequests<'_, P> {
    /// Commits offsets for a member (or, with an empty member id, for an operator while the
    /// group has no members). Replicated before it returns. Every offset must lie at or below
    /// its partition's high watermark (see `GroupRequests::check_commit_range`); `offsets_at`
    /// asks another node, by id and address, about its replicas of a topic.
    ///
    /// # Errors
    /// [`GroupError::OffsetOutOfRange`] naming the valid range for an offset beyond the high
    /// watermark; [`GroupError::Unavailable`] when that cannot be decided now; the group,
    /// member and partition errors of the checks before.
    pub async fn commit_offsets<F, Fut>(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: u64,
        offsets: Vec<OffsetEntry>,
        offsets_at: F,
    ) -> Result<(), P::Error>
    where
        F: Fn(u64, String, String) -> Fut,
        Fut: Future<Output = Result<Vec<ReplicaOffsets>, String>>,
    {
        super::validate_group_id(group)?;
        self.ensure_coordinator()?;
        self.check_commit_entries(&offsets)?;
        if offsets.is_empty() {
            return Ok(());
        }
        if member_id.is_empty() && self.groups.classic().has_members(group) {
            return Err(CoordinatorError::UnknownMember(format!(
                "group {group:?} is a Kafka consumer group with members: only they may commit"
            ))
            .into());
        }
        let generation = {
            let checked = self.groups.coordinator().check_commit(
                group,
                member_id,
                member_epoch,
                offsets.iter().map(|e| (e.topic.as_str(), e.partition)),
            )?;
            checked.unwrap_or_else(|| self.group_generation(group))
        };
        // After the member checks: a fenced member hears that first, whatever it commits.
        self.store_commit(group, generation, offsets, offsets_at)
            .await
    }

    /// Checks a commit's size, its entries' metadata and that their partitions exist.
    pub(super) fn check_commit_entries(&self, offsets: &[OffsetEntry]) -> Result<(), P::Error> {
        if offsets.len() > PARTITIONS_PER_REQUEST_MAX {
            return Err(GroupError::InvalidArgument(format!(
                "a commit names at most {PARTITIONS_PER_REQUEST_MAX} partitions, got {}",
                offsets.len()
            ))
            .into());
        }
        for entry in offsets {
            if entry.metadata.len() > OFFSET_METADATA_BYTES_MAX {
                return Err(GroupError::InvalidArgument(format!(
                    "offset metadata is at most {OFFSET_METADATA_BYTES_MAX} bytes, got {} for {}/{}",
                    entry.metadata.len(),
                    entry.topic,
                    entry.partition
                )).into());
            }
            self.port.check_partition(&entry.topic, entry.partition)?;
        }
        Ok(())
    }

    /// Stores checked offsets for the offsets generation `generation`: each at or below its
    /// partition's high watermark (see `check_commit_range`), replicated before it returns.
    pub(super) async fn store_commit<F, Fut>(
        &self,
        group: &str,
        generation: u64,
        offsets: Vec<OffsetEntry>,
        offsets_at: F,
    ) -> Result<(), P::Error>
    where
        F: Fn(u64, String, String) -> Fut,
        Fut: Future<Output = Result<Vec<ReplicaOffsets>, String>>,
    {
        self.check_commit_range(&offsets, offsets_at).await?;
        // Large commits go as several controller changes (each partition's offset stands on
        // its own, as in Kafka), each checked against the same generation.
        for offsets in chunks(offsets) {
            self.port
                .propose(Command::CommitOffsets {
                    group: group.to_string(),
                    generation,
                    offsets,
                    now_ms: self.port.clock().now_ms(),
                })
                .await?;
        }
        Ok(())
    }

    /// Refuses offsets above their partition's high watermark (a commit equal to it is valid).
    ///
    /// The check runs here, on the controller's leader, which may not hold the partition or may
    /// hold a follower whose high watermark lags. The metadata does not carry high watermarks
    /// (they move with every produce; replicating them through the controller would cost a
    /// controller change per produce), so the truth is asked of the replicas: the local one
    /// first, which settles most commits at no cost (an offset at or below any replica's high
    /// watermark is committed data; above the local leader's, it is invalid); then the other
    /// replicas, one request per node and topic, in parallel. Offsets above every answer are
    /// refused as out of range only when the partition's leader answered; otherwise the
    /// commit is refused as retriable, since a follower's view may lag.
    async fn check_commit_range<F, Fut>(
        &self,
        offsets: &[OffsetEntry],
        offsets_at: F,
    ) -> Result<(), P::Error>
    where
        F: Fn(u64, String, String) -> Fut,
        Fut: Future<Output = Result<Vec<ReplicaOffsets>, String>>,
    {
        // The highest offset asked of each partition that the local replica cannot settle.
        let mut unsettled: BTreeMap<Tp, (u64, KnownRange)> = BTreeMap::new();
        for entry in offsets {
            let key = (entry.topic.clone(), entry.partition);
            let local = self.port.local_replica(&entry.topic, entry.partition);
            let mut known = KnownRange::default();
            if let Some(replica) = local {
                known.learn(
                    self.port.node_id(),
                    &ReplicaOffsets {
                        partition: entry.partition,
                        log_start_offset: replica.log_start_offset(),
                        high_watermark: replica.high_watermark(),
                        leader_node_id: *replica.leader.borrow(),
                    },
                );
                if entry.offset <= known.high_watermark {
                    continue;
                }
                if known.leader_answered {
                    return Ok(commit_verdict(
                        &entry.topic,
                        entry.partition,
                        entry.offset,
                        known,
                    )?);
                }
            }
            let slot = unsettled.entry(key).or_insert((entry.offset, known));
            slot.0 = slot.0.max(entry.offset);
        }
        if unsettled.is_empty() {
            return Ok(());
        }
        let asks: BTreeSet<(u64, String)> = {
            let metadata = self.port.read_metadata();
            unsettled
                .keys()
                .filter_map(|(topic, partition)| {
                    let replicas = metadata
                        .topics
                        .get(topic)?
                        .replicas
                        .get(*partition as usize)?;
                    Some(
                        replicas
                            .iter()
                            .filter(|node| **node != self.port.node_id())
                            .map(|node| (*node, topic.clone()))
                            .collect::<Vec<_>>(),
                    )
                })
                .flatten()
                .collect()
        };
        let addresses: BTreeMap<u64, String> = asks
            .iter()
            .filter_map(|(node, _)| Some((*node, self.port.node_address(*node)?)))
            .collect();
        let answers = futures::future::join_all(asks.into_iter().filter_map(|(node, topic)| {
            let address = addresses.get(&node)?.clone();
            let asked = offsets_at(node, address, topic.clone());
            Some(async move {
                let answer = tokio::time::timeout(COMMIT_CHECK_TIMEOUT, asked).await;
                (node, topic, answer)
            })
        }))
        .await;
        for (node, topic, answer) in answers {
            match answer {
                Ok(Ok(partitions)) => {
                    for reported in partitions {
                        if let Some((_, known)) =
                            unsettled.get_mut(&(topic.clone(), reported.partition))
                        {
                            known.learn(node, &reported);
                        }
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(node, %topic, %error, "asking for offsets to check a commit failed");
                }
                Err(_) => {
                    tracing::debug!(node, %topic, "asking for offsets to check a commit timed out");
                }
            }
        }
        for ((topic, partition), (offset, known)) in unsettled {
            commit_verdict(&topic, partition, offset, known)?;
        }
        Ok(())
    }

    /// The group's committed offsets of `partitions` (all it has when empty), and its offsets
    /// generation.
    pub fn committed_offsets(
        &self,
        group: &str,
        partitions: &[Tp],
    ) -> Result<(CommittedOffsets, u64), P::Error> {
        super::validate_group_id(group)?;
        self.ensure_coordinator()?;
        if partitions.len() > PARTITIONS_PER_REQUEST_MAX {
            return Err(GroupError::InvalidArgument(format!(
                "a request names at most {PARTITIONS_PER_REQUEST_MAX} partitions, got {}",
                partitions.len()
            ))
            .into());
        }
        let metadata = self.port.read_metadata();
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
    /// returns the new offsets and the generation after the reset. Offsets are resolved on
    /// this node's replica of each partition, or, where it holds none, by `offsets_at`
    /// (node, its address, partition, position) asked of the nodes that do.
    ///
    /// # Errors
    /// An invalid group id, this node not leading the controller, an unknown topic or
    /// partition, no replica able to resolve a partition's offsets (retriable), and the
    /// controller's refusal of the change.
    pub async fn reset_offsets<F, Fut>(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
        dry_run: bool,
        offsets_at: F,
    ) -> Result<(Vec<(u32, u64)>, u64), P::Error>
    where
        F: Fn(u64, String, u32, StartFrom) -> Fut,
        Fut: Future<Output = Result<ListedOffsets, String>>,
    {
        super::validate_group_id(group)?;
        self.ensure_coordinator()?;
        let known = self.port.topic(topic)?;
        let partitions: Vec<u32> = if partitions.is_empty() {
            (0..known.partitions()).collect()
        } else {
            let unique: BTreeSet<u32> = partitions.iter().copied().collect();
            unique.into_iter().collect()
        };
        let mut offsets = Vec::with_capacity(partitions.len());
        for partition in partitions {
            self.port.check_partition(topic, partition)?;
            // Where a time resolves needs the log; the other targets need only its bounds.
            let start = match to {
                ResetTo::Timestamp(timestamp) => StartFrom::Timestamp(timestamp),
                _ => StartFrom::Latest,
            };
            let listed = match self.port.local_replica(topic, partition) {
                Some(replica) => ListedOffsets {
                    offset: replica.resolve(start)?,
                    log_start_offset: replica.log_start_offset(),
                    high_watermark: replica.high_watermark(),
                },
                None => {
                    self.remote_offsets(topic, partition, start, &offsets_at)
                        .await?
                }
            };
            let clamp = |offset: u64| offset.clamp(listed.log_start_offset, listed.high_watermark);
            let offset = match to {
                ResetTo::Earliest => listed.log_start_offset,
                ResetTo::Latest => listed.high_watermark,
                ResetTo::Offset(offset) => clamp(offset),
                ResetTo::Timestamp(_) => listed.offset,
                ResetTo::Shift(by) => {
                    let committed = self
                        .committed_offsets(group, &[(topic.to_string(), partition)])?
                        .0
                        .into_iter()
                        .next()
                        .and_then(|(_, c)| c)
                        .map_or(listed.log_start_offset, |c| c.offset);
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
            self.port
                .propose(Command::ResetOffsets {
                    group: group.to_string(),
                    offsets,
                    now_ms: self.port.clock().now_ms(),
                })
                .await?;
        }
        Ok((offsets, self.group_generation(group)))
    }

    /// Where `start` resolves on `topic`/`partition`, with its bounds, asked of the nodes that
    /// hold a replica when this node holds none (a reset runs on the controller's leader,
    /// which need not hold every partition). The first replica to answer is taken: a
    /// follower's high watermark may trail its leader's by the last commits, as a local
    /// follower replica's does.
    async fn remote_offsets<F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
        offsets_at: &F,
    ) -> Result<ListedOffsets, P::Error>
    where
        F: Fn(u64, String, u32, StartFrom) -> Fut,
        Fut: Future<Output = Result<ListedOffsets, String>>,
    {
        let holders: Vec<u64> = {
            let metadata = self.port.read_metadata();
            metadata
                .topics
                .get(topic)
                .and_then(|t| t.replicas.get(partition as usize))
                .cloned()
                .unwrap_or_default()
        };
        let mut failures = Vec::new();
        for node in holders {
            let Some(address) = self.port.node_address(node) else {
                failures.push(format!("node {node}: address unknown"));
                continue;
            };
            let asked = offsets_at(node, address, partition, start);
            match tokio::time::timeout(COMMIT_CHECK_TIMEOUT, asked).await {
                Ok(Ok(listed)) => return Ok(listed),
                Ok(Err(error)) => failures.push(format!("node {node}: {error}")),
                Err(_) => failures.push(format!(
                    "node {node}: no answer within {} ms",
                    COMMIT_CHECK_TIMEOUT.as_millis()
                )),
            }
        }
        Err(GroupError::Unavailable(format!(
            "no replica of {topic}/{partition} told its offsets ({}); retry shortly",
            failures.join("; ")
        ))
        .into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(high_watermark: u64, leader_node_id: u64) -> ReplicaOffsets {
        ReplicaOffsets {
            partition: 0,
            log_start_offset: 2,
            high_watermark,
            leader_node_id,
        }
    }

    /// One case: the answers as (answering node, its report), the offset committed, and the
    /// verdict's error code (`Ok` when accepted).
    type Case = (Vec<(u64, ReplicaOffsets)>, u64, Result<(), &'static str>);

    /// Table: what replicas reported, the offset committed, the verdict.
    #[test]
    fn commits_are_checked_against_the_highest_known_high_watermark() {
        let cases: Vec<Case> = vec![
            // Equal to the leader's high watermark: valid ("everything read").
            (vec![(1, answer(4, 1))], 4, Ok(())),
            (vec![(1, answer(4, 1))], 0, Ok(())),
            (vec![(1, answer(4, 1))], 5, Err("OFFSET_OUT_OF_RANGE")),
            (
                vec![(1, answer(4, 1))],
                u64::MAX,
                Err("OFFSET_OUT_OF_RANGE"),
            ),
            // A lagging follower and the leader: the leader's high watermark counts.
            (vec![(2, answer(3, 1)), (1, answer(4, 1))], 4, Ok(())),
            // Only followers answered: below their view is valid, above is not decidable.
            (vec![(2, answer(3, 1))], 3, Ok(())),
            (vec![(2, answer(3, 1))], 4, Err("UNAVAILABLE")),
            // A replica that sees no leader does not count as the leader.
            (vec![(2, answer(3, 0))], 9, Err("UNAVAILABLE")),
            (Vec::new(), 1, Err("UNAVAILABLE")),
            (Vec::new(), 0, Ok(())),
        ];
        for (answers, offset, expected) in cases {
            let mut known = KnownRange::default();
            for (node, reported) in &answers {
                known.learn(*node, reported);
            }
            let verdict = commit_verdict("t", 0, offset, known);
            match (expected, verdict) {
                (Ok(()), Ok(())) => {}
                (
                    Err("OFFSET_OUT_OF_RANGE"),
                    Err(GroupError::OffsetOutOfRange {
                        requested,
                        log_start,
                        high_watermark,
                    }),
                ) => {
                    assert_eq!((requested, log_start), (offset, 2));
                    assert_eq!(high_watermark, known.high_watermark);
                }
                (Err("UNAVAILABLE"), Err(GroupError::Unavailable(_))) => {}
                (expected, verdict) => {
                    panic!(
                        "answers {answers:?}, offset {offset}: expected {expected:?}, got {verdict:?}"
                    )
                }
            }
        }
    }
}
