//! Tests of the five codecs: round trips, batches written by the reference tools (libzstd's
//! and gzip's command lines, the lz4 command line), each codec's own framing (xerial and raw
//! snappy, several gzip members and zstd frames), damaged and truncated input refused, and
//! decompression bombs refused with the memory of the validation measured.
//!
//! The fixtures in `batch_fixtures/` were made once with the tools on Debian 12: `records.bin`
//! is a records section (3 records, values of repeated text), `records.zst` is
//! `zstd -19 --check` of it (zstd 1.5.4), `records.gz` is `gzip -9 -n`, `records.lz4` is
//! `lz4 -9`; `two-records.bin` is two small records, `two-frames.zst` one `zstd --check` frame
//! per record, `two-members.gz` one `gzip -n` member per record.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;

use super::tests::{COMPRESSED, batch_with_section, batch_with_stored, fix_crc, section_of};
use super::*;

const RECORDS: &[u8] = include_bytes!("batch_fixtures/records.bin");
const RECORDS_ZSTD: &[u8] = include_bytes!("batch_fixtures/records.zst");
const RECORDS_GZIP: &[u8] = include_bytes!("batch_fixtures/records.gz");
const RECORDS_LZ4: &[u8] = include_bytes!("batch_fixtures/records.lz4");
const TWO_RECORDS: &[u8] = include_bytes!("batch_fixtures/two-records.bin");
const TWO_ZSTD_FRAMES: &[u8] = include_bytes!("batch_fixtures/two-frames.zst");
const TWO_GZIP_MEMBERS: &[u8] = include_bytes!("batch_fixtures/two-members.gz");

/// Counts the bytes each thread holds allocated, so a test can measure the peak of one call
/// while other tests run on other threads.
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down has no counters left and is not measured.
    let _ = LIVE_BYTES.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(pointer, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            // Both blocks may be live for a moment: count the new one first.
            count(new_size as isize);
            count(-(layout.size() as isize));
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the most bytes this thread held allocated at once
/// during it, beyond what it held before.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE_BYTES.with(Cell::get);
    PEAK_BYTES.with(|peak| peak.set(start));
    let result = f();
    let peak = PEAK_BYTES.with(Cell::get);
    (result, (peak - start).max(0) as usize)
}

/// Values decoded from `batch`, checked against the header's record count.
fn values_of(batch: &[u8]) -> Vec<Option<Bytes>> {
    let batch = Bytes::copy_from_slice(batch);
    let decoded = decode_batch(&batch).expect("decodes");
    let validated = validate_batch(&batch, DECOMPRESSED_BYTES_MAX).expect("validates");
    assert_eq!(validated.records_bytes, decoded.records_bytes);
    assert_eq!(
        decoded.records.len(),
        validated.header.record_count as usize
    );
    decoded
        .records
        .into_iter()
        .map(|record| record.value)
        .collect()
}

/// Every codec's builder output decodes to the records pushed, shrinks repetitive data, and
/// carries its codec's attribute bits.
#[test]
fn every_codec_round_trips_and_shrinks() {
    let build = |codec: Compression| {
        let mut builder = BatchBuilder::new().compression(codec);
        for i in 0..200 {
            let value = format!("event {} of a repetitive stream ", i % 7).repeat(20);
            builder.push(
                i,
                Some(b"key"),
                Some(value.as_bytes()),
                &[("h", Some(b"v"))],
            );
        }
        builder.finish().freeze()
    };
    let plain = build(Compression::None);
    let expected = decode_records(&plain).expect("plain decodes");
    for codec in COMPRESSED {
        let batch = build(codec);
        let header = BatchHeader::validate(&batch).expect("valid");
        assert_eq!(header.compression(), Ok(codec));
        assert!(
            batch.len() * 5 < plain.len(),
            "{codec}: {} bytes vs {} plain",
            batch.len(),
            plain.len()
        );
        assert_eq!(
            decode_records(&batch).as_ref(),
            Ok(&expected),
            "{codec} decodes"
        );
        let validated = validate_batch(&batch, DECOMPRESSED_BYTES_MAX).expect("validates");
        assert_eq!(validated.records_bytes, plain.len() - HEADER_BYTES);
    }
}

/// Records compressed by the reference tools (libzstd with a content checksum, gzip, lz4)
/// decode to the same records as the uncompressed section.
#[test]
fn records_compressed_by_reference_tools_decode() {
    let expected = values_of(&batch_with_stored(RECORDS, 3, Compression::None));
    assert_eq!(expected.len(), 3);
    for (codec, stored) in [
        (Compression::Zstd, RECORDS_ZSTD),
        (Compression::Gzip, RECORDS_GZIP),
        (Compression::Lz4, RECORDS_LZ4),
    ] {
        let batch = batch_with_stored(stored, 3, codec);
        assert_eq!(values_of(&batch), expected, "{codec}");
    }
}

/// A zstd section of several frames (one per record, from libzstd), with skippable frames
/// before, between and after, decodes whole.
#[test]
fn zstd_reads_every_frame_and_skips_skippable_ones() {
    let expected = values_of(&batch_with_stored(TWO_RECORDS, 2, Compression::None));
    let batch = batch_with_stored(TWO_ZSTD_FRAMES, 2, Compression::Zstd);
    assert_eq!(values_of(&batch), expected);

    let skippable = |payload: &[u8]| {
        let mut frame = 0x184D_2A5Au32.to_le_bytes().to_vec();
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    let split = TWO_ZSTD_FRAMES.len() / 2;
    let mut stored = skippable(b"before");
    stored.extend_from_slice(&TWO_ZSTD_FRAMES[..split]);
    stored.extend_from_slice(&skippable(b""));
    stored.extend_from_slice(&TWO_ZSTD_FRAMES[split..]);
    stored.extend_from_slice(&skippable(b"after"));
    let batch = batch_with_stored(&stored, 2, Compression::Zstd);
    assert_eq!(values_of(&batch), expected);
}

/// A zstd frame whose content checksum or declared content size is wrong is refused, as
/// libzstd refuses it on a Kafka consumer; so are trailing bytes that are no frame.
#[test]
fn zstd_checks_checksum_size_and_trailing_bytes() {
    let refused = |stored: &[u8], what: &str| {
        let batch = batch_with_stored(stored, 3, Compression::Zstd);
        let error = validate_batch(&batch, DECOMPRESSED_BYTES_MAX).expect_err(what);
        assert!(
            matches!(
                error,
                BatchError::Decompression {
                    codec: Compression::Zstd,
                    ..
                }
            ),
            "{what}: {error}"
        );
        assert!(decode_batch(&Bytes::from(batch)).is_err(), "{what}");
        error.to_string()
    };
    let mut checksum = RECORDS_ZSTD.to_vec();
    *checksum.last_mut().expect("not empty") ^= 1;
    let message = refused(&checksum, "checksum");
    assert!(message.contains("checksum"), "{message}");

    // The frame header of records.zst: magic, descriptor 0x64 (single segment, 2-byte content
    // size, checksum), then the content size minus 256, little-endian.
    assert_eq!(RECORDS_ZSTD[4], 0x64);
    let mut size = RECORDS_ZSTD.to_vec();
    let declared = u16::from_le_bytes([size[5], size[6]]) + 256;
    assert_eq!(usize::from(declared), RECORDS.len());
    size[5..7].copy_from_slice(&(declared - 256 + 1).to_le_bytes());
    refused(&size, "content size");

    let mut trailing = RECORDS_ZSTD.to_vec();
    trailing.extend_from_slice(b"garbage!");
    let message = refused(&trailing, "trailing bytes");
    assert!(message.contains("magic"), "{message}");
}

/// A zstd frame header that asks for a window past `ZSTD_WINDOW_BYTES_MAX` (a 2 GiB window,
/// or a single-segment frame claiming 1 TiB of content) is refused before anything is
/// allocated for it, naming both sizes.
#[test]
fn zstd_window_past_the_bound_is_refused_before_allocating() {
    // Descriptor 0x00: no single segment, no content size, no checksum; window descriptor
    // 0xA8: exponent 21, mantissa 0, a window of 2^(10 + 21) bytes; then an empty last block.
    let windowed: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xA8, 0x01, 0x00, 0x00];
    // Descriptor 0xE0: single segment, 8-byte content size of 1 TiB.
    let mut sized = vec![0x28, 0xb5, 0x2f, 0xfd, 0xE0];
    sized.extend_from_slice(&(1u64 << 40).to_le_bytes());
    sized.extend_from_slice(&[0x01, 0x00, 0x00]);
    for (stored, what) in [(windowed, "window"), (&sized[..], "content size")] {
        let batch = Bytes::from(batch_with_stored(stored, 1, Compression::Zstd));
        let (result, peak) = peak_bytes(|| validate_batch(&batch, DECOMPRESSED_BYTES_MAX));
        let error = result.expect_err(what);
        let message = error.to_string();
        assert!(message.contains("window"), "{what}: {message}");
        assert!(
            message.contains(&ZSTD_WINDOW_BYTES_MAX.to_string()),
            "{what}: {message}"
        );
        assert!(peak < 1 << 20, "{what}: {peak} bytes allocated");
        assert!(decode_batch(&batch).is_err(), "{what}");
    }
}

/// A zstd frame whose window is the bound exactly (16 MiB) decodes; the next window size
/// zstd can declare (18 MiB) is refused. Each frame holds the records as one raw block.
#[test]
fn zstd_window_at_the_bound_is_accepted() {
    let frame = |window_descriptor: u8| {
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, window_descriptor];
        // Block header: last block, raw, its size; 3 bytes little-endian.
        let block_header = ((RECORDS.len() as u32) << 3) | 1;
        frame.extend_from_slice(&block_header.to_le_bytes()[..3]);
        frame.extend_from_slice(RECORDS);
        batch_with_stored(&frame, 3, Compression::Zstd)
    };
    assert_eq!(ZSTD_WINDOW_BYTES_MAX, 16 << 20);
    // Exponent 14, mantissa 0: 2^(10 + 14) bytes.
    let expected = values_of(&batch_with_stored(RECORDS, 3, Compression::None));
    assert_eq!(values_of(&frame(14 << 3)), expected);
    // Mantissa 1: 2^24 + 2^24 / 8 bytes.
    let error =
        validate_batch(&frame((14 << 3) | 1), DECOMPRESSED_BYTES_MAX).expect_err("past the bound");
    assert!(error.to_string().contains("window"), "{error}");
}

/// Snappy records decode both as Java clients frame them (xerial: magic, versions, blocks,
/// including an empty block) and as librdkafka may send them (one raw block), to the same
/// records.
#[test]
fn snappy_xerial_and_raw_both_decode() {
    let section = section_of(&[b"one", &[b'x'; 100_000], b"three"], &[("h", Some(b"v"))]);
    let expected = values_of(&batch_with_section(&section, 3, Compression::None));

    let xerial = super::codec::compress(Compression::Snappy, &section).expect("compressed");
    assert_eq!(&xerial[..8], b"\x82SNAPPY\x00");
    assert_eq!(&xerial[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
    let batch = batch_with_stored(&xerial, 3, Compression::Snappy);
    assert_eq!(values_of(&batch), expected, "xerial, several blocks");

    let raw = snap::raw::Encoder::new()
        .compress_vec(&section)
        .expect("compresses");
    let batch = batch_with_stored(&raw, 3, Compression::Snappy);
    assert_eq!(values_of(&batch), expected, "one raw block");

    // Xerial with one block for everything, after an empty block.
    let mut single = xerial[..16].to_vec();
    single.extend_from_slice(&0u32.to_be_bytes());
    single.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    single.extend_from_slice(&raw);
    let batch = batch_with_stored(&single, 3, Compression::Snappy);
    assert_eq!(values_of(&batch), expected, "xerial, one block");
}

/// Xerial framing that is cut short (in the header, in a block's length, in a block) is
/// refused as not decompressing.
#[test]
fn snappy_xerial_damage_is_refused() {
    let section = section_of(&[b"one", b"two"], &[]);
    let xerial = super::codec::compress(Compression::Snappy, &section).expect("compressed");
    let mut long_block = xerial.clone();
    long_block[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    for (stored, what) in [
        (&xerial[..12], "header"),
        (&xerial[..18], "block length"),
        (&xerial[..xerial.len() - 1], "block"),
        (&long_block[..], "block past the end"),
    ] {
        let batch = batch_with_stored(stored, 2, Compression::Snappy);
        let error = validate_batch(&batch, DECOMPRESSED_BYTES_MAX).expect_err(what);
        assert!(
            matches!(
                error,
                BatchError::Decompression {
                    codec: Compression::Snappy,
                    ..
                }
            ),
            "{what}: {error}"
        );
        assert!(decode_batch(&Bytes::from(batch)).is_err(), "{what}");
    }
}

/// LZ4 frames Kafka's Java reader refuses are refused: dependent (linked) blocks, a
/// dictionary, a reserved bit, another version, another frame after the first.
#[test]
fn lz4_frames_kafka_refuses_are_refused() {
    let section = section_of(&[b"one", b"two"], &[]);
    let frame = super::codec::compress(Compression::Lz4, &section).expect("compressed");
    // The FLG byte follows the 4-byte magic: version 01, independent blocks (bit 5).
    assert_eq!(frame[4] & 0xE0, 0x60);
    let mut linked = frame.clone();
    linked[4] &= !0x20;
    let mut dictionary = frame.clone();
    dictionary[4] |= 0x01;
    let mut reserved = frame.clone();
    reserved[5] |= 0x01;
    let mut version = frame.clone();
    version[4] ^= 0xC0;
    let mut two_frames = frame.clone();
    two_frames.extend_from_slice(&frame);
    for (stored, what, says) in [
        (linked, "linked blocks", "independent"),
        (dictionary, "dictionary", "dictionary"),
        (reserved, "reserved bit", "reserved"),
        (version, "version", "version"),
        (two_frames, "two frames", "follow the LZ4 frame"),
    ] {
        let batch = batch_with_stored(&stored, 2, Compression::Lz4);
        let error = validate_batch(&batch, DECOMPRESSED_BYTES_MAX).expect_err(what);
        assert!(
            matches!(
                error,
                BatchError::Decompression {
                    codec: Compression::Lz4,
                    ..
                }
            ),
            "{what}: {error}"
        );
        assert!(error.to_string().contains(says), "{what}: {error}");
        assert!(decode_batch(&Bytes::from(batch)).is_err(), "{what}");
    }
}

/// A raw snappy block that claims no bytes but carries some is refused, not read as empty.
#[test]
fn snappy_block_claiming_nothing_with_bytes_is_refused() {
    // Varint 0, then a literal of one byte that the claim has no room for.
    let stored: &[u8] = &[0x00, 0x00, b'x'];
    let batch = batch_with_stored(stored, 1, Compression::Snappy);
    let error = validate_batch(&batch, DECOMPRESSED_BYTES_MAX).expect_err("bytes past the claim");
    assert!(
        matches!(
            error,
            BatchError::Decompression {
                codec: Compression::Snappy,
                ..
            }
        ),
        "{error}"
    );
}

/// A raw snappy block whose header claims more than the bound (4 GiB) is refused from its
/// header, before any buffer is allocated for it.
#[test]
fn snappy_claimed_length_past_the_bound_is_refused_before_allocating() {
    // The varint 0xFFFFFFFF: snappy's largest length, then a literal of one byte.
    let claim: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00];
    for stored in [claim.to_vec(), {
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend_from_slice(&(claim.len() as u32).to_be_bytes());
        xerial.extend_from_slice(claim);
        xerial
    }] {
        let batch = Bytes::from(batch_with_stored(&stored, 1, Compression::Snappy));
        let (result, peak) = peak_bytes(|| validate_batch(&batch, DECOMPRESSED_BYTES_MAX));
        assert!(
            matches!(
                result,
                Err(BatchError::RecordsTooLarge {
                    at_least_bytes: 0xFFFF_FFFF,
                    limit_bytes: DECOMPRESSED_BYTES_MAX,
                })
            ),
            "{result:?}"
        );
        assert!(peak < 1 << 20, "{peak} bytes allocated");
        assert!(matches!(
            decode_batch(&batch),
            Err(BatchError::RecordsTooLarge { .. })
        ));
    }
}

/// gzip sections of several members (as a gzip stream may be) decode whole; bytes after the
/// last member that are no member, and a damaged CRC-32 trailer, are refused.
#[test]
fn gzip_reads_every_member_and_checks_trailers() {
    let expected = values_of(&batch_with_stored(TWO_RECORDS, 2, Compression::None));
    let batch = batch_with_stored(TWO_GZIP_MEMBERS, 2, Compression::Gzip);
    assert_eq!(values_of(&batch), expected);

    let mut trailing = TWO_GZIP_MEMBERS.to_vec();
    trailing.extend_from_slice(b"garbage!");
    let mut trailer = RECORDS_GZIP.to_vec();
    let crc_at = trailer.len() - 8;
    trailer[crc_at] ^= 1;
    for (stored, count, what) in [
        (&trailing, 2, "trailing bytes"),
        (&trailer, 3, "trailer CRC"),
    ] {
        let batch = batch_with_stored(stored, count, Compression::Gzip);
        let error = validate_batch(&batch, DECOMPRESSED_BYTES_MAX).expect_err(what);
        assert!(
            matches!(
                error,
                BatchError::Decompression {
                    codec: Compression::Gzip,
                    ..
                }
            ),
            "{what}: {error}"
        );
        assert!(decode_batch(&Bytes::from(batch)).is_err(), "{what}");
    }
}

/// Every truncation of every codec's compressed records (the CRC fixed so the cut reaches the
/// codec) is refused by the validator and the decoder, and never panics: a cut either breaks
/// the framing or loses records the header counts.
#[test]
fn truncated_compressed_records_are_refused() {
    let section = section_of(&[b"one", &[b'y'; 3000], b"three"], &[("h", None)]);
    for codec in COMPRESSED {
        let whole = batch_with_section(&section, 3, codec);
        let stored = &whole[HEADER_BYTES..];
        for cut in 0..stored.len() {
            let mut batch = batch_with_stored(&stored[..cut], 3, codec);
            fix_crc(&mut batch);
            assert!(
                validate_batch(&batch, DECOMPRESSED_BYTES_MAX).is_err(),
                "{codec} cut at {cut} of {}",
                stored.len()
            );
            assert!(
                decode_batch(&Bytes::from(batch)).is_err(),
                "{codec} cut at {cut}"
            );
        }
    }
}

/// A decompression bomb in each codec (one record of zeros just past the bound, a few hundred
/// KiB or less on the wire) is refused by the validator, naming both sizes, with the memory
/// of the validation under 1 MiB whatever the batch expands to; the decoder refuses it too,
/// holding at most the bound (and half again while its buffer's last doubling copies).
#[test]
fn decompression_bombs_are_refused_with_bounded_memory() {
    let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX + 1];
    for codec in COMPRESSED {
        let mut builder = BatchBuilder::new().compression(codec);
        builder.push(0, None, Some(&zeros), &[]);
        let bomb = builder.finish().freeze();
        assert!(
            bomb.len() < 1 << 20,
            "{codec}: {} bytes on the wire",
            bomb.len()
        );
        let (result, peak) = peak_bytes(|| validate_batch(&bomb, DECOMPRESSED_BYTES_MAX));
        let Err(
            error @ BatchError::RecordsTooLarge {
                at_least_bytes,
                limit_bytes,
            },
        ) = result
        else {
            panic!("{codec}: expected RecordsTooLarge, got {result:?}");
        };
        assert_eq!(limit_bytes, DECOMPRESSED_BYTES_MAX, "{codec}");
        assert!(at_least_bytes > DECOMPRESSED_BYTES_MAX, "{codec}");
        let message = error.to_string();
        assert!(message.contains(&limit_bytes.to_string()), "{message}");
        assert!(message.contains(&at_least_bytes.to_string()), "{message}");
        // The stream's 64 KiB chunk plus the codec's own state (a 32 KiB snappy block, a
        // 64 KiB LZ4 block twice, inflate's window, the builder's zstd window).
        eprintln!(
            "{codec}: {} bytes on the wire, validation peak {peak} bytes",
            bomb.len()
        );
        assert!(
            peak < 1 << 20,
            "{codec}: validating took {peak} bytes at its peak"
        );
        let (result, peak) = peak_bytes(|| decode_batch(&bomb));
        assert!(
            matches!(result, Err(BatchError::RecordsTooLarge { .. })),
            "{codec}: {result:?}"
        );
        assert!(
            peak <= DECOMPRESSED_BYTES_MAX * 3 / 2 + (1 << 20),
            "{codec}: decoding took {peak} bytes at its peak"
        );
        // The same records within a larger bound validate.
        assert!(
            validate_batch(&bomb, 2 * DECOMPRESSED_BYTES_MAX).is_ok(),
            "{codec}"
        );
    }
}

fn compressed_codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(COMPRESSED.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Bombs of any shape (one or two records of one repeated byte, up to 3 MiB each, in any
    /// codec) against a random limit: the validation refuses exactly those whose records
    /// expand past the limit, naming it, accepts the rest with their true size, and its peak
    /// memory stays under 1 MiB whatever the records expand to.
    #[test]
    fn bombs_are_refused_past_the_limit_in_bounded_memory(
        codec in compressed_codec(),
        value_bytes in proptest::collection::vec(0usize..(3 << 20), 1..3),
        fill in any::<u8>(),
        limit_bytes in (64usize << 10)..(2 << 20),
    ) {
        let mut plain = BatchBuilder::new();
        let mut compressed = BatchBuilder::new().compression(codec);
        for size in &value_bytes {
            let value = vec![fill; *size];
            plain.push(0, None, Some(&value), &[]);
            compressed.push(0, None, Some(&value), &[]);
        }
        let section_bytes = plain.size_bytes() - HEADER_BYTES;
        let bomb = compressed.finish().freeze();
        let (result, peak) = peak_bytes(|| validate_batch(&bomb, limit_bytes));
        if section_bytes > limit_bytes {
            let refused = matches!(
                result,
                Err(BatchError::RecordsTooLarge { limit_bytes: named, at_least_bytes })
                    if named == limit_bytes && at_least_bytes > limit_bytes
            );
            prop_assert!(refused, "{} of {} bytes: {:?}", codec, section_bytes, result);
        } else {
            prop_assert_eq!(result.map(|validated| validated.records_bytes), Ok(section_bytes));
        }
        prop_assert!(peak < 1 << 20, "{} of {} bytes: peak {} bytes", codec, section_bytes, peak);
    }
}
