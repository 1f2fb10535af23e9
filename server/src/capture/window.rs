//! A capture window: which committed batches it takes (pure: [`WindowScan`]) and writing its
//! records to a Parquet file ([`write_window`], blocking: run it on a blocking thread).

use std::io::BufWriter;
use std::path::Path;
use std::sync::RwLock;

use strata_analytics::{ParquetSink, ValueFormat};
use strata_proto::batch::{BatchHeader, decode_batch, split_batches};

use crate::storage::PartitionLog;

/// Records a capture file holds in Arrow arrays before writing them out: small, because a
/// node writes up to `WINDOWS_IN_FLIGHT_MAX` files at once beside its produce traffic.
pub const SINK_BATCH_BYTES: usize = 4 << 20;
/// Encoded bytes of a row group held before it is flushed to the file.
pub const SINK_ROW_GROUP_BYTES: usize = 16 << 20;
/// Bytes read from the log at once, while scanning or writing a window.
pub const READ_BYTES_MAX: usize = 1 << 20;

/// A committed batch as a window counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub base_offset: u64,
    /// The offset after the batch.
    pub next_offset: u64,
    /// Stored bytes.
    pub bytes: u64,
}

/// The leader's running view of the open window of one partition: the batches seen from its
/// first offset, counted as they commit, so each tick scans only what is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowScan {
    /// The window's first offset.
    pub first: u64,
    /// The offset after the last batch counted.
    pub scanned_to: u64,
    /// The offset after the batch that took the window to `max_bytes`, once one has.
    pub full_at: Option<u64>,
    pub bytes: u64,
}

impl WindowScan {
    /// An empty window starting at `first`.
    pub fn new(first: u64) -> Self {
        Self {
            first,
            scanned_to: first,
            full_at: None,
            bytes: 0,
        }
    }

    /// Counts the next committed batch (it must start where the scan stopped). Once the
    /// window's bytes reach `max_bytes` it is full, at this batch's end: a window always
    /// holds whole batches and at least one.
    pub fn count(&mut self, batch: BatchSpan, max_bytes: u64) {
        if self.full_at.is_some() {
            return;
        }
        assert_eq!(
            batch.base_offset, self.scanned_to,
            "batches counted in order"
        );
        self.scanned_to = batch.next_offset;
        self.bytes += batch.bytes;
        if self.bytes >= max_bytes {
            self.full_at = Some(batch.next_offset);
        }
    }

    /// The window to close now, as `(first, last)` inclusive: the full one, or everything
    /// counted once the interval has elapsed; `None` while it stays open (or holds nothing).
    pub fn close(&self, interval_elapsed: bool) -> Option<(u64, u64)> {
        let end = match self.full_at {
            Some(end) => end,
            None if interval_elapsed => self.scanned_to,
            None => return None,
        };
        (end > self.first).then(|| (self.first, end - 1))
    }
}

/// The committed batches of `log` from `from` below `high_watermark`, at most about
/// `READ_BYTES_MAX` of them, as spans.
///
/// # Errors
/// The log's read error (the offset fell below the log start), or a batch that does not parse.
pub fn scan_batches(
    log: &RwLock<PartitionLog>,
    from: u64,
    high_watermark: u64,
) -> Result<Vec<BatchSpan>, String> {
    if from >= high_watermark {
        return Ok(Vec::new());
    }
    let runs = log
        .read()
        .expect("log lock poisoned")
        .read_below(from, high_watermark, READ_BYTES_MAX)
        .map_err(|error| error.to_string())?;
    let mut spans = Vec::new();
    for run in runs {
        for batch in split_batches(run) {
            let (header, bytes) = batch.map_err(|error| error.to_string())?;
            let span = span_of(&header, bytes.len());
            if span.base_offset >= high_watermark {
                return Ok(spans);
            }
            spans.push(span);
        }
    }
    Ok(spans)
}

fn span_of(header: &BatchHeader, bytes: usize) -> BatchSpan {
    let base_offset = u64::try_from(header.base_offset).unwrap_or(0);
    BatchSpan {
        base_offset,
        next_offset: base_offset + header.offset_count(),
        bytes: bytes as u64,
    }
}

/// What [`write_window`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub records: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Writes the data records of offsets `first..=last` of `log` (control batches skipped) to a
/// new Parquet file at `spool`, creating its directory, and returns what it holds. The same
/// window of the same log always gives the same rows. Offsets below the log start (removed by
/// retention with `capture.block-retention=false`) are skipped: the caller logged the gap.
///
/// # Errors
/// A read, decode or write failure, with its cause; the spool file may be left half-written
/// (the caller discards it).
pub fn write_window(
    log: &RwLock<PartitionLog>,
    topic: &str,
    partition: u32,
    (first, last): (u64, u64),
    spool: &Path,
) -> Result<Written, String> {
    let io = |what: &str, error: std::io::Error| format!("{what} {}: {error}", spool.display());
    if let Some(parent) = spool.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
    }
    let file = std::fs::File::create(spool).map_err(|e| io("creating", e))?;
    let metadata = vec![
        ("strata.topic".to_string(), topic.to_string()),
        ("strata.partition".to_string(), partition.to_string()),
        ("strata.first_offset".to_string(), first.to_string()),
        ("strata.last_offset".to_string(), last.to_string()),
    ];
    let mut sink = ParquetSink::with_limits(
        BufWriter::new(file),
        ValueFormat::Bytes,
        metadata,
        SINK_BATCH_BYTES,
        SINK_ROW_GROUP_BYTES,
    )
    .map_err(|error| format!("starting {}: {error}", spool.display()))?;
    let mut offset = first.max(log.read().expect("log lock poisoned").log_start_offset());
    while offset <= last {
        let runs = log
            .read()
            .expect("log lock poisoned")
            .read_below(offset, last + 1, READ_BYTES_MAX)
            .map_err(|error| format!("reading offset {offset}: {error}"))?;
        if runs.is_empty() {
            return Err(format!(
                "the log holds no batch at offset {offset} of window {first}..={last}"
            ));
        }
        for run in runs {
            for batch in split_batches(run) {
                let (header, bytes) = batch.map_err(|error| error.to_string())?;
                let span = span_of(&header, bytes.len());
                offset = offset.max(span.next_offset);
                if header.is_control() || span.base_offset > last {
                    continue;
                }
                let decoded = decode_batch(&bytes).map_err(|error| {
                    format!("decoding the batch at offset {}: {error}", span.base_offset)
                })?;
                for record in decoded
                    .records
                    .iter()
                    .filter(|record| (first..=last).contains(&record.offset))
                {
                    sink.push(topic, partition, record)
                        .map_err(|error| format!("writing {}: {error}", spool.display()))?;
                }
            }
        }
    }
    let records = sink.rows();
    let out = sink
        .finish()
        .map_err(|error| format!("finishing {}: {error}", spool.display()))?;
    let file = out
        .into_inner()
        .map_err(|error| io("flushing", error.into_error()))?;
    let bytes = file
        .metadata()
        .map_err(|e| io("reading the size of", e))?
        .len();
    Ok(Written { records, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(base_offset: u64, count: u64, bytes: u64) -> BatchSpan {
        BatchSpan {
            base_offset,
            next_offset: base_offset + count,
            bytes,
        }
    }

    /// A window closes at the batch that reaches max_bytes (whole batches, at least one), or
    /// with everything counted once the interval elapsed; never empty.
    #[test]
    fn windows_close_on_bytes_or_time() {
        let max_bytes = 100;
        let mut scan = WindowScan::new(10);
        assert_eq!(scan.close(true), None, "empty windows never close");
        scan.count(span(10, 5, 40), max_bytes);
        assert_eq!(scan.close(false), None, "under max_bytes, interval running");
        assert_eq!(scan.close(true), Some((10, 14)), "interval elapsed");
        scan.count(span(15, 5, 70), max_bytes);
        assert_eq!(
            scan.close(false),
            Some((10, 19)),
            "reached at a batch boundary"
        );
        scan.count(span(20, 5, 10), max_bytes);
        scan.count(span(25, 5, 10), max_bytes);
        assert_eq!(scan.close(true), Some((10, 19)), "later batches wait");
        assert_eq!(scan.scanned_to, 20);

        let mut big = WindowScan::new(0);
        big.count(span(0, 3, 500), max_bytes);
        assert_eq!(big.close(false), Some((0, 2)), "one batch beyond max_bytes");
    }

    /// Writing a window from a real log: only its offsets, no control batch, the same rows
    /// every time.
    #[test]
    fn writes_exactly_the_window() {
        use crate::storage::LogConfig;
        use crate::storage::batch::BatchBuilder;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).expect("log");
        for i in 0..4i64 {
            let mut builder = BatchBuilder::new();
            builder.push(i, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
            builder.push(i, None, Some(b"second"), &[]);
            log.append(&builder.finish(), 1, 0).expect("append");
        }
        let log = RwLock::new(log);
        let spans = scan_batches(&log, 0, 8).expect("scan");
        assert_eq!(spans.len(), 4);
        assert_eq!((spans[1].base_offset, spans[1].next_offset), (2, 4));
        assert!(scan_batches(&log, 0, 3).expect("scan").len() == 2);
        let out = tempfile::tempdir().expect("tempdir");
        let first = out.path().join("p/a.parquet");
        let written = write_window(&log, "t", 0, (2, 5), &first).expect("write");
        assert_eq!(written.records, 4);
        let second = out.path().join("p/b.parquet");
        write_window(&log, "t", 0, (2, 5), &second).expect("write again");
        assert_eq!(
            std::fs::read(&first).expect("first"),
            std::fs::read(&second).expect("second"),
            "the same window gives the same file"
        );
    }
}
