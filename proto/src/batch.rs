//! The record batch: Kafka's RecordBatch v2 (magic 2), byte for byte.
//!
//! This module is the one place the layout is written down. All integers are big-endian; the
//! varints are zigzag-encoded LEB128 (protobuf's `sint32`/`sint64`), at most 5 bytes for a varint
//! and 10 for a varlong.
//!
//! ```text
//! position  size  field
//!        0     8  base_offset             first offset of the batch (stamped by the broker)
//!        8     4  batch_length            bytes after this field, to the end of the batch
//!       12     4  partition_leader_epoch  the raft term that appended the batch (stamped)
//!       16     1  magic                   always 2
//!       17     4  crc                     CRC-32C (Castagnoli) of bytes 21..end
//!       21     2  attributes              bits 0-2 compression, 3 timestamp type,
//!                                         4 transactional, 5 control
//!       23     4  last_offset_delta       offset of the last record minus base_offset
//!       27     8  first_timestamp         milliseconds since the Unix epoch
//!       35     8  max_timestamp
//!       43     8  producer_id             -1 without idempotence
//!       51     2  producer_epoch          -1 without idempotence
//!       53     4  base_sequence           -1 without idempotence
//!       57     4  record_count
//!       61     .  records                 compressed as a whole when a codec is set
//!
//! record:
//!   length            varint   bytes of the record after this field
//!   attributes        int8     unused, 0
//!   timestamp_delta   varlong  record timestamp minus first_timestamp
//!   offset_delta      varint   record offset minus base_offset
//!   key_length        varint   -1 for a null key
//!   key               bytes
//!   value_length      varint   -1 for a null value
//!   value             bytes
//!   header_count      varint
//!   headers:          header_key_length varint, header_key (UTF-8),
//!                     header_value_length varint (-1 for null), header_value
//! ```
//!
//! The CRC does not cover the base offset or the leader epoch, so the broker stamps both without
//! recomputing it.
//!
//! Control batches (attribute bit 5) carry one record whose key is `version: int16, type: int16`
//! and whose value is the payload. Strata uses them for raft's own entries ([`ControlType`]);
//! consumers skip them. In Strata a control batch takes a raft index but **no offset**: offsets
//! stay dense over the records users produced, so a control batch's `base_offset` is the offset
//! the next data record will take and it covers no offset at all.
//!
//! Decoding never panics: any byte string gives a batch or a [`BatchError`] that says what was
//! wrong and where.
//!
//! Records may be compressed with any of Kafka's five codecs (none, gzip, snappy, LZ4, zstd),
//! in Kafka's framings (see the child module `codec`). They are read three ways, all through
//! one record parser, and none expands one batch beyond [`DECOMPRESSED_BYTES_MAX`]:
//! [`decode_batch`] keeps every record (a compressed section is decompressed whole, and keys
//! and values share it); [`validate_batch`] checks every record and keeps none (uncompressed
//! records in place, compressed ones streamed through a 64 KiB buffer), which is how the
//! broker checks a produced batch; [`timestamp_at`] streams the same way and stops at the
//! record it looks for.
//!
//! This file holds the header (offsets, [`BatchHeader`], [`stamp`]), the errors, control
//! batches and [`split_batches`]; reading records lives in the child module `decode`, the
//! codecs in `codec`, writing batches in `build`, and everything public is re-exported here.

use bytes::Bytes;

mod build;
mod codec;
mod decode;
mod utf8;

pub use build::{BatchBuilder, control_batch, seal_producer};
pub use codec::ZSTD_WINDOW_BYTES_MAX;
pub use decode::{
    DECOMPRESSED_BYTES_MAX, DecodedBatch, Header, Record, ValidatedBatch, decode_batch,
    decode_records, timestamp_at, validate_batch, validate_records,
};

/// Size of the fixed batch header, up to the first record.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `partition_leader_epoch` that `batch_length` does not count.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only batch format Strata reads and writes.
pub const MAGIC: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const FIRST_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a byte string is not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("batch_length {batch_length} is invalid: it must be at least {min} (the header)")]
    InvalidBatchLength { batch_length: i32, min: usize },
    #[error("batch is {actual} bytes but its header declares {declared}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("unsupported magic {magic}: only record batch v2 (magic 2) is accepted")]
    UnsupportedMagic { magic: i8 },
    #[error("CRC-32C mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record_count {record_count} is invalid: {reason}")]
    InvalidRecordCount {
        record_count: i32,
        reason: &'static str,
    },
    #[error("unknown compression codec {codec}: valid codecs are 0 (none) to 4 (zstd)")]
    UnknownCompression { codec: i16 },
    #[error("record {record} is malformed at byte {position} of the records: {reason}")]
    MalformedRecord {
        record: usize,
        position: usize,
        reason: &'static str,
    },
    #[error("batch declares {declared} records but holds {found}")]
    RecordCountMismatch { declared: i32, found: usize },
    #[error("record {record} has offset_delta {found}, expected {expected}")]
    OffsetDeltaMismatch {
        record: usize,
        found: i32,
        expected: i32,
    },
    #[error("{codec} records do not decompress: {reason}")]
    Decompression { codec: Compression, reason: String },
    #[error(
        "records decompress to at least {at_least_bytes} bytes, more than the limit of \
         {limit_bytes} bytes for one batch"
    )]
    RecordsTooLarge {
        at_least_bytes: usize,
        limit_bytes: usize,
    },
    #[error("control record is malformed: {reason}")]
    MalformedControl { reason: &'static str },
}

/// The compression codec of a batch (attribute bits 0-2). Displayed by its Kafka name
/// (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Compression {
    /// Every codec, in attribute order.
    pub const ALL: [Self; 5] = [Self::None, Self::Gzip, Self::Snappy, Self::Lz4, Self::Zstd];

    /// The codec's name as Kafka's `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            codec => Err(BatchError::UnknownCompression { codec }),
        }
    }
}

/// The kinds of control batch Strata writes. The numbers avoid Kafka's own (0 abort, 1 commit),
/// so a Kafka consumer reading these batches treats them as unknown control records and skips
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// The empty entry a new raft leader appends to commit entries of earlier terms.
    LeaderNoop,
    /// A raft configuration change; the payload is raft's encoded `ConfChange`.
    RaftConfChange,
}

impl ControlType {
    const LEADER_NOOP: i16 = 16;
    const RAFT_CONF_CHANGE: i16 = 17;

    fn code(self) -> i16 {
        match self {
            Self::LeaderNoop => Self::LEADER_NOOP,
            Self::RaftConfChange => Self::RAFT_CONF_CHANGE,
        }
    }

    fn from_code(code: i16) -> Option<Self> {
        match code {
            Self::LEADER_NOOP => Some(Self::LeaderNoop),
            Self::RAFT_CONF_CHANGE => Some(Self::RaftConfChange),
            _ => None,
        }
    }
}

/// The fixed header of a batch, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks the magic and that `batch_length` covers
    /// at least the header; does not look at the records or the CRC.
    ///
    /// # Errors
    /// [`BatchError::Truncated`] when `buf` is shorter than the header,
    /// [`BatchError::UnsupportedMagic`], [`BatchError::InvalidBatchLength`].
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: buf.len(),
            });
        }
        let header = Self {
            base_offset: read_i64(buf, BASE_OFFSET_AT),
            batch_length: read_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: read_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: u32::from_be_bytes(array(buf, CRC_AT)),
            attributes: i16::from_be_bytes(array(buf, ATTRIBUTES_AT)),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_AT),
            first_timestamp: read_i64(buf, FIRST_TIMESTAMP_AT),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: read_i64(buf, PRODUCER_ID_AT),
            producer_epoch: i16::from_be_bytes(array(buf, PRODUCER_EPOCH_AT)),
            base_sequence: read_i32(buf, BASE_SEQUENCE_AT),
            record_count: read_i32(buf, RECORD_COUNT_AT),
        };
        if header.magic != MAGIC {
            return Err(BatchError::UnsupportedMagic {
                magic: header.magic,
            });
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::InvalidRecordCount {
                record_count: header.record_count,
                reason: "last_offset_delta is negative",
            });
        }
        let min = HEADER_BYTES - LOG_OVERHEAD_BYTES;
        if header.batch_length < 0 || (header.batch_length as usize) < min {
            return Err(BatchError::InvalidBatchLength {
                batch_length: header.batch_length,
                min,
            });
        }
        Ok(header)
    }

    /// Whole size of the batch in bytes, header included.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    /// True when record timestamps were set by the broker (LogAppendTime): every record's
    /// timestamp is then `max_timestamp`.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// How many offsets the batch covers: `last_offset_delta + 1` for data, 0 for a control batch
    /// (see the module doc).
    pub fn offset_count(&self) -> u64 {
        if self.is_control() {
            0
        } else {
            self.last_offset_delta as u64 + 1
        }
    }

    /// Checks what a batch must satisfy before it is stored: the buffer is exactly the batch,
    /// the CRC matches, the codec is known, and the record count agrees with
    /// `last_offset_delta` (offsets inside a batch are dense).
    ///
    /// # Errors
    /// The first violation found, as a [`BatchError`].
    pub fn validate(buf: &[u8]) -> Result<Self, BatchError> {
        Self::check(buf, true)
    }

    /// [`BatchHeader::validate`] without the CRC: for a batch whose CRC the caller knows was
    /// checked once already (a log appending what a producer's admission or a follower's
    /// message check accepted), so that a batch's bytes are checksummed once on its way in.
    ///
    /// # Errors
    /// As [`BatchHeader::validate`], but never [`BatchError::CrcMismatch`].
    pub fn validate_framing(buf: &[u8]) -> Result<Self, BatchError> {
        Self::check(buf, false)
    }

    fn check(buf: &[u8], crc: bool) -> Result<Self, BatchError> {
        let header = Self::parse(buf)?;
        if header.total_bytes() != buf.len() {
            return Err(BatchError::LengthMismatch {
                declared: header.total_bytes(),
                actual: buf.len(),
            });
        }
        if crc {
            header.check_crc(buf)?;
        }
        header.compression()?;
        if header.record_count < 1 {
            return Err(BatchError::InvalidRecordCount {
                record_count: header.record_count,
                reason: "a batch holds at least one record",
            });
        }
        if header.last_offset_delta != header.record_count - 1 {
            return Err(BatchError::InvalidRecordCount {
                record_count: header.record_count,
                reason: "it must equal last_offset_delta + 1",
            });
        }
        if header.is_control() && header.record_count != 1 {
            return Err(BatchError::InvalidRecordCount {
                record_count: header.record_count,
                reason: "a control batch holds exactly one record",
            });
        }
        Ok(header)
    }

    /// Compares the stored CRC with the CRC-32C of `batch[21..]`. `batch` must be the whole
    /// batch.
    ///
    /// # Errors
    /// [`BatchError::CrcMismatch`].
    pub fn check_crc(&self, batch: &[u8]) -> Result<(), BatchError> {
        let computed = crc32c(&batch[ATTRIBUTES_AT..]);
        if computed == self.crc {
            Ok(())
        } else {
            Err(BatchError::CrcMismatch {
                stored: self.crc,
                computed,
            })
        }
    }
}

/// Inputs from this size up are checksummed by `crc-fast` (carry-less multiplication),
/// smaller ones by `crc32c` (three CRC32 instructions in flight): the crossover measured on
/// this project's machine was between 1 000 and 2 000 bytes (BENCHMARKS.md).
pub const FOLDED_CRC_MIN_BYTES: usize = 2048;

/// The CRC-32C (Castagnoli) of `bytes`: the batch format's checksum, by whichever of two
/// implementations is faster at that size (see [`FOLDED_CRC_MIN_BYTES`]).
#[must_use]
pub fn crc32c(bytes: &[u8]) -> u32 {
    if bytes.len() >= FOLDED_CRC_MIN_BYTES {
        // A CRC-32 is 32 bits; crc-fast returns every width's in a u64.
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
    } else {
        crc32c::crc32c(bytes)
    }
}

/// Writes the broker-owned fields of a stored batch: its base offset and the raft term that
/// appended it. Neither is covered by the CRC.
///
/// # Panics
/// If `batch` is shorter than the header; callers pass validated batches.
pub fn stamp(batch: &mut [u8], base_offset: u64, leader_epoch: i32) {
    assert!(batch.len() >= HEADER_BYTES);
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Reads the kind and payload of a control batch.
///
/// # Errors
/// [`BatchError::MalformedControl`] when the batch is not a control batch or its record does
/// not carry a known Strata control key; any decoding error of the batch.
pub fn decode_control(batch: &Bytes) -> Result<(ControlType, Bytes), BatchError> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() {
        return Err(BatchError::MalformedControl {
            reason: "the control attribute is not set",
        });
    }
    let mut records = decode_records(batch)?;
    let record = records.pop().ok_or(BatchError::MalformedControl {
        reason: "no control record",
    })?;
    let key = record.key.ok_or(BatchError::MalformedControl {
        reason: "control record without a key",
    })?;
    if key.len() != 4 {
        return Err(BatchError::MalformedControl {
            reason: "control key is not 4 bytes (version, type)",
        });
    }
    let code = i16::from_be_bytes([key[2], key[3]]);
    let kind = ControlType::from_code(code).ok_or(BatchError::MalformedControl {
        reason: "unknown control type",
    })?;
    Ok((kind, record.value.unwrap_or_default()))
}

/// Splits a run of whole batches (as a partition read or a fetch returns them) into one `Bytes`
/// per batch, without copying. Yields an error and stops at the first
/// bytes that are not a whole batch.
pub fn split_batches(run: Bytes) -> SplitBatches {
    SplitBatches { rest: run }
}

/// Iterator returned by [`split_batches`].
#[derive(Debug)]
pub struct SplitBatches {
    rest: Bytes,
}

impl Iterator for SplitBatches {
    type Item = Result<(BatchHeader, Bytes), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = BatchHeader::parse(&self.rest).and_then(|header| {
            if header.total_bytes() <= self.rest.len() {
                Ok(header)
            } else {
                Err(BatchError::Truncated {
                    needed: header.total_bytes(),
                    available: self.rest.len(),
                })
            }
        });
        let header = match parsed {
            Ok(header) => header,
            Err(error) => {
                self.rest.clear();
                return Some(Err(error));
            }
        };
        Some(Ok((header, self.rest.split_to(header.total_bytes()))))
    }
}

fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    buf[at..at + N]
        .try_into()
        .expect("slice length equals N by construction")
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(array(buf, at))
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(array(buf, at))
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "batch_codec_tests.rs"]
mod codec_tests;
