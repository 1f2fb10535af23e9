//! Reads on the Broker service: Fetch (long poll), Subscribe (a stream paced by credit, see
//! [`broker::subscribe`](crate::broker::subscribe)) and ListOffsets, translated to and from
//! [`Broker`](crate::broker::Broker) calls. Decoded replies carry [`pb::Record`]s, whose
//! encoded size is what decoding budgets and subscription credit count ([`GrpcRecords`]).

use prost::Message as _;
use strata_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::access::Access;
use super::status::{invalid, status};
use super::{BoxStream, Service};
use crate::broker::BrokerError;
use crate::broker::fetch::FetchLimits;
use crate::broker::records::{ReplyRecord, decode_records};
use crate::broker::subscribe::ChunkResult;
use crate::partition::StartFrom;
use crate::security::acl::Operation;
use crate::storage::batch;

/// Decoded records as the gRPC replies carry them.
pub(super) struct GrpcRecords;

impl ReplyRecord for GrpcRecords {
    type Record = pb::Record;

    fn from_decoded(record: batch::Record) -> pb::Record {
        pb::Record {
            offset: record.offset,
            timestamp_ms: record.timestamp,
            key: record.key,
            value: record.value,
            headers: record
                .headers
                .into_iter()
                .map(|h| pb::RecordHeader {
                    key: h.key,
                    value: h.value,
                })
                .collect(),
        }
    }

    /// A record's size in the reply: its field tag, length prefix and body.
    fn reply_bytes(record: &pb::Record) -> usize {
        1 + prost::length_delimiter_len(record.encoded_len()) + record.encoded_len()
    }
}

fn position(start: Option<pb::StartPosition>) -> StartFrom {
    use pb::start_position::Position as P;
    match start.and_then(|s| s.position) {
        None | Some(P::Earliest(_)) => StartFrom::Earliest,
        Some(P::Latest(_)) => StartFrom::Latest,
        Some(P::Offset(offset)) => StartFrom::Offset(offset),
        Some(P::TimestampMs(timestamp)) => StartFrom::Timestamp(timestamp),
    }
}

impl Service {
    pub(super) async fn fetch_reply(
        &self,
        access: &Access,
        request: pb::FetchRequest,
    ) -> Result<pb::FetchResponse, Status> {
        access.topic(&*self.broker()?, Operation::Read, &request.topic)?;
        let limits = FetchLimits::new(request.max_wait_ms, request.min_bytes, request.max_bytes)
            .map_err(status)?;
        let (offset, fetched) = self
            .broker()?
            .fetch_at(
                &request.topic,
                request.partition,
                position(request.start),
                limits,
            )
            .await
            .map_err(status)?;
        let (batches, records, next_offset) = if request.decode {
            // Decoded replies are budgeted by decoded bytes: the same max_bytes.
            let decoded = decode_records::<GrpcRecords>(&fetched.batches, offset, limits.max_bytes)
                .map_err(status)?;
            let next_offset = decoded.stopped_at.unwrap_or(fetched.next_offset);
            fetched
                .traffic
                .sent_records(decoded.records.len(), decoded.decoded_bytes);
            (Vec::new(), decoded.records, next_offset)
        } else {
            fetched.traffic.sent_batches(&fetched.batches);
            (fetched.batches, Vec::new(), fetched.next_offset)
        };
        Ok(pb::FetchResponse {
            partition: request.partition,
            batches,
            records,
            next_offset,
            high_watermark: fetched.high_watermark,
            log_start_offset: fetched.log_start_offset,
        })
    }

    /// The Subscribe method through tonic's encoder, which the generated service trait
    /// requires. The node's router serves Subscribe with [`subscribe_route`](super::subscribe_route)
    /// instead, which sends stored batches without copying them; both start the subscription
    /// with [`Service::subscribe_chunks`].
    pub(super) async fn subscribe_stream(
        &self,
        access: &Access,
        inbound: Streaming<pb::SubscribeRequest>,
    ) -> Result<BoxStream<pb::SubscribeResponse>, Status> {
        let chunks = self.subscribe_chunks(access, inbound).await?;
        let replies = ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map(|chunk| pb::SubscribeResponse {
                    batches: chunk.batches,
                    records: chunk.records,
                    next_offset: chunk.next_offset,
                    high_watermark: chunk.high_watermark,
                })
                .map_err(status)
        });
        Ok(Box::pin(replies))
    }

    /// Starts a subscription from its inbound messages (start, then credit) and returns its
    /// chunks, once the start is authorized and resolved.
    ///
    /// # Errors
    /// A first message that is not a start, the start's refusal (ACL, unknown topic or
    /// partition, offset out of range), a node still starting.
    pub(super) async fn subscribe_chunks(
        &self,
        access: &Access,
        mut inbound: Streaming<pb::SubscribeRequest>,
    ) -> Result<mpsc::Receiver<ChunkResult<pb::Record>>, Status> {
        use pb::subscribe_request::Request as R;
        let start = match inbound.next().await {
            Some(Ok(pb::SubscribeRequest {
                request: Some(R::Start(start)),
            })) => start,
            Some(Err(error)) => return Err(error),
            _ => return Err(invalid("the first message of a subscription must be start")),
        };
        // One topic per subscription: authorized once, at its start.
        access.topic(&*self.broker()?, Operation::Read, &start.topic)?;
        // After start, only credit; a broken inbound stream counts as its end.
        let credits = inbound.map_while(|message| match message {
            Ok(pb::SubscribeRequest {
                request: Some(R::Credit(credit)),
            }) => Some(Ok(credit.bytes)),
            Ok(_) => Some(Err(BrokerError::InvalidArgument(
                "after start, a subscription takes only credit".to_string(),
            ))),
            Err(_) => None,
        });
        self.broker()?
            .subscribe::<GrpcRecords, _>(
                &start.topic,
                start.partition,
                position(start.start),
                start.decode,
                Box::pin(credits),
            )
            .map_err(status)
    }

    pub(super) fn list_offsets_reply(
        &self,
        access: &Access,
        request: pb::ListOffsetsRequest,
    ) -> Result<pb::ListOffsetsResponse, Status> {
        access.topic(&*self.broker()?, Operation::Describe, &request.topic)?;
        let listed = self
            .broker()?
            .list_offsets(
                &request.topic,
                request.partition,
                position(request.position),
            )
            .map_err(status)?;
        Ok(pb::ListOffsetsResponse {
            offset: listed.offset,
            log_start_offset: listed.log_start_offset,
            high_watermark: listed.high_watermark,
        })
    }
}
