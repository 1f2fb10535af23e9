//! The admin client: create, delete, list, describe and reconfigure topics; describe the
//! cluster; list, describe, delete consumer groups and set their committed offsets. Replies
//! are the protocol's own messages ([`TopicDescription`], [`ClusterInfoResponse`],
//! [`DescribeGroupResponse`], ...), which already say everything there is to say.
//!
//! Topic changes and group calls go to the controller leader, reads to any broker (see
//! [`crate::Client`] for the routing and its retries).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use crate::cluster::{Channel, Cluster};
use crate::error::{Error, Result};
use crate::routing::{NodeView, Route};
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::reset_offsets_request::To;
use strata_proto::v1::{
    AddNodeRequest, AddPartitionsRequest, AlterTopicConfigRequest, ClusterInfoRequest,
    ClusterInfoResponse, CommitOffsetsRequest, CreateTopicRequest, DeleteGroupRequest,
    DeleteTopicRequest, DescribeGroupRequest, DescribeGroupResponse, DescribeTopicRequest,
    FetchCommittedOffsetsRequest, FetchCommittedOffsetsResponse, GroupListing, ListGroupsRequest,
    ListTopicsRequest, OffsetCommit, RemoveNodeRequest, RemoveNodeResponse, ResetOffsetsRequest,
    ResetOffsetsResponse, TopicConfig, TopicDescription, TopicPartition,
};

/// Admin calls on a cluster. Cheap to clone. Made by [`crate::Client::admin`].
///
/// Every attempt waits at most the client's `request_timeout`; every `# Errors` section below
/// also includes [`crate::Error::Timeout`] and transport errors. A topic change whose reply was
/// lost to a failing connection is sent again, so it may answer that its own first attempt
/// already happened (`TOPIC_ALREADY_EXISTS` after a create, `UNKNOWN_TOPIC_OR_PARTITION` after a
/// delete).
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Cluster,
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
    pub(crate) fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    /// One admin call on `route`; each attempt gets its own copy of `request`.
    pub(crate) async fn admin<R, T, F, Fut>(
        &self,
        route: Route,
        request: &R,
        mut call: F,
    ) -> Result<T>
    where
        R: Clone,
        F: FnMut(AdminClient<Channel>, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let limit = self.cluster.config().request_timeout;
        self.cluster
            .call(&route, limit, |channel| {
                call(AdminClient::new(channel), request.clone())
            })
            .await
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
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.create_topic(request).await },
        )
        .await
    }

    /// Grows topic `name` to `partitions` partitions in all (see the proto's
    /// `Admin.AddPartitions`); returns the topic as it is then.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`; `INVALID_ARGUMENT` when `partitions` is not larger than
    /// the current count or above the limit.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<TopicDescription> {
        let request = AddPartitionsRequest {
            name: name.to_owned(),
            partitions,
        };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.add_partitions(request).await },
        )
        .await
    }

    /// Deletes a topic and all its records.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    /// Adds node `node_id` (already started, at `address`) to the cluster; see the proto's
    /// `Admin.AddNode`.
    ///
    /// # Errors
    /// The broker's refusal (for instance UNAVAILABLE when the node cannot be reached yet).
    pub async fn add_node(&self, node_id: u64, address: &str) -> Result<()> {
        let request = AddNodeRequest {
            node_id,
            address: address.to_owned(),
        };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.add_node(request).await },
        )
        .await?;
        Ok(())
    }

    /// One step of removing node `node_id`: moves what replicas it can off the node and says
    /// which partitions are still moving; `removed` once the node has left (see the proto's
    /// `Admin.RemoveNode`). Call until `removed`.
    ///
    /// # Errors
    /// The broker's refusal (for instance INVALID_ARGUMENT when too few nodes would be left).
    pub async fn remove_node(&self, node_id: u64) -> Result<RemoveNodeResponse> {
        let request = RemoveNodeRequest { node_id };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.remove_node(request).await },
        )
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.delete_topic(request).await },
        )
        .await?;
        Ok(())
    }

    /// Every topic, described.
    ///
    /// # Errors
    /// Only timeouts and transport errors.
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>> {
        let reply = self
            .admin(
                Route::Any,
                &ListTopicsRequest {},
                |mut admin, request| async move { admin.list_topics(request).await },
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
        self.admin(Route::Any, &request, |mut admin, request| async move {
            admin.describe_topic(request).await
        })
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
        self.alter_and_unset_topic_config(name, config, Vec::new())
            .await
    }

    /// Changes the config fields that are `Some` and takes the ones named in `unset` back to
    /// their defaults (`retention_ms`, `retention_bytes`: unlimited; `segment_bytes`: the
    /// broker's default).
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `INVALID_CONFIG` (also for an unknown name in `unset`, or
    /// one both set and unset).
    pub async fn alter_and_unset_topic_config(
        &self,
        name: &str,
        config: TopicConfig,
        unset: Vec<String>,
    ) -> Result<TopicDescription> {
        let request = AlterTopicConfigRequest {
            name: name.to_owned(),
            config: Some(config),
            unset,
        };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.alter_topic_config(request).await },
        )
        .await
    }

    /// The nodes, the controller leader and every topic, as one broker sees them: a
    /// partition's leader is filled only by brokers that replicate it, and its in-sync
    /// replicas only by its leader ([`Self::cluster_views`] asks every broker).
    ///
    /// # Errors
    /// Only timeouts and transport errors.
    pub async fn cluster_info(&self) -> Result<ClusterInfoResponse> {
        self.admin(
            Route::Any,
            &ClusterInfoRequest {},
            |mut admin, request| async move { admin.cluster_info(request).await },
        )
        .await
    }

    /// Every broker's own answer to `ClusterInfo`: each node the cluster names, the broker the
    /// client connected to and the brokers of its list, asked at once, each for at most the
    /// request timeout. [`crate::merge_cluster_views`] makes one picture of them. Never fails:
    /// a broker that did not answer has the error in its view.
    pub async fn cluster_views(&self) -> Vec<NodeView> {
        self.cluster.refresh_if_needed(&Route::Controller).await;
        self.cluster.cluster_views().await
    }

    /// Every consumer group: its state, member count and epoch.
    ///
    /// # Errors
    /// Only timeouts and transport errors (`NOT_LEADER` is followed to the coordinator).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let reply = self
            .cluster
            .groups_call(&ListGroupsRequest {}, |mut groups, request| async move {
                groups.list_groups(request).await
            })
            .await?;
        Ok(reply.groups)
    }

    /// One group: its members and their assignments, and each partition's committed offset,
    /// lag and owner.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`.
    pub async fn describe_group(&self, group_id: &str) -> Result<DescribeGroupResponse> {
        let request = DescribeGroupRequest {
            group_id: group_id.to_owned(),
        };
        self.cluster
            .groups_call(&request, |mut groups, request| async move {
                groups.describe_group(request).await
            })
            .await
    }

    /// Deletes a group and its committed offsets.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`, `GROUP_NOT_EMPTY` while it has members.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let request = DeleteGroupRequest {
            group_id: group_id.to_owned(),
        };
        self.cluster
            .groups_call(&request, |mut groups, request| async move {
                groups.delete_group(request).await
            })
            .await?;
        Ok(())
    }

    /// Sets a group's committed offsets for `partitions` of `topic` (all of them when empty),
    /// also while members run: they move to the new offsets at their next heartbeat. With
    /// `dry_run`, computes and returns the new offsets without committing them.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `INVALID_GROUP_ID`.
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
        self.cluster
            .groups_call(&request, |mut groups, request| async move {
                groups.reset_offsets(request).await
            })
            .await
    }

    /// A group's committed offsets for `partitions` (every partition it committed when
    /// empty), with the group's offsets generation.
    ///
    /// # Errors
    /// Only timeouts and transport errors.
    pub async fn fetch_committed_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<FetchCommittedOffsetsResponse> {
        let request = FetchCommittedOffsetsRequest {
            group_id: group_id.to_owned(),
            partitions: partitions.to_vec(),
        };
        self.cluster
            .groups_call(&request, |mut groups, request| async move {
                groups.fetch_committed_offsets(request).await
            })
            .await
    }

    /// Commits offsets as an operator or standalone consumer (no member id): allowed only
    /// while the group has no members. Each offset is the next one to consume.
    ///
    /// # Errors
    /// `GROUP_NOT_EMPTY` (refused while members run), `INVALID_GROUP_ID`,
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    pub async fn commit_offsets(&self, group_id: &str, offsets: Vec<OffsetCommit>) -> Result<()> {
        let request = CommitOffsetsRequest {
            group_id: group_id.to_owned(),
            member_id: String::new(),
            member_epoch: 0,
            offsets,
        };
        self.cluster
            .groups_call(&request, |mut groups, request| async move {
                groups.commit_offsets(request).await
            })
            .await?;
        Ok(())
    }
}

/// Partition counts by topic, learned with `DescribeTopic` and kept until forgotten: how the
/// producer checks and picks partitions without asking the cluster for every record.
#[derive(Debug)]
pub(crate) struct PartitionCounts {
    admin: Admin,
    /// std Mutex: never held across `.await`.
    counts: Mutex<HashMap<String, u32>>,
}

impl PartitionCounts {
    pub(crate) fn new(admin: Admin) -> Self {
        Self {
            admin,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The partition count of `topic`, described on first use.
    ///
    /// # Errors
    /// The broker's refusal (`UNKNOWN_TOPIC_OR_PARTITION` for a topic that does not exist),
    /// [`Error::InvalidArgument`] for a description with no partitions, timeouts and
    /// transport errors.
    pub(crate) async fn get(&self, topic: &str) -> Result<u32> {
        let cached = self
            .counts
            .lock()
            .expect("no panic while holding the lock")
            .get(topic)
            .copied();
        if let Some(partitions) = cached {
            return Ok(partitions);
        }
        let description = self.admin.describe_topic(topic).await?;
        if description.partitions == 0 {
            return Err(Error::InvalidArgument(format!(
                "the broker describes topic {topic} with 0 partitions"
            )));
        }
        self.counts
            .lock()
            .expect("no panic while holding the lock")
            .insert(topic.to_owned(), description.partitions);
        Ok(description.partitions)
    }

    /// Forgets a topic's partition count, so the next send describes it again (after the
    /// broker said the topic or partition is unknown).
    pub(crate) fn forget(&self, topic: &str) {
        self.counts
            .lock()
            .expect("no panic while holding the lock")
            .remove(topic);
    }
}
