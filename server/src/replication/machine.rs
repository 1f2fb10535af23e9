//! The interface between the driver and the state machine of each group: what a machine is
//! asked (admit a proposal, apply a committed entry, take over as leader, restore a snapshot),
//! the typed answers it gives ([`Admission`], its `Outcome` and `Refusal`), and how the driver
//! holds machines of different types in one map (an object-safe `AnyMachine` implemented for
//! every [`StateMachine`], whose typed values travel as [`Erased`] and are downcast again on the
//! caller's side, in `handle`).
//!
//! This layer knows nothing of producers, topics or the controller's commands: a partition maps
//! its producer table's answer onto [`Admission`], the controller its refusals onto `Outcome`.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;
use raft::prelude::Entry;

use crate::storage::RetentionPolicy;

/// How the leader takes a proposal in, decided by the group's machine in submission order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<O> {
    /// A new proposal: it enters the log.
    Append,
    /// A retry of an entry already in the log at `raft_index`, after which the partition holds
    /// offsets below `next_offset`: answered as that entry (with `outcome`) once it is
    /// committed, without appending again.
    Duplicate {
        raft_index: u64,
        next_offset: u64,
        outcome: O,
    },
    /// A retry of the proposal with this id, still in flight: answered as that proposal.
    DuplicateOf(u64),
}

/// What a group's owner does with its entries.
///
/// `Outcome` is what applying a committed entry tells its proposer; `Refusal` is why the
/// machine refuses a proposal at admission, before it enters the log. Both reach the caller of
/// [`DriverHandle::propose`](super::DriverHandle::propose) typed.
pub trait StateMachine: Send + 'static {
    /// What applying an entry tells its proposer.
    type Outcome: Clone + Debug + Send + Sync + 'static;
    /// Why a proposal is refused before it enters the log.
    type Refusal: Clone + Debug + Send + Sync + 'static;

    /// Applies the committed entry `entry` (raft index `entry.index`), after which the partition
    /// holds offsets below `next_offset`. Returns the outcome reported to the proposer.
    /// Deterministic: every replica applies the same entries to the same effect.
    fn apply(&mut self, entry: &Entry, next_offset: u64) -> Self::Outcome;

    /// Whether [`StateMachine::apply`] reads nothing of a normal entry's data but its batch
    /// header (the first [`HEADER_BYTES`](crate::storage::batch::HEADER_BYTES)). Then the log
    /// hands committed entries to apply as their headers only: a committed batch is not read
    /// back and copied out of the log to be applied (conf changes and control entries still
    /// come whole).
    const APPLIES_HEADER_ONLY: bool = false;

    /// Replaces the state with the one a leader's snapshot carries (`data` is the owner's part).
    /// By default there is nothing to replace: the state is the log, which the snapshot has
    /// already reset.
    ///
    /// # Errors
    /// The data cannot be read: the group stops.
    fn restore(&mut self, _data: &Bytes) -> Result<(), String> {
        Ok(())
    }

    /// The retention policy to run on this group's log, if any, and the highest raft index it
    /// may remove (retention never passes what raft has applied either). The controller bounds
    /// it by its last persisted snapshot, so a restart can always replay from there.
    fn retention(&self) -> Option<(RetentionPolicy, u64)> {
        None
    }

    /// A snapshot of the state as of the last applied entry, for groups whose state is more than
    /// their log (the controller). `None` keeps snapshots metadata-only.
    fn snapshot(&mut self) -> Option<Bytes> {
        None
    }

    /// Decides, on the leader and in submission order, whether proposal `proposal` enters
    /// the log: partitions recognise a retried idempotent batch here.
    ///
    /// # Errors
    /// The machine refuses the proposal (a partition: a batch out of sequence).
    fn admit(
        &mut self,
        _data: &[u8],
        _proposal: u64,
    ) -> Result<Admission<Self::Outcome>, Self::Refusal> {
        Ok(Admission::Append)
    }

    /// Raft dropped the admitted proposal `proposal` before it reached the log.
    fn dropped(&mut self, _proposal: u64) {}

    /// This node became (`true`) or stopped being the group's leader; `committed` is raft's
    /// commit index then. A new leader hears it before its first admission.
    ///
    /// # Errors
    /// The state could not be rebuilt from the log: the group stops.
    fn leadership(&mut self, _leader: bool, _committed: u64) -> Result<(), String> {
        Ok(())
    }
}

/// A machine's `Outcome` or `Refusal` with its type erased, while it crosses the driver.
/// Shared, so that one outcome answers a proposal and every retry of it.
pub type Erased = Arc<dyn Any + Send + Sync>;

/// [`StateMachine`] without its associated types, so that the driver keeps machines of
/// different types side by side. Implemented for every machine; see [`typed`] for the way back.
pub(crate) trait AnyMachine: Send {
    fn apply(&mut self, entry: &Entry, next_offset: u64) -> Erased;
    fn applies_header_only(&self) -> bool;
    fn restore(&mut self, data: &Bytes) -> Result<(), String>;
    fn retention(&self) -> Option<(RetentionPolicy, u64)>;
    fn snapshot(&mut self) -> Option<Bytes>;
    fn admit(&mut self, data: &[u8], proposal: u64) -> Result<Admission<Erased>, Erased>;
    fn dropped(&mut self, proposal: u64);
    fn leadership(&mut self, leader: bool, committed: u64) -> Result<(), String>;
}

impl<M: StateMachine> AnyMachine for M {
    fn apply(&mut self, entry: &Entry, next_offset: u64) -> Erased {
        Arc::new(StateMachine::apply(self, entry, next_offset))
    }

    fn applies_header_only(&self) -> bool {
        M::APPLIES_HEADER_ONLY
    }

    fn restore(&mut self, data: &Bytes) -> Result<(), String> {
        StateMachine::restore(self, data)
    }

    fn retention(&self) -> Option<(RetentionPolicy, u64)> {
        StateMachine::retention(self)
    }

    fn snapshot(&mut self) -> Option<Bytes> {
        StateMachine::snapshot(self)
    }

    fn admit(&mut self, data: &[u8], proposal: u64) -> Result<Admission<Erased>, Erased> {
        match StateMachine::admit(self, data, proposal) {
            Ok(Admission::Append) => Ok(Admission::Append),
            Ok(Admission::Duplicate {
                raft_index,
                next_offset,
                outcome,
            }) => Ok(Admission::Duplicate {
                raft_index,
                next_offset,
                outcome: Arc::new(outcome),
            }),
            Ok(Admission::DuplicateOf(original)) => Ok(Admission::DuplicateOf(original)),
            Err(refusal) => Err(Arc::new(refusal)),
        }
    }

    fn dropped(&mut self, proposal: u64) {
        StateMachine::dropped(self, proposal);
    }

    fn leadership(&mut self, leader: bool, committed: u64) -> Result<(), String> {
        StateMachine::leadership(self, leader, committed)
    }
}
