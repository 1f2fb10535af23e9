//! Resource exhaustion against real `strata-server` processes: a low file-descriptor limit, a
//! connection flood and a file system that fills up. In each, the node refuses the request
//! that would exhaust the resource with RESOURCE_EXHAUSTED, keeps serving, loses nothing it
//! acknowledged and restarts cleanly.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::broker_client::BrokerClient;
use strata_proto::v1::groups_client::GroupsClient;
use strata_proto::v1::{self as pb, CreateTopicRequest, DeleteTopicRequest};
use strata_tests::server::{Clients, listening_address, server_binary, spawn_server};
use strata_tests::{data_batch, error_code};
use tonic::transport::Channel;

const RESOURCE_EXHAUSTED: &str = "ERROR_CODE_RESOURCE_EXHAUSTED";

/// A server process started through `sh`, so its descriptor limit can be lowered first
/// (`ulimit` in the child's shell; `exec` keeps the pid, so /proc/PID/fd is the server's).
struct Node {
    child: Child,
    address: String,
    data_dir: PathBuf,
    fd_limit: Option<u32>,
    extra_args: Vec<String>,
}

impl Node {
    fn start(data_dir: &Path, fd_limit: Option<u32>, extra_args: &[&str]) -> Self {
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        Self::launch(data_dir, "127.0.0.1:0", fd_limit, extra_args)
    }

    fn launch(
        data_dir: &Path,
        listen: &str,
        fd_limit: Option<u32>,
        extra_args: Vec<String>,
    ) -> Self {
        let limit = fd_limit
            .map(|n| format!("ulimit -Sn {n} && ulimit -Hn {n} && "))
            .unwrap_or_default();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" \"$@\""))
            .arg(server_binary())
            .args(["--node-id", "1", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(&extra_args);
        let (child, lines) = spawn_server(command);
        let address = listening_address(&lines);
        Self {
            child,
            address,
            data_dir: data_dir.to_path_buf(),
            fd_limit,
            extra_args,
        }
    }

    /// kill -9, then the same node on the same data, port and limits.
    fn restart(&mut self) {
        self.kill9();
        let restarted = Self::launch(
            &self.data_dir.clone(),
            &self.address.clone(),
            self.fd_limit,
            self.extra_args.clone(),
        );
        *self = restarted;
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Descriptors the server holds now.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the server's /proc/PID/fd")
            .count()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn clients(&self) -> Clients {
        let channel = Channel::from_shared(format!("http://{}", self.address))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .connect()
            .await
            .expect("connect");
        Clients {
            admin: AdminClient::new(channel.clone()),
            broker: BrokerClient::new(channel.clone()),
            groups: GroupsClient::new(channel),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn create_topic(
    clients: &mut Clients,
    name: &str,
    partitions: u32,
) -> Result<pb::TopicDescription, tonic::Status> {
    clients
        .admin
        .create_topic(CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            config: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every record of a partition from its log start, as (offset, value), fetched as raw batches
/// (1 MiB at a time, under the client's 4 MiB message limit) and decoded here.
async fn read_values(clients: &mut Clients, topic: &str, partition: u32) -> Vec<(u64, String)> {
    let mut values = Vec::new();
    let mut position = pb::start_position::Position::Earliest(true);
    loop {
        let fetched = clients
            .broker
            .fetch(pb::FetchRequest {
                topic: topic.to_string(),
                partition,
                start: Some(pb::StartPosition {
                    position: Some(position),
                }),
                max_bytes: 1 << 20,
                ..pb::FetchRequest::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        let from = values.last().map_or(0, |(offset, _)| offset + 1);
        for run in fetched.batches {
            for split in strata_proto::batch::split_batches(run) {
                let (_, batch) = split.expect("whole batches");
                for record in strata_proto::batch::decode_records(&batch).expect("valid batch") {
                    if record.offset >= from {
                        let value = record.value.unwrap_or_default();
                        values.push((record.offset, String::from_utf8_lossy(&value).to_string()));
                    }
                }
            }
        }
        position = pb::start_position::Position::Offset(fetched.next_offset);
        if fetched.next_offset >= fetched.high_watermark {
            return values;
        }
    }
}

/// Produces one batch of `count` records `"{tag}-{i}"` to a partition.
async fn produce(
    clients: &mut Clients,
    topic: &str,
    partition: u32,
    tag: &str,
    count: usize,
) -> Result<pb::ProduceResponse, tonic::Status> {
    clients
        .broker
        .produce(pb::ProduceRequest {
            request_id: 0,
            topic: topic.to_string(),
            target: Some(pb::produce_request::Target::Partition(partition)),
            payload: Some(pb::produce_request::Payload::Batch(
                data_batch(tag, count, 1_000).freeze(),
            )),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// 10 000 partitions (the documented maximum) under a descriptor limit of 1024: the create is
/// refused with RESOURCE_EXHAUSTED naming the budget, the node keeps serving, a topic of 300
/// partitions fits and costs one descriptor per partition, and the node restarts
/// cleanly with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_under_a_low_fd_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), Some(1024), &[]);
    let mut clients = node.clients().await;
    let refused = create_topic(&mut clients, "huge", 10_000)
        .await
        .expect_err("10 000 partitions do not fit in 1024 descriptors");
    assert_eq!(error_code(&refused), RESOURCE_EXHAUSTED, "{refused:?}");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    for expected in ["10000 more", "1024 descriptors", "allows"] {
        assert!(
            refused.message().contains(expected),
            "{expected:?} in {:?}",
            refused.message()
        );
    }
    println!("refused: {}", refused.message());
    assert!(node.running(), "the node survived the refused create");

    let before = node.open_fds();
    let partitions = 300;
    create_topic(&mut clients, "wide", partitions)
        .await
        .expect("300 partitions fit the budget");
    for partition in [0, 150, 299] {
        produce(&mut clients, "wide", partition, &format!("p{partition}"), 3)
            .await
            .expect("produce");
    }
    let over = create_topic(&mut clients, "over", 500)
        .await
        .expect_err("300 + 500 partitions exceed the budget of 768");
    assert_eq!(error_code(&over), RESOURCE_EXHAUSTED, "{over:?}");
    assert!(over.message().contains("300 now"), "{}", over.message());
    let after = node.open_fds();
    println!("descriptors: {before} before the topic, {after} with {partitions} partitions");
    // One each: the active segment's log.
    assert!(
        after.saturating_sub(before) <= partitions as usize,
        "{} descriptors for {partitions} partitions",
        after - before
    );

    node.restart();
    let mut clients = node.clients().await;
    for partition in [0, 150, 299] {
        let values = read_values(&mut clients, "wide", partition).await;
        let expected: Vec<(u64, String)> =
            (0..3).map(|i| (i, format!("p{partition}-{i}"))).collect();
        assert_eq!(values, expected, "partition {partition} after the restart");
    }
    produce(&mut clients, "wide", 7, "after", 1)
        .await
        .expect("produce after the restart");
    let restarted = node.open_fds();
    println!("descriptors after the restart: {restarted}");
    assert!(restarted <= before + partitions as usize + 16);
}

/// Waits (bounded) until the server has closed all but `open_max` of `flood`: a refused
/// connection is closed at once, so a read sees end of file or a reset.
fn wait_until_refused(flood: &[TcpStream], open_max: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed = vec![false; flood.len()];
    for stream in flood {
        stream
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
    }
    loop {
        for (at, stream) in flood.iter().enumerate() {
            if closed[at] {
                continue;
            }
            let mut bytes = [0u8; 64];
            match (&*stream).read(&mut bytes) {
                Ok(0) => closed[at] = true,
                Ok(_) => {} // the server's HTTP/2 settings: an accepted connection
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => closed[at] = true,
            }
        }
        let count = closed.iter().filter(|c| **c).count();
        if count + open_max >= flood.len() {
            println!(
                "{count} of {} flood connections closed by the server",
                flood.len()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {} flood connections were closed",
            flood.len()
        );
    }
}

/// The case: 1 100 connections against a node limited to 1 024 descriptors, with the
/// default --max-connections (128 there). The excess is refused, descriptors stay below the
/// limit, and the next produce succeeds (it used to panic the raft driver: no descriptor left
/// to fsync with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_under_a_low_fd_limit_leaves_produce_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), Some(1024), &[]);
    let mut clients = node.clients().await;
    create_topic(&mut clients, "t", 4).await.expect("create");
    let before = node.open_fds();
    let flood: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(&node.address).expect("the listener accepts the TCP handshake"))
        .collect();
    wait_until_refused(&flood, 128);
    let during = node.open_fds();
    println!("descriptors: {before} before the flood, {during} during it");
    assert!(
        during <= before + 128,
        "{during} descriptors, {before} before"
    );
    for partition in 0..4 {
        produce(&mut clients, "t", partition, "during", 5)
            .await
            .expect("produce during the flood");
    }
    assert!(node.running());
    drop(flood);
    assert_eq!(read_values(&mut clients, "t", 3).await.len(), 5);
}

/// A flood of 200 connections against --max-connections 20: the excess is closed at once, an
/// existing client keeps producing and reading, the server's descriptors stay bounded, and a
/// new client connects once the flood is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_is_refused_beyond_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), None, &["--max-connections", "20"]);
    let mut clients = node.clients().await;
    create_topic(&mut clients, "t", 1).await.expect("create");
    produce(&mut clients, "t", 0, "before", 2)
        .await
        .expect("produce");
    let before = node.open_fds();

    let flood: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&node.address).expect("the listener accepts the TCP handshake"))
        .collect();
    wait_until_refused(&flood, 20);
    let during = node.open_fds();
    println!("descriptors: {before} before the flood, {during} during it");
    assert!(
        during <= before + 20,
        "{during} descriptors, {before} before"
    );

    // The existing client was connected first: it keeps its connection.
    produce(&mut clients, "t", 0, "during", 2)
        .await
        .expect("produce during the flood");
    let values = read_values(&mut clients, "t", 0).await;
    assert_eq!(values.len(), 4);

    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fresh = loop {
        let channel = Channel::from_shared(format!("http://{}", node.address))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await;
        let attempt = match channel {
            Ok(channel) => {
                let mut broker = BrokerClient::new(channel);
                broker
                    .list_offsets(pb::ListOffsetsRequest {
                        topic: "t".to_string(),
                        partition: 0,
                        ..pb::ListOffsetsRequest::default()
                    })
                    .await
                    .map(|_| broker)
            }
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        match attempt {
            Ok(broker) => break broker,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "no new connection after the flood: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    fresh
        .produce(pb::ProduceRequest {
            topic: "t".to_string(),
            target: Some(pb::produce_request::Target::Partition(0)),
            payload: Some(pb::produce_request::Payload::Batch(
                data_batch("after", 1, 1_000).freeze(),
            )),
            ..pb::ProduceRequest::default()
        })
        .await
        .expect("produce on a new connection after the flood");
}

/// A loop-mounted ext4 image, unmounted and removed on drop (also when the test fails).
struct LoopMount {
    root: tempfile::TempDir,
    mounted: bool,
}

impl LoopMount {
    /// `None`, with the reason, where loop mounts are not allowed (not root, no loop device).
    fn new(size_mib: u64) -> Result<Self, String> {
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = root.path().join("image");
        let mount = root.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let run = |program: &str, args: &[&str]| -> Result<(), String> {
            let output = Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("{program}: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        };
        let image_arg = image.to_str().ok_or("non-UTF-8 temp path")?;
        let mount_arg = mount.to_str().ok_or("non-UTF-8 temp path")?;
        run("fallocate", &["-l", &format!("{size_mib}M"), image_arg])?;
        // No blocks reserved for root: the server runs as root here, and the test wants the
        // volume's whole size to be what the server can fill.
        run("mkfs.ext4", &["-q", "-F", "-m", "0", image_arg])?;
        run("mount", &["-o", "loop", image_arg, mount_arg])?;
        Ok(Self {
            root,
            mounted: true,
        })
    }

    fn dir(&self) -> PathBuf {
        self.root.path().join("mnt")
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let mount = self.dir();
            // Lazy: a server killed a moment ago may still be closing its files.
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
    }
}

/// Fills the file system of `dir` to the last byte with a file of its own.
fn fill_up(dir: &Path) {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler");
    for chunk in [1 << 20, 4096, 1] {
        let bytes = vec![0u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
}

/// Free and total bytes of the file system holding `dir` (`df`'s view).
fn disk_space(dir: &Path) -> (u64, u64) {
    strata_server::resources::disk_space(dir).expect("statvfs")
}

/// A 64 MiB file system fills up: produce is refused with RESOURCE_EXHAUSTED before the disk
/// is full, every acknowledged record stays readable, the node restarts (kill -9) at the
/// reserve and again on a disk another program filled to the last byte, serves reads there,
/// and deleting a topic frees space so produce works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_produce_and_keeps_serving() {
    let mount = match LoopMount::new(64) {
        Ok(mount) => mount,
        Err(reason) => {
            println!(
                "SKIPPED full_disk_refuses_produce_and_keeps_serving: cannot loop-mount: {reason}"
            );
            return;
        }
    };
    let data_dir = mount.dir().join("data");
    // The default reserve: 10 % of a volume this small.
    let mut node = Node::start(&data_dir, None, &[]);
    let mut clients = node.clients().await;
    create_topic(&mut clients, "keep", 1).await.expect("create");
    create_topic(&mut clients, "spill", 1)
        .await
        .expect("create");

    // Fill: "spill" first (it is deleted later to free room), then "keep" until refused.
    let mut acked: Vec<(String, u64, u64)> = Vec::new();
    let mut refusal = None;
    let records_per_batch = 2_000; // about 60 KiB per batch
    'fill: for (topic, batches_max) in [("spill", 250usize), ("keep", 100_000)] {
        for batch in 0..batches_max {
            let tag = format!("{topic}{batch}");
            match produce(&mut clients, topic, 0, &tag, records_per_batch).await {
                Ok(reply) => {
                    assert_eq!(
                        reply.last_offset - reply.base_offset + 1,
                        records_per_batch as u64
                    );
                    acked.push((tag, reply.base_offset, reply.last_offset));
                }
                Err(status) => {
                    assert_eq!(error_code(&status), RESOURCE_EXHAUSTED, "{status:?}");
                    refusal = Some(status);
                    break 'fill;
                }
            }
        }
    }
    let refusal = refusal.expect("the disk filled up before 100 000 batches");
    assert_eq!(refusal.code(), tonic::Code::ResourceExhausted);
    assert!(
        refusal.message().contains("disk full on node 1"),
        "{}",
        refusal.message()
    );
    println!(
        "refused after {} batches: {}",
        acked.len(),
        refusal.message()
    );
    assert!(acked.len() > 400, "only {} batches fit", acked.len());
    // New partitions would spend the reserve kept for deletes.
    let create = create_topic(&mut clients, "new", 1)
        .await
        .expect_err("no new topics at the reserve");
    assert_eq!(error_code(&create), RESOURCE_EXHAUSTED, "{create:?}");
    assert!(node.running(), "the node survived the full disk");

    let check_all = |values: &[(u64, String)], topic: &str| {
        let mut expected = Vec::new();
        for (tag, base, last) in acked.iter().filter(|(tag, ..)| tag.starts_with(topic)) {
            for (i, offset) in (*base..=*last).enumerate() {
                expected.push((offset, format!("{tag}-{i}")));
            }
        }
        assert_eq!(values.len(), expected.len(), "records of {topic}");
        assert!(values == expected.as_slice(), "records of {topic} differ");
    };
    check_all(&read_values(&mut clients, "keep", 0).await, "keep");
    check_all(&read_values(&mut clients, "spill", 0).await, "spill");

    // kill -9 and restart on the full disk: the node starts and serves every acknowledged
    // record; produce is still refused.
    node.restart();
    let mut clients = node.clients().await;
    check_all(&read_values(&mut clients, "keep", 0).await, "keep");
    check_all(&read_values(&mut clients, "spill", 0).await, "spill");
    // A batch at least as large as the one refused ("refused" is as long as any "keep" tag).
    let again = produce(&mut clients, "keep", 0, "refused", records_per_batch)
        .await
        .expect_err("still full");
    assert_eq!(error_code(&again), RESOURCE_EXHAUSTED, "{again:?}");

    // Truly full: another program takes every byte left. The node still starts (kill -9,
    // restart), serves every acknowledged record, and deletes a topic.
    node.kill9();
    fill_up(&mount.dir());
    let (free, _) = disk_space(&mount.dir());
    println!("truly full: {free} bytes free");
    node.restart();
    let mut clients = node.clients().await;
    let kept = read_values(&mut clients, "keep", 0).await;
    check_all(&kept, "keep");
    check_all(&read_values(&mut clients, "spill", 0).await, "spill");

    // Deleting a topic frees its space: produce works again.
    clients
        .admin
        .delete_topic(DeleteTopicRequest {
            name: "spill".to_string(),
        })
        .await
        .expect("delete on a full disk");
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        match produce(&mut clients, "keep", 0, "resumed", 10).await {
            Ok(reply) => break reply,
            Err(status) => {
                assert_eq!(error_code(&status), RESOURCE_EXHAUSTED, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "produce still refused: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    acked.push(("resumed".to_string(), reply.base_offset, reply.last_offset));
    let values = read_values(&mut clients, "keep", 0).await;
    assert!(
        values.starts_with(&kept),
        "acknowledged records of keep changed"
    );
    assert_eq!(values.len(), kept.len() + 10);
    assert_eq!(values.last().map(|(_, v)| v.as_str()), Some("resumed-9"));
    drop(clients);
    node.kill9();
    drop(mount);
}
