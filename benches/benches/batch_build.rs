//! The producer's batch building: 256 records of 1 KiB (and of 100 B) framed into a batch,
//! finished without its CRC and sealed with an idempotent producer's id and sequence, as the
//! client does when it first sends the batch (one CRC pass). The figure is record bytes per
//! second of one core: what encoding costs the client per GB, beside the rest of its produce
//! path. `growing` starts from the builder's small default buffer; `sized` from the size of the
//! batch, as the producer does from the batches before.
//!
//! `cargo bench -p strata-benches --bench batch_build` (seconds; `-- --quick` is enough).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata_server::storage::batch::{BatchBuilder, HEADER_BYTES, seal_producer};

const RECORDS_PER_BATCH: usize = 256;

/// Pushes the records, finishes and seals: the client's whole encoding of one batch.
fn build(value: &[u8], capacity_bytes: usize) -> BytesMut {
    let mut builder = BatchBuilder::with_capacity(capacity_bytes);
    for i in 0..RECORDS_PER_BATCH {
        builder.push(1_700_000_000_000 + i as i64, None, Some(value), &[]);
    }
    let mut batch = builder.finish_unsealed();
    seal_producer(&mut batch, 7, 0, 1_024);
    batch
}

fn batch_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_build");
    for record_bytes in [100usize, 1024] {
        let value = vec![0x5a; record_bytes];
        let batch_bytes = build(&value, 0).len();
        assert!(batch_bytes > HEADER_BYTES + record_bytes * RECORDS_PER_BATCH);
        group.throughput(Throughput::Bytes((record_bytes * RECORDS_PER_BATCH) as u64));
        for (name, capacity_bytes) in [("growing", 0), ("sized", batch_bytes)] {
            group.bench_with_input(
                BenchmarkId::new(name, record_bytes),
                &capacity_bytes,
                |b, &capacity_bytes| b.iter(|| black_box(build(&value, capacity_bytes))),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, batch_build);
criterion_main!(benches);
