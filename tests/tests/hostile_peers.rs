//! Hostile input on the node-to-node stream (`strata.v1.Peer/Raft`), sent by a process that is
//! no node, against a 3-node cluster of real processes: forged snapshots that used to erase a
//! replicated partition, a stream that claims one node and then another, messages naming
//! another receiver. Nothing acknowledged changes, no node aborts, and the cluster keeps
//! committing.
//!
//! Showing that a forged message had no effect needs a window in which it could have had one:
//! the forged batches are sent, the stream is closed and its reply awaited (the server has then
//! handed every message to its raft driver), a `GroupVoters` call goes through the same driver
//! queue after them, and then every node is watched for [`WATCH`], longer than the few hundred
//! milliseconds the erasure took.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use protobuf::Message as _;
use raft::prelude::{ConfState, Message, MessageType, Snapshot};
use strata_proto::batch::BatchBuilder;
use strata_proto::v1 as pb;
use strata_proto::v1::peer_client::PeerClient;
use strata_tests::cluster::{Cluster, from_offset_zero};
use strata_tests::error_code;

const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// How long every node is watched after forged messages were stepped.
const WATCH: Duration = Duration::from_secs(2);
const RECORDS: u64 = 1810;
/// The raft group of partition 0 of the cluster's first topic (topic id 1).
const GROUP: u64 = strata_server::partition::group_id(1, 0);

/// A raft snapshot message at `index` of `term` whose data puts the log start at
/// `start_offset` (or is `data` as given).
fn snapshot(from: u64, to: u64, term: u64, index: u64, data: Bytes) -> Bytes {
    let mut snapshot = Snapshot::default();
    let metadata = snapshot.mut_metadata();
    metadata.index = index;
    metadata.term = term;
    metadata.set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
    snapshot.data = data;
    let mut message = Message {
        from,
        to,
        msg_type: MessageType::MsgSnapshot,
        term,
        ..Message::default()
    };
    message.set_snapshot(snapshot);
    message.write_to_bytes().expect("encode").into()
}

fn start_offset(offset: u64) -> Bytes {
    let mut data = BytesMut::new();
    data.put_u64(offset);
    data.freeze()
}

/// Sends `batches` on one raft stream to `address` and returns how the server ended it.
async fn send_stream(
    address: &str,
    batches: Vec<pb::RaftBatch>,
) -> Result<pb::RaftStreamClosed, tonic::Status> {
    let mut client = PeerClient::connect(format!("http://{address}"))
        .await
        .expect("connect to the peer port");
    let stream = tokio_stream::iter(batches);
    client.raft(stream).await.map(|reply| reply.into_inner())
}

fn batch(from_node: u64, messages: Vec<(u64, Bytes)>) -> pb::RaftBatch {
    pb::RaftBatch {
        from_node,
        messages: messages
            .into_iter()
            .map(|(group, message)| pb::RaftEnvelope { group, message })
            .collect(),
    }
}

/// Produces `RECORDS` records to partition 0 of `topic` in batches of 10, through its leader.
async fn produce(cluster: &mut Cluster, topic: &str, tag: &str, records: u64) {
    // Leaders settle (and move to their preferred node) while the topic is new: a batch
    // refused as retriable is sent again, as an idempotent producer's so that a retry after a
    // lost reply stores nothing twice.
    let producer = cluster.producer_id().await;
    for first in (0..records).step_by(10) {
        let sequence = i32::try_from(first).expect("a test's record count fits");
        let mut builder = BatchBuilder::new().producer(producer, 0, sequence);
        for i in first..(first + 10).min(records) {
            builder.push(1, None, Some(format!("{tag}{i}").as_bytes()), &[]);
        }
        cluster
            .produce_idempotent(topic, 0, builder.finish().freeze())
            .await;
    }
}

/// (log start, high watermark) of partition 0 of `topic` on `node`.
async fn offsets(cluster: &Cluster, node: u64, topic: &str) -> (u64, u64) {
    let reply = cluster
        .clients(node)
        .await
        .broker
        .list_offsets(pb::ListOffsetsRequest {
            topic: topic.to_string(),
            partition: 0,
            position: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Earliest(true)),
            }),
        })
        .await
        .expect("list offsets")
        .into_inner();
    (reply.log_start_offset, reply.high_watermark)
}

/// Forged snapshots (from no node; from the leader's id in a term nobody elected; with data too
/// short to parse, for the controller), a stream that switches the node it speaks for, one that
/// speaks for the node it talks to, and a message addressed to another node: the partition's
/// 1 810 records stay on every replica from offset 0, every node keeps running, and the cluster
/// still commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_messages_change_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 53);
        cluster.create_topic("kept", 1, 3).await;
        produce(&mut cluster, "kept", "r", RECORDS).await;
        let leader = cluster.leader_of("kept", 0).await;
        let victim = if leader == 3 { 2 } else { 3 };
        let address = cluster.node(victim).address.clone();
        let erase = |from| snapshot(from, victim, 1000, 1_000_000, start_offset(5_000_000));

        // A stranger, and the leader's id in a term nobody elected: dropped by the driver.
        send_stream(&address, vec![batch(99, vec![(GROUP, erase(99))])])
            .await
            .expect("the stream itself is fine");
        send_stream(&address, vec![batch(leader, vec![(GROUP, erase(leader))])])
            .await
            .expect("the stream itself is fine");
        // Snapshot data shorter than its start offset, to the controller: this aborted the node.
        let short = snapshot(leader, victim, 1000, 10, Bytes::from_static(b"short"));
        send_stream(&address, vec![batch(leader, vec![(0, short)])])
            .await
            .expect("the stream itself is fine");
        // Addressed to another node than the one it reached: dropped by the transport.
        let elsewhere = snapshot(leader, 99, 1000, 1_000_000, start_offset(5_000_000));
        send_stream(&address, vec![batch(leader, vec![(GROUP, elsewhere)])])
            .await
            .expect("the stream itself is fine");
        // One stream speaks for one node, never for the node it talks to.
        let status = send_stream(&address, vec![batch(98, vec![]), batch(97, vec![])])
            .await
            .expect_err("a stream that changes its node is closed");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let status = send_stream(&address, vec![batch(victim, vec![])])
            .await
            .expect_err("a stream naming its receiver is closed");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

        // After the forged steps (same driver queue), nothing moves for the whole window.
        let mut peer = PeerClient::connect(format!("http://{address}"))
            .await
            .expect("connect");
        peer.group_voters(pb::GroupVotersRequest {
            groups: vec![GROUP],
        })
        .await
        .expect("group voters");
        let watched = Instant::now();
        while watched.elapsed() < WATCH {
            for node in 1..=3 {
                assert!(cluster.node(node).running(), "node {node} exited");
                assert_eq!(
                    offsets(&cluster, node, "kept").await,
                    (0, RECORDS),
                    "node {node}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        produce(&mut cluster, "kept", "after", 10).await;
        let expected = from_offset_zero(
            (0..RECORDS)
                .map(|i| format!("r{i}"))
                .chain((0..10).map(|i| format!("after{i}"))),
        );
        cluster
            .wait_until_every_node_holds("kept", 0, &expected, Duration::from_secs(30))
            .await;
    })
    .await
    .expect("test timed out");
}

/// Node 4's liveness spoofed (a stream of empty batches claiming to be node 4) and `AddNode(4)`:
/// node 4 joins as a learner, never catches up (nothing runs there), and is taken out again;
/// the call fails with UNAVAILABLE. The controller never counted it toward its quorum, so it
/// keeps committing and the metadata no longer names node 4. (It used to become a voter at
/// once; three such calls left the controller without a quorum for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_node_of_a_node_that_never_catches_up_is_rolled_back() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 54);
        let leader = cluster.controller_leader().await;
        let address = cluster.node(leader).address.clone();
        // Keep claiming to be node 4 while the call runs.
        let (spoof, batches) = tokio::sync::mpsc::channel(4);
        spoof.send(batch(4, vec![])).await.expect("queue");
        let mut client = PeerClient::connect(format!("http://{address}"))
            .await
            .expect("connect");
        let stream = tokio::spawn(async move {
            client
                .raft(tokio_stream::wrappers::ReceiverStream::new(batches))
                .await
        });
        let mut admin = cluster.clients(leader).await.admin;
        let started = Instant::now();
        let status = loop {
            let outcome = admin
                .add_node(pb::AddNodeRequest {
                    node_id: 4,
                    address: "127.0.54.1:1".to_string(),
                })
                .await;
            match outcome {
                Err(status) if status.message().contains("has not been heard from") => {
                    // The spoofed stream has not reached the leader yet.
                    assert!(started.elapsed() < Duration::from_secs(10), "{status:?}");
                    spoof.send(batch(4, vec![])).await.expect("queue");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => break status,
                Ok(_) => panic!("a node that never answers was added"),
            }
        };
        assert_eq!(error_code(&status), "ERROR_CODE_UNAVAILABLE", "{status:?}");
        assert!(status.message().contains("did not catch up"), "{status:?}");
        drop(spoof);
        let _ = stream.await;
        // The controller still commits, and node 4 is gone from the metadata.
        cluster.create_topic("after", 1, 3).await;
        let leader = cluster.controller_leader().await;
        let info = cluster
            .clients(leader)
            .await
            .admin
            .cluster_info(pb::ClusterInfoRequest {})
            .await
            .expect("cluster info")
            .into_inner();
        let nodes: Vec<u64> = info.nodes.iter().map(|node| node.node_id).collect();
        assert_eq!(nodes, vec![1, 2, 3]);
    })
    .await
    .expect("test timed out");
}
