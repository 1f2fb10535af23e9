//! `strata produce TOPIC [FILE]`: one record per line of standard input (or of FILE), then a
//! summary.
//!
//! Lines are bytes, not necessarily UTF-8; the newline (and a `\r` before it) is not part of
//! the record. `--delimiter` splits records at another byte string instead (no `\r` is
//! dropped then). `--input-format json` reads each record as a JSON object with its own key,
//! value, headers and timestamp; `--input-format '%k:%v'` splits it by a format string (see
//! [`crate::format`]). `--print-acks` prints each record's partition and offset as it is
//! acknowledged, in input order. Reading a file on a terminal shows a progress bar on stderr.
//!
//! Every record sent is awaited (acknowledged or failed) before the summary prints, so the
//! summary always says how many records were acknowledged and which input records were not:
//! those refused by `--on-error skip`, the one that stopped the input (and everything after
//! it, unread) with `--on-error stop`, and those the broker did not acknowledge.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde_json::json;
use strata_client::{Client, Compression, DeliveryFuture, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use crate::format::Format;
use crate::format::{self, InputRecord};
use crate::input::{InputFormat, RecordReader, parse_input_format};
use crate::output::count_text;
use crate::progress;

/// Deliveries awaited by the summary task; the producer's own buffer bounds the records in
/// flight, this only decouples reading stdin from counting acknowledgements.
const DELIVERIES_QUEUED_MAX: usize = 8192;

/// Records read between two progress updates.
const PROGRESS_RECORDS_STEP: u64 = 256;

/// Bad input records listed in the summary; more are counted.
const BAD_LINES_LISTED_MAX: usize = 20;

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    /// Read records from this file instead of standard input ('-': standard input).
    file: Option<PathBuf>,
    /// How each record is read: lines (the value, or key and value with --key-separator),
    /// json (an object {"key", "value", "headers", "timestamp"}, each optional), or a format
    /// string such as '%k:%v' (%k key, %v value, %T timestamp in ms or RFC 3339, %h headers
    /// k1=v1,k2=v2).
    #[arg(long, value_name = "lines|json|FORMAT", default_value = "lines", value_parser = parse_input_format)]
    input_format: InputFormat,
    /// What separates records, with escapes \n \t \r \0 \\ (e.g. '\0' or ';;').
    #[arg(long, value_name = "SEP", default_value = "\\n", value_parser = parse_delimiter)]
    // Fully qualified: clap would read a plain `Vec<u8>` as many `u8` values.
    delimiter: ::std::vec::Vec<u8>,
    /// Print each record's partition and offset as it is acknowledged (record number,
    /// partition, offset; in input order).
    #[arg(long)]
    print_acks: bool,
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
    /// What an input record that cannot become a record does: stop reading there (those
    /// before it are still sent and acknowledged; exit 2), or skip it and go on (listed in the
    /// summary).
    #[arg(long, value_enum, default_value_t = OnError::Stop)]
    on_error: OnError,
}

/// The `--on-error` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnError {
    /// Send nothing after the bad record; exit 2 once those before it are acknowledged.
    Stop,
    /// Leave the bad record out, send the rest, and list the skipped ones in the summary.
    Skip,
}

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

/// Parses `--delimiter` (escapes as in format strings).
fn parse_delimiter(text: &str) -> Result<Vec<u8>, String> {
    match format::unescape(text) {
        Ok(delimiter) if delimiter.is_empty() => Err("the delimiter is empty".to_owned()),
        Ok(delimiter) => Ok(delimiter),
        Err(error) => Err(error.to_string()),
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

/// What was produced, per partition, and what was not acknowledged.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    /// Per partition: first offset, last offset, records.
    partitions: BTreeMap<u32, (u64, u64, u64)>,
    /// Records the broker did not acknowledge.
    failed: u64,
    /// The first of them: its number in the input and the error.
    first_failure: Option<(u64, String)>,
}

/// Input records that did not become records.
#[derive(Debug, Default)]
struct BadLines {
    /// How many there were.
    count: u64,
    /// The first [`BAD_LINES_LISTED_MAX`]: number in the input and why.
    listed: Vec<(u64, String)>,
    /// With `--on-error stop`: the record the input stopped at (nothing from it on was read).
    stopped_at: Option<u64>,
    /// What the input's records are called: `line` or `record` (another delimiter).
    unit: &'static str,
}

impl BadLines {
    fn add(&mut self, number: u64, reason: String) {
        self.count += 1;
        if self.listed.len() < BAD_LINES_LISTED_MAX {
            self.listed.push((number, reason));
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
    if mode != KeyMode::None && args.input_format != InputFormat::Lines {
        bail!(
            "--key and --key-separator are for --input-format lines; json and format strings carry each record's key"
        );
    }
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
    let (mut reader, size) =
        RecordReader::open(args.file.as_deref(), args.delimiter.clone()).await?;
    let producer = client.producer(config)?;
    let (deliveries, queued) = mpsc::channel(DELIVERIES_QUEUED_MAX);
    let acks = args.print_acks.then_some(format);
    let summary = tokio::spawn(summarize(queued, acks));
    let started = Instant::now();
    // A bar over the file's bytes; over piped input a running count (unless typed by hand).
    let progress = match size {
        Some(size) => progress::bar(size, &format!("producing to {}", args.topic), true),
        None if !std::io::stdin().is_terminal() => progress::spinner("records read"),
        None => indicatif::ProgressBar::hidden(),
    };

    let mut bad_lines = BadLines {
        unit: reader.unit(),
        ..BadLines::default()
    };
    // Every way the input loop ends leads to the summary: records already handed to the
    // producer are awaited and counted first, so none is sent without the user hearing of it.
    let read = read_and_send(
        &args,
        &mode,
        &mut reader,
        size,
        &progress,
        &producer,
        &deliveries,
        &mut bad_lines,
    )
    .await;
    progress.finish_and_clear();
    drop(deliveries);
    let summary = summary.await.context("summary task")?;
    let closed = producer.close().await;
    if !progress::quiet() {
        print_summary(
            &args.topic,
            &summary,
            &bad_lines,
            started.elapsed().as_secs_f64(),
            format,
        );
    }
    read?;
    if let Some(number) = bad_lines.stopped_at {
        let reason = bad_lines
            .listed
            .last()
            .map_or("", |(_, reason)| reason.as_str());
        let unit = bad_lines.unit;
        bail!(
            "{unit} {number}: {reason}; stopped there (--on-error stop): {unit} {number} and \
             those after it were not sent ({} acknowledged before it)",
            summary.records
        );
    }
    if let Some((number, error)) = &summary.first_failure {
        bail!(
            "produce to {}: {} not acknowledged, the first from {} {number}: {error}",
            args.topic,
            count_text(summary.failed, "record"),
            bad_lines.unit
        );
    }
    closed?;
    Ok(())
}

/// Reads the input record by record and hands each to the producer, queueing its delivery with
/// its number; bad records go to `bad_lines` (and stop the input with `--on-error stop`).
///
/// # Errors
/// Reading the input, or the producer refusing a record before sending it.
#[allow(clippy::too_many_arguments)] // the run's parts, passed once
async fn read_and_send(
    args: &ProduceArgs,
    mode: &KeyMode,
    reader: &mut RecordReader,
    size: Option<u64>,
    progress: &indicatif::ProgressBar,
    producer: &strata_client::Producer,
    deliveries: &mpsc::Sender<(u64, DeliveryFuture)>,
    bad_lines: &mut BadLines,
) -> Result<()> {
    let mut records_read = 0u64;
    while let Some(raw) = reader.next().await? {
        records_read += 1;
        let input = match &args.input_format {
            InputFormat::Lines => split_line(raw, mode)
                .map(|(key, value)| InputRecord {
                    key,
                    value: Some(Bytes::copy_from_slice(value)),
                    ..InputRecord::default()
                })
                .map_err(anyhow::Error::msg),
            InputFormat::Json => format::read_json_record(raw),
            InputFormat::Template(template) => template.read(raw),
        };
        let number = reader.number();
        let input = match input {
            Ok(input) => input,
            Err(reason) => {
                bad_lines.add(number, format!("{reason:#}"));
                match args.on_error {
                    OnError::Skip => continue,
                    OnError::Stop => {
                        bad_lines.stopped_at = Some(number);
                        return Ok(());
                    }
                }
            }
        };
        // Every few records: the bar redraws at most a few times a second anyway, and an
        // update per record would cost a lock per record.
        if records_read.is_multiple_of(PROGRESS_RECORDS_STEP) {
            progress.set_position(if size.is_some() {
                reader.bytes_read()
            } else {
                records_read
            });
        }
        let mut record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key: input.key,
            value: input.value,
            headers: input.headers,
            timestamp_ms: input.timestamp_ms,
        };
        for (key, value) in &args.headers {
            record = record.header(key.clone(), value.clone());
        }
        let delivery = producer
            .send(record)
            .await
            .with_context(|| format!("{}: produce to {}", reader.position(), args.topic))?;
        if deliveries.send((number, delivery)).await.is_err() {
            bail!("the summary task ended early");
        }
    }
    Ok(())
}

/// Awaits every delivery in order, counting those not acknowledged. With `acks`, prints each
/// record's number, partition and offset as it is acknowledged.
async fn summarize(
    mut queued: mpsc::Receiver<(u64, DeliveryFuture)>,
    acks: Option<Format>,
) -> Summary {
    let mut summary = Summary::default();
    while let Some((number, delivery)) = queued.recv().await {
        let stored = match delivery.await {
            Ok(stored) => stored,
            Err(error) => {
                summary.failed += 1;
                if summary.first_failure.is_none() {
                    summary.first_failure = Some((number, error.to_string()));
                }
                continue;
            }
        };
        summary.records += 1;
        if let Some(format) = acks {
            print_ack(number, stored.partition, stored.offset, format);
        }
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

/// One `--print-acks` line: the record's number in the input, its partition and offset.
fn print_ack(record: u64, partition: u32, offset: u64, format: Format) {
    let mut out = std::io::stdout().lock();
    // A closed stdout ends the acks, not the produce: the records are stored either way.
    let _ = match format {
        Format::Json => writeln!(
            out,
            "{}",
            json!({ "record": record, "partition": partition, "offset": offset })
        ),
        Format::Text => writeln!(out, "{record}\t{partition}\t{offset}"),
    };
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
    let unit = bad_lines.unit;
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
                .map(|(number, reason)| {
                    let mut entry = serde_json::Map::new();
                    entry.insert(unit.to_owned(), json!(number));
                    entry.insert("error".to_owned(), json!(reason));
                    serde_json::Value::Object(entry)
                })
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
            if let Some(number) = bad_lines.stopped_at {
                let reason = bad_lines
                    .listed
                    .last()
                    .map_or("", |(_, reason)| reason.as_str());
                println!("stopped at {unit} {number}: {reason}");
                println!("{unit} {number} and those after it were not sent (--on-error stop)");
            } else if bad_lines.count > 0 {
                println!(
                    "skipped {}:",
                    count_text(bad_lines.count, &format!("bad input {unit}"))
                );
                for (number, reason) in &bad_lines.listed {
                    println!("  {unit} {number}: {reason}");
                }
                if bad_lines.count > bad_lines.listed.len() as u64 {
                    println!(
                        "  ... and {} more",
                        bad_lines.count - bad_lines.listed.len() as u64
                    );
                }
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

    /// `--delimiter` takes escapes and refuses an empty delimiter.
    #[test]
    fn delimiters() {
        assert_eq!(parse_delimiter("\\n"), Ok(b"\n".to_vec()));
        assert_eq!(parse_delimiter("\\0"), Ok(vec![0]));
        assert_eq!(parse_delimiter(";;"), Ok(b";;".to_vec()));
        assert!(parse_delimiter("").is_err());
        assert!(parse_delimiter("\\q").is_err());
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
}
