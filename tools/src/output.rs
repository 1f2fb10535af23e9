//! What every command shares about output: the format flag, how bytes and times render, and
//! which exit code an error gets.

use std::io;

use base64::Engine as _;
use serde_json::{Value, json};
use strata_client::Record;
use strata_client::proto::v1::{TopicConfig, TopicDescription};
use time::OffsetDateTime;

/// The exit code for an error: 1 when the broker refused the request, 2 for everything else
/// (usage, connection, transport, local I/O).
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let refused = error.chain().any(|cause| {
        cause
            .downcast_ref::<strata_client::Error>()
            .is_some_and(|error| error.server().is_some())
    });
    if refused { 1 } else { 2 }
}

/// Whether an I/O error is the reader of our output going away (`strata consume | head`):
/// a normal end, not a failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|error| error.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Bytes as JSON: a string when they are valid UTF-8, `{"base64": "..."}` when not, `null`
/// when absent. The object form says unambiguously which encoding a field uses.
pub fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
        },
    }
}

/// A record of `topic` as one JSON object.
pub fn record_json(topic: &str, partition: u32, record: &Record) -> Value {
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|header| json!({ "key": header.key, "value": bytes_json(header.value.as_deref()) }))
        .collect();
    json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": bytes_json(record.key.as_deref()),
        "value": bytes_json(record.value.as_deref()),
        "headers": headers,
    })
}

/// A record as one tab-separated line: partition, offset, time, key, value, and the headers
/// (`k1=v1,k2=v2`) when it has any. A null key or value prints empty; bytes that are not UTF-8
/// print with replacement characters (use `--format json` for exact bytes).
pub fn record_text(partition: u32, record: &Record) -> String {
    let text = |bytes: Option<&[u8]>| {
        bytes.map_or_else(String::new, |bytes| {
            String::from_utf8_lossy(bytes).into_owned()
        })
    };
    let mut line = format!(
        "{partition}\t{}\t{}\t{}\t{}",
        record.offset,
        timestamp_text(record.timestamp),
        text(record.key.as_deref()),
        text(record.value.as_deref()),
    );
    if !record.headers.is_empty() {
        line.push('\t');
        line.push_str(&crate::format::headers_text(&record.headers));
    }
    line
}

/// Milliseconds since the epoch as RFC 3339 in UTC with exactly three fractional digits
/// (`2023-11-14T22:13:20.120Z`); the raw number when out of range.
pub fn timestamp_text(timestamp_ms: i64) -> String {
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_ms) * 1_000_000) {
        Ok(time) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            time.year(),
            u8::from(time.month()),
            time.day(),
            time.hour(),
            time.minute(),
            time.second(),
            time.millisecond()
        ),
        Err(_) => timestamp_ms.to_string(),
    }
}

pub fn config_json(config: Option<&TopicConfig>) -> Value {
    let config = config.cloned().unwrap_or_default();
    json!({
        "retention_ms": config.retention_ms,
        "retention_bytes": config.retention_bytes,
        "segment_bytes": config.segment_bytes,
        "capture_dir": config.capture_dir,
        "capture_interval_ms": config.capture_interval_ms,
        "capture_max_bytes": config.capture_max_bytes,
        "capture_format": config.capture_format,
        "capture_block_retention": config.capture_block_retention,
    })
}

pub fn config_text(config: Option<&TopicConfig>) -> String {
    let config = config.cloned().unwrap_or_default();
    let show = |value: Option<u64>| value.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    let mut text = format!(
        "retention_ms={} retention_bytes={} segment_bytes={}",
        show(config.retention_ms),
        show(config.retention_bytes),
        config
            .segment_bytes
            .map_or_else(|| "default".to_owned(), |v| v.to_string()),
    );
    if let Some(dir) = &config.capture_dir {
        text.push_str(&format!(
            " capture.dir={dir} capture.interval-ms={} capture.max-bytes={} \
             capture.format={} capture.block-retention={}",
            show(config.capture_interval_ms),
            show(config.capture_max_bytes),
            config.capture_format.as_deref().unwrap_or("parquet"),
            config.capture_block_retention.unwrap_or(true),
        ));
    }
    text
}

pub fn topic_json(topic: &TopicDescription) -> Value {
    let partitions: Vec<Value> = topic
        .partition_info
        .iter()
        .map(|info| {
            json!({
                "partition": info.partition,
                "leader_node_id": info.leader_node_id,
                "replica_node_ids": info.replica_node_ids,
                "in_sync_node_ids": info.in_sync_node_ids,
                "log_start_offset": info.log_start_offset,
                "high_watermark": info.high_watermark,
                "capture_next_offset": info.capture_next_offset,
                // Records committed and not yet in a capture file; null when not capturing.
                "capture_lag": info
                    .capture_next_offset
                    .map(|next_offset| info.high_watermark.saturating_sub(next_offset)),
            })
        })
        .collect();
    json!({
        "name": topic.name,
        "partitions": topic.partitions,
        "replication_factor": topic.replication_factor,
        "config": config_json(topic.config.as_ref()),
        "partition_info": partitions,
        "view_age_ms": topic.view_age_ms,
        "unanswered_node_ids": topic.unanswered_node_ids,
    })
}

/// Node ids for a text column, joined by commas, each marked `*` when `unanswered` holds it
/// (see [`UNANSWERED_LEGEND`]); `-` when there are none.
pub fn node_list_text(ids: &[u64], unanswered: &[u64]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter()
        .map(|id| node_text(*id, unanswered))
        .collect::<Vec<String>>()
        .join(",")
}

/// A node id for a text column, marked `*` when `unanswered` holds it; `-` for 0 (none).
pub fn node_text(id: u64, unanswered: &[u64]) -> String {
    match id {
        0 => "-".to_owned(),
        id if unanswered.contains(&id) => format!("{id}*"),
        id => id.to_string(),
    }
}

/// What `*` after a node id means.
pub const UNANSWERED_LEGEND: &str =
    "* not answering (down or unreachable): what the others last heard of it may be out of date";

/// The line saying how old a gathered view is and which nodes did not answer; `None` for a
/// node's own view (age 0, nobody asked).
pub fn view_text(view_age_ms: u64, unanswered: &[u64]) -> Option<String> {
    if view_age_ms == 0 && unanswered.is_empty() {
        return None;
    }
    let mut text = format!("as the cluster's nodes reported it {view_age_ms} ms ago");
    if !unanswered.is_empty() {
        let nodes: Vec<String> = unanswered.iter().map(u64::to_string).collect();
        text.push_str(&format!("; not answering: node {}", nodes.join(", ")));
    }
    Some(text)
}

/// The width of a text column: its widest value, and at least its header.
pub fn column_width<'a>(values: impl IntoIterator<Item = &'a str>, header: &str) -> usize {
    values
        .into_iter()
        .map(str::len)
        .max()
        .unwrap_or(0)
        .max(header.len())
}

/// A count with its noun, singular for one: `count_text(1, "record")` is "1 record", any
/// other count takes English's regular plural ("0 records", "2 batches", "3 directories").
pub fn count_text(count: impl Into<u64>, noun: &str) -> String {
    let count = count.into();
    if count == 1 {
        return format!("1 {noun}");
    }
    let plural = if let Some(stem) = noun.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else if noun.ends_with(['s', 'x']) || noun.ends_with("ch") || noun.ends_with("sh") {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    };
    format!("{count} {plural}")
}

/// `text`, or `-` when it is empty, for a text column.
pub fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use strata_client::Header;

    /// `topic describe --format json` shows a captured partition's capture position and lag
    /// (records committed and not yet in a capture file), and null for a topic not captured.
    #[test]
    fn describe_json_shows_capture_lag() {
        use strata_client::proto::v1::PartitionInfo;
        let partition = |capture_next_offset| PartitionInfo {
            partition: 0,
            high_watermark: 10,
            capture_next_offset,
            ..PartitionInfo::default()
        };
        let topic = |info| TopicDescription {
            name: "t".to_owned(),
            partition_info: vec![info],
            ..TopicDescription::default()
        };
        let captured = topic_json(&topic(partition(Some(3))));
        assert_eq!(captured["partition_info"][0]["capture_next_offset"], 3);
        assert_eq!(captured["partition_info"][0]["capture_lag"], 7);
        let plain = topic_json(&topic(partition(None)));
        assert_eq!(plain["partition_info"][0]["capture_lag"], Value::Null);
    }

    /// UTF-8 stays a string; other bytes become a base64 object; absent is null.
    #[test]
    fn bytes_render() {
        assert_eq!(bytes_json(Some(b"hello")), json!("hello"));
        assert_eq!(bytes_json(Some(&[0xff, 0x00])), json!({ "base64": "/wA=" }));
        assert_eq!(bytes_json(None), Value::Null);
        assert_eq!(bytes_json(Some(b"")), json!(""));
    }

    /// A record renders as one JSON object and one tab-separated line.
    #[test]
    fn record_renders() {
        let record = Record {
            offset: 7,
            timestamp: 1_700_000_000_123,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(&[0xc3, 0x28])),
            headers: vec![Header {
                key: "h".into(),
                value: None,
            }],
        };
        assert_eq!(
            record_json("t", 2, &record),
            json!({
                "topic": "t", "partition": 2, "offset": 7, "timestamp": 1_700_000_000_123i64, "key": "k",
                "value": { "base64": "wyg=" }, "headers": [{ "key": "h", "value": null }],
            })
        );
        assert_eq!(
            record_text(2, &record),
            "2\t7\t2023-11-14T22:13:20.123Z\tk\t\u{fffd}(\th"
        );
        let no_headers = Record {
            headers: Vec::new(),
            ..record
        };
        assert_eq!(
            record_text(2, &no_headers),
            "2\t7\t2023-11-14T22:13:20.123Z\tk\t\u{fffd}(",
            "no headers column without headers"
        );
    }

    /// Timestamps keep three fractional digits; out-of-range ones print as numbers.
    #[test]
    fn timestamps() {
        assert_eq!(timestamp_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp_text(1_700_000_000_120),
            "2023-11-14T22:13:20.120Z"
        );
        assert_eq!(timestamp_text(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(timestamp_text(i64::MAX), i64::MAX.to_string());
    }

    /// One takes the singular, every other count the plural.
    #[test]
    fn counts() {
        assert_eq!(count_text(1u64, "record"), "1 record");
        assert_eq!(count_text(0u64, "record"), "0 records");
        assert_eq!(count_text(2u32, "partition"), "2 partitions");
        assert_eq!(count_text(0u64, "batch"), "0 batches");
        assert_eq!(
            count_text(2u64, "partition directory"),
            "2 partition directories"
        );
        assert_eq!(count_text(1u64, "batch"), "1 batch");
        assert_eq!(count_text(5u64, "key"), "5 keys");
    }

    /// A column is as wide as its widest value or its header; empty text shows as a dash.
    #[test]
    fn columns() {
        assert_eq!(column_width(["ab", "abcdefg"], "topic"), 7);
        assert_eq!(column_width(["ab"], "topic"), 5);
        assert_eq!(column_width([], "group"), 5);
        assert_eq!(or_dash(""), "-");
        assert_eq!(or_dash("m-1"), "m-1");
    }

    /// Errors from the broker exit 1, others 2.
    #[test]
    fn exit_codes() {
        let refused = strata_client::Error::from_detail(strata_client::proto::v1::ErrorDetail {
            code: strata_client::proto::v1::ErrorCode::TopicAlreadyExists as i32,
            ..Default::default()
        });
        assert_eq!(exit_code(&anyhow::Error::new(refused).context("create")), 1);
        let unreachable = strata_client::Error::Connect {
            address: "x:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::new(unreachable)), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("bad input")), 2);
    }
}
