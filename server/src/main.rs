//! `strata-server`: parses the configuration, starts tracing, runs the node until SIGINT or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata_server::Config;
use strata_server::config::{Authentication, Authorization, Superusers};

/// A Strata node. Flags win over `STRATA_*` environment variables, which win over the config
/// file, which wins over the defaults.
#[derive(Parser, Debug)]
#[command(name = "strata-server", version)]
struct Args {
    /// This node's id, at least 1 [default: 1].
    #[arg(long, env = "STRATA_NODE_ID")]
    node_id: Option<u64>,
    /// gRPC address to bind; port 0 picks a free port [default: 127.0.0.1:9092].
    #[arg(long, env = "STRATA_LISTEN")]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./strata-data].
    #[arg(long, env = "STRATA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address clients use to reach this node [default: the bound address].
    #[arg(long, env = "STRATA_ADVERTISED_ADDRESS")]
    advertised_address: Option<String>,
    /// How often retention looks for old segments, in ms [default: 10000].
    #[arg(long, env = "STRATA_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// The nodes of a new cluster, this one included: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`
    /// (the same list on every node; each node's entry is the address it is reached at).
    /// Without it the node runs alone.
    #[arg(long, env = "STRATA_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Recovery of a cluster whose controller lost its quorum for good: this node becomes the
    /// controller's only voter, taking everything in its controller log as committed. Give it
    /// once, on one node, then remove it; wipe the other nodes before starting them again and
    /// add them back with `strata cluster add-node` (see the README). Never in a config file.
    #[arg(long)]
    force_new_cluster: bool,
    /// Most connections open at once; more are closed as they arrive [default: an eighth of
    /// the file-descriptor limit, 16 to 4096].
    #[arg(long, env = "STRATA_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Produce is refused while the data directory's file system has less free space than
    /// this, in bytes [default: the larger of 1 GiB and 2 % of the volume, at most 10 % of it].
    #[arg(long, env = "STRATA_DISK_RESERVE_BYTES")]
    disk_reserve_bytes: Option<u64>,
    /// Threads of the async runtime (listeners, requests, replication's network side; the
    /// raft driver has a thread of its own) [default: one per CPU].
    #[arg(long, env = "STRATA_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// The listener's certificate chain (PEM); with --tls-key, turns TLS on (clients and peers
    /// share the listener). Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "STRATA_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The listener certificate's private key (PEM).
    #[arg(long, env = "STRATA_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS; a certificate's subject
    /// CN is its principal (`User:<CN>`). Optional with --authentication mtls,password.
    #[arg(long, env = "STRATA_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// This node's peer certificate (PEM), with the SAN `node-<id>.strata`: node-to-node
    /// mutual TLS (with --peer-tls-key and --peer-ca; needs --tls-cert).
    #[arg(long, env = "STRATA_PEER_TLS_CERT")]
    peer_tls_cert: Option<PathBuf>,
    /// The peer certificate's private key (PEM).
    #[arg(long, env = "STRATA_PEER_TLS_KEY")]
    peer_tls_key: Option<PathBuf>,
    /// The CA that signs every node's peer certificate (PEM); peers are accepted only with a
    /// certificate it signed naming a current member.
    #[arg(long, env = "STRATA_PEER_CA")]
    peer_ca: Option<PathBuf>,
    /// How clients authenticate: none, mtls (a client certificate: User:<CN>), password
    /// (`authorization: Basic` metadata checked against the cluster's users) or mtls,password
    /// [default: none].
    #[arg(long, env = "STRATA_AUTHENTICATION")]
    authentication: Option<Authentication>,
    /// Whether ACLs are enforced: off or on [default: off].
    #[arg(long, env = "STRATA_AUTHORIZATION")]
    authorization: Option<Authorization>,
    /// Principals allowed everything when authorization is on: User:admin,User:ops.
    #[arg(long, env = "STRATA_SUPERUSERS")]
    superusers: Option<Superusers>,
    /// Address the Kafka wire protocol listener binds (off when absent); port 0 picks a free
    /// port. It shares the TLS, authentication (SASL PLAIN and SCRAM-SHA-256 for passwords)
    /// and authorization settings.
    #[arg(long, env = "STRATA_KAFKA_LISTEN")]
    kafka_listen: Option<SocketAddr>,
    /// The Kafka address Metadata gives clients for this node [default: the bound Kafka
    /// address].
    #[arg(long, env = "STRATA_KAFKA_ADVERTISED")]
    kafka_advertised: Option<String>,
    /// Create a topic a Kafka Metadata request names when the cluster lacks it, as Kafka's
    /// auto.create.topics.enable: true or false [default: false].
    #[arg(long, env = "STRATA_KAFKA_AUTO_CREATE_TOPICS")]
    kafka_auto_create_topics: Option<bool>,
    /// Largest Kafka request accepted, in bytes; a larger one closes its connection [default:
    /// 104857600].
    #[arg(long, env = "STRATA_KAFKA_REQUEST_BYTES_MAX")]
    kafka_request_bytes_max: Option<usize>,
    /// Address the HTTP listener binds (off when absent): /healthz, /readyz, /metrics, the
    /// JSON API (/api/v1) and the web console (/ui). It shares the TLS, authentication and
    /// authorization settings.
    #[arg(long, env = "STRATA_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Whether /metrics asks for credentials like every other path: on or off [default: on].
    #[arg(long, env = "STRATA_METRICS_AUTH")]
    metrics_auth: Option<strata_server::config::MetricsAuth>,
    /// TOML file with any of: node_id, listen, data_dir, advertised_address,
    /// retention_check_interval_ms, initial_cluster, max_connections, disk_reserve_bytes,
    /// worker_threads, tls_cert, tls_key, tls_client_ca, peer_tls_cert, peer_tls_key, peer_ca,
    /// authentication, authorization, superusers, kafka_listen, kafka_advertised,
    /// kafka_auto_create_topics, kafka_request_bytes_max, http_listen, metrics_auth.
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
}

/// `NAME:PASSWORD` of the cluster's first user, created at start while the cluster has none.
const BOOTSTRAP_USER_ENV: &str = "STRATA_BOOTSTRAP_USER";

fn config(args: Args) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(interval) = args.retention_check_interval_ms {
        config.retention_check_interval_ms = interval;
    }
    if args.advertised_address.is_some() {
        config.advertised_address = args.advertised_address;
    }
    if args.initial_cluster.is_some() {
        config.initial_cluster = args.initial_cluster;
    }
    config.force_new_cluster = args.force_new_cluster;
    if args.max_connections.is_some() {
        config.max_connections = args.max_connections;
    }
    if args.disk_reserve_bytes.is_some() {
        config.disk_reserve_bytes = args.disk_reserve_bytes;
    }
    if args.worker_threads.is_some() {
        config.worker_threads = args.worker_threads;
    }
    for (flag, field) in [
        (args.tls_cert, &mut config.tls_cert),
        (args.tls_key, &mut config.tls_key),
        (args.tls_client_ca, &mut config.tls_client_ca),
        (args.peer_tls_cert, &mut config.peer_tls_cert),
        (args.peer_tls_key, &mut config.peer_tls_key),
        (args.peer_ca, &mut config.peer_ca),
    ] {
        if flag.is_some() {
            *field = flag;
        }
    }
    if let Some(authentication) = args.authentication {
        config.authentication = authentication;
    }
    if let Some(authorization) = args.authorization {
        config.authorization = authorization;
    }
    if let Some(superusers) = args.superusers {
        config.superusers = superusers;
    }
    if args.kafka_listen.is_some() {
        config.kafka_listen = args.kafka_listen;
    }
    if args.kafka_advertised.is_some() {
        config.kafka_advertised = args.kafka_advertised;
    }
    if let Some(auto_create) = args.kafka_auto_create_topics {
        config.kafka_auto_create_topics = auto_create;
    }
    if let Some(bytes) = args.kafka_request_bytes_max {
        config.kafka_request_bytes_max = bytes;
    }
    if args.http_listen.is_some() {
        config.http_listen = args.http_listen;
    }
    if let Some(metrics_auth) = args.metrics_auth {
        config.metrics_auth = metrics_auth;
    }
    // From the environment only (not a flag, which `ps` would show).
    if let Some(value) = std::env::var_os(BOOTSTRAP_USER_ENV) {
        let value = value
            .into_string()
            .map_err(|_| format!("{BOOTSTRAP_USER_ENV} is not valid UTF-8"))?;
        config.bootstrap_user = Some(strata_server::config::BootstrapUser::parse(&value)?);
    }
    Ok(config)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested");
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a log redirected to a file or a pipe stays plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match config(Args::parse()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("strata-server: {error}");
            return ExitCode::from(2);
        }
    };
    // Checked before the runtime is built from it (`run` checks everything again).
    if let Err(error) = config.validate() {
        eprintln!("strata-server: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads())
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strata-server: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(strata_server::run(config, shutdown_signal(), |listening| {
        // Tests and scripts read these lines to find the ports (gRPC's first).
        println!("strata-server listening on {}", listening.grpc);
        if let Some(kafka) = listening.kafka {
            println!("strata-server kafka listening on {kafka}");
        }
        if let Some(http) = listening.http {
            println!("strata-server http listening on {http}");
        }
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata-server: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags win over `STRATA_*` variables, which win over the file, which wins over defaults.
    #[test]
    fn sources_layer_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, "node_id = 3\nlisten = \"127.0.0.1:7000\"\n").expect("write");
        let file = file.to_str().expect("utf8 path");
        // SAFETY: the only test in this binary; nothing else reads the environment meanwhile.
        unsafe { std::env::set_var("STRATA_NODE_ID", "5") };
        let from_env =
            config(Args::try_parse_from(["strata-server", "--config", file]).expect("args"))
                .expect("config");
        let from_flag = config(
            Args::try_parse_from(["strata-server", "--config", file, "--node-id", "7"])
                .expect("args"),
        )
        .expect("config");
        unsafe { std::env::remove_var("STRATA_NODE_ID") };
        let from_file =
            config(Args::try_parse_from(["strata-server", "--config", file]).expect("args"))
                .expect("config");
        let defaults =
            config(Args::try_parse_from(["strata-server"]).expect("args")).expect("config");
        assert_eq!(from_flag.node_id, 7);
        assert_eq!(from_env.node_id, 5);
        assert_eq!(from_file.node_id, 3);
        assert_eq!(
            from_file.listen.port(),
            7000,
            "the file fills what flags and env leave"
        );
        assert_eq!(defaults, Config::default());
        let limits = config(
            Args::try_parse_from([
                "strata-server",
                "--max-connections",
                "50",
                "--disk-reserve-bytes",
                "1048576",
            ])
            .expect("args"),
        )
        .expect("config");
        assert_eq!(limits.max_connections, Some(50));
        assert_eq!(limits.disk_reserve_bytes, Some(1 << 20));
        std::fs::write(dir.path().join("tls.toml"), "tls_cert = \"file.pem\"\n").expect("write");
        let tls_file = dir.path().join("tls.toml");
        let tls = config(
            Args::try_parse_from([
                "strata-server",
                "--config",
                tls_file.to_str().expect("utf8 path"),
                "--tls-key",
                "k.pem",
                "--peer-ca",
                "ca.pem",
            ])
            .expect("args"),
        )
        .expect("config");
        assert_eq!(
            tls.tls_cert,
            Some(PathBuf::from("file.pem")),
            "from the file"
        );
        assert_eq!(tls.tls_key, Some(PathBuf::from("k.pem")));
        assert_eq!(tls.peer_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.tls_client_ca, None);
        let security = config(
            Args::try_parse_from([
                "strata-server",
                "--authentication",
                "password",
                "--authorization",
                "on",
                "--superusers",
                "User:admin",
            ])
            .expect("args"),
        )
        .expect("config");
        assert!(security.authentication.password && !security.authentication.mtls);
        assert_eq!(security.authorization, Authorization::On);
        assert!(security.superusers.0.contains("User:admin"));
        assert!(
            Args::try_parse_from(["strata-server", "--authentication", "kerberos"]).is_err(),
            "an unknown method is a usage error"
        );
    }
}
