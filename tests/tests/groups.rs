//! Consumer groups at the protocol level: real `strata-server` processes on loopback, driven
//! through the generated gRPC clients. Membership, fencing, durable offsets, live reset and
//! lag; the Rust group consumer's own tests are in `group_consumer.rs`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_proto::v1 as pb;
use strata_tests::error_code;
use strata_tests::server::{Clients, ServerProcess};

/// Every test ends within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Produces `values` to one partition with the given timestamps.
async fn produce(clients: &mut Clients, topic: &str, partition: u32, records: &[(i64, &str)]) {
    let records = records
        .iter()
        .map(|(timestamp_ms, value)| pb::Record {
            timestamp_ms: *timestamp_ms,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            ..pb::Record::default()
        })
        .collect();
    clients
        .broker
        .produce(pb::ProduceRequest {
            topic: topic.to_string(),
            target: Some(pb::produce_request::Target::Partition(partition)),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records,
            })),
            ..pb::ProduceRequest::default()
        })
        .await
        .expect("produce");
}

/// A server with `topics` (name, partitions) created, its data directory and clients.
async fn start(topics: &[(&str, u32)]) -> (tempfile::TempDir, ServerProcess, Clients) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = server.clients().await;
    for (topic, partitions) in topics {
        clients.create_topic(topic, *partitions).await;
    }
    (dir, server, clients)
}

fn tp(topic: &str, partition: u32) -> pb::TopicPartition {
    pb::TopicPartition {
        topic: topic.to_string(),
        partition,
    }
}

async fn join(
    clients: &mut Clients,
    group: &str,
    member_id: &str,
    topics: &[&str],
    session_timeout_ms: u32,
) -> pb::MemberAssignment {
    clients
        .groups
        .join_group(pb::JoinGroupRequest {
            group_id: group.to_string(),
            member_id: member_id.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            session_timeout_ms,
            client_id: "test".to_string(),
        })
        .await
        .expect("join")
        .into_inner()
}

/// A heartbeat reporting the assignment of `last` as owned.
async fn beat(
    clients: &mut Clients,
    group: &str,
    last: &pb::MemberAssignment,
) -> Result<pb::MemberAssignment, tonic::Status> {
    clients
        .groups
        .heartbeat(pb::HeartbeatRequest {
            group_id: group.to_string(),
            member_id: last.member_id.clone(),
            member_epoch: last.member_epoch,
            owned: last.assignment.clone(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn commit(
    clients: &mut Clients,
    group: &str,
    member: Option<&pb::MemberAssignment>,
    offsets: &[(&str, u32, u64)],
) -> Result<(), tonic::Status> {
    clients
        .groups
        .commit_offsets(pb::CommitOffsetsRequest {
            group_id: group.to_string(),
            member_id: member.map(|m| m.member_id.clone()).unwrap_or_default(),
            member_epoch: member.map_or(0, |m| m.member_epoch),
            offsets: offsets
                .iter()
                .map(|(topic, partition, offset)| pb::OffsetCommit {
                    topic: topic.to_string(),
                    partition: *partition,
                    offset: *offset,
                    metadata: format!("at {offset}"),
                })
                .collect(),
        })
        .await
        .map(|_| ())
}

async fn committed(clients: &mut Clients, group: &str) -> Vec<(String, u32, Option<u64>)> {
    let mut offsets: Vec<_> = clients
        .groups
        .fetch_committed_offsets(pb::FetchCommittedOffsetsRequest {
            group_id: group.to_string(),
            partitions: vec![],
        })
        .await
        .expect("fetch committed")
        .into_inner()
        .offsets
        .into_iter()
        .map(|c| (c.topic, c.partition, c.offset))
        .collect();
    offsets.sort();
    offsets
}

async fn describe(clients: &mut Clients, group: &str) -> pb::DescribeGroupResponse {
    clients
        .groups
        .describe_group(pb::DescribeGroupRequest {
            group_id: group.to_string(),
        })
        .await
        .expect("describe")
        .into_inner()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Committed offsets are replicated state: they survive a graceful restart and a kill -9, and
/// a group is listed afterwards even with no members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_restarts() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (dir, mut server, mut clients) = start(&[("orders", 3)]).await;
        // Records to commit within (a commit beyond the high watermark is refused).
        for partition in 0..3 {
            produce(&mut clients, "orders", partition, &[(now_ms(), "x"); 10]).await;
        }
        let member = join(&mut clients, "billing", "", &["orders"], 0).await;
        assert_eq!(member.assignment.len(), 3, "a lone member holds everything");
        commit(
            &mut clients,
            "billing",
            Some(&member),
            &[("orders", 0, 5), ("orders", 2, 7)],
        )
        .await
        .expect("commit");
        let expected = vec![
            ("orders".to_string(), 0, Some(5)),
            ("orders".to_string(), 2, Some(7)),
        ];
        assert_eq!(committed(&mut clients, "billing").await, expected);

        drop(clients);
        assert_eq!(server.terminate(), Some(0), "clean exit");
        let address = server.address.clone();
        let mut server = ServerProcess::start_on(dir.path(), 1, &address);
        let mut clients = server.clients().await;
        assert_eq!(committed(&mut clients, "billing").await, expected);
        // Membership is soft state: the member must rejoin.
        let status = beat(&mut clients, "billing", &member)
            .await
            .expect_err("membership is gone");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_MEMBER");
        let member = join(&mut clients, "billing", &member.member_id, &["orders"], 0).await;
        commit(&mut clients, "billing", Some(&member), &[("orders", 1, 9)])
            .await
            .expect("commit");

        server.kill9();
        server.restart();
        let mut clients = server.clients().await;
        let mut expected = expected;
        expected.insert(1, ("orders".to_string(), 1, Some(9)));
        assert_eq!(committed(&mut clients, "billing").await, expected);
        let groups = clients
            .groups
            .list_groups(pb::ListGroupsRequest {})
            .await
            .expect("list")
            .into_inner()
            .groups;
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].group_id, "billing");
        assert_eq!(groups[0].state, "empty");
    })
    .await
    .expect("test timed out");
}

/// A partition reaches a new member only after its owner released it; an expired member's
/// partitions go to the others, and its commits are refused; a rejoined member's old epoch
/// is fenced; an operator may not commit while members run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_expiry_and_fencing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, _server, mut clients) = start(&[("jobs", 4)]).await;
        // Records to commit within (a commit beyond the high watermark is refused).
        for partition in 0..4 {
            produce(&mut clients, "jobs", partition, &[(now_ms(), "x"); 5]).await;
        }
        let m1 = join(&mut clients, "workers", "", &["jobs"], 0).await;
        assert_eq!(m1.assignment.len(), 4);
        // Short session for m2, so it can expire within the test.
        let m2 = join(&mut clients, "workers", "", &["jobs"], 1000).await;
        assert!(m2.assignment.is_empty(), "m1 has not released anything yet");
        assert_eq!(m2.pending.len(), 2);
        let m1 = beat(&mut clients, "workers", &m1).await.expect("beat");
        assert_eq!(m1.assignment.len(), 2, "m1 is asked to give up two");
        let m2 = beat(&mut clients, "workers", &m2).await.expect("beat");
        assert!(m2.assignment.is_empty(), "still held by m1");
        // m1 acts on its new assignment: reports only what it keeps.
        let m1 = beat(&mut clients, "workers", &m1).await.expect("beat");
        let m2 = beat(&mut clients, "workers", &m2).await.expect("beat");
        assert_eq!(m2.assignment.len(), 2);
        let held_by_m1: Vec<_> = m1.assignment.iter().map(|t| t.partition).collect();
        assert!(
            m2.assignment
                .iter()
                .all(|t| !held_by_m1.contains(&t.partition))
        );
        let described = describe(&mut clients, "workers").await;
        assert_eq!(described.state, "stable");
        assert_eq!(described.members.len(), 2);

        // A member commits only what it holds.
        let not_held = m1.assignment[0].partition;
        let status = commit(&mut clients, "workers", Some(&m2), &[("jobs", not_held, 1)])
            .await
            .expect_err("not held");
        assert_eq!(error_code(&status), "ERROR_CODE_STALE_MEMBER_EPOCH");
        // An operator may not commit while the group has members.
        let status = commit(&mut clients, "workers", None, &[("jobs", 0, 1)])
            .await
            .expect_err("members run");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_MEMBER");

        // m2 stops heartbeating: once its session expires, m1 gets everything back.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut m1 = m1;
        loop {
            m1 = beat(&mut clients, "workers", &m1).await.expect("beat");
            if m1.assignment.len() == 4 {
                break;
            }
            assert!(Instant::now() < deadline, "m2 never expired: {m1:?}");
            // Wait a heartbeat interval, as a member does.
            tokio::time::sleep(Duration::from_millis(
                u64::from(m1.heartbeat_interval_ms).min(200),
            ))
            .await;
        }
        let status = commit(&mut clients, "workers", Some(&m2), &[("jobs", 0, 1)])
            .await
            .expect_err("expired");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_MEMBER");
        let status = beat(&mut clients, "workers", &m2)
            .await
            .expect_err("expired");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_MEMBER");

        // m2 rejoins under its id: commits with its old epoch are fenced.
        let rejoined = join(&mut clients, "workers", &m2.member_id, &["jobs"], 0).await;
        assert!(rejoined.member_epoch > m2.member_epoch);
        let status = commit(&mut clients, "workers", Some(&m2), &[("jobs", 0, 1)])
            .await
            .expect_err("fenced");
        assert_eq!(error_code(&status), "ERROR_CODE_STALE_MEMBER_EPOCH");

        // Leaving hands everything back at once; deleting needs an empty group.
        let status = clients
            .groups
            .delete_group(pb::DeleteGroupRequest {
                group_id: "workers".to_string(),
            })
            .await
            .expect_err("members");
        assert_eq!(error_code(&status), "ERROR_CODE_GROUP_NOT_EMPTY");
        for member in [&m1, &rejoined] {
            clients
                .groups
                .leave_group(pb::LeaveGroupRequest {
                    group_id: "workers".to_string(),
                    member_id: member.member_id.clone(),
                })
                .await
                .expect("leave");
        }
        commit(&mut clients, "workers", None, &[("jobs", 0, 3)])
            .await
            .expect("an operator commits to an empty group");
        clients
            .groups
            .delete_group(pb::DeleteGroupRequest {
                group_id: "workers".to_string(),
            })
            .await
            .expect("delete");
        let status = clients
            .groups
            .describe_group(pb::DescribeGroupRequest {
                group_id: "workers".to_string(),
            })
            .await
            .expect_err("deleted");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_GROUP");
    })
    .await
    .expect("test timed out");
}

/// Describe's lag figures against a hand computation: records with known timestamps, a
/// committed offset, lag in records = high watermark - committed, lag in time = now - the
/// timestamp of the record at the committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_matches_a_hand_computation() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, _server, mut clients) = start(&[("clicks", 2)]).await;
        let base = now_ms() - 3_600_000;
        // Partition 0: ten records a minute apart, in two batches.
        let first: Vec<(i64, String)> = (0..6)
            .map(|i| (base + i * 60_000, format!("a{i}")))
            .collect();
        let second: Vec<(i64, String)> = (6..10)
            .map(|i| (base + i * 60_000, format!("a{i}")))
            .collect();
        for batch in [&first, &second] {
            let records: Vec<(i64, &str)> = batch.iter().map(|(t, v)| (*t, v.as_str())).collect();
            produce(&mut clients, "clicks", 0, &records).await;
        }
        // Partition 1: three records, all consumed.
        produce(
            &mut clients,
            "clicks",
            1,
            &[(base, "b0"), (base, "b1"), (base, "b2")],
        )
        .await;
        commit(
            &mut clients,
            "dash",
            None,
            &[("clicks", 0, 7), ("clicks", 1, 3)],
        )
        .await
        .expect("commit");
        let before = now_ms();
        let described = describe(&mut clients, "dash").await;
        let after = now_ms();
        assert_eq!(described.state, "empty");
        assert_eq!(described.partitions.len(), 2);
        let p0 = &described.partitions[0];
        assert_eq!((p0.topic.as_str(), p0.partition), ("clicks", 0));
        assert_eq!(p0.committed_offset, Some(7));
        assert_eq!(p0.metadata, "at 7");
        assert_eq!(p0.high_watermark, 10);
        assert_eq!(p0.lag_records, Some(3));
        // Record 7 was written at base + 7 minutes (it sits inside the second batch).
        let written = base + 7 * 60_000;
        let lag_ms = p0.lag_ms.expect("time lag");
        assert!(
            (before - written..=after - written).contains(&lag_ms),
            "lag {lag_ms} ms, expected {}..={}",
            before - written,
            after - written
        );
        let p1 = &described.partitions[1];
        assert_eq!((p1.lag_records, p1.lag_ms), (Some(0), Some(0)));
        assert_eq!(p1.owner_member_id, "");

        // With a member, the owner shows, and an uncommitted partition has no lag figures.
        let member = join(&mut clients, "fresh", "", &["clicks"], 0).await;
        let described = describe(&mut clients, "fresh").await;
        assert_eq!(described.members.len(), 1);
        assert_eq!(described.members[0].assignment.len(), 2);
        for partition in &described.partitions {
            assert_eq!(partition.owner_member_id, member.member_id);
            assert_eq!(partition.committed_offset, None);
            assert_eq!(partition.lag_records, None);
        }
    })
    .await
    .expect("test timed out");
}

/// Live reset: while a member runs, reset its group's offsets to a timestamp. The member sees
/// the new offsets generation on its next heartbeat, a commit it made from before the reset is
/// refused (so it cannot undo the reset), and after the heartbeat its commits are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reset_while_members_run() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, _server, mut clients) = start(&[("events", 2)]).await;
        let base = now_ms() - 100_000;
        for partition in 0..2 {
            let records: Vec<(i64, String)> = (0..10)
                .map(|i| (base + i * 1000, format!("e{i}")))
                .collect();
            let records: Vec<(i64, &str)> = records.iter().map(|(t, v)| (*t, v.as_str())).collect();
            produce(&mut clients, "events", partition, &records).await;
        }
        let member = join(&mut clients, "replayer", "", &["events"], 0).await;
        assert_eq!(member.offsets_generation, 0);
        commit(
            &mut clients,
            "replayer",
            Some(&member),
            &[("events", 0, 10), ("events", 1, 10)],
        )
        .await
        .expect("commit");

        // Dry run first: nothing changes.
        let request = |dry_run| pb::ResetOffsetsRequest {
            group_id: "replayer".to_string(),
            topic: "events".to_string(),
            partitions: vec![],
            to: Some(pb::reset_offsets_request::To::TimestampMs(base + 4000)),
            dry_run,
        };
        let dry = clients
            .groups
            .reset_offsets(request(true))
            .await
            .expect("dry run")
            .into_inner();
        assert_eq!(
            dry.offsets.iter().map(|o| o.offset).collect::<Vec<_>>(),
            [Some(4), Some(4)]
        );
        assert_eq!(committed(&mut clients, "replayer").await[0].2, Some(10));

        let reset = clients
            .groups
            .reset_offsets(request(false))
            .await
            .expect("reset while the member runs")
            .into_inner();
        assert_eq!(reset.offsets_generation, 1);
        assert_eq!(
            committed(&mut clients, "replayer").await,
            vec![
                ("events".to_string(), 0, Some(4)),
                ("events".to_string(), 1, Some(4))
            ]
        );
        // The member has not heard of the reset: its commit would undo it, and is refused.
        let status = commit(
            &mut clients,
            "replayer",
            Some(&member),
            &[("events", 0, 10)],
        )
        .await
        .expect_err("commit from before the reset");
        assert_eq!(error_code(&status), "ERROR_CODE_STALE_MEMBER_EPOCH");
        assert_eq!(committed(&mut clients, "replayer").await[0].2, Some(4));
        // Its heartbeat tells it; from then on it commits again.
        let member = beat(&mut clients, "replayer", &member).await.expect("beat");
        assert_eq!(member.offsets_generation, 1);
        commit(&mut clients, "replayer", Some(&member), &[("events", 0, 6)])
            .await
            .expect("commit after the heartbeat");

        // Shift and explicit offsets clamp to the valid range.
        let shifted = clients
            .groups
            .reset_offsets(pb::ResetOffsetsRequest {
                group_id: "replayer".to_string(),
                topic: "events".to_string(),
                partitions: vec![0],
                to: Some(pb::reset_offsets_request::To::ShiftBy(-100)),
                dry_run: false,
            })
            .await
            .expect("shift")
            .into_inner();
        assert_eq!(shifted.offsets.len(), 1);
        assert_eq!(shifted.offsets[0].offset, Some(0));
        let latest = clients
            .groups
            .reset_offsets(pb::ResetOffsetsRequest {
                group_id: "replayer".to_string(),
                topic: "events".to_string(),
                partitions: vec![1],
                to: Some(pb::reset_offsets_request::To::Offset(1_000_000)),
                dry_run: false,
            })
            .await
            .expect("offset")
            .into_inner();
        assert_eq!(latest.offsets[0].offset, Some(10));
        assert_eq!(latest.offsets_generation, 3);
    })
    .await
    .expect("test timed out");
}

/// Bad group requests get a stable code and a clear message, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, _server, mut clients) = start(&[("t", 2)]).await;
        let join_request =
            |group: &str, topics: Vec<&str>, session_timeout_ms| pb::JoinGroupRequest {
                group_id: group.to_string(),
                member_id: String::new(),
                topics: topics.into_iter().map(str::to_string).collect(),
                session_timeout_ms,
                client_id: String::new(),
            };
        let cases: Vec<(&str, pb::JoinGroupRequest, &str)> = vec![
            (
                "empty group id",
                join_request("", vec!["t"], 0),
                "ERROR_CODE_INVALID_GROUP_ID",
            ),
            (
                "group id with a space",
                join_request("a b", vec!["t"], 0),
                "ERROR_CODE_INVALID_GROUP_ID",
            ),
            (
                "no topics",
                join_request("g", vec![], 0),
                "ERROR_CODE_INVALID_ARGUMENT",
            ),
            (
                "unknown topic",
                join_request("g", vec!["nope"], 0),
                "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION",
            ),
            (
                "session too short",
                join_request("g", vec!["t"], 10),
                "ERROR_CODE_INVALID_ARGUMENT",
            ),
            (
                "session too long",
                join_request("g", vec!["t"], 10_000_000),
                "ERROR_CODE_INVALID_ARGUMENT",
            ),
        ];
        for (name, request, code) in cases {
            let status = clients.groups.join_group(request).await.expect_err(name);
            assert_eq!(error_code(&status), code, "{name}: {status:?}");
            assert!(!status.message().is_empty());
        }
        // (case, offsets, metadata, expected code)
        type CommitCase<'a> = (&'a str, Vec<(&'a str, u32, u64)>, String, &'a str);
        let commit_cases: Vec<CommitCase> = vec![
            (
                "unknown partition",
                vec![("t", 9, 1)],
                String::new(),
                "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION",
            ),
            (
                "unknown topic",
                vec![("x", 0, 1)],
                String::new(),
                "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION",
            ),
            (
                "metadata too long",
                vec![("t", 0, 1)],
                "m".repeat(4097),
                "ERROR_CODE_INVALID_ARGUMENT",
            ),
        ];
        for (name, offsets, metadata, code) in commit_cases {
            let status = clients
                .groups
                .commit_offsets(pb::CommitOffsetsRequest {
                    group_id: "g".to_string(),
                    member_id: String::new(),
                    member_epoch: 0,
                    offsets: offsets
                        .iter()
                        .map(|(topic, partition, offset)| pb::OffsetCommit {
                            topic: topic.to_string(),
                            partition: *partition,
                            offset: *offset,
                            metadata: metadata.clone(),
                        })
                        .collect(),
                })
                .await
                .expect_err(name);
            assert_eq!(error_code(&status), code, "{name}: {status:?}");
        }
        let status = clients
            .groups
            .reset_offsets(pb::ResetOffsetsRequest {
                group_id: "g".to_string(),
                topic: "t".to_string(),
                ..pb::ResetOffsetsRequest::default()
            })
            .await
            .expect_err("no target");
        assert_eq!(error_code(&status), "ERROR_CODE_INVALID_ARGUMENT");
        let status = clients
            .groups
            .reset_offsets(pb::ResetOffsetsRequest {
                group_id: "g".to_string(),
                topic: "t".to_string(),
                partitions: vec![5],
                to: Some(pb::reset_offsets_request::To::Earliest(true)),
                dry_run: false,
            })
            .await
            .expect_err("unknown partition");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION");
        let status = clients
            .groups
            .heartbeat(pb::HeartbeatRequest {
                group_id: "g".to_string(),
                member_id: "nobody".to_string(),
                member_epoch: 1,
                owned: vec![tp("t", 0)],
            })
            .await
            .expect_err("unknown member");
        assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_MEMBER");
        // Nothing was stored by any of it.
        let groups = clients
            .groups
            .list_groups(pb::ListGroupsRequest {})
            .await
            .expect("list")
            .into_inner()
            .groups;
        assert!(groups.is_empty(), "{groups:?}");
    })
    .await
    .expect("test timed out");
}

/// A commit too large for one controller change is split, and stored whole; a topic of many
/// partitions commits and resets in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commits_and_resets() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (_dir, _server, mut clients) = start(&[("wide", 300)]).await;
        // 300 partitions with 4000 bytes of metadata each: 1.2 MB of offsets in one request.
        let offsets = (0..300)
            .map(|partition| pb::OffsetCommit {
                topic: "wide".to_string(),
                partition,
                offset: 0,
                metadata: "\u{1}".repeat(4000),
            })
            .collect();
        clients
            .groups
            .commit_offsets(pb::CommitOffsetsRequest {
                group_id: "wide-readers".to_string(),
                member_id: String::new(),
                member_epoch: 0,
                offsets,
            })
            .await
            .expect("a large commit");
        let stored = committed(&mut clients, "wide-readers").await;
        assert_eq!(stored.len(), 300);
        let reset = clients
            .groups
            .reset_offsets(pb::ResetOffsetsRequest {
                group_id: "wide-readers".to_string(),
                topic: "wide".to_string(),
                partitions: vec![],
                to: Some(pb::reset_offsets_request::To::Latest(true)),
                dry_run: false,
            })
            .await
            .expect("reset")
            .into_inner();
        assert_eq!(reset.offsets.len(), 300);
        // Still serving.
        describe(&mut clients, "wide-readers").await;
    })
    .await
    .expect("test timed out");
}
