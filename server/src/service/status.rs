//! Broker errors as gRPC statuses, in one place: each [`BrokerError`] maps to one stable
//! [`ErrorCode`] and a gRPC code; the status carries the code in an encoded [`ErrorDetail`]
//! (its details) and by name in the `strata-error-code` metadata, beside a message that says
//! what was wrong and what is valid.

use bytes::Bytes;
use prost::Message as _;
use strata_proto::v1 as pb;
use strata_proto::v1::{ErrorCode, ErrorDetail};
use tonic::Status;

use crate::broker::BrokerError;

/// The stable details of an error and the gRPC code it maps to.
fn error_detail_and_code(error: &BrokerError) -> (ErrorDetail, tonic::Code) {
    let mut detail = ErrorDetail {
        message: error.to_string(),
        ..ErrorDetail::default()
    };
    let (code, grpc) = match error {
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
            (ErrorCode::UnknownTopicOrPartition, tonic::Code::NotFound)
        }
        BrokerError::TopicExists(_) => (ErrorCode::TopicAlreadyExists, tonic::Code::AlreadyExists),
        BrokerError::InvalidTopicName(_) => {
            (ErrorCode::InvalidTopicName, tonic::Code::InvalidArgument)
        }
        BrokerError::InvalidConfig(_) => (ErrorCode::InvalidConfig, tonic::Code::InvalidArgument),
        BrokerError::InvalidArgument(_) => {
            (ErrorCode::InvalidArgument, tonic::Code::InvalidArgument)
        }
        BrokerError::OffsetOutOfRange {
            log_start,
            high_watermark,
            ..
        } => {
            detail.valid_range = Some(pb::OffsetRange {
                log_start_offset: *log_start,
                next_offset: *high_watermark,
            });
            (ErrorCode::OffsetOutOfRange, tonic::Code::OutOfRange)
        }
        BrokerError::RecordTooLarge { limit_bytes, .. } => {
            detail.limit_bytes = Some(*limit_bytes as u64);
            (ErrorCode::RecordTooLarge, tonic::Code::InvalidArgument)
        }
        BrokerError::CorruptBatch(_) => (ErrorCode::CorruptBatch, tonic::Code::InvalidArgument),
        BrokerError::NotLeader { leader_id, address } => {
            detail.leader_node_id = Some(*leader_id);
            detail.leader_address = address.clone();
            (ErrorCode::NotLeader, tonic::Code::FailedPrecondition)
        }
        BrokerError::Timeout(_) => (ErrorCode::Timeout, tonic::Code::DeadlineExceeded),
        BrokerError::Unavailable(_) => (ErrorCode::Unavailable, tonic::Code::Unavailable),
        BrokerError::ShuttingDown => (ErrorCode::ShuttingDown, tonic::Code::Unavailable),
        BrokerError::Storage(_) => (ErrorCode::Storage, tonic::Code::Internal),
        BrokerError::UnknownMember(_) => (ErrorCode::UnknownMember, tonic::Code::NotFound),
        BrokerError::StaleMemberEpoch(_) => {
            (ErrorCode::StaleMemberEpoch, tonic::Code::FailedPrecondition)
        }
        BrokerError::UnknownGroup(_) => (ErrorCode::UnknownGroup, tonic::Code::NotFound),
        BrokerError::GroupNotEmpty(_) => {
            (ErrorCode::GroupNotEmpty, tonic::Code::FailedPrecondition)
        }
        BrokerError::InvalidGroupId(_) => (ErrorCode::InvalidGroupId, tonic::Code::InvalidArgument),
        BrokerError::GroupFull(_) => (ErrorCode::GroupFull, tonic::Code::ResourceExhausted),
        BrokerError::OutOfOrderSequence { expected, .. } => {
            detail.expected_sequence = Some(*expected);
            (
                ErrorCode::OutOfOrderSequence,
                tonic::Code::FailedPrecondition,
            )
        }
        BrokerError::InvalidProducerEpoch(_) => (
            ErrorCode::InvalidProducerEpoch,
            tonic::Code::FailedPrecondition,
        ),
        BrokerError::UnknownProducerId(_) => (
            ErrorCode::UnknownProducerId,
            tonic::Code::FailedPrecondition,
        ),
        BrokerError::NotControllerLeader { leader_id, address } => {
            detail.leader_node_id = Some(*leader_id);
            detail.leader_address = address.clone();
            (ErrorCode::NotLeader, tonic::Code::FailedPrecondition)
        }
        BrokerError::RequestTooLarge { limit_bytes, .. } => {
            detail.limit_bytes = Some(*limit_bytes as u64);
            (ErrorCode::RecordTooLarge, tonic::Code::InvalidArgument)
        }
        BrokerError::ResourceExhausted(_) => {
            (ErrorCode::ResourceExhausted, tonic::Code::ResourceExhausted)
        }
        BrokerError::AuthenticationFailed(_) => (
            ErrorCode::AuthenticationFailed,
            tonic::Code::Unauthenticated,
        ),
        BrokerError::AuthorizationFailed { .. } => (
            ErrorCode::AuthorizationFailed,
            tonic::Code::PermissionDenied,
        ),
        BrokerError::UserExists(_) => (ErrorCode::UserAlreadyExists, tonic::Code::AlreadyExists),
        BrokerError::UnknownUser(_) => (ErrorCode::UnknownUser, tonic::Code::NotFound),
    };
    detail.code = code as i32;
    (detail, grpc)
}

/// The status of an error: its gRPC code, its message, the encoded [`ErrorDetail`] as details
/// and the code's name in the `strata-error-code` metadata.
pub fn status(error: BrokerError) -> Status {
    let (detail, grpc) = error_detail_and_code(&error);
    let name = detail.code().as_str_name();
    let mut status = Status::with_details(
        grpc,
        detail.message.clone(),
        Bytes::from(detail.encode_to_vec()),
    );
    if let Ok(value) = name.parse() {
        status.metadata_mut().insert("strata-error-code", value);
    }
    status
}

/// The details alone, for replies on a produce stream (which stays open on a failed request).
pub(super) fn error_detail(error: &BrokerError) -> ErrorDetail {
    error_detail_and_code(error).0
}

pub(super) fn invalid(message: impl Into<String>) -> Status {
    status(BrokerError::InvalidArgument(message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller refusal is NOT_LEADER with the controller leader's id and address; a request
    /// over the size limit is RECORD_TOO_LARGE with the limit; a storage failure (a partition
    /// that could not be created) is STORAGE, never a leadership answer.
    #[test]
    fn new_errors_map_to_stable_codes_with_their_details() {
        let (detail, grpc) = error_detail_and_code(&BrokerError::NotControllerLeader {
            leader_id: 3,
            address: Some("10.0.0.3:9092".to_string()),
        });
        assert_eq!(
            (detail.code(), grpc),
            (ErrorCode::NotLeader, tonic::Code::FailedPrecondition)
        );
        assert_eq!(detail.leader_node_id, Some(3));
        assert_eq!(detail.leader_address.as_deref(), Some("10.0.0.3:9092"));
        assert!(detail.message.contains("controller"), "{}", detail.message);

        let (detail, grpc) = error_detail_and_code(&BrokerError::RequestTooLarge {
            size_bytes: 5_000_000,
            limit_bytes: 1_114_112,
            batch_limit_bytes: crate::partition::BATCH_BYTES_MAX,
        });
        assert_eq!(
            (detail.code(), grpc),
            (ErrorCode::RecordTooLarge, tonic::Code::InvalidArgument)
        );
        assert_eq!(detail.limit_bytes, Some(1_114_112));
        assert!(detail.message.contains("5000000"), "{}", detail.message);

        let (detail, _) =
            error_detail_and_code(&BrokerError::Storage("No space left on device".to_string()));
        assert_eq!(detail.code(), ErrorCode::Storage);
        assert_eq!(detail.leader_node_id, None);
    }
}
