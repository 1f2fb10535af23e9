use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use proptest::prelude::*;
use raft::prelude::{ConfState, Entry, EntryType, MessageType, Snapshot};
use strata_proto::v1::{RaftBatch, RaftEnvelope};

use super::*;
use crate::service::request_frames::Requests;
use crate::service::request_frames::tests::body;

/// What a node of an earlier build writes for these messages: each encoded by rust-protobuf
/// into a `Vec`, wrapped in prost's `RaftBatch`.
fn prost_encoding(from_node: u64, messages: &[(RaftGroupId, Message)]) -> Vec<u8> {
    RaftBatch {
        from_node,
        messages: messages
            .iter()
            .map(|(group, message)| RaftEnvelope {
                group: *group,
                message: message.write_to_bytes().expect("encode").into(),
            })
            .collect(),
    }
    .encode_to_vec()
}

fn encode(from_node: u64, messages: &[(RaftGroupId, Message)]) -> Bytes {
    let mut frame = BytesMut::new();
    encode_batch(from_node, messages, &mut frame, |frame, bytes| {
        frame.reserve(bytes)
    })
    .expect("encode into memory");
    frame.freeze()
}

/// Decodes `frame` as the receiving node does: one gRPC message in one DATA frame, read by
/// `request_frames` into prost's `RaftBatch`, then each envelope's message.
fn decode(frame: &[u8]) -> Result<(u64, Vec<(RaftGroupId, Message)>), String> {
    decode_data_frame(grpc_message(frame))
}

/// `frame` behind the gRPC message prefix, as the sending node's h2 puts it in a DATA frame.
fn grpc_message(frame: &[u8]) -> Bytes {
    let mut message = BytesMut::with_capacity(5 + frame.len());
    message.put_u8(0);
    message.put_u32(u32::try_from(frame.len()).expect("a small frame"));
    message.extend_from_slice(frame);
    message.freeze()
}

fn decode_data_frame(data: Bytes) -> Result<(u64, Vec<(RaftGroupId, Message)>), String> {
    let mut batches: Requests<_, RaftBatch> =
        Requests::new(body(vec![data]), crate::peer::PEER_MESSAGE_BYTES_MAX);
    let batch = futures::executor::block_on(batches.next())
        .ok_or("no batch")?
        .map_err(|error| error.to_string())?;
    let mut messages = Vec::new();
    for envelope in batch.messages {
        let message = parse_message(&envelope.message).map_err(|error| error.to_string())?;
        messages.push((envelope.group, message));
    }
    Ok((batch.from_node, messages))
}

fn entry(index: u64, data: Bytes) -> Entry {
    Entry {
        entry_type: EntryType::EntryNormal,
        term: 5,
        index,
        data,
        context: Bytes::from_static(&[0, 0, 1, 0, 0, 0, 0, 7]),
        ..Entry::default()
    }
}

/// A heartbeat to the controller (group 0, left out on the wire as prost does), an append of
/// a small and a large entry (above rust-protobuf's 8 KiB staging buffer) and a snapshot.
fn sample() -> Vec<(RaftGroupId, Message)> {
    let heartbeat = Message {
        msg_type: MessageType::MsgHeartbeat,
        from: 2,
        to: 1,
        term: 5,
        commit: 9,
        ..Message::default()
    };
    let mut append = Message {
        msg_type: MessageType::MsgAppend,
        from: 2,
        to: 1,
        term: 5,
        log_term: 5,
        index: 9,
        commit: 9,
        ..Message::default()
    };
    append.set_entries(
        vec![
            entry(10, Bytes::from(vec![7u8; 300])),
            entry(
                11,
                Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<_>>()),
            ),
        ]
        .into(),
    );
    let mut snapshot = Snapshot {
        data: Bytes::from_static(b"start offset"),
        ..Snapshot::default()
    };
    snapshot.mut_metadata().index = 100;
    snapshot.mut_metadata().term = 5;
    snapshot
        .mut_metadata()
        .set_conf_state(ConfState::from((vec![1, 2, 3], vec![4])));
    let mut install = Message {
        msg_type: MessageType::MsgSnapshot,
        from: 2,
        to: 1,
        term: 5,
        ..Message::default()
    };
    install.set_snapshot(snapshot);
    vec![(0, heartbeat), (1 << 32 | 3, append), (7, install)]
}

/// The bytes are prost's for the same batch (a node of an earlier build reads them), and
/// they decode to the messages sent.
#[test]
fn a_batch_is_byte_for_byte_the_proto_and_round_trips() {
    let messages = sample();
    let frame = encode(2, &messages);
    assert_eq!(&frame[..], &prost_encoding(2, &messages)[..]);
    assert_eq!(decode(&frame), Ok((2, messages)));
    // An empty batch (a keepalive) is as prost writes it too.
    assert_eq!(&encode(2, &[])[..], &prost_encoding(2, &[])[..]);
}

/// Entries' data and context come out as slices of the received DATA frame, not copies.
#[test]
fn received_entries_share_the_frame_buffer() {
    let data = grpc_message(&encode(2, &sample()));
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let (_, messages) = decode_data_frame(data).expect("decode");
    let entries = messages[1].1.get_entries();
    assert_eq!(entries.len(), 2);
    for entry in entries {
        for bytes in [&entry.data, &entry.context] {
            let at = bytes.as_ptr() as usize;
            assert!(
                range.contains(&at) && at + bytes.len() <= range.end,
                "entry {} has a copy at {at:#x}, outside the frame {range:x?}",
                entry.index
            );
        }
    }
}

/// Every cut of a frame, and bytes of no meaning, give an error or some message, never a
/// panic; a cut inside the last message's entry is an error.
#[test]
fn truncated_frames_are_errors_not_panics() {
    let frame = encode(2, &sample());
    let mut errors = 0;
    for cut in 0..frame.len() {
        if decode(&frame[..cut]).is_err() {
            errors += 1;
        }
    }
    assert!(decode(&frame[..frame.len() - 1]).is_err());
    assert!(
        errors > frame.len() / 2,
        "only {errors} of {} cuts failed",
        frame.len()
    );
    // A message cut anywhere inside a length-delimited field fails alone, too.
    let append = sample()[1].1.write_to_bytes().expect("encode");
    let cut = Bytes::from(append[..append.len() - 10].to_vec());
    assert!(parse_message(&cut).is_err());
}

/// A random raft message: any type and numbers, up to three entries of up to 20 000 bytes
/// (both sides of the 8 KiB staging buffer), maybe a snapshot.
fn any_message() -> impl Strategy<Value = Message> {
    let entry = (
        0i32..3,
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..20_000),
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(kind, term, index, data, context)| Entry {
            entry_type: match kind {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                _ => EntryType::EntryConfChangeV2,
            },
            term,
            index,
            data: data.into(),
            context: context.into(),
            ..Entry::default()
        });
    let snapshot = proptest::option::of((
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u64>(), 0..4),
    ));
    (
        (0i32..19, any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()),
        proptest::collection::vec(entry, 0..3),
        snapshot,
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(
            |(
                (kind, from, to, term),
                (index, commit, hint, reject),
                entries,
                snapshot,
                context,
            )| {
                let mut message = Message {
                    msg_type: <MessageType as protobuf::ProtobufEnum>::from_i32(kind)
                        .unwrap_or(MessageType::MsgAppend),
                    from,
                    to,
                    term,
                    log_term: term / 2,
                    index,
                    commit,
                    reject,
                    reject_hint: hint,
                    context: context.into(),
                    ..Message::default()
                };
                message.set_entries(entries.into());
                if let Some((data, index, term, voters)) = snapshot {
                    let mut snapshot = Snapshot {
                        data: data.into(),
                        ..Snapshot::default()
                    };
                    snapshot.mut_metadata().index = index;
                    snapshot.mut_metadata().term = term;
                    snapshot
                        .mut_metadata()
                        .set_conf_state(ConfState::from((voters, vec![])));
                    message.set_snapshot(snapshot);
                }
                message
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random batches encode to prost's bytes and decode to what was sent.
    #[test]
    fn random_batches_round_trip(
        from_node in any::<u64>(),
        messages in proptest::collection::vec((any::<u64>(), any_message()), 0..6),
    ) {
        let frame = encode(from_node, &messages);
        prop_assert_eq!(&frame[..], &prost_encoding(from_node, &messages)[..]);
        prop_assert_eq!(decode(&frame), Ok((from_node, messages)));
    }

    /// Bytes of no meaning never panic the decoder.
    #[test]
    fn garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&garbage);
        let _ = parse_message(&Bytes::from(garbage));
    }
}
