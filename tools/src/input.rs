//! What `produce` reads: records from a file or standard input, split at a delimiter
//! (`--delimiter`, newline by default), each read as a line (`--input-format lines`), a JSON
//! object (`json`) or by a format string (`'%k:%v'`, see [`crate::format`]).

use std::path::Path;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt as _, BufReader};

use crate::format::InputTemplate;

/// The longest record read, in bytes (its delimiter included): far above any record a broker
/// accepts, and it keeps a file without delimiters from being read whole into memory.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// `--input-format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFormat {
    /// The record is the value (or, with `--key-separator`, key and value).
    Lines,
    /// The record is a JSON object (see [`crate::format::read_json_record`]).
    Json,
    /// The record is split by a format string.
    Template(InputTemplate),
}

/// Parses `--input-format`: `lines`, `json`, or a format string with `%k`, `%v`, `%T`, `%h`.
pub fn parse_input_format(text: &str) -> Result<InputFormat, String> {
    match text {
        "lines" => Ok(InputFormat::Lines),
        "json" => Ok(InputFormat::Json),
        _ if text.contains('%') => InputTemplate::parse(text)
            .map(InputFormat::Template)
            .map_err(|error| error.to_string()),
        _ => Err(format!(
            "{text:?} is not lines, json or a format string such as '%k:%v' (fields %k key, \
             %v value, %T timestamp, %h headers k1=v1,k2=v2)"
        )),
    }
}

/// Reads records one by one, each without its delimiter (and, when the delimiter is a
/// newline, without a `\r` before it).
pub struct RecordReader {
    reader: BufReader<Box<dyn AsyncRead + Unpin + Send>>,
    delimiter: Vec<u8>,
    buffer: Vec<u8>,
    /// Records read so far.
    records: u64,
    /// Bytes read so far (for progress).
    bytes: u64,
}

impl RecordReader {
    /// Reads `file` (standard input when `None` or `-`); returns the reader and the file's
    /// size when it is a regular file.
    ///
    /// # Errors
    /// An empty delimiter, or a file that cannot be opened.
    pub async fn open(file: Option<&Path>, delimiter: Vec<u8>) -> Result<(Self, Option<u64>)> {
        if delimiter.is_empty() {
            bail!("--delimiter is empty: records need a delimiter (the default is \\n)");
        }
        let (source, size): (Box<dyn AsyncRead + Unpin + Send>, _) = match file {
            Some(path) if path != Path::new("-") => {
                let file = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("open {}", path.display()))?;
                let metadata = file
                    .metadata()
                    .await
                    .with_context(|| format!("read the size of {}", path.display()))?;
                let size = metadata.is_file().then_some(metadata.len());
                (Box::new(file), size)
            }
            _ => (Box::new(tokio::io::stdin()), None),
        };
        let reader = Self {
            reader: BufReader::new(source),
            delimiter,
            buffer: Vec::new(),
            records: 0,
            bytes: 0,
        };
        Ok((reader, size))
    }

    /// The next record, `None` at the end of the input. A last record without its delimiter
    /// is a record; an empty input after the last delimiter is not.
    ///
    /// # Errors
    /// A read error, or a record longer than [`RECORD_BYTES_MAX`].
    pub async fn next(&mut self) -> Result<Option<&[u8]>> {
        self.buffer.clear();
        let last = *self
            .delimiter
            .last()
            .expect("open refuses an empty delimiter");
        loop {
            let room = (RECORD_BYTES_MAX + 1).saturating_sub(self.buffer.len());
            let read = (&mut self.reader)
                .take(room as u64)
                .read_until(last, &mut self.buffer)
                .await
                .context("read the input")?;
            self.bytes += read as u64;
            if read == 0 || self.buffer.ends_with(&self.delimiter) {
                break;
            }
            if self.buffer.len() > RECORD_BYTES_MAX {
                bail!(
                    "{} is longer than {RECORD_BYTES_MAX} bytes without a delimiter",
                    self.position()
                );
            }
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        self.records += 1;
        Ok(Some(trim_delimiter(&self.buffer, &self.delimiter)))
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Where the last record was, for errors: `line N` with newlines, else `record N`.
    /// The number of the record read last (1 before any).
    pub fn number(&self) -> u64 {
        self.records.max(1)
    }

    /// What the input's records are called in messages: `line`, or `record` with another
    /// delimiter than newline.
    pub fn unit(&self) -> &'static str {
        if self.delimiter == b"\n" {
            "line"
        } else {
            "record"
        }
    }

    pub fn position(&self) -> String {
        let number = self.records.max(1);
        if self.delimiter == b"\n" {
            format!("line {number}")
        } else {
            format!("record {number}")
        }
    }
}

/// Drops the delimiter at the end of `record`, and with a newline delimiter a `\r` before
/// it.
fn trim_delimiter<'a>(record: &'a [u8], delimiter: &[u8]) -> &'a [u8] {
    let record = record.strip_suffix(delimiter).unwrap_or(record);
    if delimiter == b"\n" {
        record.strip_suffix(b"\r").unwrap_or(record)
    } else {
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newline and a carriage return before it are dropped; nothing else is; other
    /// delimiters keep carriage returns.
    #[test]
    fn delimiters_trim() {
        let newline = b"\n";
        assert_eq!(trim_delimiter(b"a\n", newline), b"a");
        assert_eq!(trim_delimiter(b"a\r\n", newline), b"a");
        assert_eq!(trim_delimiter(b"a", newline), b"a");
        assert_eq!(trim_delimiter(b"a\r", newline), b"a");
        assert_eq!(trim_delimiter(b" a \n", newline), b" a ");
        assert_eq!(trim_delimiter(b"a\r;", b";"), b"a\r");
        assert_eq!(trim_delimiter(b"a||", b"||"), b"a");
        assert_eq!(trim_delimiter(b"a|", b"||"), b"a|");
    }

    /// Records split at single- and multi-byte delimiters, a last record without one counts,
    /// and positions name lines or records.
    #[tokio::test]
    async fn records_split() {
        let dir = tempfile::tempdir().expect("temp dir");
        // (delimiter, input, records)
        type Case<'a> = (&'a [u8], &'a [u8], &'a [&'a [u8]]);
        let table: &[Case] = &[
            (b"\n", b"a\nb\r\n\nc", &[b"a", b"b", b"", b"c"]),
            (b"\n", b"a\n", &[b"a"]),
            (b"\n", b"", &[]),
            (b"\0", b"x\ny\0z\0", &[b"x\ny", b"z"]),
            (b"||", b"a|b||c||d|", &[b"a|b", b"c", b"d|"]),
            (b";;", b";;;;", &[b"", b""]),
        ];
        for (index, (delimiter, input, expected)) in table.iter().enumerate() {
            let path = dir.path().join(format!("input-{index}"));
            std::fs::write(&path, input).expect("write input");
            let (mut reader, size) = RecordReader::open(Some(&path), delimiter.to_vec())
                .await
                .expect("opens");
            assert_eq!(size, Some(input.len() as u64));
            let mut records = Vec::new();
            while let Some(record) = reader.next().await.expect("reads") {
                records.push(record.to_vec());
            }
            assert_eq!(records, *expected, "{delimiter:?} {input:?}");
            assert_eq!(reader.bytes_read(), input.len() as u64);
        }
        let path = dir.path().join("input-0");
        let (reader, _) = RecordReader::open(Some(&path), b";".to_vec())
            .await
            .expect("opens");
        assert_eq!(reader.position(), "record 1");
        assert!(RecordReader::open(Some(&path), Vec::new()).await.is_err());
        let missing = RecordReader::open(Some(&dir.path().join("missing")), b"\n".to_vec()).await;
        assert!(
            missing
                .err()
                .expect("missing file")
                .to_string()
                .contains("missing")
        );
    }

    /// `--input-format` takes lines, json or a format string.
    #[test]
    fn input_formats() {
        assert_eq!(parse_input_format("lines"), Ok(InputFormat::Lines));
        assert_eq!(parse_input_format("json"), Ok(InputFormat::Json));
        assert!(matches!(
            parse_input_format("%k:%v"),
            Ok(InputFormat::Template(_))
        ));
        assert!(
            parse_input_format("csv")
                .unwrap_err()
                .contains("format string")
        );
        assert!(parse_input_format("%k%v").is_err());
    }
}
