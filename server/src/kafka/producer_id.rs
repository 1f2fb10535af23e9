//! InitProducerId (v0–1): a producer id for an idempotent producer, from the broker's blocks
//! of ids ([`Broker::init_producer_id`], as the gRPC InitProducerId), with epoch 0. Strata has
//! no transactions: a transactional id is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
//! which clients treat as final (a retriable code would make them retry forever).
//!
//! Ids are taken from the controller's raft group, which only its leader can propose to:
//! another node passes the request on to the leader (its gRPC InitProducerId, under this
//! node's identity, once the client is authorized here), because Kafka's clients ask any node
//! and some (librdkafka) keep asking the same one. With no leader reachable the answer is
//! COORDINATOR_NOT_AVAILABLE, which clients retry.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::context::Context;
use super::error::code;
use crate::broker::{Broker, BrokerError};

/// Answers an InitProducerId request.
pub async fn handle(context: &Context, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if let Some(transactional_id) = &request.transactional_id {
        tracing::info!(
            remote = ?context.connection.remote,
            transactional_id = %transactional_id.0,
            "Kafka InitProducerId with a transactional id refused: Strata has no transactions"
        );
        return refused(ResponseError::TransactionalIdAuthorizationFailed);
    }
    match producer_id(context).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::debug!(%error, "Kafka InitProducerId refused");
            refused(match error {
                BrokerError::NotControllerLeader { .. } | BrokerError::Unavailable(_) => {
                    ResponseError::CoordinatorNotAvailable
                }
                other => code(&other),
            })
        }
    }
}

async fn producer_id(context: &Context) -> Result<i64, BrokerError> {
    let broker = context.frontend.broker()?;
    context.access.idempotent_write(&broker)?;
    match Broker::init_producer_id(&broker).await {
        Err(BrokerError::NotControllerLeader {
            leader_id,
            address: Some(address),
        }) if leader_id != broker.node_id() => crate::service::init_producer_id_at(
            context.frontend.peer_tls.clone(),
            leader_id,
            address,
        )
        .await
        .map_err(|error| {
            BrokerError::Unavailable(format!(
                "asking node {leader_id} (the controller's leader) for a producer id: {error}"
            ))
        }),
        other => other,
    }
}

fn refused(error: ResponseError) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error.code())
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
