//! The Subscribe method served beside tonic's generated router (see `direct_routes`), its
//! replies framed by hand so that stored batches reach h2 as the `Bytes` they were read as
//! (slices of a segment's memory map): no copy, and no encode buffer kept per stream.
//!
//! Why: tonic's encoder copies each reply into a `BytesMut` that its stream keeps for as long as
//! it lives, grown to the largest reply it ever sent. A subscription that replayed 1 MiB chunks
//! and then waited at the end of its partition kept about 1 MiB of heap, so a thousand caught-up
//! consumers cost the node a gigabyte. Here a reply is a run of `Bytes`: the gRPC message
//! prefix and the protobuf keys and lengths (a small buffer made for that reply), each batch of
//! at least [`COPY_BATCH_BYTES_MAX`] as it is stored, and nothing stays once h2 has written it.
//! Decoded replies (records) are encoded whole by prost into a buffer of their own, freed once
//! written. The bytes on the wire are exactly prost's encoding of the same
//! [`pb::SubscribeResponse`] (a test checks it), so every gRPC client reads them unchanged.
//!
//! What it gives up: tonic's request compression (a compressed Subscribe request is refused
//! with UNIMPLEMENTED; no Strata client compresses requests) and its `grpc-timeout` handling
//! (a subscription is a stream that lasts as long as the consumer wants it).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use strata_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::codegen::StdError;
use tonic::codegen::http::{self, HeaderMap, HeaderValue};

use super::Service;
use super::request_frames::refuse_compressed;
use super::status::{invalid, status};
use crate::broker::subscribe::{Chunk, ChunkResult};

/// The method this route serves.
pub const SUBSCRIBE_PATH: &str = "/strata.v1.Broker/Subscribe";
/// Largest Subscribe request message (a start names a topic of at most 249 bytes).
const SUBSCRIBE_REQUEST_BYTES_MAX: usize = 64 << 10;
/// Batches shorter than this are copied into the reply's framing buffer: a DATA frame of their
/// own would cost more (a frame header and a write of its own) than the copy.
pub const COPY_BATCH_BYTES_MAX: usize = 4 << 10;
/// The gRPC message prefix: a compression flag and the message length (big-endian u32).
const GRPC_PREFIX_BYTES: usize = 5;
/// `SubscribeResponse`'s field numbers (strata.proto).
const BATCHES_FIELD: u32 = 1;
const NEXT_OFFSET_FIELD: u32 = 3;
const HIGH_WATERMARK_FIELD: u32 = 4;

impl Service {
    /// Serves one Subscribe call: decodes its messages with [`RequestDecoder`], starts the
    /// subscription, and answers with a [`SubscribeBody`], or with the refusal as a
    /// trailers-only response (as tonic would).
    pub(super) async fn subscribe_http<B>(
        &self,
        request: http::Request<B>,
    ) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        if let Some(refused) = refuse_compressed("Subscribe", &request) {
            return refused;
        }
        let (parts, body) = request.into_parts();
        let inbound = Streaming::new_request(
            RequestDecoder,
            body,
            None,
            Some(SUBSCRIBE_REQUEST_BYTES_MAX),
        );
        let request = tonic::Request::from_http(http::Request::from_parts(parts, inbound));
        let access = self.access(&request);
        match self.subscribe_chunks(&access, request.into_inner()).await {
            Ok(chunks) => {
                let mut response = http::Response::new(tonic::body::Body::new(SubscribeBody {
                    chunks,
                    frames: VecDeque::new(),
                    ended: false,
                }));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                response
            }
            Err(refused) => refused.into_http(),
        }
    }
}

/// Decodes Subscribe request messages with prost.
struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = pb::SubscribeRequest;
    type Error = Status;

    fn decode(&mut self, message: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        pb::SubscribeRequest::decode(message)
            .map(Some)
            .map_err(|error| invalid(format!("a Subscribe request that does not decode: {error}")))
    }
}

/// A subscription's replies as an HTTP/2 body: each chunk's frames (see [`frames`]), then the
/// trailers with the status that ended it (OK when its credit ended, the error otherwise).
/// Dropping it (the consumer went away) drops the chunks' receiver, which stops the
/// subscription.
struct SubscribeBody {
    chunks: mpsc::Receiver<ChunkResult<pb::Record>>,
    /// What is left to send of the current reply.
    frames: VecDeque<Bytes>,
    /// The trailers are sent.
    ended: bool,
}

impl http_body::Body for SubscribeBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(frame))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let ended_with = match ready!(this.chunks.poll_recv(cx)) {
            Some(Ok(chunk)) => match frames(chunk) {
                Ok(frames) => {
                    this.frames = frames;
                    let first = this.frames.pop_front().unwrap_or_default();
                    return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
                }
                Err(error) => error,
            },
            Some(Err(error)) => status(error),
            None => Status::ok(""),
        };
        this.ended = true;
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&ended_with)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.frames.is_empty()
    }
}

/// A status as gRPC trailers; one that cannot be carried in headers becomes the error saying
/// so.
fn trailers(ended_with: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    if let Err(unencodable) = ended_with.add_header(&mut trailers) {
        trailers.clear();
        let _ = unencodable.add_header(&mut trailers);
    }
    trailers
}

/// One chunk as the gRPC message of a [`pb::SubscribeResponse`], in pieces: the framing (the
/// message prefix, each batch's key and length, the offsets) in small buffers, each batch of at
/// least [`COPY_BATCH_BYTES_MAX`] as it is stored. The pieces are prost's encoding of the same
/// message, field by field in field order.
///
/// # Errors
/// INTERNAL when the message would pass gRPC's 4 GiB message limit (a chunk holds at most
/// about a megabyte, so this is a broken invariant, answered rather than a panic).
fn frames(chunk: Chunk<pb::Record>) -> Result<VecDeque<Bytes>, Status> {
    let mut frames = VecDeque::new();
    if !chunk.records.is_empty() {
        // Decoded records: prost encodes them whole, into a buffer of this reply's own.
        let message = pb::SubscribeResponse {
            batches: chunk.batches,
            records: chunk.records,
            next_offset: chunk.next_offset,
            high_watermark: chunk.high_watermark,
        };
        // One walk over the records for the length; `encode_raw` writes without another.
        let encoded_len = message.encoded_len();
        let length = message_length(encoded_len)?;
        let mut buffer = BytesMut::with_capacity(GRPC_PREFIX_BYTES + encoded_len);
        buffer.put_u8(0);
        buffer.put_u32(length);
        message.encode_raw(&mut buffer);
        frames.push_back(buffer.freeze());
        return Ok(frames);
    }
    let offsets_len = varint_field_len(NEXT_OFFSET_FIELD, chunk.next_offset)
        + varint_field_len(HIGH_WATERMARK_FIELD, chunk.high_watermark);
    let batches_len: usize = chunk
        .batches
        .iter()
        .map(|batch| key_len(BATCHES_FIELD) + encoded_len_varint(batch.len() as u64) + batch.len())
        .sum();
    let length = message_length(batches_len + offsets_len)?;
    // The framing, and the batches short enough to copy; split off before each batch sent as
    // it is.
    let copied_len: usize = chunk
        .batches
        .iter()
        .filter(|batch| batch.len() < COPY_BATCH_BYTES_MAX)
        .map(Bytes::len)
        .sum();
    let mut framing = BytesMut::with_capacity(
        GRPC_PREFIX_BYTES + chunk.batches.len() * (1 + 10) + copied_len + offsets_len,
    );
    framing.put_u8(0);
    framing.put_u32(length);
    for batch in chunk.batches {
        encode_key(BATCHES_FIELD, WireType::LengthDelimited, &mut framing);
        encode_varint(batch.len() as u64, &mut framing);
        if batch.len() < COPY_BATCH_BYTES_MAX {
            framing.put_slice(&batch);
        } else {
            frames.push_back(framing.split().freeze());
            frames.push_back(batch);
        }
    }
    put_varint_field(NEXT_OFFSET_FIELD, chunk.next_offset, &mut framing);
    put_varint_field(HIGH_WATERMARK_FIELD, chunk.high_watermark, &mut framing);
    if !framing.is_empty() {
        frames.push_back(framing.freeze());
    }
    Ok(frames)
}

/// A message length as the gRPC prefix carries it.
fn message_length(length: usize) -> Result<u32, Status> {
    u32::try_from(length).map_err(|_| {
        Status::internal(format!(
            "a subscription reply of {length} bytes passes gRPC's message limit of {} bytes",
            u32::MAX
        ))
    })
}

/// The encoded size of a proto3 `uint64` field: nothing when it is 0 (the default is not sent).
fn varint_field_len(field: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(field) + encoded_len_varint(value)
    }
}

fn put_varint_field(field: u32, value: u64, buffer: &mut BytesMut) {
    if value != 0 {
        encode_key(field, WireType::Varint, buffer);
        encode_varint(value, buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces of a reply, joined: exactly prost's encoding of the same message, behind the
    /// gRPC prefix.
    fn joined(chunk: Chunk<pb::Record>) -> Vec<u8> {
        frames(chunk)
            .expect("a small chunk")
            .into_iter()
            .flat_map(|frame| frame.to_vec())
            .collect()
    }

    fn prost_framed(message: &pb::SubscribeResponse) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        framed
    }

    /// Replies of batches small and large (copied and sent as they are), of records, and of
    /// nothing but zero offsets, against prost.
    #[test]
    fn hand_framed_replies_are_prost_encodings() {
        let small = Bytes::from(vec![1u8; 100]);
        let large = Bytes::from(vec![2u8; COPY_BATCH_BYTES_MAX]);
        let larger = Bytes::from(vec![3u8; 300_000]);
        let cases = [
            (vec![small.clone()], 7, 9),
            (vec![large.clone()], 1, 1),
            (
                vec![small.clone(), large.clone(), small, larger],
                1 << 40,
                u64::MAX,
            ),
            (vec![], 0, 0),
        ];
        for (batches, next_offset, high_watermark) in cases {
            let message = pb::SubscribeResponse {
                batches: batches.clone(),
                records: Vec::new(),
                next_offset,
                high_watermark,
            };
            let chunk = Chunk {
                batches,
                records: Vec::new(),
                next_offset,
                high_watermark,
            };
            assert_eq!(joined(chunk), prost_framed(&message), "{next_offset}");
        }
        let records = vec![pb::Record {
            offset: 5,
            timestamp_ms: 6,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
        }];
        let message = pb::SubscribeResponse {
            batches: Vec::new(),
            records: records.clone(),
            next_offset: 6,
            high_watermark: 8,
        };
        let chunk = Chunk {
            batches: Vec::new(),
            records,
            next_offset: 6,
            high_watermark: 8,
        };
        assert_eq!(joined(chunk), prost_framed(&message));
    }

    /// Batches of at least the copy limit go out as the very `Bytes` they were read as.
    #[test]
    fn large_batches_are_sent_without_a_copy() {
        let large = Bytes::from(vec![2u8; COPY_BATCH_BYTES_MAX]);
        let chunk = Chunk {
            batches: vec![large.clone(), large.clone()],
            records: Vec::new(),
            next_offset: 2,
            high_watermark: 2,
        };
        let frames = frames(chunk).expect("a small chunk");
        let shared = frames
            .iter()
            .filter(|frame| frame.as_ptr() == large.as_ptr())
            .count();
        assert_eq!(shared, 2, "both batches shared, not copied");
    }
}
