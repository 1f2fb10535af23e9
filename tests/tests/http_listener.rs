//! The HTTP listener (`--http-listen`) against real servers: health and readiness, the JSON
//! API's round trip and its errors, and who may call what over plain HTTP, TLS with passwords,
//! and client certificates (`--metrics-auth` included). Node-wide metrics and the console have
//! tests of their own.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use strata_tests::certs::{node_flags, tls_init};
use strata_tests::http::HttpClient;
use strata_tests::server::ServerProcess;

/// How long a condition polled by these tests may take.
const DEADLINE: Duration = Duration::from_secs(30);

fn start(extra: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["--http-listen".to_string(), "127.0.0.1:0".to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut server = ServerProcess::launch_with(data.path(), 1, "127.0.0.1:0", None, &args);
    server.wait_ready();
    (data, server)
}

fn http_of(server: &ServerProcess) -> HttpClient {
    HttpClient::plain(server.http_address.as_deref().expect("HTTP address"))
}

/// Health, readiness and metrics answer; a topic created, produced to and fetched through the
/// JSON API comes back as sent (key, value, headers); the console's first page is served.
#[test]
fn health_and_a_json_api_round_trip() {
    let (_data, server) = start(&[]);
    let http = http_of(&server);

    let health = http.get("/healthz");
    assert_eq!((health.status, health.text().trim()), (200, "ok"));
    let ready = http.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["ready"], true);
    let metrics = http.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.headers
    );
    assert!(metrics.text().ends_with("# EOF\n"), "{}", metrics.text());

    let created = http.api(
        "Admin/CreateTopic",
        json!({"name": "web", "partitions": 2, "replicationFactor": 1}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["name"], "web");
    assert_eq!(created.json()["partitions"], 2);

    let key = STANDARD.encode("k-1");
    let value = STANDARD.encode("{\"n\": 1}");
    let header_value = STANDARD.encode("abc");
    let produced = http.api(
        "Broker/Produce",
        json!({
            "topic": "web",
            "partition": 1,
            "records": {"records": [
                {"key": key, "value": value, "headers": [{"key": "trace", "value": header_value}]}
            ]},
        }),
    );
    assert_eq!(produced.status, 200, "{}", produced.text());

    let fetched = http.api(
        "Broker/Fetch",
        json!({"topic": "web", "partition": 1, "decode": true}),
    );
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    let body = fetched.json();
    let records = body["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{body}");
    assert_eq!(records[0]["key"], key);
    assert_eq!(records[0]["value"], value);
    assert_eq!(records[0]["headers"][0]["key"], "trace");
    assert_eq!(records[0]["headers"][0]["value"], header_value);
    // uint64 travels as a string in the proto3 JSON mapping.
    assert_eq!(body["highWatermark"], "1");
    let described = http.api("Admin/DescribeTopic", json!({"name": "web"}));
    assert_eq!(described.status, 200, "{}", described.text());
    let size: u64 = described.json()["partitionInfo"][1]["sizeBytes"]
        .as_str()
        .and_then(|size| size.parse().ok())
        .unwrap_or_else(|| panic!("no size: {}", described.text()));
    assert!(
        size > 0,
        "the partition's log has a batch: {}",
        described.text()
    );

    let ui = http.get("/ui/");
    assert_eq!(ui.status, 200);
    assert!(
        ui.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
}

/// Each kind of bad request gets its HTTP status and a JSON body naming what was wrong; none
/// disturbs the node.
#[test]
fn bad_requests_get_clear_errors() {
    let (_data, server) = start(&[]);
    let http = http_of(&server);

    let unknown = http.api("Admin/Nope", json!({}));
    assert_eq!(unknown.status, 404);
    let message = unknown.json()["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(message.contains("Admin/CreateTopic"), "{message}");

    // The node-to-node service is not part of the JSON API.
    let peer = http.api("Peer/GroupVoters", json!({}));
    assert_eq!(peer.status, 404, "{}", peer.text());

    let malformed = http.request("POST", "/api/v1/Admin/DescribeTopic", Some(b"{\"name\": 5"));
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"], "ERROR_CODE_INVALID_ARGUMENT");
    assert!(
        malformed.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("proto3 JSON")),
        "{}",
        malformed.text()
    );

    let missing = http.api("Admin/DescribeTopic", json!({"name": "absent"}));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "NOT_FOUND");
    assert_eq!(
        missing.json()["error"],
        "ERROR_CODE_UNKNOWN_TOPIC_OR_PARTITION"
    );

    let invalid = http.api(
        "Admin/CreateTopic",
        json!({"name": "bad name!", "partitions": 1, "replicationFactor": 1}),
    );
    assert_eq!(invalid.status, 400, "{}", invalid.text());
    assert_eq!(invalid.json()["error"], "ERROR_CODE_INVALID_TOPIC_NAME");

    let too_large = vec![b' '; strata_server::http::api::REQUEST_BYTES_MAX + 1];
    let refused = http.request("POST", "/api/v1/Admin/ListTopics", Some(&too_large));
    assert_eq!(refused.status, 413, "{}", refused.text());

    assert_eq!(http.get("/api/v1/Admin/ListTopics").status, 405);
    assert_eq!(http.get("/ui/absent.js").status, 404);

    assert_eq!(http.get("/readyz").status, 200, "the node still serves");
}

/// A node waiting for its cluster answers `/healthz` but not `/readyz`, which says why.
#[test]
fn readyz_is_unavailable_while_the_node_starts() {
    let data = tempfile::tempdir().expect("tempdir");
    // Node 1 of three whose peers never start: its controller has no leader.
    let http_address = "127.0.145.1:18080";
    let cluster = "1=127.0.145.1:19092,2=127.0.145.2:19092,3=127.0.145.3:19092";
    let _node = ServerProcess::launch_with(
        data.path(),
        1,
        "127.0.145.1:19092",
        Some(cluster),
        &["--http-listen".to_string(), http_address.to_string()],
    );
    let http = HttpClient::plain(http_address);
    let deadline = Instant::now() + DEADLINE;
    let health = loop {
        match http.try_request("GET", "/healthz", None) {
            Ok(reply) => break reply,
            Err(error) => {
                assert!(Instant::now() < deadline, "no HTTP listener: {error}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(health.status, 200);
    let ready = http.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["ready"], false);
    let reasons = ready.json()["reasons"].to_string();
    assert!(reasons.contains("starting"), "{reasons}");
    // The API says the same with its own error.
    let listed = http.api("Admin/ListTopics", json!({}));
    assert_eq!(listed.status, 503, "{}", listed.text());
    assert_eq!(listed.json()["error"], "ERROR_CODE_UNAVAILABLE");
}

const ADMIN: (&str, &str) = ("admin", "admin-password");

/// With TLS and passwords: health stays open, every other path needs credentials (the JSON
/// API also its ACL, refused with the reason); `--metrics-auth off` opens `/metrics` alone.
#[test]
fn passwords_and_acls_guard_the_api_and_metrics() {
    // SAFETY: set before this test starts a server; no other test of this binary reads it.
    unsafe { std::env::set_var("STRATA_BOOTSTRAP_USER", format!("{}:{}", ADMIN.0, ADMIN.1)) };
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    tls_init(&certs, 1, "127.0.0.1");
    let start_secure = |data: &str, metrics_auth: &str| {
        let mut args = node_flags(&certs, 1, false);
        args.extend(
            [
                "--authentication",
                "password",
                "--authorization",
                "on",
                "--superusers",
                "User:admin",
                "--http-listen",
                "127.0.0.1:0",
                "--metrics-auth",
                metrics_auth,
            ]
            .map(str::to_string),
        );
        let mut node =
            ServerProcess::launch_with(&dir.path().join(data), 1, "127.0.0.1:0", None, &args);
        node.wait_ready();
        node
    };
    let node = start_secure("data", "on");
    let address = node.http_address.clone().expect("HTTP address");
    let anonymous = HttpClient::tls(&address, &certs.join("ca.pem"), None);
    let admin = anonymous.clone().with_password(ADMIN.0, ADMIN.1);

    // The bootstrap user is created once the node runs.
    let deadline = Instant::now() + DEADLINE;
    while admin.api("Admin/ListTopics", json!({})).status != 200 {
        assert!(Instant::now() < deadline, "the bootstrap user never worked");
        std::thread::sleep(Duration::from_millis(100));
    }

    assert_eq!(anonymous.get("/healthz").status, 200);
    assert_eq!(anonymous.get("/readyz").status, 200);
    let refused = anonymous.api("Admin/ListTopics", json!({}));
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["code"], "UNAUTHENTICATED");
    assert_eq!(anonymous.get("/metrics").status, 401);
    let wrong = anonymous.clone().with_password(ADMIN.0, "wrong");
    assert_eq!(wrong.api("Admin/ListTopics", json!({})).status, 401);
    assert_eq!(admin.get("/metrics").status, 200);

    let created = admin.api(
        "Admin/CreateTopic",
        json!({"name": "secret", "partitions": 1, "replicationFactor": 1}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let user = admin.api(
        "Admin/CreateUser",
        json!({"name": "bob", "password": "bob-password"}),
    );
    assert_eq!(user.status, 200, "{}", user.text());
    let bob = anonymous.clone().with_password("bob", "bob-password");
    // Users reach every node's memory once applied: wait for bob to log in.
    let deadline = Instant::now() + DEADLINE;
    let listed = loop {
        let listed = bob.api("Admin/ListTopics", json!({}));
        if listed.status == 200 {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "bob never logged in: {}",
            listed.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !listed.text().contains("secret"),
        "bob may not describe the topic, so it is not listed: {}",
        listed.text()
    );
    let described = bob.api("Admin/DescribeTopic", json!({"name": "secret"}));
    assert_eq!(described.status, 403, "{}", described.text());
    assert_eq!(described.json()["code"], "PERMISSION_DENIED");
    let reason = described.json()["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        reason.contains("User:bob") && reason.contains("secret"),
        "{reason}"
    );
    // Cluster rules apply too: bob may not create users.
    let escalated = bob.api("Admin/CreateUser", json!({"name": "eve", "password": "x"}));
    assert_eq!(escalated.status, 403, "{}", escalated.text());

    let open_metrics = start_secure("data-open", "off");
    let scraper = HttpClient::tls(
        open_metrics.http_address.as_deref().expect("HTTP address"),
        &certs.join("ca.pem"),
        None,
    );
    assert_eq!(scraper.get("/metrics").status, 200);
    assert_eq!(
        scraper.api("Admin/ListTopics", json!({})).status,
        401,
        "only /metrics is opened"
    );
}

/// With client certificates: the certificate names the principal (the admin certificate is a
/// superuser); without one the TLS handshake itself fails.
#[test]
fn a_client_certificate_names_the_principal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    tls_init(&certs, 1, "127.0.0.1");
    let mut args = node_flags(&certs, 1, true);
    args.extend(
        [
            "--authentication",
            "mtls",
            "--authorization",
            "on",
            "--superusers",
            "User:admin",
            "--http-listen",
            "127.0.0.1:0",
        ]
        .map(str::to_string),
    );
    let mut node =
        ServerProcess::launch_with(&dir.path().join("data"), 1, "127.0.0.1:0", None, &args);
    node.wait_ready();
    let address = node.http_address.clone().expect("HTTP address");
    let admin = HttpClient::tls(
        &address,
        &certs.join("ca.pem"),
        Some((&certs.join("admin.pem"), &certs.join("admin.key"))),
    );
    let created = admin.api(
        "Admin/CreateTopic",
        json!({"name": "certified", "partitions": 1, "replicationFactor": 1}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(admin.get("/metrics").status, 200);

    let anonymous = HttpClient::tls(&address, &certs.join("ca.pem"), None);
    assert!(
        anonymous.try_request("GET", "/healthz", None).is_err(),
        "a listener that requires client certificates refuses the handshake"
    );
}

/// The HTTP listener has its own connection limit: connections past it are closed at once and
/// the node keeps serving; a connection that never sends its request is cut off after the
/// idle timeout instead of holding its slot.
#[test]
fn a_connection_flood_is_refused_and_idle_connections_are_cut() {
    use std::io::Read as _;
    let (_data, server) = start(&["--max-connections", "3"]);
    let address = server.http_address.clone().expect("HTTP address");
    let http = HttpClient::plain(&address);
    let mut idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&address).expect("connect"))
        .collect();
    // The three slots are taken once the node has accepted them: poll until a fourth is refused.
    let deadline = Instant::now() + DEADLINE;
    loop {
        match http.try_request("GET", "/healthz", None) {
            Err(_) => break,
            Ok(reply) => {
                assert!(
                    Instant::now() < deadline,
                    "a fourth connection was still served: {}",
                    reply.status
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // gRPC has its own limit: the flood on HTTP does not touch it.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut clients = server.clients().await;
        clients
            .admin
            .list_topics(strata_proto::v1::ListTopicsRequest::default())
            .await
            .expect("gRPC still serves");
    });
    // An idle connection is closed by the server within its idle timeout (20 s).
    let mut first = idle.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buffer = Vec::new();
    let cut = first.read_to_end(&mut buffer);
    assert!(
        cut.is_ok()
            || cut
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the idle connection was not cut: {cut:?}"
    );
    drop(idle);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(reply) = http.try_request("GET", "/healthz", None) {
            assert_eq!(reply.status, 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slots were never reused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// On a 3-node cluster, every node's JSON API serves the whole cluster: topic and group
/// changes made on a node that does not lead the controller, and reads of a partition the node
/// holds no replica of, are passed to the node that answers them; a list filtered by principal
/// is never passed on.
#[test]
fn any_node_serves_the_cluster() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut cluster = strata_tests::cluster::Cluster::start_with_node_args(3, 146, |id| {
        vec!["--http-listen".to_string(), format!("127.0.146.{id}:18080")]
    });
    let leader = runtime.block_on(cluster.controller_leader());
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let http = |id: u64| {
        HttpClient::plain(
            cluster.nodes[id as usize - 1]
                .http_address
                .as_deref()
                .expect("HTTP address"),
        )
    };
    let on_follower = http(follower);

    let created = on_follower.api(
        "Admin/CreateTopic",
        json!({"name": "routed", "partitions": 3, "replicationFactor": 1}),
    );
    assert_eq!(created.status, 200, "{}", created.text());
    let altered = on_follower.api(
        "Admin/AlterTopicConfig",
        json!({"name": "routed", "config": {"retentionMs": "3600000"}}),
    );
    assert_eq!(altered.status, 200, "{}", altered.text());

    // Produce to and read every partition through the follower: with one replica each, at
    // least one partition lives on another node.
    for partition in 0..3 {
        let value = STANDARD.encode(format!("value-{partition}"));
        produce(&on_follower, "routed", partition, &[&value]);
        let fetched = on_follower.api(
            "Broker/Fetch",
            json!({"topic": "routed", "partition": partition, "decode": true}),
        );
        assert_eq!(fetched.status, 200, "{}", fetched.text());
        assert_eq!(fetched.json()["records"][0]["value"], value);
    }

    // A group reset resolves offsets on the controller's leader, which must hold a replica of
    // each partition reset (a limitation of the groups, whatever the frontend): three replicas.
    let replicated = on_follower.api(
        "Admin/CreateTopic",
        json!({"name": "routed-3", "partitions": 1, "replicationFactor": 3}),
    );
    assert_eq!(replicated.status, 200, "{}", replicated.text());
    produce(&on_follower, "routed-3", 0, &["YQ==", "Yg=="]);
    let committed = http(leader).api(
        "Groups/CommitOffsets",
        json!({"groupId": "routed-group",
               "offsets": [{"topic": "routed-3", "partition": 0, "offset": "0"}]}),
    );
    assert_eq!(committed.status, 200, "{}", committed.text());
    let described = on_follower.api("Groups/DescribeGroup", json!({"groupId": "routed-group"}));
    assert_eq!(described.status, 200, "{}", described.text());
    let reset = on_follower.api(
        "Groups/ResetOffsets",
        json!({"groupId": "routed-group", "topic": "routed-3", "partitions": [0], "latest": true}),
    );
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(
        reset.json()["offsets"][0]["offset"],
        "2",
        "{}",
        reset.text()
    );

    let deleted = on_follower.api("Admin/DeleteTopic", json!({"name": "routed"}));
    assert_eq!(deleted.status, 200, "{}", deleted.text());
}

/// Produces `values` (base64) to `topic`/`partition` through `http`, waiting out the election
/// that follows a topic's creation.
fn produce(http: &HttpClient, topic: &str, partition: u32, values: &[&str]) {
    let records: Vec<serde_json::Value> = values.iter().map(|v| json!({"value": v})).collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let produced = http.api(
            "Broker/Produce",
            json!({"topic": topic, "partition": partition, "records": {"records": records}}),
        );
        if produced.status == 200 {
            return;
        }
        assert!(
            produced.status == 503 && Instant::now() < deadline,
            "produce to {topic}/{partition}: {}",
            produced.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
