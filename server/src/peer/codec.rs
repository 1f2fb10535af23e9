//! The raft stream's wire form, written and read with as few copies of the entries as the
//! layers allow.
//!
//! On the wire a batch is `strata.v1.RaftBatch` (`from_node = 1`, `repeated RaftEnvelope
//! messages = 2`; an envelope is `group = 1`, `bytes message = 2` holding an encoded raft-rs
//! `eraftpb.Message`), byte for byte what prost writes for it, so nodes of this build and of
//! earlier ones talk to each other (the tests compare the bytes).
//!
//! Sending: the driver hands the transport raft's `Message` itself. [`RaftStreamCodec`] encodes
//! a batch of them in one pass straight into tonic's frame buffer: envelope framing by hand,
//! each message by rust-protobuf (`compute_size` gives the lengths first). An entry's data goes
//! from its `Bytes` (shared with raft's log, not copied) into the frame: a piece of 8 KiB or
//! more is written there directly; smaller pieces pass through rust-protobuf's 8 KiB staging
//! buffer (one more copy, of small pieces only). Before, each message was encoded into a
//! `Vec` on the driver thread, and that `Vec` copied again into the frame.
//!
//! That copy into the frame is the one left on the leader (2.5 % of three nodes' CPU samples,
//! BENCHMARKS.md), and it is kept on purpose: handing h2 each large entry as a `Bytes` of its
//! own would send the batch as several DATA frames, and an envelope's `message` cut across
//! frames is gathered into one buffer on the follower (rust-protobuf parses contiguous bytes
//! only), so the copy would move to every follower instead of going away.
//!
//! Receiving: the stream's requests are read from the HTTP/2 DATA frames as h2 hands them over
//! (`raft_route`, with `service::request_frames`; tonic's `Streaming` copied each frame into
//! its decode buffer first); prost's decode of the `RaftBatch` slices each envelope's `message`
//! out of the frame (prost's `bytes` fields take `copy_to_bytes`, answered with a shared slice
//! when the field lies in one frame), and [`parse_message`] parses it with rust-protobuf's
//! `Bytes` input, so every entry's `data` and `context` are slices of the received frame too.
//!
//! Those slices keep the whole frame's allocation alive (up to the peer stream's message limit)
//! for as long as any of them lives: on a follower that is until its Ready round has appended
//! the entries to the log and raft drops them from its unstable buffer (they are persisted), or
//! until the driver drops a message it refuses. Nothing keeps a received entry longer: entries
//! raft needs later are read back from the log.

use std::sync::Mutex;

use bytes::{BufMut, Bytes};
use prost::Message as _;
use protobuf::{CodedOutputStream, Message as _, ProtobufResult, wire_format::WireType};
use raft::prelude::Message;
use strata_proto::v1::RaftStreamClosed;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::replication::RaftGroupId;

/// `RaftBatch.from_node`, `RaftBatch.messages`, `RaftEnvelope.group`, `RaftEnvelope.message`.
const FROM_NODE_FIELD: u32 = 1;
const MESSAGES_FIELD: u32 = 2;
const GROUP_FIELD: u32 = 1;
const MESSAGE_FIELD: u32 = 2;

/// The gRPC path of the raft stream (`rpc Raft` of `service Peer` in strata.proto).
pub const RAFT_PATH: &str = "/strata.v1.Peer/Raft";

/// One batch for the raft stream: raft messages of any groups, from one node.
///
/// tonic's streaming client wants items that are `Sync`, and a raft `Message` is not (it
/// caches its encoded sizes in `Cell`s); the messages sit behind a `Mutex` that is never
/// locked: the encoder takes them out with `into_inner`.
pub struct OutgoingBatch {
    from_node: u64,
    messages: Mutex<Vec<(RaftGroupId, Message)>>,
}

impl OutgoingBatch {
    pub fn new(from_node: u64, messages: Vec<(RaftGroupId, Message)>) -> Self {
        Self {
            from_node,
            messages: Mutex::new(messages),
        }
    }

    /// How many messages the batch carries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.messages.lock().map_or(0, |messages| messages.len())
    }

    /// The bytes of the entries the batch carries.
    #[cfg(test)]
    pub fn entry_bytes(&self) -> usize {
        self.messages.lock().map_or(0, |messages| {
            messages
                .iter()
                .map(|(_, message)| super::outgoing::entry_bytes(message))
                .sum()
        })
    }
}

/// Encodes a `RaftBatch` of `messages` from `from_node` into `dst`, each message once, with
/// nothing in between (see the module doc); `reserve` is told the exact length first, so a
/// growing buffer never moves what was written.
///
/// # Errors
/// Only what writing to `dst` can fail with (nothing, for memory buffers).
pub fn encode_batch<B: BufMut>(
    from_node: u64,
    messages: &[(RaftGroupId, Message)],
    dst: &mut B,
    reserve: impl FnOnce(&mut B, usize),
) -> ProtobufResult<()> {
    // Sizes first: rust-protobuf caches them inside each message for the write below.
    let sizes: Vec<(u64, u64)> = messages
        .iter()
        .map(|(group, message)| {
            let message_bytes = u64::from(message.compute_size());
            (message_bytes, envelope_len(*group, message_bytes))
        })
        .collect();
    let mut total = if from_node == 0 {
        0
    } else {
        1 + varint_len(from_node)
    };
    for (_, envelope) in &sizes {
        total += 1 + varint_len(*envelope) + envelope;
    }
    reserve(dst, usize::try_from(total).unwrap_or(usize::MAX));
    let mut writer = dst.writer();
    let mut out = CodedOutputStream::new(&mut writer);
    // proto3: fields at their default value are left out, as prost does.
    if from_node != 0 {
        out.write_uint64(FROM_NODE_FIELD, from_node)?;
    }
    for ((group, message), (message_bytes, envelope)) in messages.iter().zip(sizes) {
        out.write_tag(MESSAGES_FIELD, WireType::WireTypeLengthDelimited)?;
        out.write_raw_varint64(envelope)?;
        if *group != 0 {
            out.write_uint64(GROUP_FIELD, *group)?;
        }
        if message_bytes != 0 {
            out.write_tag(MESSAGE_FIELD, WireType::WireTypeLengthDelimited)?;
            out.write_raw_varint64(message_bytes)?;
            message.write_to_with_cached_sizes(&mut out)?;
        }
    }
    out.flush()
}

/// The length of an envelope of `group` around a message of `message_bytes`.
fn envelope_len(group: u64, message_bytes: u64) -> u64 {
    let group_bytes = if group == 0 { 0 } else { 1 + varint_len(group) };
    let message_field_bytes = if message_bytes == 0 {
        0
    } else {
        1 + varint_len(message_bytes) + message_bytes
    };
    group_bytes + message_field_bytes
}

fn varint_len(value: u64) -> u64 {
    prost::encoding::encoded_len_varint(value) as u64
}

/// Parses one envelope's raft message; entries' `data` (and every other `bytes` field) are
/// slices of `bytes`, not copies.
///
/// # Errors
/// The bytes are not an `eraftpb.Message` (truncated, garbage, nested too deep).
pub fn parse_message(bytes: &Bytes) -> ProtobufResult<Message> {
    Message::parse_from_carllerche_bytes(bytes)
}

/// The client side of the raft stream: sends [`OutgoingBatch`]es, receives the stream's
/// closing `RaftStreamClosed`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaftStreamCodec;

impl Codec for RaftStreamCodec {
    type Encode = OutgoingBatch;
    type Decode = RaftStreamClosed;
    type Encoder = BatchEncoder;
    type Decoder = ClosedDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ClosedDecoder
    }
}

/// Writes [`OutgoingBatch`]es with [`encode_batch`].
#[derive(Debug)]
pub struct BatchEncoder;

impl Encoder for BatchEncoder {
    type Item = OutgoingBatch;
    type Error = Status;

    fn encode(&mut self, item: OutgoingBatch, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // Never locked, so never poisoned; a poisoned one would still hold whole messages.
        let messages = item
            .messages
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        encode_batch(item.from_node, &messages, dst, |dst, bytes| {
            dst.reserve(bytes)
        })
        .map_err(|error| Status::internal(format!("encoding a raft batch failed: {error}")))
    }
}

/// Reads the `RaftStreamClosed` that ends the stream.
#[derive(Debug)]
pub struct ClosedDecoder;

impl Decoder for ClosedDecoder {
    type Item = RaftStreamClosed;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RaftStreamClosed>, Status> {
        RaftStreamClosed::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("undecodable RaftStreamClosed: {error}")))
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
