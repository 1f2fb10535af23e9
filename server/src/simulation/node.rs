//! A simulated node: its data directory, and while it runs, its driver with the partition's
//! group (the real partition state machine on a real log) and the controller's; a crash drops
//! all of it without a final sync.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use super::controller::NodeController;
use super::{GROUP, InFlight, Reachability, SimOutbox};
use crate::controller::metadata::TopicConfig;
use crate::partition::PartitionMachine;
use crate::replication::GroupSpec;
use crate::replication::driver::Driver;
use crate::storage::batch::{decode_records, split_batches};
use crate::storage::{LogConfig, PartitionLog};

pub(super) struct Node {
    pub(super) id: u64,
    pub(super) dir: PathBuf,
    pub(super) driver: Option<Driver>,
    pub(super) log: Option<Arc<RwLock<PartitionLog>>>,
    pub(super) high_watermark: Option<watch::Receiver<u64>>,
    /// The high watermark last seen in this incarnation.
    pub(super) seen_high_watermark: u64,
    /// Offsets below this were checked in this incarnation.
    pub(super) checked: u64,
    pub(super) controller: Option<NodeController>,
}

impl Node {
    pub(super) fn start(
        &mut self,
        voters: &[u64],
        network: &Arc<Mutex<InFlight>>,
        reachability: &Arc<Mutex<Reachability>>,
    ) {
        reachability
            .lock()
            .expect("reachability")
            .down
            .remove(&self.id);
        let config = LogConfig {
            segment_bytes_max: 16 << 10,
            batch_bytes_max: 4 << 10,
            ..LogConfig::default()
        };
        let log = Arc::new(RwLock::new(
            PartitionLog::open(&self.dir, config).expect("open log"),
        ));
        let outbox = Arc::new(SimOutbox {
            from: self.id,
            network: network.clone(),
            reachability: reachability.clone(),
        });
        let mut driver = Driver::for_simulation(self.id, outbox);
        let (high_watermark, receiver) = watch::channel(0);
        let (leader, _) = watch::channel(0);
        let (in_sync, _) = watch::channel(Vec::new());
        driver
            .add_group(GroupSpec {
                id: GROUP,
                log: log.clone(),
                voters: voters.to_vec(),
                machine: PartitionMachine::new(
                    Arc::new(RwLock::new(TopicConfig::default())),
                    log.clone(),
                ),
                applied: 0,
                replay_committed: false,
                high_watermark,
                leader,
                term: Default::default(),
                in_sync,
                preferred_leader: None,
                stopped: None,
            })
            .expect("add group");
        let controller_dir = self
            .dir
            .with_file_name(format!("node-{}-controller", self.id));
        self.controller = Some(NodeController::start(&mut driver, &controller_dir, voters));
        self.driver = Some(driver);
        self.log = Some(log);
        self.seen_high_watermark = *receiver.borrow();
        self.high_watermark = Some(receiver);
        self.checked = 0;
    }

    pub(super) fn crash(&mut self, reachability: &Arc<Mutex<Reachability>>) {
        reachability
            .lock()
            .expect("reachability")
            .down
            .insert(self.id);
        // Dropped without stop(): no final sync, no state written beyond what steps wrote.
        self.driver = None;
        self.log = None;
        self.high_watermark = None;
        self.controller = None;
    }

    pub(super) fn up(&self) -> bool {
        self.driver.is_some()
    }

    /// The records below this node's high watermark, by offset.
    pub(super) fn committed(&self) -> Vec<(u64, Bytes)> {
        self.committed_from(0)
    }

    /// The records from `from` below this node's high watermark.
    pub(super) fn committed_from(&self, from: u64) -> Vec<(u64, Bytes)> {
        let (Some(log), Some(high_watermark)) = (&self.log, &self.high_watermark) else {
            return Vec::new();
        };
        let end = *high_watermark.borrow();
        let log = log.read().expect("log");
        let mut records = Vec::new();
        let mut offset = log.log_start_offset().max(from);
        while offset < end {
            let runs = log.read_below(offset, end, 1 << 20).expect("read");
            let before = offset;
            for run in runs {
                for split in split_batches(run) {
                    let (header, batch) = split.expect("batch");
                    if header.is_control() {
                        continue;
                    }
                    for record in decode_records(&batch).expect("records") {
                        if record.offset >= offset && record.offset < end {
                            records.push((record.offset, record.value.unwrap_or_default()));
                        }
                    }
                    offset = offset.max(header.base_offset as u64 + header.offset_count());
                }
            }
            if offset == before {
                break;
            }
        }
        records
    }
}
