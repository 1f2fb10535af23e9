//! # strata-proto
//!
//! Strata's wire protocol, shared by the broker and every Rust client:
//! - [`v1`]: the `strata.v1` gRPC services and messages, generated at build time from
//!   `proto/strata/v1/strata.proto` (protoc comes vendored). Bytes fields are `bytes::Bytes`, so
//!   stored batches reach the wire without a copy.
//! - [`batch`]: the record batch format (Kafka's RecordBatch v2) that travels inside those
//!   messages as bytes, with its encoder and decoder.
//! - [`partitioner`]: the key hash that picks a partition, the same on both sides.
//!
//! The batch format and the partitioner live here rather than in the broker because they are
//! part of the protocol: a client encodes and decodes batches exactly as the broker stores them.
//! Other languages generate their code from the `.proto` file.

pub mod batch;
pub mod partitioner;

/// Generated messages, enums and services of package `strata.v1`.
pub mod v1 {
    tonic::include_proto!("strata.v1");

    /// The encoded file descriptor set of `strata.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");
}
