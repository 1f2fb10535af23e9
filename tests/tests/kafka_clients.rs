//! Every Kafka client nobody here wrote through the data path, besides confluent-kafka and
//! kafka-python's codecs (in `kafka_data.rs`): aiokafka (`tests/kafka/data.py aiokafka`),
//! kafkajs (`tests/kafka/clients.js`) and kcat each read metadata, produce keyed records with
//! headers in every codec they have, find offsets by time, and what they wrote is what gRPC
//! reads (and what gRPC wrote is what they read), byte for byte. Then an idempotent producer
//! of each client (kafka-python, aiokafka, kafkajs, kcat) keeps sending while its partition's
//! leader is killed on a 3-node cluster: every acknowledged record is stored once, in order, at
//! the offset acknowledged.
//!
//! Codecs: aiokafka and kcat (librdkafka) have all four; kafkajs has gzip only (snappy, lz4
//! and zstd need npm codec packages, kafkajs-snappy, kafkajs-lz4 and @kafkajs/zstd, which the
//! tests do not install). kafkajs has no consumer outside a consumer group, so its records are
//! read back over gRPC and by kcat only.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use strata_proto::v1 as pb;
use strata_tests::cluster::Cluster;
use strata_tests::kafka;
use strata_tests::server::Clients;

/// Longest a client program may run (they bound their own waits well below this).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// Every codec of Kafka's record batches ("none" included).
const ALL_CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

fn data_py(args: &[&str]) -> Vec<Value> {
    let mut command = kafka::python("data.py");
    command.args(args);
    kafka::json_lines(command, SCRIPT_TIMEOUT)
}

fn clients_js(args: &[&str]) -> Vec<Value> {
    let mut command = kafka::node("clients.js");
    command.args(args);
    kafka::json_lines(command, SCRIPT_TIMEOUT)
}

/// kcat with `args`, returning what it printed on stdout.
fn kcat(args: &[&str]) -> String {
    let mut command = Command::new(kafka::kcat());
    command.args(args);
    let output = kafka::run(command, Duration::from_secs(60));
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn text(bytes: &Option<Bytes>) -> String {
    String::from_utf8_lossy(bytes.as_deref().unwrap_or_default()).to_string()
}

fn grpc_headers(record: &pb::Record) -> Vec<Value> {
    record
        .headers
        .iter()
        .map(|h| serde_json::json!([h.key, text(&h.value)]))
        .collect()
}

/// What a Kafka client printed (offset, key, value, headers, and the timestamp when printed)
/// equals what gRPC decodes, record by record.
fn assert_same_records(kafka: &[&Value], stored: &[pb::Record]) {
    assert_eq!(kafka.len(), stored.len(), "{kafka:?}");
    for (kafka, grpc) in kafka.iter().zip(stored) {
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
            kafka["headers"].as_array(),
            Some(&grpc_headers(grpc)),
            "{kafka}"
        );
        if let Some(timestamp) = kafka.get("timestamp") {
            assert_eq!(timestamp.as_i64(), Some(grpc.timestamp_ms), "{kafka}");
        }
    }
}

/// Produces `count` keyed records with a header over gRPC to partition 0.
async fn grpc_produce(clients: &mut Clients, topic: &str, count: u64) {
    clients
        .broker
        .produce(pb::ProduceRequest {
            topic: topic.to_string(),
            target: Some(pb::produce_request::Target::Partition(0)),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records: (0..count)
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
        .expect("gRPC produce");
}

fn assert_metadata(lines: &[Value], partitions: &[u64], leader: u64) {
    let metadata = lines
        .iter()
        .find(|l| l["kind"] == "metadata")
        .unwrap_or_else(|| panic!("no metadata line: {lines:?}"));
    let listed: Vec<u64> = metadata["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(listed, partitions, "{metadata}");
    assert_eq!(metadata["leader"].as_u64(), Some(leader), "{metadata}");
}

/// aiokafka: metadata (two partitions, node 1 leading), keyed records with headers in all five
/// codecs to partition 0, client-stamped records to partition 1 found by offsets_for_times and
/// consumed from a time; then a consumer from earliest reads three gRPC-produced records and
/// everything aiokafka sent, in both partitions, exactly as gRPC decodes them.
#[tokio::test(flavor = "multi_thread")]
async fn aiokafka_reads_metadata_produces_every_codec_and_consumes_by_time() {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "aio", 2).await;
    grpc_produce(&mut clients, "aio", 3).await;
    let mut args = vec!["aiokafka", &kafka::bootstrap(&server), "aio", "3"]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    args.extend(ALL_CODECS.iter().map(|c| c.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = data_py(&args);
    assert_metadata(&lines, &[0, 1], server.node_id());
    let produced = lines.iter().filter(|l| l["kind"] == "produced").count();
    assert_eq!(produced, ALL_CODECS.len(), "{lines:?}");
    let consumed = |partition: u64| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["kind"] == "record" && l["partition"] == partition)
            .collect()
    };
    assert_eq!(consumed(0).len(), 3 + ALL_CODECS.len() * 20);
    assert_eq!(
        consumed(0)[0]["headers"],
        serde_json::json!([["via", "grpc"]])
    );
    assert_eq!(consumed(1).len(), 10);
    for partition in [0, 1] {
        let stored = kafka::grpc_records(&mut clients, "aio", partition).await;
        assert_same_records(&consumed(partition.into()), &stored);
    }
}

/// kafkajs: metadata, keyed records with headers uncompressed and in gzip (its only built-in
/// codec), client-stamped records (partition 1) found by fetchTopicOffsetsByTimestamp; gRPC
/// reads back exactly
/// what kafkajs says it stored at each offset, and kcat consumes the same.
#[tokio::test(flavor = "multi_thread")]
async fn kafkajs_reads_metadata_produces_gzip_and_finds_offsets_by_time() {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "js", 2).await;
    let lines = clients_js(&["data", &kafka::bootstrap(&server), "js", "none", "gzip"]);
    assert_metadata(&lines, &[0, 1], server.node_id());
    assert!(lines.iter().any(|l| l["kind"] == "timestamps"), "{lines:?}");
    let sent = |partition: u64| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["kind"] == "sent" && l["partition"].as_u64().unwrap_or(0) == partition)
            .collect()
    };
    assert_eq!(sent(0).len(), 2 * 20, "{lines:?}");
    assert_eq!(sent(1).len(), 10, "{lines:?}");
    assert_same_records(&sent(1), &kafka::grpc_records(&mut clients, "js", 1).await);
    let stored = kafka::grpc_records(&mut clients, "js", 0).await;
    assert_same_records(&sent(0), &stored);

    let printed = kcat(&[
        "-b",
        &kafka::bootstrap(&server),
        "-C",
        "-t",
        "js",
        "-p",
        "0",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%o|%k|%s\\n",
    ]);
    let want: String = stored
        .iter()
        .map(|r| format!("{}|{}|{}\n", r.offset, text(&r.key), text(&r.value)))
        .collect();
    assert_eq!(printed, want);
}

/// kcat: metadata (-L -J), keyed records (-K) with headers (-H) in all five codecs (-z), then a
/// consumer from the beginning and one from a timestamp (-o s@MS) print exactly what gRPC
/// decodes, three gRPC-produced records included.
#[tokio::test(flavor = "multi_thread")]
async fn kcat_reads_metadata_produces_every_codec_and_consumes_by_time() {
    let (data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "kc", 2).await;
    grpc_produce(&mut clients, "kc", 3).await;
    let bootstrap = kafka::bootstrap(&server);

    let listed: Value = serde_json::from_str(&kcat(&["-b", &bootstrap, "-L", "-J", "-t", "kc"]))
        .expect("kcat -J prints JSON");
    let topic = &listed["topics"][0];
    assert_eq!(topic["topic"], "kc", "{listed}");
    let partitions = topic["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2, "{listed}");
    for partition in partitions {
        assert_eq!(
            partition["leader"].as_u64(),
            Some(server.node_id()),
            "{listed}"
        );
    }

    let mut want: Vec<(String, String, Vec<Value>)> = Vec::new();
    for codec in ALL_CODECS {
        let input = data.path().join(format!("kcat-{codec}.txt"));
        let records: Vec<(String, String)> = (0..20)
            .map(|i| {
                (
                    format!("k-{codec}-{i}"),
                    format!("v-{codec}-{i}").repeat(1 + i % 7),
                )
            })
            .collect();
        let lines: String = records.iter().map(|(k, v)| format!("{k}|{v}\n")).collect();
        std::fs::write(&input, lines).expect("writing kcat's input");
        kcat(&[
            "-b",
            &bootstrap,
            "-P",
            "-t",
            "kc",
            "-p",
            "0",
            "-z",
            codec,
            "-K",
            "|",
            "-H",
            &format!("codec={codec}"),
            "-H",
            "via=kcat",
            "-X",
            "acks=all",
            "-l",
            input.to_str().expect("a UTF-8 path"),
        ]);
        want.extend(records.into_iter().map(|(k, v)| {
            (
                k,
                v,
                vec![
                    serde_json::json!(["codec", codec]),
                    serde_json::json!(["via", "kcat"]),
                ],
            )
        }));
    }
    let stored = kafka::grpc_records(&mut clients, "kc", 0).await;
    assert_eq!(stored.len(), 3 + want.len());
    for (grpc, (key, value, headers)) in stored[3..].iter().zip(&want) {
        assert_eq!(text(&grpc.key), *key);
        assert_eq!(text(&grpc.value), *value);
        assert_eq!(grpc_headers(grpc), *headers, "{grpc:?}");
    }

    let format = ["-f", "%o|%k|%s|%h|%T\\n"];
    let print = |records: &[pb::Record]| -> String {
        records
            .iter()
            .map(|r| {
                let headers: Vec<String> = r
                    .headers
                    .iter()
                    .map(|h| format!("{}={}", h.key, text(&h.value)))
                    .collect();
                format!(
                    "{}|{}|{}|{}|{}\n",
                    r.offset,
                    text(&r.key),
                    text(&r.value),
                    headers.join(","),
                    r.timestamp_ms
                )
            })
            .collect()
    };
    let consumed = |start: &str| {
        let mut args = vec![
            "-b", &bootstrap, "-C", "-t", "kc", "-p", "0", "-o", start, "-e", "-q",
        ];
        args.extend(format);
        kcat(&args)
    };
    assert_eq!(consumed("beginning"), print(&stored));
    // From a time: the first record stamped later than the one before it (each kcat run
    // stamps its own records, so there is one at every codec's start).
    let from = (4..stored.len())
        .find(|&i| stored[i].timestamp_ms > stored[i - 1].timestamp_ms)
        .expect("records stamped at two different times");
    assert_eq!(
        consumed(&format!("s@{}", stored[from].timestamp_ms)),
        print(&stored[from..]),
        "from record {from}'s timestamp"
    );
}

// ---- Idempotent producers across a leader kill ---------------------------------------------

const IDEMPOTENT_RECORDS: usize = 3000;

/// One idempotent producer sending the values 0..IDEMPOTENT_RECORDS, paced, to partition 0 of
/// `topic`; returns the JSON lines it printed (`acked` lines where the client reports offsets).
fn idempotent_producer(client: &'static str, bootstrap: String, topic: String) -> Vec<Value> {
    let count = IDEMPOTENT_RECORDS.to_string();
    match client {
        "kafka-python" | "aiokafka" => data_py(&["idempotent", &bootstrap, &topic, &count, client]),
        "kafkajs" => clients_js(&["idempotent", &bootstrap, &topic, &count]),
        "kcat" => {
            // kcat reads records from stdin: a paced writer keeps the stream running while the
            // leader is killed. kcat exits non-zero when a record is not delivered; it prints
            // no offsets, so every value must be stored.
            let mut command = Command::new("sh");
            command.arg("-c").arg(format!(
                "python3 -c 'import time\nfor i in range({count}):\n    print(i, flush=True)\n    \
                 time.sleep(0.003)' | {} -b {bootstrap} -P -t {topic} -p 0 \
                 -X enable.idempotence=true -X message.timeout.ms=120000 \
                 -X retry.backoff.ms=100 -X topic.metadata.refresh.interval.ms=1000",
                kafka::kcat().display()
            ));
            kafka::run(command, SCRIPT_TIMEOUT);
            Vec::new()
        }
        other => panic!("no idempotent producer for {other}"),
    }
}

/// Kills the leader of `topic`/0 once a sixth of the records are in, while `client`'s
/// idempotent producer sends; checks what is stored against what was acknowledged; restarts
/// the killed node and waits until every node holds the same records.
async fn survive_leader_kill(cluster: &mut Cluster, client: &'static str) {
    let topic = format!("idem-{client}");
    cluster.create_topic(&topic, 1, 3).await;
    let leader = cluster.leader_of(&topic, 0).await;
    let bootstrap = cluster.kafka_bootstrap();
    let producer = {
        let topic = topic.clone();
        std::thread::spawn(move || idempotent_producer(client, bootstrap, topic))
    };

    let mut clients = cluster.clients(leader).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = clients
            .broker
            .list_offsets(pb::ListOffsetsRequest {
                topic: topic.clone(),
                partition: 0,
                position: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::Latest(true)),
                }),
            })
            .await
            .expect("list offsets")
            .into_inner();
        if listed.offset as usize >= IDEMPOTENT_RECORDS / 6 {
            eprintln!(
                "{client}: killing node {leader} (the leader) at high watermark {}",
                listed.offset
            );
            break;
        }
        if producer.is_finished() {
            let lines = producer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            panic!("{client}: the producer ended before the kill: {lines:?}");
        }
        assert!(
            Instant::now() < deadline,
            "{client}: fewer than {} records in within 90 s (high watermark {})",
            IDEMPOTENT_RECORDS / 6,
            listed.offset
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.node(leader).kill9();

    let lines = tokio::task::spawn_blocking(move || producer.join())
        .await
        .expect("join")
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
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
    let summary = lines.iter().find(|l| l["kind"] == "summary");

    let new_leader = cluster.leader_of(&topic, 0).await;
    assert_ne!(new_leader, leader, "{client}");
    let stored = cluster
        .clients(new_leader)
        .await
        .read_values(&topic, 0)
        .await;
    let values: Vec<u64> = stored
        .iter()
        .map(|(_, value)| value.parse().expect("a number"))
        .collect();
    assert!(
        values.windows(2).all(|pair| pair[0] < pair[1]),
        "{client}: stored out of order or twice: {values:?}"
    );
    if client == "kcat" {
        // kcat succeeded, so it had every record acknowledged.
        let every: Vec<u64> = (0..IDEMPOTENT_RECORDS as u64).collect();
        assert_eq!(values, every, "{client}: not every record stored once");
    } else {
        assert!(
            !acked.is_empty(),
            "{client}: nothing acknowledged: {summary:?}"
        );
        let at: HashMap<u64, u64> = stored
            .iter()
            .map(|(offset, value)| (value.parse().expect("a number"), *offset))
            .collect();
        for (value, offset) in &acked {
            assert_eq!(
                at.get(value),
                Some(offset),
                "{client}: acknowledged record {value} at {offset}"
            );
        }
    }
    eprintln!(
        "{client}: {} acknowledged with offsets, {} stored; summary {summary:?}",
        acked.len(),
        stored.len()
    );

    cluster.node(leader).restart();
    cluster
        .wait_until_every_node_holds(&topic, 0, &stored, Duration::from_secs(60))
        .await;
}

/// An idempotent producer of kafka-python, aiokafka, kafkajs and kcat in turn (confluent-kafka's
/// is in `kafka_data.rs`), each on a topic of its own replicated three times: its partition's
/// leader is killed mid-stream, and every acknowledged record is stored exactly once, in the
/// order sent, at the offset the client was told; the killed node then rejoins and holds the
/// same records before the next client starts.
#[tokio::test(flavor = "multi_thread")]
async fn idempotent_producers_of_every_client_survive_a_leader_kill() {
    let mut cluster = Cluster::start_kafka(3, 115, &[]);
    for client in ["kafka-python", "aiokafka", "kafkajs", "kcat"] {
        survive_leader_kill(&mut cluster, client).await;
    }
}
