//! The Admin service: topics (create, delete, list, describe, alter config), the cluster
//! (add and remove nodes, cluster info) and users and ACLs (in `security`), translated to and
//! from [`Broker`] calls.

use strata_proto::v1 as pb;
use strata_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::Service;
use super::access::Access;
use super::cluster_view::Gathered;
use super::security::password_transport_is_safe;
use super::status::status;
use crate::broker::{Broker, BrokerError, ConfigChanges, ConfigName};
use crate::controller::metadata::{CaptureFormat, Topic, TopicConfig};
use crate::security::acl::{Operation, ResourceType};

#[tonic::async_trait]
impl Admin for Service {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.create_topic(&*self.broker()?, &request.name)?;
        let given = request.config.unwrap_or_default();
        let defaults = TopicConfig::default();
        let config = TopicConfig {
            retention_ms: given.retention_ms,
            retention_bytes: given.retention_bytes,
            segment_bytes: given.segment_bytes.unwrap_or(defaults.segment_bytes),
            capture_format: capture_format(given.capture_format.as_deref())?
                .unwrap_or(defaults.capture_format),
            capture_dir: given.capture_dir,
            capture_interval_ms: given
                .capture_interval_ms
                .unwrap_or(defaults.capture_interval_ms),
            capture_max_bytes: given
                .capture_max_bytes
                .unwrap_or(defaults.capture_max_bytes),
            capture_block_retention: given
                .capture_block_retention
                .unwrap_or(defaults.capture_block_retention),
        };
        let topic = self
            .broker()?
            .create_topic(
                &request.name,
                request.partitions,
                request.replication_factor,
                config,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(
            self.described(&*self.broker()?, &topic).await,
        ))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let access = self.access(&request);
        let name = request.into_inner().name;
        let broker = self.broker()?;
        access.topic(&broker, Operation::Delete, &name)?;
        broker.delete_topic(&name).await.map_err(status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let access = self.access(&request);
        let broker = self.broker()?;
        let topics = describable_topics(&access, &broker, &broker.metadata(), None);
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let access = self.access(&request);
        let local_only = request
            .metadata()
            .contains_key(super::cluster_view::LOCAL_VIEW_METADATA_KEY);
        let name = request.into_inner().name;
        let broker = self.broker()?;
        access.topic(&broker, Operation::Describe, &name)?;
        let topic = broker.topic(&name).map_err(status)?;
        if local_only {
            return Ok(Response::new(topic_description(&broker, &topic)));
        }
        Ok(Response::new(self.described(&broker, &topic).await))
    }

    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.topic(&*self.broker()?, Operation::AlterConfigs, &request.name)?;
        let config = request.config.unwrap_or_default();
        let mut unset = Vec::with_capacity(request.unset.len());
        for name in &request.unset {
            let config_name = ConfigName::parse(name).map_err(status)?;
            let also_set = match config_name {
                ConfigName::RetentionMs => config.retention_ms.is_some(),
                ConfigName::RetentionBytes => config.retention_bytes.is_some(),
                ConfigName::SegmentBytes => config.segment_bytes.is_some(),
                ConfigName::CaptureDir => config.capture_dir.is_some(),
                ConfigName::CaptureIntervalMs => config.capture_interval_ms.is_some(),
                ConfigName::CaptureMaxBytes => config.capture_max_bytes.is_some(),
                ConfigName::CaptureFormat => config.capture_format.is_some(),
                ConfigName::CaptureBlockRetention => config.capture_block_retention.is_some(),
            };
            if also_set {
                return Err(status(BrokerError::InvalidConfig(format!(
                    "{name} is both set and unset: give one or the other"
                ))));
            }
            unset.push(config_name);
        }
        let changes = ConfigChanges {
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
            capture_format: capture_format(config.capture_format.as_deref())?,
            capture_dir: config.capture_dir,
            capture_interval_ms: config.capture_interval_ms,
            capture_max_bytes: config.capture_max_bytes,
            capture_block_retention: config.capture_block_retention,
            unset,
        };
        let topic = self
            .broker()?
            .alter_topic(&request.name, changes)
            .await
            .map_err(status)?;
        Ok(Response::new(
            self.described(&*self.broker()?, &topic).await,
        ))
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let request = request.into_inner();
        let broker = self.broker()?;
        // A voter that cannot be reached would count against the quorum from the start.
        if request.node_id != 0 && !(self.alive)(request.node_id) {
            return Err(status(BrokerError::Unavailable(format!(
                "node {} has not been heard from: start it first (with an --initial-cluster list \
                 that includes it and the current nodes), then add it",
                request.node_id
            ))));
        }
        broker
            .add_node(request.node_id, &request.address)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AddNodeResponse {}))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let request = request.into_inner();
        let (moving, removed) =
            self.broker()?
                .remove_node(request.node_id, |node, address, groups| {
                    let tls = self.peer_tls.clone();
                    async move {
                        crate::peer::group_voters(tls.as_deref(), node, &address, groups).await
                    }
                })
                .await
                .map_err(status)?;
        Ok(Response::new(pb::RemoveNodeResponse {
            moving: moving
                .into_iter()
                .map(|(topic, partition)| pb::TopicPartition { topic, partition })
                .collect(),
            removed,
        }))
    }

    async fn cluster_info(
        &self,
        request: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        let access = self.access(&request);
        // Another node gathering its view asks for this node's own (see `cluster_view`).
        let local_only = request
            .metadata()
            .contains_key(super::cluster_view::LOCAL_VIEW_METADATA_KEY);
        let broker = self.broker()?;
        let gathered = if local_only {
            None
        } else {
            Some(self.view.get(&broker).await)
        };
        let metadata = broker.metadata();
        let nodes = metadata
            .nodes
            .values()
            .map(|node| pb::NodeInfo {
                node_id: node.id,
                address: node.address.clone(),
                // Up: it answered this gathering; without one, heard from lately (a node hears
                // only from those it shares raft groups with).
                alive: match &gathered {
                    Some(gathered) => !gathered.unanswered.contains(&node.id),
                    None => node.id == broker.node_id() || (self.alive)(node.id),
                },
            })
            .collect();
        let topics = describable_topics(&access, &broker, &metadata, gathered.as_deref());
        Ok(Response::new(pb::ClusterInfoResponse {
            nodes,
            controller_leader_node_id: broker.controller_leader(),
            topics,
            controller_high_watermark: broker.controller_high_watermark(),
            view_age_ms: gathered.as_ref().map_or(0, |gathered| gathered.age_ms()),
            unanswered_node_ids: gathered.as_ref().map_or_else(Vec::new, |gathered| {
                gathered.unanswered.iter().copied().collect()
            }),
        }))
    }

    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        let broker = self.broker()?;
        access.topic(&broker, Operation::Alter, &request.name)?;
        let topic = broker
            .add_partitions(&request.name, request.partitions)
            .await
            .map_err(status)?;
        Ok(Response::new(self.described(&broker, &topic).await))
    }

    // Users and ACLs: see `security`.

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        password_transport_is_safe(&request)?;
        Ok(Response::new(
            self.create_user_reply(request.into_inner()).await?,
        ))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        password_transport_is_safe(&request)?;
        Ok(Response::new(
            self.set_password_reply(request.into_inner()).await?,
        ))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Ok(Response::new(
            self.delete_user_reply(request.into_inner()).await?,
        ))
    }

    async fn list_users(
        &self,
        _request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Ok(Response::new(self.list_users_reply()?))
    }

    async fn create_acls(
        &self,
        request: Request<pb::CreateAclsRequest>,
    ) -> Result<Response<pb::CreateAclsResponse>, Status> {
        Ok(Response::new(
            self.create_acls_reply(request.into_inner()).await?,
        ))
    }

    async fn delete_acls(
        &self,
        request: Request<pb::DeleteAclsRequest>,
    ) -> Result<Response<pb::DeleteAclsResponse>, Status> {
        Ok(Response::new(
            self.delete_acls_reply(request.into_inner()).await?,
        ))
    }

    async fn list_acls(
        &self,
        request: Request<pb::ListAclsRequest>,
    ) -> Result<Response<pb::ListAclsResponse>, Status> {
        Ok(Response::new(self.list_acls_reply(request.into_inner())?))
    }
}

impl Service {
    /// `topic` as the cluster sees it (see [`super::cluster_view`]).
    async fn described(&self, broker: &Broker, topic: &Topic) -> pb::TopicDescription {
        let gathered = self.view.fresh(broker).await;
        with_view(topic_description(broker, topic), &gathered)
    }
}

/// `description` (this node's view) with every partition the cluster's view knows of taken
/// from it, and the view's age and unanswered nodes.
fn with_view(mut description: pb::TopicDescription, gathered: &Gathered) -> pb::TopicDescription {
    for info in &mut description.partition_info {
        let Some(known) = gathered
            .leaders
            .get(&(description.name.clone(), info.partition))
        else {
            continue;
        };
        info.leader_node_id = known.leader;
        info.leader_term = known.term;
        info.in_sync_node_ids = known.in_sync.clone();
        info.log_start_offset = known.log_start_offset;
        info.high_watermark = known.high_watermark;
        info.size_bytes = known.size_bytes;
    }
    description.view_age_ms = gathered.age_ms();
    description.unanswered_node_ids = gathered.unanswered.iter().copied().collect();
    description
}

/// `topic` as this node alone sees it.
fn topic_description(broker: &Broker, topic: &Topic) -> pb::TopicDescription {
    let partition_info = broker
        .partition_states(topic)
        .into_iter()
        .map(|state| pb::PartitionInfo {
            partition: state.partition,
            leader_node_id: state.leader_node_id,
            replica_node_ids: state.replica_node_ids,
            log_start_offset: state.log_start_offset,
            high_watermark: state.high_watermark,
            in_sync_node_ids: state.in_sync_node_ids,
            leader_term: state.leader_term,
            size_bytes: state.size_bytes,
            capture_next_offset: topic
                .config
                .capture_dir
                .is_some()
                .then(|| topic.capture_position(state.partition).next_offset),
        })
        .collect();
    pb::TopicDescription {
        name: topic.name.clone(),
        partitions: topic.partitions(),
        replication_factor: topic.replication_factor,
        config: Some(config_to_proto(&topic.config)),
        partition_info,
        view_age_ms: 0,
        unanswered_node_ids: Vec::new(),
    }
}

fn config_to_proto(config: &TopicConfig) -> pb::TopicConfig {
    pb::TopicConfig {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: Some(config.segment_bytes),
        capture_dir: config.capture_dir.clone(),
        capture_interval_ms: Some(config.capture_interval_ms),
        capture_max_bytes: Some(config.capture_max_bytes),
        capture_format: Some(config.capture_format.as_str().to_string()),
        capture_block_retention: Some(config.capture_block_retention),
    }
}

/// The capture format a request names, if it names one.
fn capture_format(text: Option<&str>) -> Result<Option<CaptureFormat>, Status> {
    text.map(CaptureFormat::parse)
        .transpose()
        .map_err(|reason| status(BrokerError::InvalidConfig(reason)))
}

/// The descriptions of the topics of `metadata` that `access`'s principal may describe: as
/// the cluster sees them when `gathered` is given, else as this node does.
fn describable_topics(
    access: &Access,
    broker: &Broker,
    metadata: &crate::controller::metadata::Metadata,
    gathered: Option<&Gathered>,
) -> Vec<pb::TopicDescription> {
    metadata
        .topics
        .values()
        .filter(|topic| {
            access.allows(
                broker,
                ResourceType::Topic,
                &topic.name,
                Operation::Describe,
            )
        })
        .map(|topic| {
            let description = topic_description(broker, topic);
            match gathered {
                Some(gathered) => with_view(description, gathered),
                None => description,
            }
        })
        .collect()
}
