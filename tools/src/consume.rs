//! `strata consume TOPIC`: prints records of one partition or of all partitions merged (each
//! partition in offset order; partitions interleave as records arrive).
//!
//! Without `--follow` each partition is read up to the high watermark it had at the start, so
//! the command ends; with it, the command waits for new records until interrupted or `--count`
//! is reached.
//!
//! With `--group G` the command joins consumer group G instead and reads the partitions the
//! group assigns it, from the group's committed offsets (`--from earliest|latest` where there
//! are none). It always follows, until Ctrl-C, SIGTERM or `--count`; it commits as it goes (every 5 s)
//! and once more on the way out, after the last record printed, then leaves the group.
//!
//! Output: `--format text` prints one tab-separated line per record (partition, offset,
//! timestamp in RFC 3339, key, value; null keys and values print empty, invalid UTF-8 prints
//! with replacement characters). `--format json` prints one object per line:
//! `{"partition", "offset", "timestamp" (ms since the epoch), "key", "value", "headers":
//! [{"key", "value"}]}`, where each key and value is a JSON string when its bytes are valid
//! UTF-8, `{"base64": "..."}` when they are not, and `null` when absent.

use std::io::{self, Write};

use anyhow::{Context, Result, bail};
use clap::Args;
use strata_client::{
    Client, ConsumerConfig, GroupConsumer, GroupConsumerConfig, OffsetReset, Record, StartFrom,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

use crate::output::{Format, is_broken_pipe, record_json, record_text};

/// Records queued from the partition readers to the printer. Small: each reader's own credit
/// window is where records wait.
const RECORDS_QUEUED_MAX: usize = 1024;

#[derive(Args)]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    /// Where to start: earliest, latest, offset:N, or time:RFC3339 (the first record at or
    /// after that time, e.g. time:2025-01-31T12:00:00Z).
    #[arg(long, default_value = "earliest", value_parser = parse_from)]
    from: StartFrom,
    /// Read only this partition (default: all, merged).
    #[arg(long)]
    partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the high watermark seen at start.
    #[arg(long)]
    follow: bool,
    /// Read as a member of this consumer group (committing as it goes; implies --follow).
    #[arg(long, conflicts_with = "partition")]
    group: Option<String>,
}

/// Parses `--from`: `earliest`, `latest`, `offset:N` or `time:RFC3339`.
pub fn parse_from(text: &str) -> Result<StartFrom, String> {
    match text {
        "earliest" => return Ok(StartFrom::Earliest),
        "latest" => return Ok(StartFrom::Latest),
        _ => {}
    }
    if let Some(offset) = text.strip_prefix("offset:") {
        return offset
            .parse()
            .map(StartFrom::Offset)
            .map_err(|_| format!("offset {offset:?} is not a non-negative integer"));
    }
    if let Some(time) = text.strip_prefix("time:") {
        let time = OffsetDateTime::parse(time, &Rfc3339)
            .map_err(|error| format!("time {time:?} is not RFC 3339: {error}"))?;
        let timestamp_ms = time.unix_timestamp_nanos() / 1_000_000;
        return i64::try_from(timestamp_ms)
            .map(StartFrom::Timestamp)
            .map_err(|_| format!("time {time} is out of range"));
    }
    Err(format!(
        "{text:?} is not earliest, latest, offset:N or time:RFC3339"
    ))
}

/// What to read of one partition.
#[derive(Debug, Clone, Copy)]
pub struct PartitionPlan {
    pub partition: u32,
    /// The offset `--from` resolved to.
    pub start: u64,
    /// Stop before this offset; `None` follows forever.
    pub end: Option<u64>,
}

/// Resolves the start (and, unless following, the end) of each partition to read.
pub async fn plan(
    client: &Client,
    topic: &str,
    partition: Option<u32>,
    from: StartFrom,
    follow: bool,
) -> Result<Vec<PartitionPlan>> {
    let description = client
        .admin()
        .describe_topic(topic)
        .await
        .with_context(|| format!("describe topic {topic}"))?;
    let partitions: Vec<u32> = match partition {
        Some(partition) if partition >= description.partitions => bail!(
            "topic {topic} has {} partitions: partition {partition} does not exist",
            description.partitions
        ),
        Some(partition) => vec![partition],
        None => (0..description.partitions).collect(),
    };
    let mut plans = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let offsets = client
            .list_offsets(topic, partition, from)
            .await
            .with_context(|| format!("list offsets of {topic}/{partition}"))?;
        plans.push(PartitionPlan {
            partition,
            start: offsets.offset,
            end: (!follow).then_some(offsets.high_watermark),
        });
    }
    Ok(plans)
}

/// Reads each planned partition in its own task and merges the records into one channel.
/// The channel closes when every partition reached its end (or failed, after sending the
/// error); dropping the receiver stops the readers.
pub fn spawn_readers(
    client: &Client,
    topic: &str,
    plans: &[PartitionPlan],
) -> mpsc::Receiver<Result<(u32, Record)>> {
    let (records, merged) = mpsc::channel(RECORDS_QUEUED_MAX);
    for plan in plans.iter().copied() {
        if plan.end.is_some_and(|end| plan.start >= end) {
            continue;
        }
        let client = client.clone();
        let topic = topic.to_owned();
        let records = records.clone();
        tokio::spawn(async move {
            if let Err(error) = read_partition(&client, &topic, plan, &records).await {
                let _ = records.send(Err(error)).await;
            }
        });
    }
    merged
}

async fn read_partition(
    client: &Client,
    topic: &str,
    plan: PartitionPlan,
    records: &mpsc::Sender<Result<(u32, Record)>>,
) -> Result<()> {
    let partition = plan.partition;
    let mut consumer = client
        .subscribe(
            topic,
            partition,
            StartFrom::Offset(plan.start),
            ConsumerConfig::default(),
        )
        .await
        .with_context(|| format!("subscribe to {topic}/{partition}"))?;
    loop {
        if plan.end.is_some_and(|end| consumer.next_offset() >= end) {
            return Ok(());
        }
        let Some(record) = consumer
            .next()
            .await
            .with_context(|| format!("read {topic}/{partition}"))?
        else {
            // The broker ended the subscription: it is shutting down, or the topic is gone. A
            // follower must not end quietly as if it had read everything.
            return subscription_ended(client, topic, partition, consumer.next_offset()).await;
        };
        if plan.end.is_some_and(|end| record.offset >= end) {
            return Ok(());
        }
        if records.send(Ok((partition, record))).await.is_err() {
            // The printer has what it wanted.
            return Ok(());
        }
    }
}

/// Why the broker ended the subscription to `topic`/`partition` at `next_offset`: an error
/// naming the topic when it was deleted, else that the broker stopped serving it.
async fn subscription_ended(
    client: &Client,
    topic: &str,
    partition: u32,
    next_offset: u64,
) -> Result<()> {
    match client.admin().describe_topic(topic).await {
        Err(error)
            if error.code()
                == Some(strata_client::proto::v1::ErrorCode::UnknownTopicOrPartition) =>
        {
            bail!(
                "topic {topic} was deleted while reading partition {partition} (at offset \
                 {next_offset})"
            )
        }
        _ => bail!(
            "the broker ended the subscription to {topic}/{partition} at offset {next_offset} \
             (it may be shutting down or have lost the partition): run the command again"
        ),
    }
}

pub async fn run(client: &Client, args: ConsumeArgs, format: Format) -> Result<()> {
    if let Some(group) = &args.group {
        return run_group(client, group, &args, format).await;
    }
    let plans = plan(client, &args.topic, args.partition, args.from, args.follow).await?;
    let mut merged = spawn_readers(client, &args.topic, &plans);
    let result = print_records(&mut merged, args.count, format).await;
    match result {
        Err(error) if is_broken_pipe(&error) => Ok(()),
        other => other,
    }
}

/// Where the printer takes records from: the merged partition readers or a group member.
trait RecordSource {
    /// The next record with its partition; `None` when the source ended.
    async fn next_record(&mut self) -> Result<Option<(u32, Record)>>;

    /// Whether a record is already waiting, so the printer may keep it in its buffer a while
    /// longer without a reader waiting on it.
    fn has_waiting(&self) -> bool;
}

impl RecordSource for mpsc::Receiver<Result<(u32, Record)>> {
    async fn next_record(&mut self) -> Result<Option<(u32, Record)>> {
        self.recv().await.transpose()
    }

    fn has_waiting(&self) -> bool {
        !self.is_empty()
    }
}

impl RecordSource for GroupConsumer {
    async fn next_record(&mut self) -> Result<Option<(u32, Record)>> {
        let Some(record) = self.next().await? else {
            return Ok(None);
        };
        let partition = record.partition;
        let record = Record {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        Ok(Some((partition, record)))
    }

    /// Never: `next` marks the record before as processed, so a commit may cover it; it must
    /// be out of the buffer by then.
    fn has_waiting(&self) -> bool {
        false
    }
}

/// Prints records from `source` until it ends or `count` are printed.
async fn print_records(
    source: &mut impl RecordSource,
    count: Option<u64>,
    format: Format,
) -> Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    while count.is_none_or(|count| printed < count) {
        // Flush before waiting, so a follower sees records as they come.
        if !source.has_waiting() {
            out.flush()?;
        }
        let Some((partition, record)) = source.next_record().await? else {
            break;
        };
        match format {
            Format::Json => writeln!(out, "{}", record_json(partition, &record))?,
            Format::Text => writeln!(out, "{}", record_text(partition, &record))?,
        }
        printed += 1;
    }
    out.flush()?;
    Ok(())
}

/// `consume --group`: prints records as a group member until Ctrl-C, SIGTERM or `--count`,
/// then commits what it printed and leaves.
async fn run_group(client: &Client, group: &str, args: &ConsumeArgs, format: Format) -> Result<()> {
    let offset_reset = match args.from {
        StartFrom::Earliest => OffsetReset::Earliest,
        StartFrom::Latest => OffsetReset::Latest,
        _ => bail!("with --group, --from is earliest or latest (for partitions never committed)"),
    };
    let config = GroupConsumerConfig {
        offset_reset,
        client_id: format!("strata-cli pid {}", std::process::id()),
        ..GroupConsumerConfig::new(group, [args.topic.as_str()])
    };
    let mut consumer = client
        .group_consumer(config)
        .await
        .with_context(|| format!("join group {group}"))?;
    // SIGTERM (a service manager, `timeout`, `kill`) ends the member as Ctrl-C does: a member
    // that exits without leaving would linger in the group until its session times out.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    let printed = tokio::select! {
        printed = print_records(&mut consumer, args.count, format) => printed,
        interrupted = tokio::signal::ctrl_c() => interrupted.context("wait for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    };
    // Commit what was printed (and flushed) before leaving, however the loop ended.
    let closed = consumer
        .close()
        .await
        .with_context(|| format!("commit and leave group {group}"));
    match printed {
        Err(error) if is_broken_pipe(&error) => closed,
        Err(error) => Err(error),
        Ok(()) => closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented form of `--from` parses; anything else is refused.
    #[test]
    fn from_forms() {
        assert_eq!(parse_from("earliest"), Ok(StartFrom::Earliest));
        assert_eq!(parse_from("latest"), Ok(StartFrom::Latest));
        assert_eq!(parse_from("offset:0"), Ok(StartFrom::Offset(0)));
        assert_eq!(
            parse_from("offset:18446744073709551615"),
            Ok(StartFrom::Offset(u64::MAX))
        );
        assert_eq!(
            parse_from("time:2023-11-14T22:13:20.123Z"),
            Ok(StartFrom::Timestamp(1_700_000_000_123))
        );
        assert_eq!(
            parse_from("time:2023-11-15T00:13:20+02:00"),
            Ok(StartFrom::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            parse_from("time:1970-01-01T00:00:00Z"),
            Ok(StartFrom::Timestamp(0))
        );
        for invalid in [
            "",
            "first",
            "offset:",
            "offset:-1",
            "offset:x",
            "time:yesterday",
            "time:2023-11-14",
            "Earliest",
        ] {
            assert!(parse_from(invalid).is_err(), "{invalid:?}");
        }
    }
}
