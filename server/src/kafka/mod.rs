//! # Kafka: the Kafka wire protocol frontend
//!
//! A listener beside the gRPC one (`--kafka-listen`) that speaks Kafka's binary protocol, so
//! Kafka's clients and tools produce and consume on Strata. It only translates: every request
//! becomes the same [`Broker`] calls the gRPC service makes (one produce path, one group store),
//! under the same principals, ACLs and TLS. Strata stores Kafka's RecordBatch v2, so a batch a
//! Kafka client sends is validated and stored byte for byte, and fetched batches go back as
//! stored.
//!
//! Message bodies are decoded and encoded by the `kafka-protocol` crate (generated from Kafka's
//! message specs; carried with a fix in `third_party/`, see its README). Only the 61-byte batch
//! header is Strata's own to parse.
//!
//! - this module: [`Frontend`] (what every connection shares) and [`serve`] (the accept loop).
//! - [`frame`]: size-prefixed frames, request headers, response framing.
//! - `connection`: one task per connection: requests read ahead (pipelined), handled
//!   concurrently, answered in request order; the connection's SASL state.
//! - [`versions`]: the served APIs and versions (what ApiVersions advertises).
//! - [`apis`]: the dispatch of a request to its handler.
//! - [`context`]: what handlers share (the request's context, decoding, refusals).
//! - [`error`]: [`BrokerError`](crate::broker::BrokerError)s as Kafka error codes.
//! - `groups`, `group_offsets`: consumer groups (FindCoordinator, the classic rebalance
//!   protocol, ListGroups, DescribeGroups) and their committed offsets.
//! - [`sasl`]: SaslHandshake and SaslAuthenticate (PLAIN, SCRAM-SHA-256): the connection's
//!   principal when passwords authenticate it.
//! - `api_versions`, `metadata`: the handlers of those APIs (one module per API family).
//! - `produce`, `fetch`, `offsets` (ListOffsets), `producer_id` (InitProducerId), `admin`
//!   (CreateTopics, DeleteTopics, DescribeConfigs): the data path and topic admin.

mod admin;
mod api_versions;
pub mod apis;
mod connection;
pub mod context;
pub mod error;
mod fetch;
pub mod frame;
mod group_offsets;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
pub mod sasl;
pub mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::{Broker, BrokerError};
use crate::config::Authentication;
use crate::metrics::Metrics;
use crate::metrics::requests::MethodTable;
use crate::security::acl::Policy;
use crate::security::tls::Tls;
use crate::service::Liveness;
use crate::service::authenticate::Authenticator;
use crate::service::cluster_view::{ClusterView, Gathered};

/// What every Kafka connection of a node shares.
pub struct Frontend {
    /// `None` while the node starts: requests needing the broker are answered with a retriable
    /// error meanwhile (see [`Frontend::broker`]).
    broker: watch::Receiver<Option<Arc<Broker>>>,
    /// Authorization: whether ACLs are enforced, and the superusers.
    pub(crate) policy: Arc<Policy>,
    /// How clients must authenticate (`--authentication`): with `password`, a connection
    /// must pass SASL before anything but ApiVersions and the SASL requests.
    pub(crate) authentication: Authentication,
    /// Whether Metadata creates the topics it names that do not exist.
    pub(crate) auto_create_topics: bool,
    /// Largest request frame, in bytes; a larger one closes its connection.
    pub(crate) request_bytes_max: usize,
    /// Who leads each partition, cluster-wide (shared with the gRPC service).
    leaders: Arc<ClusterView>,
    /// How this node dials others (node-to-node TLS, when on).
    pub(crate) peer_tls: Option<Arc<Tls>>,
    /// Checks SASL passwords (shared with gRPC: one cache, slowdown and set of PBKDF2
    /// permits per node). `None`: SASL offers no mechanism, so with `password`
    /// authentication no connection without a certificate gets in.
    authenticator: Option<Arc<Authenticator>>,
    /// The node's metrics: connections, and requests per API ([`Frontend::with_metrics`]).
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// The served APIs' request series (see [`crate::metrics::requests`]).
    pub(crate) requests: Option<MethodTable>,
}

impl Frontend {
    /// The frontend of a node; `peer_tls` (node-to-node TLS, when on) and `alive` are how it
    /// asks other nodes about their partitions (see [`ClusterView`]; a node shares one with
    /// its gRPC service through [`Frontend::with_cluster_view`]).
    pub fn new(
        broker: watch::Receiver<Option<Arc<Broker>>>,
        policy: Arc<Policy>,
        authentication: Authentication,
        auto_create_topics: bool,
        request_bytes_max: usize,
        peer_tls: Option<Arc<Tls>>,
        alive: Liveness,
    ) -> Self {
        Self {
            broker,
            policy,
            authentication,
            auto_create_topics,
            request_bytes_max,
            leaders: Arc::new(ClusterView::new(peer_tls.clone(), alive)),
            peer_tls,
            authenticator: None,
            metrics: None,
            requests: None,
        }
    }

    /// Counts connections and requests (per served API, by its name) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        let apis = versions::SERVED.iter().map(|served| {
            (
                (served.api_key as i16).to_string(),
                format!("{:?}", served.api_key),
            )
        });
        self.requests = Some(MethodTable::new(&metrics.requests, "kafka", apis));
        self.metrics = Some(metrics);
        self
    }

    /// Takes the partitions' leaders from `view` (the node's, shared with gRPC) instead of
    /// its own.
    pub fn with_cluster_view(mut self, view: Arc<ClusterView>) -> Self {
        self.leaders = view;
        self
    }

    /// Checks SASL passwords with `authenticator` (the node's, shared with gRPC).
    pub fn with_authenticator(mut self, authenticator: Arc<Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// The password checker SASL uses, when set.
    pub(crate) fn authenticator(&self) -> Option<&Authenticator> {
        self.authenticator.as_deref()
    }

    /// Who leads each partition, as Metadata reports it.
    pub(crate) async fn leaders(&self, broker: &Broker) -> Arc<Gathered> {
        self.leaders.get(broker).await
    }

    /// Whether node `node` is heard from (this node always is): Metadata lists live nodes only,
    /// as Kafka does.
    pub(crate) fn alive(&self, broker: &Broker, node: u64) -> bool {
        self.leaders.alive(broker, node)
    }

    /// The broker, once the node serves.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] while the node starts.
    pub(crate) fn broker(&self) -> Result<Arc<Broker>, BrokerError> {
        self.broker.borrow().clone().ok_or_else(|| {
            BrokerError::Unavailable(
                "the node is starting: metadata not loaded yet: retry shortly".to_string(),
            )
        })
    }
}

/// Serves Kafka connections accepted on `listener` (at most `max_connections` open at once;
/// TLS-terminated by `tls` when given) until `stop` turns true; then stops accepting and
/// closes every connection after its current request.
pub async fn serve(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    tls: Option<Arc<Tls>>,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let accepted = crate::resources::limit_connections(
        crate::resources::nodelay_incoming(listener),
        max_connections,
        frontend
            .metrics
            .as_ref()
            .map(|metrics| metrics.data.connections("kafka"))
            .unwrap_or_default(),
    );
    let mut connections = std::pin::pin!(crate::security::listener::incoming(accepted, tls));
    loop {
        let next = tokio::select! {
            next = connections.next() => next,
            () = stopped(&mut stop) => return,
        };
        match next {
            None => return,
            // Counted and logged (rate-limited) by the connection limit.
            Some(Err(_)) => {}
            Some(Ok(connection)) => {
                tokio::spawn(connection::run(frontend.clone(), connection, stop.clone()));
            }
        }
    }
}

/// Completes once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The address a Kafka listener bound to `local` tells clients, given `--kafka-advertised`.
pub fn advertised(local: SocketAddr, configured: Option<&str>) -> String {
    configured.map_or_else(|| local.to_string(), str::to_string)
}
