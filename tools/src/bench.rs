//! `strata bench produce|consume`: throughput and latency against a running cluster.
//!
//! - `produce` (`--mode pipelined`, the default) sends records of a fixed size (random bytes,
//!   so compression has nothing to gain) as fast as the producer accepts them, or at `--rate`
//!   records/s. Latency runs from the `send` call to the acknowledgement (peerbench's
//!   send→ack), so time a record waits in the producer behind earlier ones counts, but the load
//!   generator's own timer slack (tokio timers fire up to a millisecond late) does not.
//! - `produce --mode closed-loop` measures what `../shared/peerbench` measures in its latency
//!   phase, so the two compare like for like: after a warm-up, one record at a time, each sent
//!   at its place on the `--rate` schedule (or as soon as the previous one is acknowledged,
//!   when that is later) and awaited before the next. It reports the service time (send→ack
//!   of each record) and the schedule-corrected time (intended send time→ack, so a slow
//!   acknowledgement that delays the records behind it counts for each of them), and the rate
//!   achieved against the rate asked for.
//! - `consume` reads every partition merged and measures end-to-end latency: arrival time
//!   minus the record's timestamp, only of records stamped after the bench started (so it is
//!   meaningful when `bench produce` runs at the same time, on the same machine's clock).
//!   Older records are counted in throughput but not in latency: their age is not a latency.
//!   With no such record the report says that no latency was measured.
//!
//! Every report includes the bench process's own CPU time (user + system, from `getrusage`)
//! per GB of record bytes, so the client's cost is measured beside the server's.
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
use serde_json::json;
use strata_client::proto::v1::TopicConfig;
use strata_client::{Client, Producer, ProducerConfig, ProducerRecord, StartFrom};
use tokio::task::JoinHandle;

use crate::bench_report::{ClosedLoop, Report};
use crate::consume::{plan, spawn_readers};
use crate::format::Format;
use crate::offsets::parse_position;
use crate::produce::CompressionArg;

/// How long before a closed-loop send's time the runtime's timer hands over to a thread sleep:
/// more than the timer's lateness (up to a millisecond).
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// Latencies are kept in microseconds, up to this (longer ones count as this).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Records when neither `--count` nor `--duration` is given.
const COUNT_DEFAULT: u64 = 100_000;
/// Schedule-corrected latencies are kept up to this (a run that falls behind its schedule
/// for minutes still reports).
const CORRECTED_LATENCY_US_MAX: u64 = 600_000_000;
/// The linger of a pipelined run when `--linger-ms` is not given: the producer's default.
const LINGER_MS_DEFAULT: u64 = 5;

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
    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Copies of each partition when the bench creates the topic.
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    /// Size of each record's value: bytes, or a size such as 1KiB, 64KiB.
    #[arg(long, default_value = "1024", value_name = "SIZE", value_parser = crate::units::parse_size_usize)]
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
    /// `pipelined`: as many records in flight as the producer allows. `closed-loop`: one
    /// record at a time, each awaited before the next is sent on the `--rate` schedule
    /// (peerbench's latency phase); reports service and schedule-corrected latency.
    #[arg(long, value_enum, default_value_t = Mode::Pipelined)]
    mode: Mode,
    /// Closed-loop only: records sent and awaited before measuring (not counted), as
    /// peerbench does.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Compress batches on the client.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// How long a batch waits for more records: milliseconds, or a duration such as 5ms,
    /// 1s (default: 5, and 0 in closed-loop mode).
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration_ms)]
    linger_ms: Option<u64>,
    /// The largest batch: bytes, or a size such as 1MiB (default: the producer's).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size_usize)]
    batch_bytes: Option<usize>,
    /// The bytes of records sent or waiting to be sent and not yet acknowledged, at most
    /// (the producer's buffer): bytes, or a size such as 512KiB (default: the producer's,
    /// 32 MiB). A saturating producer fills it, and a batch waits behind the rest of it, out
    /// of the CPU's cache by the time it is sent.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size_usize)]
    buffer_bytes: Option<usize>,
    /// Idempotent produce (the producer's default): retries are stored once. `off` measures
    /// what it costs.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    idempotence: OnOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Pipelined,
    ClosedLoop,
}

impl Mode {
    /// The name the flag takes.
    fn name(self) -> &'static str {
        match self {
            Mode::Pipelined => "pipelined",
            Mode::ClosedLoop => "closed-loop",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
pub struct ConsumeBench {
    /// The topic to read, every partition merged.
    #[arg(long, default_value = "strata-bench")]
    topic: String,
    /// Where to start: earliest, latest, offset:N, time:RFC3339, time:MS or time:-DURATION.
    #[arg(long, default_value = "earliest", value_parser = parse_position)]
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
    // One record at a time must not wait for a linger before it is sent.
    let linger_ms = args.linger_ms.unwrap_or(match args.mode {
        Mode::Pipelined => LINGER_MS_DEFAULT,
        Mode::ClosedLoop => 0,
    });
    let mut config = ProducerConfig {
        linger: Duration::from_millis(linger_ms),
        max_in_flight: args.in_flight,
        compression: args.compression.codec(),
        request_timeout: client.config().request_timeout,
        idempotent: args.idempotence == OnOff::On,
        ..ProducerConfig::default()
    };
    if let Some(batch_bytes) = args.batch_bytes {
        config.batch_bytes_max = batch_bytes;
    }
    if let Some(buffer_bytes) = args.buffer_bytes {
        config.buffer_bytes_max = buffer_bytes;
    }
    let producer = client.producer(config)?;
    let value = random_bytes(args.record_size);
    let count = match (args.count, args.duration) {
        (Some(count), _) => count,
        (None, Some(_)) => u64::MAX,
        (None, None) => COUNT_DEFAULT,
    };
    let record = ProducerRecord::new(args.topic.clone(), value);
    let progress = Arc::new(Progress::default());
    let measured = match args.mode {
        Mode::Pipelined => pipelined(&producer, &record, &args, count, &progress).await?,
        Mode::ClosedLoop => {
            for _ in 0..args.warmup {
                send_one(&producer, &record, &args.topic).await?;
            }
            closed_loop(&producer, &record, &args, count, &progress).await?
        }
    };
    producer.close().await?;
    let cpu_s = process_cpu_s()? - measured.cpu_s_before;
    let records = progress.records.load(Ordering::Relaxed);
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let config = json!({
        "mode": args.mode.name(),
        "record_size": args.record_size,
        "partitions": partitions,
        "rate": args.rate,
        "warmup": (args.mode == Mode::ClosedLoop).then_some(args.warmup),
        "in_flight": args.in_flight,
        "compression": format!("{:?}", args.compression).to_lowercase(),
        "linger_ms": linger_ms,
        "batch_bytes": args.batch_bytes,
        "buffer_bytes": args.buffer_bytes,
    });
    let report = Report {
        bench: "produce",
        topic: &args.topic,
        records,
        bytes,
        elapsed_s: measured.elapsed_s,
        latency: &measured.latency,
        latency_note: None,
        closed_loop: measured.closed_loop.as_ref(),
        cpu_s,
        config,
    };
    report.print(format);
    Ok(())
}

/// What a produce run measured.
struct Measured {
    elapsed_s: f64,
    /// Send→ack of every record, in microseconds.
    latency: Histogram<u64>,
    closed_loop: Option<ClosedLoop>,
    /// The process's CPU seconds when sending started.
    cpu_s_before: f64,
}

/// Sends records as fast as the producer accepts them (or at `--rate`), many in flight, and
/// times each delivery as it completes (in any order). Sending and timing share one task: a
/// record costs no hand-off to another task (a channel send, often a thread's wake-up).
async fn pipelined(
    producer: &Producer,
    record: &ProducerRecord,
    args: &ProduceBench,
    count: u64,
    progress: &Arc<Progress>,
) -> Result<Measured> {
    let record_bytes = args.record_size as u64;
    let mut histogram = latency_histogram()?;
    let mut pending = FuturesUnordered::new();
    let reporter = spawn_progress(Arc::clone(progress), "acknowledged");
    let cpu_s_before = process_cpu_s()?;
    let started = Instant::now();
    let stop_at = args.duration.map(|duration| started + duration);
    let mut sent = 0u64;
    let mut sending = count > 0;
    while sending || !pending.is_empty() {
        if sending && stop_at.is_some_and(|stop_at| Instant::now() >= stop_at) {
            sending = false;
            continue;
        }
        let due = args
            .rate
            .map(|rate| started + Duration::from_secs_f64(sent as f64 / rate as f64));
        // Dropped unfinished when a delivery completes first: `send` either accepted the
        // record (and returned) or did not (it waits only for buffer room).
        let next = async {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            let sent_at = Instant::now();
            let delivery = producer.send(record.clone()).await;
            (delivery, sent_at)
        };
        tokio::select! {
            biased;
            Some((result, latency)) = pending.next(), if !pending.is_empty() => {
                let (result, latency): (strata_client::Result<_>, Duration) = (result, latency);
                result.context("delivery")?;
                histogram.saturating_record(latency.as_micros() as u64);
                progress.records.fetch_add(1, Ordering::Relaxed);
                progress.bytes.fetch_add(record_bytes, Ordering::Relaxed);
            }
            (delivery, sent_at) = next, if sending => {
                let delivery =
                    delivery.with_context(|| format!("produce to {}", args.topic))?;
                pending.push(async move {
                    let result = delivery.await;
                    (result, sent_at.elapsed())
                });
                sent += 1;
                sending = sent < count;
            }
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    reporter.abort();
    Ok(Measured {
        elapsed_s,
        latency: histogram,
        closed_loop: None,
        cpu_s_before,
    })
}

/// Sends one record at a time on the `--rate` schedule, each awaited before the next, as
/// peerbench's latency phase does.
async fn closed_loop(
    producer: &Producer,
    record: &ProducerRecord,
    args: &ProduceBench,
    count: u64,
    progress: &Arc<Progress>,
) -> Result<Measured> {
    let mut latency = latency_histogram()?;
    let mut corrected =
        Histogram::new_with_bounds(1, CORRECTED_LATENCY_US_MAX, 3).context("latency histogram")?;
    let reporter = spawn_progress(Arc::clone(progress), "acknowledged");
    let cpu_s_before = process_cpu_s()?;
    let started = Instant::now();
    let stop_at = args.duration.map(|duration| started + duration);
    let mut sent = 0u64;
    while sent < count {
        let now = Instant::now();
        let intended = match args.rate {
            Some(rate) => started + Duration::from_secs_f64(sent as f64 / rate as f64),
            None => now,
        };
        if intended > now {
            // tokio's timer wheel fires up to a millisecond late, which would show as schedule
            // lag: it waits until `TIMER_SLACK` before the time, so the runtime's other tasks
            // (the connection's keep-alive, the progress line) run meanwhile, and a thread
            // sleep, as peerbench's, takes the rest. Nothing is in flight then (the last record
            // was acknowledged), so blocking the thread that briefly holds nothing up.
            if let Some(coarse) = intended.checked_sub(TIMER_SLACK)
                && coarse > now
            {
                tokio::time::sleep_until(coarse.into()).await;
            }
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
        }
        if stop_at.is_some_and(|stop_at| Instant::now() >= stop_at) {
            break;
        }
        let sent_at = Instant::now();
        send_one(producer, record, &args.topic).await?;
        let acked_at = Instant::now();
        latency.saturating_record((acked_at - sent_at).as_micros().max(1) as u64);
        corrected.saturating_record((acked_at - intended).as_micros().max(1) as u64);
        sent += 1;
        progress.records.store(sent, Ordering::Relaxed);
        progress
            .bytes
            .fetch_add(args.record_size as u64, Ordering::Relaxed);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    reporter.abort();
    Ok(Measured {
        elapsed_s,
        latency,
        closed_loop: Some(ClosedLoop {
            corrected,
            rate_target: args.rate,
        }),
        cpu_s_before,
    })
}

/// Sends `record` and waits for its acknowledgement.
async fn send_one(producer: &Producer, record: &ProducerRecord, topic: &str) -> Result<()> {
    producer
        .send(record.clone())
        .await
        .with_context(|| format!("produce to {topic}"))?
        .await
        .with_context(|| format!("delivery to {topic}"))?;
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

async fn consume(client: &Client, args: ConsumeBench, format: Format) -> Result<()> {
    let bounded = args.count.is_none() && args.duration.is_none();
    let plans = plan(client, &args.topic, None, args.from, !bounded).await?;
    let mut merged = spawn_readers(client, &args.topic, &plans);
    let mut histogram = latency_histogram()?;
    let progress = Arc::new(Progress::default());
    let reporter = spawn_progress(Arc::clone(&progress), "consumed");
    let cpu_s_before = process_cpu_s()?;
    let started = Instant::now();
    // Records stamped before this were produced before the bench ran: their age is not a
    // latency.
    let started_ms = now_ms();
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
        if record.timestamp >= started_ms {
            let latency_ms = now_ms().saturating_sub(record.timestamp).max(0) as u64;
            histogram.saturating_record(latency_ms.saturating_mul(1000));
        }
        records += 1;
        bytes += size as u64;
        progress.records.store(records, Ordering::Relaxed);
        progress.bytes.store(bytes, Ordering::Relaxed);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s()? - cpu_s_before;
    reporter.abort();
    let config = json!({ "from": format!("{:?}", args.from), "partitions": plans.len() });
    let report = Report {
        bench: "consume",
        topic: &args.topic,
        records,
        bytes,
        elapsed_s,
        latency: &histogram,
        latency_note: Some(CONSUME_LATENCY_NOTE),
        closed_loop: None,
        cpu_s,
        config,
    };
    report.print(format);
    Ok(())
}

/// What `bench consume` times, said beside its latency.
const CONSUME_LATENCY_NOTE: &str = "end to end (record timestamp to arrival), only of records \
     produced after the bench started: run `strata bench produce` at the same time";

fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).context("latency histogram")
}

/// Prints the counters' rate over the last second, every second, until aborted; only on a
/// terminal and without `--quiet` (piped output gets the report alone).
fn spawn_progress(progress: Arc<Progress>, verb: &'static str) -> JoinHandle<()> {
    let shown = crate::progress::shown();
    tokio::spawn(async move {
        if !shown {
            return;
        }
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

/// CPU seconds (user + system) this process has used so far, all threads.
fn process_cpu_s() -> Result<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` through the pointer, which points at one.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    // SAFETY: zeroed is a valid `rusage` (plain integers), and getrusage filled it.
    let usage = unsafe { usage.assume_init() };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    Ok(seconds(usage.ru_utime) + seconds(usage.ru_stime))
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
