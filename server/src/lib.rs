//! # strata-server
//!
//! The Strata broker. Dependencies point one way:
//!
//! ```text
//! service (gRPC)  ->  broker (topics, cluster, routing)  ->  partition / groups
//!     ->  controller (metadata)  ->  replication (raft driver, peer transport)  ->  storage
//! ```
//!
//! Layout:
//! - [`config`]: the server's configuration and its sources.
//! - [`service`]: the `strata.v1` gRPC frontend; it only translates (protobuf <-> broker values,
//!   `BrokerError` -> `tonic::Status` in `service::status`) and is the only module that knows
//!   `tonic::Status`.
//! - [`kafka`]: the Kafka wire protocol frontend (`--kafka-listen`); it translates Kafka
//!   requests into the same broker calls, under the same principals and ACLs.
//! - [`broker`]: the [`Broker`](broker::Broker): topics, cluster membership, reconciling local
//!   partitions with the controller's metadata, routing a request to a partition replica, the
//!   produce path and producer ids, users and ACLs, and what any frontend shares (building
//!   batches from records, the subscribe loop, fetch limits).
//! - [`capture`]: continuous capture of topics to Parquet files, exactly once per offset range
//!   (the runner on each partition leader, targets, windows).
//! - [`partition`]: one partition replica's world: its state machine, the producer table
//!   (idempotence), produce admission, reads (fetch, offset lookups).
//! - [`groups`]: consumer groups: the coordinator, the membership requests and committed
//!   offsets. (A raft group is a [`replication::RaftGroupId`]; "group" alone means a consumer
//!   group.)
//! - [`controller`]: the cluster's replicated metadata (nodes, topics, committed group offsets,
//!   producer id blocks), the commands that change it and the controller's state machine; the
//!   broker and the groups read it and propose commands, it knows neither.
//! - [`peer`]: the node-to-node transport of raft messages (gRPC streams between nodes); a
//!   stream speaks for one node, and each message must name it and this node.
//! - [`replication`]: raft groups (one per partition, one controller), their driver thread, and
//!   the checks a peer's message passes before a group steps it (`replication::validate`).
//! - [`storage`]: the partition log, which is also each group's raft log.
//! - [`resources`]: file-descriptor budget, disk reserve and connection limit.
//! - [`security`]: TLS, authentication (certificates, SCRAM passwords) and authorization (ACLs).
//! - `simulation` (tests only): the deterministic simulation of nodes running the real
//!   replication driver with the partition and controller state machines on a faulty network.
//! - [`clock`]: the one place the time of day is read; every module above is given a
//!   [`clock::SharedClock`], so tests move a [`clock::ManualClock`] instead of sleeping.
//!
//! [`run`] starts a node and serves until its shutdown future completes.
//!
//! ## Words (one meaning each; ARCHITECTURE.md's glossary, and the words this crate adds)
//! - **offset**: a record's logical number in a partition. **position**: a byte position in a
//!   segment file. **raft index / term**: raft's numbering, never an offset.
//! - **batch**, **high watermark**, **log start offset**: as in ARCHITECTURE.md.
//! - **raft group**: a partition's or the controller's raft group, named by a
//!   [`replication::RaftGroupId`]. **group** alone: a consumer group.
//! - **start** ([`partition::StartFrom`]): where a read begins (earliest, latest, an offset, a
//!   time). A consumer's **progress** is the client's word for how far it has read.
//! - **proposal**: a command a leader hands raft; its **admission** is the state machine's
//!   decision whether it enters the log ([`replication::Admission`]); a committed entry's
//!   **outcome** and a proposal's **refusal** are the machine's typed answers.
//! - **producer table**: a partition's idempotence state ([`partition::producers`]).
//! - **replica**: a node's copy of a partition ([`partition::PartitionReplica`]).

pub mod broker;
pub mod capture;
pub mod clock;
pub mod config;
pub mod controller;
pub mod groups;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod partition;
pub mod peer;
pub mod replication;
pub mod resources;
pub mod security;
pub mod service;
#[cfg(test)]
mod simulation;
pub mod storage;

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use tokio::net::TcpListener;

pub use config::Config;

/// How long a stopping node lets open requests and streams finish.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("data directory {0} is in use by another process")]
    DataDirInUse(String),
    #[error("starting the broker failed: {0}")]
    Broker(#[from] broker::BrokerError),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(#[from] security::tls::TlsError),
}

/// The addresses a node serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub grpc: std::net::SocketAddr,
    /// The Kafka listener's, when it runs.
    pub kafka: Option<std::net::SocketAddr>,
    /// The HTTP listener's (health, metrics, JSON API, console), when it runs.
    pub http: Option<std::net::SocketAddr>,
}

/// Runs a node: opens (or creates) its data, starts its raft groups, serves gRPC on
/// `config.listen` (and Kafka on `config.kafka_listen`) until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish, syncs every log and returns. `on_listening` is
/// called with the bound addresses once the node serves (the binary prints them).
///
/// # Errors
/// See [`RunError`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(Listening),
) -> Result<(), RunError> {
    config.validate().map_err(RunError::Config)?;
    // Before anything else: a certificate that cannot be used fails the start, naming it.
    let tls = match config.tls_paths().map_err(RunError::Config)? {
        Some(paths) => Some(Arc::new(security::tls::Tls::load(config.node_id, paths)?)),
        None => None,
    };
    if let Some(tls) = &tls {
        tokio::spawn(security::tls::keep_fresh(Arc::downgrade(tls)));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| RunError::Io(format!("creating {}", data_dir.display()), e))?;
    // One process per data directory: two would corrupt each other's logs.
    let lock_path = data_dir.join("LOCK");
    let lock = File::create(&lock_path)
        .map_err(|e| RunError::Io(format!("creating {}", lock_path.display()), e))?;
    if lock.try_lock().is_err() {
        return Err(RunError::DataDirInUse(data_dir.display().to_string()));
    }
    let resources = Arc::new(node_resources(&config)?);
    // Per listener (see `node_resources`).
    let max_connections = (resources.fds.max_connections / listeners(&config)) as usize;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| RunError::Io(format!("binding {}", config.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| RunError::Io("reading the bound address".to_string(), e))?;
    let address = config
        .advertised_address
        .clone()
        .unwrap_or_else(|| local.to_string());
    let kafka_listener =
        match config.kafka_listen {
            Some(kafka_listen) => Some(TcpListener::bind(kafka_listen).await.map_err(|e| {
                RunError::Io(format!("binding the Kafka listener {kafka_listen}"), e)
            })?),
            None => None,
        };
    let kafka_local = match &kafka_listener {
        Some(listener) => Some(listener.local_addr().map_err(|e| {
            RunError::Io("reading the Kafka listener's bound address".to_string(), e)
        })?),
        None => None,
    };
    let kafka_address =
        kafka_local.map(|local| kafka::advertised(local, config.kafka_advertised.as_deref()));
    let http_listener =
        match config.http_listen {
            Some(http_listen) => Some(TcpListener::bind(http_listen).await.map_err(|e| {
                RunError::Io(format!("binding the HTTP listener {http_listen}"), e)
            })?),
            None => None,
        };
    let http_local = match &http_listener {
        Some(listener) => Some(listener.local_addr().map_err(|e| {
            RunError::Io("reading the HTTP listener's bound address".to_string(), e)
        })?),
        None => None,
    };

    let mut cluster = config.initial_cluster().map_err(RunError::Config)?;
    cluster.insert(config.node_id, Some(address.clone()));
    let cluster: BTreeMap<u64, String> = cluster
        .into_iter()
        .map(|(id, address)| (id, address.unwrap_or_default()))
        .collect();
    let peers: BTreeMap<u64, String> = cluster
        .iter()
        .filter(|(id, _)| **id != config.node_id)
        .map(|(id, address)| (*id, address.clone()))
        .collect();
    let clock = clock::system();
    let transport = peer::Transport::new(
        config.node_id,
        peers,
        tokio::runtime::Handle::current(),
        clock.clone(),
        tls.clone(),
    );

    let retention_interval = std::time::Duration::from_millis(config.retention_check_interval_ms);
    let metrics = metrics::Metrics::new();
    let driver = replication::driver::start(
        config.node_id,
        retention_interval,
        Arc::new(peer::TransportOutbox(transport.clone())),
        clock.clone(),
        metrics.clone(),
    );
    // Serve first: peers need this node's raft traffic before its controller can elect a
    // leader. Client requests are answered UNAVAILABLE until the broker is up, which includes
    // its metadata having caught up with the controller's leader.
    let (ready, broker_ready) = watch::channel(None);
    // Stops the peer service's streams and the Kafka and HTTP listeners.
    let (stop_peers, stopping_peers) = watch::channel(false);
    let alive = {
        let transport = transport.clone();
        Arc::new(move |node| transport.alive(node))
    };
    let policy = Arc::new(security::acl::Policy {
        enabled: config.authorization == config::Authorization::On,
        superusers: config.superusers.0.clone(),
    });
    // One authenticator for every frontend: a password's cache entry, a source's slowdown
    // and the PBKDF2 permits are the node's, whichever listener the attempt came through.
    let authenticator = Arc::new(
        service::authenticate::Authenticator::new(
            config.authentication,
            policy.clone(),
            broker_ready.clone(),
        )
        .map_err(RunError::Config)?,
    );
    // One cluster-wide view of the partitions for gRPC (and so HTTP) and Kafka: one round of
    // questions to the other nodes serves every frontend.
    let cluster_view = Arc::new(service::cluster_view::ClusterView::new(
        tls.clone(),
        alive.clone(),
    ));
    let kafka_frontend = Arc::new(
        kafka::Frontend::new(
            broker_ready.clone(),
            policy.clone(),
            config.authentication,
            config.kafka_auto_create_topics,
            config.kafka_request_bytes_max,
            tls.clone(),
            alive.clone(),
        )
        .with_authenticator(authenticator.clone())
        .with_metrics(metrics.clone())
        .with_cluster_view(cluster_view.clone()),
    );
    let service = service::Service::new(broker_ready.clone(), alive)
        .with_policy(policy)
        .with_peer_tls(tls.clone())
        .with_cluster_view(cluster_view);
    // Serves from the start: /healthz and /readyz answer while the node starts.
    let http_server = http_listener.map(|listener| {
        tokio::spawn(http::serve(
            listener,
            Arc::new(
                http::HttpFrontend::new(
                    broker_ready,
                    authenticator.clone(),
                    metrics.clone(),
                    config.metrics_auth,
                    service.clone(),
                )
                .with_peer_tls(tls.clone()),
            ),
            tls.clone(),
            max_connections,
            stopping_peers.clone(),
        ))
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Config(format!("reflection: {e}")))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .max_frame_size(strata_proto::BROKER_FRAME_BYTES_MAX)
            // Every request, whatever its service, passes authentication (the method table
            // says which need none).
            // Outside authentication, so refused credentials count as errors.
            .layer(crate::metrics::requests::GrpcMetricsLayer::new(
                &metrics.requests,
                service::access::METHODS.iter().map(|(path, _)| *path),
            ))
            .layer(service::authenticate::AuthenticateLayer::new(authenticator))
            .add_service(health_service)
            .add_service(reflection)
            .add_service({
                let peers = peer::PeerService::new(
                    transport.clone(),
                    driver.clone(),
                    stopping_peers.clone(),
                );
                service::direct_routes::DirectRoutes::new(peers.clone().server(), peers)
            })
            .add_service(strata_proto::v1::admin_server::AdminServer::new(
                service.clone(),
            ))
            .add_service(strata_proto::v1::groups_server::GroupsServer::new(
                service.clone(),
            ))
            .add_service(service::request_limit::ProduceLimit(
                service::direct_routes::DirectRoutes::new(
                    strata_proto::v1::broker_server::BrokerServer::new(service.clone())
                        .max_decoding_message_size(
                            service::request_limit::PRODUCE_REQUEST_BYTES_MAX,
                        ),
                    service,
                ),
            ))
            .serve_with_incoming_shutdown(
                security::listener::incoming(
                    resources::limit_connections(
                        resources::nodelay_incoming(listener),
                        max_connections,
                        metrics.data.connections("grpc"),
                    ),
                    tls.clone(),
                ),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    let started = tokio::select! {
        started = broker::Broker::start(
            broker::Start {
                node_id: config.node_id,
                address,
                kafka_address,
                data_dir,
                cluster,
                force_new_cluster: config.force_new_cluster,
                resources: resources.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
            },
            driver.clone(),
            {
                let tls = tls.clone();
                move |node, address| {
                    service::controller_high_watermark_at(tls.clone(), node, address)
                }
            },
        ) => Some(started),
        () = &mut shutdown => None,
    };
    let broker = match started {
        Some(Ok(broker)) => broker,
        Some(Err(error)) => {
            let _ = stop.send(());
            stop_peers.send_replace(true);
            let _ = tokio::time::timeout(SHUTDOWN_DRAIN, server).await;
            driver.shutdown().await;
            return Err(error.into());
        }
        None => {
            let _ = stop.send(());
            stop_peers.send_replace(true);
            let _ = tokio::time::timeout(SHUTDOWN_DRAIN, server).await;
            driver.shutdown().await;
            return Ok(());
        }
    };
    // Peers' addresses follow the metadata (a node may have been registered since).
    tokio::spawn(follow_node_addresses(
        Arc::downgrade(&broker),
        transport.clone(),
    ));
    tokio::spawn(capture::runner::run(Arc::downgrade(&broker), {
        let tls = tls.clone();
        Arc::new(move |node, address, command| {
            let tls = tls.clone();
            Box::pin(service::propose_capture_at(tls, node, address, command))
        })
    }));
    tokio::spawn(broker::Broker::publish_kafka_address(
        Arc::downgrade(&broker),
        {
            let tls = tls.clone();
            move |node, address, from, kafka_address| {
                service::set_kafka_address_at(tls.clone(), node, address, from, kafka_address)
            }
        },
    ));
    if let Some(user) = config.bootstrap_user.clone() {
        tokio::spawn(bootstrap_user(broker.clone(), user, tls.clone()));
    }
    ready.send_replace(Some(broker));
    health
        .set_serving::<strata_proto::v1::broker_server::BrokerServer<service::Service>>()
        .await;
    health
        .set_serving::<strata_proto::v1::groups_server::GroupsServer<service::Service>>()
        .await;
    health
        .set_serving::<strata_proto::v1::admin_server::AdminServer<service::Service>>()
        .await;
    // Kafka clients are let in once the broker is up: their first request needs the metadata.
    let kafka_server = kafka_listener.map(|listener| {
        tokio::spawn(kafka::serve(
            listener,
            kafka_frontend,
            tls.clone(),
            max_connections,
            stopping_peers.clone(),
        ))
    });
    tracing::info!(node_id = config.node_id, %local, kafka = ?kafka_local, "serving");
    on_listening(Listening {
        grpc: local,
        kafka: kafka_local,
        http: http_local,
    });
    shutdown.await;
    // Leadership first, while peers still hear us: a rolling restart then costs no election.
    tracing::info!("handing over leadership");
    driver
        .hand_over_leadership(std::time::Duration::from_secs(2))
        .await;
    let _ = stop.send(());
    stop_peers.send_replace(true);
    if let Some(kafka_server) = kafka_server {
        let _ = kafka_server.await;
    }
    if let Some(http_server) = http_server {
        let _ = http_server.await;
    }
    // In-flight requests finish; long-lived client streams (subscriptions) get a bounded
    // while to end before their connections are dropped.
    let served = match tokio::time::timeout(SHUTDOWN_DRAIN, server).await {
        Ok(joined) => {
            joined.map_err(|e| RunError::Config(format!("the gRPC server task failed: {e}")))?
        }
        Err(_) => {
            tracing::warn!(
                "connections still open {SHUTDOWN_DRAIN:?} after shutdown began; dropping them"
            );
            Ok(())
        }
    };
    tracing::info!("stopped accepting; syncing");
    ready.send_replace(None);
    driver.shutdown().await;
    transport.flush(std::time::Duration::from_millis(500)).await;
    drop(lock);
    served.map_err(RunError::from)
}

/// Raises the descriptor limit and derives what the node enforces from it and from its data
/// directory's volume (see [`resources`]); logs the outcome.
fn node_resources(config: &Config) -> Result<resources::Resources, RunError> {
    let fd_limit = match resources::raise_fd_limit() {
        Ok(limits) => limits.soft,
        Err(error) => return Err(RunError::Io("reading RLIMIT_NOFILE".to_string(), error)),
    };
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| resources::default_max_connections(fd_limit));
    let disk_reserve_bytes = match config.disk_reserve_bytes {
        Some(bytes) => bytes,
        None => {
            let (_, total) = resources::disk_space(&config.data_dir)
                .map_err(|e| RunError::Io(format!("statvfs {}", config.data_dir.display()), e))?;
            resources::default_disk_reserve_bytes(total)
        }
    };
    // The Kafka and HTTP listeners have a connection limit of their own, of the same size.
    let fds = resources::FdBudget {
        fd_limit,
        max_connections: max_connections as u64 * listeners(config),
    };
    tracing::info!(
        fd_limit,
        max_connections,
        partitions_max = fds.partitions_max(),
        disk_reserve_bytes,
        "resource limits"
    );
    Ok(resources::Resources {
        fds,
        disk: resources::DiskReserve::new(config.data_dir.clone(), disk_reserve_bytes),
    })
}

/// How many client listeners the node runs (gRPC, and Kafka and HTTP when on): the
/// connection limit is per listener, and the descriptor budget counts them all.
fn listeners(config: &Config) -> u64 {
    1 + u64::from(config.kafka_listen.is_some()) + u64::from(config.http_listen.is_some())
}

/// Creates the bootstrap user (`STRATA_BOOTSTRAP_USER`) if the cluster has none yet, and logs
/// what happened (the name only, never the password).
async fn bootstrap_user(
    broker: Arc<broker::Broker>,
    user: config::BootstrapUser,
    tls: Option<Arc<security::tls::Tls>>,
) {
    let outcome = broker
        .bootstrap_user(
            &user.name,
            &user.password,
            |node, address, name, credential| {
                service::bootstrap_user_at(tls.clone(), node, address, name, credential)
            },
        )
        .await;
    match outcome {
        Ok(broker::security::BootstrapOutcome::Created) => {
            tracing::info!("bootstrap user {} created", user.name);
        }
        Ok(broker::security::BootstrapOutcome::UsersExist) => {
            tracing::info!("users exist; STRATA_BOOTSTRAP_USER ignored");
        }
        Err(error) => {
            tracing::error!(%error, "creating the bootstrap user {} failed", user.name);
        }
    }
}

/// Keeps the transport's peer addresses in step with the registered nodes.
async fn follow_node_addresses(
    broker: std::sync::Weak<broker::Broker>,
    transport: Arc<peer::Transport>,
) {
    let Some(mut changes) = broker.upgrade().map(|b| b.metadata_changes()) else {
        return;
    };
    loop {
        let Some(strong) = broker.upgrade() else {
            return;
        };
        for node in strong.metadata().nodes.values() {
            transport.set_address(node.id, &node.address);
        }
        drop(strong);
        if changes.changed().await.is_err() {
            return;
        }
    }
}
