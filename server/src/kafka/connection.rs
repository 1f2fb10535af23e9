//! One Kafka connection: a reader task reads frames ahead (clients pipeline requests), each
//! request is handled concurrently with the others, and responses are written in request
//! order, as Kafka requires. At most [`IN_FLIGHT_MAX`] requests are read ahead; the reader
//! waits beyond that, so a client that never reads its responses holds a bounded amount of
//! the node's memory (`IN_FLIGHT_MAX` times the request limit at worst).
//!
//! A connection that must authenticate (`--authentication password`, no client certificate
//! naming it) runs SASL first ([`super::sasl`]); until then only ApiVersions and the SASL
//! requests are served, one at a time, frames are bounded by
//! [`UNAUTHENTICATED_REQUEST_BYTES_MAX`], and the connection is closed after
//! [`AUTHENTICATION_TIMEOUT`].
//!
//! A request that cannot be served (an unknown API or version, a malformed frame or header, a
//! frame above the size limit) closes the connection with a log line; other connections never
//! notice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tonic::transport::server::Connected;

use super::Frontend;
use super::apis::{self, Context};
use super::frame::{self, FrameError, Request};
use super::sasl::{self, Outcome, Sasl, UNAUTHENTICATED_REQUEST_BYTES_MAX};
use crate::security::listener::Connection;
use crate::security::{CertIdentity, ConnectionInfo, Principal};
use crate::service::access::Access;

/// Requests of one connection read but not yet answered.
pub const IN_FLIGHT_MAX: usize = 32;

/// How long a connection that must authenticate (SASL) may take to do it; then it is closed,
/// so connections that never authenticate do not hold the node's connection slots.
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `connection` until the client closes it, it breaks the protocol, or `stop` turns
/// true.
///
/// Requests of an authenticated connection are handled concurrently and answered in order.
/// SASL requests, and every request before the connection is authenticated, run alone and in
/// order, once the requests before them are answered: they change who the connection is.
/// Before authentication only ApiVersions and the SASL requests are served (anything else
/// closes the connection, as Kafka does), and frames are read up to
/// [`UNAUTHENTICATED_REQUEST_BYTES_MAX`] only.
pub async fn run(frontend: Arc<Frontend>, connection: Connection, mut stop: watch::Receiver<bool>) {
    let info = connection.connect_info();
    let remote = info.remote;
    let (read, mut write) = tokio::io::split(connection);
    let (frames, mut requests) = mpsc::channel(IN_FLIGHT_MAX);
    let principal = initial_principal(&frontend, &info);
    let authenticated = Arc::new(AtomicBool::new(principal.is_some()));
    let reader = tokio::spawn(read_frames(
        BufReader::with_capacity(64 << 10, read),
        frontend.request_bytes_max,
        authenticated.clone(),
        frames,
    ));
    let mut sasl = Sasl::new(principal.is_some());
    let mut context = principal.map(|principal| Context {
        access: Access::new(principal, frontend.policy.clone()),
        frontend: frontend.clone(),
        connection: info.clone(),
    });
    let authentication_deadline = tokio::time::sleep(AUTHENTICATION_TIMEOUT);
    let mut authentication_deadline = std::pin::pin!(authentication_deadline);
    // A request that must run alone, waiting for the ones before it to be answered.
    let mut alone: Option<Request> = None;
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    let outcome: Result<(), String> = loop {
        if in_flight.is_empty() {
            if let Some(request) = alone.take() {
                let answered =
                    in_order(&frontend, &info, &mut sasl, context.is_some(), request).await;
                let (response, outcome) = match answered {
                    Ok(answered) => answered,
                    Err(why) => break Err(why),
                };
                // The principal and the larger frame limit take effect before the answer
                // goes out: the client's next frame follows the answer.
                let close = match outcome {
                    Outcome::Continue => None,
                    Outcome::Authenticated(principal) => {
                        tracing::debug!(?remote, %principal, "Kafka connection authenticated");
                        authenticated.store(true, Ordering::Release);
                        context = Some(Context {
                            access: Access::new(principal, frontend.policy.clone()),
                            frontend: frontend.clone(),
                            connection: info.clone(),
                        });
                        None
                    }
                    Outcome::Close(why) => Some(why),
                };
                if let Some(response) = &response
                    && let Err(error) = send(&mut write, response, true).await
                {
                    break Err(error);
                }
                if let Some(why) = close {
                    break Err(why);
                }
                continue;
            }
            if !reading {
                break Ok(());
            }
        }
        tokio::select! {
            // Answers first: they free room for more requests.
            biased;
            Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                match answered {
                    Ok(Some(response)) => {
                        let response: Bytes = response;
                        if let Err(error) = send(&mut write, &response, in_flight.is_empty()).await {
                            break Err(error);
                        }
                    }
                    Ok(None) => {}
                    Err(refusal) => {
                        let refusal: apis::Refusal = refusal;
                        break Err(refusal.to_string());
                    }
                }
            }
            next = requests.recv(), if reading && alone.is_none() => {
                match next {
                    Some(Ok(request)) => match &context {
                        Some(context) if !sasl::is_sasl(request.api_key) => {
                            let context = context.clone();
                            in_flight.push_back(async move { apis::handle(&context, request).await });
                        }
                        _ => alone = Some(request),
                    },
                    Some(Err(error)) => break Err(error.to_string()),
                    None => reading = false,
                }
            }
            () = &mut authentication_deadline, if context.is_none() => {
                break Err(format!(
                    "not authenticated within {AUTHENTICATION_TIMEOUT:?} of connecting"
                ));
            }
            () = super::stopped(&mut stop) => break Ok(()),
        }
    };
    reader.abort();
    match outcome {
        Ok(()) => tracing::debug!(?remote, "Kafka connection closed"),
        Err(why) => tracing::info!(?remote, %why, "Kafka connection closed"),
    }
    let _ = write.shutdown().await;
}

/// Writes one response frame, flushing when `flush` (no other response is about to follow).
async fn send<W: AsyncWrite + Unpin>(
    write: &mut W,
    response: &[u8],
    flush: bool,
) -> Result<(), String> {
    write
        .write_all(response)
        .await
        .map_err(|error| format!("writing a response failed: {error}"))?;
    if flush {
        write
            .flush()
            .await
            .map_err(|error| format!("writing a response failed: {error}"))?;
    }
    Ok(())
}

/// Handles a request that runs alone: a SASL request, or any request of a connection not
/// authenticated yet (of which only ApiVersions is served besides SASL).
///
/// # Errors
/// Why the connection closes without an answer.
async fn in_order(
    frontend: &Arc<Frontend>,
    info: &ConnectionInfo,
    sasl: &mut Sasl,
    authenticated: bool,
    request: Request,
) -> Result<(Option<Bytes>, Outcome), String> {
    if sasl::is_sasl(request.api_key) {
        if apis::served(request.api_key, request.api_version).is_none() {
            return Err(apis::Refusal::Unsupported {
                api_key: request.api_key,
                version: request.api_version,
            }
            .to_string());
        }
        let answer = sasl
            .handle(frontend, info, request)
            .await
            .map_err(|refusal| refusal.to_string())?;
        return Ok((Some(answer.response), answer.outcome));
    }
    if !authenticated && request.api_key != ApiKey::ApiVersions as i16 {
        return Err(format!(
            "API key {} before SASL authentication (only ApiVersions, SaslHandshake and \
             SaslAuthenticate are served until then)",
            request.api_key
        ));
    }
    // ApiVersions needs no principal.
    let context = Context {
        access: Access::new(Principal::Anonymous, frontend.policy.clone()),
        frontend: frontend.clone(),
        connection: info.clone(),
    };
    let response = apis::handle(&context, request)
        .await
        .map_err(|refusal| refusal.to_string())?;
    Ok((response, Outcome::Continue))
}

/// Reads frames and parses their headers until the connection ends or breaks (the error is
/// sent last).
///
/// Until `authenticated` turns true a frame is read up to [`UNAUTHENTICATED_REQUEST_BYTES_MAX`]
/// (or `request_bytes_max` if smaller). The limit is taken once a frame's first bytes have
/// arrived, so the frame a client sends after its login's answer has the full limit (the
/// loop sets `authenticated` before that answer goes out); one sent ahead of that answer
/// still has the smaller one (clients wait for the answer).
async fn read_frames<R: AsyncBufRead + Unpin>(
    mut reader: R,
    request_bytes_max: usize,
    authenticated: Arc<AtomicBool>,
    frames: mpsc::Sender<Result<Request, FrameError>>,
) {
    loop {
        // Wait for the next frame to start (an empty buffer: the client closed, which
        // `read_frame` then reports).
        if let Err(error) = reader.fill_buf().await {
            let _ = frames.send(Err(FrameError::Io(error))).await;
            return;
        }
        let max = if authenticated.load(Ordering::Acquire) {
            request_bytes_max
        } else {
            request_bytes_max.min(UNAUTHENTICATED_REQUEST_BYTES_MAX)
        };
        let parsed = match frame::read_frame(&mut reader, max).await {
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
