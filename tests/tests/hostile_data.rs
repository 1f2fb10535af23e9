//! Hostile batch data against a real server: compressed data never costs the server memory
//! beyond named bounds, and nothing that does not decode is ever stored.
//!
//! - A decompression bomb past the cap (LZ4 batches of one 60 MB all-zero record, 247 KB on the
//!   wire for 16 of them) is refused and the server's peak RSS barely moves.
//! - A bomb just under the cap is stored, and fetched with `decode` while the server's peak RSS
//!   stays under [`FETCH_RSS_GROWTH_BYTES_MAX`]: decoded replies are budgeted by decoded bytes.
//! - LZ4-flagged garbage with a valid CRC, and headers claiming more records than the batch
//!   holds (plain and LZ4, up to 2^31-1), are refused as CORRUPT_BATCH; the high watermark does
//!   not move.
//! - Valid LZ4 batches are accepted and read back, raw and decoded.
//!
//! RSS is read from `/proc/PID/status` of the server process: `VmHWM` (peak) against `VmRSS`
//! before the step.

use bytes::Bytes;
use strata_proto::batch::{BatchBuilder, Compression, DECOMPRESSED_BYTES_MAX, decode_records};
use strata_proto::v1 as pb;
use strata_tests::server::{Clients, ServerProcess};
use strata_tests::{error_code, proc_status_bytes};
use tonic::transport::Channel;

/// Growth of the server's peak RSS allowed while it refuses 16 bombs of 60 MB each: the
/// streaming check holds a 64 KiB chunk and the LZ4 decoder's block buffers, never a record.
const REFUSE_RSS_GROWTH_BYTES_MAX: u64 = 64 << 20;
/// Growth of the server's peak RSS allowed while it serves a partition of [`UNDER_CAP_BATCHES`]
/// batches that each decode to almost [`DECOMPRESSED_BYTES_MAX`] (16 MiB), with `decode` and a
/// 64 MiB `max_bytes`: a reply holds at most 64 MiB of records, plus the 16 MiB batch decoded
/// and dropped for passing the budget, plus the 64 MiB encoding (144 MiB measured). Decoding
/// the whole fetch, as before, would take 192 MiB of records plus their encoding.
const FETCH_RSS_GROWTH_BYTES_MAX: u64 = 200 << 20;
/// Batches of the under-the-cap bomb.
const UNDER_CAP_BATCHES: usize = 12;
/// Largest reply the test's client accepts: 64 MiB of records and framing.
const REPLY_BYTES_MAX: usize = 80 << 20;

fn produce_request(topic: &str, batch: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        request_id: 0,
        topic: topic.to_string(),
        target: Some(pb::produce_request::Target::Partition(0)),
        payload: Some(pb::produce_request::Payload::Batch(batch)),
    }
}

/// An LZ4 batch of `count` records whose values are `size` zero bytes.
fn zero_batch(count: usize, size: usize) -> Bytes {
    let zeros = vec![0u8; size];
    let mut builder = BatchBuilder::new().compression(Compression::Lz4);
    for i in 0..count {
        builder.push(i as i64, None, Some(&zeros), &[]);
    }
    builder.finish().freeze()
}

fn fix_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Sets record_count and last_offset_delta to claim `count` records and fixes the CRC.
fn claim_records(bytes: &mut [u8], count: i32) {
    bytes[57..61].copy_from_slice(&count.to_be_bytes());
    bytes[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    fix_crc(bytes);
}

async fn start(topic: &str) -> (tempfile::TempDir, ServerProcess, Clients) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic(topic, 1).await;
    (dir, server, clients)
}

fn broker(clients: &Clients) -> pb::broker_client::BrokerClient<Channel> {
    clients
        .broker
        .clone()
        .max_decoding_message_size(REPLY_BYTES_MAX)
}

async fn fetch(
    clients: &Clients,
    topic: &str,
    offset: u64,
    max_bytes: u32,
    decode: bool,
) -> pb::FetchResponse {
    broker(clients)
        .fetch(pb::FetchRequest {
            topic: topic.to_string(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Offset(offset)),
            }),
            max_bytes,
            decode,
            ..pb::FetchRequest::default()
        })
        .await
        .expect("fetch")
        .into_inner()
}

async fn high_watermark(clients: &Clients, topic: &str) -> u64 {
    fetch(clients, topic, 0, 0, false).await.high_watermark
}

/// Produces `batch` and expects a CORRUPT_BATCH refusal whose message contains `expected`.
async fn expect_corrupt(clients: &Clients, topic: &str, batch: Bytes, expected: &str) {
    let status = broker(clients)
        .produce(produce_request(topic, batch))
        .await
        .expect_err("a hostile batch is refused");
    assert_eq!(
        error_code(&status),
        "ERROR_CODE_CORRUPT_BATCH",
        "{}",
        status.message()
    );
    assert!(
        status.message().contains(expected),
        "{:?} should say {expected:?}",
        status.message()
    );
}

/// 16 LZ4 batches of one 60 MB all-zero record each (the bomb) are refused, naming the
/// cap; nothing is stored and the server's peak RSS grows by less than
/// [`REFUSE_RSS_GROWTH_BYTES_MAX`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_past_the_cap_is_refused_in_bounded_memory() {
    let (_dir, server, clients) = start("bomb").await;
    let bomb = zero_batch(1, 60_000_000);
    eprintln!("bomb batch: {} bytes on the wire", bomb.len());
    let rss_before = proc_status_bytes(server.pid(), "VmRSS");
    for _ in 0..16 {
        expect_corrupt(
            &clients,
            "bomb",
            bomb.clone(),
            &format!("more than the limit of {DECOMPRESSED_BYTES_MAX} bytes"),
        )
        .await;
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
    assert_eq!(high_watermark(&clients, "bomb").await, 0);
}

/// [`UNDER_CAP_BATCHES`] LZ4 batches of one record of almost 16 MiB of zeros are stored, and
/// read back with `decode` and a 64 MiB `max_bytes`: each reply stops at the decoded budget
/// (four records), every record comes back once, and the server's peak RSS grows by less than
/// [`FETCH_RSS_GROWTH_BYTES_MAX`]. With the default 1 MiB budget a reply is one batch; so is
/// each message of a decoded subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bomb_under_the_cap_is_fetched_with_decode_in_bounded_memory() {
    let (_dir, server, clients) = start("near-cap").await;
    let value_bytes = DECOMPRESSED_BYTES_MAX - 1024;
    let batch = zero_batch(1, value_bytes);
    for _ in 0..UNDER_CAP_BATCHES {
        broker(&clients)
            .produce(produce_request("near-cap", batch.clone()))
            .await
            .expect("a batch under the cap is accepted");
    }
    assert_eq!(
        high_watermark(&clients, "near-cap").await,
        UNDER_CAP_BATCHES as u64
    );

    let small = fetch(&clients, "near-cap", 0, 0, true).await;
    assert_eq!(
        small.records.len(),
        1,
        "a 1 MiB budget still returns one batch"
    );
    assert_eq!(small.next_offset, 1);

    let rss_before = proc_status_bytes(server.pid(), "VmRSS");
    let mut offset = 0;
    let mut replies = 0;
    while offset < UNDER_CAP_BATCHES as u64 {
        let reply = fetch(&clients, "near-cap", offset, 64 << 20, true).await;
        assert!(
            !reply.records.is_empty(),
            "a reply at {offset} makes progress"
        );
        assert!(reply.records.len() <= 4, "{} records", reply.records.len());
        for record in &reply.records {
            assert_eq!(record.offset, offset);
            let value = record.value.as_ref().expect("value");
            assert_eq!(value.len(), value_bytes);
            assert!(value.iter().all(|byte| *byte == 0));
            offset += 1;
        }
        assert_eq!(reply.next_offset, offset);
        replies += 1;
    }
    // A decoded subscription is budgeted the same way: each message carries one batch (the
    // decoded budget of a message is the 1 MiB chunk), never the whole 1 MiB of stored batches
    // expanded, and credit counts decoded bytes, so at most 32 MiB of them wait to be sent.
    let (requests, inbound) = tokio::sync::mpsc::channel(4);
    for request in [
        pb::subscribe_request::Request::Start(pb::subscribe_request::Start {
            topic: "near-cap".to_string(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Offset(0)),
            }),
            decode: true,
        }),
        pb::subscribe_request::Request::Credit(pb::subscribe_request::Credit { bytes: 32 << 20 }),
    ] {
        requests
            .send(pb::SubscribeRequest {
                request: Some(request),
            })
            .await
            .expect("queue a request");
    }
    let mut stream = broker(&clients)
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .expect("subscribe")
        .into_inner();
    let mut offset = 0;
    while offset < UNDER_CAP_BATCHES as u64 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .expect("a message")
            .expect("the stream stays open");
        assert_eq!(message.records.len(), 1, "one batch per message");
        assert_eq!(message.records[0].offset, offset);
        offset += 1;
        assert_eq!(message.next_offset, offset);
        let credit = pb::subscribe_request::Request::Credit(pb::subscribe_request::Credit {
            bytes: value_bytes as u64,
        });
        requests
            .send(pb::SubscribeRequest {
                request: Some(credit),
            })
            .await
            .expect("grant credit");
    }
    drop(requests);

    let peak = proc_status_bytes(server.pid(), "VmHWM");
    eprintln!(
        "{replies} decoded fetches and a decoded subscription of {UNDER_CAP_BATCHES} x {value_bytes} bytes: VmRSS before {} \
         MiB, VmHWM after {} MiB",
        rss_before >> 20,
        peak >> 20
    );
    assert!(
        peak < rss_before + FETCH_RSS_GROWTH_BYTES_MAX,
        "peak RSS {peak} grew past {rss_before} + {FETCH_RSS_GROWTH_BYTES_MAX}"
    );
}

/// LZ4-flagged garbage under a valid CRC, and the 80-byte batch claiming 2^31-1
/// records, are refused as CORRUPT_BATCH; the high watermark stays where the valid records
/// left it and those records still read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_garbage_with_a_valid_crc_is_refused_and_nothing_stored() {
    let (_dir, _server, mut clients) = start("garbage").await;
    let mut valid = BatchBuilder::new();
    for i in 0..5 {
        valid.push(i, None, Some(format!("v{i}").as_bytes()), &[]);
    }
    broker(&clients)
        .produce(produce_request("garbage", valid.finish().freeze()))
        .await
        .expect("valid batch");

    let mut garbage = zero_batch(3, 100).to_vec();
    for (index, byte) in garbage[61..].iter_mut().enumerate() {
        *byte = (index as u8).wrapping_mul(151) ^ 0xa5;
    }
    fix_crc(&mut garbage);
    expect_corrupt(
        &clients,
        "garbage",
        Bytes::from(garbage),
        "do not decompress",
    )
    .await;

    // 80 bytes on the wire: a header, LZ4 flag and 19 bytes of junk, claiming i32::MAX records.
    let mut huge_claim = vec![0u8; 80];
    huge_claim[8..12].copy_from_slice(&(80i32 - 12).to_be_bytes());
    huge_claim[16] = 2;
    huge_claim[21..23].copy_from_slice(&3i16.to_be_bytes());
    huge_claim[61..].fill(0x42);
    claim_records(&mut huge_claim, i32::MAX);
    expect_corrupt(
        &clients,
        "garbage",
        Bytes::from(huge_claim),
        "do not decompress",
    )
    .await;

    assert_eq!(high_watermark(&clients, "garbage").await, 5);
    let values = clients.read_values("garbage", 0).await;
    let expected: Vec<(u64, String)> = (0..5).map(|i| (i, format!("v{i}"))).collect();
    assert_eq!(values, expected);
}

/// A header that claims more records than the batch holds, plain or LZ4 (so the count is only
/// visible after decompression), is refused; so is one that claims fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_claiming_more_records_than_held_is_refused() {
    let (_dir, _server, clients) = start("claims").await;
    for codec in [Compression::None, Compression::Lz4] {
        for claimed in [3, 1_000, i32::MAX, 1] {
            let mut builder = BatchBuilder::new().compression(codec);
            builder.push(0, None, Some(b"a"), &[]);
            builder.push(1, None, Some(b"b"), &[]);
            let mut batch = builder.finish().to_vec();
            claim_records(&mut batch, claimed);
            expect_corrupt(
                &clients,
                "claims",
                Bytes::from(batch),
                &format!("declares {claimed} records but holds 2"),
            )
            .await;
        }
    }
    assert_eq!(high_watermark(&clients, "claims").await, 0);
}

/// Valid LZ4 batches are accepted as they are and read back: the raw batches decode on the
/// client to the values produced, and the server's decoded fetch gives the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_lz4_batches_are_accepted_and_read_back() {
    let (_dir, _server, mut clients) = start("lz4").await;
    let mut expected = Vec::new();
    for batch_number in 0..5u64 {
        let mut builder = BatchBuilder::new().compression(Compression::Lz4);
        for i in 0..20u64 {
            let value = format!("batch {batch_number} record {i} {}", "x".repeat(200));
            builder.push(
                i as i64,
                Some(b"k"),
                Some(value.as_bytes()),
                &[("h", Some(b"v"))],
            );
            expected.push((batch_number * 20 + i, value));
        }
        let reply = broker(&clients)
            .produce(produce_request("lz4", builder.finish().freeze()))
            .await
            .expect("valid LZ4 batch")
            .into_inner();
        assert_eq!(reply.base_offset, batch_number * 20);
    }
    assert_eq!(clients.read_values("lz4", 0).await, expected);
    let raw = fetch(&clients, "lz4", 0, 0, false).await;
    let mut from_raw = Vec::new();
    for run in raw.batches {
        for split in strata_proto::batch::split_batches(run) {
            let (header, batch) = split.expect("whole batches");
            assert_eq!(header.compression(), Ok(Compression::Lz4));
            for record in decode_records(&batch).expect("stored LZ4 batch decodes") {
                let value = record.value.expect("value");
                from_raw.push((
                    record.offset,
                    String::from_utf8(value.to_vec()).expect("utf8"),
                ));
            }
        }
    }
    assert_eq!(from_raw, expected);
}
