//! What the producer, its accumulator and its sender task pass between them: the record to
//! send ([`ProducerRecord`]) and a record's way back: each batch's [`BatchResolver`] resolves
//! the [`DeliveryFuture`]s of its records to a [`RecordMetadata`] or an error. Below all
//! three, so none of them depends on another for its vocabulary.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::error::{Error, Result};

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// An explicit partition; without one, the key's hash picks it, and without a key the
    /// sticky round-robin does.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the Unix epoch; `send` stamps the current time when `None`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Adds a header with a null value.
    pub fn null_header(mut self, key: impl Into<String>) -> Self {
        self.headers.push((key.into(), None));
        self
    }

    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: u64,
}

/// Resolves when the broker has committed (replicated and fsynced) the record, or when it
/// failed for good. Dropping it does not cancel the send.
///
/// The records of a batch share one outcome: a send costs no allocation and no
/// channel of its own, and a batch's reply resolves all of its records at once.
#[derive(Debug)]
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    /// The record's place in its batch: its offset is the batch's base offset plus this.
    index: u64,
    /// Where this future's waker is in the outcome's list, once registered.
    slot: Option<usize>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.outcome.lock();
        match &mut *state {
            Outcome::Stored {
                partition,
                base_offset,
            } => Poll::Ready(Ok(RecordMetadata {
                partition: *partition,
                offset: *base_offset + this.index,
            })),
            Outcome::Failed(error) => Poll::Ready(Err(error.clone())),
            Outcome::Pending(wakers) => {
                match this.slot {
                    Some(slot) if wakers[slot].will_wake(context.waker()) => {}
                    Some(slot) => wakers[slot].clone_from(context.waker()),
                    None => {
                        this.slot = Some(wakers.len());
                        wakers.push(context.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
impl DeliveryFuture {
    /// Its result, if it has one yet, without waiting.
    pub(crate) fn try_result(&mut self) -> Option<Result<RecordMetadata>> {
        let waker = Waker::noop();
        match Pin::new(self).poll(&mut Context::from_waker(waker)) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        }
    }
}

/// What became of a batch, shared by the [`DeliveryFuture`]s of its records and resolved
/// once, through the batch's [`BatchResolver`].
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    state: Mutex<Outcome>,
}

#[derive(Debug)]
enum Outcome {
    /// The wakers of the futures waiting: at most one per record of the batch.
    Pending(Vec<Waker>),
    Stored {
        partition: u32,
        base_offset: u64,
    },
    Failed(Error),
}

impl Default for Outcome {
    fn default() -> Self {
        Self::Pending(Vec::new())
    }
}

impl BatchOutcome {
    fn lock(&self) -> MutexGuard<'_, Outcome> {
        // Nothing panics while holding it; a poisoned state is still a consistent one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side of a batch's outcome, kept with the batch until it resolves. A batch
/// dropped unresolved (the sender task gone) fails its records with [`Error::Closed`], so
/// no future waits forever.
#[derive(Debug, Default)]
pub(crate) struct BatchResolver {
    outcome: Arc<BatchOutcome>,
}

impl BatchResolver {
    /// The future of the record at `index` in the batch.
    pub(crate) fn delivery(&self, index: usize) -> DeliveryFuture {
        DeliveryFuture {
            outcome: Arc::clone(&self.outcome),
            index: index as u64,
            slot: None,
        }
    }

    /// The broker stored the batch from `base_offset` on.
    pub(crate) fn stored(self, partition: u32, base_offset: u64) {
        self.resolve(Outcome::Stored {
            partition,
            base_offset,
        });
    }

    /// The batch failed for good.
    pub(crate) fn failed(self, error: Error) {
        self.resolve(Outcome::Failed(error));
    }

    fn resolve(&self, outcome: Outcome) {
        let previous = std::mem::replace(&mut *self.outcome.lock(), outcome);
        if let Outcome::Pending(wakers) = previous {
            for waker in wakers {
                waker.wake();
            }
        }
    }
}

impl Drop for BatchResolver {
    fn drop(&mut self) {
        let pending = matches!(*self.outcome.lock(), Outcome::Pending(_));
        if pending {
            self.resolve(Outcome::Failed(Error::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Counter {
        fn count(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn poll(future: &mut DeliveryFuture, waker: &Arc<Counter>) -> Poll<Result<RecordMetadata>> {
        let waker = Waker::from(Arc::clone(waker));
        Pin::new(future).poll(&mut Context::from_waker(&waker))
    }

    /// Each record resolves to the batch's base offset plus its place; every waiting future
    /// is woken once, with the waker it last polled with.
    #[test]
    fn a_stored_batch_resolves_every_record() {
        let resolver = BatchResolver::default();
        let mut first = resolver.delivery(0);
        let mut third = resolver.delivery(2);
        let (old, new, other) = (Arc::default(), Arc::default(), Arc::default());
        assert!(poll(&mut first, &old).is_pending());
        assert!(
            poll(&mut first, &new).is_pending(),
            "a new waker replaces the old"
        );
        assert!(poll(&mut third, &other).is_pending());
        resolver.stored(4, 100);
        assert_eq!((old.count(), new.count(), other.count()), (0, 1, 1));
        let stored = |partition, offset| Poll::Ready(Some(RecordMetadata { partition, offset }));
        assert_eq!(poll(&mut first, &new).map(Result::ok), stored(4, 100));
        assert_eq!(poll(&mut third, &new).map(Result::ok), stored(4, 102));
    }

    /// A failed batch fails every record with its error; one dropped unresolved (the sender
    /// task gone) fails them as closed, waking whoever waits.
    #[test]
    fn failed_and_abandoned_batches_fail_their_records() {
        let resolver = BatchResolver::default();
        let mut record = resolver.delivery(0);
        resolver.failed(Error::Timeout { after_ms: 7 });
        let waker = Arc::default();
        assert!(matches!(
            poll(&mut record, &waker),
            Poll::Ready(Err(Error::Timeout { after_ms: 7 }))
        ));

        let resolver = BatchResolver::default();
        let mut record = resolver.delivery(0);
        assert!(poll(&mut record, &waker).is_pending());
        drop(resolver);
        assert_eq!(waker.count(), 1);
        assert!(matches!(
            poll(&mut record, &waker),
            Poll::Ready(Err(Error::Closed))
        ));
    }
}
