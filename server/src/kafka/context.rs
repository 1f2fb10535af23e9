//! What every Kafka handler shares: the request's [`Context`], decoding a request body, the
//! [`Refusal`] that closes a connection, and the group access check of the group APIs.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Decodable;

use super::Frontend;
use super::frame::FrameError;
use crate::broker::{Broker, BrokerError};
use crate::groups::classic_requests::ClassicFailure;
use crate::security::ConnectionInfo;
use crate::security::acl::{Operation, ResourceType};
use crate::service::access::Access;

/// What a handler knows of its request's connection.
#[derive(Clone)]
pub struct Context {
    pub frontend: Arc<Frontend>,
    /// The connection's principal (authenticated or anonymous) and the node's policy.
    pub access: Access,
    pub connection: ConnectionInfo,
}

/// Why a request ends its connection: the connection loop logs it and closes.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("unsupported API key {api_key} version {version}")]
    Unsupported { api_key: i16, version: i16 },
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Decodes `body` as a request of `T` at `version`.
///
/// # Errors
/// [`FrameError::Malformed`] naming the API.
pub fn decode<T: Decodable>(
    api_key: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<T, FrameError> {
    T::decode(&mut body, version)
        .map_err(|e| FrameError::Malformed(format!("{api_key:?} v{version} request: {e}")))
}

impl Context {
    /// The broker, once the group allows `operation` to this principal.
    ///
    /// # Errors
    /// The node is starting, or the principal lacks the ACL.
    pub fn group_access(
        &self,
        group: &str,
        operation: Operation,
    ) -> Result<Arc<Broker>, ClassicFailure<BrokerError>> {
        let broker = self.frontend.broker().map_err(ClassicFailure::Node)?;
        self.access
            .check(&broker, ResourceType::Group, group, operation)
            .map_err(ClassicFailure::Node)?;
        Ok(broker)
    }
}
