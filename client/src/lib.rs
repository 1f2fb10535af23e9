//! # strata-client
//!
//! The Rust client for Strata: an admin client, a batching, pipelining, idempotent producer, a
//! partition consumer with flow control, a consumer-group member, and request/reply helpers.
//!
//! ```no_run
//! use strata_client::{Client, ConsumerConfig, ProducerConfig, ProducerRecord, StartFrom};
//! use strata_client::proto::v1::TopicConfig;
//!
//! # async fn example() -> strata_client::Result<()> {
//! let client = Client::connect(&strata_client::brokers_from_env()).await?;
//! client.admin().create_topic("orders", 3, 1, TopicConfig::default()).await?;
//!
//! let producer = client.producer(ProducerConfig::default())?;
//! let delivery = producer.send(ProducerRecord::new("orders", "hello").key("user-1")).await?;
//! let stored = delivery.await?;
//! producer.close().await?;
//!
//! let mut consumer = client
//!     .subscribe("orders", stored.partition, StartFrom::Earliest, ConsumerConfig::default())
//!     .await?;
//! while let Some(record) = consumer.next().await? {
//!     println!("{} {:?}", record.offset, record.value);
//! #   break;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `examples/produce_consume.rs` is the same, runnable against a broker.
//!
//! # Layout
//!
//! The arrows point one way (the main ones are drawn): [`Client`] on top makes every feature; the
//! features (admin, producer, consumers) sit on the cluster handle; the pure parts (routing,
//! batching, partitioning, sequencing, backoff) sit at the bottom.
//!
//! ```text
//! request_reply ─▶ client ─▶ group ─▶ group_coordinator ─▶ group_state ─▶ group_config
//!                    │  ╰──▶ producer ─▶ sender ─▶ outbox, accumulator ─▶ record, producer_config
//!                    │  ╰──▶ consumer, admin
//!                    ╰─────▶ cluster ─▶ routing, retry, error
//! ```
//!
//! - `client.rs`: [`Client`], the public entry point: connects and makes the admin client,
//!   producers and consumers.
//! - `cluster.rs`: the cluster handle they all use: a channel per broker, the cluster
//!   metadata, and routed calls that follow leaders; the broker list ([`DEFAULT_BROKERS`],
//!   `STRATA_BROKERS`) and [`ClientConfig`].
//! - `routing.rs`: where each request goes, the metadata it is decided from and what a failure
//!   teaches it (pure, time passed in); [`merge_cluster_views`].
//! - `admin.rs`: [`Admin`], topic, cluster and consumer-group calls; the producer's cache of
//!   partition counts.
//! - [`security`]: users and ACLs on [`Admin`], with the protocol's ACL values and their
//!   short names.
//! - `producer.rs`: [`Producer`] and its `send`, `flush` and `close`.
//! - `producer_config.rs`: [`ProducerConfig`] and the batch limits.
//! - `record.rs`: [`ProducerRecord`], [`RecordMetadata`], the [`DeliveryFuture`] of each send,
//!   and the per-batch outcome that resolves it.
//! - `sender.rs`: the producer's task: one event loop that sends closed batches to their
//!   partitions' leaders over one `ProduceStream` per broker, many in flight, and retries them.
//! - `outbox.rs`: the sender's closed batches (queued, in flight, waiting for a retry), their
//!   retry and failure rules and the idempotent producer's ordering (pure, time passed in).
//! - `sequence.rs`: the idempotent producer's id, epoch and per-partition sequences, and
//!   stamping them into a batch (pure).
//! - `accumulator.rs`: per-partition batching, linger and flush (pure, time passed in), and
//!   the lock `send` and the sender task share it under.
//! - `partitioner.rs`: explicit partition, key hash, or sticky round-robin (pure).
//! - `retry.rs`: [`Backoff`], exponential with jitter (pure).
//! - `consumer.rs`: [`PartitionConsumer`] (Subscribe with byte credit), fetch and list
//!   offsets.
//! - `group.rs`: [`GroupConsumer`], a member of a consumer group: partition readers merged
//!   into one stream, commits; at-least-once semantics.
//! - `group_coordinator.rs`: the group consumer's task: join, heartbeat, reconcile, revoke,
//!   and the partition readers.
//! - `group_state.rs`: what the consumer, its [`Committer`]s and the coordinator share: each
//!   partition's progress and the member's identity; the commit call.
//! - `group_config.rs`: [`GroupConsumerConfig`], [`OffsetReset`], [`AssignmentChange`].
//! - `request_reply.rs`: [`Requester`] and [`Responder`], request and reply over topics,
//!   matched by a `correlation-id` header.
//! - `error.rs`: [`Error`], with the broker's `ErrorDetail` decoded into [`ServerError`].
//!
//! A consumer's *progress* is the offset after the last record it processed; *position* is
//! kept for a byte position in a segment file (the broker's word), so the client does not use
//! it.
//!
//! # Routing and failures
//!
//! The client may be given any brokers of a cluster (`host:port,host:port`); it connects to the
//! first that answers and learns the others from `ClusterInfo`. Each request goes where the
//! cluster serves it:
//!
//! - produce, fetch, subscribe and list-offsets go to the partition's leader;
//! - topic changes, every consumer-group call and the idempotent producer's `InitProducerId` go
//!   to the controller leader;
//! - other admin reads (list, describe, cluster info) go to any broker.
//!
//! A `NOT_LEADER` refusal that names the leader is followed at once. One that does not (an
//! election is running), `UNAVAILABLE`, `SHUTTING_DOWN` and a refused or broken connection (a
//! node died) make the client ask the cluster again, at most every 100 ms, and retry after a
//! backoff: unary calls up to [`ClientConfig::routing_retries`] times, a producer's batches
//! within their `retries` and `delivery_timeout` (the same bytes, so an idempotent producer
//! stores each once, in order, across a leader change), a partition consumer up to
//! [`ConsumerConfig::resubscribe_max`] times from its next offset, and a group consumer for as
//! long as its session allows. A single broker is used exactly as reached, whatever address
//! it advertises.
//!
//! # Guarantees
//!
//! A producer's delivery resolves once the broker has committed the batch (replicated and
//! fsynced). Producers are idempotent by default: a retried batch the broker already holds is
//! acknowledged with its original offsets, not stored twice, and each partition's batches land
//! in the order they were sent (one narrow exception, after a batch failed for good, is
//! described in the producer's module documentation). With `idempotent: false` delivery is at
//! least once: a retried batch may be stored twice. A consumer returns
//! records of one partition in offset order, each once, starting exactly at the offset its
//! start position resolves to.

mod accumulator;
mod admin;
mod client;
mod cluster;
mod consumer;
mod error;
mod group;
mod group_config;
mod group_coordinator;
mod group_state;
mod outbox;
mod partitioner;
mod produce_stream;
mod producer;
mod producer_config;
mod record;
mod request_reply;
mod retry;
mod routing;
pub mod security;
mod sender;
mod sequence;

pub use strata_proto as proto;
pub use strata_proto::batch::{Compression, Header, Record};

pub use admin::{Admin, ResetTo};
pub use client::Client;
pub use cluster::{
    BROKERS_ENV, ClientConfig, ClientIdentity, ClientTls, Credentials, DEFAULT_BROKERS,
    brokers_from_env, parse_brokers,
};
pub use consumer::{
    BATCH_BYTES_MAX, CREDIT_BYTES_MIN, ConsumerConfig, FetchOptions, FetchedRecords,
    PartitionConsumer, PartitionOffsets, StartFrom,
};
pub use error::{ERROR_CODE_METADATA_KEY, Error, Result, ServerError};
pub use group::{GroupConsumer, GroupRecord};
pub use group_config::{AssignmentChange, GroupConsumerConfig, OffsetReset, RevokeHook};
pub use group_state::Committer;
pub use producer::Producer;
pub use producer_config::{BATCH_BYTES_MAX_DEFAULT, ProducerConfig};
pub use record::{DeliveryFuture, ProducerRecord, RecordMetadata};
pub use request_reply::{
    CORRELATION_ID_HEADER, REPLY_TO_HEADER, Requester, RequesterConfig, Responder,
};
pub use retry::Backoff;
pub use routing::{NodeView, merge_cluster_views};
