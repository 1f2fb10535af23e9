//! The sending half of the peer transport: one task per peer ([`send_to_peer`]) that connects,
//! streams batches of what the driver queued for that peer, and reconnects with backoff. The
//! stream's body ([`Outgoing`]) takes messages straight from the peer's queue, at most
//! [`BATCH_MESSAGES_MAX`] or [`BATCH_BYTES_SOFT_MAX`] of entries a batch; only the newest
//! stream's body takes from it ([`PeerQueue`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::prelude::Message;
use tokio::sync::mpsc;
use tonic::Request;

use super::codec::{self, OutgoingBatch, RaftStreamCodec};
use super::{PEER_MESSAGE_BYTES_MAX, Queued, Transport};
use crate::security::tls::{Tls, peer_endpoint};

/// Most messages in one batch on the wire.
pub const BATCH_MESSAGES_MAX: usize = 512;
/// A batch takes no more messages once their entries reach this many bytes. With raft's
/// appends of up to 1 MiB each (a single entry up to the 1 MiB batch limit), a batch stays
/// far below what the receiver decodes ([`PEER_MESSAGE_BYTES_MAX`]). Without this bound, a
/// leader catching a follower up queued hundreds of 1 MiB appends, one batch carried them
/// all, the receiver refused the frame and dropped the stream, and every append in it was
/// lost: the follower fell back to one probe per heartbeat (about 3 entries of 256 KiB per
/// 100 ms).
pub const BATCH_BYTES_SOFT_MAX: usize = 16 << 20;
// A batch holds at most its soft limit plus one message (one entry of up to the 1 MiB batch
// limit, or 1 MiB of smaller ones), with room to spare below what the peer decodes.
const _: () = assert!(BATCH_BYTES_SOFT_MAX + (2 << 20) < PEER_MESSAGE_BYTES_MAX);

/// A stream with nothing to carry for this long sends an empty batch (a keepalive).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// Reconnection backoff, doubling from the first to the last.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One peer's queue, shared by its sender task and the body of each stream it opens. Only the
/// newest stream's body takes from it: an older body that hyper still polls after a reconnect
/// ends at its next poll ([`Outgoing`]), instead of taking messages and the queue's one waker
/// slot from the new stream, which would then hear of new messages only at its keepalive.
struct PeerQueue {
    receiver: mpsc::Receiver<Queued>,
    /// Bumped by each new stream body, which keeps the value it set.
    generation: u64,
}

type SharedQueue = Arc<Mutex<PeerQueue>>;

/// One peer's sender: connects, streams batches of what is queued, reconnects with backoff.
pub(super) async fn send_to_peer(
    transport: std::sync::Weak<Transport>,
    to: u64,
    queue: mpsc::Receiver<Queued>,
) {
    // Shared with each connection's stream, which takes the messages straight from it; the
    // lock is only ever held for a poll (one stream at a time uses it).
    let queue = Arc::new(Mutex::new(PeerQueue {
        receiver: queue,
        generation: 0,
    }));
    let drain = |queue: &Mutex<PeerQueue>| {
        let mut queue = queue.lock().expect("peer queue lock poisoned");
        while queue.receiver.try_recv().is_ok() {}
    };
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        let Some(strong) = transport.upgrade() else {
            return;
        };
        let from = strong.node_id;
        let address = strong.address(to);
        let Some(address) = address else {
            drop(strong);
            // Unknown so far: drop what is queued (it is stale by the time we learn the
            // address) and look again.
            drain(&queue);
            tokio::time::sleep(RECONNECT_BACKOFF_MAX).await;
            continue;
        };
        let tls = strong.tls.clone();
        drop(strong);
        match stream_to(tls.as_deref(), to, &address, from, &queue).await {
            Ok(()) => return, // the queue closed: the transport is gone.
            Err(error) => {
                tracing::debug!(to, %address, %error, "raft stream to peer failed; reconnecting");
                // Messages queued while disconnected are mostly stale; raft resends.
                drain(&queue);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}

/// Streams batches to node `to` at `address` until the stream fails (error) or the queue
/// closes (Ok). The TLS material is read at each connection, so a rotation applies to the
/// next one.
async fn stream_to(
    tls: Option<&Tls>,
    to: u64,
    address: &str,
    from: u64,
    queue: &SharedQueue,
) -> Result<(), String> {
    let endpoint = peer_endpoint(tls, to, address)?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    // The generated client would encode prost's `RaftBatch`; this one writes raft's messages
    // into the frame directly (same bytes on the wire, see `codec`).
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|error| format!("peer not ready: {error}"))?;
    let mut request = Request::new(Outgoing::new(from, queue.clone()));
    request
        .extensions_mut()
        .insert(tonic::GrpcMethod::new("strata.v1.Peer", "Raft"));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(codec::RAFT_PATH);
    let outcome = client
        .client_streaming(request, path, RaftStreamCodec)
        .await;
    if queue
        .lock()
        .expect("peer queue lock poisoned")
        .receiver
        .is_closed()
    {
        return Ok(());
    }
    Err(match outcome {
        Ok(_) => "the peer closed the stream".to_string(),
        Err(status) => status.to_string(),
    })
}

/// The body of one raft stream. Each poll takes whatever the driver queued (up to
/// [`BATCH_MESSAGES_MAX`]) as one batch, straight from the queue: no task in between, hyper's
/// body task polls it whenever the connection can take more, and the codec encodes it at once.
/// After [`KEEPALIVE_INTERVAL`] with nothing to carry it yields an empty batch, so the peer
/// keeps hearing from this node (liveness) while all their groups are quiet. It ends when the
/// queue closes (the transport is gone).
struct Outgoing {
    from: u64,
    queue: SharedQueue,
    /// The queue's generation this body set: once another body set a newer one, this one
    /// ends (see [`PeerQueue`]).
    generation: u64,
    keepalive: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// When the last batch went out: the keepalive is due [`KEEPALIVE_INTERVAL`] after it.
    /// (Moving the timer at every batch would cost a timer-wheel update each.)
    last_sent: tokio::time::Instant,
}

impl Outgoing {
    fn new(from: u64, queue: SharedQueue) -> Self {
        let now = tokio::time::Instant::now();
        let generation = {
            let mut shared = queue.lock().expect("peer queue lock poisoned");
            shared.generation += 1;
            shared.generation
        };
        Self {
            from,
            queue,
            generation,
            keepalive: Box::pin(tokio::time::sleep_until(now + KEEPALIVE_INTERVAL)),
            last_sent: now,
        }
    }
}

impl futures::Stream for Outgoing {
    type Item = OutgoingBatch;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<OutgoingBatch>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        let mut shared = this.queue.lock().expect("peer queue lock poisoned");
        if shared.generation != this.generation {
            // A newer stream serves the queue.
            return Poll::Ready(None);
        }
        let queue = &mut shared.receiver;
        match queue.poll_recv(context) {
            Poll::Ready(Some(first)) => {
                let mut bytes = entry_bytes(&first.1);
                let mut messages = vec![first];
                while messages.len() < BATCH_MESSAGES_MAX && bytes < BATCH_BYTES_SOFT_MAX {
                    match queue.try_recv() {
                        Ok(message) => {
                            bytes += entry_bytes(&message.1);
                            messages.push(message);
                        }
                        Err(_) => break,
                    }
                }
                this.last_sent = tokio::time::Instant::now();
                Poll::Ready(Some(OutgoingBatch::new(this.from, messages)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                drop(shared);
                loop {
                    if this.keepalive.as_mut().poll(context).is_pending() {
                        return Poll::Pending;
                    }
                    let due = this.last_sent + KEEPALIVE_INTERVAL;
                    let now = tokio::time::Instant::now();
                    if due > now {
                        // Batches went out since the timer was set: wait for the rest.
                        this.keepalive.as_mut().reset(due);
                        continue;
                    }
                    this.keepalive.as_mut().reset(now + KEEPALIVE_INTERVAL);
                    this.last_sent = now;
                    return Poll::Ready(Some(OutgoingBatch::new(this.from, Vec::new())));
                }
            }
        }
    }
}

/// The bytes of a message's entries and snapshot, what makes a batch large (the rest is a few
/// dozen bytes per message).
pub(super) fn entry_bytes(message: &Message) -> usize {
    let entries: usize = message
        .entries
        .iter()
        .map(|entry| entry.data.len() + entry.context.len())
        .sum();
    entries
        + message
            .snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.data.len())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::super::QUEUE_MESSAGES_MAX;
    use super::*;

    fn heartbeat() -> Queued {
        let message = Message {
            msg_type: raft::prelude::MessageType::MsgHeartbeat,
            from: 1,
            to: 2,
            term: 1,
            ..Message::default()
        };
        (7, message)
    }

    fn shared(receiver: mpsc::Receiver<Queued>) -> SharedQueue {
        Arc::new(Mutex::new(PeerQueue {
            receiver,
            generation: 0,
        }))
    }

    /// After a reconnect, the old stream's body ends at its next poll and takes nothing: the
    /// new body gets every message (and the queue's waker).
    #[tokio::test]
    async fn an_older_stream_body_gives_the_queue_up_to_the_newer() {
        let (sender, receiver) = mpsc::channel(QUEUE_MESSAGES_MAX);
        let queue = shared(receiver);
        let mut old = Outgoing::new(1, queue.clone());
        sender.try_send(heartbeat()).expect("room in the queue");
        assert_eq!(old.next().await.map(|batch| batch.len()), Some(1));
        let mut new = Outgoing::new(1, queue);
        sender.try_send(heartbeat()).expect("room in the queue");
        assert!(old.next().await.is_none(), "the old body ends");
        let limit = KEEPALIVE_INTERVAL / 2;
        let batch = tokio::time::timeout(limit, new.next())
            .await
            .expect("the new body yields at once");
        assert_eq!(batch.map(|batch| batch.len()), Some(1));
    }

    /// The stream's body takes what is queued, at most [`BATCH_MESSAGES_MAX`] a batch; with
    /// nothing queued it yields an empty batch (a keepalive), never before
    /// [`KEEPALIVE_INTERVAL`]; it ends when the queue closes.
    #[tokio::test]
    async fn outgoing_batches_what_is_queued_then_keeps_alive_then_ends() {
        let (sender, receiver) = mpsc::channel(QUEUE_MESSAGES_MAX);
        for _ in 0..BATCH_MESSAGES_MAX + 88 {
            sender.try_send(heartbeat()).expect("room in the queue");
        }
        let mut outgoing = Outgoing::new(1, shared(receiver));
        let limit = KEEPALIVE_INTERVAL * 20;
        let mut next = async || {
            tokio::time::timeout(limit, outgoing.next())
                .await
                .expect("the stream yields within its limit")
        };
        assert_eq!(
            next().await.map(|batch| batch.len()),
            Some(BATCH_MESSAGES_MAX)
        );
        assert_eq!(next().await.map(|batch| batch.len()), Some(88));
        let quiet_since = tokio::time::Instant::now();
        assert_eq!(next().await.map(|batch| batch.len()), Some(0));
        assert!(quiet_since.elapsed() >= KEEPALIVE_INTERVAL - Duration::from_millis(1));
        sender.try_send(heartbeat()).expect("room in the queue");
        assert_eq!(next().await.map(|batch| batch.len()), Some(1));
        drop(sender);
        assert!(next().await.is_none(), "the queue closed: the stream ends");
    }

    /// A batch stops taking appends once their entries reach [`BATCH_BYTES_SOFT_MAX`], so a
    /// leader catching a follower up never sends a frame the peer refuses (it decodes at most
    /// [`PEER_MESSAGE_BYTES_MAX`]); the rest goes in the next batches, nothing is dropped.
    #[tokio::test]
    async fn outgoing_batches_stay_under_the_peers_frame_limit() {
        let (sender, receiver) = mpsc::channel(QUEUE_MESSAGES_MAX);
        let entry = raft::prelude::Entry {
            data: bytes::Bytes::from(vec![7u8; 1 << 20]),
            ..raft::prelude::Entry::default()
        };
        let appends = 100;
        for _ in 0..appends {
            let (group, mut message) = heartbeat();
            message.msg_type = raft::prelude::MessageType::MsgAppend;
            message.entries = vec![entry.clone()].into();
            sender
                .try_send((group, message))
                .expect("room in the queue");
        }
        drop(sender);
        let mut outgoing = Outgoing::new(1, shared(receiver));
        let mut carried = 0;
        while let Some(batch) = outgoing.next().await {
            let bytes = batch.entry_bytes();
            assert!(
                bytes <= BATCH_BYTES_SOFT_MAX + (1 << 20),
                "a batch of {bytes} bytes"
            );
            carried += batch.len();
        }
        assert_eq!(carried, appends, "every append is carried, in some batch");
    }
}
