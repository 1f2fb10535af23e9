//! Server configuration. Sources, weakest first: built-in defaults, a TOML file
//! (`--config FILE`), `STRATA_*` environment variables, command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

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
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            peer_tls_cert: None,
            peer_tls_key: None,
            peer_ca: None,
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
        self.tls_paths()?;
        Ok(())
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
            peer,
        }))
    }
}

impl Config {
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
        assert!(
            Config {
                node_id: 0,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
    }
}
