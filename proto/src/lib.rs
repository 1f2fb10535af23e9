//! # strata-proto
//!
//! Strata's wire protocol, shared by the broker and every Rust client:
//! - [`v1`]: the `strata.v1` gRPC services and messages, generated at build time from
//!   `proto/strata/v1/strata.proto` (protoc comes vendored). Bytes fields are `bytes::Bytes`, so
//!   stored batches reach the wire without a copy.
//! - [`batch`]: the record batch format (Kafka's RecordBatch v2) that travels inside those
//!   messages as bytes, with its encoder and decoder.
//!   With the `json` feature every message also has serde's traits in the proto3 JSON mapping
//!   (lowerCamelCase names, bytes as base64, 64-bit integers as strings).
//! - [`partitioner`]: the key hash that picks a partition, the same on both sides.
//!
//! The batch format and the partitioner live here rather than in the broker because they are
//! part of the protocol: a client encodes and decodes batches exactly as the broker stores them.
//! Other languages generate their code from the `.proto` file.

pub mod batch;
pub mod partitioner;

/// Largest HTTP/2 frame a broker accepts (h2's default is 16 KiB), from clients and from
/// peers: a produced batch up to a megabyte, or a peer's raft batch, travels in one DATA frame
/// instead of 64, each of which is parsed and queued on its own; and the broker reads a batch
/// that came in one frame as a slice of it, where one cut across frames is copied to be
/// gathered (see the server's `request_frames`). At 256 KiB, the batches of 256 records of
/// 1 KiB (258 KiB) were cut in two. A connection's read buffer holds at most one frame, so
/// this is also what a connection costs while one arrives; a DATA frame is bounded as well by
/// the broker's flow-control window (hyper's default, 1 MiB), which already let a connection
/// hold that much received data.
pub const BROKER_FRAME_BYTES_MAX: u32 = 1 << 20;

/// Largest HTTP/2 frame a client accepts from brokers: a replay's batches come in frames of up
/// to this. Replies are decoded by tonic, which copies each frame into its own buffer anyway,
/// and 1 MiB frames replayed slower than these (848 000 against 952 000 records/s, medians of
/// 3–6 alternating runs, BENCHMARKS.md): each frame takes a fresh read buffer of its size.
pub const CLIENT_FRAME_BYTES_MAX: u32 = 256 * 1024;

/// Generated messages, enums and services of package `strata.v1`.
pub mod v1 {
    tonic::include_proto!("strata.v1");
    #[cfg(feature = "json")]
    include!(concat!(env!("OUT_DIR"), "/strata.v1.serde.rs"));

    /// The encoded file descriptor set of `strata.v1`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");
}
