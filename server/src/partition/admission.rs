//! What a produced batch must pass before it is proposed: checked once, fully, here, so that
//! what a replica's append would refuse never reaches raft, and nothing stored fails to decode.

use bytes::Bytes;

use super::PartitionError;
use crate::storage::batch::{BatchHeader, DECOMPRESSED_BYTES_MAX, validate_records};

/// Largest batch a producer may send (bytes).
pub const BATCH_BYTES_MAX: usize = 1 << 20;

/// Checks a batch a producer sent: whole, CRC-valid, within the size limit, not a control or
/// transactional batch (those are the broker's own), and every record well framed and counted
/// by the header, uncompressed or in any of Kafka's five codecs (none, gzip, snappy, lz4,
/// zstd), within [`DECOMPRESSED_BYTES_MAX`] once decompressed. What passes decodes; what does
/// not is never stored. Nothing is changed: a compressed batch is stored as the producer
/// compressed it, never recompressed.
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
    // Every record is checked once, here, so nothing stored fails to decode: uncompressed
    // records in place, compressed ones (whatever the codec) streamed through a bounded buffer
    // (as Kafka's broker does), refused once they decompress past the cap every reader
    // applies. An unknown codec was refused by the header's validation. This is the one
    // CRC-32C pass over the batch on the leader: the log's append checks framing only.
    validate_records(header, batch, DECOMPRESSED_BYTES_MAX)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use strata_proto::batch::{BatchBuilder, BatchError, Compression};

    use super::*;

    fn batch(codec: Compression, value: &[u8]) -> Bytes {
        let mut builder = BatchBuilder::new().compression(codec);
        builder.push(1, Some(b"key"), Some(value), &[("h", Some(b"v"))]);
        builder.push(2, None, Some(value), &[]);
        builder.finish().freeze()
    }

    /// A batch in each of the five codecs is admitted, and admission leaves its bytes as the
    /// producer sent them.
    #[test]
    fn every_codec_is_admitted_unchanged() {
        for codec in Compression::ALL {
            let sent = batch(codec, &b"value ".repeat(100));
            let kept = sent.clone();
            validate_producer_batch(&sent).unwrap_or_else(|error| panic!("{codec}: {error}"));
            assert_eq!(sent, kept, "{codec}");
            let header = BatchHeader::validate(&sent).expect("valid");
            assert_eq!(header.compression(), Ok(codec));
        }
    }

    /// A compressed batch whose records expand past the cap is refused in every codec, with
    /// both sizes in the message.
    #[test]
    fn bombs_are_refused_in_every_codec() {
        let zeros = vec![0; DECOMPRESSED_BYTES_MAX / 2 + 1];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bomb = batch(codec, &zeros);
            assert!(
                bomb.len() <= BATCH_BYTES_MAX,
                "{codec}: {} bytes",
                bomb.len()
            );
            let error = validate_producer_batch(&bomb).expect_err("a bomb");
            assert!(
                matches!(
                    error,
                    PartitionError::Batch(BatchError::RecordsTooLarge {
                        limit_bytes: DECOMPRESSED_BYTES_MAX,
                        ..
                    })
                ),
                "{codec}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&DECOMPRESSED_BYTES_MAX.to_string()),
                "{message}"
            );
        }
    }

    /// Bytes flagged with a codec that are not that codec's framing are refused, naming the
    /// codec; an unknown codec (5) is refused naming the valid ones.
    #[test]
    fn bad_compressed_records_and_unknown_codecs_are_refused() {
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Zstd] {
            let mut bytes = batch(codec, b"v").to_vec();
            for byte in &mut bytes[strata_proto::batch::HEADER_BYTES..] {
                *byte ^= 0x5a;
            }
            fix_crc(&mut bytes);
            let error = validate_producer_batch(&Bytes::from(bytes)).expect_err("garbage");
            assert!(
                matches!(
                    error,
                    PartitionError::Batch(BatchError::Decompression { .. })
                ),
                "{codec}: {error}"
            );
            assert!(error.to_string().contains(codec.name()), "{error}");
        }
        let mut bytes = batch(Compression::None, b"v").to_vec();
        bytes[ATTRIBUTES_AT + 1] |= 5;
        fix_crc(&mut bytes);
        let error = validate_producer_batch(&Bytes::from(bytes)).expect_err("codec 5");
        assert!(
            matches!(
                error,
                PartitionError::Batch(BatchError::UnknownCompression { codec: 5 })
            ),
            "{error}"
        );
        assert!(error.to_string().contains("4 (zstd)"), "{error}");
    }

    /// Position of the attributes (the codec's bits are the low 3 of the second byte) and of
    /// the CRC-32C that covers them, in Kafka's batch layout.
    const ATTRIBUTES_AT: usize = 21;
    const CRC_AT: usize = 17;

    fn fix_crc(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}
