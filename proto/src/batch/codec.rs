//! Kafka's compression codecs, as a batch's records section carries them: [`Decompressor`]
//! reads a compressed section through `std::io::Read` with bounded memory, and [`compress`]
//! writes one for the builder. The framings are exactly Kafka's (and what its clients send):
//!
//! - **gzip**: one gzip member (RFC 1952), as Java's `GZIPOutputStream` and librdkafka write;
//!   further members are read too (a gzip stream may be several), trailing bytes that are not
//!   a member are refused. The member's CRC-32 and length trailer are checked.
//! - **snappy**: xerial framing, which Java clients send (the magic `82 53 4e 41 50 50 59 00`,
//!   a version and a compatible version as big-endian i32s, then blocks of
//!   `[u32 BE compressed length][raw snappy block]`), or one raw snappy block, which librdkafka
//!   may send instead; Kafka's readers (snappy-java, librdkafka, kafka-python) tell them apart
//!   by the magic, and so does this one.
//! - **lz4**: one standard LZ4 frame (the v2 format fixed Kafka's old frame-checksum quirk),
//!   as Kafka's Java reader takes it: version 1, independent blocks, no dictionary, ending
//!   with its end mark (and content checksum, when flagged) and nothing after it. The Java
//!   reader refuses the rest, stops at the first end mark and fails on a frame without one, so
//!   the frame's structure is walked before it is decompressed (lz4_flex alone takes a frame
//!   cut at a block boundary as whole, linked blocks, and reads on into further frames).
//! - **zstd**: one zstd frame, or several; skippable frames are skipped and a frame's content
//!   checksum and declared content size are checked, as libzstd does for Java's and
//!   librdkafka's consumers.
//!
//! Memory: a decompressor holds at most what its format needs, never what a batch claims.
//! gzip keeps inflate's 32 KiB window; snappy one block, whose decompressed length is checked
//! against the caller's remaining bound before it is decompressed (Java sends 32 KiB blocks);
//! LZ4 one frame block (at most 4 MiB, twice); zstd its frame's window, which is refused past
//! [`ZSTD_WINDOW_BYTES_MAX`] (the decompressed bound) before anything is allocated for it. The caller bounds the output
//! (`DecompressStream` in `decode`, `take` for a whole decompression).

use std::io::{self, Read};

use super::{BatchError, Compression};

/// Largest zstd window accepted, in bytes: the most any reader expands one batch to
/// ([`DECOMPRESSED_BYTES_MAX`](super::DECOMPRESSED_BYTES_MAX)). ruzstd reserves the window a frame declares
/// before it decodes a byte, so this bounds what a crafted frame header can make a reader
/// allocate. It takes every frame Kafka's producers write at zstd levels up to 19: Java's
/// streaming producer declares the level's window (2 MiB at the default level 3, 8 MiB at
/// 19), librdkafka a single-segment frame whose window is its content, up to the bound. Only
/// Java producers at zstd's "ultra" levels 20 to 22 declare more (32 to 128 MiB), and they are
/// refused with a message saying so.
pub const ZSTD_WINDOW_BYTES_MAX: u64 = super::DECOMPRESSED_BYTES_MAX as u64;

/// The magic that opens xerial's snappy framing.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// The xerial header: the magic, then version and compatible version (big-endian i32s).
const XERIAL_HEADER_BYTES: usize = XERIAL_MAGIC.len() + 8;
/// The version and compatible version snappy-java writes (and this writer copies).
const XERIAL_VERSION: i32 = 1;
const XERIAL_COMPATIBLE_VERSION: i32 = 1;
/// Uncompressed bytes per xerial block when writing: snappy-java's default, so a Java
/// consumer sees the blocks it would have written itself.
const XERIAL_BLOCK_BYTES: usize = 32 << 10;

/// gzip level when writing: 6, `java.util.zip.Deflater`'s default, which Kafka's Java producer
/// uses unless told otherwise.
const GZIP_LEVEL: u32 = 6;

/// Magic of a zstd frame (little-endian on the wire).
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames have magics 0x184D2A50 to 0x184D2A5F.
const ZSTD_SKIPPABLE_MAGIC_MASK: u32 = 0xFFFF_FFF0;
const ZSTD_SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// A decompressor over one batch's compressed records section; `read` gives the records.
/// Errors are `io::Error`s; one that carries a [`BatchError`] (a bound passed) is meant to be
/// reported as that error, see [`batch_error`].
pub(super) enum Decompressor<'a> {
    Gzip(flate2::bufread::MultiGzDecoder<&'a [u8]>),
    Snappy(SnappyBlocks<'a>),
    Lz4(Lz4Frame<'a>),
    // Boxed: ruzstd's decoder state is several times the size of the others'.
    Zstd(Box<ZstdFrames<'a>>),
}

impl<'a> Decompressor<'a> {
    /// A decompressor of `compressed` for `codec`; `None` for [`Compression::None`].
    /// `limit_bytes` is the caller's bound on the output: formats that announce a block's size
    /// (snappy) are refused before a block past it is decompressed.
    pub(super) fn new(
        codec: Compression,
        compressed: &'a [u8],
        limit_bytes: usize,
    ) -> Option<Self> {
        Some(match codec {
            Compression::None => return None,
            Compression::Gzip => Self::Gzip(flate2::bufread::MultiGzDecoder::new(compressed)),
            Compression::Snappy => Self::Snappy(SnappyBlocks::new(compressed, limit_bytes)),
            Compression::Lz4 => Self::Lz4(Lz4Frame::new(compressed)),
            Compression::Zstd => Self::Zstd(Box::new(ZstdFrames::new(compressed))),
        })
    }

    pub(super) fn codec(&self) -> Compression {
        match self {
            Self::Gzip(_) => Compression::Gzip,
            Self::Snappy(_) => Compression::Snappy,
            Self::Lz4(_) => Compression::Lz4,
            Self::Zstd(_) => Compression::Zstd,
        }
    }
}

impl Read for Decompressor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Gzip(decoder) => decoder.read(buf),
            Self::Snappy(decoder) => decoder.read(buf),
            Self::Lz4(decoder) => decoder.read(buf),
            Self::Zstd(decoder) => decoder.read(buf),
        }
    }
}

/// The [`BatchError`] for a decompressor's `io::Error`: the one it carries (a bound passed), or
/// [`BatchError::Decompression`] naming the codec and what the decompressor said.
pub(super) fn batch_error(codec: Compression, error: io::Error) -> BatchError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<BatchError>())
    {
        Some(carried) => carried.clone(),
        None => BatchError::Decompression {
            codec,
            reason: error.to_string(),
        },
    }
}

fn corrupt(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// Magic of a standard LZ4 frame (little-endian on the wire).
const LZ4_MAGIC: u32 = 0x184D_2204;

/// LZ4 records: one frame, its structure checked (see the module doc) before lz4_flex
/// decompresses it.
pub(super) struct Lz4Frame<'a> {
    decoder: lz4_flex::frame::FrameDecoder<&'a [u8]>,
    /// The whole section, until its structure has been checked.
    unchecked: Option<&'a [u8]>,
}

impl<'a> Lz4Frame<'a> {
    fn new(compressed: &'a [u8]) -> Self {
        Self {
            decoder: lz4_flex::frame::FrameDecoder::new(compressed),
            unchecked: Some(compressed),
        }
    }
}

impl Read for Lz4Frame<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(compressed) = self.unchecked.take() {
            lz4_structure(compressed).map_err(corrupt)?;
        }
        self.decoder.read(buf)
    }
}

/// Walks one LZ4 frame's header and block sizes, without decompressing, to its end mark and
/// content checksum; the frame must take `compressed` exactly.
fn lz4_structure(compressed: &[u8]) -> Result<(), String> {
    let mut rest = compressed;
    let mut take = |length: usize, what: &str| -> Result<&[u8], String> {
        if rest.len() < length {
            return Err(format!("LZ4 frame ends inside its {what}"));
        }
        let (taken, after) = rest.split_at(length);
        rest = after;
        Ok(taken)
    };
    let magic = take(4, "magic number")?;
    let magic = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
    if magic != LZ4_MAGIC {
        return Err(format!(
            "bytes {magic:#010x} are not a standard LZ4 frame's magic number"
        ));
    }
    let descriptor = take(2, "frame descriptor")?;
    let (flags, block_descriptor) = (descriptor[0], descriptor[1]);
    // What Kafka's own reader (Java's Lz4BlockInputStream, on its brokers and clients) takes:
    // version 1, independent blocks, no dictionary, reserved bits clear.
    if flags >> 6 != 1 {
        return Err(format!("LZ4 frame version {} is not 1", flags >> 6));
    }
    if flags & 0x20 == 0 {
        return Err(
            "LZ4 frame has dependent blocks: Kafka's readers take independent \
                    blocks only"
                .to_string(),
        );
    }
    if flags & 0x03 != 0 || block_descriptor & 0x8F != 0 {
        return Err(
            "LZ4 frame sets a dictionary or a reserved bit, which Kafka's readers \
                    refuse"
                .to_string(),
        );
    }
    let block_checksum = flags & 0x10 != 0;
    let content_size = flags & 0x08 != 0;
    let content_checksum = flags & 0x04 != 0;
    // The content size, then the header checksum (which lz4_flex checks).
    take(usize::from(content_size) * 8 + 1, "frame header")?;
    let block_bytes_max: usize = match (block_descriptor >> 4) & 0x07 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        other => return Err(format!("LZ4 block size code {other} is invalid (4 to 7)")),
    };
    loop {
        let size = take(4, "block size")?;
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        if size == 0 {
            break;
        }
        // The high bit marks a block stored uncompressed.
        let length = (size & 0x7FFF_FFFF) as usize;
        if length > block_bytes_max {
            return Err(format!(
                "LZ4 block of {length} bytes is larger than the frame's {block_bytes_max}"
            ));
        }
        take(length, "block")?;
        if block_checksum {
            take(4, "block checksum")?;
        }
    }
    if content_checksum {
        take(4, "content checksum")?;
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes follow the LZ4 frame's end mark",
            rest.len()
        ));
    }
    Ok(())
}

/// Snappy records, xerial-framed or one raw block, decompressed a block at a time.
pub(super) struct SnappyBlocks<'a> {
    /// Compressed bytes not yet read (after the xerial header, when there is one).
    rest: &'a [u8],
    /// True for xerial framing; false for one raw block.
    xerial: bool,
    /// True once the xerial header was read, or the raw block taken.
    started: bool,
    decoder: snap::raw::Decoder,
    /// The current block, decompressed; reused from block to block.
    block: Vec<u8>,
    /// Bytes of `block` already handed out.
    start: usize,
    /// Decompressed bytes so far, over every block.
    decompressed: usize,
    limit_bytes: usize,
}

impl<'a> SnappyBlocks<'a> {
    fn new(compressed: &'a [u8], limit_bytes: usize) -> Self {
        Self {
            rest: compressed,
            xerial: compressed.starts_with(&XERIAL_MAGIC),
            started: false,
            decoder: snap::raw::Decoder::new(),
            block: Vec::new(),
            start: 0,
            decompressed: 0,
            limit_bytes,
        }
    }

    /// The next compressed block, `None` at the end.
    fn next_block(&mut self) -> io::Result<Option<&'a [u8]>> {
        if !self.xerial {
            if self.started {
                return Ok(None);
            }
            self.started = true;
            return Ok(Some(std::mem::take(&mut self.rest)));
        }
        if !self.started {
            // The magic was seen; the two version fields must follow. Their values are not
            // checked: every xerial version so far frames blocks the same way.
            if self.rest.len() < XERIAL_HEADER_BYTES {
                return Err(corrupt("xerial snappy header is truncated"));
            }
            self.rest = &self.rest[XERIAL_HEADER_BYTES..];
            self.started = true;
        }
        if self.rest.is_empty() {
            return Ok(None);
        }
        let Some((length, after)) = self.rest.split_first_chunk::<4>() else {
            return Err(corrupt("xerial snappy block length is truncated"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if after.len() < length {
            return Err(corrupt(format!(
                "xerial snappy block of {length} bytes runs past the records ({} left)",
                after.len()
            )));
        }
        let (block, rest) = after.split_at(length);
        self.rest = rest;
        Ok(Some(block))
    }

    /// Decompresses the next non-empty block into `self.block`; false at the end.
    fn fill(&mut self) -> io::Result<bool> {
        loop {
            let Some(compressed) = self.next_block()? else {
                return Ok(false);
            };
            // An empty xerial block holds nothing. Any other block is decompressed, even one
            // that claims no bytes, so that bytes after its claim are refused, not ignored.
            if compressed.is_empty() {
                continue;
            }
            let length = snap::raw::decompress_len(compressed).map_err(io::Error::other)?;
            // Checked before anything is allocated: a block never takes more memory than the
            // bound has left, whatever its header claims.
            if length > self.limit_bytes.saturating_sub(self.decompressed) {
                return Err(io::Error::other(BatchError::RecordsTooLarge {
                    at_least_bytes: self.decompressed.saturating_add(length),
                    limit_bytes: self.limit_bytes,
                }));
            }
            self.block.clear();
            self.block.resize(length, 0);
            let written = self
                .decoder
                .decompress(compressed, &mut self.block)
                .map_err(io::Error::other)?;
            self.block.truncate(written);
            self.start = 0;
            self.decompressed += written;
            if written > 0 {
                return Ok(true);
            }
        }
    }
}

impl Read for SnappyBlocks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.start == self.block.len() && !self.fill()? {
            return Ok(0);
        }
        let piece = buf.len().min(self.block.len() - self.start);
        buf[..piece].copy_from_slice(&self.block[self.start..self.start + piece]);
        self.start += piece;
        Ok(piece)
    }
}

/// zstd records: every frame of the section in turn, through ruzstd's streaming decoder.
pub(super) struct ZstdFrames<'a> {
    /// Compressed bytes not yet given to a frame decoder.
    rest: &'a [u8],
    /// The frame being decoded and the bytes it produced so far, with the size it declares.
    frame: Option<ZstdFrame<'a>>,
    /// The decoder of the last finished frame, kept so the next one reuses its buffers.
    spare: Option<ruzstd::decoding::FrameDecoder>,
}

struct ZstdFrame<'a> {
    decoder: ruzstd::decoding::StreamingDecoder<&'a [u8], ruzstd::decoding::FrameDecoder>,
    produced: u64,
    declared_bytes: Option<u64>,
}

impl<'a> ZstdFrames<'a> {
    fn new(compressed: &'a [u8]) -> Self {
        Self {
            rest: compressed,
            frame: None,
            spare: None,
        }
    }

    /// Opens the next frame at `rest`, skipping skippable frames; false at the end.
    fn open(&mut self) -> io::Result<bool> {
        loop {
            let Some((magic, after)) = self.rest.split_first_chunk::<4>() else {
                return if self.rest.is_empty() {
                    Ok(false)
                } else {
                    Err(corrupt("zstd records end inside a frame's magic number"))
                };
            };
            let magic = u32::from_le_bytes(*magic);
            if magic & ZSTD_SKIPPABLE_MAGIC_MASK == ZSTD_SKIPPABLE_MAGIC {
                let Some((length, after)) = after.split_first_chunk::<4>() else {
                    return Err(corrupt("zstd skippable frame header is truncated"));
                };
                let length = u32::from_le_bytes(*length) as usize;
                self.rest = after
                    .get(length..)
                    .ok_or_else(|| corrupt("zstd skippable frame runs past the records"))?;
                continue;
            }
            if magic != ZSTD_MAGIC {
                return Err(corrupt(format!(
                    "bytes {magic:#010x} are not a zstd frame's magic number"
                )));
            }
            let declared = after.first().is_some_and(|descriptor| {
                // Frame_Content_Size_flag (bits 7-6) or Single_Segment_flag (bit 5): either
                // means the header carries the frame's content size.
                descriptor & 0xE0 != 0
            });
            let decoder = self.spare.take().unwrap_or_else(|| {
                let mut decoder = ruzstd::decoding::FrameDecoder::new();
                decoder.set_max_window_size(ZSTD_WINDOW_BYTES_MAX);
                decoder
            });
            // The header is read, and a window past the bound refused, before any buffer is
            // reserved for the frame.
            let decoder = ruzstd::decoding::StreamingDecoder::new_with_decoder(self.rest, decoder)
                .map_err(|error| {
                    corrupt(match error {
                        ruzstd::decoding::errors::FrameDecoderError::WindowSizeTooBig {
                            requested,
                            max,
                        } => format!(
                            "zstd frame needs a window of {requested} bytes, more than the \
                             {max} Strata accepts (zstd levels up to 19 fit)"
                        ),
                        other => other.to_string(),
                    })
                })?;
            let declared_bytes = declared.then(|| decoder.decoder.content_size());
            self.frame = Some(ZstdFrame {
                decoder,
                produced: 0,
                declared_bytes,
            });
            return Ok(true);
        }
    }

    /// Checks a finished frame's checksum and size, and keeps its decoder for the next.
    fn close(&mut self, frame: ZstdFrame<'a>) -> io::Result<()> {
        let (rest, decoder) = frame.decoder.into_parts();
        if let Some(declared) = frame.declared_bytes
            && declared != frame.produced
        {
            return Err(corrupt(format!(
                "zstd frame declares {declared} bytes but holds {}",
                frame.produced
            )));
        }
        if let Some(stored) = decoder.get_checksum_from_data()
            && decoder.get_calculated_checksum() != Some(stored)
        {
            return Err(corrupt("zstd frame content checksum does not match"));
        }
        self.rest = rest;
        self.spare = Some(decoder);
        Ok(())
    }
}

impl Read for ZstdFrames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(frame) = &mut self.frame {
                let read = frame.decoder.read(buf)?;
                if read > 0 {
                    frame.produced += read as u64;
                    return Ok(read);
                }
                let finished = self.frame.take().expect("matched Some just above");
                self.close(finished)?;
            }
            if !self.open()? {
                return Ok(0);
            }
        }
    }
}

/// Compresses a records section with `codec`, in the framing Kafka's Java producer writes
/// (xerial blocks for snappy). `None` for [`Compression::None`].
pub(super) fn compress(codec: Compression, records: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let out = Vec::with_capacity(records.len() / 2 + 64);
    Some(match codec {
        Compression::None => return None,
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            encoder
                .write_all(records)
                .expect("writing to a Vec cannot fail");
            encoder.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Snappy => xerial_snappy(records, out),
        Compression::Lz4 => {
            // 64 KiB independent blocks, as Kafka's Java producer writes them: a reader holds
            // two blocks, not the 8 MiB of lz4_flex's automatic size for a large batch.
            let frame = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(frame, out);
            encoder
                .write_all(records)
                .expect("writing to a Vec cannot fail");
            encoder.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Zstd => {
            let mut out = out;
            ruzstd::encoding::compress(
                records,
                &mut out,
                ruzstd::encoding::CompressionLevel::Fastest,
            );
            out
        }
    })
}

/// `records` in xerial framing, in blocks of [`XERIAL_BLOCK_BYTES`].
fn xerial_snappy(records: &[u8], mut out: Vec<u8>) -> Vec<u8> {
    let mut encoder = snap::raw::Encoder::new();
    let mut block = vec![0; snap::raw::max_compress_len(XERIAL_BLOCK_BYTES)];
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_COMPATIBLE_VERSION.to_be_bytes());
    for piece in records.chunks(XERIAL_BLOCK_BYTES) {
        let length = encoder
            .compress(piece, &mut block)
            .expect("the block buffer has max_compress_len bytes");
        let length_field = u32::try_from(length).expect("a block is at most a few KiB");
        out.extend_from_slice(&length_field.to_be_bytes());
        out.extend_from_slice(&block[..length]);
    }
    out
}
