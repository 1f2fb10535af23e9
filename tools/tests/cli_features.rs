//! The kcat and rpk everyday tools of the `strata` CLI against a real `strata-server`: format
//! strings, offset specs (`--from -N|+N|time:...`, `--to`, `--count-per-partition`,
//! `--partitions`), several topics and `--topic-pattern` in one consume, produce from JSON
//! lines, format strings, files and other delimiters with `--print-acks`, `--quiet`, progress
//! only on a terminal, shell completion and `--help` examples.
//!
//! Every command runs with a deadline and the server is killed when the test ends.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{COMMAND_DEADLINE, Output, Server};
use serde_json::Value;

/// Runs `strata --brokers ADDRESS ARGS` with `stdin`.
fn strata(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let mut all = vec!["--brokers", server.address.as_str()];
    all.extend_from_slice(args);
    common::strata(&all, stdin, COMMAND_DEADLINE)
}

/// Like [`strata`], failing the test (with stderr) unless it succeeds.
fn ok(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    let output = strata(server, args, stdin);
    assert!(
        output.success,
        "strata {args:?} failed ({:?}): {}",
        output.code, output.stderr
    );
    output
}

fn start() -> Server {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    server
}

fn now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch");
    i64::try_from(elapsed.as_millis()).expect("in range")
}

/// (partition, offset) of each JSON record printed by `consume --format json`, sorted.
fn positions(stdout: &str) -> Vec<(u64, u64)> {
    let mut positions: Vec<(u64, u64)> = stdout
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON record");
            (
                record["partition"].as_u64().expect("partition"),
                record["offset"].as_u64().expect("offset"),
            )
        })
        .collect();
    positions.sort();
    positions
}

/// Records with keys, headers and timestamps go in as JSON lines (acknowledged one by one
/// with `--print-acks`) and come out through a format string, the text format (headers
/// column) and JSON; consume's JSON produced again into another topic is the same records.
#[test]
fn format_strings_headers_and_json_round_trip() {
    let server = start();
    ok(
        &server,
        &["topic", "create", "fmt", "--partitions", "1"],
        b"",
    );
    let input = concat!(
        r#"{"key":"k1","value":"v1","headers":{"trace":"t1","flag":null},"timestamp":1700000000000}"#,
        "\n",
        r#"{"key":null,"value":{"id":2},"timestamp":"2023-11-14T22:13:21Z"}"#,
        "\n",
        r#"{"value":{"base64":"aGk="},"headers":[{"key":"h","value":"x"}],"timestamp":1700000002000}"#,
        "\n",
    );
    let produced = ok(
        &server,
        &["produce", "fmt", "--input-format", "json", "--print-acks"],
        input.as_bytes(),
    );
    let acks: Vec<&str> = produced.stdout.lines().take(3).collect();
    assert_eq!(
        acks,
        ["1\t0\t0", "2\t0\t1", "3\t0\t2"],
        "{}",
        produced.stdout
    );

    let templated = ok(
        &server,
        &["consume", "fmt", "--format", "%t|%p|%o|%T|%k|%v|%h\\n"],
        b"",
    );
    assert_eq!(
        templated.stdout,
        "fmt|0|0|1700000000000|k1|v1|trace=t1,flag\n\
         fmt|0|1|1700000001000||{\"id\":2}|\n\
         fmt|0|2|1700000002000||hi|h=x\n"
    );

    let text = ok(&server, &["consume", "fmt", "--count", "1"], b"");
    assert_eq!(
        text.stdout, "0\t0\t2023-11-14T22:13:20.000Z\tk1\tv1\ttrace=t1,flag\n",
        "text shows headers"
    );

    let json = ok(&server, &["consume", "fmt", "--format", "json"], b"");
    ok(
        &server,
        &["topic", "create", "fmt-copy", "--partitions", "1"],
        b"",
    );
    ok(
        &server,
        &["produce", "fmt-copy", "--input-format", "json", "--quiet"],
        json.stdout.as_bytes(),
    );
    let copy = ok(&server, &["consume", "fmt-copy", "--format", "json"], b"");
    let strip_topic = |stdout: &str| -> Vec<Value> {
        stdout
            .lines()
            .map(|line| {
                let mut record: Value = serde_json::from_str(line).expect("JSON");
                record.as_object_mut().expect("object").remove("topic");
                record
            })
            .collect()
    };
    assert_eq!(strip_topic(&copy.stdout), strip_topic(&json.stdout));

    let refused = strata(&server, &["topic", "list", "--format", "%k"], b"");
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("consume"), "{}", refused.stderr);
    let bad = strata(&server, &["consume", "fmt", "--format", "%q"], b"");
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("%k key"), "{}", bad.stderr);
}

/// `--from -N|+N|offset:N|time:...`, `--to`, `--count-per-partition` and `--partitions` over
/// partitions of different lengths: one shorter than the requested offset is noted on stderr
/// and the others are read.
#[test]
fn offset_specs_over_partitions_of_different_lengths() {
    let server = start();
    ok(
        &server,
        &["topic", "create", "offs", "--partitions", "3"],
        b"",
    );
    let now = now_ms();
    let two_hours_ago = now - 2 * 3600 * 1000;
    // Partition 0: 10 records, the first 5 stamped two hours ago; partition 1: 3 records
    // stamped now; partition 2: empty.
    let mut lines = String::new();
    for index in 0..10 {
        let timestamp = if index < 5 {
            two_hours_ago + index
        } else {
            now + index
        };
        lines.push_str(&format!("{timestamp} p0-{index}\n"));
    }
    ok(
        &server,
        &[
            "produce",
            "offs",
            "--partition",
            "0",
            "--input-format",
            "%T %v",
        ],
        lines.as_bytes(),
    );
    ok(
        &server,
        &["produce", "offs", "--partition", "1"],
        b"p1-0\np1-1\np1-2\n",
    );

    let read = |args: &[&str]| -> (Vec<(u64, u64)>, String) {
        let mut all = vec!["consume", "offs", "--format", "json"];
        all.extend_from_slice(args);
        let output = ok(&server, &all, b"");
        (positions(&output.stdout), output.stderr)
    };
    let range = |partition: u64, offsets: std::ops::Range<u64>| -> Vec<(u64, u64)> {
        offsets.map(|offset| (partition, offset)).collect()
    };

    let (got, _) = read(&["--from", "-2"]);
    assert_eq!(
        got,
        [range(0, 8..10), range(1, 1..3)].concat(),
        "last 2 of each"
    );

    let (got, stderr) = read(&["--from", "+8"]);
    assert_eq!(got, range(0, 8..10), "8 after the start");
    assert!(
        stderr.contains("offs/1 ends at offset 3, before offset 8: nothing to read"),
        "{stderr}"
    );

    let (got, stderr) = read(&["--from", "offset:5", "--partitions", "0,1"]);
    assert_eq!(got, range(0, 5..10));
    assert!(stderr.contains("offs/1 ends at offset 3"), "{stderr}");
    let (_, quiet) = read(&["--from", "offset:5", "--quiet"]);
    assert!(quiet.is_empty(), "--quiet drops notes: {quiet}");

    let (got, _) = read(&["--to", "offset:2"]);
    assert_eq!(got, [range(0, 0..2), range(1, 0..2)].concat());

    let (got, _) = read(&["--count-per-partition", "2"]);
    assert_eq!(got, [range(0, 0..2), range(1, 0..2)].concat());

    let (got, _) = read(&["--from", "earliest", "--count", "3", "--partitions", "0"]);
    assert_eq!(got, range(0, 0..3));

    let (got, _) = read(&["--from", "time:-1h"]);
    assert_eq!(
        got,
        [range(0, 5..10), range(1, 0..3)].concat(),
        "the last hour"
    );
    let (got, _) = read(&["--to", "time:-1h"]);
    assert_eq!(got, range(0, 0..5), "before the last hour");
    let at = (two_hours_ago + 3).to_string();
    let (got, _) = read(&[
        "--from",
        &format!("time:{at}"),
        "--partitions",
        "0",
        "--to",
        "offset:6",
    ]);
    assert_eq!(got, range(0, 3..6), "epoch ms");

    let (got, _) = read(&["--from", "latest", "--to", "latest"]);
    assert!(got.is_empty());

    // Following from offset 5: partition 0 has it, partition 1 (3 records) waits for it and
    // prints it once produced, skipping offsets 3 and 4.
    let follower = {
        let address = server.address.clone();
        std::thread::spawn(move || {
            common::strata(
                &[
                    "--brokers",
                    &address,
                    "consume",
                    "offs",
                    "--format",
                    "json",
                    "--from",
                    "offset:5",
                    "--partitions",
                    "0,1",
                    "--follow",
                    "--count",
                    "6",
                ],
                b"",
                COMMAND_DEADLINE,
            )
        })
    };
    ok(
        &server,
        &["produce", "offs", "--partition", "1"],
        b"p1-3\np1-4\np1-5\n",
    );
    let followed = follower.join().expect("follower thread");
    assert!(followed.success, "{}", followed.stderr);
    assert_eq!(
        positions(&followed.stdout),
        [range(0, 5..10), range(1, 5..6)].concat()
    );

    let missing = strata(&server, &["consume", "offs", "--partitions", "0,5"], b"");
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
    assert!(missing.stderr.contains("0 to 2"), "{}", missing.stderr);
    let bad = strata(&server, &["consume", "offs", "--from", "-x"], b"");
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("-N (last N)"), "{}", bad.stderr);
}

/// Several topics and a pattern in one consume: every matching topic's records, each named.
#[test]
fn several_topics_and_a_pattern() {
    let server = start();
    for topic in ["orders-eu", "orders-us", "payments"] {
        ok(
            &server,
            &["topic", "create", topic, "--partitions", "2"],
            b"",
        );
        ok(
            &server,
            &["produce", topic, "--partition", "1"],
            format!("{topic}-a\n{topic}-b\n").as_bytes(),
        );
    }
    let matched = ok(
        &server,
        &[
            "consume",
            "--topic-pattern",
            "orders-.*",
            "--format",
            "%t %v\\n",
        ],
        b"",
    );
    let mut lines: Vec<&str> = matched.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "orders-eu orders-eu-a",
            "orders-eu orders-eu-b",
            "orders-us orders-us-a",
            "orders-us orders-us-b"
        ]
    );
    let listed = ok(
        &server,
        &["consume", "payments", "orders-eu", "--from", "-1"],
        b"",
    );
    let mut lines: Vec<&str> = listed.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "{}", listed.stdout);
    assert!(
        lines[0].starts_with("orders-eu\t1\t1\t"),
        "text names the topic: {lines:?}"
    );
    assert!(lines[1].starts_with("payments\t1\t1\t"), "{lines:?}");
    // The pattern matches whole names only.
    let none = strata(&server, &["consume", "--topic-pattern", "orders"], b"");
    assert_eq!(none.code, Some(2), "{}", none.stderr);
    assert!(none.stderr.contains("no topic matches"), "{}", none.stderr);
}

/// Produce from a file, with a format string, another delimiter, and bad records named by
/// their number; `--quiet` drops the summary.
#[test]
fn produce_inputs() {
    let server = start();
    ok(
        &server,
        &["topic", "create", "inp", "--partitions", "1"],
        b"",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("records.txt");
    std::fs::write(&file, "a:1;b:2:x;c:3;").expect("write");
    let file = file.to_str().expect("UTF-8 path");
    let produced = ok(
        &server,
        &[
            "produce",
            "inp",
            file,
            "--input-format",
            "%k:%v",
            "--delimiter",
            ";",
            "--quiet",
        ],
        b"",
    );
    assert!(produced.stdout.is_empty(), "--quiet: {}", produced.stdout);
    ok(
        &server,
        &[
            "produce",
            "inp",
            "--delimiter",
            "\\0",
            "--header",
            "src=nul",
        ],
        b"d\0e\0",
    );
    let consumed = ok(&server, &["consume", "inp", "--format", "%k=%v %h\\n"], b"");
    assert_eq!(
        consumed.stdout,
        "a=1 \nb=2:x \nc=3 \n=d src=nul\n=e src=nul\n"
    );

    let bad = strata(
        &server,
        &["produce", "inp", "--input-format", "json"],
        b"{\"value\":\"ok\"}\n{\"valeu\":1}\n",
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("line 2: unknown field \"valeu\""),
        "{}",
        bad.stderr
    );
    let mixed = strata(
        &server,
        &["produce", "inp", "--input-format", "json", "--key", "k"],
        b"{}\n",
    );
    assert_eq!(mixed.code, Some(2));
    assert!(
        mixed.stderr.contains("--input-format lines"),
        "{}",
        mixed.stderr
    );
    let missing = strata(&server, &["produce", "inp", "/nonexistent/records"], b"");
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.stderr.contains("/nonexistent/records"),
        "{}",
        missing.stderr
    );
}

/// Progress shows on a terminal (under `script`, which gives the command a pseudo-terminal)
/// and never when stderr is piped, nor with `--quiet`.
#[test]
fn progress_only_on_a_terminal() {
    let server = start();
    ok(
        &server,
        &["topic", "create", "prog", "--partitions", "2"],
        b"",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("records.txt");
    let lines: String = (0..20_000)
        .map(|index| format!("record {index}\n"))
        .collect();
    std::fs::write(&file, lines).expect("write");
    let file = file.to_str().expect("UTF-8 path");

    let piped = ok(&server, &["produce", "prog", file], b"");
    assert!(
        piped.stderr.is_empty(),
        "no progress when piped: {:?}",
        piped.stderr
    );
    assert!(
        piped.stdout.contains("produced 20000 records"),
        "{}",
        piped.stdout
    );

    let run_on_terminal = |extra: &str| -> String {
        let command_line = format!(
            "{} --brokers {} produce prog {file}{extra} > /dev/null",
            env!("CARGO_BIN_EXE_strata"),
            server.address
        );
        let output = Command::new("script")
            .args(["-qec", &command_line, "/dev/null"])
            .output()
            .expect("run script (util-linux)");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let terminal = run_on_terminal("");
    assert!(
        terminal.contains("producing to prog"),
        "a bar on a terminal: {terminal:?}"
    );
    let quiet = run_on_terminal(" --quiet");
    assert!(!quiet.contains("producing to"), "--quiet: {quiet:?}");

    // An export: records to a file, a bar over them on the terminal.
    let export = dir.path().join("export.txt");
    let command_line = format!(
        "{} --brokers {} consume prog > {}",
        env!("CARGO_BIN_EXE_strata"),
        server.address,
        export.display()
    );
    let output = Command::new("script")
        .args(["-qec", &command_line, "/dev/null"])
        .output()
        .expect("run script (util-linux)");
    assert!(output.status.success(), "{output:?}");
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert!(
        terminal.contains("records ["),
        "a bar on a terminal: {terminal:?}"
    );
    let exported = std::fs::read_to_string(&export).expect("read the export");
    assert_eq!(exported.lines().count(), 60_000, "three produces of 20000");
    let piped = ok(&server, &["consume", "prog", "--count", "10"], b"");
    assert!(piped.stderr.is_empty(), "{:?}", piped.stderr);
}

/// `strata completion SHELL` prints a script naming the subcommands; every command's help
/// has examples.
#[test]
fn completion_and_examples() {
    for shell in ["bash", "zsh", "fish"] {
        let output = common::strata(&["completion", shell], b"", Duration::from_secs(30));
        assert!(output.success, "{shell}: {}", output.stderr);
        for name in ["consume", "produce", "topic", "reset-offsets", "completion"] {
            assert!(output.stdout.contains(name), "{shell} completes {name}");
        }
    }
    let bad = common::strata(&["completion", "cmd.exe"], b"", Duration::from_secs(30));
    assert_eq!(bad.code, Some(2));
    for command in [
        &["consume", "--help"][..],
        &["topic", "create", "--help"],
        &["--help"],
    ] {
        let output = common::strata(command, b"", Duration::from_secs(30));
        assert!(output.success, "{command:?}");
        assert!(
            output.stdout.contains("Examples:\n  strata "),
            "{command:?}: {}",
            output.stdout
        );
    }
}
