//! Produce on the Broker service: unary Produce and the pipelined ProduceStream, translated
//! to [`ProduceInput`] and [`Broker`] calls. Building and checking the batch is the broker's
//! ([`broker::records`](crate::broker::records)); this module owns only the stream's flow
//! control: how many requests one stream may have in flight, and its replies' queue.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use strata_proto::v1 as pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::access::Access;
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
/// Replies waiting to be written on one stream.
const STREAM_REPLIES_MAX: usize = 1024;
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
        inbound: Streaming<pb::ProduceRequest>,
    ) -> Result<BoxStream<pb::ProduceResponse>, Status> {
        let (replies, outbound) = mpsc::channel(STREAM_REPLIES_MAX);
        tokio::spawn(serve_stream(self.broker()?, access, inbound, replies));
        Ok(Box::pin(ReceiverStream::new(outbound)))
    }
}

/// Serves one ProduceStream: submits each request in stream order and answers each as its
/// batch commits (replies may overtake each other across partitions); a failed request gets
/// an error reply and the stream goes on (a topic the principal may not write to too: each
/// topic is authorized once per stream). Ends with the inbound stream.
async fn serve_stream(
    broker: Arc<Broker>,
    access: Access,
    mut inbound: Streaming<pb::ProduceRequest>,
    replies: mpsc::Sender<Result<pb::ProduceResponse, Status>>,
) {
    let in_flight = Arc::new(Semaphore::new(STREAM_IN_FLIGHT_MAX));
    let mut authorized: HashSet<String> = HashSet::new();
    while let Some(message) = inbound.next().await {
        let request = match message {
            Ok(request) => request,
            Err(error) => {
                // A message above the decoding limit ends the stream (tonic cannot skip it):
                // with RECORD_TOO_LARGE, not tonic's bare status.
                let error = request_limit::oversized_request(&error).map_or(error, status);
                let _ = replies.send(Err(error)).await;
                break;
            }
        };
        // Back-pressure: stop reading the stream while the in-flight limit is reached.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        // Validation and submission happen here, in stream order, so batches for one
        // partition keep their order; only the wait for the commit runs concurrently.
        let request_id = request.request_id;
        let allowed = if authorized.contains(&request.topic) {
            Ok(())
        } else {
            let checked = access.check(
                &broker,
                ResourceType::Topic,
                &request.topic,
                Operation::Write,
            );
            if checked.is_ok() && authorized.len() < STREAM_AUTHORIZED_TOPICS_MAX {
                authorized.insert(request.topic.clone());
            }
            checked
        };
        let submitted = match allowed.and_then(|()| produce_input(request, broker.clock.now_ms())) {
            Ok(input) => broker.submit_produce(input).await,
            Err(error) => Err(error),
        };
        let replies = replies.clone();
        tokio::spawn(async move {
            let outcome = match submitted {
                Ok(committed) => committed.await,
                Err(error) => Err(error),
            };
            let reply = match outcome {
                Ok(produced) => produce_response(request_id, produced),
                Err(error) => pb::ProduceResponse {
                    request_id,
                    error: Some(error_detail(&error)),
                    ..pb::ProduceResponse::default()
                },
            };
            let _ = replies.send(Ok(reply)).await;
            drop(permit);
        });
    }
}
