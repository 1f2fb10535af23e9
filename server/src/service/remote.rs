//! Calls to other nodes' `strata.v1` services that the broker needs (how far the controller's
//! leader applied its log, another node's replica offsets), handed to it as functions so that
//! the broker knows nothing of gRPC. With node-to-node TLS they dial with the node's peer
//! certificate and check that the node answering is the one asked (`security::tls`).

use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::broker_client::BrokerClient;
use tonic::transport::Channel;

use crate::broker::describe::PartitionState;
use crate::broker::security::BootstrapOutcome;
use crate::groups::offsets::{COMMIT_CHECK_TIMEOUT, ReplicaOffsets};
use crate::partition::{ListedOffsets, StartFrom};
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

/// Asks node `node` at `address` where `start` resolves on its replica of `topic`/`partition`
/// (its `ListOffsets`), for a group reset on a node that holds no replica of it.
///
/// # Errors
/// Connection and call failures (no replica there, for one), as text.
pub async fn list_offsets_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
    topic: String,
    partition: u32,
    start: StartFrom,
) -> Result<ListedOffsets, String> {
    use pb::start_position::Position;
    let position = match start {
        StartFrom::Earliest => Position::Earliest(true),
        StartFrom::Latest => Position::Latest(true),
        StartFrom::Offset(offset) => Position::Offset(offset),
        StartFrom::Timestamp(timestamp) => Position::TimestampMs(timestamp),
    };
    let endpoint = peer_endpoint(tls.as_deref(), node, &address)?.timeout(COMMIT_CHECK_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let listed = BrokerClient::new(channel)
        .list_offsets(pb::ListOffsetsRequest {
            topic,
            partition,
            position: Some(pb::StartPosition {
                position: Some(position),
            }),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(ListedOffsets {
        offset: listed.offset,
        log_start_offset: listed.log_start_offset,
        high_watermark: listed.high_watermark,
    })
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

/// How long a question about another node's replicas may take (Kafka's Metadata waits on it).
const REPLICAS_ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks node `node` at `address` how it sees its partition replicas (its `ClusterInfo`, asked
/// for its own view only): by topic, each partition's state as that node knows it, for a
/// cluster-wide view (see [`super::cluster_view`]).
///
/// # Errors
/// Connection and call failures, as text.
pub async fn partition_states_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
) -> Result<Vec<(String, PartitionState)>, String> {
    let mut request = tonic::Request::new(pb::ClusterInfoRequest {});
    request.metadata_mut().insert(
        super::cluster_view::LOCAL_VIEW_METADATA_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    let info = admin_client(tls.as_deref(), node, &address, REPLICAS_ASK_TIMEOUT)
        .await?
        .cluster_info(request)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(info
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.name;
            topic.partition_info.into_iter().map(move |p| {
                (
                    name.clone(),
                    PartitionState {
                        partition: p.partition,
                        replica_node_ids: p.replica_node_ids,
                        leader_node_id: p.leader_node_id,
                        leader_term: p.leader_term,
                        log_start_offset: p.log_start_offset,
                        high_watermark: p.high_watermark,
                        in_sync_node_ids: p.in_sync_node_ids,
                        size_bytes: p.size_bytes,
                    },
                )
            })
        })
        .collect())
}

/// Asks node `node` at `address` (the controller's leader) to record node `from`'s Kafka
/// address (see [`Broker::publish_kafka_address`](crate::broker::Broker::publish_kafka_address)).
///
/// # Errors
/// Connection and call failures, as text.
pub async fn set_kafka_address_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
    from: u64,
    kafka_address: Option<String>,
) -> Result<(), String> {
    let endpoint = peer_endpoint(tls.as_deref(), node, &address)?.timeout(CONTROLLER_ASK_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    strata_proto::v1::peer_client::PeerClient::new(channel)
        .set_kafka_address(pb::SetKafkaAddressRequest {
            node_id: from,
            kafka_address,
        })
        .await
        .map_err(|e| e.message().to_string())?;
    Ok(())
}

/// Asks node `node` at `address` (the controller's leader) to apply a capture command
/// (`command`, as JSON) for this node: `Ok(None)` applied, `Ok(Some(why))` refused because
/// the capture position had moved (see `crate::capture`).
///
/// # Errors
/// Connection and call failures, as text.
pub async fn propose_capture_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
    command: Vec<u8>,
) -> Result<Option<String>, String> {
    let endpoint = peer_endpoint(tls.as_deref(), node, &address)?.timeout(CONTROLLER_ASK_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let reply = strata_proto::v1::peer_client::PeerClient::new(channel)
        .propose_capture(pb::ProposeCaptureRequest {
            command: command.into(),
        })
        .await
        .map_err(|e| e.message().to_string())?;
    Ok(reply.into_inner().moved)
}

/// How long a topic create asked of the controller's leader may take.
const CREATE_ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks node `node` at `address` (the controller's leader) to create a topic with the default
/// config, as this node (a frontend that already authorized its client's request, such as
/// Kafka's Metadata with auto-creation on).
///
/// # Errors
/// Connection and call failures, as the broker's error where the answer carries one.
pub async fn create_topic_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
    name: String,
    partitions: u32,
    replication_factor: u32,
) -> Result<(), crate::broker::BrokerError> {
    use crate::broker::BrokerError;
    let mut admin = admin_client(tls.as_deref(), node, &address, CREATE_ASK_TIMEOUT)
        .await
        .map_err(BrokerError::Unavailable)?;
    match admin
        .create_topic(pb::CreateTopicRequest {
            name: name.clone(),
            partitions,
            replication_factor,
            config: None,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            Err(BrokerError::TopicExists(name))
        }
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            Err(BrokerError::InvalidArgument(status.message().to_string()))
        }
        Err(status) => Err(BrokerError::Unavailable(format!(
            "the controller's leader (node {node}) did not create {name:?}: {}",
            status.message()
        ))),
    }
}

/// Asks node `node` at `address` (the controller's leader) for a fresh producer id (its
/// `InitProducerId`, under this node's identity: the Kafka listener authorized the client
/// first), for a Kafka client that asked a node not leading the controller.
///
/// # Errors
/// Connection and call failures (that node no longer leads, for one), as text.
pub async fn init_producer_id_at(
    tls: Option<Arc<Tls>>,
    node: u64,
    address: String,
) -> Result<i64, String> {
    let endpoint = peer_endpoint(tls.as_deref(), node, &address)?.timeout(BOOTSTRAP_ASK_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let reply = strata_proto::v1::broker_client::BrokerClient::new(channel)
        .init_producer_id(pb::InitProducerIdRequest {})
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(reply.producer_id)
}
