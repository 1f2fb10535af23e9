//! # The listener's connections: TLS termination and what each request learns of its connection
//!
//! [`incoming`] turns the accepted TCP connections (already under the connection limit) into
//! [`Connection`]s for tonic: with TLS, each handshake runs in a task of its own, bounded by
//! [`HANDSHAKE_TIMEOUT`](super::tls::HANDSHAKE_TIMEOUT), so a slow or silent client never
//! holds up the others; a connection that fails its handshake (a plaintext client, an
//! untrusted, expired or missing certificate) is dropped. Every connection, plaintext or TLS,
//! carries a [`ConnectionInfo`] that tonic puts in each request's extensions
//! (`request.extensions().get::<ConnectionInfo>()`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tonic::transport::server::Connected;

use super::ConnectionInfo;
use super::tls::{HANDSHAKE_TIMEOUT, Tls};
use crate::resources::CountedConnection;

/// Connections whose handshake completed, waiting for tonic to take them.
const READY_CONNECTIONS_MAX: usize = 64;

/// The bytes of one connection.
enum Io {
    Plain(CountedConnection),
    Tls(Box<tokio_rustls::server::TlsStream<CountedConnection>>),
}

/// One accepted connection, ready for HTTP/2.
pub struct Connection {
    io: Io,
    info: ConnectionInfo,
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// The remote address of a request's connection, from its [`ConnectionInfo`].
pub fn remote_of<T>(request: &tonic::Request<T>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|info| info.remote)
}

/// The connections of `accepted` for tonic: TLS-terminated by `tls` when given, plaintext
/// otherwise (see the module doc). Stops accepting when the returned stream is dropped.
pub fn incoming<S>(
    accepted: S,
    tls: Option<Arc<Tls>>,
) -> impl Stream<Item = std::io::Result<Connection>>
where
    S: Stream<Item = std::io::Result<CountedConnection>> + Send + 'static,
{
    let (ready, connections) = mpsc::channel(READY_CONNECTIONS_MAX);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(accepted);
        loop {
            let next = tokio::select! {
                next = accepted.next() => next,
                () = ready.closed() => return,
            };
            let connection = match next {
                None => return,
                Some(Err(error)) => {
                    if ready.send(Err(error)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(connection)) => connection,
            };
            let remote = connection.connect_info().remote_addr();
            let Some(tls) = tls.clone() else {
                let info = ConnectionInfo {
                    remote,
                    tls: false,
                    certificate: None,
                };
                let connection = Connection {
                    io: Io::Plain(connection),
                    info,
                };
                if ready.send(Ok(connection)).await.is_err() {
                    return;
                }
                continue;
            };
            let ready = ready.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(connection, remote)).await
                {
                    Ok(Ok((stream, info))) => {
                        let connection = Connection {
                            io: Io::Tls(Box::new(stream)),
                            info,
                        };
                        let _ = ready.send(Ok(connection)).await;
                    }
                    // Plaintext clients and untrusted certificates end here, each time they
                    // try: debug, so a misconfigured client cannot flood the log.
                    Ok(Err(error)) => {
                        tracing::debug!(?remote, %error, "TLS handshake failed; connection closed");
                    }
                    Err(_) => tracing::debug!(
                        ?remote,
                        "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}; connection closed"
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(connections)
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }
}
