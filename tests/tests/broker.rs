//! The broker end to end: real `strata-server` processes on loopback, driven through the
//! generated gRPC clients (the same code any language generates from the proto).

use std::time::Duration;

use bytes::Bytes;
use strata_proto::v1 as pb;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::broker_client::BrokerClient;
use strata_tests::server::ServerProcess;
use tonic::transport::Channel;

struct Clients {
    admin: AdminClient<Channel>,
    broker: BrokerClient<Channel>,
}

async fn connect(server: &ServerProcess) -> Clients {
    let channel = Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect");
    Clients {
        admin: AdminClient::new(channel.clone()),
        broker: BrokerClient::new(channel),
    }
}

fn record(key: &str, value: &str) -> pb::Record {
    pb::Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![pb::RecordHeader {
            key: "h".to_string(),
            value: Some(Bytes::from_static(b"1")),
        }],
        ..pb::Record::default()
    }
}

fn produce_records(topic: &str, partition: u32, records: Vec<pb::Record>) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.to_string(),
        target: Some(pb::produce_request::Target::Partition(partition)),
        payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
            records,
        })),
        ..pb::ProduceRequest::default()
    }
}

fn earliest() -> Option<pb::StartPosition> {
    Some(pb::StartPosition {
        position: Some(pb::start_position::Position::Earliest(true)),
    })
}

async fn create(clients: &mut Clients, name: &str, partitions: u32) -> pb::TopicDescription {
    clients
        .admin
        .create_topic(pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            config: None,
        })
        .await
        .expect("create topic")
        .into_inner()
}

/// Create a topic, produce records, read them back decoded from earliest and by offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut clients = connect(&server).await;
    let topic = create(&mut clients, "events", 2).await;
    assert_eq!(topic.partitions, 2);
    assert!(topic.partition_info.iter().all(|p| p.leader_node_id == 1));
    let produced = clients
        .broker
        .produce(produce_records(
            "events",
            1,
            vec![record("a", "1"), record("b", "2")],
        ))
        .await
        .expect("produce")
        .into_inner();
    assert_eq!(
        (
            produced.partition,
            produced.base_offset,
            produced.last_offset
        ),
        (1, 0, 1)
    );
    let produced = clients
        .broker
        .produce(produce_records("events", 1, vec![record("c", "3")]))
        .await
        .expect("produce")
        .into_inner();
    assert_eq!(produced.base_offset, 2);
    let fetched = clients
        .broker
        .fetch(pb::FetchRequest {
            topic: "events".to_string(),
            partition: 1,
            start: earliest(),
            decode: true,
            ..pb::FetchRequest::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let values: Vec<&[u8]> = fetched
        .records
        .iter()
        .map(|r| r.value.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(values, [&b"1"[..], b"2", b"3"]);
    assert_eq!(fetched.high_watermark, 3);
    assert_eq!(fetched.next_offset, 3);
    assert_eq!(fetched.records[2].headers[0].key, "h");
}
