//! ApiVersions: what this listener serves, from [`SERVED`](super::versions::SERVED).

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use super::frame::{self, FrameError};
use super::versions::SERVED;

/// The answer to a served ApiVersions request.
pub fn response() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SERVED
            .iter()
            .map(|served| {
                ApiVersion::default()
                    .with_api_key(served.api_key as i16)
                    .with_min_version(served.min)
                    .with_max_version(served.max)
            })
            .collect(),
    )
}

/// The answer to an ApiVersions request of a version this listener does not serve: Kafka's
/// UNSUPPORTED_VERSION with the v0 body (which every client reads), listing what is served so
/// the client retries with a version it finds there.
///
/// # Errors
/// Never in practice (a v0 body always encodes); a [`FrameError`] otherwise.
pub fn unsupported(correlation_id: i32) -> Result<Bytes, FrameError> {
    let body = response().with_error_code(ResponseError::UnsupportedVersion.code());
    frame::response(ApiKey::ApiVersions, 0, correlation_id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn a_too_new_version_gets_a_v0_body_listing_what_is_served() {
        let frame = unsupported(42).unwrap();
        let mut body = frame.slice(8..);
        assert_eq!(&frame[4..8], &42i32.to_be_bytes());
        let decoded = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(decoded.error_code, ResponseError::UnsupportedVersion.code());
        assert!(
            decoded
                .api_keys
                .iter()
                .any(|api| api.api_key == ApiKey::ApiVersions as i16
                    && api.min_version == 0
                    && api.max_version == 3)
        );
    }
}
