//! The handle to a Strata cluster that every part of the client is built on: a channel per
//! broker, the cluster metadata, and routed calls that follow leaders and retry routing
//! failures; the broker list ([`DEFAULT_BROKERS`], `STRATA_BROKERS`) and [`ClientConfig`].
//!
//! It sits below the producer, consumers and admin client, which take a [`Cluster`] and know
//! nothing of [`crate::Client`], the public entry point that makes them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_proto::v1::ClusterInfoRequest;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::broker_client::BrokerClient;
use strata_proto::v1::groups_client::GroupsClient;
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result, chain};
use crate::retry::{Backoff, random_jitter};
use crate::routing::{Metadata, Next, NodeView, REDIRECTS_MAX, Route, merge_cluster_views};

/// The broker list used when none is given: the same in the client, its examples and the
/// `strata` CLI.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The environment variable the examples and the CLI read the broker list from.
pub const BROKERS_ENV: &str = "STRATA_BROKERS";

/// The largest message the client accepts from a broker: a fetch of the protocol's 64 MiB
/// maximum plus one batch beyond it and the message framing.
pub(crate) const MESSAGE_BYTES_MAX: usize = 72 << 20;

/// The broker list from `STRATA_BROKERS`, or [`DEFAULT_BROKERS`].
pub fn brokers_from_env() -> String {
    std::env::var(BROKERS_ENV).unwrap_or_else(|_| DEFAULT_BROKERS.to_owned())
}

/// How the client talks to brokers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long to wait for a TCP connection to a broker.
    pub connect_timeout: Duration,
    /// How long to wait for the reply to a unary call (admin calls, `ListOffsets`, and a
    /// fetch on top of its own `max_wait`).
    pub request_timeout: Duration,
    /// How many times a call is sent again, after a backoff and a metadata refresh, when the
    /// node it reached does not lead what it asked for and cannot say who does, is
    /// unavailable, or cannot be reached. Redirects to the leader a `NOT_LEADER` names are
    /// followed at once and not counted.
    pub routing_retries: u32,
    /// The delay before each of those attempts.
    pub routing_backoff: Backoff,
    /// TLS to the brokers (`https://`); `None` connects in plaintext.
    pub tls: Option<ClientTls>,
    /// A user name and password sent with every call, for brokers with `--authentication
    /// password` (over TLS). `None`: no password is sent.
    pub credentials: Option<Credentials>,
}

/// How the client secures its connections to brokers (their listeners' `--tls-cert`).
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The CA certificates (PEM) that sign the brokers' certificates; the only roots trusted.
    pub ca_pem: Vec<u8>,
    /// A client certificate chain and its private key (PEM), for brokers that require one
    /// (`--tls-client-ca`); its subject CN is the client's principal (`User:<CN>`).
    pub identity: Option<ClientIdentity>,
    /// The name the brokers' certificates must carry; by default the host of each broker's
    /// address (a DNS name or an IP address).
    pub server_name: Option<String>,
}

/// A client certificate with its key, both PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A user name and password. Debug output shows the user name only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ClientTls {
    /// TLS trusting the CA certificates of the PEM file `ca`, presenting the certificate and
    /// key of the PEM files `identity` when given.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming a file that cannot be read or holds no PEM block.
    pub fn from_files(
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self> {
        let read = |path: &std::path::Path, what: &str| -> Result<Vec<u8>> {
            let pem = std::fs::read(path).map_err(|error| {
                Error::InvalidArgument(format!("{what} {}: {error}", path.display()))
            })?;
            if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(Error::InvalidArgument(format!(
                    "{what} {} holds no PEM block (-----BEGIN ...)",
                    path.display()
                )));
            }
            Ok(pem)
        };
        let identity = match identity {
            Some((cert, key)) => Some(ClientIdentity {
                cert_pem: read(cert, "TLS client certificate")?,
                key_pem: read(key, "TLS client key")?,
            }),
            None => None,
        };
        Ok(Self {
            ca_pem: read(ca, "TLS CA file")?,
            identity,
            server_name: None,
        })
    }
}

impl Credentials {
    /// The `authorization` metadata value: `Basic base64(user:password)`, marked sensitive so
    /// HTTP/2 header compression never indexes it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty user name or password, or a user name with `:`.
    fn authorization(&self) -> Result<MetadataValue<Ascii>> {
        use base64::Engine as _;
        if self.user.is_empty() || self.user.contains(':') {
            return Err(Error::InvalidArgument(format!(
                "user name {:?} must be non-empty and without ':'",
                self.user
            )));
        }
        if self.password.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the password of user {:?} is empty",
                self.user
            )));
        }
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let mut value: MetadataValue<Ascii> = format!("Basic {encoded}")
            .parse()
            .map_err(|_| Error::InvalidArgument("credentials are not valid metadata".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// A connection to one broker that carries the client's credentials on every call.
pub(crate) type Channel = InterceptedService<tonic::transport::Channel, CallCredentials>;

/// Adds the `authorization` metadata to every call, when the client has credentials.
#[derive(Clone)]
pub(crate) struct CallCredentials(Option<MetadataValue<Ascii>>);

impl CallCredentials {
    /// # Errors
    /// Credentials without TLS: a password is never sent in clear (brokers refuse password
    /// authentication without TLS anyway, but only once they have read it).
    fn new(config: &ClientConfig) -> Result<Self> {
        if config.credentials.is_some() && config.tls.is_none() {
            return Err(Error::InvalidArgument(
                "credentials are sent only over TLS: set the brokers' CA (tls) as well".to_string(),
            ));
        }
        Ok(Self(
            config
                .credentials
                .as_ref()
                .map(Credentials::authorization)
                .transpose()?,
        ))
    }
}

impl std::fmt::Debug for CallCredentials {
    /// Whether there are credentials, never their value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.0.is_some() {
            "Basic <redacted>"
        } else {
            "none"
        };
        f.debug_tuple("CallCredentials").field(&shown).finish()
    }
}

impl Interceptor for CallCredentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            // About 4 to 8 s of backoff in all: leadership moves within one or two seconds.
            routing_retries: 8,
            routing_backoff: Backoff::default(),
            tls: None,
            credentials: None,
        }
    }
}

/// The connections to one cluster and what the client knows of it. Cheap to clone: clones
/// share the connections (one HTTP/2 connection per broker, opened when first used,
/// reconnecting by itself) and the picture of the cluster. See [`crate::Client`] for where
/// each request goes.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    address: String,
    config: ClientConfig,
    /// What every channel adds to each call (credentials).
    credentials: CallCredentials,
    /// Channels by `HOST:PORT`. std Mutex: never held across `.await`.
    channels: Mutex<HashMap<String, Channel>>,
    /// std Mutex: never held across `.await`.
    metadata: Mutex<Metadata>,
    /// Held while a metadata refresh runs, so callers that need one wait for the same one.
    refreshing: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// Connects to the first reachable broker of `brokers` (see [`crate::Client::connect`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed list, [`Error::Connect`] when no broker can
    /// be reached.
    pub(crate) async fn connect(brokers: &str, config: ClientConfig) -> Result<Self> {
        let addresses = parse_brokers(brokers)?;
        let credentials = CallCredentials::new(&config)?;
        let mut failures = Vec::new();
        for address in &addresses {
            let endpoint = endpoint(address, &config)?;
            match endpoint.connect().await {
                Ok(channel) => {
                    let channel = InterceptedService::new(channel, credentials.clone());
                    let metadata = Metadata::new(address.clone(), addresses.clone());
                    return Ok(Self {
                        inner: Arc::new(Inner {
                            channels: Mutex::new(HashMap::from([(address.clone(), channel)])),
                            address: address.clone(),
                            config,
                            credentials,
                            metadata: Mutex::new(metadata),
                            refreshing: tokio::sync::Mutex::new(()),
                        }),
                    });
                }
                // With one broker the error's own text names it already.
                Err(error) if addresses.len() == 1 => failures.push(chain(&error)),
                Err(error) => failures.push(format!("{address}: {}", chain(&error))),
            }
        }
        Err(Error::Connect {
            address: brokers.to_owned(),
            reason: failures.join("; "),
        })
    }

    /// The `HOST:PORT` of the broker first connected to.
    pub(crate) fn address(&self) -> &str {
        &self.inner.address
    }

    /// The configuration the cluster handle was connected with.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn metadata(&self) -> std::sync::MutexGuard<'_, Metadata> {
        self.inner
            .metadata
            .lock()
            .expect("no panic while holding the lock")
    }

    /// The channel to `address`, made (not yet connected) on first use.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `address` is not a valid URI authority.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .expect("no panic while holding the lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = InterceptedService::new(
            endpoint(address, &self.inner.config)?.connect_lazy(),
            self.inner.credentials.clone(),
        );
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Where a request on `route` goes now, refreshing the metadata first when it was never
    /// read or a failure made it stale.
    pub(crate) async fn route(&self, route: &Route) -> String {
        self.refresh_if_needed(route).await;
        self.metadata().address(route, Instant::now())
    }

    /// The address for `route` from the metadata as it is, without refreshing.
    pub(crate) fn cached_route(&self, route: &Route) -> String {
        self.metadata().address(route, Instant::now())
    }

    /// Learns from an attempt on `route` at `address` that failed with `error`.
    pub(crate) fn note_error(&self, route: &Route, address: &str, error: &Error) -> Next {
        let next = self
            .metadata()
            .on_error(route, address, error, Instant::now());
        tracing::debug!(%error, ?route, address, ?next, "routed call failed");
        next
    }

    /// Refreshes the metadata when a request on `route` needs it (see
    /// [`Metadata::needs_refresh`]); callers that arrive during a refresh wait for it.
    pub(crate) async fn refresh_if_needed(&self, route: &Route) {
        if !self.metadata().needs_refresh(route, Instant::now()) {
            return;
        }
        let _refreshing = self.inner.refreshing.lock().await;
        {
            let mut metadata = self.metadata();
            let now = Instant::now();
            if !metadata.needs_refresh(route, now) {
                return;
            }
            metadata.refresh_started(now);
        }
        let views = self.cluster_views().await;
        let answered: Vec<&NodeView> = views.iter().filter(|view| view.info.is_ok()).collect();
        if answered.is_empty() {
            tracing::debug!(?views, "no broker answered ClusterInfo");
            return;
        }
        let merged = merge_cluster_views(&views);
        let single_node_address = match (&merged.nodes[..], &answered[..]) {
            ([_], [view]) => Some(view.address.as_str()),
            _ => None,
        };
        self.metadata().apply(&merged, single_node_address);
    }

    /// Asks every broker the client knows (the nodes of the cluster, the one it connected to,
    /// the broker list) for `ClusterInfo`, all at once, each for at most the request timeout.
    /// Views come back in the order the addresses were asked.
    pub(crate) async fn cluster_views(&self) -> Vec<NodeView> {
        let addresses = self.metadata().addresses();
        let limit = self.inner.config.request_timeout;
        let mut calls = tokio::task::JoinSet::new();
        for (index, address) in addresses.into_iter().enumerate() {
            let channel = self.channel(&address);
            calls.spawn(async move {
                let info = match channel {
                    Ok(channel) => {
                        unary(
                            limit,
                            AdminClient::new(channel).cluster_info(ClusterInfoRequest {}),
                        )
                        .await
                    }
                    Err(error) => Err(error),
                };
                (index, NodeView { address, info })
            });
        }
        let mut views: Vec<(usize, NodeView)> = calls.join_all().await.into_iter().collect();
        views.sort_by_key(|(index, _)| *index);
        views.into_iter().map(|(_, view)| view).collect()
    }

    /// Sends a unary call (or opens a stream) to where `route` says, following `NOT_LEADER`
    /// hints at once and retrying routing failures after a backoff, at most `retries` times.
    /// `call` makes one attempt on a channel, each attempt waiting at most `limit`. Returns
    /// the reply with the address that gave it.
    ///
    /// # Errors
    /// The last attempt's error, or the first that routing cannot help with.
    pub(crate) async fn call_at<T, F, Fut>(
        &self,
        route: &Route,
        limit: Duration,
        retries: u32,
        mut call: F,
    ) -> Result<(T, String)>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut failures = 0u32;
        let mut redirects = 0u32;
        let mut address = self.route(route).await;
        loop {
            let reply = match self.channel(&address) {
                Ok(channel) => unary(limit, call(channel)).await,
                Err(error) => Err(error),
            };
            let error = match reply {
                Ok(reply) => return Ok((reply, address)),
                Err(error) => error,
            };
            match self.note_error(route, &address, &error) {
                Next::Fail => return Err(error),
                Next::Redirect(hinted) if redirects < REDIRECTS_MAX => {
                    redirects += 1;
                    address = hinted;
                    continue;
                }
                Next::Redirect(_) | Next::Retry => {}
            }
            failures += 1;
            if failures > retries {
                return Err(error);
            }
            let delay = self
                .inner
                .config
                .routing_backoff
                .delay(failures, random_jitter());
            tokio::time::sleep(delay).await;
            redirects = 0;
            address = self.route(route).await;
        }
    }

    /// [`Self::call_at`] with the configured retries, without the address.
    pub(crate) async fn call<T, F, Fut>(&self, route: &Route, limit: Duration, call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let retries = self.inner.config.routing_retries;
        let (reply, _) = self.call_at(route, limit, retries, call).await?;
        Ok(reply)
    }

    /// A consumer-groups call, on the controller leader; each attempt gets its own copy of
    /// `request`.
    pub(crate) async fn groups_call<R, T, F, Fut>(&self, request: &R, mut call: F) -> Result<T>
    where
        R: Clone,
        F: FnMut(GroupsClient<Channel>, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let limit = self.inner.config.request_timeout;
        self.call(&Route::Controller, limit, |channel| {
            call(GroupsClient::new(channel), request.clone())
        })
        .await
    }
}

/// A broker client on `channel`, accepting messages up to [`MESSAGE_BYTES_MAX`].
pub(crate) fn broker_client(channel: Channel) -> BrokerClient<Channel> {
    BrokerClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

fn endpoint(address: &str, config: &ClientConfig) -> Result<Endpoint> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|error| Error::InvalidArgument(format!("broker address {address}: {error}")))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .max_frame_size(strata_proto::CLIENT_FRAME_BYTES_MAX);
    let Some(tls) = &config.tls else {
        return Ok(endpoint);
    };
    let mut settings = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some(identity) = &tls.identity {
        settings = settings.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
    }
    if let Some(name) = &tls.server_name {
        settings = settings.domain_name(name.clone());
    }
    endpoint.tls_config(settings).map_err(|error| {
        Error::InvalidArgument(format!("TLS settings for {address}: {}", chain(&error)))
    })
}

/// Awaits a unary call for at most `limit` and unwraps its reply.
pub(crate) async fn unary<T>(
    limit: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::from_status(status)),
        Err(_) => Err(Error::Timeout {
            after_ms: limit.as_millis() as u64,
        }),
    }
}

/// Splits a comma-separated broker list into `HOST:PORT` addresses (an `http://` prefix is
/// accepted and dropped).
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty list or an entry without a port.
pub fn parse_brokers(list: &str) -> Result<Vec<String>> {
    let mut addresses = Vec::new();
    for entry in list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let address = entry
            .strip_prefix("http://")
            .or_else(|| entry.strip_prefix("https://"))
            .unwrap_or(entry);
        let address = address.strip_suffix('/').unwrap_or(address);
        let port = address.rsplit_once(':').map(|(_, port)| port);
        if port.is_none_or(|port| port.parse::<u16>().is_err()) {
            return Err(Error::InvalidArgument(format!(
                "broker {entry:?} is not HOST:PORT"
            )));
        }
        addresses.push(address.to_owned());
    }
    if addresses.is_empty() {
        return Err(Error::InvalidArgument("the broker list is empty".into()));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials become `Basic base64(user:password)` on every call, marked sensitive; Debug
    /// output never shows the password; bad credentials are refused before any call.
    #[test]
    fn credentials_travel_as_basic_metadata_and_never_print() {
        let credentials = Credentials {
            user: "alice".into(),
            password: "s3cret:x".into(),
        };
        let value = credentials.authorization().expect("valid");
        // base64("alice:s3cret:x")
        assert_eq!(value.to_str().expect("ascii"), "Basic YWxpY2U6czNjcmV0Ong=");
        assert!(value.is_sensitive());
        let plaintext = ClientConfig {
            credentials: Some(credentials.clone()),
            ..ClientConfig::default()
        };
        assert!(
            matches!(
                CallCredentials::new(&plaintext),
                Err(Error::InvalidArgument(_))
            ),
            "a password never goes out without TLS"
        );
        let config = ClientConfig {
            credentials: Some(credentials),
            tls: Some(ClientTls {
                ca_pem: Vec::new(),
                identity: None,
                server_name: None,
            }),
            ..ClientConfig::default()
        };
        let mut call = CallCredentials::new(&config).expect("valid");
        for shown in [format!("{config:?}"), format!("{call:?}")] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("YWxp"),
                "{shown}"
            );
        }
        let request = call.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(request.metadata().get("authorization"), Some(&value));
        let mut none = CallCredentials::new(&ClientConfig::default()).expect("no credentials");
        let request = none.call(tonic::Request::new(())).expect("intercepted");
        assert!(request.metadata().get("authorization").is_none());
        for (user, password) in [("", "x"), ("a:b", "x"), ("alice", "")] {
            let bad = Credentials {
                user: user.into(),
                password: password.into(),
            };
            assert!(
                matches!(bad.authorization(), Err(Error::InvalidArgument(_))),
                "{user:?}"
            );
        }
    }

    /// Lists split on commas, trim spaces, drop an http:// prefix, and need a port.
    #[test]
    fn broker_lists() {
        assert_eq!(
            parse_brokers("127.0.0.1:9092").expect("valid"),
            ["127.0.0.1:9092"]
        );
        assert_eq!(
            parse_brokers(" a:1, http://b:2/ ,,[::1]:3").expect("valid"),
            ["a:1", "b:2", "[::1]:3"]
        );
        for invalid in ["", " , ", "localhost", "host:port", "host:99999"] {
            assert!(parse_brokers(invalid).is_err(), "{invalid:?}");
        }
        assert_eq!(parse_brokers("https://a:1").expect("valid"), ["a:1"]);
    }

    /// TLS files that cannot be read or hold no PEM are named in the error.
    #[test]
    fn tls_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("strata-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.pem");
        let junk = dir.join("junk.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        std::fs::write(&junk, "not pem").expect("write");
        let missing = dir.join("missing.pem");
        for (ca_path, identity, named) in [
            (&missing, None, &missing),
            (&junk, None, &junk),
            (&ca, Some((missing.as_path(), ca.as_path())), &missing),
        ] {
            let error = ClientTls::from_files(ca_path, identity).expect_err("refused");
            assert!(
                matches!(&error, Error::InvalidArgument(m) if m.contains(&named.display().to_string())),
                "{error}"
            );
        }
        let tls = ClientTls::from_files(&ca, None).expect("readable");
        assert!(tls.identity.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
