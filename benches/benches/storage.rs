//! Storage benchmarks: append throughput (1 KiB records, batches of 1, 16 and 256 records,
//! fsync after every batch or every 1 MiB), sequential read throughput, and lookups by offset
//! and by time. Every sample writes a fresh log in a temporary directory under
//! `STRATA_BENCH_DIR` (default: the system temp dir), so the disk measured is that one.
//!
//! `cargo bench -p strata-benches --bench storage`; see BENCHMARKS.md for the figures and
//! the raw-disk comparison.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata_server::storage::batch::{BatchBuilder, BatchHeader, split_batches};
use strata_server::storage::{LogConfig, PartitionLog};

const RECORD_BYTES: usize = 1024;
const SYNC_INTERVAL_BYTES: usize = 1 << 20;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).expect("bench directory")
}

/// A batch of `count` records with 1 KiB values and a short key.
fn batch(count: usize, timestamp: i64) -> BytesMut {
    let value = vec![0x5a; RECORD_BYTES];
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        let key = (i as u64).to_be_bytes();
        builder.push(timestamp + i as i64, Some(&key), Some(&value), &[]);
    }
    builder.finish()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for records in [1usize, 16, 256] {
        for (mode, sync_every_bytes) in [
            ("sync_each_batch", 0usize),
            ("sync_each_1MiB", SYNC_INTERVAL_BYTES),
        ] {
            let template = batch(records, 0);
            group.throughput(Throughput::Bytes(template.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(mode, format!("{records}x1KiB")),
                &template,
                |b, template| {
                    b.iter_custom(|iterations| {
                        let dir = bench_dir();
                        let mut log =
                            PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
                        // The log stamps a copy of the header, so one buffer serves every append.
                        let buffer = template.clone();
                        let mut unsynced = 0usize;
                        let start = Instant::now();
                        for _ in 0..iterations {
                            log.append(&buffer, 1, 0).expect("append");
                            unsynced += buffer.len();
                            if unsynced >= sync_every_bytes {
                                log.sync().expect("sync");
                                unsynced = 0;
                            }
                        }
                        log.sync().expect("sync");
                        start.elapsed()
                    });
                },
            );
        }
    }
    group.finish();
}

/// A log of `batches` batches of 256 records (about 256 KiB each) with spread timestamps.
fn filled_log(batches: usize) -> (tempfile::TempDir, PartitionLog) {
    let dir = bench_dir();
    let mut log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    for i in 0..batches {
        let batch = batch(256, i as i64 * 1_000);
        log.append(&batch, 1, 0).expect("append");
    }
    log.sync().expect("sync");
    (dir, log)
}

fn read(c: &mut Criterion) {
    const BATCHES: usize = 1024; // 256 MiB
    let (_dir, log) = filled_log(BATCHES);
    let total_bytes: u64 = log.segments().iter().map(|s| s.size_bytes).sum();
    let mut group = c.benchmark_group("read");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(total_bytes));
    // A consumer's view: fetch 1 MiB at a time from offset 0 and check every batch's CRC-32C,
    // which touches every byte (the page cache is warm: this is the CPU cost of serving).
    group.bench_function("sequential_1MiB_fetches_with_crc", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut bytes = 0usize;
            while offset < log.next_offset() {
                for span in log.read(offset, 1 << 20).expect("read") {
                    for split in split_batches(span) {
                        let (header, stored) = split.expect("batch");
                        BatchHeader::validate(&stored).expect("crc");
                        bytes += stored.len();
                        offset = header.base_offset as u64 + header.offset_count();
                    }
                }
            }
            black_box(bytes)
        });
    });
    group.finish();

    let mut group = c.benchmark_group("lookup");
    let next = log.next_offset();
    let mut probe = 0x9e37_79b9_7f4a_7c15u64;
    group.bench_function("by_offset", |b| {
        b.iter(|| {
            probe = probe
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let offset = probe % next;
            black_box(log.read(offset, 1).expect("read"))
        });
    });
    group.bench_function("by_time", |b| {
        b.iter(|| {
            probe = probe
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let timestamp = (probe % (BATCHES as u64 * 1_000)) as i64;
            black_box(log.offset_for_timestamp(timestamp).expect("lookup"))
        });
    });
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
