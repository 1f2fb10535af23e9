//! `strata log dump` and `strata log verify` against real partition directories.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use strata_server::storage::batch::{BatchBuilder, ControlType};
use strata_server::storage::{LogConfig, PartitionLog};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A log of two or more segments: 30 batches of 3 records, a leader no-op first.
fn write_log(dir: &Path) {
    let config = LogConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 256,
        batch_bytes_max: 2048,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir, config).expect("open");
    log.append_control(ControlType::LeaderNoop, b"", 1, 5)
        .expect("control");
    for i in 0..30i64 {
        let mut builder = BatchBuilder::new();
        for j in 0..3 {
            builder.push(1_000 + i * 10 + j, Some(b"key"), Some(&[b'v'; 40]), &[]);
        }
        log.append(&builder.finish(), 1, 0).expect("append");
    }
    log.sync().expect("sync");
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read"),
            )
        })
        .collect();
    files.sort();
    files
}

/// dump prints every batch with offsets, raft index, term, timestamps and CRC status, and
/// changes nothing on disk; verify passes a healthy log.
#[test]
fn dump_and_verify_a_healthy_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path());
    let before = files(dir.path());
    let dir_arg = dir.path().to_str().expect("utf8 path");
    let dump = strata(&["log", "dump", dir_arg]);
    assert!(dump.status.success());
    let text = stdout(&dump);
    assert!(
        text.contains("log start: offset 0 after raft index 0 (term 0)"),
        "{text}"
    );
    assert!(
        text.contains("raft index 1 term 1: control at offset 0"),
        "{text}"
    );
    assert!(
        text.contains("raft index 2 term 1: offsets 0..=2, 3 records"),
        "{text}"
    );
    assert!(text.contains("timestamps 1000..1002"), "{text}");
    assert!(
        text.contains("raft index 31 term 1: offsets 87..=89"),
        "{text}"
    );
    assert!(
        !text.contains("MISMATCH") && !text.contains("PROBLEM"),
        "{text}"
    );
    assert!(text.contains("batches, 0 problems"), "{text}");
    assert!(text.matches("segment ").count() >= 2, "{text}");
    let verify = strata(&["log", "verify", dir_arg]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    assert_eq!(files(dir.path()), before, "inspection writes nothing");
}

/// Each kind of damage makes verify exit 1 and name what is wrong.
#[test]
fn verify_reports_damage() {
    type Damage = fn(&Path);
    let table: &[(&str, Damage, &str)] = &[
        (
            "flipped payload byte in a sealed segment",
            |dir| {
                let path = dir.join("00000000000000000000.log");
                let mut bytes = fs::read(&path).expect("read");
                bytes[100] ^= 0x01;
                fs::write(&path, bytes).expect("write");
            },
            "CRC-32C mismatch (damage in a sealed segment",
        ),
        (
            "torn tail of the last segment",
            |dir| {
                let last = last_log(dir);
                // Into the last batch: the zeros written ahead of the active segment's
                // batches go too (its last non-zero byte is in its last batch).
                let bytes = fs::read(&last).expect("read");
                let end = bytes.iter().rposition(|byte| *byte != 0).expect("a batch") + 1;
                fs::OpenOptions::new()
                    .write(true)
                    .open(&last)
                    .expect("open")
                    .set_len(end as u64 - 7)
                    .expect("cut");
            },
            "a torn write",
        ),
        (
            "scrambled index entry",
            |dir| {
                let path = dir.join("00000000000000000000.index");
                let mut bytes = fs::read(&path).expect("read");
                bytes[2] ^= 0x10;
                fs::write(&path, bytes).expect("write");
            },
            "entry 0: CRC mismatch",
        ),
        (
            "missing index",
            |dir| fs::remove_file(dir.join("00000000000000000000.index")).expect("delete"),
            "index file is missing",
        ),
        (
            "damaged checkpoint",
            |dir| fs::write(dir.join("log-start.checkpoint"), b"garbage").expect("write"),
            "log-start checkpoint",
        ),
    ];
    for (name, damage, expected) in table {
        let dir = tempfile::tempdir().expect("tempdir");
        write_log(dir.path());
        damage(dir.path());
        let verify = strata(&["log", "verify", dir.path().to_str().expect("utf8")]);
        let text = stdout(&verify);
        assert_eq!(verify.status.code(), Some(1), "{name}: {text}");
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in {text}"
        );
        assert!(text.contains("PROBLEM"), "{name}: {text}");
    }
}

fn last_log(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a log file")
}

/// A path that is not a directory is one clear line on stderr and exit code 2.
#[test]
fn missing_directory_is_a_clear_error() {
    let output = strata(&["log", "verify", "/nonexistent/strata-partition"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
}
