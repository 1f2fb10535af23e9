use std::collections::VecDeque;

use futures::StreamExt;
use proptest::prelude::*;
use prost::Message as _;
use strata_proto::v1 as pb;
use strata_proto::v1::produce_request::{Payload, Target};

use super::*;
use crate::service::request_limit::oversized_request;

/// A request body made of the given frames; after them it ends, or stays pending (a client
/// that sent part of its body and waits).
pub(crate) struct Frames {
    frames: VecDeque<Result<http_body::Frame<Bytes>, Status>>,
    then_pending: bool,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match this.frames.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None if this.then_pending => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

/// A body of these DATA frames, then its end.
pub(crate) fn body(chunks: Vec<Bytes>) -> Frames {
    Frames {
        frames: chunks
            .into_iter()
            .map(|chunk| Ok(http_body::Frame::data(chunk)))
            .collect(),
        then_pending: false,
    }
}

fn request(request_id: u64, batch: Vec<u8>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        request_id,
        topic: format!("topic-{request_id}"),
        target: Some(Target::Partition(request_id as u32 % 7)),
        payload: Some(Payload::Batch(batch.into())),
    }
}

/// `request` as a gRPC message: the prefix, then prost's encoding.
fn message(request: &pb::ProduceRequest) -> Vec<u8> {
    let encoded = request.encode_to_vec();
    let mut message = vec![0];
    message.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    message.extend_from_slice(&encoded);
    message
}

/// Every item `body` yields, read to its end.
fn read_all(body: Frames, limit: usize) -> Vec<Result<pb::ProduceRequest, Status>> {
    futures::executor::block_on(Requests::new(body, limit).collect())
}

proptest! {
    /// However the body is cut into frames, the requests come out whole and in order.
    #[test]
    fn requests_survive_any_framing(
        batches in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let requests: Vec<_> = batches
            .into_iter()
            .enumerate()
            .map(|(n, batch)| request(n as u64, batch))
            .collect();
        let wire: Vec<u8> = requests.iter().flat_map(message).collect();
        let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len())).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points {
            chunks.push(Bytes::copy_from_slice(&wire[start..point]));
            start = point;
        }
        let read: Vec<_> = read_all(body(chunks), 1 << 20)
            .into_iter()
            .map(|item| item.expect("a whole request"))
            .collect();
        prop_assert_eq!(read, requests);
    }
}

/// A batch that arrives as a frame of its own (as Strata's producer sends it) is that frame's
/// bytes, not a copy; one cut across frames is gathered.
#[test]
fn a_batch_in_one_frame_is_not_copied() {
    let request = request(1, vec![7; 200_000]);
    let wire = Bytes::from(message(&request));
    let batch_at = wire.len() - 200_000;
    let batch_frame = wire.slice(batch_at..);
    let frame_range = batch_frame.as_ptr() as usize..batch_frame.as_ptr() as usize + 200_000;
    let read = read_all(body(vec![wire.slice(..batch_at), batch_frame]), 1 << 20);
    let Some(Payload::Batch(batch)) = read[0].as_ref().expect("decodes").payload.clone() else {
        panic!("no batch");
    };
    assert_eq!(batch.len(), 200_000);
    assert!(
        frame_range.contains(&(batch.as_ptr() as usize)),
        "the batch was copied out of its frame"
    );

    let cut = batch_at + 100_000;
    let read = read_all(body(vec![wire.slice(..cut), wire.slice(cut..)]), 1 << 20);
    assert_eq!(read[0].as_ref().expect("decodes"), &request);
}

/// A message over the limit is refused at its prefix, before its bytes arrive, with the words
/// the produce stream rewrites into RECORD_TOO_LARGE.
#[test]
fn an_oversized_message_is_refused_at_its_prefix() {
    let mut prefix = vec![0];
    prefix.extend_from_slice(&2_000_000u32.to_be_bytes());
    let frames = Frames {
        frames: [Ok(http_body::Frame::data(Bytes::from(prefix)))].into(),
        then_pending: true,
    };
    let mut requests: Requests<_, pb::ProduceRequest> = Requests::new(frames, 1 << 20);
    let first = futures::executor::block_on(requests.next()).expect("an item");
    let status = first.expect_err("refused");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        oversized_request(&status).is_some(),
        "not recognized as an oversized request: {status:?}"
    );
    assert!(futures::executor::block_on(requests.next()).is_none());
}

#[test]
fn broken_messages_are_internal_errors() {
    let request = message(&request(3, vec![1; 100]));
    let mut compressed = request.clone();
    compressed[0] = 1;
    let mut bad_flag = request.clone();
    bad_flag[0] = 9;
    let garbage = vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
    let cut_short = request[..request.len() - 1].to_vec();
    for (name, wire, says) in [
        ("compressed", compressed, "compressed-flag"),
        ("bad flag", bad_flag, "invalid compression flag: 9"),
        ("garbage", garbage, ""),
        ("cut short", cut_short, "Unexpected EOF"),
    ] {
        let read = read_all(body(vec![Bytes::from(wire)]), 1 << 20);
        assert_eq!(read.len(), 1, "{name}: {read:?}");
        let status = read[0].as_ref().expect_err(name);
        assert_eq!(status.code(), Code::Internal, "{name}: {status:?}");
        assert!(status.message().contains(says), "{name}: {status:?}");
    }
}

/// A body error ends the requests with it; a cancelled call ends them quietly.
#[test]
fn body_errors_end_the_requests() {
    let whole = Bytes::from(message(&request(4, vec![2; 10])));
    for (error, expected) in [
        (Status::cancelled("gone"), None),
        (Status::unavailable("reset"), Some(Code::Unavailable)),
    ] {
        let frames = Frames {
            frames: [Ok(http_body::Frame::data(whole.clone())), Err(error)].into(),
            then_pending: false,
        };
        let read = read_all(frames, 1 << 20);
        assert!(read[0].is_ok(), "{read:?}");
        assert_eq!(
            read.get(1)
                .map(|item| item.as_ref().expect_err("an error").code()),
            expected,
            "{read:?}"
        );
        assert!(read.len() <= 2, "{read:?}");
    }
}

/// Trailers and empty frames carry nothing; the requests around them come through.
#[test]
fn trailers_and_empty_frames_are_skipped() {
    let first = request(5, vec![3; 10]);
    let second = request(6, vec![4; 10]);
    let frames = Frames {
        frames: [
            Ok(http_body::Frame::data(Bytes::from(message(&first)))),
            Ok(http_body::Frame::data(Bytes::new())),
            Ok(http_body::Frame::data(Bytes::from(message(&second)))),
            Ok(http_body::Frame::trailers(Default::default())),
        ]
        .into(),
        then_pending: false,
    };
    let read: Vec<_> = read_all(frames, 1 << 20)
        .into_iter()
        .map(|item| item.expect("a request"))
        .collect();
    assert_eq!(read, vec![first, second]);
}

/// A compressed request is refused up front with UNIMPLEMENTED, naming the method and the
/// encoding; an uncompressed one (no `grpc-encoding`, or `identity`) is let through.
#[test]
fn compressed_requests_are_refused() {
    let request = |encoding: Option<&'static str>| {
        let mut request = http::Request::new(());
        if let Some(encoding) = encoding {
            request
                .headers_mut()
                .insert("grpc-encoding", http::HeaderValue::from_static(encoding));
        }
        request
    };
    let refused = refuse_compressed("Peer/Raft", &request(Some("gzip"))).expect("refused");
    let status = Status::from_header_map(refused.headers()).expect("a trailers-only status");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(
        status.message().contains("Peer/Raft") && status.message().contains("gzip"),
        "{status:?}"
    );
    assert!(refuse_compressed("Peer/Raft", &request(Some("identity"))).is_none());
    assert!(refuse_compressed("Peer/Raft", &request(None)).is_none());
}
