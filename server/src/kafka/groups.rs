//! Consumer groups over Kafka's protocol: FindCoordinator (0–2), the classic rebalance protocol
//! (JoinGroup 0–3, SyncGroup 0–2, Heartbeat 0–2, LeaveGroup 0–2), ListGroups (0–2) and
//! DescribeGroups (0–2); the offsets APIs are in `group_offsets`.
//!
//! The coordinator of every group is the controller's leader, as for Strata's own groups; a
//! group request elsewhere answers NOT_COORDINATOR and the client asks FindCoordinator again.
//! The protocol itself is [`groups::classic`](crate::groups::classic); this module translates.
//!
//! ACLs as Kafka's: group Describe for FindCoordinator, ListGroups (groups the principal may
//! not describe are left out) and DescribeGroups; group Read for join, sync, heartbeat and
//! leave.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::context::{Context, Refusal, decode};
use super::error::{classic_code, group_code};
use super::frame;
use super::metadata::node_id;
use crate::broker::BrokerError;
use crate::groups::classic::{self, JoinRequest};
use crate::groups::classic_requests::ClassicFailure;
use crate::security::acl::{Operation, ResourceType};

/// FindCoordinator's key type of a transaction coordinator.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// The protocol type Kafka's consumers use; groups of Strata's own members show it too.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Handles a request of one of this module's APIs (and the offsets APIs), returning the
/// encoded response.
///
/// # Errors
/// A malformed request or a response that cannot be encoded: the connection is closed.
pub async fn handle(
    context: &Context,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: Option<String>,
    body: Bytes,
) -> Result<Bytes, Refusal> {
    let encoded = match api_key {
        ApiKey::FindCoordinator => {
            let response = find_coordinator(context, version, decode(api_key, version, body)?);
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::JoinGroup => {
            let request = decode(api_key, version, body)?;
            let response = join(context, version, request, client_id).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::SyncGroup => {
            let response = sync(context, decode(api_key, version, body)?).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::Heartbeat => {
            let response = heartbeat(context, decode(api_key, version, body)?);
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::LeaveGroup => {
            let response = leave(context, decode(api_key, version, body)?);
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::ListGroups => {
            let _: ListGroupsRequest = decode(api_key, version, body)?;
            frame::response(api_key, version, correlation_id, &list(context))?
        }
        ApiKey::DescribeGroups => {
            let response = describe(context, decode(api_key, version, body)?);
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::OffsetCommit => {
            let request = decode(api_key, version, body)?;
            let response = super::group_offsets::commit(context, request).await;
            frame::response(api_key, version, correlation_id, &response)?
        }
        ApiKey::OffsetFetch => {
            let request = decode(api_key, version, body)?;
            let response = super::group_offsets::fetch(context, version, request);
            frame::response(api_key, version, correlation_id, &response)?
        }
        other => {
            return Err(Refusal::Unsupported {
                api_key: other as i16,
                version,
            });
        }
    };
    Ok(encoded)
}

fn log_failure(api: &str, group: &str, failure: &ClassicFailure<BrokerError>) {
    tracing::debug!(api, group, %failure, "Kafka group request refused");
}

fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// The client's host as Kafka shows it (`/ip`).
fn client_host(context: &Context) -> String {
    context
        .connection
        .remote
        .map(|address| format!("/{}", address.ip()))
        .unwrap_or_default()
}

fn find_coordinator(
    context: &Context,
    version: i16,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let refused = |error: ResponseError, message: String| {
        let mut response = FindCoordinatorResponse::default()
            .with_error_code(error.code())
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1);
        if version >= 1 {
            response.error_message = Some(str_bytes(message));
        }
        response
    };
    if version >= 1 && request.key_type == KEY_TYPE_TRANSACTION {
        return refused(
            ResponseError::CoordinatorNotAvailable,
            "Strata has no transactions yet, so no transaction coordinator".to_string(),
        );
    }
    if version >= 1 && request.key_type != 0 {
        return refused(
            ResponseError::InvalidRequest,
            format!(
                "key_type {} is neither 0 (group) nor 1 (transaction)",
                request.key_type
            ),
        );
    }
    let group = request.key.to_string();
    let broker = match context.group_access(&group, Operation::Describe) {
        Ok(broker) => broker,
        Err(failure) => return refused(classic_code(&failure), failure.to_string()),
    };
    let leader = broker.controller_leader();
    if leader == 0 {
        return refused(
            ResponseError::CoordinatorNotAvailable,
            "the controller has no leader right now (an election is running): retry".to_string(),
        );
    }
    let metadata = broker.metadata();
    let address = metadata
        .nodes
        .get(&leader)
        .and_then(|node| node.kafka_address.as_deref())
        .and_then(super::metadata::split_host_port);
    match address {
        Some((host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node_id(leader)))
            .with_host(str_bytes(host))
            .with_port(port),
        None => refused(
            ResponseError::CoordinatorNotAvailable,
            format!("the coordinator (node {leader}) runs no Kafka listener"),
        ),
    }
}

async fn join(
    context: &Context,
    version: i16,
    request: JoinGroupRequest,
    client_id: Option<String>,
) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let failed = |failure: &ClassicFailure<BrokerError>| {
        log_failure("JoinGroup", &group, failure);
        JoinGroupResponse::default()
            .with_error_code(classic_code(failure).code())
            .with_generation_id(-1)
            .with_protocol_name(Some(StrBytes::default()))
            .with_leader(StrBytes::default())
            .with_member_id(request.member_id.clone())
    };
    let broker = match context.group_access(&group, Operation::Read) {
        Ok(broker) => broker,
        Err(failure) => return failed(&failure),
    };
    let millis = |ms: i32| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let session_timeout = millis(request.session_timeout_ms);
    let join = JoinRequest {
        group: group.clone(),
        member_id,
        client_id: client_id.unwrap_or_default(),
        client_host: client_host(context),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata.clone()))
            .collect(),
        session_timeout,
        // v0 has none: the session timeout is the rebalance timeout there, as in Kafka.
        rebalance_timeout: if version >= 1 {
            millis(request.rebalance_timeout_ms)
        } else {
            session_timeout
        },
    };
    match broker.groups().classic_join(join).await {
        Ok(joined) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_name(Some(str_bytes(joined.protocol_name)))
            .with_leader(str_bytes(joined.leader))
            .with_member_id(str_bytes(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|(id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(id))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Err(failure) => failed(&failure),
    }
}

async fn sync(context: &Context, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let failed = |failure: &ClassicFailure<BrokerError>| {
        log_failure("SyncGroup", &group, failure);
        SyncGroupResponse::default().with_error_code(classic_code(failure).code())
    };
    let broker = match context.group_access(&group, Operation::Read) {
        Ok(broker) => broker,
        Err(failure) => return failed(&failure),
    };
    let assignments = request
        .assignments
        .into_iter()
        .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
        .collect();
    match broker
        .groups()
        .classic_sync(
            &group,
            request.generation_id,
            &request.member_id,
            assignments,
        )
        .await
    {
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
        Err(failure) => failed(&failure),
    }
}

fn heartbeat(context: &Context, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.0.to_string();
    let outcome = context
        .group_access(&group, Operation::Read)
        .and_then(|broker| {
            broker
                .groups()
                .classic_heartbeat(&group, request.generation_id, &request.member_id)
        });
    match outcome {
        Ok(()) => HeartbeatResponse::default(),
        Err(failure) => {
            log_failure("Heartbeat", &group, &failure);
            HeartbeatResponse::default().with_error_code(classic_code(&failure).code())
        }
    }
}

fn leave(context: &Context, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    let outcome = context
        .group_access(&group, Operation::Read)
        .and_then(|broker| broker.groups().classic_leave(&group, &request.member_id));
    match outcome {
        Ok(()) => LeaveGroupResponse::default(),
        Err(failure) => {
            log_failure("LeaveGroup", &group, &failure);
            LeaveGroupResponse::default().with_error_code(classic_code(&failure).code())
        }
    }
}

/// Every group this node coordinates (none elsewhere: Kafka's admin clients ask every node
/// and merge), of both kinds, that the principal may describe.
fn list(context: &Context) -> ListGroupsResponse {
    let broker = match context.frontend.broker() {
        Ok(broker) => broker,
        Err(error) => {
            return ListGroupsResponse::default().with_error_code(group_code(&error).code());
        }
    };
    let requests = broker.groups();
    if requests.check_coordinator().is_err() {
        return ListGroupsResponse::default();
    }
    let mut groups: std::collections::BTreeMap<String, String> = requests
        .list_groups()
        .unwrap_or_default()
        .into_iter()
        .map(|listed| (listed.group_id, CONSUMER_PROTOCOL_TYPE.to_string()))
        .collect();
    for id in requests.classic_group_ids() {
        let protocol_type = requests.classic_view(&id).map_or_else(
            || CONSUMER_PROTOCOL_TYPE.to_string(),
            |view| view.protocol_type,
        );
        groups.insert(id, protocol_type);
    }
    let listed = groups
        .into_iter()
        .filter(|(id, _)| {
            context
                .access
                .allows(&broker, ResourceType::Group, id, Operation::Describe)
        })
        .map(|(id, protocol_type)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type))
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

fn describe(context: &Context, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group| describe_one(context, group.0.to_string()))
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

fn describe_one(context: &Context, group: String) -> DescribedGroup {
    let answer = DescribedGroup::default()
        .with_group_id(GroupId(str_bytes(group.clone())))
        .with_group_state(StrBytes::default())
        .with_protocol_type(StrBytes::default())
        .with_protocol_data(StrBytes::default());
    let broker = match context.group_access(&group, Operation::Describe) {
        Ok(broker) => broker,
        Err(failure) => return answer.with_error_code(classic_code(&failure).code()),
    };
    let requests = broker.groups();
    if let Err(error) = requests.check_coordinator() {
        return answer.with_error_code(group_code(&error).code());
    }
    if let Some(view) = requests.classic_view(&group) {
        return answer
            .with_group_state(str_bytes(view.state.name()))
            .with_protocol_type(str_bytes(view.protocol_type))
            .with_protocol_data(str_bytes(view.protocol))
            .with_members(
                view.members
                    .into_iter()
                    .map(|member| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(member.member_id))
                            .with_client_id(str_bytes(member.client_id))
                            .with_client_host(str_bytes(member.client_host))
                            .with_member_metadata(member.metadata)
                            .with_member_assignment(member.assignment)
                    })
                    .collect(),
            );
    }
    match requests.describe_group(&group) {
        Ok(description) => {
            let state = match description.state {
                "stable" => classic::State::Stable.name(),
                "reconciling" => classic::State::CompletingRebalance.name(),
                _ => classic::State::Empty.name(),
            };
            let members = description
                .view
                .map(|view| view.members)
                .unwrap_or_default()
                .into_iter()
                .map(|member| {
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(member.member_id))
                        .with_client_id(str_bytes(member.client_id))
                        .with_client_host(StrBytes::default())
                        .with_member_assignment(consumer_assignment(&member.assignment))
                })
                .collect();
            answer
                .with_group_state(str_bytes(state))
                .with_protocol_type(str_bytes(CONSUMER_PROTOCOL_TYPE))
                .with_protocol_data(str_bytes("strata"))
                .with_members(members)
        }
        // A group nobody knows is described as Dead without an error, as Kafka does.
        Err(BrokerError::UnknownGroup(_)) => answer.with_group_state(str_bytes("Dead")),
        Err(error) => answer.with_error_code(group_code(&error).code()),
    }
}

/// A Strata member's partitions as Kafka's consumer protocol assignment (version 0), so Kafka
/// tools show what each member holds.
fn consumer_assignment(partitions: &std::collections::BTreeSet<(String, u32)>) -> Bytes {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (topic, partition) in partitions {
        by_topic
            .entry(topic)
            .or_default()
            .push(i32::try_from(*partition).unwrap_or(i32::MAX));
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                TopicPartition::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    let mut bytes = BytesMut::new();
    bytes.put_i16(0);
    match assignment.encode(&mut bytes, 0) {
        Ok(()) => bytes.freeze(),
        Err(error) => {
            // Only names longer than a Kafka string could fail; show no assignment then.
            tracing::debug!(%error, "encoding a Strata member's assignment for Kafka failed");
            Bytes::new()
        }
    }
}
