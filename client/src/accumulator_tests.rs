//! Unit tests of the accumulator: batch sizing and closing, the sticky partitioner's
//! rotation, codecs, unsealed batches, buffer reuse, what a batch holds until resolved, and
//! what is abandoned when the sender task stops without finishing.

use super::*;
use strata_proto::batch::{BatchHeader, decode_records};

const LINGER: Duration = Duration::from_millis(5);

fn accumulator(batch_bytes_max: usize) -> Accumulator {
    Accumulator::new(
        BatchLimits {
            batch_bytes_max,
            linger: LINGER,
            compression: Compression::None,
            stamped_on_send: false,
            reserved_bytes_max: 32 << 20,
        },
        Partitioner::new(0),
    )
}

fn record(value: &str) -> ProducerRecord {
    ProducerRecord::new("t", value.as_bytes().to_vec()).timestamp_ms(1_000)
}

/// The first byte of each record's value, in order.
fn first_bytes(batch: &ClosedBatch) -> Vec<u8> {
    let records = decode_records(&batch.batch).expect("valid batch");
    assert_eq!(records.len(), batch.records);
    records
        .iter()
        .map(|record| record.value.as_ref().expect("a value")[0])
        .collect()
}

/// A batch holds its records' shares of the buffer until it is dropped (resolved), and
/// each record's future resolves to its own offset.
#[test]
fn a_batch_holds_its_records_buffer_until_resolved() {
    let buffer = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let mut acc = accumulator(1 << 20);
    let now = Instant::now();
    let deliveries: Vec<DeliveryFuture> = (0..3)
        .map(|_| {
            let permit = std::sync::Arc::clone(&buffer)
                .try_acquire_many_owned(10)
                .expect("room");
            acc.append(&record("v").partition(0), 1, Some(permit), now)
                .delivery
        })
        .collect();
    acc.close_all(now);
    let batch = acc.pop_ready().expect("one batch");
    assert_eq!(buffer.available_permits(), 70);
    batch.outcome.stored(0, 40);
    drop(batch.buffer);
    assert_eq!(buffer.available_permits(), 100);
    for (index, mut delivery) in deliveries.into_iter().enumerate() {
        let stored = delivery.try_result().expect("resolved").expect("stored");
        assert_eq!(stored.offset, 40 + index as u64);
    }
}

/// A new batch is sized like the last one closed, but the open batches together are sized
/// for at most `reserved_bytes_max`: after one large batch, one record on each of many
/// partitions does not reserve that size on every one of them.
#[test]
fn open_batches_are_sized_within_the_bound() {
    let reserved_bytes_max = 256 << 10;
    let mut accumulator = Accumulator::new(
        BatchLimits {
            batch_bytes_max: 1 << 20,
            linger: LINGER,
            compression: Compression::None,
            stamped_on_send: false,
            reserved_bytes_max,
        },
        Partitioner::new(0),
    );
    let now = Instant::now();
    let large = ProducerRecord::new("t", vec![7u8; 1024])
        .partition(0)
        .timestamp_ms(1_000);
    for _ in 0..200 {
        accumulator.append(&large, 100, None, now);
    }
    accumulator.close_all(now);
    let last_batch = accumulator.capacity_bytes;
    assert!(last_batch > 200 << 10, "{last_batch}");
    let small = record("x");
    for partition in 1..100 {
        accumulator.append(&small.clone().partition(partition), 100, None, now);
    }
    assert_eq!(accumulator.open["t"][&1].reserved, last_batch);
    assert!(
        accumulator.reserved_bytes <= reserved_bytes_max,
        "{} bytes reserved",
        accumulator.reserved_bytes
    );
    accumulator.close_all(now);
    assert_eq!(accumulator.reserved_bytes, 0);
}

/// The bound really bounds: a batch of one record is never larger than the estimate, for
/// small and large fields and headers.
#[test]
fn size_bound_holds() {
    let records = [
        ProducerRecord::new("t", Vec::new()),
        ProducerRecord::new("t", vec![7u8; 300]).key(vec![1u8; 200]),
        ProducerRecord::new("t", vec![7u8; 70_000])
            .header("trace", vec![0u8; 129])
            .null_header("empty")
            .timestamp_ms(i64::MAX),
    ];
    for record in records {
        let mut builder = BatchBuilder::new();
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
            .collect();
        builder.push(
            record.timestamp_ms.unwrap_or(0),
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        assert!(builder.finish().len() <= single_record_batch_bytes_bound(&record));
    }
}

/// Records lingering together make one batch, closed only when the linger has passed.
#[test]
fn linger_closes_a_batch() {
    let mut acc = accumulator(1 << 20);
    let start = Instant::now();
    for i in 0..3 {
        let record = record("v").partition(1);
        let appended = acc.append(&record, 2, None, start + Duration::from_millis(i));
        assert_eq!(appended.wake_sender, i == 0, "only opening the batch wakes");
    }
    assert_eq!(acc.next_expiry(), Some(start + LINGER));
    acc.close_expired(start + LINGER - Duration::from_millis(1));
    assert!(acc.pop_ready().is_none());
    acc.close_expired(start + LINGER);
    let batch = acc.pop_ready().expect("closed by linger");
    assert_eq!(batch.partition, 1);
    assert_eq!(batch.records, 3);
    let records = decode_records(&batch.batch).expect("valid batch");
    assert_eq!(records.len(), 3);
    assert!(acc.is_empty());
    assert_eq!(acc.next_expiry(), None);
}

/// A record that does not fit closes the open batch; the record starts the next one.
#[test]
fn full_batch_closes() {
    let value = "x".repeat(100);
    let bound = record_bytes_bound(&record(&value));
    // Room for exactly three records at their bound.
    let mut acc = accumulator(HEADER_BYTES + 3 * bound);
    let now = Instant::now();
    let wakes: Vec<bool> = (0..7)
        .map(|i| {
            let value = format!("{i}{}", &value[1..]);
            acc.append(&record(&value).partition(0), 1, None, now)
                .wake_sender
        })
        .collect();
    assert_eq!(wakes, [true, false, false, true, false, false, true]);
    let first = acc.pop_ready().expect("first full batch");
    let second = acc.pop_ready().expect("second full batch");
    assert!(acc.pop_ready().is_none());
    assert_eq!(first_bytes(&first), b"012");
    assert_eq!(first_bytes(&second), b"345");
    assert!(first.id < second.id);
    acc.close_all(now);
    assert_eq!(first_bytes(&acc.pop_ready().expect("flushed")), b"6");
    assert_eq!(acc.next_batch_id(), 3);
}

/// Unkeyed records fill one partition's batch, then move to the next partition when it
/// closes; keyed records go where their key hashes.
#[test]
fn sticky_batches_rotate() {
    let value = "y".repeat(50);
    let bound = record_bytes_bound(&record(&value));
    let mut acc = accumulator(HEADER_BYTES + 2 * bound);
    let now = Instant::now();
    for _ in 0..6 {
        acc.append(&record(&value), 3, None, now);
    }
    acc.close_all(now);
    let batches: Vec<(u32, usize)> = std::iter::from_fn(|| acc.pop_ready())
        .map(|batch| (batch.partition, batch.records))
        .collect();
    assert_eq!(batches, [(0, 2), (1, 2), (2, 2)]);
    let keyed = record(&value).key(b"user-42".to_vec());
    let expected = strata_proto::partitioner::partition_for_key(b"user-42", 3);
    acc.append(&keyed, 3, None, now);
    acc.close_all(now);
    assert_eq!(acc.pop_ready().expect("one batch").partition, expected);
}

/// A flush closes the batches of every topic and partition, in one pass.
#[test]
fn close_all_closes_every_partition() {
    let mut acc = accumulator(1 << 20);
    let now = Instant::now();
    acc.append(&record("a").partition(0), 2, None, now);
    acc.append(&record("b").partition(1), 2, None, now);
    acc.append(
        &ProducerRecord::new("other", b"c".to_vec()).partition(0),
        1,
        None,
        now,
    );
    acc.close_all(now);
    let mut closed = Vec::new();
    while let Some(batch) = acc.pop_ready() {
        let values = first_bytes(&batch);
        closed.push((batch.topic, batch.partition, values));
    }
    closed.sort();
    assert_eq!(
        closed,
        [
            ("other".to_owned(), 0, b"c".to_vec()),
            ("t".to_owned(), 0, b"a".to_vec()),
            ("t".to_owned(), 1, b"b".to_vec()),
        ]
    );
    assert!(acc.is_empty());
}

/// Compressed batches, in every codec, carry the codec and decode back to the records.
#[test]
fn compressed_batches_decode() {
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut acc = Accumulator::new(
            BatchLimits {
                batch_bytes_max: 1 << 20,
                linger: LINGER,
                compression,
                stamped_on_send: false,
                reserved_bytes_max: 32 << 20,
            },
            Partitioner::new(0),
        );
        let now = Instant::now();
        for _ in 0..100 {
            acc.append(&record(&"z".repeat(200)).partition(0), 1, None, now);
        }
        acc.close_all(now);
        let batch = acc.pop_ready().expect("one batch");
        assert!(
            batch.batch.len() < 100 * 200 / 4,
            "{compression}: compressible values compress"
        );
        let header = strata_proto::batch::BatchHeader::parse(&batch.batch).expect("header");
        assert_eq!(header.compression().expect("codec"), compression);
        assert_eq!(decode_records(&batch.batch).expect("decodes").len(), 100);
    }
}

/// A producer that stamps batches when it sends them gets them unsealed (no CRC yet),
/// and the stamp makes them valid; the buffer of a batch is sized from the one before.
#[test]
fn batches_stamped_on_send_close_unsealed() {
    let mut acc = Accumulator::new(
        BatchLimits {
            batch_bytes_max: 1 << 20,
            linger: LINGER,
            compression: Compression::None,
            stamped_on_send: true,
            reserved_bytes_max: 32 << 20,
        },
        Partitioner::new(0),
    );
    let now = Instant::now();
    for round in 0..2 {
        for _ in 0..20 {
            acc.append(&record(&"s".repeat(100)).partition(0), 1, None, now);
        }
        acc.close_all(now);
        let closed = acc.pop_ready().expect("one batch");
        assert!(
            BatchHeader::validate(&closed.batch).is_err(),
            "round {round}: unsealed until stamped"
        );
        let stamp = crate::sequence::Stamp {
            identity: crate::sequence::Identity {
                producer_id: 1,
                producer_epoch: 0,
            },
            base_sequence: round * 20,
        };
        let sealed = crate::sequence::stamp_batch(closed.batch, stamp);
        let header = BatchHeader::validate(&sealed).expect("valid once stamped");
        assert_eq!(header.record_count, 20);
        assert!(acc.capacity_bytes >= sealed.len(), "sized from this batch");
    }
}

/// The buffer of an acknowledged batch is written again by the next batch (no new
/// allocation), only when nothing else holds it, and never more than a few are kept.
#[test]
fn acknowledged_buffers_are_reused() {
    let mut acc = accumulator(1 << 20);
    let now = Instant::now();
    let close_one = |acc: &mut Accumulator| {
        acc.append(&record(&"r".repeat(500)).partition(0), 1, None, now);
        acc.close_all(now);
        acc.pop_ready().expect("one batch").batch
    };
    let first = close_one(&mut acc);
    let first_at = first.as_ptr();
    acc.recycle(first);
    let second = close_one(&mut acc);
    assert_eq!(
        second.as_ptr(),
        first_at,
        "written into the recycled buffer"
    );
    let held = second.clone();
    acc.recycle(second);
    assert!(
        acc.spare.is_empty(),
        "a buffer still held elsewhere is not reused"
    );
    drop(held);
    for _ in 0..SPARE_BUFFERS_MAX + 2 {
        let batch = close_one(&mut acc);
        acc.recycle(batch);
    }
    let batches: Vec<Bytes> = (0..SPARE_BUFFERS_MAX + 2)
        .map(|_| close_one(&mut acc))
        .collect();
    for batch in batches {
        acc.recycle(batch);
    }
    assert_eq!(acc.spare.len(), SPARE_BUFFERS_MAX);
}

/// Abandoning fails every record of the open and the waiting batches, gives their share of the
/// buffer back, and leaves the accumulator empty and marked.
#[test]
fn abandoning_fails_what_it_holds_and_gives_the_buffer_back() {
    let buffer = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let mut acc = accumulator(1 << 20);
    let now = Instant::now();
    let append = |acc: &mut Accumulator| {
        let permit = std::sync::Arc::clone(&buffer)
            .try_acquire_many_owned(10)
            .expect("room");
        acc.append(&record("v").partition(0), 1, Some(permit), now)
            .delivery
    };
    let mut deliveries = vec![append(&mut acc), append(&mut acc)];
    acc.close_all(now);
    deliveries.push(append(&mut acc));
    assert!(
        !acc.ready.is_empty() && !acc.is_empty(),
        "one waiting, one open"
    );
    assert_eq!(buffer.available_permits(), 70);

    assert!(!acc.is_abandoned());
    acc.abandon();
    assert!(acc.is_abandoned() && acc.is_empty());
    assert_eq!(acc.reserved_bytes, 0);
    assert_eq!(buffer.available_permits(), 100);
    for delivery in &mut deliveries {
        let result = delivery.try_result().expect("resolved");
        assert!(matches!(result, Err(crate::Error::Closed)), "{result:?}");
    }
}

/// The sender task's guard abandons the accumulator when the task stops without finishing (a
/// panic: the runtime drops the task), and leaves it alone when the task finished.
#[tokio::test]
async fn the_sender_guard_abandons_unless_the_task_finished() {
    let shared = std::sync::Arc::new(SharedAccumulator::new(accumulator(1 << 20)));
    let mut delivery = shared
        .lock()
        .append(&record("v").partition(0), 1, None, Instant::now())
        .delivery;
    let guard = AbandonUnlessFinished::new(std::sync::Arc::clone(&shared));
    let task = tokio::spawn(async move {
        let _guard = guard;
        tokio::task::yield_now().await;
        panic!("a bug in the sender task");
    });
    assert!(task.await.is_err_and(|error| error.is_panic()));
    assert!(shared.lock().is_abandoned());
    let result = delivery.try_result().expect("resolved");
    assert!(matches!(result, Err(crate::Error::Closed)), "{result:?}");

    let shared = std::sync::Arc::new(SharedAccumulator::new(accumulator(1 << 20)));
    let guard = AbandonUnlessFinished::new(std::sync::Arc::clone(&shared));
    tokio::spawn(async move { guard.finished() })
        .await
        .expect("finished");
    assert!(!shared.lock().is_abandoned());
}
