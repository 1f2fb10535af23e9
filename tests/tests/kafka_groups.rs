//! Kafka consumer groups against real servers: the classic rebalance protocol and committed
//! offsets spoken by hand (join barrier, leader, sync, heartbeats during a rebalance, fencing,
//! leave, commits checked against the generation, the store shared with Strata's groups), and
//! by Kafka's own clients (confluent-kafka with the eager range and the cooperative-sticky
//! assignors, kafka-python, aiokafka, kafkajs): two members share a 6-partition topic, one
//! leaves and another joins, every record is processed, and the committed offsets read back
//! over Kafka (OffsetFetch) and over gRPC (FetchCommittedOffsets, DescribeGroup) are the
//! partitions' ends. One run is on a 3-node cluster whose bootstrap node is not the
//! coordinator.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, RequestHeader, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strata_proto::v1 as pb;
use strata_tests::cluster::Cluster;
use strata_tests::kafka;
use strata_tests::server::Clients;

const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A client run (three phases of produce, rebalance and consume) ends within this.
const CLIENT_RUN_TIMEOUT: Duration = Duration::from_secs(240);
const TOPIC: &str = "events";
const PARTITIONS: u32 = 6;

fn connect(address: &str) -> TcpStream {
    kafka::connect(address, IO_TIMEOUT)
}

fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Sends one request (non-flexible header v1) and decodes the response at `version`.
fn call<Q: Encodable, R: Decodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    request: &Q,
) -> R {
    let correlation_id = 7;
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strata-test")));
    let mut body = BytesMut::new();
    header.encode(&mut body, 1).expect("header");
    request.encode(&mut body, version).expect("request");
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).expect("sending");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("a response");
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).expect("a response body");
    let mut response = Bytes::from(response);
    assert_eq!(response.get_i32(), correlation_id);
    R::decode(&mut response, version)
        .unwrap_or_else(|e| panic!("decoding {api_key:?} v{version}: {e}"))
}

fn join(
    stream: &mut TcpStream,
    group: &str,
    member_id: &str,
    metadata: &'static str,
) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(str_bytes(member_id))
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(str_bytes("range"))
                .with_metadata(Bytes::from_static(metadata.as_bytes())),
        ]);
    call(stream, ApiKey::JoinGroup, 3, &request)
}

fn sync(
    stream: &mut TcpStream,
    group: &str,
    generation: i32,
    member_id: &str,
    assignments: &[(&str, &'static str)],
) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id(generation)
        .with_member_id(str_bytes(member_id))
        .with_assignments(
            assignments
                .iter()
                .map(|(id, bytes)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes(id))
                        .with_assignment(Bytes::from_static(bytes.as_bytes()))
                })
                .collect(),
        );
    call(stream, ApiKey::SyncGroup, 2, &request)
}

fn heartbeat(stream: &mut TcpStream, group: &str, generation: i32, member_id: &str) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id(generation)
        .with_member_id(str_bytes(member_id));
    let response: HeartbeatResponse = call(stream, ApiKey::Heartbeat, 2, &request);
    response.error_code
}

fn leave(stream: &mut TcpStream, group: &str, member_id: &str) -> i16 {
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_member_id(str_bytes(member_id));
    let response: LeaveGroupResponse = call(stream, ApiKey::LeaveGroup, 2, &request);
    response.error_code
}

/// Commits (topic, partition, offset) triples; returns each partition's error code, in order.
fn commit(
    stream: &mut TcpStream,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &[(&str, i32, i64)],
) -> Vec<i16> {
    let topics = offsets
        .iter()
        .map(|(topic, partition, offset)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(*partition)
                        .with_committed_offset(*offset)
                        .with_committed_metadata(Some(str_bytes("by hand"))),
                ])
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str_bytes(member_id))
        .with_topics(topics);
    let response: OffsetCommitResponse = call(stream, ApiKey::OffsetCommit, 6, &request);
    response
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// Committed offsets of `partitions` of TOPIC (all committed when `None`), as
/// (topic, partition, offset) in the answer's order, and the top-level error.
fn fetch_offsets(
    stream: &mut TcpStream,
    group: &str,
    partitions: Option<&[i32]>,
) -> (i16, Vec<(String, i32, i64)>) {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_topics(partitions.map(|partitions| {
            vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(str_bytes(TOPIC)))
                    .with_partition_indexes(partitions.to_vec()),
            ]
        }));
    let response: OffsetFetchResponse = call(stream, ApiKey::OffsetFetch, 5, &request);
    let offsets = response
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                assert_eq!(p.error_code, 0, "{p:?}");
                (
                    topic.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                )
            })
        })
        .collect();
    (response.error_code, offsets)
}

fn find_coordinator(stream: &mut TcpStream, group: &str, key_type: i8) -> FindCoordinatorResponse {
    let request = FindCoordinatorRequest::default()
        .with_key(str_bytes(group))
        .with_key_type(key_type);
    call(stream, ApiKey::FindCoordinator, 2, &request)
}

/// Polls `condition` every 50 ms until it holds, failing after `timeout` with `what`.
fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates TOPIC and produces `records_each` records to each partition over gRPC.
async fn topic_with_records(clients: &mut Clients, records_each: usize) {
    clients.create_topic(TOPIC, PARTITIONS).await;
    for partition in 0..PARTITIONS {
        let records = (0..records_each)
            .map(|i| pb::Record {
                value: Some(Bytes::from(format!("p{partition}-{i}"))),
                ..pb::Record::default()
            })
            .collect();
        clients
            .broker
            .produce(pb::ProduceRequest {
                topic: TOPIC.to_string(),
                target: Some(pb::produce_request::Target::Partition(partition)),
                payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                    records,
                })),
                ..pb::ProduceRequest::default()
            })
            .await
            .expect("produce");
    }
}

async fn grpc_committed(clients: &mut Clients, group: &str) -> Vec<(u32, Option<u64>)> {
    let fetched = clients
        .groups
        .fetch_committed_offsets(pb::FetchCommittedOffsetsRequest {
            group_id: group.to_string(),
            partitions: Vec::new(),
        })
        .await
        .expect("FetchCommittedOffsets")
        .into_inner();
    let mut offsets: Vec<(u32, Option<u64>)> = fetched
        .offsets
        .into_iter()
        .filter(|o| o.topic == TOPIC)
        .map(|o| (o.partition, o.offset))
        .collect();
    offsets.sort();
    offsets
}

/// The classic protocol step by step: join barrier and leader, sync hand-out, heartbeats
/// answering REBALANCE_IN_PROGRESS while members must rejoin, generation and member fencing,
/// commits checked and stored where gRPC reads them, DescribeGroups and ListGroups, leave,
/// simple commits once the group is empty, and the two kinds of groups kept apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_protocol_by_hand() {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    topic_with_records(&mut clients, 5).await;
    let address = server.kafka_address.clone().expect("kafka address");
    let group = "by-hand";
    let mut a = connect(&address);

    // FindCoordinator: this node (it leads the controller); no transaction coordinator.
    let found = find_coordinator(&mut a, group, 0);
    assert_eq!(found.error_code, 0, "{found:?}");
    assert_eq!(format!("{}:{}", found.host.as_str(), found.port), address);
    assert_eq!(found.node_id.0, 1);
    let transactions = find_coordinator(&mut a, "txn", 1);
    assert_eq!(
        transactions.error_code,
        ResponseError::CoordinatorNotAvailable.code()
    );

    // A alone: generation 1, A leads and sees its own metadata.
    let joined = join(&mut a, group, "", "meta-a");
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let a_id = joined.member_id.to_string();
    assert!(a_id.starts_with("strata-test-"), "{a_id}");
    assert_eq!(
        (joined.generation_id, joined.leader.as_str()),
        (1, a_id.as_str())
    );
    assert_eq!(joined.members.len(), 1);
    let synced = sync(&mut a, group, 1, &a_id, &[(a_id.as_str(), "a1")]);
    assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"a1"[..]));
    assert_eq!(heartbeat(&mut a, group, 1, &a_id), 0);

    // B joins and waits at the barrier until A, told by its heartbeat, rejoins.
    let b_join = {
        let address = address.clone();
        std::thread::spawn(move || {
            let mut b = connect(&address);
            let joined = join(&mut b, "by-hand", "", "meta-b");
            (b, joined)
        })
    };
    wait_for("A's heartbeat to report the rebalance", IO_TIMEOUT, || {
        heartbeat(&mut a, group, 1, &a_id) == ResponseError::RebalanceInProgress.code()
    });
    let rejoined = join(&mut a, group, &a_id, "meta-a");
    let (mut b, b_joined) = b_join.join().expect("B's join");
    assert_eq!((rejoined.error_code, b_joined.error_code), (0, 0));
    let b_id = b_joined.member_id.to_string();
    assert_eq!((rejoined.generation_id, b_joined.generation_id), (2, 2));
    assert_eq!(rejoined.leader.as_str(), a_id);
    let metadata: Vec<(&str, &[u8])> = rejoined
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), &m.metadata[..]))
        .collect();
    assert!(
        metadata.contains(&(a_id.as_str(), b"meta-a")),
        "{metadata:?}"
    );
    assert!(
        metadata.contains(&(b_id.as_str(), b"meta-b")),
        "{metadata:?}"
    );
    assert!(b_joined.members.is_empty(), "only the leader sees members");

    // B's sync waits for the leader's assignment.
    let b_sync = std::thread::spawn(move || {
        let synced = sync(&mut b, "by-hand", 2, &b_id, &[]);
        (b, b_id, synced)
    });
    let synced = sync(
        &mut a,
        group,
        2,
        &a_id,
        &[(a_id.as_str(), "a2"), (b_joined.member_id.as_str(), "b2")],
    );
    assert_eq!(&synced.assignment[..], b"a2");
    let (mut b, b_id, b_synced) = b_sync.join().expect("B's sync");
    assert_eq!(
        (b_synced.error_code, &b_synced.assignment[..]),
        (0, &b"b2"[..])
    );

    // Fencing: an old generation, a stranger.
    assert_eq!(
        heartbeat(&mut a, group, 1, &a_id),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        heartbeat(&mut a, group, 2, "stranger"),
        ResponseError::UnknownMemberId.code()
    );

    // Commits: checked per partition and against the generation.
    let codes = commit(
        &mut a,
        group,
        2,
        &a_id,
        &[(TOPIC, 0, 3), (TOPIC, 1, 5), ("missing", 0, 1)],
    );
    assert_eq!(
        codes,
        vec![0, 0, ResponseError::UnknownTopicOrPartition.code()]
    );
    // An offset above its partition's high watermark fails the partitions committed with it
    // (the commit is one replicated change).
    assert_eq!(
        commit(&mut a, group, 2, &a_id, &[(TOPIC, 0, 4), (TOPIC, 2, 99)]),
        vec![
            ResponseError::OffsetOutOfRange.code(),
            ResponseError::OffsetOutOfRange.code()
        ]
    );
    assert_eq!(
        commit(&mut b, group, 1, &b_id, &[(TOPIC, 3, 1)]),
        vec![ResponseError::IllegalGeneration.code()]
    );
    assert_eq!(
        commit(&mut b, group, -1, "", &[(TOPIC, 3, 1)]),
        vec![ResponseError::UnknownMemberId.code()],
        "no simple commits while the group has members"
    );
    let (error, offsets) = fetch_offsets(&mut a, group, Some(&[0, 1, 2]));
    assert_eq!(error, 0);
    let offsets: Vec<i64> = offsets.iter().map(|(_, _, offset)| *offset).collect();
    assert_eq!(offsets, vec![3, 5, -1]);
    let (_, all) = fetch_offsets(&mut a, group, None);
    assert_eq!(
        all,
        vec![(TOPIC.to_string(), 0, 3), (TOPIC.to_string(), 1, 5)]
    );
    // The same store gRPC reads.
    assert_eq!(
        grpc_committed(&mut clients, group).await,
        vec![(0, Some(3)), (1, Some(5))]
    );

    // DescribeGroups and ListGroups.
    let described: DescribeGroupsResponse = call(
        &mut a,
        ApiKey::DescribeGroups,
        2,
        &DescribeGroupsRequest::default().with_groups(vec![
            GroupId(str_bytes(group)),
            GroupId(str_bytes("nobody")),
        ]),
    );
    let ours = &described.groups[0];
    assert_eq!(ours.error_code, 0);
    assert_eq!(
        (
            ours.group_state.as_str(),
            ours.protocol_type.as_str(),
            ours.protocol_data.as_str()
        ),
        ("Stable", "consumer", "range")
    );
    assert_eq!(ours.members.len(), 2);
    for member in &ours.members {
        assert_eq!(member.client_id.as_str(), "strata-test");
        assert_eq!(member.client_host.as_str(), "/127.0.0.1");
        let expected: &[u8] = if member.member_id.as_str() == a_id {
            b"a2"
        } else {
            b"b2"
        };
        assert_eq!(&member.member_assignment[..], expected);
    }
    assert_eq!(described.groups[1].group_state.as_str(), "Dead");
    let listed: ListGroupsResponse =
        call(&mut a, ApiKey::ListGroups, 2, &ListGroupsRequest::default());
    assert!(
        listed
            .groups
            .iter()
            .any(|g| g.group_id.0.as_str() == group && g.protocol_type.as_str() == "consumer"),
        "{listed:?}"
    );

    // gRPC lists the Kafka group with Kafka's state name.
    let listed = clients
        .groups
        .list_groups(pb::ListGroupsRequest {})
        .await
        .expect("ListGroups")
        .into_inner();
    let ours = listed
        .groups
        .iter()
        .find(|g| g.group_id == group)
        .expect("the Kafka group listed over gRPC");
    assert_eq!(
        (ours.state.as_str(), ours.members, ours.group_epoch),
        ("Stable", 2, 2)
    );

    // A Strata member may not join the group while Kafka members run.
    let refused = clients
        .groups
        .join_group(pb::JoinGroupRequest {
            group_id: group.to_string(),
            topics: vec![TOPIC.to_string()],
            ..pb::JoinGroupRequest::default()
        })
        .await
        .expect_err("a Strata join of a Kafka group");
    assert_eq!(
        strata_tests::error_code(&refused),
        "ERROR_CODE_INVALID_ARGUMENT",
        "{refused:?}"
    );

    // Leaving: the rest rebalance; once empty, a consumer outside any group may commit.
    assert_eq!(leave(&mut b, group, &b_id), 0);
    assert_eq!(
        heartbeat(&mut a, group, 2, &a_id),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(leave(&mut a, group, &a_id), 0);
    assert_eq!(
        leave(&mut a, group, &a_id),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(commit(&mut a, group, -1, "", &[(TOPIC, 4, 2)]), vec![0]);
    assert_eq!(
        grpc_committed(&mut clients, group).await,
        vec![(0, Some(3)), (1, Some(5)), (4, Some(2))]
    );

    // And a Kafka client may not join a group Strata members use.
    let strata_member = clients
        .groups
        .join_group(pb::JoinGroupRequest {
            group_id: "strata-kind".to_string(),
            topics: vec![TOPIC.to_string()],
            ..pb::JoinGroupRequest::default()
        })
        .await
        .expect("a Strata member joins");
    assert!(!strata_member.get_ref().member_id.is_empty());
    let refused = join(&mut a, "strata-kind", "", "meta");
    assert_eq!(
        refused.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
}

/// The RESULT line of a client run: committed and end offsets per partition.
fn result_of(output: &std::process::Output) -> (Vec<i64>, Vec<i64>) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    let result: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
    let list = |key: &str| -> Vec<i64> {
        result[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {line}"))
            .iter()
            .map(|v| v.as_i64().expect("an offset"))
            .collect()
    };
    (list("committed"), list("ends"))
}

/// Checks over gRPC that `group`'s committed offsets are `committed` and that
/// DescribeGroup reports no lag.
async fn check_over_grpc(clients: &mut Clients, group: &str, committed: &[i64]) {
    let stored = grpc_committed(clients, group).await;
    let expected: Vec<(u32, Option<u64>)> = committed
        .iter()
        .enumerate()
        .map(|(partition, offset)| (partition as u32, u64::try_from(*offset).ok()))
        .collect();
    assert_eq!(stored, expected, "FetchCommittedOffsets");
    let described = clients
        .groups
        .describe_group(pb::DescribeGroupRequest {
            group_id: group.to_string(),
        })
        .await
        .expect("DescribeGroup")
        .into_inner();
    let lags: Vec<Option<u64>> = described
        .partitions
        .iter()
        .filter(|p| p.topic == TOPIC)
        .map(|p| p.lag_records)
        .collect();
    assert_eq!(lags, vec![Some(0); PARTITIONS as usize], "{described:?}");
}

/// One client's run of tests/kafka/groups.py (or groups.js for kafkajs) against
/// `bootstrap`; then the offsets checked over gRPC with `clients`.
async fn client_run(client: &str, bootstrap: &str, clients: &mut Clients) {
    let group = format!("group-{client}");
    let records = "300";
    let partitions = PARTITIONS.to_string();
    let command = if client == "kafkajs" {
        let mut command = kafka::node("groups.js");
        command.args([bootstrap, TOPIC, &group, &partitions, records]);
        command
    } else {
        let mut command = kafka::python("groups.py");
        command.args([
            "--client",
            client,
            "--bootstrap",
            bootstrap,
            "--topic",
            TOPIC,
            "--group",
            &group,
            "--partitions",
            &partitions,
            "--records",
            records,
        ]);
        command
    };
    let output = tokio::task::spawn_blocking(move || kafka::run(command, CLIENT_RUN_TIMEOUT))
        .await
        .expect("client run");
    let (committed, ends) = result_of(&output);
    assert_eq!(committed, ends);
    assert_eq!(ends.iter().sum::<i64>(), 300, "every record produced");
    check_over_grpc(clients, &group, &committed).await;
}

async fn single_node_run(client: &str) {
    let (_data, server) = kafka::start_server();
    let mut clients = server.clients().await;
    clients.create_topic(TOPIC, PARTITIONS).await;
    let bootstrap = server.kafka_address.clone().expect("kafka address");
    client_run(client, &bootstrap, &mut clients).await;
}

/// confluent-kafka (librdkafka) with the eager range assignor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_range_group() {
    single_node_run("confluent-range").await;
}

/// confluent-kafka with cooperative-sticky: the same classic protocol, two rebalances per
/// change (revoke, then assign).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_cooperative_sticky_group() {
    single_node_run("confluent-cooperative").await;
}

/// kafka-python 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_group() {
    single_node_run("kafka-python").await;
}

/// aiokafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_group() {
    single_node_run("aiokafka").await;
}

/// kafkajs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_group() {
    single_node_run("kafkajs").await;
}

/// Produces `records` records to `partition` of TOPIC at its leader, over gRPC.
async fn produce_at_leader(cluster: &mut Cluster, partition: u32, records: usize) {
    let leader = cluster.leader_of(TOPIC, partition).await;
    let mut clients = cluster.clients(leader).await;
    let records = (0..records)
        .map(|i| pb::Record {
            value: Some(Bytes::from(format!("p{partition}-{i}"))),
            ..pb::Record::default()
        })
        .collect();
    clients
        .broker
        .produce(pb::ProduceRequest {
            topic: TOPIC.to_string(),
            target: Some(pb::produce_request::Target::Partition(partition)),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records,
            })),
            ..pb::ProduceRequest::default()
        })
        .await
        .expect("produce");
}

/// A 3-node cluster, by hand: any node names the controller's leader as the coordinator;
/// group requests elsewhere answer NOT_COORDINATOR; at the coordinator a member joins and
/// commits offsets of partitions held by other nodes only (replication factor 1), checked
/// against those nodes' high watermarks over the node-to-node API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_of_a_cluster_by_hand() {
    let mut cluster = Cluster::start_kafka(3, 105, &[]);
    cluster.create_topic(TOPIC, PARTITIONS, 1).await;
    for partition in 0..PARTITIONS {
        produce_at_leader(&mut cluster, partition, 4).await;
    }
    let leader = cluster.controller_leader().await;
    let mut elsewhere_partitions = Vec::new();
    for partition in 0..PARTITIONS {
        if cluster.leader_of(TOPIC, partition).await != leader {
            elsewhere_partitions.push(partition as i32);
        }
    }
    assert!(
        !elsewhere_partitions.is_empty(),
        "replicas are spread over the nodes"
    );
    let other = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a node that does not lead the controller");
    let other_address = cluster
        .node(other)
        .kafka_address
        .clone()
        .expect("kafka address");
    let coordinator_address = cluster
        .node(leader)
        .kafka_address
        .clone()
        .expect("kafka address");
    let group = "cluster-group";
    let mut stream = connect(&other_address);
    let found = find_coordinator(&mut stream, group, 0);
    assert_eq!(found.error_code, 0, "{found:?}");
    assert_eq!(found.node_id.0 as u64, leader);
    assert_eq!(
        format!("{}:{}", found.host.as_str(), found.port),
        coordinator_address
    );
    assert_eq!(
        join(&mut stream, group, "", "meta").error_code,
        ResponseError::NotCoordinator.code()
    );
    let (error, _) = fetch_offsets(&mut stream, group, Some(&[0]));
    assert_eq!(error, ResponseError::NotCoordinator.code());
    assert_eq!(
        commit(&mut stream, group, -1, "", &[(TOPIC, 0, 1)]),
        vec![ResponseError::NotCoordinator.code()]
    );

    let mut coordinator = connect(&coordinator_address);
    let joined = join(&mut coordinator, group, "", "meta");
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let member = joined.member_id.to_string();
    let synced = sync(
        &mut coordinator,
        group,
        1,
        &member,
        &[(member.as_str(), "all")],
    );
    assert_eq!(synced.error_code, 0);
    let offsets: Vec<(&str, i32, i64)> = elsewhere_partitions
        .iter()
        .map(|partition| (TOPIC, *partition, 4))
        .collect();
    assert_eq!(
        commit(&mut coordinator, group, 1, &member, &offsets),
        vec![0; offsets.len()],
        "offsets at other nodes' high watermarks"
    );
    assert_eq!(
        commit(
            &mut coordinator,
            group,
            1,
            &member,
            &[(TOPIC, elsewhere_partitions[0], 5)]
        ),
        vec![ResponseError::OffsetOutOfRange.code()],
        "above another node's high watermark"
    );
    let (error, fetched) = fetch_offsets(&mut coordinator, group, Some(&elsewhere_partitions));
    assert_eq!(error, 0);
    assert!(
        fetched.iter().all(|(_, _, offset)| *offset == 4),
        "{fetched:?}"
    );
    assert_eq!(leave(&mut coordinator, group, &member), 0);
}

/// A 3-node cluster, the clients bootstrapped from a node that is not the coordinator: a
/// confluent-kafka group finds its coordinator and runs through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confluent_group_on_a_cluster() {
    let mut cluster = Cluster::start_kafka(3, 106, &[]);
    cluster.create_topic(TOPIC, PARTITIONS, 3).await;
    for partition in 0..PARTITIONS {
        cluster.leader_of(TOPIC, partition).await;
    }
    let leader = cluster.controller_leader().await;
    let other = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a node that does not lead the controller");
    let bootstrap = cluster
        .node(other)
        .kafka_address
        .clone()
        .expect("kafka address");
    let mut clients = cluster.clients(leader).await;
    client_run("confluent-range", &bootstrap, &mut clients).await;
}
