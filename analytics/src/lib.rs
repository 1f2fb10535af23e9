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
//! | `value` | Binary (or Utf8 as text, or a struct of typed JSON fields), nullable | |
//! | `headers` | Map(Utf8 → Binary nullable) | empty when the record has none |
//!
//! [`RecordColumns`] gathers records into Arrow arrays, [`ParquetSink`] streams them into a
//! Parquet file through bounded memory: a [`arrow_array::RecordBatch`] every
//! [`BATCH_ROWS`] rows or [`BATCH_BYTES`] bytes, a row group every [`ROW_GROUP_BYTES`].

//!
//! With JSON values ([`JsonSchema`], `json_values.rs`), `value` is a struct whose fields are
//! the JSON objects' fields, typed from sample values.

mod columns;
mod json_values;
mod parquet_file;

pub use columns::{RecordColumns, ValueFormat, json_record_schema, record_schema};
pub use json_values::{JsonSchema, JsonType, OnMismatch};
pub use parquet_file::{BATCH_BYTES, BATCH_ROWS, ParquetSink, ROW_GROUP_BYTES, ROW_GROUP_ROWS};

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
    /// A JSON value does not fit the schema of the value column.
    #[error("the value at {topic}/{partition} offset {offset} does not fit the JSON schema: {why}")]
    JsonMismatch {
        topic: String,
        partition: u32,
        offset: u64,
        why: String,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}
