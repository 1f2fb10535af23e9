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
//! The [`Authenticator`] is the node's one password checker: the Kafka listener's SASL uses
//! the same instance ([`Authenticator::check_password`] for PLAIN,
//! [`Authenticator::scram_credential`] for SCRAM-SHA-256, [`Authenticator::record_failure`]),
//! so the cache, the slowdown and the PBKDF2 permits are shared by both frontends.
//!
//! The connection's facts come from the listener's [`ConnectionInfo`]; a connection without
//! one (a plain TCP listener) has no certificate, and its address comes from tonic's
//! `TcpConnectInfo` when present.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::watch;
use tonic::Status;
use tonic::codegen::{Service, http};
use tonic::transport::server::TcpConnectInfo;

use super::access::{Access, Rule, rule};
use super::status::status;
use crate::broker::{Broker, BrokerError};
use crate::config::Authentication;
use crate::controller::security::validate_user_name;
use crate::security::acl::{CLUSTER_RESOURCE_NAME, Policy, ResourceType};
use crate::security::password::{CredentialCache, Slowdown, parse_basic};
use crate::security::scram::{self, ScramCredential};
use crate::security::{CertIdentity, ConnectionInfo, Principal};

/// The node's authentication settings and state, shared by every connection.
pub struct Authenticator {
    methods: Authentication,
    policy: Arc<Policy>,
    broker: watch::Receiver<Option<Arc<Broker>>>,
    // std Mutexes: never held across `.await`.
    cache: Mutex<CredentialCache>,
    slowdown: Mutex<Slowdown>,
    /// Permits for PBKDF2 checks (see [`PASSWORD_CHECKS_MAX`]).
    password_checks: tokio::sync::Semaphore,
    /// Derives the made-up SCRAM credentials of unknown users (see
    /// [`Authenticator::scram_credential`]).
    unknown_user_key: ring::hmac::Key,
}

/// Most password checks (PBKDF2, a few ms of CPU each) running at once; more wait their turn.
/// The slowdown delays a failed answer but not its work, so without this a flood of wrong
/// passwords over many streams would keep every core (and blocking thread) busy.
pub const PASSWORD_CHECKS_MAX: usize = 2;

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
            password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS_MAX),
            unknown_user_key: ring::hmac::Key::generate(
                ring::hmac::HMAC_SHA256,
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|_| "the system random source failed".to_string())?,
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
        self.broker_ready().map_err(status)
    }

    fn broker_ready(&self) -> Result<Arc<Broker>, BrokerError> {
        self.broker.borrow().clone().ok_or_else(|| {
            BrokerError::Unavailable(
                "the node is starting: users and ACLs not loaded yet: retry shortly".to_string(),
            )
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

    /// For another frontend speaking for a `strata.v1` method (the HTTP JSON API): the
    /// principal of a call to `path` with `authorization` (an `Authorization` header's value)
    /// on `connection`, after the same checks as the layer's; `None` for an open method.
    ///
    /// # Errors
    /// The status the gRPC layer would answer.
    pub(crate) async fn admit_path(
        &self,
        path: &str,
        authorization: Option<Vec<u8>>,
        connection: &ConnectionInfo,
    ) -> Result<Option<Principal>, Status> {
        self.admit(path, authorization, connection)
            .await
            .map(|admitted| admitted.principal)
    }

    /// The principal of a request that names no method (the HTTP `/metrics`): found as for any
    /// authenticated method.
    ///
    /// # Errors
    /// UNAUTHENTICATED, as the layer answers it.
    pub(crate) async fn principal_of(
        &self,
        authorization: Option<Vec<u8>>,
        connection: &ConnectionInfo,
    ) -> Result<Principal, Status> {
        self.principal(authorization, connection).await
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
            // A name no user can have is refused before it is looked up or logged.
            let parsed = parse_basic(&value)
                .and_then(|(user, password)| validate_user_name(&user).map(|()| (user, password)));
            let (user, password) = match parsed {
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
        match self.check_password(user, password, connection.remote).await {
            Ok(Some(principal)) => Ok(principal),
            Ok(None) => {
                Err(self.unauthenticated(&format!("wrong user name or password (user {user:?})")))
            }
            Err(error) => Err(status(error)),
        }
    }

    /// Checks `user`'s `password` against the stored SCRAM credential, for any frontend (gRPC
    /// Basic, the Kafka listener's SASL/PLAIN): a cached success first, else PBKDF2 under one
    /// of the node's [`PASSWORD_CHECKS_MAX`] permits, the same work for an unknown user as
    /// for a wrong password. `Ok(None)`: wrong user or password, already logged and delayed
    /// by the source's slowdown.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] while the node has not loaded its users, or stops.
    pub async fn check_password(
        &self,
        user: &str,
        password: &str,
        remote: Option<SocketAddr>,
    ) -> Result<Option<Principal>, BrokerError> {
        let broker = self.broker_ready()?;
        let credential = broker.user_credential(user);
        if let Some(credential) = &credential
            && self
                .cache
                .lock()
                .expect("no panic while holding the lock")
                .verified(user, password, credential)
        {
            return Ok(Some(Principal::User(user.to_string())));
        }
        // An unknown user costs the same PBKDF2 as a wrong password, so the time of the answer
        // does not say which names exist.
        let checked = credential
            .clone()
            .or_else(|| unknown_user_credential().cloned());
        let matched = match checked {
            Some(checked) => {
                // Never closed: an error would only mean no permit, and then no check.
                let Ok(_permit) = self.password_checks.acquire().await else {
                    return Err(BrokerError::Unavailable("the node is stopping".to_string()));
                };
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
                Ok(Some(Principal::User(user.to_string())))
            }
            _ => {
                self.record_failure(remote, Some(user)).await;
                Ok(None)
            }
        }
    }

    /// The SCRAM-SHA-256 credential a SASL/SCRAM exchange runs against for `user`, and
    /// whether the user exists. An unknown user gets a made-up credential whose salt is
    /// derived from the name under a key drawn at process start (so asking twice gives the
    /// same salt, as for a real user) with the default iteration count: the server's first
    /// message does not say which names exist, and no proof matches it in practice (the
    /// caller refuses an unknown user whatever the proof).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] while the node has not loaded its users.
    pub fn scram_credential(&self, user: &str) -> Result<(ScramCredential, bool), BrokerError> {
        let broker = self.broker_ready()?;
        if let Some(credential) = broker.user_credential(user) {
            return Ok((credential, true));
        }
        let derive = |label: &str| {
            ring::hmac::sign(
                &self.unknown_user_key,
                format!("{label}\0{user}").as_bytes(),
            )
            .as_ref()
            .to_vec()
        };
        let mut salt = derive("salt");
        salt.truncate(16);
        let made_up = ScramCredential {
            salt,
            iterations: scram::ITERATIONS_DEFAULT,
            stored_key: derive("stored key"),
            server_key: derive("server key"),
        };
        Ok((made_up, false))
    }

    /// Logs a failed authentication from `remote` (with the user name, never the secret) and
    /// waits the source's delay ([`Slowdown`]) before returning, so the caller answers late.
    pub async fn record_failure(&self, remote: Option<SocketAddr>, user: Option<&str>) {
        let delay = self
            .slowdown
            .lock()
            .expect("no panic while holding the lock")
            .record_failure(remote.map(|address| address.ip()), Instant::now());
        tracing::warn!(
            remote = ?remote,
            user = ?user.unwrap_or("(unreadable credentials)"),
            delay_ms = delay.as_millis() as u64,
            "authentication failed"
        );
        tokio::time::sleep(delay).await;
    }

    /// Logs a failed attempt and waits the source's delay before it is answered.
    async fn failed(
        &self,
        remote: Option<SocketAddr>,
        user: Option<&str>,
        refusal: Status,
    ) -> Status {
        self.record_failure(remote, user).await;
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
    /// `authenticator` is shared with the node's other frontends (the Kafka listener's SASL),
    /// so the cache, the slowdown and the PBKDF2 permits are the node's, not one listener's.
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self(authenticator)
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
}
