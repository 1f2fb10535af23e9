//! Precise checks and errors at the API edge, against real servers: commits beyond the high
//! watermark, oversized produces, produces while a restarted node's metadata loads, requests
//! that only the controller's leader serves, resets of partitions held elsewhere, and removing
//! the last node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use strata_proto::v1 as pb;
use strata_server::storage::batch::BatchBuilder;
use strata_tests::cluster::{Cluster, connect};
use strata_tests::error_code;
use strata_tests::server::{Clients, ServerProcess};

/// The limit of one batch (the broker's `BATCH_BYTES_MAX`).
const BATCH_BYTES_MAX: usize = strata_server::partition::BATCH_BYTES_MAX;

fn detail(status: &tonic::Status) -> pb::ErrorDetail {
    pb::ErrorDetail::decode(status.details()).expect("error detail")
}

fn batch_request(topic: &str, partition: u32, batch: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.to_string(),
        target: Some(pb::produce_request::Target::Partition(partition)),
        payload: Some(pb::produce_request::Payload::Batch(batch)),
        ..pb::ProduceRequest::default()
    }
}

/// One record with a value of `value_bytes` bytes.
fn batch_of(value_bytes: usize) -> Bytes {
    let value: Vec<u8> = (0..value_bytes).map(|i| (i % 251) as u8).collect();
    let mut builder = BatchBuilder::new();
    builder.push(1_700_000_000_000, Some(b"k"), Some(&value), &[]);
    builder.finish().freeze()
}

async fn produce_values(clients: &mut Clients, topic: &str, partition: u32, count: usize) {
    for i in 0..count {
        clients
            .broker
            .produce(batch_request(
                topic,
                partition,
                strata_tests::data_batch(&format!("v{i}"), 1, 1_700_000_000_000).freeze(),
            ))
            .await
            .expect("produce");
    }
}

fn commit_request(
    group: &str,
    member: Option<(&str, u64)>,
    topic: &str,
    partition: u32,
    offset: u64,
) -> pb::CommitOffsetsRequest {
    let (member_id, member_epoch) = member.unwrap_or(("", 0));
    pb::CommitOffsetsRequest {
        group_id: group.to_string(),
        member_id: member_id.to_string(),
        member_epoch,
        offsets: vec![pb::OffsetCommit {
            topic: topic.to_string(),
            partition,
            offset,
            metadata: String::new(),
        }],
    }
}

async fn committed(clients: &mut Clients, group: &str, topic: &str, partition: u32) -> Option<u64> {
    clients
        .groups
        .fetch_committed_offsets(pb::FetchCommittedOffsetsRequest {
            group_id: group.to_string(),
            partitions: vec![pb::TopicPartition {
                topic: topic.to_string(),
                partition,
            }],
        })
        .await
        .expect("fetch committed offsets")
        .into_inner()
        .offsets[0]
        .offset
}

/// Asserts an OFFSET_OUT_OF_RANGE refusal naming `log_start..high_watermark`.
fn assert_out_of_range(
    result: Result<tonic::Response<pb::CommitOffsetsResponse>, tonic::Status>,
    high_watermark: u64,
) {
    let status = result.expect_err("a commit beyond the high watermark must be refused");
    assert_eq!(
        error_code(&status),
        "ERROR_CODE_OFFSET_OUT_OF_RANGE",
        "{status:?}"
    );
    assert!(
        status.message().contains(&format!("0 to {high_watermark}")),
        "the message names the valid range: {status:?}"
    );
    let range = detail(&status).valid_range.expect("valid range");
    assert_eq!(
        (range.log_start_offset, range.next_offset),
        (0, high_watermark)
    );
}

/// An operator commit and a member commit of 2^64-1 (a negative offset sent as unsigned) and of
/// high watermark + 1 on a partition holding 4 records are refused with the valid range, and
/// the committed offset stays what it was; a commit of exactly the high watermark is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_beyond_the_high_watermark_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("t", 1).await;
    produce_values(&mut clients, "t", 0, 4).await;

    clients
        .groups
        .commit_offsets(commit_request("ops", None, "t", 0, 2))
        .await
        .expect("a commit inside the range");
    for absurd in [u64::MAX, 1 << 63, 5] {
        let refused = clients
            .groups
            .commit_offsets(commit_request("ops", None, "t", 0, absurd))
            .await;
        assert_out_of_range(refused, 4);
        assert_eq!(committed(&mut clients, "ops", "t", 0).await, Some(2));
    }
    // Exactly the high watermark ("read everything") is valid.
    clients
        .groups
        .commit_offsets(commit_request("ops", None, "t", 0, 4))
        .await
        .expect("a commit of exactly the high watermark");
    assert_eq!(committed(&mut clients, "ops", "t", 0).await, Some(4));

    // A member's commit is checked the same way.
    let joined = clients
        .groups
        .join_group(pb::JoinGroupRequest {
            group_id: "members".to_string(),
            topics: vec!["t".to_string()],
            session_timeout_ms: 30_000,
            ..pb::JoinGroupRequest::default()
        })
        .await
        .expect("join")
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut assignment = joined.clone();
    while assignment.assignment.is_empty() {
        assert!(Instant::now() < deadline, "no assignment within 10 s");
        assignment = clients
            .groups
            .heartbeat(pb::HeartbeatRequest {
                group_id: "members".to_string(),
                member_id: joined.member_id.clone(),
                member_epoch: assignment.member_epoch,
                owned: assignment.assignment.clone(),
            })
            .await
            .expect("heartbeat")
            .into_inner();
    }
    let member = Some((joined.member_id.as_str(), assignment.member_epoch));
    clients
        .groups
        .commit_offsets(commit_request("members", member, "t", 0, 4))
        .await
        .expect("a member's commit of the high watermark");
    let refused = clients
        .groups
        .commit_offsets(commit_request("members", member, "t", 0, u64::MAX))
        .await;
    assert_out_of_range(refused, 4);
    assert_eq!(committed(&mut clients, "members", "t", 0).await, Some(4));
}

/// On a 3-node cluster with one replica per partition, the controller's leader does not hold
/// every partition: its commit check asks the node that does. Each partition accepts a commit
/// of exactly its high watermark and refuses one past it, naming the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_checked_against_partitions_on_other_nodes() {
    let mut cluster = Cluster::start(3, 91);
    cluster.create_topic("spread", 3, 1).await;
    let controller = cluster.controller_leader().await;
    let mut on_other_nodes = 0;
    for partition in 0..3u32 {
        let leader = cluster.leader_of("spread", partition).await;
        if leader != controller {
            on_other_nodes += 1;
        }
        let mut clients = cluster.clients(leader).await;
        produce_values(&mut clients, "spread", partition, 3 + partition as usize).await;
    }
    assert!(
        on_other_nodes > 0,
        "placement put every partition on the controller's leader"
    );
    let mut clients = cluster.clients(controller).await;
    for partition in 0..3u32 {
        let high_watermark = 3 + u64::from(partition);
        clients
            .groups
            .commit_offsets(commit_request(
                "g",
                None,
                "spread",
                partition,
                high_watermark,
            ))
            .await
            .unwrap_or_else(|e| {
                panic!("commit of the high watermark of partition {partition}: {e:?}")
            });
        let refused = clients
            .groups
            .commit_offsets(commit_request(
                "g",
                None,
                "spread",
                partition,
                high_watermark + 1,
            ))
            .await;
        assert_out_of_range(refused, high_watermark);
        assert_eq!(
            committed(&mut clients, "g", "spread", partition).await,
            Some(high_watermark)
        );
    }
}

/// A reset on the controller's leader resolves the offsets of partitions it holds no replica
/// of by asking the nodes that do, for every kind of target, and commits them. Before, such a
/// reset answered NOT_LEADER (a topic with one replica per partition on three nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_resolve_partitions_held_on_other_nodes() {
    use pb::reset_offsets_request::To;
    let mut cluster = Cluster::start(3, 94);
    cluster.create_topic("spread", 3, 1).await;
    let controller = cluster.controller_leader().await;
    let mut elsewhere = 0;
    for partition in 0..3u32 {
        let leader = cluster.leader_of("spread", partition).await;
        if leader != controller {
            elsewhere += 1;
        }
        let mut clients = cluster.clients(leader).await;
        produce_values(&mut clients, "spread", partition, 3 + partition as usize).await;
    }
    assert!(
        elsewhere > 0,
        "placement put every partition on the controller's leader"
    );
    let mut clients = cluster.clients(controller).await;
    // Each partition p holds 3 + p records, all stamped 1_700_000_000_000.
    let high_watermarks = [3u64, 4, 5];
    let cases: [(To, [u64; 3]); 6] = [
        (To::Latest(true), high_watermarks),
        (To::Earliest(true), [0, 0, 0]),
        // Clamped to each partition's high watermark.
        (To::Offset(4), [3, 4, 4]),
        // From the offsets just committed, [3, 4, 4].
        (To::ShiftBy(-2), [1, 2, 2]),
        (To::TimestampMs(1_700_000_000_000), [0, 0, 0]),
        (To::TimestampMs(1_700_000_000_001), high_watermarks),
    ];
    for (to, expected) in cases {
        let reset = clients
            .groups
            .reset_offsets(pb::ResetOffsetsRequest {
                group_id: "g".into(),
                topic: "spread".into(),
                partitions: vec![],
                to: Some(to),
                dry_run: false,
            })
            .await
            .unwrap_or_else(|e| panic!("reset to {to:?}: {e:?}"))
            .into_inner();
        let answered: Vec<u64> = reset
            .offsets
            .iter()
            .map(|o| o.offset.expect("offset"))
            .collect();
        assert_eq!(answered, expected, "reset to {to:?}");
        for partition in 0..3u32 {
            assert_eq!(
                committed(&mut clients, "g", "spread", partition).await,
                Some(expected[partition as usize]),
                "committed offset of partition {partition} after the reset to {to:?}"
            );
        }
    }
}

/// A batch over the batch limit (but within the request limit) and a request over the request
/// limit (above tonic's default 4 MiB too) are both answered RECORD_TOO_LARGE, naming the size
/// and the limit: on unary Produce, and on ProduceStream (a per-request error for the first, the
/// stream's status for the second, which the stream cannot read past). The node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_produces_are_record_too_large_with_size_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    clients.create_topic("big", 1).await;

    let over_batch = batch_of(BATCH_BYTES_MAX + 1000);
    let over_request = batch_of(5 << 20);
    let over_request_size = batch_request("big", 0, over_request.clone()).encoded_len();

    // Unary.
    let status = clients
        .broker
        .produce(batch_request("big", 0, over_batch.clone()))
        .await
        .expect_err("a batch over the limit");
    assert_too_large(&status, over_batch.len(), BATCH_BYTES_MAX);
    assert_eq!(detail(&status).limit_bytes, Some(BATCH_BYTES_MAX as u64));

    let status = clients
        .broker
        .produce(batch_request("big", 0, over_request.clone()))
        .await
        .expect_err("a request over the limit");
    let limit = detail(&status).limit_bytes.expect("limit") as usize;
    assert_too_large(&status, over_request_size, limit);
    assert!(
        (BATCH_BYTES_MAX..BATCH_BYTES_MAX + (1 << 20)).contains(&limit),
        "the request limit {limit} is the batch limit plus framing"
    );

    // Stream: the over-batch request fails alone and the stream goes on.
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    let mut replies = clients
        .broker
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .expect("open a produce stream")
        .into_inner();
    let mut request = batch_request("big", 0, over_batch.clone());
    request.request_id = 1;
    requests.send(request).await.expect("send");
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("a reply within 10 s")
        .expect("a reply, not a stream error")
        .expect("the stream stays open");
    let error = reply.error.expect("the request failed");
    assert_eq!(error.code(), pb::ErrorCode::RecordTooLarge, "{error:?}");
    assert_names_sizes(&error.message, over_batch.len(), BATCH_BYTES_MAX);

    let mut request = batch_request("big", 0, over_request.clone());
    request.request_id = 2;
    let over_request_size = request.encoded_len();
    requests.send(request).await.expect("send");
    let ended = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("an answer within 10 s");
    let status = ended.expect_err("the stream ends with the refusal");
    assert_too_large(&status, over_request_size, limit);

    // Still serving.
    produce_values(&mut clients, "big", 0, 1).await;
}

/// `status` is RECORD_TOO_LARGE, and its message names the `size` refused and the `limit`.
fn assert_too_large(status: &tonic::Status, size: usize, limit: usize) {
    assert_eq!(
        error_code(status),
        "ERROR_CODE_RECORD_TOO_LARGE",
        "{status:?}"
    );
    assert_names_sizes(status.message(), size, limit);
}

/// `message` names the `size` refused and the `limit`.
fn assert_names_sizes(message: &str, size: usize, limit: usize) {
    assert!(message.contains(&size.to_string()), "{message}");
    assert!(message.contains(&limit.to_string()), "{message}");
}

/// Controller changes made while a node is down.
const CHANGES_WHILE_DOWN: usize = 1500;

/// Codes a client retries (or follows, for NOT_LEADER) while a node starts.
const RETRIABLE: [&str; 4] = [
    "ERROR_CODE_UNAVAILABLE",
    "ERROR_CODE_NOT_LEADER",
    "ERROR_CODE_TIMEOUT",
    "ERROR_CODE_SHUTTING_DOWN",
];

/// A node of a 3-node cluster is killed (-9); topics are created while it is down; it is
/// restarted and, from its first answer on, produced to (every partition of every topic, in
/// turns) until it knows them all. It answers only successes and retriable codes (UNAVAILABLE
/// while its metadata loads, NOT_LEADER for partitions led elsewhere), never
/// UNKNOWN_TOPIC_OR_PARTITION for a topic that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_after_a_restart_never_answer_unknown_topic() {
    let mut cluster = Cluster::start(3, 92);
    cluster.create_topic("before", 4, 3).await;
    let controller = cluster.controller_leader().await;
    let restarted = (1..=3).find(|id| *id != controller).expect("a follower");
    cluster.node(restarted).kill9();
    let mut topics = BTreeMap::from([("before".to_string(), 4u32)]);
    for i in 0..6 {
        let name = format!("during-{i}");
        cluster.create_topic(&name, 8, 3).await;
        topics.insert(name, 8);
    }
    // Many controller changes while the node is down (more than a controller snapshot's
    // worth), so that catching up takes the restarted node a while.
    let groups = cluster.clients(controller).await.groups;
    let committed: Vec<Result<_, tonic::Status>> = futures::stream::iter(0..CHANGES_WHILE_DOWN)
        .map(|i| {
            let mut groups = groups.clone();
            async move {
                groups
                    .commit_offsets(commit_request(
                        &format!("g{}", i % 50),
                        None,
                        "before",
                        0,
                        0,
                    ))
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for result in committed {
        result.expect("commit while the node is down");
    }
    cluster.node(restarted).relaunch();
    let address = cluster.address(restarted);

    let mut known: BTreeSet<(String, u32)> = BTreeSet::new();
    let all: Vec<(String, u32)> = topics
        .iter()
        .flat_map(|(topic, partitions)| (0..*partitions).map(move |p| (topic.clone(), p)))
        .collect();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut clients = None;
    let mut turn = 0usize;
    while known.len() < all.len() {
        assert!(
            Instant::now() < deadline,
            "node {restarted} did not know every partition within 60 s: answers {answers:?}"
        );
        let Some(connected) = clients.as_mut() else {
            clients = connect(&address).await.ok();
            continue;
        };
        let (topic, partition) = &all[turn % all.len()];
        turn += 1;
        let produced = tokio::time::timeout(
            Duration::from_secs(5),
            connected.broker.produce(batch_request(
                topic,
                *partition,
                strata_tests::data_batch("r", 1, 1_700_000_000_000).freeze(),
            )),
        )
        .await;
        let code = match produced {
            Err(_) => "client timeout".to_string(),
            Ok(Ok(_)) => "OK".to_string(),
            // Without a Strata code: the connection (the process is starting).
            Ok(Err(status)) if error_code(&status).is_empty() => "no code".to_string(),
            Ok(Err(status)) => {
                let code = error_code(&status);
                assert!(
                    RETRIABLE.contains(&code.as_str()),
                    "{topic}/{partition} on node {restarted} after its restart: {status:?} \
                     (answers so far: {answers:?})"
                );
                code
            }
        };
        if code == "OK" || code == "ERROR_CODE_NOT_LEADER" {
            known.insert((topic.clone(), *partition));
        }
        *answers.entry(code).or_default() += 1;
    }
    println!("answers of node {restarted} after its restart: {answers:?}");
}

/// DeleteTopic (an admin change) and JoinGroup (a group request) sent to a node that does not
/// lead the controller answer NOT_LEADER naming the controller's leader and its address, and a
/// message about the controller, not about a partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_requests_elsewhere_name_the_controller_leader() {
    let mut cluster = Cluster::start(3, 93);
    cluster.create_topic("doomed", 1, 3).await;
    let controller = cluster.controller_leader().await;
    let other = (1..=3).find(|id| *id != controller).expect("another node");
    let mut clients = cluster.clients(other).await;
    let deleted = clients
        .admin
        .delete_topic(pb::DeleteTopicRequest {
            name: "doomed".to_string(),
        })
        .await;
    let joined = clients
        .groups
        .join_group(pb::JoinGroupRequest {
            group_id: "g".to_string(),
            topics: vec!["doomed".to_string()],
            session_timeout_ms: 30_000,
            ..pb::JoinGroupRequest::default()
        })
        .await;
    for status in [deleted.expect_err("delete"), joined.expect_err("join")] {
        assert_eq!(error_code(&status), "ERROR_CODE_NOT_LEADER", "{status:?}");
        let detail = detail(&status);
        assert_eq!(detail.leader_node_id, Some(controller), "{status:?}");
        assert_eq!(
            detail.leader_address.as_deref(),
            Some(cluster.address(controller).as_str()),
            "{status:?}"
        );
        assert!(status.message().contains("controller"), "{status:?}");
        assert!(!status.message().contains("partition"), "{status:?}");
    }
    // The topic is still there.
    let mut leader = cluster.clients(controller).await;
    leader
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            name: "doomed".to_string(),
        })
        .await
        .expect("the topic still exists");
}

/// RemoveNode of the only node of a one-node cluster is refused at once (INVALID_ARGUMENT,
/// saying the last node cannot be removed), every time, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_last_node_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    for _ in 0..2 {
        let removed = tokio::time::timeout(
            Duration::from_secs(5),
            clients
                .admin
                .remove_node(pb::RemoveNodeRequest { node_id: 1 }),
        )
        .await
        .expect("an answer within 5 s");
        let status = removed.expect_err("the last node cannot be removed");
        assert_eq!(
            error_code(&status),
            "ERROR_CODE_INVALID_ARGUMENT",
            "{status:?}"
        );
        assert!(status.message().contains("last node"), "{status:?}");
    }
    clients.create_topic("alive", 1).await;
}
