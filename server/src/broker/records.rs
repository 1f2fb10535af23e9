//! Records as plain values at the broker's edge, both ways: building one batch from the records
//! a simple client sends ([`ProduceInput::new`]), and decoding stored batches into records for
//! a reply ([`decode_records`]), budgeted by what a record costs in the frontend's reply
//! ([`ReplyRecord`]). Frontends translate their wire types to and from these values; the batch
//! format itself is [`batch`]'s.

use std::future::Future;

use bytes::Bytes;

use super::{Broker, BrokerError, Produced, Target};
use crate::partition::{BATCH_BYTES_MAX, validate_producer_batch};
use crate::storage::batch::{self, BatchBuilder, decode_batch, split_batches};

/// Most records a simple client may send in one produce.
pub const RECORDS_PER_REQUEST_MAX: usize = 100_000;

/// A record a simple client sends for the broker to encode into a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch; 0 means "now" (the broker stamps it).
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<batch::Header>,
}

/// What a produce carries: a batch the producer encoded, or records for the broker to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// One RecordBatch v2, as the producer encoded (and perhaps compressed) it.
    Batch(Bytes),
    /// Records for the broker to encode into one batch.
    Records(Vec<Record>),
}

/// A produce request, validated: its batch passed [`validate_producer_batch`] and may be
/// submitted to [`Broker::produce`](super::Broker::produce) or
/// [`Broker::start_produce`](super::Broker::start_produce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceInput {
    pub topic: String,
    pub target: Target,
    pub batch: Bytes,
}

impl ProduceInput {
    /// Checks a produce request and builds its batch: records are encoded with `now_ms` (the
    /// broker's clock) for records that carry no time (see [`build_batch`]), then the topic must be named
    /// and the batch must pass [`validate_producer_batch`], in that order (the first problem is
    /// the one reported).
    ///
    /// # Errors
    /// [`BrokerError::InvalidArgument`] (no records, too many, no topic, a batch kind producers
    /// may not send), [`BrokerError::RecordTooLarge`], [`BrokerError::CorruptBatch`].
    pub fn new(
        topic: String,
        target: Target,
        payload: Payload,
        now_ms: i64,
    ) -> Result<Self, BrokerError> {
        let batch = match payload {
            Payload::Batch(batch) => batch,
            Payload::Records(records) => build_batch(&records, now_ms)?,
        };
        if topic.is_empty() {
            return Err(BrokerError::InvalidArgument("topic is empty".to_string()));
        }
        validate_producer_batch(&batch)?;
        Ok(Self {
            topic,
            target,
            batch,
        })
    }
}

impl Broker {
    /// Waits for room in the produce budget (see [`Broker::produce_permit`]), then queues the
    /// batch now, in call order, and returns a future of its commit (see
    /// [`Broker::start_produce`]). A frontend that pipelines produces calls this in request
    /// order, so batches for one partition keep their order, and awaits the futures
    /// concurrently.
    ///
    /// # Errors
    /// As [`Broker::start_produce`]; [`BrokerError::ShuttingDown`] while waiting for room.
    pub async fn submit_produce(
        &self,
        input: ProduceInput,
    ) -> Result<impl Future<Output = Result<Produced, BrokerError>> + Send + use<>, BrokerError>
    {
        let room = self.produce_permit(input.batch.len()).await?;
        self.start_produce(&input.topic, input.target, input.batch, room)
    }
}

/// Encodes `records` into one uncompressed batch; a record whose timestamp is 0 gets `now_ms`.
///
/// # Errors
/// [`BrokerError::InvalidArgument`] for no records or more than [`RECORDS_PER_REQUEST_MAX`];
/// [`BrokerError::RecordTooLarge`] as soon as the batch passes [`BATCH_BYTES_MAX`].
pub fn build_batch(records: &[Record], now_ms: i64) -> Result<Bytes, BrokerError> {
    if records.is_empty() {
        return Err(BrokerError::InvalidArgument(
            "records is empty: send at least one record".to_string(),
        ));
    }
    if records.len() > RECORDS_PER_REQUEST_MAX {
        return Err(BrokerError::InvalidArgument(format!(
            "{} records in one request: at most {RECORDS_PER_REQUEST_MAX}",
            records.len()
        )));
    }
    let mut builder = BatchBuilder::new();
    for record in records {
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_deref()))
            .collect();
        let timestamp = if record.timestamp_ms == 0 {
            now_ms
        } else {
            record.timestamp_ms
        };
        builder.push(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        // Checked per record so a huge request stops early instead of encoding everything.
        if builder.size_bytes() > BATCH_BYTES_MAX {
            return Err(BrokerError::RecordTooLarge {
                size_bytes: builder.size_bytes(),
                limit_bytes: BATCH_BYTES_MAX,
            });
        }
    }
    Ok(builder.finish().freeze())
}

/// How a frontend's reply carries a decoded record, and what one costs in that reply: the
/// decoding budget ([`decode_records`]) and a subscription's credit count these bytes.
pub trait ReplyRecord: Send + 'static {
    /// The record as the reply carries it.
    type Record: Send + 'static;
    /// Converts a decoded record (its key, value and headers share the stored buffer).
    fn from_decoded(record: batch::Record) -> Self::Record;
    /// The bytes `record` takes in the reply.
    fn reply_bytes(record: &Self::Record) -> usize;
}

/// Records decoded from stored batches for one reply.
#[derive(Debug)]
pub struct DecodedRun<R> {
    pub records: Vec<R>,
    /// Where the next read starts when decoding stopped before the last batch; `None` when
    /// every batch was decoded.
    pub stopped_at: Option<u64>,
    /// Reply bytes of `records` (see [`ReplyRecord::reply_bytes`]).
    pub decoded_bytes: usize,
}

/// Decodes stored batches into records at or after `from`, one batch at a time, skipping
/// control batches. Budgeted by DECODED bytes, not stored ones (a small LZ4 batch can expand
/// 250 times): it stops before the batch that would take the records' reply size past
/// `decoded_bytes_max`, except that the first batch always goes in so every reply makes
/// progress. A reply is thus at most `max(decoded_bytes_max, one batch)`, and one batch
/// decodes to at most [`DECOMPRESSED_BYTES_MAX`](crate::storage::batch::DECOMPRESSED_BYTES_MAX)
/// bytes of records (the codec's cap).
///
/// # Errors
/// [`BrokerError::Storage`] when stored data is not whole batches or a batch does not decode
/// (validation on produce makes both a sign of damage).
pub fn decode_records<F: ReplyRecord>(
    batches: &[Bytes],
    from: u64,
    decoded_bytes_max: usize,
) -> Result<DecodedRun<F::Record>, BrokerError> {
    let mut run = DecodedRun {
        records: Vec::new(),
        stopped_at: None,
        decoded_bytes: 0,
    };
    let mut next_offset = from;
    for stored in batches {
        for split in split_batches(stored.clone()) {
            let (header, batch) = split.map_err(|e| {
                BrokerError::Storage(format!(
                    "stored data after offset {next_offset} is not a whole batch: {e}"
                ))
            })?;
            if header.is_control() {
                continue;
            }
            let decoded = decode_batch(&batch).map_err(|e| {
                BrokerError::Storage(format!(
                    "stored batch at offset {} does not decode: {e}",
                    header.base_offset
                ))
            })?;
            let records: Vec<F::Record> = decoded
                .records
                .into_iter()
                .filter(|r| r.offset >= from)
                .map(F::from_decoded)
                .collect();
            let size: usize = records.iter().map(F::reply_bytes).sum();
            let total = run.decoded_bytes.saturating_add(size);
            if !run.records.is_empty() && total > decoded_bytes_max {
                run.stopped_at = Some(next_offset);
                return Ok(run);
            }
            run.decoded_bytes = total;
            run.records.extend(records);
            next_offset = (header.base_offset as u64).saturating_add(header.offset_count());
        }
    }
    Ok(run)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A reply format for tests: a record is its offset and costs its value's length.
    pub(crate) struct Offsets;

    impl ReplyRecord for Offsets {
        type Record = (u64, usize);
        fn from_decoded(record: batch::Record) -> (u64, usize) {
            (record.offset, record.value.map_or(0, |v| v.len()))
        }
        fn reply_bytes(record: &(u64, usize)) -> usize {
            record.1
        }
    }

    fn record(timestamp_ms: i64, value: &[u8]) -> Record {
        Record {
            timestamp_ms,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::copy_from_slice(value)),
            headers: vec![batch::Header {
                key: "h".to_string(),
                value: None,
            }],
        }
    }

    /// A batch stamped at `base_offset` holding one record per value.
    pub(crate) fn stored_batch(base_offset: u64, values: &[&[u8]]) -> Bytes {
        let records: Vec<Record> = values.iter().map(|v| record(1, v)).collect();
        let mut batch = build_batch(&records, 0).expect("small batch").to_vec();
        batch::stamp(&mut batch, base_offset, 1);
        Bytes::from(batch)
    }

    /// Records become one valid batch holding them in order; a record without a timestamp
    /// gets the time passed in, one with a timestamp keeps it.
    #[test]
    fn records_build_one_batch_stamped_with_now_where_unset() {
        let records = vec![record(0, b"a"), record(7, b"b")];
        let batch = build_batch(&records, 1_000).expect("valid records");
        validate_producer_batch(&batch).expect("a built batch passes producer validation");
        let decoded = decode_batch(&batch).expect("decodes");
        let seen: Vec<(i64, Option<Bytes>)> = decoded
            .records
            .iter()
            .map(|r| (r.timestamp, r.value.clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1_000, Some(Bytes::from_static(b"a"))),
                (7, Some(Bytes::from_static(b"b")))
            ]
        );
        assert_eq!(decoded.records[0].key, Some(Bytes::from_static(b"k")));
        assert_eq!(decoded.records[0].headers, records[0].headers);
    }

    /// No records, too many records and records past the batch limit are refused with the
    /// limits in the message; a request with no topic is refused after its records are built.
    #[test]
    fn bad_produce_input_is_refused_with_what_is_valid() {
        let empty = build_batch(&[], 0).expect_err("no records");
        assert!(matches!(empty, BrokerError::InvalidArgument(ref m) if m.contains("at least one")));

        let many = vec![Record::default(); RECORDS_PER_REQUEST_MAX + 1];
        let too_many = build_batch(&many, 0).expect_err("too many records");
        assert!(
            matches!(too_many, BrokerError::InvalidArgument(ref m) if m.contains(&RECORDS_PER_REQUEST_MAX.to_string())),
            "{too_many:?}"
        );

        let huge = vec![record(1, &vec![0; BATCH_BYTES_MAX])];
        let too_large = build_batch(&huge, 0).expect_err("over the batch limit");
        assert!(
            matches!(too_large, BrokerError::RecordTooLarge { limit_bytes, .. } if limit_bytes == BATCH_BYTES_MAX),
            "{too_large:?}"
        );

        let no_topic = ProduceInput::new(
            String::new(),
            Target::Any,
            Payload::Records(vec![record(1, b"a")]),
            0,
        )
        .expect_err("no topic");
        assert_eq!(
            no_topic,
            BrokerError::InvalidArgument("topic is empty".to_string())
        );
        let records_first =
            ProduceInput::new(String::new(), Target::Any, Payload::Records(vec![]), 0)
                .expect_err("no records and no topic");
        assert!(
            matches!(records_first, BrokerError::InvalidArgument(ref m) if m.contains("records"))
        );

        let corrupt = ProduceInput::new(
            "t".to_string(),
            Target::Partition(0),
            Payload::Batch(Bytes::from_static(b"not a batch")),
            0,
        )
        .expect_err("not a batch");
        assert!(
            matches!(corrupt, BrokerError::CorruptBatch(_)),
            "{corrupt:?}"
        );
    }

    /// Decoding starts at `from` inside a batch, stops before the batch that would pass the
    /// budget (saying where the next read starts), yet always takes the first batch.
    #[test]
    fn decoding_is_budgeted_by_reply_bytes_and_always_makes_progress() {
        let run = Bytes::from(
            [
                stored_batch(0, &[b"aaaa", b"bbbb"]),
                stored_batch(2, &[b"cccc"]),
            ]
            .concat(),
        );
        let all = decode_records::<Offsets>(std::slice::from_ref(&run), 1, 100).expect("decodes");
        assert_eq!(all.records, vec![(1, 4), (2, 4)]);
        assert_eq!((all.stopped_at, all.decoded_bytes), (None, 8));

        let first_only =
            decode_records::<Offsets>(std::slice::from_ref(&run), 0, 9).expect("decodes");
        assert_eq!(first_only.records, vec![(0, 4), (1, 4)]);
        assert_eq!(first_only.stopped_at, Some(2));

        let over_budget =
            decode_records::<Offsets>(std::slice::from_ref(&run), 0, 1).expect("decodes");
        assert_eq!(
            over_budget.records.len(),
            2,
            "the first batch always goes in"
        );

        let damaged = decode_records::<Offsets>(&[run.slice(..run.len() - 1)], 0, 100)
            .expect_err("a torn run");
        assert!(matches!(damaged, BrokerError::Storage(_)), "{damaged:?}");
    }
}
