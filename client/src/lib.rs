//! # strata-client
//!
//! The Rust client for Strata. For now it re-exports the protocol crate so applications can
//! depend on one crate; the producer (batching, partitioner, retries, idempotence), the
//! group-aware consumer and the admin client arrive with the broker's gRPC service.

pub use strata_proto as proto;
