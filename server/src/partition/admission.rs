//! What a produced batch must pass before it is proposed: checked once, fully, here, so that
//! what a replica's append would refuse never reaches raft, and nothing stored fails to decode.

use bytes::Bytes;

use super::PartitionError;
use crate::storage::batch::{BatchHeader, DECOMPRESSED_BYTES_MAX, validate_records};

/// Largest batch a producer may send (bytes).
pub const BATCH_BYTES_MAX: usize = 1 << 20;

/// Checks a batch a producer sent: whole, CRC-valid, within the size limit, not a control or
/// transactional batch (those are the broker's own), and every record well framed and counted
/// by the header, compressed or not, within [`DECOMPRESSED_BYTES_MAX`] once decompressed. What
/// passes decodes; what does not is never stored.
///
/// # Errors
/// [`PartitionError::TooLarge`], [`PartitionError::Batch`], [`PartitionError::InvalidArgument`].
pub fn validate_producer_batch(batch: &Bytes) -> Result<(), PartitionError> {
    if batch.len() > BATCH_BYTES_MAX {
        return Err(PartitionError::TooLarge {
            size_bytes: batch.len(),
        });
    }
    let header = BatchHeader::validate(batch)?;
    if header.is_control() || header.is_transactional() {
        return Err(PartitionError::InvalidArgument(
            "control and transactional batches cannot be produced".to_string(),
        ));
    }
    use strata_proto::batch::Compression;
    match header.compression() {
        Ok(Compression::None | Compression::Lz4) => {}
        Ok(codec) => {
            return Err(PartitionError::InvalidArgument(format!(
                "{codec:?} compression is not supported: use none or lz4"
            )));
        }
        Err(error) => return Err(error.into()),
    }
    // Every record is checked once, here, so nothing stored fails to decode: uncompressed
    // records in place, LZ4 ones streamed through a bounded buffer (as Kafka's broker does),
    // refused once they decompress past the cap every reader applies. This is the one CRC-32C
    // pass over the batch on the leader: the log's append checks framing only.
    validate_records(header, batch, DECOMPRESSED_BYTES_MAX)?;
    Ok(())
}
