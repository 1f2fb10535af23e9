//! A client-streaming call's requests read straight from the HTTP/2 body, so that the bytes
//! fields of a message (a produced batch, a raft message with its entries) are slices of the
//! DATA frame they arrived in. Used by ProduceStream (`produce`) and by the peers' raft stream
//! (`peer::raft_route`).
//!
//! tonic's `Streaming` copies every DATA frame into a decode buffer of its own before it
//! decodes a message: one copy of every produced byte (5–6 % of a node's CPU taking 256 KiB
//! batches, `perf` in BENCHMARKS.md), and one more on each follower for every replicated byte.
//! h2 hands each frame over as a `Bytes` cut from its read buffer. Here the frames are kept as
//! they came (a queue of `Bytes`), a message is cut out of them at its gRPC prefix, and prost
//! decodes it from that queue: a `bytes` field that lies within one frame (the batch, which
//! Strata's producer sends as a body chunk of its own and so as a DATA frame of its own when it
//! fits `BROKER_FRAME_BYTES_MAX`) is a slice of it, not a copy. A field split across frames
//! (other clients cut the body where they like) is gathered into one buffer: a copy, as
//! before, and only then.
//!
//! What it keeps of tonic's reader, message for message: the size limit checked at the
//! prefix, before the message is buffered (OUT_OF_RANGE with tonic's wording, which
//! [`request_limit::oversized_request`](super::request_limit::oversized_request) rewrites);
//! INTERNAL for a compressed flag (compressed requests are refused up front with
//! [`refuse_compressed`]), a bad flag, a message that does not decode, or a body that ends
//! inside a message; a cancelled body is the end of the requests. The answer is encoded by
//! tonic's encoder as the generated server's ([`encoded_answer`]). Buffered bytes stay under one
//! message plus one frame: frames are read only while no whole message is buffered, and only
//! when the stream asks for its next request.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use tonic::codec::{Codec, EncodeBody, SingleMessageCompressionOverride};
use tonic::codegen::StdError;
use tonic::codegen::http::{self, HeaderValue};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// The gRPC message prefix: a compression flag and the message length (big-endian u32).
const GRPC_PREFIX_BYTES: usize = 5;

/// The refusal of a compressed request to `method`, when `request` is one: the methods read
/// with [`Requests`] (and Subscribe) take their requests uncompressed only (UNIMPLEMENTED, as
/// from tonic's generated servers, which have no compression enabled; no Strata client or node
/// compresses requests).
pub(crate) fn refuse_compressed<B>(
    method: &str,
    request: &http::Request<B>,
) -> Option<http::Response<tonic::body::Body>> {
    let encoding = request.headers().get("grpc-encoding")?;
    (encoding.as_bytes() != b"identity").then(|| {
        Status::unimplemented(format!(
            "{method} requests are accepted uncompressed only (grpc-encoding {encoding:?})"
        ))
        .into_http()
    })
}

/// The answer of a method served with [`Requests`]: `replies`, each encoded by tonic's encoder
/// with prost as the generated server encodes it, and the status that ended them in the
/// trailers.
pub(crate) fn encoded_answer<M, S>(replies: S) -> http::Response<tonic::body::Body>
where
    M: prost::Message + Send + 'static,
    S: Stream<Item = Result<M, Status>> + Send + 'static,
{
    // The codec's second type is what it would decode: nothing, here.
    let encoder = ProstCodec::<M, ()>::default().encoder();
    let body = EncodeBody::new_server(
        encoder,
        replies,
        None,
        SingleMessageCompressionOverride::default(),
        None,
    );
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The requests (messages `M`) of one client-streaming call, decoded from its body as they
/// arrive.
pub(crate) struct Requests<B, M> {
    body: Pin<Box<B>>,
    /// Received bytes not yet cut into messages.
    received: Chunks,
    /// The length of the message whose prefix was read, while its bytes arrive.
    pending: Option<usize>,
    /// Largest message accepted.
    limit: usize,
    /// The body ended (no more frames).
    body_ended: bool,
    /// The stream ended: its last item went out.
    done: bool,
    message: PhantomData<fn() -> M>,
}

impl<B, M: prost::Message + Default> Requests<B, M> {
    /// Reads the requests of `body`, refusing a message over `limit` bytes.
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Self {
            body: Box::pin(body),
            received: Chunks::default(),
            pending: None,
            limit,
            body_ended: false,
            done: false,
            message: PhantomData,
        }
    }

    /// The next whole message decoded, when its bytes are all here.
    fn next_message(&mut self) -> Result<Option<M>, Status> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(prefix) = self.received.prefix() else {
                    return Ok(None);
                };
                match prefix[0] {
                    0 => {}
                    1 => {
                        return Err(Status::internal(
                            "protocol error: received message with compressed-flag but no \
                             grpc-encoding was specified",
                        ));
                    }
                    flag => {
                        return Err(Status::internal(format!(
                            "protocol error: received message with invalid compression flag: \
                             {flag} (valid flags are 0 and 1), while sending request"
                        )));
                    }
                }
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                if len > self.limit {
                    // tonic's words, so that `oversized_request` recognizes them.
                    return Err(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {len} bytes, the \
                         limit is: {} bytes",
                        self.limit
                    )));
                }
                self.received.take(GRPC_PREFIX_BYTES);
                self.pending = Some(len);
                len
            }
        };
        if self.received.len < len {
            return Ok(None);
        }
        self.pending = None;
        let mut message = self.received.take(len);
        M::decode(&mut message)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

impl<B, M> Stream for Requests<B, M>
where
    B: http_body::Body,
    B::Error: Into<StdError>,
    M: prost::Message + Default,
{
    type Item = Result<M, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.next_message() {
                Ok(Some(request)) => return Poll::Ready(Some(Ok(request))),
                Ok(None) => {}
                Err(status) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            if this.body_ended {
                this.done = true;
                if this.received.len > 0 || this.pending.is_some() {
                    return Poll::Ready(Some(Err(Status::internal(
                        "Unexpected EOF decoding stream.",
                    ))));
                }
                return Poll::Ready(None);
            }
            match ready!(this.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers carry nothing a request stream reads.
                    if let Ok(mut data) = frame.into_data() {
                        this.received.push(data.copy_to_bytes(data.remaining()));
                    }
                }
                Some(Err(error)) => {
                    this.done = true;
                    let status = Status::from_error(error.into());
                    // The client cancelled the call: its requests end here (as tonic's).
                    if status.code() == Code::Cancelled {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(status)));
                }
                None => this.body_ended = true,
            }
        }
    }
}

/// Received bytes as the frames they came in.
#[derive(Default)]
struct Chunks {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    /// The first [`GRPC_PREFIX_BYTES`], when that many are here.
    fn prefix(&self) -> Option<[u8; GRPC_PREFIX_BYTES]> {
        if self.len < GRPC_PREFIX_BYTES {
            return None;
        }
        let mut prefix = [0; GRPC_PREFIX_BYTES];
        let mut filled = 0;
        for chunk in &self.chunks {
            let n = chunk.len().min(GRPC_PREFIX_BYTES - filled);
            prefix[filled..filled + n].copy_from_slice(&chunk[..n]);
            filled += n;
            if filled == GRPC_PREFIX_BYTES {
                break;
            }
        }
        Some(prefix)
    }

    /// Cuts off the first `n` bytes (at most `self.len`) as a message, without copying them.
    fn take(&mut self, n: usize) -> MessageBuf {
        debug_assert!(n <= self.len);
        let mut message = MessageBuf::default();
        while message.remaining < n {
            let Some(mut front) = self.chunks.pop_front() else {
                break;
            };
            let wanted = n - message.remaining;
            if front.len() > wanted {
                self.chunks.push_front(front.split_off(wanted));
            }
            message.remaining += front.len();
            message.chunks.push_back(front);
        }
        self.len -= message.remaining;
        message
    }
}

/// One message's bytes as the frames they came in: prost reads it as a [`Buf`], and a `bytes`
/// field within one frame is a slice of that frame.
#[derive(Default)]
struct MessageBuf {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Buf for MessageBuf {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |chunk| &chunk[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a message");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() > cnt {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.remaining, "a field longer than its message");
        if let Some(front) = self.chunks.front_mut()
            && front.len() >= len
        {
            let bytes = front.split_to(len);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            self.remaining -= len;
            return bytes;
        }
        // Split across frames: gathered into one buffer.
        let mut gathered = BytesMut::with_capacity(len);
        gathered.put(Buf::take(&mut *self, len));
        gathered.freeze()
    }
}

#[cfg(test)]
#[path = "request_frames_tests.rs"]
pub(crate) mod tests;
