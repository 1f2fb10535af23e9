//! `raft::Storage` over a [`PartitionLog`]: the partition log is the raft log.
//!
//! Entries map onto batches one to one:
//! - a normal entry with data is a record batch, stored as it is (stamped with its offset and
//!   term);
//! - a normal entry without data (the no-op a new leader appends) is a `LeaderNoop` control
//!   batch;
//! - a configuration change is a `RaftConfChange` control batch whose payload is one byte of
//!   entry type followed by raft's encoded change.
//!
//! Hard state (term, vote, commit) and conf state live in `raft-state` beside the segments,
//! checksummed with crc32fast and replaced atomically. Term and vote are written (and fsynced)
//! whenever they change, before any message that depends on them is sent. The commit index is
//! written with them and at shutdown, but not on every advance: losing it only makes a node
//! re-learn what is committed from the leader (or, alone, commit its next no-op), while writing it
//! on every commit would cost two fsyncs per produce round.
//!
//! Snapshots carry metadata only (raft index, term, conf state) plus, in `data`, the log start
//! offset of the snapshot point (8 bytes, big-endian) and whatever state the group's owner adds
//! (the controller puts its metadata there). Installing one resets the log to start there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::{BufMut, Bytes, BytesMut};
use protobuf::Message as PbMessage;
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::storage::batch::{self, BatchHeader, ControlType};
use crate::storage::{self, LogStart, PartitionLog};

/// File name of the raft hard state and conf state inside a group's directory.
pub const STATE_FILE: &str = "raft-state";
const STATE_MAGIC: &[u8; 4] = b"STRS";

/// The persistent raft state of one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersistentState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
}

impl PersistentState {
    fn encode(&self) -> Result<Vec<u8>, raft::Error> {
        let hard = self.hard_state.write_to_bytes()?;
        let conf = self.conf_state.write_to_bytes()?;
        let mut bytes = Vec::with_capacity(16 + hard.len() + conf.len());
        bytes.extend_from_slice(STATE_MAGIC);
        bytes.extend_from_slice(&(hard.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&hard);
        bytes.extend_from_slice(&(conf.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&conf);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let body_length = bytes.len().checked_sub(4).ok_or("file too short")?;
        let (body, crc) = bytes.split_at(body_length);
        let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "file too short")?);
        if stored != crc32fast::hash(body) {
            return Err("CRC mismatch".to_string());
        }
        if body.get(..4) != Some(STATE_MAGIC) {
            return Err("bad magic".to_string());
        }
        let mut rest = &body[4..];
        let mut field = || -> Result<&[u8], String> {
            let length = rest.get(..4).ok_or("truncated length")?;
            let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
            let value = rest.get(4..4 + length).ok_or("truncated field")?;
            rest = &rest[4 + length..];
            Ok(value)
        };
        let hard_state = HardState::parse_from_bytes(field()?).map_err(|e| e.to_string())?;
        let conf_state = ConfState::parse_from_bytes(field()?).map_err(|e| e.to_string())?;
        Ok(Self {
            hard_state,
            conf_state,
        })
    }

    /// Reads the state file of `dir`; `None` when the group has none yet.
    pub fn read(dir: &Path) -> Result<Option<Self>, raft::Error> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes)
                .map(Some)
                .map_err(|reason| storage_error(format!("{}: {reason}", path.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(raft::Error::Io(error)),
        }
    }

    /// Replaces the state file of `dir` atomically and durably.
    pub fn write(&self, dir: &Path) -> Result<(), raft::Error> {
        let bytes = self.encode()?;
        storage::files::replace_atomically(&dir.join(STATE_FILE), &bytes, None)
            .map_err(|e| storage_error(e.to_string()))
    }
}

fn storage_error(message: String) -> raft::Error {
    raft::Error::Store(StorageError::Other(message.into()))
}

fn map_error(error: storage::Error) -> raft::Error {
    match error {
        storage::Error::RaftIndexCompacted { .. } => raft::Error::Store(StorageError::Compacted),
        storage::Error::RaftIndexUnavailable { .. } => {
            raft::Error::Store(StorageError::Unavailable)
        }
        other => storage_error(other.to_string()),
    }
}

/// One group's raft storage: its partition log (shared with readers) and persistent state.
pub struct RaftStorage {
    dir: PathBuf,
    log: Arc<RwLock<PartitionLog>>,
    state: PersistentState,
    /// The state last written to disk, to know when term or vote changed.
    written: PersistentState,
    /// Extra snapshot data supplied by the group's owner (the controller's metadata), with the
    /// raft index and term it was taken at.
    owner_snapshot: Option<(u64, u64, Bytes)>,
    /// Entries read for raft's own use (to apply, or to count pending conf changes) carry a
    /// data batch's header only; see [`StateMachine::APPLIES_HEADER_ONLY`](super::StateMachine::APPLIES_HEADER_ONLY).
    apply_reads_header_only: bool,
}

impl RaftStorage {
    /// Wraps `log`, whose directory holds (or will hold) the state file. A new group starts with
    /// `voters` as its configuration.
    ///
    /// # Errors
    /// A damaged state file.
    pub fn open(log: Arc<RwLock<PartitionLog>>, voters: &[u64]) -> Result<Self, raft::Error> {
        let dir = log.read().expect("log lock poisoned").dir().to_path_buf();
        let state = match PersistentState::read(&dir)? {
            Some(state) => state,
            None => {
                let state = PersistentState {
                    hard_state: HardState::default(),
                    conf_state: ConfState::from((voters.to_vec(), Vec::new())),
                };
                state.write(&dir)?;
                state
            }
        };
        Ok(Self {
            dir,
            log,
            written: state.clone(),
            state,
            owner_snapshot: None,
            apply_reads_header_only: false,
        })
    }

    /// Hands entries read for raft's own use (not for a follower) over as their batch header
    /// only, for a machine that applies from the header (see
    /// [`StateMachine::APPLIES_HEADER_ONLY`](super::StateMachine::APPLIES_HEADER_ONLY)).
    pub fn set_apply_reads_header_only(&mut self, header_only: bool) {
        self.apply_reads_header_only = header_only;
    }

    pub fn log(&self) -> &Arc<RwLock<PartitionLog>> {
        &self.log
    }

    pub fn hard_state(&self) -> &HardState {
        &self.state.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.state.conf_state
    }

    /// Records a new hard state. Writes the file (fsync included) when term or vote changed;
    /// a commit index alone is kept in memory until the next write (see the module doc).
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), raft::Error> {
        self.state.hard_state = hard_state.clone();
        let written = &self.written.hard_state;
        if hard_state.term != written.term || hard_state.vote != written.vote {
            self.persist()?;
        }
        Ok(())
    }

    /// Records the commit index (kept in memory; see the module doc).
    pub fn set_commit(&mut self, commit: u64) {
        self.state.hard_state.commit = commit;
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), raft::Error> {
        self.state.conf_state = conf_state;
        self.persist()
    }

    /// Writes the whole state, commit index included.
    pub fn persist(&mut self) -> Result<(), raft::Error> {
        self.state.write(&self.dir)?;
        self.written = self.state.clone();
        Ok(())
    }

    /// Appends entries handed over by raft, truncating a conflicting suffix first. Returns,
    /// for each entry, the offset after it (the high watermark once it commits).
    pub fn append(&mut self, entries: &[Entry], now_ms: i64) -> Result<Vec<u64>, raft::Error> {
        let Some(first) = entries.first() else {
            return Ok(Vec::new());
        };
        let mut log = self.log.write().expect("log lock poisoned");
        if first.index <= log.last_raft_index() {
            log.truncate_from_raft_index(first.index)
                .map_err(map_error)?;
        }
        let mut next_offsets = Vec::with_capacity(entries.len());
        for entry in entries {
            assert_eq!(
                entry.index,
                log.last_raft_index() + 1,
                "raft appends in order"
            );
            let info = match entry.entry_type {
                EntryType::EntryNormal if entry.data.is_empty() => log
                    .append_control(ControlType::LeaderNoop, b"", entry.term, now_ms)
                    .map_err(map_error)?,
                EntryType::EntryNormal => log
                    .append(&entry.data, entry.term, now_ms)
                    .map_err(map_error)?,
                kind => {
                    let mut payload = Vec::with_capacity(entry.data.len() + 1);
                    payload.put_u8(kind as u8);
                    payload.extend_from_slice(&entry.data);
                    log.append_control(ControlType::RaftConfChange, &payload, entry.term, now_ms)
                        .map_err(map_error)?
                }
            };
            next_offsets.push(info.next_offset);
        }
        Ok(next_offsets)
    }

    /// Makes every append durable (one fsync of the active segment). The fsync runs without
    /// the log's lock, so readers are not held up by it.
    pub fn sync(&self) -> Result<(), raft::Error> {
        let pending = self.begin_sync()?;
        if let Err(error) = pending.complete() {
            self.fail_sync(&error);
            return Err(map_error(error));
        }
        Ok(())
    }

    /// The first half of [`RaftStorage::sync`] (see [`PartitionLog::begin_sync`]): what to
    /// fsync, to complete on any thread.
    ///
    /// # Errors
    /// The log failed.
    pub fn begin_sync(&self) -> Result<storage::PendingSync, raft::Error> {
        self.log
            .write()
            .expect("log lock poisoned")
            .begin_sync()
            .map_err(map_error)
    }

    /// Records that a sync from [`RaftStorage::begin_sync`] failed: the log is failed.
    pub fn fail_sync(&self, error: &storage::Error) {
        self.log
            .write()
            .expect("log lock poisoned")
            .fail_sync(error);
    }

    /// Installs a snapshot sent by the leader: the log restarts after it.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), raft::Error> {
        let metadata = snapshot.get_metadata();
        let start_offset = snapshot_start_offset(&snapshot.data)?;
        let start = LogStart {
            prev_raft_index: metadata.index,
            prev_term: metadata.term,
            start_offset,
        };
        self.log
            .write()
            .expect("log lock poisoned")
            .reset(start)
            .map_err(map_error)?;
        self.state.hard_state.commit = self.state.hard_state.commit.max(metadata.index);
        self.state.hard_state.term = self.state.hard_state.term.max(metadata.term);
        self.state.conf_state = metadata.get_conf_state().clone();
        self.persist()
    }

    /// Lets the group's owner add its own state to snapshots taken at `raft_index`.
    pub fn set_owner_snapshot(&mut self, raft_index: u64, term: u64, data: Bytes) {
        self.owner_snapshot = Some((raft_index, term, data));
    }
}

/// Rewrites the persisted configuration of the group whose log is `log` to `node_id` alone,
/// taking everything in the log as committed: the recovery of a group that lost its quorum for
/// good (etcd's `--force-new-cluster`). Entries the old quorum never committed become
/// committed; the other nodes' copies must be discarded. Returns the voters and learners the
/// group had.
///
/// # Errors
/// A damaged or unwritable state file.
pub fn force_alone(log: &PartitionLog, node_id: u64) -> Result<Vec<u64>, raft::Error> {
    let dir = log.dir();
    let mut state = PersistentState::read(dir)?.unwrap_or_default();
    let mut members = state.conf_state.voters.clone();
    members.extend(&state.conf_state.learners);
    members.extend(&state.conf_state.voters_outgoing);
    members.sort_unstable();
    members.dedup();
    state.conf_state = ConfState::from((vec![node_id], Vec::new()));
    state.hard_state.commit = log.last_raft_index();
    state.write(dir)?;
    Ok(members)
}

/// The log start offset a snapshot's data begins with.
pub fn snapshot_start_offset(data: &[u8]) -> Result<u64, raft::Error> {
    let bytes: [u8; 8] = data
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| storage_error("snapshot data lacks the start offset".to_string()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The owner's part of a snapshot's data (after the start offset).
pub fn snapshot_owner_data(data: &Bytes) -> Bytes {
    data.slice(8.min(data.len())..)
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let mut hard_state = self.state.hard_state.clone();
        // The commit index is persisted lazily (see the module doc), so after a kill -9 the file
        // may name a commit below the log's start: retention (or a snapshot) removed entries
        // since it was written. Everything before the start was committed (retention removes
        // only applied entries, a snapshot only committed ones), so the commit is at least
        // there; raft refuses a commit outside [first - 1, last] at start.
        let first = self.first_index()?;
        let last = self.last_index()?;
        hard_state.commit = hard_state.commit.max(first - 1).min(last);
        Ok(RaftState {
            hard_state,
            conf_state: self.state.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_bytes = max_size.into().unwrap_or(u64::MAX).min(usize::MAX as u64) as usize;
        // raft reads entries for a follower (`can_async`), or for itself: to hand committed
        // entries to apply, or to count conf changes not yet applied. For itself, a data
        // batch's header is all anyone reads (when the machine says so), and reading only that
        // spares a copy of every committed batch out of the log. Control batches (conf
        // changes) are small and always come whole.
        let bytes = if self.apply_reads_header_only && !context.can_async() {
            storage::EntryBytes::DataHeaderOnly
        } else {
            storage::EntryBytes::Whole
        };
        let log = self.log.read().expect("log lock poisoned");
        let stored = log
            .raft_entries(low, high, max_bytes, bytes)
            .map_err(map_error)?;
        stored
            .into_iter()
            .map(|stored| {
                let header =
                    BatchHeader::parse(&stored.batch).map_err(|e| storage_error(e.to_string()))?;
                let mut entry = Entry {
                    index: stored.raft_index,
                    term: stored.term,
                    ..Entry::default()
                };
                if header.is_control() {
                    let (kind, payload) = batch::decode_control(&stored.batch)
                        .map_err(|e| storage_error(e.to_string()))?;
                    if kind == ControlType::RaftConfChange {
                        let (kind, change) = payload
                            .split_first()
                            .ok_or_else(|| storage_error("empty conf change".to_string()))?;
                        entry.entry_type = match *kind {
                            1 => EntryType::EntryConfChange,
                            _ => EntryType::EntryConfChangeV2,
                        };
                        entry.data = Bytes::copy_from_slice(change);
                    }
                } else {
                    entry.data = stored.batch;
                }
                Ok(entry)
            })
            .collect()
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.log
            .read()
            .expect("log lock poisoned")
            .term(idx)
            .map_err(map_error)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self
            .log
            .read()
            .expect("log lock poisoned")
            .first_raft_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self
            .log
            .read()
            .expect("log lock poisoned")
            .last_raft_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let log = self.log.read().expect("log lock poisoned");
        let start = log.log_start();
        let mut snapshot = Snapshot::default();
        let (index, term, owner) = match &self.owner_snapshot {
            // The owner's state covers everything up to its index; the log may start later.
            Some((index, term, data)) if *index >= start.prev_raft_index => {
                (*index, *term, data.clone())
            }
            _ => (start.prev_raft_index, start.prev_term, Bytes::new()),
        };
        let start_offset = if index == start.prev_raft_index {
            start.start_offset
        } else {
            log.offset_after_raft_index(index).map_err(map_error)?
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(self.state.conf_state.clone());
        let mut data = BytesMut::with_capacity(8 + owner.len());
        data.put_u64(start_offset);
        data.extend_from_slice(&owner);
        snapshot.data = data.freeze();
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    #[test]
    fn state_file_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = PersistentState {
            hard_state: HardState {
                term: 3,
                vote: 2,
                commit: 9,
                ..HardState::default()
            },
            conf_state: ConfState::from((vec![1, 2, 3], vec![])),
        };
        state.write(dir.path()).expect("write");
        assert_eq!(
            PersistentState::read(dir.path()).expect("read"),
            Some(state)
        );
        let path = dir.path().join(STATE_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[6] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        assert!(PersistentState::read(dir.path()).is_err());
    }

    /// Normal entries, no-ops and conf changes survive the trip through batches.
    #[test]
    fn entries_round_trip_through_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = PartitionLog::open(dir.path(), storage::LogConfig::default()).expect("open");
        let log = Arc::new(RwLock::new(log));
        let mut store = RaftStorage::open(log, &[1]).expect("storage");
        let mut builder = batch::BatchBuilder::new();
        builder.push(5, Some(b"k"), Some(b"v"), &[]);
        let data = builder.finish().freeze();
        let entries = vec![
            Entry {
                index: 1,
                term: 1,
                ..Entry::default()
            },
            Entry {
                index: 2,
                term: 1,
                data: data.clone(),
                ..Entry::default()
            },
            Entry {
                index: 3,
                term: 2,
                entry_type: EntryType::EntryConfChangeV2,
                data: Bytes::from_static(b"change"),
                ..Entry::default()
            },
        ];
        let next = store.append(&entries, 0).expect("append");
        assert_eq!(next, vec![0, 1, 1]);
        let read = store
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(read.len(), 3);
        assert!(read[0].data.is_empty());
        assert_eq!(read[1].data.len(), data.len());
        assert_eq!(read[2].entry_type, EntryType::EntryConfChangeV2);
        assert_eq!(&read[2].data[..], b"change");
        assert_eq!(store.term(3).expect("term"), 2);
        let snapshot = store.snapshot(0, 0).expect("snapshot");
        assert_eq!(snapshot.get_metadata().index, 0);
        assert_eq!(snapshot_start_offset(&snapshot.data).expect("offset"), 0);

        // For a machine that applies from headers: raft's own reads get a data batch's header
        // (with its stamped offset), a follower's get it whole; conf changes always come whole.
        store.set_apply_reads_header_only(true);
        let own = store
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert!(own[0].data.is_empty());
        assert_eq!(own[1].data.len(), batch::HEADER_BYTES);
        let header = BatchHeader::parse(&own[1].data).expect("header");
        assert_eq!((header.base_offset, header.record_count), (0, 1));
        assert_eq!(&own[2].data[..], b"change");
        let for_follower = store
            .entries(1, 4, None, GetEntriesContext::empty(true))
            .expect("entries");
        assert_eq!(for_follower[1].data.len(), data.len());
        assert_eq!(
            &for_follower[1].data[batch::HEADER_BYTES..],
            &data[batch::HEADER_BYTES..]
        );
    }
}
