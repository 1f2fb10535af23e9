//! The Kafka APIs this listener serves, with their versions (what ApiVersions advertises), and
//! the dispatch of a request to its handler.
//!
//! Versions are Kafka's non-flexible ones (ApiVersions aside), chosen to look like one real
//! Kafka release, because some clients guess the broker's version from the maxima. A request
//! for an API or version missing here closes its connection (Kafka does the same), except
//! ApiVersions, which answers UNSUPPORTED_VERSION with its v0 body so the client can retry
//! with a version it finds in the answer.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Decodable;

use super::frame::{self, FrameError, Request};
use super::{
    Frontend, admin, api_versions, fetch, groups, metadata, offsets, produce, producer_id,
};
use crate::security::ConnectionInfo;
use crate::service::access::Access;

/// One served API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub api_key: ApiKey,
    /// The versions advertised.
    pub min: i16,
    pub max: i16,
}

/// Every API served, in API key order.
pub const SERVED: &[Served] = &[
    // v0–2 answered UNSUPPORTED_FOR_MESSAGE_FORMAT (see `produce`).
    Served {
        api_key: ApiKey::Produce,
        min: 0,
        max: 7,
    },
    Served {
        api_key: ApiKey::Fetch,
        min: 4,
        max: 10,
    },
    Served {
        api_key: ApiKey::ListOffsets,
        min: 1,
        max: 4,
    },
    Served {
        api_key: ApiKey::Metadata,
        min: 0,
        max: 7,
    },
    Served {
        api_key: ApiKey::OffsetCommit,
        min: 2,
        max: 6,
    },
    Served {
        api_key: ApiKey::OffsetFetch,
        min: 1,
        max: 5,
    },
    Served {
        api_key: ApiKey::FindCoordinator,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::JoinGroup,
        min: 0,
        max: 3,
    },
    Served {
        api_key: ApiKey::Heartbeat,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::LeaveGroup,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::SyncGroup,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::DescribeGroups,
        min: 0,
        max: 2,
    },
    Served {
        api_key: ApiKey::ListGroups,
        min: 0,
        max: 2,
    },
    // v0 is advertised because librdkafka (kcat) enables SASL only when it is, as Kafka
    // does; a v0 request (raw SASL tokens after it, not SaslAuthenticate) is refused in
    // `sasl`: clients that know v1 send v1.
    Served {
        api_key: ApiKey::SaslHandshake,
        min: 0,
        max: 1,
    },
    Served {
        api_key: ApiKey::ApiVersions,
        min: 0,
        max: 3,
    },
    Served {
        api_key: ApiKey::CreateTopics,
        min: 2,
        max: 3,
    },
    Served {
        api_key: ApiKey::DeleteTopics,
        min: 1,
        max: 3,
    },
    Served {
        api_key: ApiKey::InitProducerId,
        min: 0,
        max: 1,
    },
    Served {
        api_key: ApiKey::DescribeConfigs,
        min: 1,
        max: 2,
    },
    Served {
        api_key: ApiKey::SaslAuthenticate,
        min: 0,
        max: 1,
    },
];

/// The served API of `api_key`, if `version` is one it serves.
pub fn served(api_key: i16, version: i16) -> Option<ApiKey> {
    SERVED
        .iter()
        .find(|served| served.api_key as i16 == api_key)
        .filter(|served| (served.min..=served.max).contains(&version))
        .map(|served| served.api_key)
}

/// What a handler knows of its request's connection.
#[derive(Clone)]
pub struct Context {
    pub frontend: Arc<Frontend>,
    /// The connection's principal (authenticated or anonymous) and the node's policy.
    pub access: Access,
    pub connection: ConnectionInfo,
}

/// Why a request ends its connection: the connection loop logs it and closes.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("unsupported API key {api_key} version {version}")]
    Unsupported { api_key: i16, version: i16 },
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Decodes `body` as a request of `T` at `version`.
///
/// # Errors
/// [`FrameError::Malformed`] naming the API.
pub fn decode<T: Decodable>(
    api_key: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<T, FrameError> {
    T::decode(&mut body, version)
        .map_err(|e| FrameError::Malformed(format!("{api_key:?} v{version} request: {e}")))
}

/// Handles one request; `Ok(None)` when the request gets no response (produce with acks 0).
///
/// # Errors
/// A [`Refusal`]: the connection is closed.
pub async fn handle(context: &Context, request: Request) -> Result<Option<Bytes>, Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_key_order_with_valid_ranges() {
        for pair in SERVED.windows(2) {
            assert!(
                (pair[0].api_key as i16) < (pair[1].api_key as i16),
                "{pair:?}"
            );
        }
        for served in SERVED {
            assert!(served.min <= served.max, "{served:?}");
        }
        assert_eq!(served(ApiKey::Metadata as i16, 7), Some(ApiKey::Metadata));
        assert_eq!(served(ApiKey::Metadata as i16, 8), None);
        assert_eq!(served(-1, 0), None);
    }
}
