//! Kafka's five compression codecs through the gRPC API, against a real server on
//! 127.0.95.1 (this file's address slot):
//!
//! - A batch in each codec, hand-built and sent through the raw `Produce` (snappy both as Java
//!   clients frame it, xerial, and as one raw block, as librdkafka may; zstd also as written
//!   by libzstd's command line), is stored as sent: a raw fetch returns the producer's bytes
//!   exactly, but for the base offset and leader epoch the broker stamps (which the CRC does
//!   not cover). A decoded fetch and the client's own decoding give the records produced.
//! - The Rust client's producer in each codec: its batches are stored compressed with that
//!   codec, and its consumer reads every record back.
//! - A decompression bomb in each codec (one record of zeros just past the cap) is refused as
//!   CORRUPT_BATCH naming the cap, nothing is stored, and the server's peak RSS grows by less
//!   than [`REFUSE_RSS_GROWTH_BYTES_MAX`].

use std::time::Duration;

use bytes::Bytes;
use strata_client::{Client, ProducerConfig, ProducerRecord, StartFrom};
use strata_proto::batch::{
    BatchBuilder, BatchHeader, Compression, DECOMPRESSED_BYTES_MAX, HEADER_BYTES, decode_records,
    split_batches,
};
use strata_proto::v1 as pb;
use strata_tests::server::{Clients, ServerProcess};
use strata_tests::{error_code, proc_status_bytes};

/// This file's loopback address (its slot), with an OS-assigned port.
const LISTEN: &str = "127.0.95.1:0";
/// Bound on each test, start-up included: the first server a test process starts may build
/// the server binary first (see `server_binary`), which takes a minute on a busy machine.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Growth of the server's peak RSS allowed while it refuses the bombs: the streaming check
/// holds a 64 KiB chunk and a codec's own state (the bombs' zstd window is small), never a
/// record.
const REFUSE_RSS_GROWTH_BYTES_MAX: u64 = 64 << 20;
/// Bytes that start every batch and that the broker writes: base offset (0..8) and, after
/// `batch_length`, the partition leader epoch (12..16).
const BASE_OFFSET: std::ops::Range<usize> = 0..8;
const LEADER_EPOCH: std::ops::Range<usize> = 12..16;

/// A records section compressed by libzstd's command line (`zstd -19 --check`, zstd 1.5.4):
/// the three records of `REFERENCE_RECORDS`, see proto's `batch_codec_tests.rs`.
const REFERENCE_ZSTD: &[u8] = include_bytes!("../../proto/src/batch_fixtures/records.zst");
const REFERENCE_RECORDS: &[u8] = include_bytes!("../../proto/src/batch_fixtures/records.bin");

async fn start(topic: &str) -> (tempfile::TempDir, ServerProcess, Clients) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start_on(dir.path(), 1, LISTEN);
    let mut clients = server.clients().await;
    clients.create_topic(topic, 1).await;
    (dir, server, clients)
}

async fn produce(clients: &Clients, topic: &str, batch: Bytes) -> Result<u64, tonic::Status> {
    let request = pb::ProduceRequest {
        request_id: 0,
        topic: topic.to_string(),
        target: Some(pb::produce_request::Target::Partition(0)),
        payload: Some(pb::produce_request::Payload::Batch(batch)),
    };
    let reply = clients.broker.clone().produce(request).await?;
    Ok(reply.into_inner().base_offset)
}

async fn fetch(clients: &Clients, topic: &str, offset: u64, decode: bool) -> pb::FetchResponse {
    clients
        .broker
        .clone()
        .fetch(pb::FetchRequest {
            topic: topic.to_string(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Offset(offset)),
            }),
            decode,
            ..pb::FetchRequest::default()
        })
        .await
        .expect("fetch")
        .into_inner()
}

/// The stored batch at `offset`, as a raw fetch returns it.
async fn stored_batch(clients: &Clients, topic: &str, offset: u64) -> Bytes {
    let reply = fetch(clients, topic, offset, false).await;
    let run = reply.batches.into_iter().next().expect("a stored batch");
    let (header, batch) = split_batches(run)
        .next()
        .expect("one batch")
        .expect("a whole batch");
    assert_eq!(header.base_offset as u64, offset);
    batch
}

/// A batch of `count` records whose values say which codec and record they are, built with
/// `codec` (compressible: a repeated phrase).
fn batch_of(codec: Compression, count: usize) -> (Bytes, Vec<String>) {
    let mut builder = BatchBuilder::new().compression(codec);
    let mut values = Vec::new();
    for i in 0..count {
        let value = format!("{codec} record {i} {}", "stored as sent ".repeat(20));
        builder.push(
            i as i64,
            Some(b"key"),
            Some(value.as_bytes()),
            &[("h", None)],
        );
        values.push(value);
    }
    (builder.finish().freeze(), values)
}

/// `batch` with its records section replaced by `section` under `codec`, CRC fixed.
fn with_section(batch: &[u8], section: &[u8], codec: Compression) -> Bytes {
    let mut bytes = batch[..HEADER_BYTES].to_vec();
    bytes.extend_from_slice(section);
    let batch_length = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) & !0x07;
    let bits = match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    bytes[21..23].copy_from_slice(&(attributes | bits).to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

/// `section` as one raw snappy block (no xerial framing), as librdkafka may send it: the
/// uncompressed length as a varint, then the whole section as one literal (tag 61: a 2-byte
/// length follows). A valid snappy block any decoder reads; it only does not shrink.
fn raw_snappy_literal(section: &[u8]) -> Vec<u8> {
    assert!(!section.is_empty() && section.len() <= 1 << 16);
    let mut block = Vec::new();
    let mut length = section.len();
    while length >= 0x80 {
        block.push((length as u8) | 0x80);
        length >>= 7;
    }
    block.push(length as u8);
    block.push(61 << 2);
    block.extend_from_slice(&((section.len() - 1) as u16).to_le_bytes());
    block.extend_from_slice(section);
    block
}

fn values_of(records: impl IntoIterator<Item = Option<Bytes>>) -> Vec<String> {
    records
        .into_iter()
        .map(|value| String::from_utf8(value.expect("a value").to_vec()).expect("UTF-8"))
        .collect()
}

/// A batch in every codec (and snappy's two framings, and libzstd's own zstd) goes in through
/// the raw Produce and comes back byte for byte, but for the fields the broker stamps; its
/// records decode on the server and on the client to the values sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_is_stored_as_sent_and_reads_back() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, _server, clients) = start("codecs").await;
        let mut cases = Vec::new();
        for codec in Compression::ALL {
            let (batch, values) = batch_of(codec, 20);
            cases.push((format!("{codec}"), codec, batch, values));
        }
        let (plain, values) = batch_of(Compression::None, 20);
        let raw = raw_snappy_literal(&plain[HEADER_BYTES..]);
        let raw_snappy = with_section(&plain, &raw, Compression::Snappy);
        cases.push(("raw snappy".into(), Compression::Snappy, raw_snappy, values));
        let mut reference = BatchBuilder::new();
        reference.push(0, None, None, &[]);
        let reference = reference.finish();
        let mut reference_header = reference[..HEADER_BYTES].to_vec();
        reference_header[23..27].copy_from_slice(&2i32.to_be_bytes());
        reference_header[57..61].copy_from_slice(&3i32.to_be_bytes());
        let reference_values = values_of(
            decode_records(&with_section(
                &reference_header,
                REFERENCE_RECORDS,
                Compression::None,
            ))
            .expect("the reference records decode")
            .into_iter()
            .map(|record| record.value),
        );
        cases.push((
            "libzstd's zstd".into(),
            Compression::Zstd,
            with_section(&reference_header, REFERENCE_ZSTD, Compression::Zstd),
            reference_values,
        ));

        for (name, codec, sent, values) in cases {
            let offset = produce(&clients, "codecs", sent.clone())
                .await
                .unwrap_or_else(|status| panic!("{name}: refused: {}", status.message()));
            let stored = stored_batch(&clients, "codecs", offset).await;
            assert_eq!(stored.len(), sent.len(), "{name}");
            assert_eq!(
                &stored[BASE_OFFSET.end..LEADER_EPOCH.start],
                &sent[BASE_OFFSET.end..LEADER_EPOCH.start],
                "{name}: batch length"
            );
            assert!(
                stored[LEADER_EPOCH.end..] == sent[LEADER_EPOCH.end..],
                "{name}: the stored bytes are the bytes sent"
            );
            let header = BatchHeader::validate(&stored).expect("valid");
            assert_eq!(header.compression(), Ok(codec), "{name}");
            let from_client = values_of(
                decode_records(&stored)
                    .expect("decodes")
                    .into_iter()
                    .map(|record| record.value),
            );
            assert_eq!(from_client, values, "{name}: decoded by the client");
            let decoded = fetch(&clients, "codecs", offset, true).await;
            let from_server = values_of(
                decoded
                    .records
                    .into_iter()
                    .take(values.len())
                    .map(|record| record.value),
            );
            assert_eq!(from_server, values, "{name}: decoded by the server");
            eprintln!(
                "{name}: {} bytes stored as sent, {} records",
                sent.len(),
                values.len()
            );
        }
    })
    .await
    .expect("test timed out");
}

/// The Rust client's producer in each codec: its batches are stored with that codec, and its
/// consumer reads every record back, in order, at the offset its delivery named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_produces_and_consumes_every_codec() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, server, mut clients) = start("client-codecs").await;
        let address = server.endpoint().replace("http://", "");
        let client = Client::connect(&address).await.expect("connect");
        let mut expected = Vec::new();
        for codec in Compression::ALL {
            let producer = client
                .producer(ProducerConfig {
                    compression: codec,
                    linger: Duration::from_millis(20),
                    ..ProducerConfig::default()
                })
                .expect("a producer in every codec");
            let mut deliveries = Vec::new();
            for i in 0..100 {
                let value = format!("{codec} {i} {}", "compressible ".repeat(10));
                let record = ProducerRecord::new("client-codecs", value.clone()).partition(0);
                deliveries.push((value, producer.send(record).await.expect("send")));
            }
            producer.close().await.expect("close");
            let mut first = None;
            for (value, delivery) in deliveries {
                let stored = delivery.await.expect("delivered");
                first.get_or_insert(stored.offset);
                expected.push((stored.offset, value));
            }
            let first = first.expect("100 records");
            let header =
                BatchHeader::validate(&stored_batch(&clients, "client-codecs", first).await)
                    .expect("valid");
            assert_eq!(header.compression(), Ok(codec), "the client compressed");
        }
        let mut consumer = client
            .subscribe("client-codecs", 0, StartFrom::Earliest, Default::default())
            .await
            .expect("subscribe");
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .expect("records within 30 s")
                .expect("next")
                .expect("open");
            let value =
                String::from_utf8(record.value.unwrap_or_default().to_vec()).expect("UTF-8");
            got.push((record.offset, value));
        }
        assert_eq!(got, expected);
        assert_eq!(clients.read_values("client-codecs", 0).await, expected);
    })
    .await
    .expect("test timed out");
}

/// A bomb in each codec (one record of zeros a byte past the cap: 685 bytes of zstd, 16 KB of
/// gzip, 70 KB of LZ4, 790 KB of xerial snappy) is refused as CORRUPT_BATCH naming the cap,
/// four times each; nothing is stored and the server's peak RSS barely moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_in_every_codec_is_refused_in_bounded_memory() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, server, clients) = start("bombs").await;
        let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX + 1];
        let rss_before = proc_status_bytes(server.pid(), "VmRSS");
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut builder = BatchBuilder::new().compression(codec);
            builder.push(0, None, Some(&zeros), &[]);
            let bomb = builder.finish().freeze();
            eprintln!("{codec} bomb: {} bytes on the wire", bomb.len());
            for _ in 0..4 {
                let status = produce(&clients, "bombs", bomb.clone())
                    .await
                    .expect_err("a bomb is refused");
                assert_eq!(
                    error_code(&status),
                    "ERROR_CODE_CORRUPT_BATCH",
                    "{codec}: {}",
                    status.message()
                );
                let cap = format!("more than the limit of {DECOMPRESSED_BYTES_MAX} bytes");
                assert!(
                    status.message().contains(&cap),
                    "{codec}: {:?} should say {cap:?}",
                    status.message()
                );
            }
        }
        let peak = proc_status_bytes(server.pid(), "VmHWM");
        eprintln!(
            "refusing 16 bombs: VmRSS before {} MiB, VmHWM after {} MiB",
            rss_before >> 20,
            peak >> 20
        );
        assert!(
            peak < rss_before + REFUSE_RSS_GROWTH_BYTES_MAX,
            "peak RSS {peak} grew past {rss_before} + {REFUSE_RSS_GROWTH_BYTES_MAX}"
        );
        assert_eq!(fetch(&clients, "bombs", 0, false).await.high_watermark, 0);
    })
    .await
    .expect("test timed out");
}
