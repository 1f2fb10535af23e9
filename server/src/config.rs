//! Server configuration. Sources, weakest first: built-in defaults, a TOML file
//! (`--config FILE`), `STRATA_*` environment variables, command-line flags.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

/// Everything `run` needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's id in the cluster, at least 1.
    pub node_id: u64,
    /// Address the gRPC server binds. Port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Directory of all data: the controller's log and every partition's.
    pub data_dir: PathBuf,
    /// Address other nodes and clients use to reach this node; defaults to the bound address.
    pub advertised_address: Option<String>,
    /// How often retention looks for old segments to remove.
    pub retention_check_interval_ms: u64,
    /// The nodes of a new cluster, this one included: `1=HOST:PORT,2=HOST:PORT,...`. `None`
    /// runs the node alone.
    pub initial_cluster: Option<String>,
    /// Make this node the controller's only voter at start (`--force-new-cluster`, a one-time
    /// recovery; see `Broker::start`). Never read from a file.
    #[serde(skip)]
    pub force_new_cluster: bool,
    /// Most client and peer connections open at once; more are closed as they arrive. `None`:
    /// an eighth of the file-descriptor limit, between 16 and 4096.
    pub max_connections: Option<usize>,
    /// Produce is refused while the data directory's file system has less free space than
    /// this, so deletes, metadata and raft keep room. `None`: the larger of 1 GiB and 2 % of
    /// the volume, but at most 10 % of it.
    pub disk_reserve_bytes: Option<u64>,
    /// Threads of the async runtime, which runs the listeners, every request's decoding and
    /// answer, and replication's network side. `None`: one per CPU the process may use (see
    /// [`Config::worker_threads`]). The `strata-server` binary builds its runtime from it;
    /// [`crate::run`] itself runs on whatever runtime calls it.
    pub worker_threads: Option<usize>,
    /// The listener's certificate chain (PEM); with `tls_key`, turns TLS on for the listener
    /// (clients and peers share it).
    pub tls_cert: Option<PathBuf>,
    /// The listener certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA client certificates must be signed by (PEM); with it, every client must present
    /// one (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// This node's peer certificate (PEM), with the SAN `node-<id>.strata`: node-to-node mutual
    /// TLS, with `peer_tls_key` and `peer_ca`.
    pub peer_tls_cert: Option<PathBuf>,
    /// The peer certificate's private key (PEM).
    pub peer_tls_key: Option<PathBuf>,
    /// The CA that signs every node's peer certificate (PEM).
    pub peer_ca: Option<PathBuf>,
    /// How clients prove who they are (`--authentication`): `none` (the default), `mtls`,
    /// `password` or `mtls,password`.
    pub authentication: Authentication,
    /// `--authorization on`: ACLs are enforced (default `off`).
    pub authorization: Authorization,
    /// `--superusers User:admin,User:ops`: principals allowed everything when authorization is
    /// on.
    pub superusers: Superusers,
    /// The cluster's first user (`STRATA_BOOTSTRAP_USER=name:password`), created once the node
    /// runs if the cluster has no user yet. From the environment only, never a file.
    #[serde(skip)]
    pub bootstrap_user: Option<BootstrapUser>,
    /// Address the Kafka listener binds (`--kafka-listen`); `None` (the default): no Kafka
    /// listener. Port 0 picks a free port (printed at start).
    pub kafka_listen: Option<SocketAddr>,
    /// The Kafka address clients are told to reach this node at (Metadata); defaults to the
    /// bound Kafka address.
    pub kafka_advertised: Option<String>,
    /// Whether Kafka Metadata requests create the topics they name and the cluster lacks (as
    /// Kafka's `auto.create.topics.enable`; default off).
    pub kafka_auto_create_topics: bool,
    /// Largest Kafka request frame accepted, in bytes (Kafka's `socket.request.max.bytes`);
    /// a larger one closes its connection.
    pub kafka_request_bytes_max: usize,
    /// Address the HTTP listener binds (`--http-listen`): `/healthz`, `/readyz`, `/metrics`,
    /// the JSON API and the console (`/ui`). `None` (the default): no HTTP listener.
    pub http_listen: Option<SocketAddr>,
    /// Whether `/metrics` needs the same authentication as the rest (`--metrics-auth`,
    /// default `on`); `off` lets a scraper in without credentials.
    pub metrics_auth: MetricsAuth,
}

/// Whether `/metrics` asks for credentials (`--metrics-auth on|off`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAuth {
    /// As every other path: the node's authentication applies.
    #[default]
    On,
    /// Open to anyone who reaches the listener (Prometheus scrapers often send no credentials).
    Off,
}

impl FromStr for MetricsAuth {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("metrics_auth must be on or off, got {other:?}")),
        }
    }
}

/// Most runtime threads `worker_threads` may ask for.
pub const WORKER_THREADS_MAX: usize = 1024;

/// Default of [`Config::kafka_request_bytes_max`]: Kafka's own default (100 MiB).
pub const KAFKA_REQUEST_BYTES_MAX_DEFAULT: usize = 100 << 20;

/// The bootstrap user's name and password. Its `Debug` shows the name only, so the password
/// never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapUser {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for BootstrapUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BootstrapUser {
    /// Parses `name:password` (the password may contain `:`).
    ///
    /// # Errors
    /// A message saying what is wrong, which never includes the password.
    pub fn parse(value: &str) -> Result<Self, String> {
        let Some((name, password)) = value.split_once(':') else {
            return Err("STRATA_BOOTSTRAP_USER must be NAME:PASSWORD (no ':' found)".to_string());
        };
        crate::controller::security::validate_user_name(name)
            .map_err(|reason| format!("STRATA_BOOTSTRAP_USER: {reason}"))?;
        if password.is_empty() || password.len() > crate::security::scram::PASSWORD_BYTES_MAX {
            return Err(format!(
                "STRATA_BOOTSTRAP_USER: the password of {name:?} must be 1 to {} bytes, got {}",
                crate::security::scram::PASSWORD_BYTES_MAX,
                password.len()
            ));
        }
        Ok(Self {
            name: name.to_string(),
            password: password.to_string(),
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            data_dir: PathBuf::from("strata-data"),
            advertised_address: None,
            retention_check_interval_ms: 10_000,
            initial_cluster: None,
            force_new_cluster: false,
            max_connections: None,
            disk_reserve_bytes: None,
            worker_threads: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            peer_tls_cert: None,
            peer_tls_key: None,
            peer_ca: None,
            authentication: Authentication::default(),
            authorization: Authorization::default(),
            superusers: Superusers::default(),
            bootstrap_user: None,
            kafka_listen: None,
            kafka_advertised: None,
            kafka_auto_create_topics: false,
            kafka_request_bytes_max: KAFKA_REQUEST_BYTES_MAX_DEFAULT,
            http_listen: None,
            metrics_auth: MetricsAuth::default(),
        }
    }
}

impl Config {
    /// Parses a TOML file's contents; missing keys keep their defaults.
    ///
    /// # Errors
    /// Syntax errors and unknown keys, with their position.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// A message naming the bad value and what is valid.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must be at least 1".to_string());
        }
        self.initial_cluster()?;
        if self.retention_check_interval_ms < 100 {
            return Err(format!(
                "retention_check_interval_ms must be at least 100, got {}",
                self.retention_check_interval_ms
            ));
        }
        if self.max_connections == Some(0) {
            return Err("max_connections must be at least 1".to_string());
        }
        if let Some(threads) = self.worker_threads
            && !(1..=WORKER_THREADS_MAX).contains(&threads)
        {
            return Err(format!(
                "worker_threads must be between 1 and {WORKER_THREADS_MAX}, got {threads}"
            ));
        }
        // A Kafka request header and the smallest body fit in 64 bytes; above 1 GiB a single
        // request could take the node's memory.
        if !(64..=1 << 30).contains(&self.kafka_request_bytes_max) {
            return Err(format!(
                "kafka_request_bytes_max must be between 64 and 1073741824, got {}",
                self.kafka_request_bytes_max
            ));
        }
        if self.kafka_advertised.is_some() && self.kafka_listen.is_none() {
            return Err(
                "kafka_advertised needs kafka_listen (the Kafka listener is off)".to_string(),
            );
        }
        let tls = self.tls_paths()?;
        self.check_security(
            tls.is_some(),
            tls.as_ref().is_some_and(|tls| tls.client_ca.is_some()),
            tls.as_ref().is_some_and(|tls| tls.peer.is_some()),
        )?;
        Ok(())
    }

    /// How many threads the async runtime gets: `worker_threads`, or one per CPU this process
    /// may use (tokio's own default).
    ///
    /// Fewer is a measured trade, not the default. The raft driver is a thread of its own,
    /// busy whenever produce is, and tokio wakes a second idle worker each time one is woken
    /// from outside the runtime (the driver answering a produce does that), only for it to
    /// find nothing and park again. On two CPUs, one worker instead of two (BENCHMARKS.md,
    /// "One runtime worker fewer than the CPUs") gave four producers 8 % more records/s for
    /// 15 % less server CPU per GB, and a record produced alone 1.8 of the runtime's context
    /// switches instead of 4.5. But one thread then serves every connection, raft's included:
    /// a reply that faults in a cold segment's pages, or a busy spell, holds up the peers'
    /// heartbeats too, and a debug build's quickstart showed leaderless partitions for a
    /// moment in 5 of 21 runs with one worker, none of 21 with two.
    #[must_use]
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        })
    }

    /// The TLS files, when TLS is on (see [`crate::security::tls`]).
    ///
    /// # Errors
    /// A certificate without its key (or the reverse), peer TLS only partly given, peer TLS
    /// without the listener's (peers dial the one listener), a client CA without TLS, or a
    /// cluster of several nodes whose listener has TLS but whose peers have not (they could
    /// not dial each other).
    pub fn tls_paths(&self) -> Result<Option<crate::security::tls::TlsPaths>, String> {
        use crate::security::tls::{PeerTlsPaths, TlsPaths};
        let listener = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err("tls_cert is set without tls_key: give both, or neither".to_string());
            }
            (None, Some(_)) => {
                return Err("tls_key is set without tls_cert: give both, or neither".to_string());
            }
        };
        let peer = match (&self.peer_tls_cert, &self.peer_tls_key, &self.peer_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(PeerTlsPaths {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            (None, None, None) => None,
            _ => {
                return Err(
                    "node-to-node TLS needs all of peer_tls_cert, peer_tls_key and peer_ca"
                        .to_string(),
                );
            }
        };
        let Some((cert, key)) = listener else {
            if peer.is_some() {
                return Err(
                    "node-to-node TLS (peer_tls_cert) needs TLS on the listener too \
                            (tls_cert and tls_key): peers and clients share one listener"
                        .to_string(),
                );
            }
            if self.tls_client_ca.is_some() {
                return Err(
                    "tls_client_ca needs TLS on the listener (tls_cert and tls_key)".to_string(),
                );
            }
            return Ok(None);
        };
        if peer.is_none() && self.initial_cluster()?.len() > 1 {
            return Err("a cluster of several nodes with TLS on the listener needs \
                        node-to-node TLS too (peer_tls_cert, peer_tls_key, peer_ca): the \
                        nodes dial each other on that listener"
                .to_string());
        }
        Ok(Some(TlsPaths {
            cert,
            key,
            client_ca: self.tls_client_ca.clone(),
            client_cert_required: !self.authentication.password,
            peer,
        }))
    }
}

impl Config {
    /// Checks the security settings against the transport's: passwords only over TLS, `mtls`
    /// only with a client CA, and authentication in a cluster of several nodes only with
    /// node-to-node TLS (otherwise anyone could open the peer stream and act as a node).
    /// `listener_tls`: the client listener has a certificate; `client_ca`: client certificates
    /// are verified; `peer_tls`: node-to-node traffic is mutual TLS.
    ///
    /// # Errors
    /// A message naming the setting and the flags it needs.
    pub fn check_security(
        &self,
        listener_tls: bool,
        client_ca: bool,
        peer_tls: bool,
    ) -> Result<(), String> {
        if self.authentication.password && !listener_tls {
            return Err(format!(
                "authentication {} sends passwords, which needs TLS on the client listener: \
                 give --tls-cert and --tls-key",
                self.authentication
            ));
        }
        if self.authentication.mtls && !client_ca {
            return Err(format!(
                "authentication {} needs the CA that signs client certificates: give \
                 --tls-client-ca",
                self.authentication
            ));
        }
        let nodes = self.initial_cluster()?.len();
        if self.authentication.any() && nodes > 1 && !peer_tls {
            return Err(format!(
                "authentication {} in a cluster of {nodes} nodes needs node-to-node TLS \
                 (--peer-tls-cert, --peer-tls-key, --peer-ca): without it anyone who reaches a \
                 node could open the peer stream",
                self.authentication
            ));
        }
        Ok(())
    }

    /// The initial cluster as node id → address; just this node when none is configured.
    ///
    /// # Errors
    /// A malformed list, a repeated id, or one without this node.
    pub fn initial_cluster(&self) -> Result<BTreeMap<u64, Option<String>>, String> {
        let Some(list) = &self.initial_cluster else {
            return Ok(BTreeMap::from([(self.node_id, None)]));
        };
        let mut nodes = BTreeMap::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, address) = entry
                .split_once('=')
                .ok_or_else(|| format!("initial_cluster entry {entry:?} is not ID=HOST:PORT"))?;
            let id: u64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                format!("initial_cluster entry {entry:?}: the id must be at least 1")
            })?;
            let address = address.trim();
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(format!(
                    "initial_cluster entry {entry:?}: the address must be HOST:PORT"
                ));
            }
            if nodes.insert(id, Some(address.to_string())).is_some() {
                return Err(format!("initial_cluster names node {id} twice"));
            }
        }
        if !nodes.contains_key(&self.node_id) {
            return Err(format!(
                "initial_cluster {list:?} does not include this node ({})",
                self.node_id
            ));
        }
        Ok(nodes)
    }
}

/// The ways a client may authenticate (`--authentication`). Both off is `none`: every
/// request is from `User:ANONYMOUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct Authentication {
    /// A client certificate signed by the client CA: `User:<CN>`.
    pub mtls: bool,
    /// `authorization: Basic base64(user:password)` checked against the users' SCRAM
    /// credentials.
    pub password: bool,
}

impl Authentication {
    /// Whether any authentication is required (not `none`).
    pub fn any(self) -> bool {
        self.mtls || self.password
    }
}

impl FromStr for Authentication {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const VALID: &str = "valid: none, mtls, password, mtls,password";
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self::default());
        }
        let mut methods = Self::default();
        for method in text.split(',').map(str::trim) {
            match method.to_ascii_lowercase().as_str() {
                "mtls" => methods.mtls = true,
                "password" => methods.password = true,
                _ => {
                    return Err(format!(
                        "unknown authentication {method:?} in {text:?}; {VALID}"
                    ));
                }
            }
        }
        Ok(methods)
    }
}

impl TryFrom<String> for Authentication {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl fmt::Display for Authentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.mtls, self.password) {
            (false, false) => "none",
            (true, false) => "mtls",
            (false, true) => "password",
            (true, true) => "mtls,password",
        })
    }
}

/// Whether ACLs are enforced (`--authorization off|on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Authorization {
    #[default]
    Off,
    On,
}

impl FromStr for Authorization {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "on" => Ok(Self::On),
            _ => Err(format!("unknown authorization {text:?}; valid: off, on")),
        }
    }
}

impl TryFrom<String> for Authorization {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

/// The principals allowed everything (`--superusers User:admin,User:ops`), each `User:<name>`
/// with a valid user name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct Superusers(pub BTreeSet<String>);

impl FromStr for Superusers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut principals = BTreeSet::new();
        for principal in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let name = principal.strip_prefix("User:").ok_or_else(|| {
                format!("superuser {principal:?} must be written User:<name>, e.g. User:admin")
            })?;
            crate::controller::security::validate_user_name(name)
                .map_err(|e| format!("superuser {principal:?}: {e}"))?;
            principals.insert(principal.to_string());
        }
        Ok(Self(principals))
    }
}

impl TryFrom<String> for Superusers {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let config =
            Config::from_toml("node_id = 3\ndata_dir = \"/var/lib/strata\"\n").expect("parse");
        assert_eq!(config.node_id, 3);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/strata"));
        assert_eq!(config.listen, Config::default().listen);
        assert!(Config::from_toml("nodeid = 3").is_err());
        let cluster = |list: &str, node_id| Config {
            node_id,
            initial_cluster: Some(list.to_string()),
            ..Config::default()
        };
        let nodes = cluster("1=a:1, 2=b:2,3=127.0.0.1:9", 2)
            .initial_cluster()
            .expect("valid");
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[&3].as_deref(), Some("127.0.0.1:9"));
        for (list, node) in [
            ("1=a:1,2=b:2", 3),
            ("1=a:1,1=b:2", 1),
            ("1=a", 1),
            ("x=a:1", 1),
            ("0=a:1", 1),
        ] {
            assert!(cluster(list, node).validate().is_err(), "{list}");
        }
        assert!(Config::from_toml("listen = \"not an address\"").is_err());
        let limits =
            Config::from_toml("max_connections = 10\ndisk_reserve_bytes = 5000\n").expect("parse");
        assert_eq!(limits.max_connections, Some(10));
        assert_eq!(limits.disk_reserve_bytes, Some(5000));
        for (threads, valid) in [
            (0, false),
            (1, true),
            (WORKER_THREADS_MAX, true),
            (WORKER_THREADS_MAX + 1, false),
        ] {
            let config =
                Config::from_toml(&format!("worker_threads = {threads}\n")).expect("parse");
            assert_eq!(config.validate().is_ok(), valid, "{threads}");
            assert_eq!(config.worker_threads(), threads);
        }
        let no_connections = Config {
            max_connections: Some(0),
            ..Config::default()
        };
        assert!(no_connections.validate().is_err());
        let tls = |fields: &str| Config::from_toml(fields).expect("parse").validate();
        assert!(tls("tls_cert = \"c\"\ntls_key = \"k\"\n").is_ok());
        for invalid in [
            "tls_cert = \"c\"\n",
            "tls_key = \"k\"\n",
            "tls_client_ca = \"ca\"\n",
            "peer_tls_cert = \"p\"\npeer_tls_key = \"pk\"\npeer_ca = \"ca\"\n",
            "tls_cert = \"c\"\ntls_key = \"k\"\npeer_tls_cert = \"p\"\n",
            "tls_cert = \"c\"\ntls_key = \"k\"\ninitial_cluster = \"1=a:1,2=b:2\"\n",
        ] {
            assert!(tls(invalid).is_err(), "{invalid}");
        }
        assert!(
            tls(
                "tls_cert = \"c\"\ntls_key = \"k\"\ninitial_cluster = \"1=a:1,2=b:2\"\n\
                 peer_tls_cert = \"p\"\npeer_tls_key = \"pk\"\npeer_ca = \"ca\"\n"
            )
            .is_ok()
        );
        assert!(Config::from_toml("bootstrap_user = \"a:b\"").is_err());
        assert!(
            Config {
                node_id: 0,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn security_settings_parse_and_refuse_what_cannot_work() {
        let config = Config::from_toml(
            "authentication = \"mtls,password\"\nauthorization = \"on\"\n\
             superusers = \"User:admin, User:ops\"\n",
        )
        .expect("parse");
        assert_eq!(
            config.authentication,
            Authentication {
                mtls: true,
                password: true
            }
        );
        assert_eq!(config.authorization, Authorization::On);
        assert_eq!(
            config.superusers.0,
            BTreeSet::from(["User:admin".to_string(), "User:ops".to_string()])
        );
        assert_eq!(Config::default().authentication.to_string(), "none");
        assert_eq!(Config::default().authorization, Authorization::Off);
        for bad in [
            "authentication = \"kerberos\"",
            "authentication = \"none,mtls\"",
            "authentication = \"\"",
            "authorization = \"yes\"",
            "superusers = \"admin\"",
            "superusers = \"User:a:b\"",
            "superusers = \"User:\"",
        ] {
            let error = Config::from_toml(bad).expect_err(bad);
            assert!(
                error.contains("valid") || error.contains("User:"),
                "{bad}: {error}"
            );
        }

        let password = Config {
            authentication: "password".parse().expect("valid"),
            ..Config::default()
        };
        let error = password
            .check_security(false, false, false)
            .expect_err("no TLS");
        assert!(error.contains("--tls-cert"), "{error}");
        assert_eq!(password.check_security(true, false, false), Ok(()));
        let mtls = Config {
            authentication: "mtls".parse().expect("valid"),
            ..Config::default()
        };
        let error = mtls.check_security(true, false, false).expect_err("no CA");
        assert!(error.contains("--tls-client-ca"), "{error}");
        assert_eq!(mtls.check_security(true, true, false), Ok(()));
        let cluster = Config {
            initial_cluster: Some("1=a:1,2=b:2".to_string()),
            ..password.clone()
        };
        let error = cluster
            .check_security(true, false, false)
            .expect_err("no peer TLS");
        assert!(error.contains("--peer-tls-cert"), "{error}");
        assert_eq!(cluster.check_security(true, false, true), Ok(()));
        // No authentication: nothing to check, with or without TLS.
        let open = Config {
            initial_cluster: Some("1=a:1,2=b:2".to_string()),
            ..Config::default()
        };
        assert_eq!(open.check_security(false, false, false), Ok(()));
    }
}

#[cfg(test)]
mod bootstrap_user_tests {
    use super::*;

    /// Good values parse (a password may hold ':'); bad ones are refused with a message that
    /// never contains the password; Debug shows the name only.
    #[test]
    fn bootstrap_user_parses_and_never_shows_the_password() {
        let user = BootstrapUser::parse("admin:s3cr:et").expect("valid");
        assert_eq!(
            (user.name.as_str(), user.password.as_str()),
            ("admin", "s3cr:et")
        );
        let shown = format!("{user:?}");
        assert!(
            shown.contains("admin") && !shown.contains("s3cr"),
            "{shown}"
        );
        for bad in ["adminhunter2", ":hunter2", "ad min:hunter2", "admin:"] {
            let error = BootstrapUser::parse(bad).expect_err(bad);
            assert!(!error.contains("hunter2"), "{error}");
            assert!(error.contains("STRATA_BOOTSTRAP_USER"), "{error}");
        }
        let long = format!(
            "admin:{}",
            "x".repeat(crate::security::scram::PASSWORD_BYTES_MAX + 1)
        );
        assert!(BootstrapUser::parse(&long).is_err());
    }
}
