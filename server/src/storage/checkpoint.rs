//! The log-start checkpoint: where a partition log begins after retention or a snapshot reset.
//!
//! Offsets and raft indexes of stored batches follow from their order, so the log needs one
//! anchor: the raft index and term of the entry just before its first batch, and the offset its
//! first batch takes. The file is small, checksummed with crc32fast, and replaced atomically.
//!
//! ```text
//! log-start.checkpoint (36 bytes, little-endian):
//!   0  [u8; 4]  magic "STLS"
//!   4  u8       version, 1
//!   5  u8       flags: bit 0 = a reset is in progress (every segment present is stale)
//!   6  [u8; 2]  zero
//!   8  u64      prev_raft_index
//!  16  u64      prev_term
//!  24  u64      start_offset
//!  32  u32      CRC-32 of bytes 0..32
//! ```

use std::path::Path;

use super::error::{Error, IoContext, Result};
use super::fault::Faults;
use super::files::replace_atomically;

/// The checkpoint's file name inside a partition directory.
pub const FILE_NAME: &str = "log-start.checkpoint";

const MAGIC: &[u8; 4] = b"STLS";
const VERSION: u8 = 1;
const RESET_PENDING: u8 = 1;
const SIZE_BYTES: usize = 36;

/// Where a log starts: the raft entry before its first batch, and its first offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStart {
    /// Raft index of the entry just before the first stored batch (0 for a new log).
    pub prev_raft_index: u64,
    /// Raft term of that entry.
    pub prev_term: u64,
    /// The offset of the first record stored: the log start offset.
    pub start_offset: u64,
}

/// A checkpoint as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) start: LogStart,
    pub(crate) reset_pending: bool,
}

impl Checkpoint {
    fn encode(&self) -> [u8; SIZE_BYTES] {
        let mut bytes = [0u8; SIZE_BYTES];
        bytes[0..4].copy_from_slice(MAGIC);
        bytes[4] = VERSION;
        bytes[5] = if self.reset_pending { RESET_PENDING } else { 0 };
        bytes[8..16].copy_from_slice(&self.start.prev_raft_index.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.start.prev_term.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.start.start_offset.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..32]);
        bytes[32..36].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let bytes: &[u8; SIZE_BYTES] = bytes.try_into().map_err(|_| "wrong size")?;
        let u64_at = |at: usize| {
            u64::from_le_bytes(
                bytes[at..at + 8]
                    .try_into()
                    .expect("8 bytes inside the file"),
            )
        };
        let crc = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&bytes[..32]) {
            return Err("CRC mismatch");
        }
        if &bytes[0..4] != MAGIC {
            return Err("bad magic");
        }
        if bytes[4] != VERSION {
            return Err("unknown version");
        }
        Ok(Self {
            start: LogStart {
                prev_raft_index: u64_at(8),
                prev_term: u64_at(16),
                start_offset: u64_at(24),
            },
            reset_pending: bytes[5] & RESET_PENDING != 0,
        })
    }

    /// Reads the checkpoint of `dir`; the default (an empty log from offset 0) when none exists.
    ///
    /// # Errors
    /// I/O errors, and [`Error::Corrupt`] for a damaged file: without its anchor the log cannot
    /// tell offsets and raft indexes, so it refuses to guess.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes).map_err(|reason| Error::Corrupt {
                path,
                position: 0,
                reason: format!("log-start checkpoint: {reason}"),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(error).context("read", &path),
        }
    }

    /// Replaces the checkpoint of `dir` atomically and durably.
    pub(crate) fn write(&self, dir: &Path, faults: Option<&Faults>) -> Result<()> {
        replace_atomically(&dir.join(FILE_NAME), &self.encode(), faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let checkpoint = Checkpoint {
            start: LogStart {
                prev_raft_index: 7,
                prev_term: 3,
                start_offset: 99,
            },
            reset_pending: true,
        };
        let bytes = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(checkpoint));
        for at in 0..SIZE_BYTES {
            let mut damaged = bytes;
            damaged[at] ^= 0x10;
            assert!(Checkpoint::decode(&damaged).is_err(), "flip at byte {at}");
        }
        assert!(Checkpoint::decode(&bytes[..20]).is_err());
    }
}
