//! Methods served directly on HTTP/2, beside tonic's generated routers: the few whose bytes
//! must not pass through tonic's codec buffers (a stored batch sent as it is read, a produced
//! batch or a raft entry kept as a slice of the frame it arrived in). Everything else goes to
//! the generated router unchanged.
//!
//! - Broker: Subscribe (replies framed by hand, see `subscribe_route`) and ProduceStream
//!   (requests read by `request_frames`).
//! - Peer: Raft (requests read by `request_frames`, see `peer::raft_route`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::codegen::http;
use tonic::codegen::{Service as TowerService, StdError};
use tonic::server::NamedService;

use super::Service;
use super::subscribe_route::SUBSCRIBE_PATH;

/// The method served with [`Service::produce_stream_http`].
const PRODUCE_STREAM_PATH: &str = "/strata.v1.Broker/ProduceStream";

/// What answers some methods of a service itself.
pub trait DirectMethods: Clone + Send + 'static {
    /// Whether the method at `path` is served here rather than by the generated router.
    fn serves(&self, path: &str) -> bool;

    /// The answer to `request`, whose method [`serves`](Self::serves) said is served here.
    fn serve<B>(
        &self,
        request: http::Request<B>,
    ) -> BoxFuture<'static, http::Response<tonic::body::Body>>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static;
}

/// A generated gRPC service (`inner`) with the methods `methods` serves taken out of it.
#[derive(Clone)]
pub struct DirectRoutes<S, M> {
    inner: S,
    methods: M,
}

impl<S, M> DirectRoutes<S, M> {
    /// Serves what `methods` serves with it, everything else with `inner`.
    pub fn new(inner: S, methods: M) -> Self {
        Self { inner, methods }
    }
}

impl<S: NamedService, M> NamedService for DirectRoutes<S, M> {
    const NAME: &'static str = S::NAME;
}

impl<S, M, B> TowerService<http::Request<B>> for DirectRoutes<S, M>
where
    S: TowerService<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
    M: DirectMethods,
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.methods.serves(request.uri().path()) {
            let answer = self.methods.serve(request);
            Box::pin(async move { Ok(answer.await) })
        } else {
            Box::pin(self.inner.call(request))
        }
    }
}

impl DirectMethods for Service {
    fn serves(&self, path: &str) -> bool {
        matches!(path, SUBSCRIBE_PATH | PRODUCE_STREAM_PATH)
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
        if request.uri().path() == SUBSCRIBE_PATH {
            Box::pin(async move { service.subscribe_http(request).await })
        } else {
            Box::pin(async move { service.produce_stream_http(request) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which side answered a request.
    const ANSWERED_BY: &str = "x-answered-by";

    fn answer(by: &'static str) -> http::Response<tonic::body::Body> {
        let mut response = http::Response::new(tonic::body::Body::empty());
        response
            .headers_mut()
            .insert(ANSWERED_BY, http::HeaderValue::from_static(by));
        response
    }

    #[derive(Clone)]
    struct Direct;

    impl DirectMethods for Direct {
        fn serves(&self, path: &str) -> bool {
            path == "/strata.v1.Test/Direct"
        }

        fn serve<B>(
            &self,
            _: http::Request<B>,
        ) -> BoxFuture<'static, http::Response<tonic::body::Body>>
        where
            B: http_body::Body + Send + 'static,
            B::Error: Into<StdError> + Send + 'static,
        {
            Box::pin(async { answer("direct") })
        }
    }

    #[derive(Clone)]
    struct Generated;

    impl<B> TowerService<http::Request<B>> for Generated {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<B>) -> Self::Future {
            std::future::ready(Ok(answer("generated")))
        }
    }

    /// A method the direct side serves goes to it; every other one to the generated router.
    #[test]
    fn served_methods_go_direct_and_the_rest_to_the_generated_router() {
        let mut routes = DirectRoutes::new(Generated, Direct);
        for (path, by) in [
            ("/strata.v1.Test/Direct", "direct"),
            ("/strata.v1.Test/Other", "generated"),
            ("/strata.v1.Test/DirectToo", "generated"),
        ] {
            let request = http::Request::builder()
                .uri(path)
                .body(tonic::body::Body::empty())
                .expect("a request");
            let Ok(response) = futures::executor::block_on(routes.call(request));
            assert_eq!(response.headers()[ANSWERED_BY], by, "{path}");
        }
    }
}
