//! Deterministic simulation of a replicated partition and the controller (test-only; at the
//! crate's root because it runs replication, partition and controller together, so it sits
//! above all three): several nodes' real raft drivers (the same `Driver`, `RaftStorage` and
//! `PartitionLog` the server runs, minus the thread) in one thread, on a simulated network
//! that drops, delays, reorders and duplicates messages, with network partitions and node
//! crashes and restarts, all chosen by a seeded random source. A node is in `node`, the
//! idempotent producers and their checks in `producers`, the controller's load in
//! `controller`.
//!
//! Checked after every step:
//! - an acknowledged batch is committed at the offset its acknowledgement named, and stays so;
//! - every node's committed prefix (below its high watermark) agrees with every other's:
//!   an offset never holds two different records;
//! - a node's high watermark never goes backwards while it runs;
//! - at the end, with the network healed and every node up, all nodes converge on the same
//!   log, which holds every acknowledged batch;
//! - no idempotent producer's record is stored twice, and each producer's records are in the
//!   log in the order it sent them.
//!
//! The nodes run the partition's real state machine
//! ([`PartitionMachine`](crate::partition::PartitionMachine), with its producer table). Beside
//! anonymous batches, idempotent producers send one batch at a time and re-send it, as it is,
//! to any node until one acknowledges it (as a client does after a timeout or a NotLeader),
//! sometimes to several nodes at once; a node is sometimes handed a batch in the same round as
//! the message that made it leader, before its Ready round (as the driver's command batches
//! do).
//!
//! A failure prints its seed; `STRATA_SIM_SEED=<seed>` replays it exactly: the network
//! schedule, crashes and proposals come from the seed, and the simulated drivers give every
//! election the same timeout (raft-rs would draw it from a generator of its own).
//!
//! Every node also runs the controller group, with a load and checks of its own (see
//! [`controller`]).
//!
//! A forger sends nodes messages that no honest node would: copies of real messages from a
//! node outside the group, with term 0 or one past any log's, of raft's local-only types, with
//! a corrupt batch or a broken chain of entries, or with snapshot data too short to read. Each
//! must be refused before raft sees it (counted: every forgery a running node received), and the
//! invariants above hold regardless.
//!
//! Half the crashes happen between steps, where the driver has fsynced everything it
//! acknowledged or promised to peers (that is its contract); the other half right after the
//! node took in a message and a proposal but before its Ready round wrote and synced them, so
//! what raft held unsynced is lost. Torn writes inside a write are the storage crash tests'
//! subject.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raft::prelude::{Entry, EntryType, Message};
use tokio::sync::oneshot;

use crate::replication::handle::{Command, ErasedResult};
use crate::replication::{Outbox, RaftGroupId, StateMachine};
use crate::storage::batch::BatchBuilder;
use controller::ControllerLoad;
use node::Node;
use producers::{PRODUCERS, Producer, Sent};

mod controller;
mod node;
mod producers;

/// Partition 0 of topic 1.
const GROUP: RaftGroupId = crate::partition::group_id(1, 0);
/// How far a message may be overtaken by later ones.
const REORDER_WINDOW: usize = 16;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

type InFlight = Vec<(u64, u64, RaftGroupId, Message)>;

/// Which nodes can hear which: down nodes and the partitioned set.
#[derive(Default)]
struct Reachability {
    down: BTreeSet<u64>,
    partitioned: BTreeSet<u64>,
}

struct SimOutbox {
    from: u64,
    network: Arc<Mutex<InFlight>>,
    reachability: Arc<Mutex<Reachability>>,
}

impl Outbox for SimOutbox {
    fn alive(&self, node: u64) -> bool {
        let reachability = self.reachability.lock().expect("reachability");
        !reachability.down.contains(&node)
            && reachability.partitioned.contains(&node)
                == reachability.partitioned.contains(&self.from)
    }

    fn send(&self, to: u64, group: RaftGroupId, message: Message) {
        self.network
            .lock()
            .expect("network")
            .push((self.from, to, group, message));
    }
}

/// A partition's machine: its state is its log.
pub(super) struct LogMachine;

impl StateMachine for LogMachine {
    type Outcome = ();
    type Refusal = std::convert::Infallible;

    fn apply(&mut self, _entry: &Entry, _next_offset: u64) {}
}

struct Simulation {
    rng: Rng,
    seed: u64,
    nodes: Vec<Node>,
    voters: Vec<u64>,
    network: Arc<Mutex<InFlight>>,
    reachability: Arc<Mutex<Reachability>>,
    /// Nodes on the other side of a partition from the rest, if any.
    partitioned: BTreeSet<u64>,
    proposals: Vec<(oneshot::Receiver<ErasedResult>, Sent)>,
    producers: Vec<Producer>,
    /// Committed records by offset, as any node has shown them.
    committed: BTreeMap<u64, Bytes>,
    /// Where each producer record was seen committed: a second offset is a duplicate.
    producer_records: HashMap<Bytes, u64>,
    acknowledged: BTreeMap<u64, Bytes>,
    next_value: u64,
    step: u64,
    /// Forged messages handed to a running node.
    forged: u64,
    controller: ControllerLoad,
}

impl Simulation {
    fn new(seed: u64, size: u64, root: &Path) -> Self {
        let voters: Vec<u64> = (1..=size).collect();
        let network = Arc::new(Mutex::new(Vec::new()));
        let reachability = Arc::new(Mutex::new(Reachability::default()));
        let nodes = voters
            .iter()
            .map(|id| {
                let mut node = Node {
                    id: *id,
                    dir: root.join(format!("node-{id}")),
                    driver: None,
                    log: None,
                    high_watermark: None,
                    seen_high_watermark: 0,
                    checked: 0,
                    controller: None,
                };
                node.start(&voters, &network, &reachability);
                node
            })
            .collect();
        Self {
            rng: Rng(seed),
            seed,
            nodes,
            voters,
            network,
            reachability,
            partitioned: BTreeSet::new(),
            proposals: Vec::new(),
            producers: (0..PRODUCERS as i64)
                .map(|id| Producer {
                    id,
                    epoch: 0,
                    sequence: 0,
                    batch: None,
                })
                .collect(),
            committed: BTreeMap::new(),
            producer_records: HashMap::new(),
            acknowledged: BTreeMap::new(),
            next_value: 0,
            step: 0,
            forged: 0,
            controller: ControllerLoad::default(),
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "simulation seed {} step {}: {what} (replay with STRATA_SIM_SEED={})",
            self.seed, self.step, self.seed
        );
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn ready(&mut self, id: u64) {
        if let Some(driver) = self.node(id).driver.as_mut() {
            driver.process_ready();
        }
    }

    /// One random event, then the node it touched runs its Ready round.
    fn step(&mut self, faults: bool) {
        self.step += 1;
        // Per mille: deliveries 55 %, ticks 25 %, proposals 18 %, crash or restart 0.5 %,
        // partition or heal 0.5 %.
        let roll = self.rng.below(1000);
        let size = self.nodes.len() as u64;
        match roll {
            0..=549 => {
                // Several at a time, so the network keeps up with what the nodes send.
                for _ in 0..1 + self.rng.below(8) {
                    self.deliver(faults);
                }
            }
            550..=799 => {
                let id = 1 + self.rng.below(size);
                if let Some(driver) = self.node(id).driver.as_mut() {
                    driver.tick();
                }
                self.ready(id);
            }
            800..=869 => {
                let id = 1 + self.rng.below(size);
                self.propose(id);
            }
            870..=939 => {
                let id = 1 + self.rng.below(size);
                self.produce(id);
                self.ready(id);
            }
            940..=979 => {
                let id = 1 + self.rng.below(size);
                self.propose_command(id);
            }
            980..=984 if faults => {
                let id = 1 + self.rng.below(size);
                let reachability = self.reachability.clone();
                if self.node(id).up() {
                    // Half the time the node crashes in the middle of its work: a message
                    // taken in (and a proposal) whose Ready round, with the write and fsync,
                    // never ran, so what raft held unsynced is lost.
                    if self.rng.chance(50) {
                        self.step_without_ready(id);
                    }
                    self.node(id).crash(&reachability);
                } else {
                    let (voters, network) = (self.voters.clone(), self.network.clone());
                    self.node(id).start(&voters, &network, &reachability);
                    self.ready(id);
                }
            }
            990..=997 if faults => self.forge(),
            985..=989 if faults => {
                if self.partitioned.is_empty() {
                    // Cut a minority off (or, sometimes, a single node).
                    let count = 1 + self.rng.below(size.div_ceil(2).max(1));
                    while (self.partitioned.len() as u64) < count {
                        self.partitioned.insert(1 + self.rng.below(size));
                    }
                } else {
                    self.partitioned.clear();
                }
                self.reachability
                    .lock()
                    .expect("reachability")
                    .partitioned
                    .clone_from(&self.partitioned);
            }
            _ => self.deliver(faults),
        }
        self.collect_acknowledgements();
        self.collect_controller_answers();
        self.check();
        self.check_controllers();
    }

    /// Hands node `id` the next message for it and a proposal, without running its Ready
    /// round.
    fn step_without_ready(&mut self, id: u64) {
        let message = {
            let mut network = self.network.lock().expect("network");
            network
                .iter()
                .position(|(_, to, _, _)| *to == id)
                .map(|at| network.remove(at))
        };
        let value = Bytes::from(format!("v{}", self.next_value));
        self.next_value += 1;
        let mut builder = BatchBuilder::new();
        builder.push(1, None, Some(&value), &[]);
        let (reply, receiver) = oneshot::channel();
        if let Some(driver) = self.node(id).driver.as_mut() {
            if let Some((_, _, group, message)) = message {
                driver.handle(Command::Step(
                    vec![(group, message)],
                    Arc::from("simulated"),
                ));
            }
            driver.handle(Command::Propose {
                group: GROUP,
                data: builder.finish().freeze(),
                reply,
            });
        }
        self.proposals.push((receiver, Sent::Anonymous(value)));
    }

    /// Sends a node a forgery made from a message in flight (see the module doc).
    fn forge(&mut self) {
        // Of the partition's messages: the controller group takes messages from any node (a
        // node joining the cluster), so a stranger's copy is not a forgery there.
        let picked = {
            let network = self.network.lock().expect("network");
            let partition: Vec<_> = network.iter().filter(|m| m.2 == GROUP).collect();
            if partition.is_empty() {
                return;
            }
            let at = (self.rng.next() % partition.len() as u64) as usize;
            partition[at].clone()
        };
        let (_, to, group, mut message) = picked;
        match self.rng.below(6) {
            0 => message.from = 99,
            1 => message.term = 0,
            2 => message.term = crate::replication::validate::TERM_MAX + 1 + self.rng.below(1000),
            3 => message.set_msg_type(raft::prelude::MessageType::MsgHup),
            4 => {
                let normal = message
                    .get_entries()
                    .first()
                    .is_some_and(|entry| entry.entry_type == EntryType::EntryNormal);
                if !normal {
                    message.from = 99;
                } else if self.rng.chance(50) {
                    let entry = &mut message.mut_entries()[0];
                    entry.index += 2;
                } else {
                    let mut data = message.get_entries()[0].data.to_vec();
                    // A control no-op has no data: make it a one-byte batch.
                    let last = data.len().saturating_sub(1);
                    match data.get_mut(last) {
                        Some(byte) => *byte ^= 0x5a,
                        None => data.push(1),
                    }
                    message.mut_entries()[0].data = data.into();
                }
            }
            _ => {
                message.set_msg_type(raft::prelude::MessageType::MsgSnapshot);
                let mut snapshot = raft::prelude::Snapshot::default();
                snapshot.mut_metadata().index = message.index + 1000;
                snapshot.mut_metadata().term = message.term;
                snapshot.data = Bytes::from_static(b"short");
                message.set_snapshot(snapshot);
            }
        }
        let Some(driver) = self.node(to).driver.as_mut() else {
            return;
        };
        let before = driver.rejected_messages();
        let description = format!("{message:?}");
        driver.handle(Command::Step(
            vec![(group, message)],
            Arc::from("simulated"),
        ));
        let refused = driver.rejected_messages() - before;
        self.forged += 1;
        self.ready(to);
        if refused != 1 {
            self.fail(format!("node {to} took a forged message: {description}"));
        }
    }

    fn deliver(&mut self, faults: bool) {
        let message = {
            let mut network = self.network.lock().expect("network");
            if network.is_empty() {
                return;
            }
            // Reordering and delay: any of the oldest few in-flight messages may go next (a
            // window, so delays stay bounded as they do on a real network).
            let window = network.len().min(REORDER_WINDOW) as u64;
            let at = (self.rng.next() % window) as usize;
            network.remove(at)
        };
        let (from, to, group, message) = message;
        if faults {
            let cut = self.partitioned.contains(&from) != self.partitioned.contains(&to);
            if cut || self.rng.chance(5) {
                return;
            }
            if self.rng.chance(2) {
                self.network
                    .lock()
                    .expect("network")
                    .push((from, to, group, message.clone()));
            }
        }
        if let Some(driver) = self.node(to).driver.as_mut() {
            driver.handle(Command::Step(
                vec![(group, message)],
                Arc::from("simulated"),
            ));
            // The driver takes commands in batches: a proposal may come right after the
            // message that made the node leader, before the Ready round that says so.
            if self.rng.chance(10) {
                self.produce(to);
            }
        }
        self.ready(to);
    }

    fn propose(&mut self, id: u64) {
        if !self.node(id).up() {
            return;
        }
        let value = Bytes::from(format!("v{}", self.next_value));
        self.next_value += 1;
        let mut builder = BatchBuilder::new();
        builder.push(1, None, Some(&value), &[]);
        let (reply, receiver) = oneshot::channel();
        let data = builder.finish().to_vec();
        if let Some(driver) = self.node(id).driver.as_mut() {
            driver.handle(Command::Propose {
                group: GROUP,
                data: data.into(),
                reply,
            });
        }
        self.proposals.push((receiver, Sent::Anonymous(value)));
        self.ready(id);
    }

    fn check(&mut self) {
        for index in 0..self.nodes.len() {
            if !self.nodes[index].up() {
                continue;
            }
            let high_watermark = *self.nodes[index]
                .high_watermark
                .as_ref()
                .expect("up")
                .borrow();
            if high_watermark < self.nodes[index].seen_high_watermark {
                let id = self.nodes[index].id;
                self.fail(format!(
                    "node {id}'s high watermark went back from {} to {high_watermark}",
                    self.nodes[index].seen_high_watermark
                ));
            }
            self.nodes[index].seen_high_watermark = high_watermark;
            let id = self.nodes[index].id;
            let checked = self.nodes[index].checked;
            for (offset, value) in self.nodes[index].committed_from(checked) {
                self.record(offset, &value, &format!("node {id}"));
            }
            self.nodes[index].checked = checked.max(high_watermark);
        }
    }

    /// Heals everything and runs without faults until every node holds the same committed
    /// log, with every acknowledged record.
    fn converge(&mut self) {
        self.partitioned.clear();
        self.reachability
            .lock()
            .expect("reachability")
            .partitioned
            .clear();
        for id in 1..=self.nodes.len() as u64 {
            if !self.node(id).up() {
                let (voters, network, reachability) = (
                    self.voters.clone(),
                    self.network.clone(),
                    self.reachability.clone(),
                );
                self.node(id).start(&voters, &network, &reachability);
            }
        }
        // First a batch committed in the final term (which commits everything before it):
        // propose on every node each round until one is acknowledged.
        let acknowledged_before = self.acknowledged.len();
        let mut rounds = 0;
        while self.acknowledged.len() == acknowledged_before {
            rounds += 1;
            if rounds > 400 {
                self.fail("no batch commits on a healed network".to_string());
            }
            for id in 1..=self.nodes.len() as u64 {
                self.propose(id);
            }
            for _ in 0..50 {
                self.step(false);
            }
        }
        // Then no more proposals: heartbeats carry the commit index to every node.
        for _ in 0..400 {
            for _ in 0..50 {
                self.step(false);
            }
            let high_watermarks: BTreeSet<u64> = self
                .nodes
                .iter()
                .map(|node| *node.high_watermark.as_ref().expect("up").borrow())
                .collect();
            if high_watermarks.len() > 1 || !self.proposals.is_empty() {
                continue;
            }
            let logs: Vec<Vec<(u64, Bytes)>> = self.nodes.iter().map(Node::committed).collect();
            if let Some(node) = logs.iter().position(|log| *log != logs[0]) {
                self.fail(format!(
                    "node {} and node 1 hold different logs at the same high watermark",
                    node + 1
                ));
            }
            self.check_producer_order(&logs[0]);
            for (offset, value) in &self.acknowledged {
                if logs[0].get(*offset as usize).map(|(_, v)| v) != Some(value) {
                    self.fail(format!(
                        "acknowledged offset {offset} ({value:?}) is missing"
                    ));
                }
            }
            if self.controllers_converged() {
                return;
            }
        }
        let state: Vec<String> = self
            .nodes
            .iter()
            .map(|node| {
                let driver = node.driver.as_ref().expect("up");
                format!(
                    "node {}: high watermark {}, {}",
                    node.id,
                    *node.high_watermark.as_ref().expect("up").borrow(),
                    driver.describe(GROUP)
                )
            })
            .collect();
        self.fail(format!(
            "the nodes did not converge ({} proposals pending, {} messages in flight): {state:?}",
            self.proposals.len(),
            self.network.lock().expect("network").len()
        ));
    }
}

/// Runs seed `seed` for `steps` faulty steps, then converges. The seed also picks the size: five
/// nodes for one seed in three, three otherwise.
fn run(seed: u64, steps: u64) -> (usize, u64) {
    let size = if seed.is_multiple_of(3) { 5 } else { 3 };
    let root = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let mut simulation = Simulation::new(seed, size, root.path());
    for _ in 0..steps {
        simulation.step(true);
    }
    simulation.converge();
    assert!(
        simulation.forged > 0,
        "seed {seed}: no forged message reached a node"
    );
    assert!(
        simulation.controller.acknowledged > 0,
        "seed {seed}: the controller acknowledged nothing"
    );
    (simulation.acknowledged.len(), simulation.step)
}

/// Steps with faults per seed (then as many as converging takes).
const FAULTY_STEPS: u64 = 20_000;

/// Seeds CI always runs, plus `STRATA_SIM_RANDOM_SEEDS` (default 2) new ones each run.
const FIXED_SEEDS: [u64; 6] = [1, 2, 3, 42, 1234, 0xdead_beef];

#[test]
fn replicated_partition_survives_a_hostile_network() {
    if let Some(seed) = std::env::var("STRATA_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let (acknowledged, steps) = run(seed, FAULTY_STEPS);
        eprintln!("seed {seed}: {acknowledged} acknowledged in {steps} steps");
        return;
    }
    let random: u64 = std::env::var("STRATA_SIM_RANDOM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    let seeds = FIXED_SEEDS
        .iter()
        .copied()
        .chain((0..random).map(|i| Rng(clock ^ i).next()));
    for seed in seeds {
        eprintln!("simulating seed {seed} (replay: STRATA_SIM_SEED={seed})");
        let (acknowledged, steps) = run(seed, FAULTY_STEPS);
        assert!(acknowledged > 0, "seed {seed}: nothing was acknowledged");
        eprintln!("  {acknowledged} acknowledged in {steps} steps");
    }
}
