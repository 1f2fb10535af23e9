//! A cluster of real `strata-server` processes on one loopback address of its own
//! (`127.0.<slot>.1`, so concurrent tests never share a port space), and the routing the tests
//! need to drive it through the generated gRPC clients: find the controller's and a
//! partition's leader, follow NOT_LEADER.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_proto::v1 as pb;

use crate::proxy::Proxy;
use crate::server::{Clients, ServerProcess};

/// The longest the cluster may take to elect a leader for something.
pub const LEADER_WAIT: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub nodes: Vec<ServerProcess>,
    pub dir: tempfile::TempDir,
    /// With [`Cluster::start_partitionable`]: the proxy each node reaches each other node
    /// through, by (from, to).
    pub links: BTreeMap<(u64, u64), Proxy>,
    /// With [`Cluster::start_tls`]: how the helpers below connect to the nodes.
    pub client_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Cluster {
    /// Starts `size` nodes (ids 1..=size) on `127.0.<slot>.1`, each with its own data
    /// directory, and waits until all serve.
    pub fn start(size: u64, slot: u8) -> Self {
        Self::start_with(size, slot, &[])
    }

    /// [`Cluster::start`] with more `strata-server` flags on every node.
    pub fn start_with(size: u64, slot: u8, extra_args: &[&str]) -> Self {
        let addresses = node_addresses(size, slot);
        let initial = initial_cluster(&addresses);
        let extra: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        Self::launch_all(
            &addresses,
            |_| initial.clone(),
            BTreeMap::new(),
            |_| extra.clone(),
        )
    }

    /// [`Cluster::start`] with flags of each node's own (`node_args(id)`, e.g. an HTTP
    /// listener on an address of its own).
    pub fn start_with_node_args(
        size: u64,
        slot: u8,
        node_args: impl Fn(u64) -> Vec<String>,
    ) -> Self {
        let addresses = node_addresses(size, slot);
        let initial = initial_cluster(&addresses);
        Self::launch_all(&addresses, |_| initial.clone(), BTreeMap::new(), node_args)
    }

    /// [`Cluster::start_with`], every node also serving Kafka on `127.0.<slot>.1` at a port of
    /// its own (fixed, so a restarted node keeps it); see [`Cluster::kafka_bootstrap`].
    pub fn start_kafka(size: u64, slot: u8, extra_args: &[&str]) -> Self {
        let addresses = node_addresses(size, slot);
        let initial = initial_cluster(&addresses);
        Self::launch_all(
            &addresses,
            |_| initial.clone(),
            BTreeMap::new(),
            |id| {
                let mut args = vec!["--kafka-listen".to_string(), kafka_address(slot, id)];
                args.extend(extra_args.iter().map(|a| a.to_string()));
                args
            },
        )
    }

    /// The Kafka addresses of the running nodes, comma-separated (a client's bootstrap list).
    pub fn kafka_bootstrap(&mut self) -> String {
        let running = self.running();
        self.nodes
            .iter()
            .filter(|node| running.contains(&node.node_id()))
            .filter_map(|node| node.kafka_address.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// [`Cluster::start`] with flags of each node's own (`node_args(id)`, e.g. its
    /// certificate); the helpers below connect with `client_tls` (`https://`).
    pub fn start_tls(
        size: u64,
        slot: u8,
        node_args: impl Fn(u64) -> Vec<String>,
        client_tls: tonic::transport::ClientTlsConfig,
    ) -> Self {
        let addresses = node_addresses(size, slot);
        let initial = initial_cluster(&addresses);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<ServerProcess> = (1..=size)
            .map(|id| {
                let data = dir.path().join(format!("node-{id}"));
                let address = &addresses[id as usize - 1];
                ServerProcess::launch_with(&data, id, address, Some(&initial), &node_args(id))
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready();
        }
        Self {
            nodes,
            dir,
            links: BTreeMap::new(),
            client_tls: Some(client_tls),
        }
    }

    /// Like [`Cluster::start`], but every node reaches every other node through a proxy of its
    /// own, which [`Cluster::isolate`] cuts (clients still reach every node directly).
    pub async fn start_partitionable(size: u64, slot: u8) -> Self {
        let addresses = node_addresses(size, slot);
        let mut links = BTreeMap::new();
        for from in 1..=size {
            for to in 1..=size {
                if from != to {
                    let proxy = Proxy::start(
                        &format!("127.0.{slot}.1:0"),
                        addresses[to as usize - 1].clone(),
                    )
                    .await;
                    links.insert((from, to), proxy);
                }
            }
        }
        let views: Vec<String> = (1..=size)
            .map(|from| {
                let seen: Vec<String> = (1..=size)
                    .map(|to| match links.get(&(from, to)) {
                        Some(proxy) => proxy.address.clone(),
                        None => addresses[to as usize - 1].clone(),
                    })
                    .collect();
                initial_cluster(&seen)
            })
            .collect();
        Self::launch_all(
            &addresses,
            |id| views[id as usize - 1].clone(),
            links,
            |_| Vec::new(),
        )
    }

    fn launch_all(
        addresses: &[String],
        initial: impl Fn(u64) -> String,
        links: BTreeMap<(u64, u64), Proxy>,
        node_args: impl Fn(u64) -> Vec<String>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<ServerProcess> = addresses
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let id = i as u64 + 1;
                let data = dir.path().join(format!("node-{id}"));
                ServerProcess::launch_with(&data, id, address, Some(&initial(id)), &node_args(id))
            })
            .collect();
        for node in &mut nodes {
            node.wait_ready();
        }
        Self {
            nodes,
            dir,
            links,
            client_tls: None,
        }
    }

    /// Starts one more node (the next id) on this cluster's address, with an initial cluster
    /// list of every node so far and itself, without waiting for it (it serves once
    /// added: see `Admin.AddNode`). Returns its id.
    pub fn launch_node(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let slot = self.nodes[0]
            .address
            .strip_prefix("127.0.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|slot| slot.parse().ok())
            .expect("nodes listen on 127.0.<slot>.1");
        let address = node_address(slot, id);
        let mut addresses: Vec<String> = self.nodes.iter().map(|n| n.address.clone()).collect();
        addresses.push(address.clone());
        let data = self.dir.path().join(format!("node-{id}"));
        let node = ServerProcess::launch(&data, id, &address, Some(&initial_cluster(&addresses)));
        self.nodes.push(node);
        id
    }

    /// Cuts every link between `node` and the others (both directions); once it returns, no
    /// byte passes between them.
    pub async fn isolate(&self, node: u64) {
        for ((from, to), proxy) in &self.links {
            if *from == node || *to == node {
                proxy.cut().await;
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        for proxy in self.links.values() {
            proxy.heal();
        }
    }

    pub fn node(&mut self, id: u64) -> &mut ServerProcess {
        &mut self.nodes[id as usize - 1]
    }

    /// Every node's address, comma-separated (a client's broker list).
    pub fn brokers(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.address.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn address(&self, id: u64) -> String {
        self.nodes[id as usize - 1].address.clone()
    }

    /// Clients of node `id`.
    pub async fn clients(&self, id: u64) -> Clients {
        match &self.client_tls {
            None => self.nodes[id as usize - 1].clients().await,
            Some(_) => tokio::time::timeout(Duration::from_secs(10), self.connect(id))
                .await
                .expect("connect within 10 s")
                .expect("connect"),
        }
    }

    /// Connects to node `id` (with TLS when the cluster has it), failing fast when it is down.
    pub async fn connect(&self, id: u64) -> Result<Clients, ()> {
        connect_with(&self.address(id), self.client_tls.clone()).await
    }

    /// Node ids whose process runs.
    pub fn running(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|node| node.running().then(|| node.node_id()))
            .collect()
    }

    /// The partition's leader, as the leader itself reports it (bounded wait).
    pub async fn leader_of(&mut self, topic: &str, partition: u32) -> u64 {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            for id in self.running() {
                let Ok(mut clients) =
                    tokio::time::timeout(Duration::from_secs(2), self.connect(id))
                        .await
                        .unwrap_or(Err(()))
                else {
                    continue;
                };
                let described = clients
                    .admin
                    .describe_topic(pb::DescribeTopicRequest {
                        name: topic.to_string(),
                    })
                    .await;
                if let Ok(described) = described {
                    let info = &described.get_ref().partition_info[partition as usize];
                    if info.leader_node_id == id {
                        return id;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader for {topic}/{partition} within {LEADER_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The controller's leader (bounded wait).
    pub async fn controller_leader(&mut self) -> u64 {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            for id in self.running() {
                if let Ok(Ok(mut clients)) =
                    tokio::time::timeout(Duration::from_secs(2), self.connect(id)).await
                    && let Ok(info) = clients.admin.cluster_info(pb::ClusterInfoRequest {}).await
                {
                    let leader = info.get_ref().controller_leader_node_id;
                    if leader != 0 && self.running().contains(&leader) {
                        return leader;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no controller leader within {LEADER_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a topic through the controller's leader.
    pub async fn create_topic(&mut self, name: &str, partitions: u32, replication_factor: u32) {
        self.create_topic_with(name, partitions, replication_factor, None)
            .await;
    }

    /// Waits (up to `limit`) until every running node serves exactly `expected` from
    /// partition `partition` of `topic`, as (offset, value) pairs from its log start.
    ///
    /// # Panics
    /// When a node still serves something else at the deadline, naming the node.
    pub async fn wait_until_every_node_holds(
        &mut self,
        topic: &str,
        partition: u32,
        expected: &[(u64, String)],
        limit: Duration,
    ) {
        let started = Instant::now();
        for node in self.running() {
            loop {
                let records = self.clients(node).await.read_values(topic, partition).await;
                if records == expected {
                    break;
                }
                assert!(
                    started.elapsed() < limit,
                    "node {node} holds {} records of {topic}/{partition}, not the {} expected \
                     (first {:?}, last {:?})",
                    records.len(),
                    expected.len(),
                    records.first(),
                    records.last()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A new idempotent producer id, from the controller's leader.
    pub async fn producer_id(&mut self) -> i64 {
        let leader = self.controller_leader().await;
        self.clients(leader)
            .await
            .broker
            .init_producer_id(pb::InitProducerIdRequest {})
            .await
            .expect("producer id")
            .into_inner()
            .producer_id
    }

    /// Produces `batch` to partition `partition` of `topic` through its leader, following a
    /// leader change (NOT_LEADER, or UNAVAILABLE while an election runs) until
    /// [`LEADER_WAIT`]. A retried batch may have been stored already, so `batch` must be an
    /// idempotent producer's: the partition then answers a retry with the original's offsets.
    ///
    /// # Panics
    /// Any other error, or no acknowledgement within the wait.
    pub async fn produce_idempotent(
        &mut self,
        topic: &str,
        partition: u32,
        batch: bytes::Bytes,
    ) -> pb::ProduceResponse {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let leader = self.leader_of(topic, partition).await;
            let produced = self
                .clients(leader)
                .await
                .broker
                .produce(pb::ProduceRequest {
                    topic: topic.to_string(),
                    target: Some(pb::produce_request::Target::Partition(partition)),
                    payload: Some(pb::produce_request::Payload::Batch(batch.clone())),
                    ..pb::ProduceRequest::default()
                })
                .await;
            let status = match produced {
                Ok(reply) => return reply.into_inner(),
                Err(status) => status,
            };
            let code = crate::error_code(&status);
            assert!(
                code == "ERROR_CODE_NOT_LEADER" || code == "ERROR_CODE_UNAVAILABLE",
                "produce to {topic}/{partition}: {status:?}"
            );
            assert!(
                Instant::now() < deadline,
                "produce to {topic}/{partition} not acknowledged within {LEADER_WAIT:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Cluster::create_topic`] with a config.
    pub async fn create_topic_with(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: Option<pb::TopicConfig>,
    ) {
        let leader = self.controller_leader().await;
        let mut clients = self.clients(leader).await;
        clients
            .admin
            .create_topic(pb::CreateTopicRequest {
                name: name.to_string(),
                partitions,
                replication_factor,
                config,
            })
            .await
            .expect("create topic");
    }
}

/// `values` numbered as the records of a partition from offset 0: (offset, value) pairs, as
/// [`Cluster::wait_until_every_node_holds`] expects them.
pub fn from_offset_zero(values: impl IntoIterator<Item = String>) -> Vec<(u64, String)> {
    (0..).zip(values).collect()
}

/// Node `id` listens on port `NODE_PORT_BASE + id` of its cluster's address. The port is
/// below the kernel's ephemeral range (32768 and up), which no connection's local port is
/// taken from; the address is the test's own. A port picked by binding port 0 and letting it
/// go (as before) could be taken by a connection in between: a node then failed to start with
/// "Address already in use" under load.
const NODE_PORT_BASE: u16 = 21_000;

/// Node `id`'s address on `127.0.<slot>.1`.
fn node_address(slot: u8, id: u64) -> String {
    let port = NODE_PORT_BASE + u16::try_from(id).expect("a test cluster has few nodes");
    format!("127.0.{slot}.1:{port}")
}

/// Node `id`'s Kafka listener address in slot `slot`.
fn kafka_address(slot: u8, id: u64) -> String {
    let port = NODE_PORT_BASE + 100 + u16::try_from(id).expect("a test cluster has few nodes");
    format!("127.0.{slot}.1:{port}")
}

/// The addresses of nodes 1..=size on `127.0.<slot>.1`.
fn node_addresses(size: u64, slot: u8) -> Vec<String> {
    (1..=size).map(|id| node_address(slot, id)).collect()
}

/// `1=ADDRESS,2=ADDRESS,...`
fn initial_cluster(addresses: &[String]) -> String {
    addresses
        .iter()
        .enumerate()
        .map(|(i, address)| format!("{}={address}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects to one node, failing fast when it is down.
pub async fn connect(address: &str) -> Result<Clients, ()> {
    connect_with(address, None).await
}

/// [`connect`], with TLS when `tls` is given.
pub async fn connect_with(
    address: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Clients, ()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Channel::from_shared(format!("{scheme}://{address}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).expect("TLS config");
    }
    let channel = endpoint.connect().await.map_err(|_| ())?;
    Ok(Clients {
        admin: strata_proto::v1::admin_client::AdminClient::new(channel.clone()),
        broker: strata_proto::v1::broker_client::BrokerClient::new(channel.clone()),
        groups: strata_proto::v1::groups_client::GroupsClient::new(channel),
    })
}
