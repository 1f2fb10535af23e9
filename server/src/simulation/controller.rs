//! The controller group in the simulation: every node also runs the real controller state
//! machine (`controller::machine::Controller`) in raft group [`CONTROLLER`], beside the partition,
//! on the same faulty network, with the same crashes and restarts.
//!
//! The load is what the cluster commits through it: a consumer group's member commits its
//! progress through one partition (offsets that only grow), re-sending each commit to any node
//! until one acknowledges it; an operator now and then resets the group's offsets back (which
//! raises the group's generation, so the member's older commits are refused and it carries on
//! in the new generation); topics are created under new names.
//!
//! Checked after every step:
//! - on every node, the group's committed offset never goes back within a generation, and the
//!   generation never goes back: only an explicit reset moves an offset back;
//! - two nodes that have applied the controller's log to the same raft index hold the same
//!   metadata.
//!
//! And at the end, with every node up and the network healed: every node holds the same
//! metadata, with every topic whose creation was acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio::sync::{oneshot, watch};

use super::Simulation;
use crate::controller::machine::Controller;
use crate::controller::metadata::{
    Command as MetadataCommand, CommandRefusal, Metadata, OffsetEntry, TopicConfig,
};
use crate::replication::driver::Driver;
use crate::replication::handle::{Command, ErasedResult, typed};
use crate::replication::{CONTROLLER, GroupSpec, ProposeError};
use crate::storage::{LogConfig, PartitionLog};

/// The consumer group, topic and partition whose committed offset the simulation follows.
const GROUP_NAME: &str = "g";
const TOPIC: &str = "t";

/// A node's controller: its metadata, as the broker would read it.
pub(super) struct NodeController {
    metadata: Arc<RwLock<Metadata>>,
    /// The (generation, offset) this incarnation last showed for the followed partition.
    seen: Option<(u64, u64)>,
}

impl NodeController {
    /// Opens a node's controller in `dir` (its log and snapshot) and adds its group to
    /// `driver`, as the broker does at start.
    pub(super) fn start(driver: &mut Driver, dir: &Path, voters: &[u64]) -> Self {
        let config = LogConfig {
            segment_bytes_max: 16 << 10,
            batch_bytes_max: 16 << 10,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir, config).expect("open the controller's log");
        let metadata = Arc::new(RwLock::new(Metadata::default()));
        let (changed, _) = watch::channel(0);
        let (machine, applied) =
            Controller::load(dir, metadata.clone(), changed).expect("load the controller");
        driver
            .add_group(GroupSpec {
                id: CONTROLLER,
                log: Arc::new(RwLock::new(log)),
                voters: voters.to_vec(),
                machine,
                applied,
                replay_committed: true,
                high_watermark: watch::channel(0).0,
                leader: watch::channel(0).0,
                term: Default::default(),
                in_sync: watch::channel(Vec::new()).0,
                preferred_leader: None,
                stopped: None,
            })
            .expect("add the controller group");
        Self {
            metadata,
            seen: None,
        }
    }

    fn metadata(&self) -> Metadata {
        self.metadata.read().expect("metadata").clone()
    }
}

/// The group's generation and committed offset of the followed partition, if committed.
fn followed(metadata: &Metadata) -> Option<(u64, u64)> {
    let group = metadata.groups.get(GROUP_NAME)?;
    let offset = group.offsets.get(TOPIC)?.get(&0)?.offset;
    Some((group.generation, offset))
}

/// What a pending controller proposal carried.
enum Sent {
    /// The member's commit of `offset` in `generation`.
    Commit { generation: u64, offset: u64 },
    /// An operator's reset.
    Reset,
    /// The creation of topic `name`.
    CreateTopic(String),
}

/// The controller's load and what the checks remember.
#[derive(Default)]
pub(super) struct ControllerLoad {
    /// The member's generation and the offset it is committing.
    generation: u64,
    offset: u64,
    /// A topic being created, re-sent until acknowledged.
    creating: Option<String>,
    topics_created: u64,
    /// Topics whose creation was acknowledged.
    created: BTreeSet<String>,
    proposals: Vec<(oneshot::Receiver<ErasedResult>, Sent)>,
    /// The metadata a node showed at each applied raft index, the first time one did.
    at_index: BTreeMap<u64, Metadata>,
    pub(super) acknowledged: u64,
}

impl Simulation {
    /// Hands node `id` a controller command: most often the member's current commit, now and
    /// then an operator's reset or a topic creation.
    pub(super) fn propose_command(&mut self, id: u64) {
        let roll = self.rng.below(100);
        let load = &mut self.controller;
        let (command, sent) = match roll {
            0..=4 => {
                let offset = self.rng.below(load.offset + 1);
                let command = MetadataCommand::ResetOffsets {
                    group: GROUP_NAME.to_string(),
                    offsets: vec![entry(offset)],
                    now_ms: 0,
                };
                (command, Sent::Reset)
            }
            5..=9 => {
                let name = load
                    .creating
                    .get_or_insert_with(|| {
                        load.topics_created += 1;
                        // The first is the followed topic: commits to a topic that does not
                        // exist change nothing.
                        match load.topics_created {
                            1 => TOPIC.to_string(),
                            n => format!("topic-{n}"),
                        }
                    })
                    .clone();
                let command = MetadataCommand::CreateTopic {
                    name: name.clone(),
                    config: TopicConfig::default(),
                    replication_factor: 1,
                    replicas: vec![vec![1]],
                    now_ms: 0,
                };
                (command, Sent::CreateTopic(name))
            }
            _ => {
                let command = MetadataCommand::CommitOffsets {
                    group: GROUP_NAME.to_string(),
                    generation: load.generation,
                    offsets: vec![entry(load.offset)],
                    now_ms: 0,
                };
                let sent = Sent::Commit {
                    generation: load.generation,
                    offset: load.offset,
                };
                (command, sent)
            }
        };
        let Some(driver) = self.node(id).driver.as_mut() else {
            return;
        };
        let (reply, receiver) = oneshot::channel();
        driver.handle(Command::Propose {
            group: CONTROLLER,
            data: command.to_batch(0).into(),
            reply,
        });
        self.controller.proposals.push((receiver, sent));
        self.ready(id);
    }

    /// Takes in the controller's answers: the member moves on after an acknowledged commit,
    /// and into the new generation after a refusal that says the offsets were reset.
    pub(super) fn collect_controller_answers(&mut self) {
        let proposals = std::mem::take(&mut self.controller.proposals);
        let mut still = Vec::new();
        for (mut receiver, sent) in proposals {
            let answer = match receiver.try_recv() {
                Ok(result) => typed::<Result<(), CommandRefusal>, std::convert::Infallible>(result),
                Err(oneshot::error::TryRecvError::Empty) => {
                    still.push((receiver, sent));
                    continue;
                }
                Err(oneshot::error::TryRecvError::Closed) => continue,
            };
            let outcome = match answer {
                Ok(committed) => committed.outcome,
                Err(ProposeError::UnknownGroup) => {
                    self.fail("a controller answer came back with another type".to_string())
                }
                Err(_) => continue,
            };
            self.controller.acknowledged += 1;
            let load = &mut self.controller;
            match (sent, outcome) {
                (Sent::Commit { generation, offset }, Ok(())) => {
                    if (load.generation, load.offset) == (generation, offset) {
                        load.offset += 1 + self.rng.below(3);
                    }
                }
                (Sent::Commit { generation, .. }, Err(CommandRefusal::OffsetsReset)) => {
                    // A reset came in between: the member carries on in the new generation
                    // (as it would after fetching its committed offsets again).
                    if load.generation == generation {
                        load.generation += 1;
                    }
                }
                (Sent::CreateTopic(name), Ok(()) | Err(CommandRefusal::TopicExists)) => {
                    // A retried creation whose first copy committed says the topic exists.
                    if load.creating.as_ref() == Some(&name) {
                        load.creating = None;
                    }
                    load.created.insert(name);
                }
                (Sent::Reset, Ok(())) => {}
                (_, Err(refusal)) => {
                    self.fail(format!("the controller refused a command: {refusal}"));
                }
            }
        }
        self.controller.proposals.extend(still);
    }

    /// The per-step checks of the module doc, on every running node.
    pub(super) fn check_controllers(&mut self) {
        for index in 0..self.nodes.len() {
            let Some(controller) = self.nodes[index].controller.as_ref() else {
                continue;
            };
            let id = self.nodes[index].id;
            let metadata = controller.metadata();
            if let Some((generation, offset)) = followed(&metadata)
                && let Some((seen_generation, seen_offset)) = controller.seen
                && (generation < seen_generation
                    || (generation == seen_generation && offset < seen_offset))
            {
                self.fail(format!(
                    "node {id}'s committed offset went back without a reset: from {seen_offset} \
                     (generation {seen_generation}) to {offset} (generation {generation})"
                ));
            }
            let shown = followed(&metadata);
            if let Some(controller) = self.nodes[index].controller.as_mut()
                && shown.is_some()
            {
                controller.seen = shown;
            }
            match self.controller.at_index.get(&metadata.applied_index) {
                Some(known) if *known != metadata => self.fail(format!(
                    "node {id} holds other metadata than another node at raft index {}",
                    metadata.applied_index
                )),
                Some(_) => {}
                None => {
                    self.controller
                        .at_index
                        .insert(metadata.applied_index, metadata);
                }
            }
        }
    }

    /// Whether every node's controller has applied the same index; then they must agree and
    /// hold every topic whose creation was acknowledged.
    pub(super) fn controllers_converged(&self) -> bool {
        let states: Vec<Metadata> = self
            .nodes
            .iter()
            .filter_map(|node| node.controller.as_ref().map(NodeController::metadata))
            .collect();
        let indexes: BTreeSet<u64> = states.iter().map(|m| m.applied_index).collect();
        if indexes.len() > 1 || !self.controller.proposals.is_empty() {
            return false;
        }
        if let Some(at) = states.iter().position(|state| *state != states[0]) {
            self.fail(format!(
                "node {} and node 1 hold different metadata at the same raft index",
                at + 1
            ));
        }
        for name in &self.controller.created {
            if !states[0].topics.contains_key(name) {
                self.fail(format!("the acknowledged topic {name} is missing"));
            }
        }
        true
    }
}

fn entry(offset: u64) -> OffsetEntry {
    OffsetEntry {
        topic: TOPIC.to_string(),
        partition: 0,
        offset,
        metadata: String::new(),
    }
}
