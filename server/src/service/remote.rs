//! Calls to other nodes' `strata.v1` services that the broker needs (how far the controller's
//! leader applied its log, another node's replica offsets), handed to it as functions so that
//! the broker knows nothing of gRPC. With node-to-node TLS they dial with the node's peer
//! certificate and check that the node answering is the one asked (`security::tls`).

use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use tonic::transport::Channel;

use crate::broker::security::BootstrapOutcome;
use crate::groups::offsets::{COMMIT_CHECK_TIMEOUT, ReplicaOffsets};
use crate::security::scram::ScramCredential;
use crate::security::tls::{Tls, peer_endpoint};

/// How long the controller's leader may take to create another node's bootstrap user.
const BOOTSTRAP_ASK_TIMEOUT: Duration = Duration::from_secs(5);
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
pub async fn replica_offsets_at(
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

/// Asks node `node` at `address` (the controller's leader) to create the bootstrap user `name`
/// with `credential` (its peer service's `BootstrapUser`), for
/// [`Broker::bootstrap_user`](crate::broker::Broker::bootstrap_user).
///
/// # Errors
/// Connection and call failures (that node no longer leads, for one), as text.
pub async fn bootstrap_user_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
    name: String,
    credential: ScramCredential,
) -> Result<BootstrapOutcome, String> {
    let endpoint = peer_endpoint(tls.as_deref(), node, &address)?.timeout(BOOTSTRAP_ASK_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let reply = strata_proto::v1::peer_client::PeerClient::new(channel)
        .bootstrap_user(pb::BootstrapUserRequest {
            name,
            salt: credential.salt.into(),
            iterations: credential.iterations,
            stored_key: credential.stored_key.into(),
            server_key: credential.server_key.into(),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(if reply.created {
        BootstrapOutcome::Created
    } else {
        BootstrapOutcome::UsersExist
    })
}
