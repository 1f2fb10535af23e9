//! The controller's state machine ([`Controller`]): applies the [`Command`]s of the
//! controller's raft log to the shared [`Metadata`], and keeps its snapshot file, which bounds
//! the controller log's retention.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use raft::prelude::Entry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::metadata::{Command, CommandRefusal, Metadata};
use crate::replication::StateMachine;
use crate::storage::RetentionPolicy;
use crate::storage::batch::decode_records;

/// File holding the controller's latest snapshot: applied index, term and metadata (JSON),
/// replaced atomically.
pub const SNAPSHOT_FILE: &str = "metadata.snapshot";

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    term: u64,
    metadata: Metadata,
}

/// The controller's state machine: the metadata, shared with the broker, and a watch that
/// ticks whenever it changes.
pub struct Controller {
    dir: PathBuf,
    metadata: Arc<RwLock<Metadata>>,
    changed: watch::Sender<u64>,
    /// Raft index of the snapshot last written to disk (the retention bound).
    snapshot_index: u64,
    last_term: u64,
}

impl Controller {
    /// Loads the last snapshot from `dir` (if any): returns the controller and the raft index
    /// its state covers.
    ///
    /// # Errors
    /// A damaged snapshot file.
    pub fn load(
        dir: &Path,
        metadata: Arc<RwLock<Metadata>>,
        changed: watch::Sender<u64>,
    ) -> Result<(Self, u64), String> {
        let path = dir.join(SNAPSHOT_FILE);
        let (state, term) = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: SnapshotFile = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                (file.metadata, file.term)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (Metadata::default(), 0),
            Err(error) => return Err(format!("{}: {error}", path.display())),
        };
        let applied = state.applied_index;
        *metadata.write().expect("metadata lock poisoned") = state;
        changed.send_replace(applied);
        Ok((
            Self {
                dir: dir.to_path_buf(),
                metadata,
                changed,
                snapshot_index: applied,
                last_term: term,
            },
            applied,
        ))
    }
}

impl StateMachine for Controller {
    type Outcome = Result<(), CommandRefusal>;
    /// The controller takes every proposal into its log; refusals come when applied.
    type Refusal = std::convert::Infallible;

    fn apply(&mut self, entry: &Entry, _next_offset: u64) -> Result<(), CommandRefusal> {
        let undecodable = |error: String| CommandRefusal::Undecodable(error);
        let records = decode_records(&entry.data).map_err(|e| undecodable(e.to_string()))?;
        let mut outcome = Ok(());
        let mut metadata = self.metadata.write().expect("metadata lock poisoned");
        for record in records {
            let value = record.value.unwrap_or_default();
            let command: Command =
                serde_json::from_slice(&value).map_err(|e| undecodable(e.to_string()))?;
            outcome = metadata.apply(command);
        }
        metadata.applied_index = entry.index;
        self.last_term = entry.term;
        drop(metadata);
        self.changed.send_replace(entry.index);
        outcome
    }

    fn restore(&mut self, data: &Bytes) -> Result<(), String> {
        let file: SnapshotFile = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let applied = file.metadata.applied_index;
        *self.metadata.write().expect("metadata lock poisoned") = file.metadata;
        self.changed.send_replace(applied);
        Ok(())
    }

    fn retention(&self) -> Option<(RetentionPolicy, u64)> {
        // Everything covered by the snapshot on disk may go; the controller's segments are small
        // (the broker opens its log with small segments), so that frees space soon.
        let policy = RetentionPolicy {
            retention_ms: None,
            retention_bytes: Some(0),
            offset_floor: None,
        };
        Some((policy, self.snapshot_index))
    }

    fn snapshot(&mut self) -> Option<Bytes> {
        let metadata = self
            .metadata
            .read()
            .expect("metadata lock poisoned")
            .clone();
        let index = metadata.applied_index;
        let file = SnapshotFile {
            term: self.last_term,
            metadata,
        };
        let bytes = serde_json::to_vec(&file).expect("metadata serializes");
        let path = self.dir.join(SNAPSHOT_FILE);
        match crate::storage::files::replace_atomically(&path, &bytes, None) {
            Ok(()) => {
                self.snapshot_index = index;
                Some(Bytes::from(bytes))
            }
            Err(error) => {
                tracing::error!(%error, "writing the controller snapshot failed");
                None
            }
        }
    }
}
