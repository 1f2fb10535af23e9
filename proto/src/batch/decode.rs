//! Reading a batch's records: the public decoders ([`decode_batch`], [`validate_batch`],
//! [`timestamp_at`]) and the one record walker under them, which reads a records section held
//! in memory, checked in place, or streamed out of any codec's decompressor through a bounded
//! buffer ([`DecompressStream`]).

use std::io::Read;
use std::ops::ControlFlow;

use bytes::Bytes;

use super::codec::{Decompressor, batch_error};
use super::utf8::Utf8Check;
use super::*;

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
/// data compresses by, far below what a crafted batch (LZ4 expands zeros about 250 times, gzip
/// about 1000 times, zstd far more) would make a reader allocate.
pub const DECOMPRESSED_BYTES_MAX: usize = 16 << 20;

/// Bytes of decompressed records the streaming walk holds at once. Each codec's decoder adds
/// its own buffers, bounded by its format (see `codec`): at most a zstd window of
/// [`ZSTD_WINDOW_BYTES_MAX`] bytes, which only a frame that declares it takes.
pub(super) const STREAM_CHUNK_BYTES: usize = 64 << 10;

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

/// Decodes every record of a batch, which must be whole and CRC-valid, whatever its codec;
/// keys and values share the batch's buffer (or the decompressed one).
///
/// # Errors
/// As [`decode_batch`].
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    decode_batch(batch).map(|decoded| decoded.records)
}

/// Decodes every record of a batch, which must be whole and CRC-valid, and reports the size of
/// its decompressed records. A compressed batch (gzip, snappy, LZ4, zstd) is decompressed
/// whole, at most [`DECOMPRESSED_BYTES_MAX`] bytes of it.
///
/// # Errors
/// Any [`BatchError`] from [`BatchHeader::validate`], [`BatchError::Decompression`],
/// [`BatchError::RecordsTooLarge`], and the record-level errors: a malformed record, a count
/// that does not match, or an offset delta out of sequence.
pub fn decode_batch(batch: &Bytes) -> Result<DecodedBatch, BatchError> {
    let header = BatchHeader::validate(batch)?;
    let compressed = &batch[HEADER_BYTES..];
    let section = match Decompressor::new(header.compression()?, compressed, DECOMPRESSED_BYTES_MAX)
    {
        None => batch.slice(HEADER_BYTES..),
        Some(decompressor) => decompress(decompressor)?,
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
/// `record_count`. Uncompressed records are checked in place; compressed records (any codec)
/// are decompressed through a bounded buffer, never whole, and refused once they pass
/// `records_bytes_max`.
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
    validate_records(header, batch, records_bytes_max)
}

/// The records half of [`validate_batch`], for a caller that has validated the header already
/// ([`BatchHeader::validate`] on this very `batch`), so that the CRC runs once.
///
/// # Errors
/// As [`validate_batch`], from the records on.
pub fn validate_records(
    header: BatchHeader,
    batch: &[u8],
    records_bytes_max: usize,
) -> Result<ValidatedBatch, BatchError> {
    let records = batch.get(HEADER_BYTES..).ok_or(BatchError::Truncated {
        needed: HEADER_BYTES,
        available: batch.len(),
    })?;
    let records_bytes = match Decompressor::new(header.compression()?, records, records_bytes_max) {
        None => {
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
        Some(decompressor) => walk_records(
            &header,
            DecompressStream::new(decompressor, records_bytes_max),
            |_| ControlFlow::Continue(()),
        )?,
    };
    Ok(ValidatedBatch {
        header,
        records_bytes,
    })
}

/// The timestamp of the first record of `batch` at or after `offset`, found in one streaming
/// pass that stops there (compressed records through a bounded buffer, at most
/// [`DECOMPRESSED_BYTES_MAX`] bytes). `None` when every record is before `offset`.
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
    match Decompressor::new(header.compression()?, records, DECOMPRESSED_BYTES_MAX) {
        None => walk_records(&header, InPlace::new(records), &mut visit)?,
        Some(decompressor) => walk_records(
            &header,
            DecompressStream::new(decompressor, DECOMPRESSED_BYTES_MAX),
            &mut visit,
        )?,
    };
    Ok(found)
}

/// Decompresses a whole records section, at most [`DECOMPRESSED_BYTES_MAX`] bytes of it. The
/// buffer doubles from a chunk up to one byte past the bound and no further, so a section past
/// the bound costs the bound (and, while the last doubling copies, half of it again).
fn decompress(mut decompressor: Decompressor<'_>) -> Result<Bytes, BatchError> {
    // One byte past the bound tells a section past it from one that fills it exactly.
    let capacity_max = DECOMPRESSED_BYTES_MAX + 1;
    let mut out = Vec::new();
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if filled == capacity_max {
                break;
            }
            // The doubling that would reach the bound takes one byte past it at once, so
            // the buffer is copied at most once at that size.
            let grown = if out.len() * 2 >= DECOMPRESSED_BYTES_MAX {
                capacity_max
            } else {
                (out.len() * 2).max(STREAM_CHUNK_BYTES)
            };
            out.reserve_exact(grown - out.len());
            out.resize(grown, 0);
        }
        match decompressor.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(batch_error(decompressor.codec(), error)),
        }
    }
    if filled > DECOMPRESSED_BYTES_MAX {
        return Err(BatchError::RecordsTooLarge {
            at_least_bytes: filled,
            limit_bytes: DECOMPRESSED_BYTES_MAX,
        });
    }
    out.truncate(filled);
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

/// Compressed records decompressed through a buffer of [`STREAM_CHUNK_BYTES`]: each byte is
/// looked at once and dropped, so a batch that expands to gigabytes costs a chunk of memory
/// (plus what the decompressor `R` holds), and the stream stops with
/// [`BatchError::RecordsTooLarge`] once it passes `limit_bytes`.
struct DecompressStream<R> {
    decoder: R,
    /// Named in decompression errors.
    codec: Compression,
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

impl<'a> DecompressStream<Decompressor<'a>> {
    fn new(decoder: Decompressor<'a>, limit_bytes: usize) -> Self {
        Self {
            codec: decoder.codec(),
            decoder,
            chunk: vec![0; STREAM_CHUNK_BYTES],
            start: 0,
            end: 0,
            position: 0,
            decompressed: 0,
            limit_bytes,
            finished: false,
        }
    }
}

impl<R: Read> DecompressStream<R> {
    /// Makes at least one unconsumed byte available; false at the end of the records.
    fn fill(&mut self) -> Result<bool, BatchError> {
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
                Err(error) => return Err(batch_error(self.codec, error)),
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

impl<R: Read> Section for DecompressStream<R> {
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

fn unzigzag64(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}
