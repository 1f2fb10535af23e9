//! The types and limits of Kafka's classic group protocol ([`classic`](super::classic)): its
//! states, refusals, requests and views.

use std::time::Duration;

use bytes::Bytes;

use super::coordinator::CLIENT_ID_BYTES_MAX;

/// Session timeouts a member may ask for (Kafka's broker defaults allow 6 s to 30 min; the
/// lower bound is lower here so tests can expire members quickly).
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);
/// Longest rebalance timeout (how long a rebalance waits for members to rejoin).
pub const REBALANCE_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);
/// Most protocols (assignors) one member may offer.
pub const PROTOCOLS_PER_MEMBER_MAX: usize = 32;
/// Most bytes of protocol names and metadata one member may offer, all protocols together.
pub const MEMBER_METADATA_BYTES_MAX: usize = 256 << 10;
/// Longest assignment the leader may hand one member.
pub const ASSIGNMENT_BYTES_MAX: usize = 1 << 20;
/// Longest protocol type and protocol name.
pub const PROTOCOL_NAME_BYTES_MAX: usize = 255;

/// A classic group's state, named as Kafka names it (DescribeGroups shows these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// Why a classic group request was refused; each is one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    #[error("unknown member: {0}")]
    UnknownMember(String),
    #[error("illegal generation: {0}")]
    IllegalGeneration(String),
    #[error("the group is rebalancing: rejoin")]
    RebalanceInProgress,
    #[error("inconsistent group protocol: {0}")]
    InconsistentGroupProtocol(String),
    #[error("invalid session timeout: {0}")]
    InvalidSessionTimeout(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("group full: {0}")]
    GroupFull(String),
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    /// Empty for a new member: the coordinator makes its id.
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    /// (name, metadata), most preferred first.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    /// How long a rebalance waits for this member to rejoin (v0: the session timeout).
    pub rebalance_timeout: Duration,
}

/// A completed join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation: i32,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Every member's id and metadata for the selected protocol: for the leader only.
    pub members: Vec<(String, Bytes)>,
}

pub type JoinOutcome = Result<JoinResponse, ClassicError>;
/// The member's assignment bytes.
pub type SyncOutcome = Result<Bytes, ClassicError>;

/// Who a commit comes from, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFrom {
    /// A member of the group's current generation.
    Member,
    /// A consumer outside any group (generation -1), allowed while the group has no members.
    Simple,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the selected protocol (empty before one is selected).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as ListGroups and DescribeGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub state: State,
    pub generation: i32,
    pub protocol_type: String,
    /// The selected protocol ("" before the first rebalance completes).
    pub protocol: String,
    pub members: Vec<MemberView>,
}

impl JoinRequest {
    /// Checks the request's timeouts, protocols and sizes against the limits above.
    ///
    /// # Errors
    /// The [`ClassicError`] naming what is out of range.
    pub fn validate(&self) -> Result<(), ClassicError> {
        let request = self;
        if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&request.session_timeout) {
            return Err(ClassicError::InvalidSessionTimeout(format!(
                "session_timeout_ms must be {} to {}, got {}",
                SESSION_TIMEOUT_MIN.as_millis(),
                SESSION_TIMEOUT_MAX.as_millis(),
                request.session_timeout.as_millis()
            )));
        }
        if request.rebalance_timeout.is_zero() || request.rebalance_timeout > REBALANCE_TIMEOUT_MAX
        {
            return Err(ClassicError::InvalidArgument(format!(
                "rebalance_timeout_ms must be 1 to {}, got {}",
                REBALANCE_TIMEOUT_MAX.as_millis(),
                request.rebalance_timeout.as_millis()
            )));
        }
        if request.protocol_type.is_empty() || request.protocol_type.len() > PROTOCOL_NAME_BYTES_MAX
        {
            return Err(ClassicError::InconsistentGroupProtocol(format!(
                "protocol_type must be 1 to {PROTOCOL_NAME_BYTES_MAX} bytes (\"consumer\" for \
                 consumers), got {} bytes",
                request.protocol_type.len()
            )));
        }
        if request.protocols.is_empty() || request.protocols.len() > PROTOCOLS_PER_MEMBER_MAX {
            return Err(ClassicError::InconsistentGroupProtocol(format!(
                "a member offers 1 to {PROTOCOLS_PER_MEMBER_MAX} protocols, got {}",
                request.protocols.len()
            )));
        }
        if let Some((name, _)) = request
            .protocols
            .iter()
            .find(|(name, _)| name.is_empty() || name.len() > PROTOCOL_NAME_BYTES_MAX)
        {
            return Err(ClassicError::InconsistentGroupProtocol(format!(
                "protocol names are 1 to {PROTOCOL_NAME_BYTES_MAX} bytes, got {} bytes",
                name.len()
            )));
        }
        let metadata_bytes: usize = request
            .protocols
            .iter()
            .map(|(name, metadata)| name.len() + metadata.len())
            .sum();
        if metadata_bytes > MEMBER_METADATA_BYTES_MAX {
            return Err(ClassicError::InvalidArgument(format!(
                "a member's protocols and metadata are at most {MEMBER_METADATA_BYTES_MAX} bytes, \
                 got {metadata_bytes}"
            )));
        }
        if request.member_id.len() > 2 * CLIENT_ID_BYTES_MAX
            || request.client_id.len() > CLIENT_ID_BYTES_MAX
            || request.client_host.len() > CLIENT_ID_BYTES_MAX
        {
            return Err(ClassicError::InvalidArgument(format!(
                "client_id is at most {CLIENT_ID_BYTES_MAX} bytes, member_id at most {}",
                2 * CLIENT_ID_BYTES_MAX
            )));
        }
        Ok(())
    }
}
