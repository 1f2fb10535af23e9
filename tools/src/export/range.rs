//! The range `strata export` writes: each partition's `--from` and `--to` resolved against its
//! bounds when the export starts, as a pure plan (the broker's lookups passed in), so the same
//! specs over the same log always give the same offsets.
//!
//! Edges: a range is `from..end`, `end` exclusive. `--from time:T` is the first record at or
//! after T, `--to time:T` the first record at or after T as well, so the records exported are
//! those before it (with timestamps in offset order: exactly those with timestamp < T).
//! `--to latest` is the high watermark when the export starts. A start below the log start
//! (removed by retention) starts at the log start, with a note; an end beyond the high
//! watermark ends there.

use crate::offsets::{self, Bounds, EndSpec, StartSpec};

/// What the broker said about one partition when the export started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionBounds {
    pub partition: u32,
    pub bounds: Bounds,
    /// Where a `time:` start resolved (the first record at or after it).
    pub from_time_offset: Option<u64>,
    /// Where a `time:` end resolved (the first record at or after it).
    pub to_time_offset: Option<u64>,
}

/// One partition's offsets to export: `from..end`, never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: u32,
    pub from: u64,
    pub end: u64,
}

impl PartitionRange {
    /// Offsets in the range (an upper bound of its records: control batches take offsets).
    pub fn offsets(&self) -> u64 {
        self.end - self.from
    }
}

/// Why there is nothing to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// `--to` comes before `--from` (in `partition`, or in the specs themselves).
    Reversed { detail: String, holds: String },
    /// No partition has a record between `--from` and `--to`.
    Empty { holds: String },
    /// Offsets were in range but held no records, only control batches (a leader's first
    /// entry takes an offset), found once they were read.
    NoRecords { holds: String },
}

impl RangeError {
    /// [`RangeError::NoRecords`] for partitions with `bounds`.
    pub fn no_records(bounds: &[PartitionBounds]) -> Self {
        RangeError::NoRecords {
            holds: holds_text(bounds),
        }
    }
}

impl std::fmt::Display for RangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeError::Reversed { detail, holds } => write!(
                f,
                "the range is reversed: {detail}; nothing written (the topic holds {holds})"
            ),
            RangeError::Empty { holds } => write!(
                f,
                "the range is empty: no partition has a record between --from and --to; \
                 nothing written (the topic holds {holds})"
            ),
            RangeError::NoRecords { holds } => write!(
                f,
                "the range is empty: its offsets hold no records, only the cluster's control \
                 batches; nothing written (the topic holds {holds})"
            ),
        }
    }
}

/// Partitions listed by name in an error before the rest are counted.
const PARTITIONS_NAMED_MAX: usize = 8;

/// What each partition holds, for an error: `partition 0: offsets 0 to 99, partition 1:
/// empty (at offset 7)`.
fn holds_text(bounds: &[PartitionBounds]) -> String {
    let mut parts: Vec<String> = bounds
        .iter()
        .take(PARTITIONS_NAMED_MAX)
        .map(|partition| {
            let Bounds {
                log_start,
                high_watermark,
            } = partition.bounds;
            if high_watermark > log_start {
                format!(
                    "partition {}: offsets {log_start} to {}",
                    partition.partition,
                    high_watermark - 1
                )
            } else {
                format!(
                    "partition {}: nothing (next offset {high_watermark})",
                    partition.partition
                )
            }
        })
        .collect();
    if bounds.len() > PARTITIONS_NAMED_MAX {
        parts.push(format!(
            "and {} more partitions",
            bounds.len() - PARTITIONS_NAMED_MAX
        ));
    }
    parts.join(", ")
}

/// The ranges to export of every partition in `bounds` (in their order; partitions with
/// nothing in range left out), and the notes to print (a start clamped to the log start).
///
/// # Errors
/// [`RangeError::Reversed`] when the end comes before the start (two offsets or two times
/// in that order, or in any partition where both resolved), [`RangeError::Empty`] when no
/// partition has anything in range.
pub fn plan(
    from: StartSpec,
    to: EndSpec,
    bounds: &[PartitionBounds],
    now_ms: i64,
) -> Result<(Vec<PartitionRange>, Vec<String>), RangeError> {
    let reversed = |detail: String| RangeError::Reversed {
        detail,
        holds: holds_text(bounds),
    };
    match (from, to) {
        (StartSpec::Offset(start), EndSpec::Offset(end)) if end < start => {
            return Err(reversed(format!(
                "--to offset:{end} is before --from offset:{start}"
            )));
        }
        (StartSpec::Time(start), EndSpec::Time(end))
            if end.resolve(now_ms) < start.resolve(now_ms) =>
        {
            return Err(reversed(format!(
                "--to time {} ms is before --from time {} ms",
                end.resolve(now_ms),
                start.resolve(now_ms)
            )));
        }
        _ => {}
    }
    let mut ranges = Vec::new();
    let mut notes = Vec::new();
    for partition in bounds {
        let Bounds {
            log_start,
            high_watermark,
        } = partition.bounds;
        let start = offsets::requested_start(from, partition.bounds, partition.from_time_offset);
        let end = match to {
            EndSpec::Latest => high_watermark,
            EndSpec::Offset(offset) => offset,
            EndSpec::Time(_) => partition.to_time_offset.unwrap_or(high_watermark),
        };
        // Only two explicit edges can be reversed: `earliest` and `latest` move with the log,
        // so an end before the log start, or a start beyond the high watermark, is empty.
        let explicit = matches!(from, StartSpec::Offset(_) | StartSpec::Time(_))
            && !matches!(to, EndSpec::Latest);
        if end < start && explicit {
            return Err(reversed(format!(
                "in partition {}, --to resolved to offset {end}, before --from at offset {start}",
                partition.partition
            )));
        }
        let from_offset = if start < log_start {
            notes.push(format!(
                "partition {}: offset {start} was removed by retention; exporting from the log \
                 start {log_start}",
                partition.partition
            ));
            log_start
        } else {
            start
        };
        let end = end.min(high_watermark);
        if from_offset < end {
            ranges.push(PartitionRange {
                partition: partition.partition,
                from: from_offset,
                end,
            });
        }
    }
    if ranges.is_empty() {
        return Err(RangeError::Empty {
            holds: holds_text(bounds),
        });
    }
    Ok((ranges, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::TimeSpec;

    fn partition(partition: u32, log_start: u64, high_watermark: u64) -> PartitionBounds {
        PartitionBounds {
            partition,
            bounds: Bounds {
                log_start,
                high_watermark,
            },
            from_time_offset: None,
            to_time_offset: None,
        }
    }

    fn range(partition: u32, from: u64, end: u64) -> PartitionRange {
        PartitionRange {
            partition,
            from,
            end,
        }
    }

    /// Each start and end spec against partitions holding 10..20 and 0..5: `--to` is
    /// exclusive, `latest` is the high watermark, ends beyond it stop there.
    #[test]
    fn offsets_resolve_with_an_exclusive_end() {
        let bounds = [partition(0, 10, 20), partition(1, 0, 5)];
        let table = [
            (
                StartSpec::Earliest,
                EndSpec::Latest,
                vec![range(0, 10, 20), range(1, 0, 5)],
            ),
            (
                StartSpec::Offset(12),
                EndSpec::Offset(15),
                vec![range(0, 12, 15)],
            ),
            (
                StartSpec::Offset(3),
                EndSpec::Offset(99),
                vec![range(0, 10, 20), range(1, 3, 5)],
            ),
            (
                StartSpec::Earliest,
                EndSpec::Offset(11),
                vec![range(0, 10, 11), range(1, 0, 5)],
            ),
        ];
        for (from, to, expected) in table {
            let (ranges, _) = plan(from, to, &bounds, 0).expect("non-empty");
            assert_eq!(ranges, expected, "{from:?} {to:?}");
        }
        let (_, notes) = plan(StartSpec::Offset(3), EndSpec::Latest, &bounds, 0).expect("range");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("partition 0: offset 3 was removed"),
            "{notes:?}"
        );
    }

    /// Time edges come from the broker's lookups: from the first record at or after the start,
    /// to (exclusive) the first record at or after the end.
    #[test]
    fn time_edges_use_the_lookups() {
        let mut bounds = partition(0, 0, 100);
        bounds.from_time_offset = Some(40);
        bounds.to_time_offset = Some(60);
        let from = StartSpec::Time(TimeSpec::At(4_000));
        let to = EndSpec::Time(TimeSpec::At(6_000));
        let (ranges, _) = plan(from, to, &[bounds], 0).expect("range");
        assert_eq!(ranges, vec![range(0, 40, 60)]);
        // The same time at both ends is empty, never one record.
        bounds.to_time_offset = Some(40);
        let same = EndSpec::Time(TimeSpec::At(4_000));
        let error = plan(from, same, &[bounds], 0).expect_err("empty");
        assert!(matches!(error, RangeError::Empty { .. }), "{error}");
    }

    /// Reversed ranges are refused, naming what was asked and what the topic holds.
    #[test]
    fn reversed_ranges_are_errors() {
        let bounds = [partition(0, 0, 100)];
        let error = plan(StartSpec::Offset(50), EndSpec::Offset(10), &bounds, 0)
            .expect_err("reversed offsets");
        let text = error.to_string();
        assert!(
            text.contains("--to offset:10 is before --from offset:50"),
            "{text}"
        );
        assert!(text.contains("partition 0: offsets 0 to 99"), "{text}");
        let error = plan(
            StartSpec::Time(TimeSpec::At(2_000)),
            EndSpec::Time(TimeSpec::At(1_000)),
            &bounds,
            0,
        )
        .expect_err("reversed times");
        assert!(matches!(error, RangeError::Reversed { .. }), "{error}");
        // A time end that resolves before an offset start, in a partition.
        let mut timed = bounds[0];
        timed.to_time_offset = Some(20);
        let error = plan(
            StartSpec::Offset(30),
            EndSpec::Time(TimeSpec::At(0)),
            &[timed],
            0,
        )
        .expect_err("reversed in a partition");
        assert!(error.to_string().contains("in partition 0"), "{error}");
    }

    /// Nothing between the edges in any partition is an error listing what each holds.
    #[test]
    fn empty_ranges_are_errors() {
        let bounds = [partition(0, 0, 10), partition(1, 7, 7)];
        for (from, to) in [
            (StartSpec::Latest, EndSpec::Latest),
            (StartSpec::Offset(10), EndSpec::Offset(10)),
            (StartSpec::Offset(50), EndSpec::Latest),
            (StartSpec::Earliest, EndSpec::Offset(0)),
        ] {
            let error = plan(from, to, &bounds, 0).expect_err("empty");
            let text = error.to_string();
            assert!(
                matches!(error, RangeError::Empty { .. }),
                "{from:?} {to:?}: {text}"
            );
            assert!(
                text.contains("partition 0: offsets 0 to 9, partition 1: nothing (next offset 7)"),
                "{text}"
            );
        }
        let many: Vec<PartitionBounds> = (0..10).map(|p| partition(p, 0, 0)).collect();
        let text = plan(StartSpec::Earliest, EndSpec::Latest, &many, 0)
            .expect_err("empty")
            .to_string();
        assert!(text.ends_with("and 2 more partitions)"), "{text}");
    }
}
