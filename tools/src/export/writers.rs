//! The file formats of `strata export`, each a [`Sink`] taking records in partition and
//! offset order and giving back its file at the end.
//!
//! - Parquet: through [`strata_analytics::ParquetSink`] (the schema of the analytics crate,
//!   bounded memory, snappy).
//! - JSON lines: one object per record, the shape of `strata consume --format json`
//!   ([`crate::output::record_json`]): `timestamp` in ms since the epoch, keys and values as
//!   strings when UTF-8, `{"base64": "..."}` when not, `null` when absent; `headers` a list of
//!   `{"key", "value"}`.
//! - CSV (RFC 4180): a header line `topic,partition,offset,timestamp,key,value,headers`, the
//!   timestamp in RFC 3339 UTC with milliseconds, keys and values as text when UTF-8 and as
//!   `{"base64": "..."}` when not, an absent key or value as an empty unquoted field (an empty
//!   one is `""`), headers as the JSON list of the JSON lines format.
//!
//! With `--value-format text`, a value that is not UTF-8 is an error in every format. With
//! `--value-format json` (Parquet only), `value` is a struct of the JSON fields, typed.

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::sync::Arc;

use strata_analytics::{JsonSchema, OnMismatch, ParquetSink, ValueFormat};
use strata_client::Record;

use crate::output::{bytes_json, record_json, timestamp_text};

use crate::format::FileFormat;

/// Buffer between the encoders and the file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// How values are written.
#[derive(Debug, Clone)]
pub enum Values {
    Bytes,
    Text,
    /// Typed columns of JSON objects (Parquet only).
    Json(Arc<JsonSchema>, OnMismatch),
}

/// One output file being written.
pub enum Sink {
    Parquet(Box<ParquetSink<BufWriter<File>>>),
    Jsonl(TextSink),
    Csv(TextSink),
}

/// A JSON lines or CSV file: the writer, and whether values must be text.
pub struct TextSink {
    out: BufWriter<File>,
    values_text: bool,
    line: Vec<u8>,
}

impl Sink {
    /// A sink writing `format` to `file`; `metadata` goes in a Parquet file's footer.
    ///
    /// # Errors
    /// The Parquet writer's, or the CSV header line's write error.
    /// A value format the file format cannot hold (JSON columns outside Parquet).
    pub fn new(
        format: FileFormat,
        values: &Values,
        file: File,
        metadata: Vec<(String, String)>,
    ) -> Result<Self> {
        let out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let text = |out| TextSink {
            out,
            values_text: matches!(values, Values::Text),
            line: Vec::new(),
        };
        if format != FileFormat::Parquet && matches!(values, Values::Json(..)) {
            bail!(
                "--value-format json makes typed Parquet columns; JSON lines and CSV hold \
                 values as text (use --value-format text or bytes)"
            );
        }
        Ok(match format {
            FileFormat::Parquet => Sink::Parquet(Box::new(match values {
                Values::Bytes => ParquetSink::new(out, ValueFormat::Bytes, metadata)?,
                Values::Text => ParquetSink::new(out, ValueFormat::Text, metadata)?,
                Values::Json(schema, on_mismatch) => {
                    ParquetSink::with_json_values(out, schema.clone(), *on_mismatch, metadata)?
                }
            })),
            FileFormat::Jsonl => Sink::Jsonl(text(out)),
            FileFormat::Csv => {
                let mut sink = text(out);
                sink.out
                    .write_all(b"topic,partition,offset,timestamp,key,value,headers\r\n")?;
                Sink::Csv(sink)
            }
        })
    }

    /// Writes one record of `topic`'s `partition`.
    ///
    /// # Errors
    /// A value that is not UTF-8 with `--value-format text`; write errors.
    pub fn push(&mut self, topic: &str, partition: u32, record: &Record) -> Result<()> {
        match self {
            Sink::Parquet(sink) => sink.push(topic, partition, record)?,
            Sink::Jsonl(sink) => {
                sink.check_text(topic, partition, record)?;
                serde_json::to_writer(&mut sink.out, &record_json(topic, partition, record))?;
                sink.out.write_all(b"\n")?;
            }
            Sink::Csv(sink) => {
                sink.check_text(topic, partition, record)?;
                sink.line.clear();
                csv_line(topic, partition, record, &mut sink.line);
                sink.out.write_all(&sink.line)?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered (and a Parquet footer) and gives back the file, not yet synced.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(self) -> Result<File> {
        let out = match self {
            Sink::Parquet(sink) => sink.finish()?,
            Sink::Jsonl(sink) | Sink::Csv(sink) => sink.out,
        };
        out.into_inner()
            .map_err(|error| error.into_error())
            .context("write the last buffered bytes")
    }
}

impl TextSink {
    fn check_text(&self, topic: &str, partition: u32, record: &Record) -> Result<()> {
        if self.values_text
            && let Some(value) = &record.value
            && std::str::from_utf8(value).is_err()
        {
            bail!(
                "the value at {topic}/{partition} offset {} is not UTF-8 text (export values \
                 with --value-format bytes instead)",
                record.offset
            );
        }
        Ok(())
    }
}

/// Appends `field` to a CSV line, quoted when it holds a comma, quote or line break (quotes
/// doubled), as RFC 4180 says; `always_quote` for an empty field that must not read as absent.
fn csv_field(field: &str, always_quote: bool, line: &mut Vec<u8>) {
    if always_quote || field.contains([',', '"', '\r', '\n']) {
        line.push(b'"');
        line.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        line.push(b'"');
    } else {
        line.extend_from_slice(field.as_bytes());
    }
}

/// Appends bytes as a CSV field: empty and unquoted when absent, the text when UTF-8,
/// `{"base64": "..."}` when not.
fn csv_bytes(bytes: Option<&[u8]>, line: &mut Vec<u8>) {
    match bytes_json(bytes) {
        Value::Null => {}
        Value::String(text) => csv_field(&text, text.is_empty(), line),
        other => csv_field(&other.to_string(), false, line),
    }
}

/// One record as a CSV line (see the module documentation), ending in CRLF.
fn csv_line(topic: &str, partition: u32, record: &Record, line: &mut Vec<u8>) {
    csv_field(topic, false, line);
    line.extend_from_slice(
        format!(
            ",{partition},{},{},",
            record.offset,
            timestamp_text(record.timestamp)
        )
        .as_bytes(),
    );
    csv_bytes(record.key.as_deref(), line);
    line.push(b',');
    csv_bytes(record.value.as_deref(), line);
    line.push(b',');
    let headers = &record_json(topic, partition, record)["headers"];
    csv_field(&headers.to_string(), false, line);
    line.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use strata_client::Header;

    use super::*;

    fn record(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> Record {
        Record {
            offset: 7,
            timestamp: 1_700_000_000_123,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![Header {
                key: "h".into(),
                value: Some(Bytes::from_static(b"x")),
            }],
        }
    }

    /// Text fields stay as they are, quoted only when needed; absent is empty, empty is `""`,
    /// bytes that are not UTF-8 are base64 in the JSON form; headers are JSON.
    #[test]
    fn csv_lines() {
        type Field = Option<&'static [u8]>;
        let table: [(Field, Field, &str); 4] = [
            (
                Some(b"k"),
                Some(b"plain"),
                "t,2,7,2023-11-14T22:13:20.123Z,k,plain,\"[{\"\"key\"\":\"\"h\"\",\"\"value\"\":\"\"x\"\"}]\"\r\n",
            ),
            (
                None,
                Some(b"a,\"b\"\nc"),
                "t,2,7,2023-11-14T22:13:20.123Z,,\"a,\"\"b\"\"\nc\",",
            ),
            (Some(b""), None, "t,2,7,2023-11-14T22:13:20.123Z,\"\",,"),
            (
                Some(b"k"),
                Some(&[0xff, 0x00]),
                "t,2,7,2023-11-14T22:13:20.123Z,k,\"{\"\"base64\"\":\"\"/wA=\"\"}\",",
            ),
        ];
        for (key, value, expected) in table {
            let mut line = Vec::new();
            csv_line("t", 2, &record(key, value), &mut line);
            let line = String::from_utf8(line).expect("utf-8");
            assert!(
                line.starts_with(expected),
                "{line:?} does not start with {expected:?}"
            );
            assert!(line.ends_with("\r\n"), "{line:?}");
        }
    }

    /// JSON lines and CSV files written through a sink read back line by line; a value that is
    /// not UTF-8 with text values is refused, naming where it is.
    #[test]
    fn text_sinks_write_lines_and_refuse_binary_text_values() {
        let directory = tempfile::tempdir().expect("tempdir");
        for (format, first_line) in [
            (
                FileFormat::Jsonl,
                "{\"topic\":\"t\",\"partition\":1,\"offset\":7,",
            ),
            (
                FileFormat::Csv,
                "topic,partition,offset,timestamp,key,value,headers\r",
            ),
        ] {
            let path = directory.path().join(format!("{format:?}"));
            let file = File::create(&path).expect("create");
            let mut sink = Sink::new(format, &Values::Text, file, Vec::new()).expect("sink");
            sink.push("t", 1, &record(Some(b"k"), Some(b"v")))
                .expect("text");
            let error = sink
                .push("t", 1, &record(Some(b"k"), Some(&[0xff])))
                .expect_err("not text");
            assert!(
                error.to_string().contains("t/1 offset 7 is not UTF-8"),
                "{error}"
            );
            sink.finish().expect("finish");
            let written = std::fs::read_to_string(&path).expect("read");
            let lines: Vec<&str> = written.split('\n').collect();
            assert!(lines[0].starts_with(first_line), "{format:?}: {written}");
            assert_eq!(
                lines.len(),
                if format == FileFormat::Csv { 3 } else { 2 },
                "{written}"
            );
        }
    }
}
