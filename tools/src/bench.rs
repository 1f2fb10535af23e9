//! `strata bench produce|consume`: throughput and latency against a running cluster.
//!
//! - `produce` sends records of a fixed size (random bytes, so compression has nothing to
//!   gain) as fast as the producer accepts them, or at `--rate` records/s. Latency runs from
//!   the `send` call to the acknowledgement (peerbench's send→ack), so time a record waits in
//!   the producer behind earlier ones counts, but the load generator's own timer slack (tokio
//!   timers fire up to a millisecond late) does not.
//! - `consume` reads every partition merged and measures end-to-end latency: arrival time
//!   minus the record's timestamp (meaningful when `bench produce` runs at the same time and
//!   the consumer starts `--from latest`; clocks are the same machine's).
//!
//! Progress prints on stderr once a second; the result prints on stdout, as text or, with
//! `--format json`, as one JSON object.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use strata_client::proto::v1::TopicConfig;
use strata_client::{Client, DeliveryFuture, ProducerConfig, ProducerRecord, StartFrom};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::consume::{parse_from, plan, spawn_readers};
use crate::output::Format;
use crate::produce::CompressionArg;

/// Deliveries queued to the task that times them; the producer's buffer is the real bound.
const DELIVERIES_QUEUED_MAX: usize = 1 << 16;
/// Latencies are kept in microseconds, up to this (longer ones count as this).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Records when neither `--count` nor `--duration` is given.
const COUNT_DEFAULT: u64 = 100_000;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Produce records and measure records/s, MB/s and acknowledgement latency.
    Produce(ProduceBench),
    /// Consume records and measure records/s, MB/s and end-to-end latency.
    Consume(ConsumeBench),
}

#[derive(Args)]
pub struct ProduceBench {
    /// The topic; created with --partitions and --replication-factor if it does not exist.
    #[arg(long, default_value = "strata-bench")]
    topic: String,
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records to send (default 100000 when --duration is not given either).
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Send for this long instead, e.g. 30s or 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Records per second to aim at (default: as fast as possible). Use it for latency runs.
    #[arg(long)]
    rate: Option<u64>,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// How long a batch waits for more records, in milliseconds.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// The largest batch in bytes (default: the producer's).
    #[arg(long)]
    batch_bytes: Option<usize>,
    /// Idempotent produce (the producer's default): retries are stored once. `off` measures
    /// what it costs.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    idempotence: OnOff,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
pub struct ConsumeBench {
    #[arg(long, default_value = "strata-bench")]
    topic: String,
    /// Where to start: earliest, latest, offset:N or time:RFC3339.
    #[arg(long, default_value = "earliest", value_parser = parse_from)]
    from: StartFrom,
    /// Stop after this many records (default: at the high watermarks seen at the start).
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long, e.g. 30s (default: at the high watermarks seen at the start).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
}

pub async fn run(client: &Client, command: BenchCommand, format: Format) -> Result<()> {
    match command {
        BenchCommand::Produce(args) => produce(client, args, format).await,
        BenchCommand::Consume(args) => consume(client, args, format).await,
    }
}

async fn produce(client: &Client, args: ProduceBench, format: Format) -> Result<()> {
    if args.rate == Some(0) {
        bail!("--rate must be at least 1 record/s");
    }
    let partitions = ensure_topic(client, &args).await?;
    let mut config = ProducerConfig {
        linger: Duration::from_millis(args.linger_ms),
        max_in_flight: args.in_flight,
        compression: args.compression.codec(),
        request_timeout: client.config().request_timeout,
        idempotent: args.idempotence == OnOff::On,
        ..ProducerConfig::default()
    };
    if let Some(batch_bytes) = args.batch_bytes {
        config.batch_bytes_max = batch_bytes;
    }
    let producer = client.producer(config)?;
    let value = random_bytes(args.record_size);
    let count = match (args.count, args.duration) {
        (Some(count), _) => count,
        (None, Some(_)) => u64::MAX,
        (None, None) => COUNT_DEFAULT,
    };

    let progress = Arc::new(Progress::default());
    let (deliveries, queued) = mpsc::channel(DELIVERIES_QUEUED_MAX);
    let timer = tokio::spawn(time_deliveries(
        queued,
        Arc::clone(&progress),
        args.record_size as u64,
    ));
    let reporter = spawn_progress(Arc::clone(&progress), "acknowledged");
    let started = Instant::now();
    let stop_at = args.duration.map(|duration| started + duration);
    let mut sent = 0u64;
    while sent < count {
        let now = Instant::now();
        if stop_at.is_some_and(|stop_at| now >= stop_at) {
            break;
        }
        if let Some(rate) = args.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let sent_at = Instant::now();
        let delivery = producer
            .send(ProducerRecord::new(args.topic.clone(), value.clone()))
            .await
            .with_context(|| format!("produce to {}", args.topic))?;
        if deliveries.send((delivery, sent_at)).await.is_err() {
            break; // The timer stopped at a failed delivery; its error says why.
        }
        sent += 1;
    }
    drop(deliveries);
    let histogram = timer.await.context("timer task")?;
    let elapsed_s = started.elapsed().as_secs_f64();
    reporter.abort();
    producer.close().await?;
    let histogram = histogram?;
    let records = progress.records.load(Ordering::Relaxed);
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let config = json!({
        "record_size": args.record_size,
        "partitions": partitions,
        "rate": args.rate,
        "in_flight": args.in_flight,
        "compression": format!("{:?}", args.compression).to_lowercase(),
        "linger_ms": args.linger_ms,
        "batch_bytes": args.batch_bytes,
    });
    report(
        "produce",
        &args.topic,
        records,
        bytes,
        elapsed_s,
        &histogram,
        config,
        format,
    );
    Ok(())
}

/// The topic's partition count, creating the topic when it does not exist.
async fn ensure_topic(client: &Client, args: &ProduceBench) -> Result<u32> {
    let admin = client.admin();
    match admin.describe_topic(&args.topic).await {
        Ok(topic) => Ok(topic.partitions),
        Err(error) if error.is_unknown_topic() => {
            let topic = admin
                .create_topic(
                    &args.topic,
                    args.partitions,
                    args.replication_factor,
                    TopicConfig::default(),
                )
                .await
                .with_context(|| format!("create topic {}", args.topic))?;
            eprintln!(
                "created topic {} with {} partitions",
                topic.name, topic.partitions
            );
            Ok(topic.partitions)
        }
        Err(error) => Err(error).with_context(|| format!("describe topic {}", args.topic)),
    }
}

/// Awaits deliveries as they complete (in any order) and records each one's latency; stops at
/// the first failure.
async fn time_deliveries(
    mut queued: mpsc::Receiver<(DeliveryFuture, Instant)>,
    progress: Arc<Progress>,
    record_bytes: u64,
) -> Result<Histogram<u64>> {
    let mut histogram = latency_histogram()?;
    let mut pending = FuturesUnordered::new();
    let mut accepting = true;
    loop {
        tokio::select! {
            next = queued.recv(), if accepting => match next {
                Some((delivery, sent_at)) => pending.push(async move {
                    let result = delivery.await;
                    (result, sent_at.elapsed())
                }),
                None => accepting = false,
            },
            Some((result, latency)) = pending.next(), if !pending.is_empty() => {
                result.context("delivery")?;
                histogram.saturating_record(latency.as_micros() as u64);
                progress.records.fetch_add(1, Ordering::Relaxed);
                progress.bytes.fetch_add(record_bytes, Ordering::Relaxed);
            }
            else => break,
        }
    }
    Ok(histogram)
}

async fn consume(client: &Client, args: ConsumeBench, format: Format) -> Result<()> {
    let bounded = args.count.is_none() && args.duration.is_none();
    let plans = plan(client, &args.topic, None, args.from, !bounded).await?;
    let mut merged = spawn_readers(client, &args.topic, &plans);
    let mut histogram = latency_histogram()?;
    let progress = Arc::new(Progress::default());
    let reporter = spawn_progress(Arc::clone(&progress), "consumed");
    let started = Instant::now();
    let stop_at = args.duration.map(|duration| started + duration);
    let mut records = 0u64;
    let mut bytes = 0u64;
    while args.count.is_none_or(|count| records < count) {
        let next = match stop_at {
            Some(stop_at) => match tokio::time::timeout_at(stop_at.into(), merged.recv()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => merged.recv().await,
        };
        let Some(next) = next else {
            break;
        };
        let (_, record) = next?;
        let size = record.key.as_ref().map_or(0, |key| key.len())
            + record.value.as_ref().map_or(0, |value| value.len());
        let latency_ms = now_ms().saturating_sub(record.timestamp).max(0) as u64;
        histogram.saturating_record(latency_ms.saturating_mul(1000));
        records += 1;
        bytes += size as u64;
        progress.records.store(records, Ordering::Relaxed);
        progress.bytes.store(bytes, Ordering::Relaxed);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    reporter.abort();
    let config = json!({ "from": format!("{:?}", args.from), "partitions": plans.len() });
    report(
        "consume",
        &args.topic,
        records,
        bytes,
        elapsed_s,
        &histogram,
        config,
        format,
    );
    Ok(())
}

fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).context("latency histogram")
}

/// Prints the counters' rate over the last second, every second, until aborted.
fn spawn_progress(progress: Arc<Progress>, verb: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.tick().await; // The first tick is immediate.
        let (mut records_before, mut bytes_before) = (0, 0);
        loop {
            interval.tick().await;
            let records = progress.records.load(Ordering::Relaxed);
            let bytes = progress.bytes.load(Ordering::Relaxed);
            eprintln!(
                "{:>5.0} s  {:>10} records/s  {:>8.1} MB/s  {records} {verb}",
                started.elapsed().as_secs_f64(),
                records - records_before,
                (bytes - bytes_before) as f64 / 1e6,
            );
            (records_before, bytes_before) = (records, bytes);
        }
    })
}

/// Prints the result: throughput, and latency percentiles in milliseconds.
#[allow(clippy::too_many_arguments)]
fn report(
    bench: &str,
    topic: &str,
    records: u64,
    bytes: u64,
    elapsed_s: f64,
    histogram: &Histogram<u64>,
    config: Value,
    format: Format,
) {
    let per_s = |amount: f64| {
        if elapsed_s > 0.0 {
            amount / elapsed_s
        } else {
            0.0
        }
    };
    let records_per_s = per_s(records as f64);
    let mb_per_s = per_s(bytes as f64 / 1e6);
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0,
    );
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "bench": bench,
                "topic": topic,
                "records": records,
                "bytes": bytes,
                "elapsed_s": elapsed_s,
                "records_per_s": records_per_s,
                "mb_per_s": mb_per_s,
                "latency_ms": { "p50": p50, "p99": p99, "p999": p999, "max": max },
                "config": config,
            })
        ),
        Format::Text => {
            println!(
                "{bench}: {records} records ({:.1} MB) in {elapsed_s:.2} s: {records_per_s:.0} records/s, {mb_per_s:.1} MB/s",
                bytes as f64 / 1e6
            );
            println!("latency ms: p50 {p50:.3}  p99 {p99:.3}  p999 {p999:.3}  max {max:.3}");
        }
    }
}

/// Bytes that do not compress, the same every run (xorshift from a fixed seed).
fn random_bytes(size: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload has the requested size, is the same each run, and does not compress.
    #[test]
    fn payload() {
        let value = random_bytes(4096);
        assert_eq!(value.len(), 4096);
        assert_eq!(value, random_bytes(4096));
        let distinct: std::collections::HashSet<u8> = value.iter().copied().collect();
        assert!(distinct.len() > 200);
    }
}
