//! The node's capture task: every `TICK_MS` it looks at each captured partition this node
//! leads, counts the batches committed since the last look, and starts a window's write when
//! the window closes (or when the metadata shows a window pending from an earlier leader).
//! At most `WINDOWS_IN_FLIGHT_MAX` windows are written at once, each on a blocking thread, so
//! raft and the request paths keep their threads. A failed window is logged, counted, and
//! retried after a backoff that doubles up to `BACKOFF_MS_MAX`; the node keeps serving.
//!
//! The task holds the broker weakly and stops when the broker is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::target::{CaptureTarget, relative_name};
use super::window::{WindowScan, Written, scan_batches, write_window};
use crate::broker::Broker;
use crate::controller::metadata::{Command, CommandRefusal, Topic};
use crate::partition::PartitionReplica;

/// How often the task looks at the partitions it leads.
pub const TICK_MS: u64 = 100;
/// Windows this node writes at once.
pub const WINDOWS_IN_FLIGHT_MAX: usize = 2;
/// Reads of the log one partition's scan makes in one tick (of `window::READ_BYTES_MAX`).
pub const SCAN_READS_PER_TICK_MAX: usize = 16;
/// First wait before a failed window is tried again; it doubles per failure.
pub const BACKOFF_MS_MIN: u64 = 500;
/// Longest wait before a failed window is tried again.
pub const BACKOFF_MS_MAX: u64 = 30_000;

/// What the leader keeps of one partition it captures. Dropped when it stops leading.
struct PartitionCapture {
    /// The raft term this state belongs to: a new term restarts the window's interval.
    term: u64,
    /// When this leader first saw uncaptured data of the open window.
    first_seen: Option<Instant>,
    scan: Option<WindowScan>,
    job: Option<JoinHandle<Result<(), String>>>,
    retry_at: Option<Instant>,
    failures: u32,
}

impl PartitionCapture {
    fn new(term: u64) -> Self {
        Self {
            term,
            first_seen: None,
            scan: None,
            job: None,
            retry_at: None,
            failures: 0,
        }
    }
}

/// How a node that does not lead the controller has a capture command applied: asks the
/// controller's leader (node id, address) with the command's JSON; `Ok(None)` applied,
/// `Ok(Some(why))` refused because the position had moved.
pub type AskController = Arc<
    dyn Fn(u64, String, Vec<u8>) -> BoxFuture<'static, Result<Option<String>, String>>
        + Send
        + Sync,
>;

/// Runs capture for the partitions this node leads until the broker is dropped.
pub async fn run(broker: Weak<Broker>, ask: AskController) {
    let permits = Arc::new(Semaphore::new(WINDOWS_IN_FLIGHT_MAX));
    let mut partitions: HashMap<(String, u32), PartitionCapture> = HashMap::new();
    // Targets by `capture.dir`, parsed once: a bucket holds an HTTP client and its
    // connections, reused from window to window.
    let mut targets: HashMap<String, CaptureTarget> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        tick(&broker, &permits, &ask, &mut partitions, &mut targets);
    }
}

fn tick(
    broker: &Arc<Broker>,
    permits: &Arc<Semaphore>,
    ask: &AskController,
    partitions: &mut HashMap<(String, u32), PartitionCapture>,
    targets: &mut HashMap<String, CaptureTarget>,
) {
    let leading: Vec<(Arc<PartitionReplica>, Topic)> = {
        let metadata = broker.metadata.read().expect("metadata lock poisoned");
        broker
            .replicas
            .read()
            .expect("lock")
            .values()
            .filter(|replica| *replica.leader.borrow() == broker.node_id)
            .filter_map(|replica| {
                let topic = metadata.topics.get(&replica.topic)?;
                topic.config.capture_dir.as_ref()?;
                Some((replica.clone(), topic.clone()))
            })
            .collect()
    };
    partitions.retain(|(topic, partition), _| {
        leading
            .iter()
            .any(|(replica, _)| replica.topic == *topic && replica.partition == *partition)
    });
    targets.retain(|dir, _| {
        leading
            .iter()
            .any(|(_, topic)| topic.config.capture_dir.as_deref() == Some(dir.as_str()))
    });
    let now = Instant::now();
    for (replica, topic) in leading {
        let term = replica.term.load(std::sync::atomic::Ordering::Relaxed);
        let state = partitions
            .entry((replica.topic.clone(), replica.partition))
            .or_insert_with(|| PartitionCapture::new(term));
        if state.term != term {
            let job = state.job.take();
            *state = PartitionCapture::new(term);
            state.job = job;
        }
        if !finish_job(broker, &replica, state, now) {
            continue;
        }
        if state.retry_at.is_some_and(|at| at > now) {
            continue;
        }
        if let Some(job) = plan(&replica, &topic, state, now) {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue;
            };
            let Some(dir) = topic.config.capture_dir.as_deref() else {
                continue;
            };
            let parsed = match targets.get(dir) {
                Some(target) => Ok(target.clone()),
                None => CaptureTarget::parse(dir),
            };
            let target = match parsed {
                Ok(target) => {
                    targets.insert(dir.to_string(), target.clone());
                    target
                }
                Err(error) => {
                    // Validated at create/alter; a value another node's build takes but this
                    // one does not (a bucket) is retried, so the operator sees it in the log.
                    fail(broker, &replica, state, now, error);
                    continue;
                }
            };
            state.job = Some(tokio::spawn(capture_window(
                broker.clone(),
                ask.clone(),
                replica.clone(),
                topic.id,
                target,
                job,
                permit,
            )));
        }
    }
}

/// Collects a finished window's result; `false` while one is still being written.
fn finish_job(
    broker: &Broker,
    replica: &PartitionReplica,
    state: &mut PartitionCapture,
    now: Instant,
) -> bool {
    let Some(job) = state.job.as_mut() else {
        return true;
    };
    let Some(result) = job.now_or_never() else {
        return false;
    };
    state.job = None;
    // The position moved (or another leader moved it): look again from the metadata.
    state.scan = None;
    state.first_seen = None;
    match result {
        Ok(Ok(())) => {
            state.failures = 0;
            state.retry_at = None;
        }
        Ok(Err(error)) => fail(broker, replica, state, now, error),
        Err(error) => fail(broker, replica, state, now, error.to_string()),
    }
    true
}

fn fail(
    broker: &Broker,
    replica: &PartitionReplica,
    state: &mut PartitionCapture,
    now: Instant,
    error: String,
) {
    state.failures = state.failures.saturating_add(1);
    let backoff_ms = BACKOFF_MS_MIN
        .saturating_mul(1 << state.failures.min(16).saturating_sub(1))
        .min(BACKOFF_MS_MAX);
    state.retry_at = Some(now + Duration::from_millis(backoff_ms));
    broker.metrics.capture.errors.inc();
    tracing::warn!(
        topic = %replica.topic,
        partition = replica.partition,
        failures = state.failures,
        backoff_ms,
        %error,
        "capture window failed; it will be tried again"
    );
}

/// A window to write: `open` carries the position the Open command expects, or is `None`
/// for a window already pending in the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WindowJob {
    window: (u64, u64),
    open: Option<u64>,
}

/// Whether a window of this partition is to be written now.
fn plan(
    replica: &PartitionReplica,
    topic: &Topic,
    state: &mut PartitionCapture,
    now: Instant,
) -> Option<WindowJob> {
    let position = topic.capture_position(replica.partition);
    let high_watermark = replica.high_watermark();
    if let Some(window) = position.pending {
        // A window an earlier leader opened: rewrite exactly it, once this replica has
        // committed all of it.
        return (window.1 < high_watermark).then_some(WindowJob { window, open: None });
    }
    let log_start = replica.log_start_offset();
    let first = position.next_offset.max(log_start);
    if state.scan.as_ref().is_none_or(|scan| scan.first != first) {
        if first > position.next_offset {
            tracing::warn!(
                topic = %replica.topic,
                partition = replica.partition,
                from = position.next_offset,
                to = first,
                "retention removed records before they were captured \
                 (capture.block-retention=false): these offsets are in no capture file"
            );
        }
        state.scan = Some(WindowScan::new(first));
    }
    let scan = state.scan.as_mut().expect("set above");
    if first >= high_watermark {
        state.first_seen = None;
        return None;
    }
    let first_seen = *state.first_seen.get_or_insert(now);
    for _ in 0..SCAN_READS_PER_TICK_MAX {
        if scan.full_at.is_some() || scan.scanned_to >= high_watermark {
            break;
        }
        match scan_batches(&replica.log, scan.scanned_to, high_watermark) {
            Ok(spans) if spans.is_empty() => break,
            Ok(spans) => {
                for span in spans {
                    scan.count(span, topic.config.capture_max_bytes);
                }
            }
            Err(error) => {
                // Retention moved the log start meanwhile: start over from the metadata.
                tracing::debug!(%error, "capture scan failed; starting the window again");
                state.scan = None;
                return None;
            }
        }
    }
    let elapsed =
        now.duration_since(first_seen) >= Duration::from_millis(topic.config.capture_interval_ms);
    scan.close(elapsed).map(|window| WindowJob {
        window,
        open: Some(position.next_offset),
    })
}

/// Opens (if needed), writes, publishes and reports one window. A refused Open or Done means
/// another leader moved the position: nothing to do here.
async fn capture_window(
    broker: Arc<Broker>,
    ask: AskController,
    replica: Arc<PartitionReplica>,
    topic_id: u64,
    target: CaptureTarget,
    job: WindowJob,
    _permit: OwnedSemaphorePermit,
) -> Result<(), String> {
    let (first, last) = job.window;
    let topic = replica.topic.clone();
    let partition = replica.partition;
    if let Some(expected_next) = job.open {
        let open = Command::CaptureWindowOpen {
            topic: topic.clone(),
            topic_id,
            partition,
            expected_next,
            first,
            last,
        };
        if !proposed(&broker, &ask, &open).await? {
            return Ok(());
        }
    }
    let relative = relative_name(&topic, partition, first, last);
    let spool = target.spool_path(&relative, broker.data_dir());
    let written = {
        let (log, topic, spool) = (replica.log.clone(), topic.clone(), spool.clone());
        tokio::task::spawn_blocking(move || {
            write_window(&log, &topic, partition, (first, last), &spool)
        })
        .await
        .map_err(|error| error.to_string())
        .and_then(|written| written)
    };
    let written = match written {
        Ok(written) => written,
        Err(error) => {
            target.discard(&spool).await;
            return Err(format!("writing window {first}..={last}: {error}"));
        }
    };
    if written.records == 0 {
        // Control batches only: the position moves, no file is made.
        target.discard(&spool).await;
    } else if let Err(error) = target.publish(&spool, &relative).await {
        target.discard(&spool).await;
        return Err(error);
    }
    let done = Command::CaptureWindowDone {
        topic: topic.clone(),
        topic_id,
        partition,
        first,
        last,
        now_ms: broker.clock.now_ms(),
    };
    if proposed(&broker, &ask, &done).await? && written.records > 0 {
        count(&broker, written);
        tracing::debug!(%topic, partition, first, last, records = written.records, "captured");
    }
    Ok(())
}

/// Has a capture command applied, here when this node leads the controller, else through
/// its leader: `true` when applied, `false` when the position had moved.
async fn proposed(broker: &Broker, ask: &AskController, command: &Command) -> Result<bool, String> {
    let leader = *broker.controller_leader.borrow();
    if leader == broker.node_id {
        return match broker.propose_command(command).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(CommandRefusal::CaptureMoved(_))) => Ok(false),
            Ok(Err(refusal)) => Err(refusal.to_string()),
            Err(error) => Err(error.to_string()),
        };
    }
    let address = broker
        .node_address(leader)
        .ok_or_else(|| format!("the controller's leader (node {leader}) is not known yet"))?;
    let json = serde_json::to_vec(command).map_err(|error| error.to_string())?;
    Ok(ask(leader, address, json).await?.is_none())
}

fn count(broker: &Broker, written: Written) {
    let metrics = &broker.metrics.capture;
    metrics.files.inc();
    metrics.records.inc_by(written.records);
    metrics.bytes.inc_by(written.bytes);
}
