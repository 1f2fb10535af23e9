//! `/metrics` against real servers (`--http-listen`): known traffic over gRPC, the JSON API
//! and Kafka (confluent-kafka), then the exposition parsed by Prometheus's own OpenMetrics
//! parser (`tests/metrics/scrape.py`) and checked: records and bytes in and out per topic,
//! request counters, errors by code and latency histograms per method, the fsync histogram,
//! the scrape-time gauges; a deleted topic's series gone; `--metrics-auth`; and the Grafana
//! dashboard's queries naming only series a real node serves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use serde_json::Value;
use strata_proto::batch::BatchHeader;
use strata_proto::v1 as pb;
use strata_tests::certs::{node_flags, tls_init};
use strata_tests::kafka;
use strata_tests::server::{Clients, ServerProcess};

/// Longest a helper script may run (they bound their own waits well below this).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a deleted topic's series may take to leave (the node reconciles on its own).
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(30);
/// gRPC produce requests of the known traffic, and records in each.
const GRPC_PRODUCES: usize = 7;
const RECORDS_PER_PRODUCE: usize = 5;
/// Records the Kafka client produces and consumes.
const KAFKA_RECORDS: usize = 40;

const ADMIN: (&str, &str) = ("admin", "admin-password");

/// One sample of a scrape.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape as Prometheus's parser read it.
#[derive(Debug)]
struct Scrape {
    /// Family name to type (`counter`, `gauge`, `histogram`).
    families: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn from_json(json: &Value) -> Self {
        let families = json["families"]
            .as_object()
            .unwrap_or_else(|| panic!("no families in {json}"))
            .iter()
            .map(|(name, kind)| (name.clone(), kind.as_str().unwrap_or("").to_string()))
            .collect();
        let samples = json["samples"]
            .as_array()
            .unwrap_or_else(|| panic!("no samples in {json}"))
            .iter()
            .map(|sample| Sample {
                name: sample["name"].as_str().expect("name").to_string(),
                labels: sample["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
                    .collect(),
                value: sample["value"].as_f64().expect("value"),
            })
            .collect();
        Self { families, samples }
    }

    /// The samples named `name` carrying every label of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample named `name` with `labels`; 0 when there is none (a
    /// counter not yet created reads as zero).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(
            found.len() <= 1,
            "several samples match {name} {labels:?}: {found:?}"
        );
        found.first().map_or(0.0, |sample| sample.value)
    }

    /// Whether a sample named `name` with `labels` exists.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// Whether any series carries `topic` as its topic label.
    fn mentions_topic(&self, topic: &str) -> bool {
        self.samples
            .iter()
            .any(|sample| sample.labels.get("topic").map(String::as_str) == Some(topic))
    }

    /// Whether `name` (a family, or a sample such as `x_total` or `x_bucket`) is served.
    fn serves(&self, name: &str) -> bool {
        self.families.contains_key(name) || self.samples.iter().any(|s| s.name == name)
    }
}

/// Runs `tests/metrics/scrape.py ARGS`; `ca` verifies an https URL.
fn scrape_py(args: &[&str], ca: Option<&Path>) -> Value {
    let mut command = kafka::python("../metrics/scrape.py");
    command.args(args);
    if let Some(ca) = ca {
        command.env("STRATA_TEST_CA", ca);
    }
    let lines = kafka::json_lines(command, SCRIPT_TIMEOUT);
    lines
        .into_iter()
        .next()
        .expect("scrape.py prints one JSON line")
}

/// GETs `url` (a `/metrics` URL) and parses it; panics unless the status is 200.
fn scrape(url: &str) -> Scrape {
    let json = scrape_py(&["scrape", url], None);
    assert_eq!(json["status"], 200, "{json}");
    Scrape::from_json(&json)
}

/// POSTs `body` to the JSON API's `method` (`Service/Method`); returns status and body.
fn post(http: &str, method: &str, body: &str) -> (u64, Value) {
    let url = format!("http://{http}/api/v1/{method}");
    let json = scrape_py(&["post", &url, body], None);
    let status = json["status"].as_u64().expect("status");
    let body = serde_json::from_str(json["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (status, body)
}

fn record(n: usize) -> pb::Record {
    pb::Record {
        // 20 to 219 bytes, so batches are of varied, known sizes.
        value: Some(Bytes::from(vec![b'g'; 20 + (n * 53) % 200])),
        key: n.is_multiple_of(2).then(|| Bytes::from(format!("key-{n}"))),
        ..Default::default()
    }
}

/// What a raw (undecoded) read of a partition from its start found: the data batches' bytes
/// and records, and the Fetch calls it took.
struct RawRead {
    data_bytes: u64,
    records: u64,
    fetches: u64,
}

/// Reads `topic`/0 from the start to the high watermark with raw gRPC Fetches.
async fn raw_read(clients: &mut Clients, topic: &str) -> RawRead {
    let mut read = RawRead {
        data_bytes: 0,
        records: 0,
        fetches: 0,
    };
    let mut offset = 0;
    loop {
        let fetched = clients
            .broker
            .fetch(pb::FetchRequest {
                topic: topic.to_string(),
                partition: 0,
                start: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::Offset(offset)),
                }),
                max_bytes: 4 << 20,
                ..Default::default()
            })
            .await
            .expect("raw fetch")
            .into_inner();
        read.fetches += 1;
        for run in &fetched.batches {
            let mut rest: &[u8] = run;
            while !rest.is_empty() {
                let header = BatchHeader::parse(rest).expect("a stored batch");
                let bytes = header.total_bytes();
                if !header.is_control() {
                    read.data_bytes += bytes as u64;
                    read.records += header.record_count as u64;
                }
                rest = &rest[bytes..];
            }
        }
        offset = fetched.next_offset;
        if offset >= fetched.high_watermark {
            return read;
        }
    }
}

/// Reads `topic`/0 decoded in one gRPC Fetch; returns the records and their reply bytes as
/// the server budgets them (field tag, length prefix, body).
async fn decoded_read(clients: &mut Clients, topic: &str) -> (u64, u64) {
    let fetched = clients
        .broker
        .fetch(pb::FetchRequest {
            topic: topic.to_string(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Earliest(true)),
            }),
            max_bytes: 4 << 20,
            decode: true,
            ..Default::default()
        })
        .await
        .expect("decoded fetch")
        .into_inner();
    let bytes = fetched
        .records
        .iter()
        .map(|record| {
            let body = record.encoded_len();
            (1 + prost::length_delimiter_len(body) + body) as u64
        })
        .sum();
    (fetched.records.len() as u64, bytes)
}

/// A node with Kafka and HTTP listeners and `/metrics` open.
fn start_node(data: &Path) -> ServerProcess {
    let mut server = ServerProcess::launch_with(
        data,
        1,
        "127.0.0.1:0",
        None,
        &[
            "--kafka-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics-auth",
            "off",
        ]
        .map(str::to_string),
    );
    server.wait_ready();
    server
}

/// Known traffic on two topics (gRPC produce and raw and decoded Fetch on one; Kafka produce
/// and fetch, then a raw gRPC read, on the other), JSON API calls and refused calls; then
/// one scrape: per-topic records and bytes in and out are exactly what was produced and
/// read; request counts, error codes and histogram counts match the calls; the fsync
/// histogram and the gauges are there. Deleting a topic removes every series naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_is_counted_per_topic_and_method() {
    bootstrap_env();
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_node(data.path());
    let http = server.http_address.clone().expect("http address");
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "m-grpc", 1).await;
    kafka::create_topic(&mut clients, "m-kafka", 1).await;

    // gRPC: produces of known records, one produce to a missing topic, reads.
    for p in 0..GRPC_PRODUCES {
        let records = (0..RECORDS_PER_PRODUCE)
            .map(|r| record(p * RECORDS_PER_PRODUCE + r))
            .collect();
        clients
            .broker
            .produce(pb::ProduceRequest {
                topic: "m-grpc".to_string(),
                target: Some(pb::produce_request::Target::Partition(0)),
                payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                    records,
                })),
                ..Default::default()
            })
            .await
            .expect("produce");
    }
    let missing = clients
        .broker
        .produce(pb::ProduceRequest {
            topic: "m-missing".to_string(),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records: vec![record(0)],
            })),
            ..Default::default()
        })
        .await
        .expect_err("no such topic");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    let grpc_raw = raw_read(&mut clients, "m-grpc").await;
    assert_eq!(
        grpc_raw.records,
        (GRPC_PRODUCES * RECORDS_PER_PRODUCE) as u64
    );
    let (decoded_records, decoded_bytes) = decoded_read(&mut clients, "m-grpc").await;
    assert_eq!(decoded_records, grpc_raw.records);

    // Kafka: produce and consume with librdkafka; then read the topic raw over gRPC, which
    // counts out once more and tells the stored bytes.
    let mut command = kafka::python("../metrics/kafka_traffic.py");
    command.args([
        kafka::bootstrap(&server).as_str(),
        "m-kafka",
        &KAFKA_RECORDS.to_string(),
    ]);
    let kafka_run = kafka::json_lines(command, SCRIPT_TIMEOUT);
    assert_eq!(kafka_run[0]["consumed"], KAFKA_RECORDS, "{kafka_run:?}");
    let kafka_raw = raw_read(&mut clients, "m-kafka").await;
    assert_eq!(kafka_raw.records, KAFKA_RECORDS as u64);

    // The JSON API: a call that works, one refused with Strata's code, an unknown method.
    let (status, _) = post(&http, "Admin/ListTopics", "{}");
    assert_eq!(status, 200);
    let (status, body) = post(&http, "Admin/DescribeTopic", r#"{"name": "m-missing"}"#);
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body["error"], "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION",
        "{body}"
    );
    let (status, _) = post(&http, "Admin/NoSuchMethod", "{}");
    assert_eq!(status, 404);

    let metrics = scrape(&format!("http://{http}/metrics"));
    let topic = |name| [("topic", name)];

    // Records and bytes in and out per topic.
    assert_eq!(
        metrics.value("strata_topic_records_in_total", &topic("m-grpc")),
        grpc_raw.records as f64
    );
    assert_eq!(
        metrics.value("strata_topic_bytes_in_total", &topic("m-grpc")),
        grpc_raw.data_bytes as f64
    );
    assert_eq!(
        metrics.value("strata_topic_records_out_total", &topic("m-grpc")),
        (grpc_raw.records + decoded_records) as f64
    );
    assert_eq!(
        metrics.value("strata_topic_bytes_out_total", &topic("m-grpc")),
        (grpc_raw.data_bytes + decoded_bytes) as f64
    );
    assert_eq!(
        metrics.value("strata_topic_records_in_total", &topic("m-kafka")),
        KAFKA_RECORDS as f64
    );
    assert_eq!(
        metrics.value("strata_topic_bytes_in_total", &topic("m-kafka")),
        kafka_raw.data_bytes as f64
    );
    // Consumed once by librdkafka (Kafka Fetch), once by the raw gRPC read.
    assert_eq!(
        metrics.value("strata_topic_records_out_total", &topic("m-kafka")),
        2.0 * KAFKA_RECORDS as f64
    );
    assert_eq!(
        metrics.value("strata_topic_bytes_out_total", &topic("m-kafka")),
        2.0 * kafka_raw.data_bytes as f64
    );
    assert!(!metrics.mentions_topic("m-missing"));
    for name in ["m-grpc", "m-kafka"] {
        let disk = metrics.value("strata_topic_disk_bytes", &topic(name));
        let stored = if name == "m-grpc" {
            grpc_raw.data_bytes
        } else {
            kafka_raw.data_bytes
        };
        assert!(disk >= stored as f64, "{name}: {disk} < {stored}");
    }

    // Requests per method, errors by code, histogram counts equal to request counts.
    let grpc = |method| [("frontend", "grpc"), ("method", method)];
    assert_eq!(
        metrics.value("strata_requests_total", &grpc("Broker/Produce")),
        (GRPC_PRODUCES + 1) as f64
    );
    assert_eq!(
        metrics.value(
            "strata_request_errors_total",
            &[
                ("frontend", "grpc"),
                ("method", "Broker/Produce"),
                ("code", "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION"),
            ]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("strata_requests_total", &grpc("Broker/Fetch")),
        (grpc_raw.fetches + kafka_raw.fetches + 1) as f64
    );
    assert_eq!(
        metrics.value("strata_requests_total", &grpc("Admin/CreateTopic")),
        2.0
    );
    let http_method = |method| [("frontend", "http"), ("method", method)];
    assert_eq!(
        metrics.value("strata_requests_total", &http_method("Admin/ListTopics")),
        1.0
    );
    assert_eq!(
        metrics.value(
            "strata_request_errors_total",
            &[
                ("frontend", "http"),
                ("method", "Admin/DescribeTopic"),
                ("code", "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION"),
            ]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("strata_requests_total", &http_method("other")),
        1.0
    );
    for api in ["ApiVersions", "Metadata", "Produce", "Fetch"] {
        let labels = [("frontend", "kafka"), ("method", api)];
        assert!(
            metrics.value("strata_requests_total", &labels) >= 1.0,
            "no Kafka {api} counted"
        );
    }
    // Every method's histogram counted each of its requests, into the fixed buckets.
    let mut methods = 0;
    for sample in metrics.matching("strata_requests_total", &[]) {
        let labels: Vec<(&str, &str)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            metrics.value("strata_request_duration_seconds_count", &labels),
            sample.value,
            "{labels:?}"
        );
        let inf = [labels.clone(), vec![("le", "+Inf")]].concat();
        assert_eq!(
            metrics.value("strata_request_duration_seconds_bucket", &inf),
            sample.value
        );
        // The fixed buckets and +Inf.
        let buckets = metrics
            .matching("strata_request_duration_seconds_bucket", &labels)
            .count();
        assert_eq!(buckets, 17, "{labels:?}");
        methods += 1;
    }
    assert!(methods >= 10, "only {methods} methods counted");
    assert_eq!(
        metrics.families["strata_request_duration_seconds"],
        "histogram"
    );

    // The fsync histogram, the gauges and the process.
    assert!(metrics.value("strata_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(metrics.value("strata_connections", &[("listener", "grpc")]) >= 1.0);
    assert!(metrics.value("strata_connections", &[("listener", "http")]) >= 1.0);
    assert!(metrics.has("strata_connections", &[("listener", "kafka")]));
    assert_eq!(metrics.value("strata_subscriptions", &[]), 0.0);
    assert_eq!(
        metrics.value("strata_produce_budget_bytes_in_use", &[]),
        0.0
    );
    assert!(metrics.value("strata_disk_free_bytes", &[]) > 0.0);
    assert!(metrics.value("strata_disk_total_bytes", &[]) > 0.0);
    assert!(metrics.value("strata_process_cpu_seconds_total", &[]) > 0.0);
    assert!(metrics.value("strata_process_resident_memory_bytes", &[]) > 0.0);
    assert!(metrics.value("strata_process_memory_maps", &[]) > 0.0);

    // A deleted topic leaves no series.
    clients
        .admin
        .delete_topic(pb::DeleteTopicRequest {
            name: "m-grpc".to_string(),
        })
        .await
        .expect("delete topic");
    let deadline = Instant::now() + REMOVAL_TIMEOUT;
    loop {
        let metrics = scrape(&format!("http://{http}/metrics"));
        if !metrics.mentions_topic("m-grpc") {
            assert!(metrics.mentions_topic("m-kafka"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m-grpc's series still served {REMOVAL_TIMEOUT:?} after its deletion"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An open subscription counts in `strata_subscriptions` while it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_subscription_is_counted() {
    bootstrap_env();
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_node(data.path());
    let http = server.http_address.clone().expect("http address");
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "m-sub", 1).await;
    let (requests, inbound) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::SubscribeRequest {
            request: Some(pb::subscribe_request::Request::Start(
                pb::subscribe_request::Start {
                    topic: "m-sub".to_string(),
                    partition: 0,
                    start: Some(pb::StartPosition {
                        position: Some(pb::start_position::Position::Earliest(true)),
                    }),
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("queue the start");
    let stream = clients
        .broker
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .expect("subscribe");
    let open = scrape(&format!("http://{http}/metrics"));
    assert_eq!(open.value("strata_subscriptions", &[]), 1.0);
    drop(stream);
    drop(requests);
    let deadline = Instant::now() + REMOVAL_TIMEOUT;
    while scrape(&format!("http://{http}/metrics")).value("strata_subscriptions", &[]) != 0.0 {
        assert!(Instant::now() < deadline, "the subscription still counts");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The bootstrap superuser comes from the environment servers inherit (a node without
/// authentication ignores it). Set once, before any test of this binary starts a server:
/// every test calls this first.
fn bootstrap_env() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // SAFETY: every test calls this first and waits for it, so it runs before any test
        // spawns a process or a thread that reads the environment; std serializes its own
        // environment access.
        unsafe { std::env::set_var("STRATA_BOOTSTRAP_USER", format!("{}:{}", ADMIN.0, ADMIN.1)) };
    });
}

/// With password authentication, `--metrics-auth on` answers `/metrics` without credentials
/// (or with a wrong password) with 401 and serves it with the admin's; `off` serves it to
/// anyone while the JSON API still asks for credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_auth_on_asks_for_credentials_and_off_does_not() {
    bootstrap_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    tls_init(&certs, 1, "127.0.0.1");
    let ca = certs.join("ca.pem");
    for (n, metrics_auth) in ["on", "off"].into_iter().enumerate() {
        let mut args = node_flags(&certs, 1, false);
        args.extend(
            [
                "--authentication",
                "password",
                "--http-listen",
                "127.0.0.1:0",
                "--metrics-auth",
                metrics_auth,
            ]
            .map(str::to_string),
        );
        let mut server = ServerProcess::launch_with(
            &dir.path().join(format!("data-{n}")),
            1,
            "127.0.0.1:0",
            None,
            &args,
        );
        server.wait_ready();
        let url = format!(
            "https://{}/metrics",
            server.http_address.as_deref().expect("http address")
        );
        let anonymous = scrape_py(&["scrape", &url], Some(&ca));
        let wrong = scrape_py(&["scrape", &url, ADMIN.0, "wrong-password"], Some(&ca));
        // The bootstrap user is created once the node serves: poll until it logs in.
        let deadline = Instant::now() + REMOVAL_TIMEOUT;
        let admin = loop {
            let admin = scrape_py(&["scrape", &url, ADMIN.0, ADMIN.1], Some(&ca));
            if admin["status"] == 200 || Instant::now() >= deadline {
                break admin;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(admin["status"], 200, "{metrics_auth}: {admin}");
        assert!(Scrape::from_json(&admin).serves("strata_connections"));
        if metrics_auth == "on" {
            assert_eq!(anonymous["status"], 401, "{anonymous}");
            assert_eq!(wrong["status"], 401, "{wrong}");
        } else {
            assert_eq!(anonymous["status"], 200, "{anonymous}");
            let api = format!(
                "https://{}/api/v1/Admin/ListTopics",
                server.http_address.as_deref().expect("http address")
            );
            let refused = scrape_py(&["post", &api, "{}"], Some(&ca));
            assert_eq!(refused["status"], 401, "{refused}");
        }
    }
}

/// Every metric name in the Grafana dashboard's queries is served by a real node that has
/// seen traffic, an error and a consumer group, and the Prometheus example scrapes `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_uses_only_served_series() {
    bootstrap_env();
    let repo = kafka::repo();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("deploy/grafana/strata-dashboard.json"))
            .expect("reading the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    let mut expressions = 0;
    collect_metric_names(&dashboard, &mut names, &mut expressions);
    assert!(expressions >= 10, "only {expressions} queries found");

    let data = tempfile::tempdir().expect("tempdir");
    let server = start_node(data.path());
    let http = server.http_address.clone().expect("http address");
    let mut clients = server.clients().await;
    kafka::create_topic(&mut clients, "m-dash", 1).await;
    clients
        .broker
        .produce(pb::ProduceRequest {
            topic: "m-dash".to_string(),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records: vec![record(1)],
            })),
            ..Default::default()
        })
        .await
        .expect("produce");
    raw_read(&mut clients, "m-dash").await;
    // An error, so the error counter has a series (a family without any is not exposed).
    clients
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            name: "m-missing".to_string(),
        })
        .await
        .expect_err("no such topic");
    // A group with a committed offset, so the lag series have a group to report.
    clients
        .groups
        .commit_offsets(pb::CommitOffsetsRequest {
            group_id: "m-dash-group".to_string(),
            offsets: vec![pb::OffsetCommit {
                topic: "m-dash".to_string(),
                partition: 0,
                offset: 0,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("commit as an operator");
    let metrics = scrape(&format!("http://{http}/metrics"));
    for name in &names {
        assert!(
            metrics.serves(name),
            "the dashboard queries {name}, which no node serves"
        );
    }

    let prometheus = std::fs::read_to_string(repo.join("deploy/prometheus/prometheus.yml"))
        .expect("reading the Prometheus example");
    assert!(
        prometheus.contains("metrics_path: /metrics"),
        "{prometheus}"
    );
}

/// The `strata_*` names in every `expr` of `value` (a dashboard or part of one).
fn collect_metric_names(value: &Value, names: &mut BTreeSet<String>, expressions: &mut usize) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "expr"
                    && let Some(expr) = inner.as_str()
                {
                    *expressions += 1;
                    names.extend(metric_names(expr));
                } else {
                    collect_metric_names(inner, names, expressions);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_metric_names(item, names, expressions);
            }
        }
        _ => {}
    }
}

/// The `strata_...` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("strata_") {
        let preceded_by_ident = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if !preceded_by_ident {
            names.push(name);
        }
    }
    names
}
