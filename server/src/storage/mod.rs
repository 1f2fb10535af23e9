//! # Storage: the partition log
//!
//! A partition is a directory of segments, each a `{base_offset:020}.log` of record batches
//! (Kafka's RecordBatch v2, [`batch`]) and a sparse, memory-mapped `.index` ([`index`]), plus a
//! `log-start.checkpoint` ([`checkpoint`]) that anchors raft indexes after retention or a reset.
//! The [`PartitionLog`] is also the partition's raft log: one batch is one raft entry.
//!
//! Layout:
//! - [`batch`]: the batch codec, byte for byte, and its one description of the format (it lives
//!   in `strata-proto`, which the client shares).
//! - [`index`]: index entries (offset, raft index, position, time) and their lookups.
//! - [`segment`]: one segment: append, sync, sealing, truncation, file names; its child modules
//!   hold recovery at open (`segment/recovery.rs`) and reads (`segment/read.rs`).
//! - [`log`]: [`PartitionLog`], the ordered segments, rolling, group-commit `sync`, reads; its
//!   child modules hold opening and recovery (`log/open.rs`), the raft-index view and
//!   truncation (`log/raft.rs`), and moving the log start by retention or reset
//!   (`log/start.rs`).
//! - [`retention`]: the pure retention plan.
//! - [`checkpoint`]: the log-start checkpoint file.
//! - [`inspect`]: read-only dump and verification of a partition directory (`strata log`).
//! - [`fault`]: the I/O failure seam for tests.
//! - [`error`]: the one error enum.
//!
//! This module knows nothing of raft, tokio or topics: time comes in as `now_ms`, and the raft
//! layer maps its indexes and terms onto [`PartitionLog`]'s.

pub use strata_proto::batch;
pub mod checkpoint;
pub mod error;
pub mod fault;
pub mod files;
pub mod index;
pub mod inspect;
pub mod log;
pub mod retention;
pub mod segment;

pub use checkpoint::LogStart;
pub use error::{Error, Result};
pub use log::{AppendInfo, LogConfig, PartitionLog, PendingSync, RetentionOutcome};
pub use retention::RetentionPolicy;
pub use segment::{EntryBytes, RaftEntry, SegmentInfo};
