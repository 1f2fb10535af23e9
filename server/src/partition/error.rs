//! What a partition's admission and reads fail with. The broker turns it into a
//! [`BrokerError`](crate::broker::BrokerError) with `From` (one variant each), so a frontend
//! maps every failure through one enum.

use crate::storage;

/// A refused batch or read, with what was wrong and what is valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error(
        "offset {requested} is out of range: valid offsets are {log_start} to {high_watermark} \
         ({high_watermark} is the next offset to be written)"
    )]
    OffsetOutOfRange {
        requested: u64,
        log_start: u64,
        high_watermark: u64,
    },
    #[error("batch of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("corrupt or malformed batch: {0}")]
    CorruptBatch(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("storage error: {0}")]
    Storage(String),
}

impl From<storage::Error> for PartitionError {
    /// A storage refusal a client caused (a range, a size, a malformed batch) keeps its kind;
    /// anything else is a storage failure with its cause.
    fn from(error: storage::Error) -> Self {
        match error {
            storage::Error::OffsetOutOfRange {
                requested,
                log_start,
                next_offset,
            } => Self::OffsetOutOfRange {
                requested,
                log_start,
                high_watermark: next_offset,
            },
            storage::Error::BatchTooLarge {
                size_bytes,
                limit_bytes,
            } => Self::RecordTooLarge {
                size_bytes,
                limit_bytes,
            },
            storage::Error::InvalidBatch(error) => Self::CorruptBatch(error.to_string()),
            other => Self::Storage(other.to_string()),
        }
    }
}
