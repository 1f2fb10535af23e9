//! Unit tests of [`PartitionLog`]: each names the behaviour it shows.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::storage::batch::{BatchBuilder, decode_records};
use crate::storage::checkpoint::Checkpoint;
use crate::storage::fault::Faults;
use crate::storage::{EntryBytes, RetentionPolicy};

/// A data batch of `count` records, timestamps `timestamp..timestamp + count`, values
/// `"{tag}-{i}"`.
fn data(tag: &str, count: usize, timestamp: i64) -> BytesMut {
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let value = format!("{tag}-{i}");
        builder.push(
            timestamp + i as i64,
            Some(tag.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    builder.finish()
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 128,
        batch_bytes_max: 2048,
        ..LogConfig::default()
    }
}

/// A batch larger than a segment (up to the batch limit) is stored in a segment of its own,
/// between ordinary ones, and reads back across the roll; the log reopens with it.
#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    log.append(&data("a", 1, 0), 1, 0).expect("append");
    let big = data(&"b".repeat(300), 2, 0);
    assert!(big.len() > 1024 && big.len() <= 2048, "{}", big.len());
    let info = log
        .append(&big, 1, 0)
        .expect("a batch larger than a segment");
    assert_eq!(info.base_offset, 1);
    log.append(&data("c", 1, 0), 1, 0).expect("append after it");
    assert_eq!(log.segments().len(), 3, "before, alone, after");
    let expected: Vec<String> = ["a-0".to_string()]
        .into_iter()
        .chain((0..2).map(|i| format!("{}-{i}", "b".repeat(300))))
        .chain(["c-0".to_string()])
        .collect();
    assert_eq!(values_from(&log, 0), expected);
    log.sync().expect("sync");
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(values_from(&log, 0), expected);
}

/// Values of every record readable from `offset` to the end, following reads; checks that
/// offsets come back dense and in order.
fn values_from(log: &PartitionLog, offset: u64) -> Vec<String> {
    let mut values = Vec::new();
    let mut next = offset;
    while next < log.next_offset() {
        let spans = log.read(next, 4096).expect("read");
        assert!(!spans.is_empty(), "a read below next_offset returns data");
        for span in spans {
            for split in batch::split_batches(span) {
                let (header, stored) = split.expect("whole batches");
                for record in decode_records(&stored).expect("records") {
                    if record.offset >= offset {
                        assert_eq!(record.offset, offset + values.len() as u64, "dense offsets");
                        let value = record.value.expect("value").to_vec();
                        values.push(String::from_utf8(value).expect("utf8"));
                    }
                }
                next = header.base_offset as u64 + header.offset_count();
            }
        }
    }
    values
}

fn open(dir: &std::path::Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config).expect("open")
}

/// Appends stamp dense offsets and raft indexes; reads return stored batches; reading at the
/// end returns nothing and outside the range names the valid range.
#[test]
fn append_stamps_offsets_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!(
        (log.next_offset(), log.last_raft_index(), log.last_term()),
        (0, 0, 0)
    );
    let first = log.append(&data("a", 3, 100), 1, 0).expect("append");
    let second = log.append(&data("b", 2, 200), 2, 0).expect("append");
    assert_eq!(
        first,
        AppendInfo {
            raft_index: 1,
            base_offset: 0,
            next_offset: 3
        }
    );
    assert_eq!(
        second,
        AppendInfo {
            raft_index: 2,
            base_offset: 3,
            next_offset: 5
        }
    );
    assert_eq!(log.last_term(), 2);
    assert_eq!(values_from(&log, 0), ["a-0", "a-1", "a-2", "b-0", "b-1"]);
    assert_eq!(values_from(&log, 4), ["b-1"]);
    assert!(log.read(5, 1024).expect("read at end").is_empty());
    match log.read(6, 1024) {
        Err(Error::OffsetOutOfRange {
            requested: 6,
            log_start: 0,
            next_offset: 5,
        }) => {}
        other => panic!("expected out of range, got {other:?}"),
    }
    let stored = log.read(0, 1).expect("read");
    let header = BatchHeader::parse(&stored[0]).expect("header");
    assert_eq!((header.base_offset, header.partition_leader_epoch), (0, 1));
    assert_eq!(
        stored[0].len(),
        header.total_bytes(),
        "one batch even past max_bytes"
    );
}

/// Control batches take a raft index and no offset, and reads skip them.
#[test]
fn control_batches_take_raft_index_not_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    log.append(&data("a", 2, 10), 1, 0).expect("append");
    let noop = log
        .append_control(ControlType::LeaderNoop, b"", 2, 0)
        .expect("control");
    assert_eq!(
        noop,
        AppendInfo {
            raft_index: 2,
            base_offset: 2,
            next_offset: 2
        }
    );
    log.append(&data("b", 1, 20), 2, 0).expect("append");
    assert_eq!(log.last_raft_index(), 3);
    assert_eq!(log.next_offset(), 3);
    let spans = log.read(0, 1 << 20).expect("read");
    assert_eq!(spans.len(), 2, "the control batch splits the run");
    assert_eq!(values_from(&log, 2), ["b-0"]);
    let entries = log
        .raft_entries(1, 4, 1 << 20, EntryBytes::Whole)
        .expect("entries");
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.raft_index, e.term))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2), (3, 2)]
    );
}

/// Invalid input is rejected with the error that names it, and nothing is stored.
#[test]
fn bad_appends_are_rejected_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    log.append(&data("a", 1, 0), 5, 0).expect("append");
    // Framing is the log's to check (the CRC is its caller's, checked where the batch came in).
    let mut short = data("x", 2, 0);
    short.truncate(short.len() - 1);
    assert!(matches!(
        log.append(&short, 5, 0),
        Err(Error::InvalidBatch(
            batch::BatchError::LengthMismatch { .. }
        ))
    ));
    let mut miscounted = data("x", 2, 0);
    miscounted[57..61].copy_from_slice(&3i32.to_be_bytes());
    assert!(matches!(
        log.append(&miscounted, 5, 0),
        Err(Error::InvalidBatch(
            batch::BatchError::InvalidRecordCount { .. }
        ))
    ));
    let big = data(&"y".repeat(1200), 2, 0);
    assert!(matches!(
        log.append(&big, 5, 0),
        Err(Error::BatchTooLarge {
            limit_bytes: 2048,
            ..
        })
    ));
    assert!(matches!(
        log.append(&data("z", 1, 0), 4, 0),
        Err(Error::InvalidTerm { term: 4, .. })
    ));
    assert!(matches!(
        log.append(&data("z", 1, 0), 1 << 31, 0),
        Err(Error::InvalidTerm { .. })
    ));
    let garbage = vec![7u8; 100];
    assert!(matches!(
        log.append(&garbage, 5, 0),
        Err(Error::InvalidBatch(_))
    ));
    assert_eq!((log.next_offset(), log.last_raft_index()), (1, 1));
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(values_from(&log, 0), ["a-0"]);
}

/// Small segments roll by size; reads, raft entries and terms work across segments, and a
/// reopen sees the same log.
#[test]
fn rolls_by_size_and_reads_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let tag = format!("t{i}");
        log.append(&data(&tag, 3, i as i64 * 10), 1 + i / 10, 0)
            .expect("append");
        expected.extend((0..3).map(|j| format!("{tag}-{j}")));
    }
    log.sync().expect("sync");
    let segments = log.segments();
    assert!(
        segments.len() > 3,
        "expected several segments, got {}",
        segments.len()
    );
    for pair in segments.windows(2) {
        assert_eq!(pair[0].next_offset, pair[1].base_offset);
        assert_eq!(
            pair[0].base_raft_index + pair[0].batch_count,
            pair[1].base_raft_index
        );
        assert!(pair[0].size_bytes <= 1024);
    }
    assert!(
        segments.iter().any(|s| s.index_entries > 0),
        "index entries written"
    );
    assert_eq!(values_from(&log, 0), expected);
    for offset in [0, 1, 50, 119] {
        assert_eq!(
            values_from(&log, offset),
            expected[offset as usize..],
            "from {offset}"
        );
    }
    let entries = log
        .raft_entries(1, 41, 1 << 20, EntryBytes::Whole)
        .expect("all entries");
    assert_eq!(entries.len(), 40);
    let limited = log
        .raft_entries(5, 41, 300, EntryBytes::Whole)
        .expect("limited");
    let bytes: usize = limited.iter().map(|e| e.batch.len()).sum();
    assert!(!limited.is_empty() && (bytes <= 300 || limited.len() == 1));
    assert_eq!(limited[0].raft_index, 5);
    assert_eq!(log.term(35).expect("term"), 4);
    let before = log.segments();
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.segments(), before);
    assert_eq!(values_from(&log, 0), expected);
    assert_eq!(log.last_term(), 4);
}

/// A segment rolls once it is older than `segment_ms_max` (counted from its first append).
#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_ms_max: 1_000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    log.append(&data("a", 1, 0), 1, 10_000).expect("append");
    log.append(&data("b", 1, 0), 1, 10_999).expect("append");
    assert_eq!(log.segments().len(), 1);
    log.append(&data("c", 1, 0), 1, 11_000).expect("append");
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.segments()[1].base_offset, 2);
}

/// Timestamp lookups give the first offset at or after the time, across segments and
/// within batches, including records whose timestamps go backwards.
#[test]
fn finds_offsets_by_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    for i in 0..30i64 {
        log.append(&data("t", 4, 1_000 + i * 10), 1, 0)
            .expect("append");
    }
    // Batch i holds offsets 4i..4i+3 with timestamps 1000+10i .. 1000+10i+3.
    let table = [
        (0, Some(0)),
        (1_000, Some(0)),
        (1_002, Some(2)),
        (1_004, Some(4)),
        (1_150, Some(60)),
        (1_151, Some(61)),
        (1_293, Some(119)),
        (1_294, None),
    ];
    for (timestamp, expected) in table {
        assert_eq!(
            log.offset_for_timestamp(timestamp).expect("lookup"),
            expected,
            "at {timestamp}"
        );
    }
    let mut builder = BatchBuilder::new();
    builder.push(5_000, None, Some(b"late"), &[]);
    builder.push(4_000, None, Some(b"early"), &[]);
    log.append(&builder.finish(), 1, 0).expect("append");
    assert_eq!(log.offset_for_timestamp(4_500).expect("lookup"), Some(120));
}

/// Truncation removes a suffix inside a segment, across segments and down to the start;
/// later appends take the removed offsets again.
#[test]
fn truncates_suffixes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    for i in 0..30u64 {
        log.append(&data(&format!("t{i}"), 2, 0), 1 + i / 10, 0)
            .expect("append");
    }
    let segments_before = log.segments().len();
    log.truncate_from_raft_index(25).expect("truncate");
    assert_eq!(
        (log.last_raft_index(), log.next_offset(), log.last_term()),
        (24, 48, 3)
    );
    log.truncate_from_raft_index(8)
        .expect("truncate across segments");
    assert!(log.segments().len() < segments_before);
    assert_eq!(
        (log.last_raft_index(), log.next_offset(), log.last_term()),
        (7, 14, 1)
    );
    let info = log
        .append(&data("new", 1, 0), 7, 0)
        .expect("append after truncate");
    assert_eq!(
        info,
        AppendInfo {
            raft_index: 8,
            base_offset: 14,
            next_offset: 15
        }
    );
    assert_eq!(values_from(&log, 12), ["t6-0", "t6-1", "new-0"]);
    log.truncate_from_raft_index(1)
        .expect("truncate everything");
    assert_eq!(
        (log.last_raft_index(), log.next_offset(), log.last_term()),
        (0, 0, 0)
    );
    assert!(matches!(
        log.truncate_from_raft_index(0),
        Err(Error::RaftIndexCompacted { .. })
    ));
    assert!(matches!(
        log.truncate_from_raft_index(5),
        Err(Error::RaftIndexUnavailable { .. })
    ));
    log.append(&data("again", 1, 0), 8, 0).expect("append");
    log.sync().expect("sync");
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(values_from(&log, 0), ["again-0"]);
    assert_eq!(log.last_term(), 8);
}

/// A reset empties the log and starts it after the given raft entry and offset, durably.
#[test]
fn reset_restarts_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    for i in 0..10 {
        log.append(&data(&format!("t{i}"), 2, 0), 1, 0)
            .expect("append");
    }
    let start = LogStart {
        prev_raft_index: 100,
        prev_term: 4,
        start_offset: 500,
    };
    log.reset(start).expect("reset");
    assert_eq!(
        (
            log.first_raft_index(),
            log.last_raft_index(),
            log.next_offset()
        ),
        (101, 100, 500)
    );
    assert_eq!(log.term(100).expect("term of the snapshot"), 4);
    assert!(matches!(
        log.read(10, 100),
        Err(Error::OffsetOutOfRange { log_start: 500, .. })
    ));
    let info = log.append(&data("n", 1, 0), 4, 0).expect("append");
    assert_eq!(
        info,
        AppendInfo {
            raft_index: 101,
            base_offset: 500,
            next_offset: 501
        }
    );
    log.sync().expect("sync");
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start(), start);
    assert_eq!(values_from(&log, 500), ["n-0"]);
    assert_eq!(log.segments().len(), 1);
}

/// A crash after the reset's checkpoint was written but before the old segments were removed
/// completes the reset on open.
#[test]
fn pending_reset_completes_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    for i in 0..10 {
        log.append(&data(&format!("t{i}"), 2, 0), 1, 0)
            .expect("append");
    }
    log.sync().expect("sync");
    drop(log);
    let start = LogStart {
        prev_raft_index: 3,
        prev_term: 1,
        start_offset: 6,
    };
    Checkpoint {
        start,
        reset_pending: true,
    }
    .write(dir.path(), None)
    .expect("checkpoint");
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start(), start);
    assert_eq!((log.last_raft_index(), log.next_offset()), (3, 6));
    assert_eq!(
        Checkpoint::read(dir.path()).expect("read"),
        Checkpoint {
            start,
            reset_pending: false
        }
    );
}

/// Retention removes whole old segments by size and by time, never the active one nor any
/// entry above the raft limit; the log start moves and survives a reopen; reads below it fail
/// with the valid range.
#[test]
fn retention_removes_old_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    for i in 0..40i64 {
        log.append(&data(&format!("t{i}"), 2, i * 100), 1, 0)
            .expect("append");
    }
    let segments = log.segments();
    let by_size = RetentionPolicy {
        retention_ms: None,
        retention_bytes: Some(0),
        offset_floor: None,
    };
    let none = log
        .apply_retention(&by_size, 0, segments[0].base_raft_index)
        .expect("retention");
    assert_eq!(
        none.segments_removed, 0,
        "raft limit holds back the first segment"
    );
    let limit = segments[1].base_raft_index + segments[1].batch_count - 1;
    let outcome = log.apply_retention(&by_size, 0, limit).expect("retention");
    assert_eq!(outcome.segments_removed, 2);
    assert_eq!(outcome.log_start_offset, segments[2].base_offset);
    assert_eq!(log.log_start_offset(), segments[2].base_offset);
    assert_eq!(log.first_raft_index(), segments[2].base_raft_index);
    assert_eq!(
        log.term(log.first_raft_index() - 1)
            .expect("term before start"),
        1
    );
    match log.read(0, 100) {
        Err(Error::OffsetOutOfRange {
            requested: 0,
            log_start,
            next_offset: 80,
        }) => {
            assert_eq!(log_start, segments[2].base_offset);
        }
        other => panic!("expected out of range, got {other:?}"),
    }
    assert!(!segments[0].log_path.exists(), "files removed");
    let by_time = RetentionPolicy {
        retention_ms: Some(1_000),
        retention_bytes: None,
        offset_floor: None,
    };
    let now_ms = 40 * 100 + 1_000;
    let outcome = log
        .apply_retention(&by_time, now_ms, u64::MAX)
        .expect("retention");
    assert!(outcome.segments_removed > 0, "expired segments exist");
    let remaining = log.segments();
    assert!(!remaining.is_empty());
    for segment in &remaining[..remaining.len() - 1] {
        assert!(
            now_ms - segment.max_timestamp.expect("data") <= 1_000,
            "expired segments removed"
        );
    }
    let start = log.log_start();
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start(), start);
    assert_eq!(
        values_from(&log, start.start_offset)
            .last()
            .map(String::as_str),
        Some("t39-1")
    );
}

/// A crash between advancing the log start and unlinking the old segments leaves segments below
/// the start; the next open removes them.
#[test]
fn stale_segments_below_start_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    for i in 0..30 {
        log.append(&data(&format!("t{i}"), 2, 0), 1, 0)
            .expect("append");
    }
    log.sync().expect("sync");
    let segments = log.segments();
    drop(log);
    let start = LogStart {
        prev_raft_index: segments[1].base_raft_index - 1,
        prev_term: 1,
        start_offset: segments[1].base_offset,
    };
    Checkpoint {
        start,
        reset_pending: false,
    }
    .write(dir.path(), None)
    .expect("checkpoint");
    std::fs::write(dir.path().join("junk.deleted"), b"x").expect("leftover");
    let log = open(dir.path(), small_config());
    assert_eq!(log.segments()[0].base_offset, segments[1].base_offset);
    assert!(!segments[0].log_path.exists());
    assert!(!dir.path().join("junk.deleted").exists());
}

/// Damage inside a sealed segment is an error naming the file and position, never skipped.
#[test]
fn corrupt_sealed_segment_fails_open_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    for i in 0..30 {
        log.append(&data(&format!("t{i}"), 2, 0), 1, 0)
            .expect("append");
    }
    log.sync().expect("sync");
    let sealed = log.segments()[0].clone();
    drop(log);
    let mut bytes = std::fs::read(&sealed.log_path).expect("read");
    let position = bytes.len() - 5;
    bytes[position] ^= 0x55;
    std::fs::write(&sealed.log_path, &bytes).expect("write");
    match PartitionLog::open(dir.path(), small_config()) {
        Err(Error::Corrupt { path, reason, .. }) => {
            assert_eq!(path, sealed.log_path);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected corruption error, got {other:?}"),
    }
}

/// A write that fails half-way (a full disk) leaves the log as it was: the append errs, later
/// appends work, and a reopen sees exactly the acknowledged batches.
#[test]
fn failed_write_leaves_the_log_consistent() {
    for writes_before in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Arc::new(Faults::default());
        let config = LogConfig {
            faults: Some(faults.clone()),
            ..small_config()
        };
        let mut log = open(dir.path(), config.clone());
        log.append(&data("a", 2, 0), 1, 0).expect("append");
        faults.fail_write_after(writes_before);
        let mut outcomes = Vec::new();
        for i in 0..12 {
            outcomes.push(log.append(&data(&format!("b{i}"), 20, 0), 1, 0).is_ok());
        }
        assert_eq!(
            outcomes.iter().filter(|ok| !**ok).count(),
            1,
            "exactly one append failed"
        );
        log.sync().expect("sync");
        let expected = values_from(&log, 0);
        assert_eq!(expected.len(), 2 + 11 * 20);
        drop(log);
        faults.clear();
        let log = open(dir.path(), config);
        assert_eq!(values_from(&log, 0), expected);
    }
}

/// A failed fsync moves the log to the failed state (the kernel may have dropped the pages);
/// a reopen recovers every batch that an earlier sync acknowledged.
#[test]
fn failed_sync_fails_the_log_until_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(Faults::default());
    let config = LogConfig {
        faults: Some(faults.clone()),
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    log.append(&data("a", 2, 0), 1, 0).expect("append");
    log.sync().expect("sync");
    log.append(&data("b", 2, 0), 1, 0).expect("append");
    faults.fail_sync_after(0);
    assert!(matches!(log.sync(), Err(Error::Io { .. })));
    assert!(matches!(
        log.append(&data("c", 1, 0), 1, 0),
        Err(Error::Failed { .. })
    ));
    assert!(matches!(log.read(0, 100), Err(Error::Failed { .. })));
    drop(log);
    let log = open(dir.path(), config);
    let values = values_from(&log, 0);
    assert_eq!(values[..2], ["a-0", "a-1"], "acknowledged batches survive");
}

/// Failures while rolling (sealing fsync, creating the next segment) surface as errors and
/// never leave a half-made segment behind.
#[test]
fn failures_while_rolling_surface() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(Faults::default());
    let config = LogConfig {
        faults: Some(faults.clone()),
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    let mut acknowledged = Vec::new();
    let mut failures = 0;
    for i in 0..60 {
        if i == 20 {
            faults.fail_sync_after(0);
        }
        match log.append(&data(&format!("t{i}"), 2, 0), 1, 0) {
            Ok(_) => match log.sync() {
                Ok(()) => acknowledged.extend([format!("t{i}-0"), format!("t{i}-1")]),
                Err(_) => failures += 1,
            },
            Err(_) => failures += 1,
        }
        if log.failed.is_some() {
            drop(log);
            faults.clear();
            log = open(dir.path(), config.clone());
        }
    }
    assert!(failures >= 1);
    let values = values_from(&log, 0);
    for value in &acknowledged {
        assert!(values.contains(value), "acknowledged {value} lost");
    }
}

/// Bytes handed out by reads are slices of the map, not copies.
#[test]
fn reads_are_zero_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    log.append(&data("a", 1, 0), 1, 0).expect("append");
    log.append(&data("b", 1, 0), 1, 0).expect("append");
    let first: Bytes = log.read(0, 1 << 20).expect("read").remove(0);
    let again: Bytes = log.read(0, 1 << 20).expect("read").remove(0);
    assert_eq!(
        first.as_ptr(),
        again.as_ptr(),
        "both reads point into the same mapping"
    );
}

/// Whichever fsync fails while a truncation removes several segments, a reopen finds a prefix
/// of the original log, never a log with a gap in it.
#[test]
fn failed_truncation_leaves_a_prefix() {
    let mut syncs_before = 0;
    loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Arc::new(Faults::default());
        let config = LogConfig {
            faults: Some(faults.clone()),
            ..small_config()
        };
        let mut log = open(dir.path(), config.clone());
        for i in 0..60 {
            log.append(&data(&format!("t{i}"), 2, 0), 1, 0)
                .expect("append");
        }
        log.sync().expect("sync");
        let original = values_from(&log, 0);
        assert!(log.segments().len() >= 4);
        faults.fail_sync_after(syncs_before);
        let outcome = log.truncate_from_raft_index(3);
        faults.clear();
        drop(log);
        let log = open(dir.path(), config);
        let values = values_from(&log, 0);
        assert!(
            values.len() >= 4,
            "the kept batches survive ({syncs_before})"
        );
        assert_eq!(
            values[..],
            original[..values.len()],
            "a prefix ({syncs_before})"
        );
        if outcome.is_ok() {
            assert_eq!(values.len(), 4);
            break;
        }
        syncs_before += 1;
    }
    assert!(syncs_before > 2, "failures were injected at several points");
}

/// A reset that fails part-way leaves a failed log whose getters still answer, and a reopen
/// finds either the old log or the new, empty one.
#[test]
fn failed_reset_leaves_a_usable_failed_log() {
    for syncs_before in 0..4 {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Arc::new(Faults::default());
        let config = LogConfig {
            faults: Some(faults.clone()),
            ..small_config()
        };
        let mut log = open(dir.path(), config.clone());
        for i in 0..10 {
            log.append(&data(&format!("t{i}"), 2, 0), 1, 0)
                .expect("append");
        }
        log.sync().expect("sync");
        let start = LogStart {
            prev_raft_index: 50,
            prev_term: 2,
            start_offset: 70,
        };
        faults.fail_sync_after(syncs_before);
        if log.reset(start).is_err() {
            let _ = (log.next_offset(), log.last_raft_index(), format!("{log:?}"));
            assert!(matches!(
                log.append(&data("x", 1, 0), 2, 0),
                Err(Error::Failed { .. })
            ));
        }
        faults.clear();
        drop(log);
        let log = open(dir.path(), config);
        let old = (log.next_offset(), log.last_raft_index()) == (20, 10);
        let new = (log.next_offset(), log.last_raft_index(), log.log_start()) == (70, 50, start);
        assert!(old || new, "after failing sync {syncs_before}: {log:?}");
    }
}

/// A batch whose records are malformed under a valid CRC (a producer's bug, not damage) does
/// not break timestamp lookups: the answer is the batch's first offset.
#[test]
fn timestamp_lookup_tolerates_malformed_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    log.append(&data("a", 2, 100), 1, 0).expect("append");
    let mut bad = data("b", 1, 200);
    let records_at = batch::HEADER_BYTES;
    bad[records_at] = 0x7f; // a record length that runs past the batch
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(&bad, 1, 0).expect("framing and CRC are valid");
    assert_eq!(log.offset_for_timestamp(150).expect("lookup"), Some(2));
}

/// A sync split in two leaves the log free between the halves: reads go on, and appends made
/// meanwhile are left for the next sync.
#[test]
fn split_sync_frees_the_log_while_fsyncing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(Faults::default());
    let config = LogConfig {
        faults: Some(faults.clone()),
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    log.append(&data("a", 2, 0), 1, 0).expect("append");
    let pending = log.begin_sync().expect("begin");
    assert_eq!(
        values_from(&log, 0),
        ["a-0", "a-1"],
        "reads while the fsync is pending"
    );
    log.append(&data("b", 1, 0), 1, 0)
        .expect("append meanwhile");
    pending.complete().expect("fsync");
    // The append made after begin_sync is still unsynced: the next sync fsyncs again.
    faults.fail_sync_after(0);
    assert!(
        log.sync().is_err(),
        "the later append still needed an fsync"
    );
    assert!(matches!(
        log.append(&data("c", 1, 0), 1, 0),
        Err(Error::Failed { .. })
    ));
}

/// Offsets are dense by construction: a batch handed to a segment at any offset but its next
/// one is a bug, and the assertion stops it before a byte is written.
#[test]
#[should_panic(expected = "a batch is appended at its segment's next offset")]
fn a_batch_at_a_stale_offset_is_refused_by_an_assertion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), small_config());
    log.append(&data("a", 2, 0), 1, 0).expect("append");
    let stale = data("b", 1, 0);
    let header = BatchHeader::validate(&stale).expect("valid batch");
    assert_eq!(
        header.base_offset, 0,
        "a producer's batch starts at offset 0"
    );
    let (head, tail) = stale.split_at(batch::HEADER_BYTES);
    let _ = log.active_mut().append(head, tail, &header, 0);
}
