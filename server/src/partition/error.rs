//! What a partition's admission and reads fail with. The broker turns it into a
//! [`BrokerError`](crate::broker::BrokerError) with `From`, so a frontend maps every failure
//! through one enum.

use super::BATCH_BYTES_MAX;
use crate::storage::{self, batch::BatchError};

/// A refused batch or read, with what was wrong and what is valid.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The log refused or failed: an offset outside what readers may see (its `next_offset` is
    /// then the high watermark, where committed data ends), or a storage failure.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// A produced batch that fails its checks (framing, CRC, records, compression).
    #[error("corrupt or malformed batch: {0}")]
    Batch(#[from] BatchError),
    /// A produced batch larger than [`BATCH_BYTES_MAX`].
    #[error("batch of {size_bytes} bytes exceeds the limit of {BATCH_BYTES_MAX} bytes")]
    TooLarge { size_bytes: usize },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}
