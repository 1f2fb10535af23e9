//! # strata-tests
//!
//! Integration, crash and fault tests of Strata, and the helpers they share:
//! - [`Seed`]: a seeded random source that prints its seed, so any failure can be replayed with
//!   `STRATA_TEST_SEED=<seed>`.
//! - [`data_batch`], [`read_values`]: build batches with recognizable values and read them back.
//!
//! - [`server`]: real `strata-server` processes on loopback.
//! - [`cluster`]: a cluster of them on a loopback address of its own, with leader discovery.
//! - [`proxy`]: a TCP proxy a test cuts and heals (network partitions without privileges).
//! - [`http`]: a small blocking HTTP/1.1 client (plain or TLS) for the HTTP listener's tests.
//! - [`kafka`]: Kafka clients nobody here wrote (Python, kcat, kafkajs), installed on first use,
//!   and running them with a deadline.
//! - [`console`]: headless Chromium and Playwright for the console's browser tests.
//! - [`s3`]: moto's S3-compatible server for the capture tests.
//!
//! Tests live in `tests/`: `storage_crash.rs` (torn writes, index damage, I/O faults),
//! `broker.rs` (produce, consume, replay, errors and crashes against real servers),
//! `bad_input.rs`, `groups.rs` (the group protocol: hand-over, fencing, durable offsets, live
//! reset, lag), `idempotence.rs` (retries stored once, across kill -9), `group_consumer.rs`
//! (the Rust client's group consumer in member processes, request/reply, the idempotent
//! producer across kill -9), `cluster.rs` (3-node fault tests: leader kills, whole-cluster
//! kill, isolation, wiped disks, rolling restart, quiet partitions, the client following
//! leaders), `hostile_peers.rs` (forged and misaddressed raft messages on the node-to-node
//! stream), `hostile_data.rs` (decompression bombs, LZ4 garbage and lying record counts
//! refused; decoded fetches in bounded server memory), `codecs.rs` (all five Kafka codecs
//! stored as sent and read back, through the raw Produce and the Rust client; a bomb in each
//! refused in bounded memory), `exhaustion.rs` (a low descriptor
//! limit, a connection flood and a full disk: refused with RESOURCE_EXHAUSTED, nothing
//! acknowledged lost), `python_client.rs` and `checks_and_errors.rs` (commits past the high
//! watermark, oversized produces, produces while a restarted node loads its metadata,
//! controller-only requests elsewhere, removing the last node), `tls.rs` (TLS on the listener
//! and between nodes: refusals, start-up errors, rotation, TLS clusters, forged peer streams),
//! `users_acls.rs` (users and ACLs replicated to every node, kept across a controller snapshot
//! and a leader kill; the bootstrap user created once), `authorization.rs` (every method without
//! credentials, with a wrong password, without and with its ACL; deny wins, prefixes, filtered
//! lists, user and ACL deletion on every node), `scale_memory.rs` (the server's anonymous memory
//! per idle subscription: at the end of a partition, on shared or own connections, after a
//! replay), `http_listener.rs` (the HTTP listener: health, readiness while starting, the JSON API's round
//! trip and errors, passwords, ACLs, client certificates and `--metrics-auth`),
//! `kafka_listener.rs` (the Kafka listener's framing, ApiVersions and Metadata, by
//! hand and with kcat; a broken connection never affects another), `kafka_data.rs` (the Kafka
//! data path with confluent-kafka, kafka-python and kcat: codecs, acks, offsets by time, topic
//! admin, batches stored as sent, long-poll fetch, an idempotent producer across a leader kill),
//! `kafka_security.rs` (SASL SCRAM-SHA-256 and PLAIN over TLS with confluent-kafka, kcat and by
//! hand; ACLs on Kafka produce, consume and Metadata; a client certificate as the principal),
//! `kafka_fuzz.rs` (random and mutated frames of every served API, in process and against a
//! real server), `kafka_clients.rs` (aiokafka, kafkajs and kcat: metadata, every codec, offsets
//! by time, read back over gRPC; every client's idempotent producer across a leader kill).
//!
//! `export.rs`: `strata export` of 1 M records to Parquet, JSON lines and CSV read back by
//! DuckDB and pyarrow (`tests/analytics/export_check.py`), time edges, bad input.
//!
//! `src/bin/group-member.rs` is a group member process for `group_consumer.rs`.
//!
//! `console.rs`: the web console (`/ui`) in headless Chromium driven by Playwright
//! (`tests/console/console.py`): every page, on a 3-node cluster and with passwords and ACLs.
//! `tools/tests/cli_misleading.rs` (crate strata-tools, slot 135): issue 16's misleading CLI
//! outputs against real servers, and `topic add-partitions`.
//!
//! `kafka_groups.rs`: Kafka consumer groups, the classic protocol by hand, and groups of
//! confluent-kafka, kafka-python, aiokafka and kafkajs members with one leaving and one joining,
//! on a node and on a cluster.
//!
//! The CLI's own tests are in `tools/tests/` (they need the `strata` binary): among them
//! `cli_features.rs` (format strings, offset specs, several topics, produce inputs, progress,
//! completion) and `readme_local_cluster.rs` (the README's "Run a local cluster yourself"
//! section run as written).
//! `metrics_data.rs`: `/metrics` after known gRPC, JSON API and Kafka traffic, parsed by
//! Prometheus's parser (`tests/metrics/*.py`); `--metrics-auth`; the Grafana dashboard's names.
//! `metrics_cluster.rs`: raft, partition-health and consumer-lag series of `/metrics` on a
//! 3-node cluster (leader kill, a node down, lag summed over nodes, per-partition series), and
//! `/readyz` while a wiped node catches up.
//! `capture.rs`: continuous capture to Parquet (issue 15), checked by pyarrow and DuckDB
//! (`tests/analytics/capture_check.py`): exactly once across leader kills, retention held back
//! until captured, capture lag, bad configs refused, capture to an S3 bucket (moto) (slots 155-159,
//! 161); `capture_s3.rs`: the S3 target itself against moto: probes and whole uploads (slot 160).

pub mod certs;
pub mod cluster;
pub mod console;
pub mod http;
pub mod kafka;
pub mod proxy;
pub mod s3;
pub mod server;

use bytes::BytesMut;
use strata_server::storage::PartitionLog;
use strata_server::storage::batch::{BatchBuilder, decode_records, split_batches};

/// The stable error code of a failed call (the `strata-error-code` metadata), e.g.
/// `ERROR_CODE_UNKNOWN_MEMBER`; empty when the status has none.
pub fn error_code(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("strata-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A small deterministic random source (splitmix64).
#[derive(Debug, Clone)]
pub struct Seed {
    state: u64,
}

impl Seed {
    /// The seed from `STRATA_TEST_SEED`, or `default`; printed to stderr so a failing test shows
    /// how to replay it.
    pub fn from_env(test: &str, default: u64) -> Self {
        let seed = std::env::var("STRATA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("{test}: seed {seed} (replay with STRATA_TEST_SEED={seed})");
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`; `bound` must not be 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    pub fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next_u64() as u8).collect()
    }
}

/// A data batch of `count` records with values `"{tag}-{i}"` and timestamps from `timestamp`.
pub fn data_batch(tag: &str, count: usize, timestamp: i64) -> BytesMut {
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let value = format!("{tag}-{i}");
        builder.push(
            timestamp + i as i64,
            Some(tag.as_bytes()),
            Some(value.as_bytes()),
            &[("i", Some(&i.to_be_bytes()))],
        );
    }
    builder.finish()
}

/// The values of every record from the log start to the end, checking that offsets are dense.
pub fn read_values(log: &PartitionLog) -> Vec<String> {
    let start = log.log_start_offset();
    let mut values = Vec::new();
    let mut next = start;
    while next < log.next_offset() {
        let spans = log.read(next, 64 * 1024).expect("read inside the range");
        assert!(!spans.is_empty(), "read at {next} returned nothing");
        for span in spans {
            for split in split_batches(span) {
                let (header, batch) = split.expect("whole batches");
                for record in decode_records(&batch).expect("stored batches decode") {
                    if record.offset >= next {
                        assert_eq!(record.offset, start + values.len() as u64, "dense offsets");
                        let value = record.value.expect("value").to_vec();
                        values.push(String::from_utf8(value).expect("utf8 value"));
                    }
                }
                next = header.base_offset as u64 + header.offset_count();
            }
        }
    }
    values
}

/// A field of a server's `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`, `RssAnon`).
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("a number in {line:?}"));
    kib * 1024
}
