//! Calls to other nodes' `strata.v1` services that the broker needs (how far the controller's
//! leader applied its log, another node's replica offsets), handed to it as functions so that
//! the broker knows nothing of gRPC. With node-to-node TLS they dial with the node's peer
//! certificate and check that the node answering is the one asked (`security::tls`).

use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::groups::offsets::{COMMIT_CHECK_TIMEOUT, ReplicaOffsets};
use crate::security::tls::{Tls, peer_endpoint};

/// How long a starting node's question about the controller's progress may take.
const CONTROLLER_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// An Admin client of node `node` at `address`, whose calls time out after `timeout`.
async fn admin_client(
    tls: Option<&Tls>,
    node: u64,
    address: &str,
    timeout: Duration,
) -> Result<AdminClient<Channel>, String> {
    let endpoint = peer_endpoint(tls, node, address)?.timeout(timeout);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(AdminClient::new(channel))
}

/// Asks node `node` at `address` (the controller's leader) how far it has applied the
/// controller's log, for a starting node (see [`Broker::start`](crate::broker::Broker::start)).
///
/// # Errors
/// Connection and call failures, as text.
pub async fn controller_high_watermark_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
) -> Result<u64, String> {
    let info = admin_client(tls.as_deref(), node, &address, CONTROLLER_ASK_TIMEOUT)
        .await?
        .cluster_info(pb::ClusterInfoRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(info.controller_high_watermark)
}

/// Asks node `node` at `address` about its replicas of `topic` (its `DescribeTopic`), to check a
/// commit against their high watermarks.
///
/// # Errors
/// Connection and call failures, as text.
pub(super) async fn replica_offsets_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
    topic: String,
) -> Result<Vec<ReplicaOffsets>, String> {
    let described = admin_client(tls.as_deref(), node, &address, COMMIT_CHECK_TIMEOUT)
        .await?
        .describe_topic(pb::DescribeTopicRequest { name: topic })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(described
        .partition_info
        .into_iter()
        .map(|p| ReplicaOffsets {
            partition: p.partition,
            log_start_offset: p.log_start_offset,
            high_watermark: p.high_watermark,
            leader_node_id: p.leader_node_id,
        })
        .collect())
}
