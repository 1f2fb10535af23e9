//! Unit tests of one segment: file names, descriptors held by sealed segments, space kept
//! allocated and zeros written ahead of the active one.

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

fn file_length(info: &SegmentInfo) -> u64 {
    std::fs::metadata(&info.log_path).expect("stat").len()
}

/// Small appends refill the zeros once half of the last refill is used, not on every append:
/// a trickle of 1 KiB records keeps the first [`WRITE_AHEAD_MIN_BYTES`] until half of it is
/// appended, then the file reaches twice as far ahead of the log end, and so on.
#[test]
fn a_trickle_refills_the_zeros_once_per_half_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = super::super::PartitionLog::open(dir.path(), super::super::LogConfig::default())
        .expect("open");
    let mut lengths = Vec::new();
    for at in 0..200i64 {
        let mut builder = batch::BatchBuilder::new();
        builder.push(at, None, Some(&[7u8; 1024][..]), &[]);
        log.append(&builder.finish(), 1, at).expect("append");
        let active = log.segments().pop().expect("a segment");
        lengths.push((active.size_bytes, file_length(&active)));
    }
    let (first_size, first_length) = lengths[0];
    assert_eq!(first_length, first_size + WRITE_AHEAD_MIN_BYTES);
    // The model: after each append, refill to twice the window once less than half is left.
    let mut window = WRITE_AHEAD_MIN_BYTES;
    let mut expected = first_length;
    let mut refills = 0;
    for (size, length) in &lengths[1..] {
        if expected - size < window / 2 {
            window *= 2;
            expected = size + window;
            refills += 1;
        }
        assert_eq!(*length, expected, "after {size} bytes: {lengths:?}");
    }
    // About 220 KB appended: 32 KiB of the first window used, then 64 KiB of the second.
    assert!((2..=3).contains(&refills), "{refills} refills: {lengths:?}");
}

/// The active segment's file holds zeros past its batches, refilled as appends come, never
/// past the segment's capacity; a sealed segment's file ends at its last batch; `inspect`
/// sees no damage in the zeros; a reopen cuts them off (a torn tail) and keeps every batch.
#[test]
fn zeros_are_written_ahead_of_the_active_segment_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = super::super::LogConfig {
        segment_bytes_max: 2 << 20,
        batch_bytes_max: 64 << 10,
        index_interval_bytes: 4096,
        ..super::super::LogConfig::default()
    };
    let capacity = (2 << 20) + (64 << 10);
    let mut log = super::super::PartitionLog::open(dir.path(), config.clone()).expect("open");
    let append = |log: &mut super::super::PartitionLog, batches: usize| {
        for at in 0..batches {
            let mut builder = batch::BatchBuilder::new();
            builder.push(at as i64, None, Some(&[7u8; 8 << 10][..]), &[]);
            log.append(&builder.finish(), 1, at as i64).expect("append");
        }
        log.sync().expect("sync");
    };
    append(&mut log, 1);
    let active = log.segments().pop().expect("a segment");
    assert_eq!(
        file_length(&active),
        active.size_bytes + WRITE_AHEAD_MIN_BYTES
    );
    let mut ahead = Vec::new();
    for _ in 0..10 {
        append(&mut log, 100);
        let segments = log.segments();
        let (active, sealed) = segments.split_last().expect("a segment");
        for segment in sealed {
            assert_eq!(
                file_length(segment),
                segment.size_bytes,
                "a sealed segment ends at its data"
            );
        }
        let length = file_length(active);
        let bytes = std::fs::read(&active.log_path).expect("read");
        assert!(bytes[active.size_bytes as usize..].iter().all(|b| *b == 0));
        assert!(
            length > active.size_bytes,
            "zeros ahead of the active segment"
        );
        assert!(length <= capacity, "{length} past the capacity {capacity}");
        ahead.push(length - active.size_bytes);
    }
    assert!(
        log.segments().len() > 3,
        "{} segments",
        log.segments().len()
    );
    assert!(
        ahead.iter().any(|ahead| *ahead > WRITE_AHEAD_MAX_BYTES / 2),
        "refills grow to the most: {ahead:?}"
    );
    let summary = crate::storage::inspect::inspect(dir.path(), |_| {}).expect("inspect");
    assert_eq!(summary.problems, 0);
    let next_offset = log.next_offset();
    drop(log);
    let log = super::super::PartitionLog::open(dir.path(), config).expect("reopen");
    let active = log.segments().pop().expect("a segment");
    assert_eq!(
        file_length(&active),
        active.size_bytes,
        "the zeros are cut off"
    );
    assert_eq!(log.next_offset(), next_offset);
}

/// A refill that fails (a full disk) leaves the append it followed done, and the segment
/// writes no more zeros: later appends each make one write, the data.
#[test]
fn a_failed_refill_stops_writing_zeros_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(super::super::fault::Faults::default());
    let config = super::super::LogConfig {
        index_interval_bytes: 1 << 20,
        faults: Some(faults.clone()),
        ..super::super::LogConfig::default()
    };
    let mut log = super::super::PartitionLog::open(dir.path(), config.clone()).expect("open");
    // The first append's data is written; the refill after it fails.
    faults.fail_write_after(1);
    fill(&mut log, 1);
    // Ten more appends, ten writes allowed: a refill among them would take one, and an
    // append would fail.
    faults.fail_write_after(10);
    fill(&mut log, 10);
    faults.clear();
    assert_eq!(log.next_offset(), 11);
    drop(log);
    let log = super::super::PartitionLog::open(dir.path(), config).expect("reopen");
    assert_eq!(log.next_offset(), 11);
    assert_eq!(log.read(0, 1 << 20).expect("read").len(), 1);
}

/// Appends too large for zeros keep [`LOG_SLACK_LARGE_BYTES`] allocated past the log end,
/// topped up once half is used, never past the segment's capacity; the file's length stays at
/// its data, and a sealed segment gives the blocks back. (Where fallocate is not supported,
/// or the file system has less than [`LOG_SLACK_LARGE_FREE_MIN_BYTES`] free, the large slack
/// is not taken, and only the length, the capacity and the sealed segments are checked.)
#[test]
fn large_appends_keep_more_allocated_ahead() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = super::super::LogConfig {
        segment_bytes_max: 6 << 20,
        batch_bytes_max: 1 << 20,
        index_interval_bytes: 1 << 20,
        ..super::super::LogConfig::default()
    };
    let capacity = (6 << 20) + (1 << 20);
    let mut log = super::super::PartitionLog::open(dir.path(), config).expect("open");
    let allocated =
        |info: &SegmentInfo| std::fs::metadata(&info.log_path).expect("stat").blocks() * 512;
    let first = log.segments().pop().expect("a segment");
    let fallocate_supported = allocated(&first) >= LOG_SLACK_BYTES;
    // Below this much free, large appends keep the small slack (see `keep_slack`).
    let (free, _) = crate::resources::disk_space(dir.path()).expect("statvfs");
    let roomy = free >= LOG_SLACK_LARGE_FREE_MIN_BYTES + (64 << 20);
    println!("{free} bytes free, fallocate supported: {fallocate_supported}");
    let mut ahead = Vec::new();
    for at in 0..60i64 {
        let mut builder = batch::BatchBuilder::new();
        builder.push(at, None, Some(&[7u8; 200 << 10][..]), &[]);
        log.append(&builder.finish(), 1, at).expect("append");
        let segments = log.segments();
        let (active, sealed) = segments.split_last().expect("a segment");
        assert_eq!(
            file_length(active),
            active.size_bytes,
            "no zeros after large appends"
        );
        for segment in sealed {
            // One block more (here and below) may be the file's extent tree, which ext4
            // counts in its blocks.
            assert!(
                allocated(segment) <= segment.size_bytes.next_multiple_of(4096) + 4096,
                "a sealed segment gave its slack back: {} bytes allocated for {}",
                allocated(segment),
                segment.size_bytes
            );
        }
        if fallocate_supported {
            assert!(
                allocated(active) <= (capacity as u64).next_multiple_of(4096) + 4096,
                "{} bytes allocated past the capacity {capacity}",
                allocated(active)
            );
            ahead.push(allocated(active) as i64 - active.size_bytes as i64);
        }
    }
    assert!(
        log.segments().len() >= 2,
        "{} segments",
        log.segments().len()
    );
    if fallocate_supported && roomy {
        // While room is left in the segment, at least half of the large slack stays ahead.
        assert!(
            ahead
                .iter()
                .filter(|ahead| **ahead >= (LOG_SLACK_LARGE_BYTES / 2) as i64)
                .count()
                > ahead.len() / 3,
            "bytes allocated ahead after each append: {ahead:?}"
        );
    }
}

/// A log that took large appends and then none until two calls of `give_back_idle_slack`
/// holds the small slack again (the first call follows appends and keeps the large one), with
/// its length and batches unchanged; the next large append takes the large slack again; after
/// a restart, the first call gives back what the last run left allocated ahead.
#[test]
fn a_quiet_log_gives_back_its_large_slack() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = super::super::PartitionLog::open(dir.path(), super::super::LogConfig::default())
        .expect("open");
    let allocated = |log: &super::super::PartitionLog| {
        let active = log.segments().pop().expect("a segment");
        let blocks = std::fs::metadata(&active.log_path).expect("stat").blocks() * 512;
        (active, blocks)
    };
    let append = |log: &mut super::super::PartitionLog, at: i64| {
        let mut builder = batch::BatchBuilder::new();
        builder.push(at, None, Some(&[7u8; 200 << 10][..]), &[]);
        log.append(&builder.finish(), 1, at).expect("append");
    };
    for at in 0..3 {
        append(&mut log, at);
    }
    log.sync().expect("sync");
    let (active, held) = allocated(&log);
    let (free, _) = crate::resources::disk_space(dir.path()).expect("statvfs");
    let large_taken = held >= active.size_bytes + LOG_SLACK_LARGE_BYTES / 2;
    println!(
        "{free} bytes free, {held} allocated for {} bytes",
        active.size_bytes
    );
    if free >= LOG_SLACK_LARGE_FREE_MIN_BYTES + (64 << 20) && held >= LOG_SLACK_BYTES {
        assert!(
            large_taken,
            "{held} bytes allocated for {}",
            active.size_bytes
        );
    }
    // Appends came since the last call: nothing is given back yet.
    log.give_back_idle_slack().expect("give back");
    assert_eq!(allocated(&log).1, held);
    // None since: the large slack goes, the small one stays.
    log.give_back_idle_slack().expect("give back");
    let (active, now) = allocated(&log);
    assert_eq!(file_length(&active), active.size_bytes);
    // One block more may be the file's extent tree.
    assert!(
        now <= active.size_bytes.next_multiple_of(4096) + LOG_SLACK_BYTES + 4096,
        "{now} bytes allocated for {} after a quiet spell",
        active.size_bytes
    );
    let entries = log
        .raft_entries(1, 4, 1 << 30, EntryBytes::Whole)
        .expect("entries");
    assert_eq!(entries.len(), 3, "every batch is still there");
    if large_taken {
        append(&mut log, 3);
        let (active, again) = allocated(&log);
        assert!(again >= active.size_bytes + LOG_SLACK_LARGE_BYTES / 2);
    }
    // A restart finds the blocks the last run allocated ahead; the first check gives them
    // back (what an opened segment holds ahead is unknown, so its first check cuts).
    log.sync().expect("sync");
    drop(log);
    let mut log = super::super::PartitionLog::open(dir.path(), super::super::LogConfig::default())
        .expect("reopen");
    if large_taken {
        let (active, reopened) = allocated(&log);
        assert!(reopened >= active.size_bytes + LOG_SLACK_LARGE_BYTES / 2);
    }
    log.give_back_idle_slack().expect("give back");
    let (active, now) = allocated(&log);
    assert!(
        now <= active.size_bytes.next_multiple_of(4096) + LOG_SLACK_BYTES + 4096,
        "{now} bytes allocated for {} after a restart and a check",
        active.size_bytes
    );
}
