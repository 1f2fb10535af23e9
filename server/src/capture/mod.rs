//! Continuous capture of committed records to Parquet files (issue 15).

pub mod bucket;
