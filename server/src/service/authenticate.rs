//! # Authenticate: who every request is from
//!
//! A tower layer on the whole gRPC server ([`AuthenticateLayer`]). For each request it looks
//! up the method's [`Rule`]; a path without one is refused. For every rule but
//! [`Rule::Open`] and [`Rule::Node`] it finds the [`Principal`] and puts it in the request's
//! extensions, in this order:
//! 1. a verified certificate naming `node-<id>.strata` ([`CertIdentity::Node`]):
//!    `Principal::Node(id)`;
//! 2. with `password` on and an `authorization: Basic base64(user:password)` metadata entry:
//!    `User:<user>` once the password matches the user's stored SCRAM credential (the
//!    comparison is constant-time; a successful check is cached, see [`CredentialCache`]);
//! 3. with `mtls` on, a verified client certificate ([`CertIdentity::User`]): `User:<CN>`;
//! 4. with authentication `none`: `Principal::Anonymous`.
//!
//! [`Rule::Node`] methods (the peer service, which checks the node certificate itself) need,
//! with authentication on, a node certificate here too.
//!
//! Anything else is UNAUTHENTICATED with a message saying what this node accepts. A failed
//! password is logged (peer address and user name, never the password) and answered after a
//! delay that grows with the failures from the same source address ([`Slowdown`]).
//!
//! The layer also checks the rules that need no request body: [`Rule::Cluster`] and
//! [`Rule::IdempotentWrite`]; handlers check topic and group rules ([`super::access`]).
//!
//! The connection's facts come from the listener's [`ConnectionInfo`]; a connection without
//! one (a plain TCP listener) has no certificate, and its address comes from tonic's
//! `TcpConnectInfo` when present.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::{Service, http};
use tonic::transport::server::TcpConnectInfo;

use super::access::{Access, Rule, rule};
use super::status::status;
use crate::broker::{Broker, BrokerError};
use crate::config::Authentication;
use crate::security::acl::{CLUSTER_RESOURCE_NAME, Policy, ResourceType};
use crate::security::scram::{self, ScramCredential};
use crate::security::{CertIdentity, ConnectionInfo, Principal};

/// The first delay before answering a failed password from a source.
pub const FAILURE_DELAY_MIN: Duration = Duration::from_millis(100);
/// The longest delay; each failure doubles the delay up to it.
pub const FAILURE_DELAY_MAX: Duration = Duration::from_secs(5);
/// A source with no failure for this long starts again from [`FAILURE_DELAY_MIN`].
pub const FAILURE_QUIET: Duration = Duration::from_secs(60);
/// Most sources the slowdown table remembers; beyond it the longest quiet is forgotten.
pub const FAILURE_SOURCES_MAX: usize = 4096;
/// Most users whose last verified password is cached.
pub const CREDENTIAL_CACHE_ENTRIES_MAX: usize = 4096;
/// Longest `authorization` metadata value read (a user name of 255 bytes and a password of
/// 1024, base64-encoded, with the scheme).
const AUTHORIZATION_BYTES_MAX: usize = 2048;

/// Parses an `authorization` metadata value `Basic base64(user:password)` into the user name
/// and password (the password may hold `:`; the user name cannot).
///
/// # Errors
/// What is wrong with the value, without repeating it (it may hold a password).
pub fn parse_basic(value: &[u8]) -> Result<(String, String), String> {
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(format!(
            "the authorization value is {} bytes, at most {AUTHORIZATION_BYTES_MAX} are read",
            value.len()
        ));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| "the authorization value is not text".to_string())?;
    let (scheme, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or("the authorization value must be `Basic <base64(user:password)>`")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(format!(
            "the authorization scheme is {scheme:?}; this node takes `Basic`"
        ));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the Basic credentials are not valid base64".to_string())?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| "the Basic credentials are not UTF-8 text".to_string())?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("the Basic credentials must be `user:password` (no ':' found)")?;
    if user.is_empty() || password.is_empty() {
        return Err("the Basic credentials have an empty user name or password".to_string());
    }
    Ok((user.to_string(), password.to_string()))
}

/// Failed attempts per source address, and the delay before the next failure is answered:
/// [`FAILURE_DELAY_MIN`] doubling to [`FAILURE_DELAY_MAX`], forgotten after
/// [`FAILURE_QUIET`]. Time is passed in. `None` is the source of connections whose address
/// is unknown (they share one entry).
#[derive(Debug, Default)]
pub struct Slowdown {
    sources: HashMap<Option<IpAddr>, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Slowdown {
    /// Records a failure from `source` at `now`; returns how long to wait before answering it.
    pub fn record_failure(&mut self, source: Option<IpAddr>, now: Instant) -> Duration {
        if self.sources.len() >= FAILURE_SOURCES_MAX && !self.sources.contains_key(&source) {
            self.sources
                .retain(|_, failures| now.saturating_duration_since(failures.last) < FAILURE_QUIET);
            if self.sources.len() >= FAILURE_SOURCES_MAX
                && let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, failures)| failures.last)
                    .map(|(source, _)| *source)
            {
                self.sources.remove(&oldest);
            }
        }
        let failures = self.sources.entry(source).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(failures.last) >= FAILURE_QUIET {
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        let count = failures.count;
        assert!(self.sources.len() <= FAILURE_SOURCES_MAX);
        Self::delay(count)
    }

    /// The delay of the `count`-th failure in a row (from 1).
    fn delay(count: u32) -> Duration {
        let doublings = count.saturating_sub(1).min(16);
        FAILURE_DELAY_MIN
            .saturating_mul(1 << doublings)
            .min(FAILURE_DELAY_MAX)
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// The last password each user proved, remembered as an HMAC under a key drawn at process
/// start (so the cache never holds a password, nor anything that can be checked against one
/// elsewhere), valid only while the user's stored credential is the one it was checked
/// against: a new password or a deleted user invalidates it. Spares PBKDF2 on every call of
/// a client that sends the same password each time. At most
/// [`CREDENTIAL_CACHE_ENTRIES_MAX`] users.
pub struct CredentialCache {
    key: hmac::Key,
    entries: HashMap<String, CachedProof>,
}

struct CachedProof {
    password_mac: Vec<u8>,
    /// The stored credential's StoredKey and salt when the password was checked.
    stored_key: Vec<u8>,
    salt: Vec<u8>,
}

impl CredentialCache {
    /// # Errors
    /// The system's random source failed.
    pub fn new() -> Result<Self, String> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "the system random source failed".to_string())?;
        Ok(Self {
            key,
            entries: HashMap::new(),
        })
    }

    fn mac(&self, password: &str) -> Vec<u8> {
        hmac::sign(&self.key, password.as_bytes()).as_ref().to_vec()
    }

    /// Whether `password` is the one last verified for `user` against `credential`.
    pub fn verified(&self, user: &str, password: &str, credential: &ScramCredential) -> bool {
        self.entries.get(user).is_some_and(|proof| {
            proof.stored_key == credential.stored_key
                && proof.salt == credential.salt
                && scram::constant_time_eq(&proof.password_mac, &self.mac(password))
        })
    }

    /// Remembers that `password` matched `credential` for `user`.
    pub fn insert(&mut self, user: &str, password: &str, credential: &ScramCredential) {
        if self.entries.len() >= CREDENTIAL_CACHE_ENTRIES_MAX
            && !self.entries.contains_key(user)
            && let Some(evicted) = self.entries.keys().next().cloned()
        {
            // Any entry: a evicted user only pays one PBKDF2 again.
            self.entries.remove(&evicted);
        }
        let proof = CachedProof {
            password_mac: self.mac(password),
            stored_key: credential.stored_key.clone(),
            salt: credential.salt.clone(),
        };
        self.entries.insert(user.to_string(), proof);
        assert!(self.entries.len() <= CREDENTIAL_CACHE_ENTRIES_MAX);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The node's authentication settings and state, shared by every connection.
pub struct Authenticator {
    methods: Authentication,
    policy: Arc<Policy>,
    broker: watch::Receiver<Option<Arc<Broker>>>,
    // std Mutexes: never held across `.await`.
    cache: Mutex<CredentialCache>,
    slowdown: Mutex<Slowdown>,
}

/// What the layer learnt of a request before letting it through.
struct Admitted {
    principal: Option<Principal>,
}

impl Authenticator {
    /// # Errors
    /// The system's random source failed (the cache's key).
    pub fn new(
        methods: Authentication,
        policy: Arc<Policy>,
        broker: watch::Receiver<Option<Arc<Broker>>>,
    ) -> Result<Self, String> {
        Ok(Self {
            methods,
            policy,
            broker,
            cache: Mutex::new(CredentialCache::new()?),
            slowdown: Mutex::new(Slowdown::default()),
        })
    }

    /// What this node accepts, for UNAUTHENTICATED messages.
    fn accepted(&self) -> &'static str {
        match (self.methods.mtls, self.methods.password) {
            (true, true) => {
                "this node accepts a client certificate signed by its client CA, or a user name \
                 and password in the `authorization: Basic base64(user:password)` metadata over \
                 TLS"
            }
            (true, false) => "this node accepts a client certificate signed by its client CA",
            (false, true) => {
                "this node accepts a user name and password in the `authorization: Basic \
                 base64(user:password)` metadata over TLS"
            }
            (false, false) => "this node does not require authentication",
        }
    }

    fn unauthenticated(&self, why: &str) -> Status {
        status(BrokerError::AuthenticationFailed(format!(
            "{why}; {}",
            self.accepted()
        )))
    }

    fn broker(&self) -> Result<Arc<Broker>, Status> {
        self.broker.borrow().clone().ok_or_else(|| {
            status(BrokerError::Unavailable(
                "the node is starting: users and ACLs not loaded yet: retry shortly".to_string(),
            ))
        })
    }

    /// Decides a request: its principal, or the status that answers it.
    async fn admit(
        &self,
        path: &str,
        authorization: Option<Vec<u8>>,
        connection: &ConnectionInfo,
    ) -> Result<Admitted, Status> {
        let Some(rule) = rule(path) else {
            return Err(status(BrokerError::AuthorizationFailed {
                principal: "any principal".to_string(),
                operation: "call".to_string(),
                resource: format!("method {path:?} (it has no access rule, so it is refused)"),
            }));
        };
        if rule == Rule::Open {
            return Ok(Admitted { principal: None });
        }
        if rule == Rule::Node {
            // The peer service checks the node itself; with authentication on, the layer
            // also refuses a caller without a node certificate, so a peer method that lacks
            // its own check (a new one) is not open to clients.
            return match connection.certificate {
                Some(CertIdentity::Node(id)) => Ok(Admitted {
                    principal: Some(Principal::Node(id)),
                }),
                _ if !self.methods.any() => Ok(Admitted { principal: None }),
                _ => Err(status(BrokerError::AuthenticationFailed(format!(
                    "{path} is for cluster nodes: it needs a certificate signed by the peer CA \
                     naming node-<id>.strata"
                )))),
            };
        }
        let principal = self.principal(authorization, connection).await?;
        let access = Access::new(principal.clone(), self.policy.clone());
        match rule {
            Rule::Cluster(operation) if self.policy.enabled => {
                access
                    .check(
                        &*self.broker()?,
                        ResourceType::Cluster,
                        CLUSTER_RESOURCE_NAME,
                        operation,
                    )
                    .map_err(status)?;
            }
            Rule::IdempotentWrite if self.policy.enabled => {
                access.idempotent_write(&*self.broker()?).map_err(status)?;
            }
            _ => {}
        }
        Ok(Admitted {
            principal: Some(principal),
        })
    }

    /// The principal of a request (see the module doc for the order).
    async fn principal(
        &self,
        authorization: Option<Vec<u8>>,
        connection: &ConnectionInfo,
    ) -> Result<Principal, Status> {
        if let Some(CertIdentity::Node(id)) = connection.certificate {
            return Ok(Principal::Node(id));
        }
        if self.methods.password
            && let Some(value) = authorization
        {
            let (user, password) = match parse_basic(&value) {
                Ok(parsed) => parsed,
                Err(why) => {
                    return Err(self
                        .failed(connection.remote, None, self.unauthenticated(&why))
                        .await);
                }
            };
            return self.verify_password(&user, &password, connection).await;
        }
        if self.methods.mtls
            && let Some(CertIdentity::User(name)) = &connection.certificate
        {
            return Ok(Principal::User(name.clone()));
        }
        if !self.methods.any() {
            return Ok(Principal::Anonymous);
        }
        Err(self.unauthenticated("the request carries no credentials this node accepts"))
    }

    async fn verify_password(
        &self,
        user: &str,
        password: &str,
        connection: &ConnectionInfo,
    ) -> Result<Principal, Status> {
        let broker = self.broker()?;
        let credential = broker.user_credential(user);
        if let Some(credential) = &credential
            && self
                .cache
                .lock()
                .expect("no panic while holding the lock")
                .verified(user, password, credential)
        {
            return Ok(Principal::User(user.to_string()));
        }
        // An unknown user costs the same PBKDF2 as a wrong password, so the time of the answer
        // does not say which names exist.
        let checked = credential
            .clone()
            .or_else(|| unknown_user_credential().cloned());
        let matched = match checked {
            Some(checked) => {
                let password = password.to_string();
                tokio::task::spawn_blocking(move || checked.verify(&password))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        match credential {
            Some(credential) if matched => {
                self.cache
                    .lock()
                    .expect("no panic while holding the lock")
                    .insert(user, password, &credential);
                Ok(Principal::User(user.to_string()))
            }
            _ => {
                let refusal =
                    self.unauthenticated(&format!("wrong user name or password (user {user:?})"));
                Err(self.failed(connection.remote, Some(user), refusal).await)
            }
        }
    }

    /// Logs a failed attempt and waits the source's delay before it is answered.
    async fn failed(
        &self,
        remote: Option<SocketAddr>,
        user: Option<&str>,
        refusal: Status,
    ) -> Status {
        let delay = self
            .slowdown
            .lock()
            .expect("no panic while holding the lock")
            .record_failure(remote.map(|address| address.ip()), Instant::now());
        tracing::warn!(
            remote = ?remote,
            user = user.unwrap_or("(unreadable credentials)"),
            delay_ms = delay.as_millis() as u64,
            "authentication failed"
        );
        tokio::time::sleep(delay).await;
        refusal
    }
}

/// A credential no password is tested against successfully in practice (its password is
/// random and dropped): what an unknown user's password is checked against.
fn unknown_user_credential() -> Option<&'static ScramCredential> {
    static CREDENTIAL: OnceLock<Option<ScramCredential>> = OnceLock::new();
    CREDENTIAL
        .get_or_init(|| {
            let mut password = [0u8; 24];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut password).ok()?;
            ScramCredential::new(&STANDARD.encode(password), scram::ITERATIONS_DEFAULT).ok()
        })
        .as_ref()
}

/// The layer that puts [`Authenticate`] in front of every service of the server.
#[derive(Clone)]
pub struct AuthenticateLayer(Arc<Authenticator>);

impl AuthenticateLayer {
    pub fn new(authenticator: Authenticator) -> Self {
        Self(Arc::new(authenticator))
    }
}

impl<S> tower_layer::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            authenticator: self.0.clone(),
        }
    }
}

/// The services of the server behind authentication (see the module doc).
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service answers this request; its clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        let path = request.uri().path().to_string();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|value| value.as_bytes().to_vec());
        let mut connection = request
            .extensions()
            .get::<ConnectionInfo>()
            .cloned()
            .unwrap_or_default();
        if connection.remote.is_none() {
            connection.remote = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
        }
        Box::pin(async move {
            match authenticator.admit(&path, authorization, &connection).await {
                Ok(admitted) => {
                    if let Some(principal) = admitted.principal {
                        request.extensions_mut().insert(principal);
                    }
                    inner.call(request).await
                }
                Err(refusal) => Ok(refusal.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(methods: &str, enabled: bool) -> Authenticator {
        let policy = Arc::new(Policy {
            enabled,
            superusers: Default::default(),
        });
        let (_, broker) = watch::channel(None);
        Authenticator::new(methods.parse().expect("methods"), policy, broker).expect("random")
    }

    fn connection(certificate: Option<CertIdentity>) -> ConnectionInfo {
        ConnectionInfo {
            remote: None,
            tls: certificate.is_some(),
            certificate,
        }
    }

    /// The layer's decision for each kind of rule and credential, without a broker (a node
    /// that has not loaded its users answers a password with UNAVAILABLE).
    #[test]
    fn the_layer_admits_by_rule_and_credentials() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let admit =
            |methods: &str, path: &str, header: Option<&str>, cert: Option<CertIdentity>| {
                let authenticator = authenticator(methods, true);
                runtime.block_on(async {
                    authenticator
                        .admit(
                            path,
                            header.map(|h| h.as_bytes().to_vec()),
                            &connection(cert),
                        )
                        .await
                        .map(|admitted| admitted.principal)
                        .map_err(|status| status.code())
                })
            };
        let produce = "/strata.v1.Broker/Produce";
        let raft = "/strata.v1.Peer/Raft";
        let health = "/grpc.health.v1.Health/Check";
        let user = || Some(CertIdentity::User("carol".into()));
        let node = || Some(CertIdentity::Node(2));
        use tonic::Code;
        let cases = [
            // Health is open whatever the settings.
            (admit("password", health, None, None), Ok(None)),
            // A path without a rule is refused.
            (
                admit("none", "/strata.v1.Broker/Nope", None, None),
                Err(Code::PermissionDenied),
            ),
            (
                admit("none", produce, None, None),
                Ok(Some(Principal::Anonymous)),
            ),
            (
                admit("password", produce, None, None),
                Err(Code::Unauthenticated),
            ),
            (
                admit("mtls", produce, None, None),
                Err(Code::Unauthenticated),
            ),
            (
                admit("password", produce, Some("Basic !!"), None),
                Err(Code::Unauthenticated),
            ),
            // A password needs the users: not loaded yet.
            (
                admit("password", produce, Some("Basic YTpi"), None),
                Err(Code::Unavailable),
            ),
            (
                admit("mtls", produce, None, user()),
                Ok(Some(Principal::User("carol".into()))),
            ),
            // A client certificate is not a principal unless mtls is on.
            (
                admit("password", produce, None, user()),
                Err(Code::Unauthenticated),
            ),
            (
                admit("password", produce, None, node()),
                Ok(Some(Principal::Node(2))),
            ),
            // Peer methods: a node certificate when authentication is on.
            (admit("none", raft, None, None), Ok(None)),
            (
                admit("mtls", raft, None, user()),
                Err(Code::Unauthenticated),
            ),
            (
                admit("password", raft, Some("Basic YTpi"), None),
                Err(Code::Unauthenticated),
            ),
            (
                admit("mtls", raft, None, node()),
                Ok(Some(Principal::Node(2))),
            ),
        ];
        for (i, (got, expected)) in cases.into_iter().enumerate() {
            assert_eq!(got, expected, "case {i}");
        }
    }

    fn basic(text: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(text)).into_bytes()
    }

    #[test]
    fn basic_headers_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_basic(&basic("alice:s3cret")),
            Ok(("alice".to_string(), "s3cret".to_string()))
        );
        // The password may hold ':'; the scheme is case-insensitive.
        let mut lower = basic("alice:a:b");
        lower[0] = b'b';
        assert_eq!(
            parse_basic(&lower),
            Ok(("alice".to_string(), "a:b".to_string()))
        );
        let cases: &[(Vec<u8>, &str)] = &[
            (b"Basic !!!not-base64".to_vec(), "base64"),
            (basic("alice-no-colon"), "no ':'"),
            (basic(""), "Basic <base64"),
            (basic(":password"), "empty"),
            (basic("alice:"), "empty"),
            (b"Bearer abc".to_vec(), "scheme"),
            (b"Basic".to_vec(), "Basic <base64"),
            (b"".to_vec(), "Basic <base64"),
            (vec![0xff, 0xfe], "not text"),
            (
                format!("Basic {}", "A".repeat(4000)).into_bytes(),
                "at most",
            ),
        ];
        for (value, expected) in cases {
            let error = parse_basic(value).expect_err("refused");
            assert!(error.contains(expected), "{value:?}: {error}");
            assert!(!error.contains("password\""), "never echoes: {error}");
        }
        let secret = parse_basic(&basic("alice")).expect_err("refused");
        assert!(
            !secret.contains("alice"),
            "the value is not repeated: {secret}"
        );
    }

    #[test]
    fn failures_slow_a_source_down_and_are_forgotten_after_a_quiet_minute() {
        let mut slowdown = Slowdown::default();
        let start = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let delays: Vec<u64> = (0..8)
            .map(|i| {
                slowdown
                    .record_failure(a, start + Duration::from_secs(i))
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Another source is not slowed by a's failures.
        assert_eq!(slowdown.record_failure(b, start), FAILURE_DELAY_MIN);
        // A quiet minute after its last failure, a starts again from the first delay.
        let later = start + Duration::from_secs(7) + FAILURE_QUIET;
        assert_eq!(slowdown.record_failure(a, later), FAILURE_DELAY_MIN);
        assert_eq!(
            slowdown.record_failure(a, later + Duration::from_secs(1)),
            FAILURE_DELAY_MIN * 2
        );
    }

    #[test]
    fn the_slowdown_table_is_bounded() {
        let mut slowdown = Slowdown::default();
        let start = Instant::now();
        for i in 0..(FAILURE_SOURCES_MAX as u32 + 100) {
            let source = Some(IpAddr::from(i.to_be_bytes()));
            slowdown.record_failure(source, start + Duration::from_millis(u64::from(i)));
            assert!(slowdown.len() <= FAILURE_SOURCES_MAX);
        }
        assert_eq!(slowdown.len(), FAILURE_SOURCES_MAX);
        // The newest source is remembered: its second failure waits longer.
        let newest = Some(IpAddr::from(
            (FAILURE_SOURCES_MAX as u32 + 99).to_be_bytes(),
        ));
        assert_eq!(
            slowdown.record_failure(newest, start + Duration::from_secs(10)),
            FAILURE_DELAY_MIN * 2
        );
    }

    #[test]
    fn the_credential_cache_holds_only_the_verified_password_of_the_current_credential() {
        let mut cache = CredentialCache::new().expect("random");
        let first = ScramCredential::new("one", scram::ITERATIONS_DEFAULT).expect("credential");
        assert!(!cache.verified("alice", "one", &first));
        cache.insert("alice", "one", &first);
        assert!(cache.verified("alice", "one", &first));
        assert!(!cache.verified("alice", "two", &first), "another password");
        assert!(!cache.verified("bob", "one", &first), "another user");
        // A changed password (a new credential, new salt) invalidates the entry, even for the
        // old password and even if the new password is the same text.
        let second = ScramCredential::new("one", scram::ITERATIONS_DEFAULT).expect("credential");
        assert!(!cache.verified("alice", "one", &second));
        // Bounded.
        for i in 0..CREDENTIAL_CACHE_ENTRIES_MAX + 10 {
            cache.insert(&format!("user-{i}"), "one", &first);
            assert!(cache.len() <= CREDENTIAL_CACHE_ENTRIES_MAX);
        }
    }
}
