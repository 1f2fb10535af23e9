//! The web console (`/ui`) in a real browser: Debian's headless Chromium driven by Playwright
//! (`tests/console/console.py`, one scenario per step; see `strata_tests::console`). Each node
//! serves its console on `--http-listen`. The test prepares data with the `strata` CLI and the
//! gRPC API, lets the browser act, and checks the cluster afterwards with the CLI:
//! - the cluster page shows three nodes up, a controller leader and throughput charts;
//! - a topic created in the UI of a node that does not lead the controller (the JSON API passes
//!   the change on) is in `strata topic list`; one deleted there (after typing its name) is
//!   not; a configuration altered there is the topic's;
//! - records produced with the CLI show in the message browser with key, value (text, JSON,
//!   hex) and headers; the filter, oldest/newest first, offsets, times and following live
//!   work; a partition the node holds no replica of is read from the node that holds it;
//! - a group's offsets reset in the UI (dry-run preview first, which commits nothing, then
//!   apply) are the committed offsets `strata group describe` shows;
//! - with passwords and ACLs: the login form, a wrong password refused, a topic the user may
//!   not describe hidden, a refused delete shown with the authorizer's reason.
//!
//! Screenshots of every page land in `target/console-screenshots/`.
//!
//! Cluster slots: 130 (plain), 131 (TLS, passwords, ACLs).

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use strata_proto::v1 as pb;
use strata_tests::certs::{node_flags, strata_binary, tls_init, trusting_client};
use strata_tests::cluster::Cluster;
use strata_tests::console::{console_script, screenshots_dir};
use strata_tests::kafka::run;

const PLAIN_SLOT: u8 = 130;
const SECURE_SLOT: u8 = 131;
/// Node `id`'s HTTP listener is on port `HTTP_PORT_BASE + id` of its slot's address.
const HTTP_PORT_BASE: u16 = 21_200;
/// The longest one browser scenario may take (it waits for sampled charts: a few seconds).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest one CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a change made through one node may take to show on another.
const PROPAGATION_WAIT: Duration = Duration::from_secs(30);
const ADMIN: (&str, &str) = ("admin", "admin-password");
const BOB: (&str, &str) = ("bob", "bob-password");

fn http_address(slot: u8, id: u64) -> String {
    let port = HTTP_PORT_BASE + u16::try_from(id).expect("a test cluster has few nodes");
    format!("127.0.{slot}.1:{port}")
}

/// Runs `console.py SCENARIO --url URL ...`, failing the test with its output when it fails.
fn scenario(url: &str, name: &str, args: &[String]) {
    let mut command = console_script();
    command
        .arg(name)
        .args(["--url", url, "--screenshots"])
        .arg(screenshots_dir())
        .args(args);
    let started = Instant::now();
    let output = run(command, SCENARIO_TIMEOUT);
    print!("{}", String::from_utf8_lossy(&output.stdout));
    println!("scenario {name} passed in {:?}", started.elapsed());
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

/// How the CLI reaches a cluster: its broker list, and for a secure one the CA and a user.
struct Cli {
    brokers: String,
    tls_ca: Option<std::path::PathBuf>,
    user: Option<(&'static str, &'static str)>,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(strata_binary());
        command.args(["--brokers", &self.brokers]);
        if let Some(ca) = &self.tls_ca {
            command.arg("--tls-ca").arg(ca);
        }
        if let Some((user, password)) = self.user {
            command
                .args(["--user", user])
                .env("STRATA_PASSWORD", password);
        }
        command.args(args);
        command
    }

    /// Runs `strata ARGS` with `stdin` as its input within [`CLI_TIMEOUT`].
    fn try_run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting strata");
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(stdin).expect("writing to strata's stdin");
        drop(input);
        let deadline = Instant::now() + CLI_TIMEOUT;
        while child.try_wait().expect("waiting for strata").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("strata's output")
    }

    /// `strata ARGS`, which must succeed.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let output = self.try_run(args, stdin);
        assert!(
            output.status.success(),
            "strata {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `strata --format json ARGS`, parsed; retried until `accept` takes it or
    /// [`PROPAGATION_WAIT`] passes.
    fn json_until(
        &self,
        args: &[&str],
        accept: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PROPAGATION_WAIT;
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        loop {
            let output = self.try_run(&all, b"");
            let text = String::from_utf8_lossy(&output.stdout).to_string();
            let parsed = serde_json::from_str(&text).ok();
            if let Some(value) = &parsed
                && output.status.success()
                && accept(value)
            {
                return value.clone();
            }
            assert!(
                Instant::now() < deadline,
                "strata {all:?} did not show what was expected within {PROPAGATION_WAIT:?}; \
                 last answer ({}):\n{text}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn topic_names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .map(|topics| {
            topics
                .iter()
                .filter_map(|topic| topic["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every page of the console on a 3-node cluster: the cluster page on the console of the
/// controller's leader, topics on a follower's, messages on node 1's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_on_a_three_node_cluster() {
    let mut cluster = Cluster::start_with_node_args(3, PLAIN_SLOT, |id| {
        strings(&["--http-listen", &http_address(PLAIN_SLOT, id)])
    });
    let url = format!("http://{}", http_address(PLAIN_SLOT, 1));
    let cli = Cli {
        brokers: cluster.brokers(),
        tls_ca: None,
        user: None,
    };

    // A node knows which nodes are up from the raft messages it receives: before any topic
    // exists only the controller's leader hears from every node (a follower hears from the
    // leader alone), so the cluster page is checked there. Topic changes are made on a
    // follower's console, which passes them to the controller's leader.
    let controller = cluster.controller_leader().await;
    let controller_url = format!("http://{}", http_address(PLAIN_SLOT, controller));
    let follower = if controller == 1 { 2 } else { 1 };
    let follower_url = format!("http://{}", http_address(PLAIN_SLOT, follower));
    scenario(&controller_url, "cluster", &[]);

    // Topics: create (and alter) one, create and delete another, in the UI.
    let topic = "console-orders";
    let doomed = "console-doomed";
    scenario(
        &controller_url,
        "topics",
        &strings(&[
            "--topic",
            topic,
            "--doomed",
            doomed,
            "--follower-url",
            &follower_url,
            "--controller",
            &controller.to_string(),
        ]),
    );
    cli.json_until(&["topic", "list"], |list| {
        let names = topic_names(list);
        names.iter().any(|name| name == topic) && !names.iter().any(|name| name == doomed)
    });
    let described = cli.json_until(&["topic", "describe", topic], |_| true);
    assert_eq!(
        described["config"]["retention_ms"], 3_600_000,
        "the retention set in the UI: {described}"
    );

    // Messages: two records with headers from the CLI, on partition 0.
    cli.run(
        &[
            "produce",
            topic,
            "--partition",
            "0",
            "--key-separator",
            "|",
            "--header",
            "trace-id=abc-123",
            "--header",
            "source=strata-cli",
        ],
        b"order-1|{\"amount\": 42, \"currency\": \"EUR\"}\norder-2|{\"amount\": 7, \"currency\": \"USD\"}\n",
    );
    // A topic with one replica per partition: some partition lives on a node other than 1,
    // whose console reads it from that node.
    let elsewhere = "console-elsewhere";
    cluster.create_topic(elsewhere, 3, 1).await;
    let mut admin = cluster.clients(1).await.admin;
    let description = admin
        .describe_topic(pb::DescribeTopicRequest {
            name: elsewhere.to_string(),
        })
        .await
        .expect("describe")
        .into_inner();
    let (partition, holder) = description
        .partition_info
        .iter()
        .find_map(|info| {
            let holder = *info.replica_node_ids.first()?;
            (holder != 1).then_some((info.partition, holder))
        })
        .expect("a partition of a 3-partition, 1-replica topic on a node other than 1");
    let leader = cluster.leader_of(elsewhere, partition).await;
    assert_eq!(leader, holder, "a single replica leads its partition");
    cluster
        .clients(holder)
        .await
        .broker
        .produce(pb::ProduceRequest {
            topic: elsewhere.to_string(),
            target: Some(pb::produce_request::Target::Partition(partition)),
            payload: Some(pb::produce_request::Payload::Records(pb::RecordList {
                records: vec![pb::Record {
                    value: Some(bytes::Bytes::from_static(b"elsewhere-record")),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        })
        .await
        .expect("produce on the partition's leader");
    let elsewhere_page = format!("{elsewhere}/{partition}");
    // Produces go to a partition's leader (others answer NOT_LEADER); reads work on any replica.
    let leader_of_0 = cluster.leader_of(topic, 0).await;
    let produce_url = format!("http://{}", http_address(PLAIN_SLOT, leader_of_0));
    scenario(
        &url,
        "messages",
        &strings(&[
            "--topic",
            topic,
            "--key",
            "order-1",
            "--value",
            "{\"amount\": 42, \"currency\": \"EUR\"}",
            "--header",
            "trace-id=abc-123",
            "--header",
            "source=strata-cli",
            "--elsewhere-topic",
            &elsewhere_page,
            "--produce-url",
            &produce_url,
        ]),
    );

    // Groups: a group that committed offset 3 of partition 0 (the two CLI records and the one
    // the browser produced while following), reset in the UI by shift -2.
    let group = "console-readers";
    let deadline = Instant::now() + PROPAGATION_WAIT;
    // Group requests go to the controller's leader: try each node until one takes it.
    'commit: loop {
        for id in 1..=3 {
            let mut groups = cluster.clients(id).await.groups;
            let commit = groups
                .commit_offsets(pb::CommitOffsetsRequest {
                    group_id: group.to_string(),
                    offsets: vec![pb::OffsetCommit {
                        topic: topic.to_string(),
                        partition: 0,
                        offset: 3,
                        metadata: String::new(),
                    }],
                    ..Default::default()
                })
                .await;
            if commit.is_ok() {
                break 'commit;
            }
        }
        assert!(Instant::now() < deadline, "no node took the commit");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scenario(
        &controller_url,
        "groups",
        &strings(&[
            "--group",
            group,
            "--topic",
            topic,
            "--committed",
            "3",
            "--shift",
            "-2",
            "--produce-url",
            &produce_url,
        ]),
    );
    cli.json_until(&["group", "describe", group], |described| {
        described["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["topic"] == topic && p["partition"] == 0 && p["committed_offset"] == 1)
    });
}

/// The bootstrap superuser comes from the environment servers inherit; set once, before this
/// binary's secure test starts servers.
fn bootstrap_env() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // SAFETY: runs before the secure test spawns its servers; the plain test's servers
        // ignore the variable (no authentication), and std serializes environment access.
        unsafe { std::env::set_var("STRATA_BOOTSTRAP_USER", format!("{}:{}", ADMIN.0, ADMIN.1)) };
    });
}

/// With TLS, passwords and ACLs: the console asks who the user is, refuses a wrong password,
/// hides a topic the user may not describe and shows why a delete is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_with_passwords_and_acls() {
    bootstrap_env();
    let certs = tempfile::tempdir().expect("tempdir");
    let host = format!("127.0.{SECURE_SLOT}.1");
    tls_init(certs.path(), 3, &host);
    let cluster = Cluster::start_tls(
        3,
        SECURE_SLOT,
        |id| {
            let mut args = node_flags(certs.path(), id, false);
            args.extend(strings(&[
                "--authentication",
                "password",
                "--authorization",
                "on",
                "--superusers",
                "User:admin",
                "--http-listen",
                &http_address(SECURE_SLOT, id),
            ]));
            args
        },
        trusting_client(certs.path()),
    );
    let brokers = cluster.brokers();
    let admin = Cli {
        brokers: brokers.clone(),
        tls_ca: Some(certs.path().join("ca.pem")),
        user: Some(ADMIN),
    };
    let shared = "console-shared";
    let secret = "console-secret";
    // The bootstrap user reaches every node shortly after the cluster starts.
    admin.json_until(&["user", "list"], |_| true);
    for topic in [shared, secret] {
        admin.run(
            &[
                "topic",
                "create",
                topic,
                "--partitions",
                "1",
                "--replication-factor",
                "3",
            ],
            b"",
        );
    }
    let mut create_bob = admin.command(&["user", "create", BOB.0]);
    create_bob.env("STRATA_NEW_PASSWORD", BOB.1);
    run(create_bob, CLI_TIMEOUT);
    admin.run(
        &[
            "acl",
            "create",
            "--principal",
            "User:bob",
            "--topic",
            shared,
            "--operation",
            "describe",
        ],
        b"",
    );
    // Bob sees the shared topic once the ACL reached the nodes (node 1 here; the console's
    // node below answers as the controller's leader, which applied it first).
    let bob_on_node_1 = Cli {
        brokers: cluster.address(1),
        tls_ca: Some(certs.path().join("ca.pem")),
        user: Some(BOB),
    };
    let listed = bob_on_node_1.json_until(&["topic", "list"], |list| {
        topic_names(list).iter().any(|name| name == shared)
    });
    assert!(
        !topic_names(&listed).iter().any(|name| name == secret),
        "bob may not describe {secret}: {listed}"
    );
    // Deleting a topic is the controller leader's to refuse (another node's console sends the
    // user there first).
    let info = admin.json_until(&["cluster", "info"], |info| {
        info["controller_leader_node_id"]
            .as_u64()
            .is_some_and(|id| id > 0)
    });
    let controller = info["controller_leader_node_id"]
        .as_u64()
        .expect("checked above");
    scenario(
        &format!("https://{}", http_address(SECURE_SLOT, controller)),
        "authorization",
        &strings(&[
            "--user",
            BOB.0,
            "--password",
            BOB.1,
            "--topic",
            shared,
            "--hidden-topic",
            secret,
        ]),
    );
    // The refused delete changed nothing.
    admin.json_until(&["topic", "list"], |list| {
        topic_names(list).iter().any(|name| name == shared)
    });
}
