//! Authentication and ACLs against real servers (`--authentication password --authorization
//! on`). Every method of the strata.v1 Broker, Admin and Groups services, enumerated from the
//! proto's descriptor set, is called without credentials, with a wrong password, as a user
//! without ACLs and as a user with the ACLs the method table asks for: a method without a rule
//! in the table or without a call here fails the test. Also: deny overrides allow, prefixed
//! ACLs, lists filtered, health open and reflection authenticated, and deleting a user or an
//! ACL takes effect on every node of a 3-node cluster within a second.
//!
//! Cluster slots: 65.

use std::collections::BTreeSet;
use std::sync::Once;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::future::join_all;
use strata_proto::v1 as pb;
use strata_server::security::acl::{Operation, ResourceType};
use strata_server::service::access::{self, Rule};
use strata_tests::certs::{node_flags, tls_init, trusting_client};
use strata_tests::cluster::Cluster;
use strata_tests::error_code;
use strata_tests::server::{Clients, ServerProcess};
use tokio_stream::StreamExt as _;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

const ADMIN: (&str, &str) = ("admin", "admin-password");
const ALICE: (&str, &str) = ("alice", "alice-password");
/// How long a change to users or ACLs may take to reach every node.
const PROPAGATION: Duration = Duration::from_secs(1);
/// How long a node may take to have its bootstrap user.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(30);

/// The security flags every server of these tests starts with, after its TLS flags
/// (`strata_tests::certs::node_flags`).
fn secure_args() -> Vec<&'static str> {
    vec![
        "--authentication",
        "password",
        "--authorization",
        "on",
        "--superusers",
        "User:admin",
    ]
}

/// The bootstrap superuser comes from the environment servers inherit. Set once, before any
/// test of this binary starts a server: every test calls this first.
fn bootstrap_env() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // SAFETY: runs before any test of this binary spawns a process or a thread that reads
        // the environment (each test calls it first and waits for it), and std serializes its
        // own environment access.
        unsafe { std::env::set_var("STRATA_BOOTSTRAP_USER", format!("{}:{}", ADMIN.0, ADMIN.1)) };
    });
}

/// Credentials a call carries: none, or a user name and password.
#[derive(Clone, Copy, Debug)]
enum Auth {
    None,
    Password(&'static str, &'static str),
}

fn request<T>(message: T, auth: Auth) -> Request<T> {
    let mut request = Request::new(message);
    if let Auth::Password(user, password) = auth {
        let encoded = STANDARD.encode(format!("{user}:{password}"));
        let value: MetadataValue<_> = format!("Basic {encoded}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request.set_timeout(Duration::from_secs(20));
    request
}

const TOPIC: &str = "orders";
const DOOMED_TOPIC: &str = "doomed";
const GROUP: &str = "billing";

fn records(value: &str) -> Option<pb::produce_request::Payload> {
    Some(pb::produce_request::Payload::Records(pb::RecordList {
        records: vec![pb::Record {
            value: Some(value.as_bytes().to_vec().into()),
            ..pb::Record::default()
        }],
    }))
}

fn earliest() -> Option<pb::StartPosition> {
    Some(pb::StartPosition {
        position: Some(pb::start_position::Position::Earliest(true)),
    })
}

/// A status as the refusal it stands for; a produce stream's per-request error (a topic the
/// principal may not write to) becomes a status with the same code.
fn stream_reply_status(reply: pb::ProduceResponse) -> Result<(), Status> {
    match reply.error {
        None => Ok(()),
        Some(error) if error.code() == pb::ErrorCode::AuthorizationFailed => {
            Err(Status::permission_denied(error.message))
        }
        Some(error) => Err(Status::failed_precondition(error.message)),
    }
}

/// Calls the method `path` once with `auth`. Panics for a method this test has no call for,
/// so a new method fails the test until it gets one.
async fn call(clients: &Clients, path: &str, auth: Auth) -> Result<(), Status> {
    let Clients {
        mut admin,
        mut broker,
        mut groups,
    } = clients.clone();
    let name = |topic: &str| topic.to_string();
    match path {
        "/strata.v1.Broker/Produce" => broker
            .produce(request(
                pb::ProduceRequest {
                    topic: name(TOPIC),
                    payload: records("p"),
                    ..pb::ProduceRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Broker/ProduceStream" => {
            let outbound = tokio_stream::iter([pb::ProduceRequest {
                request_id: 1,
                topic: name(TOPIC),
                payload: records("s"),
                ..pb::ProduceRequest::default()
            }]);
            let mut replies = broker
                .produce_stream(request(outbound, auth))
                .await?
                .into_inner();
            match replies.message().await? {
                Some(reply) => stream_reply_status(reply),
                None => Err(Status::internal("the produce stream ended without a reply")),
            }
        }
        "/strata.v1.Broker/Fetch" => broker
            .fetch(request(
                pb::FetchRequest {
                    topic: name(TOPIC),
                    start: earliest(),
                    max_bytes: 1 << 20,
                    ..pb::FetchRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Broker/Subscribe" => {
            let start = pb::SubscribeRequest {
                request: Some(pb::subscribe_request::Request::Start(
                    pb::subscribe_request::Start {
                        topic: name(TOPIC),
                        partition: 0,
                        start: earliest(),
                        decode: false,
                    },
                )),
            };
            // The stream stays open (no credit is sent): the reply to the start is enough.
            let outbound = tokio_stream::iter([start]).chain(tokio_stream::pending());
            broker.subscribe(request(outbound, auth)).await.map(drop)
        }
        "/strata.v1.Broker/ListOffsets" => broker
            .list_offsets(request(
                pb::ListOffsetsRequest {
                    topic: name(TOPIC),
                    position: earliest(),
                    ..pb::ListOffsetsRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Broker/InitProducerId" => broker
            .init_producer_id(request(pb::InitProducerIdRequest::default(), auth))
            .await
            .map(drop),
        "/strata.v1.Admin/CreateTopic" => admin
            .create_topic(request(
                pb::CreateTopicRequest {
                    name: name("created-by-call"),
                    partitions: 1,
                    replication_factor: 1,
                    config: None,
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/DeleteTopic" => admin
            .delete_topic(request(
                pb::DeleteTopicRequest {
                    name: name(DOOMED_TOPIC),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/ListTopics" => admin
            .list_topics(request(pb::ListTopicsRequest::default(), auth))
            .await
            .map(drop),
        "/strata.v1.Admin/DescribeTopic" => admin
            .describe_topic(request(
                pb::DescribeTopicRequest { name: name(TOPIC) },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/AlterTopicConfig" => admin
            .alter_topic_config(request(
                pb::AlterTopicConfigRequest {
                    name: name(TOPIC),
                    config: Some(pb::TopicConfig {
                        retention_ms: Some(3_600_000),
                        ..pb::TopicConfig::default()
                    }),
                    unset: Vec::new(),
                },
                auth,
            ))
            .await
            .map(drop),
        // A count of 0 is refused as invalid once authorized: the topic keeps its partitions.
        "/strata.v1.Admin/AddPartitions" => admin
            .add_partitions(request(
                pb::AddPartitionsRequest {
                    name: name(TOPIC),
                    partitions: 0,
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/ClusterInfo" => admin
            .cluster_info(request(pb::ClusterInfoRequest::default(), auth))
            .await
            .map(drop),
        "/strata.v1.Admin/AddNode" => admin
            .add_node(request(
                pb::AddNodeRequest {
                    node_id: 9,
                    address: "127.0.0.1:1".to_string(),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/RemoveNode" => admin
            .remove_node(request(pb::RemoveNodeRequest { node_id: 9 }, auth))
            .await
            .map(drop),
        "/strata.v1.Admin/CreateUser" => admin
            .create_user(request(
                pb::CreateUserRequest {
                    name: "dave".to_string(),
                    password: "dave-password".to_string(),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/SetPassword" => admin
            .set_password(request(
                pb::SetPasswordRequest {
                    name: "dave".to_string(),
                    password: "dave-password-2".to_string(),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/DeleteUser" => admin
            .delete_user(request(
                pb::DeleteUserRequest {
                    name: "dave".to_string(),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/ListUsers" => admin
            .list_users(request(pb::ListUsersRequest::default(), auth))
            .await
            .map(drop),
        "/strata.v1.Admin/CreateAcls" => admin
            .create_acls(request(
                pb::CreateAclsRequest {
                    acls: vec![acl_entry(
                        "User:zed",
                        ResourceType::Topic,
                        "zed",
                        false,
                        Operation::Read,
                        false,
                    )],
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/DeleteAcls" => admin
            .delete_acls(request(
                pb::DeleteAclsRequest {
                    filter: Some(pb::AclFilter {
                        principal: Some("User:zed".to_string()),
                        ..pb::AclFilter::default()
                    }),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Admin/ListAcls" => admin
            .list_acls(request(
                pb::ListAclsRequest {
                    filter: Some(pb::AclFilter::default()),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/JoinGroup" => groups
            .join_group(request(
                pb::JoinGroupRequest {
                    group_id: GROUP.to_string(),
                    topics: vec![name(TOPIC)],
                    session_timeout_ms: 10_000,
                    client_id: "authorization-test".to_string(),
                    ..pb::JoinGroupRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/Heartbeat" => groups
            .heartbeat(request(
                pb::HeartbeatRequest {
                    group_id: GROUP.to_string(),
                    member_id: "nobody".to_string(),
                    ..pb::HeartbeatRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/LeaveGroup" => groups
            .leave_group(request(
                pb::LeaveGroupRequest {
                    group_id: GROUP.to_string(),
                    member_id: "nobody".to_string(),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/CommitOffsets" => groups
            .commit_offsets(request(
                pb::CommitOffsetsRequest {
                    group_id: GROUP.to_string(),
                    member_id: "nobody".to_string(),
                    ..pb::CommitOffsetsRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/FetchCommittedOffsets" => groups
            .fetch_committed_offsets(request(
                pb::FetchCommittedOffsetsRequest {
                    group_id: GROUP.to_string(),
                    ..pb::FetchCommittedOffsetsRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/ListGroups" => groups
            .list_groups(request(pb::ListGroupsRequest::default(), auth))
            .await
            .map(drop),
        "/strata.v1.Groups/DescribeGroup" => groups
            .describe_group(request(
                pb::DescribeGroupRequest {
                    group_id: GROUP.to_string(),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/DeleteGroup" => groups
            .delete_group(request(
                pb::DeleteGroupRequest {
                    group_id: "doomed-group".to_string(),
                },
                auth,
            ))
            .await
            .map(drop),
        "/strata.v1.Groups/ResetOffsets" => groups
            .reset_offsets(request(
                pb::ResetOffsetsRequest {
                    group_id: GROUP.to_string(),
                    topic: name(TOPIC),
                    to: Some(pb::reset_offsets_request::To::Earliest(true)),
                    dry_run: true,
                    ..pb::ResetOffsetsRequest::default()
                },
                auth,
            ))
            .await
            .map(drop),
        other => panic!("no test call for {other}: add one to tests/tests/authorization.rs"),
    }
}

fn acl_entry(
    principal: &str,
    resource_type: ResourceType,
    name: &str,
    prefixed: bool,
    operation: Operation,
    deny: bool,
) -> pb::AclEntry {
    let resource_type = match resource_type {
        ResourceType::Topic => pb::ResourceType::Topic,
        ResourceType::Group => pb::ResourceType::Group,
        ResourceType::Cluster => pb::ResourceType::Cluster,
    };
    let operation = match operation {
        Operation::All => pb::AclOperation::All,
        Operation::Read => pb::AclOperation::Read,
        Operation::Write => pb::AclOperation::Write,
        Operation::Create => pb::AclOperation::Create,
        Operation::Delete => pb::AclOperation::Delete,
        Operation::Alter => pb::AclOperation::Alter,
        Operation::Describe => pb::AclOperation::Describe,
        Operation::DescribeConfigs => pb::AclOperation::DescribeConfigs,
        Operation::AlterConfigs => pb::AclOperation::AlterConfigs,
        Operation::IdempotentWrite => pb::AclOperation::IdempotentWrite,
        Operation::ClusterAction => pb::AclOperation::ClusterAction,
    };
    pb::AclEntry {
        principal: principal.to_string(),
        resource_type: resource_type as i32,
        pattern_type: if prefixed {
            pb::PatternType::Prefixed
        } else {
            pb::PatternType::Literal
        } as i32,
        resource_name: name.to_string(),
        operation: operation as i32,
        permission: if deny {
            pb::AclPermission::Deny
        } else {
            pb::AclPermission::Allow
        } as i32,
    }
}

/// The ACLs (for every topic and group, and the cluster) that the table's rules ask for.
fn acls_for_rules(principal: &str) -> Vec<pb::AclEntry> {
    let mut wanted = BTreeSet::new();
    for (_, rule) in access::METHODS {
        match *rule {
            Rule::Topic(op) => {
                wanted.insert((ResourceType::Topic, op));
            }
            Rule::Group(op) => {
                wanted.insert((ResourceType::Group, op));
            }
            Rule::Cluster(op) => {
                wanted.insert((ResourceType::Cluster, op));
            }
            Rule::CreateTopic => {
                wanted.insert((ResourceType::Topic, Operation::Create));
            }
            Rule::IdempotentWrite => {
                wanted.insert((ResourceType::Cluster, Operation::IdempotentWrite));
            }
            Rule::Open | Rule::Authenticated | Rule::Node | Rule::ListTopics | Rule::ListGroups => {
            }
        }
    }
    wanted
        .into_iter()
        .map(|(resource_type, op)| {
            let name = if resource_type == ResourceType::Cluster {
                "kafka-cluster"
            } else {
                "*"
            };
            acl_entry(principal, resource_type, name, false, op, false)
        })
        .collect()
}

/// The Broker, Admin and Groups methods of strata.v1, from the proto's descriptor set.
fn client_methods() -> Vec<String> {
    access::strata_methods(strata_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("descriptor set")
        .into_iter()
        .filter(|path| !path.starts_with("/strata.v1.Peer/"))
        .collect()
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the bootstrap superuser is known on this node. Health first (open,
/// and serving once the node has its metadata): each failed password before the user exists
/// would slow this address down further.
async fn wait_for_admin(clients: &Clients, channel: tonic::transport::Channel) {
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = eventually(BOOTSTRAP_WAIT, || {
        let mut health = health.clone();
        async move {
            let asked = tonic_health::pb::HealthCheckRequest {
                service: "strata.v1.Admin".to_string(),
            };
            health.check(asked).await.is_ok_and(|reply| {
                reply.into_inner().status()
                    == tonic_health::pb::health_check_response::ServingStatus::Serving
            })
        }
    })
    .await;
    assert!(serving, "the node did not serve within {BOOTSTRAP_WAIT:?}");
    let admin = Auth::Password(ADMIN.0, ADMIN.1);
    let ready = eventually(BOOTSTRAP_WAIT, || async {
        call(clients, "/strata.v1.Admin/ListUsers", admin)
            .await
            .is_ok()
    })
    .await;
    assert!(
        ready,
        "the bootstrap user did not appear within {BOOTSTRAP_WAIT:?}"
    );
}

fn assert_code(result: &Result<(), Status>, code: Code, error: &str, what: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            // A produce stream's per-request refusal carries its code in the reply, not in
            // the metadata.
            if !what.contains("ProduceStream") {
                assert_eq!(error_code(status), error, "{what}: {status:?}");
            }
        }
        Ok(()) => panic!("{what}: succeeded, expected {code:?}"),
    }
}

/// One node with TLS (passwords travel only over TLS) and [`secure_args`], and the
/// certificates its clients trust.
struct SecureNode {
    node: ServerProcess,
    certs: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SecureNode {
    fn tls(&self) -> tonic::transport::ClientTlsConfig {
        trusting_client(&self.certs)
    }

    /// A TLS channel to the node.
    async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("https://{}", self.node.address))
            .expect("endpoint")
            .tls_config(self.tls())
            .expect("TLS config")
            .connect()
            .await
            .expect("connect")
    }

    async fn clients(&self) -> Clients {
        strata_tests::cluster::connect_with(&self.node.address, Some(self.tls()))
            .await
            .expect("connect")
    }
}

fn start_node() -> SecureNode {
    bootstrap_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    tls_init(&certs, 1, "127.0.0.1");
    let mut args = node_flags(&certs, 1, false);
    args.extend(secure_args().iter().map(|a| a.to_string()));
    let mut node =
        ServerProcess::launch_with(&dir.path().join("data"), 1, "127.0.0.1:0", None, &args);
    node.wait_ready();
    SecureNode {
        node,
        certs,
        _dir: dir,
    }
}

/// Admin (the bootstrap superuser) creates alice, the topics and the group's data.
async fn set_up(clients: &Clients) {
    let admin = Auth::Password(ADMIN.0, ADMIN.1);
    let mut admin_client = clients.admin.clone();
    admin_client
        .create_user(request(
            pb::CreateUserRequest {
                name: ALICE.0.to_string(),
                password: ALICE.1.to_string(),
            },
            admin,
        ))
        .await
        .expect("create alice");
    for topic in [TOPIC, DOOMED_TOPIC] {
        admin_client
            .create_topic(request(
                pb::CreateTopicRequest {
                    name: topic.to_string(),
                    partitions: 1,
                    replication_factor: 1,
                    config: None,
                },
                admin,
            ))
            .await
            .expect("create topic");
    }
    call(clients, "/strata.v1.Broker/Produce", admin)
        .await
        .expect("admin produces");
}

/// Every client method: refused without credentials and with a wrong password
/// (UNAUTHENTICATED), refused to a user without ACLs (PERMISSION_DENIED; the lists answer,
/// empty), and served to a user with the ACLs the table asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_method_requires_credentials_and_its_acl() {
    let node = start_node();
    let clients = node.clients().await;
    wait_for_admin(&clients, node.channel().await).await;
    set_up(&clients).await;
    let methods = client_methods();
    assert!(methods.len() >= 30, "{methods:?}");

    // (1) and (2). Wrong passwords run concurrently: each failure from this address waits
    // longer than the one before (up to 5 s), so one after another would take minutes.
    let none = join_all(methods.iter().map(|m| call(&clients, m, Auth::None))).await;
    let wrong = join_all(
        methods
            .iter()
            .map(|m| call(&clients, m, Auth::Password(ALICE.0, "wrong"))),
    )
    .await;
    let unknown = call(&clients, &methods[0], Auth::Password("mallory", "x")).await;
    for (method, (none, wrong)) in methods.iter().zip(none.iter().zip(&wrong)) {
        let expected = "ERROR_CODE_AUTHENTICATION_FAILED";
        assert_code(
            none,
            Code::Unauthenticated,
            expected,
            &format!("{method} anonymous"),
        );
        assert_code(
            wrong,
            Code::Unauthenticated,
            expected,
            &format!("{method} wrong password"),
        );
    }
    assert_code(
        &unknown,
        Code::Unauthenticated,
        "ERROR_CODE_AUTHENTICATION_FAILED",
        "unknown user",
    );
    let message = none[0].as_ref().expect_err("refused").message().to_string();
    assert!(
        message.contains("Basic"),
        "says what the node accepts: {message}"
    );

    // (3) alice has no ACL.
    let alice = Auth::Password(ALICE.0, ALICE.1);
    for method in &methods {
        let result = call(&clients, method, alice).await;
        match access::rule(method).expect("every method has a rule") {
            Rule::ListTopics | Rule::ListGroups => {
                assert!(result.is_ok(), "{method} as alice: {result:?}")
            }
            _ => assert_code(
                &result,
                Code::PermissionDenied,
                "ERROR_CODE_AUTHORIZATION_FAILED",
                &format!("{method} as alice without ACLs"),
            ),
        }
    }
    let denied = call(&clients, "/strata.v1.Broker/Fetch", alice)
        .await
        .expect_err("denied");
    for part in ["User:alice", "read", "topic \"orders\""] {
        assert!(denied.message().contains(part), "{}", denied.message());
    }
    let mut admin_client = clients.admin.clone();
    let listed = admin_client
        .list_topics(request(pb::ListTopicsRequest::default(), alice))
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.topics.is_empty(),
        "alice may describe no topic: {listed:?}"
    );

    // (4) alice with the ACLs the table asks for.
    admin_client
        .create_acls(request(
            pb::CreateAclsRequest {
                acls: acls_for_rules("User:alice"),
            },
            Auth::Password(ADMIN.0, ADMIN.1),
        ))
        .await
        .expect("grant");
    for method in &methods {
        let result = call(&clients, method, alice).await;
        if let Err(status) = &result {
            assert!(
                !matches!(
                    status.code(),
                    Code::PermissionDenied | Code::Unauthenticated
                ),
                "{method} as alice with the ACLs: {status:?}"
            );
        }
    }
}

/// A deny wins over an allow however broad; a prefixed allow matches names that start with
/// it; lists show only what may be described; health is open and reflection needs
/// credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deny_wins_prefixes_match_lists_filter_health_open() {
    let node = start_node();
    let clients = node.clients().await;
    wait_for_admin(&clients, node.channel().await).await;
    set_up(&clients).await;
    let admin = Auth::Password(ADMIN.0, ADMIN.1);
    let alice = Auth::Password(ALICE.0, ALICE.1);
    let mut admin_client = clients.admin.clone();
    for topic in ["orders-eu", "payments"] {
        admin_client
            .create_topic(request(
                pb::CreateTopicRequest {
                    name: topic.to_string(),
                    partitions: 1,
                    replication_factor: 1,
                    config: None,
                },
                admin,
            ))
            .await
            .expect("create topic");
    }
    let fetch = |topic: &'static str| {
        let mut broker = clients.broker.clone();
        async move {
            broker
                .fetch(request(
                    pb::FetchRequest {
                        topic: topic.to_string(),
                        start: earliest(),
                        max_bytes: 1 << 20,
                        ..pb::FetchRequest::default()
                    },
                    alice,
                ))
                .await
                .map(drop)
        }
    };
    let grant = |acls: Vec<pb::AclEntry>| {
        let mut admin_client = clients.admin.clone();
        async move {
            admin_client
                .create_acls(request(pb::CreateAclsRequest { acls }, admin))
                .await
                .expect("create acls");
        }
    };
    grant(vec![acl_entry(
        "User:alice",
        ResourceType::Topic,
        "ord",
        true,
        Operation::Read,
        false,
    )])
    .await;
    assert!(fetch("orders").await.is_ok(), "prefixed allow");
    assert!(fetch("orders-eu").await.is_ok(), "prefixed allow");
    assert_eq!(
        fetch("payments").await.expect_err("no ACL").code(),
        Code::PermissionDenied
    );
    // Read implies describe: the list shows exactly the prefixed topics.
    let listed: BTreeSet<String> = admin_client
        .list_topics(request(pb::ListTopicsRequest::default(), alice))
        .await
        .expect("list")
        .into_inner()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["orders".to_string(), "orders-eu".to_string()])
    );

    // A literal deny on one topic, and an allow of everything for everyone: the deny wins.
    grant(vec![
        acl_entry(
            "User:alice",
            ResourceType::Topic,
            "orders-eu",
            false,
            Operation::Read,
            true,
        ),
        acl_entry(
            "User:*",
            ResourceType::Topic,
            "*",
            false,
            Operation::All,
            false,
        ),
    ])
    .await;
    assert_eq!(
        fetch("orders-eu").await.expect_err("denied").code(),
        Code::PermissionDenied
    );
    assert!(fetch("orders").await.is_ok());
    assert!(fetch("payments").await.is_ok(), "User:* allows all");

    // Groups: the list shows only the groups alice may describe.
    for group in ["team-a", "team-b"] {
        let mut groups = clients.groups.clone();
        groups
            .join_group(request(
                pb::JoinGroupRequest {
                    group_id: group.to_string(),
                    topics: vec![TOPIC.to_string()],
                    session_timeout_ms: 30_000,
                    client_id: "t".to_string(),
                    ..pb::JoinGroupRequest::default()
                },
                admin,
            ))
            .await
            .expect("join");
    }
    grant(vec![acl_entry(
        "User:alice",
        ResourceType::Group,
        "team-a",
        false,
        Operation::Describe,
        false,
    )])
    .await;
    let mut groups = clients.groups.clone();
    let listed: Vec<String> = groups
        .list_groups(request(pb::ListGroupsRequest::default(), alice))
        .await
        .expect("list groups")
        .into_inner()
        .groups
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(listed, ["team-a"]);
    let all = groups
        .list_groups(request(pb::ListGroupsRequest::default(), admin))
        .await
        .expect("list groups")
        .into_inner()
        .groups
        .len();
    assert_eq!(all, 2, "the superuser sees every group");

    // Health answers anyone; reflection needs credentials.
    let channel = node.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is open")
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let reflect = |auth: Auth| {
        let channel = channel.clone();
        async move {
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            let asked = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies = ServerReflectionClient::new(channel)
                .server_reflection_info(request(tokio_stream::iter([asked]), auth))
                .await?
                .into_inner();
            replies.message().await.map(|reply| reply.is_some())
        }
    };
    assert_eq!(
        reflect(Auth::None)
            .await
            .expect_err("needs credentials")
            .code(),
        Code::Unauthenticated
    );
    assert!(
        reflect(alice).await.expect("authenticated"),
        "reflection answers"
    );

    // Deleting alice's deny takes effect (User:* still allows everything); a new password
    // makes the old one (verified and cached above) fail; deleting alice refuses her.
    let mut admin_client = clients.admin.clone();
    let deleted = admin_client
        .delete_acls(request(
            pb::DeleteAclsRequest {
                filter: Some(pb::AclFilter {
                    principal: Some("User:alice".to_string()),
                    permission: Some(pb::AclPermission::Deny as i32),
                    ..pb::AclFilter::default()
                }),
            },
            admin,
        ))
        .await
        .expect("delete the deny")
        .into_inner()
        .deleted;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(
        eventually(PROPAGATION, || async { fetch("orders-eu").await.is_ok() }).await,
        "the deleted deny still applies"
    );
    admin_client
        .set_password(request(
            pb::SetPasswordRequest {
                name: ALICE.0.to_string(),
                password: "alice-new-password".to_string(),
            },
            admin,
        ))
        .await
        .expect("set password");
    let old = fetch("orders")
        .await
        .expect_err("the old password no longer works");
    assert_eq!(old.code(), Code::Unauthenticated, "{old:?}");
    let mut broker = clients.broker.clone();
    broker
        .list_offsets(request(
            pb::ListOffsetsRequest {
                topic: TOPIC.to_string(),
                position: earliest(),
                ..pb::ListOffsetsRequest::default()
            },
            Auth::Password(ALICE.0, "alice-new-password"),
        ))
        .await
        .expect("the new password works");
    admin_client
        .delete_user(request(
            pb::DeleteUserRequest {
                name: ALICE.0.to_string(),
            },
            admin,
        ))
        .await
        .expect("delete alice");
    let gone = broker
        .list_offsets(request(
            pb::ListOffsetsRequest {
                topic: TOPIC.to_string(),
                position: earliest(),
                ..pb::ListOffsetsRequest::default()
            },
            Auth::Password(ALICE.0, "alice-new-password"),
        ))
        .await
        .expect_err("a deleted user is refused");
    assert_eq!(gone.code(), Code::Unauthenticated, "{gone:?}");
}

/// On a 3-node cluster: an ACL granted through one node applies on every node; deleting it,
/// and then deleting the user, takes effect on every node within a second.
///
/// With node-to-node TLS (certificates from `strata tls init`): nodes call each other's Admin
/// service with their node certificates, which authentication needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_an_acl_or_a_user_reaches_every_node_within_a_second() {
    bootstrap_env();
    let certs = tempfile::tempdir().expect("tempdir");
    tls_init(certs.path(), 3, "127.0.65.1");
    let cluster = Cluster::start_tls(
        3,
        65,
        |id| {
            let mut args = node_flags(certs.path(), id, false);
            args.extend(secure_args().iter().map(|a| a.to_string()));
            args
        },
        trusting_client(certs.path()),
    );
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(cluster.clients(id).await);
    }
    let admin = Auth::Password(ADMIN.0, ADMIN.1);
    for clients in &nodes {
        let known = eventually(BOOTSTRAP_WAIT, || async {
            call(clients, "/strata.v1.Admin/ListUsers", admin)
                .await
                .is_ok()
        })
        .await;
        assert!(known, "the bootstrap user did not reach every node");
    }
    let alice = Auth::Password(ALICE.0, ALICE.1);
    // Changes go to the controller's leader: try each node until one takes it.
    async fn on_leader<F, Fut>(nodes: &[Clients], mut change: F)
    where
        F: FnMut(Clients) -> Fut,
        Fut: std::future::Future<Output = Result<(), Status>>,
    {
        let done = eventually(Duration::from_secs(30), || {
            let attempts: Vec<Fut> = nodes.iter().map(|c| change(c.clone())).collect();
            async move {
                for attempt in attempts {
                    if attempt.await.is_ok() {
                        return true;
                    }
                }
                false
            }
        })
        .await;
        assert!(done, "no node took the change");
    }
    on_leader(&nodes, |mut c| async move {
        c.admin
            .create_user(request(
                pb::CreateUserRequest {
                    name: ALICE.0.to_string(),
                    password: ALICE.1.to_string(),
                },
                admin,
            ))
            .await
            .map(drop)
            .or_else(|s| {
                if s.code() == Code::AlreadyExists {
                    Ok(())
                } else {
                    Err(s)
                }
            })
    })
    .await;
    let grant = vec![acl_entry(
        "User:alice",
        ResourceType::Cluster,
        "kafka-cluster",
        false,
        Operation::Describe,
        false,
    )];
    on_leader(&nodes, |mut c| {
        let acls = grant.clone();
        async move {
            c.admin
                .create_acls(request(pb::CreateAclsRequest { acls }, admin))
                .await
                .map(drop)
        }
    })
    .await;
    // ListUsers needs cluster describe, the ACL granted.
    let cluster_describe = |clients: &Clients| {
        let mut admin_client = clients.admin.clone();
        async move {
            admin_client
                .list_users(request(pb::ListUsersRequest::default(), alice))
                .await
                .map(drop)
        }
    };
    for (i, clients) in nodes.iter().enumerate() {
        let allowed = eventually(Duration::from_secs(10), || async {
            cluster_describe(clients).await.is_ok()
        })
        .await;
        assert!(allowed, "node {} never applied the grant", i + 1);
    }

    on_leader(&nodes, |mut c| {
        let acls = grant.clone();
        async move {
            let filter = pb::AclFilter {
                principal: Some("User:alice".to_string()),
                ..pb::AclFilter::default()
            };
            let deleted = c
                .admin
                .delete_acls(request(
                    pb::DeleteAclsRequest {
                        filter: Some(filter),
                    },
                    admin,
                ))
                .await?
                .into_inner()
                .deleted;
            assert_eq!(deleted, acls, "exactly the grant is deleted");
            Ok(())
        }
    })
    .await;
    let deleted_at = Instant::now();
    for (i, clients) in nodes.iter().enumerate() {
        let denied = eventually(PROPAGATION.saturating_sub(deleted_at.elapsed()), || async {
            cluster_describe(clients)
                .await
                .is_err_and(|s| s.code() == Code::PermissionDenied)
        })
        .await;
        assert!(
            denied,
            "node {}: the ACL still applies {PROPAGATION:?} after its deletion",
            i + 1
        );
    }

    on_leader(&nodes, |mut c| async move {
        c.admin
            .delete_user(request(
                pb::DeleteUserRequest {
                    name: ALICE.0.to_string(),
                },
                admin,
            ))
            .await
            .map(drop)
    })
    .await;
    let deleted_at = Instant::now();
    for (i, clients) in nodes.iter().enumerate() {
        let refused = eventually(PROPAGATION.saturating_sub(deleted_at.elapsed()), || async {
            cluster_describe(clients)
                .await
                .is_err_and(|s| s.code() == Code::Unauthenticated)
        })
        .await;
        assert!(
            refused,
            "node {}: alice still authenticates {PROPAGATION:?} after her deletion",
            i + 1
        );
    }
}

/// The Rust client sends its credentials on every call: a superuser lists topics and produces;
/// a wrong password is AUTHENTICATION_FAILED; without ACLs alice is AUTHORIZATION_FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_client_authenticates_with_its_credentials() {
    use strata_client::{Client, ClientConfig, Credentials};
    let node = start_node();
    let clients = node.clients().await;
    wait_for_admin(&clients, node.channel().await).await;
    set_up(&clients).await;
    let connect = |user: &str, password: &str| {
        let config = ClientConfig {
            credentials: Some(Credentials {
                user: user.to_string(),
                password: password.to_string(),
            }),
            routing_retries: 0,
            tls: Some(strata_client::ClientTls {
                ca_pem: std::fs::read(node.certs.join("ca.pem")).expect("ca.pem"),
                identity: None,
                server_name: None,
            }),
            ..ClientConfig::default()
        };
        let address = node.node.address.clone();
        async move {
            Client::connect_with(&address, config)
                .await
                .expect("connect")
        }
    };
    let admin = connect(ADMIN.0, ADMIN.1).await;
    let topics = admin
        .admin()
        .list_topics()
        .await
        .expect("admin lists topics");
    assert!(topics.iter().any(|t| t.name == TOPIC), "{topics:?}");

    let wrong = connect(ADMIN.0, "wrong").await;
    let error = wrong
        .admin()
        .list_topics()
        .await
        .expect_err("wrong password");
    assert_eq!(
        error.code(),
        Some(pb::ErrorCode::AuthenticationFailed),
        "{error}"
    );
    let alice = connect(ALICE.0, ALICE.1).await;
    let error = alice
        .admin()
        .describe_topic(TOPIC)
        .await
        .expect_err("no ACL");
    assert_eq!(
        error.code(),
        Some(pb::ErrorCode::AuthorizationFailed),
        "{error}"
    );
}

/// `--authentication mtls,password` with a client CA: a client brings a certificate or a
/// password. The handshake takes a client without a certificate (it may have a password), and
/// the request is then refused without credentials; the admin certificate alone, or a password
/// alone, is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_or_a_password_authenticates() {
    bootstrap_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    tls_init(&certs, 1, "127.0.0.1");
    let mut args = node_flags(&certs, 1, true);
    args.extend(
        [
            "--authentication",
            "mtls,password",
            "--authorization",
            "on",
            "--superusers",
            "User:admin",
        ]
        .map(String::from),
    );
    let mut node =
        ServerProcess::launch_with(&dir.path().join("data"), 1, "127.0.0.1:0", None, &args);
    node.wait_ready();
    let without_certificate =
        strata_tests::cluster::connect_with(&node.address, Some(trusting_client(&certs)))
            .await
            .expect("the handshake takes a client without a certificate");
    let read = |name: &str| std::fs::read(certs.join(name)).expect("certificate file");
    let with_certificate = strata_tests::cluster::connect_with(
        &node.address,
        Some(
            trusting_client(&certs).identity(tonic::transport::Identity::from_pem(
                read("admin.pem"),
                read("admin.key"),
            )),
        ),
    )
    .await
    .expect("connect with the admin certificate");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", node.address))
        .expect("endpoint")
        .tls_config(trusting_client(&certs))
        .expect("TLS config")
        .connect()
        .await
        .expect("connect");
    // Polls with the admin password until the bootstrap user exists: a password alone is
    // served.
    wait_for_admin(&without_certificate, channel).await;
    let refused = without_certificate
        .admin
        .clone()
        .cluster_info(request(pb::ClusterInfoRequest {}, Auth::None))
        .await
        .expect_err("neither a certificate nor a password");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("password"), "{refused:?}");
    with_certificate
        .admin
        .clone()
        .cluster_info(request(pb::ClusterInfoRequest {}, Auth::None))
        .await
        .expect("the admin certificate alone is served (User:admin, a superuser)");
}
