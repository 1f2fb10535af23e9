//! Fuzzing the Kafka listener with random frames and mutated valid ones (seeded; the seed is
//! printed, replay with `STRATA_TEST_SEED=<seed>`): a valid request of every served API
//! (`SERVED`, at every served version), encoded with `kafka-protocol`'s client codecs, then
//! bits flipped, cut short, length fields rewritten, bytes inserted or replaced, and the frame
//! size fixed up or not.
//!
//! - In process: the frame reader, the header parser, the dispatch of every served API with
//!   its decoder (`apis::handle`, on a node without a broker yet) and the SASL state machine
//!   and parsers never panic, whatever the bytes.
//! - Against a real server: the server never dies, a healthy connection keeps being answered,
//!   and nothing garbled is stored: every record read back over gRPC is one a valid produce
//!   sent (a batch's CRC-32C covers its records, so a mutated one is refused whole).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::FutureExt as _;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use strata_proto::v1 as pb;
use strata_server::kafka::Frontend;
use strata_server::kafka::apis::{self, Context, SERVED};
use strata_server::kafka::frame::{self, Request};
use strata_server::kafka::sasl::{self, ClientFirst, Sasl};
use strata_server::security::acl::Policy;
use strata_server::security::{ConnectionInfo, Principal};
use strata_server::service::access::Access;
use strata_server::service::authenticate::Authenticator;
use strata_tests::server::ServerProcess;
use strata_tests::{Seed, data_batch};

/// The topic valid produces write to.
const TOPIC: &str = "fuzz";
/// In process: cases tried, at most, and for at most this long.
const IN_PROCESS_CASES_MAX: u64 = 20_000;
const IN_PROCESS_TIME_MAX: Duration = Duration::from_secs(20);
/// Against a server: cases sent, at most, and for at most this long.
const SERVER_CASES_MAX: u64 = 400;
const SERVER_TIME_MAX: Duration = Duration::from_secs(60);
/// How long a fuzzing connection waits for an answer or a close before moving on.
const ANSWER_WAIT: Duration = Duration::from_millis(300);
/// Largest frame the in-process reader accepts (the server's own limit is its default).
const FRAME_BYTES_MAX: usize = 1 << 20;

fn name(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// `request` encoded at `version`.
fn body<T: Encodable>(version: i16, request: &T) -> Vec<u8> {
    let mut body = BytesMut::new();
    request
        .encode(&mut body, version)
        .unwrap_or_else(|e| panic!("a sample request at v{version}: {e}"));
    body.to_vec()
}

/// A valid request body of `api_key` at `version`; a produce carries one valid batch whose
/// value is `fuzz{tag}-0`.
fn sample(api_key: ApiKey, version: i16, tag: u64) -> Option<Vec<u8>> {
    let topic = || TopicName(name(TOPIC));
    let group = || GroupId(name("fuzz-group"));
    Some(match api_key {
        ApiKey::Produce => {
            let batch = data_batch(&format!("fuzz{tag}"), 1, 1_700_000_000_000).freeze();
            body(
                version,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(5_000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(topic())
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(batch)),
                            ]),
                    ]),
            )
        }
        ApiKey::Fetch => body(
            version,
            &FetchRequest::default()
                .with_max_wait_ms(10)
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]),
        ),
        ApiKey::ListOffsets => body(
            version,
            &ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-2)]),
            ]),
        ),
        ApiKey::Metadata => body(
            version,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic())),
            ])),
        ),
        ApiKey::OffsetCommit => body(
            version,
            &OffsetCommitRequest::default()
                .with_group_id(group())
                .with_generation_id_or_member_epoch(1)
                .with_member_id(name("member"))
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default().with_committed_offset(0),
                        ]),
                ]),
        ),
        ApiKey::OffsetFetch => body(
            version,
            &OffsetFetchRequest::default()
                .with_group_id(group())
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0]),
                ])),
        ),
        ApiKey::FindCoordinator => body(
            version,
            &FindCoordinatorRequest::default().with_key(name("fuzz-group")),
        ),
        ApiKey::JoinGroup => body(
            version,
            &JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(name("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(name("range"))
                        .with_metadata(Bytes::from_static(&[
                            0, 1, 0, 0, 0, 1, 0, 4, b'f', b'u', b'z', b'z',
                        ])),
                ]),
        ),
        ApiKey::Heartbeat => body(
            version,
            &HeartbeatRequest::default()
                .with_group_id(group())
                .with_generation_id(1)
                .with_member_id(name("member")),
        ),
        ApiKey::LeaveGroup => body(
            version,
            &LeaveGroupRequest::default()
                .with_group_id(group())
                .with_member_id(name("member")),
        ),
        ApiKey::SyncGroup => body(
            version,
            &SyncGroupRequest::default()
                .with_group_id(group())
                .with_generation_id(1)
                .with_member_id(name("member")),
        ),
        ApiKey::DescribeGroups => body(
            version,
            &DescribeGroupsRequest::default().with_groups(vec![group()]),
        ),
        ApiKey::ListGroups => body(version, &ListGroupsRequest::default()),
        ApiKey::SaslHandshake => body(
            version,
            &SaslHandshakeRequest::default().with_mechanism(name("PLAIN")),
        ),
        // The client's software name and version exist from v3 on.
        ApiKey::ApiVersions if version >= 3 => body(
            version,
            &ApiVersionsRequest::default()
                .with_client_software_name(name("fuzz"))
                .with_client_software_version(name("1")),
        ),
        ApiKey::ApiVersions => body(version, &ApiVersionsRequest::default()),
        ApiKey::CreateTopics => body(
            version,
            &CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(name("fuzz-created")))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ]),
        ),
        ApiKey::DeleteTopics => body(
            version,
            &DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topic_names(vec![TopicName(name("fuzz-created"))]),
        ),
        ApiKey::InitProducerId => body(
            version,
            &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
        ),
        ApiKey::DescribeConfigs => body(
            version,
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name(TOPIC)),
            ]),
        ),
        ApiKey::SaslAuthenticate => body(
            version,
            &SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from_static(b"n,,n=alice,r=fuzznonce")),
        ),
        _ => return None,
    })
}

/// The whole frame (size, header, body) of `request` at `version`.
fn encode(api_key: ApiKey, version: i16, correlation_id: i32, request: &[u8]) -> Vec<u8> {
    let mut header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(name("fuzz")));
    header.unknown_tagged_fields.clear();
    let mut body = BytesMut::new();
    header
        .encode(&mut body, api_key.request_header_version(version))
        .expect("header encodes");
    body.extend_from_slice(request);
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    frame
}

/// Every served API at every served version the codecs encode (Produce v0–2 are parsed by
/// hand, and fuzzed by that parser's own tests) with a sample: (api key, version).
fn served_versions() -> Vec<(ApiKey, i16)> {
    SERVED
        .iter()
        .flat_map(|served| {
            let min = served.min.max(served.api_key.valid_versions().min);
            (min..=served.max).map(move |v| (served.api_key, v))
        })
        .filter(|(api_key, version)| sample(*api_key, *version, 0).is_some())
        .collect()
}

/// A case: a valid frame, often mutated, or random bytes. Returns the bytes and what was
/// done (printed when a case fails).
fn case(seed: &mut Seed, served: &[(ApiKey, i16)], tag: u64) -> (Vec<u8>, String) {
    if seed.below(10) == 0 {
        let length = seed.below(64) as usize;
        let mut frame = Vec::new();
        frame.put_i32(length as i32);
        frame.extend(seed.bytes(length));
        return (frame, format!("random {length} bytes"));
    }
    let (api_key, version) = served[seed.below(served.len() as u64) as usize];
    let request = sample(api_key, version, tag).expect("sample of a served API");
    let mut frame = encode(api_key, version, tag as i32, &request);
    let mut what = format!("{api_key:?} v{version}");
    // A quarter stay valid: the server must keep serving those too.
    let mutations = if seed.below(4) == 0 {
        0
    } else {
        1 + seed.below(3)
    };
    for _ in 0..mutations {
        what.push_str(&format!(", {}", mutate(seed, &mut frame)));
    }
    if mutations > 0 && seed.below(2) == 0 && frame.len() >= 4 {
        // Fix the size, so the body decoder (not the framing) meets the damage.
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        what.push_str(", size fixed");
    }
    (frame, what)
}

fn mutate(seed: &mut Seed, frame: &mut Vec<u8>) -> String {
    if frame.is_empty() {
        frame.push(seed.next_u64() as u8);
        return "grown".to_string();
    }
    let at = seed.below(frame.len() as u64) as usize;
    match seed.below(6) {
        0 => {
            let bit = seed.below(8);
            frame[at] ^= 1 << bit;
            format!("bit {bit} of byte {at} flipped")
        }
        1 => {
            frame.truncate(at);
            format!("cut at {at}")
        }
        2 => {
            let values = [0, -1, i32::MAX, i32::MIN, 0x7fff, seed.next_u64() as i32];
            let value = values[seed.below(values.len() as u64) as usize];
            let end = (at + 4).min(frame.len());
            let bytes = value.to_be_bytes();
            frame[at..end].copy_from_slice(&bytes[..end - at]);
            format!("i32 {value} at {at}")
        }
        3 => {
            let values = [0, -1, i16::MAX, i16::MIN, seed.next_u64() as i16];
            let value = values[seed.below(values.len() as u64) as usize];
            let end = (at + 2).min(frame.len());
            let bytes = value.to_be_bytes();
            frame[at..end].copy_from_slice(&bytes[..end - at]);
            format!("i16 {value} at {at}")
        }
        4 => {
            let length = 1 + seed.below(16) as usize;
            let inserted = seed.bytes(length);
            frame.splice(at..at, inserted);
            format!("{length} bytes inserted at {at}")
        }
        _ => {
            let end = (at + 1 + seed.below(16) as usize).min(frame.len());
            let replaced = seed.bytes(end - at);
            frame[at..end].copy_from_slice(&replaced);
            format!("bytes {at}..{end} replaced")
        }
    }
}

/// A frontend without a broker (as while a node starts), with password authentication and an
/// authenticator, so every handler and the SASL exchange run up to what needs the broker.
fn frontend() -> Arc<Frontend> {
    let (_, broker) = tokio::sync::watch::channel(None);
    let policy = Arc::new(Policy {
        enabled: true,
        superusers: Default::default(),
    });
    let methods = "password".parse().expect("methods");
    let authenticator =
        Authenticator::new(methods, policy.clone(), broker.clone()).expect("random");
    Arc::new(
        // No peers: every other node counts as dead.
        Frontend::new(
            broker,
            policy,
            methods,
            false,
            FRAME_BYTES_MAX,
            None,
            Arc::new(|_| false),
        )
        .with_authenticator(Arc::new(authenticator)),
    )
}

/// Reads, parses and handles one frame in process, as a connection would.
async fn handle_in_process(frontend: &Arc<Frontend>, bytes: &[u8]) {
    let mut input = bytes;
    let Ok(Some(frame)) = frame::read_frame(&mut input, FRAME_BYTES_MAX).await else {
        return;
    };
    let Ok(request) = Request::parse(frame) else {
        return;
    };
    let connection = ConnectionInfo {
        remote: None,
        tls: true,
        certificate: None,
    };
    if sasl::is_sasl(request.api_key) {
        if apis::served(request.api_key, request.api_version).is_some() {
            let mut sasl = Sasl::new(false);
            let _ = sasl.handle(frontend, &connection, request.clone()).await;
            // And as the second message of an exchange that chose each mechanism.
            for mechanism in ["PLAIN", "SCRAM-SHA-256"] {
                let mut sasl = Sasl::new(false);
                let handshake = encode(
                    ApiKey::SaslHandshake,
                    1,
                    1,
                    &body(
                        1,
                        &SaslHandshakeRequest::default().with_mechanism(name(mechanism)),
                    ),
                );
                let mut handshake = Bytes::from(handshake);
                handshake.advance(4);
                let handshake = Request::parse(handshake).expect("a valid handshake");
                let _ = sasl.handle(frontend, &connection, handshake).await;
                let _ = sasl.handle(frontend, &connection, request.clone()).await;
            }
        }
        return;
    }
    let context = Context {
        frontend: frontend.clone(),
        access: Access::new(Principal::User("fuzz".to_string()), frontend_policy()),
        connection,
    };
    let _ = apis::handle(&context, request).await;
}

fn frontend_policy() -> Arc<Policy> {
    Arc::new(Policy {
        enabled: true,
        superusers: Default::default(),
    })
}

/// Random and mutated frames through the frame reader, the header parser, every served API's
/// dispatch and decoder, and the SASL state machine and parsers, in process: no panic (a
/// panic fails the test with its seed and case printed). Time is paused: a failed login's
/// slowdown passes at once.
#[tokio::test(start_paused = true)]
async fn decoders_never_panic_on_random_and_mutated_frames() {
    let mut seed = Seed::from_env("decoders_never_panic_on_random_and_mutated_frames", 13);
    let served = served_versions();
    assert!(!served.is_empty());
    let frontend = frontend();
    let started = Instant::now();
    let mut cases = 0;
    while cases < IN_PROCESS_CASES_MAX && started.elapsed() < IN_PROCESS_TIME_MAX {
        let (bytes, what) = case(&mut seed, &served, cases);
        let handled = AssertUnwindSafe(async {
            handle_in_process(&frontend, &bytes).await;
            // The SASL parsers on the body alone.
            let body = bytes.get(4..).unwrap_or_default();
            let _ = sasl::parse_plain(body);
            let _ = ClientFirst::parse(body);
        })
        .catch_unwind()
        .await;
        assert!(
            handled.is_ok(),
            "case {cases} ({what}) panicked: {bytes:?} (the seed is printed above)"
        );
        cases += 1;
    }
    eprintln!("{cases} cases in {:?}", started.elapsed());
    assert!(cases >= 1_000, "only {cases} cases ran");
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connecting to the Kafka listener");
    stream
        .set_read_timeout(Some(ANSWER_WAIT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    stream
}

/// Metadata v1 on `stream`, answered within 10 s.
fn healthy_metadata(stream: &mut TcpStream, correlation_id: i32) -> bool {
    let request = body(1, &MetadataRequest::default().with_topics(None));
    let frame = encode(ApiKey::Metadata, 1, correlation_id, &request);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut size = [0u8; 4];
    let mut read = 0;
    while read < 4 {
        match stream.read(&mut size[read..]) {
            Ok(0) => return false,
            Ok(n) => read += n,
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return false,
        }
    }
    let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    let mut read = 0;
    while read < body.len() {
        match stream.read(&mut body[read..]) {
            Ok(0) => return false,
            Ok(n) => read += n,
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return false,
        }
    }
    body.len() >= 4 && (&body[..4]).get_i32() == correlation_id
}

/// Random and mutated frames (valid produces among the originals) thrown at a real server's
/// Kafka listener: it never dies, a healthy connection is answered after every batch of
/// cases, and every record stored is one a valid produce sent, read back over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_survives_mutated_frames_and_stores_no_garbage() {
    let mut seed = Seed::from_env("a_server_survives_mutated_frames_and_stores_no_garbage", 31);
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::launch_with(
        data.path(),
        1,
        "127.0.0.1:0",
        None,
        &["--kafka-listen".to_string(), "127.0.0.1:0".to_string()],
    );
    server.wait_ready();
    let mut clients = server.clients().await;
    clients.create_topic(TOPIC, 1).await;
    let address = server.kafka_address.clone().expect("kafka address");
    let served = served_versions();
    let mut healthy = connect(&address);
    let started = Instant::now();
    let thrown = tokio::task::spawn_blocking(move || {
        let mut cases = 0;
        while cases < SERVER_CASES_MAX && started.elapsed() < SERVER_TIME_MAX {
            let (bytes, what) = case(&mut seed, &served, cases);
            let mut stream = connect(&address);
            // The server may close mid-frame: a failed write is an answer too.
            let _ = stream.write_all(&bytes);
            let mut answer = [0u8; 4096];
            let _ = stream.read(&mut answer);
            drop(stream);
            if cases % 25 == 24 {
                assert!(
                    healthy_metadata(&mut healthy, cases as i32),
                    "after case {cases} ({what}): the healthy connection was not answered"
                );
            }
            cases += 1;
        }
        cases
    })
    .await
    .expect("the fuzzing thread");
    eprintln!("{thrown} cases in {:?}", started.elapsed());
    assert!(server.running(), "the server died");

    // Every stored record is one a valid produce sent, whole: `fuzz<case>-0`.
    let values = clients.read_values(TOPIC, 0).await;
    for (offset, value) in &values {
        let case = value
            .strip_prefix("fuzz")
            .and_then(|rest| rest.strip_suffix("-0"))
            .and_then(|case| case.parse::<u64>().ok());
        assert!(
            case.is_some_and(|case| case < thrown),
            "offset {offset}: stored garbage {value:?}"
        );
    }
    eprintln!("{} valid records stored", values.len());
    // The gRPC API still serves as well.
    let described = clients
        .admin
        .describe_topic(pb::DescribeTopicRequest {
            name: TOPIC.to_string(),
        })
        .await;
    assert!(described.is_ok(), "{described:?}");
}
