//! Fault tests of a 3-node cluster of real processes: leaders killed with SIGKILL over and
//! over while a producer keeps producing; the whole cluster killed at once; a node whose disk
//! was wiped. A checker then reads everything back: every acknowledged record is present
//! exactly once, in order, at the offset its acknowledgement named.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_proto::batch::BatchBuilder;
use strata_proto::v1 as pb;
use strata_tests::cluster::{Cluster, connect, from_offset_zero};
use strata_tests::error_code;
use strata_tests::server::Clients;

const TEST_TIMEOUT: Duration = Duration::from_secs(300);
const RECORDS_PER_BATCH: u64 = 5;

/// Batch `seq` of the test producer: records `s{seq}-{i}`, idempotent sequence `seq * 5`.
fn batch(producer_id: i64, seq: u64) -> Bytes {
    let mut builder =
        BatchBuilder::new().producer(producer_id, 0, (seq * RECORDS_PER_BATCH) as i32);
    for i in 0..RECORDS_PER_BATCH {
        builder.push(1, None, Some(format!("s{seq}-{i}").as_bytes()), &[]);
    }
    builder.finish().freeze()
}

/// What the producer got acknowledged: (batch seq, base offset).
type Acked = Arc<Mutex<Vec<(u64, u64)>>>;

/// Produces batches one at a time to partition 0 of `topic`, each until acknowledged, following
/// leaders: NOT_LEADER hints, else the next node. Stops when `stop` is set. Sequences continue
/// after the last batch already in `acked`.
async fn produce_until(
    addresses: Vec<String>,
    topic: String,
    producer_id: i64,
    stop: Arc<AtomicBool>,
    acked: Acked,
    progress: Arc<AtomicU64>,
) {
    let mut connections: HashMap<String, Clients> = HashMap::new();
    let mut target = addresses[0].clone();
    let mut next_node = 0;
    // Continue after whatever this producer had acknowledged before.
    let mut seq = acked
        .lock()
        .expect("acked")
        .last()
        .map_or(0, |(seq, _)| seq + 1);
    while !stop.load(Ordering::Relaxed) {
        let request = pb::ProduceRequest {
            topic: topic.clone(),
            target: Some(pb::produce_request::Target::Partition(0)),
            payload: Some(pb::produce_request::Payload::Batch(batch(producer_id, seq))),
            ..pb::ProduceRequest::default()
        };
        let clients = match connections.get(&target) {
            Some(clients) => Some(clients.clone()),
            None => connect(&target).await.ok(),
        };
        let outcome = match clients {
            Some(mut clients) => {
                connections.insert(target.clone(), clients.clone());
                tokio::time::timeout(Duration::from_secs(5), clients.broker.produce(request))
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("timed out")))
            }
            None => Err(tonic::Status::unavailable("cannot connect")),
        };
        match outcome {
            Ok(reply) => {
                acked
                    .lock()
                    .expect("acked")
                    .push((seq, reply.get_ref().base_offset));
                progress.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            Err(status) => {
                let hint = (error_code(&status) == "ERROR_CODE_NOT_LEADER")
                    .then(|| <pb::ErrorDetail as prost::Message>::decode(status.details()).ok())
                    .flatten()
                    .and_then(|detail| detail.leader_address);
                match hint {
                    Some(address) => target = address,
                    None => {
                        connections.remove(&target);
                        next_node = (next_node + 1) % addresses.len();
                        target = addresses[next_node].clone();
                        // Paced retries while an election runs.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }
}

/// A background [`produce_until`] on every node of a cluster.
struct Producing {
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Producing {
    fn start(cluster: &Cluster, topic: &str, producer_id: i64, acked: &Acked) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let addresses = cluster.nodes.iter().map(|n| n.address.clone()).collect();
        let task = tokio::spawn(produce_until(
            addresses,
            topic.to_string(),
            producer_id,
            stop.clone(),
            acked.clone(),
            progress.clone(),
        ));
        Self {
            stop,
            progress,
            task,
        }
    }

    /// Stops producing and waits for the producer's last batch.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("producer");
    }
}

/// Every record still stored in partition 0, read from `node` (followers serve committed data
/// too). Retention (1 s in some tests here) may remove the next page while the read goes on
/// (OFFSET_OUT_OF_RANGE, as a Kafka consumer would see): then it reads again from the new log
/// start, for at most 30 s.
async fn read_all(cluster: &Cluster, node: u64, topic: &str) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cluster.clients(node).await.try_read_values(topic, 0).await {
            Ok(records) => return records,
            Err(status)
                if status.code() == tonic::Code::OutOfRange && Instant::now() < deadline => {}
            Err(status) => panic!("reading {topic} from node {node}: {status:?}"),
        }
    }
}

/// Every acknowledged batch is in the log exactly once, in order, at its acknowledged offset,
/// and nothing is in the log twice.
fn check(records: &[(u64, String)], acked: &[(u64, u64)]) {
    let first = records.first().map_or(0, |(offset, _)| *offset);
    for (position, (offset, _)) in records.iter().enumerate() {
        assert_eq!(*offset, first + position as u64, "offsets are dense");
    }
    let mut seen = HashMap::new();
    for (offset, value) in records {
        if let Some(first) = seen.insert(value.clone(), *offset) {
            panic!("{value} is stored twice: at {first} and {offset}");
        }
    }
    for (seq, base) in acked {
        for i in 0..RECORDS_PER_BATCH {
            let value = format!("s{seq}-{i}");
            assert_eq!(
                seen.get(&value),
                Some(&(base + i)),
                "acknowledged record {value} is not at offset {}",
                base + i
            );
        }
    }
    // In order: batch seqs appear ascending.
    let seqs: Vec<u64> = records
        .iter()
        .filter_map(|(_, v)| v.strip_prefix('s')?.split('-').next()?.parse().ok())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "out of order");
}

/// Waits (bounded) until `progress` passes `mark`; returns how long that took.
async fn progress_past(progress: &AtomicU64, mark: u64, what: &str) -> Duration {
    let started = Instant::now();
    while progress.load(Ordering::Relaxed) <= mark {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no acknowledged produce within 60 s {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

/// Fault tests 1, 3 and 5: ten rounds of SIGKILL to the partition's leader (restarting it
/// each time) under continuous acknowledged produce, timing each fail-over (kill to the next
/// acknowledged produce); then SIGKILL to every node at once and a restart of all. Nothing
/// acknowledged is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_and_a_whole_cluster_kill_lose_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 41);
        cluster.create_topic("ledger", 1, 3).await;
        let producer = cluster.producer_id().await;
        let acked: Acked = Arc::default();
        let producing = Producing::start(&cluster, "ledger", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 20, "at the start").await;
        let mut fail_overs = Vec::new();
        for round in 0..10 {
            let leader = cluster.leader_of("ledger", 0).await;
            cluster.node(leader).kill9();
            // Counted from the moment the leader is gone (kill9 waits for the process).
            let mark = progress.load(Ordering::Relaxed);
            let took =
                progress_past(&progress, mark, &format!("after killing node {leader}")).await;
            fail_overs.push(took);
            eprintln!("round {round}: killed leader {leader}; next ack after {took:?}");
            cluster.node(leader).restart();
            let mark = progress.load(Ordering::Relaxed);
            progress_past(&progress, mark + 10, "after the restart").await;
        }
        fail_overs.sort();
        eprintln!(
            "fail-over (kill -9 of the leader to the next acknowledged produce) over {} runs: \
             median {:?}, max {:?}",
            fail_overs.len(),
            fail_overs[fail_overs.len() / 2],
            fail_overs[fail_overs.len() - 1]
        );
        // Every node at once.
        let mark = progress.load(Ordering::Relaxed);
        for id in 1..=3 {
            cluster.node(id).kill9();
        }
        for id in 1..=3 {
            cluster.node(id).relaunch();
        }
        for id in 1..=3 {
            cluster.node(id).wait_ready();
        }
        progress_past(&progress, mark + 10, "after restarting the whole cluster").await;
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        let leader = cluster.leader_of("ledger", 0).await;
        let records = read_all(&cluster, leader, "ledger").await;
        assert!(
            acked.len() > 100,
            "only {} batches acknowledged",
            acked.len()
        );
        check(&records, &acked);
    })
    .await
    .expect("test timed out");
}

/// Fault test 4: a node whose data directory was replaced by an empty one catches up from the
/// others and serves everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 42);
        cluster.create_topic("history", 1, 3).await;
        let producer = cluster.producer_id().await;
        let acked: Acked = Arc::default();
        let producing = Producing::start(&cluster, "history", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 200, "at the start").await;
        // Wipe a follower.
        let leader = cluster.leader_of("history", 0).await;
        let victim = if leader == 3 { 2 } else { 3 };
        cluster.node(victim).kill9();
        let data = cluster.node(victim).data_dir.clone();
        std::fs::remove_dir_all(&data).expect("wipe");
        std::fs::create_dir_all(&data).expect("empty data dir");
        let mark = progress.load(Ordering::Relaxed);
        cluster.node(victim).restart();
        progress_past(&progress, mark + 50, "after the wipe").await;
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        // The wiped node ends with the same records as the leader.
        let leader = cluster.leader_of("history", 0).await;
        let expected = read_all(&cluster, leader, "history").await;
        check(&expected, &acked);
        let started = Instant::now();
        loop {
            let mut clients = cluster.clients(victim).await;
            // The victim's own replica, not the cluster's view (see `cluster_view`).
            let mut request = tonic::Request::new(pb::DescribeTopicRequest {
                name: "history".to_string(),
            });
            request
                .metadata_mut()
                .insert("strata-local-view", "1".parse().expect("ascii"));
            let described = clients.admin.describe_topic(request).await;
            if let Ok(described) = described
                && described.get_ref().partition_info[0].high_watermark == expected.len() as u64
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "node {victim} did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(read_all(&cluster, victim, "history").await, expected);
    })
    .await
    .expect("test timed out");
}

/// A rolling restart: each round stops the partition's leader gracefully (SIGTERM: it hands
/// leadership to a caught-up replica before it exits), restarts it, and moves on. Nothing
/// acknowledged is lost; the pause each stop causes is reported (compare with the kill -9
/// fail-over of the test above, which waits out an election timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 43);
        cluster.create_topic("rolling", 1, 3).await;
        let producer = cluster.producer_id().await;
        let acked: Acked = Arc::default();
        let producing = Producing::start(&cluster, "rolling", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 20, "at the start").await;
        let mut pauses = Vec::new();
        for round in 0..3 {
            let leader = cluster.leader_of("rolling", 0).await;
            assert_eq!(cluster.node(leader).terminate(), Some(0), "clean exit");
            let mark = progress.load(Ordering::Relaxed);
            let took = progress_past(&progress, mark, "after a graceful stop").await;
            eprintln!("round {round}: stopped leader {leader} gracefully; next ack after {took:?}");
            pauses.push(took);
            cluster.node(leader).restart();
            let mark = progress.load(Ordering::Relaxed);
            progress_past(&progress, mark + 10, "after the restart").await;
        }
        pauses.sort();
        eprintln!(
            "graceful leader stop to the next acknowledged produce: median {:?}, max {:?}",
            pauses[pauses.len() / 2],
            pauses[pauses.len() - 1]
        );
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        let leader = cluster.leader_of("rolling", 0).await;
        check(&read_all(&cluster, leader, "rolling").await, &acked);
    })
    .await
    .expect("test timed out");
}

/// Fault test 2: the leader is cut off from the other nodes (by proxies between the nodes;
/// clients still reach it). The minority cannot commit: a batch sent to the old leader is not
/// acknowledged and never appears anywhere; the majority elects a leader and keeps serving;
/// after healing, every node holds the same records and every acknowledged one is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_commit_and_nothing_diverges() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start_partitionable(3, 44).await;
        cluster.create_topic("split", 1, 3).await;
        let producer = cluster.producer_id().await;
        let acked: Acked = Arc::default();
        let producing = Producing::start(&cluster, "split", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 20, "at the start").await;
        let old_leader = cluster.leader_of("split", 0).await;
        cluster.isolate(old_leader).await;
        // Straight to the isolated leader: not acknowledged.
        let mut minority = cluster.clients(old_leader).await;
        let mut builder = BatchBuilder::new();
        builder.push(1, None, Some(b"minority-write"), &[]);
        let attempt = tokio::time::timeout(
            Duration::from_secs(3),
            minority.broker.produce(pb::ProduceRequest {
                topic: "split".to_string(),
                target: Some(pb::produce_request::Target::Partition(0)),
                payload: Some(pb::produce_request::Payload::Batch(
                    builder.finish().freeze(),
                )),
                ..pb::ProduceRequest::default()
            }),
        )
        .await;
        assert!(
            !matches!(attempt, Ok(Ok(_))),
            "the isolated leader acknowledged a write: {attempt:?}"
        );
        // The majority goes on.
        let mark = progress.load(Ordering::Relaxed);
        let took = progress_past(&progress, mark + 20, "from the majority").await;
        eprintln!("the majority served 20 batches {took:?} after the leader was cut off");
        cluster.heal();
        let mark = progress.load(Ordering::Relaxed);
        progress_past(&progress, mark + 20, "after healing").await;
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        let leader = cluster.leader_of("split", 0).await;
        let expected = read_all(&cluster, leader, "split").await;
        check(&expected, &acked);
        assert!(
            expected.iter().all(|(_, value)| value != "minority-write"),
            "the minority's write was committed"
        );
        // Every node converges on the same log.
        cluster
            .wait_until_every_node_holds("split", 0, &expected, Duration::from_secs(60))
            .await;
    })
    .await
    .expect("test timed out");
}

/// The Rust client on a cluster: its idempotent producer and its partition consumers follow
/// leaders on their own while partition leaders are killed with SIGKILL and restarted; every
/// record is stored exactly once, in order, at the offset its delivery named, and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_leaders_through_kills() {
    use strata_client::{Client, ProducerConfig, ProducerRecord, StartFrom};
    tokio::time::timeout(TEST_TIMEOUT, async {
        const PARTITIONS: u32 = 3;
        const RECORDS: usize = 3000;
        let mut cluster = Cluster::start(3, 45);
        let brokers = cluster.brokers();
        let client = Client::connect(&brokers).await.expect("connect");
        client
            .admin()
            .create_topic("orders", PARTITIONS, 3, Default::default())
            .await
            .expect("create topic");
        let producer = client
            .producer(ProducerConfig {
                linger: std::time::Duration::from_millis(2),
                ..ProducerConfig::default()
            })
            .expect("producer");
        let mut deliveries = Vec::new();
        for i in 0..RECORDS {
            let partition = i as u32 % PARTITIONS;
            let record =
                ProducerRecord::new("orders", format!("{partition}:{i}")).partition(partition);
            deliveries.push((partition, i, producer.send(record).await.expect("send")));
            if i == RECORDS / 3 || i == 2 * RECORDS / 3 {
                // Kill the leader of one partition with batches in flight, and bring it back.
                producer.flush().await.expect("flush");
                let leader = cluster
                    .leader_of("orders", (i / (RECORDS / 3)) as u32 % PARTITIONS)
                    .await;
                cluster.node(leader).kill9();
                cluster.node(leader).restart();
            }
        }
        let mut expected: Vec<Vec<(u64, String)>> = vec![Vec::new(); PARTITIONS as usize];
        for (partition, i, delivery) in deliveries {
            let stored = delivery.await.expect("delivered despite the kills");
            assert_eq!(stored.partition, partition);
            expected[partition as usize].push((stored.offset, format!("{partition}:{i}")));
        }
        producer.close().await.expect("close");
        for partition in 0..PARTITIONS {
            let wanted = &expected[partition as usize];
            let mut consumer = client
                .subscribe("orders", partition, StartFrom::Earliest, Default::default())
                .await
                .expect("subscribe");
            let mut got = Vec::new();
            while got.len() < wanted.len() {
                let record = tokio::time::timeout(Duration::from_secs(60), consumer.next())
                    .await
                    .expect("records")
                    .expect("next")
                    .expect("open");
                let value = String::from_utf8_lossy(&record.value.unwrap_or_default()).to_string();
                got.push((record.offset, value));
            }
            assert_eq!(
                &got, wanted,
                "partition {partition}: each record once, in order"
            );
            // The leader's high watermark, as the subscription last reported it.
            assert_eq!(
                consumer.high_watermark(),
                wanted.len() as u64,
                "partition {partition}: nothing stored twice"
            );
        }
    })
    .await
    .expect("test timed out");
}

/// An idle partition goes quiet (no heartbeats); when its leader is killed, the followers
/// notice the node is gone and elect a new leader, and produce works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_partition_fails_over() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 46);
        cluster.create_topic("calm", 1, 3).await;
        let producer = cluster.producer_id().await;
        let acked: Acked = Arc::default();
        let producing = Producing::start(&cluster, "calm", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 10, "at the start").await;
        producing.finish().await;
        // Idle well past the point where the group goes quiet (3 s without activity).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let leader = cluster.leader_of("calm", 0).await;
        cluster.node(leader).kill9();
        let started = Instant::now();
        let producing = Producing::start(&cluster, "calm", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 0, "after killing the quiet leader").await;
        eprintln!(
            "quiet partition: next ack {:?} after the kill",
            started.elapsed()
        );
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        let leader = cluster.leader_of("calm", 0).await;
        check(&read_all(&cluster, leader, "calm").await, &acked);
    })
    .await
    .expect("test timed out");
}

/// A replica that must start after the leader's log start (retention removed what it lacks)
/// catches up through a snapshot: its log is reset to the leader's log start, then appends
/// bring the rest; it then serves the same records as the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_past_retention() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let config = pb::TopicConfig {
            retention_bytes: Some(4096),
            ..pb::TopicConfig::default()
        };
        let (mut cluster, producer, acked) = retained_topic(47, "short", config, 300).await;
        // Wipe a follower while retention has removed the start of the leader's log.
        let leader = cluster.leader_of("short", 0).await;
        let victim = if leader == 3 { 2 } else { 3 };
        let started = Instant::now();
        let log_start = loop {
            let mut clients = cluster.clients(leader).await;
            let described = clients
                .admin
                .describe_topic(pb::DescribeTopicRequest {
                    name: "short".to_string(),
                })
                .await
                .expect("describe")
                .into_inner();
            let log_start = described.partition_info[0].log_start_offset;
            if log_start > 0 {
                break log_start;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "retention never ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        cluster.node(victim).kill9();
        let data = cluster.node(victim).data_dir.clone();
        std::fs::remove_dir_all(&data).expect("wipe");
        std::fs::create_dir_all(&data).expect("empty data dir");
        cluster.node(victim).restart();
        let producing = Producing::start(&cluster, "short", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 50, "after the wipe").await;
        producing.finish().await;
        let leader = cluster.leader_of("short", 0).await;
        let started = Instant::now();
        loop {
            // Retention keeps running on both nodes: a read that loses its next page to it
            // (OFFSET_OUT_OF_RANGE) is simply taken again.
            let (expected, caught_up) = match (
                cluster
                    .clients(leader)
                    .await
                    .try_read_values("short", 0)
                    .await,
                cluster
                    .clients(victim)
                    .await
                    .try_read_values("short", 0)
                    .await,
            ) {
                (Ok(expected), Ok(caught_up)) => (expected, caught_up),
                (Err(status), _) | (_, Err(status)) => {
                    assert_eq!(
                        error_code(&status),
                        "ERROR_CODE_OFFSET_OUT_OF_RANGE",
                        "{status:?}"
                    );
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "reads kept losing to retention"
                    );
                    continue;
                }
            };
            let tail = |records: &[(u64, String)], from: u64| -> Vec<(u64, String)> {
                records
                    .iter()
                    .filter(|(o, _)| *o >= from)
                    .cloned()
                    .collect()
            };
            // The victim starts at or after the log start it was reset to; from there on it
            // holds exactly what the leader holds.
            if let Some((first, _)) = caught_up.first()
                && *first >= log_start
                && caught_up.last() == expected.last()
                && tail(&expected, *first) == caught_up
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "node {victim} did not catch up: {} records from {:?}, leader {} up to {:?}",
                caught_up.len(),
                caught_up.first(),
                expected.len(),
                expected.last()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("test timed out");
}

/// Every replica restarts after kill -9 once retention removed segments: the commit index
/// persisted (lazily) before retention ran lies below the log's start, and used to make raft
/// abort the node at start (`hs.commit 0 is out of range`) on every attempt. Each node is killed
/// and restarted in turn, then all three at once; produce goes on, and every acknowledged
/// record still within retention is in the log once, in order, at its acknowledged offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_restarts_after_retention() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let config = pb::TopicConfig {
            retention_ms: Some(1000),
            ..pb::TopicConfig::default()
        };
        let (mut cluster, producer, acked) = retained_topic(51, "brief", config, 200).await;
        wait_for_log_start_on_every_node(&cluster, "brief").await;
        for victim in 1..=3 {
            cluster.node(victim).kill9();
            cluster.node(victim).restart();
        }
        for id in 1..=3 {
            cluster.node(id).kill9();
        }
        for id in 1..=3 {
            cluster.node(id).relaunch();
        }
        for id in 1..=3 {
            cluster.node(id).wait_ready();
        }
        let producing = Producing::start(&cluster, "brief", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 20, "after restarting every replica").await;
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        let leader = cluster.leader_of("brief", 0).await;
        let records = read_all(&cluster, leader, "brief").await;
        let first = records.first().map_or(u64::MAX, |(offset, _)| *offset);
        let kept: Vec<(u64, u64)> = acked
            .iter()
            .copied()
            .filter(|(_, base)| *base >= first)
            .collect();
        assert_eq!(
            kept.last(),
            acked.last(),
            "the newest acknowledged batch is within retention"
        );
        check(&records, &kept);
    })
    .await
    .expect("test timed out");
}

/// A batch larger than the topic's segment size (2 889 bytes against 1 024) used to be
/// committed by raft and then refused by every replica's append, which aborted all three
/// nodes. Now it goes into a segment of its own on every replica: the cluster keeps serving,
/// and every replica holds it between the batches around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_segment_is_stored_on_every_replica() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 52);
        let config = pb::TopicConfig {
            segment_bytes: Some(1024),
            ..pb::TopicConfig::default()
        };
        cluster.create_topic_with("wide", 1, 3, Some(config)).await;
        // Idempotent, so that a produce retried across a leader change stores nothing twice.
        let producer = cluster.producer_id().await;
        let mut large = BatchBuilder::new().producer(producer, 0, 1);
        for i in 1..=250 {
            large.push(1, None, Some(i.to_string().as_bytes()), &[]);
        }
        let large = large.finish().freeze();
        assert!(large.len() > 2048, "{} bytes", large.len());
        let small = |value: &str, sequence: i32| {
            let mut builder = BatchBuilder::new().producer(producer, 0, sequence);
            builder.push(1, None, Some(value.as_bytes()), &[]);
            builder.finish().freeze()
        };
        for batch in [small("before", 0), large, small("after", 251)] {
            cluster.produce_idempotent("wide", 0, batch).await;
        }
        let expected = from_offset_zero(
            std::iter::once("before".to_string())
                .chain((1..=250).map(|i: u32| i.to_string()))
                .chain(std::iter::once("after".to_string())),
        );
        cluster
            .wait_until_every_node_holds("wide", 0, &expected, Duration::from_secs(30))
            .await;
    })
    .await
    .expect("test timed out");
}

/// The documented recovery of a controller that lost its quorum for good: nodes 2 and 3 are
/// killed and their disks wiped. Node 1 alone cannot change the metadata. Restarted once with
/// `--force-new-cluster`, it becomes the controller's only voter: it keeps the metadata and
/// creates topics. Node 2, wiped, started again and added with AddNode, joins it (as a learner,
/// then a voter), and a topic replicated on both commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_lost_its_quorum_is_recovered() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 55);
        cluster.create_topic("old", 1, 3).await;
        for lost in [2, 3] {
            cluster.node(lost).kill9();
            let data = cluster.node(lost).data_dir.clone();
            std::fs::remove_dir_all(&data).expect("wipe");
            std::fs::create_dir_all(&data).expect("empty data dir");
        }
        cluster.node(1).set_extra_args(&["--force-new-cluster"]);
        cluster.node(1).restart();
        cluster.node(1).set_extra_args(&[]);
        let mut admin = cluster.clients(1).await.admin;
        admin
            .create_topic(pb::CreateTopicRequest {
                name: "fresh".to_string(),
                partitions: 1,
                replication_factor: 1,
                config: None,
            })
            .await
            .expect("the forced controller changes the metadata alone");
        // The metadata from before is kept.
        admin
            .describe_topic(pb::DescribeTopicRequest {
                name: "old".to_string(),
            })
            .await
            .expect("the old topic is still known");

        // Node 2 comes back empty and is added again; it serves once it has joined.
        cluster.node(2).relaunch();
        let address = cluster.node(2).address.clone();
        let started = Instant::now();
        loop {
            let added = admin
                .add_node(pb::AddNodeRequest {
                    node_id: 2,
                    address: address.clone(),
                })
                .await;
            match added {
                Ok(_) => break,
                Err(status) if error_code(&status) == "ERROR_CODE_UNAVAILABLE" => {
                    assert!(started.elapsed() < Duration::from_secs(60), "{status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("add node 2: {status:?}"),
            }
        }
        cluster.node(2).wait_ready();
        let created = admin
            .create_topic(pb::CreateTopicRequest {
                name: "pair".to_string(),
                partitions: 1,
                replication_factor: 2,
                config: None,
            })
            .await
            .expect("a topic on both nodes")
            .into_inner();
        assert_eq!(created.replication_factor, 2);
    })
    .await
    .expect("test timed out");
}

/// A 3-node cluster on `slot` whose retention runs every 100 ms, with topic `name` (one
/// partition, RF3, 1 KiB segments, `config`'s retention) that a producer filled with `batches`
/// batches. Returns the cluster, the producer id and what it got acknowledged.
async fn retained_topic(
    slot: u8,
    name: &str,
    config: pb::TopicConfig,
    batches: u64,
) -> (Cluster, i64, Acked) {
    let mut cluster = Cluster::start_with(3, slot, &["--retention-check-interval-ms", "100"]);
    let config = pb::TopicConfig {
        segment_bytes: Some(1024),
        ..config
    };
    cluster.create_topic_with(name, 1, 3, Some(config)).await;
    let producer = cluster.producer_id().await;
    let acked: Acked = Arc::default();
    let producing = Producing::start(&cluster, name, producer, &acked);
    progress_past(&producing.progress.clone(), batches, "at the start").await;
    producing.finish().await;
    (cluster, producer, acked)
}

/// Waits until retention has moved the log start of partition 0 of `topic` above 0 on every
/// node.
async fn wait_for_log_start_on_every_node(cluster: &Cluster, topic: &str) {
    let started = Instant::now();
    for id in 1..=cluster.nodes.len() as u64 {
        loop {
            let mut clients = cluster.clients(id).await;
            let log_start = clients
                .broker
                .list_offsets(pb::ListOffsetsRequest {
                    topic: topic.to_string(),
                    partition: 0,
                    position: Some(pb::StartPosition {
                        position: Some(pb::start_position::Position::Earliest(true)),
                    }),
                })
                .await
                .map(|reply| reply.into_inner().log_start_offset)
                .unwrap_or(0);
            if log_start > 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "retention never ran on node {id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running cluster grows: a fourth node is started, added (a controller conf change: it
/// becomes the controller's fourth voter), and then holds a replica of a new topic and serves
/// it. Adding a node nobody has heard from is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_running_cluster() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3, 48);
        cluster.create_topic("before", 1, 3).await;
        let leader = cluster.controller_leader().await;
        // Not started yet: refused.
        let mut admin = cluster.clients(leader).await.admin;
        let status = admin
            .add_node(pb::AddNodeRequest {
                node_id: 4,
                address: "127.0.48.1:1".to_string(),
            })
            .await
            .expect_err("a node nobody has heard from");
        assert_eq!(error_code(&status), "ERROR_CODE_UNAVAILABLE");
        let new = cluster.launch_node();
        let address = cluster.nodes[new as usize - 1].address.clone();
        // Wait until the leader hears from it, then add it.
        let started = Instant::now();
        loop {
            match admin
                .add_node(pb::AddNodeRequest {
                    node_id: new,
                    address: address.clone(),
                })
                .await
            {
                Ok(_) => break,
                Err(status) if error_code(&status) == "ERROR_CODE_UNAVAILABLE" => {}
                Err(status) => panic!("add node: {status:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node {new} never heard from"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.node(new).wait_ready();
        // A topic on all four nodes: the new one holds a replica, and serves it.
        cluster.create_topic("after", 1, 4).await;
        let producer = cluster.producer_id().await;
        let acked: Acked = Arc::default();
        let producing = Producing::start(&cluster, "after", producer, &acked);
        progress_past(&producing.progress.clone(), 20, "on the grown cluster").await;
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        let started = Instant::now();
        loop {
            let records = read_all(&cluster, new, "after").await;
            if records.len() as u64 == acked.len() as u64 * RECORDS_PER_BATCH {
                check(&records, &acked);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node {new} lags"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let info = cluster
            .clients(new)
            .await
            .admin
            .cluster_info(pb::ClusterInfoRequest {})
            .await
            .expect("cluster info")
            .into_inner();
        assert_eq!(info.nodes.len(), 4, "{info:?}");
    })
    .await
    .expect("test timed out");
}

/// Consumer groups across a controller fail-over: the coordinator (the controller's leader)
/// is killed with SIGKILL while a member consumes. Its membership was soft state, so the member
/// rejoins at the new coordinator; its committed offsets were replicated, so it resumes from
/// them, and in the end every record was processed and the group's offsets are complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_survives_a_coordinator_kill() {
    use std::collections::BTreeSet;
    use strata_client::{Client, GroupConsumerConfig, ProducerConfig, ProducerRecord};
    tokio::time::timeout(TEST_TIMEOUT, async {
        const RECORDS: usize = 300;
        let mut cluster = Cluster::start(3, 49);
        let brokers = cluster.brokers();
        let client = Client::connect(&brokers).await.expect("connect");
        client
            .admin()
            .create_topic("events", 3, 3, Default::default())
            .await
            .expect("create topic");
        let producer = client
            .producer(ProducerConfig::default())
            .expect("producer");
        for i in 0..RECORDS {
            let record = ProducerRecord::new("events", format!("e{i}")).partition(i as u32 % 3);
            producer.send(record).await.expect("send");
        }
        producer.close().await.expect("close producer");
        let mut config = GroupConsumerConfig::new("survivors", ["events"]);
        config.auto_commit = Some(Duration::from_millis(100));
        config.session_timeout = Duration::from_secs(3);
        let mut consumer = client.group_consumer(config).await.expect("join");
        let mut seen = BTreeSet::new();
        while seen.len() < RECORDS / 2 {
            let record = consumer.next().await.expect("next").expect("open");
            seen.insert(String::from_utf8_lossy(&record.value.unwrap_or_default()).to_string());
        }
        consumer.commit().await.expect("commit");
        let coordinator = cluster.controller_leader().await;
        cluster.node(coordinator).kill9();
        // The member reads on (partition leaders do not need the coordinator), learns at its
        // next heartbeat or commit that the new coordinator does not know it, rejoins, and
        // resumes from the committed offsets: records after them come again (at least once).
        // Done when everything was seen and a commit covering all of it went through.
        let started = Instant::now();
        loop {
            if let Ok(record) =
                tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
            {
                let record = record.expect("next").expect("open");
                seen.insert(String::from_utf8_lossy(&record.value.unwrap_or_default()).to_string());
                continue;
            }
            if seen.len() == RECORDS && consumer.commit().await.is_ok() {
                let described = client.admin().describe_group("survivors").await;
                let complete = described.is_ok_and(|d| {
                    d.partitions.len() == 3
                        && d.partitions
                            .iter()
                            .map(|p| p.committed_offset.unwrap_or(0))
                            .sum::<u64>()
                            == RECORDS as u64
                });
                if complete {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the group did not recover: {} of {RECORDS} seen",
                seen.len()
            );
        }
        consumer.close().await.expect("close");
        cluster.node(coordinator).restart();
        // The offsets stay what they were through the old coordinator's return.
        let described = client
            .admin()
            .describe_group("survivors")
            .await
            .expect("describe");
        let committed: u64 = described
            .partitions
            .iter()
            .map(|p| p.committed_offset.expect("committed"))
            .sum();
        assert_eq!(committed, RECORDS as u64, "{described:?}");
    })
    .await
    .expect("test timed out");
}

/// A node leaves a running cluster: `RemoveNode` moves each of its replicas to another node
/// (the partition's leader adds the new replica, waits until it has caught up, then removes
/// the old one, handing its leadership over first when it is the one leaving), then takes it
/// out of the controller. Produce goes on throughout; afterwards the removed node is killed and
/// nothing is lost, because no group needs it any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaves_a_running_cluster() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(4, 50);
        cluster.create_topic("moving", 4, 3).await;
        let producer = cluster.producer_id().await;
        let acked: Acked = Arc::default();
        let producing = Producing::start(&cluster, "moving", producer, &acked);
        let progress = producing.progress.clone();
        progress_past(&progress, 20, "at the start").await;
        // The leader of the partition being produced to leaves: the hardest case.
        let leaving = cluster.leader_of("moving", 0).await;
        let started = Instant::now();
        loop {
            let leader = cluster.controller_leader().await;
            let reply = cluster
                .clients(leader)
                .await
                .admin
                .remove_node(pb::RemoveNodeRequest { node_id: leaving })
                .await;
            match reply {
                Ok(reply) if reply.get_ref().removed => break,
                Ok(reply) => {
                    if started.elapsed() > Duration::from_secs(20) {
                        eprintln!("still moving: {:?}", reply.get_ref().moving);
                    }
                }
                Err(status)
                    if matches!(
                        error_code(&status).as_str(),
                        "ERROR_CODE_UNAVAILABLE" | "ERROR_CODE_NOT_LEADER"
                    ) =>
                {
                    if started.elapsed() > Duration::from_secs(20) {
                        eprintln!("remove node: {status:?}");
                    }
                }
                Err(status) => panic!("remove node: {status:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "node {leaving} was not removed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("node {leaving} removed after {:?}", started.elapsed());
        let stayer = (1..=4).find(|id| *id != leaving).expect("another node");
        let mut clients = cluster.clients(stayer).await;
        let described = clients
            .admin
            .describe_topic(pb::DescribeTopicRequest {
                name: "moving".to_string(),
            })
            .await
            .expect("describe")
            .into_inner();
        for info in &described.partition_info {
            assert!(
                !info.replica_node_ids.contains(&leaving),
                "partition {} still on node {leaving}: {info:?}",
                info.partition
            );
            assert_eq!(info.replica_node_ids.len(), 3);
        }
        // The controller's leader said the node is removed; another node's copy of the
        // metadata shows it once it has applied that far.
        let shown = Instant::now();
        loop {
            let info = clients
                .admin
                .cluster_info(pb::ClusterInfoRequest {})
                .await
                .expect("cluster info")
                .into_inner();
            if info.nodes.iter().all(|n| n.node_id != leaving) {
                break;
            }
            assert!(
                shown.elapsed() < Duration::from_secs(30),
                "node {stayer} still lists node {leaving}: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The removed node can go, and with it one of the partition's old replicas: if the
        // group still counted the removed node as a voter, two of its three would now be down
        // and nothing could commit. Produce goes on.
        let replicas = described.partition_info[0].replica_node_ids.clone();
        cluster.node(leaving).kill9();
        let second = *replicas
            .iter()
            .find(|id| **id != stayer)
            .unwrap_or(&replicas[0]);
        cluster.node(second).kill9();
        let mark = progress.load(Ordering::Relaxed);
        progress_past(
            &progress,
            mark + 20,
            "without the removed node and one old replica",
        )
        .await;
        cluster.node(second).restart();
        producing.finish().await;
        let acked = acked.lock().expect("acked").clone();
        let leader = cluster.leader_of("moving", 0).await;
        check(&read_all(&cluster, leader, "moving").await, &acked);
    })
    .await
    .expect("test timed out");
}
