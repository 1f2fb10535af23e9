//! One HTTP connection: HTTP/1.1 or h2 (hyper-util's auto builder), with the limits that keep
//! a slow or silent client from holding a connection slot: a header read timeout (once a
//! request has begun) and an idle timeout (no byte read and no request in flight, which also
//! covers a connection that never sends its first byte while the builder waits to tell
//! HTTP/1.1 from h2).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::security::listener::Connection;

/// How long a stopping node lets an HTTP connection finish its requests.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's headers once it has begun.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay silent with no request in flight before it is closed.
/// Browsers and scrapers reconnect when they need to.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the idle timeout is checked.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Largest request head (line and headers) read.
const HEADER_BYTES_MAX: usize = 64 << 10;
/// Requests at once on one h2 connection.
const STREAMS_PER_CONNECTION_MAX: u32 = 64;

/// When the connection last read a byte, and how many of its requests are being answered.
struct Activity {
    started: Instant,
    last_read_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_read_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Counts a request in flight until dropped (its response produced).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connection's I/O, noting each read that brings bytes.
struct Watched {
    io: Connection,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves `connection` with `router` until the client is done, the connection has been idle
/// for [`IDLE_TIMEOUT`], or `stop` turns true (then its requests get [`DRAIN`] to finish).
pub async fn run(connection: Connection, router: Router, mut stop: watch::Receiver<bool>) {
    let info = tonic::transport::server::Connected::connect_info(&connection);
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_read_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request| {
            request.extensions_mut().insert(info.clone());
            let in_flight = InFlight::new(&activity);
            let answer = tower::ServiceExt::oneshot(router.clone(), request);
            async move {
                let answered = answer.await;
                drop(in_flight);
                answered
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HEADER_BYTES_MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
        .max_header_list_size(HEADER_BYTES_MAX as u32);
    let io = Watched {
        io: connection,
        activity: activity.clone(),
    };
    let served = builder.serve_connection(TokioIo::new(io), service);
    let mut served = std::pin::pin!(served);
    let idle = async {
        let mut interval = tokio::time::interval(IDLE_CHECK_INTERVAL);
        loop {
            interval.tick().await;
            if activity.in_flight.load(Ordering::Relaxed) == 0
                && activity.idle_for() >= IDLE_TIMEOUT
            {
                return;
            }
        }
    };
    tokio::select! {
        result = served.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            return;
        }
        // Dropping the connection closes it.
        () = idle => return,
        () = crate::kafka::stopped(&mut stop) => {}
    }
    served.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, served).await;
}
