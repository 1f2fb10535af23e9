//! The raft stream served beside tonic's generated Peer router (see
//! [`DirectRoutes`](crate::service::direct_routes::DirectRoutes)): its batches are read by
//! `service::request_frames`, so every message, and every entry in it, is a slice of the
//! HTTP/2 DATA frame it arrived in. tonic's `Streaming` copied each frame into its decode
//! buffer first: one copy of every replicated byte on every follower (3.5 % of three nodes'
//! CPU samples taking 256-record batches, BENCHMARKS.md). A raft batch of up to 1 MiB comes in
//! one frame when the peer's h2 sends it so (brokers accept frames of `BROKER_FRAME_BYTES_MAX`);
//! a message cut across frames is gathered with one copy, as before.
//!
//! What the generated server did and this keeps: the message limit
//! ([`PEER_MESSAGE_BYTES_MAX`], checked at each message's prefix), errors as statuses in the
//! trailers, the reply encoded by tonic's encoder. Compressed requests are refused with
//! UNIMPLEMENTED (no node compresses; the generated server, with no compression enabled,
//! refused them the same way).

use futures::future::BoxFuture;
use strata_proto::v1::RaftBatch;
use tonic::codegen::StdError;
use tonic::codegen::http;

use super::codec::RAFT_PATH;
use super::{PEER_MESSAGE_BYTES_MAX, PeerService};
use crate::service::direct_routes::DirectMethods;
use crate::service::request_frames::{Requests, encoded_answer, refuse_compressed};

impl DirectMethods for PeerService {
    fn serves(&self, path: &str) -> bool {
        path == RAFT_PATH
    }

    fn serve<B>(
        &self,
        request: http::Request<B>,
    ) -> BoxFuture<'static, http::Response<tonic::body::Body>>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let service = self.clone();
        Box::pin(async move { service.raft_http(request).await })
    }
}

impl PeerService {
    /// One raft stream, its batches read from the frames they came in, answered with the
    /// closing `RaftStreamClosed` or with the status that ended it.
    async fn raft_http<B>(&self, request: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        if let Some(refused) = refuse_compressed("Peer/Raft", &request) {
            return refused;
        }
        let (parts, body) = request.into_parts();
        let batches: Requests<B, RaftBatch> = Requests::new(body, PEER_MESSAGE_BYTES_MAX);
        let request = tonic::Request::from_http(http::Request::from_parts(parts, batches));
        match self.serve_raft(request).await {
            Ok(closed) => encoded_answer(futures::stream::once(async move { Ok(closed) })),
            Err(refused) => refused.into_http(),
        }
    }
}
