//! A partition's state machine: what applying a committed batch does (the producer table
//! follows the log), what a proposal must pass (idempotence), what a change of leadership
//! does, and which retention the driver applies.

use std::sync::{Arc, RwLock};

use raft::prelude::Entry;

use super::producers::{self, BatchState, ProducerTable, SequenceError};
use crate::replication::{Admission, StateMachine};
use crate::storage::batch::BatchHeader;
use crate::storage::{PartitionLog, RetentionPolicy};

/// Where a partition's retention policy comes from: its topic's config, which an alter
/// changes while the partition runs (the broker implements it for the shared config).
pub trait RetentionSource: Send + Sync {
    /// The policy in force now.
    fn retention(&self) -> RetentionPolicy;
}

/// A partition's state machine: its state is its log (applying moves the high watermark; the
/// driver does that) plus the idempotent producers' sequences, which are derived from the log;
/// retention follows the topic's config.
pub struct PartitionMachine {
    retention: Arc<dyn RetentionSource>,
    log: Arc<RwLock<PartitionLog>>,
    producers: ProducerTable,
    leader: bool,
}

impl PartitionMachine {
    /// A machine for a replica whose log is `log`, removing old segments as `retention` says.
    /// Its producer table is empty until the replica leads (see `leadership`) or applies.
    pub fn new(retention: Arc<dyn RetentionSource>, log: Arc<RwLock<PartitionLog>>) -> Self {
        Self {
            retention,
            log,
            producers: ProducerTable::default(),
            leader: false,
        }
    }
}

impl StateMachine for PartitionMachine {
    /// A partition's apply cannot fail: its state is its log, already written.
    type Outcome = ();
    /// A producer's batch out of sequence, or of a fenced epoch.
    type Refusal = SequenceError;

    /// The producer table needs a batch's header only; its records stay in the log.
    const APPLIES_HEADER_ONLY: bool = true;

    fn apply(&mut self, entry: &Entry, next_offset: u64) {
        if let Ok(header) = BatchHeader::parse(&entry.data) {
            self.producers.stored(&header, next_offset, 0);
        }
        if self.producers.snapshot_due() {
            let dir = self
                .log
                .read()
                .expect("log lock poisoned")
                .dir()
                .to_path_buf();
            if let Err(error) = self.producers.write_snapshot(&dir, next_offset) {
                // Only a cost: the next rebuild reads more of the log.
                tracing::warn!(dir = %dir.display(), %error, "writing the producer snapshot failed");
            }
        }
    }

    /// The producer table's answer, in replication's terms: a retry of a stored batch is
    /// answered as that entry, a retry of one in flight as that proposal.
    fn admit(&mut self, data: &[u8], proposal: u64) -> Result<Admission<()>, SequenceError> {
        let Ok(header) = BatchHeader::parse(data) else {
            return Ok(Admission::Append);
        };
        Ok(match self.producers.admit(&header, proposal)? {
            producers::Admission::Append => Admission::Append,
            producers::Admission::Duplicate(BatchState::Stored {
                next_offset,
                raft_index,
            }) => Admission::Duplicate {
                raft_index,
                next_offset,
                outcome: (),
            },
            producers::Admission::Duplicate(BatchState::InFlight(original)) => {
                Admission::DuplicateOf(original)
            }
        })
    }

    fn dropped(&mut self, proposal: u64) {
        self.producers.forget_proposal(proposal);
    }

    /// A new leader recomputes the producer state from its log, which is what will commit: a
    /// follower's view (what it applied) lags its log, and in-flight batches of an old term
    /// may have been replaced.
    fn leadership(&mut self, leader: bool, committed: u64) -> Result<(), String> {
        if leader && !self.leader {
            let log = self.log.read().expect("log lock poisoned");
            self.producers = ProducerTable::rebuild(&log, committed).map_err(|error| {
                format!(
                    "{}: rebuilding the producer state failed: {error}",
                    log.dir().display()
                )
            })?;
        } else if !leader {
            self.producers.forget_in_flight();
        }
        self.leader = leader;
        Ok(())
    }

    /// Retention is local: each replica removes its own old segments with the same policy,
    /// bounded by what it has applied. It is not replicated because segment boundaries are
    /// each replica's own (they roll by local size and time), and raft does not need it to be:
    /// a follower that falls behind the leader's log start receives a metadata-only snapshot
    /// and restarts its log there.
    fn retention(&self) -> Option<(RetentionPolicy, u64)> {
        Some((self.retention.retention(), u64::MAX))
    }
}
