//! The batch checksum (CRC-32C over a batch from its attributes on) as the broker computes it
//! validating a produced batch and the client sealing one (`batch::crc32c`: crc-fast's folding
//! from `FOLDED_CRC_MIN_BYTES` up, crc32c below), against the `crc32c` crate alone, in one run
//! so the two compare on this noisy machine. Sizes: a batch of a few small records, the
//! crossover, a 16 KiB batch (a Kafka client's default), 256 records of 1 KiB, 1 MiB.
//!
//! `cargo bench -p strata-benches --bench batch_crc` (`-- --quick` is enough).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata_server::storage::batch;

fn batch_crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_crc");
    let bytes: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for size in [
        1_000usize,
        batch::FOLDED_CRC_MIN_BYTES,
        16_384,
        264_000,
        1 << 20,
    ] {
        let input = &bytes[..size];
        assert_eq!(batch::crc32c(input), crc32c::crc32c(input));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("batch_crc32c", size), input, |b, input| {
            b.iter(|| batch::crc32c(black_box(input)));
        });
        group.bench_with_input(BenchmarkId::new("crc32c_crate", size), input, |b, input| {
            b.iter(|| crc32c::crc32c(black_box(input)));
        });
    }
    group.finish();
}

criterion_group!(benches, batch_crc);
criterion_main!(benches);
