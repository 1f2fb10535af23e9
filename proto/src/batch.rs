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
//! Records are read three ways, all through one record parser, and none expands one batch
//! beyond [`DECOMPRESSED_BYTES_MAX`]: [`decode_batch`] keeps every record (an LZ4 section is
//! decompressed whole, and keys and values share it); [`validate_batch`] checks every record
//! and keeps none (uncompressed records in place, LZ4 ones streamed through a 64 KiB buffer),
//! which is how the broker checks a produced batch; [`timestamp_at`] streams the same way and
//! stops at the record it looks for.

use std::ops::ControlFlow;

use bytes::{BufMut, Bytes, BytesMut};

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
    #[error("records compressed with {codec:?} cannot be decoded here")]
    CompressedRecords { codec: Compression },
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
    #[error("LZ4 records do not decompress: {reason}")]
    Decompression { reason: String },
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

/// The compression codec of a batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
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
        let header = Self::parse(buf)?;
        if header.total_bytes() != buf.len() {
            return Err(BatchError::LengthMismatch {
                declared: header.total_bytes(),
                actual: buf.len(),
            });
        }
        header.check_crc(buf)?;
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
        let computed = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
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

/// One header of a decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A decoded record. `key`, `value` and header values share the batch's buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset: the batch's base offset plus its offset delta.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Largest decompressed size of one batch's records, in bytes: a produced batch whose records
/// decompress beyond it is refused, and no decoder (broker fetch, client, tools) expands one
/// batch beyond it. 16 times the 1 MiB a batch may take on the wire: well above what real
/// data compresses by, far below what a crafted batch (LZ4 expands zeros about 250 times) would
/// make a reader allocate.
pub const DECOMPRESSED_BYTES_MAX: usize = 16 << 20;

/// Bytes of decompressed records the streaming walk holds at once. The LZ4 decoder adds its
/// own buffers, bounded by the frame's block size (at most 4 MiB, twice).
const STREAM_CHUNK_BYTES: usize = 64 << 10;

/// A decoded batch: its header, its records, and the size of its records section once
/// decompressed (the memory the decode took, and a measure of the decoded reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
    pub records_bytes: usize,
}

/// What a full validation learned about a batch, without keeping its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatedBatch {
    pub header: BatchHeader,
    /// Size of the records section once decompressed.
    pub records_bytes: usize,
}

/// Decodes every record of a batch, which must be whole and CRC-valid. Uncompressed and LZ4
/// batches decode; keys and values share the batch's buffer (or the decompressed one).
///
/// # Errors
/// As [`decode_batch`].
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    decode_batch(batch).map(|decoded| decoded.records)
}

/// Decodes every record of a batch, which must be whole and CRC-valid, and reports the size of
/// its decompressed records. An LZ4 batch is decompressed whole, at most
/// [`DECOMPRESSED_BYTES_MAX`] bytes of it.
///
/// # Errors
/// Any [`BatchError`] from [`BatchHeader::validate`], [`BatchError::CompressedRecords`] for a
/// codec this build does not decode (gzip, snappy, zstd), [`BatchError::Decompression`],
/// [`BatchError::RecordsTooLarge`], and the record-level errors: a malformed record, a count
/// that does not match, or an offset delta out of sequence.
pub fn decode_batch(batch: &Bytes) -> Result<DecodedBatch, BatchError> {
    let header = BatchHeader::validate(batch)?;
    let section = match header.compression()? {
        Compression::None => batch.slice(HEADER_BYTES..),
        Compression::Lz4 => decompress_lz4(&batch[HEADER_BYTES..])?,
        codec => return Err(BatchError::CompressedRecords { codec }),
    };
    let mut records = Vec::with_capacity(header.record_count.clamp(0, 4096) as usize);
    let records_bytes = walk_records(&header, InMemory::new(&section), |record| {
        records.push(Record {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record.headers,
        });
        ControlFlow::Continue(())
    })?;
    Ok(DecodedBatch {
        header,
        records,
        records_bytes,
    })
}

/// Validates a batch fully without keeping its records: everything
/// [`BatchHeader::validate`] checks, then every record's framing in one pass (lengths, varints,
/// offset deltas in sequence, UTF-8 header keys) and that the records number exactly
/// `record_count`. Uncompressed records are checked in place; LZ4 records are decompressed
/// through a bounded buffer, never whole, and refused once they pass `records_bytes_max`.
/// Whatever this accepts, [`decode_batch`] decodes (when `records_bytes_max` is at most
/// [`DECOMPRESSED_BYTES_MAX`]) to exactly `record_count` records.
///
/// # Errors
/// As [`decode_batch`]; [`BatchError::RecordsTooLarge`] past `records_bytes_max`.
pub fn validate_batch(
    batch: &[u8],
    records_bytes_max: usize,
) -> Result<ValidatedBatch, BatchError> {
    let header = BatchHeader::validate(batch)?;
    let records = &batch[HEADER_BYTES..];
    let records_bytes = match header.compression()? {
        Compression::None => {
            if records.len() > records_bytes_max {
                return Err(BatchError::RecordsTooLarge {
                    at_least_bytes: records.len(),
                    limit_bytes: records_bytes_max,
                });
            }
            walk_records(
                &header,
                InPlace::new(records),
                |_| ControlFlow::Continue(()),
            )?
        }
        Compression::Lz4 => {
            walk_records(&header, Lz4Stream::new(records, records_bytes_max), |_| {
                ControlFlow::Continue(())
            })?
        }
        codec => return Err(BatchError::CompressedRecords { codec }),
    };
    Ok(ValidatedBatch {
        header,
        records_bytes,
    })
}

/// The timestamp of the first record of `batch` at or after `offset`, found in one streaming
/// pass that stops there (LZ4 through a bounded buffer, at most [`DECOMPRESSED_BYTES_MAX`]
/// bytes). `None` when every record is before `offset`.
///
/// # Errors
/// As [`validate_batch`], for the part of the batch read.
pub fn timestamp_at(batch: &[u8], offset: u64) -> Result<Option<i64>, BatchError> {
    let header = BatchHeader::validate(batch)?;
    let mut found = None;
    let mut visit = |record: RecordParts<()>| {
        if record.offset >= offset {
            found = Some(record.timestamp);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let records = &batch[HEADER_BYTES..];
    match header.compression()? {
        Compression::None => walk_records(&header, InPlace::new(records), &mut visit)?,
        Compression::Lz4 => walk_records(
            &header,
            Lz4Stream::new(records, DECOMPRESSED_BYTES_MAX),
            &mut visit,
        )?,
        codec => return Err(BatchError::CompressedRecords { codec }),
    };
    Ok(found)
}

fn decompress_lz4(compressed: &[u8]) -> Result<Bytes, BatchError> {
    use std::io::Read;
    let mut decoder =
        lz4_flex::frame::FrameDecoder::new(compressed).take(DECOMPRESSED_BYTES_MAX as u64 + 1);
    let mut out = Vec::new();
    decoder
        .read_to_end(&mut out)
        .map_err(|error| BatchError::Decompression {
            reason: error.to_string(),
        })?;
    if out.len() > DECOMPRESSED_BYTES_MAX {
        return Err(BatchError::RecordsTooLarge {
            at_least_bytes: out.len(),
            limit_bytes: DECOMPRESSED_BYTES_MAX,
        });
    }
    // The records keep this buffer alive: give back what doubling left unused (up to half).
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}

/// One record as the walk parsed it; `F` is how a section hands out field bytes (`Bytes` when
/// decoding, `()` when only checking).
struct RecordParts<F, H = ()> {
    offset: u64,
    timestamp: i64,
    key: Option<F>,
    value: Option<F>,
    headers: H,
}

/// Why a section could not hand out what the parser asked for.
enum Fault {
    /// The records end inside the field.
    PastEnd,
    /// A header key is not UTF-8.
    NotUtf8,
    /// Anything else (decompression failed, the records grew too large).
    Failed(BatchError),
}

/// The records section of a batch, read front to back: in memory (decoding), in place
/// (checking uncompressed records) or streamed out of a decompressor (checking compressed ones).
trait Section {
    /// A field's bytes, as this section hands them out.
    type Field;
    /// A header key.
    type Text;
    /// The headers of one record.
    type Headers: Default;
    /// Bytes of the records consumed so far.
    fn position(&self) -> usize;
    /// True when every byte of the records has been consumed.
    fn at_end(&mut self) -> Result<bool, BatchError>;
    fn byte(&mut self) -> Result<u8, Fault>;
    fn field(&mut self, length: usize) -> Result<Self::Field, Fault>;
    fn text(&mut self, length: usize) -> Result<Self::Text, Fault>;
    fn push_header(headers: &mut Self::Headers, key: Self::Text, value: Option<Self::Field>);
}

/// Walks every record of `section`, checking its framing and that offset deltas run 0, 1, 2,
/// ..., and hands each to `visit`. When `visit` does not break, also checks that the records
/// number exactly `header.record_count`. Returns the bytes of the section consumed.
fn walk_records<S: Section>(
    header: &BatchHeader,
    section: S,
    mut visit: impl FnMut(RecordParts<S::Field, S::Headers>) -> ControlFlow<()>,
) -> Result<usize, BatchError> {
    let mut parser = Parser { section, record: 0 };
    let declared = header.record_count;
    loop {
        if parser.section.at_end()? {
            break;
        }
        let record = parser.next_record(header)?;
        parser.record += 1;
        if visit(record).is_break() {
            return Ok(parser.section.position());
        }
    }
    if parser.record != declared as usize {
        return Err(BatchError::RecordCountMismatch {
            declared,
            found: parser.record,
        });
    }
    Ok(parser.section.position())
}

/// Parses records out of a section; every read is bounds-checked by the section.
struct Parser<S> {
    section: S,
    /// Index of the record being parsed.
    record: usize,
}

impl<S: Section> Parser<S> {
    fn malformed(&self, reason: &'static str) -> BatchError {
        BatchError::MalformedRecord {
            record: self.record,
            position: self.section.position(),
            reason,
        }
    }

    fn fault(&self, fault: Fault, past_end: &'static str) -> BatchError {
        match fault {
            Fault::PastEnd => self.malformed(past_end),
            Fault::NotUtf8 => self.malformed("header key is not UTF-8"),
            Fault::Failed(error) => error,
        }
    }

    fn unsigned(&mut self, max_bytes: usize) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = self
                .section
                .byte()
                .map_err(|fault| self.fault(fault, "varint runs past the batch"))?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("varint is too long"))
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        Ok(unzigzag64(self.unsigned(10)?))
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let raw = self.unsigned(5)?;
        let raw = u32::try_from(raw).map_err(|_| self.malformed("varint overflows 32 bits"))?;
        Ok(unzigzag64(u64::from(raw)) as i32)
    }

    /// A length-prefixed field, `None` for length -1.
    fn nullable(&mut self) -> Result<Option<S::Field>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            length if length < -1 => Err(self.malformed("length below -1")),
            length => self
                .section
                .field(length as usize)
                .map(Some)
                .map_err(|fault| self.fault(fault, "field runs past the batch")),
        }
    }

    fn next_record(
        &mut self,
        header: &BatchHeader,
    ) -> Result<RecordParts<S::Field, S::Headers>, BatchError> {
        let length = self.varint()?;
        if length < 0 {
            return Err(self.malformed("negative record length"));
        }
        let end = self.section.position().saturating_add(length as usize);
        self.section
            .byte()
            .map_err(|fault| self.fault(fault, "field runs past the batch"))?; // attributes: unused
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        let expected = i32::try_from(self.record).unwrap_or(i32::MAX);
        if offset_delta != expected {
            return Err(BatchError::OffsetDeltaMismatch {
                record: self.record,
                found: offset_delta,
                expected,
            });
        }
        let key = self.nullable()?;
        let value = self.nullable()?;
        let header_count = self.varint()?;
        if header_count < 0 {
            return Err(self.malformed("negative header count"));
        }
        let mut headers = S::Headers::default();
        for _ in 0..header_count {
            let key = match self.varint()? {
                -1 => return Err(self.malformed("null header key")),
                length if length < -1 => return Err(self.malformed("length below -1")),
                length => self
                    .section
                    .text(length as usize)
                    .map_err(|fault| self.fault(fault, "field runs past the batch"))?,
            };
            let value = self.nullable()?;
            S::push_header(&mut headers, key, value);
        }
        if self.section.position() != end {
            return Err(self.malformed("record length does not match its fields"));
        }
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header.first_timestamp.wrapping_add(timestamp_delta)
        };
        Ok(RecordParts {
            offset: (header.base_offset as u64).wrapping_add(offset_delta as u64),
            timestamp,
            key,
            value,
            headers,
        })
    }
}

/// Records held whole in memory; fields share the buffer.
struct InMemory<'a> {
    buf: &'a Bytes,
    position: usize,
}

impl<'a> InMemory<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Self { buf, position: 0 }
    }

    fn take(&mut self, length: usize) -> Result<std::ops::Range<usize>, Fault> {
        let start = self.position;
        let end = start
            .checked_add(length)
            .filter(|end| *end <= self.buf.len())
            .ok_or(Fault::PastEnd)?;
        self.position = end;
        Ok(start..end)
    }
}

impl Section for InMemory<'_> {
    type Field = Bytes;
    type Text = String;
    type Headers = Vec<Header>;

    fn position(&self) -> usize {
        self.position
    }

    fn at_end(&mut self) -> Result<bool, BatchError> {
        Ok(self.position >= self.buf.len())
    }

    fn byte(&mut self) -> Result<u8, Fault> {
        let range = self.take(1)?;
        Ok(self.buf[range.start])
    }

    fn field(&mut self, length: usize) -> Result<Bytes, Fault> {
        let range = self.take(length)?;
        Ok(self.buf.slice(range))
    }

    fn text(&mut self, length: usize) -> Result<String, Fault> {
        let range = self.take(length)?;
        String::from_utf8(self.buf[range].to_vec()).map_err(|_| Fault::NotUtf8)
    }

    fn push_header(headers: &mut Vec<Header>, key: String, value: Option<Bytes>) {
        headers.push(Header { key, value });
    }
}

/// Uncompressed records checked where they lie: nothing is copied or kept.
struct InPlace<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> InPlace<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, position: 0 }
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], Fault> {
        let start = self.position;
        let end = start
            .checked_add(length)
            .filter(|end| *end <= self.buf.len())
            .ok_or(Fault::PastEnd)?;
        self.position = end;
        Ok(&self.buf[start..end])
    }
}

impl Section for InPlace<'_> {
    type Field = ();
    type Text = ();
    type Headers = ();

    fn position(&self) -> usize {
        self.position
    }

    fn at_end(&mut self) -> Result<bool, BatchError> {
        Ok(self.position >= self.buf.len())
    }

    fn byte(&mut self) -> Result<u8, Fault> {
        Ok(self.take(1)?[0])
    }

    fn field(&mut self, length: usize) -> Result<(), Fault> {
        self.take(length).map(|_| ())
    }

    fn text(&mut self, length: usize) -> Result<(), Fault> {
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes)
            .map(|_| ())
            .map_err(|_| Fault::NotUtf8)
    }

    fn push_header((): &mut (), (): (), _: Option<()>) {}
}

/// LZ4 records decompressed through a buffer of [`STREAM_CHUNK_BYTES`]: each byte is looked at
/// once and dropped, so a batch that expands to gigabytes costs a chunk of memory, and the
/// stream stops with [`BatchError::RecordsTooLarge`] once it passes `limit_bytes`.
struct Lz4Stream<'a> {
    decoder: lz4_flex::frame::FrameDecoder<&'a [u8]>,
    chunk: Vec<u8>,
    /// Unconsumed bytes of `chunk`.
    start: usize,
    end: usize,
    /// Bytes consumed by the parser.
    position: usize,
    /// Bytes decompressed so far (consumed or waiting in `chunk`).
    decompressed: usize,
    limit_bytes: usize,
    finished: bool,
}

impl<'a> Lz4Stream<'a> {
    fn new(compressed: &'a [u8], limit_bytes: usize) -> Self {
        Self {
            decoder: lz4_flex::frame::FrameDecoder::new(compressed),
            chunk: vec![0; STREAM_CHUNK_BYTES],
            start: 0,
            end: 0,
            position: 0,
            decompressed: 0,
            limit_bytes,
            finished: false,
        }
    }

    /// Makes at least one unconsumed byte available; false at the end of the records.
    fn fill(&mut self) -> Result<bool, BatchError> {
        use std::io::Read;
        if self.start < self.end {
            return Ok(true);
        }
        if self.finished {
            return Ok(false);
        }
        loop {
            match self.decoder.read(&mut self.chunk) {
                Ok(0) => {
                    self.finished = true;
                    return Ok(false);
                }
                Ok(read) => {
                    self.decompressed = self.decompressed.saturating_add(read);
                    if self.decompressed > self.limit_bytes {
                        return Err(BatchError::RecordsTooLarge {
                            at_least_bytes: self.decompressed,
                            limit_bytes: self.limit_bytes,
                        });
                    }
                    self.start = 0;
                    self.end = read;
                    return Ok(true);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(BatchError::Decompression {
                        reason: error.to_string(),
                    });
                }
            }
        }
    }

    /// Consumes `length` bytes, handing each available piece to `visit`.
    fn consume(&mut self, length: usize, mut visit: impl FnMut(&[u8])) -> Result<(), Fault> {
        let mut rest = length;
        while rest > 0 {
            if !self.fill().map_err(Fault::Failed)? {
                return Err(Fault::PastEnd);
            }
            let piece = rest.min(self.end - self.start);
            visit(&self.chunk[self.start..self.start + piece]);
            self.start += piece;
            self.position += piece;
            rest -= piece;
        }
        Ok(())
    }
}

impl Section for Lz4Stream<'_> {
    type Field = ();
    type Text = ();
    type Headers = ();

    fn position(&self) -> usize {
        self.position
    }

    fn at_end(&mut self) -> Result<bool, BatchError> {
        Ok(!self.fill()?)
    }

    fn byte(&mut self) -> Result<u8, Fault> {
        if !self.fill().map_err(Fault::Failed)? {
            return Err(Fault::PastEnd);
        }
        let byte = self.chunk[self.start];
        self.start += 1;
        self.position += 1;
        Ok(byte)
    }

    fn field(&mut self, length: usize) -> Result<(), Fault> {
        self.consume(length, |_| {})
    }

    fn text(&mut self, length: usize) -> Result<(), Fault> {
        let mut check = Utf8Check::default();
        let mut valid = true;
        self.consume(length, |piece| valid = valid && check.feed(piece))?;
        if valid && check.is_complete() {
            Ok(())
        } else {
            Err(Fault::NotUtf8)
        }
    }

    fn push_header((): &mut (), (): (), _: Option<()>) {}
}

/// Checks that bytes arriving in pieces are UTF-8, carrying a character cut by a piece's end
/// over to the next piece.
#[derive(Default)]
struct Utf8Check {
    carry: [u8; 4],
    carry_len: usize,
}

impl Utf8Check {
    /// False as soon as the bytes so far cannot be UTF-8.
    fn feed(&mut self, mut piece: &[u8]) -> bool {
        while self.carry_len > 0 {
            let Some((&first, rest)) = piece.split_first() else {
                return true;
            };
            self.carry[self.carry_len] = first;
            self.carry_len += 1;
            piece = rest;
            match std::str::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => self.carry_len = 0,
                // Still a prefix of a character (at most 3 bytes): wait for more.
                Err(error) if error.error_len().is_none() => {}
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => true,
            Err(error) if error.error_len().is_none() => {
                let cut = &piece[error.valid_up_to()..];
                self.carry[..cut.len()].copy_from_slice(cut);
                self.carry_len = cut.len();
                true
            }
            Err(_) => false,
        }
    }

    /// True when no character is left cut.
    fn is_complete(&self) -> bool {
        self.carry_len == 0
    }
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

/// Builds an uncompressed batch. The broker stamps the base offset and leader epoch later;
/// the builder leaves both 0.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    attributes: i16,
    first_timestamp: Option<i64>,
    max_timestamp: i64,
    record_count: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_BYTES + 256);
        buf.resize(HEADER_BYTES, 0);
        Self {
            buf,
            attributes: 0,
            first_timestamp: None,
            max_timestamp: i64::MIN,
            record_count: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Sets the idempotent producer's identity and the sequence number of the first record.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Compresses the records with `codec` when the batch is finished. LZ4 (Kafka's LZ4 frame
    /// format) is the one codec this build writes; the broker stores compressed batches as they
    /// are, decompressing them only in a streaming pass to check them and for decoded fetches.
    ///
    /// # Panics
    /// For a codec other than `None` and `Lz4`.
    pub fn compression(mut self, codec: Compression) -> Self {
        let bits = match codec {
            Compression::None => 0,
            Compression::Lz4 => 3,
            other => panic!("{other:?} compression is not supported for writing"),
        };
        self.attributes = (self.attributes & !COMPRESSION_MASK) | bits;
        self
    }

    /// Number of records pushed so far.
    pub fn record_count(&self) -> i32 {
        self.record_count
    }

    /// Size the batch would have if finished now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record. Its offset delta is its position in the batch.
    ///
    /// # Panics
    /// After `i32::MAX` records.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        assert!(self.record_count < i32::MAX);
        let first = *self.first_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(first);
        let offset_delta = self.record_count;

        let mut body = 1 + varlong_len(timestamp_delta) + varint_len(offset_delta);
        body += nullable_len(key) + nullable_len(value);
        body += varint_len(headers.len() as i32);
        for (header_key, header_value) in headers {
            body += nullable_len(Some(header_key.as_bytes())) + nullable_len(*header_value);
        }

        let buf = &mut self.buf;
        put_varint(buf, body as i32);
        buf.put_i8(0);
        put_varlong(buf, timestamp_delta);
        put_varint(buf, offset_delta);
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varint(buf, headers.len() as i32);
        for (header_key, header_value) in headers {
            put_nullable(buf, Some(header_key.as_bytes()));
            put_nullable(buf, *header_value);
        }
        self.record_count += 1;
    }

    /// Writes the header and CRC and returns the batch.
    ///
    /// # Panics
    /// When no record was pushed: an empty batch is not valid.
    pub fn finish(self) -> BytesMut {
        assert!(self.record_count > 0, "a batch needs at least one record");
        let mut buf = self.buf;
        if self.attributes & COMPRESSION_MASK == 3 {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(buf.len() / 2));
            std::io::Write::write_all(&mut encoder, &buf[HEADER_BYTES..])
                .expect("writing to a Vec cannot fail");
            let compressed = encoder.finish().expect("writing to a Vec cannot fail");
            buf.truncate(HEADER_BYTES);
            buf.extend_from_slice(&compressed);
        }
        let batch_length = (buf.len() - LOG_OVERHEAD_BYTES) as i32;
        let first = self.first_timestamp.unwrap_or(0);
        let header = &mut buf[..HEADER_BYTES];
        header[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
        header[MAGIC_AT] = MAGIC as u8;
        header[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&self.attributes.to_be_bytes());
        header[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(self.record_count - 1).to_be_bytes());
        header[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8].copy_from_slice(&first.to_be_bytes());
        header[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        header[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        header[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&self.base_sequence.to_be_bytes());
        header[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
            .copy_from_slice(&self.record_count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        buf
    }
}

/// Builds a control batch of the given kind with `payload` as its record's value.
pub fn control_batch(kind: ControlType, timestamp: i64, payload: &[u8]) -> BytesMut {
    let mut builder = BatchBuilder::new();
    builder.attributes |= CONTROL_BIT;
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&kind.code().to_be_bytes());
    builder.push(timestamp, Some(&key), Some(payload), &[]);
    builder.finish()
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

fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn varlong_len(value: i64) -> usize {
    let bits = 64 - zigzag64(value).leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn varint_len(value: i32) -> usize {
    varlong_len(i64::from(value))
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_len(-1),
        Some(bytes) => varint_len(bytes.len() as i32) + bytes.len(),
    }
}

fn put_varlong(buf: &mut BytesMut, value: i64) {
    let mut rest = zigzag64(value);
    while rest >= 0x80 {
        buf.put_u8((rest as u8) | 0x80);
        rest >>= 7;
    }
    buf.put_u8(rest as u8);
}

fn put_varint(buf: &mut BytesMut, value: i32) {
    // A 32-bit zigzag value has the same encoding as its 64-bit widening.
    put_varlong(buf, i64::from(value));
}

fn put_nullable(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, bytes.len() as i32);
            buf.put_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn fix_crc(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// A batch with `section` as its records: LZ4-compressed when `lz4`, header fields claiming
    /// `count` records, length and CRC made to match. The record layer is whatever `section`
    /// holds.
    fn batch_with_section(section: &[u8], count: i32, lz4: bool) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        if lz4 {
            builder = builder.compression(Compression::Lz4);
        }
        builder.push(0, None, None, &[]);
        let mut bytes = builder.finish().to_vec();
        bytes.truncate(HEADER_BYTES);
        if lz4 {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            std::io::Write::write_all(&mut encoder, section).expect("to a Vec");
            bytes.extend_from_slice(&encoder.finish().expect("to a Vec"));
        } else {
            bytes.extend_from_slice(section);
        }
        let length = (bytes.len() - LOG_OVERHEAD_BYTES) as i32;
        bytes[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        claim_records(&mut bytes, count);
        bytes
    }

    /// The records section of an uncompressed batch built from `records` values.
    fn section_of(values: &[&[u8]], headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(5, Some(b"k"), Some(value), headers);
        }
        builder.finish()[HEADER_BYTES..].to_vec()
    }

    /// Valid batches, plain and LZ4, pass the streaming validation with the size of their
    /// records, and the decoder reports the same size.
    #[test]
    fn valid_batches_validate_with_their_size() {
        let section = section_of(&[b"one", b"two", b""], &[("h", Some(b"x"))]);
        for lz4 in [false, true] {
            let bytes = Bytes::from(batch_with_section(&section, 3, lz4));
            let validated = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).expect("valid");
            assert_eq!(validated.records_bytes, section.len(), "lz4 {lz4}");
            assert_eq!(validated.header.record_count, 3);
            let decoded = decode_batch(&bytes).expect("decodes");
            assert_eq!(decoded.records.len(), 3);
            assert_eq!(decoded.records_bytes, section.len());
        }
    }

    /// A header that claims more (or fewer) records than the batch holds is refused, plain
    /// or LZ4, by both the validator and the decoder.
    #[test]
    fn record_count_must_match_the_records() {
        let section = section_of(&[b"a", b"b"], &[]);
        for lz4 in [false, true] {
            for claimed in [1, 3, i32::MAX] {
                let bytes = Bytes::from(batch_with_section(&section, claimed, lz4));
                let expected = BatchError::RecordCountMismatch {
                    declared: claimed,
                    found: 2,
                };
                assert_eq!(
                    validate_batch(&bytes, DECOMPRESSED_BYTES_MAX),
                    Err(expected.clone()),
                    "lz4 {lz4}, claimed {claimed}"
                );
                assert_eq!(decode_batch(&bytes), Err(expected));
            }
        }
    }

    /// LZ4-flagged bytes that are not an LZ4 frame, with a valid CRC, are refused.
    #[test]
    fn lz4_garbage_with_valid_crc_is_refused() {
        let mut bytes = batch_with_section(&section_of(&[b"x"], &[]), 1, true);
        for (index, byte) in bytes[HEADER_BYTES..].iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(37) ^ 0x5a;
        }
        fix_crc(&mut bytes);
        let error = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).expect_err("garbage");
        assert!(matches!(error, BatchError::Decompression { .. }), "{error}");
        let error = decode_batch(&Bytes::from(bytes)).expect_err("garbage");
        assert!(matches!(error, BatchError::Decompression { .. }), "{error}");
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
        for lz4 in [false, true] {
            let bytes = Bytes::from(batch_with_section(&section, 1, lz4));
            assert!(
                validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).is_ok(),
                "lz4 {lz4}"
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
        for lz4 in [false, true] {
            let bytes = Bytes::from(batch_with_section(&broken, 1, lz4));
            let expected = |error: &BatchError| matches!(error, BatchError::MalformedRecord { reason, .. } if *reason == "header key is not UTF-8");
            let error = validate_batch(&bytes, DECOMPRESSED_BYTES_MAX).expect_err("broken");
            assert!(expected(&error), "lz4 {lz4}: {error}");
            let error = decode_batch(&bytes).expect_err("broken");
            assert!(expected(&error), "lz4 {lz4}: {error}");
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

    /// The lag computation's lookup finds the first record at or after an offset, plain or LZ4.
    #[test]
    fn timestamp_at_finds_the_first_record_at_an_offset() {
        for lz4 in [false, true] {
            let mut builder = BatchBuilder::new();
            if lz4 {
                builder = builder.compression(Compression::Lz4);
            }
            for timestamp in [100, 200, 300] {
                builder.push(timestamp, None, Some(b"v"), &[]);
            }
            let mut batch = builder.finish();
            stamp(&mut batch, 10, 1);
            assert_eq!(timestamp_at(&batch, 0), Ok(Some(100)), "lz4 {lz4}");
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
        /// The records before compression (the mutation survives LZ4 and the CRC).
        Records,
        /// The stored bytes after the header (the compressed frame, for LZ4).
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
        /// Random mutations of valid batches, plain and LZ4, with the CRC recomputed so each
        /// reaches the record layer: the validator never panics, agrees with the decoder, and
        /// whatever it accepts decodes to exactly the header's record count.
        #[test]
        fn mutated_batches_never_panic_and_accepted_ones_decode(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            header_value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            lz4 in any::<bool>(),
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
            let mut bytes = batch_with_section(&section, count, lz4);
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
                // bad LZ4 block behind it, which the whole decompression meets first.
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "validator {:?} but decoder {:?}", validated, decoded),
            }
        }
    }
}
