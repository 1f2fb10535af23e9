//! UTF-8 checked across the pieces a decompressor hands out.

/// Checks that bytes arriving in pieces are UTF-8, carrying a character cut by a piece's end
/// over to the next piece.
#[derive(Default)]
pub(super) struct Utf8Check {
    carry: [u8; 4],
    carry_len: usize,
}

impl Utf8Check {
    /// False as soon as the bytes so far cannot be UTF-8.
    pub(super) fn feed(&mut self, mut piece: &[u8]) -> bool {
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
    pub(super) fn is_complete(&self) -> bool {
        self.carry_len == 0
    }
}
