//! Certificates for tests, made by the `strata tls init` of this build (nothing committed,
//! nothing installed), and the server flags and client settings that use them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig};

/// The `strata` CLI of this build profile, built once per test process.
pub fn strata_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let server = crate::server::server_binary();
            let profile_dir = server.parent().expect("target/<profile>").to_path_buf();
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-q", "-p", "strata-tools", "--bin", "strata"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            assert!(
                build.status().expect("running cargo build").success(),
                "building strata failed"
            );
            profile_dir.join("strata")
        })
        .clone()
}

/// `strata tls init DIR --nodes NODES --hosts HOSTS`, checked.
pub fn tls_init(dir: &Path, nodes: u64, hosts: &str) {
    let output = Command::new(strata_binary())
        .args(["tls", "init"])
        .arg(dir)
        .args(["--nodes", &nodes.to_string(), "--hosts", hosts])
        .output()
        .expect("running strata tls init");
    assert!(
        output.status.success(),
        "strata tls init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The flags of node `id` with the files `strata tls init` wrote to `dir`: TLS on the
/// listener (client certificates required when `client_ca`), and between nodes.
pub fn node_flags(dir: &Path, id: u64, client_ca: bool) -> Vec<String> {
    let file = |name: String| dir.join(name).to_str().expect("utf8").to_string();
    let mut flags = vec![
        "--tls-cert".into(),
        file(format!("node-{id}.pem")),
        "--tls-key".into(),
        file(format!("node-{id}.key")),
        "--peer-tls-cert".into(),
        file(format!("node-{id}.pem")),
        "--peer-tls-key".into(),
        file(format!("node-{id}.key")),
        "--peer-ca".into(),
        file("ca.pem".into()),
    ];
    if client_ca {
        flags.extend(["--tls-client-ca".into(), file("ca.pem".into())]);
    }
    flags
}

/// Client TLS trusting the CA `strata tls init` wrote to `dir`, without a client certificate.
pub fn trusting_client(dir: &Path) -> ClientTlsConfig {
    let ca = std::fs::read(dir.join("ca.pem")).expect("reading ca.pem");
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca))
}
