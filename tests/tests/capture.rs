//! Continuous capture (issue 15) against real servers: every acknowledged record in exactly
//! one Parquet file, read back by pyarrow and DuckDB (`tests/analytics/capture_check.py`), on
//! one node and on a 3-node cluster whose leaders are killed while producing; retention held
//! back until records are captured (and not with `capture.block-retention=false`); capture lag
//! in describe; bad capture configs refused, creating nothing; capture to an S3-compatible
//! bucket (moto's server) and a bucket that does not exist. Loopback slots 155-159 and 161.

use std::path::Path;
use std::time::{Duration, Instant};

use strata_proto::batch::BatchBuilder;
use strata_proto::v1 as pb;
use strata_tests::cluster::Cluster;
use strata_tests::s3::S3Server;
use strata_tests::server::{Clients, ServerProcess};
use strata_tests::{Seed, error_code, kafka};

/// How long a test waits for capture to catch up with what was produced.
const CAPTURE_WAIT: Duration = Duration::from_secs(60);

fn capture_config(dir: &Path, interval_ms: u64, max_bytes: u64) -> pb::TopicConfig {
    pb::TopicConfig {
        capture_dir: Some(dir.display().to_string()),
        capture_interval_ms: Some(interval_ms),
        capture_max_bytes: Some(max_bytes),
        ..Default::default()
    }
}

async fn create(
    clients: &mut Clients,
    name: &str,
    partitions: u32,
    config: pb::TopicConfig,
) -> Result<pb::TopicDescription, tonic::Status> {
    clients
        .admin
        .create_topic(pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            config: Some(config),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn describe(clients: &mut Clients, name: &str) -> pb::TopicDescription {
    clients
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            name: name.to_string(),
        })
        .await
        .expect("describe")
        .into_inner()
}

/// Produces `count` one-record batches to `partition`, value `{topic}-{partition}-{i}`, and
/// returns the acknowledged (partition, offset, value) triples.
async fn produce(
    clients: &mut Clients,
    topic: &str,
    partition: u32,
    count: usize,
) -> Vec<(u32, u64, String)> {
    let mut acked = Vec::new();
    for i in 0..count {
        let value = format!("{topic}-{partition}-{i:0>100}");
        let reply = clients
            .broker
            .produce(pb::ProduceRequest {
                topic: topic.to_string(),
                target: Some(pb::produce_request::Target::Partition(partition)),
                payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                    records: vec![pb::Record {
                        key: Some(b"k".to_vec().into()),
                        value: Some(value.clone().into_bytes().into()),
                        ..Default::default()
                    }],
                })),
                ..pb::ProduceRequest::default()
            })
            .await
            .expect("produce")
            .into_inner();
        acked.push((partition, reply.base_offset, value));
    }
    acked
}

/// Waits until every partition of `topic` is captured up to its high watermark (as `clients`'
/// node describes it).
async fn wait_captured(clients: &mut Clients, topic: &str) -> pb::TopicDescription {
    let deadline = Instant::now() + CAPTURE_WAIT;
    loop {
        let described = describe(clients, topic).await;
        let done = described.partition_info.iter().all(|info| {
            info.capture_next_offset
                .is_some_and(|next| next >= info.high_watermark && info.high_watermark > 0)
        });
        if done {
            return described;
        }
        assert!(
            Instant::now() < deadline,
            "capture did not catch up within {CAPTURE_WAIT:?}: {:?}",
            described.partition_info
        );
        // Capture runs on the leader's timer: poll its outcome, bounded.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the Python checker on `dir` with the records that must be there.
fn check(dir: &Path, topic: &str, records: &[(u32, u64, String)]) -> serde_json::Value {
    let expected = tempfile::NamedTempFile::new().expect("temp file");
    let json = serde_json::json!({ "topic": topic, "records": records });
    std::fs::write(expected.path(), json.to_string()).expect("write expected");
    let mut command = kafka::python_script("tests/analytics/capture_check.py");
    command.arg(dir).arg(expected.path());
    let output = kafka::run(command, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "capture_check.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("checker's summary")
}

/// One node, two partitions, windows closed by size (4 KiB) and by time (1 s): every record
/// is in exactly one Hive-named file, no temporary file is visible, DuckDB and pyarrow count
/// what was produced; describe shows capture lag 0 once caught up, and the lag of a topic whose
/// window is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_captures_every_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture");
    let server = ServerProcess::start_on(&dir.path().join("node"), 1, "127.0.155.1:0");
    let mut clients = server.clients().await;
    create(
        &mut clients,
        "events",
        2,
        capture_config(&capture, 1_000, 4096),
    )
    .await
    .expect("create captured topic");
    let mut records = Vec::new();
    for round in 0..3 {
        for partition in 0..2 {
            records.extend(produce(&mut clients, "events", partition, 40).await);
        }
        if round == 1 {
            // Let a time-closed window happen between the size-closed ones.
            wait_captured(&mut clients, "events").await;
        }
    }
    let described = wait_captured(&mut clients, "events").await;
    for info in &described.partition_info {
        assert_eq!(info.capture_next_offset, Some(info.high_watermark));
    }
    let summary = check(&capture, "events", &records);
    assert_eq!(summary["rows"], records.len());
    assert!(summary["files"].as_u64().expect("files") > 2, "{summary}");

    // A window open for an hour: describe shows the lag.
    let idle = dir.path().join("idle");
    create(
        &mut clients,
        "slow",
        1,
        capture_config(&idle, 3_600_000, 1 << 30),
    )
    .await
    .expect("create slow topic");
    produce(&mut clients, "slow", 0, 5).await;
    let info = describe(&mut clients, "slow").await.partition_info[0].clone();
    assert_eq!(info.capture_next_offset, Some(0));
    assert_eq!(info.high_watermark, 5);
    // Not captured: no file, and (see below) an uncaptured topic shows no capture position.
    let uncaptured = create(&mut clients, "plain", 1, pb::TopicConfig::default())
        .await
        .expect("create plain topic");
    assert_eq!(uncaptured.partition_info[0].capture_next_offset, None);
}

/// Bad capture configs are refused with INVALID_CONFIG naming what is wrong and what is valid,
/// and create neither the topic nor any directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_capture_configs_are_refused_creating_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start_on(&dir.path().join("node"), 1, "127.0.156.1:0");
    let mut clients = server.clients().await;
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"in the way").expect("file");
    let under_file = blocker.join("capture");
    let fresh = dir.path().join("never-created");
    let cases: Vec<(&str, pb::TopicConfig, &str)> = vec![
        (
            "relative path",
            pb::TopicConfig {
                capture_dir: Some("relative/capture".to_string()),
                ..Default::default()
            },
            "absolute",
        ),
        (
            "not a bucket name",
            pb::TopicConfig {
                capture_dir: Some("s3://Bad_Bucket/prefix".to_string()),
                ..Default::default()
            },
            "not a bucket name",
        ),
        (
            "a file in the way",
            capture_config(&under_file, 1_000, 4096),
            "a-file/capture",
        ),
        (
            "unknown format",
            pb::TopicConfig {
                capture_format: Some("avro".to_string()),
                ..capture_config(&fresh, 1_000, 4096)
            },
            "parquet",
        ),
        (
            "interval too short",
            capture_config(&fresh, 10, 4096),
            "capture.interval-ms",
        ),
    ];
    for (why, config, says) in cases {
        let status = create(&mut clients, "bad", 1, config).await.expect_err(why);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{why}: {status:?}"
        );
        assert_eq!(error_code(&status), "ERROR_CODE_INVALID_CONFIG", "{why}");
        assert!(
            status.message().contains(says),
            "{why}: {}",
            status.message()
        );
    }
    assert!(!fresh.exists(), "nothing created");
    assert!(!under_file.exists());
    let status = clients
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            name: "bad".to_string(),
        })
        .await
        .expect_err("no topic created");
    assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION");
}

/// Log start offset of partition 0 of `topic`.
async fn log_start(clients: &mut Clients, topic: &str) -> u64 {
    describe(clients, topic).await.partition_info[0].log_start_offset
}

/// Retention (tiny segments, 1 ms) removes a plain topic's segments, but not a captured
/// topic's until they are captured; with `capture.block-retention=false` it removes them
/// anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_capture_unless_told_not_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("capture");
    let server = ServerProcess::start_on(&dir.path().join("node"), 1, "127.0.157.1:0");
    let mut clients = server.clients().await;
    let retained = |config: pb::TopicConfig| pb::TopicConfig {
        retention_ms: Some(1),
        segment_bytes: Some(1024),
        ..config
    };
    let hour = 3_600_000;
    create(&mut clients, "plain", 1, retained(Default::default()))
        .await
        .expect("plain");
    create(
        &mut clients,
        "held",
        1,
        retained(capture_config(&capture, hour, 1 << 30)),
    )
    .await
    .expect("held");
    let unheld = pb::TopicConfig {
        capture_block_retention: Some(false),
        ..capture_config(&capture, hour, 1 << 30)
    };
    create(&mut clients, "unheld", 1, retained(unheld))
        .await
        .expect("unheld");
    let mut held = Vec::new();
    for topic in ["plain", "held", "unheld"] {
        let acked = produce(&mut clients, topic, 0, 60).await;
        if topic == "held" {
            held = acked;
        }
    }
    let deadline = Instant::now() + CAPTURE_WAIT;
    while log_start(&mut clients, "plain").await == 0
        || log_start(&mut clients, "unheld").await == 0
    {
        assert!(Instant::now() < deadline, "retention never ran");
        // Retention runs on a timer with no event to await: poll its outcome, bounded.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Retention has run (it removed the others' segments): the held topic kept everything.
    assert_eq!(log_start(&mut clients, "held").await, 0);
    // Capture it: its segments go once captured, and every record is in a file.
    clients
        .admin
        .alter_topic_config(pb::AlterTopicConfigRequest {
            name: "held".to_string(),
            config: Some(pb::TopicConfig {
                capture_interval_ms: Some(1_000),
                ..Default::default()
            }),
            unset: Vec::new(),
        })
        .await
        .expect("alter");
    wait_captured(&mut clients, "held").await;
    while log_start(&mut clients, "held").await == 0 {
        assert!(
            Instant::now() < deadline,
            "retention never ran after capture"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held_dir = dir.path().join("held-only");
    std::fs::create_dir(&held_dir).expect("dir");
    std::fs::rename(capture.join("held"), held_dir.join("held")).expect("move held files");
    check(&held_dir, "held", &held);
}

/// A 3-node cluster, two partitions of three replicas: while records are produced the leader
/// of partition 0 is killed (kill -9) twice, mid-window, and restarted. Every acknowledged
/// record is in exactly one file, no offset twice or missing, DuckDB's count matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_captures_exactly_once_across_leader_kills() {
    let mut seed = Seed::from_env("cluster_captures_exactly_once_across_leader_kills", 15);
    let mut cluster = Cluster::start(3, 158);
    let capture = cluster.dir.path().join("capture");
    cluster
        .create_topic_with(
            "events",
            2,
            3,
            Some(capture_config(&capture, 1_000, 8 * 1024)),
        )
        .await;
    let producer = cluster.producer_id().await;
    let mut sequences = [0i32; 2];
    let mut records = Vec::new();
    for round in 0..6 {
        for partition in 0..2u32 {
            for _ in 0..10 {
                let sequence = sequences[partition as usize];
                let value = format!(
                    "r{round}-p{partition}-s{sequence}-{:0>60}",
                    seed.below(1000)
                );
                let mut builder = BatchBuilder::new().producer(producer, 0, sequence);
                builder.push(1, Some(b"k"), Some(value.as_bytes()), &[]);
                let reply = cluster
                    .produce_idempotent("events", partition, builder.finish().freeze())
                    .await;
                sequences[partition as usize] += 1;
                records.push((partition, reply.base_offset, value));
            }
        }
        if round == 1 || round == 3 {
            let leader = cluster.leader_of("events", 0).await;
            cluster.node(leader).kill9();
            // Produce on through the fail-over, then bring the node back.
            for partition in 0..2u32 {
                let sequence = sequences[partition as usize];
                let value = format!("failover{round}-p{partition}-s{sequence}");
                let mut builder = BatchBuilder::new().producer(producer, 0, sequence);
                builder.push(1, None, Some(value.as_bytes()), &[]);
                let reply = cluster
                    .produce_idempotent("events", partition, builder.finish().freeze())
                    .await;
                sequences[partition as usize] += 1;
                records.push((partition, reply.base_offset, value));
            }
            cluster.node(leader).restart();
        }
    }
    let any = cluster.controller_leader().await;
    let mut clients = cluster.clients(any).await;
    let described = wait_captured(&mut clients, "events").await;
    let summary = check(&capture, "events", &records);
    assert_eq!(summary["rows"], records.len(), "{described:?}");
}

/// Capture to an S3-compatible bucket (moto's server): every record in exactly one object,
/// named as in a directory under the URL's prefix, no temporary or probe object left (the
/// objects are copied to a directory and checked as one); a bucket that does not exist is
/// refused at create with what is wrong, and no topic is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_to_a_bucket_and_a_missing_one_refused() {
    let s3 = tokio::task::spawn_blocking(|| S3Server::start(161))
        .await
        .expect("moto");
    s3.create_bucket("lake");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::launch_with_env(
        &dir.path().join("node"),
        1,
        "127.0.161.1:0",
        None,
        &[],
        &s3.env(),
    );
    server.wait_ready();
    let mut clients = server.clients().await;
    let config = |url: &str| pb::TopicConfig {
        capture_dir: Some(url.to_string()),
        capture_interval_ms: Some(1_000),
        capture_max_bytes: Some(4096),
        ..Default::default()
    };
    create(&mut clients, "events", 2, config("s3://lake/strata/raw"))
        .await
        .expect("create a topic captured to a bucket");
    let mut records = Vec::new();
    for partition in 0..2 {
        records.extend(produce(&mut clients, "events", partition, 60).await);
    }
    wait_captured(&mut clients, "events").await;
    let keys = s3.keys("lake", "");
    assert!(
        keys.iter()
            .all(|key| key.starts_with("strata/raw/events/partition=")),
        "only capture files under the prefix: {keys:?}"
    );
    let copy = dir.path().join("copy");
    for key in &keys {
        let relative = key.strip_prefix("strata/raw/").expect("prefix");
        let path = copy.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(&path, s3.get("lake", key)).expect("copy an object");
    }
    let summary = check(&copy, "events", &records);
    assert_eq!(summary["rows"], records.len());
    assert!(
        !dir.path().join("node/capture-spool").exists()
            || std::fs::read_dir(dir.path().join("node/capture-spool"))
                .expect("spool dir")
                .next()
                .is_none(),
        "no spool file left once uploaded"
    );

    let status = create(&mut clients, "lost", 1, config("s3://no-such-bucket/x"))
        .await
        .expect_err("a missing bucket is refused");
    assert_eq!(error_code(&status), "ERROR_CODE_INVALID_CONFIG");
    assert!(
        status
            .message()
            .contains("bucket \"no-such-bucket\" does not exist"),
        "{}",
        status.message()
    );
    let status = clients
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            name: "lost".to_string(),
        })
        .await
        .expect_err("no topic created");
    assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION");
}
