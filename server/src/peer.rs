//! # Peer: the node-to-node transport of raft messages
//!
//! Each node keeps one long-lived gRPC stream (`strata.v1.Peer/Raft`) open to each other node
//! and sends on it the raft messages of every group they share, batched: one [`RaftBatch`]
//! carries whatever queued up since the last one (see [`outgoing`]). Messages are
//! encoded raft-rs `eraftpb.Message`s, parsed only on the receiving node. The driver queues
//! raft's `Message` itself; it is encoded once, straight into the gRPC frame, and parsed into
//! entries that are slices of the received frame (see [`codec`]; the receiving side reads the
//! stream's frames itself, see `raft_route`).
//!
//! Queues are bounded ([`QUEUE_MESSAGES_MAX`] per peer): the raft driver never waits on the
//! network, and a message that finds its queue full is dropped (raft sends again: appends are
//! retried from the follower's progress, heartbeats come every tick). A broken stream is
//! reconnected with backoff; while a peer is down its queue fills and then drops.
//!
//! A node counts as alive while it has sent us something within [`ALIVE_WINDOW`].
//!
//! What a peer sends is checked before it is believed: a stream is bound to the node its first
//! batch names and ends if a later batch names another (or this node); each message must name
//! that node as its sender and this node as its receiver, or it is dropped, counted and logged
//! with the peer's address. The driver then checks each message against its group (see
//! `replication::validate`).
//!
//! With node-to-node TLS (`--peer-tls-cert`, see `security::tls`) a node dials each peer with
//! its peer certificate and checks that the peer's certificate names the node dialed
//! (`node-<id>.strata`), and the claim is the certificate's, not the batch's:
//! - a `Peer/Raft`, `Peer/GroupVoters` or `Peer/BootstrapUser` call from a connection whose
//!   certificate is not a node's (a client certificate, or none) is refused with
//!   PERMISSION_DENIED;
//! - a raft stream is bound to the node its certificate names, and ends (PERMISSION_DENIED)
//!   when a batch names another;
//! - `GroupVoters` and `BootstrapUser` answer current members only (the initial cluster and the metadata's
//!   nodes); a raft stream from a node that is not one yet stays open, so the node counts as
//!   alive (an `AddNode` needs that), but every message it sends is dropped until the node is
//!   a member. Refusals are counted ([`Transport::rejected`]) and logged with the address.
//!
//! Without TLS the binding is only as good as the first claim: it keeps one stream from
//! speaking for several nodes, not a stranger from claiming to be one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft::prelude::Message;
use strata_proto::v1::peer_client::PeerClient;
use strata_proto::v1::peer_server::Peer;
use strata_proto::v1::{RaftBatch, RaftStreamClosed};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use self::codec::parse_message;
use self::outgoing::send_to_peer;

use crate::replication::{DriverHandle, Outbox, RaftGroupId};
use crate::security::tls::{Tls, peer_endpoint};
use crate::security::{CertIdentity, ConnectionInfo};

mod codec;
mod controller_replies;
mod outgoing;
mod raft_route;
use controller_replies::{bootstrap_user_reply, propose_capture, set_kafka_address_reply};

/// Messages waiting for one peer; beyond this, new ones are dropped.
pub const QUEUE_MESSAGES_MAX: usize = 8192;
/// A node heard from within this long is alive.
pub const ALIVE_WINDOW: Duration = Duration::from_millis(1500);
/// Largest raft batch accepted from a peer (raft messages carry up to 1 MiB of entries each,
/// and a batch stops taking them at [`BATCH_BYTES_SOFT_MAX`]).
const PEER_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// A raft message for a peer, as the driver produced it: encoded only by the stream's codec.
type Queued = (RaftGroupId, Message);

struct Link {
    queue: mpsc::Sender<Queued>,
}

/// Where each peer is, who was heard from when, and the queues to them.
pub struct Transport {
    node_id: u64,
    /// Addresses of the other nodes: the initial cluster, then what the metadata says.
    addresses: RwLock<BTreeMap<u64, String>>,
    /// Nodes whose address this node was given at start: those win over the metadata (each
    /// node may reach a peer its own way, e.g. through a proxy).
    configured: std::collections::BTreeSet<u64>,
    links: RwLock<HashMap<u64, Link>>,
    /// Milliseconds since the epoch (by `clock`) of the last batch from each peer.
    heard: RwLock<HashMap<u64, Arc<AtomicI64>>>,
    clock: crate::clock::SharedClock,
    /// Messages and streams from peers refused since start (see the module doc).
    rejected: std::sync::atomic::AtomicU64,
    runtime: tokio::runtime::Handle,
    /// The node's TLS: peers are dialed with it, and checked by certificate when it has
    /// node-to-node TLS (see the module doc).
    tls: Option<Arc<Tls>>,
}

impl Transport {
    /// A transport for node `node_id`; `addresses` are the other nodes'. Sender tasks start on
    /// `runtime` as peers are first sent to; `clock` times when each peer was last heard;
    /// `tls` secures the streams both ways when it has node-to-node TLS.
    pub fn new(
        node_id: u64,
        addresses: BTreeMap<u64, String>,
        runtime: tokio::runtime::Handle,
        clock: crate::clock::SharedClock,
        tls: Option<Arc<Tls>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            configured: addresses.keys().copied().collect(),
            addresses: RwLock::new(addresses),
            links: RwLock::new(HashMap::new()),
            heard: RwLock::new(HashMap::new()),
            rejected: std::sync::atomic::AtomicU64::new(0),
            runtime,
            clock,
            tls,
        })
    }

    /// Whether peers are authenticated by certificate (node-to-node TLS).
    fn peer_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.peer_tls())
    }

    /// Whether `node` is another current member: in the initial cluster or the metadata.
    fn is_member(&self, node: u64) -> bool {
        node != self.node_id
            && self
                .addresses
                .read()
                .expect("addresses lock poisoned")
                .contains_key(&node)
    }

    /// With node-to-node TLS, the node a request's certificate names; otherwise `Ok(None)`.
    ///
    /// # Errors
    /// PERMISSION_DENIED (counted and logged with the address) when TLS is on and the
    /// connection's certificate is not a node's.
    fn certified_node<T>(&self, request: &Request<T>, what: &str) -> Result<Option<u64>, Status> {
        if !self.peer_tls() {
            return Ok(None);
        }
        let info = request.extensions().get::<ConnectionInfo>();
        match info.and_then(|info| info.certificate.as_ref()) {
            Some(CertIdentity::Node(node)) => Ok(Some(*node)),
            other => {
                let total = self.reject();
                let remote = info.and_then(|info| info.remote);
                tracing::warn!(
                    ?remote,
                    certificate = ?other,
                    rejected_total = total,
                    "refused {what}: the connection's certificate is not a node's"
                );
                Err(Status::permission_denied(format!(
                    "{what} is for cluster nodes: it needs a certificate signed by the peer CA \
                     naming node-<id>.strata; this connection has {}",
                    match other {
                        Some(CertIdentity::User(name)) =>
                            format!("a client certificate (User:{name})"),
                        _ => "no node certificate".to_string(),
                    }
                )))
            }
        }
    }

    /// Like [`Self::certified_node`], and the node must be a current member.
    ///
    /// # Errors
    /// PERMISSION_DENIED (counted and logged with the address) when TLS is on and the
    /// connection's certificate is not that of a member.
    fn certified_member<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        match self.certified_node(request, what)? {
            Some(node) if !self.is_member(node) => {
                let total = self.reject();
                tracing::warn!(
                    remote = ?crate::security::listener::remote_of(request),
                    node,
                    rejected_total = total,
                    "refused {what} from a node that is not a member"
                );
                Err(Status::permission_denied(format!(
                    "node {node} is not a member of this cluster"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Learns (or changes) a node's address, from the metadata; addresses given at start stay.
    pub fn set_address(&self, node: u64, address: &str) {
        if node == self.node_id || self.configured.contains(&node) {
            return;
        }
        let mut addresses = self.addresses.write().expect("addresses lock poisoned");
        if addresses.get(&node).map(String::as_str) != Some(address) {
            addresses.insert(node, address.to_string());
        }
    }

    fn address(&self, node: u64) -> Option<String> {
        self.addresses
            .read()
            .expect("addresses lock poisoned")
            .get(&node)
            .cloned()
    }

    /// Whether `node` is this one or was heard from within [`ALIVE_WINDOW`].
    pub fn alive(&self, node: u64) -> bool {
        if node == self.node_id {
            return true;
        }
        self.heard
            .read()
            .expect("heard lock poisoned")
            .get(&node)
            .is_some_and(|at| {
                self.clock.now_ms() - at.load(Ordering::Relaxed) < ALIVE_WINDOW.as_millis() as i64
            })
    }

    /// Counts a refused message or stream and returns the total so far.
    fn reject(&self) -> u64 {
        self.rejected.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Peer messages and streams refused since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    fn heard_from(&self, node: u64) {
        let at = self
            .heard
            .read()
            .expect("heard lock poisoned")
            .get(&node)
            .cloned();
        let at = at.unwrap_or_else(|| {
            self.heard
                .write()
                .expect("heard lock poisoned")
                .entry(node)
                .or_default()
                .clone()
        });
        at.store(self.clock.now_ms(), Ordering::Relaxed);
    }

    /// Waits until every queue to a peer is empty, at most `limit` (messages a stopping node
    /// owes its peers, such as leadership hand-overs, leave before it exits).
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let empty = self
                .links
                .read()
                .expect("links lock poisoned")
                .values()
                .all(|link| link.queue.capacity() == QUEUE_MESSAGES_MAX);
            if empty || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The queue to `to`, starting its sender task the first time.
    fn link(self: &Arc<Self>, to: u64) -> mpsc::Sender<Queued> {
        if let Some(link) = self.links.read().expect("links lock poisoned").get(&to) {
            return link.queue.clone();
        }
        let mut links = self.links.write().expect("links lock poisoned");
        links
            .entry(to)
            .or_insert_with(|| {
                let (queue, receiver) = mpsc::channel(QUEUE_MESSAGES_MAX);
                self.runtime
                    .spawn(send_to_peer(Arc::downgrade(self), to, receiver));
                Link { queue }
            })
            .queue
            .clone()
    }
}

/// The transport as the raft driver's outbox.
pub struct TransportOutbox(pub Arc<Transport>);

impl Outbox for TransportOutbox {
    fn alive(&self, node: u64) -> bool {
        self.0.alive(node)
    }

    fn send(&self, to: u64, group: RaftGroupId, message: Message) {
        // Not encoded here, on the driver thread: the stream's codec writes it into the frame.
        if self.0.link(to).try_send((group, message)).is_err() {
            tracing::trace!(to, group, "peer queue full; raft message dropped");
        }
    }
}

/// Asks node `node` at `address` for the applied voters of `groups` (`None` where it has no
/// such group), over node-to-node TLS when `tls` has it.
///
/// # Errors
/// Connection and call failures, as text.
pub async fn group_voters(
    tls: Option<&Tls>,
    node: u64,
    address: &str,
    groups: Vec<RaftGroupId>,
) -> Result<Vec<(RaftGroupId, Option<Vec<u64>>)>, String> {
    let endpoint = peer_endpoint(tls, node, address)?.timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let reply = PeerClient::new(channel)
        .group_voters(strata_proto::v1::GroupVotersRequest { groups })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(reply
        .groups
        .into_iter()
        .map(|g| (g.group, g.present.then_some(g.voters)))
        .collect())
}

/// The receiving side: `strata.v1.Peer`.
#[derive(Clone)]
pub struct PeerService {
    transport: Arc<Transport>,
    driver: DriverHandle,
    /// Becomes true when the node stops: incoming streams end then, so the server's graceful
    /// shutdown does not wait on peers that never close theirs.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(
        transport: Arc<Transport>,
        driver: DriverHandle,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            transport,
            driver,
            stopping,
        }
    }

    /// The tonic server of this service, with the message size raft needs.
    pub fn server(self) -> strata_proto::v1::peer_server::PeerServer<Self> {
        strata_proto::v1::peer_server::PeerServer::new(self)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn bootstrap_user(
        &self,
        request: Request<strata_proto::v1::BootstrapUserRequest>,
    ) -> Result<Response<strata_proto::v1::BootstrapUserResponse>, Status> {
        // A stranger must not pick the cluster's first user (a superuser, typically).
        self.transport
            .certified_member(&request, "Peer/BootstrapUser")?;
        let now_ms = self.transport.clock.now_ms();
        bootstrap_user_reply(&self.driver, now_ms, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn set_kafka_address(
        &self,
        request: Request<strata_proto::v1::SetKafkaAddressRequest>,
    ) -> Result<Response<strata_proto::v1::SetKafkaAddressResponse>, Status> {
        self.transport
            .certified_member(&request, "Peer/SetKafkaAddress")?;
        let certified = self
            .transport
            .certified_node(&request, "Peer/SetKafkaAddress")?;
        let request = request.into_inner();
        // With node certificates, a node speaks for itself only.
        if certified.is_some_and(|node| node != request.node_id) {
            return Err(Status::permission_denied(format!(
                "a node may set only its own Kafka address, not node {}'s",
                request.node_id
            )));
        }
        let now_ms = self.transport.clock.now_ms();
        set_kafka_address_reply(&self.driver, now_ms, request)
            .await
            .map(Response::new)
    }

    async fn propose_capture(
        &self,
        request: Request<strata_proto::v1::ProposeCaptureRequest>,
    ) -> Result<Response<strata_proto::v1::ProposeCaptureResponse>, Status> {
        self.transport
            .certified_member(&request, "Peer/ProposeCapture")?;
        let now_ms = self.transport.clock.now_ms();
        let moved = propose_capture(&self.driver, now_ms, &request.into_inner().command).await?;
        Ok(Response::new(strata_proto::v1::ProposeCaptureResponse {
            moved,
        }))
    }

    async fn group_voters(
        &self,
        request: Request<strata_proto::v1::GroupVotersRequest>,
    ) -> Result<Response<strata_proto::v1::GroupVotersResponse>, Status> {
        self.transport
            .certified_member(&request, "Peer/GroupVoters")?;
        let mut groups = Vec::new();
        for group in request.into_inner().groups.into_iter().take(100_000) {
            let voters = self.driver.voters(group).await;
            groups.push(strata_proto::v1::GroupVoters {
                group,
                present: voters.is_some(),
                voters: voters.unwrap_or_default(),
            });
        }
        Ok(Response::new(strata_proto::v1::GroupVotersResponse {
            groups,
        }))
    }

    /// Nodes reach [`PeerService::serve_raft`] through `raft_route` (no copy of the frames);
    /// this is the generated router's way to the same handler.
    async fn raft(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftStreamClosed>, Status> {
        self.serve_raft(request).await.map(Response::new)
    }
}

impl PeerService {
    /// Serves one raft stream: checks each batch's sender (see the module doc), parses its
    /// messages and hands them to the driver, until the peer ends the stream or this node
    /// stops.
    async fn serve_raft<S>(&self, request: Request<S>) -> Result<RaftStreamClosed, Status>
    where
        S: futures::Stream<Item = Result<RaftBatch, Status>> + Unpin,
    {
        use futures::StreamExt;
        let peer: Arc<str> = crate::security::listener::remote_of(&request)
            .map_or_else(|| "an unknown address".to_string(), |a| a.to_string())
            .into();
        // The node this stream speaks for: its certificate's with node-to-node TLS, else the
        // one its first batch names.
        let certified = self.transport.certified_node(&request, "Peer/Raft")?;
        let mut bound: Option<u64> = certified;
        let mut stream = request.into_inner();
        let mut stopping = self.stopping.clone();
        let node_id = self.transport.node_id;
        loop {
            let batch = tokio::select! {
                batch = stream.next() => batch,
                _ = stopping.wait_for(|stopping| *stopping) => None,
            };
            let Some(batch) = batch else {
                break;
            };
            let batch = batch?;
            let from = batch.from_node;
            if from == node_id || from == 0 || bound.is_some_and(|node| node != from) {
                let total = self.transport.reject();
                tracing::warn!(
                    %peer,
                    claimed = from,
                    bound = ?bound,
                    rejected_total = total,
                    "closing a raft stream: it names this node, no node, or another node than before"
                );
                return Err(Status::permission_denied(format!(
                    "a raft stream speaks for one node other than this one ({node_id}); this \
                     one named {from} after {bound:?}"
                )));
            }
            bound = Some(from);
            self.transport.heard_from(from);
            if certified.is_some() && !self.transport.is_member(from) {
                // Not a member (yet): alive, so it can be added, but raft hears nothing of it.
                if !batch.messages.is_empty() {
                    let total = self.transport.reject();
                    if total.is_power_of_two() {
                        tracing::warn!(
                            %peer,
                            node = from,
                            dropped = batch.messages.len(),
                            rejected_total = total,
                            "dropped raft messages from a node that is not a member"
                        );
                    }
                }
                continue;
            }
            let mut messages = Vec::with_capacity(batch.messages.len());
            for envelope in batch.messages {
                // Entries' data are slices of the received frame (see `codec`).
                let message = match parse_message(&envelope.message) {
                    Ok(message) => message,
                    Err(error) => {
                        let total = self.transport.reject();
                        tracing::warn!(%peer, from, %error, rejected_total = total, "undecodable raft message; closing the stream");
                        return Err(Status::invalid_argument(format!(
                            "undecodable raft message from node {from}: {error}"
                        )));
                    }
                };
                if message.from != from || message.to != node_id {
                    let total = self.transport.reject();
                    // A flood is logged by samples.
                    if total.is_power_of_two() {
                        tracing::warn!(
                            %peer,
                            stream_node = from,
                            message_from = message.from,
                            message_to = message.to,
                            rejected_total = total,
                            "dropped a raft message that names another sender or receiver"
                        );
                    }
                    continue;
                }
                messages.push((envelope.group, message));
            }
            self.driver.step(messages, peer.clone());
        }
        Ok(RaftStreamClosed {})
    }
}
