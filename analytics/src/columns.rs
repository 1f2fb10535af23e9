//! Records gathered into Arrow arrays of the one schema ([`record_schema`]).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use strata_proto::batch::Record;

use crate::AnalyticsError;
use crate::json_values::{JsonColumns, JsonSchema, OnMismatch};

/// How the `value` column holds values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// Binary: the bytes as produced.
    #[default]
    Bytes,
    /// Utf8: a value that is not UTF-8 is an error ([`AnalyticsError::NotText`]).
    Text,
}

/// Bytes a row costs beyond its key, value and headers (the fixed columns and the offsets of
/// the variable ones), for the memory estimate.
const ROW_OVERHEAD_BYTES: usize = 48;

/// The schema of rows written with `values` (see the crate's table).
pub fn record_schema(values: ValueFormat) -> SchemaRef {
    RecordColumns::new(values).finish().schema()
}

/// The schema of rows whose values are JSON objects typed by `schema`.
pub fn json_record_schema(schema: &Arc<JsonSchema>) -> SchemaRef {
    RecordColumns::with_json_values(schema.clone(), OnMismatch::Null)
        .finish()
        .schema()
}

/// Records of any topics and partitions gathered into Arrow arrays, until [`finish`] turns them
/// into a [`RecordBatch`] and starts again.
///
/// [`finish`]: RecordColumns::finish
pub struct RecordColumns {
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    value: Values,
    headers: MapBuilder<StringBuilder, BinaryBuilder>,
    rows: usize,
    bytes: usize,
}

enum Values {
    Bytes(BinaryBuilder),
    Text(StringBuilder),
    Json(JsonColumns),
}

impl RecordColumns {
    pub fn new(values: ValueFormat) -> Self {
        Self::with_values(match values {
            ValueFormat::Bytes => Values::Bytes(BinaryBuilder::new()),
            ValueFormat::Text => Values::Text(StringBuilder::new()),
        })
    }

    /// Columns whose `value` is a struct of the JSON fields of `schema`; a value that does
    /// not fit is an error or null, as `on_mismatch` says.
    pub fn with_json_values(schema: Arc<JsonSchema>, on_mismatch: OnMismatch) -> Self {
        Self::with_values(Values::Json(JsonColumns::new(schema, on_mismatch)))
    }

    fn with_values(value: Values) -> Self {
        // Parquet's own names for a map's parts, which every engine reads.
        let names = MapFieldNames {
            entry: "key_value".to_string(),
            key: "key".to_string(),
            value: "value".to_string(),
        };
        Self {
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            key: BinaryBuilder::new(),
            value,
            headers: MapBuilder::new(Some(names), StringBuilder::new(), BinaryBuilder::new()),
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds one record of `topic`'s `partition`.
    ///
    /// # Errors
    /// [`AnalyticsError::NotText`] for a value that is not UTF-8 when values are text,
    /// [`AnalyticsError::JsonMismatch`] for one that does not fit the JSON schema (unless
    /// mismatches are null); nothing of the record is added then.
    pub fn push(
        &mut self,
        topic: &str,
        partition: u32,
        record: &Record,
    ) -> Result<(), AnalyticsError> {
        let value = record.value.as_deref();
        // Checked before anything is appended, so the columns stay the same length.
        let text =
            match (&self.value, value) {
                (Values::Text(_), Some(value)) => Some(std::str::from_utf8(value).map_err(
                    |_| AnalyticsError::NotText {
                        topic: topic.to_string(),
                        partition,
                        offset: record.offset,
                    },
                )?),
                _ => None,
            };
        let json = match &self.value {
            Values::Json(columns) => {
                Some(
                    columns
                        .check(value)
                        .map_err(|mismatch| AnalyticsError::JsonMismatch {
                            topic: topic.to_string(),
                            partition,
                            offset: record.offset,
                            why: mismatch.0,
                        })?,
                )
            }
            _ => None,
        };
        self.topic.append_value(topic);
        self.partition.append_value(partition as i32);
        // Offsets come from Kafka's batch format, whose base offset is an i64.
        self.offset.append_value(record.offset as i64);
        self.timestamp.append_value(record.timestamp);
        self.key.append_option(record.key.as_deref());
        match &mut self.value {
            Values::Bytes(builder) => builder.append_option(value),
            Values::Text(builder) => builder.append_option(text),
            Values::Json(columns) => columns.append(json.flatten()),
        }
        let mut header_bytes = 0;
        for header in &record.headers {
            self.headers.keys().append_value(&header.key);
            self.headers.values().append_option(header.value.as_deref());
            header_bytes += header.key.len() + header.value.as_ref().map_or(0, |v| v.len()) + 8;
        }
        self.headers.append(true)?;
        self.rows += 1;
        self.bytes += ROW_OVERHEAD_BYTES
            + topic.len()
            + record.key.as_ref().map_or(0, |k| k.len())
            + value.map_or(0, <[u8]>::len)
            + header_bytes;
        Ok(())
    }

    /// Rows gathered since the last [`finish`](RecordColumns::finish).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// About how many bytes the gathered rows take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The gathered rows as one batch; the columns start empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let value: ArrayRef = match &mut self.value {
            Values::Bytes(builder) => Arc::new(builder.finish()),
            Values::Text(builder) => Arc::new(builder.finish()),
            Values::Json(columns) => columns.finish(),
        };
        let columns: Vec<(&str, ArrayRef, bool)> = vec![
            ("topic", Arc::new(self.topic.finish()), false),
            ("partition", Arc::new(self.partition.finish()), false),
            ("offset", Arc::new(self.offset.finish()), false),
            ("timestamp", Arc::new(self.timestamp.finish()), false),
            ("key", Arc::new(self.key.finish()), true),
            ("value", value, true),
            ("headers", Arc::new(self.headers.finish()), false),
        ];
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array, nullable)| Field::new(*name, array.data_type().clone(), *nullable))
            .collect();
        let arrays = columns.into_iter().map(|(_, array, _)| array).collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .expect("the columns are built together, one value per row each")
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, TimestampMillisecondType};
    use arrow_array::{Array, MapArray};
    use bytes::Bytes;
    use strata_proto::batch::Header;

    use super::*;

    pub(crate) fn record(offset: u64, value: Option<&'static [u8]>) -> Record {
        Record {
            offset,
            timestamp: 1_700_000_000_000 + offset as i64,
            key: offset
                .is_multiple_of(2)
                .then(|| Bytes::from(format!("k{offset}"))),
            value: value.map(Bytes::from_static),
            headers: vec![
                Header {
                    key: "h".to_string(),
                    value: Some(Bytes::from_static(b"x")),
                },
                Header {
                    key: "null".to_string(),
                    value: None,
                },
            ],
        }
    }

    #[test]
    fn every_column_holds_what_the_record_had() {
        let mut columns = RecordColumns::new(ValueFormat::Bytes);
        columns.push("orders", 3, &record(10, Some(b"v"))).unwrap();
        columns.push("orders", 3, &record(11, None)).unwrap();
        assert_eq!(columns.rows(), 2);
        let batch = columns.finish();
        assert_eq!(columns.rows(), 0);
        assert_eq!(batch.schema(), record_schema(ValueFormat::Bytes));
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "orders");
        assert_eq!(batch.column(1).as_primitive::<Int32Type>().value(0), 3);
        assert_eq!(batch.column(2).as_primitive::<Int64Type>().value(1), 11);
        let timestamps = batch.column(3).as_primitive::<TimestampMillisecondType>();
        assert_eq!(timestamps.value(0), 1_700_000_000_010);
        assert_eq!(timestamps.timezone(), Some("UTC"));
        let keys = batch.column(4).as_binary::<i32>();
        assert_eq!(keys.value(0), b"k10");
        assert!(keys.is_null(1));
        let values = batch.column(5).as_binary::<i32>();
        assert_eq!(values.value(0), b"v");
        assert!(values.is_null(1));
        let headers: &MapArray = batch.column(6).as_map();
        let first = headers.value(0);
        assert_eq!(first.column(0).as_string::<i32>().value(1), "null");
        assert_eq!(first.column(1).as_binary::<i32>().value(0), b"x");
        assert!(first.column(1).is_null(1));
    }

    #[test]
    fn text_values_must_be_utf8_and_a_refused_record_adds_nothing() {
        let mut columns = RecordColumns::new(ValueFormat::Text);
        columns.push("t", 0, &record(0, Some(b"fine"))).unwrap();
        let error = columns.push("t", 0, &record(1, Some(b"\xff"))).unwrap_err();
        assert!(
            error.to_string().contains("t/0 offset 1 is not UTF-8"),
            "{error}"
        );
        let batch = columns.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(5).as_string::<i32>().value(0), "fine");
        assert_eq!(batch.schema(), record_schema(ValueFormat::Text));
    }
}
