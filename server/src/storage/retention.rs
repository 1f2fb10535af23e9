//! Retention: which sealed segments to remove, planned from metadata alone.
//!
//! The plan is pure (no I/O, time passed in), so it is tested with tables; the
//! [`PartitionLog`](super::PartitionLog) carries it out. Retention only ever removes whole
//! segments from the oldest on, and never the last (active) one.

/// How long and how much a partition keeps. `None` keeps without limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Remove a segment once its newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Remove the oldest segments while the partition would still hold at least this many
    /// bytes without them.
    pub retention_bytes: Option<u64>,
    /// Keep every segment holding an offset at or above this one, whatever the limits above
    /// say: a captured topic's records not yet in a capture file (see `crate::capture`).
    pub offset_floor: Option<u64>,
}

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    pub size_bytes: u64,
    /// Largest record timestamp; `None` for a segment with no data batch.
    pub max_timestamp: Option<i64>,
}

/// How many of the oldest segments to remove, given the segments oldest first (the last one is
/// the active segment) and the time now.
///
/// A segment expires by time when `now_ms - max_timestamp > retention_ms`, as in Kafka; a segment
/// holding no data batch has nothing to keep and counts as expired. By size, the oldest segment
/// goes while the rest would still hold at least `retention_bytes`. The larger of the two counts
/// wins, and it never reaches the active segment.
pub fn plan(segments: &[SegmentMeta], policy: &RetentionPolicy, now_ms: i64) -> usize {
    let sealed = &segments[..segments.len().saturating_sub(1)];
    let by_time = policy.retention_ms.map_or(0, |retention_ms| {
        sealed
            .iter()
            .take_while(|segment| match segment.max_timestamp {
                None => true,
                Some(max_timestamp) => {
                    i128::from(now_ms) - i128::from(max_timestamp) > i128::from(retention_ms)
                }
            })
            .count()
    });
    let by_size = policy.retention_bytes.map_or(0, |retention_bytes| {
        let mut excess_bytes = segments
            .iter()
            .map(|segment| segment.size_bytes)
            .sum::<u64>()
            .saturating_sub(retention_bytes);
        sealed
            .iter()
            .take_while(|segment| {
                let removable = segment.size_bytes <= excess_bytes;
                if removable {
                    excess_bytes -= segment.size_bytes;
                }
                removable
            })
            .count()
    });
    by_time.max(by_size)
}

/// Caps a plan's `count` so that no removed segment holds an offset at or above `floor`:
/// `next_base_offsets[i]` is the first offset after segment `i` (the base offset of segment
/// `i + 1`), so removing the first `count` segments removes the offsets below
/// `next_base_offsets[count - 1]`.
pub fn cap_at_floor(count: usize, next_base_offsets: &[u64], floor: Option<u64>) -> usize {
    let Some(floor) = floor else {
        return count;
    };
    next_base_offsets[..count.min(next_base_offsets.len())]
        .iter()
        .take_while(|&&next_base_offset| next_base_offset <= floor)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capture floor keeps the first segment holding an uncaptured offset and every one
    /// after it; without a floor the plan stands.
    #[test]
    fn floor_caps_the_plan() {
        // Segments [0, 10), [10, 20), [20, 30), then the active one from 30.
        let next_base_offsets = [10, 20, 30, 40];
        let table = [
            (3, None, 3, "no floor"),
            (3, Some(0), 0, "nothing captured keeps all"),
            (3, Some(9), 0, "offset 9 is in the first segment"),
            (3, Some(10), 1, "the first segment is captured"),
            (3, Some(25), 2, "offset 25 is in the third"),
            (3, Some(1_000), 3, "all captured: the plan stands"),
            (1, Some(1_000), 1, "never more than the plan"),
            (0, Some(1_000), 0, "nothing planned"),
        ];
        for (count, floor, expected, why) in table {
            assert_eq!(
                cap_at_floor(count, &next_base_offsets, floor),
                expected,
                "{why}"
            );
        }
    }

    fn segment(size_bytes: u64, max_timestamp: i64) -> SegmentMeta {
        SegmentMeta {
            size_bytes,
            max_timestamp: Some(max_timestamp),
        }
    }

    #[test]
    fn plans() {
        let three = [
            segment(100, 1_000),
            segment(100, 2_000),
            segment(100, 3_000),
        ];
        let table: &[(&str, &[SegmentMeta], RetentionPolicy, i64, usize)] = &[
            (
                "no policy keeps all",
                &three,
                RetentionPolicy::default(),
                10_000,
                0,
            ),
            (
                "time removes expired prefix",
                &three,
                RetentionPolicy {
                    retention_ms: Some(500),
                    retention_bytes: None,
                    offset_floor: None,
                },
                2_600,
                2,
            ),
            (
                "exactly at the limit is kept",
                &three,
                RetentionPolicy {
                    retention_ms: Some(1_000),
                    retention_bytes: None,
                    offset_floor: None,
                },
                2_000,
                0,
            ),
            (
                "the active segment is never removed",
                &three,
                RetentionPolicy {
                    retention_ms: Some(1),
                    retention_bytes: None,
                    offset_floor: None,
                },
                1_000_000,
                2,
            ),
            (
                "size removes down to the limit, not below",
                &three,
                RetentionPolicy {
                    retention_ms: None,
                    retention_bytes: Some(150),
                    offset_floor: None,
                },
                0,
                1,
            ),
            (
                "size zero removes every sealed segment",
                &three,
                RetentionPolicy {
                    retention_ms: None,
                    retention_bytes: Some(0),
                    offset_floor: None,
                },
                0,
                2,
            ),
            (
                "the larger of time and size wins",
                &three,
                RetentionPolicy {
                    retention_ms: Some(1_500),
                    retention_bytes: Some(250),
                    offset_floor: None,
                },
                2_600,
                1,
            ),
            (
                "an expired segment after a fresh one stays (prefix only)",
                &[
                    segment(100, 5_000),
                    segment(100, 1_000),
                    segment(100, 6_000),
                ],
                RetentionPolicy {
                    retention_ms: Some(1_000),
                    retention_bytes: None,
                    offset_floor: None,
                },
                5_500,
                0,
            ),
            (
                "a segment of control batches only is expired",
                &[
                    SegmentMeta {
                        size_bytes: 80,
                        max_timestamp: None,
                    },
                    segment(100, 6_000),
                ],
                RetentionPolicy {
                    retention_ms: Some(1_000),
                    retention_bytes: None,
                    offset_floor: None,
                },
                6_000,
                1,
            ),
            (
                "no segments",
                &[],
                RetentionPolicy {
                    retention_ms: Some(1),
                    retention_bytes: Some(0),
                    offset_floor: None,
                },
                0,
                0,
            ),
            (
                "future timestamps never expire",
                &[segment(100, i64::MAX), segment(1, 0)],
                RetentionPolicy {
                    retention_ms: Some(1),
                    retention_bytes: None,
                    offset_floor: None,
                },
                i64::MIN,
                0,
            ),
        ];
        for (name, segments, policy, now_ms, expected) in table {
            assert_eq!(plan(segments, policy, *now_ms), *expected, "{name}");
        }
    }
}
