//! Property test: [`PartitionLog`] behaves like a plain in-memory list of raft entries over
//! random sequences of append, read, find-by-time, truncate, reset, retention, sync and reopen.
//! Small segments and a dense index make every sequence cross segment boundaries. proptest
//! prints the smallest failing sequence on failure.

use std::path::Path;

use proptest::prelude::*;
use strata_server::storage::batch::{
    BatchBuilder, BatchHeader, ControlType, decode_records, split_batches,
};
use strata_server::storage::{
    EntryBytes, Error, LogConfig, LogStart, PartitionLog, RetentionPolicy,
};

#[derive(Debug, Clone)]
enum Op {
    Append {
        control: bool,
        timestamps: Vec<i64>,
        term_step: u64,
    },
    Read {
        choice: u64,
        max_bytes: usize,
    },
    FindTime {
        timestamp: i64,
    },
    Truncate {
        choice: u64,
    },
    Reset {
        raft_gap: u64,
        offset_gap: u64,
    },
    Retention {
        retention_bytes: Option<u64>,
        retention_ms: Option<u64>,
        now_ms: i64,
        raft_choice: u64,
    },
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (proptest::collection::vec(0i64..100, 1..6), 0u64..2)
            .prop_map(|(timestamps, term_step)| Op::Append { control: false, timestamps, term_step }),
        1 => (proptest::collection::vec(0i64..100, 1..2), 0u64..2)
            .prop_map(|(timestamps, term_step)| Op::Append { control: true, timestamps, term_step }),
        3 => (any::<u64>(), 1usize..600).prop_map(|(choice, max_bytes)| Op::Read { choice, max_bytes }),
        2 => (0i64..110).prop_map(|timestamp| Op::FindTime { timestamp }),
        1 => any::<u64>().prop_map(|choice| Op::Truncate { choice }),
        1 => (0u64..3, 0u64..3).prop_map(|(raft_gap, offset_gap)| Op::Reset { raft_gap, offset_gap }),
        1 => (proptest::option::of(0u64..3_000), proptest::option::of(0u64..100), 0i64..200, any::<u64>())
            .prop_map(|(retention_bytes, retention_ms, now_ms, raft_choice)| Op::Retention {
                retention_bytes, retention_ms, now_ms, raft_choice,
            }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

/// One raft entry as the model remembers it.
#[derive(Debug, Clone)]
struct Entry {
    term: u64,
    control: bool,
    base_offset: u64,
    /// (timestamp, value) of each record; empty for a control entry.
    records: Vec<(i64, String)>,
}

#[derive(Debug, Default)]
struct Model {
    start: LogStart,
    entries: Vec<Entry>,
    next_value: u64,
}

impl Model {
    fn last_raft_index(&self) -> u64 {
        self.start.prev_raft_index + self.entries.len() as u64
    }

    fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.start.prev_term, |e| e.term)
    }

    fn next_offset(&self) -> u64 {
        self.entries.last().map_or(self.start.start_offset, |e| {
            e.base_offset + e.records.len() as u64
        })
    }

    /// Every record from `offset` on, as (offset, value).
    fn records_from(&self, offset: u64) -> Vec<(u64, String)> {
        self.entries
            .iter()
            .flat_map(|e| {
                e.records
                    .iter()
                    .enumerate()
                    .map(move |(i, (_, v))| (e.base_offset + i as u64, v.clone()))
            })
            .filter(|(o, _)| *o >= offset)
            .collect()
    }

    fn first_offset_at_or_after(&self, timestamp: i64) -> Option<u64> {
        self.entries.iter().find_map(|e| {
            e.records
                .iter()
                .position(|(t, _)| *t >= timestamp)
                .map(|i| e.base_offset + i as u64)
        })
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 100,
        batch_bytes_max: 1024,
        ..LogConfig::default()
    }
}

/// Every record readable from `offset`, following reads of `max_bytes`.
fn read_all(log: &PartitionLog, offset: u64, max_bytes: usize) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    let mut next = offset;
    while next < log.next_offset() {
        let spans = log.read(next, max_bytes).expect("read inside the range");
        assert!(
            !spans.is_empty(),
            "read at {next} below {} returned nothing",
            log.next_offset()
        );
        for span in spans {
            for split in split_batches(span) {
                let (header, stored) = split.expect("whole batches");
                assert!(!header.is_control(), "reads skip control batches");
                for record in decode_records(&stored).expect("stored batch decodes") {
                    if record.offset >= offset {
                        let value = String::from_utf8(record.value.expect("value").to_vec());
                        found.push((record.offset, value.expect("utf8")));
                    }
                }
                next = header.base_offset as u64 + header.offset_count();
            }
        }
    }
    found
}

fn check(log: &PartitionLog, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start(), model.start);
    prop_assert_eq!(log.last_raft_index(), model.last_raft_index());
    prop_assert_eq!(log.last_term(), model.last_term());
    prop_assert_eq!(log.next_offset(), model.next_offset());
    for (i, entry) in model.entries.iter().enumerate() {
        let raft_index = model.start.prev_raft_index + 1 + i as u64;
        prop_assert_eq!(log.term(raft_index).expect("term"), entry.term);
    }
    let all = log
        .raft_entries(
            log.first_raft_index(),
            log.last_raft_index() + 1,
            usize::MAX,
            EntryBytes::Whole,
        )
        .expect("entries");
    prop_assert_eq!(all.len(), model.entries.len());
    for (stored, entry) in all.iter().zip(&model.entries) {
        let header = BatchHeader::parse(&stored.batch).expect("header");
        prop_assert_eq!(header.is_control(), entry.control);
        prop_assert_eq!(header.base_offset as u64, entry.base_offset);
        prop_assert_eq!(stored.term, entry.term);
    }
    Ok(())
}

fn apply(
    dir: &Path,
    log: &mut PartitionLog,
    model: &mut Model,
    op: &Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::Append {
            control,
            timestamps,
            term_step,
        } => {
            let term = model.last_term() + term_step;
            let (batch, records) = if *control {
                (
                    strata_server::storage::batch::control_batch(
                        ControlType::LeaderNoop,
                        timestamps[0],
                        b"",
                    ),
                    Vec::new(),
                )
            } else {
                let mut builder = BatchBuilder::new();
                let mut records = Vec::new();
                for timestamp in timestamps {
                    let value = format!("v{}", model.next_value);
                    model.next_value += 1;
                    builder.push(*timestamp, None, Some(value.as_bytes()), &[]);
                    records.push((*timestamp, value));
                }
                (builder.finish(), records)
            };
            let info = log.append(&batch, term, 0).expect("append");
            prop_assert_eq!(info.raft_index, model.last_raft_index() + 1);
            prop_assert_eq!(info.base_offset, model.next_offset());
            model.entries.push(Entry {
                term,
                control: *control,
                base_offset: info.base_offset,
                records,
            });
        }
        Op::Read { choice, max_bytes } => {
            let span = model.next_offset() - model.start.start_offset + 1;
            let offset = model.start.start_offset + choice % span;
            prop_assert_eq!(
                read_all(log, offset, *max_bytes),
                model.records_from(offset)
            );
            if model.start.start_offset > 0 {
                let below = log.read(model.start.start_offset - 1, *max_bytes);
                prop_assert!(
                    matches!(below, Err(Error::OffsetOutOfRange { .. })),
                    "{:?}",
                    below
                );
            }
            let above = log.read(model.next_offset() + 1, *max_bytes);
            prop_assert!(
                matches!(above, Err(Error::OffsetOutOfRange { .. })),
                "{:?}",
                above
            );
        }
        Op::FindTime { timestamp } => {
            let found = log.offset_for_timestamp(*timestamp).expect("lookup");
            prop_assert_eq!(found, model.first_offset_at_or_after(*timestamp));
        }
        Op::Truncate { choice } => {
            let first = model.start.prev_raft_index + 1;
            let raft_index = first + choice % (model.entries.len() as u64 + 1);
            log.truncate_from_raft_index(raft_index).expect("truncate");
            model.entries.truncate((raft_index - first) as usize);
        }
        Op::Reset {
            raft_gap,
            offset_gap,
        } => {
            let start = LogStart {
                prev_raft_index: model.last_raft_index() + raft_gap,
                prev_term: model.last_term() + raft_gap.min(&1),
                start_offset: model.next_offset() + offset_gap,
            };
            log.reset(start).expect("reset");
            model.start = start;
            model.entries.clear();
        }
        Op::Retention {
            retention_bytes,
            retention_ms,
            now_ms,
            raft_choice,
        } => {
            let policy = RetentionPolicy {
                retention_bytes: *retention_bytes,
                retention_ms: *retention_ms,
                offset_floor: None,
            };
            let raft_index_max =
                model.start.prev_raft_index + raft_choice % (model.entries.len() as u64 + 1);
            let before = log.log_start();
            let outcome = log
                .apply_retention(&policy, *now_ms, raft_index_max)
                .expect("retention");
            let after = log.log_start();
            prop_assert_eq!(outcome.log_start_offset, after.start_offset);
            prop_assert!(after.prev_raft_index >= before.prev_raft_index);
            prop_assert!(after.prev_raft_index <= raft_index_max.max(before.prev_raft_index));
            let removed = (after.prev_raft_index - before.prev_raft_index) as usize;
            if removed > 0 {
                let last_removed = &model.entries[removed - 1];
                prop_assert_eq!(after.prev_term, last_removed.term);
                let expected_start = model
                    .entries
                    .get(removed)
                    .map_or(model.next_offset(), |e| e.base_offset);
                prop_assert_eq!(after.start_offset, expected_start);
                model.entries.drain(..removed);
                model.start = after;
            }
            prop_assert_eq!(outcome.segments_removed > 0, removed > 0);
        }
        Op::Sync => log.sync().expect("sync"),
        Op::Reopen => {
            log.sync().expect("sync");
            *log = PartitionLog::open(dir, config()).expect("reopen");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The log matches the model after every operation of a random sequence.
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), config()).expect("open");
        let mut model = Model::default();
        for op in &ops {
            apply(dir.path(), &mut log, &mut model, op)?;
            check(&log, &model)?;
        }
    }
}
