//! The storage error type: one enum, each variant with the context a reader needs.

use std::io;
use std::path::PathBuf;

use super::batch::BatchError;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed. The log is left consistent: either the operation had no effect, or
    /// the log moved to the failed state (see [`Error::Failed`]).
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Stored bytes fail their checks where a torn write cannot explain it (a sealed segment, a
    /// checkpoint). Never skipped silently.
    #[error("corrupt data in {path} at position {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// A batch handed to `append` is not a valid record batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("batch of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    BatchTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    /// `requested` is outside `log_start..=next_offset`.
    #[error(
        "offset {requested} is out of range: valid offsets are {log_start} to {next_offset} \
         ({next_offset} is the next offset to be written)"
    )]
    OffsetOutOfRange {
        requested: u64,
        log_start: u64,
        next_offset: u64,
    },
    /// The raft index was removed by retention or a reset.
    #[error("raft index {requested} is compacted: the log starts at raft index {first}")]
    RaftIndexCompacted { requested: u64, first: u64 },
    /// The raft index is past the end of the log.
    #[error("raft index {requested} is not in the log: its last raft index is {last}")]
    RaftIndexUnavailable { requested: u64, last: u64 },
    /// Raft terms never decrease along the log, and must fit the batch's leader epoch.
    #[error("term {term} is invalid: {reason}")]
    InvalidTerm { term: u64, reason: &'static str },
    #[error("invalid storage config: {0}")]
    InvalidConfig(String),
    /// An earlier I/O error left the in-memory state unsure of what is on disk (for example an
    /// fsync that failed). Every operation fails until the log is reopened, which recovers from
    /// what the disk holds.
    #[error("the log at {path} failed earlier and must be reopened: {reason}")]
    Failed { path: PathBuf, reason: String },
}

/// The storage result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the operation and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn context(self, operation: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, operation: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            operation,
            path: path.to_path_buf(),
            source,
        })
    }
}
