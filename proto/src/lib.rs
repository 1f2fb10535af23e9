//! # strata-proto
//!
//! The `strata.v1` protocol: `proto/strata/v1/strata.proto` and the Rust code tonic and prost
//! generate from it at build time (protoc comes vendored, nothing is installed by hand). Bytes
//! fields are `bytes::Bytes`, so stored batches reach the wire without a copy.
//!
//! Other languages generate their own code from the same `.proto` file.

/// Generated messages, enums and services of package `strata.v1`.
pub mod v1 {
    tonic::include_proto!("strata.v1");
}
