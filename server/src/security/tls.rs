//! # TLS material: the listener's server config, the identity of a client's certificate, and
//! the node's client side towards its peers
//!
//! A node has ONE listener for clients and peers, so one rustls [`ServerConfig`] serves both:
//! - **Server certificate by SNI** ([`ByServerName`]): a peer dials with the server name
//!   `node-<id>.strata` ([`node_dns_name`]) of the node it wants; that name gets the peer
//!   certificate (`--peer-tls-cert`), anything else (a client dialing a host name or an IP
//!   address) the listener certificate (`--tls-cert`).
//! - **Client certificates**: a chain signed by the client CA (`--tls-client-ca`) or by the
//!   peer CA (`--peer-ca`) is accepted. One is mandatory when a client CA is configured (unless
//!   passwords are accepted too: `--authentication mtls,password`);
//!   otherwise a certificate is optional (peers present theirs, clients need none).
//! - **Identity** ([`Tls::accept`]), computed once per connection after the handshake:
//!   a chain that the peer CA verifies and whose certificate carries exactly one SAN DNS name
//!   `node-<id>.strata` is [`CertIdentity::Node`]; otherwise a chain the client CA verifies is
//!   [`CertIdentity::User`] with the subject's common name (the principal `User:<CN>`); a
//!   client certificate without a CN carries no identity (logged).
//! - **Peers** ([`Tls::peer_endpoint`]): a node dials another with the peer CA as its only
//!   root, its peer certificate as its identity, and the server name `node-<to>.strata`, so
//!   the dialed node must hold a certificate naming it.
//! - **Rotation**: [`keep_fresh`] polls the files' modification times every
//!   [`RELOAD_POLL_INTERVAL`] and reloads at once on SIGHUP. New files make a fresh
//!   [`ServerConfig`] (and peer client material) used by new connections; open connections
//!   keep theirs. Files that fail to load are logged and the loaded ones stay.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{CertIdentity, ConnectionInfo, node_dns_name, node_id_of_dns_name};

/// How long a connection may take to complete its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate and key files are checked for changes.
pub const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Largest certificate, key or CA file read (a PEM chain is a few KiB).
const PEM_FILE_BYTES_MAX: u64 = 1 << 20;
/// How long a node may take to connect to a peer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The ALPN protocol the listener speaks: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The files of a node's TLS configuration (see `Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The listener's certificate chain (PEM), served to clients.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA client certificates must be signed by.
    pub client_ca: Option<PathBuf>,
    /// Whether the handshake refuses a client without a certificate when there is a client CA.
    /// Not when passwords are accepted too (`--authentication mtls,password`): then a client
    /// may bring either, and the authentication layer refuses a request with neither.
    pub client_cert_required: bool,
    /// Node-to-node mutual TLS, when configured.
    pub peer: Option<PeerTlsPaths>,
}

/// The files of node-to-node mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsPaths {
    /// This node's peer certificate (PEM): it must carry the SAN `node-<id>.strata`, and serve
    /// both as a server certificate (peers dial it) and as a client certificate (it dials them).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs every node's peer certificate.
    pub ca: PathBuf,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read, holds nothing usable, or does not fit its pair.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// The material loaded but rustls refused the combination.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The PEM text of a file, at most [`PEM_FILE_BYTES_MAX`].
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let size = std::fs::metadata(path)
        .map_err(|e| file_error(path, format!("cannot be read: {e}")))?
        .len();
    if size > PEM_FILE_BYTES_MAX {
        return Err(file_error(
            path,
            format!("is {size} bytes; a PEM file here holds at most {PEM_FILE_BYTES_MAX}"),
        ));
    }
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot be read: {e}")))
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("is not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(file_error(
            path,
            "holds no certificate (expected a PEM `BEGIN CERTIFICATE` block)",
        ));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_error(
            path,
            "holds no private key (expected a PEM `BEGIN PRIVATE KEY` block)",
        ),
        e => file_error(path, format!("is not a valid PEM private key: {e}")),
    })
}

/// A certificate chain with its key, and the PEM both came from.
struct KeyPairFiles {
    certified: Arc<CertifiedKey>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// A certificate chain with its key, checked to match.
fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<KeyPairFiles, TlsError> {
    let cert_pem = read_pem(cert_path)?;
    let key_pem = read_pem(key_path)?;
    let chain = certificates(cert_path, &cert_pem)?;
    let key = private_key(key_path, &key_pem)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(key_path, format!("is not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive is checked by the handshakes.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(file_error(
                key_path,
                format!(
                    "does not match the certificate in {} (its public key differs)",
                    cert_path.display()
                ),
            ));
        }
        Err(e) => {
            return Err(file_error(
                cert_path,
                format!("cannot be checked against {}: {e}", key_path.display()),
            ));
        }
    }
    Ok(KeyPairFiles {
        certified: Arc::new(certified),
        cert_pem,
        key_pem,
    })
}

/// The roots of a CA file.
fn roots(path: &Path) -> Result<(RootCertStore, Vec<u8>), TlsError> {
    let pem = read_pem(path)?;
    let mut store = RootCertStore::empty();
    for certificate in certificates(path, &pem)? {
        store
            .add(certificate)
            .map_err(|e| file_error(path, format!("holds a certificate that is not a CA: {e}")))?;
    }
    Ok((store, pem))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A verifier of client chains signed by `roots`; `mandatory` refuses clients without one.
fn client_verifier(
    roots: RootCertStore,
    mandatory: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if mandatory {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))
}

/// Picks the server certificate by the name the client asked for (see the module doc).
#[derive(Debug)]
struct ByServerName {
    /// `node-<self>.strata`.
    node_name: String,
    peer: Option<Arc<CertifiedKey>>,
    listener: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match (&self.peer, hello.server_name()) {
            (Some(peer), Some(name)) if name.eq_ignore_ascii_case(&self.node_name) => {
                Some(peer.clone())
            }
            _ => Some(self.listener.clone()),
        }
    }
}

/// What a node dials its peers with: PEM, turned into a tonic config at each connection.
#[derive(Debug, Clone)]
struct PeerClientPem {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// One loaded set of files.
struct Loaded {
    server: Arc<ServerConfig>,
    /// Verifies chains against the peer CA alone: a node identity needs its signature.
    peer_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// Verifies chains against the client CA alone: a user identity needs its signature.
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    peer_client: Option<PeerClientPem>,
}

fn load(node_id: u64, paths: &TlsPaths) -> Result<Loaded, TlsError> {
    let provider = provider();
    let listener = certified_key(&paths.cert, &paths.key, &provider)?.certified;
    let client_roots = paths
        .client_ca
        .as_deref()
        .map(roots)
        .transpose()?
        .map(|(store, _)| store);
    let (peer, peer_roots) = match &paths.peer {
        Some(peer) => {
            let pair = certified_key(&peer.cert, &peer.key, &provider)?;
            let (store, ca_pem) = roots(&peer.ca)?;
            let client = PeerClientPem {
                ca: ca_pem,
                cert: pair.cert_pem,
                key: pair.key_pem,
            };
            (Some((pair.certified, client)), Some(store))
        }
        None => (None, None),
    };
    // The handshake accepts a chain signed by either CA; which one decides the identity.
    let mut either = RootCertStore::empty();
    for store in [&client_roots, &peer_roots].into_iter().flatten() {
        either.roots.extend(store.roots.iter().cloned());
    }
    let mandatory = client_roots.is_some() && paths.client_cert_required;
    let handshake_verifier = if either.is_empty() {
        WebPkiClientVerifier::no_client_auth()
    } else {
        client_verifier(either, mandatory, &provider)?
    };
    let client_verifier_only = client_roots
        .map(|store| client_verifier(store, true, &provider))
        .transpose()?;
    let peer_verifier = peer_roots
        .map(|store| client_verifier(store, true, &provider))
        .transpose()?;
    let (peer_key, peer_client) = match peer {
        Some((key, client)) => (Some(key), Some(client)),
        None => (None, None),
    };
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(handshake_verifier)
        .with_cert_resolver(Arc::new(ByServerName {
            node_name: node_dns_name(node_id),
            peer: peer_key,
            listener,
        }));
    server.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Loaded {
        server: Arc::new(server),
        peer_verifier,
        client_verifier: client_verifier_only,
        peer_client,
    })
}

/// The single `node-<id>.strata` SAN of a certificate, if it has exactly one.
fn node_name_in(certificate: &X509Certificate<'_>) -> Option<u64> {
    let names = certificate.subject_alternative_name().ok()??;
    let mut ids = names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => node_id_of_dns_name(dns),
            _ => None,
        });
    let id = ids.next()?;
    // A certificate naming several nodes would let one node speak for another.
    ids.next().is_none().then_some(id)
}

/// The identity a verified client chain carries (see the module doc); `now` checks validity.
fn identity_of(
    loaded: &Loaded,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
    remote: Option<SocketAddr>,
) -> Option<CertIdentity> {
    let (end_entity, intermediates) = chain.split_first()?;
    let (_, certificate) = X509Certificate::from_der(end_entity.as_ref()).ok()?;
    let verified_by = |verifier: &Option<Arc<dyn ClientCertVerifier>>| {
        verifier.as_ref().is_some_and(|verifier| {
            verifier
                .verify_client_cert(end_entity, intermediates, now)
                .is_ok()
        })
    };
    if verified_by(&loaded.peer_verifier)
        && let Some(node) = node_name_in(&certificate)
    {
        return Some(CertIdentity::Node(node));
    }
    if verified_by(&loaded.client_verifier) {
        let common_name = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty());
        return match common_name {
            Some(name) => Some(CertIdentity::User(name.to_string())),
            None => {
                tracing::warn!(
                    ?remote,
                    subject = %certificate.subject(),
                    "client certificate without a common name: the connection has no certificate identity"
                );
                None
            }
        };
    }
    None
}

/// A node's TLS: the loaded material and the files it came from.
pub struct Tls {
    node_id: u64,
    paths: TlsPaths,
    /// std RwLock: never held across `.await`.
    current: RwLock<Arc<Loaded>>,
    /// The files' modification times when last loaded (or last tried).
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("node_id", &self.node_id)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files of node `node_id`.
    ///
    /// # Errors
    /// [`TlsError::File`] naming a file that cannot be read, holds no certificate or key, or
    /// whose key does not match its certificate.
    pub fn load(node_id: u64, paths: TlsPaths) -> Result<Self, TlsError> {
        let stamps = stamps(&paths);
        let loaded = load(node_id, &paths)?;
        Ok(Self {
            node_id,
            paths,
            current: RwLock::new(Arc::new(loaded)),
            stamps: Mutex::new(stamps),
        })
    }

    /// Loads the files again; on failure the loaded material stays.
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = stamps(&self.paths);
        *self.stamps.lock().expect("stamps lock poisoned") = stamps;
        let loaded = load(self.node_id, &self.paths)?;
        *self.current.write().expect("TLS lock poisoned") = Arc::new(loaded);
        Ok(())
    }

    /// Reloads when a file's modification time changed since the last (attempted) load;
    /// `None` when none did. A failed load is reported once per change.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamps(&self.paths);
        if *self.stamps.lock().expect("stamps lock poisoned") == now {
            return None;
        }
        Some(self.reload())
    }

    /// Whether node-to-node TLS is configured.
    pub fn peer_tls(&self) -> bool {
        self.paths.peer.is_some()
    }

    fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("TLS lock poisoned").clone()
    }

    /// The server config new connections are accepted with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current().server.clone()
    }

    /// Completes the TLS handshake of an accepted connection and computes its identity.
    ///
    /// # Errors
    /// The handshake's failure (a plaintext client, an untrusted or expired certificate, a
    /// missing one when one is required).
    pub async fn accept<IO>(
        &self,
        stream: IO,
        remote: Option<SocketAddr>,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<IO>, ConnectionInfo)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let loaded = self.current();
        let stream = tokio_rustls::TlsAcceptor::from(loaded.server.clone())
            .accept(stream)
            .await?;
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| identity_of(&loaded, chain, UnixTime::now(), remote));
        Ok((
            stream,
            ConnectionInfo {
                remote,
                tls: true,
                certificate,
            },
        ))
    }

    /// The endpoint to dial node `to` at `address` with: `https://` with this node's peer
    /// certificate, the peer CA as the only root and `node-<to>.strata` as the server name to
    /// verify, from the files loaded now.
    ///
    /// # Errors
    /// A malformed address, or no peer TLS configured.
    pub fn peer_endpoint(
        &self,
        to: u64,
        address: &str,
    ) -> Result<tonic::transport::Endpoint, String> {
        let Some(pem) = self.current().peer_client.clone() else {
            return Err("node-to-node TLS is not configured".to_string());
        };
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem.ca))
            .identity(tonic::transport::Identity::from_pem(pem.cert, pem.key))
            .domain_name(node_dns_name(to));
        tonic::transport::Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| e.to_string())?
            .tls_config(config)
            .map_err(|e| e.to_string())
    }
}

/// The endpoint to dial node `to` at `address`: TLS when `tls` has node-to-node TLS, plaintext
/// otherwise; connecting times out after a second.
///
/// # Errors
/// A malformed address or TLS material tonic refuses, as text.
pub fn peer_endpoint(
    tls: Option<&Tls>,
    to: u64,
    address: &str,
) -> Result<tonic::transport::Endpoint, String> {
    let endpoint = match tls.filter(|tls| tls.peer_tls()) {
        Some(tls) => tls.peer_endpoint(to, address)?,
        None => tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| e.to_string())?,
    };
    Ok(endpoint.connect_timeout(PEER_CONNECT_TIMEOUT))
}

fn stamps(paths: &TlsPaths) -> Vec<Option<SystemTime>> {
    let mut files = vec![paths.cert.as_path(), paths.key.as_path()];
    files.extend(paths.client_ca.as_deref());
    if let Some(peer) = &paths.peer {
        files.extend([peer.cert.as_path(), peer.key.as_path(), peer.ca.as_path()]);
    }
    files
        .into_iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

/// Reloads `tls` when its files change (polled every [`RELOAD_POLL_INTERVAL`]) and at once on
/// SIGHUP, until `tls` is dropped. Outcomes are logged.
pub async fn keep_fresh(tls: std::sync::Weak<Tls>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; TLS files reload on change only");
            None
        }
    };
    let mut poll = tokio::time::interval(RELOAD_POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match &mut hangups {
                Some(hangups) => hangups.recv().await,
                None => std::future::pending().await,
            }
        };
        let forced = tokio::select! {
            _ = poll.tick() => false,
            _ = hangup => true,
        };
        let Some(tls) = tls.upgrade() else {
            return;
        };
        let outcome = if forced {
            Some(tls.reload())
        } else {
            tls.reload_if_changed()
        };
        match outcome {
            None => {}
            Some(Ok(())) => tracing::info!(forced, "TLS certificates reloaded"),
            Some(Err(error)) => tracing::error!(
                %error,
                "reloading the TLS certificates failed; the ones loaded before stay in use"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    /// A CA that signs test certificates.
    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("sign").pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate signed by `ca` with these SANs and CN; (cert PEM, key PEM).
    fn leaf(ca: &Ca, sans: &[&str], common_name: Option<&str>) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca.issuer).expect("sign").pem();
        (cert, key.serialize_pem())
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn put(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }
    }

    /// Node 1 with a listener certificate, a peer certificate from the peer CA and a client CA.
    fn node_one(files: &Files, peer_ca: &Ca, client_ca: &Ca) -> TlsPaths {
        let (cert, key) = leaf(client_ca, &["localhost"], Some("listener"));
        let (peer_cert, peer_key) = leaf(peer_ca, &["node-1.strata"], Some("node-1"));
        TlsPaths {
            cert: files.put("listener.pem", &cert),
            key: files.put("listener.key", &key),
            client_ca: Some(files.put("client-ca.pem", &client_ca.pem)),
            client_cert_required: true,
            peer: Some(PeerTlsPaths {
                cert: files.put("peer.pem", &peer_cert),
                key: files.put("peer.key", &peer_key),
                ca: files.put("peer-ca.pem", &peer_ca.pem),
            }),
        }
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        certificates(Path::new("test"), pem.as_bytes()).expect("certificates")
    }

    /// Which CA signed a chain and what it names decide the identity; a stranger has none.
    #[test]
    fn identities_follow_the_signing_ca() {
        let files = Files::new();
        let (peer_ca, client_ca, stranger) = (ca("peers"), ca("clients"), ca("stranger"));
        let tls = Tls::load(1, node_one(&files, &peer_ca, &client_ca)).expect("load");
        let loaded = tls.current();
        let identity = |pem: &str| identity_of(&loaded, &chain(pem), UnixTime::now(), None);
        let cases = [
            (
                leaf(&peer_ca, &["node-2.strata"], Some("n2")).0,
                Some(CertIdentity::Node(2)),
            ),
            // Two node names: it could speak for either, so it is no node.
            (
                leaf(&peer_ca, &["node-2.strata", "node-3.strata"], Some("x")).0,
                None,
            ),
            // The peer CA without a node name, and not the client CA: nothing.
            (leaf(&peer_ca, &["localhost"], Some("alice")).0, None),
            (
                leaf(&client_ca, &["node-2.strata"], Some("alice")).0,
                Some(CertIdentity::User("alice".into())),
            ),
            (leaf(&client_ca, &[], None).0, None),
            (leaf(&stranger, &["node-2.strata"], Some("mallory")).0, None),
        ];
        for (index, (pem, expected)) in cases.iter().enumerate() {
            assert_eq!(&identity(pem), expected, "case {index}");
        }
    }

    /// Start-up errors name the file: missing, no certificate, no key, key of another cert.
    #[test]
    fn load_errors_name_the_file() {
        let files = Files::new();
        let (peer_ca, client_ca) = (ca("peers"), ca("clients"));
        let good = node_one(&files, &peer_ca, &client_ca);
        let (_, other_key) = leaf(&client_ca, &["localhost"], Some("other"));
        type Break<'a> = Box<dyn Fn(&mut TlsPaths) -> PathBuf + 'a>;
        let cases: [(&str, Break<'_>, &str); 5] = [
            (
                "missing",
                Box::new(|p| {
                    p.cert = files.dir.path().join("absent.pem");
                    p.cert.clone()
                }),
                "cannot be read",
            ),
            (
                "no certificate",
                Box::new(|p| {
                    p.cert = files.put("empty.pem", "nothing here\n");
                    p.cert.clone()
                }),
                "holds no certificate",
            ),
            (
                "no key",
                Box::new(|p| {
                    p.key = files.put("nokey.key", "nothing here\n");
                    p.key.clone()
                }),
                "holds no private key",
            ),
            (
                "mismatch",
                Box::new(|p| {
                    p.key = files.put("other.key", &other_key);
                    p.key.clone()
                }),
                "does not match the certificate",
            ),
            (
                "peer mismatch",
                Box::new(|p| {
                    let peer = p.peer.as_mut().expect("peer");
                    peer.key = files.put("other-peer.key", &other_key);
                    peer.key.clone()
                }),
                "does not match the certificate",
            ),
        ];
        for (case, break_it, expected) in cases {
            let mut paths = good.clone();
            let named = break_it(&mut paths);
            let error = Tls::load(1, paths).expect_err(case).to_string();
            assert!(
                error.contains(&named.display().to_string()) && error.contains(expected),
                "{case}: {error}"
            );
        }
        assert!(Tls::load(1, good).is_ok());
    }

    /// The served certificate follows SNI: `node-<self>.strata` gets the peer certificate,
    /// anything else the listener's; a reload with a broken key keeps the old material.
    #[tokio::test]
    async fn sni_picks_the_certificate_and_bad_reloads_keep_the_old() {
        let files = Files::new();
        let (peer_ca, client_ca) = (ca("peers"), ca("clients"));
        let paths = node_one(&files, &peer_ca, &client_ca);
        let tls = Arc::new(Tls::load(1, paths.clone()).expect("load"));
        // What a client is served when it asks for `name`, trusting `ca` and presenting a
        // client certificate of the client CA.
        let served = |name: &'static str, ca: &Ca| {
            let tls = tls.clone();
            let (cert, key) = leaf(&client_ca, &[], Some("alice"));
            let mut roots = RootCertStore::empty();
            roots.add(chain(&ca.pem).remove(0)).expect("root");
            async move {
                let config = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_root_certificates(roots)
                    .with_client_auth_cert(
                        chain(&cert),
                        private_key(Path::new("k"), key.as_bytes()).expect("key"),
                    )
                    .expect("client auth");
                let (client, server) = tokio::io::duplex(64 << 10);
                let accept = tokio::spawn(async move { tls.accept(server, None).await });
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = rustls::pki_types::ServerName::try_from(name).expect("name");
                let connected = connector.connect(name, client).await;
                let accepted = accept.await.expect("join");
                match (connected, accepted) {
                    (Ok(stream), Ok((_, info))) => {
                        let peer = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .expect("server chain");
                        Ok((peer[0].clone(), info))
                    }
                    (connected, accepted) => {
                        Err(format!("{:?} / {:?}", connected.err(), accepted.err()))
                    }
                }
            }
        };
        let (certificate, info) = served("node-1.strata", &peer_ca).await.expect("peer name");
        assert_eq!(
            certificate,
            chain(
                &std::fs::read_to_string(&paths.peer.as_ref().expect("peer").cert).expect("read")
            )[0]
        );
        assert_eq!(info.certificate, Some(CertIdentity::User("alice".into())));
        assert!(info.tls);
        let (certificate, _) = served("localhost", &client_ca).await.expect("listener");
        let listener_pem = std::fs::read_to_string(&paths.cert).expect("read");
        assert_eq!(certificate, chain(&listener_pem)[0]);
        // The listener certificate does not name node-1.strata: asking for it under the peer
        // CA fails, so SNI is what picked the peer certificate above.
        assert!(served("localhost", &peer_ca).await.is_err());

        // A key that does not match: the reload fails and the old material serves on.
        let (_, other_key) = leaf(&client_ca, &["localhost"], Some("other"));
        std::fs::write(&paths.key, other_key).expect("write");
        assert!(tls.reload_if_changed().expect("changed").is_err());
        assert!(
            tls.reload_if_changed().is_none(),
            "a failure is reported once per change"
        );
        let (certificate, _) = served("localhost", &client_ca).await.expect("old listener");
        assert_eq!(certificate, chain(&listener_pem)[0]);
        // A new matching pair is served after the reload.
        let (new_cert, new_key) = leaf(&client_ca, &["localhost"], Some("renewed"));
        std::fs::write(&paths.cert, &new_cert).expect("write");
        std::fs::write(&paths.key, &new_key).expect("write");
        tls.reload().expect("reload");
        let (certificate, _) = served("localhost", &client_ca).await.expect("new listener");
        assert_eq!(certificate, chain(&new_cert)[0]);
    }
}
