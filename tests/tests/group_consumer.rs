//! The Rust client's group consumer, request/reply helper and idempotent producer against real
//! servers: members in separate processes that crash, join, leave and get fenced while
//! records flow; two groups on one topic; a live offset reset; request and reply; and
//! producer retries across a kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_client::proto::v1::TopicConfig;
use strata_client::{
    Client, Error, GroupConsumerConfig, ProducerConfig, ProducerRecord, Requester, ResetTo,
    Responder,
};
use strata_tests::server::ServerProcess;

/// Every test ends within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// The longest any one condition is waited for.
const WAIT_MAX: Duration = Duration::from_secs(60);

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// A `group-member` process and the lines it printed.
struct Member {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Member {
    fn spawn(name: &'static str, broker: &str, group: &str, topic: &str, session_ms: u32) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_group-member"))
            .args([broker, group, topic, &session_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning group-member");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let shared = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let (lines, changed) = &*shared;
                lines.lock().expect("lines").push(line);
                changed.notify_all();
            }
        });
        let member = Self {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
        };
        member.wait_for_line(|line| line.starts_with("JOINED "));
        member
    }

    fn lines(&self) -> Vec<String> {
        self.lines.0.lock().expect("lines").clone()
    }

    fn member_id(&self) -> String {
        self.lines()
            .iter()
            .find_map(|line| line.strip_prefix("JOINED ").map(str::to_string))
            .expect("joined")
    }

    /// Waits (bounded) until some printed line satisfies `found`.
    fn wait_for_line(&self, found: impl Fn(&str) -> bool) {
        let (lines, changed) = &*self.lines;
        let deadline = Instant::now() + WAIT_MAX;
        let mut guard = lines.lock().expect("lines");
        while !guard.iter().any(|line| found(line)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: no such line in {:#?}",
                self.name,
                *guard
            );
            guard = changed.wait_timeout(guard, left).expect("lines").0;
        }
    }

    fn values(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|line| line.strip_prefix("REC "))
            .filter_map(|rest| rest.splitn(3, ' ').nth(2).map(str::to_string))
            .collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(self.child.id() as i32, signal) };
    }

    /// Closes standard input, which asks the member to commit, leave and exit.
    fn close(&mut self) {
        self.stdin.take();
        self.wait_for_line(|line| line == "CLOSED");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on `dir` with `topics` (name, partitions) created, and a client of it.
async fn server_with(dir: &std::path::Path, topics: &[(&str, u32)]) -> (ServerProcess, Client) {
    let server = ServerProcess::start(dir, 1);
    let client = Client::connect(&server.address).await.expect("connect");
    for (topic, partitions) in topics {
        client
            .admin()
            .create_topic(topic, *partitions, 1, TopicConfig::default())
            .await
            .expect("create");
    }
    (server, client)
}

/// Waits (bounded, pacing itself) until `check` returns `Some`.
async fn eventually<T, F>(what: &str, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn produce(client: &Client, topic: &str, partitions: u32, range: std::ops::Range<usize>) {
    let producer = client
        .producer(ProducerConfig::default())
        .expect("producer");
    let mut deliveries = Vec::new();
    for i in range {
        let record = ProducerRecord::new(topic, format!("r{i}")).partition(i as u32 % partitions);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
    producer.close().await.expect("close producer");
}

/// Whether the group has committed every partition of `topic` up to its high watermark.
async fn all_committed(client: &Client, group: &str, topic: &str) -> bool {
    let admin = client.admin();
    let Ok(described) = admin.describe_group(group).await else {
        return false;
    };
    let Ok(topic) = admin.describe_topic(topic).await else {
        return false;
    };
    topic.partition_info.iter().all(|info| {
        described.partitions.iter().any(|p| {
            p.partition == info.partition && p.committed_offset == Some(info.high_watermark)
        })
    })
}

/// Three members in separate processes share six partitions evenly. While records flow, one
/// is killed with SIGKILL, one joins, one leaves cleanly, and one is frozen (SIGSTOP) past its
/// session and thawed: its partitions go to others and it learns it lost them, then rejoins.
/// Throughout, an auditor checks that no partition is ever in two members' assignments; at the
/// end every record has been processed at least once and the group has committed everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_in_processes_share_partitions_through_churn() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, client) = server_with(dir.path(), &[("work", 6)]).await;
        let spawn = |name| Member::spawn(name, &server.address, "crew", "work", 2000);
        let mut a = spawn("a");
        let mut b = spawn("b");
        let c = spawn("c");

        // Spread evenly: two partitions each, once the hand-over settled.
        let described = eventually("an even spread", || async {
            let described = client.admin().describe_group("crew").await.ok()?;
            let even = described.state == "stable"
                && described.members.len() == 3
                && described.members.iter().all(|m| m.assignment.len() == 2);
            even.then_some(described)
        })
        .await;
        assert_eq!(described.partitions.len(), 6);

        // The auditor: no partition in two members' assignments, ever.
        let audit = {
            let client = client.clone();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopped = stop.clone();
            let task = tokio::spawn(async move {
                let mut checks = 0u64;
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(described) = client.admin().describe_group("crew").await {
                        let mut seen = BTreeMap::new();
                        for member in &described.members {
                            for tp in &member.assignment {
                                if let Some(other) = seen.insert(tp.partition, &member.member_id) {
                                    panic!(
                                        "partition {} held by {} and {}: {described:#?}",
                                        tp.partition, other, member.member_id
                                    );
                                }
                            }
                        }
                        checks += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                checks
            });
            (stop, task)
        };

        produce(&client, "work", 6, 0..300).await;
        a.signal(9);
        let _ = a.child.wait();
        let d = spawn("d");
        produce(&client, "work", 6, 300..600).await;
        b.close();
        // Freeze c past its session: the group moves its partitions to d.
        let c_id = c.member_id();
        c.signal(SIGSTOP);
        eventually("c's session to expire", || async {
            let described = client.admin().describe_group("crew").await.ok()?;
            let gone = described.members.iter().all(|m| m.member_id != c_id);
            let d_has_all =
                described.members.len() == 1 && described.members[0].assignment.len() == 6;
            (gone && d_has_all).then_some(())
        })
        .await;
        produce(&client, "work", 6, 600..900).await;
        c.signal(SIGCONT);
        // c finds out it was fenced, drops its partitions without committing, and rejoins.
        c.wait_for_line(|line| line.starts_with("CHANGE") && line.ends_with("lost=true"));
        eventually("everything processed and committed", || async {
            all_committed(&client, "crew", "work").await.then_some(())
        })
        .await;
        let (stop, task) = audit;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let checks = task.await.expect("auditor found two owners of a partition");
        assert!(checks > 10, "the auditor ran {checks} times");

        let mut processed = BTreeSet::new();
        for member in [&a, &b, &c, &d] {
            processed.extend(member.values());
        }
        let missing: Vec<usize> = (0..900)
            .filter(|i| !processed.contains(&format!("r{i}")))
            .collect();
        assert!(missing.is_empty(), "never processed: {missing:?}");
        // d ends up with work after the churn; c with some after rejoining (or d with all).
        let mut c = c;
        let mut d = d;
        c.close();
        d.close();
        assert!(!d.values().is_empty());
    })
    .await
    .expect("test timed out");
}

async fn collect_group(client: Client, group: &str, topic: &str, want: usize) -> BTreeSet<String> {
    let mut config = GroupConsumerConfig::new(group, [topic]);
    config.auto_commit = Some(Duration::from_millis(200));
    let mut consumer = client.group_consumer(config).await.expect("join");
    let mut seen = BTreeSet::new();
    while seen.len() < want {
        let record = consumer.next().await.expect("next").expect("open");
        seen.insert(String::from_utf8_lossy(&record.value.unwrap_or_default()).to_string());
    }
    consumer.close().await.expect("close");
    seen
}

/// Publish/subscribe from the same mechanism: two groups on one topic each receive every
/// record, while the two members of one of them share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_each_receive_every_record() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_server, client) = server_with(dir.path(), &[("fanout", 4)]).await;
        produce(&client, "fanout", 4, 0..400).await;
        let all: BTreeSet<String> = (0..400).map(|i| format!("r{i}")).collect();
        let audit = tokio::spawn(collect_group(client.clone(), "audit", "fanout", 400));
        // Two members of "billing": each gets a share; together, everything.
        let shares = {
            let mut members = Vec::new();
            for _ in 0..2 {
                let client = client.clone();
                members.push(tokio::spawn(async move {
                    let mut config = GroupConsumerConfig::new("billing", ["fanout"]);
                    config.auto_commit = Some(Duration::from_millis(100));
                    let mut consumer = client.group_consumer(config).await.expect("join");
                    let mut seen = BTreeSet::new();
                    // Read until the group as a whole has committed everything.
                    loop {
                        let next =
                            tokio::time::timeout(Duration::from_millis(500), consumer.next());
                        match next.await {
                            Ok(record) => {
                                let record = record.expect("next").expect("open");
                                seen.insert(
                                    String::from_utf8_lossy(&record.value.unwrap_or_default())
                                        .to_string(),
                                );
                            }
                            Err(_) => {
                                consumer.commit().await.expect("commit");
                                if all_committed(&client, "billing", "fanout").await {
                                    break;
                                }
                            }
                        }
                    }
                    consumer.close().await.expect("close");
                    seen
                }));
            }
            let mut shares = Vec::new();
            for member in members {
                shares.push(member.await.expect("member"));
            }
            shares
        };
        assert_eq!(audit.await.expect("audit"), all);
        let together: BTreeSet<String> = shares.iter().flatten().cloned().collect();
        assert_eq!(together, all);
    })
    .await
    .expect("test timed out");
}

/// A running member, reset to a point in time by an operator, reads again from there without
/// a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reset_replays_for_a_running_member() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_server, client) = server_with(dir.path(), &[("history", 2)]).await;
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
            - 600_000;
        let producer = client
            .producer(ProducerConfig::default())
            .expect("producer");
        for i in 0..60i64 {
            let record = ProducerRecord::new("history", format!("h{i}"))
                .partition((i % 2) as u32)
                .timestamp_ms(base + i * 1000);
            producer.send(record).await.expect("send");
        }
        producer.flush().await.expect("flush");
        let mut config = GroupConsumerConfig::new("analytics", ["history"]);
        config.auto_commit = None;
        let mut consumer = client.group_consumer(config).await.expect("join");
        let mut first_pass = BTreeSet::new();
        while first_pass.len() < 60 {
            let record = consumer.next().await.expect("next").expect("open");
            first_pass.insert(record.offset * 2 + u64::from(record.partition));
        }
        consumer.commit().await.expect("commit");
        // Reset to the record written at base + 40 s, while the member runs.
        client
            .admin()
            .reset_offsets(
                "analytics",
                "history",
                &[],
                ResetTo::Timestamp(base + 40_000),
                false,
            )
            .await
            .expect("reset");
        let mut replayed = BTreeSet::new();
        while replayed.len() < 20 {
            let record = tokio::time::timeout(WAIT_MAX, consumer.next())
                .await
                .expect("the member resumed from the reset")
                .expect("next")
                .expect("open");
            assert!(
                record.timestamp >= base + 40_000,
                "replayed a record from before the reset point: {record:?}"
            );
            replayed.insert(String::from_utf8_lossy(&record.value.unwrap_or_default()).to_string());
        }
        let expected: BTreeSet<String> = (40..60).map(|i| format!("h{i}")).collect();
        assert_eq!(replayed, expected);
        consumer.close().await.expect("close");
    })
    .await
    .expect("test timed out");
}

/// A requester's request reaches a responder in a group and its reply comes back, matched by
/// correlation id, many at once; without a responder the request times out clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_over_topics() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_server, client) = server_with(
            dir.path(),
            &[("requests", 2), ("replies", 2), ("unanswered", 1)],
        )
        .await;
        let responder = Responder::new(&client, GroupConsumerConfig::new("upper", ["requests"]))
            .await
            .expect("responder");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(responder.run(
            |request| async move {
                let value = request.value.unwrap_or_default();
                Bytes::from(String::from_utf8_lossy(&value).to_uppercase())
            },
            async {
                let _ = stopped.await;
            },
        ));
        let requester = Arc::new(Requester::new(&client, "replies").await.expect("requester"));
        let mut calls = Vec::new();
        for i in 0..20 {
            let requester = requester.clone();
            calls.push(tokio::spawn(async move {
                let reply = requester
                    .request(
                        "requests",
                        None,
                        format!("hello {i}"),
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("reply");
                (i, reply)
            }));
        }
        for call in calls {
            let (i, reply) = call.await.expect("call");
            assert_eq!(
                reply.value.as_deref(),
                Some(format!("HELLO {i}").as_bytes())
            );
            assert!(reply.header("correlation-id").is_some());
        }
        assert_eq!(requester.pending(), 0);
        let error = requester
            .request("unanswered", None, "anyone?", Duration::from_millis(500))
            .await
            .expect_err("nobody answers");
        assert!(matches!(error, Error::NoReply { .. }), "{error:?}");
        let _ = stop.send(());
        serving.await.expect("responder task").expect("responder");
    })
    .await
    .expect("test timed out");
}

/// The client's idempotent producer (the default) keeps sending while the server is killed
/// with SIGKILL and restarted: batches stored but not acknowledged are retried, and the log
/// still holds each record once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_across_kill9() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut server, client) = server_with(dir.path(), &[("once", 1)]).await;
        let config = ProducerConfig {
            linger: Duration::from_millis(1),
            batch_bytes_max: 4096,
            ..ProducerConfig::default()
        };
        assert!(config.idempotent, "idempotence is the default");
        let producer = client.producer(config).expect("producer");
        const RECORDS: usize = 6000;
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            let record = ProducerRecord::new("once", format!("{i:06}-{}", "x".repeat(100)));
            deliveries.push(producer.send(record).await.expect("send"));
            if i == RECORDS / 3 {
                // Let some of it land, then kill the server with batches in flight.
                producer.flush().await.expect("flush");
            }
            if i == RECORDS / 2 {
                server.kill9();
                server.restart();
            }
        }
        let mut offsets = Vec::new();
        for delivery in deliveries {
            offsets.push(
                delivery
                    .await
                    .expect("delivered despite the restart")
                    .offset,
            );
        }
        producer.close().await.expect("close");
        let mut consumer = client
            .subscribe(
                "once",
                0,
                strata_client::StartFrom::Earliest,
                Default::default(),
            )
            .await
            .expect("subscribe");
        let mut values = Vec::new();
        while values.len() < RECORDS {
            let record = tokio::time::timeout(WAIT_MAX, consumer.next())
                .await
                .expect("records")
                .expect("next")
                .expect("open");
            values.push((record.offset, record.value.unwrap_or_default()));
        }
        for (i, (offset, value)) in values.iter().enumerate() {
            assert_eq!(*offset, i as u64);
            assert!(
                value.starts_with(format!("{i:06}-").as_bytes()),
                "offset {offset} holds {:?}",
                String::from_utf8_lossy(&value[..6.min(value.len())])
            );
            assert_eq!(
                offsets[i], *offset,
                "the delivery of record {i} named its offset"
            );
        }
        let high_watermark = client
            .admin()
            .describe_topic("once")
            .await
            .expect("describe");
        assert_eq!(
            high_watermark.partition_info[0].high_watermark, RECORDS as u64,
            "nothing stored twice"
        );
    })
    .await
    .expect("test timed out");
}
