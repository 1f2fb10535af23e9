//! The admin client: create, delete, list, describe and reconfigure topics; describe the
//! cluster; list, describe, delete consumer groups and set their committed offsets. Replies
//! are the protocol's own messages ([`TopicDescription`], [`ClusterInfoResponse`],
//! [`DescribeGroupResponse`], ...), which already say everything there is to say.

use std::time::Duration;

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::reset_offsets_request::To;
use strata_proto::v1::{
    AlterTopicConfigRequest, ClusterInfoRequest, ClusterInfoResponse, CommitOffsetsRequest,
    CreateTopicRequest, DeleteGroupRequest, DeleteTopicRequest, DescribeGroupRequest,
    DescribeGroupResponse, DescribeTopicRequest, FetchCommittedOffsetsRequest,
    FetchCommittedOffsetsResponse, GroupListing, ListGroupsRequest, ListTopicsRequest,
    OffsetCommit, ResetOffsetsRequest, ResetOffsetsResponse, TopicConfig, TopicDescription,
    TopicPartition,
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
    groups: GroupsClient<Channel>,
    request_timeout: Duration,
}

/// Where [`Admin::reset_offsets`] moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's first stored offset.
    Earliest,
    /// Each partition's next offset: skip everything stored.
    Latest,
    /// This offset, clamped to each partition's valid range.
    Offset(u64),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(i64),
    /// The committed offset (earliest when none) moved by this many records, clamped.
    Shift(i64),
}

impl ResetTo {
    fn to_proto(self) -> To {
        match self {
            ResetTo::Earliest => To::Earliest(true),
            ResetTo::Latest => To::Latest(true),
            ResetTo::Offset(offset) => To::Offset(offset),
            ResetTo::Timestamp(timestamp_ms) => To::TimestampMs(timestamp_ms),
            ResetTo::Shift(records) => To::ShiftBy(records),
        }
    }
}

impl Admin {
    pub(crate) fn new(
        client: AdminClient<Channel>,
        groups: GroupsClient<Channel>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            client,
            groups,
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

    /// Every consumer group: its state, member count and epoch.
    ///
    /// # Errors
    /// `NOT_LEADER` from a node that does not coordinate groups.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let reply = unary(
            self.request_timeout,
            self.groups.clone().list_groups(ListGroupsRequest {}),
        )
        .await?;
        Ok(reply.groups)
    }

    /// One group: its members and their assignments, and each partition's committed offset,
    /// lag and owner.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`, `NOT_LEADER`.
    pub async fn describe_group(&self, group_id: &str) -> Result<DescribeGroupResponse> {
        let request = DescribeGroupRequest {
            group_id: group_id.to_owned(),
        };
        unary(
            self.request_timeout,
            self.groups.clone().describe_group(request),
        )
        .await
    }

    /// Deletes a group and its committed offsets.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`, `GROUP_NOT_EMPTY` while it has members, `NOT_LEADER`.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let request = DeleteGroupRequest {
            group_id: group_id.to_owned(),
        };
        unary(
            self.request_timeout,
            self.groups.clone().delete_group(request),
        )
        .await?;
        Ok(())
    }

    /// Sets a group's committed offsets for `partitions` of `topic` (all of them when empty),
    /// also while members run: they move to the new offsets at their next heartbeat. With
    /// `dry_run`, computes and returns the new offsets without committing them.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `INVALID_GROUP_ID`, `NOT_LEADER`.
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
        dry_run: bool,
    ) -> Result<ResetOffsetsResponse> {
        let request = ResetOffsetsRequest {
            group_id: group_id.to_owned(),
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
            to: Some(to.to_proto()),
            dry_run,
        };
        unary(
            self.request_timeout,
            self.groups.clone().reset_offsets(request),
        )
        .await
    }

    /// A group's committed offsets for `partitions` (every partition it committed when
    /// empty), with the group's offsets generation.
    ///
    /// # Errors
    /// `NOT_LEADER`.
    pub async fn fetch_committed_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<FetchCommittedOffsetsResponse> {
        let request = FetchCommittedOffsetsRequest {
            group_id: group_id.to_owned(),
            partitions: partitions.to_vec(),
        };
        unary(
            self.request_timeout,
            self.groups.clone().fetch_committed_offsets(request),
        )
        .await
    }

    /// Commits offsets as an operator or standalone consumer (no member id): allowed only
    /// while the group has no members. Each offset is the next one to consume.
    ///
    /// # Errors
    /// `GROUP_NOT_EMPTY` (refused while members run), `INVALID_GROUP_ID`,
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `NOT_LEADER`.
    pub async fn commit_offsets(&self, group_id: &str, offsets: Vec<OffsetCommit>) -> Result<()> {
        let request = CommitOffsetsRequest {
            group_id: group_id.to_owned(),
            member_id: String::new(),
            member_epoch: 0,
            offsets,
        };
        unary(
            self.request_timeout,
            self.groups.clone().commit_offsets(request),
        )
        .await?;
        Ok(())
    }
}
