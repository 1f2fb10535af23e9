//! # SASL: who a Kafka connection is, when passwords authenticate it
//!
//! With `--authentication password`, a Kafka connection without a client certificate that
//! names it must authenticate with SASL before anything but ApiVersions (Kafka's
//! `SASL_SSL`): SaslHandshake v1 picks the mechanism, then SaslAuthenticate (v0–1) carries
//! its messages (SaslHandshake v0 is advertised, as librdkafka requires, but refused with
//! UNSUPPORTED_VERSION: its raw SASL frames are not served). Mechanisms ([`MECHANISMS`]):
//! - `PLAIN` (RFC 4616): one message `authzid\0user\0password`, checked by the node's
//!   [`Authenticator`] exactly as gRPC's Basic credentials are (the cache of verified
//!   passwords, the per-source slowdown of failures, the node's PBKDF2 permits).
//! - `SCRAM-SHA-256` (RFC 5802, RFC 7677), in the form Kafka's clients speak it: client-first
//!   `n,,n=user,r=nonce`, server-first `r=nonce+server nonce,s=salt,i=iterations`,
//!   client-final `c=biws,r=nonce,p=proof`, server-final `v=signature`, against the user's
//!   stored credential ([`ScramCredential`]: the password never crosses the wire nor is
//!   stored). An unknown user gets a made-up salt that is stable per name, so the
//!   server-first message does not say which names exist.
//!
//! A failure answers SASL_AUTHENTICATION_FAILED with a message (after the source's
//! slowdown), and the connection closes, as Kafka does. A SASL request out of order (a
//! SaslAuthenticate before the handshake, a second handshake) answers ILLEGAL_SASL_STATE; an
//! unknown mechanism UNSUPPORTED_SASL_MECHANISM with the list. Once authenticated, SASL
//! requests answer ILLEGAL_SASL_STATE and the connection stays (sessions do not expire:
//! `session_lifetime_ms` is 0, so clients never re-authenticate).
//!
//! Passwords only over TLS, as on gRPC: the configuration refuses `password` without
//! `--tls-cert` (so the Kafka listener, which shares the node's TLS, always has it), and a
//! plaintext connection is offered no mechanism. No flag relaxes this: a password sent in
//! clear (PLAIN) or a SCRAM exchange open to a man in the middle would undo what the
//! credentials protect, and loopback-only setups can run without authentication.
//!
//! The state machine ([`Sasl`]) takes one request at a time: the connection loop runs SASL
//! requests in order, after the requests before them are answered, because they change who
//! the connection is.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use ring::digest;

use super::Frontend;
use super::context::{Refusal, decode};
use super::frame::{self, Request};
use crate::broker::BrokerError;
use crate::controller::security::validate_user_name;
use crate::security::scram::{ScramCredential, constant_time_eq, hmac_sha256};
use crate::security::{ConnectionInfo, Principal};
use crate::service::authenticate::Authenticator;

/// The mechanisms served, by their SASL names, as SaslHandshake lists them.
pub const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256"];

/// Largest request frame read while a connection is not authenticated, in bytes (Kafka's
/// `sasl.server.max.receive.size` default): whoever has not proved a password cannot make the
/// node read megabytes.
pub const UNAUTHENTICATED_REQUEST_BYTES_MAX: usize = 512 << 10;

/// Largest SASL message read, in bytes: a user name, a password of
/// [`PASSWORD_BYTES_MAX`](crate::security::scram::PASSWORD_BYTES_MAX) and SCRAM's attributes
/// fit with room to spare.
const AUTH_BYTES_MAX: usize = 4096;

/// Random bytes in the server's part of a SCRAM nonce (base64-encoded in the message).
const SERVER_NONCE_BYTES: usize = 24;

/// A SASL mechanism this listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
}

impl Mechanism {
    /// The mechanism named `name` (SASL names are case-sensitive; Kafka's too).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Self::Plain),
            "SCRAM-SHA-256" => Some(Self::ScramSha256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

/// Where a connection's SASL exchange is.
enum State {
    /// No handshake yet.
    Start,
    /// The handshake chose a mechanism; its first SaslAuthenticate comes next.
    Chosen(Mechanism),
    /// SCRAM: the server-first message went out; the client-final message comes next.
    Scram(Box<ScramServer>),
    /// Authenticated, or the connection authenticated otherwise (certificate, none needed).
    Done,
}

/// One connection's SASL exchange.
pub struct Sasl {
    state: State,
}

/// What the connection does after a SASL request.
#[derive(Debug)]
pub enum Outcome {
    /// Keep going (more of the exchange, or an out-of-order request answered).
    Continue,
    /// The connection is now this principal.
    Authenticated(Principal),
    /// Close the connection after writing the response, for this reason (logged).
    Close(String),
}

/// The response to a SASL request and what follows it.
#[derive(Debug)]
pub struct Answer {
    /// The whole response frame.
    pub response: Bytes,
    pub outcome: Outcome,
}

/// Whether `api_key` is one of the SASL APIs (handled in order, by [`Sasl`]).
pub fn is_sasl(api_key: i16) -> bool {
    api_key == ApiKey::SaslHandshake as i16 || api_key == ApiKey::SaslAuthenticate as i16
}

impl Sasl {
    /// `authenticated`: the connection already has its principal (a client certificate, or
    /// no authentication needed), so SASL requests are out of place.
    pub fn new(authenticated: bool) -> Self {
        Self {
            state: if authenticated {
                State::Done
            } else {
                State::Start
            },
        }
    }

    /// Handles a SaslHandshake or SaslAuthenticate request (already checked to be a served
    /// version).
    ///
    /// # Errors
    /// A [`Refusal`] when the body cannot be decoded or the response encoded: the connection
    /// closes.
    pub async fn handle(
        &mut self,
        frontend: &Frontend,
        connection: &ConnectionInfo,
        request: Request,
    ) -> Result<Answer, Refusal> {
        let version = request.api_version;
        let correlation_id = request.correlation_id;
        if request.api_key == ApiKey::SaslHandshake as i16 {
            let body: SaslHandshakeRequest = decode(ApiKey::SaslHandshake, version, request.body)?;
            let (body, outcome) = if version == 0 {
                // v0 would carry the mechanism's messages as raw frames, not SaslAuthenticate.
                (
                    SaslHandshakeResponse::default()
                        .with_error_code(ResponseError::UnsupportedVersion.code()),
                    Outcome::Close(
                        "SaslHandshake v0 (raw SASL tokens) is not served: use v1".to_string(),
                    ),
                )
            } else {
                self.handshake(frontend, connection, body.mechanism.as_str())
            };
            let response = frame::response(ApiKey::SaslHandshake, version, correlation_id, &body)?;
            return Ok(Answer { response, outcome });
        }
        let body: SaslAuthenticateRequest =
            decode(ApiKey::SaslAuthenticate, version, request.body)?;
        let (error, message, auth_bytes, outcome) = match self
            .authenticate(frontend, connection, &body.auth_bytes)
            .await
        {
            Ok(Step::Continue(bytes)) => (None, None, bytes, Outcome::Continue),
            Ok(Step::Authenticated(principal, bytes)) => {
                (None, None, bytes, Outcome::Authenticated(principal))
            }
            Err(Failure { code, message }) => (
                Some(code),
                Some(message.clone()),
                Vec::new(),
                if code == ResponseError::IllegalSaslState && matches!(self.state, State::Done) {
                    // Out of place after authentication: answered, the session goes on.
                    Outcome::Continue
                } else {
                    Outcome::Close(message)
                },
            ),
        };
        let body = SaslAuthenticateResponse::default()
            .with_error_code(error.map_or(0, |error| error.code()))
            .with_error_message(message.map(StrBytes::from_string))
            .with_auth_bytes(Bytes::from(auth_bytes))
            // Sessions never expire: clients do not re-authenticate (KIP-368).
            .with_session_lifetime_ms(0);
        let response = frame::response(ApiKey::SaslAuthenticate, version, correlation_id, &body)?;
        Ok(Answer { response, outcome })
    }

    fn handshake(
        &mut self,
        frontend: &Frontend,
        connection: &ConnectionInfo,
        requested: &str,
    ) -> (SaslHandshakeResponse, Outcome) {
        let offered: Vec<&str> = if frontend.authentication.password
            && connection.tls
            && frontend.authenticator().is_some()
        {
            MECHANISMS.to_vec()
        } else {
            Vec::new()
        };
        let response = |error: Option<ResponseError>| {
            SaslHandshakeResponse::default()
                .with_error_code(error.map_or(0, |error| error.code()))
                .with_mechanisms(
                    offered
                        .iter()
                        .map(|name| StrBytes::from_static_str(name))
                        .collect(),
                )
        };
        match self.state {
            State::Start => {}
            // Kafka answers a handshake on an authenticated connection this way and keeps it.
            State::Done => {
                return (
                    response(Some(ResponseError::IllegalSaslState)),
                    Outcome::Continue,
                );
            }
            State::Chosen(_) | State::Scram(_) => {
                return (
                    response(Some(ResponseError::IllegalSaslState)),
                    Outcome::Close("a second SaslHandshake during a SASL exchange".to_string()),
                );
            }
        }
        match Mechanism::parse(requested).filter(|m| offered.contains(&m.name())) {
            Some(mechanism) => {
                self.state = State::Chosen(mechanism);
                (response(None), Outcome::Continue)
            }
            None => {
                let why = if offered.is_empty() {
                    "SASL mechanism requested where this listener offers none (passwords are \
                     accepted only with --authentication password, over TLS)"
                        .to_string()
                } else {
                    format!(
                        "unsupported SASL mechanism {:?}: this listener offers {}",
                        truncated(requested),
                        MECHANISMS.join(", ")
                    )
                };
                (
                    response(Some(ResponseError::UnsupportedSaslMechanism)),
                    Outcome::Close(why),
                )
            }
        }
    }

    async fn authenticate(
        &mut self,
        frontend: &Frontend,
        connection: &ConnectionInfo,
        auth_bytes: &[u8],
    ) -> Result<Step, Failure> {
        let illegal = |why: &str| Failure {
            code: ResponseError::IllegalSaslState,
            message: why.to_string(),
        };
        let authenticator = match (&self.state, frontend.authenticator()) {
            (State::Done, _) => {
                return Err(illegal(
                    "SaslAuthenticate on a connection that is already authenticated",
                ));
            }
            (State::Start, _) => {
                return Err(illegal(
                    "SaslAuthenticate before a SaslHandshake chose a mechanism",
                ));
            }
            (_, None) => {
                return Err(illegal("this listener has no password authentication"));
            }
            (_, Some(authenticator)) => authenticator,
        };
        if auth_bytes.len() > AUTH_BYTES_MAX {
            return Err(self
                .failed(
                    authenticator,
                    connection,
                    None,
                    format!(
                        "a SASL message of {} bytes; at most {AUTH_BYTES_MAX} are read",
                        auth_bytes.len()
                    ),
                )
                .await);
        }
        // Whatever happens next, the exchange does not resume from where it was.
        let state = std::mem::replace(&mut self.state, State::Start);
        match state {
            State::Chosen(Mechanism::Plain) => {
                let (user, password) = match parse_plain(auth_bytes) {
                    Ok(parsed) => parsed,
                    Err(why) => {
                        return Err(self.failed(authenticator, connection, None, why).await);
                    }
                };
                match authenticator
                    .check_password(&user, &password, connection.remote)
                    .await
                {
                    Ok(Some(principal)) => {
                        self.state = State::Done;
                        Ok(Step::Authenticated(principal, Vec::new()))
                    }
                    // Already logged and slowed down.
                    Ok(None) => Err(Failure::authentication(format!(
                        "Authentication failed: invalid credentials with SASL mechanism PLAIN \
                         (user {user:?})"
                    ))),
                    Err(error) => Err(Failure::unavailable(&error)),
                }
            }
            State::Chosen(Mechanism::ScramSha256) => {
                let first = match ClientFirst::parse(auth_bytes) {
                    Ok(first) => first,
                    Err(why) => {
                        return Err(self.failed(authenticator, connection, None, why).await);
                    }
                };
                let (credential, known) = match authenticator.scram_credential(&first.user) {
                    Ok(found) => found,
                    Err(error) => return Err(Failure::unavailable(&error)),
                };
                let server_nonce = server_nonce().map_err(|()| {
                    Failure::unavailable(&BrokerError::Unavailable(
                        "the system random source failed".to_string(),
                    ))
                })?;
                let server = ScramServer::new(first, credential, known, &server_nonce);
                let server_first = server.server_first.clone().into_bytes();
                self.state = State::Scram(Box::new(server));
                Ok(Step::Continue(server_first))
            }
            State::Scram(server) => match server.finish(auth_bytes) {
                Ok(server_final) => {
                    self.state = State::Done;
                    Ok(Step::Authenticated(
                        Principal::User(server.user.clone()),
                        server_final.into_bytes(),
                    ))
                }
                Err(why) => {
                    let user = server.user.clone();
                    Err(self
                        .failed(authenticator, connection, Some(&user), why)
                        .await)
                }
            },
            // Answered before the state was taken.
            State::Start | State::Done => Err(illegal("SaslAuthenticate out of order")),
        }
    }

    /// Records a failed attempt (logged, slowed down per source) and the failure to answer.
    async fn failed(
        &self,
        authenticator: &Authenticator,
        connection: &ConnectionInfo,
        user: Option<&str>,
        why: String,
    ) -> Failure {
        authenticator.record_failure(connection.remote, user).await;
        Failure::authentication(why)
    }
}

/// One step of an exchange that went well: the server's message, and the principal when done.
enum Step {
    Continue(Vec<u8>),
    Authenticated(Principal, Vec<u8>),
}

/// Why a SASL request fails, as the response says it.
struct Failure {
    code: ResponseError,
    message: String,
}

impl Failure {
    fn authentication(message: String) -> Self {
        Self {
            code: ResponseError::SaslAuthenticationFailed,
            message,
        }
    }

    /// The node cannot check credentials now (users not loaded, stopping): the client
    /// reconnects and tries again.
    fn unavailable(error: &BrokerError) -> Self {
        Self {
            code: ResponseError::SaslAuthenticationFailed,
            message: format!("the node cannot check credentials now: {error}"),
        }
    }
}

/// At most 64 characters of client-provided text, for messages and logs.
fn truncated(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Parses PLAIN's `authzid\0user\0password` (RFC 4616). An authorization id, when given, must
/// be the user (Kafka's rule: no acting as someone else).
///
/// # Errors
/// What is wrong, never repeating the password.
pub fn parse_plain(message: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(message)
        .map_err(|_| "the SASL/PLAIN message is not UTF-8 text".to_string())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(
            "the SASL/PLAIN message must be `authzid NUL user NUL password` (RFC 4616)".to_string(),
        );
    };
    if user.is_empty() || password.is_empty() {
        return Err("the SASL/PLAIN message has an empty user name or password".to_string());
    }
    validate_user_name(user)?;
    if !authzid.is_empty() && authzid != user {
        return Err(format!(
            "the SASL/PLAIN authorization id {:?} differs from the user name {user:?}: a user \
             can only act as itself",
            truncated(authzid)
        ));
    }
    Ok((user.to_string(), password.to_string()))
}

/// SCRAM's client-first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// `n,,` or `y,,` (or with `a=user`): echoed, base64-encoded, in the client-final message.
    gs2_header: String,
    pub user: String,
    client_nonce: String,
    /// The message without its GS2 header (part of SCRAM's AuthMessage).
    bare: String,
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare` (RFC 5802 §7): `n,,n=user,r=nonce`, with
    /// optional extensions after the nonce (ignored, as Kafka ignores those it does not use).
    ///
    /// # Errors
    /// What is wrong and what is valid.
    pub fn parse(message: &[u8]) -> Result<Self, String> {
        const WHAT: &str = "the SCRAM-SHA-256 client-first message";
        let text = std::str::from_utf8(message).map_err(|_| format!("{WHAT} is not UTF-8"))?;
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| format!("{WHAT} must start with a GS2 header such as `n,,`"))?;
        match flag {
            "n" | "y" => {}
            flag if flag.starts_with("p=") => {
                return Err(format!(
                    "{WHAT} asks for channel binding, which this listener does not support: \
                     send `n,,`"
                ));
            }
            _ => {
                return Err(format!(
                    "{WHAT} has an invalid GS2 flag: valid are `n` and `y`"
                ));
            }
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| format!("{WHAT} must start with a GS2 header such as `n,,`"))?;
        let gs2_header = format!("{flag},{authzid},");
        let authzid = match authzid {
            "" => None,
            other => Some(
                other
                    .strip_prefix("a=")
                    .map(decode_sasl_name)
                    .ok_or_else(|| format!("{WHAT} has an invalid authorization id"))??,
            ),
        };
        let mut attributes = bare.split(',');
        let user = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("n="))
            .ok_or_else(|| {
                format!(
                    "{WHAT} must name the user first (`n=user`; `m=` extensions are not supported)"
                )
            })?;
        let user = decode_sasl_name(user)?;
        validate_user_name(&user)?;
        let client_nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .filter(|nonce| !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or_else(|| {
                format!("{WHAT} must carry a printable nonce after the user (`r=...`)")
            })?;
        if let Some(authzid) = authzid
            && authzid != user
        {
            return Err(format!(
                "the SCRAM authorization id {:?} differs from the user name {user:?}: a user can \
                 only act as itself",
                truncated(&authzid)
            ));
        }
        Ok(Self {
            gs2_header,
            client_nonce: client_nonce.to_string(),
            user,
            bare: bare.to_string(),
        })
    }
}

/// A SCRAM `saslname`: `=2C` stands for `,` and `=3D` for `=`; any other `=` is invalid.
fn decode_sasl_name(name: &str) -> Result<String, String> {
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => decoded.push(','),
            Some("=3D") => decoded.push('='),
            _ => {
                return Err(
                    "a SCRAM user name has `=` not followed by `2C` or `3D` (RFC 5802 saslname)"
                        .to_string(),
                );
            }
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// The server side of one SCRAM-SHA-256 exchange, after the client-first message.
pub struct ScramServer {
    pub user: String,
    /// Whether the user exists; an unknown user never authenticates, whatever the proof.
    known: bool,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    /// `r=client nonce + server nonce,s=salt,i=iterations`.
    pub server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Starts an exchange for `first` against `credential` (made up when `known` is false),
    /// adding `server_nonce` to the client's nonce.
    pub fn new(
        first: ClientFirst,
        credential: ScramCredential,
        known: bool,
        server_nonce: &str,
    ) -> Self {
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        Self {
            user: first.user,
            known,
            credential,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first,
            nonce,
        }
    }

    /// Checks the client-final message `c=biws,r=nonce,p=proof` and returns the server-final
    /// message `v=signature`.
    ///
    /// # Errors
    /// A malformed message, a nonce or channel binding that is not this exchange's, or a
    /// proof that does not match the credential (the message then says only that the
    /// credentials are invalid).
    pub fn finish(&self, message: &[u8]) -> Result<String, String> {
        const WHAT: &str = "the SCRAM-SHA-256 client-final message";
        let text = std::str::from_utf8(message).map_err(|_| format!("{WHAT} is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| format!("{WHAT} must end with the proof (`,p=...`)"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("c="))
            .and_then(|binding| STANDARD.decode(binding).ok())
            .ok_or_else(|| format!("{WHAT} must start with the channel binding (`c=biws`)"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(format!(
                "{WHAT}'s channel binding is not the GS2 header of the client-first message"
            ));
        }
        let nonce = attributes
            .next()
            .and_then(|attribute| attribute.strip_prefix("r="))
            .ok_or_else(|| format!("{WHAT} must carry the nonce after the channel binding"))?;
        // Kafka's rule: the nonce must end with this exchange's (client's + server's), not
        // equal it, because librdkafka (2.0, Debian's kcat) sends its own nonce once more in
        // front. The server's random part is still there, so the proof is still fresh.
        if !nonce.ends_with(&self.nonce) {
            return Err(format!("{WHAT}'s nonce is not this exchange's"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| format!("{WHAT}'s proof is not base64"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = hmac_sha256(&self.credential.stored_key, auth_message.as_bytes());
        let proved = proof.len() == client_signature.len() && {
            let client_key: Vec<u8> = proof
                .iter()
                .zip(&client_signature)
                .map(|(p, s)| p ^ s)
                .collect();
            let stored = digest::digest(&digest::SHA256, &client_key);
            constant_time_eq(stored.as_ref(), &self.credential.stored_key)
        };
        if !(proved && self.known) {
            return Err(format!(
                "Authentication failed: invalid credentials with SASL mechanism SCRAM-SHA-256 \
                 (user {:?})",
                self.user
            ));
        }
        let signature = hmac_sha256(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(signature)))
    }
}

/// A fresh server nonce: random bytes, base64 (printable, no `,`).
fn server_nonce() -> Result<String, ()> {
    let mut bytes = [0u8; SERVER_NONCE_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| ())?;
    Ok(STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's exchange: user "user", password "pencil", the RFC's nonces and salt. The
    /// server sends the RFC's server-first message, accepts the RFC's proof and answers the
    /// RFC's signature; a changed proof, nonce or binding is refused, and an unknown user is
    /// refused even with a matching proof.
    #[test]
    fn scram_sha_256_follows_rfc_7677() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let credential = ScramCredential::with_salt("pencil", salt, 4096);
        let first = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("first");
        assert_eq!(first.user, "user");
        let server = ScramServer::new(
            first.clone(),
            credential.clone(),
            true,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        );
        assert_eq!(
            server.server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,\
             i=4096"
        );
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            server.finish(client_final.as_bytes()),
            Ok("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_string())
        );
        let refused = [
            // Another proof.
            client_final.replace("p=dHzb", "p=dHzc"),
            // Another nonce; the server's nonce missing.
            client_final.replace("k0,p=", "k1,p="),
            client_final.replace("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", ""),
            // Another channel binding (`y,,`).
            client_final.replace("c=biws", "c=eSws"),
            // No proof; a truncated proof.
            client_final
                .split(",p=")
                .next()
                .expect("prefix")
                .to_string(),
            client_final.replace("AndVQ=", ""),
            String::new(),
        ];
        for message in &refused {
            assert!(server.finish(message.as_bytes()).is_err(), "{message}");
        }
        let unknown = ScramServer::new(first, credential, false, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let error = unknown
            .finish(client_final.as_bytes())
            .expect_err("unknown");
        assert!(error.contains("invalid credentials"), "{error}");
    }

    /// The client's side of SCRAM-SHA-256: the proof of `password` over `auth_message`.
    fn client_proof(password: &str, credential: &ScramCredential, auth_message: &str) -> String {
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(credential.iterations).expect("iterations"),
            &credential.salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let signature = hmac_sha256(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        STANDARD.encode(proof)
    }

    /// librdkafka 2.0 (Debian's kcat) sends its client nonce again in front of the combined
    /// nonce; Kafka accepts a nonce that ends with the exchange's, and so does this listener.
    /// A wrong password in that form is still refused.
    #[test]
    fn scram_accepts_librdkafkas_repeated_client_nonce() {
        let credential = ScramCredential::new("s3cret", 4096).expect("credential");
        let first = ClientFirst::parse(b"n,,n=alice,r=client").expect("first");
        let server = ScramServer::new(first, credential.clone(), true, "server");
        let without_proof = "c=biws,r=clientclientserver";
        let auth_message = format!("n=alice,r=client,{},{without_proof}", server.server_first);
        let right = format!(
            "{without_proof},p={}",
            client_proof("s3cret", &credential, &auth_message)
        );
        assert!(server.finish(right.as_bytes()).is_ok());
        let wrong = format!(
            "{without_proof},p={}",
            client_proof("s3cret!", &credential, &auth_message)
        );
        assert!(server.finish(wrong.as_bytes()).is_err());
    }

    #[test]
    fn client_first_messages_parse_or_say_what_is_wrong() {
        let first = ClientFirst::parse(b"n,,n=alice,r=abc,ext=1").expect("extensions ignored");
        assert_eq!(
            (
                first.user.as_str(),
                first.client_nonce.as_str(),
                first.gs2_header.as_str()
            ),
            ("alice", "abc", "n,,")
        );
        let with_authzid = ClientFirst::parse(b"n,a=alice,n=alice,r=abc").expect("same user");
        assert_eq!(with_authzid.gs2_header, "n,a=alice,");
        let cases: &[(&[u8], &str)] = &[
            (b"", "GS2 header"),
            (b"p=tls-unique,,n=a,r=b", "channel binding"),
            (b"x,,n=a,r=b", "GS2 flag"),
            (b"n,,m=x,n=a,r=b", "name the user first"),
            (b"n,,n=a", "nonce"),
            (b"n,,n=a,r=", "nonce"),
            (b"n,,n=a=,r=b", "saslname"),
            (b"n,,n=a b,r=b", "valid characters"),
            (b"n,a=bob,n=alice,r=b", "act as itself"),
            (b"n,,n=a,r=b\x01", "nonce"),
            (&[0xff, 0xfe], "UTF-8"),
        ];
        for (message, expected) in cases {
            let error = ClientFirst::parse(message).expect_err("refused");
            assert!(error.contains(expected), "{message:?}: {error}");
        }
        assert_eq!(decode_sasl_name("a=2Cb=3Dc"), Ok("a,b=c".to_string()));
    }

    #[test]
    fn plain_messages_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_plain(b"\0alice\0s3cret"),
            Ok(("alice".to_string(), "s3cret".to_string()))
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0pw\0ord").map(|_| ()),
            Err(
                "the SASL/PLAIN message must be `authzid NUL user NUL password` (RFC 4616)"
                    .to_string()
            )
        );
        for (message, expected) in [
            (&b"alice\0s3cret"[..], "authzid NUL user"),
            (b"\0\0s3cret", "empty"),
            (b"\0alice\0", "empty"),
            (b"bob\0alice\0s3cret", "act as itself"),
            (b"\0al ice\0s3cret", "valid characters"),
            (b"\0alice\0\xff", "UTF-8"),
        ] {
            let error = parse_plain(message).expect_err("refused");
            assert!(error.contains(expected), "{message:?}: {error}");
            assert!(
                !error.contains("s3cret"),
                "never repeats the password: {error}"
            );
        }
    }
}
