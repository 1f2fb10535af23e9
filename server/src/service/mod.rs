//! # Service: the gRPC face of the broker (`strata.v1`)
//!
//! Translates requests into [`Broker`] calls and [`BrokerError`]s into `tonic::Status`, and
//! nothing more: batches are built and checked, reads decoded and subscriptions paced by the
//! broker, so that another frontend calls the same API. This is the only module (with the
//! peer transport) that knows tonic.
//!
//! - this module: [`Service`], which implements the three services over one broker (the
//!   Broker service's methods delegate to `produce` and `consume`).
//! - [`status`]: every [`BrokerError`] as a status with its stable `strata-error-code`.
//! - `produce`: Produce and ProduceStream.
//! - `consume`: Fetch, Subscribe and ListOffsets.
//! - `admin`: the Admin service (topics and cluster).
//! - `groups`: the Groups service (consumer groups).
//! - `security`: the Admin service's users and ACLs calls and the ACL enums' translation.
//! - `remote`: calls to other nodes that the broker is handed as functions (the bootstrap
//!   user's request to the controller's leader among them).
//! - [`direct_routes`]: the methods served on HTTP/2 directly, beside tonic's generated
//!   routers (Subscribe, ProduceStream, and the peers' Raft).
//! - [`subscribe_route`]: Subscribe served with hand-framed replies, so stored batches are
//!   sent without a copy and an idle subscription keeps no encode buffer.
//! - `request_frames`: a client stream's requests read from the HTTP/2 frames they came in,
//!   so a batch is a slice of its frame, not a copy (ProduceStream, the peers' Raft).
//! - [`request_limit`]: the produce request size limit, answered with Strata's error code
//!   instead of tonic's own refusal.
//! - [`access`]: the method table (what each gRPC method requires) and the handlers' topic
//!   and group checks.
//! - [`authenticate`]: the layer that finds every request's principal and checks cluster
//!   rules.
//! - [`cluster_view`]: every partition's leader, in-sync replicas and offsets gathered from
//!   the live nodes, for DescribeTopic, ClusterInfo and Kafka's Metadata.

pub mod access;
mod admin;
pub mod authenticate;
pub mod cluster_view;
mod consume;
pub mod direct_routes;
mod groups;
mod produce;
mod remote;
pub(crate) mod request_frames;
pub mod request_limit;
mod security;
pub mod status;
pub mod subscribe_route;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use strata_proto::v1 as pb;
use strata_proto::v1::broker_server::Broker as BrokerService;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

pub use produce::STREAM_IN_FLIGHT_MAX;
pub use remote::{
    bootstrap_user_at, controller_high_watermark_at, create_topic_at, init_producer_id_at,
    partition_states_at, propose_capture_at, set_kafka_address_at,
};
pub use status::status;

use crate::broker::{Broker, BrokerError};
use crate::security::acl::Policy;
use access::Access;

/// For the Kafka listener's commits, checked against other nodes' high watermarks.
pub use remote::replica_offsets_at;

/// Whether a node is alive (heard from recently); the peer transport knows.
pub type Liveness = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// The `strata.v1` services over one broker.
#[derive(Clone)]
pub struct Service {
    /// `None` while the node starts (its controller has no leader yet): requests are answered
    /// UNAVAILABLE meanwhile, while the peer service already carries raft traffic.
    broker: watch::Receiver<Option<Arc<Broker>>>,
    alive: Liveness,
    /// The node's TLS, which calls to other nodes dial with (see `remote`).
    peer_tls: Option<Arc<crate::security::tls::Tls>>,
    /// Authorization: whether ACLs are enforced, and the superusers.
    policy: Arc<Policy>,
    /// The partitions as the cluster sees them (DescribeTopic, ClusterInfo).
    view: Arc<cluster_view::ClusterView>,
}

impl Service {
    /// The services with authorization off (see [`Service::with_policy`]).
    pub fn new(broker: watch::Receiver<Option<Arc<Broker>>>, alive: Liveness) -> Self {
        Self {
            view: Arc::new(cluster_view::ClusterView::new(None, alive.clone())),
            broker,
            alive,
            peer_tls: None,
            policy: Arc::new(Policy::default()),
        }
    }

    /// The services enforcing `policy` on topic and group rules (the authentication layer
    /// enforces the cluster rules with the same policy).
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// Dials other nodes with `tls` (node-to-node TLS, when it has it).
    pub fn with_peer_tls(mut self, tls: Option<Arc<crate::security::tls::Tls>>) -> Self {
        self.view = Arc::new(cluster_view::ClusterView::new(
            tls.clone(),
            self.alive.clone(),
        ));
        self.peer_tls = tls;
        self
    }

    /// Gathers the cluster's view of partitions through `view` (the node's, shared with the
    /// Kafka listener) instead of its own.
    pub fn with_cluster_view(mut self, view: Arc<cluster_view::ClusterView>) -> Self {
        self.view = view;
        self
    }

    /// Who `request` is from, with this node's policy.
    fn access<T>(&self, request: &Request<T>) -> Access {
        Access::of(request, &self.policy)
    }

    fn broker(&self) -> Result<Arc<Broker>, Status> {
        self.broker.borrow().clone().ok_or_else(|| {
            status(BrokerError::Unavailable(
                "the node is starting: metadata not loaded yet (waiting for the cluster's \
                 controller to have a leader and for this node's metadata to catch up with it): \
                 retry shortly"
                    .to_string(),
            ))
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl BrokerService for Service {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let access = self.access(&request);
        Ok(Response::new(
            self.produce_reply(&access, request.into_inner()).await?,
        ))
    }

    type ProduceStreamStream = BoxStream<pb::ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let access = self.access(&request);
        Ok(Response::new(
            self.produce_replies(access, Box::pin(request.into_inner()))?,
        ))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let access = self.access(&request);
        Ok(Response::new(
            self.fetch_reply(&access, request.into_inner()).await?,
        ))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let access = self.access(&request);
        Ok(Response::new(
            self.subscribe_stream(&access, request.into_inner()).await?,
        ))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let access = self.access(&request);
        Ok(Response::new(
            self.list_offsets_reply(&access, request.into_inner())?,
        ))
    }

    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        // Authorized by the layer (`Rule::IdempotentWrite`): the request names no resource.
        let producer_id = self.broker()?.init_producer_id().await.map_err(status)?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }
}
