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
//! Where to read: one or more topics and `--topic-pattern REGEX` (every topic whose whole name
//! matches, as Kafka's pattern subscriptions match), `--partitions 0,2` of each, from `--from`
//! to `--to` (the specs of [`crate::offsets`]), at most `--count` records in all and
//! `--count-per-partition` of each. A partition that cannot serve the start does not stop the
//! others (a note on stderr says what it does instead).
//!
//! Output: `--format text` prints one tab-separated line per record (partition, offset,
//! timestamp in RFC 3339, key, value, then the headers `k1=v1,k2=v2` when it has any; the
//! topic comes first when several topics are read; null keys and values print empty, invalid
//! UTF-8 prints with replacement characters). `--format json` prints one object per line:
//! `{"topic", "partition", "offset", "timestamp" (ms since the epoch), "key", "value",
//! "headers": [{"key", "value"}]}`, where each key and value is a JSON string when its bytes
//! are valid UTF-8, `{"base64": "..."}` when they are not, and `null` when absent. A format
//! string (`--format '%k %v\n'`, see [`crate::format`]) prints each record's raw bytes as it
//! says.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::future::try_join_all;
use regex::Regex;
use strata_client::{
    Client, ConsumerConfig, GroupConsumer, GroupConsumerConfig, OffsetReset, Record, StartFrom,
};
use tokio::sync::mpsc;

use crate::format::RecordFormat;
use crate::offsets::{self, Bounds, EndSpec, Range, StartSpec};
use crate::output::{is_broken_pipe, record_json, record_text};
use crate::progress;

/// Records one partition reader hands over at once: what has arrived from the broker, up to
/// this many. One hand-off (and at most one wake-up of the reading task) per chunk instead of
/// per record: a record at a time, the hand-offs and their task switches took most of a
/// replay's client CPU.
const CHUNK_RECORDS_MAX: usize = 64;
/// Chunks queued from the partition readers to the printer, so at most 1 024 records. Small:
/// each reader's own credit window is where records wait.
const CHUNKS_QUEUED_MAX: usize = 16;

#[derive(Args)]
pub struct ConsumeArgs {
    /// The topics to read (any number, with --topic-pattern).
    #[arg(value_name = "TOPIC", required_unless_present = "topic_pattern")]
    topics: Vec<String>,
    /// Also read every topic whose whole name matches this regular expression (Rust regex
    /// syntax, e.g. 'orders-.*'), as Kafka's pattern subscriptions do; matched once, at start.
    #[arg(long, value_name = "REGEX", value_parser = parse_pattern)]
    topic_pattern: Option<TopicPattern>,
    /// Where to start in each partition: earliest, latest, offset:N (or N), -N (the last N
    /// records), +N (N after the log start), time:RFC3339, time:MS (ms since the epoch) or
    /// time:-DURATION (e.g. time:-1h): the first record at or after that time.
    #[arg(long, default_value = "earliest", value_parser = offsets::parse_start, allow_hyphen_values = true)]
    from: StartSpec,
    /// Where to stop in each partition (that record is not printed): offset:N, latest (the
    /// high watermark at start, even with --follow) or time:... as in --from.
    #[arg(long, value_parser = offsets::parse_end, conflicts_with = "group", allow_hyphen_values = true)]
    to: Option<EndSpec>,
    /// Read only these partitions of each topic, e.g. 0,2 (default: all, merged).
    #[arg(
        long = "partitions",
        alias = "partition",
        value_name = "P,P,...",
        value_delimiter = ','
    )]
    partitions: Vec<u32>,
    /// Stop after this many records in all.
    #[arg(long)]
    count: Option<u64>,
    /// Stop reading each partition after this many of its records.
    #[arg(long, value_name = "N", conflicts_with = "group")]
    count_per_partition: Option<u64>,
    /// Keep waiting for new records instead of stopping at the high watermark seen at start.
    #[arg(long)]
    follow: bool,
    /// Read as a member of this consumer group (committing as it goes; implies --follow).
    #[arg(long, conflicts_with = "partitions")]
    group: Option<String>,
}

/// `--topic-pattern`: the expression as given, and compiled to match whole names.
#[derive(Debug, Clone)]
struct TopicPattern {
    text: String,
    whole_name: Regex,
}

/// Compiles `--topic-pattern`, anchored so that it must match a whole topic name.
fn parse_pattern(text: &str) -> Result<TopicPattern, String> {
    let whole_name = Regex::new(&format!("^(?:{text})$"))
        .map_err(|error| format!("{text:?} is not a regular expression: {error}"))?;
    Ok(TopicPattern {
        text: text.to_owned(),
        whole_name,
    })
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

/// What one reader reads: a partition's [`Range`], and at most `records_max` of its records.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub topic: Arc<str>,
    pub partition: u32,
    pub range: Range,
    pub records_max: Option<u64>,
}

/// A record as the printer gets it: its topic, partition and the record.
pub type Consumed = (Arc<str>, u32, Record);

/// Reads each planned partition of `topic` in its own task and merges the records into one
/// channel. The channel closes when every partition reached its end (or failed, after sending
/// the error); dropping the receiver stops the readers.
pub fn spawn_readers(
    client: &Client,
    topic: &str,
    plans: &[PartitionPlan],
) -> Merged<(u32, Record)> {
    let topic: Arc<str> = Arc::from(topic);
    let plans = plans
        .iter()
        .map(|plan| ReadPlan {
            topic: topic.clone(),
            partition: plan.partition,
            range: Range {
                from: plan.start,
                print_from: plan.start,
                end: plan.end,
                end_time_ms: None,
            },
            records_max: None,
        })
        .collect();
    spawn_plans(client, plans, |_, partition, record| (partition, record))
}

/// Reads each plan in its own task and merges what `wrap` makes of each record into one
/// channel, as [`spawn_readers`] does.
fn spawn_plans<T: Send + 'static>(
    client: &Client,
    plans: Vec<ReadPlan>,
    wrap: fn(&Arc<str>, u32, Record) -> T,
) -> Merged<T> {
    let (records, chunks) = mpsc::channel(CHUNKS_QUEUED_MAX);
    for plan in plans {
        if plan.range.end.is_some_and(|end| plan.range.from >= end) || plan.records_max == Some(0) {
            continue;
        }
        let client = client.clone();
        let records = records.clone();
        tokio::spawn(async move {
            if let Err(error) = read_partition(&client, &plan, &records, wrap).await {
                let _ = records.send(Err(error)).await;
            }
        });
    }
    Merged {
        chunks,
        chunk: Vec::new().into_iter(),
    }
}

/// The records of every partition reader, as they come: chunks of one partition's records
/// in its order, taken apart.
pub struct Merged<T> {
    chunks: mpsc::Receiver<Result<Vec<T>>>,
    /// What is left of the last chunk received.
    chunk: std::vec::IntoIter<T>,
}

impl<T> Merged<T> {
    /// The next record; `None` once every reader has ended. Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(record) = self.chunk.next() {
                return Some(Ok(record));
            }
            match self.chunks.recv().await? {
                Ok(chunk) => self.chunk = chunk.into_iter(),
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// Whether a record is already waiting.
    fn has_waiting(&self) -> bool {
        !self.chunk.as_slice().is_empty() || !self.chunks.is_empty()
    }
}

/// Reads `plan`'s partition into `records`, a chunk at a time: the first record waited for,
/// then every record already received, up to [`CHUNK_RECORDS_MAX`].
async fn read_partition<T>(
    client: &Client,
    plan: &ReadPlan,
    records: &mpsc::Sender<Result<Vec<T>>>,
    wrap: fn(&Arc<str>, u32, Record) -> T,
) -> Result<()> {
    let (topic, partition, range) = (&plan.topic, plan.partition, plan.range);
    let mut consumer = client
        .subscribe(
            topic,
            partition,
            StartFrom::Offset(range.from),
            ConsumerConfig::default(),
        )
        .await
        .with_context(|| format!("subscribe to {topic}/{partition}"))?;
    let mut sent = 0u64;
    let mut chunk = Vec::new();
    loop {
        let ended = fill_chunk(&mut consumer, plan, sent, &mut chunk, wrap).await;
        sent += chunk.len() as u64;
        // The records before an end or an error go first.
        if !chunk.is_empty() && records.send(Ok(std::mem::take(&mut chunk))).await.is_err() {
            // The printer has what it wanted.
            return Ok(());
        }
        match ended {
            Ok(None) => {}
            Ok(Some(ChunkEnd::Done)) => return Ok(()),
            Ok(Some(ChunkEnd::Ended)) => {
                // The broker ended the subscription: it is shutting down, or the topic is
                // gone. A follower must not end quietly as if it had read everything.
                return subscription_ended(client, topic, partition, consumer.next_offset()).await;
            }
            Err(error) => return Err(error).with_context(|| format!("read {topic}/{partition}")),
        }
    }
}

/// Why a reader stops after its chunk.
enum ChunkEnd {
    /// The plan is read: its end, its end time or its record count reached.
    Done,
    /// The broker ended the subscription.
    Ended,
}

/// Fills `chunk` with the next records of `plan` (after `sent` already handed over): waits
/// for the first, then takes those already received, up to [`CHUNK_RECORDS_MAX`]. Returns
/// whether the reader stops after this chunk.
async fn fill_chunk<T>(
    consumer: &mut strata_client::PartitionConsumer,
    plan: &ReadPlan,
    sent: u64,
    chunk: &mut Vec<T>,
    wrap: fn(&Arc<str>, u32, Record) -> T,
) -> strata_client::Result<Option<ChunkEnd>> {
    let (topic, partition, range) = (&plan.topic, plan.partition, plan.range);
    while chunk.len() < CHUNK_RECORDS_MAX {
        if range.end.is_some_and(|end| consumer.next_offset() >= end) {
            return Ok(Some(ChunkEnd::Done));
        }
        let record = if chunk.is_empty() {
            match consumer.next().await? {
                Some(record) => record,
                None => return Ok(Some(ChunkEnd::Ended)),
            }
        } else {
            match consumer.next_received()? {
                Some(record) => record,
                None => return Ok(None),
            }
        };
        if range.end.is_some_and(|end| record.offset >= end)
            || range.end_time_ms.is_some_and(|end| record.timestamp >= end)
        {
            return Ok(Some(ChunkEnd::Done));
        }
        if record.offset < range.print_from {
            continue;
        }
        chunk.push(wrap(topic, partition, record));
        if plan
            .records_max
            .is_some_and(|max| sent + chunk.len() as u64 >= max)
        {
            return Ok(Some(ChunkEnd::Done));
        }
    }
    Ok(None)
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

/// The topics named on the command line, then those `--topic-pattern` matches (sorted), each
/// once.
async fn topics(client: &Client, args: &ConsumeArgs) -> Result<Vec<String>> {
    let mut topics = args.topics.clone();
    if let Some(pattern) = &args.topic_pattern {
        let mut matched: Vec<String> = client
            .admin()
            .list_topics()
            .await
            .context("list topics")?
            .into_iter()
            .map(|topic| topic.name)
            .filter(|name| pattern.whole_name.is_match(name))
            .collect();
        matched.sort();
        if matched.is_empty() && topics.is_empty() {
            bail!(
                "no topic matches --topic-pattern {:?} (it must match a whole name)",
                pattern.text
            );
        }
        topics.extend(matched);
    }
    let mut seen = std::collections::HashSet::new();
    topics.retain(|topic| seen.insert(topic.clone()));
    Ok(topics)
}

/// The read plans of every partition asked for, each start and end resolved from the
/// partition's bounds; a partition that cannot serve its start gets a note on stderr instead
/// of failing the others.
async fn read_plans(
    client: &Client,
    topics: &[String],
    args: &ConsumeArgs,
) -> Result<Vec<ReadPlan>> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    let mut plans = Vec::new();
    for topic in topics {
        let description = client
            .admin()
            .describe_topic(topic)
            .await
            .with_context(|| format!("describe topic {topic}"))?;
        offsets::check_partitions(&args.partitions, description.partitions, topic)
            .map_err(anyhow::Error::msg)?;
        let partitions: Vec<u32> = if args.partitions.is_empty() {
            (0..description.partitions).collect()
        } else {
            args.partitions.clone()
        };
        let topic: Arc<str> = Arc::from(topic.as_str());
        // A time start is resolved by the broker (its time index); every other start only
        // needs the bounds, which each reply carries. The lookups run at once: a pattern may
        // name many partitions.
        let lookup = match args.from {
            StartSpec::Time(time) => StartFrom::Timestamp(time.resolve(now_ms)),
            _ => StartFrom::Earliest,
        };
        let listed = try_join_all(partitions.iter().map(|&partition| {
            let topic = topic.clone();
            async move {
                client
                    .list_offsets(&topic, partition, lookup)
                    .await
                    .with_context(|| format!("list offsets of {topic}/{partition}"))
                    .map(|listed| (partition, listed))
            }
        }))
        .await?;
        for (partition, listed) in listed {
            let bounds = Bounds {
                log_start: listed.log_start_offset,
                high_watermark: listed.high_watermark,
            };
            let time_offset = matches!(args.from, StartSpec::Time(_)).then_some(listed.offset);
            let requested = offsets::requested_start(args.from, bounds, time_offset);
            let (range, note) =
                offsets::plan_range(requested, bounds, args.to, args.follow, now_ms);
            if let Some(note) = note {
                progress::note(format_args!("{topic}/{partition} {note}"));
            }
            if let Some(range) = range {
                plans.push(ReadPlan {
                    topic: topic.clone(),
                    partition,
                    range,
                    records_max: args.count_per_partition,
                });
            }
        }
    }
    Ok(plans)
}

pub async fn run(client: &Client, args: ConsumeArgs, format: &RecordFormat) -> Result<()> {
    let topics = topics(client, &args).await?;
    if let Some(group) = &args.group {
        return run_group(client, group, &topics, &args, format).await;
    }
    let plans = read_plans(client, &topics, &args).await?;
    let progress = export_progress(&plans, args.count);
    let mut merged = spawn_plans(client, plans, |topic, partition, record| {
        (topic.clone(), partition, record)
    });
    let result = print_records(&mut merged, args.count, format, topics.len() > 1, &progress).await;
    progress.finish_and_clear();
    match result {
        Err(error) if is_broken_pipe(&error) => Ok(()),
        other => other,
    }
}

/// Where the printer takes records from: the merged partition readers or a group member.
trait RecordSource {
    /// The next record with its topic and partition; `None` when the source ended.
    async fn next_record(&mut self) -> Result<Option<Consumed>>;

    /// Whether a record is already waiting, so the printer may keep it in its buffer a while
    /// longer without a reader waiting on it.
    fn has_waiting(&self) -> bool;
}

impl RecordSource for Merged<Consumed> {
    async fn next_record(&mut self) -> Result<Option<Consumed>> {
        self.recv().await.transpose()
    }

    fn has_waiting(&self) -> bool {
        Merged::has_waiting(self)
    }
}

impl RecordSource for GroupConsumer {
    async fn next_record(&mut self) -> Result<Option<Consumed>> {
        let record = match self.next().await {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            // As `--follow` says it (see `subscription_ended`).
            Err(strata_client::Error::PartitionFailed {
                topic,
                partition,
                error,
            }) if error.is_unknown_topic() => {
                bail!("topic {topic} was deleted while the group read partition {partition}")
            }
            Err(error) => return Err(error.into()),
        };
        let partition = record.partition;
        let topic = Arc::from(record.topic);
        let record = Record {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        Ok(Some((topic, partition, record)))
    }

    /// Never: `next` marks the record before as processed, so a commit may cover it; it must
    /// be out of the buffer by then.
    fn has_waiting(&self) -> bool {
        false
    }
}

/// Records printed between two progress updates.
const PROGRESS_RECORDS_STEP: u64 = 256;

/// A bar over the records to read, for an export (`consume TOPIC > FILE`): only when every
/// plan ends, and the records go somewhere else than the terminal the bar is drawn on. The
/// total counts offsets, so it is an upper bound (control batches take offsets too).
fn export_progress(plans: &[ReadPlan], count: Option<u64>) -> indicatif::ProgressBar {
    let ends: Option<Vec<u64>> = plans
        .iter()
        .map(|plan| {
            let end = plan.range.end?;
            let offsets = end.saturating_sub(plan.range.print_from);
            Some(plan.records_max.map_or(offsets, |max| offsets.min(max)))
        })
        .collect();
    match ends {
        Some(ends) if !io::stdout().is_terminal() => {
            let total: u64 = ends.iter().sum();
            progress::bar(
                count.map_or(total, |count| total.min(count)),
                "records",
                false,
            )
        }
        _ => indicatif::ProgressBar::hidden(),
    }
}

/// Prints records from `source` until it ends or `count` are printed, advancing `progress`;
/// text lines start with the topic when `several_topics`.
async fn print_records(
    source: &mut impl RecordSource,
    count: Option<u64>,
    format: &RecordFormat,
    several_topics: bool,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut rendered = Vec::new();
    while count.is_none_or(|count| printed < count) {
        // Flush before waiting, so a follower sees records as they come.
        if !source.has_waiting() {
            out.flush()?;
        }
        let Some((topic, partition, record)) = source.next_record().await? else {
            break;
        };
        match format {
            RecordFormat::Json => writeln!(out, "{}", record_json(&topic, partition, &record))?,
            RecordFormat::Text if several_topics => {
                writeln!(out, "{topic}\t{}", record_text(partition, &record))?
            }
            RecordFormat::Text => writeln!(out, "{}", record_text(partition, &record))?,
            RecordFormat::Template(template) => {
                rendered.clear();
                template.render(&topic, partition, &record, &mut rendered);
                out.write_all(&rendered)?;
            }
        }
        printed += 1;
        if printed.is_multiple_of(PROGRESS_RECORDS_STEP) {
            progress.set_position(printed);
        }
    }
    out.flush()?;
    Ok(())
}

/// `consume --group`: prints records as a group member until Ctrl-C, SIGTERM or `--count`, then
/// commits what it printed and leaves.
async fn run_group(
    client: &Client,
    group: &str,
    topics: &[String],
    args: &ConsumeArgs,
    format: &RecordFormat,
) -> Result<()> {
    let offset_reset = match args.from {
        StartSpec::Earliest => OffsetReset::Earliest,
        StartSpec::Latest => OffsetReset::Latest,
        _ => bail!("with --group, --from is earliest or latest (for partitions never committed)"),
    };
    let config = GroupConsumerConfig {
        offset_reset,
        client_id: format!("strata-cli pid {}", std::process::id()),
        ..GroupConsumerConfig::new(group, topics.iter().map(String::as_str))
    };
    let mut consumer = client
        .group_consumer(config)
        .await
        .with_context(|| format!("join group {group}"))?;
    // A member follows: there is no end to show progress towards.
    let no_progress = indicatif::ProgressBar::hidden();
    // SIGTERM (a service manager, `timeout`, `kill`) ends the member as Ctrl-C does: a member
    // that exits without leaving would linger in the group until its session times out.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    let printed = tokio::select! {
        printed = print_records(
            &mut consumer,
            args.count,
            format,
            topics.len() > 1,
            &no_progress,
        ) => printed,
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
