//! What the producer, its accumulator and its sender task pass between them: the record to
//! send ([`ProducerRecord`]), the commands `send` and `flush` queue to the sender task, and a
//! record's way back ([`Delivery`] to [`DeliveryFuture`], resolving to [`RecordMetadata`]).
//! Below all three, so none of them depends on another for its vocabulary.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

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
#[derive(Debug)]
pub struct DeliveryFuture {
    reply: oneshot::Receiver<Result<RecordMetadata>>,
}

impl DeliveryFuture {
    pub(crate) fn new(reply: oneshot::Receiver<Result<RecordMetadata>>) -> Self {
        Self { reply }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply)
            .poll(context)
            .map(|reply| reply.unwrap_or(Err(Error::Closed)))
    }
}

/// What `send` and `flush` ask of the sender.
#[derive(Debug)]
pub(crate) enum Command {
    Record {
        record: ProducerRecord,
        partitions: u32,
        delivery: Delivery,
    },
    /// Close every open batch and reply once all of them, and all before, are finished.
    Flush(oneshot::Sender<()>),
}

/// One record's way back to its `DeliveryFuture`, holding the record's share of the buffer
/// until it resolves.
#[derive(Debug)]
pub(crate) struct Delivery {
    reply: oneshot::Sender<Result<RecordMetadata>>,
    _buffer: OwnedSemaphorePermit,
}

impl Delivery {
    pub(crate) fn new(
        reply: oneshot::Sender<Result<RecordMetadata>>,
        buffer: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            reply,
            _buffer: buffer,
        }
    }

    /// Hands `result` to the record's [`DeliveryFuture`] and frees its share of the buffer.
    pub(crate) fn resolve(self, result: Result<RecordMetadata>) {
        // The application may have dropped the future: nobody to tell.
        let _ = self.reply.send(result);
    }
}
