//! [`BrokerError`]s as Kafka error codes: the code a Kafka client acts on (retry, refresh its
//! metadata, give up), chosen as Kafka's broker would for the same condition. The message goes
//! in the response's error message field where the API has one, and to the log otherwise.

use kafka_protocol::error::ResponseError;

use crate::broker::BrokerError;
use crate::groups::classic::ClassicError;
use crate::groups::classic_requests::ClassicFailure;

/// The Kafka error of `error` on a partition request (produce, fetch, list offsets).
pub fn code(error: &BrokerError) -> ResponseError {
    use BrokerError as E;
    match error {
        E::UnknownTopic(_) | E::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        E::TopicExists(_) => ResponseError::TopicAlreadyExists,
        E::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        E::InvalidConfig(_) => ResponseError::InvalidConfig,
        E::InvalidArgument(_) | E::UserExists(_) | E::UnknownUser(_) => {
            ResponseError::InvalidRequest
        }
        E::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        E::RecordTooLarge { .. } | E::RequestTooLarge { .. } => ResponseError::MessageTooLarge,
        E::CorruptBatch(_) => ResponseError::CorruptMessage,
        // Both make the client refresh its metadata and retry at the new leader; a node that
        // stops hands its partitions over first.
        E::NotLeader { .. } | E::ShuttingDown => ResponseError::NotLeaderOrFollower,
        E::Timeout(_) => ResponseError::RequestTimedOut,
        E::Unavailable(_) => ResponseError::LeaderNotAvailable,
        // Kafka answers a full or failed log directory with KAFKA_STORAGE_ERROR, which clients
        // retry; running out of descriptors is the same kind of condition.
        E::Storage(_) | E::ResourceExhausted(_) => ResponseError::KafkaStorageError,
        E::UnknownMember(_) => ResponseError::UnknownMemberId,
        E::StaleMemberEpoch(_) => ResponseError::IllegalGeneration,
        E::UnknownGroup(_) => ResponseError::GroupIdNotFound,
        E::GroupNotEmpty(_) => ResponseError::NonEmptyGroup,
        E::InvalidGroupId(_) => ResponseError::InvalidGroupId,
        E::GroupFull(_) => ResponseError::GroupMaxSizeReached,
        E::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        E::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
        E::UnknownProducerId(_) => ResponseError::UnknownProducerId,
        E::NotControllerLeader { .. } => ResponseError::NotController,
        E::AuthenticationFailed(_) => ResponseError::SaslAuthenticationFailed,
        E::AuthorizationFailed { resource, .. } => authorization_code(resource),
    }
}

/// The authorization error for a refused resource, as [`BrokerError::AuthorizationFailed`]
/// names it (`topic "t"`, `group "g"`, `the cluster`).
fn authorization_code(resource: &str) -> ResponseError {
    if resource.starts_with("group") {
        ResponseError::GroupAuthorizationFailed
    } else if resource.starts_with("the cluster") {
        ResponseError::ClusterAuthorizationFailed
    } else {
        ResponseError::TopicAuthorizationFailed
    }
}

/// The Kafka error of `error` on a consumer group request: a request that reached a node not
/// leading the controller goes to the coordinator Kafka-style (NOT_COORDINATOR, so the client
/// asks FindCoordinator again), and an unavailable controller is COORDINATOR_NOT_AVAILABLE.
pub fn group_code(error: &BrokerError) -> ResponseError {
    match error {
        BrokerError::NotControllerLeader { .. } => ResponseError::NotCoordinator,
        BrokerError::Unavailable(_) | BrokerError::ShuttingDown | BrokerError::Timeout(_) => {
            ResponseError::CoordinatorNotAvailable
        }
        other => code(other),
    }
}

/// The Kafka error of a classic request's failure.
pub fn classic_code(failure: &ClassicFailure<BrokerError>) -> ResponseError {
    match failure {
        ClassicFailure::Node(error) => group_code(error),
        ClassicFailure::Group(error) => match error {
            ClassicError::UnknownMember(_) => ResponseError::UnknownMemberId,
            ClassicError::IllegalGeneration(_) => ResponseError::IllegalGeneration,
            ClassicError::RebalanceInProgress => ResponseError::RebalanceInProgress,
            ClassicError::InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
            ClassicError::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
            ClassicError::InvalidArgument(_) => ResponseError::InvalidRequest,
            ClassicError::GroupFull(_) => ResponseError::GroupMaxSizeReached,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_kafka_resource_type() {
        let refused = |resource: &str| BrokerError::AuthorizationFailed {
            principal: "User:a".to_string(),
            operation: "read".to_string(),
            resource: resource.to_string(),
        };
        assert_eq!(
            code(&refused("topic \"t\"")),
            ResponseError::TopicAuthorizationFailed
        );
        assert_eq!(
            code(&refused("group \"g\"")),
            ResponseError::GroupAuthorizationFailed
        );
        assert_eq!(
            code(&refused("the cluster")),
            ResponseError::ClusterAuthorizationFailed
        );
    }

    #[test]
    fn group_requests_off_the_coordinator_are_sent_back_to_find_it() {
        let moved = BrokerError::NotControllerLeader {
            leader_id: 2,
            address: None,
        };
        assert_eq!(group_code(&moved), ResponseError::NotCoordinator);
        assert_eq!(code(&moved), ResponseError::NotController);
        assert_eq!(
            group_code(&BrokerError::UnknownMember("m".to_string())),
            ResponseError::UnknownMemberId
        );
    }
}
