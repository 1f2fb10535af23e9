//! The Kafka listener's security against a real server with TLS, `--authentication password`
//! and `--authorization on`, seen from clients nobody here wrote (confluent-kafka and kcat,
//! both librdkafka, over SASL_SSL; `tests/kafka/security.py`), and by hand over TLS for the
//! refusals a client library hides: SASL/SCRAM-SHA-256 and PLAIN logins, wrong passwords
//! refused, nothing served before authentication, Metadata hiding the topics a user may not
//! describe, and produce and consume needing the topic's Write and Read ACLs. With
//! `--authentication mtls`, a client certificate is the principal (kcat over SSL).
//!
//! Users, topics and ACLs are set up over gRPC by the bootstrap superuser.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use strata_proto::v1 as pb;
use strata_tests::certs::{node_flags, tls_init, trusting_client};
use strata_tests::kafka;
use strata_tests::server::{Clients, ServerProcess};
use tonic::Request;
use tonic::metadata::MetadataValue;

const ADMIN: (&str, &str) = ("admin", "admin-password");
const ALICE: (&str, &str) = ("alice", "alice-password");
/// How long the bootstrap superuser may take to exist, and an ACL to reach the node.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client program may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A node with TLS on both listeners, password authentication, ACLs, and a Kafka listener.
struct SecureNode {
    node: ServerProcess,
    certs: PathBuf,
    clients: Clients,
    _dir: tempfile::TempDir,
}

impl SecureNode {
    async fn start(authentication: &str) -> Self {
        bootstrap_env();
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        tls_init(&certs, 1, "127.0.0.1");
        let mut args = node_flags(&certs, 1, authentication.contains("mtls"));
        args.extend(
            [
                "--authentication",
                authentication,
                "--authorization",
                "on",
                "--superusers",
                "User:admin",
                "--kafka-listen",
                "127.0.0.1:0",
            ]
            .map(String::from),
        );
        let mut node =
            ServerProcess::launch_with(&dir.path().join("data"), 1, "127.0.0.1:0", None, &args);
        node.wait_ready();
        let mut tls = trusting_client(&certs);
        if authentication.contains("mtls") {
            let read = |name: &str| std::fs::read(certs.join(name)).expect("certificate file");
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read("admin.pem"),
                read("admin.key"),
            ));
        }
        let clients = strata_tests::cluster::connect_with(&node.address, Some(tls))
            .await
            .expect("connect over TLS");
        let node = Self {
            node,
            certs,
            clients,
            _dir: dir,
        };
        if authentication.contains("password") {
            node.wait_for_admin().await;
        }
        node
    }

    fn kafka_address(&self) -> String {
        self.node.kafka_address.clone().expect("kafka address")
    }

    fn ca(&self) -> String {
        path(&self.certs.join("ca.pem"))
    }

    /// Waits (bounded) until the bootstrap superuser can list users.
    async fn wait_for_admin(&self) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let mut admin = self.clients.admin.clone();
            if admin
                .list_users(as_admin(pb::ListUsersRequest::default()))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the bootstrap user did not appear within {SETTLE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create_user(&self, (name, password): (&str, &str)) {
        let mut admin = self.clients.admin.clone();
        admin
            .create_user(as_admin(pb::CreateUserRequest {
                name: name.to_string(),
                password: password.to_string(),
            }))
            .await
            .expect("create user");
    }

    async fn create_topic(&self, name: &str) {
        let mut admin = self.clients.admin.clone();
        admin
            .create_topic(as_admin(pb::CreateTopicRequest {
                name: name.to_string(),
                partitions: 1,
                replication_factor: 1,
                config: None,
            }))
            .await
            .expect("create topic");
    }

    /// Allows `operation` on topic `topic` to `principal`.
    async fn allow(&self, principal: &str, topic: &str, operation: pb::AclOperation) {
        self.allow_on(principal, pb::ResourceType::Topic, topic, operation)
            .await;
    }

    async fn allow_on(
        &self,
        principal: &str,
        resource_type: pb::ResourceType,
        name: &str,
        operation: pb::AclOperation,
    ) {
        let mut admin = self.clients.admin.clone();
        admin
            .create_acls(as_admin(pb::CreateAclsRequest {
                acls: vec![pb::AclEntry {
                    principal: principal.to_string(),
                    resource_type: resource_type as i32,
                    pattern_type: pb::PatternType::Literal as i32,
                    resource_name: name.to_string(),
                    operation: operation as i32,
                    permission: pb::AclPermission::Allow as i32,
                }],
            }))
            .await
            .expect("create acl");
    }

    /// Runs `tests/kafka/security.py COMMAND` as `user` and returns its JSON report.
    fn python(
        &self,
        command: &str,
        (user, password): (&str, &str),
        extra: &[&str],
    ) -> serde_json::Value {
        let mut python = kafka::python("security.py");
        python
            .arg(command)
            .args(["--bootstrap", &self.kafka_address(), "--ca", &self.ca()])
            .args(["--user", user, "--password", password])
            .args(extra);
        last_json(&kafka::run(python, CLIENT_TIMEOUT).stdout)
    }
}

fn path(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

/// `message` with the superuser's Basic credentials.
fn as_admin<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let encoded = STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1));
    let value: MetadataValue<_> = format!("Basic {encoded}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request.set_timeout(Duration::from_secs(20));
    request
}

/// The JSON object a client program printed last.
fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON report in:\n{text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Runs `command`, which is expected to fail, within `timeout`; returns its output (the test
/// fails if it runs out of time).
fn run_failing(mut command: std::process::Command, timeout: Duration) -> std::process::Output {
    let described = format!("{command:?}");
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(timeout) {
        Ok(output) => output.expect("waiting for the client"),
        Err(_) => {
            // The waiting thread reaps it once killed.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("{described} did not finish within {timeout:?}");
        }
    }
}

fn topics(report: &serde_json::Value) -> Vec<String> {
    report["topics"]
        .as_array()
        .unwrap_or_else(|| panic!("no topics: {report}"))
        .iter()
        .map(|topic| topic.as_str().expect("name").to_string())
        .collect()
}

/// SASL_SSL with confluent-kafka: SCRAM-SHA-256 and PLAIN log in with the right password and
/// are refused (SASL_AUTHENTICATION_FAILED, reported as librdkafka's `_AUTHENTICATION`) with a
/// wrong one or an unknown user; the by-hand probe sees Kafka's refusals (nothing before
/// authentication, an unknown mechanism, SASL out of order, a failed login closes the
/// connection) and a session that survives a second handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_and_plain_log_in_and_wrong_passwords_are_refused() {
    let node = SecureNode::start("password").await;
    node.create_user(ALICE).await;
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        let report = node.python("metadata", ALICE, &["--mechanism", mechanism]);
        assert_eq!(report["ok"], true, "{mechanism}: {report}");
        for (who, credentials) in [
            ("a wrong password", (ALICE.0, "wrong-password")),
            ("an unknown user", ("mallory", ALICE.1)),
        ] {
            let report = node.python(
                "metadata",
                credentials,
                &["--mechanism", mechanism, "--timeout", "5"],
            );
            assert_eq!(report["ok"], false, "{mechanism}, {who}: {report}");
            let errors = report["errors"].to_string();
            assert!(
                errors.contains("_AUTHENTICATION") && errors.contains("Authentication failed"),
                "{mechanism}, {who}: {report}"
            );
        }
    }
    let report = node.python("probe", ALICE, &[]);
    assert_eq!(report["ok"], true, "{report}");
}

/// kcat (librdkafka's CLI) lists the cluster over SASL_SSL with SCRAM-SHA-256, and fails with
/// a wrong password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_logs_in_with_scram_over_tls() {
    let node = SecureNode::start("password").await;
    node.create_user(ALICE).await;
    node.create_topic("visible").await;
    node.allow("User:alice", "visible", pb::AclOperation::Describe)
        .await;
    let kcat = |password: &str| {
        let mut kcat = std::process::Command::new(kafka::kcat());
        kcat.args(["-b", &node.kafka_address(), "-L", "-J", "-m", "10"])
            .args(["-X", "security.protocol=SASL_SSL"])
            .args(["-X", "sasl.mechanisms=SCRAM-SHA-256"])
            .args(["-X", &format!("sasl.username={}", ALICE.0)])
            .args(["-X", &format!("sasl.password={password}")])
            .args(["-X", &format!("ssl.ca.location={}", node.ca())]);
        kcat
    };
    let output = kafka::run(kcat(ALICE.1), CLIENT_TIMEOUT);
    let listed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("kcat -J prints JSON");
    assert!(
        listed["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .any(|topic| topic["topic"] == "visible"),
        "{listed}"
    );
    // A wrong password: kcat exits unsuccessfully, saying why.
    let wrong = kcat("wrong-password");
    let output = tokio::task::spawn_blocking(move || run_failing(wrong, CLIENT_TIMEOUT))
        .await
        .expect("join");
    assert!(
        !output.status.success(),
        "kcat listed with a wrong password"
    );
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(
        printed.contains("Authentication failed") || printed.contains("SASL authentication"),
        "{printed}"
    );
}

/// Metadata lists only the topics the user may describe: alice, with Describe on `visible`
/// only, sees `visible` and not `hidden`; the superuser sees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_hides_topics_the_user_may_not_describe() {
    let node = SecureNode::start("password").await;
    node.create_user(ALICE).await;
    node.create_topic("visible").await;
    node.create_topic("hidden").await;
    node.allow("User:alice", "visible", pb::AclOperation::Describe)
        .await;
    let report = node.python("metadata", ALICE, &[]);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(topics(&report), ["visible"], "{report}");
    let report = node.python("metadata", ADMIN, &[]);
    assert_eq!(topics(&report), ["hidden", "visible"], "{report}");
}

/// Produce needs Write on the topic and consume needs Read: without them confluent-kafka gets
/// TOPIC_AUTHORIZATION_FAILED, with them the record is stored and read back (also over gRPC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_need_the_topics_write_and_read_acls() {
    let node = SecureNode::start("password").await;
    node.create_user(ALICE).await;
    node.create_topic("orders").await;
    node.allow("User:alice", "orders", pb::AclOperation::Describe)
        .await;
    let produce = |value: &str| {
        node.python(
            "produce",
            ALICE,
            &["--topic", "orders", "--value", value, "--timeout", "10"],
        )
    };
    let report = produce("refused");
    assert_eq!(report["error"], "TOPIC_AUTHORIZATION_FAILED", "{report}");
    node.allow("User:alice", "orders", pb::AclOperation::Write)
        .await;
    let report = produce("accepted");
    assert_eq!(report["ok"], true, "{report}");

    // The consumer names a group (as most do), which needs group Read, as on Kafka.
    node.allow_on(
        "User:alice",
        pb::ResourceType::Group,
        "kafka-security-test",
        pb::AclOperation::Read,
    )
    .await;
    let consume = || {
        node.python(
            "consume",
            ALICE,
            &["--topic", "orders", "--count", "1", "--timeout", "15"],
        )
    };
    let report = consume();
    assert_eq!(report["error"], "TOPIC_AUTHORIZATION_FAILED", "{report}");
    node.allow("User:alice", "orders", pb::AclOperation::Read)
        .await;
    let report = consume();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["values"],
        serde_json::json!(["accepted"]),
        "{report}"
    );

    // Over gRPC, exactly the accepted record is stored.
    let mut broker = node.clients.broker.clone();
    let fetched = broker
        .fetch(as_admin(pb::FetchRequest {
            topic: "orders".to_string(),
            partition: 0,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Earliest(true)),
            }),
            max_bytes: 1 << 20,
            decode: true,
            ..pb::FetchRequest::default()
        }))
        .await
        .expect("fetch")
        .into_inner();
    let values: Vec<String> = fetched
        .records
        .iter()
        .map(|record| String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into())
        .collect();
    assert_eq!(values, ["accepted"]);
}

/// `--authentication mtls`: kcat over SSL with the admin certificate is `User:admin` (a
/// superuser) and lists every topic, with no SASL at all; without a certificate the TLS
/// handshake is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_the_principal_over_ssl() {
    let node = SecureNode::start("mtls").await;
    let kcat = |certificate: bool| {
        let mut kcat = std::process::Command::new(kafka::kcat());
        kcat.args(["-b", &node.kafka_address(), "-L", "-J", "-m", "10"])
            .args(["-X", "security.protocol=SSL"])
            .args(["-X", &format!("ssl.ca.location={}", node.ca())]);
        if certificate {
            kcat.args([
                "-X",
                &format!(
                    "ssl.certificate.location={}",
                    path(&node.certs.join("admin.pem"))
                ),
                "-X",
                &format!("ssl.key.location={}", path(&node.certs.join("admin.key"))),
            ]);
        }
        kcat
    };
    let output = kafka::run(kcat(true), CLIENT_TIMEOUT);
    let listed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("kcat -J prints JSON");
    assert_eq!(listed["brokers"][0]["id"], 1, "{listed}");
    let without = kcat(false);
    let output = tokio::task::spawn_blocking(move || run_failing(without, CLIENT_TIMEOUT))
        .await
        .expect("join");
    assert!(
        !output.status.success(),
        "kcat listed without a client certificate"
    );
}
