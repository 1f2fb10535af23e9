//! The consumer groups through their seam: a [`ControllerPort`] over a plain [`Metadata`] (no
//! broker, no raft), to show that the groups need nothing else and decide their own refusals.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use super::coordinator::{CoordinatorError, Join};
use super::offsets::ReplicaOffsets;
use super::{ControllerPort, GroupError, Groups};
use crate::clock::{ManualClock, SharedClock};
use crate::controller::metadata::{
    Command, CommandRefusal, Metadata, OffsetEntry, Topic, TopicConfig,
};
use crate::partition::{PartitionError, PartitionReplica};

/// What the fake node fails with: the groups' refusals, kept apart from its own.
#[derive(Debug, thiserror::Error)]
enum FakeError {
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error("not the controller's leader; it is node {0}")]
    NotControllerLeader(u64),
    #[error("refused by the controller: {0:?}")]
    Refused(CommandRefusal),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("no replica of {0} here")]
    NoReplica(String),
}

/// A node that holds no partition replicas and applies commands to its metadata at once.
struct FakePort {
    node_id: u64,
    controller_leader: u64,
    metadata: RwLock<Metadata>,
    proposed: Mutex<Vec<Command>>,
    clock: SharedClock,
}

impl FakePort {
    /// Node 1, leading the controller when `leading`, with topic "t" of two partitions.
    fn new(leading: bool) -> Self {
        let mut metadata = Metadata::default();
        metadata
            .apply(Command::CreateTopic {
                name: "t".to_string(),
                config: TopicConfig::default(),
                replication_factor: 1,
                replicas: vec![vec![1], vec![1]],
                now_ms: 1,
            })
            .expect("create topic t");
        Self {
            node_id: 1,
            controller_leader: if leading { 1 } else { 2 },
            metadata: RwLock::new(metadata),
            proposed: Mutex::new(Vec::new()),
            clock: ManualClock::new(1_000),
        }
    }
}

impl ControllerPort for FakePort {
    type Error = FakeError;

    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn controller_leader(&self) -> u64 {
        self.controller_leader
    }

    fn not_controller_leader(&self, leader_id: u64) -> FakeError {
        FakeError::NotControllerLeader(leader_id)
    }

    fn read_metadata(&self) -> RwLockReadGuard<'_, Metadata> {
        self.metadata.read().expect("metadata lock")
    }

    fn node_address(&self, _node: u64) -> Option<String> {
        None
    }

    fn propose(&self, command: Command) -> impl Future<Output = Result<(), FakeError>> + Send {
        self.proposed.lock().expect("lock").push(command.clone());
        let applied = self.metadata.write().expect("metadata lock").apply(command);
        std::future::ready(applied.map_err(FakeError::Refused))
    }

    fn topic(&self, name: &str) -> Result<Topic, FakeError> {
        self.read_metadata()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| FakeError::UnknownTopic(name.to_string()))
    }

    fn check_partition(&self, topic: &str, _partition: u32) -> Result<(), FakeError> {
        self.topic(topic).map(|_| ())
    }

    fn replica(&self, topic: &str, partition: u32) -> Result<Arc<PartitionReplica>, FakeError> {
        Err(FakeError::NoReplica(format!("{topic}/{partition}")))
    }

    fn local_replica(&self, _topic: &str, _partition: u32) -> Option<Arc<PartitionReplica>> {
        None
    }

    fn clock(&self) -> &SharedClock {
        &self.clock
    }
}

fn join(group: &str) -> Join {
    Join {
        group: group.to_string(),
        member_id: String::new(),
        topics: vec!["t".to_string()],
        session_timeout: Duration::from_secs(10),
        client_id: "test".to_string(),
    }
}

fn entry(partition: u32, offset: u64) -> OffsetEntry {
    OffsetEntry {
        topic: "t".to_string(),
        partition,
        offset,
        metadata: String::new(),
    }
}

/// Asking another node about its replicas: no node is asked in these tests (the fake knows no
/// addresses), so an answer would be a bug of the commit check.
async fn no_node_is_asked(
    node: u64,
    address: String,
    topic: String,
) -> Result<Vec<ReplicaOffsets>, String> {
    panic!(
        "asked node {node} at {address} about {topic}, but the fake port knows no node addresses"
    )
}

/// A node that does not lead the controller refuses every group request with its port's
/// not-leader error, naming the leader, and its coordinator takes nothing in.
#[test]
fn a_node_that_does_not_lead_the_controller_refuses_group_requests() {
    let port = FakePort::new(false);
    let groups = Groups::default();
    let requests = groups.serve(&port);
    assert!(matches!(
        requests.join_group(join("g")),
        Err(FakeError::NotControllerLeader(2))
    ));
    assert!(matches!(
        requests.list_groups(),
        Err(FakeError::NotControllerLeader(2))
    ));
    assert!(!groups.coordinator().has_members("g"));
}

/// The groups' own checks come before the port is asked anything: a bad group id is a
/// [`GroupError::InvalidGroupId`], even on a node that does not lead.
#[test]
fn a_bad_group_id_is_the_groups_own_refusal() {
    let port = FakePort::new(false);
    let groups = Groups::default();
    let error = groups
        .serve(&port)
        .join_group(join("a b"))
        .expect_err("bad id");
    assert!(
        matches!(error, FakeError::Group(GroupError::InvalidGroupId(_))),
        "{error:?}"
    );
}

/// On the leader: a member joins and is assigned both partitions; an operator's commit at
/// offset 0 needs no replica's answer and is proposed to the controller, stamped with the
/// port's clock; an offset above every known high watermark, with no leader answering, is
/// refused as retriable and proposes nothing; a group with members cannot be deleted.
#[tokio::test]
async fn commits_go_through_the_port_and_are_checked_first() {
    let port = FakePort::new(true);
    let groups = Groups::default();
    let requests = groups.serve(&port);
    let (assignment, generation) = requests.join_group(join("g")).expect("join");
    assert_eq!(generation, 0);
    assert_eq!(assignment.assignment.len() + assignment.pending.len(), 2);

    requests
        .commit_offsets("ops", "", 0, vec![entry(0, 0)], no_node_is_asked)
        .await
        .expect("commit at offset 0");
    let proposed = port.proposed.lock().expect("lock").clone();
    assert_eq!(
        proposed,
        vec![Command::CommitOffsets {
            group: "ops".to_string(),
            generation: 0,
            offsets: vec![entry(0, 0)],
            now_ms: 1_000,
        }]
    );
    let (committed, _) = requests.committed_offsets("ops", &[]).expect("fetch");
    let offsets: BTreeMap<_, _> = committed
        .into_iter()
        .map(|(tp, c)| (tp, c.map(|c| c.offset)))
        .collect();
    assert_eq!(offsets, BTreeMap::from([(("t".to_string(), 0), Some(0))]));

    let error = requests
        .commit_offsets("ops", "", 0, vec![entry(1, 5)], no_node_is_asked)
        .await
        .expect_err("offset above every known high watermark");
    assert!(
        matches!(error, FakeError::Group(GroupError::Unavailable(_))),
        "{error:?}"
    );
    assert_eq!(port.proposed.lock().expect("lock").len(), 1);

    let error = requests.delete_group("g").await.expect_err("has members");
    assert!(
        matches!(error, FakeError::Group(GroupError::GroupNotEmpty(_))),
        "{error:?}"
    );
}
