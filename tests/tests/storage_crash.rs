//! Crash, damage and I/O-fault tests of the partition log, on real files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_server::storage::batch::{BatchHeader, ControlType, decode_records, split_batches};
use strata_server::storage::fault::Faults;
use strata_server::storage::{EntryBytes, Error, LogConfig, PartitionLog};
use strata_tests::{Seed, data_batch, read_values};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        batch_bytes_max: 4096,
        ..LogConfig::default()
    }
}

/// What the log holds when the last segment's `.log` ends at `end_position`. Offsets start at 0
/// and every record's value is distinct, so `next_offset` is also how many values are readable.
struct Expected {
    end_position: u64,
    next_offset: u64,
    last_raft_index: u64,
}

/// Writes a log of several segments with batches of varied sizes and some control batches.
/// Returns every value appended, the expected state at each batch boundary of the last segment
/// (its start included), and the last segment's `.log` path.
fn build_log(dir: &Path, seed: &mut Seed) -> (Vec<String>, Vec<Expected>, PathBuf) {
    let mut log = PartitionLog::open(dir, config()).expect("open");
    let mut values = Vec::new();
    for i in 0..60 {
        if seed.below(8) == 0 {
            log.append_control(ControlType::LeaderNoop, b"", 1 + i / 20, 0)
                .expect("control");
        } else {
            let count = 1 + seed.below(6) as usize;
            let tag = format!("b{i}{}", "x".repeat(seed.below(40) as usize));
            log.append(&data_batch(&tag, count, i as i64), 1 + i / 20, 0)
                .expect("append");
            values.extend((0..count).map(|j| format!("{tag}-{j}")));
        }
    }
    log.sync().expect("sync");
    let segments = log.segments();
    assert!(segments.len() >= 3, "the test needs sealed segments");
    let last = segments.last().expect("segment").clone();
    let mut state = Expected {
        end_position: 0,
        next_offset: last.base_offset,
        last_raft_index: last.base_raft_index - 1,
    };
    let entries = log
        .raft_entries(
            last.base_raft_index,
            log.last_raft_index() + 1,
            usize::MAX,
            EntryBytes::Whole,
        )
        .expect("entries");
    let mut expected = Vec::new();
    for entry in entries {
        let header = BatchHeader::parse(&entry.batch).expect("header");
        let next = Expected {
            end_position: state.end_position + entry.batch.len() as u64,
            next_offset: header.base_offset as u64 + header.offset_count(),
            last_raft_index: entry.raft_index,
        };
        expected.push(state);
        state = next;
    }
    expected.push(state);
    assert_eq!(log.next_offset() as usize, values.len());
    (values, expected, last.log_path)
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// Opens `dir`, checks it holds exactly the first `expected.values` values and the right ends,
/// and that an append continues at the right offset and raft index.
fn check_recovered(dir: &Path, values: &[String], expected: &Expected, what: &str) {
    let mut log = PartitionLog::open(dir, config()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    let last_log = &log.segments().last().expect("segment").log_path.clone();
    let length = fs::metadata(last_log).expect("stat").len();
    assert_eq!(
        length, expected.end_position,
        "{what}: the torn tail is cut off the file"
    );
    assert_eq!(
        log.next_offset(),
        expected.next_offset,
        "{what}: next offset"
    );
    assert_eq!(
        log.last_raft_index(),
        expected.last_raft_index,
        "{what}: last raft index"
    );
    assert_eq!(
        read_values(&log),
        values[..expected.next_offset as usize],
        "{what}: values"
    );
    let info = log
        .append(&data_batch("after", 2, 0), 10, 0)
        .unwrap_or_else(|e| panic!("{what}: append after recovery: {e}"));
    assert_eq!(
        info.base_offset, expected.next_offset,
        "{what}: offset after recovery"
    );
    assert_eq!(
        info.raft_index,
        expected.last_raft_index + 1,
        "{what}: raft index"
    );
    log.sync().expect("sync");
    drop(log);
    let log = PartitionLog::open(dir, config()).expect("reopen");
    assert_eq!(
        log.next_offset(),
        expected.next_offset + 2,
        "{what}: after reopen"
    );
}

/// Cutting the last segment's `.log` at every byte length leaves exactly the batches that
/// end at or before the cut; appends continue with the right offsets. The stale index (which
/// points past the cut) is left in place, as a crash would leave it.
#[test]
fn every_cut_of_the_last_segment_recovers_the_complete_batches() {
    let mut seed = Seed::from_env("every_cut", 0x5eed_0001);
    let template = tempfile::tempdir().expect("tempdir");
    let (values, expected, last_log) = build_log(template.path(), &mut seed);
    let full = fs::read(&last_log).expect("read");
    let end = expected.last().expect("states").end_position as usize;
    assert!(
        full.len() >= end && full[end..].iter().all(|byte| *byte == 0),
        "the active segment holds its batches, then only zeros written ahead"
    );
    let name = last_log.file_name().expect("name").to_owned();
    // Every cut through the batches, and a few through the zeros after them.
    let zeros = [end + 1, (end + full.len()) / 2, full.len()];
    let cuts = (0..=end).chain(
        zeros
            .into_iter()
            .filter(|cut| *cut > end && *cut <= full.len()),
    );
    for cut in cuts {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), dir.path());
        fs::write(dir.path().join(&name), &full[..cut]).expect("cut");
        let complete = expected
            .iter()
            .rev()
            .find(|e| e.end_position <= cut as u64)
            .expect("the empty state always fits");
        check_recovered(dir.path(), &values, complete, &format!("cut at {cut}"));
    }
}

/// Garbage or zeros after the last complete batch are a torn tail: cut off, nothing lost.
#[test]
fn garbage_and_zero_tails_are_cut_off() {
    let mut seed = Seed::from_env("garbage_tails", 0x5eed_0002);
    let template = tempfile::tempdir().expect("tempdir");
    let (values, expected, last_log) = build_log(template.path(), &mut seed);
    let full = fs::read(&last_log).expect("read");
    let name = last_log.file_name().expect("name").to_owned();
    let all = expected.last().expect("states");
    for round in 0..200 {
        let length = 1 + seed.below(3000) as usize;
        let tail = if round % 2 == 0 {
            vec![0u8; length]
        } else {
            seed.bytes(length)
        };
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), dir.path());
        // Right after the batches, where the zeros written ahead were.
        let mut bytes = full[..all.end_position as usize].to_vec();
        bytes.extend_from_slice(&tail);
        fs::write(dir.path().join(&name), &bytes).expect("write");
        check_recovered(
            dir.path(),
            &values,
            all,
            &format!("tail round {round} of {length} bytes"),
        );
    }
}

/// A flipped bit inside a sealed segment is never served silently. Opening does not re-read
/// sealed segments whose index checks out (that would read the whole disk at every start), so
/// either the open fails naming the file and position, or reading the log fails there: the
/// storage layer checks framing and offsets, the CRC-32C catches the rest when the batch is
/// decoded. When the index must be rebuilt, the open itself fails.
#[test]
fn damage_in_a_sealed_segment_is_never_served_silently() {
    let mut seed = Seed::from_env("sealed_damage", 0x5eed_0003);
    let template = tempfile::tempdir().expect("tempdir");
    build_log(template.path(), &mut seed);
    let sealed = PartitionLog::open(template.path(), config())
        .expect("open")
        .segments()[0]
        .clone();
    let full = fs::read(&sealed.log_path).expect("read");
    let name = sealed.log_path.file_name().expect("name").to_owned();
    // The leader epoch (bytes 12..16 of a batch) is outside Kafka's CRC, and a flip there is
    // caught only where it breaks the order of terms, so the random damage leaves it alone.
    let mut epoch_bytes = Vec::new();
    let mut position = 0;
    for split in split_batches(bytes::Bytes::from(full.clone())) {
        let (header, _) = split.expect("whole batches");
        epoch_bytes.extend(position + 12..position + 16);
        position += header.total_bytes();
    }
    for round in 0..100 {
        let at = seed.below(full.len() as u64) as usize;
        if epoch_bytes.contains(&at) {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), dir.path());
        let mut bytes = full.clone();
        bytes[at] ^= 1 << seed.below(8);
        let path = dir.path().join(&name);
        fs::write(&path, &bytes).expect("write");
        let delete_index = round % 2 == 0;
        if delete_index {
            fs::remove_file(path.with_extension("index")).expect("delete index");
        }
        match PartitionLog::open(dir.path(), config()) {
            Err(Error::Corrupt {
                path: named,
                position,
                ..
            }) => {
                assert_eq!(named, path, "byte {at}");
                assert!(
                    position <= at as u64,
                    "byte {at}: reported position {position}"
                );
            }
            Err(other) => panic!("byte {at}: expected a corruption error, got {other}"),
            Ok(log) => {
                assert!(
                    !delete_index,
                    "byte {at}: a rebuilt index must find the damage"
                );
                assert!(
                    read_checked(&log).is_err(),
                    "byte {at}: damaged batch read back without an error"
                );
            }
        }
    }
}

/// Reads the whole log as consumers do (decoding every batch) and as raft does (a follower's
/// append validates every entry, control batches included); the first error, whatever layer
/// found it.
fn read_checked(log: &PartitionLog) -> Result<usize, String> {
    let entries = log
        .raft_entries(
            log.first_raft_index(),
            log.last_raft_index() + 1,
            usize::MAX,
            EntryBytes::Whole,
        )
        .map_err(|e| e.to_string())?;
    for entry in entries {
        BatchHeader::validate(&entry.batch).map_err(|e| e.to_string())?;
    }
    let mut next = log.log_start_offset();
    let mut records = 0;
    while next < log.next_offset() {
        let spans = log.read(next, 64 * 1024).map_err(|e| e.to_string())?;
        for span in spans {
            for split in split_batches(span) {
                let (header, batch) = split.map_err(|e| e.to_string())?;
                records += decode_records(&batch).map_err(|e| e.to_string())?.len();
                next = header.base_offset as u64 + header.offset_count();
            }
        }
    }
    Ok(records)
}

/// Deleting, truncating, zero-filling or scrambling the `.index` files changes no read.
#[test]
fn index_damage_changes_no_read() {
    let mut seed = Seed::from_env("index_damage", 0x5eed_0004);
    let template = tempfile::tempdir().expect("tempdir");
    build_log(template.path(), &mut seed);
    let baseline = Observed::of(template.path());
    type Damage = fn(&Path, &mut Seed);
    let damages: &[(&str, Damage)] = &[
        ("delete", |path, _| fs::remove_file(path).expect("delete")),
        ("truncate", |path, seed| {
            let length = fs::metadata(path).expect("stat").len();
            let cut = seed.below(length.max(1));
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open")
                .set_len(cut)
                .expect("cut");
        }),
        ("zero-fill", |path, _| {
            let length = fs::metadata(path).expect("stat").len() as usize;
            fs::write(path, vec![0u8; length]).expect("zero");
        }),
        ("scramble", |path, seed| {
            let length = fs::metadata(path).expect("stat").len() as usize;
            fs::write(path, seed.bytes(length)).expect("scramble");
        }),
        ("flip one bit", |path, seed| {
            let mut bytes = fs::read(path).expect("read");
            if !bytes.is_empty() {
                let at = seed.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << seed.below(8);
            }
            fs::write(path, bytes).expect("write");
        }),
        ("append garbage", |path, seed| {
            let mut bytes = fs::read(path).expect("read");
            bytes.extend(seed.bytes(24 * 3));
            fs::write(path, bytes).expect("write");
        }),
        ("grow with zeros", |path, _| {
            let length = fs::metadata(path).expect("stat").len();
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open")
                .set_len(length + 4096)
                .expect("grow");
        }),
    ];
    for (name, damage) in damages {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(template.path(), dir.path());
        for entry in fs::read_dir(dir.path()).expect("list") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "index") {
                damage(&path, &mut seed);
            }
        }
        assert_eq!(Observed::of(dir.path()), baseline, "after {name}");
        // And the rebuilt index serves the next open just as well.
        assert_eq!(
            Observed::of(dir.path()),
            baseline,
            "after {name}, second open"
        );
    }
}

/// Everything a reader can ask of a log, to compare two opens.
#[derive(Debug, PartialEq)]
struct Observed {
    values: Vec<String>,
    from_each_offset: Vec<usize>,
    times: Vec<Option<u64>>,
    terms: Vec<u64>,
}

impl Observed {
    fn of(dir: &Path) -> Self {
        let log = PartitionLog::open(dir, config()).expect("open");
        let from_each_offset = (log.log_start_offset()..log.next_offset())
            .map(|offset| {
                log.read(offset, 1)
                    .expect("read")
                    .iter()
                    .map(|b| b.len())
                    .sum()
            })
            .collect();
        let times = (0..70)
            .map(|t| log.offset_for_timestamp(t).expect("time"))
            .collect();
        let terms = (log.first_raft_index()..=log.last_raft_index())
            .map(|i| log.term(i).expect("term"))
            .collect();
        Self {
            values: read_values(&log),
            from_each_offset,
            times,
            terms,
        }
    }
}

/// Random appends and syncs with writes and fsyncs failing at random: a failed append stores
/// nothing, a failed fsync fails the log until it is reopened, and every reopen finds exactly
/// the appends that succeeded.
#[test]
fn random_io_failures_never_lose_or_invent_batches() {
    let mut seed = Seed::from_env("random_io_failures", 0x5eed_0005);
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Arc::new(Faults::default());
    let config = LogConfig {
        faults: Some(faults.clone()),
        ..config()
    };
    let mut log = PartitionLog::open(dir.path(), config.clone()).expect("open");
    let mut appended: Vec<String> = Vec::new();
    let mut failures = 0;
    for step in 0..400 {
        match seed.below(10) {
            0 => faults.fail_write_after(seed.below(3) as u32),
            1 => faults.fail_sync_after(seed.below(3) as u32),
            _ => {}
        }
        let count = 1 + seed.below(5) as usize;
        let tag = format!("s{step}");
        match log.append(&data_batch(&tag, count, step), 1, step) {
            Ok(_) => appended.extend((0..count).map(|i| format!("{tag}-{i}"))),
            Err(Error::Io { .. } | Error::Failed { .. }) => failures += 1,
            Err(other) => panic!("step {step}: unexpected error {other}"),
        }
        if seed.below(4) == 0 && log.sync().is_err() {
            failures += 1;
        }
        if log.sync().is_err() || seed.below(20) == 0 {
            faults.clear();
            drop(log);
            log = PartitionLog::open(dir.path(), config.clone()).expect("reopen");
            assert_eq!(read_values(&log), appended, "step {step}: reopen");
        }
    }
    assert!(failures > 10, "the faults fired ({failures})");
    faults.clear();
    drop(log);
    let log = PartitionLog::open(dir.path(), config).expect("open");
    assert_eq!(read_values(&log), appended);
}
