//! `strata bench` against a real `strata-server` process: the closed-loop latency mode sends
//! exactly the records it was asked for (plus its warm-up) and reports service and
//! schedule-corrected latency, the achieved rate and the client's CPU per GB, as JSON and as
//! text; consume and pipelined produce reports carry the client's CPU too, and a pipelined run
//! takes the producer's buffer size. Structure and counts only: timings are the benchmarks'
//! business, not a test's.

mod common;

use common::{COMMAND_DEADLINE, Output, Server};
use serde_json::Value;

/// Runs `strata --brokers ADDRESS ARGS`, which must succeed.
fn strata(address: &str, args: &[&str]) -> Output {
    let mut all = vec!["--brokers", address];
    all.extend_from_slice(args);
    let output = common::strata(&all, b"", COMMAND_DEADLINE);
    assert!(output.success, "strata {args:?}: {}", output.stderr);
    output
}

fn json(output: &Output) -> Value {
    serde_json::from_str(output.stdout.trim()).expect("one JSON object")
}

/// The percentiles every latency block has, each a number of milliseconds.
fn assert_percentiles(block: &Value, name: &str) {
    for key in ["p50", "p90", "p99", "p999", "max"] {
        let value = block[key].as_f64();
        assert!(value.is_some_and(|ms| ms >= 0.0), "{name}.{key} in {block}");
    }
    let p50 = block["p50"].as_f64().unwrap_or_default();
    let max = block["max"].as_f64().unwrap_or_default();
    assert!(p50 <= max, "{name}: p50 {p50} above max {max}");
}

fn assert_client_cpu(report: &Value) {
    let cpu = &report["client_cpu"];
    assert!(cpu["cpu_s"].as_f64().is_some_and(|s| s > 0.0), "{report}");
    assert!(
        cpu["cpu_s_per_gb"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
}

/// Closed loop, JSON: 40 records measured after a warm-up of 5, all 45 stored; the report has
/// both latencies, the rate asked and achieved, and the client's CPU. A pipelined run and a
/// replay of the topic report the client's CPU too, and the text report names each figure.
#[test]
fn closed_loop_sends_its_count_and_reports_both_latencies() {
    let server = Server::launch_fresh();
    server.wait_until_ready();
    let address = server.address.as_str();
    let closed_loop = [
        "bench",
        "produce",
        "--topic",
        "latency",
        "--partitions",
        "1",
        "--mode",
        "closed-loop",
        "--count",
        "40",
        "--warmup",
        "5",
        "--rate",
        "500",
        "--record-size",
        "100",
    ];

    let mut args = vec!["--format", "json"];
    args.extend_from_slice(&closed_loop);
    let report = json(&strata(address, &args));
    assert_eq!(report["bench"], "produce");
    assert_eq!(
        report["records"], 40,
        "the warm-up is not counted: {report}"
    );
    assert_eq!(report["bytes"], 4000);
    assert_eq!(report["config"]["mode"], "closed-loop");
    assert_eq!(report["config"]["warmup"], 5);
    assert_eq!(report["config"]["linger_ms"], 0, "one record never lingers");
    assert_percentiles(&report["latency_ms"], "latency_ms");
    assert_percentiles(
        &report["schedule_corrected_latency_ms"],
        "schedule_corrected_latency_ms",
    );
    assert_eq!(report["rate"]["target_per_s"], 500);
    assert!(
        report["rate"]["achieved_per_s"]
            .as_f64()
            .is_some_and(|rate| rate > 0.0)
    );
    assert!(report["rate"]["held"].is_boolean(), "{report}");
    assert_client_cpu(&report);

    // Every record sent once: the warm-up and the measured ones, nothing else.
    let replay = json(&strata(
        address,
        &["--format", "json", "bench", "consume", "--topic", "latency"],
    ));
    assert_eq!(replay["records"], 45, "{replay}");
    assert_client_cpu(&replay);

    let pipelined = json(&strata(
        address,
        &[
            "--format",
            "json",
            "bench",
            "produce",
            "--topic",
            "throughput",
            "--count",
            "500",
            "--record-size",
            "100",
            "--batch-bytes",
            "2000",
            "--buffer-bytes",
            "6000",
        ],
    ));
    assert_eq!(pipelined["records"], 500);
    assert_eq!(pipelined["config"]["mode"], "pipelined");
    assert_eq!(pipelined["config"]["buffer_bytes"], 6000);
    assert!(pipelined.get("schedule_corrected_latency_ms").is_none());
    assert_percentiles(&pipelined["latency_ms"], "latency_ms");
    assert_client_cpu(&pipelined);

    // A buffer that cannot hold one batch is refused, naming both.
    let refused = common::strata(
        &[
            "--brokers",
            address,
            "bench",
            "produce",
            "--topic",
            "throughput",
            "--count",
            "10",
            "--batch-bytes",
            "2000",
            "--buffer-bytes",
            "1000",
        ],
        b"",
        COMMAND_DEADLINE,
    );
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("buffer") && refused.stderr.contains("2000"),
        "{}",
        refused.stderr
    );

    let text = strata(address, &closed_loop).stdout;
    for line in [
        "produce: 40 records",
        "service latency ms (send→ack): p50 ",
        "schedule-corrected latency ms (intended send→ack): p50 ",
        "records/s achieved of 500 asked",
        "client CPU: ",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}
