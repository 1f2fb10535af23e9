//! The Groups service: consumer groups (join, heartbeat, leave, commit and fetch offsets,
//! list, describe, delete, reset), translated to and from [`Broker`](crate::broker::Broker)
//! calls.

use std::collections::BTreeSet;
use std::time::Duration;

use strata_proto::v1 as pb;
use strata_proto::v1::groups_server::Groups;
use tonic::{Request, Response, Status};

use super::Service;
use super::remote::{list_offsets_at, replica_offsets_at};
use super::status::{invalid, status};
use crate::controller::metadata::{CommittedOffset, OffsetEntry};
use crate::groups::coordinator::{Heartbeat, Join, MemberAssignment, Tp};
use crate::groups::offsets::{PARTITIONS_PER_REQUEST_MAX, ResetTo};
use crate::security::acl::{Operation, ResourceType};

fn topic_partitions(partitions: Vec<pb::TopicPartition>) -> Result<Vec<Tp>, Status> {
    if partitions.len() > PARTITIONS_PER_REQUEST_MAX {
        return Err(invalid(format!(
            "a request names at most {PARTITIONS_PER_REQUEST_MAX} partitions, got {}",
            partitions.len()
        )));
    }
    Ok(partitions
        .into_iter()
        .map(|tp| (tp.topic, tp.partition))
        .collect())
}

fn to_proto_partitions(partitions: &BTreeSet<Tp>) -> Vec<pb::TopicPartition> {
    partitions
        .iter()
        .map(|(topic, partition)| pb::TopicPartition {
            topic: topic.clone(),
            partition: *partition,
        })
        .collect()
}

fn member_assignment(reply: MemberAssignment, generation: u64) -> pb::MemberAssignment {
    pb::MemberAssignment {
        assignment: to_proto_partitions(&reply.assignment),
        pending: to_proto_partitions(&reply.pending),
        member_id: reply.member_id,
        member_epoch: reply.member_epoch,
        group_epoch: reply.group_epoch,
        heartbeat_interval_ms: reply.heartbeat_interval.as_millis() as u32,
        offsets_generation: generation,
    }
}

fn committed_to_proto(
    (topic, partition): Tp,
    committed: Option<CommittedOffset>,
) -> pb::CommittedOffset {
    match committed {
        Some(c) => pb::CommittedOffset {
            topic,
            partition,
            offset: Some(c.offset),
            metadata: c.metadata,
            commit_timestamp_ms: c.commit_ms,
        },
        None => pb::CommittedOffset {
            topic,
            partition,
            ..pb::CommittedOffset::default()
        },
    }
}

#[tonic::async_trait]
impl Groups for Service {
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::MemberAssignment>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Read, &request.group_id)?;
        let join = Join {
            group: request.group_id,
            member_id: request.member_id,
            topics: request.topics,
            session_timeout: Duration::from_millis(u64::from(request.session_timeout_ms)),
            client_id: request.client_id,
        };
        let (reply, generation) = self.broker()?.groups().join_group(join).map_err(status)?;
        Ok(Response::new(member_assignment(reply, generation)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::MemberAssignment>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Read, &request.group_id)?;
        let owned: BTreeSet<Tp> = topic_partitions(request.owned)?.into_iter().collect();
        let (reply, generation) = self
            .broker()?
            .groups()
            .heartbeat(Heartbeat {
                group_id: &request.group_id,
                member_id: &request.member_id,
                member_epoch: request.member_epoch,
                owned: &owned,
            })
            .map_err(status)?;
        Ok(Response::new(member_assignment(reply, generation)))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Read, &request.group_id)?;
        self.broker()?
            .groups()
            .leave_group(&request.group_id, &request.member_id)
            .map_err(status)?;
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Read, &request.group_id)?;
        let offsets = request
            .offsets
            .into_iter()
            .map(|o| OffsetEntry {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        self.broker()?
            .groups()
            .commit_offsets(
                &request.group_id,
                &request.member_id,
                request.member_epoch,
                offsets,
                |node, address, topic| {
                    replica_offsets_at(self.peer_tls.clone(), node, address, topic)
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<pb::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<pb::FetchCommittedOffsetsResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Describe, &request.group_id)?;
        let partitions = topic_partitions(request.partitions)?;
        let (offsets, generation) = self
            .broker()?
            .groups()
            .committed_offsets(&request.group_id, &partitions)
            .map_err(status)?;
        Ok(Response::new(pb::FetchCommittedOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(tp, c)| committed_to_proto(tp, c))
                .collect(),
            offsets_generation: generation,
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let access = self.access(&request);
        let broker = self.broker()?;
        let groups = broker.groups().list_groups().map_err(status)?;
        Ok(Response::new(pb::ListGroupsResponse {
            // Only the groups the principal may describe.
            groups: groups
                .into_iter()
                .filter(|g| {
                    access.allows(
                        &broker,
                        ResourceType::Group,
                        &g.group_id,
                        Operation::Describe,
                    )
                })
                .map(|g| pb::GroupListing {
                    group_id: g.group_id,
                    state: g.state.to_string(),
                    members: g.members,
                    group_epoch: g.group_epoch,
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Describe, &request.group_id)?;
        let described = self
            .broker()?
            .groups()
            .describe_group(&request.group_id)
            .map_err(status)?;
        let members = described
            .view
            .iter()
            .flat_map(|view| view.members.iter())
            .map(|m| pb::MemberDescription {
                member_id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                member_epoch: m.member_epoch,
                topics: m.topics.clone(),
                assignment: to_proto_partitions(&m.assignment),
                pending: to_proto_partitions(&m.pending),
                session_timeout_ms: m.session_timeout.as_millis() as u32,
                last_heartbeat_ms_ago: m.since_heartbeat.as_millis() as u64,
            })
            .collect();
        let partitions = described
            .partitions
            .into_iter()
            .map(|p| pb::PartitionLag {
                topic: p.topic,
                partition: p.partition,
                committed_offset: p.committed.as_ref().map(|c| c.offset),
                metadata: p.committed.map(|c| c.metadata).unwrap_or_default(),
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                lag_records: p.lag_records,
                lag_ms: p.lag_ms,
                owner_member_id: p.owner.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::DescribeGroupResponse {
            group_id: request.group_id,
            state: described.state.to_string(),
            group_epoch: described.group_epoch,
            offsets_generation: described.offsets_generation,
            members,
            partitions,
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Delete, &request.group_id)?;
        self.broker()?
            .groups()
            .delete_group(&request.group_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        use pb::reset_offsets_request::To;
        let access = self.access(&request);
        let request = request.into_inner();
        access.group(&*self.broker()?, Operation::Read, &request.group_id)?;
        let to = match request.to {
            Some(To::Earliest(_)) => ResetTo::Earliest,
            Some(To::Latest(_)) => ResetTo::Latest,
            Some(To::Offset(offset)) => ResetTo::Offset(offset),
            Some(To::TimestampMs(timestamp)) => ResetTo::Timestamp(timestamp),
            Some(To::ShiftBy(by)) => ResetTo::Shift(by),
            None => {
                return Err(invalid(
                    "reset needs a target: earliest, latest, offset, timestamp_ms or shift_by",
                ));
            }
        };
        let (offsets, generation) = self
            .broker()?
            .groups()
            .reset_offsets(
                &request.group_id,
                &request.topic,
                &request.partitions,
                to,
                request.dry_run,
                |node, address, partition, start| {
                    list_offsets_at(
                        self.peer_tls.clone(),
                        node,
                        address,
                        request.topic.clone(),
                        partition,
                        start,
                    )
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ResetOffsetsResponse {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset)| pb::CommittedOffset {
                    topic: request.topic.clone(),
                    partition,
                    offset: Some(offset),
                    ..pb::CommittedOffset::default()
                })
                .collect(),
            offsets_generation: generation,
        }))
    }
}
