//! `strata export` against a real server: 1 M records produced with the Rust client (keys,
//! values, headers and timestamps from a formula), exported with the built `strata` binary to
//! Parquet, JSON lines and CSV, and read back by DuckDB and pyarrow
//! (`tests/analytics/export_check.py`, which recomputes every field); time-range edges exact;
//! bad input (empty and reversed ranges, unknown topic and partition, a missing directory)
//! refused with exit code and message, leaving no file behind; Ctrl-C mid-export leaves none
//! either.
//!
//! Loopback slots (127.0.<slot>.1): 150. `STRATA_EXPORT_RECORDS` changes the record count.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_client::{Client, ProducerConfig, ProducerRecord};
use strata_tests::kafka;
use strata_tests::server::ServerProcess;

/// Partitions of the exported topic.
const PARTITIONS: u32 = 4;
/// How long one export of everything may take (a debug build, 1 M records).
const EXPORT_DEADLINE: Duration = Duration::from_secs(90);
/// How long a checker run may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(120);
/// How long a refused command may take.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(30);
/// Records in flight before the producer's deliveries are awaited.
const IN_FLIGHT_MAX: usize = 20_000;

/// The `strata` binary of this build profile, built once per test process.
fn cli_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let server = strata_tests::server::server_binary();
            let profile_dir = server.parent().expect("target/<profile>").to_path_buf();
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-q", "-p", "strata-tools", "--bin", "strata"]);
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build.status().expect("running cargo build");
            assert!(status.success(), "building strata failed");
            profile_dir.join("strata")
        })
        .clone()
}

/// What a finished `strata` command printed.
struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs `strata --brokers BROKERS ARGS`, killed after `deadline`.
fn strata(brokers: &str, args: &[&str], deadline: Duration) -> Outcome {
    let mut child = Command::new(cli_binary())
        .args(["--brokers", brokers, "--quiet"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for strata") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("strata {args:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stderr: reader.join().expect("stderr reader"),
    }
}

/// Record `i` of the formula `export_check.py` recomputes.
fn record(topic: &str, i: u64, base_ms: i64) -> ProducerRecord {
    let ok = i.is_multiple_of(2);
    let value = format!(
        "{{\"i\":{i},\"name\":\"n{}\",\"ratio\":{}.5,\"ok\":{ok},\"tag\":\"tag-{:04}-abcdefghijklmnopqrstuvwxyz\"}}",
        i % 97,
        i % 8,
        i % 1000
    );
    let mut record = ProducerRecord::new(topic, value)
        .key(format!("k{i:07}"))
        .partition((i % u64::from(PARTITIONS)) as u32)
        .header("seq", i.to_string());
    if i % 2 == 1 {
        record = record.header("odd", Bytes::from_static(b"\x01\xff"));
    }
    if i.is_multiple_of(5) {
        record = record.null_header("nul");
    }
    record.timestamp_ms = Some(base_ms + i as i64);
    record
}

/// Produces records `0..count` and waits until every one is acknowledged.
async fn produce(address: &str, topic: &str, count: u64, base_ms: i64) {
    let client = Client::connect(address).await.expect("connect");
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let mut deliveries = Vec::with_capacity(IN_FLIGHT_MAX);
    for i in 0..count {
        deliveries.push(
            producer
                .send(record(topic, i, base_ms))
                .await
                .expect("send"),
        );
        if deliveries.len() >= IN_FLIGHT_MAX {
            for delivery in deliveries.drain(..) {
                delivery.await.expect("delivered");
            }
        }
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
}

/// Runs the checker in `mode` over `file`, expecting records `first..end`.
fn check(mode: &str, file: &Path, count: u64, base_ms: i64, first: u64, end: u64) {
    let mut command = kafka::python_script("tests/analytics/export_check.py");
    command.arg(mode).arg(file).args([
        count.to_string(),
        PARTITIONS.to_string(),
        base_ms.to_string(),
        first.to_string(),
        end.to_string(),
    ]);
    let output = kafka::run(command, CHECK_DEADLINE);
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

/// The names in `directory`, hidden ones included.
fn names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// 1 M records exported to Parquet read back exactly by DuckDB and pyarrow; a time range's
/// edges exact; JSON lines and CSV read back by DuckDB; bad input refused with nothing left.
#[test]
fn export_reads_back_in_duckdb_and_pyarrow() {
    let count: u64 = std::env::var("STRATA_EXPORT_RECORDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    // Built first, so no export below is timed with a build.
    cli_binary();
    let data = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start_on(data.path(), 1, "127.0.150.1:0");
    let address = server.endpoint();
    let brokers = address.trim_start_matches("http://").to_string();
    // Timestamps near now, so retention by age never applies; whole seconds, so the RFC 3339
    // edges below name them exactly.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let base_ms = now_ms - now_ms % 1000 - 3_600_000;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut clients = server.clients().await;
        clients.create_topic("events", PARTITIONS).await;
        clients.create_topic("empty", 2).await;
        clients.create_topic("mixed", 1).await;
        let client = Client::connect(&brokers).await.expect("connect");
        let producer = client
            .producer(ProducerConfig::default())
            .expect("producer");
        for value in [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":"three"}"#, r#"{"n":4}"#] {
            let delivery = producer
                .send(ProducerRecord::new("mixed", value))
                .await
                .expect("send");
            delivery.await.expect("delivered");
        }
        let started = Instant::now();
        produce(&brokers, "events", count, base_ms).await;
        println!("produced {count} records in {:.1?}", started.elapsed());
    });

    // Everything, to Parquet, format from the extension.
    let all = out.path().join("all.parquet");
    let started = Instant::now();
    let done = strata(
        &brokers,
        &["export", "events", "--out", all.to_str().expect("utf-8")],
        EXPORT_DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    println!(
        "exported {count} records to Parquet in {:.1?}",
        started.elapsed()
    );
    check("parquet", &all, count, base_ms, 0, count);

    // --value-format text: the value column is a string; DuckDB's types of every column.
    let text = out.path().join("text.parquet");
    let done = strata(
        &brokers,
        &[
            "export",
            "events",
            "--to",
            "offset:2000",
            "--value-format",
            "text",
            "--out",
            text.to_str().expect("utf-8"),
        ],
        EXPORT_DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    check("types", &text, count, base_ms, 0, 0);

    // --value-format json: typed columns of the values' fields.
    let typed = out.path().join("typed.parquet");
    let done = strata(
        &brokers,
        &[
            "export",
            "events",
            "--to",
            &format!("time:{}", base_ms + 20_000),
            "--value-format",
            "json",
            "--out",
            typed.to_str().expect("utf-8"),
        ],
        EXPORT_DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    check("json", &typed, count, base_ms, 0, 20_000.min(count));

    // A value that does not fit the schema inferred from the first records: an error naming
    // it (nothing written), or a null with --on-mismatch null.
    let mixed = out.path().join("mixed.parquet");
    let mixed = mixed.to_str().expect("utf-8");
    let done = strata(
        &brokers,
        &[
            "export",
            "mixed",
            "--value-format",
            "json",
            "--infer-records",
            "2",
            "--out",
            mixed,
        ],
        REFUSAL_DEADLINE,
    );
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains("mixed/0 offset")
            && done
                .stderr
                .contains("field \"n\" is Utf8 (\"three\"), the schema says Int64"),
        "{}",
        done.stderr
    );
    assert!(!Path::new(mixed).exists());
    let done = strata(
        &brokers,
        &[
            "export",
            "mixed",
            "--value-format",
            "json",
            "--infer-records",
            "2",
            "--on-mismatch",
            "null",
            "--out",
            mixed,
        ],
        REFUSAL_DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    check("mismatch-null", Path::new(mixed), count, base_ms, 0, 0);
    std::fs::remove_file(mixed).expect("remove");

    // Time edges: records at exactly T1 are in, at exactly T2 out. T1 and T2 in RFC 3339 and
    // in ms, which name the same instants.
    let (first, end) = (count / 3, count / 3 + 10_001);
    let rfc3339 = |ms: i64| {
        let seconds = ms / 1000;
        let time = time_text(seconds);
        assert_eq!(ms % 1000, 0);
        time
    };
    let from_ms = base_ms + first as i64;
    let to_ms = base_ms + end as i64;
    let timed = out.path().join("timed.parquet");
    let done = strata(
        &brokers,
        &[
            "export",
            "events",
            "--from",
            &format!("time:{from_ms}"),
            "--to",
            &format!("time:{to_ms}"),
            "--out",
            timed.to_str().expect("utf-8"),
        ],
        EXPORT_DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    check("parquet", &timed, count, base_ms, first, end);
    // Whole seconds as RFC 3339: the same edges in the other form.
    let (first_s, end_s) = (
        (from_ms + 999) / 1000 * 1000 - base_ms,
        (to_ms + 999) / 1000 * 1000 - base_ms,
    );
    let timed_rfc = out.path().join("timed-rfc.parquet");
    let done = strata(
        &brokers,
        &[
            "export",
            "events",
            "--from",
            &format!("time:{}", rfc3339(base_ms + first_s)),
            "--to",
            &format!("time:{}", rfc3339(base_ms + end_s)),
            "--out",
            timed_rfc.to_str().expect("utf-8"),
        ],
        EXPORT_DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    check(
        "parquet",
        &timed_rfc,
        count,
        base_ms,
        first_s as u64,
        end_s as u64,
    );

    // JSON lines and CSV of the first 40 000 records (offset:10000 in each of 4 partitions;
    // offsets start after the leader's control batch, so --to is by time here).
    let small_end = 40_000.min(count);
    let to_small = format!("time:{}", base_ms + small_end as i64);
    for (name, mode, format) in [
        ("some.jsonl", "jsonl", None),
        ("some.data", "csv", Some("csv")),
    ] {
        let path = out.path().join(name);
        let mut args = vec!["export", "events", "--to", &to_small, "--out"];
        args.push(path.to_str().expect("utf-8"));
        if let Some(format) = format {
            args.extend(["--format", format]);
        }
        let done = strata(&brokers, &args, EXPORT_DEADLINE);
        assert_eq!(done.code, Some(0), "{}", done.stderr);
        check(mode, &path, count, base_ms, 0, small_end);
    }

    // Bad input: each refused with exit 2 (usage) or 1 (refused by the broker), a message
    // saying what was wrong, and no file.
    let before = names(out.path());
    let refused = out.path().join("refused.parquet");
    let refused = refused.to_str().expect("utf-8");
    let missing_dir = out.path().join("nowhere/out.parquet");
    let table: [(&[&str], i32, &str); 8] = [
        (
            &["export", "empty", "--out", refused],
            2,
            "the range is empty",
        ),
        (
            &["export", "events", "--from", "latest", "--out", refused],
            2,
            "the range is empty",
        ),
        (
            &[
                "export",
                "events",
                "--from",
                "offset:500",
                "--to",
                "offset:100",
                "--out",
                refused,
            ],
            2,
            "--to offset:100 is before --from offset:500",
        ),
        (
            &[
                "export",
                "events",
                "--from",
                "time:2030-01-01T00:00:00Z",
                "--to",
                "time:2029-01-01T00:00:00Z",
                "--out",
                refused,
            ],
            2,
            "the range is reversed",
        ),
        (
            &["export", "no-such-topic", "--out", refused],
            1,
            "no-such-topic",
        ),
        (
            &["export", "events", "--partitions", "0,9", "--out", refused],
            2,
            "partition 9 does not exist",
        ),
        (
            &[
                "export",
                "events",
                "--out",
                missing_dir.to_str().expect("utf-8"),
            ],
            2,
            "does not exist",
        ),
        (
            &["export", "events", "--out", &refused[..refused.len() - 8]],
            2,
            "cannot tell the format",
        ),
    ];
    for (args, code, message) in table {
        let done = strata(&brokers, args, REFUSAL_DEADLINE);
        assert_eq!(done.code, Some(code), "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains(message), "{args:?}: {}", done.stderr);
        assert_eq!(names(out.path()), before, "{args:?} left a file");
    }
    let done = strata(
        &brokers,
        &["export", "empty", "--out", refused],
        REFUSAL_DEADLINE,
    );
    assert!(
        done.stderr.contains("(the topic holds partition 0: "),
        "says what the topic holds: {}",
        done.stderr
    );

    // Ctrl-C in the middle of an export: exit 2, and the hidden file is gone.
    let interrupted = tempfile::tempdir().expect("tempdir");
    let target = interrupted.path().join("all.parquet");
    let mut child = Command::new(cli_binary())
        .args([
            "--brokers",
            &brokers,
            "--quiet",
            "export",
            "events",
            "--out",
        ])
        .arg(&target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strata");
    let started = Instant::now();
    while names(interrupted.path()).is_empty() {
        assert!(
            started.elapsed() < REFUSAL_DEADLINE,
            "no staged file within {REFUSAL_DEADLINE:?}"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "ended before Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let staged = names(interrupted.path());
    assert!(staged[0].starts_with(".all.parquet."), "{staged:?}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < REFUSAL_DEADLINE,
            "no exit after Ctrl-C within {REFUSAL_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(2), "interrupted");
    assert_eq!(
        names(interrupted.path()),
        Vec::<String>::new(),
        "left behind"
    );
    server.terminate();
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-12-01T15:04:05Z`), by the civil-from-days
/// algorithm (Howard Hinnant's), so the test needs no date crate.
fn time_text(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[test]
fn rfc3339_of_known_instants() {
    assert_eq!(time_text(0), "1970-01-01T00:00:00Z");
    assert_eq!(time_text(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(time_text(951_782_400), "2000-02-29T00:00:00Z");
}
