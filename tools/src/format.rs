//! Format strings, kcat's and rpk's everyday tool: how `consume --format '%k %v\n'` prints a
//! record, how `produce --input-format '%k:%v'` and `--input-format json` read one, and the
//! escapes both share.
//!
//! A format string is literal text with fields and escapes:
//! - fields: `%t` topic, `%p` partition, `%o` offset, `%T` timestamp (ms since the epoch), `%k`
//!   key, `%v` value, `%h` headers (`k1=v1,k2=v2`); `%%` is a literal `%`.
//! - escapes: `\n`, `\t`, `\r`, `\0`, `\\`.
//!
//! Output writes keys, values and header values as their raw bytes (a null prints nothing), so
//! binary data passes through unchanged; nothing is added at the end (write `\n` for lines).
//!
//! Input (`produce`) takes `%k`, `%v`, `%T` and `%h`, each at most once, with literal text
//! between any two fields: a field ends at the first occurrence of the literal that follows
//! it, and the last field takes the rest of the record, so only the last field may contain its
//! own separator (`%k:%v` splits `a:b:c` into key `a` and value `b:c`). `%T` is milliseconds
//! since the epoch or RFC 3339. Without `%v` the value is null.

use std::path::Path;

use anyhow::{Result, anyhow, bail};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use strata_client::{Header, Record};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The longest format string accepted, in bytes: format strings are typed by people.
const TEMPLATE_BYTES_MAX: usize = 4096;

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Field(Field),
}

/// A record field a format string names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
}

impl Field {
    fn from_char(letter: char) -> Option<Field> {
        Some(match letter {
            't' => Field::Topic,
            'p' => Field::Partition,
            'o' => Field::Offset,
            'T' => Field::Timestamp,
            'k' => Field::Key,
            'v' => Field::Value,
            'h' => Field::Headers,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Field::Topic => "%t",
            Field::Partition => "%p",
            Field::Offset => "%o",
            Field::Timestamp => "%T",
            Field::Key => "%k",
            Field::Value => "%v",
            Field::Headers => "%h",
        }
    }
}

const FIELDS_HELP: &str =
    "%t topic, %p partition, %o offset, %T timestamp (ms), %k key, %v value, %h headers, %% a %";
const ESCAPES_HELP: &str = "\\n, \\t, \\r, \\0, \\\\";

/// Replaces the escapes `\n`, `\t`, `\r`, `\0` and `\\` by the bytes they stand for.
///
/// # Errors
/// A backslash before anything else, or at the end.
pub fn unescape(text: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buffer = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            continue;
        }
        let byte = match chars.next() {
            Some('n') => b'\n',
            Some('t') => b'\t',
            Some('r') => b'\r',
            Some('0') => 0,
            Some('\\') => b'\\',
            Some(other) => {
                bail!("unknown escape \\{other} in {text:?}: the escapes are {ESCAPES_HELP}")
            }
            None => bail!("{text:?} ends with a lone backslash: write \\\\ for a backslash"),
        };
        bytes.push(byte);
    }
    Ok(bytes)
}

/// Splits a format string into literals and fields.
fn parse_pieces(text: &str) -> Result<Vec<Piece>> {
    if text.len() > TEMPLATE_BYTES_MAX {
        bail!(
            "the format string is {} bytes; at most {TEMPLATE_BYTES_MAX} are accepted",
            text.len()
        );
    }
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => literal.push('%'),
            Some(letter) => {
                let field = Field::from_char(letter).ok_or_else(|| {
                    anyhow!("unknown field %{letter} in {text:?}: the fields are {FIELDS_HELP}")
                })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(unescape(&literal)?));
                    literal.clear();
                }
                pieces.push(Piece::Field(field));
            }
            None => bail!("{text:?} ends with a lone %: write %% for a percent sign"),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(unescape(&literal)?));
    }
    Ok(pieces)
}

/// How `consume --format '...'` prints each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTemplate {
    pieces: Vec<Piece>,
}

impl RecordTemplate {
    /// Parses an output format string (see the module documentation).
    ///
    /// # Errors
    /// An unknown field or escape, or a string longer than [`TEMPLATE_BYTES_MAX`].
    pub fn parse(text: &str) -> Result<Self> {
        Ok(Self {
            pieces: parse_pieces(text)?,
        })
    }

    /// Appends `record` of `topic`/`partition` rendered by this template to `out`.
    pub fn render(&self, topic: &str, partition: u32, record: &Record, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(bytes) => out.extend_from_slice(bytes),
                Piece::Field(Field::Topic) => out.extend_from_slice(topic.as_bytes()),
                Piece::Field(Field::Partition) => {
                    out.extend_from_slice(partition.to_string().as_bytes())
                }
                Piece::Field(Field::Offset) => {
                    out.extend_from_slice(record.offset.to_string().as_bytes())
                }
                Piece::Field(Field::Timestamp) => {
                    out.extend_from_slice(record.timestamp.to_string().as_bytes())
                }
                Piece::Field(Field::Key) => {
                    out.extend_from_slice(record.key.as_deref().unwrap_or(b""))
                }
                Piece::Field(Field::Value) => {
                    out.extend_from_slice(record.value.as_deref().unwrap_or(b""))
                }
                Piece::Field(Field::Headers) => write_headers(&record.headers, out),
            }
        }
    }
}

/// Headers as `k1=v1,k2=v2` (a null value prints as the bare key), raw bytes.
fn write_headers(headers: &[Header], out: &mut Vec<u8>) {
    for (index, header) in headers.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(header.key.as_bytes());
        if let Some(value) = &header.value {
            out.push(b'=');
            out.extend_from_slice(value);
        }
    }
}

/// Headers as `k1=v1,k2=v2` text for `--format text` (invalid UTF-8 with replacement
/// characters).
pub fn headers_text(headers: &[Header]) -> String {
    let mut out = Vec::new();
    write_headers(headers, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The `--format` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned, human-readable text.
    Text,
    /// JSON: one object per record or result, one per line.
    Json,
}

/// The file formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Jsonl,
    Csv,
}

impl FileFormat {
    /// The format a `--format` name asks for: `parquet`, `jsonl` (or `ndjson`), `csv`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "parquet" => Some(FileFormat::Parquet),
            "jsonl" | "ndjson" => Some(FileFormat::Jsonl),
            "csv" => Some(FileFormat::Csv),
            _ => None,
        }
    }

    /// The format `path`'s extension names (any case): `.parquet`, `.jsonl`, `.ndjson`, `.csv`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        Self::from_name(&extension)
    }
}

/// The global `--format` flag: `text`, `json`, a record format string (consume only), or a
/// file format (export only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatArg {
    Fixed(Format),
    Template(RecordTemplate),
    File(FileFormat),
}

/// Parses `--format`: `text`, `json`, or a format string holding at least one `%` field.
pub fn parse_format_arg(text: &str) -> Result<FormatArg, String> {
    match text {
        "text" => return Ok(FormatArg::Fixed(Format::Text)),
        "json" => return Ok(FormatArg::Fixed(Format::Json)),
        _ => {}
    }
    if let Some(file) = FileFormat::from_name(text) {
        return Ok(FormatArg::File(file));
    }
    if !text.contains('%') {
        return Err(format!(
            "{text:?} is not text, json, a format string such as '%k %v\\n' ({FIELDS_HELP}) \
             or, for export, parquet, jsonl or csv"
        ));
    }
    RecordTemplate::parse(text)
        .map(FormatArg::Template)
        .map_err(|error| error.to_string())
}

/// How `consume` prints records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFormat {
    Text,
    Json,
    Template(RecordTemplate),
}

/// One record read from `produce`'s input, before it is given a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: Option<i64>,
}

/// How `produce --input-format '...'` splits a record into its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputTemplate {
    pieces: Vec<Piece>,
}

impl InputTemplate {
    /// Parses an input format string (see the module documentation).
    ///
    /// # Errors
    /// A field that input cannot set (`%t`, `%p`, `%o`), a field named twice, two fields
    /// without literal text between them, or any error of an output format string.
    pub fn parse(text: &str) -> Result<Self> {
        let pieces = parse_pieces(text)?;
        let mut seen = Vec::new();
        let mut previous_was_field: Option<Field> = None;
        for piece in &pieces {
            let Piece::Field(field) = piece else {
                previous_was_field = None;
                continue;
            };
            if matches!(field, Field::Topic | Field::Partition | Field::Offset) {
                bail!(
                    "{} cannot be read from input: an input format takes %k, %v, %T and %h",
                    field.name()
                );
            }
            if seen.contains(field) {
                bail!("{} appears twice in {text:?}", field.name());
            }
            if let Some(previous) = previous_was_field {
                bail!(
                    "{} and {} need literal text between them in {text:?}, to know where one ends",
                    previous.name(),
                    field.name()
                );
            }
            seen.push(*field);
            previous_was_field = Some(*field);
        }
        if seen.is_empty() {
            bail!("{text:?} names no field: an input format takes %k, %v, %T and %h");
        }
        Ok(Self { pieces })
    }

    /// Splits one record (without its delimiter) into key, value, headers and timestamp.
    ///
    /// # Errors
    /// Literal text of the template missing from the record, or a `%T` or `%h` field that
    /// does not parse; the message says which.
    pub fn read(&self, mut input: &[u8]) -> Result<InputRecord> {
        let mut record = InputRecord::default();
        let mut pieces = self.pieces.iter().peekable();
        while let Some(piece) = pieces.next() {
            match piece {
                Piece::Literal(literal) => {
                    input = input.strip_prefix(literal.as_slice()).ok_or_else(|| {
                        anyhow!(
                            "expected {:?} at {:?}",
                            String::from_utf8_lossy(literal),
                            String::from_utf8_lossy(&input[..input.len().min(40)])
                        )
                    })?;
                }
                Piece::Field(field) => {
                    let end = match pieces.peek() {
                        Some(Piece::Literal(next)) => find(input, next).ok_or_else(|| {
                            anyhow!(
                                "no {:?} after {}",
                                String::from_utf8_lossy(next),
                                field.name()
                            )
                        })?,
                        _ => input.len(),
                    };
                    let (text, rest) = input.split_at(end);
                    input = rest;
                    match field {
                        Field::Key => record.key = Some(Bytes::copy_from_slice(text)),
                        Field::Value => record.value = Some(Bytes::copy_from_slice(text)),
                        Field::Timestamp => {
                            record.timestamp_ms = Some(parse_timestamp_bytes(text)?)
                        }
                        Field::Headers => record.headers = parse_headers(text)?,
                        Field::Topic | Field::Partition | Field::Offset => {
                            unreachable!("InputTemplate::parse refuses %t, %p and %o")
                        }
                    }
                }
            }
        }
        if !input.is_empty() {
            bail!(
                "unexpected {:?} after the last field",
                String::from_utf8_lossy(&input[..input.len().min(40)])
            );
        }
        Ok(record)
    }
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A timestamp of the input: milliseconds since the epoch, or RFC 3339.
fn parse_timestamp_text(text: &str) -> Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        anyhow!("timestamp {text:?} is neither milliseconds since the epoch nor RFC 3339")
    })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| anyhow!("timestamp {text:?} is out of range"))
}

fn parse_timestamp_bytes(bytes: &[u8]) -> Result<i64> {
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow!("the timestamp is not UTF-8"))?;
    parse_timestamp_text(text)
}

/// `%h` of the input: `k1=v1,k2=v2`; a key without `=` is a header with a null value; an
/// empty field is no header.
fn parse_headers(bytes: &[u8]) -> Result<Vec<(String, Option<Bytes>)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    bytes
        .split(|byte| *byte == b',')
        .map(|pair| {
            let (key, value) = match find(pair, b"=") {
                Some(at) => (&pair[..at], Some(Bytes::copy_from_slice(&pair[at + 1..]))),
                None => (pair, None),
            };
            let key = std::str::from_utf8(key).map_err(|_| anyhow!("a header key is not UTF-8"))?;
            if key.is_empty() {
                bail!("a header has an empty key (headers are k1=v1,k2=v2)");
            }
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// The fields of a JSON input record; `partition`, `offset` and `topic` (as `consume --format
/// json` prints them) are accepted and ignored, so its output can be produced again.
const JSON_FIELDS: &[&str] = &[
    "key",
    "value",
    "headers",
    "timestamp",
    "partition",
    "offset",
    "topic",
];

/// Reads one JSON object as a record: `{"key", "value", "headers", "timestamp"}`, each
/// optional.
///
/// `key`, `value` and header values are a string (its UTF-8 bytes), `null`, `{"base64":
/// "..."}` (the bytes it encodes, as `consume --format json` prints non-UTF-8), or any other
/// JSON value, stored as its compact JSON text (`"value": {"id": 1}` stores `{"id":1}`).
/// `headers` is an object (`{"k": "v"}`) or consume's array (`[{"key": "k", "value": "v"}]`).
/// `timestamp` is milliseconds since the epoch or an RFC 3339 string.
///
/// # Errors
/// Input that is not a JSON object, an unknown field, or a field of the wrong type; the
/// message says what is accepted.
pub fn read_json_record(input: &[u8]) -> Result<InputRecord> {
    let value: Value =
        serde_json::from_slice(input).map_err(|error| anyhow!("not a JSON object: {error}"))?;
    let Value::Object(object) = value else {
        bail!(
            "not a JSON object: each record is {{\"key\": ..., \"value\": ..., \"headers\": {{...}}, \"timestamp\": ...}}"
        );
    };
    let mut record = InputRecord::default();
    for (name, field) in &object {
        match name.as_str() {
            "key" => record.key = json_bytes(field).map_err(|error| anyhow!("key: {error}"))?,
            "value" => {
                record.value = json_bytes(field).map_err(|error| anyhow!("value: {error}"))?
            }
            "headers" => record.headers = json_headers(field)?,
            "timestamp" => {
                record.timestamp_ms = match field {
                    Value::Null => None,
                    Value::Number(number) => Some(number.as_i64().ok_or_else(|| {
                        anyhow!("timestamp {number} is not a whole number of milliseconds")
                    })?),
                    Value::String(text) => Some(parse_timestamp_text(text)?),
                    other => bail!(
                        "timestamp {other} is neither milliseconds since the epoch nor an RFC 3339 string"
                    ),
                }
            }
            name if JSON_FIELDS.contains(&name) => {}
            name => bail!("unknown field {name:?}: a record has key, value, headers and timestamp"),
        }
    }
    Ok(record)
}

/// Bytes from JSON (see [`read_json_record`]).
fn json_bytes(value: &Value) -> Result<Option<Bytes>> {
    Ok(match value {
        Value::Null => None,
        Value::String(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
        Value::Object(object) if object.len() == 1 && object.contains_key("base64") => {
            let Some(Value::String(encoded)) = object.get("base64") else {
                bail!("{{\"base64\": ...}} holds a string");
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|error| anyhow!("base64 {encoded:?}: {error}"))?;
            Some(Bytes::from(bytes))
        }
        other => Some(Bytes::from(other.to_string().into_bytes())),
    })
}

fn json_headers(value: &Value) -> Result<Vec<(String, Option<Bytes>)>> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Object(object) => object
            .iter()
            .map(|(key, value)| {
                let value = json_bytes(value).map_err(|error| anyhow!("header {key}: {error}"))?;
                Ok((key.clone(), value))
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let key = item.get("key").and_then(Value::as_str).ok_or_else(|| {
                    anyhow!(
                        "headers: each item of the array is {{\"key\": \"...\", \"value\": ...}}"
                    )
                })?;
                let value = json_bytes(item.get("value").unwrap_or(&Value::Null))
                    .map_err(|error| anyhow!("header {key}: {error}"))?;
                Ok((key.to_owned(), value))
            })
            .collect(),
        other => bail!(
            "headers {other} is neither an object {{\"k\": \"v\"}} nor an array [{{\"key\": \"k\", \"value\": \"v\"}}]"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            offset: 42,
            timestamp: 1_700_000_000_123,
            key: Some(Bytes::from_static(b"user-1")),
            value: Some(Bytes::from_static(&[b'h', b'i', 0xff])),
            headers: vec![
                Header {
                    key: "trace".into(),
                    value: Some(Bytes::from_static(b"abc")),
                },
                Header {
                    key: "flag".into(),
                    value: None,
                },
            ],
        }
    }

    /// Each field and escape renders as documented; key and value bytes pass through raw.
    #[test]
    fn output_templates() {
        // (template, expected bytes)
        let table: &[(&str, &[u8])] = &[
            ("%k %v\\n", b"user-1 hi\xff\n"),
            ("%t/%p@%o", b"orders/3@42"),
            ("%T", b"1700000000123"),
            ("%h", b"trace=abc,flag"),
            ("100%%\\t\\\\\\r\\0", b"100%\t\\\r\0"),
            ("plain", b"plain"),
            ("", b""),
            ("%k%v", b"user-1hi\xff"),
            ("é %p", "é 3".as_bytes()),
        ];
        for (text, expected) in table {
            let template =
                RecordTemplate::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
            let mut out = Vec::new();
            template.render("orders", 3, &record(), &mut out);
            assert_eq!(out, *expected, "{text:?}");
        }
        let empty = Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        let mut out = Vec::new();
        RecordTemplate::parse("[%k][%v][%h]")
            .expect("parses")
            .render("t", 0, &empty, &mut out);
        assert_eq!(
            out, b"[][][]",
            "null key, value and no headers print nothing"
        );
    }

    /// Unknown fields and escapes, and a lone `%` or `\`, are refused with what is valid.
    #[test]
    fn bad_templates() {
        for (text, says) in [
            ("%x", "%t topic"),
            ("abc%", "lone %"),
            ("\\q", "\\n"),
            ("abc\\", "lone backslash"),
        ] {
            let error = RecordTemplate::parse(text).expect_err(text);
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
        let long = "%k".repeat(TEMPLATE_BYTES_MAX);
        assert!(RecordTemplate::parse(&long).is_err());
    }

    /// `--format` takes text, json, a string with a field or an export file format; anything
    /// else is refused.
    #[test]
    fn format_flag() {
        assert_eq!(parse_format_arg("text"), Ok(FormatArg::Fixed(Format::Text)));
        assert_eq!(parse_format_arg("json"), Ok(FormatArg::Fixed(Format::Json)));
        for (name, file) in [
            ("parquet", FileFormat::Parquet),
            ("jsonl", FileFormat::Jsonl),
            ("ndjson", FileFormat::Jsonl),
            ("csv", FileFormat::Csv),
        ] {
            assert_eq!(parse_format_arg(name), Ok(FormatArg::File(file)), "{name}");
        }
        assert!(matches!(
            parse_format_arg("%v\\n"),
            Ok(FormatArg::Template(_))
        ));
        assert!(
            parse_format_arg("yaml")
                .unwrap_err()
                .contains("format string")
        );
        assert!(parse_format_arg("%q").is_err());
    }

    /// Escapes of `--delimiter` and format strings.
    #[test]
    fn escapes() {
        assert_eq!(unescape("\\n").expect("ok"), b"\n");
        assert_eq!(unescape("a\\tb\\0").expect("ok"), b"a\tb\0");
        assert_eq!(unescape(";;").expect("ok"), b";;");
        assert_eq!(unescape("\\r\\n").expect("ok"), b"\r\n");
        assert!(unescape("\\x").is_err());
    }

    /// Input templates split records at the literal after each field; the last field takes
    /// the rest.
    #[test]
    fn input_templates() {
        let bytes = |text: &str| Some(Bytes::copy_from_slice(text.as_bytes()));
        // (template, input, key, value, headers, timestamp)
        type Case<'a> = (
            &'a str,
            &'a [u8],
            Option<Bytes>,
            Option<Bytes>,
            Vec<(String, Option<Bytes>)>,
            Option<i64>,
        );
        let table: Vec<Case> = vec![
            ("%k:%v", b"a:b:c", bytes("a"), bytes("b:c"), vec![], None),
            ("%k:%v", b":v", bytes(""), bytes("v"), vec![], None),
            ("%v", b"whole line", None, bytes("whole line"), vec![], None),
            ("%k", b"only key", bytes("only key"), None, vec![], None),
            (
                "%T %k=%v",
                b"1700000000000 id=7",
                bytes("id"),
                bytes("7"),
                vec![],
                Some(1_700_000_000_000),
            ),
            (
                "%T|%v",
                b"2023-11-14T22:13:20.123Z|x",
                None,
                bytes("x"),
                vec![],
                Some(1_700_000_000_123),
            ),
            (
                "[%h] %v",
                b"[a=1,b,c=x=y] body",
                None,
                bytes("body"),
                vec![
                    ("a".into(), bytes("1")),
                    ("b".into(), None),
                    ("c".into(), bytes("x=y")),
                ],
                None,
            ),
            ("[%h] %v", b"[] body", None, bytes("body"), vec![], None),
            ("%k\\t%v", b"k\tv", bytes("k"), bytes("v"), vec![], None),
        ];
        for (text, input, key, value, headers, timestamp) in table {
            let template =
                InputTemplate::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"));
            let record = template
                .read(input)
                .unwrap_or_else(|error| panic!("{text} {input:?}: {error}"));
            assert_eq!(
                record,
                InputRecord {
                    key,
                    value,
                    headers,
                    timestamp_ms: timestamp
                },
                "{text} {input:?}"
            );
        }
    }

    /// Input that does not fit its template, and templates input cannot use, are refused.
    #[test]
    fn bad_input_templates() {
        for (text, says) in [
            ("%k%v", "literal text between"),
            ("%k:%k", "twice"),
            ("%p:%v", "cannot be read"),
            ("plain", "no field"),
        ] {
            let error = InputTemplate::parse(text).expect_err(text);
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
        for (text, input, says) in [
            ("%k:%v", &b"no separator"[..], "no \":\""),
            ("<%v>", b"v>", "expected \"<\""),
            ("%v>", b"a>b", "unexpected \"b\""),
            ("%T %v", b"yesterday x", "neither"),
            ("%h|%v", b"=x|v", "empty key"),
        ] {
            let error = InputTemplate::parse(text)
                .expect("parses")
                .read(input)
                .expect_err(text);
            assert!(
                error.to_string().contains(says),
                "{text} {input:?}: {error}"
            );
        }
    }

    /// JSON lines: strings, null, base64 objects and other JSON values; headers as an object
    /// or as consume's array; timestamps as numbers or RFC 3339.
    #[test]
    fn json_records() {
        let record = read_json_record(
            br#"{"key":"k","value":{"id":1},"headers":{"a":"1","b":null},"timestamp":5}"#,
        )
        .expect("reads");
        assert_eq!(
            record,
            InputRecord {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(br#"{"id":1}"#)),
                headers: vec![
                    ("a".into(), Some(Bytes::from_static(b"1"))),
                    ("b".into(), None)
                ],
                timestamp_ms: Some(5),
            }
        );
        // The shape `consume --format json` prints.
        let record = read_json_record(
            br#"{"topic":"t","partition":2,"offset":7,"timestamp":"2023-11-14T22:13:20.123Z","key":null,"value":{"base64":"/wA="},"headers":[{"key":"h","value":"v"}]}"#,
        )
        .expect("reads consume's output");
        assert_eq!(
            record,
            InputRecord {
                key: None,
                value: Some(Bytes::from_static(&[0xff, 0x00])),
                headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
                timestamp_ms: Some(1_700_000_000_123),
            }
        );
        assert_eq!(
            read_json_record(b"{}").expect("empty"),
            InputRecord::default()
        );
        for (input, says) in [
            (&b"[1]"[..], "not a JSON object"),
            (b"{", "not a JSON object"),
            (br#"{"valeu":"x"}"#, "unknown field \"valeu\""),
            (br#"{"timestamp":1.5}"#, "whole number"),
            (br#"{"timestamp":"soon"}"#, "RFC 3339"),
            (br#"{"headers":5}"#, "neither an object"),
            (br#"{"headers":[{"value":"x"}]}"#, "each item"),
            (br#"{"value":{"base64":"!!"}}"#, "base64"),
        ] {
            let error = read_json_record(input).expect_err("refused");
            assert!(
                error.to_string().contains(says),
                "{}: {error}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Text output's headers column.
    #[test]
    fn headers_column() {
        assert_eq!(headers_text(&record().headers), "trace=abc,flag");
        assert_eq!(headers_text(&[]), "");
    }
}
