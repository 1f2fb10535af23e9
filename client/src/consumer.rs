//! Reading one partition: [`PartitionConsumer`] over a `Subscribe` stream with byte credit,
//! and the one-shot [`fetch`](crate::Client::fetch) and
//! [`list_offsets`](crate::Client::list_offsets).
//!
//! The broker sends raw batches; the client decodes them (zero-copy: keys and values share the
//! batch's buffer) and skips the records before the offset it asked for, since the first batch
//! may start earlier.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use strata_proto::batch::{
    BatchError, BatchHeader, Record, decode_batch, decode_records, split_batches,
};
use strata_proto::v1::subscribe_request::{Credit, Request, Start};
use strata_proto::v1::{
    FetchRequest, ListOffsetsRequest, StartPosition, SubscribeRequest, SubscribeResponse,
    start_position::Position,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cluster::{Cluster, broker_client};
use crate::error::{Error, Result};
use crate::retry::{Backoff, random_jitter};
use crate::routing::{Next, Route};

/// The protocol's default largest batch: a subscription's credit must cover two, so the broker
/// can always send the next batch while the client still holds up to half its credit.
pub const BATCH_BYTES_MAX: u64 = 1 << 20;

/// The smallest credit window (see [`ConsumerConfig::credit_bytes`]).
pub const CREDIT_BYTES_MIN: u64 = 2 * BATCH_BYTES_MAX;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first offset still stored.
    Earliest,
    /// The next offset to be written: only records produced from now on.
    Latest,
    /// This offset.
    Offset(u64),
    /// The first record whose timestamp (ms since the Unix epoch) is at or after this time;
    /// latest when every record is older.
    Timestamp(i64),
}

impl StartFrom {
    fn to_proto(self) -> StartPosition {
        let position = match self {
            StartFrom::Earliest => Position::Earliest(true),
            StartFrom::Latest => Position::Latest(true),
            StartFrom::Offset(offset) => Position::Offset(offset),
            StartFrom::Timestamp(timestamp_ms) => Position::TimestampMs(timestamp_ms),
        };
        StartPosition {
            position: Some(position),
        }
    }
}

/// A partition's offsets, as [`Client::list_offsets`](crate::Client::list_offsets) returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The offset the start ([`StartFrom`]) resolved to.
    pub offset: u64,
    /// The first offset still stored.
    pub log_start_offset: u64,
    /// The offset the next record will take; records below it are committed.
    pub high_watermark: u64,
}

/// How much a [`PartitionConsumer`] reads ahead, and how it recovers from a broken stream.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// Bytes of batches the broker may send beyond what the application has consumed. The
    /// consumer grants this much at the start and grants again, in steps of at least half of
    /// it, as the application consumes. At least [`CREDIT_BYTES_MIN`].
    pub credit_bytes: u64,
    /// How many times in a row the consumer subscribes again, from the next offset, after a
    /// retriable failure (a lost connection, a broker shutting down or no longer leading).
    /// A record received resets the count.
    pub resubscribe_max: u32,
    /// The delay before subscribing again.
    pub backoff: Backoff,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            credit_bytes: 4 << 20,
            resubscribe_max: 10,
            backoff: Backoff::default(),
        }
    }
}

/// Options of a one-shot fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// How long the broker may wait for records to arrive (at most 60 s).
    pub max_wait: Duration,
    /// The bytes of batches to wait for.
    pub min_bytes: u32,
    /// The most bytes of batches to return, and of records to decode from them (at least one
    /// batch comes back, even if larger; `next_offset` says where the next fetch starts).
    pub max_bytes: u32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 1 << 20,
        }
    }
}

/// The reply to a fetch.
#[derive(Debug, Clone)]
pub struct FetchedRecords {
    /// Records from the requested offset on, in offset order.
    pub records: Vec<Record>,
    /// The offset to fetch next.
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// Reads one partition in offset order over a `Subscribe` stream. The broker sends only as
/// many bytes as the consumer has granted; the consumer grants more only as the application
/// takes records, so a slow application slows the broker down instead of filling memory.
///
/// The subscription is on the partition's leader. When the stream fails with a retriable
/// error (the broker stopped leading, shut down, died, or the connection broke), the consumer
/// subscribes again from the next offset, on the leader the refusal names or fresh metadata
/// finds (up to [`ConsumerConfig::resubscribe_max`] times in a row), so the application sees
/// each record once, in order, across reconnections and leader changes.
///
/// Made by [`Client::subscribe`](crate::Client::subscribe). Dropping it ends the subscription.
#[derive(Debug)]
pub struct PartitionConsumer {
    cluster: Cluster,
    topic: String,
    partition: u32,
    config: ConsumerConfig,
    stream: Stream,
    /// Batches received and not yet decoded.
    batches: VecDeque<Bytes>,
    /// Records of the batch being consumed, not yet returned.
    records: VecDeque<Record>,
    /// Size of the batch `records` came from: its credit returns when the last is taken.
    current_batch_bytes: u64,
    /// Bytes consumed and not yet granted back.
    consumed_bytes: u64,
    next_offset: u64,
    /// The broker's next offset after the batches received so far; may pass the last record
    /// when the broker skipped control batches.
    received_next_offset: u64,
    high_watermark: u64,
    /// Retriable failures since the last message from the broker.
    failures: u32,
}

/// One `Subscribe` call.
#[derive(Debug)]
struct Stream {
    requests: mpsc::Sender<SubscribeRequest>,
    responses: tonic::Streaming<SubscribeResponse>,
    /// The broker it is open on.
    address: String,
}

/// Room in the request channel: one start, one credit, and slack for credits not yet read.
const REQUESTS_QUEUED_MAX: usize = 4;

pub(crate) async fn subscribe(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    from: StartFrom,
    config: ConsumerConfig,
) -> Result<PartitionConsumer> {
    if config.credit_bytes < CREDIT_BYTES_MIN {
        return Err(Error::InvalidArgument(format!(
            "credit_bytes {} is below the minimum of {CREDIT_BYTES_MIN}",
            config.credit_bytes
        )));
    }
    // Resolve the start first, so the consumer knows the exact offset to skip to in the first
    // batch (which may begin earlier).
    let offsets = list_offsets(cluster, topic, partition, from).await?;
    let start = offsets.offset;
    let retries = cluster.config().routing_retries;
    let stream = open(
        cluster,
        topic,
        partition,
        start,
        config.credit_bytes,
        retries,
    )
    .await?;
    Ok(PartitionConsumer {
        cluster: cluster.clone(),
        topic: topic.to_owned(),
        partition,
        config,
        stream,
        batches: VecDeque::new(),
        records: VecDeque::new(),
        current_batch_bytes: 0,
        consumed_bytes: 0,
        next_offset: start,
        received_next_offset: start,
        high_watermark: offsets.high_watermark,
        failures: 0,
    })
}

/// Starts a `Subscribe` call at `offset` with `credit_bytes` granted, on the partition's
/// leader (following `NOT_LEADER` hints; `retries` more attempts after other routing
/// failures).
async fn open(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    offset: u64,
    credit_bytes: u64,
    retries: u32,
) -> Result<Stream> {
    let first = [
        Request::Start(Start {
            topic: topic.to_owned(),
            partition,
            start: Some(StartFrom::Offset(offset).to_proto()),
            decode: false,
        }),
        Request::Credit(Credit {
            bytes: credit_bytes,
        }),
    ];
    // Each attempt needs its own request channel; the one of the attempt that succeeds stays.
    let mut requests = None;
    let route = Route::partition(topic, partition);
    let (responses, address) = cluster
        .call_at(
            &route,
            cluster.config().request_timeout,
            retries,
            |channel| {
                let (sender, receiver) = mpsc::channel(REQUESTS_QUEUED_MAX);
                for request in first.clone() {
                    sender
                        .try_send(SubscribeRequest {
                            request: Some(request),
                        })
                        .expect("a new channel has room for the first two requests");
                }
                requests = Some(sender);
                async move {
                    broker_client(channel)
                        .subscribe(ReceiverStream::new(receiver))
                        .await
                }
            },
        )
        .await?;
    Ok(Stream {
        requests: requests.expect("the call made an attempt"),
        responses,
        address,
    })
}

impl PartitionConsumer {
    /// The next record, waiting for one to be produced if need be. `Ok(None)` when the broker
    /// ended the subscription (the topic was deleted, or the broker shut down and did not
    /// come back within the resubscription attempts).
    ///
    /// Cancel safe: dropping the future loses no record.
    ///
    /// # Errors
    /// The broker's refusal (for example `OFFSET_OUT_OF_RANGE` when retention removed the
    /// records being read), a corrupt batch, or a retriable failure that outlasted
    /// [`ConsumerConfig::resubscribe_max`] attempts. After an error the consumer should be
    /// dropped; a new one can start from [`Self::next_offset`].
    pub async fn next(&mut self) -> Result<Option<Record>> {
        loop {
            if let Some(record) = self.next_received()? {
                return Ok(Some(record));
            }
            self.next_offset = self.next_offset.max(self.received_next_offset);
            let error = match self.stream.responses.message().await {
                Ok(Some(response)) => {
                    self.failures = 0;
                    self.receive(response);
                    continue;
                }
                Ok(None) => return Ok(None),
                Err(status) => Error::from_status(status),
            };
            self.resubscribe(error).await?;
        }
    }

    /// The next record if the broker has already sent it (decoding a received batch if need
    /// be), without waiting: `Ok(None)` when [`Self::next`] would wait. For readers that take
    /// everything that has arrived in one go.
    ///
    /// # Errors
    /// A received batch that does not decode, as [`Self::next`].
    pub fn next_received(&mut self) -> Result<Option<Record>> {
        loop {
            if let Some(record) = self.records.pop_front() {
                self.next_offset = record.offset + 1;
                if self.records.is_empty() {
                    self.consumed(self.current_batch_bytes);
                    self.current_batch_bytes = 0;
                }
                return Ok(Some(record));
            }
            let Some(batch) = self.batches.pop_front() else {
                return Ok(None);
            };
            self.load(batch)?;
        }
    }

    /// The offset of the next record [`Self::next`] returns: where to subscribe again after
    /// an error.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The partition's high watermark, as of the last message from the broker.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Replaces a failed stream with a new one from `next_offset`, after a backoff, while the
    /// failures are retriable and attempts remain; returns the error otherwise.
    async fn resubscribe(&mut self, mut error: Error) -> Result<()> {
        let route = Route::partition(&self.topic, self.partition);
        // Learn where the partition went from the stream's failure; a hint needs no backoff.
        // (A failed `open` learned from its own failure already.)
        let mut redirected = matches!(
            self.cluster
                .note_error(&route, &self.stream.address, &error),
            Next::Redirect(_)
        );
        loop {
            self.failures += 1;
            if !error.is_retriable() || self.failures > self.config.resubscribe_max {
                return Err(error);
            }
            let delay = if redirected {
                std::time::Duration::ZERO
            } else {
                self.config.backoff.delay(self.failures, random_jitter())
            };
            tracing::debug!(
                %error,
                topic = self.topic,
                partition = self.partition,
                next_offset = self.next_offset,
                ?delay,
                "subscribing again"
            );
            tokio::time::sleep(delay).await;
            // Batches already received are all at or past `next_offset`; the new stream
            // sends them again, under its own credit.
            self.batches.clear();
            self.consumed_bytes = 0;
            let opened = open(
                &self.cluster,
                &self.topic,
                self.partition,
                self.next_offset,
                self.config.credit_bytes,
                0,
            )
            .await;
            match opened {
                Ok(stream) => {
                    self.stream = stream;
                    return Ok(());
                }
                Err(next_error) => {
                    error = next_error;
                    redirected = false;
                }
            }
        }
    }

    fn receive(&mut self, response: SubscribeResponse) {
        self.high_watermark = self.high_watermark.max(response.high_watermark);
        self.received_next_offset = self.received_next_offset.max(response.next_offset);
        self.batches.extend(response.batches);
    }

    /// Decodes the first batch of a received element (a batch, or a run of whole batches)
    /// into `records`, keeping only records at or after `next_offset`, and puts the rest of
    /// the run back. One batch at a time: decoded records in memory stay within one batch's
    /// cap however far a run of compressed batches expands, and the records before a batch
    /// that does not decode are all delivered before its error. A batch's bytes count as
    /// consumed once its last record is taken.
    fn load(&mut self, mut run: Bytes) -> Result<()> {
        let header = match BatchHeader::parse(&run) {
            Ok(header) if header.total_bytes() <= run.len() => header,
            Ok(header) => {
                return Err(self.corrupt_at(
                    header.base_offset.max(0) as u64,
                    BatchError::Truncated {
                        needed: header.total_bytes(),
                        available: run.len(),
                    },
                ));
            }
            // The run starts at the first offset not yet delivered.
            Err(error) => return Err(self.corrupt_at(self.next_offset, error)),
        };
        let batch = run.split_to(header.total_bytes());
        if !run.is_empty() {
            self.batches.push_front(run);
        }
        let bytes = batch.len() as u64;
        if !header.is_control() {
            let next_offset = self.next_offset;
            let records = decode_records(&batch)
                .map_err(|error| self.corrupt_at(header.base_offset.max(0) as u64, error))?;
            self.records.extend(
                records
                    .into_iter()
                    .filter(|record| record.offset >= next_offset),
            );
        }
        if self.records.is_empty() {
            self.consumed(bytes);
        } else {
            self.current_batch_bytes = bytes;
        }
        Ok(())
    }

    fn corrupt_at(&self, offset: u64, error: BatchError) -> Error {
        Error::CorruptBatchAt {
            topic: self.topic.clone(),
            partition: self.partition,
            offset,
            error,
        }
    }

    /// Returns credit for consumed bytes once they add up to half the window, so credit
    /// messages stay few.
    fn consumed(&mut self, bytes: u64) {
        self.consumed_bytes += bytes;
        if self.consumed_bytes < self.config.credit_bytes / 2 {
            return;
        }
        let credit = SubscribeRequest {
            request: Some(Request::Credit(Credit {
                bytes: self.consumed_bytes,
            })),
        };
        // A full channel means the broker has not read earlier credit yet: keep counting and
        // grant it all next time. A closed one means the stream ended, which `next` reports.
        if self.stream.requests.try_send(credit).is_ok() {
            self.consumed_bytes = 0;
        }
    }
}

/// Decodes the records at or after `from` of a reply's `batches` (each element one or more
/// whole batches), one batch at a time, skipping control batches. Budgeted by decoded bytes,
/// as the broker budgets its own decoding (a few KiB of compressed batches may expand to many
/// MiB each): stops before the batch that would take the decoded records past
/// `decoded_bytes_max`, the first batch always included, and returns the offset it stopped at.
///
/// # Errors
/// [`Error::CorruptBatchAt`] naming the first batch that does not decode.
fn decode_budgeted(
    runs: Vec<Bytes>,
    from: u64,
    decoded_bytes_max: usize,
    topic: &str,
    partition: u32,
) -> Result<(Vec<Record>, Option<u64>)> {
    let mut records: Vec<Record> = Vec::new();
    let mut decoded_bytes = 0usize;
    let corrupt = |offset: u64, error: BatchError| Error::CorruptBatchAt {
        topic: topic.to_owned(),
        partition,
        offset,
        error,
    };
    for run in runs {
        for batch in split_batches(run) {
            let next = records.last().map_or(from, |record| record.offset + 1);
            let (header, batch) = batch.map_err(|error| corrupt(next, error))?;
            if header.is_control() {
                continue;
            }
            let base_offset = header.base_offset.max(0) as u64;
            let decoded = decode_batch(&batch).map_err(|error| corrupt(base_offset, error))?;
            let total = decoded_bytes.saturating_add(decoded.records_bytes);
            if !records.is_empty() && total > decoded_bytes_max {
                return Ok((records, Some(base_offset)));
            }
            decoded_bytes = total;
            records.extend(
                decoded
                    .records
                    .into_iter()
                    .filter(|record| record.offset >= from),
            );
        }
    }
    Ok((records, None))
}

pub(crate) async fn fetch(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    offset: u64,
    options: FetchOptions,
) -> Result<FetchedRecords> {
    let request = FetchRequest {
        topic: topic.to_owned(),
        partition,
        start: Some(StartFrom::Offset(offset).to_proto()),
        max_wait_ms: u32::try_from(options.max_wait.as_millis()).unwrap_or(u32::MAX),
        min_bytes: options.min_bytes,
        max_bytes: options.max_bytes,
        decode: false,
    };
    let limit = cluster.config().request_timeout + options.max_wait;
    let route = Route::partition(topic, partition);
    let reply = cluster
        .call(&route, limit, |channel| {
            let request = request.clone();
            async move { broker_client(channel).fetch(request).await }
        })
        .await?;
    let (records, stopped_at) = decode_budgeted(
        reply.batches,
        offset,
        options.max_bytes as usize,
        topic,
        partition,
    )?;
    Ok(FetchedRecords {
        records,
        next_offset: stopped_at.unwrap_or(reply.next_offset),
        high_watermark: reply.high_watermark,
        log_start_offset: reply.log_start_offset,
    })
}

pub(crate) async fn list_offsets(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
    from: StartFrom,
) -> Result<PartitionOffsets> {
    let request = ListOffsetsRequest {
        topic: topic.to_owned(),
        partition,
        position: Some(from.to_proto()),
    };
    let route = Route::partition(topic, partition);
    let reply = cluster
        .call(&route, cluster.config().request_timeout, |channel| {
            let request = request.clone();
            async move { broker_client(channel).list_offsets(request).await }
        })
        .await?;
    Ok(PartitionOffsets {
        offset: reply.offset,
        log_start_offset: reply.log_start_offset,
        high_watermark: reply.high_watermark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use strata_proto::batch::{BatchBuilder, ControlType, control_batch, stamp};

    fn batch(base_offset: u64, values: &[&str]) -> BytesMut {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(0, None, Some(value.as_bytes()), &[]);
        }
        let mut batch = builder.finish();
        stamp(&mut batch, base_offset, 1);
        batch
    }

    /// An element holding a run of batches decodes to all their records in order, skipping a
    /// control batch between them and records before the start; a single batch decodes as
    /// itself.
    #[test]
    fn runs_of_batches_decode() {
        let mut run = batch(10, &["a", "b"]);
        let mut control = control_batch(ControlType::LeaderNoop, 0, b"");
        stamp(&mut control, 12, 1);
        run.extend_from_slice(&control);
        run.extend_from_slice(&batch(12, &["c"]));
        let (records, stopped_at) =
            decode_budgeted(vec![run.freeze()], 11, usize::MAX, "t", 0).expect("a valid run");
        let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
        assert_eq!(offsets, [11, 12]);
        assert_eq!(records[1].value.as_deref(), Some(&b"c"[..]));
        assert_eq!(stopped_at, None);
        let (single, _) =
            decode_budgeted(vec![batch(0, &["x"]).freeze()], 0, 0, "t", 0).expect("one batch");
        assert_eq!(single.len(), 1);
    }

    /// Decoding stops before the batch that would pass the decoded budget, but always takes
    /// the first batch, and says where the next fetch starts.
    #[test]
    fn decoding_stops_at_the_decoded_budget() {
        let value = "v".repeat(1000);
        let runs = vec![
            batch(0, &[&value]).freeze(),
            batch(1, &[&value, &value]).freeze(),
            batch(3, &[&value]).freeze(),
        ];
        let (records, stopped_at) =
            decode_budgeted(runs.clone(), 0, 10, "t", 0).expect("valid batches");
        assert_eq!(records.len(), 1, "the first batch always comes");
        assert_eq!(stopped_at, Some(1));
        let (records, stopped_at) =
            decode_budgeted(runs.clone(), 0, 3100, "t", 0).expect("valid batches");
        assert_eq!(records.len(), 3);
        assert_eq!(stopped_at, Some(3));
        let (records, stopped_at) = decode_budgeted(runs, 0, 1 << 20, "t", 0).expect("valid");
        assert_eq!(records.len(), 4);
        assert_eq!(stopped_at, None);
    }

    /// A run cut short is a corrupt batch, not a panic or a silent loss.
    #[test]
    fn truncated_run_is_an_error() {
        let mut run = batch(0, &["a"]);
        run.extend_from_slice(&batch(1, &["b"]));
        let length = run.len();
        let cut = run.freeze().slice(..length - 1);
        let error = decode_budgeted(vec![cut], 0, usize::MAX, "t", 3).expect_err("truncated");
        assert!(
            matches!(
                error,
                Error::CorruptBatchAt {
                    partition: 3,
                    offset: 1,
                    ..
                }
            ),
            "{error}"
        );
    }
}
