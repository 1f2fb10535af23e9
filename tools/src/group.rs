//! `strata group list|describe|reset-offsets|delete`: consumer groups, their members, committed
//! offsets and lag.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};
use strata_client::proto::v1::{
    DescribeGroupResponse, GroupListing, ResetOffsetsResponse, TopicPartition,
};
use strata_client::{Client, ResetTo, StartFrom};

use crate::format::Format;
use crate::offsets::parse_position;
use crate::output::{column_width, or_dash};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List every consumer group.
    List,
    /// Describe a group: each partition's committed offset, lag and owner, then its members.
    Describe {
        /// The group to describe.
        group: String,
    },
    /// Move a group's committed offsets (also while members run: they follow at their next
    /// heartbeat).
    ResetOffsets {
        /// The group whose offsets move.
        group: String,
        /// The topic whose offsets move.
        #[arg(long)]
        topic: String,
        /// Where to: earliest, latest, offset:N, time:RFC3339, time:MS or time:-DURATION (the
        /// first record at or after it; e.g. time:-1h) or shift:N (the committed offset moved
        /// by N records, N may be negative).
        #[arg(long, value_parser = parse_reset_to)]
        to: ResetTo,
        /// Only these partitions, comma-separated (default: all of the topic's).
        #[arg(long, value_delimiter = ',')]
        partitions: Vec<u32>,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group and its committed offsets (refused while it has members).
    Delete {
        /// The group to delete.
        group: String,
    },
}

/// Parses `--to`: `shift:N`, or one position ([`parse_position`]: `earliest`, `latest`,
/// `offset:N`, `time:RFC3339`, `time:MS`, `time:-DURATION`).
pub fn parse_reset_to(text: &str) -> Result<ResetTo, String> {
    if let Some(shift) = text.strip_prefix("shift:") {
        return shift
            .parse()
            .map(ResetTo::Shift)
            .map_err(|_| format!("shift {shift:?} is not an integer"));
    }
    match parse_position(text) {
        Ok(StartFrom::Earliest) => Ok(ResetTo::Earliest),
        Ok(StartFrom::Latest) => Ok(ResetTo::Latest),
        Ok(StartFrom::Offset(offset)) => Ok(ResetTo::Offset(offset)),
        Ok(StartFrom::Timestamp(timestamp_ms)) => Ok(ResetTo::Timestamp(timestamp_ms)),
        Err(error) => Err(format!("{error}, or shift:N")),
    }
}

pub async fn run(client: &Client, command: GroupCommand, format: Format) -> Result<()> {
    let admin = client.admin();
    match command {
        GroupCommand::List => {
            let mut groups = admin.list_groups().await.context("list groups")?;
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            print_groups(&groups, format);
        }
        GroupCommand::Describe { group } => {
            let description = admin
                .describe_group(&group)
                .await
                .with_context(|| format!("describe group {group}"))?;
            match format {
                Format::Json => println!("{}", group_json(&description)),
                Format::Text => print!("{}", group_text(&description)),
            }
        }
        GroupCommand::ResetOffsets {
            group,
            topic,
            to,
            partitions,
            dry_run,
        } => {
            // One request, which may take a while over many partitions: a spinner on a
            // terminal says it is under way.
            let waiting =
                crate::progress::waiting(&format!("resetting offsets of group {group} on {topic}"));
            let reply = admin
                .reset_offsets(&group, &topic, &partitions, to, dry_run)
                .await
                .with_context(|| format!("reset offsets of group {group} on {topic}"));
            waiting.finish_and_clear();
            let reply = reply?;
            print_reset(&group, &reply, dry_run, format);
        }
        GroupCommand::Delete { group } => {
            admin
                .delete_group(&group)
                .await
                .with_context(|| format!("delete group {group}"))?;
            match format {
                Format::Json => println!("{}", json!({ "deleted": group })),
                Format::Text => println!("deleted group {group}"),
            }
        }
    }
    Ok(())
}

fn print_groups(groups: &[GroupListing], format: Format) {
    match format {
        Format::Json => {
            let list: Vec<Value> = groups
                .iter()
                .map(|group| {
                    json!({
                        "group_id": group.group_id,
                        "state": group.state,
                        "members": group.members,
                        "group_epoch": group.group_epoch,
                    })
                })
                .collect();
            println!("{}", Value::Array(list));
        }
        Format::Text => {
            // The group epoch is left to JSON: it is seeded from the clock, so it reads like a
            // timestamp and says nothing to a person.
            let width = column_width(groups.iter().map(|group| group.group_id.as_str()), "group");
            let state_width =
                column_width(groups.iter().map(|group| group.state.as_str()), "state");
            println!("{:width$}  {:state_width$}  members", "group", "state");
            for group in groups {
                println!(
                    "{:width$}  {:state_width$}  {:>7}",
                    group.group_id, group.state, group.members
                );
            }
        }
    }
}

fn print_reset(group: &str, reply: &ResetOffsetsResponse, dry_run: bool, format: Format) {
    match format {
        Format::Json => {
            let offsets: Vec<Value> = reply
                .offsets
                .iter()
                .map(|offset| {
                    json!({
                        "topic": offset.topic,
                        "partition": offset.partition,
                        "offset": offset.offset,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "group_id": group,
                    "dry_run": dry_run,
                    "offsets_generation": reply.offsets_generation,
                    "offsets": offsets,
                })
            );
        }
        Format::Text => {
            let verb = if dry_run { "would reset" } else { "reset" };
            println!("{verb} group {group}:");
            println!("topic  partition  offset");
            for offset in &reply.offsets {
                println!(
                    "{}  {:>9}  {:>6}",
                    offset.topic,
                    offset.partition,
                    show(offset.offset)
                );
            }
        }
    }
}

/// A lag in time for people: whole seconds from one second on, milliseconds below.
pub fn lag_time_text(lag_ms: i64) -> String {
    let lag_ms = u64::try_from(lag_ms).unwrap_or(0);
    let lag = if lag_ms >= 1000 {
        Duration::from_secs(lag_ms / 1000)
    } else {
        Duration::from_millis(lag_ms)
    };
    humantime::format_duration(lag).to_string()
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

fn partitions_text(partitions: &[TopicPartition]) -> String {
    if partitions.is_empty() {
        return "-".to_owned();
    }
    let names: Vec<String> = partitions
        .iter()
        .map(|partition| format!("{}/{}", partition.topic, partition.partition))
        .collect();
    names.join(",")
}

fn partitions_json(partitions: &[TopicPartition]) -> Value {
    partitions
        .iter()
        .map(|partition| json!({ "topic": partition.topic, "partition": partition.partition }))
        .collect()
}

/// A group description as one JSON object.
pub fn group_json(group: &DescribeGroupResponse) -> Value {
    let partitions: Vec<Value> = group
        .partitions
        .iter()
        .map(|lag| {
            json!({
                "topic": lag.topic,
                "partition": lag.partition,
                "committed_offset": lag.committed_offset,
                "metadata": lag.metadata,
                "log_start_offset": lag.log_start_offset,
                "high_watermark": lag.high_watermark,
                "lag_records": lag.lag_records,
                "lag_ms": lag.lag_ms,
                "owner_member_id": lag.owner_member_id,
            })
        })
        .collect();
    let members: Vec<Value> = group
        .members
        .iter()
        .map(|member| {
            json!({
                "member_id": member.member_id,
                "client_id": member.client_id,
                "member_epoch": member.member_epoch,
                "topics": member.topics,
                "assignment": partitions_json(&member.assignment),
                "pending": partitions_json(&member.pending),
                "session_timeout_ms": member.session_timeout_ms,
                "last_heartbeat_ms_ago": member.last_heartbeat_ms_ago,
            })
        })
        .collect();
    json!({
        "group_id": group.group_id,
        "state": group.state,
        "group_epoch": group.group_epoch,
        "offsets_generation": group.offsets_generation,
        "partitions": partitions,
        "members": members,
    })
}

/// A group description as aligned text: a line about the group, a table of partitions, a
/// table of members.
pub fn group_text(group: &DescribeGroupResponse) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Epochs are seeded from the clock (they read like timestamps): the text says whether
    // each member is at the group's epoch instead of printing them (JSON has them).
    let _ = writeln!(
        out,
        "group {}: {}, {}, offsets generation {}",
        group.group_id,
        group.state,
        match group.members.len() {
            1 => "1 member".to_owned(),
            count => format!("{count} members"),
        },
        group.offsets_generation
    );
    let mut partitions: Vec<_> = group.partitions.iter().collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let headers = [
        "topic",
        "partition",
        "committed",
        "log_start",
        "high_watermark",
        "lag",
        "lag_time",
        "owner",
    ];
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|lag| {
            vec![
                lag.topic.clone(),
                lag.partition.to_string(),
                show(lag.committed_offset),
                lag.log_start_offset.to_string(),
                lag.high_watermark.to_string(),
                show(lag.lag_records),
                lag.lag_ms.map_or_else(|| "-".to_owned(), lag_time_text),
                or_dash(&lag.owner_member_id).to_owned(),
            ]
        })
        .collect();
    // Names align left, numbers right.
    let right = [false, true, true, true, true, true, true, false];
    out.push_str(&table(&headers, &rows, &right));
    if group.members.is_empty() {
        let _ = writeln!(out, "no members");
        return out;
    }
    let headers = [
        "member",
        "client",
        "in_step",
        "last_heartbeat",
        "assignment",
        "pending",
    ];
    let rows: Vec<Vec<String>> = group
        .members
        .iter()
        .map(|member| {
            vec![
                member.member_id.clone(),
                or_dash(&member.client_id).to_owned(),
                // At the group's epoch: it holds (or is moving to) the current assignment.
                if member.member_epoch == group.group_epoch {
                    "yes".to_owned()
                } else {
                    "no".to_owned()
                },
                format!(
                    "{} ago",
                    lag_time_text(i64::try_from(member.last_heartbeat_ms_ago).unwrap_or(i64::MAX))
                ),
                partitions_text(&member.assignment),
                partitions_text(&member.pending),
            ]
        })
        .collect();
    out.push_str(&table(&headers, &rows, &[false; 6]));
    out
}

/// `headers` and `rows` as lines of columns two spaces apart, each as wide as its widest cell;
/// a column is right-aligned where `right` says so. Trailing spaces are trimmed.
fn table(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|column| column_width(rows.iter().map(|row| row[column].as_str()), headers[column]))
        .collect();
    let line = |cells: Vec<&str>| {
        let cells: Vec<String> = cells
            .iter()
            .zip(widths.iter().zip(right))
            .map(|(cell, (width, right))| {
                if *right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:width$}")
                }
            })
            .collect();
        format!("{}\n", cells.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_client::proto::v1::{MemberDescription, PartitionLag};

    /// Every documented form of `--to` parses; anything else is refused.
    #[test]
    fn reset_to_forms() {
        let table = [
            ("earliest", ResetTo::Earliest),
            ("latest", ResetTo::Latest),
            ("offset:42", ResetTo::Offset(42)),
            ("shift:-10", ResetTo::Shift(-10)),
            ("shift:3", ResetTo::Shift(3)),
            (
                "time:2023-11-14T22:13:20.123Z",
                ResetTo::Timestamp(1_700_000_000_123),
            ),
        ];
        for (text, expected) in table {
            assert_eq!(parse_reset_to(text), Ok(expected), "{text}");
        }
        let hour_ago = parse_reset_to("time:-1h").expect("time:-1h");
        assert!(
            matches!(hour_ago, ResetTo::Timestamp(ms) if ms > 1_700_000_000_000),
            "{hour_ago:?}"
        );
        for invalid in [
            "",
            "shift:",
            "shift:x",
            "offset:-1",
            "first",
            "time:now",
            "-5",
        ] {
            assert!(parse_reset_to(invalid).is_err(), "{invalid:?}");
        }
    }

    /// Lag times print whole seconds from one second on.
    #[test]
    fn lag_times() {
        assert_eq!(lag_time_text(0), "0s");
        assert_eq!(lag_time_text(250), "250ms");
        assert_eq!(lag_time_text(61_500), "1m 1s");
        assert_eq!(lag_time_text(-5), "0s");
    }

    fn description() -> DescribeGroupResponse {
        DescribeGroupResponse {
            group_id: "billing".into(),
            state: "stable".into(),
            group_epoch: 4,
            offsets_generation: 1,
            members: vec![MemberDescription {
                member_id: "m-1".into(),
                client_id: "host-a".into(),
                member_epoch: 4,
                topics: vec!["orders".into()],
                assignment: vec![TopicPartition {
                    topic: "orders".into(),
                    partition: 0,
                }],
                pending: Vec::new(),
                session_timeout_ms: 10_000,
                last_heartbeat_ms_ago: 1_200,
            }],
            partitions: vec![
                PartitionLag {
                    topic: "orders".into(),
                    partition: 1,
                    committed_offset: None,
                    metadata: String::new(),
                    log_start_offset: 0,
                    high_watermark: 5,
                    lag_records: None,
                    lag_ms: None,
                    owner_member_id: String::new(),
                },
                PartitionLag {
                    topic: "orders".into(),
                    partition: 0,
                    committed_offset: Some(90),
                    metadata: String::new(),
                    log_start_offset: 10,
                    high_watermark: 100,
                    lag_records: Some(10),
                    lag_ms: Some(3_000),
                    owner_member_id: "m-1".into(),
                },
            ],
        }
    }

    /// The text form sorts partitions, shows absent values as "-", and lists members with
    /// their assignments.
    #[test]
    fn describe_text() {
        let text = group_text(&description());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "group billing: stable, 1 member, offsets generation 1"
        );
        assert!(lines[2].starts_with("orders          0         90         10"));
        assert!(lines[2].ends_with("10        3s  m-1"), "{}", lines[2]);
        assert!(lines[3].ends_with("-         -  -"), "{}", lines[3]);
        assert_eq!(
            lines[4],
            "member  client  in_step  last_heartbeat  assignment  pending"
        );
        assert_eq!(
            lines[5],
            "m-1     host-a  yes      1s ago          orders/0    -"
        );
    }

    /// The JSON form keeps every field, absent ones as null.
    #[test]
    fn describe_json() {
        let value = group_json(&description());
        assert_eq!(value["group_id"], "billing");
        assert_eq!(value["partitions"][0]["committed_offset"], Value::Null);
        assert_eq!(value["partitions"][1]["lag_ms"], 3_000);
        assert_eq!(
            value["members"][0]["assignment"],
            json!([{ "topic": "orders", "partition": 0 }])
        );
    }
}
