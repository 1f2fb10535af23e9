//! Records streamed into one Parquet file through bounded memory.

use std::io::Write;

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use strata_proto::batch::Record;

use std::sync::Arc;

use arrow_schema::SchemaRef;

use crate::{
    AnalyticsError, JsonSchema, OnMismatch, RecordColumns, ValueFormat, json_record_schema,
    record_schema,
};

/// Rows gathered in Arrow arrays before they go to the Parquet writer.
pub const BATCH_ROWS: usize = 8192;
/// Bytes of records gathered in Arrow arrays before they go to the Parquet writer, whatever the
/// row count (large values).
pub const BATCH_BYTES: usize = 8 << 20;
/// Encoded bytes of a row group held in memory before it is written out. With
/// [`BATCH_BYTES`], about the most a sink holds: each file of a few hundred MB still has row
/// groups engines can read in parallel and skip by statistics.
pub const ROW_GROUP_BYTES: usize = 64 << 20;
/// Rows of a row group at most, whatever their size: small records make row groups of a few
/// MB that engines still read in parallel (parquet's own default is 1 Mi rows: one row group
/// for a file of a million small records).
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// One Parquet file being written: records in, a file out, through [`RecordColumns`] and
/// arrow-rs's [`ArrowWriter`], snappy-compressed.
pub struct ParquetSink<W: Write + Send> {
    writer: ArrowWriter<W>,
    columns: RecordColumns,
    rows: u64,
    batch_bytes: usize,
    row_group_bytes: usize,
}

impl<W: Write + Send> ParquetSink<W> {
    /// A file written to `out`, with `metadata` as the footer's key-value metadata (what wrote
    /// it, and what range of what topic).
    ///
    /// # Errors
    /// The Parquet writer's, when it cannot start.
    pub fn new(
        out: W,
        values: ValueFormat,
        metadata: Vec<(String, String)>,
    ) -> Result<Self, AnalyticsError> {
        Self::with_limits(out, values, metadata, BATCH_BYTES, ROW_GROUP_BYTES)
    }

    /// As [`new`](ParquetSink::new), holding at most about `batch_bytes` of records in Arrow
    /// arrays and `row_group_bytes` of an encoded row group (a server writing many files at
    /// once takes smaller ones than [`BATCH_BYTES`] and [`ROW_GROUP_BYTES`]).
    ///
    /// # Errors
    /// The Parquet writer's, when it cannot start.
    pub fn with_limits(
        out: W,
        values: ValueFormat,
        metadata: Vec<(String, String)>,
        batch_bytes: usize,
        row_group_bytes: usize,
    ) -> Result<Self, AnalyticsError> {
        let columns = RecordColumns::new(values);
        let schema = record_schema(values);
        Self::start(out, columns, schema, metadata, batch_bytes, row_group_bytes)
    }

    /// As [`new`](ParquetSink::new), with JSON values written as typed columns: `value` is a
    /// struct of `schema`'s fields, and a value that does not fit is an error or null as
    /// `on_mismatch` says.
    ///
    /// # Errors
    /// The Parquet writer's, when it cannot start.
    pub fn with_json_values(
        out: W,
        schema: Arc<JsonSchema>,
        on_mismatch: OnMismatch,
        metadata: Vec<(String, String)>,
    ) -> Result<Self, AnalyticsError> {
        let arrow_schema = json_record_schema(&schema);
        let columns = RecordColumns::with_json_values(schema, on_mismatch);
        Self::start(
            out,
            columns,
            arrow_schema,
            metadata,
            BATCH_BYTES,
            ROW_GROUP_BYTES,
        )
    }

    fn start(
        out: W,
        columns: RecordColumns,
        schema: SchemaRef,
        metadata: Vec<(String, String)>,
        batch_bytes: usize,
        row_group_bytes: usize,
    ) -> Result<Self, AnalyticsError> {
        let metadata = metadata
            .into_iter()
            .map(|(key, value)| parquet::file::metadata::KeyValue::new(key, value))
            .collect();
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(metadata))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(out, schema, Some(properties))?;
        Ok(Self {
            writer,
            columns,
            rows: 0,
            batch_bytes,
            row_group_bytes,
        })
    }

    /// Adds one record of `topic`'s `partition`.
    ///
    /// # Errors
    /// As [`RecordColumns::push`], or the Parquet writer's.
    pub fn push(
        &mut self,
        topic: &str,
        partition: u32,
        record: &Record,
    ) -> Result<(), AnalyticsError> {
        self.columns.push(topic, partition, record)?;
        self.rows += 1;
        if self.columns.rows() >= BATCH_ROWS || self.columns.bytes() >= self.batch_bytes {
            self.write_columns()?;
        }
        Ok(())
    }

    fn write_columns(&mut self) -> Result<(), AnalyticsError> {
        let batch = self.columns.finish();
        self.writer.write(&batch)?;
        if self.writer.in_progress_size() >= self.row_group_bytes {
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Records pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes written to the output so far (whole row groups; the rest is still in memory).
    pub fn bytes_written(&self) -> usize {
        self.writer.bytes_written()
    }

    /// Writes what is left and the footer; returns the output.
    ///
    /// # Errors
    /// The Parquet writer's (the output's write errors among them).
    pub fn finish(mut self) -> Result<W, AnalyticsError> {
        if self.columns.rows() > 0 {
            let batch = self.columns.finish();
            self.writer.write(&batch)?;
        }
        Ok(self.writer.into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use proptest::prelude::*;
    use strata_proto::batch::Header;

    use super::*;

    fn read_back(file: Vec<u8>) -> (Vec<arrow_array::RecordBatch>, usize) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        let row_groups = builder.metadata().num_row_groups();
        let batches = builder
            .build()
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (batches, row_groups)
    }

    #[test]
    fn a_file_holds_every_record_in_row_groups_of_bounded_size() {
        // Row groups of about 256 KiB: 2 000 records of 1 KiB make several.
        let mut sink = ParquetSink::with_limits(
            Vec::new(),
            ValueFormat::Bytes,
            vec![("strata.topic".to_string(), "t".to_string())],
            64 << 10,
            256 << 10,
        )
        .unwrap();
        // Pseudo-random values, which snappy cannot shrink below the row group limit.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for offset in 0..2000 {
            let value: Vec<u8> = (0..1024)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    (state >> 56) as u8
                })
                .collect();
            let record = Record {
                offset,
                timestamp: offset as i64,
                key: None,
                value: Some(Bytes::from(value)),
                headers: Vec::new(),
            };
            sink.push("t", 1, &record).unwrap();
        }
        assert_eq!(sink.rows(), 2000);
        let file = sink.finish().unwrap();
        let metadata = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file.clone()))
            .unwrap()
            .metadata()
            .clone();
        let footer = metadata.file_metadata().key_value_metadata().unwrap();
        assert!(footer.iter().any(|kv| kv.key == "strata.topic"));
        let (batches, row_groups) = read_back(file);
        assert!(row_groups > 1, "{row_groups} row group(s)");
        let offsets: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(2).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(offsets, (0..2000).collect::<Vec<i64>>());
    }

    #[test]
    fn an_empty_file_is_a_valid_file_with_the_schema() {
        let file = ParquetSink::new(Vec::new(), ValueFormat::Text, Vec::new())
            .unwrap()
            .finish()
            .unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        assert_eq!(
            builder.schema().as_ref(),
            record_schema(ValueFormat::Text).as_ref()
        );
    }

    /// Key, value, headers and timestamp of an arbitrary record.
    type Parts = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        i64,
    );

    fn arbitrary_record() -> impl Strategy<Value = Parts> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    "[a-z]{0,8}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                ),
                0..4,
            ),
            any::<i64>(),
        )
    }

    proptest! {
        /// Whatever the records, the file reads back as the same rows.
        #[test]
        fn records_read_back_as_written(
            records in proptest::collection::vec(arbitrary_record(), 0..300),
        ) {
            let records: Vec<Record> = records
                .into_iter()
                .enumerate()
                .map(|(offset, (key, value, headers, timestamp))| Record {
                    offset: offset as u64,
                    timestamp,
                    key: key.map(Bytes::from),
                    value: value.map(Bytes::from),
                    headers: headers
                        .into_iter()
                        .map(|(key, value)| Header { key, value: value.map(Bytes::from) })
                        .collect(),
                })
                .collect();
            let mut sink =
                ParquetSink::with_limits(Vec::new(), ValueFormat::Bytes, Vec::new(), 4096, 16 << 10)
                    .unwrap();
            for record in &records {
                sink.push("topic", 0, record).unwrap();
            }
            let (batches, _) = read_back(sink.finish().unwrap());
            let mut read = Vec::new();
            for batch in &batches {
                let offsets = batch.column(2).as_primitive::<Int64Type>();
                let timestamps =
                    batch.column(3).as_primitive::<arrow_array::types::TimestampMillisecondType>();
                let keys = batch.column(4).as_binary::<i32>();
                let values = batch.column(5).as_binary::<i32>();
                let headers = batch.column(6).as_map();
                for row in 0..batch.num_rows() {
                    use arrow_array::Array;
                    let entries = headers.value(row);
                    let names = entries.column(0).as_string::<i32>();
                    let header_values = entries.column(1).as_binary::<i32>();
                    read.push(Record {
                        offset: offsets.value(row) as u64,
                        timestamp: timestamps.value(row),
                        key: (!keys.is_null(row)).then(|| Bytes::copy_from_slice(keys.value(row))),
                        value: (!values.is_null(row))
                            .then(|| Bytes::copy_from_slice(values.value(row))),
                        headers: (0..entries.len())
                            .map(|i| Header {
                                key: names.value(i).to_string(),
                                value: (!header_values.is_null(i))
                                    .then(|| Bytes::copy_from_slice(header_values.value(i))),
                            })
                            .collect(),
                    });
                }
            }
            prop_assert_eq!(read, records);
        }
    }
}
