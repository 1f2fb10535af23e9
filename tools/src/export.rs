//! `strata export TOPIC --out PATH`: a range of a topic's records written to one file that
//! analytics engines read (DuckDB, Polars, Spark, pandas): Parquet, JSON lines or CSV.
//!
//! - `range.rs`: `--from`/`--to` resolved against each partition's bounds, a pure plan; an
//!   empty or reversed range is an error before anything is written.
//! - `staged.rs`: the output file, visible only once complete.
//! - `writers.rs`: the three file formats.
//!
//! The records are read from each partition's leader over the normal API (as `strata
//! consume` reads them, so ACLs apply: Read on the topic), one partition after another, so a
//! file holds its rows in partition and offset order and the same range always gives the same
//! file contents. The file is written under a temporary name beside PATH that starts with `.`
//! (engines and globs skip it), synced, then renamed to PATH and the directory synced; on any
//! error or Ctrl-C the temporary file is removed, so a half-written file is never visible.

mod range;
mod staged;
mod writers;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use futures_util::future::try_join_all;
use std::sync::Arc;

use strata_analytics::{JsonSchema, OnMismatch};
use strata_client::{Client, StartFrom};

use crate::consume::{self, PartitionPlan};
use crate::format::FileFormat;
use crate::offsets::{self, Bounds, EndSpec, StartSpec};
use crate::output::count_text;
use crate::progress;
use range::{PartitionBounds, PartitionRange};
use staged::Staged;
use writers::{Sink, Values};

/// `--value-format`: how the `value` column holds values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ValueFormatArg {
    /// The bytes as produced (Parquet: binary; JSON lines and CSV: text when UTF-8, base64
    /// when not).
    #[default]
    Bytes,
    /// UTF-8 text (Parquet: a string column); a value that is not UTF-8 is an error naming
    /// its partition and offset.
    Text,
    /// JSON objects (Parquet only): `value` is a struct of their fields, typed (boolean,
    /// int64, double, string; nested objects and arrays as JSON text), inferred from the first
    /// --infer-records records of the range.
    Json,
}

/// `--on-mismatch`: what a JSON value that does not fit the inferred schema becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OnMismatchArg {
    /// Stop with an error naming the partition, offset and what did not fit; nothing written.
    #[default]
    Error,
    /// Write a null value and go on.
    Null,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The topic to export.
    topic: String,
    /// Where each partition's range starts: earliest (its log start), offset:N, or
    /// time:RFC3339 / time:MS (ms since the epoch) / time:-DURATION: the first record whose
    /// timestamp is at or after that time (the broker's time index).
    #[arg(long, default_value = "earliest", value_parser = offsets::parse_start, allow_hyphen_values = true)]
    from: StartSpec,
    /// Where each partition's range ends, exclusive: latest (the high watermark when the
    /// export starts, so the same command gives the same rows), offset:N (N is not exported:
    /// the last offset is N-1), or time:...: the records before the first one at or after
    /// that time (with timestamps in offset order, exactly those with timestamp < T).
    #[arg(long, default_value = "latest", value_parser = offsets::parse_end, allow_hyphen_values = true)]
    to: EndSpec,
    /// Export only these partitions, e.g. 0,2 (default: all).
    #[arg(
        long = "partitions",
        alias = "partition",
        value_name = "P,P,...",
        value_delimiter = ','
    )]
    partitions: Vec<u32>,
    /// The file to write; replaced only once complete. Its extension (.parquet, .jsonl,
    /// .ndjson, .csv) gives the format when --format is not given.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// How values are written.
    #[arg(long, value_enum, default_value_t)]
    value_format: ValueFormatArg,
    /// With --value-format json: how many records, from the start of the range, the schema
    /// is inferred from (read once more before the export: a sample, so memory stays
    /// bounded whatever the range; a field first seen later does not fit).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    infer_records: u64,
    /// With --value-format json: what a value that does not fit the schema becomes.
    #[arg(long, value_enum, default_value_t)]
    on_mismatch: OnMismatchArg,
}

/// The format to write: `given` (`--format`), else the one `path`'s extension names.
///
/// # Errors
/// Neither says.
pub fn choose_format(given: Option<FileFormat>, path: &Path) -> Result<FileFormat> {
    given
        .or_else(|| FileFormat::from_path(path))
        .ok_or_else(|| {
            anyhow!(
                "cannot tell the format of {}: pass --format parquet|jsonl|csv or name the file \
             .parquet, .jsonl, .ndjson or .csv",
                path.display()
            )
        })
}

/// Each partition's bounds and time lookups, all asked at once.
async fn partition_bounds(
    client: &Client,
    topic: &str,
    partitions: &[u32],
    from: StartSpec,
    to: EndSpec,
    now_ms: i64,
) -> Result<Vec<PartitionBounds>> {
    try_join_all(partitions.iter().map(|&partition| async move {
        let lookup = |time: offsets::TimeSpec| StartFrom::Timestamp(time.resolve(now_ms));
        let start = match from {
            StartSpec::Time(time) => lookup(time),
            _ => StartFrom::Earliest,
        };
        let listed = client
            .list_offsets(topic, partition, start)
            .await
            .with_context(|| format!("list offsets of {topic}/{partition}"))?;
        let to_time_offset = match to {
            EndSpec::Time(time) => Some(
                client
                    .list_offsets(topic, partition, lookup(time))
                    .await
                    .with_context(|| format!("list offsets of {topic}/{partition}"))?
                    .offset,
            ),
            _ => None,
        };
        Ok(PartitionBounds {
            partition,
            bounds: Bounds {
                log_start: listed.log_start_offset,
                high_watermark: listed.high_watermark,
            },
            from_time_offset: matches!(from, StartSpec::Time(_)).then_some(listed.offset),
            to_time_offset,
        })
    }))
    .await
}

/// The schema of the JSON values among the first `records_max` records of `ranges`.
async fn infer_schema(
    client: &Client,
    topic: &str,
    ranges: &[PartitionRange],
    records_max: u64,
) -> Result<JsonSchema> {
    let mut values = Vec::new();
    for range in ranges {
        if values.len() as u64 >= records_max {
            break;
        }
        let plan = PartitionPlan {
            partition: range.partition,
            start: range.from,
            end: Some(range.end),
        };
        // Dropped once full: the reader stops.
        let mut records = consume::spawn_readers(client, topic, &[plan]);
        while let Some(read) = records.recv().await {
            let (_, record) = read?;
            values.extend(record.value);
            if values.len() as u64 >= records_max {
                break;
            }
        }
    }
    Ok(JsonSchema::infer(values.iter().map(|value| value.as_ref())))
}

/// Records between two progress updates.
const PROGRESS_RECORDS_STEP: u64 = 1024;

/// What an export wrote.
struct Written {
    records: u64,
    input_bytes: u64,
}

/// Bytes a record brings: its key, value and headers.
fn record_bytes(record: &strata_client::Record) -> u64 {
    let headers: usize = record
        .headers
        .iter()
        .map(|header| header.key.len() + header.value.as_ref().map_or(0, |value| value.len()))
        .sum();
    (record.key.as_ref().map_or(0, |key| key.len())
        + record.value.as_ref().map_or(0, |value| value.len())
        + headers) as u64
}

/// Reads `ranges` of `topic` one partition after another into `sink`.
async fn copy(
    client: &Client,
    topic: &str,
    ranges: &[PartitionRange],
    sink: &mut Sink,
) -> Result<Written> {
    let total: u64 = ranges.iter().map(PartitionRange::offsets).sum();
    let bar = progress::bar(total, "records", false);
    let mut written = Written {
        records: 0,
        input_bytes: 0,
    };
    for range in ranges {
        let plan = PartitionPlan {
            partition: range.partition,
            start: range.from,
            end: Some(range.end),
        };
        let mut records = consume::spawn_readers(client, topic, &[plan]);
        // Offsets before a record that control batches took, counted so the bar reaches its end.
        let mut offsets_done = written_offsets(ranges, range);
        while let Some(read) = records.recv().await {
            let (partition, record) = read?;
            written.input_bytes += record_bytes(&record);
            let offset = record.offset;
            sink.push(topic, partition, &record)?;
            written.records += 1;
            if written.records.is_multiple_of(PROGRESS_RECORDS_STEP) {
                offsets_done = written_offsets(ranges, range) + (offset + 1 - range.from);
                bar.set_position(offsets_done);
                bar.set_message(format!(
                    "records, {} in",
                    indicatif::HumanBytes(written.input_bytes)
                ));
            }
        }
        bar.set_position(offsets_done.max(written_offsets(ranges, range) + range.offsets()));
    }
    bar.finish_and_clear();
    Ok(written)
}

/// Offsets of the ranges before `current`.
fn written_offsets(ranges: &[PartitionRange], current: &PartitionRange) -> u64 {
    ranges
        .iter()
        .take_while(|range| range.partition != current.partition)
        .map(PartitionRange::offsets)
        .sum()
}

/// `strata export`: see the module documentation. `format` is `--format` when given.
pub async fn run(client: &Client, args: ExportArgs, format: Option<FileFormat>) -> Result<()> {
    let started = Instant::now();
    let format = choose_format(format, &args.out)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    let topic = &args.topic;
    let description = client
        .admin()
        .describe_topic(topic)
        .await
        .with_context(|| format!("describe topic {topic}"))?;
    offsets::check_partitions(&args.partitions, description.partitions, topic)
        .map_err(anyhow::Error::msg)?;
    let mut partitions: Vec<u32> = if args.partitions.is_empty() {
        (0..description.partitions).collect()
    } else {
        args.partitions.clone()
    };
    partitions.sort_unstable();
    partitions.dedup();
    let bounds = partition_bounds(client, topic, &partitions, args.from, args.to, now_ms).await?;
    let (ranges, notes) =
        range::plan(args.from, args.to, &bounds, now_ms).map_err(|error| anyhow!("{error}"))?;
    for note in notes {
        progress::note(format_args!("{topic}/{note}"));
    }
    let values = match args.value_format {
        ValueFormatArg::Bytes => Values::Bytes,
        ValueFormatArg::Text => Values::Text,
        ValueFormatArg::Json if format != FileFormat::Parquet => bail!(
            "--value-format json makes typed Parquet columns; JSON lines and CSV hold values \
             as text (use --value-format text or bytes)"
        ),
        ValueFormatArg::Json => {
            let schema = infer_schema(client, topic, &ranges, args.infer_records).await?;
            if schema.fields().is_empty() {
                bail!(
                    "--value-format json: none of the first {} values of the range is a JSON \
                     object with fields; export them with --value-format text or bytes",
                    args.infer_records
                );
            }
            let on_mismatch = match args.on_mismatch {
                OnMismatchArg::Error => OnMismatch::Error,
                OnMismatchArg::Null => OnMismatch::Null,
            };
            Values::Json(Arc::new(schema), on_mismatch)
        }
    };
    let (staged, file) = Staged::create(&args.out)?;
    let ranges_text: Vec<String> = ranges
        .iter()
        .map(|range| format!("{}:{}-{}", range.partition, range.from, range.end - 1))
        .collect();
    let metadata = vec![
        ("strata.topic".to_owned(), topic.clone()),
        // partition:first-last offsets, the range exported (both inclusive).
        ("strata.offsets".to_owned(), ranges_text.join(",")),
    ];
    let mut sink = Sink::new(format, &values, file, metadata)?;
    let written = copy(client, topic, &ranges, &mut sink).await?;
    if written.records == 0 {
        bail!("{}", range::RangeError::no_records(&bounds));
    }
    let file = sink.finish()?;
    let file_bytes = file.metadata().map_or(0, |metadata| metadata.len());
    staged.persist(file)?;
    let elapsed = started.elapsed();
    progress::note(format_args!(
        "exported {} ({} of keys, values and headers) of {topic} to {} ({}) in {:.1?}, {}/s",
        count_text(written.records, "record"),
        indicatif::HumanBytes(written.input_bytes),
        args.out.display(),
        indicatif::HumanBytes(file_bytes),
        elapsed,
        indicatif::HumanBytes(
            (written.input_bytes as f64 / elapsed.as_secs_f64().max(1e-3)) as u64
        ),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--format` wins; else the extension, in any case; else a clear error.
    #[test]
    fn formats_come_from_the_flag_or_the_extension() {
        let table = [
            (None, "a/b.parquet", Some(FileFormat::Parquet)),
            (None, "b.PARQUET", Some(FileFormat::Parquet)),
            (None, "b.jsonl", Some(FileFormat::Jsonl)),
            (None, "b.ndjson", Some(FileFormat::Jsonl)),
            (None, "b.csv", Some(FileFormat::Csv)),
            (Some(FileFormat::Csv), "b.parquet", Some(FileFormat::Csv)),
            (Some(FileFormat::Jsonl), "b", Some(FileFormat::Jsonl)),
            (None, "b.txt", None),
            (None, "b", None),
        ];
        for (given, path, expected) in table {
            let chosen = choose_format(given, Path::new(path));
            match expected {
                Some(format) => assert_eq!(chosen.expect(path), format, "{path}"),
                None => {
                    let error = chosen.expect_err(path).to_string();
                    assert!(error.contains("--format parquet|jsonl|csv"), "{error}");
                }
            }
        }
    }
}
