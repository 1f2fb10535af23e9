//! The sparse segment index: one `.index` file per segment, read through a memory map.
//!
//! An entry is added for the batch that starts after at least `index_interval_bytes` of log
//! since the previous entry, so the index holds about one entry per interval. Each entry answers
//! three lookups at once, because offsets, raft indexes and positions all grow together along a
//! segment:
//!
//! ```text
//! entry (24 bytes, little-endian):
//!   0  u32  relative_offset         batch base offset minus the segment's base offset
//!   4  u32  relative_raft_index     batch raft index minus the segment's base raft index
//!   8  u32  position                byte position of the batch in the .log
//!  12  u32  crc                     CRC-32 (crc32fast) of bytes 0..12 and 16..24
//!  16  i64  max_timestamp_before    largest record timestamp of the batches before position
//! ```
//!
//! The batch at position 0 is never indexed: it is implied by the segment's base. The index is a
//! hint. Entries are trusted only while their CRC matches, they grow strictly, and they point
//! inside the log at a batch with the offset they claim; anything else makes recovery rebuild
//! the index from the log. A zero-filled entry never passes (its CRC is not zero).

/// Size of one index entry.
pub const ENTRY_BYTES: usize = 24;

/// One decoded index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub relative_offset: u32,
    pub relative_raft_index: u32,
    pub position: u32,
    pub max_timestamp_before: i64,
}

impl IndexEntry {
    /// The entry's bytes, CRC included.
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut bytes = [0u8; ENTRY_BYTES];
        bytes[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.relative_raft_index.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.position.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.max_timestamp_before.to_le_bytes());
        let crc = entry_crc(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes an entry; `None` when its CRC does not match.
    pub fn decode(bytes: &[u8; ENTRY_BYTES]) -> Option<Self> {
        let stored = u32::from_le_bytes(field(bytes, 12));
        if stored != entry_crc(bytes) {
            return None;
        }
        Some(Self::decode_unchecked(bytes))
    }

    fn decode_unchecked(bytes: &[u8; ENTRY_BYTES]) -> Self {
        Self {
            relative_offset: u32::from_le_bytes(field(bytes, 0)),
            relative_raft_index: u32::from_le_bytes(field(bytes, 4)),
            position: u32::from_le_bytes(field(bytes, 8)),
            max_timestamp_before: i64::from_le_bytes(field(bytes, 16)),
        }
    }

    /// True when `self` may follow `previous` (or the implied entry at position 0 when
    /// `previous` is `None`): every field grows, positions and raft indexes strictly.
    pub fn follows(&self, previous: Option<&IndexEntry>) -> bool {
        match previous {
            None => self.position > 0 && self.relative_raft_index > 0,
            Some(previous) => {
                self.position > previous.position
                    && self.relative_raft_index > previous.relative_raft_index
                    && self.relative_offset >= previous.relative_offset
                    && self.max_timestamp_before >= previous.max_timestamp_before
            }
        }
    }
}

fn field<const N: usize>(bytes: &[u8; ENTRY_BYTES], at: usize) -> [u8; N] {
    bytes[at..at + N]
        .try_into()
        .expect("field lies inside the entry")
}

fn entry_crc(bytes: &[u8; ENTRY_BYTES]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[0..12]);
    hasher.update(&bytes[16..24]);
    hasher.finalize()
}

/// Read-only view of validated entries (the mapped `.index` bytes), with binary searches.
#[derive(Clone, Copy)]
pub struct IndexView<'a> {
    bytes: &'a [u8],
}

impl<'a> IndexView<'a> {
    /// `bytes` must hold whole entries that were validated when loaded or written.
    pub fn new(bytes: &'a [u8]) -> Self {
        assert_eq!(bytes.len() % ENTRY_BYTES, 0);
        Self { bytes }
    }

    pub fn len(&self) -> usize {
        self.bytes.len() / ENTRY_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn get(&self, at: usize) -> IndexEntry {
        let bytes: &[u8; ENTRY_BYTES] = self.bytes[at * ENTRY_BYTES..(at + 1) * ENTRY_BYTES]
            .try_into()
            .expect("entry slice has ENTRY_BYTES");
        IndexEntry::decode_unchecked(bytes)
    }

    /// The last entry for which `before(entry)` holds, where `before` is true for a prefix of
    /// the entries; `None` when it holds for none (start from the segment's position 0).
    pub fn last_where(&self, before: impl Fn(&IndexEntry) -> bool) -> Option<IndexEntry> {
        self.count_where(before)
            .checked_sub(1)
            .map(|at| self.get(at))
    }

    /// How many entries, from the first, satisfy `before`, which must hold for a prefix.
    pub fn count_where(&self, before: impl Fn(&IndexEntry) -> bool) -> usize {
        let mut low = 0;
        let mut high = self.len();
        while low < high {
            let middle = low + (high - low) / 2;
            if before(&self.get(middle)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(relative_offset: u32, relative_raft_index: u32, position: u32, ts: i64) -> IndexEntry {
        IndexEntry {
            relative_offset,
            relative_raft_index,
            position,
            max_timestamp_before: ts,
        }
    }

    #[test]
    fn entries_round_trip_and_reject_damage() {
        let original = entry(5, 3, 4096, 1_700);
        let mut bytes = original.encode();
        assert_eq!(IndexEntry::decode(&bytes), Some(original));
        bytes[9] ^= 0x40;
        assert_eq!(IndexEntry::decode(&bytes), None);
        assert_eq!(
            IndexEntry::decode(&[0u8; ENTRY_BYTES]),
            None,
            "zeros never pass"
        );
    }

    #[test]
    fn follows_requires_growth() {
        let first = entry(10, 2, 4096, 5);
        let table = [
            (
                entry(10, 3, 8192, 5),
                true,
                "equal offset (control batches) is fine",
            ),
            (entry(11, 3, 4096, 5), false, "same position"),
            (entry(11, 2, 8192, 5), false, "same raft index"),
            (entry(9, 3, 8192, 5), false, "offset goes back"),
            (entry(11, 3, 8192, 4), false, "timestamp goes back"),
        ];
        for (next, expected, why) in table {
            assert_eq!(next.follows(Some(&first)), expected, "{why}");
        }
        assert!(!entry(0, 0, 0, 0).follows(None), "position 0 is implied");
    }

    #[test]
    fn last_where_finds_the_boundary() {
        let entries: Vec<u8> = (1..=5u32)
            .flat_map(|i| entry(i * 10, i, i * 100, i64::from(i)).encode())
            .collect();
        let view = IndexView::new(&entries);
        assert_eq!(view.len(), 5);
        let table = [(0, None), (10, Some(10)), (35, Some(30)), (99, Some(50))];
        for (target, expected) in table {
            let found = view.last_where(|e| e.relative_offset <= target);
            assert_eq!(
                found.map(|e| e.relative_offset),
                expected,
                "target {target}"
            );
        }
    }
}
