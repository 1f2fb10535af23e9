//! The idempotent producers of the simulation and the checks on what they stored: each sends
//! one batch at a time and re-sends it, as it is, to any node until one acknowledges it (a
//! refusal saying the partition does not know it starts a new epoch, as a client does); no
//! producer record may be stored twice, and each producer's records stay in the order sent.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{GROUP, Simulation};
use crate::partition::producers::SequenceError;
use crate::replication::handle::{Command, typed};
use crate::replication::{Committed, ProposeError};
use crate::storage::batch::BatchBuilder;

/// Idempotent producers per simulation.
pub(super) const PRODUCERS: usize = 3;

/// An idempotent producer: one batch at a time, re-sent as it is until acknowledged.
pub(super) struct Producer {
    pub(super) id: i64,
    pub(super) epoch: i16,
    /// The sequence of the batch being sent.
    pub(super) sequence: i32,
    /// The batch being sent and its records' values, once built.
    pub(super) batch: Option<(Vec<u8>, Vec<Bytes>)>,
}

/// What a pending proposal carried.
pub(super) enum Sent {
    /// A batch of no producer: its one record's value.
    Anonymous(Bytes),
    /// A copy of producer `producer`'s batch at `epoch` and `sequence`.
    Idempotent {
        producer: usize,
        epoch: i16,
        sequence: i32,
        values: Vec<Bytes>,
    },
}

impl Sent {
    fn values(&self) -> Vec<Bytes> {
        match self {
            Sent::Anonymous(value) => vec![value.clone()],
            Sent::Idempotent { values, .. } => values.clone(),
        }
    }
}

impl Simulation {
    /// Hands node `id` a copy of a random producer's current batch (built first if the last
    /// one was acknowledged), without running its Ready round.
    pub(super) fn produce(&mut self, id: u64) {
        let at = self.rng.below(PRODUCERS as u64) as usize;
        let count = 1 + self.rng.below(3) as i32;
        let producer = &mut self.producers[at];
        let (data, values) = producer
            .batch
            .get_or_insert_with(|| {
                let mut builder =
                    BatchBuilder::new().producer(producer.id, producer.epoch, producer.sequence);
                let values: Vec<Bytes> = (0..count)
                    .map(|i| {
                        Bytes::from(format!(
                            "p{}e{}s{}",
                            producer.id,
                            producer.epoch,
                            producer.sequence + i
                        ))
                    })
                    .collect();
                for value in &values {
                    builder.push(1, None, Some(value), &[]);
                }
                (builder.finish().to_vec(), values)
            })
            .clone();
        let sent = Sent::Idempotent {
            producer: at,
            epoch: producer.epoch,
            sequence: producer.sequence,
            values,
        };
        let Some(driver) = self.node(id).driver.as_mut() else {
            return;
        };
        let (reply, receiver) = oneshot::channel();
        driver.handle(Command::Propose {
            group: GROUP,
            data: data.into(),
            reply,
        });
        self.proposals.push((receiver, sent));
    }

    pub(super) fn collect_acknowledgements(&mut self) {
        let mut still = Vec::new();
        for (mut receiver, sent) in std::mem::take(&mut self.proposals) {
            match receiver.try_recv().map(typed::<(), SequenceError>) {
                Ok(Ok(committed)) => self.acknowledge(&committed, &sent),
                Ok(Err(ProposeError::Refused(SequenceError::OutOfOrder {
                    expected: 0, ..
                }))) => {
                    // The partition does not know the producer (its batches never reached
                    // this leader's log): as a client does, start a new epoch at 0.
                    if let Sent::Idempotent {
                        producer,
                        epoch,
                        sequence,
                        ..
                    } = sent
                    {
                        let producer = &mut self.producers[producer];
                        if (producer.epoch, producer.sequence) == (epoch, sequence) {
                            producer.epoch += 1;
                            producer.sequence = 0;
                            producer.batch = None;
                        }
                    }
                }
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {}
                Err(oneshot::error::TryRecvError::Empty) => still.push((receiver, sent)),
            }
        }
        self.proposals = still;
    }

    /// An acknowledgement: every record of the batch is committed at the offsets it names
    /// (a retried copy is answered with the original's); the producer moves on.
    pub(super) fn acknowledge(&mut self, committed: &Committed<()>, sent: &Sent) {
        let values = sent.values();
        let base = committed.next_offset - values.len() as u64;
        for (offset, value) in (base..).zip(&values) {
            match self.acknowledged.insert(offset, value.clone()) {
                Some(previous) if previous != *value => self.fail(format!(
                    "offset {offset} acknowledged twice: {previous:?} and {value:?}"
                )),
                _ => {}
            }
            self.record(offset, value, "acknowledged");
        }
        if let Sent::Idempotent {
            producer,
            epoch,
            sequence,
            ..
        } = *sent
        {
            let producer = &mut self.producers[producer];
            if (producer.epoch, producer.sequence) == (epoch, sequence) {
                producer.sequence += values.len() as i32;
                producer.batch = None;
            }
        }
    }

    /// Records that `offset` is committed with `value`; two different values at one offset
    /// fail, and so does a producer's record at two offsets.
    pub(super) fn record(&mut self, offset: u64, value: &Bytes, source: &str) {
        match self.committed.get(&offset) {
            Some(known) if known != value => self.fail(format!(
                "offset {offset} holds {known:?} and, per {source}, {value:?}"
            )),
            Some(_) => {}
            None => {
                self.committed.insert(offset, value.clone());
            }
        }
        if value.starts_with(b"p")
            && let Some(first) = self.producer_records.insert(value.clone(), offset)
            && first != offset
        {
            self.fail(format!(
                "{value:?} is stored twice: at {first} and, per {source}, at {offset}"
            ));
        }
    }

    /// Each producer's records in the log are in the order it sent them: epochs never go
    /// back, and sequences grow within an epoch.
    pub(super) fn check_producer_order(&self, log: &[(u64, Bytes)]) {
        let mut last: HashMap<String, (i64, i64)> = HashMap::new();
        for (offset, value) in log {
            let Some(rest) = value.strip_prefix(b"p") else {
                continue;
            };
            let text = String::from_utf8_lossy(rest);
            let parsed = text.split_once('e').and_then(|(producer, rest)| {
                let (epoch, sequence) = rest.split_once('s')?;
                Some((
                    producer.to_string(),
                    epoch.parse().ok()?,
                    sequence.parse().ok()?,
                ))
            });
            let Some((producer, epoch, sequence)) = parsed else {
                self.fail(format!("unreadable producer record {value:?} at {offset}"));
            };
            if let Some(before) = last.insert(producer, (epoch, sequence))
                && before >= (epoch, sequence)
            {
                self.fail(format!(
                    "{value:?} at {offset} comes after epoch and sequence {before:?}"
                ));
            }
        }
    }
}
