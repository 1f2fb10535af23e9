//! Issue 16's "misleading today" list, each as the CLI against real servers: `topic describe`
//! and `cluster info` give the cluster's view from any node (how old, which nodes do not
//! answer), `topic add-partitions`, `consume --group` on SIGTERM, `produce --on-error`, `log
//! dump|verify` of a node's directory, `consume --follow` of a deleted topic, `bench consume`
//! latency, retention back to unlimited and units, and the small things (plural, colour in log
//! files, repeated addresses, help, the playground's "Try it").
//!
//! Cluster slots (127.0.<slot>.1): 135.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{COMMAND_DEADLINE, Output, Server, server_binary, strata};
use serde_json::Value;

/// How long a condition polled for may take.
const POLL_DEADLINE: Duration = Duration::from_secs(30);

fn json(output: &Output) -> Value {
    assert!(
        output.success,
        "command failed: {}\n{}",
        output.stderr, output.stdout
    );
    serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", output.stdout))
}

/// Runs `strata --brokers BROKERS ARGS` with `stdin`.
fn cli(brokers: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["--brokers", brokers];
    all.extend_from_slice(args);
    strata(&all, stdin, COMMAND_DEADLINE)
}

/// Polls `check` until it returns `Some`, panicking with `what` after [`POLL_DEADLINE`].
fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < POLL_DEADLINE,
            "{what}: not within {POLL_DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Three real nodes on `127.0.<slot>.1`, killed on drop.
struct Cluster {
    nodes: Vec<Option<Child>>,
    addresses: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn start(slot: u8) -> Self {
        let addresses: Vec<String> = (1..=3)
            .map(|id| format!("127.0.{slot}.1:{}", 21_000 + id))
            .collect();
        let initial: Vec<String> = addresses
            .iter()
            .enumerate()
            .map(|(index, address)| format!("{}={address}", index + 1))
            .collect();
        let initial = initial.join(",");
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (index, address) in addresses.iter().enumerate() {
            let dir = tempfile::tempdir().expect("data dir");
            let child = Command::new(server_binary())
                .args(["--node-id", &(index + 1).to_string(), "--listen", address])
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--initial-cluster", &initial])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start strata-server");
            nodes.push(Some(child));
            dirs.push(dir);
        }
        let cluster = Self {
            nodes,
            addresses,
            _dirs: dirs,
        };
        for address in &cluster.addresses {
            poll(&format!("{address} serves"), || {
                let output = cli(address, &["--timeout", "2s", "cluster", "info"], b"");
                output.success.then_some(())
            });
        }
        cluster
    }

    fn brokers(&self) -> String {
        self.addresses.join(",")
    }

    /// Node `id`'s address.
    fn node(&self, id: u64) -> &str {
        &self.addresses[id as usize - 1]
    }

    /// kill -9 of node `id`.
    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[id as usize - 1].take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }
}

/// `--format json` of `topic describe NAME`, asked of one node only.
fn describe_at(address: &str, name: &str) -> Value {
    json(&cli(
        address,
        &["--format", "json", "topic", "describe", name],
        b"",
    ))
}

/// Whichever node is asked, `topic describe` and `cluster info` show every partition's leader,
/// in-sync replicas and high watermark (before, a node showed leader `-`, high watermark 0
/// and no in-sync replicas for partitions it does not host). `topic add-partitions` grows a
/// topic: the new partitions are led and take records, the old ones keep theirs, a count not
/// larger than now is refused. After a kill -9 the dead node is named as not answering.
#[test]
fn the_cluster_view_from_any_node_add_partitions_and_a_dead_node() {
    let mut cluster = Cluster::start(135);
    let brokers = cluster.brokers();
    // One replica per partition, spread over the three nodes: each node hosts one.
    let created = cli(
        &brokers,
        &["topic", "create", "spread", "--partitions", "3"],
        b"",
    );
    assert!(created.success, "{}", created.stderr);
    for partition in 0..3 {
        let lines: String = (0..10).map(|i| format!("p{partition}-{i}\n")).collect();
        let produced = cli(
            &brokers,
            &["produce", "spread", "--partition", &partition.to_string()],
            lines.as_bytes(),
        );
        assert!(produced.success, "{}", produced.stderr);
    }
    for id in 1..=3 {
        let described = describe_at(cluster.node(id), "spread");
        for info in described["partition_info"].as_array().expect("partitions") {
            assert_ne!(info["leader_node_id"], 0, "asked node {id}: {described}");
            assert_eq!(info["high_watermark"], 10, "asked node {id}: {described}");
            assert!(
                !info["in_sync_node_ids"]
                    .as_array()
                    .expect("in-sync")
                    .is_empty(),
                "asked node {id}: {described}"
            );
        }
        assert!(described["view_age_ms"].is_u64(), "{described}");
        let text = cli(cluster.node(id), &["topic", "describe", "spread"], b"");
        assert!(text.stdout.contains("in-sync"), "{}", text.stdout);
    }

    // Replicated on all three: each node alone names the leader and the in-sync replicas.
    let created = cli(
        &brokers,
        &[
            "topic",
            "create",
            "grow",
            "--partitions",
            "2",
            "--replication-factor",
            "3",
        ],
        b"",
    );
    assert!(created.success, "{}", created.stderr);
    for id in 1..=3 {
        poll(&format!("node {id} names every in-sync replica"), || {
            let info = json(&cli(
                cluster.node(id),
                &["--format", "json", "cluster", "info"],
                b"",
            ));
            let topic = info["topics"]
                .as_array()?
                .iter()
                .find(|topic| topic["name"] == "grow")?
                .clone();
            topic["partition_info"]
                .as_array()?
                .iter()
                .all(|p| {
                    p["leader_node_id"] != 0
                        && p["in_sync_node_ids"]
                            .as_array()
                            .is_some_and(|in_sync| in_sync.len() == 3)
                })
                .then_some(())
        });
    }

    // add-partitions: existing records stay, new partitions are led and take records.
    for partition in 0..2 {
        let lines: String = (0..5)
            .map(|i| format!("k{i}:old-{partition}-{i}\n"))
            .collect();
        let produced = cli(
            &brokers,
            &[
                "produce",
                "grow",
                "--key-separator",
                ":",
                "--partition",
                &partition.to_string(),
            ],
            lines.as_bytes(),
        );
        assert!(produced.success, "{}", produced.stderr);
    }
    let read = |partition: u32| {
        let output = cli(
            &brokers,
            &[
                "--format",
                "json",
                "consume",
                "grow",
                "--partition",
                &partition.to_string(),
            ],
            b"",
        );
        assert!(output.success, "{}", output.stderr);
        output
            .stdout
            .lines()
            .map(|line| {
                let record: Value = serde_json::from_str(line).expect("a JSON record");
                record["value"].as_str().expect("text value").to_owned()
            })
            .collect::<Vec<String>>()
    };
    let before = [read(0), read(1)];
    let grown = cli(&brokers, &["topic", "add-partitions", "grow", "5"], b"");
    assert!(grown.success, "{}", grown.stderr);
    assert!(
        grown.stderr.contains("different partition"),
        "the Kafka caveat about keys: {}",
        grown.stderr
    );
    assert!(grown.stdout.contains("5 partitions"), "{}", grown.stdout);
    let described = describe_at(cluster.node(1), "grow");
    assert_eq!(described["partitions"], 5, "{described}");
    let infos = described["partition_info"].as_array().expect("partitions");
    assert_eq!(infos.len(), 5, "{described}");
    for info in infos {
        assert_eq!(
            info["replica_node_ids"].as_array().expect("replicas").len(),
            3,
            "{described}"
        );
    }
    poll("every new partition has a leader", || {
        let described = describe_at(cluster.node(2), "grow");
        described["partition_info"]
            .as_array()?
            .iter()
            .all(|info| info["leader_node_id"] != 0)
            .then_some(())
    });
    for partition in 2..5 {
        let produced = cli(
            &brokers,
            &["produce", "grow", "--partition", &partition.to_string()],
            format!("new-{partition}\n").as_bytes(),
        );
        assert!(produced.success, "{}", produced.stderr);
        assert_eq!(read(partition), [format!("new-{partition}")]);
    }
    assert_eq!([read(0), read(1)], before, "existing data untouched");
    for not_larger in ["5", "3"] {
        let refused = cli(
            &brokers,
            &["topic", "add-partitions", "grow", not_larger],
            b"",
        );
        assert_eq!(refused.code, Some(1), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("INVALID_ARGUMENT")
                && refused.stderr.contains("has 5 partitions")
                && refused.stderr.contains("6 to"),
            "{}",
            refused.stderr
        );
    }

    // A dead node: named as not answering, in JSON and marked in text.
    cluster.kill(3);
    let survivor = cluster.node(1).to_owned();
    poll("node 3 is named as not answering", || {
        let info = json(&cli(
            &survivor,
            &["--format", "json", "cluster", "info"],
            b"",
        ));
        info["unanswered_node_ids"]
            .as_array()?
            .contains(&Value::from(3))
            .then_some(())
    });
    let described = describe_at(&survivor, "grow");
    assert!(
        described["unanswered_node_ids"]
            .as_array()
            .expect("unanswered")
            .contains(&Value::from(3)),
        "{described}"
    );
    let text = cli(&survivor, &["topic", "describe", "grow"], b"");
    assert!(
        text.stdout.contains("not answering: node 3") && text.stdout.contains("3*"),
        "{}",
        text.stdout
    );
    let text = cli(&survivor, &["cluster", "info"], b"");
    assert!(text.stdout.contains("ms ago"), "{}", text.stdout);
}

/// Reads lines of a child's stdout on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// Spawns `strata --brokers BROKERS ARGS` with piped stdout and stderr.
fn spawn_cli(brokers: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--brokers", brokers])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata")
}

/// Sends `signal` (`TERM`, `INT`) to `child`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for `child` to exit, killing it at the deadline; returns its code and stderr.
fn finish(mut child: Child, deadline: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return (status.code(), stderr);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("the command did not exit within {deadline:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `consume --group` stopped by SIGTERM commits what it printed and leaves the group, as on
/// Ctrl-C (before: exit 143, nothing committed, the member lingering).
#[test]
fn sigterm_commits_and_leaves_the_group() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let address = server.address.as_str();
    assert!(cli(address, &["topic", "create", "jobs"], b"").success);
    assert!(cli(address, &["produce", "jobs"], b"a\nb\nc\nd\ne\n").success);
    let mut consumer = spawn_cli(address, &["consume", "jobs", "--group", "workers"]);
    let lines = lines_of(&mut consumer);
    for _ in 0..5 {
        lines
            .recv_timeout(POLL_DEADLINE)
            .expect("the member prints the records");
    }
    signal(&consumer, "TERM");
    let (code, stderr) = finish(consumer, COMMAND_DEADLINE);
    assert_eq!(code, Some(0), "{stderr}");
    let described = json(&cli(
        address,
        &["--format", "json", "group", "describe", "workers"],
        b"",
    ));
    assert_eq!(
        described["partitions"][0]["committed_offset"], 5,
        "{described}"
    );
    assert_eq!(
        described["members"].as_array().map(Vec::len),
        Some(0),
        "{described}"
    );
}

/// A bad line in the middle of `produce`: with the default `--on-error stop` the lines before
/// it are acknowledged and counted, and the summary says which lines were not sent (exit 2);
/// with `--on-error skip` every other line is sent and the bad one is listed.
#[test]
fn produce_says_what_a_bad_line_left_unsent() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let address = server.address.as_str();
    assert!(cli(address, &["topic", "create", "lines"], b"").success);
    assert!(cli(address, &["topic", "create", "skipped"], b"").success);
    let mut input = String::new();
    for line in 1..=100 {
        if line == 51 {
            input.push_str("no separator here\n");
        } else {
            input.push_str(&format!("k{line}:v{line}\n"));
        }
    }
    let stopped = cli(
        address,
        &["produce", "lines", "--key-separator", ":"],
        input.as_bytes(),
    );
    assert_eq!(stopped.code, Some(2), "{}", stopped.stderr);
    assert!(
        stopped.stdout.contains("produced 50 records"),
        "{}",
        stopped.stdout
    );
    assert!(
        stopped
            .stdout
            .contains("line 51: the line has no key separator"),
        "{}",
        stopped.stdout
    );
    assert!(
        stopped.stderr.contains("line 51") && stopped.stderr.contains("were not sent"),
        "{}",
        stopped.stderr
    );
    let stored = cli(address, &["consume", "lines"], b"");
    assert_eq!(stored.stdout.lines().count(), 50, "{}", stored.stdout);

    let skipped = cli(
        address,
        &[
            "--format",
            "json",
            "produce",
            "skipped",
            "--key-separator",
            ":",
            "--on-error",
            "skip",
        ],
        input.as_bytes(),
    );
    let summary = json(&skipped);
    assert_eq!(summary["records"], 99, "{summary}");
    assert_eq!(summary["bad_lines"], 1, "{summary}");
    assert_eq!(summary["bad_lines_listed"][0]["line"], 51, "{summary}");
    let stored = cli(address, &["consume", "skipped"], b"");
    assert_eq!(stored.stdout.lines().count(), 99);

    // One record is one record.
    let one = cli(address, &["produce", "lines"], b"single\n");
    assert!(one.stdout.contains("produced 1 record "), "{}", one.stdout);
}

/// `log dump` and `log verify` of a node's data directory (or a topic's) go through every
/// partition below it; a directory without any is refused with a hint (before: "0 segments,
/// 0 batches, 0 problems" and exit 0).
#[test]
fn log_commands_find_the_partitions_below_a_directory() {
    let data = tempfile::tempdir().expect("data dir");
    let address = format!("127.0.0.1:{}", common::free_port());
    {
        let server = Server::launch(data.path(), &address);
        server.wait_until_ready();
        assert!(
            cli(
                &address,
                &["topic", "create", "disk", "--partitions", "2"],
                b""
            )
            .success
        );
        for partition in ["0", "1"] {
            let produced = cli(
                &address,
                &["produce", "disk", "--partition", partition],
                b"x\ny\n",
            );
            assert!(produced.success, "{}", produced.stderr);
        }
    }
    let root = data.path().to_str().expect("utf8 path");
    let verified = strata(&["log", "verify", root], b"", COMMAND_DEADLINE);
    assert!(verified.success, "{}\n{}", verified.stdout, verified.stderr);
    let disk_partitions: Vec<&str> = verified
        .stdout
        .lines()
        .filter(|line| line.starts_with("== ") && line.contains("-disk"))
        .collect();
    assert_eq!(disk_partitions.len(), 2, "{}", verified.stdout);
    assert!(
        verified.stdout.contains("total: ") && verified.stdout.contains("0 problems"),
        "{}",
        verified.stdout
    );
    // A topic's directory: its two partitions, with their batches.
    let topic_dir = Path::new(disk_partitions[0].trim_start_matches("== "))
        .parent()
        .expect("the topic's directory")
        .to_path_buf();
    let dumped = strata(
        &["log", "dump", topic_dir.to_str().expect("utf8")],
        b"",
        COMMAND_DEADLINE,
    );
    assert!(dumped.success, "{}", dumped.stderr);
    assert!(
        dumped.stdout.contains("total: 2 partition directories"),
        "{}",
        dumped.stdout
    );
    assert!(dumped.stdout.contains("2 records"), "{}", dumped.stdout);

    let empty = tempfile::tempdir().expect("empty dir");
    let refused = strata(
        &["log", "verify", empty.path().to_str().expect("utf8")],
        b"",
        COMMAND_DEADLINE,
    );
    assert_eq!(refused.code, Some(2), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("no partition directory")
            && refused.stderr.contains("DATA_DIR/topics/"),
        "{}",
        refused.stderr
    );
}

/// `consume --follow` and `consume --group` of a topic that is deleted meanwhile fail, naming
/// the deletion (before: exit 0, silently, and the broker's error printed twice).
#[test]
fn follow_fails_when_its_topic_is_deleted() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let address = server.address.as_str();
    assert!(cli(address, &["topic", "create", "doomed"], b"").success);
    assert!(cli(address, &["produce", "doomed"], b"first\n").success);
    let mut follower = spawn_cli(address, &["consume", "doomed", "--follow"]);
    let lines = lines_of(&mut follower);
    lines
        .recv_timeout(POLL_DEADLINE)
        .expect("the follower prints the record");
    assert!(cli(address, &["topic", "delete", "doomed"], b"").success);
    let (code, stderr) = finish(follower, COMMAND_DEADLINE);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("topic doomed was deleted"), "{stderr}");

    // A group member says the same (before: the broker's error, printed twice).
    assert!(cli(address, &["topic", "create", "doomed"], b"").success);
    assert!(cli(address, &["produce", "doomed"], b"again\n").success);
    let mut member = spawn_cli(address, &["consume", "doomed", "--group", "g"]);
    let lines = lines_of(&mut member);
    lines
        .recv_timeout(POLL_DEADLINE)
        .expect("the member prints the record");
    assert!(cli(address, &["topic", "delete", "doomed"], b"").success);
    let (code, stderr) = finish(member, COMMAND_DEADLINE);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("topic doomed was deleted while the group read partition"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("unknown topic").count(), 0, "{stderr}");
}

/// `bench consume` of records produced before it started reports no latency (their age is
/// not a latency), and of no records no `p50 0.000`.
#[test]
fn bench_consume_reports_latency_honestly() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let address = server.address.as_str();
    assert!(cli(address, &["topic", "create", "old"], b"").success);
    assert!(cli(address, &["topic", "create", "empty"], b"").success);
    let lines: String = (0..20).map(|i| format!("{i}\n")).collect();
    assert!(cli(address, &["produce", "old"], lines.as_bytes()).success);
    // The records are stamped at least a millisecond before the bench starts.
    thread::sleep(Duration::from_millis(5));
    let report = json(&cli(
        address,
        &["--format", "json", "bench", "consume", "--topic", "old"],
        b"",
    ));
    assert_eq!(report["records"], 20, "{report}");
    assert_eq!(report["latency_ms"], Value::Null, "{report}");
    assert_eq!(report["latency_records"], 0, "{report}");
    let text = cli(address, &["bench", "consume", "--topic", "empty"], b"");
    assert!(text.success, "{}", text.stderr);
    assert!(
        text.stdout.contains("latency ms: none measured") && !text.stdout.contains("p50 0.000"),
        "{}",
        text.stdout
    );
}

/// Durations and sizes as people write them, and retention back to unlimited (before:
/// `--retention-ms 7d` was refused, and nothing could unset a retention).
#[test]
fn retention_takes_units_and_goes_back_to_unlimited() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let address = server.address.as_str();
    let created = json(&cli(
        address,
        &[
            "--format",
            "json",
            "topic",
            "create",
            "kept",
            "--retention-ms",
            "7d",
            "--retention-bytes",
            "1GiB",
            "--segment-bytes",
            "1MiB",
        ],
        b"",
    ));
    assert_eq!(created["config"]["retention_ms"], 604_800_000u64);
    assert_eq!(created["config"]["retention_bytes"], 1u64 << 30);
    assert_eq!(created["config"]["segment_bytes"], 1u64 << 20);
    let altered = json(&cli(
        address,
        &[
            "--format",
            "json",
            "topic",
            "alter",
            "kept",
            "--retention-ms",
            "unlimited",
            "--retention-bytes",
            "unlimited",
        ],
        b"",
    ));
    assert_eq!(altered["config"]["retention_ms"], Value::Null, "{altered}");
    assert_eq!(altered["config"]["retention_bytes"], Value::Null);
    assert_eq!(altered["config"]["segment_bytes"], 1u64 << 20);
    let text = cli(address, &["topic", "describe", "kept"], b"");
    assert!(
        text.stdout
            .contains("retention_ms=unlimited retention_bytes=unlimited"),
        "{}",
        text.stdout
    );
    let refused = cli(
        address,
        &["topic", "alter", "kept", "--retention-ms", "soon"],
        b"",
    );
    assert_eq!(refused.code, Some(2));
    assert!(
        refused.stderr.contains("7d") && refused.stderr.contains("unlimited"),
        "{}",
        refused.stderr
    );
}

/// The small things: an unreachable broker's address is said once, help describes arguments
/// and keeps the global flags apart, and the playground's node logs (files) carry no colour
/// codes and its "Try it" names a binary that runs.
#[test]
fn small_things() {
    let dead = format!("127.0.0.1:{}", common::free_port());
    let output = cli(&dead, &["--timeout", "1s", "topic", "list"], b"");
    assert_eq!(output.code, Some(2));
    assert_eq!(
        output.stderr.matches(dead.as_str()).count(),
        1,
        "{}",
        output.stderr
    );

    let help = strata(&["topic", "describe", "--help"], b"", COMMAND_DEADLINE);
    assert!(help.success);
    assert!(
        help.stdout.contains("The topic to describe") && help.stdout.contains("Global options:"),
        "{}",
        help.stdout
    );

    let data = tempfile::tempdir().expect("playground dir");
    let mut playground = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["playground", "--nodes", "1", "--server-bin"])
        .arg(server_binary())
        .arg("--data-dir")
        .arg(data.path())
        // A PATH without the CLI on it, as after `cargo build`.
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the playground");
    let lines = lines_of(&mut playground);
    let mut printed = Vec::new();
    let started = Instant::now();
    while !printed
        .iter()
        .any(|line: &String| line.contains("Ctrl-C stops the cluster"))
    {
        let remaining = POLL_DEADLINE
            .checked_sub(started.elapsed())
            .unwrap_or_default();
        match lines.recv_timeout(remaining) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = playground.kill();
                panic!("no 'Try it' text: {printed:?}");
            }
        }
    }
    signal(&playground, "INT");
    let (code, _) = finish(playground, COMMAND_DEADLINE);
    assert_eq!(code, Some(0));
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"))
        .canonicalize()
        .expect("the CLI's path");
    let produce_line = printed
        .iter()
        .find(|line| line.contains("produce orders"))
        .expect("a produce example");
    assert!(
        produce_line.contains(&format!("| {} produce", binary.display())),
        "{produce_line}"
    );
    let log = std::fs::read(data.path().join("node-1.log")).expect("the node's log");
    assert!(!log.is_empty(), "the node logged something at info");
    assert!(
        !log.contains(&0x1b),
        "colour codes in a log file: {}",
        String::from_utf8_lossy(&log)
    );
}
