//! Writing batches: [`BatchBuilder`] for data batches, [`control_batch`] for Strata's control
//! batches, [`seal_producer`] for an idempotent producer that stamps its id and sequence into
//! a batch when it sends it, and the varint writers they share.
//!
//! A batch is encoded once: each record is framed straight into the batch buffer as it is
//! pushed (no record objects, no per-record allocation), and the CRC-32C is computed once, by
//! whoever writes the last field it covers: [`BatchBuilder::finish`], or [`seal_producer`] after
//! [`BatchBuilder::finish_unsealed`]. (Keeping the records' CRC and combining it with a new
//! header's was measured instead: `crc32c_combine` over a 256 KiB batch cost about as much as
//! the CRC pass it saved.)

use bytes::{BufMut, BytesMut};

use super::*;

/// Builds a batch, uncompressed or compressed with any codec. The broker stamps the base offset and leader epoch later;
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

/// The capacity of a builder made with [`BatchBuilder::new`]: a header and a few small records.
const CAPACITY_BYTES_DEFAULT: usize = HEADER_BYTES + 256;

impl BatchBuilder {
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY_BYTES_DEFAULT)
    }

    /// A builder whose buffer holds `capacity_bytes` (at least a header) before it grows: a
    /// producer that knows about how large its batches get saves the copies of growing.
    pub fn with_capacity(capacity_bytes: usize) -> Self {
        Self::with_buffer(BytesMut::with_capacity(capacity_bytes.max(HEADER_BYTES)))
    }

    /// A builder writing into `buf`, cleared first: a producer that reuses the buffers of
    /// batches already acknowledged saves an allocation and the page faults of fresh memory
    /// for every batch.
    pub fn with_buffer(mut buf: BytesMut) -> Self {
        buf.clear();
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

    /// Compresses the records with `codec` when the batch is finished, in the framing Kafka's
    /// Java producer writes (gzip level 6, xerial-framed snappy, the LZ4 frame, zstd at ruzstd's
    /// fastest level, about zstd's level 1). The broker stores compressed batches as they are,
    /// decompressing them only in a streaming pass to check them and for decoded fetches.
    pub fn compression(mut self, codec: Compression) -> Self {
        let bits = match codec {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
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
        let mut batch = self.finish_unsealed();
        seal(&mut batch);
        batch
    }

    /// Writes the header but not the CRC (left 0), for a producer that stamps its id and
    /// sequence when it sends the batch: [`seal_producer`] then writes them and the CRC, so
    /// the records are read once. Not a valid batch until sealed.
    ///
    /// # Panics
    /// When no record was pushed: an empty batch is not valid.
    pub fn finish_unsealed(self) -> BytesMut {
        assert!(self.record_count > 0, "a batch needs at least one record");
        let mut buf = self.buf;
        let codec = Compression::from_attributes(self.attributes)
            .expect("compression() sets only the bits of a known codec");
        if let Some(compressed) = super::codec::compress(codec, &buf[HEADER_BYTES..]) {
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
        buf
    }
}

/// Writes an idempotent producer's id, epoch and base sequence into a batch from
/// [`BatchBuilder::finish_unsealed`] (or a finished one, to stamp it again under a new epoch)
/// and computes its CRC.
///
/// # Panics
/// When `batch` is shorter than a header.
pub fn seal_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    assert!(batch.len() >= HEADER_BYTES);
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    seal(batch);
}

/// Writes the batch CRC: CRC-32C from the attributes to the end.
fn seal(batch: &mut [u8]) {
    let crc = super::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
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

fn zigzag64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn varlong_len(value: i64) -> usize {
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

pub(super) fn put_varlong(buf: &mut BytesMut, value: i64) {
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

    fn builder(capacity_bytes: usize, codec: Compression) -> BatchBuilder {
        let mut builder = BatchBuilder::with_capacity(capacity_bytes).compression(codec);
        for i in 0..50u8 {
            let value = vec![i; usize::from(i) * 7];
            builder.push(
                1_000 + i64::from(i),
                Some(&[i]),
                Some(&value),
                &[("h", None)],
            );
        }
        builder
    }

    /// Sealing an unsealed batch with a producer gives the bytes a builder stamped from the
    /// start gives, CRC included, for plain and LZ4 batches, whatever the starting capacity;
    /// sealing a sealed batch again (a new epoch) gives a valid batch too.
    #[test]
    fn seal_producer_matches_a_batch_built_stamped() {
        for codec in [Compression::None, Compression::Lz4] {
            for capacity_bytes in [0, HEADER_BYTES, 100_000] {
                let expected = builder(0, codec).producer(42, 3, 1_000).finish();
                let mut batch = builder(capacity_bytes, codec).finish_unsealed();
                assert!(BatchHeader::validate(&batch).is_err(), "not sealed yet");
                seal_producer(&mut batch, 42, 3, 1_000);
                assert_eq!(batch, expected, "{codec:?}, capacity {capacity_bytes}");
                seal_producer(&mut batch, 42, 4, 0);
                let header = BatchHeader::validate(&batch).expect("a valid batch");
                assert_eq!(header.producer_id, 42);
                assert_eq!(header.producer_epoch, 4);
                assert_eq!(header.base_sequence, 0);
            }
        }
    }

    /// A builder given the capacity its batch needs never moves its buffer: the records are
    /// written once, where the batch is sent from.
    #[test]
    fn enough_capacity_means_no_growth() {
        fn push_records(builder: &mut BatchBuilder) {
            for i in 0..50u8 {
                builder.push(i64::from(i), None, Some(&[i; 300]), &[]);
            }
        }
        let mut probe = BatchBuilder::new();
        push_records(&mut probe);
        let size_bytes = probe.size_bytes();
        let mut sized = BatchBuilder::with_capacity(size_bytes);
        let start = sized.buf.as_ptr();
        push_records(&mut sized);
        let batch = sized.finish();
        assert_eq!(batch.len(), size_bytes);
        assert_eq!(batch.as_ptr(), start, "the buffer never moved");
    }
}
