//! Server configuration. Sources, weakest first: built-in defaults, a TOML file
//! (`--config FILE`), `STRATA_*` environment variables, command-line flags.

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            data_dir: PathBuf::from("strata-data"),
            advertised_address: None,
            retention_check_interval_ms: 10_000,
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
        if self.retention_check_interval_ms < 100 {
            return Err(format!(
                "retention_check_interval_ms must be at least 100, got {}",
                self.retention_check_interval_ms
            ));
        }
        Ok(())
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
        assert!(Config::from_toml("listen = \"not an address\"").is_err());
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
