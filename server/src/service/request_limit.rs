//! The produce request size limit, answered with Strata's error code.
//!
//! tonic refuses a request message above the service's decoding limit before any of our code
//! runs, with its own OUT_OF_RANGE status that carries no Strata error code. The Broker
//! service's limit is [`PRODUCE_REQUEST_BYTES_MAX`]: the batch limit plus room for the
//! request's framing, so a batch just over the batch limit still reaches
//! [`validate_producer_batch`](crate::partition::validate_producer_batch), which answers
//! RECORD_TOO_LARGE with the batch's size and the limit. Beyond the request limit, a unary
//! Produce gets tonic's refusal, which [`ProduceLimit`] rewrites into RECORD_TOO_LARGE (the
//! request's size and the limit); a ProduceStream sees it as the stream's error and ends with
//! the same status (see [`oversized_request`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::broker::BrokerError;
use crate::partition;

/// Room a produce request may take beyond its batch: the topic name (at most 249 bytes), the
/// partition key and the protobuf framing. A request of records (rather than a batch) is
/// bounded by the same limit.
pub const PRODUCE_FRAMING_BYTES_MAX: usize = 64 << 10;
/// Largest Broker service request message tonic decodes (bytes).
pub const PRODUCE_REQUEST_BYTES_MAX: usize = partition::BATCH_BYTES_MAX + PRODUCE_FRAMING_BYTES_MAX;

/// The unary method whose oversized requests are rewritten.
const PRODUCE_PATH: &str = "/strata.v1.Broker/Produce";

/// The start of tonic's message for a message above its decoding limit (tonic 0.14's
/// `codec::decode`); a test pins it.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// When `status` is tonic's refusal of a message above the decoding limit: the same refusal
/// as RECORD_TOO_LARGE, with the message's size and the limit.
pub fn oversized_request(status: &Status) -> Option<BrokerError> {
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let rest = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    let (size, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some(BrokerError::RequestTooLarge {
        size_bytes: size.parse().ok()?,
        limit_bytes: limit.parse().ok()?,
        batch_limit_bytes: partition::BATCH_BYTES_MAX,
    })
}

/// The Broker gRPC service with tonic's size refusal of a unary Produce rewritten (see the
/// module doc); every other response passes unchanged.
#[derive(Debug, Clone)]
pub struct ProduceLimit<S>(pub S);

impl<S: NamedService> NamedService for ProduceLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for ProduceLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let produce = request.uri().path() == PRODUCE_PATH;
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            if !produce {
                return Ok(response);
            }
            // tonic's refusals carry their status as an extension (`Status::into_http`).
            let rewritten = response
                .extensions()
                .get::<Status>()
                .and_then(oversized_request);
            Ok(match rewritten {
                Some(error) => super::status(error).into_http(),
                None => response,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_size_refusals_become_record_too_large() {
        let refused = Status::out_of_range(
            "Error, decoded message length too large: found 5242960 bytes, the limit is: \
             1114112 bytes",
        );
        assert_eq!(
            oversized_request(&refused),
            Some(BrokerError::RequestTooLarge {
                size_bytes: 5_242_960,
                limit_bytes: 1_114_112,
                batch_limit_bytes: partition::BATCH_BYTES_MAX,
            })
        );
        let message = oversized_request(&refused).map(|e| e.to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("5242960") && m.contains("1114112")),
            "{message:?}"
        );
        // Anything else passes unchanged.
        for other in [
            Status::out_of_range("offset 9 is out of range"),
            Status::invalid_argument(
                "Error, decoded message length too large: found 5 bytes, the limit is: 1 bytes",
            ),
            Status::out_of_range("Error, decoded message length too large: found many bytes"),
        ] {
            assert_eq!(oversized_request(&other), None, "{other:?}");
        }
    }
}
