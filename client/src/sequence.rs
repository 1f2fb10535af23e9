//! The idempotent producer's bookkeeping: its producer id and epoch, the next base sequence of
//! each partition, and stamping them into an encoded batch. Pure: no I/O, no clock.
//!
//! The rules are the protocol's (`InitProducerIdResponse`): the first batch a producer sends to
//! a partition has base sequence 0, each next one the previous base plus its record count,
//! wrapping at 2^31 to 0. Raising the epoch restarts every partition at 0, which is how a
//! producer gets past a batch that failed for good (the broker would otherwise refuse every
//! later batch with `OUT_OF_ORDER_SEQUENCE`, waiting for the lost sequence).

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use strata_proto::batch::{HEADER_BYTES, seal_producer};

/// Sequences wrap to 0 here.
const SEQUENCE_MODULUS: i64 = 1 << 31;

/// A producer id and epoch from `InitProducerId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
}

/// What one batch is stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) identity: Identity,
    pub(crate) base_sequence: i32,
}

/// The sequence after a batch of `record_count` records starting at `base_sequence`.
///
/// # Panics
/// When `base_sequence` is negative or `record_count` is not positive.
pub(crate) fn next_sequence(base_sequence: i32, record_count: i32) -> i32 {
    assert!(base_sequence >= 0);
    assert!(record_count > 0);
    let next = (i64::from(base_sequence) + i64::from(record_count)) % SEQUENCE_MODULUS;
    i32::try_from(next).expect("below 2^31")
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    identity: Option<Identity>,
    /// The base sequence of the next batch, by topic and partition; absent means 0.
    next: HashMap<(String, u32), i32>,
}

impl Sequencer {
    /// The current identity; `None` until `InitProducerId` answered, and again after the
    /// epochs ran out or the broker forgot the id.
    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// Starts over with a new identity from `InitProducerId`: every sequence restarts at 0.
    pub(crate) fn set_identity(&mut self, identity: Identity) {
        assert!(identity.producer_id >= 0);
        assert!(identity.producer_epoch >= 0);
        self.identity = Some(identity);
        self.next.clear();
    }

    /// Forgets the identity (the broker said it does not know it): the next batch waits for a
    /// new one.
    pub(crate) fn clear_identity(&mut self) {
        self.identity = None;
        self.next.clear();
    }

    /// The stamp of the next batch of `record_count` records to `topic`/`partition`, advancing
    /// that partition's sequence.
    ///
    /// # Panics
    /// Without an identity, or for a `record_count` that is not positive.
    pub(crate) fn assign(&mut self, topic: &str, partition: u32, record_count: i32) -> Stamp {
        let identity = self
            .identity
            .expect("a batch is stamped only with an identity");
        let base_sequence = match self.next.get_mut(&(topic.to_owned(), partition)) {
            Some(next) => {
                let base = *next;
                *next = next_sequence(base, record_count);
                base
            }
            None => {
                self.next.insert(
                    (topic.to_owned(), partition),
                    next_sequence(0, record_count),
                );
                0
            }
        };
        Stamp {
            identity,
            base_sequence,
        }
    }

    /// Raises the epoch by one and restarts every partition at sequence 0, after a batch
    /// failed for good. When the epoch is already at its maximum the identity is dropped
    /// instead, and the producer must ask for a new one. Without an identity, does nothing.
    pub(crate) fn bump_epoch(&mut self) {
        let Some(identity) = self.identity else {
            return;
        };
        self.next.clear();
        self.identity = identity
            .producer_epoch
            .checked_add(1)
            .map(|producer_epoch| Identity {
                producer_id: identity.producer_id,
                producer_epoch,
            });
    }
}

/// Writes `stamp` into an encoded batch (sealed or not: an idempotent producer's batches are
/// closed without their CRC) and computes its CRC, the one pass over the records after they
/// were written. Reuses the buffer when nothing else holds it, copies it otherwise (a batch
/// stamped again after it was sent under an older epoch).
///
/// # Panics
/// When `batch` is shorter than a batch header.
pub(crate) fn stamp_batch(batch: Bytes, stamp: Stamp) -> Bytes {
    assert!(batch.len() >= HEADER_BYTES);
    let mut batch = batch
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    let identity = stamp.identity;
    seal_producer(
        &mut batch,
        identity.producer_id,
        identity.producer_epoch,
        stamp.base_sequence,
    );
    batch.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::batch::{BatchBuilder, BatchHeader, Compression, decode_records};

    const IDENTITY: Identity = Identity {
        producer_id: 7,
        producer_epoch: 3,
    };

    fn sequencer() -> Sequencer {
        let mut sequencer = Sequencer::default();
        sequencer.set_identity(IDENTITY);
        sequencer
    }

    /// Each partition counts on its own from 0, by record count.
    #[test]
    fn sequences_per_partition() {
        let mut sequencer = sequencer();
        let table = [
            ("a", 0, 5, 0),
            ("a", 0, 3, 5),
            ("a", 1, 2, 0),
            ("b", 0, 1, 0),
            ("a", 0, 1, 8),
            ("a", 1, 4, 2),
        ];
        for (topic, partition, records, expected) in table {
            let stamp = sequencer.assign(topic, partition, records);
            assert_eq!(stamp.base_sequence, expected, "{topic}/{partition}");
            assert_eq!(stamp.identity, IDENTITY);
        }
    }

    /// Sequences wrap at 2^31 to 0, also in the middle of a batch.
    #[test]
    fn sequences_wrap() {
        assert_eq!(next_sequence(i32::MAX - 2, 3), 0);
        assert_eq!(next_sequence(i32::MAX - 2, 5), 2);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(0, i32::MAX), i32::MAX);
        let mut sequencer = sequencer();
        sequencer.next.insert(("t".into(), 0), i32::MAX - 1);
        assert_eq!(sequencer.assign("t", 0, 4).base_sequence, i32::MAX - 1);
        assert_eq!(sequencer.assign("t", 0, 1).base_sequence, 2);
    }

    /// Raising the epoch restarts every partition at 0 under the next epoch; at the last
    /// epoch the identity is dropped, and a new one restarts the sequences too.
    #[test]
    fn epoch_bump_resets_sequences() {
        let mut sequencer = sequencer();
        sequencer.assign("a", 0, 10);
        sequencer.assign("a", 1, 10);
        sequencer.bump_epoch();
        let bumped = Identity {
            producer_epoch: 4,
            ..IDENTITY
        };
        assert_eq!(sequencer.identity(), Some(bumped));
        for partition in [0, 1] {
            let stamp = sequencer.assign("a", partition, 1);
            assert_eq!(
                stamp,
                Stamp {
                    identity: bumped,
                    base_sequence: 0
                }
            );
        }
        sequencer.set_identity(Identity {
            producer_id: 7,
            producer_epoch: i16::MAX,
        });
        sequencer.bump_epoch();
        assert_eq!(sequencer.identity(), None);
        sequencer.bump_epoch();
        assert_eq!(sequencer.identity(), None);
        sequencer.set_identity(IDENTITY);
        assert_eq!(sequencer.assign("a", 0, 1).base_sequence, 0);
        sequencer.clear_identity();
        assert_eq!(sequencer.identity(), None);
    }

    /// Stamping an unsealed batch writes the three fields and a valid CRC, plain and in
    /// every codec, shared or not, and leaves the records alone; stamping it again (a new
    /// epoch) does too.
    #[test]
    fn stamp_writes_a_valid_header() {
        for compression in Compression::ALL {
            let builder = || {
                let mut builder = BatchBuilder::new().compression(compression);
                builder.push(1_000, Some(b"k"), Some(b"v"), &[("h", None)]);
                builder.push(1_001, None, Some(b"w"), &[]);
                builder
            };
            let batch = builder().finish_unsealed().freeze();
            let stamp = Stamp {
                identity: IDENTITY,
                base_sequence: 42,
            };
            // Shared, so the stamp copies it.
            let _kept = batch.clone();
            let sealed = builder().finish().freeze();
            let stamped = stamp_batch(batch, stamp);
            let header = BatchHeader::validate(&stamped).expect("valid after stamping");
            assert_eq!(header.producer_id, 7);
            assert_eq!(header.producer_epoch, 3);
            assert_eq!(header.base_sequence, 42);
            assert_eq!(header.record_count, 2);
            assert_eq!(
                decode_records(&stamped).expect("decodes"),
                decode_records(&sealed).expect("decodes")
            );
            let restamped = stamp_batch(
                stamped,
                Stamp {
                    identity: Identity {
                        producer_epoch: 4,
                        ..IDENTITY
                    },
                    base_sequence: 0,
                },
            );
            let header = BatchHeader::validate(&restamped).expect("valid after restamping");
            assert_eq!((header.producer_epoch, header.base_sequence), (4, 0));
        }
    }
}
