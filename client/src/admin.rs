//! The admin client: create, delete, list, describe and reconfigure topics; describe the
//! cluster. Replies are the protocol's own messages ([`TopicDescription`],
//! [`ClusterInfoResponse`]), which already say everything there is to say.

use std::time::Duration;

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::{
    AlterTopicConfigRequest, ClusterInfoRequest, ClusterInfoResponse, CreateTopicRequest,
    DeleteTopicRequest, DescribeTopicRequest, ListTopicsRequest, TopicConfig, TopicDescription,
};
use tonic::transport::Channel;

use crate::client::unary;
use crate::error::Result;

/// Admin calls on one broker. Cheap to clone. Made by [`crate::Client::admin`].
///
/// Every call waits at most the client's `request_timeout`; every `# Errors` section below
/// also includes [`crate::Error::Timeout`] and transport errors.
#[derive(Debug, Clone)]
pub struct Admin {
    client: AdminClient<Channel>,
    request_timeout: Duration,
}

impl Admin {
    pub(crate) fn new(client: AdminClient<Channel>, request_timeout: Duration) -> Self {
        Self {
            client,
            request_timeout,
        }
    }

    /// Creates a topic and returns its description. Config fields left `None` take the
    /// broker's defaults.
    ///
    /// # Errors
    /// `TOPIC_ALREADY_EXISTS`, `INVALID_TOPIC_NAME`, `INVALID_CONFIG` (for example 0
    /// partitions, or a replication factor above the number of nodes).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<TopicDescription> {
        let request = CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            replication_factor,
            config: Some(config),
        };
        unary(
            self.request_timeout,
            self.client.clone().create_topic(request),
        )
        .await
    }

    /// Deletes a topic and all its records.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicRequest {
            name: name.to_owned(),
        };
        unary(
            self.request_timeout,
            self.client.clone().delete_topic(request),
        )
        .await?;
        Ok(())
    }

    /// Every topic, described.
    ///
    /// # Errors
    /// Only timeouts and transport errors.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>> {
        let reply = unary(
            self.request_timeout,
            self.client.clone().list_topics(ListTopicsRequest {}),
        )
        .await?;
        Ok(reply.topics)
    }

    /// One topic: its partitions, their leaders, offsets and the effective configuration.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = DescribeTopicRequest {
            name: name.to_owned(),
        };
        unary(
            self.request_timeout,
            self.client.clone().describe_topic(request),
        )
        .await
    }

    /// Changes the config fields that are `Some`; the others keep their values.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `INVALID_CONFIG`.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<TopicDescription> {
        let request = AlterTopicConfigRequest {
            name: name.to_owned(),
            config: Some(config),
        };
        unary(
            self.request_timeout,
            self.client.clone().alter_topic_config(request),
        )
        .await
    }

    /// The nodes, the controller leader and every topic.
    ///
    /// # Errors
    /// Only timeouts and transport errors.
    pub async fn cluster_info(&self) -> Result<ClusterInfoResponse> {
        unary(
            self.request_timeout,
            self.client.clone().cluster_info(ClusterInfoRequest {}),
        )
        .await
    }
}
