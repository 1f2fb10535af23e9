//! The client's error type: what the broker said (decoded from the status details), what the
//! transport said, and what the client itself refused.

use std::fmt;

use prost::Message as _;
use strata_proto::batch::BatchError;
use strata_proto::v1::{ErrorCode, ErrorDetail, OffsetRange};

/// The metadata key a failed call carries with the [`ErrorCode`] name, for clients that do not
/// decode the details.
pub const ERROR_CODE_METADATA_KEY: &str = "strata-error-code";

/// `Result` with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client call can fail with.
///
/// `Clone` because one failed batch fails every record in it, and each record's sender gets
/// its own copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker refused the request and said why ([`ServerError`] holds the details).
    #[error(transparent)]
    Server(Box<ServerError>),
    /// No broker in the list could be reached.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The call failed without a Strata error detail: a transport failure (a refused or broken
    /// connection) or a status from outside the broker's service (an older broker, a proxy).
    #[error("call failed: {}: {}", .0.code(), .0.message())]
    Rpc(tonic::Status),
    /// No reply within the client's time limit.
    #[error("no reply within {after_ms} ms")]
    Timeout { after_ms: u64 },
    /// The broker sent a batch that does not decode.
    #[error("corrupt batch from the broker: {0}")]
    CorruptBatch(BatchError),
    /// The record is larger than the producer's batch limit, so no batch can hold it.
    #[error("record of {size_bytes} bytes exceeds the batch limit of {limit_bytes} bytes")]
    RecordTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    /// The record names a partition the topic does not have.
    #[error("topic {topic} has {partitions} partitions: partition {partition} does not exist")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    /// A configuration value or argument the client refuses before calling the broker.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer or stream was closed before the request completed.
    #[error("closed before the request completed")]
    Closed,
    /// A group consumer with `OffsetReset::Error` was assigned a partition the group never
    /// committed.
    #[error("group {group} has no committed offset for {topic}/{partition}")]
    NoCommittedOffset {
        group: String,
        topic: String,
        partition: u32,
    },
    /// A group consumer stopped reading a partition after this error. (`error` is not a
    /// `source`: the message includes it already, and printing the chain would say it twice.)
    #[error("reading {topic}/{partition}: {error}")]
    PartitionFailed {
        topic: String,
        partition: u32,
        error: Box<Error>,
    },
    /// No reply with the request's correlation id arrived in time.
    #[error("no reply to request {correlation_id} within {after_ms} ms")]
    NoReply {
        correlation_id: String,
        after_ms: u64,
    },
    /// A stored batch of a partition does not decode; the records before it were delivered.
    /// (`error` is not a `source`: the message includes it already.)
    #[error("the batch at offset {offset} of {topic}/{partition} does not decode: {error}")]
    CorruptBatchAt {
        topic: String,
        partition: u32,
        offset: u64,
        error: BatchError,
    },
}

/// A refusal from the broker: the decoded `ErrorDetail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The stable error code; `Unspecified` when the broker sent a code this client does not
    /// know.
    pub code: ErrorCode,
    /// The broker's explanation, for people.
    pub message: String,
    /// With `OffsetOutOfRange`: the offsets the partition holds.
    pub valid_range: Option<OffsetRange>,
    /// With `NotLeader`: the node that leads the partition now, when known.
    pub leader_node_id: Option<u64>,
    /// With `NotLeader`: that node's address, when known.
    pub leader_address: Option<String>,
    /// With `RecordTooLarge`: the broker's limit in bytes.
    pub limit_bytes: Option<u64>,
    /// With `OutOfOrderSequence`: the sequence the partition expected next.
    pub expected_sequence: Option<i32>,
}

impl ServerError {
    /// The code's name without the `ERROR_CODE_` prefix, e.g. `NOT_LEADER`.
    pub fn code_name(&self) -> &'static str {
        let name = self.code.as_str_name();
        name.strip_prefix("ERROR_CODE_").unwrap_or(name)
    }
}

impl fmt::Display for ServerError {
    /// `CODE: message`. The broker's message already states the range, leader or limit; the
    /// structured fields are for programs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code_name(), self.message)
    }
}

impl std::error::Error for ServerError {}

impl From<ServerError> for Error {
    fn from(error: ServerError) -> Self {
        Error::Server(Box::new(error))
    }
}

impl From<BatchError> for Error {
    fn from(error: BatchError) -> Self {
        // Not a `source`: the message already includes it, and printing the chain would say it
        // twice.
        Error::CorruptBatch(error)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(status)
    }
}

impl Error {
    /// Decodes a failed call. The details carry an encoded `ErrorDetail`; without details, the
    /// `strata-error-code` metadata still gives the code (and the status message the text).
    /// Anything else stays an [`Error::Rpc`].
    pub fn from_status(status: tonic::Status) -> Self {
        if !status.details().is_empty()
            && let Ok(detail) = ErrorDetail::decode(status.details())
            && detail.code != ErrorCode::Unspecified as i32
        {
            return Self::from_detail(detail);
        }
        let code = status
            .metadata()
            .get(ERROR_CODE_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(ErrorCode::from_str_name)
            .filter(|code| *code != ErrorCode::Unspecified);
        match code {
            Some(code) => ServerError {
                code,
                message: status.message().to_owned(),
                valid_range: None,
                leader_node_id: None,
                leader_address: None,
                limit_bytes: None,
                expected_sequence: None,
            }
            .into(),
            None => Error::Rpc(status),
        }
    }

    /// Converts an `ErrorDetail` (as a `ProduceResponse` on a stream carries it).
    pub fn from_detail(detail: ErrorDetail) -> Self {
        ServerError {
            code: ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Unspecified),
            message: detail.message,
            valid_range: detail.valid_range,
            leader_node_id: detail.leader_node_id,
            leader_address: detail.leader_address,
            limit_bytes: detail.limit_bytes,
            expected_sequence: detail.expected_sequence,
        }
        .into()
    }

    /// The broker's error code, when the broker refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(server) => Some(server.code),
            _ => None,
        }
    }

    /// The broker's refusal, when that is what this is.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            Error::Server(server) => Some(server),
            _ => None,
        }
    }

    /// Whether the same request may succeed if sent again later: the broker was not the
    /// leader, unavailable, shutting down or too slow, or the connection failed. Everything
    /// else (a bad argument, an unknown topic, a record too large) fails the same way again.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Server(server) => matches!(
                server.code,
                ErrorCode::NotLeader
                    | ErrorCode::Unavailable
                    | ErrorCode::Timeout
                    | ErrorCode::ShuttingDown
                    // A full disk or no descriptors on the node: retried within the delivery
                    // timeout, as space may be freed (retention, deletes) meanwhile.
                    | ErrorCode::ResourceExhausted
            ),
            // tonic reports a refused connection as `Unavailable`, and a connection that
            // breaks mid-call as a status that carries the transport's error as its source. A
            // status that came over the wire never has a source.
            Error::Rpc(status) => {
                status.code() == tonic::Code::Unavailable
                    || std::error::Error::source(status).is_some()
            }
            Error::Connect { .. } | Error::Timeout { .. } => true,
            Error::CorruptBatch(_)
            | Error::RecordTooLarge { .. }
            | Error::UnknownPartition { .. }
            | Error::InvalidArgument(_)
            | Error::Closed
            | Error::NoCommittedOffset { .. }
            | Error::PartitionFailed { .. }
            | Error::NoReply { .. }
            | Error::CorruptBatchAt { .. } => false,
        }
    }

    /// Whether the broker said the topic or partition does not exist.
    pub fn is_unknown_topic(&self) -> bool {
        self.code() == Some(ErrorCode::UnknownTopicOrPartition)
    }
}

/// One line from an error and its sources, for transport errors whose own message ("transport
/// error") hides the cause.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn status_with(detail: &ErrorDetail, code: tonic::Code) -> tonic::Status {
        tonic::Status::with_details(code, "refused", Bytes::from(detail.encode_to_vec()))
    }

    /// A status whose details hold an ErrorDetail decodes to a ServerError with every field.
    #[test]
    fn decodes_details() {
        let detail = ErrorDetail {
            code: ErrorCode::OffsetOutOfRange as i32,
            message: "offset 99 is past the end".into(),
            valid_range: Some(OffsetRange {
                log_start_offset: 5,
                next_offset: 42,
            }),
            leader_node_id: None,
            leader_address: None,
            limit_bytes: None,
            expected_sequence: None,
        };
        let error = Error::from_status(status_with(&detail, tonic::Code::OutOfRange));
        let server = error.server().expect("a server error");
        assert_eq!(server.code, ErrorCode::OffsetOutOfRange);
        assert_eq!(server.message, "offset 99 is past the end");
        assert_eq!(
            server.valid_range,
            Some(OffsetRange {
                log_start_offset: 5,
                next_offset: 42
            })
        );
        assert!(!error.is_retriable());
        assert_eq!(
            error.to_string(),
            "OFFSET_OUT_OF_RANGE: offset 99 is past the end"
        );
    }

    /// NOT_LEADER carries the leader and is retriable.
    #[test]
    fn not_leader_is_retriable_and_names_the_leader() {
        let detail = ErrorDetail {
            code: ErrorCode::NotLeader as i32,
            message: "node 1 does not lead orders/3".into(),
            leader_node_id: Some(2),
            leader_address: Some("10.0.0.2:9092".into()),
            ..ErrorDetail::default()
        };
        let error = Error::from_status(status_with(&detail, tonic::Code::FailedPrecondition));
        assert!(error.is_retriable());
        let server = error.server().expect("a server error");
        assert_eq!(server.leader_node_id, Some(2));
        assert_eq!(server.leader_address.as_deref(), Some("10.0.0.2:9092"));
    }

    /// Without details, the metadata code still gives a ServerError.
    #[test]
    fn falls_back_to_metadata() {
        let mut status = tonic::Status::not_found("no topic named orders");
        status.metadata_mut().insert(
            ERROR_CODE_METADATA_KEY,
            "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION"
                .parse()
                .expect("ASCII metadata"),
        );
        let error = Error::from_status(status);
        assert!(error.is_unknown_topic());
        assert_eq!(
            error.to_string(),
            "UNKNOWN_TOPIC_OR_PARTITION: no topic named orders"
        );
    }

    /// A plain status stays an Rpc error; only Unavailable is retriable.
    #[test]
    fn plain_status_stays_rpc() {
        let error = Error::from_status(tonic::Status::unavailable("connection refused"));
        assert!(matches!(error, Error::Rpc(_)));
        assert!(error.is_retriable());
        let error = Error::from_status(tonic::Status::unimplemented("no such method"));
        assert!(!error.is_retriable());
        // A call cut off by a broken connection: tonic attaches the transport error.
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert!(Error::from_status(broken).is_retriable());
        // Garbage details do not decode into a detail with a code.
        let garbage = tonic::Status::with_details(
            tonic::Code::Internal,
            "oops",
            Bytes::from_static(&[0xff, 0xff]),
        );
        assert!(matches!(Error::from_status(garbage), Error::Rpc(_)));
    }

    /// The table of retriable codes from the protocol contract.
    #[test]
    fn retriable_codes() {
        let table = [
            (ErrorCode::UnknownTopicOrPartition, false),
            (ErrorCode::InvalidArgument, false),
            (ErrorCode::OffsetOutOfRange, false),
            (ErrorCode::RecordTooLarge, false),
            (ErrorCode::CorruptBatch, false),
            (ErrorCode::NotLeader, true),
            (ErrorCode::Timeout, true),
            (ErrorCode::Storage, false),
            (ErrorCode::TopicAlreadyExists, false),
            (ErrorCode::InvalidTopicName, false),
            (ErrorCode::InvalidConfig, false),
            (ErrorCode::Unavailable, true),
            (ErrorCode::ShuttingDown, true),
            (ErrorCode::UnknownMember, false),
            (ErrorCode::StaleMemberEpoch, false),
            (ErrorCode::UnknownGroup, false),
            (ErrorCode::GroupNotEmpty, false),
            (ErrorCode::InvalidGroupId, false),
            (ErrorCode::GroupFull, false),
            (ErrorCode::OutOfOrderSequence, false),
            (ErrorCode::InvalidProducerEpoch, false),
            (ErrorCode::UnknownProducerId, false),
        ];
        for (code, retriable) in table {
            let error = Error::from_detail(ErrorDetail {
                code: code as i32,
                ..ErrorDetail::default()
            });
            assert_eq!(error.is_retriable(), retriable, "{code:?}");
        }
        // A code from a newer broker is kept as Unspecified, not retried.
        let error = Error::from_detail(ErrorDetail {
            code: 999,
            ..ErrorDetail::default()
        });
        assert_eq!(error.code(), Some(ErrorCode::Unspecified));
        assert!(!error.is_retriable());
    }
}
