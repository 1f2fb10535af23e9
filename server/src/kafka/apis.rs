//! The dispatch of a Kafka request to its handler, by API key (the served versions are
//! [`versions`](super::versions)'s; the context, decoding and refusals
//! [`context`](super::context)'s, re-exported here for the tests).

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

pub use super::context::{Context, Refusal, decode};
use super::frame::{self, Request};
pub use super::versions::{SERVED, Served, served};
use super::{admin, api_versions, fetch, groups, metadata, offsets, produce, producer_id};

/// Handles one request; `Ok(None)` when the request gets no response (produce with acks 0).
/// Counted in the request metrics by API (see [`crate::metrics::requests`]).
///
/// # Errors
/// A [`Refusal`]: the connection is closed.
pub async fn handle(context: &Context, request: Request) -> Result<Option<Bytes>, Refusal> {
    let started = std::time::Instant::now();
    let api_key = request.api_key;
    let handled = handle_request(context, request).await;
    if let Some(table) = &context.frontend.requests {
        let error = handled.as_ref().err().map(|refusal| match refusal {
            Refusal::Unsupported { .. } => "UNSUPPORTED_VERSION",
            Refusal::Frame(_) => "MALFORMED_REQUEST",
        });
        table.record(table.method(&api_key.to_string()), started, error);
    }
    handled
}

async fn handle_request(context: &Context, request: Request) -> Result<Option<Bytes>, Refusal> {
    let Some(api_key) = served(request.api_key, request.api_version) else {
        if request.api_key == ApiKey::ApiVersions as i16 {
            return Ok(Some(api_versions::unsupported(request.correlation_id)?));
        }
        return Err(Refusal::Unsupported {
            api_key: request.api_key,
            version: request.api_version,
        });
    };
    let version = request.api_version;
    let correlation_id = request.correlation_id;
    let body = request.body;
    let response = match api_key {
        ApiKey::ApiVersions => {
            let _: kafka_protocol::messages::ApiVersionsRequest = decode(api_key, version, body)?;
            frame::response(api_key, version, correlation_id, &api_versions::response())?
        }
        ApiKey::Metadata => {
            let request = decode(api_key, version, body)?;
            let response = metadata::handle(context, version, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::Produce if version < produce::FIRST_SERVED_VERSION => {
            return Ok(produce::answer_old_version(version, correlation_id, body)?);
        }
        ApiKey::Produce => {
            let request = decode(api_key, version, body)?;
            let Some(response) = produce::handle(context, request).await else {
                return Ok(None);
            };
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::Fetch => {
            let request = decode(api_key, version, body)?;
            let response = fetch::handle(context, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::ListOffsets => {
            let request = decode(api_key, version, body)?;
            let response = offsets::handle(context, version, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::CreateTopics => {
            let request = decode(api_key, version, body)?;
            let response = admin::create_topics(context, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::DeleteTopics => {
            let request = decode(api_key, version, body)?;
            let response = admin::delete_topics(context, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::InitProducerId => {
            let request = decode(api_key, version, body)?;
            let response = producer_id::handle(context, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::DescribeConfigs => {
            let request = decode(api_key, version, body)?;
            let response = admin::describe_configs(context, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::ListGroups
        | ApiKey::DescribeGroups
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch => {
            groups::handle(
                context,
                api_key,
                version,
                correlation_id,
                request.client_id,
                body,
            )
            .await?
        }
        other => {
            // In the table but not handled here: refused like an unknown API rather than
            // answered wrongly.
            return Err(Refusal::Unsupported {
                api_key: other as i16,
                version,
            });
        }
    };
    Ok(Some(response))
}
