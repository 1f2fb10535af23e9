//! Where each request goes. A partition's produce, fetch and subscribe go to its leader; admin
//! writes, consumer-group calls and `InitProducerId` go to the controller leader; admin reads go
//! to any node. [`Metadata`] is the client's picture of the cluster (pure, time passed in): node
//! addresses, partition leaders and the controller leader, learned from `ClusterInfo` answers
//! and from the hints in `NOT_LEADER` refusals, and forgotten when a node fails.
//!
//! Invariants:
//! - a hint (a `NOT_LEADER` naming the leader and its address) is used at once, without asking
//!   for metadata: it is the freshest information there is;
//! - a leader is forgotten (and the metadata marked stale) on a `NOT_LEADER` without a hint,
//!   `UNAVAILABLE`, `SHUTTING_DOWN` or a transport failure, so the next attempt asks the cluster
//!   again — at most once per [`REFRESH_INTERVAL_MIN`];
//! - without a known leader a request goes to a partition's first replica (which answers with a
//!   hint), else to a reachable broker of the list; a single-node cluster always uses the address
//!   the client connected to, whatever address the node advertises.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::v1::{ClusterInfoResponse, ErrorCode, NodeInfo, PartitionInfo};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// The shortest time between two metadata refreshes: failures in a burst (every batch in flight
/// to a node that died) ask the cluster once.
pub(crate) const REFRESH_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// How long an address that failed at the transport level is passed over when any broker will
/// do.
const SUSPECT_FOR: Duration = Duration::from_secs(2);

/// Redirects by hint one call follows before it counts as a failure: a node without a replica
/// hints the first replica, which may hint the leader; more means leadership is moving.
pub(crate) const REDIRECTS_MAX: u32 = 4;

/// Where a request must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Any node: admin reads.
    Any,
    /// The controller leader: admin writes, consumer groups, `InitProducerId`.
    Controller,
    /// The leader of one partition.
    Partition { topic: String, partition: u32 },
}

impl Route {
    pub(crate) fn partition(topic: &str, partition: u32) -> Self {
        Route::Partition {
            topic: topic.to_owned(),
            partition,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send again at once, to this address (a `NOT_LEADER` hint).
    Redirect(String),
    /// Send again after a backoff, to wherever the refreshed metadata says.
    Retry,
    /// The error is the answer.
    Fail,
}

/// The client's picture of the cluster.
#[derive(Debug)]
pub(crate) struct Metadata {
    /// The address the client connected to: the route of last resort.
    default_address: String,
    /// The broker list the client was given, in order.
    bootstrap: Vec<String>,
    nodes: HashMap<u64, String>,
    controller: Option<u64>,
    leaders: HashMap<(String, u32), u64>,
    first_replicas: HashMap<(String, u32), u64>,
    /// Addresses that failed at the transport level, until when they are passed over.
    suspects: HashMap<String, Instant>,
    /// A refresh was asked for by a failure.
    stale: bool,
    /// When the last refresh started; `None` before the first.
    refreshed_at: Option<Instant>,
}

impl Metadata {
    pub(crate) fn new(default_address: String, bootstrap: Vec<String>) -> Self {
        Self {
            default_address,
            bootstrap,
            nodes: HashMap::new(),
            controller: None,
            leaders: HashMap::new(),
            first_replicas: HashMap::new(),
            suspects: HashMap::new(),
            stale: false,
            refreshed_at: None,
        }
    }

    /// Whether a request on `route` should wait for a refresh first: never refreshed, or a
    /// failure asked for one (at most once per [`REFRESH_INTERVAL_MIN`]). Any-node routes
    /// never wait.
    pub(crate) fn needs_refresh(&self, route: &Route, now: Instant) -> bool {
        if *route == Route::Any {
            return false;
        }
        match self.refreshed_at {
            None => true,
            Some(at) => self.stale && at + REFRESH_INTERVAL_MIN <= now,
        }
    }

    pub(crate) fn refresh_started(&mut self, now: Instant) {
        self.refreshed_at = Some(now);
    }

    /// Every address worth asking for metadata: known nodes first (by id), then the broker
    /// list, without duplicates.
    pub(crate) fn addresses(&self) -> Vec<String> {
        let mut ids: Vec<&u64> = self.nodes.keys().collect();
        ids.sort_unstable();
        let mut addresses: Vec<String> = Vec::new();
        let known = ids.into_iter().map(|id| &self.nodes[id]);
        for address in known
            .chain(std::iter::once(&self.default_address))
            .chain(&self.bootstrap)
        {
            if !addresses.contains(address) {
                addresses.push(address.clone());
            }
        }
        addresses
    }

    /// The address for a request on `route`.
    pub(crate) fn address(&self, route: &Route, now: Instant) -> String {
        let node = match route {
            Route::Any => None,
            Route::Controller => self.controller,
            Route::Partition { topic, partition } => {
                let key = (topic.clone(), *partition);
                self.leaders
                    .get(&key)
                    .or_else(|| self.first_replicas.get(&key))
                    .copied()
            }
        };
        if let Some(address) = node.and_then(|node| self.nodes.get(&node)) {
            return address.clone();
        }
        self.any_address(now)
    }

    /// The default address unless it failed lately; else the first known or listed address
    /// that did not; else the default anyway.
    fn any_address(&self, now: Instant) -> String {
        let healthy = |address: &String| self.suspects.get(address).is_none_or(|at| *at <= now);
        if healthy(&self.default_address) {
            return self.default_address.clone();
        }
        self.addresses()
            .into_iter()
            .find(healthy)
            .unwrap_or_else(|| self.default_address.clone())
    }

    /// Takes in the merged answers to `ClusterInfo` (see [`merge_cluster_views`]).
    /// `single_node_address` is the address a one-node cluster was reached at, which replaces
    /// the address it advertises (it may advertise `0.0.0.0`).
    pub(crate) fn apply(&mut self, info: &ClusterInfoResponse, single_node_address: Option<&str>) {
        self.stale = false;
        if info.nodes.is_empty() {
            return;
        }
        self.nodes.clear();
        for node in &info.nodes {
            self.nodes.insert(node.node_id, node.address.clone());
        }
        if let ([node], Some(address)) = (&info.nodes[..], single_node_address) {
            self.nodes.insert(node.node_id, address.to_owned());
        }
        self.controller =
            (info.controller_leader_node_id != 0).then_some(info.controller_leader_node_id);
        self.leaders.clear();
        self.first_replicas.clear();
        for topic in &info.topics {
            for partition in &topic.partition_info {
                let key = (topic.name.clone(), partition.partition);
                if partition.leader_node_id != 0 {
                    self.leaders.insert(key.clone(), partition.leader_node_id);
                }
                if let Some(first) = partition.replica_node_ids.first() {
                    self.first_replicas.insert(key, *first);
                }
            }
        }
    }

    /// Learns from a failed attempt on `route` at `address`, and says what to do next.
    pub(crate) fn on_error(
        &mut self,
        route: &Route,
        address: &str,
        error: &Error,
        now: Instant,
    ) -> Next {
        match error.code() {
            Some(ErrorCode::NotLeader) => {
                let server = error.server().expect("a code comes from the server");
                let hint = server
                    .leader_node_id
                    .filter(|id| *id != 0)
                    .zip(server.leader_address.as_ref().filter(|a| !a.is_empty()));
                match hint {
                    Some((leader, hinted)) if hinted != address => {
                        self.nodes.insert(leader, hinted.clone());
                        self.set_leader(route, Some(leader));
                        Next::Redirect(hinted.clone())
                    }
                    _ => {
                        self.set_leader(route, None);
                        self.stale = true;
                        Next::Retry
                    }
                }
            }
            Some(ErrorCode::Unavailable | ErrorCode::ShuttingDown) => {
                self.set_leader(route, None);
                self.stale = true;
                Next::Retry
            }
            Some(_) => Next::Fail,
            None if is_transport_failure(error) => {
                self.node_failed(address, now);
                Next::Retry
            }
            None => Next::Fail,
        }
    }

    /// A node stopped answering: every leadership it held is forgotten until the cluster says
    /// where it went, and the address is passed over for a while.
    pub(crate) fn node_failed(&mut self, address: &str, now: Instant) {
        self.suspects.insert(address.to_owned(), now + SUSPECT_FOR);
        self.suspects.retain(|_, until| *until > now);
        let failed: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, known)| *known == address)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.leaders.retain(|_, leader| *leader != id);
            if self.controller == Some(id) {
                self.controller = None;
            }
        }
        self.stale = true;
    }

    fn set_leader(&mut self, route: &Route, leader: Option<u64>) {
        match (route, leader) {
            (Route::Any, _) => {}
            (Route::Controller, leader) => self.controller = leader,
            (Route::Partition { topic, partition }, Some(leader)) => {
                self.leaders.insert((topic.clone(), *partition), leader);
            }
            (Route::Partition { topic, partition }, None) => {
                self.leaders.remove(&(topic.clone(), *partition));
            }
        }
    }
}

/// Whether an error without a broker's code is a failed or broken connection (worth another
/// node or another try), as opposed to a timeout or a local refusal.
fn is_transport_failure(error: &Error) -> bool {
    matches!(error, Error::Rpc(_) | Error::Connect { .. }) && error.is_retriable()
}

/// One node's answer to `ClusterInfo`, as [`crate::Admin::cluster_views`] collects them.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The address asked.
    pub address: String,
    /// The answer, or why there was none.
    pub info: Result<ClusterInfoResponse>,
}

impl NodeView {
    /// The id of the node that answered: the node whose advertised address is the one asked,
    /// or the only node of a one-node cluster.
    pub fn node_id(&self) -> Option<u64> {
        let info = self.info.as_ref().ok()?;
        if let [node] = &info.nodes[..] {
            return Some(node.node_id);
        }
        info.nodes
            .iter()
            .find(|node| node.address == self.address)
            .map(|node| node.node_id)
    }
}

/// Merges the views of several nodes into one picture:
/// - nodes: every node any view lists; `alive` is whether that node answered this client
///   (a node nobody could ask counts as alive when any answering node heard from it lately);
/// - the controller leader: the one a node names as itself, else the one most views name;
/// - each partition: the leader's own view when a node says it leads it (its leader,
///   in-sync replicas and offsets), else the first view that names a leader, else the first
///   view.
///
/// Topics and partitions come out sorted by name and number.
pub fn merge_cluster_views(views: &[NodeView]) -> ClusterInfoResponse {
    let answered: Vec<(Option<u64>, &ClusterInfoResponse)> = views
        .iter()
        .filter_map(|view| view.info.as_ref().ok().map(|info| (view.node_id(), info)))
        .collect();
    let mut nodes: HashMap<u64, NodeInfo> = HashMap::new();
    let asked: Vec<Option<u64>> = views.iter().map(NodeView::node_id).collect();
    for (_, info) in &answered {
        for node in &info.nodes {
            let entry = nodes.entry(node.node_id).or_insert_with(|| NodeInfo {
                alive: false,
                ..node.clone()
            });
            entry.alive |= node.alive;
        }
    }
    let answering: Vec<u64> = answered.iter().filter_map(|(id, _)| *id).collect();
    let asked_directly = |id: u64| {
        views.iter().any(|view| {
            nodes
                .get(&id)
                .is_some_and(|node| node.address == view.address)
        })
    };
    let alive: HashMap<u64, bool> = nodes
        .iter()
        .map(|(id, node)| {
            let up = if answering.contains(id) {
                true
            } else if asked.contains(&Some(*id)) || asked_directly(*id) {
                false
            } else {
                node.alive
            };
            (*id, up)
        })
        .collect();
    for (id, node) in &mut nodes {
        node.alive = alive[id];
    }
    let mut nodes: Vec<NodeInfo> = nodes.into_values().collect();
    nodes.sort_by_key(|node| node.node_id);

    let controller = answered
        .iter()
        .find(|(id, info)| id.is_some() && *id == Some(info.controller_leader_node_id))
        .map(|(_, info)| info.controller_leader_node_id)
        .unwrap_or_else(|| {
            let mut counts: HashMap<u64, usize> = HashMap::new();
            for (_, info) in &answered {
                if info.controller_leader_node_id != 0 {
                    *counts.entry(info.controller_leader_node_id).or_default() += 1;
                }
            }
            counts
                .into_iter()
                .max_by_key(|(id, count)| (*count, std::cmp::Reverse(*id)))
                .map_or(0, |(id, _)| id)
        });

    let mut topics: Vec<strata_proto::v1::TopicDescription> = Vec::new();
    let mut names: Vec<&str> = answered
        .iter()
        .flat_map(|(_, info)| info.topics.iter().map(|topic| topic.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let descriptions: Vec<(Option<u64>, &strata_proto::v1::TopicDescription)> = answered
            .iter()
            .filter_map(|(id, info)| {
                info.topics
                    .iter()
                    .find(|topic| topic.name == name)
                    .map(|topic| (*id, topic))
            })
            .collect();
        let mut topic = descriptions[0].1.clone();
        let mut numbers: Vec<u32> = descriptions
            .iter()
            .flat_map(|(_, topic)| topic.partition_info.iter().map(|p| p.partition))
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        topic.partition_info = numbers
            .into_iter()
            .map(|number| {
                let candidates: Vec<(Option<u64>, &PartitionInfo)> = descriptions
                    .iter()
                    .filter_map(|(id, topic)| {
                        topic
                            .partition_info
                            .iter()
                            .find(|p| p.partition == number)
                            .map(|p| (*id, p))
                    })
                    .collect();
                // Brokers answer with the cluster's view, gathered from every node they could
                // ask (older ones with their own): the highest raft term names the current
                // leader; at equal terms a report with the in-sync replicas (only the leader
                // knows them) and one naming a leader win.
                let (_, chosen) = candidates
                    .iter()
                    .max_by_key(|(id, partition)| {
                        let own =
                            partition.leader_node_id != 0 && *id == Some(partition.leader_node_id);
                        (
                            partition.leader_term,
                            own || !partition.in_sync_node_ids.is_empty(),
                            partition.leader_node_id != 0,
                        )
                    })
                    .unwrap_or(&candidates[0]);
                (*chosen).clone()
            })
            .collect();
        topics.push(topic);
    }
    let mut unanswered: Vec<u64> = answered
        .iter()
        .flat_map(|(_, info)| info.unanswered_node_ids.iter().copied())
        .collect();
    unanswered.sort_unstable();
    unanswered.dedup();
    ClusterInfoResponse {
        nodes,
        controller_leader_node_id: controller,
        topics,
        // How far one node applied the controller's log means nothing for a merged view.
        controller_high_watermark: 0,
        view_age_ms: answered
            .iter()
            .map(|(_, info)| info.view_age_ms)
            .max()
            .unwrap_or(0),
        unanswered_node_ids: unanswered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{ErrorDetail, TopicDescription};

    fn node(id: u64, alive: bool) -> NodeInfo {
        NodeInfo {
            node_id: id,
            address: format!("n{id}:1"),
            alive,
        }
    }

    fn partition(number: u32, leader: u64, in_sync: &[u64]) -> PartitionInfo {
        PartitionInfo {
            partition: number,
            leader_node_id: leader,
            replica_node_ids: vec![2, 3, 1],
            log_start_offset: 0,
            high_watermark: leader * 10,
            in_sync_node_ids: in_sync.to_vec(),
            leader_term: 1,
            size_bytes: 0,
            capture_next_offset: None,
        }
    }

    fn info(controller: u64, partitions: Vec<PartitionInfo>) -> ClusterInfoResponse {
        ClusterInfoResponse {
            nodes: vec![node(1, true), node(2, true), node(3, true)],
            controller_leader_node_id: controller,
            topics: vec![TopicDescription {
                name: "t".into(),
                partitions: partitions.len() as u32,
                replication_factor: 3,
                config: None,
                partition_info: partitions,
                ..TopicDescription::default()
            }],
            controller_high_watermark: 0,
            ..ClusterInfoResponse::default()
        }
    }

    fn not_leader(leader: Option<(u64, &str)>) -> Error {
        Error::from_detail(ErrorDetail {
            code: ErrorCode::NotLeader as i32,
            leader_node_id: leader.map(|(id, _)| id),
            leader_address: leader.map(|(_, address)| address.to_owned()),
            ..ErrorDetail::default()
        })
    }

    fn metadata() -> Metadata {
        Metadata::new("n1:1".into(), vec!["n1:1".into(), "seed:1".into()])
    }

    /// Routes follow ClusterInfo: a partition to its leader, the controller to its leader, an
    /// unknown leader to the first replica, anything else to the connected address.
    #[test]
    fn routes_from_cluster_info() {
        let now = Instant::now();
        let mut metadata = metadata();
        assert!(metadata.needs_refresh(&Route::Controller, now));
        assert!(!metadata.needs_refresh(&Route::Any, now));
        metadata.refresh_started(now);
        metadata.apply(
            &info(3, vec![partition(0, 2, &[]), partition(1, 0, &[])]),
            None,
        );
        let table = [
            (Route::partition("t", 0), "n2:1"),
            (Route::partition("t", 1), "n2:1"), // first replica
            (Route::partition("t", 9), "n1:1"), // unknown: the connected node
            (Route::Controller, "n3:1"),
            (Route::Any, "n1:1"),
        ];
        for (route, expected) in table {
            assert_eq!(metadata.address(&route, now), expected, "{route:?}");
        }
        assert!(!metadata.needs_refresh(&Route::Controller, now));
        assert_eq!(metadata.addresses(), ["n1:1", "n2:1", "n3:1", "seed:1"]);
    }

    /// A one-node cluster is reached at the address the client used, whatever it advertises.
    #[test]
    fn single_node_uses_the_dialed_address() {
        let now = Instant::now();
        let mut metadata = metadata();
        let single = ClusterInfoResponse {
            nodes: vec![NodeInfo {
                node_id: 7,
                address: "0.0.0.0:9092".into(),
                alive: true,
            }],
            controller_leader_node_id: 7,
            topics: Vec::new(),
            controller_high_watermark: 0,
            ..ClusterInfoResponse::default()
        };
        metadata.apply(&single, Some("n1:1"));
        assert_eq!(metadata.address(&Route::Controller, now), "n1:1");
    }

    /// A hint redirects at once and is remembered; a refusal without one, UNAVAILABLE and a
    /// broken connection forget the leader and ask for a refresh; other refusals fail.
    #[test]
    fn errors_update_the_picture() {
        let now = Instant::now();
        let mut metadata = metadata();
        metadata.refresh_started(now);
        metadata.apply(&info(3, vec![partition(0, 2, &[])]), None);
        let route = Route::partition("t", 0);

        let next = metadata.on_error(&route, "n2:1", &not_leader(Some((4, "n4:1"))), now);
        assert_eq!(next, Next::Redirect("n4:1".into()));
        assert_eq!(metadata.address(&route, now), "n4:1");
        assert!(!metadata.stale);

        // A hint naming the node that refused is no hint.
        let next = metadata.on_error(&route, "n4:1", &not_leader(Some((4, "n4:1"))), now);
        assert_eq!(next, Next::Retry);
        assert_eq!(metadata.address(&route, now), "n2:1"); // back to the first replica
        assert!(metadata.stale);
        assert!(!metadata.needs_refresh(&route, now));
        assert!(metadata.needs_refresh(&route, now + REFRESH_INTERVAL_MIN));

        metadata.apply(&info(3, vec![partition(0, 3, &[])]), None);
        let refused = tonic::Status::unavailable("tcp connect error");
        let next = metadata.on_error(&Route::Controller, "n3:1", &Error::Rpc(refused), now);
        assert_eq!(next, Next::Retry);
        // Node 3 failed: neither its partition nor the controller route there any more, and
        // any-node routes avoid it while it is suspect.
        assert_eq!(metadata.address(&route, now), "n2:1");
        assert_eq!(metadata.address(&Route::Controller, now), "n1:1");

        let unknown = Error::from_detail(ErrorDetail {
            code: ErrorCode::UnknownTopicOrPartition as i32,
            ..ErrorDetail::default()
        });
        assert_eq!(metadata.on_error(&route, "n2:1", &unknown, now), Next::Fail);
        let timeout = Error::Timeout { after_ms: 1 };
        assert_eq!(metadata.on_error(&route, "n2:1", &timeout, now), Next::Fail);
    }

    /// The connected address, when it failed lately, gives way to another one for a while.
    #[test]
    fn suspect_addresses_are_passed_over() {
        let now = Instant::now();
        let mut metadata = metadata();
        metadata.node_failed("n1:1", now);
        assert_eq!(metadata.address(&Route::Any, now), "seed:1");
        assert_eq!(metadata.address(&Route::Any, now + SUSPECT_FOR), "n1:1");
    }

    /// Merging views: the controller and each partition come from the node that leads them,
    /// in-sync replicas only from a leader, and a node that did not answer is down.
    #[test]
    fn merges_views() {
        let view = |id: u64, info: ClusterInfoResponse| NodeView {
            address: format!("n{id}:1"),
            info: Ok(info),
        };
        let views = vec![
            // Node 1 replicates partition 0 (follower), not partition 1.
            view(1, info(2, vec![partition(0, 2, &[]), partition(1, 0, &[])])),
            view(
                2,
                info(2, vec![partition(0, 2, &[2, 1]), partition(1, 3, &[])]),
            ),
            NodeView {
                address: "n3:1".into(),
                info: Err(Error::Timeout { after_ms: 1 }),
            },
        ];
        let merged = merge_cluster_views(&views);
        assert_eq!(merged.controller_leader_node_id, 2);
        let alive: Vec<(u64, bool)> = merged
            .nodes
            .iter()
            .map(|node| (node.node_id, node.alive))
            .collect();
        assert_eq!(alive, [(1, true), (2, true), (3, false)]);
        let partitions = &merged.topics[0].partition_info;
        assert_eq!(partitions[0].leader_node_id, 2);
        assert_eq!(partitions[0].in_sync_node_ids, [2, 1]);
        assert_eq!(partitions[0].high_watermark, 20);
        // Partition 1's leader (3) did not answer: a follower's word, no in-sync list.
        assert_eq!(partitions[1].leader_node_id, 3);
        assert!(partitions[1].in_sync_node_ids.is_empty());
    }
}
