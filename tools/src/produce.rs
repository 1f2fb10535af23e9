//! `strata produce TOPIC [FILE]`: one record per line of standard input (or of FILE), then a
//! summary.
//!
//! Lines are bytes, not necessarily UTF-8; the newline (and a `\r` before it) is not part of
//! the record. `--delimiter` splits records at another byte string instead (no `\r` is
//! dropped then). `--input-format json` reads each record as a JSON object with its own key,
//! value, headers and timestamp; `--input-format '%k:%v'` splits it by a format string (see
//! [`crate::format`]). Every record is acknowledged (committed) before the summary prints;
//! `--print-acks` prints each record's partition and offset as it is acknowledged, in input
//! order. Reading a file on a terminal shows a progress bar on stderr.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde_json::json;
use strata_client::{Client, Compression, DeliveryFuture, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use crate::format::{self, InputRecord};
use crate::input::{InputFormat, RecordReader, parse_input_format};
use crate::output::Format;
use crate::progress;

/// Deliveries awaited by the summary task; the producer's own buffer bounds the records in
/// flight, this only decouples reading stdin from counting acknowledgements.
const DELIVERIES_QUEUED_MAX: usize = 8192;

/// Records read between two progress updates.
const PROGRESS_RECORDS_STEP: u64 = 256;

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

/// What was produced, per partition.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    /// Per partition: first offset, last offset, records.
    partitions: BTreeMap<u32, (u64, u64, u64)>,
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

    let mut records_read = 0u64;
    while let Some(raw) = reader.next().await? {
        let input = match &args.input_format {
            InputFormat::Lines => split_line(raw, &mode)
                .map(|(key, value)| InputRecord {
                    key,
                    value: Some(Bytes::copy_from_slice(value)),
                    ..InputRecord::default()
                })
                .map_err(anyhow::Error::msg),
            InputFormat::Json => format::read_json_record(raw),
            InputFormat::Template(template) => template.read(raw),
        }
        .map_err(|reason| anyhow!("{}: {reason:#}", reader.position()))?;
        records_read += 1;
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
            .with_context(|| format!("produce to {}", args.topic))?;
        if deliveries.send(delivery).await.is_err() {
            // The summary task stopped at a failed delivery: its error says why.
            break;
        }
    }
    progress.finish_and_clear();
    drop(deliveries);
    let summary = summary.await.context("summary task")?;
    producer.close().await?;
    let summary = summary.with_context(|| format!("produce to {}", args.topic))?;
    if progress::quiet() {
        return Ok(());
    }
    print_summary(
        &args.topic,
        &summary,
        started.elapsed().as_secs_f64(),
        format,
    );
    Ok(())
}

/// Awaits every delivery in order; stops at the first failure. With `acks`, prints each
/// record's number, partition and offset as it is acknowledged.
async fn summarize(
    mut queued: mpsc::Receiver<DeliveryFuture>,
    acks: Option<Format>,
) -> strata_client::Result<Summary> {
    let mut summary = Summary::default();
    while let Some(delivery) = queued.recv().await {
        let stored = delivery.await?;
        summary.records += 1;
        if let Some(format) = acks {
            print_ack(summary.records, stored.partition, stored.offset, format);
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
    Ok(summary)
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

fn print_summary(topic: &str, summary: &Summary, elapsed_s: f64, format: Format) {
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
            println!(
                "{}",
                json!({
                    "topic": topic,
                    "records": summary.records,
                    "elapsed_s": elapsed_s,
                    "partitions": partitions,
                })
            );
        }
        Format::Text => {
            println!(
                "produced {} records to {topic} in {elapsed_s:.3} s ({rate:.0} records/s)",
                summary.records
            );
            for (partition, (first, last, records)) in &summary.partitions {
                println!("  partition {partition}: offsets {first}..={last} ({records} records)");
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
