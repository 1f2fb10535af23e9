//! The membership requests of consumer groups (join, heartbeat, leave), served by the
//! coordinator on the controller's leader, and the views of groups (list, describe with lag,
//! delete); abandoned groups are deleted after [`GROUP_OFFSETS_RETENTION`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::coordinator::{GroupView, Heartbeat, Join, MemberAssignment};
use super::{ControllerPort, GroupError, GroupRequests, Groups};
use crate::controller::metadata::{Command, CommittedOffset};

/// How often expired members are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(250);
/// A group without members whose newest commit is older than this is deleted, offsets and all
/// (Kafka's default `offsets.retention.minutes`), so the metadata does not grow with every
/// group that ever existed.
pub const GROUP_OFFSETS_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the coordinator looks for such groups.
const GROUP_RETENTION_INTERVAL: Duration = Duration::from_secs(60);

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

impl Groups {
    /// Removes expired members, and forgets every group when this node stops coordinating (no
    /// longer leads the controller); now and then deletes abandoned groups. Ends once the groups
    /// or the node are dropped.
    pub async fn run_expiry<P: ControllerPort + 'static>(groups: Weak<Groups>, port: Weak<P>) {
        let mut interval = tokio::time::interval(EXPIRY_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retention_due = Instant::now() + GROUP_RETENTION_INTERVAL;
        loop {
            interval.tick().await;
            let (Some(groups), Some(port)) = (groups.upgrade(), port.upgrade()) else {
                return;
            };
            let requests = groups.serve(&*port);
            let leading = requests.expire_members();
            if leading && Instant::now() >= retention_due {
                retention_due = Instant::now() + GROUP_RETENTION_INTERVAL;
                requests.delete_abandoned_groups().await;
            }
        }
    }
}

impl<P: ControllerPort> GroupRequests<'_, P> {
    /// On the controller's leader, removes expired members; elsewhere forgets every group.
    /// Returns whether this node leads the controller.
    fn expire_members(&self) -> bool {
        let leading = self.port.controller_leader() == self.port.node_id();
        let metadata = self.port.read_metadata();
        let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
        let mut coordinator = self.groups.coordinator();
        if leading {
            coordinator.expire(Instant::now(), &counts);
            self.groups.classic().tick(Instant::now());
        } else {
            coordinator.clear();
            self.groups.classic().clear();
        }
        leading
    }

    /// Deletes groups without members whose newest commit is older than
    /// [`GROUP_OFFSETS_RETENTION`].
    async fn delete_abandoned_groups(&self) {
        let horizon = self.port.clock().now_ms() - GROUP_OFFSETS_RETENTION.as_millis() as i64;
        let abandoned: Vec<String> = {
            let metadata = self.port.read_metadata();
            let coordinator = self.groups.coordinator();
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
                    newest < horizon
                        && !coordinator.has_members(id)
                        && !self.groups.classic().has_members(id)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for group in abandoned {
            tracing::info!(%group, "deleting a group without members or recent commits");
            if let Err(error) = self.port.propose(Command::DeleteGroup { group }).await {
                tracing::warn!(%error, "deleting an abandoned group failed");
            }
        }
    }

    /// Fails unless this node coordinates groups (leads the controller).
    pub(super) fn ensure_coordinator(&self) -> Result<(), P::Error> {
        let leader_id = self.port.controller_leader();
        if leader_id == self.port.node_id() {
            return Ok(());
        }
        Err(self.port.not_controller_leader(leader_id))
    }

    pub(super) fn group_generation(&self, group: &str) -> u64 {
        self.port
            .read_metadata()
            .groups
            .get(group)
            .map_or(0, |g| g.generation)
    }

    pub fn join_group(&self, join: Join) -> Result<(MemberAssignment, u64), P::Error> {
        super::validate_group_id(&join.group)?;
        self.ensure_coordinator()?;
        let metadata = self.port.read_metadata();
        let generation = metadata.groups.get(&join.group).map_or(0, |g| g.generation);
        let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
        let seed = self.port.clock().now_ms().max(0) as u64;
        let mut coordinator = self.groups.coordinator();
        if self.groups.classic().has_members(&join.group) {
            return Err(GroupError::InvalidArgument(format!(
                "group {:?} is a Kafka consumer group with members (classic protocol): a Strata \
                 member may join once they have left, or use another group id",
                join.group
            ))
            .into());
        }
        let reply = coordinator.join(
            join,
            Instant::now(),
            seed,
            generation,
            &counts,
            new_member_id,
        )?;
        Ok((reply, generation))
    }

    pub fn heartbeat(&self, beat: Heartbeat<'_>) -> Result<(MemberAssignment, u64), P::Error> {
        super::validate_group_id(beat.group_id)?;
        self.ensure_coordinator()?;
        let metadata = self.port.read_metadata();
        let generation = metadata
            .groups
            .get(beat.group_id)
            .map_or(0, |g| g.generation);
        let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
        let reply =
            self.groups
                .coordinator()
                .heartbeat(beat, Instant::now(), generation, &counts)?;
        Ok((reply, generation))
    }

    pub fn leave_group(&self, group: &str, member_id: &str) -> Result<(), P::Error> {
        super::validate_group_id(group)?;
        self.ensure_coordinator()?;
        let metadata = self.port.read_metadata();
        let counts = |topic: &str| metadata.topics.get(topic).map(|t| t.partitions());
        self.groups.coordinator().leave(group, member_id, &counts)?;
        Ok(())
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), P::Error> {
        super::validate_group_id(group)?;
        self.ensure_coordinator()?;
        if self.groups.coordinator().has_members(group) || self.groups.classic().has_members(group)
        {
            return Err(GroupError::GroupNotEmpty(group.to_string()).into());
        }
        self.port
            .propose(Command::DeleteGroup {
                group: group.to_string(),
            })
            .await
    }

    pub fn list_groups(&self) -> Result<Vec<GroupListing>, P::Error> {
        self.ensure_coordinator()?;
        let now = Instant::now();
        let mut ids: BTreeSet<String> = self.port.read_metadata().groups.keys().cloned().collect();
        let coordinator = self.groups.coordinator();
        ids.extend(coordinator.group_ids());
        let classic = self.groups.classic();
        ids.extend(classic.group_ids());
        Ok(ids
            .into_iter()
            .map(|group_id| match coordinator.view(&group_id, now) {
                Some(view) => GroupListing {
                    group_id,
                    state: view.state,
                    members: view.members.len() as u32,
                    group_epoch: view.group_epoch,
                },
                // Kafka clients' groups show Kafka's state names and their generation.
                None => match classic.view(&group_id) {
                    Some(view) => GroupListing {
                        group_id,
                        state: view.state.name(),
                        members: view.members.len() as u32,
                        group_epoch: u64::try_from(view.generation).unwrap_or(0),
                    },
                    None => GroupListing {
                        group_id,
                        state: "empty",
                        members: 0,
                        group_epoch: 0,
                    },
                },
            })
            .collect())
    }

    /// Members, assignments, committed offsets and lag of a group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription, P::Error> {
        super::validate_group_id(group)?;
        self.ensure_coordinator()?;
        let view = self.groups.coordinator().view(group, Instant::now());
        let (stored, counts) = {
            let metadata = self.port.read_metadata();
            let stored = metadata.groups.get(group).cloned();
            let counts: BTreeMap<String, u32> = metadata
                .topics
                .values()
                .map(|t| (t.name.clone(), t.partitions()))
                .collect();
            (stored, counts)
        };
        // A Kafka client's group: its members' subscriptions are opaque to the coordinator,
        // so only committed topics are described.
        let classic = self.groups.classic().view(group);
        if view.is_none() && stored.is_none() && classic.is_none() {
            return Err(GroupError::UnknownGroup(group.to_string()).into());
        }
        let mut topics: BTreeSet<String> =
            view.as_ref().map(|v| v.topics.clone()).unwrap_or_default();
        if let Some(stored) = &stored {
            topics.extend(stored.offsets.keys().cloned());
        }
        let now_ms = self.port.clock().now_ms();
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
                    match self.port.replica(&topic, partition) {
                        Ok(replica) => {
                            let high_watermark = replica.high_watermark();
                            let lag_ms = committed.as_ref().map(|c| {
                                if c.offset >= high_watermark {
                                    0
                                } else {
                                    replica
                                        .timestamp_at(c.offset, high_watermark)
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
            state: view.as_ref().map_or_else(
                || classic.as_ref().map_or("empty", |c| c.state.name()),
                |v| v.state,
            ),
            group_epoch: view.as_ref().map_or_else(
                || {
                    classic
                        .as_ref()
                        .map_or(0, |c| u64::try_from(c.generation).unwrap_or(0))
                },
                |v| v.group_epoch,
            ),
            offsets_generation: stored.as_ref().map_or(0, |s| s.generation),
            view,
            partitions,
        })
    }
}

/// A member id: 16 random hex digits (std's randomly keyed hasher, fed a counter: the key is
/// drawn anew for each id, and the counter keeps two ids of one process apart).
pub(super) fn new_member_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}
