//! # Security: who is asking, and may they
//!
//! Strata's model is Kafka's (ARCHITECTURE.md, "Security"): TLS on the listener, nodes
//! authenticated by mutual TLS, clients by certificate or by SCRAM-SHA-256 password, and ACLs
//! replicated through the controller, checked by one authorizer for every frontend.
//!
//! This module holds the values every part shares:
//! - [`ConnectionInfo`]: what the transport learnt about a connection (its address, whether it
//!   is TLS, the identity its verified certificate carries). The listener puts it in every
//!   request's extensions.
//! - [`Principal`]: who a request is from, once authenticated; the authentication layer puts it
//!   in the request's extensions.
//!
//! Transport:
//! - [`tls`]: the TLS material (listener and peer certificates, client CAs), reloaded when the
//!   files change; how a certificate maps to an identity: a chain signed by the peer CA whose
//!   certificate has the SAN `node-<id>.strata` is [`CertIdentity::Node`]; one signed by the
//!   client CA is [`CertIdentity::User`] with its subject's CN (principal `User:<CN>`).
//! - [`listener`]: the listener's connections (TLS termination, [`ConnectionInfo`] per
//!   connection).
//!
//! Authentication and authorization:
//! - [`acl`]: ACLs and the authorization decision ([`acl::Policy::allows`]).
//! - [`scram`]: SCRAM-SHA-256 credentials, the only form a password is kept in.
//! - [`password`]: what every frontend shares to check passwords: `Basic` credentials, the
//!   slowdown of failed attempts per source, the cache of verified passwords.

pub mod acl;
pub mod listener;
pub mod password;
pub mod scram;
pub mod tls;

use std::fmt;
use std::net::SocketAddr;

/// The SAN DNS name a node's certificate carries: `node-<id>.strata`. A peer stream is accepted
/// only from a certificate signed by the peer CA that names a current cluster member this way,
/// and a node dialing a peer checks the server certificate for the same name.
pub fn node_dns_name(node_id: u64) -> String {
    format!("node-{node_id}.strata")
}

/// The node id a `node-<id>.strata` name stands for.
pub fn node_id_of_dns_name(name: &str) -> Option<u64> {
    name.strip_prefix("node-")?
        .strip_suffix(".strata")?
        .parse()
        .ok()
        .filter(|id| *id > 0)
}

/// The identity a verified certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    /// Signed by the peer CA and naming `node-<id>.strata`: another node of the cluster (whether
    /// it is a current member is for the peer service to check).
    Node(u64),
    /// Signed by the client CA: the subject's common name (principal `User:<CN>`).
    User(String),
}

/// What the listener knows about one connection; in every request's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionInfo {
    /// The client's address, when known.
    pub remote: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The identity of the client's verified certificate, if it presented one.
    pub certificate: Option<CertIdentity>,
}

/// Who a request is from, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// `User:<name>`: from a password or a client certificate's CN.
    User(String),
    /// Another node of the cluster (its certificate names `node-<id>.strata`). Nodes may do
    /// anything: they are the cluster.
    Node(u64),
    /// Nobody: authentication is off (`--authentication none`).
    Anonymous,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(name) => write!(f, "User:{name}"),
            Self::Node(id) => write!(f, "Node:{id}"),
            Self::Anonymous => f.write_str("User:ANONYMOUS"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_refuse_others() {
        assert_eq!(node_id_of_dns_name(&node_dns_name(7)), Some(7));
        for name in [
            "node-0.strata",
            "node-x.strata",
            "node-7.strata.evil",
            "7.strata",
            "",
        ] {
            assert_eq!(node_id_of_dns_name(name), None, "{name}");
        }
        assert_eq!(Principal::User("alice".into()).to_string(), "User:alice");
    }
}
