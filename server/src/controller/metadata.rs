//! Cluster metadata: what the controller replicates (nodes, topics, configs, committed group
//! offsets, producer id blocks), the [`Command`]s that change it and their typed refusals
//! ([`CommandRefusal`]), and the checks of names and the replica placement a proposer uses.
//!
//! Commands are JSON records inside ordinary batches in the controller's raft log. Applying one
//! reads no clock, randomness or environment: time and replica placement are decided by the
//! proposer (the controller's leader) and carried in the command.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use super::capture_config::{
    CAPTURE_INTERVAL_MS_DEFAULT, CAPTURE_MAX_BYTES_DEFAULT, CaptureFormat, CapturePosition,
};
use crate::security::acl::Acl;
use crate::security::scram::ScramCredential;

use crate::storage::RetentionPolicy;
use crate::storage::batch::BatchBuilder;

/// Default bytes at which a partition's active segment rolls.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Longest topic name.
pub const TOPIC_NAME_BYTES_MAX: usize = 200;
/// Most partitions in one topic.
pub const PARTITIONS_MAX: u32 = 10_000;

/// A topic's configuration.
///
/// Not `Copy`: `capture_dir` is a string. The capture fields have serde defaults, so metadata
/// written before capture existed loads as "not captured".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    /// Where the partitions' leaders write closed capture windows (`capture.dir`): an
    /// absolute directory path or an `s3://bucket/prefix` URL. `None`: no capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_dir: Option<String>,
    /// A window closes this long after its leader first saw uncaptured data.
    #[serde(default = "super::capture_config::capture_interval_ms_default")]
    pub capture_interval_ms: u64,
    /// A window closes when its committed batches reach this many bytes.
    #[serde(default = "super::capture_config::capture_max_bytes_default")]
    pub capture_max_bytes: u64,
    #[serde(default)]
    pub capture_format: CaptureFormat,
    /// While capture is set, retention keeps every segment holding records not captured yet
    /// (`true`), or deletes them anyway and logs the gap (`false`).
    #[serde(default = "super::capture_config::capture_block_retention_default")]
    pub capture_block_retention: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            capture_dir: None,
            capture_interval_ms: CAPTURE_INTERVAL_MS_DEFAULT,
            capture_max_bytes: CAPTURE_MAX_BYTES_DEFAULT,
            capture_format: CaptureFormat::default(),
            capture_block_retention: true,
        }
    }
}

impl TopicConfig {
    /// The retention policy of a partition whose capture position is `capture_next_offset`:
    /// while capture is on and blocks retention, nothing at or above it is removed.
    pub fn retention(&self, capture_next_offset: u64) -> RetentionPolicy {
        let floor = self.capture_dir.is_some() && self.capture_block_retention;
        RetentionPolicy {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            offset_floor: floor.then_some(capture_next_offset),
        }
    }
}

/// One topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Unique for the life of the cluster, so a topic re-created under the same name gets new
    /// partitions (and directories).
    pub id: u64,
    pub name: String,
    pub config: TopicConfig,
    pub replication_factor: u32,
    /// Node ids of each partition's replicas; the first is the preferred leader.
    pub replicas: Vec<Vec<u64>>,
    pub created_ms: i64,
    /// The replicas a partition had before its last move: a replica added by the move starts
    /// with these (and itself) as the group's voters, which is what the group's membership is
    /// once the leader has added it, so it never works from a wrong membership.
    #[serde(default)]
    pub previous_replicas: BTreeMap<u32, Vec<u64>>,
    /// Capture position by partition; a partition absent has captured nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capture: BTreeMap<u32, CapturePosition>,
}

impl Topic {
    pub fn partitions(&self) -> u32 {
        self.replicas.len() as u32
    }

    /// The capture position of `partition` (the default, offset 0 and nothing pending, for a
    /// partition that has captured nothing).
    pub fn capture_position(&self, partition: u32) -> CapturePosition {
        self.capture.get(&partition).copied().unwrap_or_default()
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: u64,
    pub address: String,
    /// Where Kafka clients reach the node (`--kafka-advertised`), when it runs a Kafka
    /// listener; set only by the node itself ([`Command::SetKafkaAddress`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_address: Option<String>,
}

/// A consumer group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset to consume.
    pub offset: u64,
    pub metadata: String,
    pub commit_ms: i64,
}

/// What the cluster keeps of a consumer group: its committed offsets. Membership is the
/// coordinator's soft state (see `groups`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    /// Topic name, then partition.
    pub offsets: BTreeMap<String, BTreeMap<u32, CommittedOffset>>,
    /// Raised by every reset; a member commit made before the last reset is refused.
    pub generation: u64,
}

/// One committed offset as a command carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetEntry {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

/// Producer ids are handed out in blocks of this many: each node takes a block through the
/// controller and gives ids from it locally, so an id costs no raft round trip.
pub const PRODUCER_ID_BLOCK: u64 = 1000;

/// The replicated metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub nodes: BTreeMap<u64, Node>,
    pub topics: BTreeMap<String, Topic>,
    pub next_topic_id: u64,
    /// Committed offsets by group id.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupOffsets>,
    /// The first producer id no node has been given yet.
    #[serde(default)]
    pub next_producer_id: u64,
    /// Users and their SCRAM-SHA-256 credentials (see `controller::security`).
    #[serde(default)]
    pub users: BTreeMap<String, ScramCredential>,
    /// The cluster's ACLs.
    #[serde(default)]
    pub acls: BTreeSet<Acl>,
    /// Raft index of the last applied command.
    pub applied_index: u64,
}

/// A change to the metadata, proposed through the controller group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterNode(Node),
    CreateTopic {
        name: String,
        config: TopicConfig,
        replication_factor: u32,
        replicas: Vec<Vec<u64>>,
        now_ms: i64,
    },
    DeleteTopic {
        name: String,
    },
    AlterTopic {
        name: String,
        config: TopicConfig,
    },
    /// A member's (or an operator's) commit, valid only while the group's offsets generation is
    /// still `generation` (no reset came in between).
    CommitOffsets {
        group: String,
        generation: u64,
        offsets: Vec<OffsetEntry>,
        now_ms: i64,
    },
    /// An operator's reset: sets the offsets and raises the generation.
    ResetOffsets {
        group: String,
        offsets: Vec<OffsetEntry>,
        now_ms: i64,
    },
    DeleteGroup {
        group: String,
    },
    /// Replaces a partition's replica set (a node is leaving); partition leaders then change
    /// their raft membership to match.
    ReassignReplicas {
        name: String,
        partition: u32,
        replicas: Vec<u64>,
    },
    /// A registered node's Kafka address (`None`: it runs no Kafka listener). Proposed by the
    /// node itself at start; [`Command::RegisterNode`] leaves it as it is.
    SetKafkaAddress {
        node: u64,
        kafka_address: Option<String>,
    },
    /// Forgets a node that has left (after its replicas moved and it left the controller).
    DeregisterNode {
        node: u64,
    },
    /// Gives `node` the producer ids `first..first + PRODUCER_ID_BLOCK`; refused unless `first`
    /// is the next free id (two nodes asking at once: one of them asks again).
    AllocateProducerIds {
        node: u64,
        first: u64,
    },
    /// Creates or replaces a user's credential, as `mode` says.
    PutUser {
        name: String,
        credential: ScramCredential,
        mode: PutUserMode,
    },
    DeleteUser {
        name: String,
    },
    /// Adds ACLs (those present already change nothing).
    CreateAcls {
        acls: Vec<Acl>,
    },
    /// Removes exactly these ACLs (those absent change nothing).
    DeleteAcls {
        acls: Vec<Acl>,
    },
    /// Appends partitions to a topic that has exactly `from` now (refused otherwise, so two
    /// concurrent requests cannot both add): `replicas[i]` is partition `from + i`'s replica
    /// set. Existing partitions are untouched.
    AddPartitions {
        name: String,
        from: u32,
        replicas: Vec<Vec<u64>>,
    },
    /// A partition leader's intent to capture offsets `first..=last`: refused unless the
    /// partition's capture position is `expected_next` with no window pending (a stale leader
    /// loses here). `first` is above `expected_next` only when retention removed the records
    /// between them.
    CaptureWindowOpen {
        topic: String,
        topic_id: u64,
        partition: u32,
        expected_next: u64,
        first: u64,
        last: u64,
    },
    /// The window `first..=last` is published: refused unless it is the pending one; moves
    /// the position to `last + 1`.
    CaptureWindowDone {
        topic: String,
        topic_id: u64,
        partition: u32,
        first: u64,
        last: u64,
        now_ms: i64,
    },
}

impl Command {
    /// The batch that carries the command in the controller's log.
    pub fn to_batch(&self, now_ms: i64) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("commands serialize");
        let mut builder = BatchBuilder::new();
        builder.push(now_ms, None, Some(&json), &[]);
        builder.finish().to_vec()
    }
}

/// How a [`PutUser`](Command::PutUser) treats an existing user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PutUserMode {
    /// A new user; refused if the name exists.
    Create,
    /// A new password for an existing user; refused if the name is unknown.
    SetPassword,
    /// The first user of a cluster (`STRATA_BOOTSTRAP_USER`); refused once any user exists, so
    /// every node may propose it at start and only the first one counts.
    Bootstrap,
}

/// Why the controller refused a command when it applied it: the outcome its proposer gets
/// back, typed, through the driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRefusal {
    #[error("topic already exists")]
    TopicExists,
    #[error("unknown topic")]
    TopicMissing,
    #[error("unknown group")]
    GroupMissing,
    #[error("the group's offsets were reset")]
    OffsetsReset,
    #[error("producer id block already taken")]
    ProducerIdsTaken,
    /// The entry did not decode as commands (the reason); no honest proposer writes one.
    #[error("{0}")]
    Undecodable(String),
    #[error("user already exists")]
    UserExists,
    #[error("unknown user")]
    UserMissing,
    /// A bootstrap user is created only while there is none.
    #[error("users exist already")]
    UsersExist,
    /// A command whose values cannot be stored (the reason); the proposer checks them first.
    #[error("{0}")]
    Invalid(String),
    /// A capture command that does not match the partition's capture position (what it is):
    /// another leader moved it, so the proposer re-reads the position.
    #[error("capture position moved: {0}")]
    CaptureMoved(String),
}

impl Metadata {
    /// Applies `command`; deterministic.
    pub fn apply(&mut self, command: Command) -> Result<(), CommandRefusal> {
        match command {
            Command::RegisterNode(mut node) => {
                // The leader registers nodes too (from the cluster it was started with), and
                // knows nothing of their Kafka listeners: keep what the node said.
                if let Some(known) = self.nodes.get(&node.id) {
                    node.kafka_address = known.kafka_address.clone();
                }
                self.nodes.insert(node.id, node);
                Ok(())
            }
            Command::SetKafkaAddress {
                node,
                kafka_address,
            } => {
                let Some(known) = self.nodes.get_mut(&node) else {
                    return Err(CommandRefusal::Invalid(format!(
                        "node {node} is not registered"
                    )));
                };
                known.kafka_address = kafka_address;
                Ok(())
            }
            Command::CreateTopic {
                name,
                config,
                replication_factor,
                replicas,
                now_ms,
            } => {
                if self.topics.contains_key(&name) {
                    return Err(CommandRefusal::TopicExists);
                }
                self.next_topic_id += 1;
                let topic = Topic {
                    id: self.next_topic_id,
                    name: name.clone(),
                    config,
                    replication_factor,
                    replicas,
                    created_ms: now_ms,
                    previous_replicas: BTreeMap::new(),
                    capture: BTreeMap::new(),
                };
                self.topics.insert(name, topic);
                Ok(())
            }
            Command::DeleteTopic { name } => {
                self.topics
                    .remove(&name)
                    .ok_or(CommandRefusal::TopicMissing)?;
                // Offsets of a deleted topic mean nothing for a topic re-created by that name.
                for group in self.groups.values_mut() {
                    group.offsets.remove(&name);
                }
                Ok(())
            }
            Command::CommitOffsets {
                group,
                generation,
                offsets,
                now_ms,
            } => {
                let current = self.groups.get(&group).map_or(0, |g| g.generation);
                if current != generation {
                    return Err(CommandRefusal::OffsetsReset);
                }
                self.store_offsets(group, offsets, now_ms);
                Ok(())
            }
            Command::ResetOffsets {
                group,
                offsets,
                now_ms,
            } => {
                let stored = self.store_offsets(group, offsets, now_ms);
                stored.generation += 1;
                Ok(())
            }
            Command::DeleteGroup { group } => self
                .groups
                .remove(&group)
                .map(|_| ())
                .ok_or(CommandRefusal::GroupMissing),
            Command::ReassignReplicas {
                name,
                partition,
                replicas,
            } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(CommandRefusal::TopicMissing)?;
                if let Some(slot) = topic.replicas.get_mut(partition as usize) {
                    let previous = std::mem::replace(slot, replicas);
                    topic.previous_replicas.insert(partition, previous);
                }
                Ok(())
            }
            Command::DeregisterNode { node } => {
                self.nodes.remove(&node);
                Ok(())
            }
            Command::AllocateProducerIds { first, .. } => {
                if first != self.next_producer_id {
                    return Err(CommandRefusal::ProducerIdsTaken);
                }
                self.next_producer_id = first + PRODUCER_ID_BLOCK;
                Ok(())
            }
            Command::AlterTopic { name, config } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(CommandRefusal::TopicMissing)?;
                topic.config = config;
                Ok(())
            }
            Command::PutUser {
                name,
                credential,
                mode,
            } => self.put_user(name, credential, mode),
            Command::DeleteUser { name } => self.delete_user(&name),
            Command::CreateAcls { acls } => self.create_acls(acls),
            Command::DeleteAcls { acls } => {
                for acl in &acls {
                    self.acls.remove(acl);
                }
                Ok(())
            }
            Command::AddPartitions {
                name,
                from,
                replicas,
            } => {
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or(CommandRefusal::TopicMissing)?;
                let now = topic.partitions();
                if now != from {
                    return Err(CommandRefusal::Invalid(format!(
                        "topic {name} has {now} partitions now, not {from}: ask again"
                    )));
                }
                let total = u64::from(now) + replicas.len() as u64;
                if replicas.is_empty() || total > u64::from(PARTITIONS_MAX) {
                    return Err(CommandRefusal::Invalid(format!(
                        "topic {name} would have {total} partitions: it must grow, to at most \
                         {PARTITIONS_MAX}"
                    )));
                }
                topic.replicas.extend(replicas);
                Ok(())
            }
            Command::CaptureWindowOpen {
                topic,
                topic_id,
                partition,
                expected_next,
                first,
                last,
            } => self.open_capture_window(&topic, topic_id, partition, expected_next, first, last),
            Command::CaptureWindowDone {
                topic,
                topic_id,
                partition,
                first,
                last,
                now_ms,
            } => self.finish_capture_window(&topic, topic_id, partition, (first, last), now_ms),
        }
    }
}

impl Metadata {
    /// Stores offsets of partitions that exist (a topic deleted meanwhile is skipped).
    fn store_offsets(
        &mut self,
        group: String,
        offsets: Vec<OffsetEntry>,
        now_ms: i64,
    ) -> &mut GroupOffsets {
        let stored = self.groups.entry(group).or_default();
        for entry in offsets {
            let exists = self
                .topics
                .get(&entry.topic)
                .is_some_and(|topic| entry.partition < topic.partitions());
            if exists {
                stored.offsets.entry(entry.topic).or_default().insert(
                    entry.partition,
                    CommittedOffset {
                        offset: entry.offset,
                        metadata: entry.metadata,
                        commit_ms: now_ms,
                    },
                );
            }
        }
        stored
    }
}

/// Longest consumer group id.
pub const GROUP_ID_BYTES_MAX: usize = 255;

/// Checks a group id: 1 to 255 characters of `[a-zA-Z0-9._:-]`.
pub fn validate_group_id(group: &str) -> Result<(), String> {
    if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
        return Err(format!(
            "group id must be 1 to {GROUP_ID_BYTES_MAX} characters, got {}",
            group.len()
        ));
    }
    if let Some(bad) = group
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
    {
        return Err(format!(
            "group id {group:?} has {bad:?}: valid characters are a-z, A-Z, 0-9, '.', '_', ':' and '-'"
        ));
    }
    Ok(())
}

/// Checks a topic name: 1 to 200 characters of `[a-zA-Z0-9._-]`, not `.` or `..` (it names a
/// directory).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name must be 1 to {TOPIC_NAME_BYTES_MAX} characters, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is reserved"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} has {bad:?}: valid characters are a-z, A-Z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Places `partitions` partitions of `replication_factor` replicas on `nodes` (sorted ids),
/// spreading preferred leaders round-robin from `offset`.
pub fn place_replicas(
    nodes: &[u64],
    partitions: u32,
    replication_factor: u32,
    offset: usize,
) -> Vec<Vec<u64>> {
    (0..partitions as usize)
        .map(|partition| {
            (0..replication_factor as usize)
                .map(|replica| nodes[(offset + partition + replica) % nodes.len()])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        let table = [
            ("orders", true),
            ("a.b_c-D9", true),
            ("", false),
            (".", false),
            ("..", false),
            ("has space", false),
            ("slash/name", false),
            ("ünïcode", false),
        ];
        for (name, valid) in table {
            assert_eq!(validate_topic_name(name).is_ok(), valid, "{name:?}");
        }
        assert!(validate_topic_name(&"x".repeat(201)).is_err());
        assert!(validate_topic_name(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn commands_apply_deterministically() {
        let mut a = Metadata::default();
        let create = Command::CreateTopic {
            name: "t".to_string(),
            config: TopicConfig::default(),
            replication_factor: 1,
            replicas: vec![vec![1], vec![1]],
            now_ms: 7,
        };
        assert_eq!(a.apply(create.clone()), Ok(()));
        assert_eq!(a.apply(create.clone()), Err(CommandRefusal::TopicExists));
        let mut b = Metadata::default();
        b.apply(create).expect("create");
        assert_eq!(a, b);
        assert_eq!(a.topics["t"].id, 1);
        assert_eq!(
            a.apply(Command::DeleteTopic {
                name: "x".to_string()
            }),
            Err(CommandRefusal::TopicMissing)
        );
    }

    /// AddPartitions appends replica sets to the topic that has exactly `from` partitions and
    /// leaves the others as they were; a stale `from`, no new partition, a count past the limit
    /// or an unknown topic is refused and changes nothing.
    #[test]
    fn add_partitions_appends_only_to_the_count_it_saw() {
        let mut m = Metadata::default();
        m.apply(create("t", 2)).expect("create");
        let before = m.topics["t"].clone();
        let add = |from: u32, replicas: Vec<Vec<u64>>| Command::AddPartitions {
            name: "t".to_string(),
            from,
            replicas,
        };
        assert!(matches!(
            m.apply(add(1, vec![vec![2]])),
            Err(CommandRefusal::Invalid(_))
        ));
        assert!(matches!(
            m.apply(add(2, Vec::new())),
            Err(CommandRefusal::Invalid(_))
        ));
        assert!(matches!(
            m.apply(add(2, vec![vec![1]; PARTITIONS_MAX as usize - 1])),
            Err(CommandRefusal::Invalid(_))
        ));
        assert_eq!(
            m.apply(Command::AddPartitions {
                name: "x".to_string(),
                from: 0,
                replicas: vec![vec![1]],
            }),
            Err(CommandRefusal::TopicMissing)
        );
        assert_eq!(m.topics["t"], before, "refusals change nothing");
        m.apply(add(2, vec![vec![2], vec![3]])).expect("add");
        let topic = &m.topics["t"];
        assert_eq!(topic.partitions(), 4);
        assert_eq!(topic.replicas[..2], before.replicas[..]);
        assert_eq!(topic.replicas[2..], [vec![2], vec![3]]);
        assert_eq!((topic.id, &topic.config), (before.id, &before.config));
        // The proposer raced another add: refused, so no partition is added twice.
        assert!(matches!(
            m.apply(add(2, vec![vec![1]])),
            Err(CommandRefusal::Invalid(_))
        ));
    }

    /// The capture CAS: Open only from the exact position with nothing pending, Done only for
    /// the pending window; every refusal changes nothing, and a second leader replaying the
    /// same Open or Done after the first is refused.
    #[test]
    fn capture_windows_move_only_by_compare_and_set() {
        let mut m = Metadata::default();
        m.apply(create("t", 2)).expect("create");
        let id = m.topics["t"].id;
        let open = |topic_id: u64, partition: u32, expected_next: u64, first: u64, last: u64| {
            Command::CaptureWindowOpen {
                topic: "t".to_string(),
                topic_id,
                partition,
                expected_next,
                first,
                last,
            }
        };
        let done =
            |topic_id: u64, partition: u32, first: u64, last: u64| Command::CaptureWindowDone {
                topic: "t".to_string(),
                topic_id,
                partition,
                first,
                last,
                now_ms: 9,
            };
        let before = m.clone();
        let refusals = [
            (open(id + 1, 0, 0, 0, 9), "another topic of that name"),
            (open(id, 2, 0, 0, 9), "no such partition"),
            (open(id, 0, 5, 0, 9), "first below expected_next"),
            (open(id, 0, 0, 9, 8), "last before first"),
            (open(id, 0, 0, 0, u64::MAX), "no offset after the last"),
            (open(id, 0, 3, 3, 9), "position is 0, not 3"),
            (done(id, 0, 0, 9), "nothing pending"),
        ];
        for (command, why) in refusals {
            assert!(m.apply(command).is_err(), "{why}");
        }
        assert_eq!(
            m.apply(Command::CaptureWindowOpen {
                topic: "x".to_string(),
                topic_id: id,
                partition: 0,
                expected_next: 0,
                first: 0,
                last: 1,
            }),
            Err(CommandRefusal::TopicMissing)
        );
        assert_eq!(m, before, "refusals change nothing");

        m.apply(open(id, 0, 0, 0, 9)).expect("open");
        assert_eq!(m.topics["t"].capture_position(0).pending, Some((0, 9)));
        // A second leader with the same stale view loses; so does one with another window.
        assert!(matches!(
            m.apply(open(id, 0, 0, 0, 9)),
            Err(CommandRefusal::CaptureMoved(_))
        ));
        assert!(matches!(
            m.apply(done(id, 0, 0, 8)),
            Err(CommandRefusal::CaptureMoved(_))
        ));
        m.apply(done(id, 0, 0, 9)).expect("done");
        let position = m.topics["t"].capture_position(0);
        assert_eq!(
            position,
            CapturePosition {
                next_offset: 10,
                pending: None,
                captured_ms: 9
            }
        );
        // Done replayed (a leader that lost its reply) is refused: the window is not pending.
        assert!(matches!(
            m.apply(done(id, 0, 0, 9)),
            Err(CommandRefusal::CaptureMoved(_))
        ));
        // After retention removed 10..20 uncaptured, a window may start past the position.
        m.apply(open(id, 0, 10, 20, 29)).expect("open past a gap");
        m.apply(done(id, 0, 20, 29)).expect("done past a gap");
        assert_eq!(m.topics["t"].capture_position(0).next_offset, 30);
        assert_eq!(
            m.topics["t"].capture_position(1),
            CapturePosition::default()
        );
    }

    /// Metadata written before capture existed loads with capture off and the defaults.
    #[test]
    fn old_topic_config_loads_without_capture() {
        let old = r#"{"retention_ms":null,"retention_bytes":null,"segment_bytes":1024}"#;
        let config: TopicConfig = serde_json::from_str(old).expect("old config");
        assert_eq!(config.capture_dir, None);
        assert_eq!(config.capture_interval_ms, CAPTURE_INTERVAL_MS_DEFAULT);
        assert_eq!(config.capture_max_bytes, CAPTURE_MAX_BYTES_DEFAULT);
        assert!(config.capture_block_retention);
        assert_eq!(CaptureFormat::parse("parquet"), Ok(CaptureFormat::Parquet));
        assert!(CaptureFormat::parse("avro").is_err_and(|e| e.contains("parquet")));
    }

    fn create(name: &str, partitions: usize) -> Command {
        Command::CreateTopic {
            name: name.to_string(),
            config: TopicConfig::default(),
            replication_factor: 1,
            replicas: vec![vec![1]; partitions],
            now_ms: 1,
        }
    }

    fn entry(topic: &str, partition: u32, offset: u64) -> OffsetEntry {
        OffsetEntry {
            topic: topic.to_string(),
            partition,
            offset,
            metadata: String::new(),
        }
    }

    #[test]
    fn commits_resets_and_deletes() {
        let mut m = Metadata::default();
        m.apply(create("t", 2)).expect("create");
        let commit = |generation, offset| Command::CommitOffsets {
            group: "g".to_string(),
            generation,
            offsets: vec![entry("t", 0, offset), entry("t", 9, 1), entry("x", 0, 1)],
            now_ms: 5,
        };
        m.apply(commit(0, 10)).expect("commit");
        // Unknown partitions and topics are not stored.
        assert_eq!(m.groups["g"].offsets.len(), 1);
        assert_eq!(m.groups["g"].offsets["t"].len(), 1);
        assert_eq!(m.groups["g"].offsets["t"][&0].offset, 10);
        m.apply(Command::ResetOffsets {
            group: "g".to_string(),
            offsets: vec![entry("t", 0, 3)],
            now_ms: 6,
        })
        .expect("reset");
        assert_eq!(m.groups["g"].generation, 1);
        // A commit from before the reset is refused and changes nothing.
        assert_eq!(m.apply(commit(0, 20)), Err(CommandRefusal::OffsetsReset));
        assert_eq!(m.groups["g"].offsets["t"][&0].offset, 3);
        m.apply(commit(1, 21)).expect("commit after reset");
        assert_eq!(m.groups["g"].offsets["t"][&0].offset, 21);
        // Deleting the topic drops its offsets; deleting the group drops the group.
        m.apply(Command::DeleteTopic {
            name: "t".to_string(),
        })
        .expect("delete topic");
        assert!(m.groups["g"].offsets.is_empty());
        m.apply(Command::DeleteGroup {
            group: "g".to_string(),
        })
        .expect("delete group");
        assert_eq!(
            m.apply(Command::DeleteGroup {
                group: "g".to_string()
            }),
            Err(CommandRefusal::GroupMissing)
        );
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut m = Metadata::default();
        m.apply(Command::AllocateProducerIds { node: 1, first: 0 })
            .expect("first block");
        assert_eq!(
            m.apply(Command::AllocateProducerIds { node: 2, first: 0 }),
            Err(CommandRefusal::ProducerIdsTaken)
        );
        m.apply(Command::AllocateProducerIds {
            node: 2,
            first: PRODUCER_ID_BLOCK,
        })
        .expect("second block");
        assert_eq!(m.next_producer_id, 2 * PRODUCER_ID_BLOCK);
    }

    #[test]
    fn group_ids() {
        for (group, valid) in [
            ("g", true),
            ("svc:orders.v2_x-1", true),
            ("", false),
            ("a b", false),
            ("a/b", false),
        ] {
            assert_eq!(validate_group_id(group).is_ok(), valid, "{group:?}");
        }
        assert!(validate_group_id(&"g".repeat(256)).is_err());
    }

    #[test]
    fn placement_spreads_leaders() {
        let replicas = place_replicas(&[1, 2, 3], 3, 2, 0);
        assert_eq!(replicas, vec![vec![1, 2], vec![2, 3], vec![3, 1]]);
    }
}
