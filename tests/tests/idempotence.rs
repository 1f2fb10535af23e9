//! The idempotent producer against real servers: a retried batch is acknowledged with its
//! original offsets and stored once, also while the original is still in flight and across a
//! kill -9; gaps and old epochs are refused with clear errors.

use std::time::Duration;

use bytes::Bytes;
use strata_proto::batch::BatchBuilder;
use strata_proto::v1 as pb;
use strata_proto::v1::broker_client::BrokerClient;
use strata_tests::server::{Clients, ServerProcess};
use strata_tests::{Seed, error_code};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// A batch of `count` records with values `v{sequence + i}` (padded to `value_bytes`).
fn batch(producer: (i64, i16), sequence: i32, count: i32, value_bytes: usize) -> Bytes {
    let mut builder = BatchBuilder::new().producer(producer.0, producer.1, sequence);
    for i in 0..count {
        let mut value = format!("v{}", sequence + i).into_bytes();
        value.resize(value_bytes.max(value.len()), b'.');
        builder.push(1, None, Some(&value), &[]);
    }
    builder.finish().freeze()
}

fn request(id: u64, topic: &str, batch: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        request_id: id,
        topic: topic.to_string(),
        target: Some(pb::produce_request::Target::Partition(0)),
        payload: Some(pb::produce_request::Payload::Batch(batch)),
    }
}

async fn produce(
    broker: &mut BrokerClient<Channel>,
    topic: &str,
    batch: Bytes,
) -> Result<(u64, u64), tonic::Status> {
    let reply = broker.produce(request(0, topic, batch)).await?.into_inner();
    Ok((reply.base_offset, reply.last_offset))
}

async fn producer_id(broker: &mut BrokerClient<Channel>) -> i64 {
    let reply = broker
        .init_producer_id(pb::InitProducerIdRequest {})
        .await
        .expect("init producer id")
        .into_inner();
    assert_eq!(reply.producer_epoch, 0);
    reply.producer_id
}

/// Every value stored in partition 0, in offset order, with its offset (padding removed).
async fn stored_values(clients: &mut Clients, topic: &str) -> Vec<(u64, String)> {
    let values = clients.read_values(topic, 0).await;
    values
        .into_iter()
        .map(|(offset, value)| (offset, value.trim_end_matches('.').to_string()))
        .collect()
}

/// Retries (sequential and pipelined) are stored once; gaps, old epochs and unknown producer
/// ids are refused; plain batches are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_stored_once_and_gaps_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProcess::start(dir.path(), 1);
        let mut clients = server.clients().await;
        clients.create_topic("pay", 1).await;
        let mut broker = clients.broker;
        let id = producer_id(&mut broker).await;
        let other = producer_id(&mut broker).await;
        assert_ne!(id, other, "producer ids are never reused");
        let p = (id, 0);

        assert_eq!(
            produce(&mut broker, "pay", batch(p, 0, 3, 0))
                .await
                .expect("first"),
            (0, 2)
        );
        assert_eq!(
            produce(&mut broker, "pay", batch(p, 0, 3, 0))
                .await
                .expect("retry"),
            (0, 2),
            "a retry is answered with the original offsets"
        );
        assert_eq!(
            produce(&mut broker, "pay", batch(p, 3, 2, 0))
                .await
                .expect("next"),
            (3, 4)
        );

        // Pipelined: the retry arrives while the original is still in flight.
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        let mut replies = broker
            .produce_stream(ReceiverStream::new(receiver))
            .await
            .expect("stream")
            .into_inner();
        for (request_id, sequence, count) in [(1, 5, 2), (2, 5, 2), (3, 7, 1)] {
            sender
                .send(request(request_id, "pay", batch(p, sequence, count, 0)))
                .await
                .expect("send");
        }
        let mut answers = Vec::new();
        for _ in 0..3 {
            let reply = replies.message().await.expect("reply").expect("open");
            assert!(reply.error.is_none(), "{reply:?}");
            answers.push((reply.request_id, reply.base_offset, reply.last_offset));
        }
        answers.sort();
        assert_eq!(answers, vec![(1, 5, 6), (2, 5, 6), (3, 7, 7)]);
        drop(sender);

        // A gap: the error says which sequence was expected.
        let status = produce(&mut broker, "pay", batch(p, 20, 1, 0))
            .await
            .expect_err("gap");
        assert_eq!(error_code(&status), "ERROR_CODE_OUT_OF_ORDER_SEQUENCE");
        let detail = <pb::ErrorDetail as prost::Message>::decode(status.details()).expect("detail");
        assert_eq!(detail.expected_sequence, Some(8));
        // A new epoch starts over at 0; the old epoch is refused from then on.
        let status = produce(&mut broker, "pay", batch((id, 1), 8, 1, 0))
            .await
            .expect_err("a new epoch at sequence 8");
        assert_eq!(error_code(&status), "ERROR_CODE_OUT_OF_ORDER_SEQUENCE");
        assert_eq!(
            produce(&mut broker, "pay", batch((id, 1), 0, 1, 0))
                .await
                .expect("epoch 1"),
            (8, 8)
        );
        let status = produce(&mut broker, "pay", batch(p, 8, 1, 0))
            .await
            .expect_err("old epoch");
        assert_eq!(error_code(&status), "ERROR_CODE_INVALID_PRODUCER_EPOCH");
        // An id nobody handed out.
        let status = produce(&mut broker, "pay", batch((1 << 40, 0), 0, 1, 0))
            .await
            .expect_err("unknown id");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_PRODUCER_ID");
        // Plain batches (no producer id) are stored as always, twice if sent twice.
        let plain = batch((-1, -1), -1, 1, 0);
        produce(&mut broker, "pay", plain.clone())
            .await
            .expect("plain");
        produce(&mut broker, "pay", plain)
            .await
            .expect("plain again");

        let values = stored_values(&mut server.clients().await, "pay").await;
        let expected: Vec<(u64, String)> = (0..8)
            .map(|i| (i, format!("v{i}")))
            .chain([
                (8, "v0".to_string()),
                (9, "v-1".to_string()),
                (10, "v-1".to_string()),
            ])
            .collect();
        assert_eq!(values, expected);
    })
    .await
    .expect("test timed out");
}

/// The reordering seen while new leaders settled: a producer's first batch is refused
/// (NOT_LEADER from a node that leads a moment later, here simply never sent) while the
/// batches pipelined behind it reach the partition. Those must be refused as out of order
/// (expected 0) until the first one is stored, so its retry lands first and the log holds the
/// batches in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_batch_never_overtakes_a_refused_earlier_one() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProcess::start(dir.path(), 1);
        let mut clients = server.clients().await;
        clients.create_topic("order", 1).await;
        let mut broker = clients.broker;
        let p = (producer_id(&mut broker).await, 0);
        for sequence in [2, 4] {
            let status = produce(&mut broker, "order", batch(p, sequence, 2, 0))
                .await
                .expect_err("a batch behind one the partition never saw");
            assert_eq!(error_code(&status), "ERROR_CODE_OUT_OF_ORDER_SEQUENCE");
            let detail =
                <pb::ErrorDetail as prost::Message>::decode(status.details()).expect("detail");
            assert_eq!(detail.expected_sequence, Some(0));
        }
        for (sequence, offsets) in [(0, (0, 1)), (2, (2, 3)), (4, (4, 5))] {
            assert_eq!(
                produce(&mut broker, "order", batch(p, sequence, 2, 0))
                    .await
                    .expect("in order"),
                offsets
            );
        }
        let values = stored_values(&mut server.clients().await, "order").await;
        let expected: Vec<(u64, String)> = (0..6).map(|i| (i, format!("v{i}"))).collect();
        assert_eq!(values, expected);
    })
    .await
    .expect("test timed out");
}

/// A producer streams batches (at most 4 in flight) and re-sends one whose
/// reply it pretends to have lost; the server is killed with SIGKILL mid-stream; after the
/// restart the producer re-sends every batch not acknowledged, some of which the log already
/// holds. The log ends up holding each record once, in order, and every reply names the
/// offsets where its batch really is. About 12 MiB are written, so the producer snapshot
/// (every 8 MiB) is on disk for some seeds' kill points and not for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_stream_then_retry_stores_each_record_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut seed = Seed::from_env("kill9_mid_stream_then_retry_stores_each_record_once", 0x1d3);
        const BATCHES: u64 = 600;
        const RECORDS: i32 = 5;
        const VALUE_BYTES: usize = 4096;
        // Four, not five: the partition remembers each producer's last five batches, so with
        // at most four batches sent from the first unacknowledged one on, the last
        // acknowledged batch is always among them. (Replies on a stream may come out of order:
        // the bound counts from the first unacknowledged batch, not by how many are.)
        const IN_FLIGHT_MAX: u64 = 4;
        let kill_after = 150 + seed.below(400);
        let lost_reply = 10 + seed.below(100);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = ServerProcess::start(dir.path(), 1);
        let mut clients = server.clients().await;
        clients.create_topic("ledger", 1).await;
        let mut broker = clients.broker;
        let p = (producer_id(&mut broker).await, 0);
        let make = |index: u64| batch(p, index as i32 * RECORDS, RECORDS, VALUE_BYTES);
        let expect_offsets = |index: u64| {
            (
                index * RECORDS as u64,
                index * RECORDS as u64 + RECORDS as u64 - 1,
            )
        };

        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let mut replies = broker
            .produce_stream(ReceiverStream::new(receiver))
            .await
            .expect("stream")
            .into_inner();
        let mut next = 0;
        let mut acknowledged = std::collections::BTreeSet::new();
        let mut first_unacknowledged = 0;
        while (acknowledged.len() as u64) < kill_after {
            while next < BATCHES && next - first_unacknowledged < IN_FLIGHT_MAX {
                sender
                    .send(request(next, "ledger", make(next)))
                    .await
                    .expect("send");
                next += 1;
            }
            let reply = replies.message().await.expect("reply").expect("open");
            assert!(reply.error.is_none(), "{reply:?}");
            assert_eq!(
                (reply.base_offset, reply.last_offset),
                expect_offsets(reply.request_id)
            );
            acknowledged.insert(reply.request_id);
            while acknowledged.contains(&first_unacknowledged) {
                first_unacknowledged += 1;
            }
            if reply.request_id == lost_reply {
                // As if this reply had been lost: send the batch again, at once.
                let again = produce(&mut broker, "ledger", make(lost_reply))
                    .await
                    .expect("resend");
                assert_eq!(again, expect_offsets(lost_reply));
            }
        }
        // Kill with up to five batches in flight.
        server.kill9();
        drop(sender);
        drop(replies);
        server.restart();
        let mut broker = server.clients().await.broker;
        // Everything below the first unacknowledged batch was acknowledged; from there on,
        // each batch is sent again (some are duplicates, answered with their offsets).
        for index in first_unacknowledged..BATCHES {
            let offsets = produce(&mut broker, "ledger", make(index))
                .await
                .expect("retry after restart");
            assert_eq!(offsets, expect_offsets(index), "batch {index}");
        }
        let values = stored_values(&mut server.clients().await, "ledger").await;
        assert_eq!(
            values.len() as u64,
            BATCHES * RECORDS as u64,
            "each record once"
        );
        for (position, (offset, value)) in values.iter().enumerate() {
            assert_eq!(*offset, position as u64);
            assert_eq!(value, &format!("v{position}"), "offset {offset}");
        }
    })
    .await
    .expect("test timed out");
}
