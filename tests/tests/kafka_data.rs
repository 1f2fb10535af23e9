//! The Kafka data path against real servers: Produce, Fetch, ListOffsets, InitProducerId and
//! topic admin, spoken by Kafka clients nobody here wrote (confluent-kafka, kafka-python and
//! kcat, driven through `tests/kafka/data.py`) and by hand where the exact bytes matter.
//! Records produced over Kafka are read back over gRPC, and records produced over gRPC are
//! consumed over Kafka.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde_json::Value;
use strata_proto::v1 as pb;
use strata_tests::cluster::Cluster;
use strata_tests::kafka;
use strata_tests::server::ServerProcess;

const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a client script may run (they bound their own waits well below this).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs `data.py ARGS` and returns its JSON lines.
fn data_py(args: &[&str]) -> Vec<Value> {
    let mut command = kafka::python("data.py");
    command.args(args);
    kafka::json_lines(command, SCRIPT_TIMEOUT)
}

fn text(bytes: &Option<Bytes>) -> String {
    String::from_utf8_lossy(bytes.as_deref().unwrap_or_default()).to_string()
}

/// The records a Kafka consumer printed equal what gRPC decodes, offset by offset: key, value,
/// headers and timestamp.
fn assert_same_records(consumed: &[&Value], stored: &[pb::Record]) {
    assert_eq!(consumed.len(), stored.len(), "{consumed:?}");
    for (kafka, grpc) in consumed.iter().zip(stored) {
        assert_eq!(kafka["offset"].as_u64(), Some(grpc.offset), "{kafka}");
        assert_eq!(
            kafka["key"].as_str(),
            Some(text(&grpc.key).as_str()),
            "{kafka}"
        );
        assert_eq!(
            kafka["value"].as_str(),
            Some(text(&grpc.value).as_str()),
            "{kafka}"
        );
        assert_eq!(
            kafka["timestamp"].as_i64(),
            Some(grpc.timestamp_ms),
            "{kafka}"
        );
        let headers: Vec<Value> = grpc
            .headers
            .iter()
            .map(|h| serde_json::json!([h.key, text(&h.value)]))
            .collect();
        assert_eq!(kafka["headers"].as_array(), Some(&headers), "{kafka}");
    }
}

/// Produces with both Python clients in `codecs`, consumes back with both, and checks what a
/// Kafka consumer read equals what gRPC reads.
async fn produce_in_codecs(codecs: &[&str]) {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "codecs", 1).await;
    let mut args = vec!["codecs", &kafka::bootstrap(&server), "codecs"]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    args.extend(codecs.iter().map(|c| c.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = data_py(&args);
    let produced = lines.iter().filter(|l| l["kind"] == "produced").count();
    assert_eq!(produced, 2 * codecs.len(), "{lines:?}");
    let consumed: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "record").collect();
    assert_eq!(consumed.len(), 2 * codecs.len() * 20);
    let stored = kafka::grpc_records(&mut clients, "codecs", 0).await;
    assert_same_records(&consumed, &stored);
}

/// confluent-kafka and kafka-python produce keyed records with headers, uncompressed and
/// LZ4-compressed, acks all; both consume them back from earliest, and gRPC decodes the same
/// records at the same offsets.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_produce_and_consume_uncompressed_and_lz4() {
    produce_in_codecs(&["none", "lz4"]).await;
}

/// As above in gzip, snappy and zstd: these batches pass validation once the codec work of
/// issue 13 is merged.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_produce_and_consume_gzip_snappy_and_zstd() {
    produce_in_codecs(&["gzip", "snappy", "zstd"]).await;
}

/// acks 0, 1 and all with confluent-kafka, 1 and all with kafka-python (acks 0 gets no
/// response, yet the records arrive; kafka-python 2.3 never sends an acks-0 request); then offsets by time (offsets_for_times in both clients, consuming from a time)
/// and the earliest and latest offsets.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_clients_acks_and_offsets_by_time() {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "acks", 1).await;
    kafka::create_topic(&mut clients, "times", 1).await;
    let lines = data_py(&["acks", &kafka::bootstrap(&server), "acks"]);
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "acks" && l["records"] == 25),
        "{lines:?}"
    );
    assert_eq!(kafka::grpc_records(&mut clients, "acks", 0).await.len(), 25);
    let lines = data_py(&["timestamps", &kafka::bootstrap(&server), "times"]);
    assert!(lines.iter().any(|l| l["kind"] == "timestamps"), "{lines:?}");
}

/// kafka-python's admin client creates a topic with configs, validates one without creating
/// it, is refused an unknown config naming it, describes configs and deletes the topic.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_admin_creates_describes_and_deletes_topics() {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    let lines = data_py(&["admin", &kafka::bootstrap(&server), "admin-topic"]);
    assert!(lines.iter().any(|l| l["kind"] == "admin"), "{lines:?}");
    let listed = clients
        .admin
        .list_topics(pb::ListTopicsRequest {})
        .await
        .expect("list topics")
        .into_inner();
    assert!(listed.topics.is_empty(), "{listed:?}");
}

// ---- By hand: the exact bytes -------------------------------------------------------------

fn connect(server: &ServerProcess) -> TcpStream {
    kafka::connect(&kafka::bootstrap(server), IO_TIMEOUT)
}

fn send<T: Encodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &T,
) {
    let mut header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strata-test")));
    header.unknown_tagged_fields.clear();
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api_key.request_header_version(version))
        .expect("header");
    request.encode(&mut body, version).expect("request");
    send_body(stream, &body);
}

fn send_body(stream: &mut TcpStream, body: &[u8]) {
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(body);
    stream.write_all(&frame).expect("sending");
}

fn receive(stream: &mut TcpStream, correlation_id: i32) -> Bytes {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("a response");
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut frame).expect("a response");
    let mut frame = Bytes::from(frame);
    assert_eq!(frame.get_i32(), correlation_id);
    frame
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce_request(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ])
}

fn fetch_request(topic: &str, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn fetch(stream: &mut TcpStream, request: &FetchRequest, correlation_id: i32) -> FetchResponse {
    send(stream, ApiKey::Fetch, 10, correlation_id, request);
    let mut body = receive(stream, correlation_id);
    FetchResponse::decode(&mut body, 10).expect("fetch response")
}

/// Two batches in one partition's records (split by their length fields) are stored byte for
/// byte as sent (but for the base offset and leader epoch the broker stamps) and come back
/// over gRPC and Kafka Fetch unchanged, one whole batch even when the fetch limits are
/// smaller; Produce v2 is answered UNSUPPORTED_FOR_MESSAGE_FORMAT;
/// records produced over gRPC reach kcat with key, value, headers and offset.
#[tokio::test(flavor = "multi_thread")]
async fn batches_are_stored_as_sent_and_grpc_records_reach_kcat() {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "exact", 1).await;
    let first = strata_tests::data_batch("a", 3, 1_000).freeze();
    let second = strata_tests::data_batch("b", 2, 2_000).freeze();
    let mut both = BytesMut::new();
    both.extend_from_slice(&first);
    both.extend_from_slice(&second);

    let mut stream = connect(&server);
    send(
        &mut stream,
        ApiKey::Produce,
        7,
        1,
        &produce_request("exact", both.freeze(), -1),
    );
    let mut body = receive(&mut stream, 1);
    let produced = ProduceResponse::decode(&mut body, 7).expect("produce response");
    let partition = &produced.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0, "{produced:?}");
    let base_offset = partition.base_offset as u64;
    assert_eq!(partition.log_append_time_ms, -1);
    assert_eq!(partition.log_start_offset, 0);

    let fetched = clients
        .broker
        .fetch(pb::FetchRequest {
            topic: "exact".to_string(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Offset(base_offset)),
            }),
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .expect("gRPC fetch")
        .into_inner();
    let stored: Vec<u8> = fetched.batches.concat();
    let sent = [&first[..], &second[..]];
    let mut at = 0;
    for (i, batch) in sent.iter().enumerate() {
        let copy = &stored[at..at + batch.len()];
        // Base offset (0..8) and partition leader epoch (12..16) are stamped by the broker;
        // everything else, the CRC included, is the client's.
        assert_eq!(&copy[8..12], &batch[8..12], "batch {i}: length");
        assert_eq!(&copy[16..], &batch[16..], "batch {i}: the rest");
        at += batch.len();
    }
    assert_eq!(
        u64::from_be_bytes(stored[..8].try_into().expect("8 bytes")),
        base_offset
    );

    // The same bytes through Kafka's Fetch.
    let response = fetch(
        &mut stream,
        &fetch_request("exact", base_offset as i64, 0),
        2,
    );
    let answer = &response.responses[0].partitions[0];
    assert_eq!(answer.error_code, 0, "{response:?}");
    assert_eq!(response.session_id, 0);
    assert_eq!(answer.records.as_deref(), Some(&stored[..]));
    assert_eq!(answer.high_watermark, answer.last_stable_offset);

    // Limits below one batch still get one whole batch (Kafka's rule since 2.x), and no more.
    let mut tiny = fetch_request("exact", base_offset as i64, 0).with_max_bytes(1);
    tiny.topics[0].partitions[0].partition_max_bytes = 1;
    let response = fetch(&mut stream, &tiny, 10);
    let answer = &response.responses[0].partitions[0];
    assert_eq!(answer.error_code, 0, "{response:?}");
    assert_eq!(answer.records.as_deref(), Some(&stored[..first.len()]));

    // Produce v2: acks, timeout, one topic "exact" with partition 0 and a 3-byte record set.
    let mut old = BytesMut::new();
    old.put_i16(ApiKey::Produce as i16);
    old.put_i16(2);
    old.put_i32(3);
    old.put_i16(-1); // no client id
    old.put_i16(1);
    old.put_i32(1000);
    old.put_i32(1);
    old.put_i16(5);
    old.put_slice(b"exact");
    old.put_i32(1);
    old.put_i32(0);
    old.put_i32(3);
    old.put_slice(b"old");
    send_body(&mut stream, &old);
    let mut body = receive(&mut stream, 3);
    assert_eq!(body.get_i32(), 1, "one topic");
    let name_len = body.get_i16() as usize;
    body.advance(name_len);
    assert_eq!(body.get_i32(), 1, "one partition");
    assert_eq!(body.get_i32(), 0);
    assert_eq!(body.get_i16(), 43, "UNSUPPORTED_FOR_MESSAGE_FORMAT");

    // Records produced over gRPC, consumed by kcat.
    let grpc = clients
        .broker
        .produce(pb::ProduceRequest {
            topic: "exact".to_string(),
            target: Some(pb::produce_request::Target::Partition(0)),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records: (0..3)
                    .map(|i| pb::Record {
                        key: Some(Bytes::from(format!("gk{i}"))),
                        value: Some(Bytes::from(format!("gv{i}"))),
                        headers: vec![pb::RecordHeader {
                            key: "via".to_string(),
                            value: Some(Bytes::from_static(b"grpc")),
                        }],
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        })
        .await
        .expect("gRPC produce")
        .into_inner();
    let mut kcat = std::process::Command::new(kafka::kcat());
    kcat.args([
        "-b",
        &kafka::bootstrap(&server),
        "-C",
        "-t",
        "exact",
        "-p",
        "0",
        "-o",
        &grpc.base_offset.to_string(),
        "-e",
        "-q",
        "-f",
        "%o|%k|%s|%h\\n",
    ]);
    let output = kafka::run(kcat, Duration::from_secs(60));
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    let want: String = (0..3)
        .map(|i| format!("{}|gk{i}|gv{i}|via=grpc\n", grpc.base_offset + i))
        .collect();
    assert_eq!(printed, want);
}

/// Fetch at the high watermark waits up to max_wait (a long poll, not an empty answer at
/// once) and returns as soon as a batch commits; an incremental fetch of an unknown session
/// gets FETCH_SESSION_ID_NOT_FOUND; a fetch past the high watermark OFFSET_OUT_OF_RANGE.
#[tokio::test(flavor = "multi_thread")]
async fn fetch_long_polls_and_refuses_sessions_and_bad_offsets() {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "poll", 1).await;
    let mut stream = connect(&server);

    let latest = |response: &FetchResponse| response.responses[0].partitions[0].high_watermark;
    let started = Instant::now();
    let response = fetch(&mut stream, &fetch_request("poll", 0, 0), 1);
    let high_watermark = latest(&response);

    let started_wait = Instant::now();
    let response = fetch(&mut stream, &fetch_request("poll", high_watermark, 400), 2);
    let waited = started_wait.elapsed();
    let answer = &response.responses[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    assert!(answer.records.as_ref().is_none_or(Bytes::is_empty));
    assert!(
        waited >= Duration::from_millis(400),
        "answered after {waited:?}"
    );

    // A long wait ended by a produce.
    send(
        &mut stream,
        ApiKey::Fetch,
        10,
        3,
        &fetch_request("poll", high_watermark, 20_000),
    );
    clients
        .broker
        .produce(pb::ProduceRequest {
            topic: "poll".to_string(),
            target: Some(pb::produce_request::Target::Partition(0)),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records: vec![pb::Record {
                    value: Some(Bytes::from_static(b"wake")),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        })
        .await
        .expect("gRPC produce");
    let mut body = receive(&mut stream, 3);
    let response = FetchResponse::decode(&mut body, 10).expect("fetch response");
    let answer = &response.responses[0].partitions[0];
    assert!(
        answer.records.as_ref().is_some_and(|r| !r.is_empty()),
        "{response:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the produce did not end the wait: {:?}",
        started.elapsed()
    );

    let response = fetch(
        &mut stream,
        &fetch_request("poll", 0, 0)
            .with_session_id(77)
            .with_session_epoch(3),
        4,
    );
    assert_eq!(response.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
    assert_eq!(response.session_id, 0);

    let response = fetch(&mut stream, &fetch_request("poll", 1_000_000, 0), 5);
    assert_eq!(
        response.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
}

/// With ACLs enforced and none granted, the anonymous principal is refused each API with
/// Kafka's authorization codes, per topic or partition (the request itself is answered):
/// TOPIC_AUTHORIZATION_FAILED for produce, fetch, list offsets and create, and
/// CLUSTER_AUTHORIZATION_FAILED for a producer id; a transactional id is refused as
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
#[tokio::test(flavor = "multi_thread")]
async fn refused_principals_get_kafka_authorization_codes() {
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::launch_with(
        data.path(),
        1,
        "127.0.0.1:0",
        None,
        &[
            "--kafka-listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--authorization".to_string(),
            "on".to_string(),
        ],
    );
    server.wait_ready();
    let mut stream = connect(&server);
    let batch = strata_tests::data_batch("x", 1, 1_000).freeze();

    send(
        &mut stream,
        ApiKey::Produce,
        7,
        1,
        &produce_request("secret", batch, -1),
    );
    let mut body = receive(&mut stream, 1);
    let produced = ProduceResponse::decode(&mut body, 7).expect("produce response");
    assert_eq!(
        produced.responses[0].partition_responses[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );

    let fetched = fetch(&mut stream, &fetch_request("secret", 0, 0), 2);
    assert_eq!(
        fetched.responses[0].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );

    let list = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name("secret"))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    send(&mut stream, ApiKey::ListOffsets, 4, 3, &list);
    let mut body = receive(&mut stream, 3);
    let listed = ListOffsetsResponse::decode(&mut body, 4).expect("list offsets response");
    assert_eq!(
        listed.topics[0].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );

    let create = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(topic_name("secret"))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    send(&mut stream, ApiKey::CreateTopics, 3, 4, &create);
    let mut body = receive(&mut stream, 4);
    let created = CreateTopicsResponse::decode(&mut body, 3).expect("create topics response");
    assert_eq!(created.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    let message = created.topics[0]
        .error_message
        .as_deref()
        .unwrap_or_default();
    assert!(message.contains("secret"), "{message}");

    let idempotent = InitProducerIdRequest::default().with_transactional_id(None);
    send(&mut stream, ApiKey::InitProducerId, 1, 5, &idempotent);
    let mut body = receive(&mut stream, 5);
    let id = InitProducerIdResponse::decode(&mut body, 1).expect("init producer id response");
    assert_eq!(id.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert_eq!(id.producer_id.0, -1);

    // Transactions do not exist: refused whoever asks.
    let transactional = InitProducerIdRequest::default().with_transactional_id(Some(
        kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("tx")),
    ));
    send(&mut stream, ApiKey::InitProducerId, 1, 6, &transactional);
    let mut body = receive(&mut stream, 6);
    let id = InitProducerIdResponse::decode(&mut body, 1).expect("init producer id response");
    assert_eq!(id.error_code, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
}

/// An idempotent confluent-kafka producer sends records while the partition's leader is
/// killed with SIGKILL on a 3-node cluster: every acknowledged record is stored exactly once,
/// in the order sent, at the offset its acknowledgement named, and no record is stored twice.
#[tokio::test(flavor = "multi_thread")]
async fn idempotent_kafka_producer_survives_a_leader_kill() {
    const RECORDS: usize = 3000;
    let mut cluster = Cluster::start_kafka(3, 100, &[]);
    cluster.create_topic("idem", 1, 3).await;
    let leader = cluster.leader_of("idem", 0).await;
    let bootstrap = cluster.kafka_bootstrap();
    let producer = std::thread::spawn(move || {
        data_py(&["idempotent", &bootstrap, "idem", &RECORDS.to_string()])
    });

    // Kill the leader once a sixth of the records are in.
    let mut clients = cluster.clients(leader).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = clients
            .broker
            .list_offsets(pb::ListOffsetsRequest {
                topic: "idem".to_string(),
                partition: 0,
                position: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::Latest(true)),
                }),
            })
            .await
            .expect("list offsets")
            .into_inner();
        if listed.offset as usize >= RECORDS / 6 {
            eprintln!(
                "killing node {leader} (the leader) at high watermark {}",
                listed.offset
            );
            break;
        }
        if producer.is_finished() {
            // Its failure (with everything the script printed), or what it printed.
            let lines = producer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            panic!("the producer ended before the kill: {lines:?}");
        }
        assert!(
            Instant::now() < deadline,
            "the producer did not get {} records in within 90 s (high watermark {})",
            RECORDS / 6,
            listed.offset
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.node(leader).kill9();

    let lines = tokio::task::spawn_blocking(move || producer.join().expect("producer thread"))
        .await
        .expect("join");
    let summary = lines
        .iter()
        .find(|l| l["kind"] == "summary")
        .expect("a summary line");
    let acked: Vec<(u64, u64)> = lines
        .iter()
        .filter(|l| l["kind"] == "acked")
        .map(|l| {
            (
                l["value"].as_u64().expect("value"),
                l["offset"].as_u64().expect("offset"),
            )
        })
        .collect();
    assert!(!acked.is_empty(), "{summary}");

    let new_leader = cluster.leader_of("idem", 0).await;
    assert_ne!(new_leader, leader);
    let stored = cluster
        .clients(new_leader)
        .await
        .read_values("idem", 0)
        .await;
    let values: Vec<u64> = stored
        .iter()
        .map(|(_, value)| value.parse().expect("a number"))
        .collect();
    // No record twice, in the order sent.
    assert!(
        values.windows(2).all(|pair| pair[0] < pair[1]),
        "stored out of order or twice: {values:?}"
    );
    let at: std::collections::HashMap<u64, u64> = stored
        .iter()
        .map(|(offset, value)| (value.parse().expect("a number"), *offset))
        .collect();
    for (value, offset) in &acked {
        assert_eq!(
            at.get(value),
            Some(offset),
            "acknowledged record {value} at {offset}"
        );
    }
    eprintln!(
        "{} of {RECORDS} acknowledged, {} stored; summary {summary}",
        acked.len(),
        stored.len()
    );
}
