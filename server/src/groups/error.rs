//! [`GroupError`]: the refusals that the consumer groups decide themselves. Each variant has a
//! namesake in the broker's error, to which it converts with its values unchanged; the client
//! reads the broker error's message, so these messages are for logs and tests.

/// A refusal decided by the groups' own checks (the coordinator's are
/// [`CoordinatorError`](super::coordinator::CoordinatorError)s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("invalid group id: {0}")]
    InvalidGroupId(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("group {0:?} still has members: it can be deleted once they have left")]
    GroupNotEmpty(String),
    /// A committed offset beyond the partition's high watermark, as its leader reported it.
    #[error(
        "commit of offset {requested} above high watermark {high_watermark} (log start {log_start})"
    )]
    OffsetOutOfRange {
        requested: u64,
        log_start: u64,
        high_watermark: u64,
    },
    /// Cannot be decided now (e.g. a partition's leader did not answer); retriable.
    #[error("unavailable: {0}")]
    Unavailable(String),
}
