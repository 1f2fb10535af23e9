//! Tests of the batch codec: the layout byte for byte, round trips, every decoding error, and
//! proptests of arbitrary and mutated bytes.

use bytes::BytesMut;
use proptest::prelude::*;

use super::build::{put_varlong, varlong_len};
use super::codec;
use super::decode::STREAM_CHUNK_BYTES;
use super::utf8::Utf8Check;
use super::*;

/// The codecs that compress.
pub(super) const COMPRESSED: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

fn sample() -> BytesMut {
    let mut builder = BatchBuilder::new().producer(7, 2, 100);
    builder.push(1_000, Some(b"k1"), Some(b"v1"), &[("h", Some(b"x"))]);
    builder.push(1_005, None, Some(b""), &[]);
    builder.push(990, Some(b""), None, &[("a", None), ("b", Some(b"yy"))]);
    builder.finish()
}

#[test]
fn header_fields_round_trip() {
    let mut batch = sample();
    stamp(&mut batch, 42, 9);
    let header = BatchHeader::validate(&batch).expect("valid");
    assert_eq!(header.base_offset, 42);
    assert_eq!(header.partition_leader_epoch, 9);
    assert_eq!(header.record_count, 3);
    assert_eq!(header.last_offset_delta, 2);
    assert_eq!(header.first_timestamp, 1_000);
    assert_eq!(header.max_timestamp, 1_005);
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (7, 2, 100)
    );
    assert_eq!(header.total_bytes(), batch.len());
    assert!(!header.is_control());
    assert_eq!(header.offset_count(), 3);
}

#[test]
fn records_round_trip_with_nulls_and_headers() {
    let mut batch = sample();
    stamp(&mut batch, 10, 1);
    let records = decode_records(&batch.freeze()).expect("decodes");
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].offset, 10);
    assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(records[0].headers[0].key, "h");
    assert_eq!(records[1].offset, 11);
    assert_eq!(records[1].key, None);
    assert_eq!(records[1].value.as_deref(), Some(&b""[..]));
    assert_eq!(records[2].timestamp, 990);
    assert_eq!(records[2].value, None);
    assert_eq!(records[2].headers[0].value, None);
    assert_eq!(records[2].headers[1].value.as_deref(), Some(&b"yy"[..]));
}

/// The encoding of one known batch, checked against Kafka's layout byte by byte.
#[test]
fn known_bytes_match_kafka_layout() {
    let mut builder = BatchBuilder::new();
    builder.push(0x0102, Some(b"k"), Some(b"v"), &[]);
    let batch = builder.finish();
    let record: &[u8] = &[
        0x10, // length 8, zigzag
        0x00, // attributes
        0x00, // timestamp delta 0
        0x00, // offset delta 0
        0x02, b'k', // key length 1, key
        0x02, b'v', // value length 1, value
        0x00, // header count 0
    ];
    assert_eq!(&batch[HEADER_BYTES..], record);
    assert_eq!(read_i32(&batch, BATCH_LENGTH_AT), 49 + 9);
    assert_eq!(batch[MAGIC_AT], 2);
    assert_eq!(read_i64(&batch, FIRST_TIMESTAMP_AT), 0x0102);
    assert_eq!(read_i64(&batch, PRODUCER_ID_AT), -1);
    assert_eq!(read_i32(&batch, BASE_SEQUENCE_AT), -1);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    assert_eq!(u32::from_be_bytes(array(&batch, CRC_AT)), crc);
}

#[test]
fn varint_encodings() {
    let table: &[(i64, &[u8])] = &[
        (0, &[0x00]),
        (-1, &[0x01]),
        (1, &[0x02]),
        (63, &[0x7e]),
        (-64, &[0x7f]),
        (64, &[0x80, 0x01]),
        (300, &[0xd8, 0x04]),
        (
            i64::MAX,
            &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ];
    for (value, expected) in table {
        let mut buf = BytesMut::new();
        put_varlong(&mut buf, *value);
        assert_eq!(&buf[..], *expected, "encoding of {value}");
        assert_eq!(varlong_len(*value), expected.len(), "length of {value}");
    }
}

#[test]
fn lz4_batches_round_trip_and_shrink() {
    let mut plain = BatchBuilder::new();
    let mut compressed = BatchBuilder::new().compression(Compression::Lz4);
    for i in 0..100 {
        let value = vec![b'a' + (i % 3) as u8; 500];
        plain.push(i, Some(b"key"), Some(&value), &[("h", Some(b"v"))]);
        compressed.push(i, Some(b"key"), Some(&value), &[("h", Some(b"v"))]);
    }
    let plain = plain.finish().freeze();
    let compressed = compressed.finish().freeze();
    assert!(
        compressed.len() * 10 < plain.len(),
        "{} vs {}",
        compressed.len(),
        plain.len()
    );
    let header = BatchHeader::validate(&compressed).expect("valid");
    assert_eq!(header.compression(), Ok(Compression::Lz4));
    assert_eq!(decode_records(&compressed), decode_records(&plain));
}

#[test]
fn control_batches_carry_kind_and_payload() {
    let batch = control_batch(ControlType::RaftConfChange, 5, b"conf");
    let header = BatchHeader::validate(&batch).expect("valid");
    assert!(header.is_control());
    assert_eq!(header.offset_count(), 0);
    let (kind, payload) = decode_control(&batch.freeze()).expect("decodes");
    assert_eq!(kind, ControlType::RaftConfChange);
    assert_eq!(&payload[..], b"conf");
}

/// Each damage to a valid batch gives the error that names it.
#[test]
fn damaged_batches_give_precise_errors() {
    type Damage = fn(&mut Vec<u8>);
    type Expected = fn(&BatchError) -> bool;
    let table: &[(&str, Damage, Expected)] = &[
        (
            "short buffer",
            |b| b.truncate(30),
            |e| matches!(e, BatchError::Truncated { .. }),
        ),
        (
            "wrong magic",
            |b| b[MAGIC_AT] = 1,
            |e| matches!(e, BatchError::UnsupportedMagic { magic: 1 }),
        ),
        (
            "flipped payload bit",
            |b| {
                let last = b.len() - 2;
                b[last] ^= 1;
            },
            |e| matches!(e, BatchError::CrcMismatch { .. }),
        ),
        (
            "extra trailing byte",
            |b| b.push(0),
            |e| matches!(e, BatchError::LengthMismatch { .. }),
        ),
        (
            "negative last offset delta",
            |b| {
                b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                    .copy_from_slice(&(-1i32).to_be_bytes())
            },
            |e| matches!(e, BatchError::InvalidRecordCount { .. }),
        ),
        (
            "negative batch length",
            |b| b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(-5i32).to_be_bytes()),
            |e| matches!(e, BatchError::InvalidBatchLength { .. }),
        ),
    ];
    for (name, damage, expected) in table {
        let mut bytes = sample().to_vec();
        damage(&mut bytes);
        let error = decode_records(&Bytes::from(bytes)).expect_err(name);
        assert!(expected(&error), "{name}: got {error}");
    }
}

/// Record-level damage is caught even when the CRC is recomputed to match.
#[test]
fn record_level_damage_with_valid_crc() {
    let mut builder = BatchBuilder::new();
    builder.push(1, Some(b"key"), Some(b"value"), &[]);
    let mut bytes = builder.finish().to_vec();
    // Record count says 2 but only one record is present.
    bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&2i32.to_be_bytes());
    bytes[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    let error = decode_records(&Bytes::from(bytes)).expect_err("count mismatch");
    assert!(matches!(
        error,
        BatchError::RecordCountMismatch {
            declared: 2,
            found: 1
        }
    ));
}

proptest! {
    /// Whatever bytes come in, decoding returns a value or an error and never panics.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_records(&Bytes::from(bytes.clone()));
        let _ = decode_control(&Bytes::from(bytes));
    }

    /// A valid header with random record bytes and a fixed-up CRC still never panics.
    #[test]
    fn decoding_random_records_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200), count in 0i32..5) {
        let mut builder = BatchBuilder::new();
        builder.push(0, None, None, &[]);
        let mut bytes = builder.finish().to_vec();
        bytes.truncate(HEADER_BYTES);
        bytes.extend_from_slice(&body);
        let length = (bytes.len() - LOG_OVERHEAD_BYTES) as i32;
        bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
        bytes[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&(count - 1).to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let _ = decode_records(&Bytes::from(bytes));
    }

    /// The framing check is the full check less the CRC, and the records half of validation
    /// agrees with the whole: a batch's bytes are checksummed once, with the same verdict.
    #[test]
    fn framing_and_records_checks_split_the_full_check(
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..3),
        cut in 0usize..8,
    ) {
        let mut bytes = sample().to_vec();
        for (at, mask) in flips {
            let at = at % bytes.len();
            bytes[at] ^= mask;
        }
        bytes.truncate(bytes.len() - cut);
        let full = BatchHeader::validate(&bytes);
        let framing = BatchHeader::validate_framing(&bytes);
        let crc = BatchHeader::parse(&bytes).map(|h| h.check_crc(&bytes).is_ok()).unwrap_or(false);
        match &full {
            Ok(header) => prop_assert_eq!(framing.as_ref().ok(), Some(header)),
            Err(BatchError::CrcMismatch { .. }) => prop_assert!(!crc),
            Err(error) => prop_assert_eq!(framing.as_ref().err(), Some(error)),
        }
        if framing.is_ok() && crc {
            prop_assert!(full.is_ok());
        }
        let whole = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX);
        if let Ok(header) = full {
            let halves = validate_records(header, &bytes, DECOMPRESSED_BYTES_MAX);
            prop_assert_eq!(whole.map(|v| v.records_bytes), halves.map(|v| v.records_bytes));
        } else {
            prop_assert!(whole.is_err());
        }
    }

    /// Encode then decode gives back every field.
    #[test]
    fn encode_decode_round_trip(
        records in proptest::collection::vec(
            (any::<i64>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::collection::vec(("[a-z]{0,5}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..3)),
            1..20),
        base_offset in 0u64..(1 << 62),
    ) {
        let mut builder = BatchBuilder::new();
        for (timestamp, key, value, headers) in &records {
            let headers: Vec<(&str, Option<&[u8]>)> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            builder.push(*timestamp, key.as_deref(), value.as_deref(), &headers);
        }
        let mut batch = builder.finish();
        stamp(&mut batch, base_offset, 3);
        let decoded = decode_records(&batch.freeze()).expect("round trip");
        prop_assert_eq!(decoded.len(), records.len());
        for (index, (record, (timestamp, key, value, headers))) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(record.offset, base_offset + index as u64);
            prop_assert_eq!(record.timestamp, *timestamp);
            prop_assert_eq!(record.key.as_deref(), key.as_deref());
            prop_assert_eq!(record.value.as_deref(), value.as_deref());
            prop_assert_eq!(record.headers.len(), headers.len());
            for (decoded_header, (k, v)) in record.headers.iter().zip(headers) {
                prop_assert_eq!(&decoded_header.key, k);
                prop_assert_eq!(decoded_header.value.as_deref(), v.as_deref());
            }
        }
    }
}

/// Sets `record_count` and `last_offset_delta` to agree with `count` and recomputes the CRC.
fn claim_records(bytes: &mut [u8], count: i32) {
    bytes[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
    bytes[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&(count - 1).to_be_bytes());
    fix_crc(bytes);
}

pub(super) fn fix_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A batch with `section` as its records, compressed with `codec`, header fields claiming
/// `count` records, length and CRC made to match. The record layer is whatever `section`
/// holds.
pub(super) fn batch_with_section(section: &[u8], count: i32, codec: Compression) -> Vec<u8> {
    batch_with_stored(
        &codec::compress(codec, section).unwrap_or_else(|| section.to_vec()),
        count,
        codec,
    )
}

/// A batch whose records section is `stored` as it is (already compressed with `codec`, or
/// not), header fields claiming `count` records, length and CRC made to match.
pub(super) fn batch_with_stored(stored: &[u8], count: i32, codec: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new().compression(codec);
    builder.push(0, None, None, &[]);
    let mut bytes = builder.finish().to_vec();
    bytes.truncate(HEADER_BYTES);
    bytes.extend_from_slice(stored);
    let length = (bytes.len() - LOG_OVERHEAD_BYTES) as i32;
    bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    claim_records(&mut bytes, count);
    bytes
}

/// The records section of an uncompressed batch built from `records` values.
pub(super) fn section_of(values: &[&[u8]], headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(5, Some(b"k"), Some(value), headers);
    }
    builder.finish()[HEADER_BYTES..].to_vec()
}

/// Valid batches, in every codec, pass the streaming validation with the size of their
/// records, and the decoder reports the same size.
#[test]
fn valid_batches_validate_with_their_size() {
    let section = section_of(&[b"one", b"two", b""], &[("h", Some(b"x"))]);
    for codec in Compression::ALL {
        let bytes = Bytes::from(batch_with_section(&section, 3, codec));
        let validated = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).expect("valid");
        assert_eq!(validated.records_bytes, section.len(), "{codec}");
        assert_eq!(validated.header.record_count, 3);
        let decoded = decode_batch(&bytes).expect("decodes");
        assert_eq!(decoded.records.len(), 3);
        assert_eq!(decoded.records_bytes, section.len());
    }
}

/// A header that claims more (or fewer) records than the batch holds is refused, in every
/// codec, by both the validator and the decoder.
#[test]
fn record_count_must_match_the_records() {
    let section = section_of(&[b"a", b"b"], &[]);
    for codec in Compression::ALL {
        for claimed in [1, 3, i32::MAX] {
            let bytes = Bytes::from(batch_with_section(&section, claimed, codec));
            let expected = BatchError::RecordCountMismatch {
                declared: claimed,
                found: 2,
            };
            assert_eq!(
                validate_batch(&bytes, DECOMPRESSED_BYTES_MAX),
                Err(expected.clone()),
                "{codec}, claimed {claimed}"
            );
            assert_eq!(decode_batch(&bytes), Err(expected));
        }
    }
}

/// Bytes flagged with a codec that are not that codec's framing, with a valid CRC, are
/// refused as not decompressing, naming the codec.
#[test]
fn compressed_garbage_with_valid_crc_is_refused() {
    for codec in COMPRESSED {
        let mut bytes = batch_with_section(&section_of(&[b"x"], &[]), 1, codec);
        for (index, byte) in bytes[HEADER_BYTES..].iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(37) ^ 0x5a;
        }
        fix_crc(&mut bytes);
        let expected = |error: &BatchError| matches!(error, BatchError::Decompression { codec: named, .. } if *named == codec);
        let error = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).expect_err("garbage");
        assert!(expected(&error), "{codec}: {error}");
        assert!(error.to_string().starts_with(codec.name()), "{error}");
        let error = decode_batch(&Bytes::from(bytes)).expect_err("garbage");
        assert!(expected(&error), "{codec}: {error}");
    }
}

/// A record of zeros that decompresses past the limit is refused by the validator (which
/// never holds more than a chunk of it) and by the decoder, naming both sizes.
#[test]
fn decompression_bomb_is_refused() {
    let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX + 1];
    let mut builder = BatchBuilder::new().compression(Compression::Lz4);
    builder.push(0, None, Some(&zeros), &[]);
    let bomb = builder.finish().freeze();
    assert!(bomb.len() < 100 << 10, "{} bytes on the wire", bomb.len());
    let error = validate_batch(&bomb, DECOMPRESSED_BYTES_MAX).expect_err("bomb");
    let BatchError::RecordsTooLarge {
        at_least_bytes,
        limit_bytes,
    } = error
    else {
        panic!("expected RecordsTooLarge, got {error}");
    };
    assert_eq!(limit_bytes, DECOMPRESSED_BYTES_MAX);
    assert!(at_least_bytes > DECOMPRESSED_BYTES_MAX);
    let message = error.to_string();
    assert!(message.contains(&limit_bytes.to_string()), "{message}");
    assert!(message.contains(&at_least_bytes.to_string()), "{message}");
    let error = decode_batch(&bomb).expect_err("bomb");
    assert!(
        matches!(error, BatchError::RecordsTooLarge { .. }),
        "{error}"
    );
    // A smaller limit applies to the validator as given.
    let mut builder = BatchBuilder::new().compression(Compression::Lz4);
    builder.push(0, None, Some(&zeros[..1 << 20]), &[]);
    let batch = builder.finish();
    assert!(matches!(
        validate_batch(&batch, 1 << 19),
        Err(BatchError::RecordsTooLarge {
            limit_bytes: 524_288,
            ..
        })
    ));
    assert!(validate_batch(&batch, 2 << 20).is_ok());
}

/// Header keys are checked for UTF-8 across the streaming chunks: a key of two-byte
/// characters that straddles a chunk boundary passes, and one broken byte anywhere fails,
/// in both the streaming validator and the decoder.
#[test]
fn header_keys_are_utf8_across_chunks() {
    // Starts one byte off so some character is cut by the chunk boundary.
    let key = format!("a{}", "é".repeat(STREAM_CHUNK_BYTES));
    let section = section_of(&[b"v"], &[(&key, None)]);
    for codec in Compression::ALL {
        let bytes = Bytes::from(batch_with_section(&section, 1, codec));
        assert!(
            validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).is_ok(),
            "{codec}"
        );
        assert_eq!(
            decode_batch(&bytes).expect("decodes").records[0].headers[0].key,
            key
        );
    }
    let at = section
        .windows(2)
        .rposition(|pair| pair == "é".as_bytes())
        .expect("a two-byte character");
    let mut broken = section.clone();
    broken[at + 1] = b'x';
    for codec in Compression::ALL {
        let bytes = Bytes::from(batch_with_section(&broken, 1, codec));
        let expected = |error: &BatchError| matches!(error, BatchError::MalformedRecord { reason, .. } if *reason == "header key is not UTF-8");
        let error = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).expect_err("broken");
        assert!(expected(&error), "{codec}: {error}");
        let error = decode_batch(&bytes).expect_err("broken");
        assert!(expected(&error), "{codec}: {error}");
    }
}

/// The UTF-8 check over pieces agrees with `str::from_utf8` over the whole, for every way
/// of cutting a few strings in two.
#[test]
fn utf8_check_over_pieces() {
    let cases: &[&[u8]] = &[
        "plain".as_bytes(),
        "é€😀".as_bytes(),
        b"\xc3",
        b"\xc3(",
        b"\xe2\x82",
        b"\xf0\x9f\x98\x80\x80",
        b"a\xff",
    ];
    for case in cases {
        let whole = std::str::from_utf8(case).is_ok();
        for cut in 0..=case.len() {
            let mut check = Utf8Check::default();
            let fed = check.feed(&case[..cut]) && check.feed(&case[cut..]);
            assert_eq!(fed && check.is_complete(), whole, "{case:?} cut at {cut}");
        }
    }
}

/// The lag computation's lookup finds the first record at or after an offset, in every
/// codec.
#[test]
fn timestamp_at_finds_the_first_record_at_an_offset() {
    for codec in Compression::ALL {
        let mut builder = BatchBuilder::new().compression(codec);
        for timestamp in [100, 200, 300] {
            builder.push(timestamp, None, Some(b"v"), &[]);
        }
        let mut batch = builder.finish();
        stamp(&mut batch, 10, 1);
        assert_eq!(timestamp_at(&batch, 0), Ok(Some(100)), "{codec}");
        assert_eq!(timestamp_at(&batch, 11), Ok(Some(200)));
        assert_eq!(timestamp_at(&batch, 12), Ok(Some(300)));
        assert_eq!(timestamp_at(&batch, 13), Ok(None));
    }
}

/// A mutation of a batch's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bits: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match *mutation {
        Mutation::Flip { at, bits } => {
            let at = at % bytes.len();
            bytes[at] ^= bits;
        }
        Mutation::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
        Mutation::Remove { at } => {
            bytes.remove(at % bytes.len());
        }
        Mutation::Truncate { at } => bytes.truncate(at % bytes.len()),
    }
}

/// Where a mutation lands.
#[derive(Debug, Clone, Copy)]
enum Layer {
    /// The records before compression (the mutation survives the codec and the CRC).
    Records,
    /// The stored bytes after the header (the compressed framing, for a codec).
    Stored,
    /// The header claims a different record count.
    Count(i32),
}

fn layer() -> impl Strategy<Value = Layer> {
    prop_oneof![
        Just(Layer::Records),
        Just(Layer::Stored),
        (-2i32..8).prop_map(Layer::Count),
    ]
}

proptest! {
    /// Random mutations of valid batches, in every codec, with the CRC recomputed so each
    /// reaches the record layer: the validator never panics, agrees with the decoder, and
    /// whatever it accepts decodes to exactly the header's record count.
    #[test]
    fn mutated_batches_never_panic_and_accepted_ones_decode(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
        header_value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        codec in codec(),
        layer in layer(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let mut section = section_of(&values, &[("hé", header_value.as_deref())]);
        let mut count = values.len() as i32;
        match layer {
            Layer::Records => mutations.iter().for_each(|m| apply(&mut section, m)),
            Layer::Count(delta) => count = count.saturating_add(delta),
            Layer::Stored => {}
        }
        let mut bytes = batch_with_section(&section, count, codec);
        if let Layer::Stored = layer {
            let mut stored = bytes.split_off(HEADER_BYTES);
            mutations.iter().for_each(|m| apply(&mut stored, m));
            bytes.extend_from_slice(&stored);
            let length = (bytes.len() - LOG_OVERHEAD_BYTES) as i32;
            bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
            fix_crc(&mut bytes);
        }
        let bytes = Bytes::from(bytes);
        let validated = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX);
        let decoded = decode_batch(&bytes);
        match (&validated, &decoded) {
            (Ok(validated), Ok(decoded)) => {
                prop_assert_eq!(decoded.records.len(), validated.header.record_count as usize);
                prop_assert_eq!(validated.records_bytes, decoded.records_bytes);
                for (index, record) in decoded.records.iter().enumerate() {
                    prop_assert_eq!(record.offset, index as u64);
                }
            }
            // Both refuse. The faults may differ: the stream meets a bad record before the
            // bad compressed block behind it, which the whole decompression meets first.
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "validator {:?} but decoder {:?}", validated, decoded),
        }
    }
}

proptest! {
    /// The batch checksum is CRC-32C whichever implementation computes it: equal to the
    /// `crc32c` crate's on any bytes, at any alignment, on both sides of the size where the
    /// implementation changes.
    #[test]
    fn the_batch_checksum_is_crc32c_at_every_size(
        bytes in prop::collection::vec(any::<u8>(), 0..(3 * FOLDED_CRC_MIN_BYTES)),
        skip in 0usize..64,
    ) {
        let bytes = &bytes[skip.min(bytes.len())..];
        prop_assert_eq!(crc32c(bytes), crc32c::crc32c(bytes));
    }
}

/// Large inputs too, and the sizes at the switch from one implementation to the other.
#[test]
fn the_batch_checksum_is_crc32c_on_large_inputs() {
    let bytes: Vec<u8> = (0..1_100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for len in [
        FOLDED_CRC_MIN_BYTES - 1,
        FOLDED_CRC_MIN_BYTES,
        FOLDED_CRC_MIN_BYTES + 1,
        65_536,
        264_001,
        1 << 20,
    ] {
        for skip in [0, 1, 7] {
            let slice = &bytes[skip..skip + len];
            assert_eq!(
                crc32c(slice),
                crc32c::crc32c(slice),
                "{len} bytes from {skip}"
            );
        }
    }
}
