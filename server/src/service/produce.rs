//! Produce on the Broker service: unary Produce and the pipelined ProduceStream, translated
//! to [`ProduceInput`] and [`Broker`] calls. Building and checking the batch is the broker's
//! ([`broker::records`](crate::broker::records)); this module owns only the stream's flow
//! control: how many requests one stream may have in flight.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use strata_proto::v1 as pb;
use tonic::Status;
use tonic::codegen::StdError;
use tonic::codegen::http;

use super::access::Access;
use super::request_frames::{Requests, encoded_answer, refuse_compressed};
use super::request_limit;
use super::status::{error_detail, status};
use super::{BoxStream, Service};
use crate::broker::records::{Payload, ProduceInput, Record};
use crate::broker::{Broker, BrokerError, Produced, Target};
use crate::security::acl::{Operation, ResourceType};
use crate::storage::batch;

/// Produce requests one stream may have in flight; the stream stops reading beyond this (and
/// every stream waits for the node-wide byte budget, `PRODUCE_BYTES_IN_FLIGHT_MAX`).
pub const STREAM_IN_FLIGHT_MAX: usize = 1024;
/// Topics one stream remembers as authorized for write; beyond it each further topic is
/// checked on every request.
const STREAM_AUTHORIZED_TOPICS_MAX: usize = 1024;

/// Turns a produce request into the broker's validated input.
/// `now_ms` stamps records sent without a time.
fn produce_input(request: pb::ProduceRequest, now_ms: i64) -> Result<ProduceInput, BrokerError> {
    use pb::produce_request::{Payload as P, Target as T};
    let target = match request.target {
        Some(T::Partition(partition)) => Target::Partition(partition),
        Some(T::PartitionKey(key)) => Target::Key(key),
        None => Target::Any,
    };
    let payload = match request.payload {
        Some(P::Batch(batch)) => Payload::Batch(batch),
        Some(P::Records(list)) => Payload::Records(
            list.records
                .into_iter()
                .map(|record| Record {
                    timestamp_ms: record.timestamp_ms,
                    key: record.key,
                    value: record.value,
                    headers: record
                        .headers
                        .into_iter()
                        .map(|h| batch::Header {
                            key: h.key,
                            value: h.value,
                        })
                        .collect(),
                })
                .collect(),
        ),
        None => {
            return Err(BrokerError::InvalidArgument(
                "payload is missing: send a batch or records".to_string(),
            ));
        }
    };
    ProduceInput::new(request.topic, target, payload, now_ms)
}

fn produce_response(request_id: u64, produced: Produced) -> pb::ProduceResponse {
    pb::ProduceResponse {
        request_id,
        partition: produced.partition,
        base_offset: produced.base_offset,
        last_offset: produced.last_offset,
        error: None,
    }
}

impl Service {
    pub(super) async fn produce_reply(
        &self,
        access: &Access,
        request: pb::ProduceRequest,
    ) -> Result<pb::ProduceResponse, Status> {
        let broker = self.broker()?;
        access.topic(&broker, Operation::Write, &request.topic)?;
        let request_id = request.request_id;
        let input = produce_input(request, broker.clock.now_ms()).map_err(status)?;
        let produced = broker
            .produce(&input.topic, input.target, input.batch)
            .await
            .map_err(status)?;
        Ok(produce_response(request_id, produced))
    }

    pub(super) fn produce_replies(
        &self,
        access: Access,
        inbound: BoxStream<pb::ProduceRequest>,
    ) -> Result<BoxStream<pb::ProduceResponse>, Status> {
        let state = StreamState {
            broker: self.broker()?,
            access,
            inbound,
            reading: true,
            authorized: HashSet::new(),
            admitting: None,
            committing: FuturesUnordered::new(),
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            StreamState::next_reply,
        )))
    }

    /// Serves one ProduceStream call beside tonic's router: its requests read by
    /// [`Requests`] (a batch stays a slice of the DATA frame it came in, see
    /// `request_frames`), its replies encoded by tonic's encoder as the generated server
    /// would. Compressed requests are refused (see [`refuse_compressed`]).
    pub(super) fn produce_stream_http<B>(
        &self,
        request: http::Request<B>,
    ) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        if let Some(refused) = refuse_compressed("ProduceStream", &request) {
            return refused;
        }
        let (parts, body) = request.into_parts();
        let request = tonic::Request::from_http(http::Request::from_parts(parts, ()));
        let access = self.access(&request);
        let inbound: Requests<_, pb::ProduceRequest> =
            Requests::new(body, request_limit::PRODUCE_REQUEST_BYTES_MAX);
        match self.produce_replies(access, Box::pin(inbound)) {
            Ok(replies) => encoded_answer(replies),
            Err(refused) => refused.into_http(),
        }
    }
}

/// A request's answer, once its batch committed or failed.
type Reply = BoxFuture<'static, pb::ProduceResponse>;

/// One ProduceStream, served by the reply stream itself: polling it for the next reply reads
/// requests, submits each in stream order (so batches for one partition keep their order) and
/// answers each as its batch commits (replies may overtake each other across partitions). A
/// failed request gets an error reply and the stream goes on (a topic the principal may not
/// write to too: each topic is authorized once per stream). It ends with the inbound stream,
/// once every reply is out.
///
/// No task of its own: the commit wakes the task that writes the reply (tonic's), one hand-off
/// fewer than a task per request that passes its reply on through a channel.
struct StreamState {
    broker: Arc<Broker>,
    access: Access,
    inbound: BoxStream<pb::ProduceRequest>,
    /// False once the inbound stream ended or failed.
    reading: bool,
    authorized: HashSet<String>,
    /// The request being submitted (waiting for room in the node's produce budget): the next
    /// one is read only once it is in, so submissions keep the stream's order. Its output is
    /// the commit to wait for, or the reply of a request that failed before it.
    admitting: Option<BoxFuture<'static, Result<Reply, pb::ProduceResponse>>>,
    /// Submitted requests waiting for their commit; at most [`STREAM_IN_FLIGHT_MAX`] (the
    /// stream stops reading beyond that).
    committing: FuturesUnordered<Reply>,
}

impl StreamState {
    async fn next_reply(mut self) -> Option<(Result<pb::ProduceResponse, Status>, StreamState)> {
        loop {
            if !self.reading && self.admitting.is_none() && self.committing.is_empty() {
                return None;
            }
            let room = self.committing.len() < STREAM_IN_FLIGHT_MAX;
            tokio::select! {
                biased;
                Some(reply) = self.committing.next(), if !self.committing.is_empty() => {
                    return Some((Ok(reply), self));
                }
                admitted = async { Some(self.admitting.as_mut()?.await) }, if self.admitting.is_some() => {
                    self.admitting = None;
                    match admitted {
                        Some(Ok(commit)) => self.committing.push(commit),
                        Some(Err(reply)) => return Some((Ok(reply), self)),
                        None => {}
                    }
                }
                message = self.inbound.next(), if self.reading && self.admitting.is_none() && room => {
                    match message {
                        Some(Ok(request)) => self.admitting = Some(self.admit(request)),
                        Some(Err(error)) => {
                            // A message above the decoding limit ends the stream (tonic cannot
                            // skip it): with RECORD_TOO_LARGE, not tonic's bare status.
                            self.reading = false;
                            self.committing.clear();
                            let error = request_limit::oversized_request(&error).map_or(error, status);
                            return Some((Err(error), self));
                        }
                        None => self.reading = false,
                    }
                }
            }
        }
    }

    /// Checks a request (authorization, validation) now, and returns its submission: room in
    /// the produce budget, then the batch queued for its partition.
    fn admit(
        &mut self,
        request: pb::ProduceRequest,
    ) -> BoxFuture<'static, Result<Reply, pb::ProduceResponse>> {
        let request_id = request.request_id;
        let failed = move |error: BrokerError| pb::ProduceResponse {
            request_id,
            error: Some(error_detail(&error)),
            ..pb::ProduceResponse::default()
        };
        let allowed = if self.authorized.contains(&request.topic) {
            Ok(())
        } else {
            let checked = self.access.check(
                &self.broker,
                ResourceType::Topic,
                &request.topic,
                Operation::Write,
            );
            if checked.is_ok() && self.authorized.len() < STREAM_AUTHORIZED_TOPICS_MAX {
                self.authorized.insert(request.topic.clone());
            }
            checked
        };
        let input = allowed.and_then(|()| produce_input(request, self.broker.clock.now_ms()));
        let broker = self.broker.clone();
        Box::pin(async move {
            let input = input.map_err(failed)?;
            let commit = broker.submit_produce(input).await.map_err(failed)?;
            let reply: Reply = Box::pin(async move {
                match commit.await {
                    Ok(produced) => produce_response(request_id, produced),
                    Err(error) => failed(error),
                }
            });
            Ok(reply)
        })
    }
}
