//! Raft, partition-health and consumer-lag metrics, and `/readyz`, on 3-node clusters of real
//! processes, each node serving HTTP (`--http-listen`, `--metrics-auth off`):
//! - proposals and commit latencies count exactly the batches produced; after a leader kill
//!   the survivors count leader changes and elections and no partition stays leaderless; a
//!   partition is under-replicated while one of its nodes is down and not after it returns;
//! - consumer-group lag in records is what was produced minus what was committed, summed over
//!   the nodes (each reports the partitions it leads), lag in seconds is the age of the first
//!   uncommitted record and 0 when caught up; per-partition series come only with
//!   `?partitions=true` and leave with the topic; the Prometheus project's Python parser reads
//!   the same samples as the test's own parser;
//! - `/readyz` answers 503 "catching up" while a node whose disk was wiped re-replicates a
//!   partition, then 200, and the node then serves the same batches as the leader.
//!
//! `/metrics` is parsed by an exact parser below (every sample line must parse, or the test
//! fails); every wait polls a condition with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_proto::batch::BatchBuilder;
use strata_proto::v1 as pb;
use strata_tests::cluster::Cluster;
use strata_tests::server::ServerProcess;

const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest any awaited state (an election, a node heard from again) may take.
const WAIT: Duration = Duration::from_secs(60);
/// The longest a wiped node may take to be ready again.
const CATCH_UP_WAIT: Duration = Duration::from_secs(150);
/// The nodes' gRPC ports: `cluster.rs`'s `NODE_PORT_BASE + id` on the test's own address.
const NODE_PORT_BASE: u16 = 21_000;
/// The nodes' HTTP ports, fixed so a restarted node keeps its own (below the ephemeral range,
/// on the test's own address, as the gRPC ports).
const HTTP_PORT_BASE: u16 = 21_200;

fn node_address(slot: u8, id: u64) -> String {
    format!("127.0.{slot}.1:{}", NODE_PORT_BASE + id as u16)
}

fn http_address(slot: u8, id: u64) -> String {
    format!("127.0.{slot}.1:{}", HTTP_PORT_BASE + id as u16)
}

/// Starts a 3-node cluster on `127.0.<slot>.1`, each node with an HTTP listener of its own
/// and `/metrics` open to scrapers.
fn start_cluster(slot: u8) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let initial = (1..=3)
        .map(|id| format!("{id}={}", node_address(slot, id)))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<ServerProcess> = (1..=3)
        .map(|id| {
            let args = [
                "--http-listen".to_string(),
                http_address(slot, id),
                "--metrics-auth".to_string(),
                "off".to_string(),
            ];
            ServerProcess::launch_with(
                &dir.path().join(format!("node-{id}")),
                id,
                &node_address(slot, id),
                Some(&initial),
                &args,
            )
        })
        .collect();
    for node in &mut nodes {
        node.wait_ready();
    }
    Cluster {
        nodes,
        dir,
        links: BTreeMap::new(),
        client_tls: None,
    }
}

/// GETs `path` from `address` (HTTP/1.1, bounded: 10 s); `None` when nothing answers.
fn http_get_blocking(address: &str, path: &str) -> Option<(u16, String)> {
    let socket = address.parse().expect("a socket address");
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((status, String::from_utf8(body).expect("a UTF-8 body")))
}

/// The body of a chunked transfer encoding.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

async fn http_get(address: String, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http_get_blocking(&address, &path))
        .await
        .expect("the HTTP client thread")
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
struct Scrape {
    samples: Vec<Sample>,
}

/// Parses a Prometheus / OpenMetrics text exposition; panics on a line it cannot read, so a
/// malformed exposition fails the test.
fn parse_exposition(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let consumed = loop {
                let (at, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("bad labels {line:?}"));
                match c {
                    '}' => break at + 1,
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                        let mut value = String::new();
                        loop {
                            let (_, c) =
                                chars.next().unwrap_or_else(|| panic!("bad value {line:?}"));
                            match c {
                                '"' => break,
                                '\\' => match chars.next().map(|(_, c)| c) {
                                    Some('n') => value.push('\n'),
                                    Some(other) => value.push(other),
                                    None => panic!("bad escape {line:?}"),
                                },
                                other => value.push(other),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    other => key.push(other),
                }
            };
            rest = &inner[consumed..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value {line:?}"));
        let value: f64 = value_text
            .parse()
            .unwrap_or_else(|_| panic!("bad value {value_text:?} in {line:?}"));
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Scrape { samples }
}

impl Scrape {
    /// Samples named `name` whose labels include `labels`.
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

    /// The value of the one sample named `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .find(|sample| sample.labels.len() == labels.len())
            .map(|sample| sample.value)
    }

    /// The sum of the samples named `name` whose labels include `labels` (0 when none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|sample| sample.value).sum()
    }
}

/// Node `id`'s `/metrics` at `path`; `None` when the node does not answer.
async fn scrape_path(slot: u8, id: u64, path: &str) -> Option<Scrape> {
    let (status, body) = http_get(http_address(slot, id), path).await?;
    assert_eq!(status, 200, "{path} of node {id}: {body}");
    Some(parse_exposition(&body))
}

async fn scrape(slot: u8, id: u64) -> Scrape {
    scrape_path(slot, id, "/metrics")
        .await
        .unwrap_or_else(|| panic!("node {id} did not answer /metrics"))
}

/// Scrapes `nodes` until `holds` is true of their scrapes (in the order of `nodes`), or fails
/// after [`WAIT`] saying `what` and showing the last scrapes' `shown` series.
async fn wait_for(
    slot: u8,
    nodes: &[u64],
    path: &str,
    what: &str,
    shown: &[&str],
    holds: impl Fn(&[Scrape]) -> bool,
) -> Vec<Scrape> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut scrapes = Vec::new();
        for id in nodes {
            scrapes.push(scrape_path(slot, *id, path).await.unwrap_or_default());
        }
        if holds(&scrapes) {
            return scrapes;
        }
        if Instant::now() >= deadline {
            let last: Vec<Vec<&Sample>> = scrapes
                .iter()
                .map(|s| {
                    s.samples
                        .iter()
                        .filter(|sample| shown.iter().any(|name| sample.name.starts_with(name)))
                        .collect()
                })
                .collect();
            panic!("not within {WAIT:?}: {what}; last scrapes of {nodes:?}: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as i64
}

/// An idempotent producer's batch `seq` of `count` records with values `{tag}-{i}` and
/// timestamps `timestamp + i`.
fn batch(producer: i64, seq: i32, tag: &str, count: usize, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new().producer(producer, 0, seq);
    for i in 0..count {
        let value = format!("{tag}-{i}");
        builder.push(timestamp + i as i64, None, Some(value.as_bytes()), &[]);
    }
    builder.finish().freeze()
}

/// The partition's replicas in metadata order (the first is its preferred leader).
async fn replicas_of(cluster: &mut Cluster, topic: &str, partition: u32) -> Vec<u64> {
    let id = cluster.running()[0];
    let described = cluster
        .clients(id)
        .await
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            name: topic.to_string(),
        })
        .await
        .expect("describe topic")
        .into_inner();
    described.partition_info[partition as usize]
        .replica_node_ids
        .clone()
}

/// Waits until every partition of `topic` is led by its preferred leader (placement spreads
/// those), so that no leadership hand-over happens while the test counts.
async fn wait_for_preferred_leaders(cluster: &mut Cluster, topic: &str, partitions: u32) {
    let deadline = Instant::now() + WAIT;
    for partition in 0..partitions {
        let preferred = replicas_of(cluster, topic, partition).await[0];
        while cluster.leader_of(topic, partition).await != preferred {
            assert!(
                Instant::now() < deadline,
                "{topic}/{partition} not led by its preferred leader {preferred} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const PARTITION: [(&str, &str); 1] = [("group", "partition")];

/// Proposals and commit latencies count the batches produced exactly; a leader kill makes the
/// survivors count a leader change and an election, and leaves no partition leaderless; the
/// partition is under-replicated (count and per-partition series on its leader) while the
/// killed node is down, and neither once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_series_follow_a_leader_kill_and_a_node_down() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let slot = 125;
        let mut cluster = start_cluster(slot);
        cluster.create_topic("events", 1, 3).await;
        wait_for_preferred_leaders(&mut cluster, "events", 1).await;
        let all = [1, 2, 3];
        wait_for(
            slot,
            &all,
            "/metrics",
            "no partition leaderless or under-replicated",
            &["strata_partition"],
            |scrapes| {
                scrapes.iter().all(|s| {
                    s.value("strata_partitions_leaderless", &[]) == Some(0.0)
                        && s.value("strata_partitions_under_replicated", &[]) == Some(0.0)
                })
            },
        )
        .await;

        // Proposals and commit latencies: exactly the batches produced, over the nodes.
        let mut before = Vec::new();
        for id in all {
            before.push(scrape(slot, id).await);
        }
        let producer = cluster.producer_id().await;
        const BATCHES: i32 = 25;
        for seq in 0..BATCHES {
            let batch = batch(producer, seq, "e", 1, now_ms());
            cluster.produce_idempotent("events", 0, batch).await;
        }
        let mut after = Vec::new();
        for id in all {
            after.push(scrape(slot, id).await);
        }
        let delta = |name: &str, labels: &[(&str, &str)]| -> f64 {
            let total =
                |scrapes: &[Scrape]| scrapes.iter().map(|s| s.sum(name, labels)).sum::<f64>();
            total(&after) - total(&before)
        };
        assert_eq!(
            delta("strata_raft_proposals_total", &PARTITION),
            f64::from(BATCHES)
        );
        assert_eq!(
            delta("strata_raft_commit_latency_seconds_count", &PARTITION),
            f64::from(BATCHES)
        );
        for scrape in &after {
            let count = scrape.value("strata_raft_commit_latency_seconds_count", &PARTITION);
            let infinite = scrape.value(
                "strata_raft_commit_latency_seconds_bucket",
                &[("group", "partition"), ("le", "+Inf")],
            );
            assert_eq!(count, infinite, "the +Inf bucket holds every observation");
            assert!(scrape.sum("strata_raft_commit_latency_seconds_sum", &PARTITION) >= 0.0);
        }

        // Kill the leader: the survivors elect another and count it.
        let leader = cluster.leader_of("events", 0).await;
        let survivors: Vec<u64> = all.iter().copied().filter(|id| *id != leader).collect();
        let mut before = Vec::new();
        for id in &survivors {
            before.push(scrape(slot, *id).await);
        }
        cluster.node(leader).kill9();
        let changes = "strata_raft_leader_changes_total";
        let elections = "strata_raft_elections_total";
        wait_for(
            slot,
            &survivors,
            "/metrics",
            "the survivors count a leader change and an election, none leaderless",
            &["strata_raft", "strata_partition"],
            |scrapes| {
                let elected: f64 = scrapes.iter().map(|s| s.sum(elections, &PARTITION)).sum();
                let elected_before: f64 = before.iter().map(|s| s.sum(elections, &PARTITION)).sum();
                elected > elected_before
                    && scrapes.iter().zip(&before).all(|(now, then)| {
                        now.sum(changes, &PARTITION) > then.sum(changes, &PARTITION)
                            && now.value("strata_partitions_leaderless", &[]) == Some(0.0)
                    })
            },
        )
        .await;

        // Under-replicated on the new leader while the old one is down, with its series.
        let new_leader = cluster.leader_of("events", 0).await;
        assert_ne!(new_leader, leader);
        let listed = [("topic", "events"), ("partition", "0")];
        wait_for(
            slot,
            &survivors,
            "/metrics",
            "the new leader reports events/0 under-replicated, the other survivor nothing",
            &["strata_partition"],
            |scrapes| {
                survivors.iter().zip(scrapes).all(|(id, s)| {
                    let expected = if *id == new_leader { 1.0 } else { 0.0 };
                    s.value("strata_partitions_under_replicated", &[]) == Some(expected)
                        && s.sum("strata_partition_under_replicated", &[]) == expected
                        && (expected == 0.0
                            || s.value("strata_partition_under_replicated", &listed) == Some(1.0))
                })
            },
        )
        .await;

        // The node comes back: nothing under-replicated or leaderless anywhere.
        cluster.node(leader).restart();
        wait_for(
            slot,
            &all,
            "/metrics",
            "nothing under-replicated or leaderless once the node is back",
            &["strata_partition"],
            |scrapes| {
                scrapes.iter().all(|s| {
                    s.value("strata_partitions_under_replicated", &[]) == Some(0.0)
                        && s.value("strata_partitions_leaderless", &[]) == Some(0.0)
                        && s.matching("strata_partition_under_replicated", &[]).count() == 0
                        && s.matching("strata_partition_leaderless", &[]).count() == 0
                })
            },
        )
        .await;
    })
    .await
    .expect("test timed out");
}

/// Commits `offsets` (partition, offset) of `topic` for `group` as an operator, through the
/// controller's leader (retried while an election runs).
async fn commit(cluster: &mut Cluster, group: &str, topic: &str, offsets: &[(u32, u64)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = cluster.controller_leader().await;
        let committed = cluster
            .clients(leader)
            .await
            .groups
            .commit_offsets(pb::CommitOffsetsRequest {
                group_id: group.to_string(),
                member_id: String::new(),
                member_epoch: 0,
                offsets: offsets
                    .iter()
                    .map(|(partition, offset)| pb::OffsetCommit {
                        topic: topic.to_string(),
                        partition: *partition,
                        offset: *offset,
                        metadata: String::new(),
                    })
                    .collect(),
            })
            .await;
        match committed {
            Ok(_) => return,
            Err(status) => assert!(
                Instant::now() < deadline,
                "commit of {group} not accepted within {WAIT:?}: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The per-partition lag of `group` on `topic` over the nodes' `?partitions=true` scrapes:
/// partition -> (records, seconds, how many nodes reported it).
fn partition_lags(scrapes: &[Scrape], group: &str, topic: &str) -> BTreeMap<u32, (f64, f64, u32)> {
    let mut lags: BTreeMap<u32, (f64, f64, u32)> = BTreeMap::new();
    let labels = [("group", group), ("topic", topic)];
    for scrape in scrapes {
        for sample in scrape.matching("strata_group_partition_lag_records", &labels) {
            let partition: u32 = sample.labels["partition"].parse().expect("a partition");
            let seconds = scrape
                .value(
                    "strata_group_partition_lag_seconds",
                    &[
                        ("group", group),
                        ("topic", topic),
                        ("partition", &sample.labels["partition"]),
                    ],
                )
                .expect("lag in seconds beside lag in records");
            let lag = lags.entry(partition).or_default();
            lag.0 += sample.value;
            lag.1 = seconds;
            lag.2 += 1;
        }
    }
    lags
}

/// Group lag in records is produced minus committed summed over the nodes (each reporting the
/// partitions it leads, each partition exactly once with `?partitions=true`); lag in seconds
/// is the age of the first uncommitted record, 0 when caught up; the Python Prometheus parser
/// reads the same; per-partition series leave with the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lag_is_produced_minus_committed() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let slot = 126;
        let mut cluster = start_cluster(slot);
        cluster.create_topic("orders", 3, 3).await;
        wait_for_preferred_leaders(&mut cluster, "orders", 3).await;
        let all = [1, 2, 3];
        // Records stamped an hour ago, so their age is known to within the test's duration.
        let stamped_ms = now_ms() - 3_600_000;
        let produced: [u64; 3] = [10, 20, 30];
        let producer = cluster.producer_id().await;
        for (partition, count) in produced.iter().enumerate() {
            let batch = batch(producer, 0, "o", *count as usize, stamped_ms);
            cluster
                .produce_idempotent("orders", partition as u32, batch)
                .await;
        }
        // Partition 1 caught up; 0 and 2 behind (2 from its very first record).
        let committed: [u64; 3] = [4, 20, 0];
        let offsets: Vec<(u32, u64)> = (0..3).map(|p| (p, committed[p as usize])).collect();
        commit(&mut cluster, "readers", "orders", &offsets).await;
        let expected_total: u64 = (0..3).map(|p| produced[p] - committed[p]).sum();
        assert_eq!(expected_total, 36);

        let group = [("group", "readers"), ("topic", "orders")];
        let asked_ms = now_ms();
        let scrapes = wait_for(
            slot,
            &all,
            "/metrics?partitions=true",
            "lag per partition reported once each: produced minus committed",
            &["strata_group"],
            |scrapes| {
                let lags = partition_lags(scrapes, "readers", "orders");
                let total: f64 = scrapes
                    .iter()
                    .map(|s| s.sum("strata_group_lag_records", &group))
                    .sum();
                total == expected_total as f64
                    && lags.len() == 3
                    && lags.iter().all(|(partition, (records, _, reported))| {
                        let p = *partition as usize;
                        *records == (produced[p] - committed[p]) as f64 && *reported == 1
                    })
            },
        )
        .await;
        let answered_ms = now_ms();
        // Seconds: now (at the scrape) minus the first uncommitted record's timestamp.
        let lags = partition_lags(&scrapes, "readers", "orders");
        for (partition, (_, seconds, _)) in &lags {
            let p = *partition as usize;
            if committed[p] == produced[p] {
                assert_eq!(*seconds, 0.0, "partition {p} is caught up");
                continue;
            }
            let timestamp = stamped_ms + committed[p] as i64;
            let earliest = (asked_ms - timestamp) as f64 / 1000.0;
            let latest = (answered_ms - timestamp) as f64 / 1000.0;
            assert!(
                (earliest - 0.001..=latest + 0.001).contains(seconds),
                "partition {p}: lag {seconds} s, expected between {earliest} and {latest}"
            );
        }
        let worst: f64 = scrapes
            .iter()
            .filter_map(|s| s.value("strata_group_lag_seconds", &group))
            .fold(0.0, f64::max);
        let oldest = lags.values().map(|lag| lag.1).fold(0.0, f64::max);
        assert_eq!(worst, oldest, "per topic: the oldest partition's age");
        // Without `?partitions=true`: no per-partition series.
        for id in all {
            let plain = scrape(slot, id).await;
            assert_eq!(
                plain
                    .matching("strata_group_partition_lag_records", &[])
                    .count(),
                0
            );
        }

        // The Prometheus project's parser reads the same samples from the same text.
        let (status, text) = http_get(http_address(slot, 1), "/metrics?partitions=true")
            .await
            .expect("node 1 answers");
        assert_eq!(status, 200);
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &text).expect("write the exposition");
        let mut python = strata_tests::kafka::python("../metrics/parse.py");
        python.arg(file.path()).arg("strata_");
        let output = strata_tests::kafka::run(python, Duration::from_secs(300));
        let from_python: BTreeSet<String> = String::from_utf8(output.stdout)
            .expect("UTF-8")
            .lines()
            .filter(|line| line.contains("strata_group") || line.contains("strata_partition"))
            .map(str::to_string)
            .collect();
        let ours: BTreeSet<String> = parse_exposition(&text)
            .samples
            .iter()
            .filter(|s| {
                s.name.starts_with("strata_group") || s.name.starts_with("strata_partition")
            })
            .map(|s| {
                // Keys in sorted order, as parse.py writes them (sort_keys), so the two agree
                // whether or not serde_json keeps insertion order (its `preserve_order`
                // feature, which another crate of the workspace may turn on).
                serde_json::json!({"labels": s.labels, "name": s.name, "value": s.value})
                    .to_string()
            })
            .collect();
        assert!(!ours.is_empty());
        let from_python: BTreeSet<String> = from_python
            .iter()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .expect("JSON from parse.py")
                    .to_string()
            })
            .collect();
        assert_eq!(ours, from_python, "the Python parser reads other samples");

        // Caught up everywhere: 0 records and 0 seconds.
        let ends: Vec<(u32, u64)> = (0..3).map(|p| (p, produced[p as usize])).collect();
        commit(&mut cluster, "readers", "orders", &ends).await;
        wait_for(
            slot,
            &all,
            "/metrics?partitions=true",
            "no lag once everything is committed",
            &["strata_group"],
            |scrapes| {
                let lags = partition_lags(scrapes, "readers", "orders");
                lags.len() == 3
                    && lags.values().all(|lag| lag.0 == 0.0 && lag.1 == 0.0)
                    && scrapes.iter().all(|s| {
                        s.matching("strata_group_lag_records", &group)
                            .all(|sample| sample.value == 0.0)
                            && s.matching("strata_group_lag_seconds", &group)
                                .all(|sample| sample.value == 0.0)
                    })
                    && scrapes
                        .iter()
                        .filter(|s| s.value("strata_group_lag_records", &group).is_some())
                        .count()
                        == 3
            },
        )
        .await;

        // Delete the topic: its series leave every node.
        let leader = cluster.controller_leader().await;
        cluster
            .clients(leader)
            .await
            .admin
            .delete_topic(pb::DeleteTopicRequest {
                name: "orders".to_string(),
            })
            .await
            .expect("delete topic");
        wait_for(
            slot,
            &all,
            "/metrics?partitions=true",
            "no series of the deleted topic",
            &["strata_group"],
            |scrapes| {
                scrapes.iter().all(|s| {
                    !s.samples.is_empty()
                        && s.samples.iter().all(|sample| {
                            sample.labels.get("topic").map(String::as_str) != Some("orders")
                        })
                })
            },
        )
        .await;
    })
    .await
    .expect("test timed out");
}

/// Every batch of partition 0 of `topic` as node `id` serves it, raw, by base offset, with
/// its high watermark.
async fn raw_batches(cluster: &Cluster, id: u64, topic: &str) -> (BTreeMap<i64, Bytes>, u64) {
    let mut clients = cluster.clients(id).await;
    let mut batches = BTreeMap::new();
    let mut next = 0;
    loop {
        let fetched = clients
            .broker
            .fetch(pb::FetchRequest {
                topic: topic.to_string(),
                partition: 0,
                start: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::Offset(next)),
                }),
                max_bytes: 2 << 20,
                ..pb::FetchRequest::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        // A run may start before the offset asked for: batches are keyed by base offset.
        for run in fetched.batches.iter().cloned() {
            for split in strata_proto::batch::split_batches(run) {
                let (header, batch) = split.expect("a stored batch splits");
                batches.insert(header.base_offset, batch);
            }
        }
        if fetched.next_offset >= fetched.high_watermark || fetched.batches.is_empty() {
            return (batches, fetched.high_watermark);
        }
        next = fetched.next_offset;
    }
}

/// `/readyz` is 503, naming the partition catching up, while a node whose data directory was
/// wiped re-replicates it from the others; 200 once it has caught up, and it then serves the
/// same batches as the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_a_wiped_node_catches_up() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let slot = 127;
        let mut cluster = start_cluster(slot);
        cluster.create_topic("bulk", 1, 3).await;
        wait_for_preferred_leaders(&mut cluster, "bulk", 1).await;
        let leader = cluster.leader_of("bulk", 0).await;
        // Enough entries that re-replicating them takes many appends of at most 1 MiB each,
        // far more than the 64 entries a replica may trail by and be ready: 400 batches of
        // 256 KiB (100 MiB). Its re-replication took from 0.5 s to a minute here, with the
        // machine quiet or loaded.
        const BATCHES: i32 = 400;
        const VALUE_BYTES: usize = 256 << 10;
        let producer = cluster.producer_id().await;
        let mut clients = cluster.clients(leader).await;
        let value = vec![b'x'; VALUE_BYTES];
        for seq in 0..BATCHES {
            let mut builder = BatchBuilder::new().producer(producer, 0, seq);
            builder.push(now_ms(), None, Some(&value), &[]);
            let batch = builder.finish().freeze();
            let produced = clients
                .broker
                .produce(pb::ProduceRequest {
                    topic: "bulk".to_string(),
                    target: Some(pb::produce_request::Target::Partition(0)),
                    payload: Some(pb::produce_request::Payload::Batch(batch.clone())),
                    ..pb::ProduceRequest::default()
                })
                .await;
            if produced.is_err() {
                // The leader moved: follow it (the retry is stored once: idempotent).
                cluster.produce_idempotent("bulk", 0, batch).await;
                let leader = cluster.leader_of("bulk", 0).await;
                clients = cluster.clients(leader).await;
            }
        }
        let controller = cluster.controller_leader().await;
        let leader = cluster.leader_of("bulk", 0).await;
        let victim = [1, 2, 3]
            .into_iter()
            .find(|id| *id != leader && *id != controller)
            .or_else(|| [1, 2, 3].into_iter().find(|id| *id != leader))
            .expect("a follower");
        let (status, _) = http_get(http_address(slot, victim), "/readyz")
            .await
            .expect("the victim answers");
        assert_eq!(status, 200, "ready before the wipe");

        cluster.node(victim).kill9();
        let data = cluster.node(victim).data_dir.clone();
        std::fs::remove_dir_all(&data).expect("wipe");
        std::fs::create_dir_all(&data).expect("empty data dir");
        cluster.node(victim).relaunch();
        // Poll as fast as it answers: every answer until the first 200.
        let deadline = Instant::now() + CATCH_UP_WAIT;
        let mut answers: Vec<(u16, String)> = Vec::new();
        let mut catching_up_since: Option<Instant> = None;
        loop {
            if let Some((status, body)) = http_get(http_address(slot, victim), "/readyz").await {
                let ready = status == 200;
                if body.contains("catching up") {
                    catching_up_since.get_or_insert_with(Instant::now);
                }
                answers.push((status, body));
                if ready {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {victim} not ready within {:?}; last answers {:?}",
                CATCH_UP_WAIT,
                answers.iter().rev().take(3).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.node(victim).wait_ready();
        let catching_up: Vec<&(u16, String)> = answers
            .iter()
            .filter(|(_, body)| body.contains("partition bulk/0 catching up (at raft index "))
            .collect();
        let distinct: BTreeSet<&str> = answers.iter().map(|(_, body)| body.as_str()).collect();
        eprintln!(
            "{} answers, {} of them catching up (for {:?} before ready), the first {:?}, the \
             last {:?}",
            answers.len(),
            catching_up.len(),
            catching_up_since.map(|since| since.elapsed()),
            catching_up.first(),
            catching_up.last()
        );
        assert!(
            !catching_up.is_empty(),
            "no 503 said the partition was catching up; answers: {distinct:#?}"
        );
        assert!(catching_up.iter().all(|(status, _)| *status == 503));
        let body: serde_json::Value =
            serde_json::from_str(&catching_up[0].1).expect("JSON from /readyz");
        assert_eq!(body["ready"], false);
        assert!(body["count"].as_u64().is_some_and(|count| count >= 1));

        // Ready: it serves what the leader serves, batch for batch (once it has applied the
        // last few entries "caught up" allows it to trail by).
        let leader = cluster.leader_of("bulk", 0).await;
        let (expected, high_watermark) = raw_batches(&cluster, leader, "bulk").await;
        let data_batches = expected
            .values()
            .filter(|batch| {
                !strata_proto::batch::BatchHeader::parse(batch)
                    .expect("a header")
                    .is_control()
            })
            .count();
        assert_eq!(data_batches, BATCHES as usize);
        let deadline = Instant::now() + WAIT;
        loop {
            let (served, victim_high_watermark) = raw_batches(&cluster, victim, "bulk").await;
            if victim_high_watermark == high_watermark {
                assert!(
                    served == expected,
                    "node {victim} serves other batches than the leader"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {victim} at {victim_high_watermark} of {high_watermark} after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("test timed out");
}
