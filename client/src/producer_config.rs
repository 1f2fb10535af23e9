//! The producer's configuration ([`ProducerConfig`]), its batch limits and their validation.

use std::time::Duration;

use strata_proto::batch::{Compression, HEADER_BYTES};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::retry::Backoff;

/// The broker's default batch limit.
const BROKER_BATCH_BYTES_MAX: usize = 1 << 20;

/// The default batch limit: the broker's, less room for any codec's framing on incompressible
/// data (xerial snappy adds the most, about 340 bytes to a full batch; 16 KiB is ample) so a
/// compressed batch never ends up above the broker's limit.
pub const BATCH_BYTES_MAX_DEFAULT: usize = BROKER_BATCH_BYTES_MAX - (16 << 10);

/// How a producer batches, sends and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
    /// The largest batch before compression, header included. At most the broker's limit
    /// (1 MiB by default); records larger than this are refused with
    /// [`Error::RecordTooLarge`].
    pub batch_bytes_max: usize,
    /// The bytes of records accepted and not yet acknowledged; `send` waits while this is
    /// used up. At least `batch_bytes_max`.
    ///
    /// A producer that sends faster than the cluster stores keeps it full, and each batch
    /// then waits behind all the others: with the default and batches of 133 KB, about 240
    /// of them, each sent some 150 ms after it was written and long out of the CPU's cache.
    /// Such a producer gets the same throughput from room for its batches in flight and one
    /// more per partition, for about two thirds of the CPU (BENCHMARKS.md); the default
    /// suits bursts, which it absorbs without making `send` wait.
    pub buffer_bytes_max: usize,
    /// Batches sent and not yet answered, across all partitions. At least 1.
    pub max_in_flight: usize,
    /// How many times a batch is sent again after a retriable error
    /// ([`Error::is_retriable`]).
    pub retries: u32,
    /// The delay between attempts.
    pub backoff: Backoff,
    /// How long to wait for the reply to a batch; after that the stream is abandoned and its
    /// batches are retried on a new one.
    pub request_timeout: Duration,
    /// How long a batch may take from closing to its acknowledgement, retries included; after
    /// that its records fail with the last error.
    pub delivery_timeout: Duration,
    /// Any of Kafka's codecs (`None`, `Gzip`, `Snappy`, `Lz4`, `Zstd`): the producer
    /// compresses, the broker stores the batch as it is.
    pub compression: Compression,
    /// Stamp batches with a producer id and sequences so retries are not stored twice, and
    /// keep each partition's batches in order (see the module documentation). Needs a broker
    /// that implements `InitProducerId`: without one, every send fails with its refusal.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            buffer_bytes_max: 32 << 20,
            max_in_flight: 16,
            retries: 10,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            compression: Compression::None,
            idempotent: true,
        }
    }
}

impl ProducerConfig {
    /// Checks every bound the fields document.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field, its value and what is valid.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidArgument(reason));
        // Room for a header and a small record.
        let batch_bytes_min = HEADER_BYTES + 64;
        if !(batch_bytes_min..=BROKER_BATCH_BYTES_MAX * 64).contains(&self.batch_bytes_max) {
            return invalid(format!(
                "batch_bytes_max {} is outside {batch_bytes_min}..={}",
                self.batch_bytes_max,
                BROKER_BATCH_BYTES_MAX * 64
            ));
        }
        if self.buffer_bytes_max < self.batch_bytes_max
            || self.buffer_bytes_max > Semaphore::MAX_PERMITS
        {
            return invalid(format!(
                "buffer_bytes_max {} must be at least batch_bytes_max {} and at most {}",
                self.buffer_bytes_max,
                self.batch_bytes_max,
                Semaphore::MAX_PERMITS
            ));
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are valid and each bound is checked.
    #[test]
    fn config_validation() {
        assert!(ProducerConfig::default().validate().is_ok());
        let invalid = [
            ProducerConfig {
                batch_bytes_max: 10,
                ..ProducerConfig::default()
            },
            ProducerConfig {
                buffer_bytes_max: 1000,
                ..ProducerConfig::default()
            },
            ProducerConfig {
                max_in_flight: 0,
                ..ProducerConfig::default()
            },
        ];
        for config in invalid {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    /// Every codec is accepted.
    #[test]
    fn every_codec_is_valid() {
        for compression in Compression::ALL {
            let config = ProducerConfig {
                compression,
                ..ProducerConfig::default()
            };
            assert!(config.validate().is_ok(), "{compression}");
        }
    }

    /// The default batch limit leaves room for each codec's framing on incompressible data.
    #[test]
    fn default_batch_fits_the_broker_after_any_codec() {
        for compression in Compression::ALL {
            let batch = incompressible_batch(compression);
            assert!(
                batch.len() <= BROKER_BATCH_BYTES_MAX,
                "{compression}: {} bytes",
                batch.len()
            );
        }
    }

    /// A batch of random bytes as large as the default limit allows, compressed.
    fn incompressible_batch(compression: Compression) -> bytes::BytesMut {
        let mut builder = strata_proto::batch::BatchBuilder::new().compression(compression);
        let mut value = vec![0u8; 1000];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        while builder.size_bytes() + 1100 < BATCH_BYTES_MAX_DEFAULT {
            for byte in &mut value {
                // xorshift: incompressible bytes.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            builder.push(0, None, Some(&value), &[]);
        }
        builder.finish()
    }
}
