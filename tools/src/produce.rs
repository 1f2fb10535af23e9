//! `strata produce TOPIC`: one record per line of standard input, then a summary.
//!
//! Lines are bytes, not necessarily UTF-8; the newline (and a `\r` before it) is not part of
//! the record. Every record sent is awaited (acknowledged or failed) before the summary prints,
//! so the summary always says how many records were acknowledged and which input lines were
//! not: lines refused by `--on-error skip`, the line that stopped the input (and everything
//! after it, unread) with `--on-error stop`, and lines whose records the broker did not
//! acknowledge.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde_json::json;
use strata_client::{Client, Compression, DeliveryFuture, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::output::{Format, count_text};

/// Deliveries awaited by the summary task; the producer's own buffer bounds the records in
/// flight, this only decouples reading stdin from counting acknowledgements.
const DELIVERIES_QUEUED_MAX: usize = 8192;

#[derive(Args)]
pub struct ProduceArgs {
    /// The topic to produce to.
    topic: String,
    /// The same key for every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP: the key before it, the value after. A line without
    /// SEP is an error.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header on every record, KEY=VALUE (repeatable).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Send every record to this partition (default: by key hash, or spread over all).
    #[arg(long)]
    partition: Option<u32>,
    /// Compress batches on the client.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// What a line that cannot become a record does: stop reading there (the lines before it
    /// are still sent and acknowledged; exit 2), or skip it and go on (listed in the summary).
    #[arg(long, value_enum, default_value_t = OnError::Stop)]
    on_error: OnError,
}

/// The `--on-error` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// Send nothing after the bad line; exit 2 once the lines before it are acknowledged.
    Stop,
    /// Leave the bad line out, send the rest, and list the skipped lines in the summary.
    Skip,
}

/// Bad lines named one by one in the summary; beyond it only counted.
const BAD_LINES_LISTED_MAX: usize = 20;

/// The `--compression` flag: Kafka's codec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Parses `--header KEY=VALUE`, splitting at the first `=` (the value may hold more).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "expected KEY=VALUE with a non-empty KEY, got {text:?}"
        )),
    }
}

/// Where each record's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMode {
    None,
    Fixed(Bytes),
    Separator(Vec<u8>),
}

/// Splits one input line (without its newline) into key and value.
fn split_line<'a>(
    line: &'a [u8],
    mode: &KeyMode,
) -> Result<(Option<Bytes>, &'a [u8]), &'static str> {
    match mode {
        KeyMode::None => Ok((None, line)),
        KeyMode::Fixed(key) => Ok((Some(key.clone()), line)),
        KeyMode::Separator(separator) => {
            let at = line
                .windows(separator.len())
                .position(|window| window == separator.as_slice())
                .ok_or("the line has no key separator")?;
            let key = Bytes::copy_from_slice(&line[..at]);
            Ok((Some(key), &line[at + separator.len()..]))
        }
    }
}

/// Drops the line's newline: `\n` and a `\r` before it.
fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What was produced, per partition, and which input lines were not.
#[derive(Debug, Default)]
struct Summary {
    /// Records acknowledged.
    records: u64,
    /// Per partition: first offset, last offset, records.
    partitions: BTreeMap<u32, (u64, u64, u64)>,
    /// Records the broker did not acknowledge: how many, and the first failure (its input
    /// line and why).
    failed: u64,
    first_failure: Option<(u64, String)>,
}

/// Input lines that did not become records.
#[derive(Debug, Default)]
struct BadLines {
    /// How many there were.
    count: u64,
    /// The first [`BAD_LINES_LISTED_MAX`]: line number and why.
    listed: Vec<(u64, String)>,
    /// With `--on-error stop`: the line the input stopped at (nothing from it on was read).
    stopped_at: Option<u64>,
}

impl BadLines {
    fn add(&mut self, line: u64, reason: &str) {
        self.count += 1;
        if self.listed.len() < BAD_LINES_LISTED_MAX {
            self.listed.push((line, reason.to_owned()));
        }
    }
}

pub async fn run(client: &Client, args: ProduceArgs, format: Format) -> Result<()> {
    let mode = match (&args.key, &args.key_separator) {
        (Some(key), _) => KeyMode::Fixed(Bytes::from(key.clone().into_bytes())),
        (None, Some(separator)) if separator.is_empty() => bail!("--key-separator is empty"),
        (None, Some(separator)) => KeyMode::Separator(separator.clone().into_bytes()),
        (None, None) => KeyMode::None,
    };
    // Fail before reading stdin when the topic or partition does not exist.
    let topic = client
        .admin()
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("describe topic {}", args.topic))?;
    if let Some(partition) = args.partition
        && partition >= topic.partitions
    {
        bail!(
            "topic {} has {} partitions: partition {partition} does not exist",
            args.topic,
            topic.partitions
        );
    }
    let config = ProducerConfig {
        compression: args.compression.codec(),
        request_timeout: client.config().request_timeout,
        ..ProducerConfig::default()
    };
    let producer = client.producer(config)?;
    let (deliveries, queued) = mpsc::channel(DELIVERIES_QUEUED_MAX);
    let summary = tokio::spawn(summarize(queued));
    let started = Instant::now();

    // Every way the input loop ends leads to the summary: records already handed to the
    // producer are awaited and counted first, so none is sent without the user hearing of it.
    let mut bad_lines = BadLines::default();
    let read = read_and_send(&args, &mode, &producer, &deliveries, &mut bad_lines).await;
    drop(deliveries);
    let summary = summary.await.context("summary task")?;
    let closed = producer.close().await;
    print_summary(
        &args.topic,
        &summary,
        &bad_lines,
        started.elapsed().as_secs_f64(),
        format,
    );
    read?;
    if let Some(line) = bad_lines.stopped_at {
        let reason = bad_lines
            .listed
            .last()
            .map_or("", |(_, reason)| reason.as_str());
        bail!(
            "line {line}: {reason}; stopped there (--on-error stop): line {line} and the lines \
             after it were not sent ({} acknowledged before it)",
            summary.records
        );
    }
    if let Some((line, error)) = &summary.first_failure {
        bail!(
            "produce to {}: {} records not acknowledged, the first from line {line}: {error}",
            args.topic,
            summary.failed
        );
    }
    closed?;
    Ok(())
}

/// Reads stdin line by line and hands each record to the producer, queueing its delivery with
/// its line number; bad lines go to `bad_lines` (and stop the input with `--on-error stop`).
///
/// # Errors
/// Reading stdin, or the producer refusing a record before sending it.
async fn read_and_send(
    args: &ProduceArgs,
    mode: &KeyMode,
    producer: &strata_client::Producer,
    deliveries: &mpsc::Sender<(u64, DeliveryFuture)>,
    bad_lines: &mut BadLines,
) -> Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .await
            .context("read stdin")?
            == 0
        {
            return Ok(());
        }
        line_number += 1;
        let (key, value) = match split_line(trim_newline(&line), mode) {
            Ok(split) => split,
            Err(reason) => {
                bad_lines.add(line_number, reason);
                match args.on_error {
                    OnError::Skip => continue,
                    OnError::Stop => {
                        bad_lines.stopped_at = Some(line_number);
                        return Ok(());
                    }
                }
            }
        };
        let mut record = ProducerRecord::new(args.topic.clone(), Bytes::copy_from_slice(value));
        record.key = key;
        record.partition = args.partition;
        for (key, value) in &args.headers {
            record = record.header(key.clone(), value.clone());
        }
        let delivery = producer
            .send(record)
            .await
            .with_context(|| format!("line {line_number}: produce to {}", args.topic))?;
        if deliveries.send((line_number, delivery)).await.is_err() {
            bail!("the summary task ended early");
        }
    }
}

/// Awaits every delivery in order, counting the acknowledged and the failed ones.
async fn summarize(mut queued: mpsc::Receiver<(u64, DeliveryFuture)>) -> Summary {
    let mut summary = Summary::default();
    while let Some((line, delivery)) = queued.recv().await {
        let stored = match delivery.await {
            Ok(stored) => stored,
            Err(error) => {
                summary.failed += 1;
                if summary.first_failure.is_none() {
                    summary.first_failure = Some((line, error.to_string()));
                }
                continue;
            }
        };
        summary.records += 1;
        let entry =
            summary
                .partitions
                .entry(stored.partition)
                .or_insert((stored.offset, stored.offset, 0));
        entry.0 = entry.0.min(stored.offset);
        entry.1 = entry.1.max(stored.offset);
        entry.2 += 1;
    }
    summary
}

fn print_summary(
    topic: &str,
    summary: &Summary,
    bad_lines: &BadLines,
    elapsed_s: f64,
    format: Format,
) {
    let rate = if elapsed_s > 0.0 {
        summary.records as f64 / elapsed_s
    } else {
        0.0
    };
    match format {
        Format::Json => {
            let partitions: Vec<_> = summary
                .partitions
                .iter()
                .map(|(partition, (first, last, records))| {
                    json!({ "partition": partition, "first_offset": first, "last_offset": last, "records": records })
                })
                .collect();
            let bad: Vec<_> = bad_lines
                .listed
                .iter()
                .map(|(line, reason)| json!({ "line": line, "error": reason }))
                .collect();
            println!(
                "{}",
                json!({
                    "topic": topic,
                    "records": summary.records,
                    "elapsed_s": elapsed_s,
                    "partitions": partitions,
                    "not_acknowledged": summary.failed,
                    "bad_lines": bad_lines.count,
                    "bad_lines_listed": bad,
                    "stopped_at_line": bad_lines.stopped_at,
                })
            );
        }
        Format::Text => {
            // "produced" counts acknowledged records only.
            println!(
                "produced {} to {topic} in {elapsed_s:.3} s ({rate:.0} records/s){}",
                count_text(summary.records, "record"),
                if summary.failed > 0 {
                    format!(
                        "; {} NOT acknowledged",
                        count_text(summary.failed, "record")
                    )
                } else {
                    String::new()
                }
            );
            for (partition, (first, last, count)) in &summary.partitions {
                println!(
                    "  partition {partition}: offsets {first}..={last} ({})",
                    count_text(*count, "record")
                );
            }
            if let Some(line) = bad_lines.stopped_at {
                let reason = bad_lines
                    .listed
                    .last()
                    .map_or("", |(_, reason)| reason.as_str());
                println!("stopped at line {line}: {reason}");
            } else if bad_lines.count > 0 {
                println!("skipped {}:", count_text(bad_lines.count, "bad input line"));
                for (line, reason) in &bad_lines.listed {
                    println!("  line {line}: {reason}");
                }
                if bad_lines.count > bad_lines.listed.len() as u64 {
                    println!(
                        "  ... and {} more",
                        bad_lines.count - bad_lines.listed.len() as u64
                    );
                }
            }
            if let Some(line) = bad_lines.stopped_at {
                println!("line {line} and the lines after it were not sent (--on-error stop)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--compression` takes each of Kafka's codec names and maps it to that codec.
    #[test]
    fn compression_names() {
        for codec in Compression::ALL {
            let arg = CompressionArg::from_str(codec.name(), false)
                .unwrap_or_else(|error| panic!("{}: {error}", codec.name()));
            assert_eq!(arg.codec(), codec);
        }
        assert!(CompressionArg::from_str("brotli", false).is_err());
    }

    /// Headers split at the first `=`; the key must not be empty.
    #[test]
    fn headers() {
        assert_eq!(parse_header("a=b"), Ok(("a".into(), "b".into())));
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_header("a="), Ok(("a".into(), String::new())));
        assert!(parse_header("a").is_err());
        assert!(parse_header("=b").is_err());
    }

    /// Each key mode splits lines as documented, including multi-byte separators, separators
    /// at the edges, and values that contain the separator again.
    #[test]
    fn key_modes() {
        let tab = KeyMode::Separator(b"\t".to_vec());
        let arrow = KeyMode::Separator(b"=>".to_vec());
        let fixed = KeyMode::Fixed(Bytes::from_static(b"k"));
        // (mode, line, key, value)
        type Case<'a> = (&'a KeyMode, &'a [u8], Option<&'a [u8]>, &'a [u8]);
        let table: &[Case] = &[
            (&KeyMode::None, b"a\tb", None, b"a\tb"),
            (&fixed, b"value", Some(b"k"), b"value"),
            (&tab, b"user\thello\tworld", Some(b"user"), b"hello\tworld"),
            (&tab, b"\tvalue", Some(b""), b"value"),
            (&tab, b"key\t", Some(b"key"), b""),
            (&arrow, b"a=>b=>c", Some(b"a"), b"b=>c"),
        ];
        for (mode, line, key, value) in table {
            let (got_key, got_value) = split_line(line, mode).expect("splits");
            assert_eq!(got_key.as_deref(), *key, "{mode:?} {line:?}");
            assert_eq!(got_value, *value, "{mode:?} {line:?}");
        }
        assert!(split_line(b"no separator", &tab).is_err());
    }

    /// The newline and a carriage return before it are dropped; nothing else is.
    #[test]
    fn newlines() {
        assert_eq!(trim_newline(b"a\n"), b"a");
        assert_eq!(trim_newline(b"a\r\n"), b"a");
        assert_eq!(trim_newline(b"a"), b"a");
        assert_eq!(trim_newline(b"a\r"), b"a");
        assert_eq!(trim_newline(b" a \n"), b" a ");
    }
}
