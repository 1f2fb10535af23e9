//! `/healthz` and `/readyz`, for load balancers and orchestrators. Both are open (no
//! credentials): they say whether the node serves, nothing about its data.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::HttpFrontend;
use crate::broker::readiness::NotReady;

/// The process runs and serves HTTP.
pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// 200 once the node is ready (see [`crate::broker::Broker::readiness`]); 503 with what is not
/// ready, as JSON (`{"ready": false, "count": n, "reasons": [...]}`).
pub async fn readyz(State(frontend): State<Arc<HttpFrontend>>) -> Response {
    let outcome = match frontend.broker() {
        None => Err(NotReady {
            count: 1,
            reasons: vec![
                "the node is starting: waiting for the controller to have a leader and for \
                 this node's metadata to catch up"
                    .to_string(),
            ],
        }),
        Some(broker) => broker.readiness(),
    };
    match outcome {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))).into_response(),
        Err(not_ready) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false,
                "count": not_ready.count,
                "reasons": not_ready.reasons,
            })),
        )
            .into_response(),
    }
}
