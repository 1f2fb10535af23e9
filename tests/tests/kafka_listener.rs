//! The Kafka listener against a real server: framing, ApiVersions and Metadata spoken by hand
//! (with the `kafka-protocol` codecs) and by kcat; a connection that breaks the protocol is
//! closed without affecting another.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strata_proto::v1 as pb;
use strata_tests::kafka;
use strata_tests::server::ServerProcess;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(server: &ServerProcess) -> TcpStream {
    kafka::connect(&kafka::bootstrap(server), IO_TIMEOUT)
}

/// Sends one request and returns the response body (after the correlation id, and the
/// header's tagged fields when `flexible_header`).
fn call<T: Encodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &T,
) -> Bytes {
    let mut header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strata-test")));
    header.unknown_tagged_fields.clear();
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api_key.request_header_version(version))
        .expect("header");
    request.encode(&mut body, version).expect("request");
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).expect("sending");
    let mut response = read_frame(stream).expect("a response");
    assert_eq!(response.get_i32(), correlation_id);
    if api_key != ApiKey::ApiVersions && api_key.response_header_version(version) >= 1 {
        assert_eq!(response.get_u8(), 0, "no tagged fields");
    }
    response
}

fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut frame).ok()?;
    Some(Bytes::from(frame))
}

/// Whether the server closed `stream` (EOF, not a timeout).
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
        && !matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn metadata(stream: &mut TcpStream, version: i16, topics: Option<&[&str]>) -> MetadataResponse {
    let request = MetadataRequest::default().with_topics(topics.map(|names| {
        names
            .iter()
            .map(|name| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
            })
            .collect()
    }));
    let mut body = call(stream, ApiKey::Metadata, version, 2, &request);
    MetadataResponse::decode(&mut body, version).expect("metadata response")
}

async fn create_topic(server: &ServerProcess, name: &str, partitions: u32) {
    let mut clients = server.clients().await;
    clients
        .admin
        .create_topic(pb::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            ..Default::default()
        })
        .await
        .expect("create topic");
}

#[tokio::test]
async fn api_versions_and_metadata_by_hand() {
    let (_data, server) = kafka::start_server();
    create_topic(&server, "orders", 3).await;
    let mut stream = connect(&server);

    // v3 is flexible; its response header is still v0.
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("strata-test"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    let mut body = call(&mut stream, ApiKey::ApiVersions, 3, 1, &request);
    let versions = ApiVersionsResponse::decode(&mut body, 3).expect("api versions");
    assert_eq!(versions.error_code, 0);
    let metadata_range = versions
        .api_keys
        .iter()
        .find(|api| api.api_key == ApiKey::Metadata as i16)
        .expect("Metadata advertised");
    assert_eq!(
        (metadata_range.min_version, metadata_range.max_version),
        (0, 7)
    );

    // A version newer than served (and than the codecs know, so written by hand: header v2
    // with a null client id and no tagged fields): UNSUPPORTED_VERSION (35) in a v0 body, and
    // the connection stays open.
    stream
        .write_all(&[0, 0, 0, 11, 0, 18, 0, 9, 0, 0, 0, 5, 0xff, 0xff, 0])
        .expect("sending");
    let mut body = read_frame(&mut stream).expect("an answer");
    assert_eq!(body.get_i32(), 5);
    let refused = ApiVersionsResponse::decode(&mut body, 0).expect("v0 body");
    assert_eq!(refused.error_code, 35);
    assert!(!refused.api_keys.is_empty());

    for version in [0, 1, 4, 7] {
        let all = metadata(&mut stream, version, None);
        let kafka_address = server.kafka_address.clone().expect("kafka address");
        assert_eq!(all.brokers.len(), 1, "v{version}: {all:?}");
        assert_eq!(
            format!("{}:{}", all.brokers[0].host.as_str(), all.brokers[0].port),
            kafka_address
        );
        let topic = all
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("orders"))
            .expect("orders listed");
        assert_eq!(topic.error_code, 0);
        assert_eq!(topic.partitions.len(), 3);
        for partition in &topic.partitions {
            assert_eq!(partition.leader_id.0, 1, "v{version}: {partition:?}");
            assert_eq!(partition.isr_nodes.len(), 1);
            if version >= 7 {
                assert!(partition.leader_epoch >= 1, "the raft term: {partition:?}");
            }
        }
        if version >= 1 {
            assert_eq!(all.controller_id.0, 1);
        }
    }
    let named = metadata(&mut stream, 7, Some(&["orders", "missing"]));
    assert_eq!(named.topics.len(), 2);
    assert_eq!(named.topics[1].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
}

#[test]
fn a_broken_connection_is_closed_and_others_carry_on() {
    let (_data, server) = kafka::start_server();
    let mut healthy = connect(&server);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown API key", {
            let mut frame = vec![0, 0, 0, 10];
            frame.extend_from_slice(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
            frame
        }),
        ("a negative size", vec![0xff, 0xff, 0xff, 0xf0]),
        ("a size above the limit", vec![0x7f, 0xff, 0xff, 0xff]),
        (
            "a header cut short",
            vec![0, 0, 0, 9, 0, 3, 0, 1, 0, 0, 0, 1, 0],
        ),
        (
            "a Metadata body declaring 2^31 topics",
            vec![
                0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff,
            ],
        ),
    ];
    for (what, bytes) in cases {
        let mut broken = connect(&server);
        broken.write_all(&bytes).expect("sending");
        assert!(closed(&mut broken), "{what}: the connection stays open");
        let answer = metadata(&mut healthy, 1, None);
        assert_eq!(
            answer.brokers.len(),
            1,
            "{what}: the other connection broke"
        );
    }
}

#[test]
fn kcat_lists_the_cluster() {
    let (_data, server) = kafka::start_server();
    let address = server.kafka_address.clone().expect("kafka address");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(create_topic(&server, "events", 2));
    let mut kcat = std::process::Command::new(kafka::kcat());
    kcat.args(["-b", &address, "-L", "-J", "-m", "10"]);
    let output = kafka::run(kcat, Duration::from_secs(30));
    let listed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("kcat -J prints JSON");
    assert_eq!(listed["brokers"][0]["id"], 1, "{listed}");
    assert_eq!(listed["brokers"][0]["name"], address, "{listed}");
    let events = listed["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == "events")
        .unwrap_or_else(|| panic!("events listed: {listed}"));
    assert_eq!(
        events["partitions"].as_array().expect("partitions").len(),
        2
    );
    assert_eq!(events["partitions"][0]["leader"], 1);
}

/// Metadata on every node of a 3-node cluster names every node's Kafka address and the same
/// leader for each partition; after the leader of a partition is killed, every surviving node
/// names a new leader in a higher epoch, and no longer lists the dead node. A node that does not
/// lead the controller auto-creates a topic a Metadata request names (through the leader).
#[tokio::test]
async fn every_node_names_the_cluster_wide_leaders() {
    let mut cluster =
        strata_tests::cluster::Cluster::start_kafka(3, 96, &["--kafka-auto-create-topics", "true"]);
    cluster.create_topic("spread", 4, 3).await;
    let kafka_addresses: Vec<String> = (1..=3)
        .map(|id| {
            cluster
                .node(id)
                .kafka_address
                .clone()
                .expect("kafka address")
        })
        .collect();
    // Each node's view: partition -> (leader, epoch), once every partition has a leader.
    let views = |ids: &[u64], cluster: &mut strata_tests::cluster::Cluster| {
        ids.iter()
            .map(|id| {
                let address = cluster.node(*id).kafka_address.clone().expect("address");
                let mut stream = TcpStream::connect(&address).expect("connect");
                stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
                let answer = metadata(&mut stream, 7, Some(&["spread"]));
                let mut brokers: Vec<String> = answer
                    .brokers
                    .iter()
                    .map(|b| format!("{}:{}", b.host.as_str(), b.port))
                    .collect();
                brokers.sort();
                let leaders: Vec<(i32, i32)> = answer.topics[0]
                    .partitions
                    .iter()
                    .map(|p| (p.leader_id.0, p.leader_epoch))
                    .collect();
                (brokers, leaders)
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let agreed = loop {
        let seen = views(&[1, 2, 3], &mut cluster);
        let all_led = seen[0].1.len() == 4 && seen[0].1.iter().all(|(leader, _)| *leader > 0);
        let all_listed = seen[0].0.len() == 3;
        if all_led && all_listed && seen.iter().all(|view| view == &seen[0]) {
            break seen[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes never agreed on the leaders: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut expected = kafka_addresses.clone();
    expected.sort();
    assert_eq!(agreed.0, expected);
    // Auto-creation, asked of a node that does not lead the controller; v4+ clients may say no.
    let controller = cluster.controller_leader().await;
    let other = (1..=3).find(|id| *id != controller).expect("another node");
    let address = cluster.node(other).kafka_address.clone().expect("address");
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut declined = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("declined")))),
    ]));
    declined.allow_auto_topic_creation = false;
    let mut body = call(&mut stream, ApiKey::Metadata, 7, 3, &declined);
    let answer = MetadataResponse::decode(&mut body, 7).expect("metadata");
    assert_eq!(answer.topics[0].error_code, 3, "not created: {answer:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = metadata(&mut stream, 7, Some(&["auto"]));
        let topic = &answer.topics[0];
        if topic.error_code == 0 && topic.partitions.iter().all(|p| p.leader_id.0 > 0) {
            assert_eq!(topic.partitions.len(), 1);
            assert_eq!(topic.partitions[0].replica_nodes.len(), 3);
            break;
        }
        assert!(
            [0, 5].contains(&topic.error_code),
            "LEADER_NOT_AVAILABLE while it is created, then served: {answer:?}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "never created: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (old_leader, old_epoch) = agreed.1[0];
    cluster.node(old_leader as u64).kill9();
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != old_leader as u64).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = views(&survivors, &mut cluster);
        let moved = seen.iter().all(|(_, leaders)| {
            let (leader, epoch) = leaders[0];
            leader > 0 && leader != old_leader && epoch > old_epoch
        });
        let listed_alive = seen.iter().all(|(brokers, _)| brokers.len() == 2);
        if moved && listed_alive && seen[0] == seen[1] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partition 0 never moved off node {old_leader} in every view: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ListOffsets at every served version (kcat asks v2, Java clients v4+): each answer decodes
/// at its version, with the leader epoch only where the version has it.
#[tokio::test]
async fn list_offsets_answers_every_version() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let (_data, server) = kafka::start_server();
    create_topic(&server, "offsets", 1).await;
    let mut stream = connect(&server);
    for version in 1..=4 {
        for (timestamp, expected) in [(-2i64, 0i64), (-1, 0)] {
            let request = ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str("offsets")))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(timestamp),
                        ]),
                ]);
            let mut body = call(&mut stream, ApiKey::ListOffsets, version, 9, &request);
            let answer = ListOffsetsResponse::decode(&mut body, version).expect("decodes");
            let partition = &answer.topics[0].partitions[0];
            assert_eq!(partition.error_code, 0, "v{version}: {answer:?}");
            assert_eq!(partition.offset, expected, "v{version}");
            if version >= 4 {
                assert!(partition.leader_epoch >= 1, "v{version}: {answer:?}");
            }
        }
    }
}
