//! What idle subscriptions cost a real server in memory.
//!
//! Each test starts a server, opens many `Subscribe` streams with the generated client (start,
//! then 4 MiB of credit, as `strata-client`'s consumer grants), and reads the server's anonymous
//! resident memory (`RssAnon` in `/proc/PID/status`) before they open, while they are open and
//! after they close. The growth divided by the number of subscriptions is their cost; the tests
//! print it and assert it stays under [`SUBSCRIPTION_BYTES_MAX`]. Memory, not time, so it may be
//! asserted; the bound is four times the 64 KiB the issue aims for, as headroom for allocator
//! noise (glibc keeps freed chunks in its arenas, thread caches fill), not a goal.
//!
//! - Idle at the end of a partition, all on a few shared connections.
//! - Idle at the end of a partition, one connection each (hyper's and h2's per-connection state
//!   counted too).
//! - Idle after replaying a backlog of [`BACKLOG_BYTES`] each: what a consumer that has caught up
//!   costs. This one found tonic's per-stream encode buffer, kept at the size of the largest
//!   reply (1 312 KiB per subscription measured; 4 KiB once Subscribe replies were framed by
//!   hand, `server/src/service/subscribe_route.rs`).
//!
//! Every subscription is checked to be live afterwards: one record produced to each partition
//! reaches each of them. `STRATA_IDLE_SUBSCRIPTIONS=N` opens N instead of the default (for
//! measuring; with one connection each, mind the descriptor limit of both processes).

use std::time::Duration;

use bytes::Bytes;
use strata_proto::v1 as pb;
use strata_proto::v1::broker_client::BrokerClient;
use strata_proto::v1::start_position::Position;
use strata_server::storage::batch::BatchBuilder;
use strata_tests::proc_status_bytes;
use strata_tests::server::{Clients, ServerProcess};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Subscriptions each test opens, unless `STRATA_IDLE_SUBSCRIPTIONS` says otherwise.
const SUBSCRIPTIONS_DEFAULT: usize = 500;
/// Largest growth of the server's anonymous RSS allowed per open subscription (see the module
/// doc for why it is four times the target).
const SUBSCRIPTION_BYTES_MAX: u64 = 256 << 10;
/// Partitions of the topic; subscriptions are spread over them.
const PARTITIONS: u32 = 10;
/// Credit each subscription grants, as the client's consumer does by default.
const CREDIT_BYTES: u64 = 4 << 20;
/// What each subscription of the replay test reads before it idles.
const BACKLOG_BYTES: usize = 2 << 20;
/// One record's value in the backlog.
const BACKLOG_VALUE_BYTES: usize = 64 << 10;
/// Records per backlog batch (a 256 KiB batch).
const BACKLOG_RECORDS_PER_BATCH: usize = 4;
/// Subscriptions of the replay test: each reads [`BACKLOG_BYTES`], so fewer.
const REPLAY_SUBSCRIPTIONS: usize = 200;
/// Longest a whole test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest to wait for one expected subscription message.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to give memory back once subscriptions close (reported, not
/// asserted: the allocator decides).
const RELEASE_WAIT: Duration = Duration::from_secs(5);

fn subscriptions() -> usize {
    std::env::var("STRATA_IDLE_SUBSCRIPTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SUBSCRIPTIONS_DEFAULT)
}

fn rss_anon(server: &ServerProcess) -> u64 {
    proc_status_bytes(server.pid(), "RssAnon")
}

/// An open subscription: its request sender (dropping it ends the credit) and its replies.
struct Subscription {
    _requests: mpsc::Sender<pb::SubscribeRequest>,
    replies: Streaming<pb::SubscribeResponse>,
    partition: u32,
}

async fn connect(server: &ServerProcess) -> BrokerClient<Channel> {
    let channel = Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect");
    BrokerClient::new(channel)
}

/// Opens a subscription at `start` with [`CREDIT_BYTES`] of credit; returns once the server
/// has answered with its headers (it has started the subscription by then).
async fn subscribe(
    broker: &mut BrokerClient<Channel>,
    topic: &str,
    partition: u32,
    start: Position,
) -> Subscription {
    use pb::subscribe_request::{Credit, Request, Start};
    let (requests, outbound) = mpsc::channel(4);
    for request in [
        Request::Start(Start {
            topic: topic.to_string(),
            partition,
            start: Some(pb::StartPosition {
                position: Some(start),
            }),
            decode: false,
        }),
        Request::Credit(Credit {
            bytes: CREDIT_BYTES,
        }),
    ] {
        requests
            .try_send(pb::SubscribeRequest {
                request: Some(request),
            })
            .expect("room for start and credit");
    }
    let replies = broker
        .subscribe(ReceiverStream::new(outbound))
        .await
        .expect("subscribe")
        .into_inner();
    Subscription {
        _requests: requests,
        replies,
        partition,
    }
}

/// The next reply of `subscription`, which must come within [`MESSAGE_TIMEOUT`].
async fn next_reply(subscription: &mut Subscription) -> pb::SubscribeResponse {
    tokio::time::timeout(MESSAGE_TIMEOUT, subscription.replies.message())
        .await
        .expect("a reply within the deadline")
        .expect("the subscription is healthy")
        .expect("the subscription is open")
}

async fn produce(broker: &mut BrokerClient<Channel>, topic: &str, partition: u32, batch: Bytes) {
    broker
        .produce(pb::ProduceRequest {
            request_id: 0,
            topic: topic.to_string(),
            target: Some(pb::produce_request::Target::Partition(partition)),
            payload: Some(pb::produce_request::Payload::Batch(batch)),
        })
        .await
        .expect("produce");
}

fn small_batch(tag: &str) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder.push(0, None, Some(tag.as_bytes()), &[]);
    builder.finish().freeze()
}

/// Starts a server with a topic of [`PARTITIONS`] partitions.
async fn server_with_topic(data_dir: &std::path::Path, topic: &str) -> ServerProcess {
    let server = ServerProcess::start(data_dir, 1);
    let mut clients: Clients = server.clients().await;
    clients.create_topic(topic, PARTITIONS).await;
    server
}

/// Opens and closes a few subscriptions, so that what the first ones allocate once for the
/// whole process (runtime and allocator structures) is counted before the measurement.
async fn warm_up(server: &ServerProcess, topic: &str) {
    let mut broker = connect(server).await;
    let mut opened = Vec::new();
    for partition in 0..PARTITIONS {
        opened.push(subscribe(&mut broker, topic, partition, Position::Latest(true)).await);
    }
    drop(opened);
}

/// Every subscription receives the one record produced to its partition.
async fn check_live(server: &ServerProcess, topic: &str, subscriptions: &mut [Subscription]) {
    let mut broker = connect(server).await;
    for partition in 0..PARTITIONS {
        produce(&mut broker, topic, partition, small_batch("wake")).await;
    }
    for subscription in subscriptions.iter_mut() {
        let reply = next_reply(subscription).await;
        assert_eq!(
            reply.high_watermark, reply.next_offset,
            "partition {}: the woken subscription reads up to the high watermark",
            subscription.partition
        );
        assert!(!reply.batches.is_empty(), "the new record is sent");
    }
}

/// Measures `open` subscriptions' memory, checks they are live, closes them and reports.
async fn measure(
    server: &ServerProcess,
    topic: &str,
    scenario: &str,
    before: u64,
    mut opened: Vec<Subscription>,
) {
    let count = opened.len() as u64;
    let with_open = rss_anon(server);
    let growth = with_open.saturating_sub(before);
    let each = growth / count;
    check_live(server, topic, &mut opened).await;
    let after_delivery = rss_anon(server);
    let each_after_delivery = after_delivery.saturating_sub(before) / count;
    drop(opened);
    // The server frees a subscription when it sees its stream end: wait (bounded) for most of
    // the growth to go, then report whatever is left.
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    let mut closed = rss_anon(server);
    while closed > before + growth / 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        closed = rss_anon(server);
    }
    eprintln!(
        "{scenario}: N={count}: server RssAnon before {} KiB, with N open {} KiB ({} KiB each), \
         after one record each {} KiB ({} KiB each), after closing {} KiB",
        before >> 10,
        with_open >> 10,
        each >> 10,
        after_delivery >> 10,
        each_after_delivery >> 10,
        closed >> 10,
    );
    assert!(
        each < SUBSCRIPTION_BYTES_MAX,
        "{scenario}: {each} bytes per open subscription, bound {SUBSCRIPTION_BYTES_MAX}"
    );
    assert!(
        each_after_delivery < SUBSCRIPTION_BYTES_MAX,
        "{scenario}: {each_after_delivery} bytes per subscription after a delivery, \
         bound {SUBSCRIPTION_BYTES_MAX}"
    );
}

/// Idle subscriptions at the end of their partitions, many per connection (four connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_subscriptions_on_shared_connections_cost_little_server_memory() {
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "idle-shared";
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server = server_with_topic(data.path(), topic).await;
        warm_up(&server, topic).await;
        let before = rss_anon(&server);
        let mut brokers = Vec::new();
        for _ in 0..4 {
            brokers.push(connect(&server).await);
        }
        let count = subscriptions();
        let mut opened = Vec::with_capacity(count);
        for i in 0..count {
            let broker = &mut brokers[i % 4];
            let partition = i as u32 % PARTITIONS;
            opened.push(subscribe(broker, topic, partition, Position::Latest(true)).await);
        }
        measure(&server, topic, "idle, 4 shared connections", before, opened).await;
    })
    .await
    .expect("the test finishes in time");
}

/// Idle subscriptions at the end of their partitions, each on a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_subscriptions_one_connection_each_cost_little_server_memory() {
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "idle-own";
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server = server_with_topic(data.path(), topic).await;
        warm_up(&server, topic).await;
        let before = rss_anon(&server);
        let count = subscriptions();
        let mut opened = Vec::with_capacity(count);
        for i in 0..count {
            let mut broker = connect(&server).await;
            let partition = i as u32 % PARTITIONS;
            opened.push(subscribe(&mut broker, topic, partition, Position::Latest(true)).await);
        }
        measure(&server, topic, "idle, one connection each", before, opened).await;
    })
    .await
    .expect("the test finishes in time");
}

/// Subscriptions that replayed [`BACKLOG_BYTES`] each from the start of their partition and now
/// idle at its end, on four shared connections: what stays allocated once a consumer has
/// caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_idle_after_a_replay_cost_little_server_memory() {
    let data = tempfile::tempdir().expect("tempdir");
    let topic = "idle-after-replay";
    tokio::time::timeout(TEST_TIMEOUT, async {
        let server = server_with_topic(data.path(), topic).await;
        let mut producer = connect(&server).await;
        let value = vec![7u8; BACKLOG_VALUE_BYTES];
        let batches = BACKLOG_BYTES / (BACKLOG_VALUE_BYTES * BACKLOG_RECORDS_PER_BATCH);
        for partition in 0..PARTITIONS {
            for _ in 0..batches {
                let mut builder = BatchBuilder::new();
                for _ in 0..BACKLOG_RECORDS_PER_BATCH {
                    builder.push(0, None, Some(&value), &[]);
                }
                produce(&mut producer, topic, partition, builder.finish().freeze()).await;
            }
        }
        warm_up(&server, topic).await;
        let before = rss_anon(&server);
        let mut brokers = Vec::new();
        for _ in 0..4 {
            brokers.push(connect(&server).await);
        }
        let count = subscriptions().min(REPLAY_SUBSCRIPTIONS);
        let mut opened = Vec::with_capacity(count);
        for i in 0..count {
            let broker = &mut brokers[i % 4];
            let partition = i as u32 % PARTITIONS;
            let mut subscription =
                subscribe(broker, topic, partition, Position::Earliest(true)).await;
            // Read the backlog: the credit covers it, so it all comes without more credit.
            loop {
                let reply = next_reply(&mut subscription).await;
                if reply.next_offset >= reply.high_watermark {
                    break;
                }
            }
            opened.push(subscription);
        }
        measure(&server, topic, "idle after a replay", before, opened).await;
    })
    .await
    .expect("the test finishes in time");
}
