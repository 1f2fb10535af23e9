//! Bad input never panics the server nor changes stored data: a table of invalid requests,
//! each with the gRPC code and the Strata error code it must get, then a check that the server
//! still serves and the log holds exactly what it held.

use bytes::Bytes;
use strata_proto::v1 as pb;
use strata_tests::server::{Clients, ServerProcess};
use tonic::Code;

fn create(
    name: &str,
    partitions: u32,
    replication_factor: u32,
    config: Option<pb::TopicConfig>,
) -> pb::CreateTopicRequest {
    pb::CreateTopicRequest {
        name: name.to_string(),
        partitions,
        replication_factor,
        config,
    }
}

fn config(
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: Option<u64>,
) -> Option<pb::TopicConfig> {
    Some(pb::TopicConfig {
        retention_ms,
        retention_bytes,
        segment_bytes,
        ..Default::default()
    })
}

fn produce(
    topic: &str,
    partition: u32,
    payload: Option<pb::produce_request::Payload>,
) -> pb::ProduceRequest {
    pb::ProduceRequest {
        request_id: 0,
        topic: topic.to_string(),
        target: Some(pb::produce_request::Target::Partition(partition)),
        payload,
    }
}

fn batch(payload: Vec<u8>) -> Option<pb::produce_request::Payload> {
    Some(pb::produce_request::Payload::Batch(Bytes::from(payload)))
}

fn valid_batch() -> Vec<u8> {
    let mut builder = strata_proto::batch::BatchBuilder::new();
    builder.push(1, Some(b"k"), Some(b"v"), &[]);
    builder.finish().to_vec()
}

fn records(values: Vec<Vec<u8>>) -> Option<pb::produce_request::Payload> {
    Some(pb::produce_request::Payload::Records(pb::RecordList {
        records: values
            .into_iter()
            .map(|v| pb::Record {
                value: Some(Bytes::from(v)),
                ..pb::Record::default()
            })
            .collect(),
    }))
}

fn fetch(
    topic: &str,
    partition: u32,
    offset: u64,
    max_wait_ms: u32,
    max_bytes: u32,
) -> pb::FetchRequest {
    pb::FetchRequest {
        topic: topic.to_string(),
        partition,
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Offset(offset)),
        }),
        max_wait_ms,
        max_bytes,
        ..pb::FetchRequest::default()
    }
}

enum Call {
    Create(pb::CreateTopicRequest),
    Describe(&'static str),
    Delete(&'static str),
    Alter(&'static str, Option<pb::TopicConfig>),
    Produce(pb::ProduceRequest),
    Fetch(pb::FetchRequest),
    ListOffsets(&'static str, u32),
    SubscribeWithoutStart,
}

async fn call(clients: &Clients, call: Call) -> Result<(), tonic::Status> {
    let mut admin = clients.admin.clone();
    let mut broker = clients.broker.clone();
    match call {
        Call::Create(request) => admin.create_topic(request).await.map(|_| ()),
        Call::Describe(name) => admin
            .describe_topic(pb::DescribeTopicRequest {
                name: name.to_string(),
            })
            .await
            .map(|_| ()),
        Call::Delete(name) => admin
            .delete_topic(pb::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await
            .map(|_| ()),
        Call::Alter(name, config) => admin
            .alter_topic_config(pb::AlterTopicConfigRequest {
                name: name.to_string(),
                config,
                unset: Vec::new(),
            })
            .await
            .map(|_| ()),
        Call::Produce(request) => broker.produce(request).await.map(|_| ()),
        Call::Fetch(request) => broker.fetch(request).await.map(|_| ()),
        Call::ListOffsets(topic, partition) => broker
            .list_offsets(pb::ListOffsetsRequest {
                topic: topic.to_string(),
                partition,
                position: None,
            })
            .await
            .map(|_| ()),
        Call::SubscribeWithoutStart => {
            let credit = pb::SubscribeRequest {
                request: Some(pb::subscribe_request::Request::Credit(
                    pb::subscribe_request::Credit { bytes: 10 },
                )),
            };
            broker
                .subscribe(tokio_stream::iter(vec![credit]))
                .await
                .map(|_| ())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors_and_change_nothing() {
    use pb::ErrorCode as E;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let clients = server.clients().await;
    call(&clients, Call::Create(create("good", 2, 1, None)))
        .await
        .expect("create");
    call(
        &clients,
        Call::Produce(produce("good", 0, batch(valid_batch()))),
    )
    .await
    .expect("produce");

    let mut corrupt = valid_batch();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let control =
        strata_proto::batch::control_batch(strata_proto::batch::ControlType::LeaderNoop, 1, b"")
            .to_vec();
    // A batch claiming gzip (codec 1) whose records are not gzip: the attribute bit flipped and
    // the CRC fixed up.
    let mut gzip = valid_batch();
    gzip[22] |= 1;
    let crc = crc32c::crc32c(&gzip[21..]);
    gzip[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut huge = strata_proto::batch::BatchBuilder::new();
    huge.push(1, None, Some(&vec![7u8; (1 << 20) + 10]), &[]);
    let huge = huge.finish().to_vec();

    let table: Vec<(&str, Call, Code, E)> = vec![
        (
            "empty topic name",
            Call::Create(create("", 1, 1, None)),
            Code::InvalidArgument,
            E::InvalidTopicName,
        ),
        (
            "slash in name",
            Call::Create(create("a/b", 1, 1, None)),
            Code::InvalidArgument,
            E::InvalidTopicName,
        ),
        (
            "dot-dot name",
            Call::Create(create("..", 1, 1, None)),
            Code::InvalidArgument,
            E::InvalidTopicName,
        ),
        (
            "name too long",
            Call::Create(create(&"x".repeat(201), 1, 1, None)),
            Code::InvalidArgument,
            E::InvalidTopicName,
        ),
        (
            "zero partitions",
            Call::Create(create("t0", 0, 1, None)),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "too many partitions",
            Call::Create(create("t1", 10_001, 1, None)),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "zero replication",
            Call::Create(create("t2", 1, 0, None)),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "replication above nodes",
            Call::Create(create("t3", 1, 2, None)),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "tiny segments",
            Call::Create(create("t4", 1, 1, config(None, None, Some(10)))),
            Code::InvalidArgument,
            E::InvalidConfig,
        ),
        (
            "zero retention",
            Call::Create(create("t5", 1, 1, config(Some(0), None, None))),
            Code::InvalidArgument,
            E::InvalidConfig,
        ),
        (
            "duplicate topic",
            Call::Create(create("good", 1, 1, None)),
            Code::AlreadyExists,
            E::TopicAlreadyExists,
        ),
        (
            "describe unknown",
            Call::Describe("nope"),
            Code::NotFound,
            E::UnknownTopicOrPartition,
        ),
        (
            "delete unknown",
            Call::Delete("nope"),
            Code::NotFound,
            E::UnknownTopicOrPartition,
        ),
        (
            "alter unknown",
            Call::Alter("nope", config(Some(5), None, None)),
            Code::NotFound,
            E::UnknownTopicOrPartition,
        ),
        (
            "alter huge segments",
            Call::Alter("good", config(None, None, Some(3 << 30))),
            Code::InvalidArgument,
            E::InvalidConfig,
        ),
        (
            "produce unknown topic",
            Call::Produce(produce("nope", 0, batch(valid_batch()))),
            Code::NotFound,
            E::UnknownTopicOrPartition,
        ),
        (
            "produce unknown partition",
            Call::Produce(produce("good", 2, batch(valid_batch()))),
            Code::NotFound,
            E::UnknownTopicOrPartition,
        ),
        (
            "produce empty topic",
            Call::Produce(produce("", 0, batch(valid_batch()))),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "produce no payload",
            Call::Produce(produce("good", 0, None)),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "produce empty records",
            Call::Produce(produce("good", 0, records(vec![]))),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "produce garbage batch",
            Call::Produce(produce("good", 0, batch(vec![1, 2, 3]))),
            Code::InvalidArgument,
            E::CorruptBatch,
        ),
        (
            "produce bad CRC",
            Call::Produce(produce("good", 0, batch(corrupt))),
            Code::InvalidArgument,
            E::CorruptBatch,
        ),
        (
            "produce control batch",
            Call::Produce(produce("good", 0, batch(control))),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "produce gzip batch whose records are not gzip",
            Call::Produce(produce("good", 0, batch(gzip))),
            Code::InvalidArgument,
            E::CorruptBatch,
        ),
        (
            "produce batch too large",
            Call::Produce(produce("good", 0, batch(huge))),
            Code::InvalidArgument,
            E::RecordTooLarge,
        ),
        (
            "produce record too large",
            Call::Produce(produce("good", 0, records(vec![vec![1; 2 << 20]]))),
            Code::InvalidArgument,
            E::RecordTooLarge,
        ),
        (
            "fetch past the end",
            Call::Fetch(fetch("good", 0, 99, 0, 0)),
            Code::OutOfRange,
            E::OffsetOutOfRange,
        ),
        (
            "fetch wait too long",
            Call::Fetch(fetch("good", 0, 0, 100_000, 0)),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "fetch too many bytes",
            Call::Fetch(fetch("good", 0, 0, 0, 100 << 20)),
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
        (
            "fetch unknown partition",
            Call::Fetch(fetch("good", 7, 0, 0, 0)),
            Code::NotFound,
            E::UnknownTopicOrPartition,
        ),
        (
            "list offsets unknown topic",
            Call::ListOffsets("nope", 0),
            Code::NotFound,
            E::UnknownTopicOrPartition,
        ),
        (
            "subscribe without start",
            Call::SubscribeWithoutStart,
            Code::InvalidArgument,
            E::InvalidArgument,
        ),
    ];
    assert!(table.len() >= 20);
    for (name, request, code, error_code) in table {
        let status = call(&clients, request).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        let detail = <pb::ErrorDetail as prost::Message>::decode(status.details()).expect("detail");
        assert_eq!(detail.code, error_code as i32, "{name}: {status:?}");
        assert_eq!(
            status
                .metadata()
                .get("strata-error-code")
                .and_then(|v| v.to_str().ok()),
            Some(error_code.as_str_name()),
            "{name}"
        );
        assert!(!status.message().is_empty(), "{name}");
    }

    // Still serving, and the log holds exactly the one good batch plus this one.
    call(
        &clients,
        Call::Produce(produce("good", 0, batch(valid_batch()))),
    )
    .await
    .expect("produce after");
    let mut broker = clients.broker.clone();
    let fetched = broker
        .fetch(pb::FetchRequest {
            decode: true,
            ..fetch("good", 0, 0, 0, 0)
        })
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(fetched.records.len(), 2);
    assert_eq!(fetched.high_watermark, 2);
    let topics = clients
        .admin
        .clone()
        .list_topics(pb::ListTopicsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(topics.topics.len(), 1, "no bad create left a topic behind");
    assert_eq!(
        topics.topics[0]
            .config
            .as_ref()
            .and_then(|c| c.segment_bytes),
        Some(1 << 30)
    );
}
