//! # strata-server
//!
//! The Strata broker. Dependencies point one way:
//! `service (gRPC) -> broker (routing, groups, metadata) -> replication (raft) -> storage`.
//!
//! Layout:
//! - [`storage`]: the partition log (segments, indexes, recovery, retention), which is also each
//!   partition's raft log.
//!
//! The replication, broker and service layers and the `strata-server` binary are built on top of
//! the storage layer in the next steps (see the project's issues).

pub mod storage;
