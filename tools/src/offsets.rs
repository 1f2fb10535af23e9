//! Where `consume` starts and stops in each partition: the `--from` and `--to` specs, parsed,
//! and the pure plan of one partition's range from its bounds (time passed in).
//!
//! `--from` (rpk's and kcat's forms):
//! - `earliest`, `latest`;
//! - `offset:N` or `N`: offset N;
//! - `-N`: the last N records of each partition (from `high watermark - N`);
//! - `+N`: N records after the log start of each partition;
//! - `time:RFC3339`, `time:MS` (milliseconds since the epoch), `time:-DURATION` (that long
//!   ago, e.g. `time:-1h`, `time:-90s`, parsed by `humantime`): the first record at or after
//!   that time.
//!
//! `--to` (exclusive: the first record not printed): `offset:N`, `time:...` as above (stop at
//! the first record at or after it), `latest` (the high watermark when the command starts).
//!
//! A partition that cannot serve the requested start does not stop the others: a start below
//! the log start (retention removed it) reads from the log start, and a start beyond the high
//! watermark reads nothing (or, with `--follow`, waits for that offset); each says so on
//! stderr.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_client::StartFrom;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// Milliseconds since the epoch.
    At(i64),
    /// This long before the command started.
    Ago(Duration),
}

impl TimeSpec {
    /// Milliseconds since the epoch, with `now_ms` the command's start.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            TimeSpec::At(ms) => ms,
            TimeSpec::Ago(ago) => {
                now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
            }
        }
    }
}

/// `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSpec {
    Earliest,
    Latest,
    Offset(u64),
    /// The last N records.
    Last(u64),
    /// N records after the log start.
    AfterStart(u64),
    Time(TimeSpec),
}

/// `--to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndSpec {
    Offset(u64),
    Time(TimeSpec),
    Latest,
}

const START_FORMS: &str = "earliest, latest, offset:N, N, -N (last N), +N (N after the start), time:RFC3339, \
     time:MS (ms since the epoch) or time:-DURATION (e.g. time:-1h)";
const END_FORMS: &str = "offset:N, latest, time:RFC3339, time:MS (ms since the epoch) or time:-DURATION (e.g. time:-10m)";

/// Digits only: `u64::from_str` would also take a leading `+`.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_count(text: &str, what: &str) -> Result<u64, String> {
    digits(text).ok_or_else(|| format!("{what} {text:?} is not a non-negative integer"))
}

/// Parses `time:`'s argument: RFC 3339, milliseconds since the epoch, or `-DURATION`.
fn parse_time(text: &str) -> Result<TimeSpec, String> {
    if let Some(ago) = text.strip_prefix('-') {
        return humantime::parse_duration(ago)
            .map(TimeSpec::Ago)
            .map_err(|error| {
                format!("time -{ago:?} is not a duration such as -1h or -30m: {error}")
            });
    }
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse()
            .map(TimeSpec::At)
            .map_err(|_| format!("time {text} is out of range"));
    }
    let time = OffsetDateTime::parse(text, &Rfc3339).map_err(|error| {
        format!(
            "time {text:?} is not RFC 3339, milliseconds since the epoch, or -DURATION: {error}"
        )
    })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .map(TimeSpec::At)
        .map_err(|_| format!("time {text} is out of range"))
}

/// Parses `--from` (see the module documentation).
pub fn parse_start(text: &str) -> Result<StartSpec, String> {
    let unknown = || format!("{text:?} is not one of {START_FORMS}");
    let spec = match text {
        "earliest" => StartSpec::Earliest,
        "latest" => StartSpec::Latest,
        _ if text.starts_with("offset:") => {
            StartSpec::Offset(parse_count(&text["offset:".len()..], "offset")?)
        }
        _ if text.starts_with("time:") => StartSpec::Time(parse_time(&text["time:".len()..])?),
        _ if text.starts_with('-') => StartSpec::Last(digits(&text[1..]).ok_or_else(unknown)?),
        _ if text.starts_with('+') => {
            StartSpec::AfterStart(digits(&text[1..]).ok_or_else(unknown)?)
        }
        _ if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) => {
            StartSpec::Offset(parse_count(text, "offset")?)
        }
        _ => return Err(unknown()),
    };
    Ok(spec)
}

/// The forms of one position ([`parse_position`]).
const POSITION_FORMS: &str =
    "earliest, latest, offset:N, N, time:RFC3339, time:MS or time:-DURATION";

/// Parses one position, the same in every partition, for `bench consume --from` and `group
/// reset-offsets --to`: `--from`'s forms without `-N` and `+N` (which name a different offset
/// in each partition). `time:-DURATION` counts back from now.
pub fn parse_position(text: &str) -> Result<StartFrom, String> {
    position_at(text, now_ms())
}

/// [`parse_position`] with `now_ms` as the time `time:-DURATION` counts back from.
fn position_at(text: &str, now_ms: i64) -> Result<StartFrom, String> {
    match parse_start(text) {
        Ok(StartSpec::Earliest) => Ok(StartFrom::Earliest),
        Ok(StartSpec::Latest) => Ok(StartFrom::Latest),
        Ok(StartSpec::Offset(offset)) => Ok(StartFrom::Offset(offset)),
        Ok(StartSpec::Time(time)) => Ok(StartFrom::Timestamp(time.resolve(now_ms))),
        Ok(StartSpec::Last(_) | StartSpec::AfterStart(_)) | Err(_) => {
            Err(format!("{text:?} is not one of {POSITION_FORMS}"))
        }
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Parses `--to` (see the module documentation).
pub fn parse_end(text: &str) -> Result<EndSpec, String> {
    if text == "latest" {
        return Ok(EndSpec::Latest);
    }
    if let Some(offset) = text.strip_prefix("offset:") {
        return parse_count(offset, "offset").map(EndSpec::Offset);
    }
    if let Some(time) = text.strip_prefix("time:") {
        return parse_time(time).map(EndSpec::Time);
    }
    Err(format!("{text:?} is not one of {END_FORMS}"))
}

/// A partition's bounds when the command starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub log_start: u64,
    pub high_watermark: u64,
}

/// The offset `start` asks for in a partition with `bounds`; `time_offset` is where the
/// broker resolved a `time:` start (the first record at or after it).
pub fn requested_start(start: StartSpec, bounds: Bounds, time_offset: Option<u64>) -> u64 {
    match start {
        StartSpec::Earliest => bounds.log_start,
        StartSpec::Latest => bounds.high_watermark,
        StartSpec::Offset(offset) => offset,
        StartSpec::Last(count) => bounds
            .high_watermark
            .saturating_sub(count)
            .max(bounds.log_start),
        StartSpec::AfterStart(count) => bounds.log_start.saturating_add(count),
        StartSpec::Time(_) => time_offset.unwrap_or(bounds.high_watermark),
    }
}

/// What to read of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Subscribe from here (always within the bounds).
    pub from: u64,
    /// Print only records at or after this offset (beyond `from` when following a partition
    /// that has not reached the requested start yet).
    pub print_from: u64,
    /// Stop before this offset; `None` follows forever.
    pub end: Option<u64>,
    /// Stop at the first record at or after this time (ms since the epoch).
    pub end_time_ms: Option<i64>,
}

/// Why a partition's range differs from what was asked (printed on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The requested start was removed by retention: reading from the log start.
    BeforeLogStart { requested: u64, log_start: u64 },
    /// The partition ends before the requested start: nothing to read.
    BeyondEnd { requested: u64, high_watermark: u64 },
    /// The partition ends before the requested start: waiting for it (`--follow`).
    WaitingFor { requested: u64, high_watermark: u64 },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::BeforeLogStart {
                requested,
                log_start,
            } => write!(
                f,
                "offset {requested} is before the log start {log_start} (removed by retention): reading from {log_start}"
            ),
            Note::BeyondEnd {
                requested,
                high_watermark,
            } => write!(
                f,
                "ends at offset {high_watermark}, before offset {requested}: nothing to read"
            ),
            Note::WaitingFor {
                requested,
                high_watermark,
            } => write!(
                f,
                "ends at offset {high_watermark}: waiting for offset {requested}"
            ),
        }
    }
}

/// The range of one partition: from the requested start (clamped into the bounds, with a
/// note) to the end spec; without `follow`, never beyond the high watermark at the start.
/// `None` when there is nothing to read.
pub fn plan_range(
    requested: u64,
    bounds: Bounds,
    end: Option<EndSpec>,
    follow: bool,
    now_ms: i64,
) -> (Option<Range>, Option<Note>) {
    let mut note = None;
    let mut from = requested;
    if requested < bounds.log_start {
        note = Some(Note::BeforeLogStart {
            requested,
            log_start: bounds.log_start,
        });
        from = bounds.log_start;
    } else if requested > bounds.high_watermark {
        if !follow {
            let note = Note::BeyondEnd {
                requested,
                high_watermark: bounds.high_watermark,
            };
            return (None, Some(note));
        }
        note = Some(Note::WaitingFor {
            requested,
            high_watermark: bounds.high_watermark,
        });
        from = bounds.high_watermark;
    }
    let (mut end_offset, end_time_ms) = match end {
        None => (None, None),
        Some(EndSpec::Offset(offset)) => (Some(offset), None),
        Some(EndSpec::Latest) => (Some(bounds.high_watermark), None),
        Some(EndSpec::Time(time)) => (None, Some(time.resolve(now_ms))),
    };
    if !follow {
        end_offset =
            Some(end_offset.map_or(bounds.high_watermark, |end| end.min(bounds.high_watermark)));
    }
    let print_from = requested.max(from);
    if end_offset.is_some_and(|end| print_from >= end) {
        return (None, note);
    }
    let range = Range {
        from,
        print_from,
        end: end_offset,
        end_time_ms,
    };
    (Some(range), note)
}

/// Checks that every partition of `--partitions` exists in `topic`, which has `count`.
pub fn check_partitions(partitions: &[u32], count: u32, topic: &str) -> Result<(), String> {
    match partitions.iter().find(|partition| **partition >= count) {
        Some(partition) => Err(format!(
            "topic {topic} has {count} partitions (0 to {}): partition {partition} does not exist",
            count.saturating_sub(1)
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One position: every form of `--from` but `-N` and `+N`, times resolved against now.
    #[test]
    fn position_forms() {
        let now_ms = 1_700_000_000_000;
        let table = [
            ("earliest", StartFrom::Earliest),
            ("latest", StartFrom::Latest),
            ("offset:0", StartFrom::Offset(0)),
            ("42", StartFrom::Offset(42)),
            ("offset:18446744073709551615", StartFrom::Offset(u64::MAX)),
            (
                "time:2023-11-14T22:13:20.123Z",
                StartFrom::Timestamp(1_700_000_000_123),
            ),
            (
                "time:2023-11-15T00:13:20+02:00",
                StartFrom::Timestamp(1_700_000_000_000),
            ),
            (
                "time:1700000000456",
                StartFrom::Timestamp(1_700_000_000_456),
            ),
            ("time:-1h", StartFrom::Timestamp(now_ms - 3_600_000)),
            ("time:-90s", StartFrom::Timestamp(now_ms - 90_000)),
        ];
        for (text, expected) in table {
            assert_eq!(position_at(text, now_ms), Ok(expected), "{text}");
        }
        for invalid in [
            "",
            "first",
            "offset:",
            "offset:-1",
            "offset:x",
            "time:yesterday",
            "time:2023-11-14",
            "Earliest",
            "-10",
            "+10",
            "time:-",
            "shift:1",
        ] {
            let refused = position_at(invalid, now_ms).expect_err(invalid);
            assert!(refused.contains(POSITION_FORMS), "{invalid:?}: {refused}");
        }
    }

    /// Every documented form of `--from` parses to its spec; anything else is refused with
    /// the list of forms.
    #[test]
    fn start_forms() {
        let table = [
            ("earliest", StartSpec::Earliest),
            ("latest", StartSpec::Latest),
            ("offset:0", StartSpec::Offset(0)),
            ("offset:18446744073709551615", StartSpec::Offset(u64::MAX)),
            ("17", StartSpec::Offset(17)),
            ("-10", StartSpec::Last(10)),
            ("+3", StartSpec::AfterStart(3)),
            ("-0", StartSpec::Last(0)),
            (
                "time:1700000000123",
                StartSpec::Time(TimeSpec::At(1_700_000_000_123)),
            ),
            (
                "time:2023-11-14T22:13:20.123Z",
                StartSpec::Time(TimeSpec::At(1_700_000_000_123)),
            ),
            (
                "time:2023-11-15T00:13:20+02:00",
                StartSpec::Time(TimeSpec::At(1_700_000_000_000)),
            ),
            (
                "time:-1h",
                StartSpec::Time(TimeSpec::Ago(Duration::from_secs(3600))),
            ),
            (
                "time:-1h30m",
                StartSpec::Time(TimeSpec::Ago(Duration::from_secs(5400))),
            ),
            (
                "time:-250ms",
                StartSpec::Time(TimeSpec::Ago(Duration::from_millis(250))),
            ),
        ];
        for (text, spec) in table {
            assert_eq!(parse_start(text), Ok(spec), "{text}");
        }
        for invalid in [
            "",
            "first",
            "offset:",
            "offset:-1",
            "offset:x",
            "-",
            "+",
            "-x",
            "+-1",
            "++1",
            "offset:+5",
            "time:",
            "time:yesterday",
            "time:2023-11-14",
            "time:-",
            "time:-1 fortnight",
            "Earliest",
            "1.5",
        ] {
            let error = parse_start(invalid).expect_err(invalid);
            assert!(!error.is_empty(), "{invalid}");
        }
        assert!(parse_start("first").unwrap_err().contains("-N (last N)"));
    }

    /// Every documented form of `--to` parses; a bare number or `-N` is refused.
    #[test]
    fn end_forms() {
        let table = [
            ("latest", EndSpec::Latest),
            ("offset:5", EndSpec::Offset(5)),
            ("time:0", EndSpec::Time(TimeSpec::At(0))),
            (
                "time:-10m",
                EndSpec::Time(TimeSpec::Ago(Duration::from_secs(600))),
            ),
            (
                "time:1970-01-01T00:00:01Z",
                EndSpec::Time(TimeSpec::At(1000)),
            ),
        ];
        for (text, spec) in table {
            assert_eq!(parse_end(text), Ok(spec), "{text}");
        }
        for invalid in ["", "5", "-5", "earliest", "offset:x", "time:later"] {
            assert!(parse_end(invalid).is_err(), "{invalid}");
        }
    }

    /// Relative times count back from the command's start.
    #[test]
    fn times_resolve() {
        assert_eq!(TimeSpec::At(5).resolve(1_000), 5);
        assert_eq!(TimeSpec::Ago(Duration::from_secs(1)).resolve(10_000), 9_000);
        assert_eq!(
            TimeSpec::Ago(Duration::from_secs(u64::MAX)).resolve(0),
            -i64::MAX,
            "saturates"
        );
    }

    /// Each start spec against a partition holding offsets 10..20.
    #[test]
    fn starts_resolve() {
        let bounds = Bounds {
            log_start: 10,
            high_watermark: 20,
        };
        let table = [
            (StartSpec::Earliest, None, 10),
            (StartSpec::Latest, None, 20),
            (StartSpec::Offset(15), None, 15),
            (StartSpec::Offset(3), None, 3),
            (StartSpec::Last(4), None, 16),
            (StartSpec::Last(50), None, 10),
            (StartSpec::Last(0), None, 20),
            (StartSpec::AfterStart(2), None, 12),
            (StartSpec::AfterStart(u64::MAX), None, u64::MAX),
            (StartSpec::Time(TimeSpec::At(0)), Some(13), 13),
            (StartSpec::Time(TimeSpec::At(0)), None, 20),
        ];
        for (spec, time_offset, expected) in table {
            assert_eq!(
                requested_start(spec, bounds, time_offset),
                expected,
                "{spec:?} {time_offset:?}"
            );
        }
    }

    /// Ranges: clamped into the bounds with a note, capped at the high watermark unless
    /// following, and empty when the end is at or before the start.
    #[test]
    fn ranges() {
        let bounds = Bounds {
            log_start: 10,
            high_watermark: 20,
        };
        let range = |from, print_from, end, end_time_ms| {
            Some(Range {
                from,
                print_from,
                end,
                end_time_ms,
            })
        };
        let now_ms = 1_000_000;
        // (requested, end, follow, range, note)
        let table = [
            (12, None, false, range(12, 12, Some(20), None), None),
            (12, None, true, range(12, 12, None, None), None),
            (
                5,
                None,
                false,
                range(10, 10, Some(20), None),
                Some(Note::BeforeLogStart {
                    requested: 5,
                    log_start: 10,
                }),
            ),
            (
                25,
                None,
                false,
                None,
                Some(Note::BeyondEnd {
                    requested: 25,
                    high_watermark: 20,
                }),
            ),
            (
                25,
                None,
                true,
                range(20, 25, None, None),
                Some(Note::WaitingFor {
                    requested: 25,
                    high_watermark: 20,
                }),
            ),
            (20, None, false, None, None),
            (20, None, true, range(20, 20, None, None), None),
            (
                12,
                Some(EndSpec::Offset(15)),
                false,
                range(12, 12, Some(15), None),
                None,
            ),
            (
                12,
                Some(EndSpec::Offset(99)),
                false,
                range(12, 12, Some(20), None),
                None,
            ),
            (
                12,
                Some(EndSpec::Offset(99)),
                true,
                range(12, 12, Some(99), None),
                None,
            ),
            (12, Some(EndSpec::Offset(12)), false, None, None),
            (12, Some(EndSpec::Offset(3)), true, None, None),
            (
                12,
                Some(EndSpec::Latest),
                true,
                range(12, 12, Some(20), None),
                None,
            ),
            (
                12,
                Some(EndSpec::Time(TimeSpec::Ago(Duration::from_secs(1)))),
                true,
                range(12, 12, None, Some(999_000)),
                None,
            ),
            (
                12,
                Some(EndSpec::Time(TimeSpec::At(7))),
                false,
                range(12, 12, Some(20), Some(7)),
                None,
            ),
        ];
        for (requested, end, follow, expected_range, expected_note) in table {
            assert_eq!(
                plan_range(requested, bounds, end, follow, now_ms),
                (expected_range, expected_note),
                "requested {requested} end {end:?} follow {follow}"
            );
        }
    }

    /// The notes say what happened and what is read instead.
    #[test]
    fn notes() {
        let note = Note::BeyondEnd {
            requested: 100,
            high_watermark: 50,
        };
        assert_eq!(
            note.to_string(),
            "ends at offset 50, before offset 100: nothing to read"
        );
        let note = Note::BeforeLogStart {
            requested: 1,
            log_start: 8,
        };
        assert!(note.to_string().contains("reading from 8"), "{note}");
    }

    /// Partitions beyond the topic's count are refused with the valid range.
    #[test]
    fn partition_lists() {
        assert_eq!(check_partitions(&[0, 2], 3, "t"), Ok(()));
        assert_eq!(check_partitions(&[], 3, "t"), Ok(()));
        let error = check_partitions(&[0, 3], 3, "t").expect_err("3 is beyond");
        assert!(
            error.contains("0 to 2") && error.contains("partition 3"),
            "{error}"
        );
    }
}
