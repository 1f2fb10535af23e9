//! # Controller: the cluster's replicated metadata
//!
//! The controller is a raft group ([`replication::CONTROLLER`](crate::replication::CONTROLLER))
//! whose state is the cluster's metadata: nodes, topics with their configs and replica sets,
//! committed consumer group offsets and producer id blocks. This module owns that state and its deterministic
//! state machine; it sits below the broker and the consumer groups, which both read the
//! metadata and propose [`Command`](metadata::Command)s, and it knows neither of them.
//!
//! - [`metadata`]: [`Metadata`](metadata::Metadata), the [`Command`](metadata::Command)s that
//!   change it and their typed refusals, name checks and replica placement.
//! - [`machine`]: [`Controller`](machine::Controller), the raft state machine applying the
//!   commands, and its snapshot file.
//! - [`capture_config`]: capture's configs and the replicated capture position;
//!   [`capture`]: the two compare-and-set commands that move it.
//! - [`security`]: the users and ACLs part of the metadata: the commands' rules and limits.

pub mod capture;
pub mod capture_config;
pub mod machine;
pub mod metadata;
pub mod security;
