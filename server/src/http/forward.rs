//! Passing a JSON API call to the node that can answer it.
//!
//! A gRPC client follows NOT_LEADER to the node it names; a browser on one node's console
//! cannot. So for the methods in [`FORWARDED`], a call this node answers with NOT_LEADER (the
//! controller's leader, or a partition's, is elsewhere) is made again on the node named,
//! over the node-to-node channel (with its node certificate when node-to-node TLS is on), and
//! that node's answer is returned as it is.
//!
//! The call goes as this node, which the other node's ACLs allow everything; that is safe only
//! because every method listed has already been authorized HERE, for the caller, by its
//! handler's one up-front check (the same replicated ACLs the other node holds), and answers
//! the same whoever asks. Methods whose answer depends on the principal (ListTopics and
//! ListGroups filter by it) or that authorize per item are never forwarded.

use std::time::Duration;

use tonic::Status;

use crate::broker::BrokerError;
use crate::security::tls::{Tls, peer_endpoint};
use crate::service::status;

/// The forwarded methods (see the module doc for what qualifies one).
pub const FORWARDED: &[&str] = &[
    "Broker/Produce",
    "Broker/Fetch",
    "Broker/ListOffsets",
    "Admin/CreateTopic",
    "Admin/DeleteTopic",
    "Admin/AlterTopicConfig",
    "Groups/DescribeGroup",
    "Groups/DeleteGroup",
    "Groups/ResetOffsets",
    "Groups/FetchCommittedOffsets",
];

/// How long a forwarded call may take, connecting included.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a NOT_LEADER status says to go: the node and its address, when it names both.
pub fn leader_of(status: &Status) -> Option<(u64, String)> {
    use prost::Message as _;
    if status
        .metadata()
        .get("strata-error-code")
        .and_then(|value| value.to_str().ok())
        != Some(strata_proto::v1::ErrorCode::NotLeader.as_str_name())
    {
        return None;
    }
    let detail = strata_proto::v1::ErrorDetail::decode(status.details()).ok()?;
    let node = detail.leader_node_id.filter(|node| *node != 0)?;
    let address = detail
        .leader_address
        .filter(|address| !address.is_empty())?;
    Some((node, address))
}

/// Calls `method` (`Service/Method`) with `message` on node `node` at `address`.
///
/// # Errors
/// The other node's status, or UNAVAILABLE when it cannot be reached.
pub async fn call<Req, Resp>(
    tls: Option<&Tls>,
    node: u64,
    address: &str,
    method: &str,
    message: Req,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let unreachable = |why: String| {
        status(BrokerError::Unavailable(format!(
            "this node is not the one to answer {method}, and passing the call to node {node} \
             at {address} failed: {why}; retry shortly"
        )))
    };
    let endpoint = peer_endpoint(tls, node, address)
        .map_err(unreachable)?
        .timeout(FORWARD_TIMEOUT);
    let channel = tokio::time::timeout(FORWARD_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| unreachable(format!("no connection within {FORWARD_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| unreachable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!("/strata.v1.{method}"))
        .map_err(|e| unreachable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(message),
        path,
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}
