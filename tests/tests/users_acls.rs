//! Users and ACLs on 3-node clusters of real `strata-server` processes (no authentication:
//! these tests check replication and durability; enforcement is tested elsewhere):
//! - changes made through node 1 show on every node within a second, deletions too;
//! - after enough changes for a controller snapshot, kill -9 of the controller's leader and
//!   its restart lose nothing, and the new leader takes changes meanwhile;
//! - `STRATA_BOOTSTRAP_USER` given to two nodes with different values creates exactly one user,
//!   and a restart with the variable set changes nothing, its password included (checked on
//!   the replayed controller log); no password is ever logged;
//! - the peer service's `BootstrapUser` (a follower's bootstrap user, proposed by the leader)
//!   is served by the controller's leader only, once;
//! - bad requests are refused with INVALID_ARGUMENT (or a user error) saying what is valid.
//!
//! Slots 70, 71 and 72 (`127.0.<slot>.1`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use strata_client::Client;
use strata_client::security::{
    AclEntry, AclFilter, AclOperation, AclPermission, PatternType, ResourceType,
};
use strata_proto::v1 as pb;
use strata_tests::cluster::{Cluster, connect};
use strata_tests::server::{listening_address, server_binary};

/// How soon every node must see a change (the promise).
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(1);
/// How long a restarted node may take to serve and catch up.
const RESTART_DEADLINE: Duration = Duration::from_secs(60);
/// Controller commands written to make every node take a controller snapshot (the driver
/// snapshots every 1000 applied entries).
const FILLER_COMMANDS: usize = 1100;
/// Filler commands in flight at once.
const FILLER_CONCURRENCY: usize = 16;

fn acl(principal: &str, topic: &str, operation: AclOperation) -> AclEntry {
    AclEntry {
        principal: principal.to_string(),
        resource_type: ResourceType::Topic as i32,
        pattern_type: PatternType::Literal as i32,
        resource_name: topic.to_string(),
        operation: operation as i32,
        permission: AclPermission::Allow as i32,
    }
}

/// What one node lists: user names and ACLs.
async fn listed_at(address: &str) -> Option<(BTreeSet<String>, BTreeSet<AclKey>)> {
    let mut clients = tokio::time::timeout(Duration::from_secs(2), connect(address))
        .await
        .ok()?
        .ok()?;
    let users = clients
        .admin
        .list_users(pb::ListUsersRequest {})
        .await
        .ok()?
        .into_inner()
        .users
        .into_iter()
        .map(|user| user.name)
        .collect();
    let acls = clients
        .admin
        .list_acls(pb::ListAclsRequest {
            filter: Some(pb::AclFilter::default()),
        })
        .await
        .ok()?
        .into_inner()
        .acls
        .iter()
        .map(AclKey::of)
        .collect();
    Some((users, acls))
}

/// An ACL as a comparable value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AclKey(String, i32, i32, String, i32, i32);

impl AclKey {
    fn of(acl: &AclEntry) -> Self {
        Self(
            acl.principal.clone(),
            acl.resource_type,
            acl.pattern_type,
            acl.resource_name.clone(),
            acl.operation,
            acl.permission,
        )
    }
}

/// Waits until every node of `addresses` lists exactly `users` and `acls`; returns how long it
/// took. Panics at `limit`, naming the node and what it listed.
async fn wait_until_all_list(
    addresses: &[String],
    users: &BTreeSet<String>,
    acls: &BTreeSet<AclKey>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    for address in addresses {
        loop {
            let listed = listed_at(address).await;
            if listed.as_ref() == Some(&(users.clone(), acls.clone())) {
                break;
            }
            assert!(
                started.elapsed() < limit,
                "node {address} lists {listed:?} {:?} after the change, expected users \
                 {users:?} and ACLs {acls:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

fn addresses(cluster: &mut Cluster) -> Vec<String> {
    cluster
        .running()
        .into_iter()
        .map(|id| cluster.address(id))
        .collect()
}

/// Users and ACLs created through node 1 are listed by every node within a second; deletions
/// too. Then 1100 more controller commands (every node snapshots the controller's metadata),
/// kill -9 of the controller's leader: the survivors keep everything and take a new ACL; the
/// restarted node lists everything again, loaded from its snapshot and log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_replicate_and_survive_a_controller_leader_kill() {
    let mut cluster = Cluster::start(3, 70);
    let client = Client::connect(&cluster.address(1))
        .await
        .expect("connect to node 1");
    let admin = client.admin();
    let all = addresses(&mut cluster);

    admin.create_user("alice", "alice-pw").await.expect("alice");
    admin.create_user("bob", "bob-pw").await.expect("bob");
    let granted = vec![
        acl("User:alice", "orders", AclOperation::Read),
        acl("User:alice", "orders", AclOperation::Describe),
        acl("User:bob", "payments", AclOperation::Write),
    ];
    admin.create_acls(granted.clone()).await.expect("acls");
    let mut users: BTreeSet<String> = ["alice", "bob"].map(String::from).into();
    let mut acls: BTreeSet<AclKey> = granted.iter().map(AclKey::of).collect();
    let took = wait_until_all_list(&all, &users, &acls, PROPAGATION_DEADLINE).await;
    println!("creates seen by every node after {took:?}");

    admin.delete_user("bob").await.expect("delete bob");
    let deleted = admin
        .delete_acls(AclFilter {
            principal: Some("User:bob".into()),
            ..AclFilter::default()
        })
        .await
        .expect("delete bob's ACLs");
    assert_eq!(deleted, vec![granted[2].clone()]);
    users.remove("bob");
    acls.remove(&AclKey::of(&granted[2]));
    let took = wait_until_all_list(&all, &users, &acls, PROPAGATION_DEADLINE).await;
    println!("deletes seen by every node after {took:?}");

    // Filler: each command adds one ACL; then one filter deletes them all.
    let started = Instant::now();
    let mut next = 0;
    while next < FILLER_COMMANDS {
        let batch: Vec<_> = (next..(next + FILLER_CONCURRENCY).min(FILLER_COMMANDS))
            .map(|i| {
                let admin = admin.clone();
                tokio::spawn(async move {
                    admin
                        .create_acls(vec![acl(
                            "User:filler",
                            &format!("f{i}"),
                            AclOperation::Read,
                        )])
                        .await
                })
            })
            .collect();
        next += batch.len();
        for task in batch {
            task.await.expect("task").expect("filler create");
        }
    }
    let filler = admin
        .delete_acls(AclFilter {
            principal: Some("User:filler".into()),
            ..AclFilter::default()
        })
        .await
        .expect("delete filler");
    assert_eq!(filler.len(), FILLER_COMMANDS);
    println!(
        "{FILLER_COMMANDS} filler commands took {:?}",
        started.elapsed()
    );
    wait_until_all_list(&all, &users, &acls, PROPAGATION_DEADLINE).await;
    for node in &cluster.nodes {
        let snapshot = node.data_dir.join("controller").join("metadata.snapshot");
        let text = std::fs::read_to_string(&snapshot)
            .unwrap_or_else(|e| panic!("{}: {e}", snapshot.display()));
        assert!(
            text.contains("\"alice\"") && text.contains("User:alice"),
            "the snapshot at {} holds the users and ACLs",
            snapshot.display()
        );
    }

    let leader = cluster.controller_leader().await;
    println!("killing the controller's leader, node {leader}");
    cluster.node(leader).kill9();
    let survivors = addresses(&mut cluster);
    wait_until_all_list(&survivors, &users, &acls, PROPAGATION_DEADLINE).await;
    let brokers = survivors.join(",");
    let survivor_client = Client::connect(&brokers).await.expect("connect");
    let during = acl("User:carol", "audit", AclOperation::Read);
    survivor_client
        .admin()
        .create_acls(vec![during.clone()])
        .await
        .expect("a new leader takes changes");
    acls.insert(AclKey::of(&during));
    wait_until_all_list(&survivors, &users, &acls, PROPAGATION_DEADLINE).await;

    cluster.node(leader).relaunch();
    cluster.node(leader).wait_ready();
    let took = wait_until_all_list(&addresses(&mut cluster), &users, &acls, RESTART_DEADLINE).await;
    println!("node {leader} lists everything {took:?} after it serves again");
}

/// The controller's leader as node 3 (which never restarts here) reports it; polled.
async fn controller_leader(addresses: &[String]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok(mut clients)) =
            tokio::time::timeout(Duration::from_secs(2), connect(&addresses[2])).await
            && let Ok(info) = clients.admin.cluster_info(pb::ClusterInfoRequest {}).await
            && info.get_ref().controller_leader_node_id != 0
        {
            return info.get_ref().controller_leader_node_id;
        }
        assert!(Instant::now() < deadline, "no controller leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `strata-server` started with `STRATA_BOOTSTRAP_USER` (or without), its log kept.
struct LoggedNode {
    child: Child,
    id: u64,
    listen: String,
    data: PathBuf,
    initial: String,
    /// Every line it wrote to stderr (RUST_LOG=info).
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedNode {
    fn launch(data: &Path, id: u64, listen: &str, initial: &str, bootstrap: Option<&str>) -> Self {
        let mut command = Command::new(server_binary());
        command
            .args(["--node-id", &id.to_string(), "--listen", listen])
            .args(["--initial-cluster", initial, "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("STRATA_BOOTSTRAP_USER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(value) = bootstrap {
            command.env("STRATA_BOOTSTRAP_USER", value);
        }
        let mut child = command.spawn().expect("spawn strata-server");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().expect("log").push(line);
            }
        });
        // Waits (bounded) for it to serve; the line names the address.
        let address = listening_address(&received);
        assert_eq!(address, listen);
        Self {
            child,
            id,
            listen: listen.to_string(),
            data: data.to_path_buf(),
            initial: initial.to_string(),
            log,
        }
    }

    /// Waits (bounded) until a line of its log contains `text`.
    async fn wait_for_log(&self, text: &str, limit: Duration) {
        let started = Instant::now();
        while !self.logged(text) {
            assert!(
                started.elapsed() < limit,
                "node {} did not log {text:?} within {limit:?}; its log:\n{}",
                self.id,
                self.log.lock().expect("log").join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|line| line.contains(text))
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Nodes 1 and 2 start with different `STRATA_BOOTSTRAP_USER` values, node 3 with none:
/// exactly one of the two users exists, on every node, one node logs that it created it and
/// the other that users exist. Node 1 restarted (kill -9) with the variable set to a new
/// password logs that it ignored it and the users stay as they were; node 3's controller log,
/// replayed, holds the user with its first password. No log holds a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_user_is_created_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addresses: Vec<String> = (1..=3)
        .map(|id| format!("127.0.71.1:{}", 21_000 + id))
        .collect();
    let initial: String = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| format!("{}={address}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let bootstrap = [Some("first:first-pw-1"), Some("second:second-pw-2"), None];
    // Launched from threads: each waits for the others to form a quorum before it serves.
    let launches: Vec<_> = (1..=3u64)
        .map(|id| {
            let data = dir.path().join(format!("node-{id}"));
            let listen = addresses[id as usize - 1].clone();
            let initial = initial.clone();
            let value = bootstrap[id as usize - 1];
            std::thread::spawn(move || LoggedNode::launch(&data, id, &listen, &initial, value))
        })
        .collect();
    let mut nodes: Vec<LoggedNode> = launches
        .into_iter()
        .map(|launch| launch.join().expect("node started"))
        .collect();

    let wait = Duration::from_secs(30);
    let deadline = Instant::now() + wait;
    let created_by = loop {
        let creators: Vec<u64> = nodes
            .iter()
            .filter(|node| {
                node.logged("bootstrap user first created")
                    || node.logged("bootstrap user second created")
            })
            .map(|node| node.id)
            .collect();
        let ignored = nodes
            .iter()
            .filter(|node| node.logged("users exist; STRATA_BOOTSTRAP_USER ignored"))
            .count();
        if creators.len() + ignored == 2 {
            assert_eq!(creators.len(), 1, "exactly one node creates its user");
            break creators[0];
        }
        assert!(
            Instant::now() < deadline,
            "nodes 1 and 2 did not both report their bootstrap within {wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let name = if created_by == 1 { "first" } else { "second" };
    let leader = controller_leader(&addresses).await;
    println!(
        "node {created_by} created the bootstrap user {name} ({}: node {leader} leads the \
         controller)",
        if leader == created_by {
            "proposed locally"
        } else {
            "through the leader's peer service"
        }
    );
    let users: BTreeSet<String> = [name.to_string()].into();
    wait_until_all_list(&addresses, &users, &BTreeSet::new(), PROPAGATION_DEADLINE).await;

    let node = &mut nodes[0];
    node.kill9();
    let restarted = LoggedNode::launch(
        &node.data.clone(),
        node.id,
        &node.listen.clone(),
        &node.initial.clone(),
        Some("first:changed-pw-3"),
    );
    nodes[0] = restarted;
    nodes[0]
        .wait_for_log("users exist; STRATA_BOOTSTRAP_USER ignored", wait)
        .await;
    wait_until_all_list(&addresses, &users, &BTreeSet::new(), PROPAGATION_DEADLINE).await;
    let listed = Client::connect(&addresses[2])
        .await
        .expect("connect")
        .admin()
        .list_users()
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mechanism, "SCRAM-SHA-256");
    assert_eq!(listed[0].iterations, 4096);

    // The password is the first one: replay node 3's controller log (it never restarted, and
    // took no snapshot: every command is in it) into a metadata and check the credential.
    for node in &mut nodes {
        node.kill9();
    }
    let metadata = replay_controller_log(&nodes[2].data.join("controller"));
    assert_eq!(
        metadata.users.keys().collect::<Vec<_>>(),
        [name],
        "the replayed metadata agrees"
    );
    let password = if name == "first" {
        "first-pw-1"
    } else {
        "second-pw-2"
    };
    assert!(metadata.users[name].verify(password));
    assert!(!metadata.users[name].verify("changed-pw-3"));

    for node in &nodes {
        for secret in ["first-pw-1", "second-pw-2", "changed-pw-3"] {
            assert!(
                !node.logged(secret),
                "node {} logged a bootstrap password",
                node.id
            );
        }
    }
}

/// The peer service's `BootstrapUser`, which a node that does not lead the controller uses to
/// have the leader propose its bootstrap user: a follower refuses it (FAILED_PRECONDITION), the
/// leader creates the user once (then answers that users exist), and a malformed credential is
/// INVALID_ARGUMENT. The user is then listed by every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_bootstrap_user_is_served_by_the_controller_leader_only() {
    use strata_proto::v1::peer_client::PeerClient;
    use strata_server::security::scram::{ITERATIONS_DEFAULT, ScramCredential};

    let mut cluster = Cluster::start(3, 72);
    let leader = cluster.controller_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let credential = ScramCredential::new("peer-pw", ITERATIONS_DEFAULT).expect("credential");
    let request = |name: &str, credential: &ScramCredential| pb::BootstrapUserRequest {
        name: name.to_string(),
        salt: credential.salt.clone().into(),
        iterations: credential.iterations,
        stored_key: credential.stored_key.clone().into(),
        server_key: credential.server_key.clone().into(),
    };
    let peer = |id: u64| {
        let address = cluster.address(id);
        async move {
            PeerClient::connect(format!("http://{address}"))
                .await
                .expect("connect")
        }
    };

    let refused = peer(follower)
        .await
        .bootstrap_user(request("admin", &credential))
        .await
        .expect_err("a follower does not propose");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    let malformed = ScramCredential {
        iterations: 1,
        ..credential.clone()
    };
    let invalid = peer(leader)
        .await
        .bootstrap_user(request("admin", &malformed))
        .await
        .expect_err("malformed credential");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument, "{invalid}");

    let created = peer(leader)
        .await
        .bootstrap_user(request("admin", &credential))
        .await
        .expect("created")
        .into_inner();
    assert!(created.created);
    let again = peer(leader)
        .await
        .bootstrap_user(request("other", &credential))
        .await
        .expect("answered")
        .into_inner();
    assert!(!again.created, "a second bootstrap user is never created");
    let users: BTreeSet<String> = ["admin".to_string()].into();
    wait_until_all_list(
        &addresses(&mut cluster),
        &users,
        &BTreeSet::new(),
        PROPAGATION_DEADLINE,
    )
    .await;
}

/// The metadata a controller log's commands make, applied in order from an empty one (the
/// log must start at its first entry: no snapshot). Refused commands change nothing, as on
/// the nodes.
fn replay_controller_log(dir: &Path) -> strata_server::controller::metadata::Metadata {
    use strata_server::controller::metadata::{Command as MetadataCommand, Metadata};
    use strata_server::storage::batch::{decode_records, split_batches};
    use strata_server::storage::{LogConfig, PartitionLog};

    let log = PartitionLog::open(dir, LogConfig::default()).expect("open the controller log");
    assert_eq!(log.log_start_offset(), 0, "the whole log is there");
    let mut metadata = Metadata::default();
    let mut next = 0;
    while next < log.next_offset() {
        let spans = log.read(next, 64 * 1024).expect("read inside the range");
        assert!(!spans.is_empty(), "read at {next} returned nothing");
        for span in spans {
            for split in split_batches(span) {
                let (header, batch) = split.expect("whole batches");
                next = header.base_offset as u64 + header.offset_count();
                if header.is_control() {
                    continue;
                }
                for record in decode_records(&batch).expect("stored batches decode") {
                    let value = record.value.expect("a command");
                    let command: MetadataCommand =
                        serde_json::from_slice(&value).expect("a command as JSON");
                    let _refused = metadata.apply(command);
                }
            }
        }
    }
    metadata
}

/// Bad users and ACLs requests get INVALID_ARGUMENT (or the user errors) with the stable code in
/// `strata-error-code` and a message naming what was wrong and what is valid; nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_clear_errors() {
    use strata_tests::error_code;
    use strata_tests::server::ServerProcess;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(dir.path(), 1);
    let mut admin = server.clients().await.admin;
    let good = acl("User:alice", "orders", AclOperation::Read);
    let cases: Vec<(&str, AclEntry, &str)> = vec![
        (
            "operation unset",
            AclEntry {
                operation: 0,
                ..good.clone()
            },
            "operation must be set to one of: all, read",
        ),
        (
            "resource type unset",
            AclEntry {
                resource_type: 0,
                ..good.clone()
            },
            "resource_type must be set to one of: topic, group, cluster",
        ),
        (
            "principal without User:",
            AclEntry {
                principal: "alice".into(),
                ..good.clone()
            },
            "User:<name>",
        ),
        (
            "cluster ACL on a topic name",
            AclEntry {
                resource_type: ResourceType::Cluster as i32,
                ..good.clone()
            },
            "kafka-cluster",
        ),
    ];
    for (what, entry, says) in cases {
        let status = admin
            .create_acls(pb::CreateAclsRequest {
                acls: vec![good.clone(), entry],
            })
            .await
            .expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status}"
        );
        assert_eq!(error_code(&status), "ERROR_CODE_INVALID_ARGUMENT", "{what}");
        assert!(
            status.message().contains("ACL 1"),
            "{what}: {}",
            status.message()
        );
        assert!(
            status.message().contains(says),
            "{what}: {}",
            status.message()
        );
    }
    let status = admin
        .list_acls(pb::ListAclsRequest {
            filter: Some(pb::AclFilter {
                pattern: Some(pb::PatternFilter::Match as i32),
                ..Default::default()
            }),
        })
        .await
        .expect_err("match without a name");
    assert_eq!(error_code(&status), "ERROR_CODE_INVALID_ARGUMENT");
    assert!(
        status.message().contains("resource_name"),
        "{}",
        status.message()
    );

    let status = admin
        .create_user(pb::CreateUserRequest {
            name: "al:ice".into(),
            password: "pw".into(),
        })
        .await
        .expect_err("bad name");
    assert_eq!(error_code(&status), "ERROR_CODE_INVALID_ARGUMENT");
    assert!(
        status.message().contains("valid characters"),
        "{}",
        status.message()
    );
    let status = admin
        .create_user(pb::CreateUserRequest {
            name: "alice".into(),
            password: String::new(),
        })
        .await
        .expect_err("empty password");
    assert_eq!(error_code(&status), "ERROR_CODE_INVALID_ARGUMENT");
    let status = admin
        .delete_user(pb::DeleteUserRequest {
            name: "nobody".into(),
        })
        .await
        .expect_err("unknown user");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(error_code(&status), "ERROR_CODE_UNKNOWN_USER");

    let listed = listed_at(&server.address).await.expect("lists");
    assert_eq!(
        listed,
        (BTreeSet::new(), BTreeSet::new()),
        "nothing changed"
    );
}
