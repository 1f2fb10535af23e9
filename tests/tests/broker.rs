//! The broker end to end: real `strata-server` processes on loopback, driven through the
//! generated gRPC clients (the same code any language generates from the proto).

use std::time::Duration;

use bytes::Bytes;
use strata_proto::v1 as pb;
use strata_tests::server::{Clients, ServerProcess};
use tonic::transport::Channel;

fn record(key: &str, value: &str) -> pb::Record {
    pb::Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![pb::RecordHeader {
            key: "h".to_string(),
            value: Some(Bytes::from_static(b"1")),
        }],
        ..pb::Record::default()
    }
}

fn produce_records(topic: &str, partition: u32, records: Vec<pb::Record>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.to_string(),
        target: Some(pb::produce_request::Target::Partition(partition)),
        payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
            records,
        })),
        ..pb::ProduceRequest::default()
    }
}

fn earliest() -> Option<pb::StartPosition> {
    Some(pb::StartPosition {
        position: Some(pb::start_position::Position::Earliest(true)),
    })
}

/// Create a topic, produce records, read them back decoded from earliest and by offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    let topic = clients.create_topic("events", 2).await;
    assert_eq!(topic.partitions, 2);
    assert!(topic.partition_info.iter().all(|p| p.leader_node_id == 1));
    let produced = clients
        .broker
        .produce(produce_records(
            "events",
            1,
            vec![record("a", "1"), record("b", "2")],
        ))
        .await
        .expect("produce")
        .into_inner();
    assert_eq!(
        (
            produced.partition,
            produced.base_offset,
            produced.last_offset
        ),
        (1, 0, 1)
    );
    let produced = clients
        .broker
        .produce(produce_records("events", 1, vec![record("c", "3")]))
        .await
        .expect("produce")
        .into_inner();
    assert_eq!(produced.base_offset, 2);
    let fetched = clients
        .broker
        .fetch(pb::FetchRequest {
            topic: "events".to_string(),
            partition: 1,
            start: earliest(),
            decode: true,
            ..pb::FetchRequest::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let values: Vec<&[u8]> = fetched
        .records
        .iter()
        .map(|r| r.value.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(values, [&b"1"[..], b"2", b"3"]);
    assert_eq!(fetched.high_watermark, 3);
    assert_eq!(fetched.next_offset, 3);
    assert_eq!(fetched.records[2].headers[0].key, "h");
}

fn partition_target(partition: u32) -> Option<pb::produce_request::Target> {
    Some(pb::produce_request::Target::Partition(partition))
}

fn batch_request(
    topic: &str,
    partition: u32,
    batch: bytes::BytesMut,
    request_id: u64,
) -> pb::ProduceRequest {
    pb::ProduceRequest {
        request_id,
        topic: topic.to_string(),
        target: partition_target(partition),
        payload: Some(pb::produce_request::Payload::Batch(batch.freeze())),
    }
}

/// Every record of a partition from earliest, decoded client-side from raw batches.
async fn read_partition(
    clients: &mut Clients,
    topic: &str,
    partition: u32,
) -> Vec<strata_proto::batch::Record> {
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        let fetched = clients
            .broker
            .fetch(pb::FetchRequest {
                topic: topic.to_string(),
                partition,
                start: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::Offset(offset)),
                }),
                max_bytes: 1 << 20,
                ..pb::FetchRequest::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        for run in fetched.batches {
            for split in strata_proto::batch::split_batches(run) {
                let (_, batch) = split.expect("whole batches");
                let decoded = strata_proto::batch::decode_records(&batch).expect("valid batch");
                records.extend(decoded.into_iter().filter(|r| r.offset >= offset));
            }
        }
        offset = fetched.next_offset;
        if offset >= fetched.high_watermark {
            return records;
        }
    }
}

/// 100 000 records with keys and headers over 4 partitions, pipelined on one produce stream:
/// each comes back once, in order within its partition, on the partition its key hashes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keyed_records_come_back_once_in_order() {
    const RECORDS: usize = 100_000;
    const PARTITIONS: u32 = 4;
    const PER_BATCH: usize = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("keyed", PARTITIONS).await;
    let mut builders: Vec<strata_proto::batch::BatchBuilder> = (0..PARTITIONS)
        .map(|_| strata_proto::batch::BatchBuilder::new())
        .collect();
    let mut requests = Vec::new();
    for i in 0..RECORDS {
        let key = format!("user-{}", i % 977);
        let partition = strata_proto::partitioner::partition_for_key(key.as_bytes(), PARTITIONS);
        let value = format!("{i}");
        let header = (i as u64).to_be_bytes();
        let builder = &mut builders[partition as usize];
        builder.push(
            1_000 + i as i64,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[("seq", Some(&header))],
        );
        if builder.record_count() as usize == PER_BATCH {
            let full = std::mem::take(builder);
            requests.push(batch_request(
                "keyed",
                partition,
                full.finish(),
                requests.len() as u64,
            ));
        }
    }
    for (partition, builder) in builders.into_iter().enumerate() {
        if builder.record_count() > 0 {
            requests.push(batch_request(
                "keyed",
                partition as u32,
                builder.finish(),
                requests.len() as u64,
            ));
        }
    }
    let count = requests.len();
    let responses = clients
        .broker
        .produce_stream(tokio_stream::iter(requests))
        .await
        .expect("produce stream")
        .into_inner();
    let responses: Vec<pb::ProduceResponse> = futures::StreamExt::collect::<Vec<_>>(responses)
        .await
        .into_iter()
        .map(|r| r.expect("stream message"))
        .collect();
    assert_eq!(responses.len(), count);
    assert!(
        responses.iter().all(|r| r.error.is_none()),
        "no produce failed"
    );
    let mut seen = vec![false; RECORDS];
    for partition in 0..PARTITIONS {
        let records = read_partition(&mut clients, "keyed", partition).await;
        let mut last = None;
        for (position, record) in records.iter().enumerate() {
            assert_eq!(record.offset, position as u64, "dense offsets");
            let key = record.key.as_deref().expect("key");
            assert_eq!(
                strata_proto::partitioner::partition_for_key(key, PARTITIONS),
                partition
            );
            let i: usize = std::str::from_utf8(record.value.as_deref().expect("value"))
                .expect("utf8")
                .parse()
                .expect("number");
            assert!(last.is_none_or(|last| i > last), "per-partition order");
            last = Some(i);
            assert!(!seen[i], "record {i} seen twice");
            seen[i] = true;
            assert_eq!(
                record.headers[0].value.as_deref(),
                Some(&(i as u64).to_be_bytes()[..])
            );
            assert_eq!(record.timestamp, 1_000 + i as i64);
        }
    }
    assert!(seen.iter().all(|s| *s), "every record came back");
}

fn at(position: pb::start_position::Position) -> Option<pb::StartPosition> {
    Some(pb::StartPosition {
        position: Some(position),
    })
}

async fn fetch_values(
    clients: &mut Clients,
    topic: &str,
    start: Option<pb::StartPosition>,
) -> Vec<String> {
    let fetched = clients
        .broker
        .fetch(pb::FetchRequest {
            topic: topic.to_string(),
            partition: 0,
            start,
            decode: true,
            max_bytes: 1 << 20,
            ..pb::FetchRequest::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    fetched
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default().to_vec()).expect("utf8"))
        .collect()
}

fn timed_record(value: &str, timestamp_ms: i64) -> pb::Record {
    pb::Record {
        timestamp_ms,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        ..pb::Record::default()
    }
}

/// Replay from earliest, an offset, a timestamp and latest, by fetch and by offset lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_earliest_offset_timestamp_and_latest() {
    use pb::start_position::Position as P;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("replay", 1).await;
    for batch in 0..5i64 {
        let records = (0..4)
            .map(|i| timed_record(&format!("{}", batch * 4 + i), 10_000 + batch * 100 + i))
            .collect();
        clients
            .broker
            .produce(produce_records("replay", 0, records))
            .await
            .expect("produce");
    }
    let all: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(
        fetch_values(&mut clients, "replay", at(P::Earliest(true))).await,
        all
    );
    assert_eq!(
        fetch_values(&mut clients, "replay", at(P::Offset(13))).await,
        all[13..]
    );
    // Batch 2 holds timestamps 10200..10203 at offsets 8..11.
    assert_eq!(
        fetch_values(&mut clients, "replay", at(P::TimestampMs(10_202))).await,
        all[10..]
    );
    assert_eq!(
        fetch_values(&mut clients, "replay", at(P::TimestampMs(10_150))).await,
        all[8..]
    );
    assert!(
        fetch_values(&mut clients, "replay", at(P::TimestampMs(99_999)))
            .await
            .is_empty()
    );
    assert!(
        fetch_values(&mut clients, "replay", at(P::Latest(true)))
            .await
            .is_empty()
    );
    let table = [
        (P::Earliest(true), 0),
        (P::Latest(true), 20),
        (P::Offset(7), 7),
        (P::TimestampMs(10_301), 13),
        (P::TimestampMs(0), 0),
        (P::TimestampMs(99_999), 20),
    ];
    for (position, expected) in table {
        let listed = clients
            .broker
            .list_offsets(pb::ListOffsetsRequest {
                topic: "replay".to_string(),
                partition: 0,
                position: at(position),
            })
            .await
            .expect("list offsets")
            .into_inner();
        assert_eq!(listed.offset, expected, "{position:?}");
        assert_eq!(listed.high_watermark, 20);
    }
}

/// A long poll at the end waits its max_wait when nothing comes, and returns the new record
/// when one is produced while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_waits_and_wakes_on_new_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("poll", 1).await;
    // From offset 0, the next one to be written, not from "latest": a waiting fetch that
    // reaches the broker after the produce below (a loaded machine runs the spawned task
    // late) must still find the record, not wait past it.
    let request = |max_wait_ms| pb::FetchRequest {
        topic: "poll".to_string(),
        partition: 0,
        start: at(pb::start_position::Position::Offset(0)),
        max_wait_ms,
        min_bytes: 1,
        decode: true,
        ..pb::FetchRequest::default()
    };
    let started = std::time::Instant::now();
    let empty = clients
        .broker
        .fetch(request(300))
        .await
        .expect("fetch")
        .into_inner();
    assert!(empty.records.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the poll waited"
    );
    let mut poller = clients.broker.clone();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let fetched = poller
            .fetch(request(20_000))
            .await
            .expect("fetch")
            .into_inner();
        (fetched, started.elapsed())
    });
    clients
        .broker
        .produce(produce_records("poll", 0, vec![record("k", "new")]))
        .await
        .expect("produce");
    let (fetched, elapsed) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("bounded")
        .expect("task");
    assert_eq!(fetched.records.len(), 1);
    assert!(elapsed < Duration::from_secs(20), "woke before max_wait");
}

/// A subscription sends no more batch bytes than the credit granted, then continues when more
/// is granted, and wakes on new data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_honours_credit() {
    use pb::subscribe_request::{Credit, Request as R, Start};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("credit", 1).await;
    let mut batch_bytes = 0;
    for i in 0..10 {
        let mut builder = strata_proto::batch::BatchBuilder::new();
        builder.push(1, None, Some(&[i as u8; 1000]), &[]);
        let batch = builder.finish();
        batch_bytes = batch.len() as u64;
        clients
            .broker
            .produce(batch_request("credit", 0, batch, i))
            .await
            .expect("produce");
    }
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::SubscribeRequest {
            request: Some(R::Start(Start {
                topic: "credit".to_string(),
                partition: 0,
                start: at(pb::start_position::Position::Earliest(true)),
                decode: false,
            })),
        })
        .await
        .expect("send");
    let grant = |bytes| pb::SubscribeRequest {
        request: Some(R::Credit(Credit { bytes })),
    };
    requests
        .send(grant(batch_bytes * 3 + 10))
        .await
        .expect("credit");
    let mut stream = clients
        .broker
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("subscribe")
        .into_inner();
    let mut received = 0u64;
    let mut next_offset = 0;
    while next_offset < 3 {
        let message = stream.message().await.expect("message").expect("open");
        received += message.batches.iter().map(|b| b.len() as u64).sum::<u64>();
        next_offset = message.next_offset;
    }
    assert_eq!(received, batch_bytes * 3, "exactly what the credit covers");
    let early = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(early.is_err(), "nothing beyond the credit: {early:?}");
    requests
        .send(grant(batch_bytes * 100))
        .await
        .expect("credit");
    while next_offset < 10 {
        let message = stream.message().await.expect("message").expect("open");
        received += message.batches.iter().map(|b| b.len() as u64).sum::<u64>();
        next_offset = message.next_offset;
    }
    assert_eq!(received, batch_bytes * 10);
    clients
        .broker
        .produce(produce_records("credit", 0, vec![record("k", "late")]))
        .await
        .expect("produce");
    let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("woke on new data")
        .expect("message")
        .expect("open");
    assert_eq!(message.next_offset, 11);
}

/// kill -9 while a producer streams batches, restart: every acknowledged record is there, in
/// order, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_produce_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("crash", 1).await;
    let (requests, receiver) = tokio::sync::mpsc::channel(64);
    let mut responses = clients
        .broker
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("stream")
        .into_inner();
    let producer = tokio::spawn(async move {
        for i in 0..100_000u64 {
            let mut builder = strata_proto::batch::BatchBuilder::new();
            for j in 0..10 {
                builder.push(1, None, Some(format!("{}", i * 10 + j).as_bytes()), &[]);
            }
            if requests
                .send(batch_request("crash", 0, builder.finish(), i))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 200 {
        let response = responses.message().await.expect("message").expect("open");
        assert!(response.error.is_none());
        acknowledged.push(response);
    }
    server.kill9();
    // Replies already on the wire may still arrive; the stream then fails.
    while let Ok(Some(response)) = responses.message().await {
        if response.error.is_none() {
            acknowledged.push(response);
        }
    }
    producer.abort();
    server.restart();
    let mut clients = server.clients().await;
    let records = read_partition(&mut clients, "crash", 0).await;
    let values: Vec<u64> = records
        .iter()
        .map(|r| {
            std::str::from_utf8(r.value.as_deref().expect("value"))
                .expect("utf8")
                .parse()
                .expect("number")
        })
        .collect();
    assert!(
        values.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none twice, no gaps"
    );
    for response in &acknowledged {
        let i = response.request_id;
        assert!(
            response.last_offset < values.len() as u64,
            "acknowledged batch {i} lost"
        );
        assert_eq!(
            values[response.base_offset as usize],
            i * 10,
            "batch {i} at its offsets"
        );
    }
}

/// Retention removes old segments; reads below the log start fail with the valid range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_segments_and_reads_below_start_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients
        .admin
        .create_topic(pb::CreateTopicRequest {
            name: "retained".to_string(),
            partitions: 1,
            replication_factor: 1,
            config: Some(pb::TopicConfig {
                retention_bytes: Some(4096),
                segment_bytes: Some(2048),
                retention_ms: None,
                ..Default::default()
            }),
        })
        .await
        .expect("create");
    for i in 0..40 {
        let value = format!("{i:0>200}");
        clients
            .broker
            .produce(produce_records("retained", 0, vec![record("k", &value)]))
            .await
            .expect("produce");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let log_start = loop {
        let listed = clients
            .broker
            .list_offsets(pb::ListOffsetsRequest {
                topic: "retained".to_string(),
                partition: 0,
                position: at(pb::start_position::Position::Earliest(true)),
            })
            .await
            .expect("list")
            .into_inner();
        if listed.log_start_offset > 0 {
            break listed.log_start_offset;
        }
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        // Retention runs on a timer with no event to await: poll its outcome, bounded.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = clients
        .broker
        .fetch(pb::FetchRequest {
            topic: "retained".to_string(),
            partition: 0,
            start: at(pb::start_position::Position::Offset(0)),
            ..pb::FetchRequest::default()
        })
        .await
        .expect_err("below the log start");
    assert_eq!(error.code(), tonic::Code::OutOfRange);
    let detail = <pb::ErrorDetail as prost::Message>::decode(error.details()).expect("detail");
    assert_eq!(detail.code, pb::ErrorCode::OffsetOutOfRange as i32);
    let range = detail.valid_range.expect("range");
    assert!(range.log_start_offset >= log_start);
    assert_eq!(range.next_offset, 40);
    assert!(
        error.message().contains("valid offsets are"),
        "{}",
        error.message()
    );
}

/// SIGTERM stops the server cleanly (exit 0); a restart serves everything acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("durable", 3).await;
    for partition in 0..3 {
        clients
            .broker
            .produce(produce_records(
                "durable",
                partition,
                vec![record("k", "v"), record("k", "w")],
            ))
            .await
            .expect("produce");
    }
    drop(clients);
    assert_eq!(server.terminate(), Some(0), "clean exit");
    let address = server.address.clone();
    let restarted = ServerProcess::start_on(dir.path(), 1, &address);
    let mut clients = restarted.clients().await;
    for partition in 0..3 {
        let records = read_partition(&mut clients, "durable", partition).await;
        assert_eq!(records.len(), 2, "partition {partition}");
    }
    let topics = clients
        .admin
        .list_topics(pb::ListTopicsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(topics.topics.len(), 1);
}

/// The standard gRPC health service reports the broker serving, and server reflection lists
/// the strata.v1 services, so generic tools work without the proto at hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let channel = Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "strata.v1.Broker".to_string(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(status.status, ServingStatus::Serving as i32);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"strata.v1.Broker".to_string()), "{names:?}");
    assert!(names.contains(&"strata.v1.Admin".to_string()), "{names:?}");
}

/// Enough metadata changes for the controller to snapshot its state; after a restart the
/// metadata is rebuilt from the snapshot plus the entries after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_snapshot_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    for i in 0..700 {
        clients.create_topic(&format!("t{i}"), 1).await;
        if i % 2 == 0 {
            clients
                .admin
                .delete_topic(pb::DeleteTopicRequest {
                    name: format!("t{i}"),
                })
                .await
                .expect("delete");
        }
    }
    assert!(
        dir.path().join("controller/metadata.snapshot").exists(),
        "a snapshot was written"
    );
    // Retention (every 200 ms in tests) compacts the controller log behind the snapshot.
    let first_segment = dir.path().join("controller/00000000000000000000.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first_segment.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the controller log was never compacted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.restart();
    let mut clients = server.clients().await;
    let topics = clients
        .admin
        .list_topics(pb::ListTopicsRequest {})
        .await
        .expect("list")
        .into_inner();
    let mut names: Vec<String> = topics.topics.into_iter().map(|t| t.name).collect();
    names.sort();
    let mut expected: Vec<String> = (0..700)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("t{i}"))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    clients
        .broker
        .produce(produce_records("t699", 0, vec![record("k", "v")]))
        .await
        .expect("the partitions are back too");
}

/// Altering a topic's segment size takes effect on its open partitions: small segments roll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_segment_size_applies_to_open_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("altered", 1).await;
    let altered = clients
        .admin
        .alter_topic_config(pb::AlterTopicConfigRequest {
            name: "altered".to_string(),
            config: Some(pb::TopicConfig {
                segment_bytes: Some(2048),
                ..pb::TopicConfig::default()
            }),
            unset: Vec::new(),
        })
        .await
        .expect("alter")
        .into_inner();
    assert_eq!(altered.config.and_then(|c| c.segment_bytes), Some(2048));
    for i in 0..30 {
        let value = format!("{i:0>200}");
        clients
            .broker
            .produce(produce_records("altered", 0, vec![record("k", &value)]))
            .await
            .expect("produce");
    }
    let partition_dir = dir.path().join("topics/1-altered/00000");
    let segments = std::fs::read_dir(&partition_dir)
        .expect("partition directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments > 1, "segments rolled at the new size: {segments}");
}
