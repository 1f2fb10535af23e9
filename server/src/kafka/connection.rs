//! One Kafka connection: a reader task reads frames ahead (clients pipeline requests), each
//! request is handled concurrently with the others, and responses are written in request
//! order, as Kafka requires. At most [`IN_FLIGHT_MAX`] requests are read ahead; the reader
//! waits beyond that, so a client that never reads its responses holds a bounded amount of
//! the node's memory (`IN_FLIGHT_MAX` times the request limit at worst).
//!
//! A request that cannot be served (an unknown API or version, a malformed frame or header, a
//! frame above the size limit) closes the connection with a log line; other connections never
//! notice.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tonic::transport::server::Connected;

use super::Frontend;
use super::apis::{self, Context};
use super::frame::{self, FrameError, Request};
use crate::security::listener::Connection;
use crate::security::{CertIdentity, ConnectionInfo, Principal};
use crate::service::access::Access;

/// Requests of one connection read but not yet answered.
pub const IN_FLIGHT_MAX: usize = 32;

/// Serves `connection` until the client closes it, it breaks the protocol, or `stop` turns
/// true.
pub async fn run(frontend: Arc<Frontend>, connection: Connection, mut stop: watch::Receiver<bool>) {
    let info = connection.connect_info();
    let remote = info.remote;
    let (read, mut write) = tokio::io::split(connection);
    let (frames, mut requests) = mpsc::channel(IN_FLIGHT_MAX);
    let reader = tokio::spawn(read_frames(
        BufReader::with_capacity(64 << 10, read),
        frontend.request_bytes_max,
        frames,
    ));
    let Some(principal) = initial_principal(&frontend, &info) else {
        // Password authentication: SASL (served by `sasl`) must name the principal first.
        tracing::debug!(
            ?remote,
            "Kafka connection needs SASL, which this node does not serve yet"
        );
        reader.abort();
        return;
    };
    let context = Context {
        access: Access::new(principal, frontend.policy.clone()),
        frontend,
        connection: info,
    };
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    let outcome: Result<(), String> = loop {
        tokio::select! {
            // Answers first: they free room for more requests.
            biased;
            Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                match answered {
                    Ok(Some(response)) => {
                        let response: Bytes = response;
                        if let Err(error) = write.write_all(&response).await {
                            break Err(format!("writing a response failed: {error}"));
                        }
                        if in_flight.is_empty()
                            && let Err(error) = write.flush().await
                        {
                            break Err(format!("writing a response failed: {error}"));
                        }
                    }
                    Ok(None) => {}
                    Err(refusal) => {
                        let refusal: apis::Refusal = refusal;
                        break Err(refusal.to_string());
                    }
                }
            }
            next = requests.recv(), if reading => {
                match next {
                    Some(Ok(request)) => {
                        let context = context.clone();
                        in_flight.push_back(async move { apis::handle(&context, request).await });
                    }
                    Some(Err(error)) => break Err(error.to_string()),
                    None => reading = false,
                }
            }
            () = super::stopped(&mut stop) => break Ok(()),
            else => break Ok(()),
        }
    };
    reader.abort();
    match outcome {
        Ok(()) => tracing::debug!(?remote, "Kafka connection closed"),
        Err(why) => tracing::info!(?remote, %why, "Kafka connection closed"),
    }
    let _ = write.shutdown().await;
}

/// Reads frames and parses their headers until the connection ends or breaks (the error is
/// sent last).
async fn read_frames<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    request_bytes_max: usize,
    frames: mpsc::Sender<Result<Request, FrameError>>,
) {
    loop {
        let parsed = match frame::read_frame(&mut reader, request_bytes_max).await {
            Ok(None) => return,
            Ok(Some(frame)) => Request::parse(frame),
            Err(error) => Err(error),
        };
        let failed = parsed.is_err();
        if frames.send(parsed).await.is_err() || failed {
            return;
        }
    }
}

/// The principal a connection starts with: its client certificate's with mutual TLS, the
/// anonymous one without authentication, `None` when SASL must name it.
fn initial_principal(frontend: &Frontend, info: &ConnectionInfo) -> Option<Principal> {
    match &info.certificate {
        Some(CertIdentity::Node(id)) => return Some(Principal::Node(*id)),
        Some(CertIdentity::User(name)) if frontend.authentication.mtls => {
            return Some(Principal::User(name.clone()));
        }
        _ => {}
    }
    if frontend.authentication.any() {
        None
    } else {
        Some(Principal::Anonymous)
    }
}
