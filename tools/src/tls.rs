//! `strata tls init DIR --nodes N [--hosts h1,h2] [--days D]`: certificates for a local or
//! small TLS cluster, made with rcgen:
//! - `ca.pem`, `ca.key`: one CA that signs everything (use it as `--tls-client-ca`,
//!   `--peer-ca` and the clients' `--tls-ca`);
//! - `node-<id>.pem`, `node-<id>.key` for ids 1..=N: SANs `node-<id>.strata` (the node
//!   identity peers check) plus the hosts (default `localhost,127.0.0.1`), server and client
//!   auth, so one pair serves as both `--tls-cert` and `--peer-tls-cert`;
//! - `admin.pem`, `admin.key`: a client certificate with CN `admin` (principal `User:admin`);
//! - `README.txt`: the server and client flags to use.
//!
//! Key files are written with mode 0600. A non-empty DIR is refused, so nothing is overwritten.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The most node certificates one `init` writes.
const NODES_MAX: u32 = 100;
/// The longest validity `--days` accepts (about ten years).
const DAYS_MAX: u32 = 3650;

#[derive(clap::Subcommand)]
pub enum TlsCommand {
    /// Write a CA, a certificate per node and an admin client certificate into DIR (new or
    /// empty), with a README.txt on how to use them.
    Init(InitArgs),
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// Where to write the files; must not exist or be empty.
    dir: PathBuf,
    /// How many node certificates (ids 1 to N).
    #[arg(long)]
    nodes: u32,
    /// Host names and IP addresses the node certificates are valid for, besides
    /// `node-<id>.strata` (clients check the host they dial).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    hosts: Vec<String>,
    /// How many days the certificates are valid.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

pub fn run(command: TlsCommand) -> Result<ExitCode> {
    match command {
        TlsCommand::Init(args) => {
            init(&args.dir, args.nodes, &args.hosts, args.days)?;
            println!(
                "wrote a CA, {} node certificates and an admin certificate to {}; see {}",
                args.nodes,
                args.dir.display(),
                args.dir.join("README.txt").display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes the files described in the module doc.
///
/// # Errors
/// A bad argument, a non-empty `dir`, or an I/O failure, naming the file.
pub fn init(dir: &Path, nodes: u32, hosts: &[String], days: u32) -> Result<()> {
    if !(1..=NODES_MAX).contains(&nodes) {
        bail!("--nodes must be 1 to {NODES_MAX}, not {nodes}");
    }
    if !(1..=DAYS_MAX).contains(&days) {
        bail!("--days must be 1 to {DAYS_MAX}, not {days}");
    }
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: `strata tls init` writes into a new or empty directory, \
                     so it never overwrites keys",
                    dir.display()
                );
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    }
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let not_after = not_before + time::Duration::days(i64::from(days));

    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.distinguished_name = name("Strata CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_certificate = ca.self_signed(&ca_key).context("signing the CA")?;
    write(dir, "ca.pem", &ca_certificate.pem(), false)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);

    for id in 1..=nodes {
        let mut names = vec![format!("node-{id}.strata")];
        names.extend(hosts.iter().cloned());
        let mut params = CertificateParams::new(names)
            .with_context(|| format!("node {id}: invalid --hosts entry in {hosts:?}"))?;
        params.distinguished_name = name(&format!("node-{id}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().context("generating a node key")?;
        let certificate = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing node {id}'s certificate"))?;
        write(dir, &format!("node-{id}.pem"), &certificate.pem(), false)?;
        write(dir, &format!("node-{id}.key"), &key.serialize_pem(), true)?;
    }

    let mut admin = CertificateParams::new(Vec::<String>::new()).context("admin parameters")?;
    admin.distinguished_name = name("admin");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.not_before = not_before;
    admin.not_after = not_after;
    let admin_key = KeyPair::generate().context("generating the admin key")?;
    let admin_certificate = admin
        .signed_by(&admin_key, &issuer)
        .context("signing the admin certificate")?;
    write(dir, "admin.pem", &admin_certificate.pem(), false)?;
    write(dir, "admin.key", &admin_key.serialize_pem(), true)?;
    write(dir, "README.txt", &readme(dir, nodes, &hosts, days), false)?;
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes a new file (never over an existing one); `secret` files get mode 0600.
fn write(dir: &Path, file: &str, contents: &str, secret: bool) -> Result<()> {
    let path = dir.join(file);
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 });
    let mut out = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    out.write_all(contents.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn readme(dir: &Path, nodes: u32, hosts: &[String], days: u32) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let d = dir.display();
    format!(
        "Certificates for a Strata cluster of {nodes} node(s), valid {days} days, made by \
         `strata tls init`.\n\
         \n\
         ca.pem / ca.key          the CA that signs everything below (keep ca.key offline)\n\
         node-<id>.pem / .key     node <id>: SANs node-<id>.strata, {hosts}; server and client auth\n\
         admin.pem / admin.key    a client certificate, CN admin (principal User:admin)\n\
         \n\
         Node <id> (TLS for clients and peers on its one listener, client certificates required):\n\
         \n\
         strata-server --node-id <id> \\\n  \
         --tls-cert {d}/node-<id>.pem --tls-key {d}/node-<id>.key --tls-client-ca {d}/ca.pem \\\n  \
         --peer-tls-cert {d}/node-<id>.pem --peer-tls-key {d}/node-<id>.key --peer-ca {d}/ca.pem ...\n\
         \n\
         Clients (dial the nodes by one of the hosts above):\n\
         \n\
         strata --tls-ca {d}/ca.pem --tls-cert {d}/admin.pem --tls-key {d}/admin.key cluster info\n\
         (or STRATA_TLS_CA, STRATA_TLS_CERT, STRATA_TLS_KEY)\n\
         \n\
         Certificates are re-read when their files change (or on SIGHUP): replace a node's\n\
         .pem and .key to rotate without a restart.\n",
        hosts = hosts.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// init writes every file, keys 0600, and refuses to write into a non-empty directory.
    #[test]
    fn init_writes_everything_once() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        init(&out, 2, &["localhost".into(), "127.0.0.1".into()], 30).expect("init");
        for file in [
            "ca.pem",
            "ca.key",
            "node-1.pem",
            "node-1.key",
            "node-2.pem",
            "node-2.key",
            "admin.pem",
            "admin.key",
            "README.txt",
        ] {
            let metadata = std::fs::metadata(out.join(file)).expect(file);
            assert!(metadata.len() > 0, "{file} is empty");
            let mode = metadata.permissions().mode() & 0o777;
            if file.ends_with(".key") {
                assert_eq!(mode, 0o600, "{file}");
            }
        }
        assert!(!out.join("node-3.pem").exists());
        let error = init(&out, 1, &[], 30).expect_err("non-empty directory");
        assert!(error.to_string().contains("not empty"), "{error}");
        assert!(init(&dir.path().join("x"), 0, &[], 30).is_err());
    }
}
