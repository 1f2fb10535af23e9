//! # The JSON API: `strata.v1` over HTTP
//!
//! `POST /api/v1/{Service}/{Method}` with a `strata.v1` request in the proto3 JSON mapping
//! (lowerCamelCase field names, bytes as base64, 64-bit integers as strings; an empty body is
//! the empty request) answers with the reply in the same mapping. Every unary method of the
//! Broker, Admin and Groups services is served; the streams (ProduceStream, Subscribe) and
//! the node-to-node Peer service are not.
//!
//! A request passes the same authentication and method rule as the gRPC method of that name
//! ([`crate::service::access::METHODS`]), then runs the same handler, so its ACL checks, its
//! validation and its errors are the gRPC method's. Credentials: `Authorization: Basic
//! base64(user:password)` or the connection's client certificate.
//!
//! A call that another node must answer (the controller's leader for topic and group changes,
//! a partition's replica for reads) is passed to it for the methods in
//! [`forward::FORWARDED`], so any node's API (and console) serves the whole cluster.
//!
//! An error is answered with the HTTP status of its gRPC code and a JSON body:
//! `{"code": "NOT_FOUND", "error": "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION", "message": "...",
//! "detail": {...}}`, where `error` is Strata's stable error code and `detail` the
//! [`ErrorDetail`](strata_proto::v1::ErrorDetail) (leader hints, valid ranges) when the error
//! has one.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prost::Message as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_proto::v1 as pb;
use strata_proto::v1::admin_server::Admin;
use strata_proto::v1::broker_server::Broker as BrokerService;
use strata_proto::v1::groups_server::Groups;
use tonic::{Code, Status};

use super::{HttpFrontend, authorization, connection_of, forward};
use crate::metrics::requests::MethodTable;
use crate::security::tls::Tls;
use crate::security::{ConnectionInfo, Principal};
use crate::service::Service;

/// Largest request body: a produce request at the gRPC limit, in base64, with room for JSON.
pub const REQUEST_BYTES_MAX: usize =
    crate::service::request_limit::PRODUCE_REQUEST_BYTES_MAX / 3 * 4 + (64 << 10);

/// Declares the served methods once: the dispatch and the list an unknown method's error
/// names come from the same lines.
macro_rules! methods {
    ($( $service:literal $method:literal => $trait:ident :: $function:ident ),* $(,)?) => {
        /// Every method served, as `Service/Method`.
        pub const METHODS: &[&str] = &[$(concat!($service, "/", $method)),*];

        /// Runs `Service/Method` on `service` with `body` as the request.
        async fn dispatch(
            handlers: &Service,
            service: &str,
            method: &str,
            body: Bytes,
            caller: Caller,
            peer_tls: Option<&Tls>,
        ) -> Response {
            match (service, method) {
                $(($service, $method) => {
                    let name = concat!($service, "/", $method);
                    let forward = forward::FORWARDED.contains(&name).then_some((name, peer_tls));
                    unary(body, caller, forward, |request| $trait::$function(handlers, request))
                        .await
                })*
                _ => unknown_method(service, method),
            }
        }
    };
}

methods! {
    "Broker" "Produce" => BrokerService::produce,
    "Broker" "Fetch" => BrokerService::fetch,
    "Broker" "ListOffsets" => BrokerService::list_offsets,
    "Broker" "InitProducerId" => BrokerService::init_producer_id,
    "Admin" "CreateTopic" => Admin::create_topic,
    "Admin" "DeleteTopic" => Admin::delete_topic,
    "Admin" "ListTopics" => Admin::list_topics,
    "Admin" "DescribeTopic" => Admin::describe_topic,
    "Admin" "AlterTopicConfig" => Admin::alter_topic_config,
    "Admin" "ClusterInfo" => Admin::cluster_info,
    "Admin" "AddNode" => Admin::add_node,
    "Admin" "RemoveNode" => Admin::remove_node,
    "Admin" "CreateUser" => Admin::create_user,
    "Admin" "SetPassword" => Admin::set_password,
    "Admin" "DeleteUser" => Admin::delete_user,
    "Admin" "ListUsers" => Admin::list_users,
    "Admin" "CreateAcls" => Admin::create_acls,
    "Admin" "DeleteAcls" => Admin::delete_acls,
    "Admin" "ListAcls" => Admin::list_acls,
    "Admin" "AddPartitions" => Admin::add_partitions,
    "Groups" "JoinGroup" => Groups::join_group,
    "Groups" "Heartbeat" => Groups::heartbeat,
    "Groups" "LeaveGroup" => Groups::leave_group,
    "Groups" "CommitOffsets" => Groups::commit_offsets,
    "Groups" "FetchCommittedOffsets" => Groups::fetch_committed_offsets,
    "Groups" "ListGroups" => Groups::list_groups,
    "Groups" "DescribeGroup" => Groups::describe_group,
    "Groups" "DeleteGroup" => Groups::delete_group,
    "Groups" "ResetOffsets" => Groups::reset_offsets,
}

/// Who calls, as the authentication found them.
struct Caller {
    principal: Option<Principal>,
    connection: ConnectionInfo,
}

/// The error label of an error response (see [`crate::metrics::requests`]), put in its
/// extensions by `error_response` for the request metrics.
#[derive(Debug, Clone, Copy)]
struct ErrorLabel(&'static str);

/// The JSON API's methods for the request metrics, labelled `Service/Method` as in gRPC.
pub fn method_table(metrics: &crate::metrics::requests::RequestMetrics) -> MethodTable {
    let methods = METHODS
        .iter()
        .map(|name| (name.to_string(), name.to_string()));
    MethodTable::new(metrics, "http", methods)
}

/// `POST /api/v1/{service}/{method}`, counted in the request metrics.
pub async fn call(
    State(frontend): State<Arc<HttpFrontend>>,
    Path((service, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let started = std::time::Instant::now();
    let name = format!("{service}/{method}");
    let response = call_method(&frontend, &service, &method, &name, request).await;
    let error = response
        .extensions()
        .get::<ErrorLabel>()
        .map(|label| label.0);
    let table = &frontend.requests;
    table.record(table.method(&name), started, error);
    response
}

async fn call_method(
    frontend: &HttpFrontend,
    service: &str,
    method: &str,
    name: &str,
    request: Request,
) -> Response {
    if !METHODS.contains(&name) {
        return unknown_method(service, method);
    }
    let connection = connection_of(request.extensions());
    let principal = match frontend
        .authenticator
        .admit_path(
            &format!("/strata.v1.{name}"),
            authorization(request.headers()),
            &connection,
        )
        .await
    {
        Ok(principal) => principal,
        Err(status) => return status_response(&status),
    };
    let body = match axum::body::to_bytes(request.into_body(), REQUEST_BYTES_MAX).await {
        Ok(body) => body,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_ARGUMENT",
                None,
                &format!("the request body is larger than {REQUEST_BYTES_MAX} bytes (or was cut)"),
                None,
            );
        }
    };
    let caller = Caller {
        principal,
        connection,
    };
    dispatch(
        &frontend.service,
        service,
        method,
        body,
        caller,
        frontend.peer_tls.as_deref(),
    )
    .await
}

/// Decodes `body`, runs `handler` on it as `caller`, and encodes the reply or the error. With
/// `forward` (the method's name and how this node dials others), a NOT_LEADER answer is passed
/// to the node it names (see [`forward`]).
async fn unary<Req, Resp, F, Fut>(
    body: Bytes,
    caller: Caller,
    forward: Option<(&str, Option<&Tls>)>,
    handler: F,
) -> Response
where
    Req: DeserializeOwned + Default + Clone + prost::Message + Send + Sync + 'static,
    Resp: Serialize + prost::Message + Default + Send + Sync + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let message: Req = if body.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(message) => message,
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    Some(pb::ErrorCode::InvalidArgument.as_str_name()),
                    &format!(
                        "the body is not this method's request in the proto3 JSON mapping: \
                         {error}"
                    ),
                    None,
                );
            }
        }
    };
    let copy = forward.map(|_| message.clone());
    let mut request = tonic::Request::new(message);
    if let Some(principal) = caller.principal {
        request.extensions_mut().insert(principal);
    }
    request.extensions_mut().insert(caller.connection);
    let status = match handler(request).await {
        Ok(reply) => return Json(reply.into_inner()).into_response(),
        Err(status) => status,
    };
    let (Some((method, peer_tls)), Some(copy), Some((node, address))) =
        (forward, copy, forward::leader_of(&status))
    else {
        return status_response(&status);
    };
    match forward::call::<Req, Resp>(peer_tls, node, &address, method, copy).await {
        Ok(reply) => Json(reply).into_response(),
        Err(status) => status_response(&status),
    }
}

fn unknown_method(service: &str, method: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        None,
        &format!(
            "no method {service}/{method} in the JSON API; served are: {}",
            METHODS.join(", ")
        ),
        None,
    )
}

/// A gRPC status as an HTTP response (see the module doc).
pub fn status_response(status: &Status) -> Response {
    let (http, code) = match status.code() {
        Code::Ok => (StatusCode::OK, "OK"),
        Code::Cancelled => (StatusCode::REQUEST_TIMEOUT, "CANCELLED"),
        Code::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        Code::FailedPrecondition => (StatusCode::BAD_REQUEST, "FAILED_PRECONDITION"),
        Code::Aborted => (StatusCode::CONFLICT, "ABORTED"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "OUT_OF_RANGE"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
        Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "DATA_LOSS"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
    };
    let error = status
        .metadata()
        .get("strata-error-code")
        .and_then(|value| value.to_str().ok());
    let detail = pb::ErrorDetail::decode(status.details())
        .ok()
        .filter(|detail| *detail != pb::ErrorDetail::default())
        .and_then(|detail| serde_json::to_value(detail).ok());
    error_response(http, code, error, status.message(), detail)
}

fn error_response(
    http: StatusCode,
    code: &str,
    error: Option<&str>,
    message: &str,
    detail: Option<serde_json::Value>,
) -> Response {
    let mut body = serde_json::json!({ "code": code, "message": message });
    if let Some(error) = error {
        body["error"] = error.into();
    }
    if let Some(detail) = detail {
        body["detail"] = detail;
    }
    let label = ErrorLabel(crate::metrics::requests::error_label_of_names(code, error));
    let mut response = (http, Json(body)).into_response();
    response.extensions_mut().insert(label);
    response
}
