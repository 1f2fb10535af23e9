//! # HTTP: health, metrics, the JSON API and the console
//!
//! A listener beside the gRPC and Kafka ones (`--http-listen`), for load balancers,
//! Prometheus and people. Like the other frontends it only translates: the JSON API calls the
//! same `strata.v1` handlers the gRPC listener runs, under the same principals and ACLs, and
//! the console is a set of static pages (embedded in the binary) that call the JSON API.
//!
//! Paths:
//! - `/healthz`: the process serves HTTP (always 200 while it runs).
//! - `/readyz`: 200 once the node has a controller leader, has caught up and serves its
//!   partitions; 503 with the reason otherwise ([`health`]).
//! - `/metrics`: the Prometheus exposition ([`crate::metrics`]); authenticated like the rest
//!   unless `--metrics-auth off`.
//! - `/api/v1/{Service}/{Method}`: the JSON API ([`api`]): POST a `strata.v1` request in the
//!   proto3 JSON mapping, get the reply (or an error) back as JSON.
//! - `/ui`: the console ([`ui`]).
//!
//! Connections come through the node's own listener stack ([`crate::security::listener`]):
//! the same connection limit, the same TLS (so a client certificate names a principal here
//! too) and HTTP/1.1 or h2 on each connection, with timeouts for slow and idle clients
//! ([`connection`]).

pub mod api;
mod connection;
mod forward;
pub mod health;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::MetricsAuth;
use crate::metrics::{Metrics, ScrapeOptions};
use crate::security::ConnectionInfo;
use crate::security::tls::Tls;
use crate::service::Service;
use crate::service::authenticate::Authenticator;

/// What every HTTP connection of a node shares.
pub struct HttpFrontend {
    broker: watch::Receiver<Option<Arc<Broker>>>,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    metrics_auth: MetricsAuth,
    /// The `strata.v1` handlers the JSON API calls.
    service: Service,
    /// How this node dials others (node-to-node TLS, when on), for forwarded calls.
    peer_tls: Option<Arc<Tls>>,
    /// The JSON API's request series.
    requests: crate::metrics::requests::MethodTable,
}

impl HttpFrontend {
    pub fn new(
        broker: watch::Receiver<Option<Arc<Broker>>>,
        authenticator: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        metrics_auth: MetricsAuth,
        service: Service,
    ) -> Self {
        Self {
            broker,
            authenticator,
            requests: api::method_table(&metrics.requests),
            metrics,
            metrics_auth,
            service,
            peer_tls: None,
        }
    }

    /// Passes calls another node must answer to it with `tls` (node-to-node TLS, when on).
    pub fn with_peer_tls(mut self, tls: Option<Arc<Tls>>) -> Self {
        self.peer_tls = tls;
        self
    }

    /// The broker, once the node serves.
    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.borrow().clone()
    }

    /// The routes, over this frontend.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(health::healthz))
            .route("/readyz", get(health::readyz))
            .route("/metrics", get(metrics))
            .route("/api/v1/{service}/{method}", post(api::call))
            .merge(ui::routes())
            .layer(axum::extract::DefaultBodyLimit::max(api::REQUEST_BYTES_MAX))
            .with_state(self)
    }
}

/// The request's connection facts (put in its extensions by [`serve`]).
fn connection_of(extensions: &axum::http::Extensions) -> ConnectionInfo {
    extensions
        .get::<ConnectionInfo>()
        .cloned()
        .unwrap_or(ConnectionInfo {
            remote: None,
            tls: false,
            certificate: None,
        })
}

/// The `Authorization` header's value, for the authenticator.
fn authorization(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes().to_vec())
}

#[derive(Debug, serde::Deserialize, Default)]
struct MetricsQuery {
    /// Consumer lag per partition too.
    #[serde(default)]
    partitions: bool,
}

/// `/metrics`: the exposition, after authentication unless `--metrics-auth off`.
async fn metrics(
    State(frontend): State<Arc<HttpFrontend>>,
    Query(query): Query<MetricsQuery>,
    request: axum::extract::Request,
) -> Response {
    if frontend.metrics_auth == MetricsAuth::On {
        let connection = connection_of(request.extensions());
        if let Err(status) = frontend
            .authenticator
            .principal_of(authorization(request.headers()), &connection)
            .await
        {
            return api::status_response(&status);
        }
    }
    let broker = frontend.broker();
    let options = ScrapeOptions {
        partition_lag: query.partitions,
    };
    let scrape = |registry: &mut prometheus_client::registry::Registry| {
        if let Some(broker) = &broker {
            broker.scrape_metrics(registry, options);
        }
    };
    match frontend.metrics.encode(scrape) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed",
        )
            .into_response(),
    }
}

/// Serves HTTP connections accepted on `listener` (at most `max_connections` open at once;
/// TLS-terminated by `tls` when given) until `stop` turns true; then stops accepting and lets
/// each connection finish its requests for a bounded while.
pub async fn serve(
    listener: TcpListener,
    frontend: Arc<HttpFrontend>,
    tls: Option<Arc<Tls>>,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let connections = frontend.metrics.data.connections("http");
    let router = frontend.router();
    let accepted = crate::resources::limit_connections(
        crate::resources::nodelay_incoming(listener),
        max_connections,
        connections,
    );
    let mut connections = std::pin::pin!(crate::security::listener::incoming(accepted, tls));
    loop {
        let next = tokio::select! {
            next = connections.next() => next,
            () = crate::kafka::stopped(&mut stop) => return,
        };
        match next {
            None => return,
            // Counted and logged (rate-limited) by the connection limit.
            Some(Err(_)) => {}
            Some(Ok(connection)) => {
                tokio::spawn(connection::run(connection, router.clone(), stop.clone()));
            }
        }
    }
}
