//! TLS on the listener and between nodes (issue 11, Transport), against real processes:
//! what the listener refuses (plaintext, untrusted, expired or missing certificates, client
//! certificates on the peer service), start-up errors naming the file, certificate rotation
//! without a restart, and 3-node clusters with TLS everywhere: the Rust client and the CLI with
//! the certificates `strata tls init` writes, a leader killed with nothing acknowledged lost,
//! and forged peer streams refused while the cluster keeps committing.
//!
//! Certificates are made here (rcgen) or by `strata tls init`; nothing is committed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::{ConfState, Message, MessageType, Snapshot};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use strata_client::{
    Client, ClientConfig, ClientIdentity, ClientTls, ProducerConfig, ProducerRecord, StartFrom,
};
use strata_proto::v1 as pb;
use strata_proto::v1::peer_client::PeerClient;
use strata_tests::certs::{node_flags, strata_binary, tls_init};
use strata_tests::cluster::Cluster;
use strata_tests::server::ServerProcess;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const TEST_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a rotated certificate may take to be served (files are polled every second).
const ROTATION_WAIT: Duration = Duration::from_secs(15);
/// How long one connection attempt and call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Certificates

/// A CA of the tests.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A CA whose subject is CN `name`.
fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("self-sign").pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// The CA `strata tls init` wrote to `dir`, to sign more certificates with (its subject is
/// CN `Strata CA`).
fn init_ca(dir: &Path) -> Ca {
    let key = KeyPair::from_pem(&read(&dir.join("ca.key"))).expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Strata CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ca {
        pem: read(&dir.join("ca.pem")),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate signed by `ca`, (cert PEM, key PEM); `expired` dates it 2020 to 2021.
fn leaf(ca: &Ca, sans: &[&str], common_name: &str, expired: bool) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).expect("sign").pem();
    (cert, key.serialize_pem())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes `contents` to `dir/name` and returns the path as a flag value.
fn put(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path.to_str().expect("utf8 path").to_string()
}

/// Client TLS: trust `ca_pem`, present `identity` (cert PEM, key PEM) if given.
fn client_tls(ca_pem: &str, identity: Option<&(String, String)>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    match identity {
        Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
        None => config,
    }
}

/// A channel to `address`: plaintext without `tls`.
async fn channel(address: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .expect("endpoint")
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("TLS config");
    }
    tokio::time::timeout(CALL_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e:?}"))
}

/// `ClusterInfo` on a new connection to `address`.
async fn cluster_info(address: &str, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let channel = channel(address, tls).await?;
    tokio::time::timeout(
        CALL_TIMEOUT,
        pb::admin_client::AdminClient::new(channel).cluster_info(pb::ClusterInfoRequest {}),
    )
    .await
    .map_err(|_| "call timed out".to_string())?
    .map(|_| ())
    .map_err(|status| format!("call: {status:?}"))
}

/// The Rust client's TLS settings with the admin certificate of `dir`.
fn admin_client_tls(dir: &Path) -> ClientTls {
    ClientTls {
        ca_pem: read(&dir.join("ca.pem")).into_bytes(),
        identity: Some(ClientIdentity {
            cert_pem: read(&dir.join("admin.pem")).into_bytes(),
            key_pem: read(&dir.join("admin.key")).into_bytes(),
        }),
        server_name: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Peer-service helpers

/// A forged raft snapshot that would move the partition's log start far ahead.
fn forged_snapshot(from: u64, to: u64) -> Bytes {
    let mut snapshot = Snapshot::default();
    let metadata = snapshot.mut_metadata();
    metadata.index = 1_000_000;
    metadata.term = 1000;
    metadata.set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
    snapshot.data = Bytes::from(5_000_000u64.to_be_bytes().to_vec());
    let mut message = Message {
        from,
        to,
        msg_type: MessageType::MsgSnapshot,
        term: 1000,
        ..Message::default()
    };
    message.set_snapshot(snapshot);
    message.write_to_bytes().expect("encode").into()
}

fn raft_batch(from_node: u64, messages: Vec<(u64, Bytes)>) -> pb::RaftBatch {
    pb::RaftBatch {
        from_node,
        messages: messages
            .into_iter()
            .map(|(group, message)| pb::RaftEnvelope { group, message })
            .collect(),
    }
}

/// Sends `batches` on one `Peer/Raft` stream over `tls` and returns how the server ended it.
async fn raft_stream(
    address: &str,
    tls: ClientTlsConfig,
    batches: Vec<pb::RaftBatch>,
) -> Result<(), tonic::Status> {
    let channel = channel(address, Some(tls)).await.expect("TLS connection");
    let mut peer = PeerClient::new(channel);
    let call = peer.raft(tokio_stream::iter(batches));
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("the stream ends in time")
        .map(|_| ())
}

/// `Peer/GroupVoters` over `tls`.
async fn group_voters(address: &str, tls: ClientTlsConfig) -> Result<(), tonic::Status> {
    let channel = channel(address, Some(tls)).await.expect("TLS connection");
    let mut peer = PeerClient::new(channel);
    let call = peer.group_voters(pb::GroupVotersRequest { groups: vec![0] });
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("the call ends in time")
        .map(|_| ())
}

/// `Peer/BootstrapUser` over `tls`: a stranger naming the cluster's first user.
async fn bootstrap_user(address: &str, tls: ClientTlsConfig) -> Result<(), tonic::Status> {
    let channel = channel(address, Some(tls)).await.expect("TLS connection");
    let mut peer = PeerClient::new(channel);
    let call = peer.bootstrap_user(pb::BootstrapUserRequest {
        name: "admin".to_string(),
        salt: vec![1; 16].into(),
        iterations: 4096,
        stored_key: vec![2; 32].into(),
        server_key: vec![3; 32].into(),
    });
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .expect("the call ends in time")
        .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Tests

/// One node with TLS, client certificates required and node-to-node TLS configured: a
/// plaintext client, a client that does not trust the server's CA, one without a certificate,
/// one with a certificate from another CA and one with an expired certificate are all refused;
/// a valid client certificate works (gRPC and the Rust client: create, produce, consume) but
/// cannot open `Peer/Raft`, `Peer/GroupVoters` or `Peer/BootstrapUser`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_refuses_what_it_must_and_serves_valid_clients() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dir.path();
        let (trusted, other) = (ca("strata test CA"), ca("another CA"));
        let node = leaf(&trusted, &["node-1.strata", "127.0.0.1"], "node-1", false);
        let ca_file = put(files, "ca.pem", &trusted.pem);
        let (cert, key) = (
            put(files, "node.pem", &node.0),
            put(files, "node.key", &node.1),
        );
        let flags: Vec<String> = [
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca_file,
            "--peer-tls-cert",
            &cert,
            "--peer-tls-key",
            &key,
            "--peer-ca",
            &ca_file,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut server =
            ServerProcess::launch_with(&files.join("data"), 1, "127.0.0.1:0", None, &flags);
        server.wait_ready();
        let address = server.address.clone();

        // Connections that never start their handshake hold up nobody: each handshake runs
        // on its own (and is dropped after its timeout).
        let silent: Vec<std::net::TcpStream> = (0..3)
            .map(|_| std::net::TcpStream::connect(&address).expect("raw TCP connection"))
            .collect();
        let alice = leaf(&trusted, &[], "alice", false);
        let mallory = leaf(&other, &[], "mallory", false);
        let expired = leaf(&trusted, &[], "late", true);
        // Each refused; where the client itself decides (the server's certificate), for the
        // reason given. A client certificate is refused by the server after the client has
        // finished its side of the TLS 1.3 handshake, so whether the client sees the alert
        // (CertificateRequired, UnknownCA, CertificateExpired) or only the closed connection
        // is a race; the valid certificate below, in the same setup, is served.
        let refused = [
            ("plaintext", None, ""),
            (
                "server CA not trusted",
                Some(client_tls(&other.pem, Some(&alice))),
                "UnknownIssuer",
            ),
            (
                "no client certificate",
                Some(client_tls(&trusted.pem, None)),
                "",
            ),
            (
                "client certificate from another CA",
                Some(client_tls(&trusted.pem, Some(&mallory))),
                "",
            ),
            (
                "expired client certificate",
                Some(client_tls(&trusted.pem, Some(&expired))),
                "",
            ),
        ];
        for (case, tls, reason) in refused {
            let error = cluster_info(&address, tls).await.expect_err(case);
            assert!(
                error.contains(reason),
                "{case}: refused, but not for {reason}: {error}"
            );
        }
        cluster_info(&address, Some(client_tls(&trusted.pem, Some(&alice))))
            .await
            .expect("a valid client certificate is served");
        drop(silent);

        // A client certificate is no node's: the peer service refuses it.
        let as_alice = client_tls(&trusted.pem, Some(&alice));
        let status = group_voters(&address, as_alice.clone())
            .await
            .expect_err("GroupVoters with a client certificate");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let status = bootstrap_user(&address, as_alice.clone())
            .await
            .expect_err("BootstrapUser with a client certificate");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let status = raft_stream(&address, as_alice, vec![raft_batch(2, vec![])])
            .await
            .expect_err("Peer/Raft with a client certificate");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("User:alice"), "{status:?}");

        // The Rust client with TLS: create, produce, consume.
        let config = ClientConfig {
            tls: Some(ClientTls {
                ca_pem: trusted.pem.clone().into_bytes(),
                identity: Some(ClientIdentity {
                    cert_pem: alice.0.clone().into_bytes(),
                    key_pem: alice.1.clone().into_bytes(),
                }),
                server_name: None,
            }),
            ..ClientConfig::default()
        };
        let client = Client::connect_with(&address, config)
            .await
            .expect("connect");
        client
            .admin()
            .create_topic("secure", 1, 1, Default::default())
            .await
            .expect("create topic");
        let producer = client
            .producer(ProducerConfig::default())
            .expect("producer");
        let delivery = producer
            .send(ProducerRecord::new("secure", "hello").partition(0))
            .await
            .expect("send");
        producer.flush().await.expect("flush");
        assert_eq!(delivery.await.expect("delivered").offset, 0);
        producer.close().await.expect("close");
        let mut consumer = client
            .subscribe("secure", 0, StartFrom::Earliest, Default::default())
            .await
            .expect("subscribe");
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a record in time")
            .expect("next")
            .expect("open");
        assert_eq!(record.value.as_deref(), Some(&b"hello"[..]));
    })
    .await
    .expect("test timed out");
}

/// A certificate file that cannot be read, and a key that does not match its certificate:
/// the server exits non-zero with the file named in its message.
#[test]
fn start_up_fails_naming_the_unusable_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dir.path();
    let trusted = ca("strata test CA");
    let (cert, key) = leaf(&trusted, &["127.0.0.1"], "node-1", false);
    let (_, other_key) = leaf(&trusted, &["127.0.0.1"], "other", false);
    let cert = put(files, "node.pem", &cert);
    let key = put(files, "node.key", &key);
    let mismatched = put(files, "other.key", &other_key);
    let missing = files.join("absent.pem").to_str().expect("utf8").to_string();
    let cases = [
        (
            "unreadable certificate",
            missing.clone(),
            key.clone(),
            missing.clone(),
        ),
        (
            "key of another certificate",
            cert.clone(),
            mismatched.clone(),
            mismatched.clone(),
        ),
    ];
    for (case, cert, key, named) in cases {
        let mut child = Command::new(strata_tests::server::server_binary())
            .args(["--node-id", "1", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(files.join(format!("data-{}", case.len())))
            .args(["--tls-cert", &cert, "--tls-key", &key])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata-server");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("{case}: strata-server still runs after 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "{case}: exited successfully");
        assert!(
            stderr.contains(&named),
            "{case}: {named} not named in: {stderr}"
        );
        eprintln!("{case}: {}", stderr.trim());
    }
}

/// A node serving a certificate of an "old CA" from files in `files`, and a "new CA" to
/// rotate to: what the rotation tests start from.
struct Rotatable {
    old_ca: Ca,
    new_ca: Ca,
    cert_file: String,
    key_file: String,
    server: ServerProcess,
    address: String,
}

fn start_rotatable(files: &Path) -> Rotatable {
    let (old_ca, new_ca) = (ca("old CA"), ca("new CA"));
    let (cert, key) = leaf(&old_ca, &["127.0.0.1"], "node-1", false);
    let cert_file = put(files, "node.pem", &cert);
    let key_file = put(files, "node.key", &key);
    let flags = vec![
        "--tls-cert".to_string(),
        cert_file.clone(),
        "--tls-key".to_string(),
        key_file.clone(),
    ];
    let mut server =
        ServerProcess::launch_with(&files.join("data"), 1, "127.0.0.1:0", None, &flags);
    server.wait_ready();
    let address = server.address.clone();
    Rotatable {
        old_ca,
        new_ca,
        cert_file,
        key_file,
        server,
        address,
    }
}

/// The node's certificate and key are replaced, by a pair from a new CA, while it runs: a new
/// connection that trusts the new CA is served within a bounded wait, and one that trusts only
/// the old CA is no longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dir.path();
        let Rotatable {
            old_ca,
            new_ca,
            cert_file,
            key_file,
            mut server,
            address,
        } = start_rotatable(files);
        cluster_info(&address, Some(client_tls(&old_ca.pem, None)))
            .await
            .expect("served under the old CA");
        assert!(
            cluster_info(&address, Some(client_tls(&new_ca.pem, None)))
                .await
                .is_err()
        );

        // Replace both files atomically (rename), as a certificate manager would.
        let (cert, key) = leaf(&new_ca, &["127.0.0.1"], "node-1", false);
        std::fs::rename(put(files, "new.key", &key), &key_file).expect("rename key");
        std::fs::rename(put(files, "new.pem", &cert), &cert_file).expect("rename cert");
        let replaced = Instant::now();
        loop {
            match cluster_info(&address, Some(client_tls(&new_ca.pem, None))).await {
                Ok(()) => break,
                Err(error) => assert!(
                    replaced.elapsed() < ROTATION_WAIT,
                    "the new certificate is not served {ROTATION_WAIT:?} after the files \
                     changed: {error}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "new certificate served {:?} after the replace",
            replaced.elapsed()
        );
        assert!(
            cluster_info(&address, Some(client_tls(&old_ca.pem, None)))
                .await
                .is_err(),
            "the old certificate is still served"
        );
        assert!(server.running());
    })
    .await
    .expect("test timed out");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// SIGHUP reloads at once: new files whose modification times were set back to the old ones
/// (so the poll sees no change) are not served until the node gets SIGHUP, and then are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificates() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = dir.path();
        let Rotatable {
            old_ca,
            new_ca,
            cert_file,
            key_file,
            mut server,
            address,
        } = start_rotatable(files);
        let modified = |path: &str| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .expect("mtime")
        };
        let (cert_time, key_time) = (modified(&cert_file), modified(&key_file));
        let (cert, key) = leaf(&new_ca, &["127.0.0.1"], "node-1", false);
        for (path, contents, time) in [(&key_file, &key, key_time), (&cert_file, &cert, cert_time)]
        {
            let file = std::fs::File::create(path).expect("rewrite");
            std::io::Write::write_all(&mut &file, contents.as_bytes()).expect("write");
            file.set_modified(time).expect("set the old mtime back");
        }
        // Nothing to wait for: the claim is that nothing happens. Three poll intervals pass
        // without the poll seeing files whose times did not change.
        tokio::time::sleep(strata_server::security::tls::RELOAD_POLL_INTERVAL * 3).await;
        cluster_info(&address, Some(client_tls(&old_ca.pem, None)))
            .await
            .expect("the old certificate until SIGHUP");
        // SAFETY: kill(2) on our own running child.
        unsafe { libc_kill(server.pid() as i32, 1) };
        let signalled = Instant::now();
        loop {
            match cluster_info(&address, Some(client_tls(&new_ca.pem, None))).await {
                Ok(()) => break,
                Err(error) => assert!(
                    signalled.elapsed() < ROTATION_WAIT,
                    "not reloaded {ROTATION_WAIT:?} after SIGHUP: {error}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(server.running(), "SIGHUP stopped the server");
    })
    .await
    .expect("test timed out");
}

/// A 3-node cluster with the certificates of `strata tls init` on listener and peers, client
/// certificates as the authentication (`mtls`) and ACLs enforced, the admin certificate a
/// superuser: the Rust client produces through TLS, the leader of the partition is killed with
/// SIGKILL while records are acknowledged, and every acknowledged record is read back once, in
/// order, at the offset its delivery named. The CLI works with the same files (and fails
/// without them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_cluster_loses_nothing_acknowledged_when_a_leader_dies() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        const RECORDS: usize = 600;
        let certs = tempfile::tempdir().expect("tempdir");
        let certs = certs.path().join("certs");
        tls_init(&certs, 3, "127.0.60.1");
        let admin = (
            read(&certs.join("admin.pem")),
            read(&certs.join("admin.key")),
        );
        let mut cluster = Cluster::start_tls(
            3,
            60,
            |id| {
                let mut flags = node_flags(&certs, id, true);
                flags.extend(
                    [
                        "--authentication",
                        "mtls",
                        "--authorization",
                        "on",
                        "--superusers",
                        "User:admin",
                    ]
                    .map(String::from),
                );
                flags
            },
            client_tls(&read(&certs.join("ca.pem")), Some(&admin)),
        );
        let brokers = cluster.brokers();
        let config = ClientConfig {
            tls: Some(admin_client_tls(&certs)),
            ..ClientConfig::default()
        };
        let client = Client::connect_with(&brokers, config)
            .await
            .expect("connect");
        client
            .admin()
            .create_topic("orders", 1, 3, Default::default())
            .await
            .expect("create topic");
        let producer = client
            .producer(ProducerConfig {
                linger: Duration::from_millis(2),
                ..ProducerConfig::default()
            })
            .expect("producer");
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            let record = ProducerRecord::new("orders", format!("r{i}")).partition(0);
            deliveries.push((i, producer.send(record).await.expect("send")));
            if i == RECORDS / 2 {
                producer.flush().await.expect("flush");
                let leader = cluster.leader_of("orders", 0).await;
                eprintln!("killing node {leader}, the leader of orders/0");
                cluster.node(leader).kill9();
            }
        }
        let mut expected = Vec::new();
        for (i, delivery) in deliveries {
            let stored = delivery.await.expect("delivered despite the kill");
            expected.push((stored.offset, format!("r{i}")));
        }
        producer.close().await.expect("close");
        let mut consumer = client
            .subscribe("orders", 0, StartFrom::Earliest, Default::default())
            .await
            .expect("subscribe");
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let record = tokio::time::timeout(Duration::from_secs(60), consumer.next())
                .await
                .expect("records in time")
                .expect("next")
                .expect("open");
            let value = String::from_utf8_lossy(&record.value.unwrap_or_default()).to_string();
            got.push((record.offset, value));
        }
        assert_eq!(got, expected, "each acknowledged record once, in order");

        // The CLI with the same files; without a CA it cannot talk to the cluster.
        let running = cluster.running()[0];
        let cli = |tls: bool| {
            let mut command = Command::new(strata_binary());
            command.args(["--brokers", &cluster.address(running), "--timeout", "5s"]);
            if tls {
                let file = |name: &str| certs.join(name);
                command
                    .arg("--tls-ca")
                    .arg(file("ca.pem"))
                    .arg("--tls-cert")
                    .arg(file("admin.pem"))
                    .arg("--tls-key")
                    .arg(file("admin.key"));
            }
            command
                .args(["topic", "list"])
                .output()
                .expect("run strata")
        };
        let output = cli(true);
        assert!(
            output.status.success(),
            "strata topic list with TLS: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("orders"));
        assert!(!cli(false).status.success(), "plaintext CLI served");
    })
    .await
    .expect("test timed out");
}

/// On a 3-node TLS cluster, peer streams from certificates that are no member's: the admin
/// client certificate is refused on `Peer/Raft` and `Peer/GroupVoters`; a peer-CA certificate
/// naming node 9 (not a member) cannot speak for node 2 (PERMISSION_DENIED), is refused
/// `GroupVoters`, and the forged snapshots it sends as itself are dropped: the partition keeps
/// its records on every node and the cluster keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_streams_are_refused_on_a_tls_cluster() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        const RECORDS: u64 = 50;
        let group = strata_server::partition::group_id(1, 0);
        let certs = tempfile::tempdir().expect("tempdir");
        let certs = certs.path().join("certs");
        tls_init(&certs, 3, "127.0.61.1");
        let admin = (
            read(&certs.join("admin.pem")),
            read(&certs.join("admin.key")),
        );
        let ca_pem = read(&certs.join("ca.pem"));
        let mut cluster = Cluster::start_tls(
            3,
            61,
            |id| node_flags(&certs, id, true),
            client_tls(&ca_pem, Some(&admin)),
        );
        let config = ClientConfig {
            tls: Some(admin_client_tls(&certs)),
            ..ClientConfig::default()
        };
        let client = Client::connect_with(&cluster.brokers(), config)
            .await
            .expect("connect");
        client
            .admin()
            .create_topic("kept", 1, 3, Default::default())
            .await
            .expect("create topic");
        let produce = |tag: &'static str| {
            let client = client.clone();
            async move {
                let producer = client
                    .producer(ProducerConfig::default())
                    .expect("producer");
                let mut deliveries = Vec::new();
                for i in 0..RECORDS {
                    let record = ProducerRecord::new("kept", format!("{tag}{i}")).partition(0);
                    deliveries.push(producer.send(record).await.expect("send"));
                }
                producer.flush().await.expect("flush");
                for delivery in deliveries {
                    delivery.await.expect("delivered");
                }
                producer.close().await.expect("close");
            }
        };
        produce("r").await;
        let leader = cluster.leader_of("kept", 0).await;
        let victim = if leader == 3 { 2 } else { 3 };
        let address = cluster.address(victim);

        // The admin's client certificate: no node.
        let as_admin = client_tls(&ca_pem, Some(&admin));
        let status = raft_stream(
            &address,
            as_admin.clone(),
            vec![raft_batch(
                leader,
                vec![(group, forged_snapshot(leader, victim))],
            )],
        )
        .await
        .expect_err("Peer/Raft with a client certificate");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let status = group_voters(&address, as_admin)
            .await
            .expect_err("GroupVoters with a client certificate");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

        // A node certificate of the cluster's CA for node 9, which is no member.
        let stranger = leaf(&init_ca(&certs), &["node-9.strata"], "node-9", false);
        let as_node_9 = client_tls(&ca_pem, Some(&stranger));
        let status = raft_stream(
            &address,
            as_node_9.clone(),
            vec![raft_batch(
                leader,
                vec![(group, forged_snapshot(leader, victim))],
            )],
        )
        .await
        .expect_err("node 9 speaking for the leader");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        let status = group_voters(&address, as_node_9.clone())
            .await
            .expect_err("GroupVoters from a non-member");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        // As itself, node 9 may keep a stream open (so it could be added), but raft hears
        // nothing of what it sends.
        raft_stream(
            &address,
            as_node_9,
            vec![raft_batch(9, vec![(group, forged_snapshot(9, victim))])],
        )
        .await
        .expect("the stream itself is fine");

        // Nothing moved on any node for a while, then the cluster still commits.
        let watched = Instant::now();
        while watched.elapsed() < Duration::from_secs(2) {
            for node in 1..=3 {
                assert!(cluster.node(node).running(), "node {node} exited");
                let offsets = cluster
                    .clients(node)
                    .await
                    .broker
                    .list_offsets(pb::ListOffsetsRequest {
                        topic: "kept".to_string(),
                        partition: 0,
                        position: Some(pb::StartPosition {
                            position: Some(pb::start_position::Position::Earliest(true)),
                        }),
                    })
                    .await
                    .expect("list offsets")
                    .into_inner();
                assert_eq!(
                    (offsets.log_start_offset, offsets.high_watermark),
                    (0, RECORDS),
                    "node {node}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        produce("after").await;
        let expected = strata_tests::cluster::from_offset_zero(
            (0..RECORDS)
                .map(|i| format!("r{i}"))
                .chain((0..RECORDS).map(|i| format!("after{i}"))),
        );
        cluster
            .wait_until_every_node_holds("kept", 0, &expected, Duration::from_secs(30))
            .await;
    })
    .await
    .expect("test timed out");
}

/// `strata playground --secure --run-demo`: certificates written, three nodes with TLS on
/// listener and peers, and the demo's client (the admin certificate) produces and consumes.
#[test]
fn a_secure_playground_runs_the_demo() {
    let server = strata_tests::server::server_binary();
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(strata_binary())
        .args(["playground", "--nodes", "3", "--secure", "--run-demo"])
        .arg("--server-bin")
        .arg(&server)
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata playground");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the secure playground demo did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("stdout");
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("consumed 10 records"), "{stdout}");
    assert!(data.path().join("certs/admin.key").is_file());
    let log = std::fs::read_to_string(data.path().join("node-1.log")).expect("node log");
    assert!(
        !log.contains("ERROR"),
        "node 1 logged errors with TLS on: {log}"
    );
    // Authentication and ACLs are on, with `admin` as the first user: created once, by one
    // node, and its password (kept beside the certificates, for the owner only) in no log.
    let password_file = data.path().join("certs/admin.password");
    let password = std::fs::read_to_string(&password_file).expect("admin.password");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&password_file)
            .expect("metadata")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "admin.password is the owner's only");
    let logs: Vec<String> = (1..=3)
        .map(|id| std::fs::read_to_string(data.path().join(format!("node-{id}.log"))).expect("log"))
        .collect();
    let created = logs
        .iter()
        .filter(|log| log.contains("bootstrap user admin created"))
        .count();
    assert_eq!(created, 1, "one node creates the admin user: {logs:?}");
    assert!(
        logs.iter().all(|log| !log.contains(password.trim())),
        "a log holds the admin password"
    );
}
