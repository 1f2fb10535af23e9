//! Subscriptions: a partition pushed to a consumer as it grows, paced by credit.
//!
//! The consumer grants credit in bytes; the subscription sends whole batches (or, decoding,
//! their records) while the credit covers them, and otherwise waits for more credit or for the
//! high watermark to move. It ends when the consumer's credit stream ends with no credit left,
//! when the consumer stops listening, or after sending an error (a read that failed, a message
//! the frontend refused). Frontends turn their wire's messages into the credit stream and the
//! [`Chunk`]s back into replies; the pacing lives here, once.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};

use super::records::{ReplyRecord, decode_records};
use super::{Broker, BrokerError};
use crate::partition::{Fetched, StartFrom};

/// Largest chunk a subscription sends in one message (bytes of stored batches).
pub const SUBSCRIBE_CHUNK_BYTES_MAX: u64 = 1 << 20;
/// Chunks waiting for the frontend to send them; the subscription waits beyond this.
const SUBSCRIBE_CHUNKS_QUEUED_MAX: usize = 16;

/// One message of a subscription: raw stored batches, or their records when decoding.
#[derive(Debug)]
pub struct Chunk<R> {
    /// Runs of whole stored batches (empty when decoding).
    pub batches: Vec<Bytes>,
    /// Decoded records at or after the previous chunk's `next_offset` (empty when not
    /// decoding).
    pub records: Vec<R>,
    /// Where the next chunk starts.
    pub next_offset: u64,
    pub high_watermark: u64,
}

/// What a subscription yields: a chunk, or the error that ended it (the last item).
pub type ChunkResult<R> = Result<Chunk<R>, BrokerError>;

impl Broker {
    /// Starts a subscription to `topic`/`partition` at `start` (see [`Broker::resolve_at`])
    /// and returns its chunks. `credits` yields credit grants in bytes, or an error the
    /// subscription sends as its last item; when it ends with no credit left, so does the
    /// subscription. With `decode`, chunks carry records in `F`'s reply form and credit pays
    /// for their reply bytes, so what waits in the queue is bounded by what the consumer
    /// granted (plus one batch), however far the batches expand. Dropping the receiver stops
    /// the subscription.
    ///
    /// # Errors
    /// As [`Broker::resolve_at`], before anything is sent; later errors end the chunks.
    pub fn subscribe<F, S>(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        start: StartFrom,
        decode: bool,
        credits: S,
    ) -> Result<mpsc::Receiver<ChunkResult<F::Record>>, BrokerError>
    where
        F: ReplyRecord,
        S: Stream<Item = Result<u64, BrokerError>> + Send + Unpin + 'static,
    {
        let (replica, offset) = self.resolve_at(topic, partition, start)?;
        let broker = Arc::clone(self);
        let high_watermark = replica.high_watermark.clone();
        let read = move |offset, max_bytes| broker.read(&replica, offset, max_bytes);
        let (replies, chunks) = mpsc::channel(SUBSCRIBE_CHUNKS_QUEUED_MAX);
        // Counted in `strata_subscriptions` while its loop runs.
        let open = self.metrics.data.subscription();
        tokio::spawn(async move {
            run::<F, _, _>(
                Source {
                    read,
                    high_watermark,
                },
                offset,
                decode,
                credits,
                replies,
            )
            .await;
            drop(open);
        });
        Ok(chunks)
    }
}

/// Where a subscription reads: committed batches from an offset within a byte budget (see
/// [`Broker::read`]), and the high watermark to wait on.
struct Source<R> {
    read: R,
    high_watermark: watch::Receiver<u64>,
}

/// The subscription's loop; see [`Broker::subscribe`].
async fn run<F, R, S>(
    mut source: Source<R>,
    mut offset: u64,
    decode: bool,
    mut credits: S,
    replies: mpsc::Sender<ChunkResult<F::Record>>,
) where
    F: ReplyRecord,
    R: Fn(u64, usize) -> Result<Fetched, BrokerError>,
    S: Stream<Item = Result<u64, BrokerError>> + Unpin,
{
    let mut credit_bytes: u64 = 0;
    let mut credits_open = true;
    loop {
        // Send while credit covers whole batches.
        if credit_bytes > 0 {
            let budget = credit_bytes.min(SUBSCRIBE_CHUNK_BYTES_MAX) as usize;
            match (source.read)(offset, budget) {
                Ok(fetched) => {
                    let size: u64 = fetched.batches.iter().map(|b| b.len() as u64).sum();
                    if size > 0 && size <= credit_bytes {
                        let chunk = if decode {
                            decode_records::<F>(&fetched.batches, offset, budget).map(|decoded| {
                                fetched
                                    .traffic
                                    .sent_records(decoded.records.len(), decoded.decoded_bytes);
                                credit_bytes -= (decoded.decoded_bytes as u64).min(credit_bytes);
                                offset = decoded.stopped_at.unwrap_or(fetched.next_offset);
                                Chunk {
                                    batches: Vec::new(),
                                    records: decoded.records,
                                    next_offset: offset,
                                    high_watermark: fetched.high_watermark,
                                }
                            })
                        } else {
                            fetched.traffic.sent_batches(&fetched.batches);
                            credit_bytes -= size;
                            offset = fetched.next_offset;
                            Ok(Chunk {
                                batches: fetched.batches,
                                records: Vec::new(),
                                next_offset: offset,
                                high_watermark: fetched.high_watermark,
                            })
                        };
                        let failed = chunk.is_err();
                        if replies.send(chunk).await.is_err() || failed {
                            return;
                        }
                        continue;
                    }
                }
                Err(error) => {
                    let _ = replies.send(Err(error)).await;
                    return;
                }
            }
        }
        // Nothing to send: wait for credit or new data.
        let seen = *source.high_watermark.borrow();
        tokio::select! {
            credit = credits.next(), if credits_open => match credit {
                Some(Ok(bytes)) => credit_bytes = credit_bytes.saturating_add(bytes),
                Some(Err(error)) => {
                    let _ = replies.send(Err(error)).await;
                    return;
                }
                None => {
                    credits_open = false;
                    if credit_bytes == 0 {
                        return;
                    }
                }
            },
            // The watch's borrow is dropped inside the block: it must not live across an await.
            changed = async { source.high_watermark.wait_for(|hw| *hw > seen).await.map(|_| ()) }, if credit_bytes > 0 => {
                if changed.is_err() {
                    return;
                }
            }
            () = replies.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::mpsc::error::TryRecvError;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    use super::*;
    use crate::broker::records::tests::{Offsets, stored_batch};

    /// Longest a test waits for a chunk that must come.
    const CHUNK_WAIT: Duration = Duration::from_secs(10);

    /// A partition in memory: batch `i` holds offset `i` (one record of four bytes).
    struct FakeLog {
        batches: Mutex<Vec<Bytes>>,
        high_watermark: watch::Sender<u64>,
    }

    impl FakeLog {
        fn new(batches: u64, high_watermark: u64) -> Arc<Self> {
            Arc::new(Self {
                batches: Mutex::new((0..batches).map(|i| stored_batch(i, &[b"four"])).collect()),
                high_watermark: watch::channel(high_watermark).0,
            })
        }

        fn batch_bytes(&self) -> u64 {
            self.batches.lock().expect("test lock")[0].len() as u64
        }

        /// Reads as the partition log does: at least one batch, then whole batches within
        /// `max_bytes`, never at or past the high watermark.
        fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetched, BrokerError> {
            let high_watermark = *self.high_watermark.borrow();
            if offset > high_watermark {
                return Err(BrokerError::OffsetOutOfRange {
                    requested: offset,
                    log_start: 0,
                    high_watermark,
                });
            }
            let stored = self.batches.lock().expect("test lock");
            let mut batches = Vec::new();
            let mut size = 0;
            for batch in &stored[offset as usize..high_watermark as usize] {
                if !batches.is_empty() && size + batch.len() > max_bytes {
                    break;
                }
                size += batch.len();
                batches.push(batch.clone());
            }
            Ok(Fetched {
                next_offset: offset + batches.len() as u64,
                batches,
                high_watermark,
                log_start_offset: 0,
                traffic: Default::default(),
            })
        }
    }

    type Credits = mpsc::UnboundedSender<Result<u64, BrokerError>>;

    fn start(
        log: &Arc<FakeLog>,
        decode: bool,
    ) -> (Credits, mpsc::Receiver<ChunkResult<(u64, usize)>>) {
        let (credits, granted) = mpsc::unbounded_channel();
        let (replies, chunks) = mpsc::channel(SUBSCRIBE_CHUNKS_QUEUED_MAX);
        let reader = Arc::clone(log);
        let source = Source {
            read: move |offset, max_bytes| reader.read(offset, max_bytes),
            high_watermark: log.high_watermark.subscribe(),
        };
        let credits_stream = UnboundedReceiverStream::new(granted);
        tokio::spawn(run::<Offsets, _, _>(
            source,
            0,
            decode,
            credits_stream,
            replies,
        ));
        (credits, chunks)
    }

    /// Asserts that the subscription has nothing to send: on the current-thread test runtime,
    /// each yield lets its task run up to its next wait.
    async fn assert_quiet(chunks: &mut mpsc::Receiver<ChunkResult<(u64, usize)>>, why: &str) {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        match chunks.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("{why}: expected nothing, got {other:?}"),
        }
    }

    async fn next_chunk(
        chunks: &mut mpsc::Receiver<ChunkResult<(u64, usize)>>,
    ) -> Chunk<(u64, usize)> {
        tokio::time::timeout(CHUNK_WAIT, chunks.recv())
            .await
            .expect("a chunk within the deadline")
            .expect("the subscription is open")
            .expect("a chunk, not an error")
    }

    /// Nothing is sent without credit; a batch goes out only once the credit covers all of
    /// it; at the high watermark with credit left, the subscription wakes when it moves.
    #[tokio::test]
    async fn credit_paces_whole_batches_and_a_moving_high_watermark_wakes_the_subscription() {
        let log = FakeLog::new(3, 2);
        let batch_bytes = log.batch_bytes();
        let (credits, mut chunks) = start(&log, false);
        assert_quiet(&mut chunks, "no credit granted").await;

        credits.send(Ok(batch_bytes)).expect("open");
        let first = next_chunk(&mut chunks).await;
        assert_eq!(
            (first.batches.len(), first.next_offset, first.high_watermark),
            (1, 1, 2)
        );
        assert_quiet(&mut chunks, "credit spent on the first batch").await;

        credits.send(Ok(batch_bytes / 2)).expect("open");
        assert_quiet(&mut chunks, "credit covers half a batch").await;
        credits.send(Ok(batch_bytes)).expect("open");
        let second = next_chunk(&mut chunks).await;
        assert_eq!((second.batches.len(), second.next_offset), (1, 2));

        credits.send(Ok(2 * batch_bytes)).expect("open");
        assert_quiet(&mut chunks, "at the high watermark").await;
        log.high_watermark.send_replace(3);
        let third = next_chunk(&mut chunks).await;
        assert_eq!(
            (third.batches.len(), third.next_offset, third.high_watermark),
            (1, 3, 3)
        );
    }

    /// Decoding, credit pays for the records' reply bytes, not the stored ones: a credit of one
    /// stored batch leaves room for another only once its decoded bytes are granted again.
    #[tokio::test]
    async fn decoded_chunks_spend_credit_by_reply_bytes() {
        let log = FakeLog::new(2, 2);
        let batch_bytes = log.batch_bytes();
        let (credits, mut chunks) = start(&log, true);
        credits.send(Ok(batch_bytes)).expect("open");
        let first = next_chunk(&mut chunks).await;
        assert_eq!(
            (first.records, first.batches.len(), first.next_offset),
            (vec![(0, 4)], 0, 1)
        );
        assert_quiet(
            &mut chunks,
            "credit short of a stored batch by its reply bytes",
        )
        .await;
        credits.send(Ok(4)).expect("open");
        let second = next_chunk(&mut chunks).await;
        assert_eq!((second.records, second.next_offset), (vec![(1, 4)], 2));
    }

    /// A refused credit message is sent as the last item; credit that ends with none left
    /// ends the subscription.
    #[tokio::test]
    async fn a_refused_message_or_the_end_of_credit_ends_the_subscription() {
        let log = FakeLog::new(1, 1);
        let (credits, mut chunks) = start(&log, false);
        let refusal = BrokerError::InvalidArgument("only credit".to_string());
        credits.send(Err(refusal.clone())).expect("open");
        let ended = tokio::time::timeout(CHUNK_WAIT, chunks.recv())
            .await
            .expect("within the deadline");
        assert_eq!(ended.map(|item| item.map(|_| ())), Some(Err(refusal)));
        let closed = tokio::time::timeout(CHUNK_WAIT, chunks.recv()).await;
        assert!(matches!(closed, Ok(None)), "ended after the error");

        let (credits, mut chunks) = start(&log, false);
        drop(credits);
        let closed = tokio::time::timeout(CHUNK_WAIT, chunks.recv()).await;
        assert!(matches!(closed, Ok(None)), "no credit and no more to come");
    }
}
