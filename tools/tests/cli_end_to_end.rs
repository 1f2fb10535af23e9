//! The `strata` CLI against a real `strata-server` process: create a topic, produce keyed
//! lines, consume them back as JSON.
//!
//! The server binary is `target/<profile>/strata-server`, next to this test's own directory;
//! when it is missing the test builds it with `cargo build -p strata-server --bin
//! strata-server`. Every wait has a deadline, and the server is killed when the test ends,
//! passed or failed.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{COMMAND_DEADLINE, Output, STARTUP_DEADLINE, Server, free_port, server_binary};

use serde_json::Value;
use strata_client::proto::partitioner::partition_for_key;

const PARTITIONS: u32 = 3;
const RECORDS: usize = 1000;
const KEYS: usize = 13;
/// Runs `strata --brokers ADDRESS ARGS` with `stdin`, killing it at the deadline.
fn strata(address: &str, args: &[&str], stdin: &[u8], deadline: Duration) -> Output {
    let mut all = vec!["--brokers", address];
    all.extend_from_slice(args);
    common::strata(&all, stdin, deadline)
}

fn start_server() -> Server {
    Server::launch_fresh()
}

fn wait_until_ready(server: &Server) {
    server.wait_until_ready();
}

/// 1000 keyed lines go in through `strata produce` and come out of `strata consume --format
/// json` exactly once each, every key on the partition its hash names.
#[test]
fn produce_then_consume_json() {
    let server = start_server();
    wait_until_ready(&server);
    let address = server.address.as_str();

    let created = strata(
        address,
        &[
            "topic",
            "create",
            "e2e",
            "--partitions",
            &PARTITIONS.to_string(),
        ],
        b"",
        COMMAND_DEADLINE,
    );
    assert!(created.success, "create: {}", created.stderr);
    let again = strata(address, &["topic", "create", "e2e"], b"", COMMAND_DEADLINE);
    assert_eq!(again.code, Some(1), "a refusal exits 1: {}", again.stderr);
    assert!(
        again.stderr.contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );

    let mut input = String::new();
    for i in 0..RECORDS {
        input.push_str(&format!("key-{}\tvalue-{i}\n", i % KEYS));
    }
    let produced = strata(
        address,
        &[
            "produce",
            "e2e",
            "--key-separator",
            "\t",
            "--header",
            "source=e2e",
        ],
        input.as_bytes(),
        COMMAND_DEADLINE,
    );
    assert!(produced.success, "produce: {}", produced.stderr);
    assert!(
        produced
            .stdout
            .contains(&format!("produced {RECORDS} records")),
        "{}",
        produced.stdout
    );

    let consumed = strata(
        address,
        &["consume", "e2e", "--format", "json"],
        b"",
        COMMAND_DEADLINE,
    );
    assert!(consumed.success, "consume: {}", consumed.stderr);
    let mut seen: HashMap<String, (u32, u64)> = HashMap::new();
    let mut offsets: HashMap<u32, Vec<u64>> = HashMap::new();
    for line in consumed.stdout.lines() {
        let record: Value = serde_json::from_str(line).expect("one JSON object per line");
        let partition = record["partition"].as_u64().expect("partition") as u32;
        let offset = record["offset"].as_u64().expect("offset");
        let key = record["key"].as_str().expect("UTF-8 key");
        let value = record["value"].as_str().expect("UTF-8 value");
        assert_eq!(
            partition,
            partition_for_key(key.as_bytes(), PARTITIONS),
            "{line}"
        );
        assert_eq!(record["headers"][0]["key"], "source", "{line}");
        assert_eq!(record["headers"][0]["value"], "e2e", "{line}");
        let index: usize = value
            .strip_prefix("value-")
            .and_then(|index| index.parse().ok())
            .expect("value-N");
        assert_eq!(key, format!("key-{}", index % KEYS), "{line}");
        let previous = seen.insert(value.to_owned(), (partition, offset));
        assert!(previous.is_none(), "{value} came twice");
        offsets.entry(partition).or_default().push(offset);
    }
    assert_eq!(seen.len(), RECORDS);
    // Each partition in offset order, without gaps.
    for (partition, list) in offsets {
        let expected: Vec<u64> = (list[0]..list[0] + list.len() as u64).collect();
        assert_eq!(list, expected, "partition {partition}");
    }

    // --count stops early; --partition reads one partition.
    let some = strata(
        address,
        &["consume", "e2e", "--count", "5", "--partition", "0"],
        b"",
        COMMAND_DEADLINE,
    );
    assert!(some.success, "{}", some.stderr);
    assert_eq!(some.stdout.lines().count(), 5);
    assert!(some.stdout.lines().all(|line| line.starts_with("0\t")));
}

/// `strata consume --group` reads as a group member and commits what it printed; `group
/// describe --format json` shows the committed offsets and lag; `group reset-offsets` moves
/// them (dry run first); a second `consume --group` resumes from there; `group list` and
/// `group delete` round it off.
#[test]
fn group_consume_describe_reset_delete() {
    let server = start_server();
    wait_until_ready(&server);
    let address = server.address.as_str();
    let run = |args: &[&str], stdin: &[u8]| {
        let output = strata(address, args, stdin, COMMAND_DEADLINE);
        assert!(output.success, "strata {args:?}: {}", output.stderr);
        output
    };
    run(&["topic", "create", "jobs", "--partitions", "2"], b"");
    let lines: String = (0..10).map(|i| format!("job-{i}\n")).collect();
    run(&["produce", "jobs", "--partition", "0"], lines.as_bytes());

    // The member prints 6 of the 10 records, commits them and leaves.
    let consumed = run(
        &[
            "consume", "jobs", "--group", "workers", "--count", "6", "--format", "json",
        ],
        b"",
    );
    let offsets: Vec<u64> = consumed
        .stdout
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("JSON record");
            record["offset"].as_u64().expect("offset")
        })
        .collect();
    assert_eq!(offsets, (0..6).collect::<Vec<u64>>());

    let describe = |group: &str| -> Value {
        let output = run(&["group", "describe", group, "--format", "json"], b"");
        serde_json::from_str(&output.stdout).expect("JSON description")
    };
    let described = describe("workers");
    assert_eq!(described["state"], "empty", "{described}");
    let p0 = &described["partitions"][0];
    assert_eq!(p0["partition"], 0);
    assert_eq!(p0["committed_offset"], 6, "{described}");
    assert_eq!(p0["high_watermark"], 10);
    assert_eq!(p0["lag_records"], 4);
    let text = run(&["group", "describe", "workers"], b"");
    assert!(text.stdout.contains("jobs"), "{}", text.stdout);

    // Reset to offset 2: a dry run changes nothing, the real one does.
    let reset = |extra: &[&str]| {
        let mut args = vec![
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--to",
            "offset:2",
            "--partitions",
            "0",
        ];
        args.extend_from_slice(extra);
        run(&args, b"")
    };
    reset(&["--dry-run"]);
    assert_eq!(describe("workers")["partitions"][0]["committed_offset"], 6);
    reset(&[]);
    assert_eq!(describe("workers")["partitions"][0]["committed_offset"], 2);
    let bad = strata(
        address,
        &[
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--to",
            "sideways",
        ],
        b"",
        COMMAND_DEADLINE,
    );
    assert_eq!(bad.code, Some(2), "a usage error exits 2: {}", bad.stderr);

    // The next member resumes at the reset offset.
    let consumed = run(
        &[
            "consume", "jobs", "--group", "workers", "--count", "8", "--format", "json",
        ],
        b"",
    );
    let first: Value =
        serde_json::from_str(consumed.stdout.lines().next().expect("a record")).expect("JSON");
    assert_eq!(first["offset"], 2, "{}", consumed.stdout);
    assert_eq!(describe("workers")["partitions"][0]["lag_records"], 0);

    let listed = run(&["group", "list", "--format", "json"], b"");
    let groups: Value = serde_json::from_str(&listed.stdout).expect("JSON list");
    assert_eq!(groups[0]["group_id"], "workers", "{groups}");
    run(&["group", "delete", "workers"], b"");
    let gone = strata(
        address,
        &["group", "describe", "workers"],
        b"",
        COMMAND_DEADLINE,
    );
    assert_eq!(gone.code, Some(1), "{}", gone.stderr);
    assert!(gone.stderr.contains("UNKNOWN_GROUP"), "{}", gone.stderr);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// `strata playground --run-demo` starts a 3-node cluster, creates a replicated topic,
/// produces, consumes, stops the cluster and exits 0.
#[test]
fn playground_demo_runs_a_cluster() {
    server_binary();
    let data = tempfile::tempdir().expect("data dir");
    let dir = data.path().to_str().expect("UTF-8 path");
    let output = strata(
        "127.0.0.1:1",
        &[
            "playground",
            "--nodes",
            "3",
            "--run-demo",
            "--data-dir",
            dir,
        ],
        b"",
        COMMAND_DEADLINE,
    );
    assert!(output.success, "{}\n{}", output.stdout, output.stderr);
    assert!(
        output.stdout.contains("consumed 10 records"),
        "{}",
        output.stdout
    );
}

/// On a playground cluster: `cluster add-node` adds a fourth server, `cluster remove-node`
/// moves its replicas away and removes it, and the topic's records are all still there.
#[test]
fn cluster_add_node_and_remove_node() {
    use std::io::BufRead;
    let server = server_binary();
    let data = tempfile::tempdir().expect("data dir");
    let mut playground = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["playground", "--nodes", "3", "--data-dir"])
        .arg(data.path().join("cluster"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the playground");
    let stdout = playground.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut addresses = Vec::new();
    let brokers = loop {
        let line = received
            .recv_timeout(STARTUP_DEADLINE)
            .expect("the playground prints its nodes");
        if let Some(rest) = line.strip_prefix("node ")
            && let Some((_, address)) = rest.split_once(": ")
        {
            addresses.push(address.split(',').next().expect("address").to_string());
        }
        if let Some((_, list)) = line.split_once(" nodes up: ") {
            break list.to_string();
        }
    };
    let run = |args: &[&str]| strata(&brokers, args, b"", COMMAND_DEADLINE);
    // A fourth server that knows the cluster and itself.
    let fourth = format!("127.0.0.1:{}", free_port());
    let mut initial: Vec<String> = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| format!("{}={address}", i + 1))
        .collect();
    initial.push(format!("4={fourth}"));
    let mut node4 = Command::new(&server)
        .args(["--node-id", "4", "--listen", &fourth, "--data-dir"])
        .arg(data.path().join("node-4"))
        .args(["--initial-cluster", &initial.join(",")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node 4");
    let started = Instant::now();
    loop {
        let added = run(&["cluster", "add-node", "4", &fourth]);
        if added.success {
            assert!(added.stdout.contains("added node 4"), "{}", added.stdout);
            break;
        }
        assert!(
            started.elapsed() < STARTUP_DEADLINE,
            "add-node kept failing: {}",
            added.stderr
        );
        thread::sleep(Duration::from_millis(200));
    }
    let created = run(&[
        "topic",
        "create",
        "moved",
        "--partitions",
        "4",
        "--replication-factor",
        "3",
    ]);
    assert!(created.success, "{}", created.stderr);
    let lines: String = (0..40).map(|i| format!("m{i}\n")).collect();
    let produced = strata(
        &brokers,
        &["produce", "moved"],
        lines.as_bytes(),
        COMMAND_DEADLINE,
    );
    assert!(produced.success, "{}", produced.stderr);
    let removed = run(&["cluster", "remove-node", "4", "--wait", "90s"]);
    assert!(removed.success, "{}", removed.stderr);
    assert!(
        removed.stdout.contains("removed node 4"),
        "{}",
        removed.stdout
    );
    let _ = node4.kill();
    let _ = node4.wait();
    let consumed = run(&["consume", "moved", "--format", "json"]);
    assert!(consumed.success, "{}", consumed.stderr);
    assert_eq!(consumed.stdout.lines().count(), 40, "{}", consumed.stdout);
    let info = run(&["cluster", "info", "--format", "json"]);
    assert!(info.success, "{}", info.stderr);
    assert!(!info.stdout.contains(&fourth), "{}", info.stdout);
    // SIGTERM: the playground stops its servers.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc_kill(playground.id() as i32, 15) };
    let (done, finished) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let status = playground.wait();
        let _ = done.send(());
        status
    });
    assert!(
        finished.recv_timeout(COMMAND_DEADLINE).is_ok(),
        "the playground did not stop"
    );
    let _ = waiter.join();
}
