//! Sizes and durations as people write them, for every flag that takes one: `1GiB`, `512MB`,
//! `4096`; `7d`, `30s`, `1h 30m`, `500ms` (durations through `humantime`, the parser of
//! `--timeout`, so every flag reads them alike); and `unlimited` where a limit may be lifted.

use std::time::Duration;

/// A size in bytes: a number, optionally followed by a unit: `B`; `KB`, `MB`, `GB`, `TB`
/// (powers of 1000); `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024). Units are case-insensitive
/// and may follow a space; a fraction is allowed with a unit (`1.5GiB`) and rounds down to
/// whole bytes.
///
/// # Errors
/// Anything else, or a size above `u64::MAX` bytes, with the accepted forms.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(size_error(text)),
    };
    if number.is_empty() {
        return Err(size_error(text));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is more than {} bytes", u64::MAX));
    }
    // A fraction: only meaningful with a unit, and exact enough in f64 for any real size.
    let fraction: f64 = number.parse().map_err(|_| size_error(text))?;
    if multiplier == 1 {
        return Err(format!("{text:?}: a size in bytes is a whole number"));
    }
    let bytes = fraction * multiplier as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is more than {} bytes", u64::MAX));
    }
    Ok(bytes as u64)
}

fn size_error(text: &str) -> String {
    format!(
        "{text:?} is not a size: give bytes, optionally with a unit, e.g. 1048576, 512KiB, \
         64MiB, 1GiB, 1.5GB (KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024)"
    )
}

/// A duration as whole milliseconds: a bare number is milliseconds (`3600000`), anything else
/// a `humantime` duration (`7d`, `1h 30m`, `30s`, `250ms`).
///
/// # Errors
/// Text that is neither, or a duration above `u64::MAX` milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if let Ok(ms) = trimmed.parse::<u64>() {
        return Ok(ms);
    }
    let duration: Duration = humantime::parse_duration(trimmed).map_err(|error| {
        format!(
            "{text:?} is not a duration ({error}): give milliseconds (3600000) or a number \
             with a unit, e.g. 500ms, 30s, 15m, 1h, 7d, 1h 30m"
        )
    })?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("{text:?} is too long"))
}

/// A limit that may be lifted: a value, or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Value(u64),
}

/// The word that lifts a limit.
pub const UNLIMITED: &str = "unlimited";

/// `unlimited` or a size (see [`parse_size`]).
///
/// # Errors
/// As [`parse_size`].
pub fn parse_size_limit(text: &str) -> Result<Limit, String> {
    if text.trim().eq_ignore_ascii_case(UNLIMITED) {
        return Ok(Limit::Unlimited);
    }
    parse_size(text)
        .map(Limit::Value)
        .map_err(|error| format!("{error}, or {UNLIMITED}"))
}

/// `unlimited` or a duration in milliseconds (see [`parse_duration_ms`]).
///
/// # Errors
/// As [`parse_duration_ms`].
pub fn parse_duration_ms_limit(text: &str) -> Result<Limit, String> {
    if text.trim().eq_ignore_ascii_case(UNLIMITED) {
        return Ok(Limit::Unlimited);
    }
    parse_duration_ms(text)
        .map(Limit::Value)
        .map_err(|error| format!("{error}, or {UNLIMITED}"))
}

/// A size as `clap` value parser for `usize` flags (record and batch sizes).
///
/// # Errors
/// As [`parse_size`], or a size that does not fit this machine's `usize`.
pub fn parse_size_usize(text: &str) -> Result<usize, String> {
    let bytes = parse_size(text)?;
    usize::try_from(bytes).map_err(|_| format!("{text:?} is too large for this machine"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit form, case and spacing parses to its bytes; fractions need a unit.
    #[test]
    fn sizes() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("1KB", 1_000),
            ("1kb", 1_000),
            ("1K", 1_000),
            ("1KiB", 1024),
            ("512kib", 512 * 1024),
            ("64MiB", 64 << 20),
            ("1GiB", 1 << 30),
            ("1 GiB", 1 << 30),
            ("1GB", 1_000_000_000),
            ("2TiB", 2 << 40),
            ("1.5GiB", 3 << 29),
            ("0.5KB", 500),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, bytes) in table {
            assert_eq!(parse_size(text), Ok(*bytes), "{text}");
        }
        for bad in [
            "",
            "GiB",
            "1XB",
            "-1",
            "1.5",
            "1e3",
            "1 2",
            "1.2.3MB",
            "99999999TiB",
        ] {
            let error = parse_size(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(parse_size("x").expect_err("x").contains("1GiB"));
    }

    /// A bare number is milliseconds; humantime's forms work; nonsense is refused with the
    /// accepted forms.
    #[test]
    fn durations() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("3600000", 3_600_000),
            ("500ms", 500),
            ("30s", 30_000),
            ("15m", 900_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
            ("1h 30m", 5_400_000),
        ];
        for (text, ms) in table {
            assert_eq!(parse_duration_ms(text), Ok(*ms), "{text}");
        }
        for bad in ["", "1 hour ago", "h", "-1s", "1y2"] {
            let error = parse_duration_ms(bad).expect_err(bad);
            assert!(error.contains("7d"), "{bad}: {error}");
        }
    }

    /// `unlimited` (any case) lifts a limit; anything else is a value or an error naming
    /// `unlimited` too.
    #[test]
    fn limits() {
        assert_eq!(parse_size_limit("unlimited"), Ok(Limit::Unlimited));
        assert_eq!(parse_size_limit("Unlimited"), Ok(Limit::Unlimited));
        assert_eq!(parse_size_limit("1GiB"), Ok(Limit::Value(1 << 30)));
        assert_eq!(parse_duration_ms_limit("UNLIMITED"), Ok(Limit::Unlimited));
        assert_eq!(parse_duration_ms_limit("7d"), Ok(Limit::Value(604_800_000)));
        assert!(
            parse_duration_ms_limit("never")
                .expect_err("never")
                .contains("unlimited")
        );
        assert!(
            parse_size_limit("lots")
                .expect_err("lots")
                .contains("unlimited")
        );
    }
}
