//! Strata's records as Arrow columns and Parquet files.
//!
//! One schema for everything Strata writes for analytics engines (DuckDB, Polars, Spark,
//! Trino): `strata export` and the server's capture both write rows of
//!
//! | column | Arrow type | |
//! |---|---|---|
//! | `topic` | Utf8 | |
//! | `partition` | Int32 | |
//! | `offset` | Int64 | |
//! | `timestamp` | Timestamp(ms, "UTC") | the record's timestamp |
//! | `key` | Binary, nullable | |
//! | `value` | Binary (or Utf8 as text), nullable | |
//! | `headers` | Map(Utf8 → Binary nullable) | empty when the record has none |
//!
//! [`RecordColumns`] gathers records into Arrow arrays, [`ParquetSink`] streams them into a
//! Parquet file through bounded memory: a [`arrow_array::RecordBatch`] every
//! [`BATCH_ROWS`] rows or [`BATCH_BYTES`] bytes, a row group every [`ROW_GROUP_BYTES`].

mod columns;
mod parquet_file;

pub use columns::{RecordColumns, ValueFormat, record_schema};
pub use parquet_file::{BATCH_BYTES, BATCH_ROWS, ParquetSink, ROW_GROUP_BYTES};

/// Why records could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// A value was to be written as text and is not UTF-8.
    #[error(
        "the value at {topic}/{partition} offset {offset} is not UTF-8 text (write values as \
         bytes instead)"
    )]
    NotText {
        topic: String,
        partition: u32,
        offset: u64,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}
