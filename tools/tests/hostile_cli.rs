//! The `strata` CLI against a partition holding a batch that does not decode (written straight
//! into a stopped server's segment, since produce refuses such batches): `consume` prints every
//! record before it and then fails naming the topic, partition and offset; `log verify`
//! reports it with its file and position.
//!
//! The server binary is `target/<profile>/strata-server` (built when missing). Every wait has a
//! deadline, and the server is killed when the test ends.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{COMMAND_DEADLINE, Output, Server, free_port};

use strata_server::storage::batch::{BatchBuilder, Compression, HEADER_BYTES, stamp};
use strata_server::storage::inspect::{self, Event};

/// Valid records produced before the bad batch.
const RECORDS: usize = 105;
fn start_server(data: &Path, address: &str) -> Server {
    let server = Server::launch(data, address);
    server.wait_until_ready();
    server
}

/// Runs `strata ARGS` with `stdin`, killing it at the deadline.
fn strata(args: &[&str], stdin: &[u8]) -> Output {
    common::strata(args, stdin, COMMAND_DEADLINE)
}

/// The only partition directory of `topic` under a node's data directory.
fn partition_dir(data: &Path, topic: &str) -> PathBuf {
    let suffix = format!("-{topic}");
    let topic_dir = fs::read_dir(data.join("topics"))
        .expect("list topics")
        .map(|entry| entry.expect("entry").path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(&suffix))
        })
        .expect("the topic's directory");
    topic_dir.join("00000")
}

/// Writes an LZ4-flagged batch of garbage with a valid CRC after the last batch of the
/// partition in `dir`, as the next entry of the same term; returns the log file, the position
/// it was written at, and its base offset.
fn append_bad_batch(dir: &Path) -> (PathBuf, u64, u64) {
    let mut last = None;
    inspect::inspect(dir, |event| match event {
        Event::Segment { log_path, .. } => last = Some((log_path.to_path_buf(), None)),
        Event::Batch(report) => {
            if let Some((_, batch)) = &mut last {
                *batch = Some((report.header, report.position));
            }
        }
        _ => {}
    })
    .expect("inspect the partition");
    let (log_path, last_batch) = last.expect("a segment");
    let (header, position) = last_batch.expect("a batch");
    let next_offset = header.base_offset as u64 + header.offset_count();
    let position = position + header.total_bytes() as u64;
    // The active segment's batches are followed only by zeros written ahead of them.
    let bytes = fs::read(&log_path).expect("read the segment");
    assert!(bytes[position as usize..].iter().all(|byte| *byte == 0));

    let mut builder = BatchBuilder::new().compression(Compression::Lz4);
    for i in 0..3 {
        builder.push(i, None, Some(b"never readable"), &[]);
    }
    let mut bad = builder.finish();
    for (index, byte) in bad[HEADER_BYTES..].iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(151) ^ 0xa5;
    }
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    stamp(&mut bad, next_offset, header.partition_leader_epoch);
    let file = OpenOptions::new()
        .write(true)
        .open(&log_path)
        .expect("open the segment");
    file.write_all_at(&bad, position)
        .expect("write the bad batch after the last");
    file.sync_all().expect("sync");
    (log_path, position, next_offset)
}

/// 105 valid records, then a batch whose records do not decode: `consume --from earliest`
/// prints all 105 and exits non-zero naming topic, partition and offset 105; `log verify`
/// exits 1 with a problem at the bad batch's file and position.
#[test]
fn consume_prints_records_before_a_bad_batch_and_log_verify_reports_it() {
    let data = tempfile::tempdir().expect("data dir");
    let address = format!("127.0.0.1:{}", free_port());
    let server = start_server(data.path(), &address);
    let created = strata(&["--brokers", &address, "topic", "create", "bad"], b"");
    assert_eq!(created.code, Some(0), "create: {}", created.stderr);
    let input: String = (0..RECORDS).map(|i| format!("value-{i}\n")).collect();
    let produced = strata(&["--brokers", &address, "produce", "bad"], input.as_bytes());
    assert_eq!(produced.code, Some(0), "produce: {}", produced.stderr);
    // Acknowledged records are on disk: a kill loses none of them.
    drop(server);

    let dir = partition_dir(data.path(), "bad");
    let (log_path, position, bad_offset) = append_bad_batch(&dir);
    assert_eq!(bad_offset, RECORDS as u64);

    let verify = strata(&["log", "verify", dir.to_str().expect("utf8 path")], b"");
    assert_eq!(verify.code, Some(1), "verify: {}", verify.stdout);
    let expected = format!(
        "PROBLEM {} at position {position}: batch does not decode",
        log_path.display()
    );
    assert!(verify.stdout.contains(&expected), "{}", verify.stdout);

    // The restarted node commits the batch with its first entry of a new term.
    let _server = start_server(data.path(), &address);
    let consumed = strata(
        &[
            "--brokers",
            &address,
            "consume",
            "bad",
            "--from",
            "earliest",
        ],
        b"",
    );
    assert_ne!(
        consumed.code,
        Some(0),
        "consume must fail: {}",
        consumed.stdout
    );
    let values: Vec<&str> = consumed
        .stdout
        .lines()
        .map(|line| line.rsplit('\t').next().expect("a value"))
        .collect();
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("value-{i}")).collect();
    assert_eq!(values, expected, "stderr: {}", consumed.stderr);
    assert!(
        consumed.stderr.contains(&format!(
            "the batch at offset {bad_offset} of bad/0 does not decode"
        )),
        "{}",
        consumed.stderr
    );
}
