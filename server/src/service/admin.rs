//! The Admin service: topics (create, delete, list, describe, alter config), the cluster
//! (add and remove nodes, cluster info) and users and ACLs (in `security`), translated to and
//! from [`Broker`] calls.

use strata_proto::v1 as pb;
use strata_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use super::Service;
use super::access::Access;
use super::security::password_transport_is_safe;
use super::status::status;
use crate::broker::{Broker, BrokerError, ConfigChanges};
use crate::controller::metadata::{Topic, TopicConfig};
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
        let config = TopicConfig {
            retention_ms: given.retention_ms,
            retention_bytes: given.retention_bytes,
            segment_bytes: given
                .segment_bytes
                .unwrap_or(TopicConfig::default().segment_bytes),
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
        Ok(Response::new(topic_description(&*self.broker()?, &topic)))
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
        let topics = describable_topics(&access, &broker, &broker.metadata());
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let access = self.access(&request);
        let name = request.into_inner().name;
        let broker = self.broker()?;
        access.topic(&broker, Operation::Describe, &name)?;
        let topic = broker.topic(&name).map_err(status)?;
        Ok(Response::new(topic_description(&*self.broker()?, &topic)))
    }

    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.topic(&*self.broker()?, Operation::AlterConfigs, &request.name)?;
        let config = request.config.unwrap_or_default();
        let changes = ConfigChanges {
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
        };
        let topic = self
            .broker()?
            .alter_topic(&request.name, changes)
            .await
            .map_err(status)?;
        Ok(Response::new(topic_description(&*self.broker()?, &topic)))
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
        let broker = self.broker()?;
        let metadata = broker.metadata();
        let nodes = metadata
            .nodes
            .values()
            .map(|node| pb::NodeInfo {
                node_id: node.id,
                address: node.address.clone(),
                alive: (self.alive)(node.id),
            })
            .collect();
        let topics = describable_topics(&access, &broker, &metadata);
        Ok(Response::new(pb::ClusterInfoResponse {
            nodes,
            controller_leader_node_id: broker.controller_leader(),
            topics,
            controller_high_watermark: broker.controller_high_watermark(),
        }))
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
        })
        .collect();
    pb::TopicDescription {
        name: topic.name.clone(),
        partitions: topic.partitions(),
        replication_factor: topic.replication_factor,
        config: Some(config_to_proto(&topic.config)),
        partition_info,
    }
}

fn config_to_proto(config: &TopicConfig) -> pb::TopicConfig {
    pb::TopicConfig {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: Some(config.segment_bytes),
    }
}

/// The descriptions of the topics of `metadata` that `access`'s principal may describe.
fn describable_topics(
    access: &Access,
    broker: &Broker,
    metadata: &crate::controller::metadata::Metadata,
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
        .map(|topic| topic_description(broker, topic))
        .collect()
}
