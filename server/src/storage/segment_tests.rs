//! Unit tests of one segment: file names, descriptors held by sealed segments, space kept
//! allocated ahead of the active one.

use super::*;
use crate::storage::EntryBytes;
use crate::storage::batch;

#[test]
fn file_names_round_trip() {
    assert_eq!(log_file_name(42), "00000000000000000042.log");
    assert_eq!(index_file_name(42), "00000000000000000042.index");
    let table = [
        ("00000000000000000042.log", Some(42)),
        ("18446744073709551615.log", Some(u64::MAX)),
        ("0000000000000000042.log", None),
        ("0000000000000000004x.log", None),
        ("00000000000000000042.index", None),
        ("99999999999999999999.log", None),
    ];
    for (name, expected) in table {
        assert_eq!(parse_log_file_name(name), expected, "{name}");
    }
}

fn small_log(dir: &Path) -> super::super::PartitionLog {
    let config = super::super::LogConfig {
        segment_bytes_max: 1024,
        batch_bytes_max: 1024,
        index_interval_bytes: 256,
        ..super::super::LogConfig::default()
    };
    super::super::PartitionLog::open(dir, config).expect("open")
}

fn fill(log: &mut super::super::PartitionLog, batches: usize) {
    for at in 0..batches {
        let mut builder = batch::BatchBuilder::new();
        builder.push(at as i64, None, Some(&[7u8; 200][..]), &[]);
        let batch = builder.finish();
        log.append(&batch, 1, at as i64).expect("append");
    }
    log.sync().expect("sync");
}

/// Sealed segments hold no descriptor (after a roll and after a reopen), reads of them
/// still work through their maps, and a truncation back into a sealed segment reopens it.
#[test]
fn sealed_segments_hold_no_file_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = small_log(dir.path());
    fill(&mut log, 30);
    let check = |log: &super::super::PartitionLog| {
        let segments = log.segments();
        assert!(segments.len() > 3, "{} segments", segments.len());
        let (active, sealed) = segments.split_last().expect("a segment");
        assert_eq!(active.open_files, 1);
        for segment in sealed {
            assert_eq!(segment.open_files, 0, "{:?}", segment.log_path);
        }
    };
    check(&log);
    assert_eq!(log.read(0, 1 << 20).expect("read").len(), 1);
    // The active segment keeps blocks allocated past its end; sealed ones gave theirs back.
    // (Where fallocate is not supported both are plain files, and only the second holds.)
    let allocated = |info: &SegmentInfo| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&info.log_path).expect("stat").blocks() * 512
    };
    let segments = log.segments();
    let (active, sealed) = segments.split_last().expect("a segment");
    let slack_supported = allocated(active) >= active.size_bytes + LOG_SLACK_BYTES / 2;
    println!("active segment: {} bytes allocated", allocated(active));
    for segment in sealed {
        assert!(
            allocated(segment) <= segment.size_bytes.next_multiple_of(4096),
            "{} bytes allocated for {}",
            allocated(segment),
            segment.size_bytes
        );
    }
    drop(log);
    let mut log = small_log(dir.path());
    check(&log);
    let entries = log
        .raft_entries(1, 31, 1 << 20, EntryBytes::Whole)
        .expect("entries");
    assert_eq!(entries.len(), 30);
    // Back into the first segment: it becomes active again, with its files reopened.
    log.truncate_from_raft_index(3).expect("truncate");
    let segments = log.segments();
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].open_files, 1);
    fill(&mut log, 30);
    check(&log);
    assert_eq!(log.last_raft_index(), 32);
    if slack_supported {
        let segments = log.segments();
        let active = segments.last().expect("a segment");
        assert!(allocated(active) >= active.size_bytes + LOG_SLACK_BYTES / 2);
    }
}
