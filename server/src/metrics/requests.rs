//! # Request metrics: requests, errors and latency per API method, per frontend
//!
//! - `strata_requests_total{frontend, method}`: requests answered.
//! - `strata_request_errors_total{frontend, method, code}`: requests answered with an error;
//!   `code` is Strata's error code (`ERROR_CODE_...`) when the error has one, else the gRPC
//!   code's name (`UNAUTHENTICATED`, ...), or for Kafka the refusal that closed the connection
//!   (`UNSUPPORTED_VERSION`, `MALFORMED_REQUEST`).
//! - `strata_request_duration_seconds{frontend, method}`: a histogram of the time from the
//!   request's arrival to its response (for a stream, to the start of its response), with the
//!   fixed buckets [`LATENCY_BUCKETS_SECONDS`], the same on every node so that they sum.
//!
//! `frontend` is `grpc`, `kafka` or `http` (the JSON API). `method` is `Service/Method` for gRPC
//! and the JSON API (only paths of their method tables; anything else is `other`) and the API
//! key's name for Kafka (only served APIs; anything else is `other`). So the series are
//! bounded by the method tables, and `code` by the error codes of the proto and gRPC.
//!
//! A frontend builds a [`MethodTable`] once; a method's series are created on its first
//! request and its handles kept in the table, so a request costs a lookup in an immutable map
//! (no lock), two atomic adds and the histogram's observation.
//!
//! What is not counted as an error: Kafka answers most errors inside a successful response
//! (per partition), so only a refusal that closes the connection counts; a gRPC stream
//! (Subscribe, ProduceStream) counts the error that refuses its start, not one that ends it
//! later (that comes in its trailers, after the response was counted).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use strata_proto::v1::ErrorCode;
use tonic::Code;
use tonic::codegen::{Service, http};

/// Upper bounds of the request latency buckets, in seconds: from half a millisecond (a
/// metadata read) to a minute (a long poll or a produce waiting for its commit).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The method label of a request outside a frontend's method table.
pub const OTHER_METHOD: &str = "other";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MethodLabels {
    pub frontend: &'static str,
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    pub frontend: &'static str,
    pub method: String,
    pub code: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// The request families of a node (see the module doc).
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<MethodLabels, Counter<u64, AtomicU64>>,
    errors: Family<ErrorLabels, Counter<u64, AtomicU64>>,
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl RequestMetrics {
    /// The families, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "requests",
            "Requests answered, per frontend and API method",
            metrics.requests.clone(),
        );
        registry.register(
            "request_errors",
            "Requests answered with an error, per frontend, API method and error code",
            metrics.errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response, per frontend and API method",
            metrics.duration.clone(),
        );
        metrics
    }
}

/// One method's handles.
struct MethodHandles {
    labels: MethodLabels,
    requests: Counter<u64, AtomicU64>,
    duration: Histogram,
}

/// A frontend's methods: each one's series, created on its first request (see the module
/// doc). Shared by the frontend's connections.
pub struct MethodTable {
    metrics: RequestMetrics,
    frontend: &'static str,
    /// From the frontend's key of a method (a gRPC path, a Kafka API key) to its slot.
    index: HashMap<String, usize>,
    /// Label and handles of each method; the last slot is [`OTHER_METHOD`].
    slots: Vec<(String, OnceLock<MethodHandles>)>,
}

/// A method of a [`MethodTable`], as [`MethodTable::method`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method(usize);

impl MethodTable {
    /// The table of `frontend` over `methods`: each a key the frontend finds it by and its
    /// label.
    pub fn new(
        metrics: &RequestMetrics,
        frontend: &'static str,
        methods: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut index = HashMap::new();
        let mut slots = Vec::new();
        for (key, label) in methods {
            index.insert(key, slots.len());
            slots.push((label, OnceLock::new()));
        }
        slots.push((OTHER_METHOD.to_string(), OnceLock::new()));
        Self {
            metrics: metrics.clone(),
            frontend,
            index,
            slots,
        }
    }

    /// The method a frontend's key names, or [`OTHER_METHOD`].
    pub fn method(&self, key: &str) -> Method {
        Method(self.index.get(key).copied().unwrap_or(self.slots.len() - 1))
    }

    fn handles(&self, method: Method) -> &MethodHandles {
        let (label, handles) = &self.slots[method.0.min(self.slots.len() - 1)];
        handles.get_or_init(|| {
            let labels = MethodLabels {
                frontend: self.frontend,
                method: label.clone(),
            };
            MethodHandles {
                requests: self.metrics.requests.get_or_create_owned(&labels),
                duration: self.metrics.duration.get_or_create_owned(&labels),
                labels,
            }
        })
    }

    /// Counts a request of `method` that arrived at `started` and was answered now, with
    /// `error` (its code label) when it failed.
    pub fn record(&self, method: Method, started: Instant, error: Option<&'static str>) {
        let handles = self.handles(method);
        handles.requests.inc();
        handles.duration.observe(started.elapsed().as_secs_f64());
        if let Some(code) = error {
            self.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    frontend: handles.labels.frontend,
                    method: handles.labels.method.clone(),
                    code,
                })
                .inc();
        }
    }
}

/// The error label of a gRPC status: Strata's code (from the `strata-error-code` metadata)
/// when it names one, else the gRPC code's name.
pub fn error_label(code: Code, strata_code: Option<&str>) -> &'static str {
    if let Some(strata) = strata_code.and_then(ErrorCode::from_str_name) {
        return strata.as_str_name();
    }
    grpc_code_name(code)
}

/// The error label of an error known by names: Strata's code when `strata_code` names one,
/// else `grpc_name` when it is a gRPC code's name, else `UNKNOWN` (so the label stays
/// within a fixed set whatever the caller passes).
pub fn error_label_of_names(grpc_name: &str, strata_code: Option<&str>) -> &'static str {
    if let Some(strata) = strata_code.and_then(ErrorCode::from_str_name) {
        return strata.as_str_name();
    }
    (0..=16)
        .map(|code| grpc_code_name(Code::from_i32(code)))
        .find(|name| *name == grpc_name)
        .unwrap_or("UNKNOWN")
}

/// The canonical name of a gRPC code (as in the gRPC spec).
pub fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC methods' table: every one of `paths` (the node's method table,
/// `service::access::METHODS`, handed in by `run`), labelled `Service/Method`.
pub fn grpc_table<'a>(
    metrics: &RequestMetrics,
    paths: impl IntoIterator<Item = &'a str>,
) -> MethodTable {
    let methods = paths.into_iter().map(|path| {
        // "/strata.v1.Broker/Produce" -> "Broker/Produce"
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let service = service.rsplit('.').next().unwrap_or(service);
        (path.to_string(), format!("{service}/{method}"))
    });
    MethodTable::new(metrics, "grpc", methods)
}

/// The error label of a gRPC response that is an error from its headers (a trailers-only
/// response, as tonic answers a failed call); `None` for a response that is not (yet) one.
fn response_error<B>(response: &http::Response<B>) -> Option<&'static str> {
    let headers = response.headers();
    let status = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())?;
    let code = Code::from_i32(status);
    if code == Code::Ok {
        return None;
    }
    let strata = headers
        .get("strata-error-code")
        .and_then(|value| value.to_str().ok());
    Some(error_label(code, strata))
}

/// A tower layer on the gRPC server that counts every request in the gRPC [`MethodTable`]:
/// outside authentication, so refused credentials count as errors too.
#[derive(Clone)]
pub struct GrpcMetricsLayer(Arc<MethodTable>);

impl GrpcMetricsLayer {
    pub fn new<'a>(metrics: &RequestMetrics, paths: impl IntoIterator<Item = &'a str>) -> Self {
        Self(Arc::new(grpc_table(metrics, paths)))
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            table: self.0.clone(),
        }
    }
}

/// The gRPC services behind the request metrics (see [`GrpcMetricsLayer`]).
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    table: Arc<MethodTable>,
}

impl<S, B, R> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        // The ready service answers this request; its clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let table = self.table.clone();
        let method = table.method(request.uri().path());
        Box::pin(async move {
            let response = inner.call(request).await;
            if let Ok(response) = &response {
                table.record(method, started, response_error(response));
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few paths of the node's method table.
    const PATHS: [&str; 3] = [
        "/strata.v1.Broker/Produce",
        "/strata.v1.Broker/Fetch",
        "/grpc.health.v1.Health/Check",
    ];

    /// Paths of the method table get their `Service/Method` label; anything else is `other`.
    #[test]
    fn grpc_paths_map_to_bounded_labels() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::new(&mut registry);
        let table = grpc_table(&metrics, PATHS);
        let produce = table.method("/strata.v1.Broker/Produce");
        assert_eq!(table.slots[produce.0].0, "Broker/Produce");
        let health = table.method("/grpc.health.v1.Health/Check");
        assert_eq!(table.slots[health.0].0, "Health/Check");
        let other = table.method("/strata.v1.Broker/NoSuchMethod");
        assert_eq!(table.slots[other.0].0, OTHER_METHOD);
        assert_eq!(table.method("/evil/../x"), other);
    }

    /// A request counts once in its method's counter and histogram; an error also counts
    /// under its code, Strata's when the status names one.
    #[test]
    fn requests_and_errors_are_counted_with_their_code() {
        let mut registry = Registry::default();
        let metrics = RequestMetrics::new(&mut registry);
        let table = grpc_table(&metrics, PATHS);
        let fetch = table.method("/strata.v1.Broker/Fetch");
        table.record(fetch, Instant::now(), None);
        let code = error_label(
            Code::NotFound,
            Some("ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION"),
        );
        assert_eq!(code, "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION");
        table.record(fetch, Instant::now(), Some(code));
        let labels = MethodLabels {
            frontend: "grpc",
            method: "Broker/Fetch".to_string(),
        };
        assert_eq!(metrics.requests.get_or_create(&labels).get(), 2);
        let errors = ErrorLabels {
            frontend: "grpc",
            method: "Broker/Fetch".to_string(),
            code,
        };
        assert_eq!(metrics.errors.get_or_create(&errors).get(), 1);
        assert_eq!(
            error_label(Code::Unauthenticated, Some("bogus")),
            "UNAUTHENTICATED"
        );
    }
}
