//! Users and ACLs as broker calls: create, change, delete and list them through the
//! controller, select ACLs with an [`AclFilter`], read what the authorizer needs without
//! copying the metadata, and create the bootstrap user (`STRATA_BOOTSTRAP_USER`).
//!
//! A password is turned into a [`ScramCredential`] on the node that receives it; only the
//! credential is proposed and replicated.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use super::{Broker, BrokerError};
use crate::controller::metadata::PutUserMode;
use crate::controller::metadata::{Command, CommandRefusal};
use crate::controller::security::validate_user_name;
use crate::security::acl::{Acl, Operation, PatternType, Permission, ResourceType};
use crate::security::scram::{CredentialError, ITERATIONS_DEFAULT, ScramCredential};

/// Most ACLs one create request carries, and one controller command: each must fit the
/// controller's 64 KiB change limit even with 255-byte principals and names (about 620 bytes
/// of JSON each).
pub const ACLS_PER_COMMAND_MAX: usize = 100;
/// How long a node keeps trying to create its bootstrap user (the controller may be electing,
/// or its leader unreachable) before it gives up and logs why.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a bootstrap attempt that could not reach the controller's leader is retried.
const BOOTSTRAP_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// A user as listed: never any key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    /// PBKDF2 iterations of the stored SCRAM-SHA-256 credential.
    pub iterations: u32,
}

/// How an [`AclFilter`] compares resource names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Literal ACLs; with a name, those of exactly that name.
    Literal,
    /// Prefixed ACLs; with a name, those of exactly that prefix.
    Prefixed,
    /// Kafka's MATCH: the ACLs that apply to the resource named by the filter (a literal ACL
    /// of that name or of `*`, a prefixed ACL whose prefix the name starts with). Needs a name.
    Match,
}

/// Selects ACLs; every `None` field matches any value, so the default filter matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// Exactly this principal (`User:alice`, `User:*`).
    pub principal: Option<String>,
    pub resource_type: Option<ResourceType>,
    /// `None`: any pattern type, with `resource_name` (if set) compared exactly.
    pub pattern: Option<PatternFilter>,
    pub resource_name: Option<String>,
    /// Exactly this operation (`All` matches only ACLs of `All`).
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Whether the filter selects nothing in particular (it matches every ACL).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Checks a filter from a request.
    ///
    /// # Errors
    /// A MATCH filter without a resource name.
    pub fn validate(&self) -> Result<(), String> {
        if self.pattern == Some(PatternFilter::Match) && self.resource_name.is_none() {
            return Err(
                "the match pattern selects the ACLs that apply to one resource: give its \
                 resource_name (or use literal, prefixed, or no pattern)"
                    .to_string(),
            );
        }
        Ok(())
    }

    /// Whether `acl` is selected.
    pub fn matches(&self, acl: &Acl) -> bool {
        let principal = self.principal.as_ref().is_none_or(|p| *p == acl.principal);
        let resource_type = self.resource_type.is_none_or(|t| t == acl.resource_type);
        let operation = self.operation.is_none_or(|o| o == acl.operation);
        let permission = self.permission.is_none_or(|p| p == acl.permission);
        principal && resource_type && operation && permission && self.matches_name(acl)
    }

    fn matches_name(&self, acl: &Acl) -> bool {
        let name = self.resource_name.as_deref();
        let exact = name.is_none_or(|n| n == acl.resource_name);
        match self.pattern {
            None => exact,
            Some(PatternFilter::Literal) => acl.pattern_type == PatternType::Literal && exact,
            Some(PatternFilter::Prefixed) => acl.pattern_type == PatternType::Prefixed && exact,
            Some(PatternFilter::Match) => {
                // `validate` refuses MATCH without a name; unvalidated, it matches nothing.
                let Some(name) = name else {
                    return false;
                };
                match acl.pattern_type {
                    PatternType::Literal => acl.resource_name == name || acl.resource_name == "*",
                    PatternType::Prefixed => name.starts_with(&acl.resource_name),
                }
            }
        }
    }
}

/// What a bootstrap attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// This node's proposal created the cluster's first user.
    Created,
    /// The cluster had users already: nothing changed.
    UsersExist,
}

/// The credential for `password`, derived off the async threads (PBKDF2 is deliberately slow).
///
/// # Errors
/// [`BrokerError::InvalidArgument`] for an empty or too long password.
pub async fn derive_credential(password: &str) -> Result<ScramCredential, BrokerError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || ScramCredential::new(&password, ITERATIONS_DEFAULT))
        .await
        .map_err(|e| BrokerError::Unavailable(format!("deriving the credential failed: {e}")))?
        .map_err(credential_error)
}

fn credential_error(error: CredentialError) -> BrokerError {
    match error {
        CredentialError::Random => BrokerError::Unavailable(error.to_string()),
        other => BrokerError::InvalidArgument(other.to_string()),
    }
}

/// The bootstrap command: `PutUser` in bootstrap mode (see [`PutUserMode::Bootstrap`]).
pub(crate) fn bootstrap_command(name: String, credential: ScramCredential) -> Command {
    Command::PutUser {
        name,
        credential,
        mode: PutUserMode::Bootstrap,
    }
}

impl Broker {
    /// Creates user `name` with `password`.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad name or password, USER_ALREADY_EXISTS, and the controller's
    /// errors (NOT_LEADER with its leader).
    pub async fn create_user(&self, name: &str, password: &str) -> Result<(), BrokerError> {
        self.put_user(name, password, PutUserMode::Create).await
    }

    /// Gives user `name` a new password.
    ///
    /// # Errors
    /// As [`Broker::create_user`], with UNKNOWN_USER instead of USER_ALREADY_EXISTS.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), BrokerError> {
        self.put_user(name, password, PutUserMode::SetPassword)
            .await
    }

    async fn put_user(
        &self,
        name: &str,
        password: &str,
        mode: PutUserMode,
    ) -> Result<(), BrokerError> {
        validate_user_name(name).map_err(BrokerError::InvalidArgument)?;
        // Refuse early, before the costly derivation, what the controller would refuse.
        let exists = self.with_users(|users| users.contains_key(name));
        match mode {
            PutUserMode::Create if exists => {
                return Err(BrokerError::UserExists(name.to_string()));
            }
            PutUserMode::SetPassword if !exists => {
                return Err(BrokerError::UnknownUser(name.to_string()));
            }
            _ => {}
        }
        let credential = derive_credential(password).await?;
        self.propose_metadata(Command::PutUser {
            name: name.to_string(),
            credential,
            mode,
        })
        .await
    }

    /// Deletes user `name`; its ACLs stay.
    ///
    /// # Errors
    /// UNKNOWN_USER, and the controller's errors.
    pub async fn delete_user(&self, name: &str) -> Result<(), BrokerError> {
        validate_user_name(name).map_err(BrokerError::InvalidArgument)?;
        self.propose_metadata(Command::DeleteUser {
            name: name.to_string(),
        })
        .await
    }

    /// Every user, by name, as this node's metadata has them.
    pub fn list_users(&self) -> Vec<UserInfo> {
        self.with_users(|users| {
            users
                .iter()
                .map(|(name, credential)| UserInfo {
                    name: name.clone(),
                    iterations: credential.iterations,
                })
                .collect()
        })
    }

    /// Adds `acls`, all or none.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming the first invalid ACL (by its position) or too many at once, and
    /// the controller's errors.
    pub async fn create_acls(&self, acls: Vec<Acl>) -> Result<(), BrokerError> {
        if acls.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "no ACLs given: send at least one".to_string(),
            ));
        }
        if acls.len() > ACLS_PER_COMMAND_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "{} ACLs in one request; at most {ACLS_PER_COMMAND_MAX} are accepted at once",
                acls.len()
            )));
        }
        for (i, acl) in acls.iter().enumerate() {
            acl.validate()
                .map_err(|reason| BrokerError::InvalidArgument(format!("ACL {i}: {reason}")))?;
        }
        self.propose_metadata(Command::CreateAcls { acls }).await
    }

    /// Deletes every ACL `filter` matches and returns them (none: nothing is proposed).
    ///
    /// # Errors
    /// INVALID_ARGUMENT for an invalid filter, and the controller's errors (a deletion of
    /// many ACLs is proposed in several commands; an error after the first leaves the ACLs of
    /// the later ones in place, and a retry deletes them).
    pub async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>, BrokerError> {
        let matching = self.list_acls(filter)?;
        for chunk in matching.chunks(ACLS_PER_COMMAND_MAX) {
            self.propose_metadata(Command::DeleteAcls {
                acls: chunk.to_vec(),
            })
            .await?;
        }
        Ok(matching)
    }

    /// The ACLs `filter` matches, in the metadata's order.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for an invalid filter.
    pub fn list_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>, BrokerError> {
        filter.validate().map_err(BrokerError::InvalidArgument)?;
        Ok(self.with_acls(|acls| {
            acls.iter()
                .filter(|acl| filter.matches(acl))
                .cloned()
                .collect()
        }))
    }

    /// Runs `read` on the cluster's ACLs as this node has applied them, under the metadata's
    /// read lock and without copying them: what the authorizer checks each request against.
    /// `read` must not block.
    pub fn with_acls<R>(&self, read: impl FnOnce(&BTreeSet<Acl>) -> R) -> R {
        read(&self.metadata.read().expect("metadata lock poisoned").acls)
    }

    /// Runs `read` on the users (name → credential), like [`Broker::with_acls`].
    pub fn with_users<R>(&self, read: impl FnOnce(&BTreeMap<String, ScramCredential>) -> R) -> R {
        read(&self.metadata.read().expect("metadata lock poisoned").users)
    }

    /// The credential of user `name`, if there is one (for authentication).
    pub fn user_credential(&self, name: &str) -> Option<ScramCredential> {
        self.with_users(|users| users.get(name).cloned())
    }

    /// Proposes the bootstrap user on this node, which must lead the controller.
    ///
    /// # Errors
    /// The controller's errors (NOT_LEADER when this node does not lead it).
    pub async fn propose_bootstrap_user(
        &self,
        name: &str,
        credential: ScramCredential,
    ) -> Result<BootstrapOutcome, BrokerError> {
        validate_user_name(name).map_err(BrokerError::InvalidArgument)?;
        match self
            .propose_command(&bootstrap_command(name.to_string(), credential))
            .await?
        {
            Ok(()) => Ok(BootstrapOutcome::Created),
            Err(CommandRefusal::UsersExist) => Ok(BootstrapOutcome::UsersExist),
            Err(refusal) => Err(BrokerError::InvalidArgument(refusal.to_string())),
        }
    }

    /// Creates the bootstrap user if the cluster has no user yet: proposes it here when this
    /// node leads the controller, or asks the leader through `ask_leader(address, name,
    /// credential)` (the peer service's `BootstrapUser`). Retries while the controller has no
    /// leader or it cannot be reached, for at most [`BOOTSTRAP_TIMEOUT`].
    ///
    /// # Errors
    /// A bad name or password; [`BrokerError::Timeout`] with the last failure when the
    /// controller's leader could not be reached in time.
    pub async fn bootstrap_user<F, Fut>(
        &self,
        name: &str,
        password: &str,
        ask_leader: F,
    ) -> Result<BootstrapOutcome, BrokerError>
    where
        F: Fn(u64, String, String, ScramCredential) -> Fut,
        Fut: Future<Output = Result<BootstrapOutcome, String>>,
    {
        validate_user_name(name).map_err(BrokerError::InvalidArgument)?;
        let credential = derive_credential(password).await?;
        let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
        let mut retry = tokio::time::interval(BOOTSTRAP_RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_failure = String::from("the controller has no leader");
        loop {
            retry.tick().await;
            if Instant::now() >= deadline {
                return Err(BrokerError::Timeout(format!(
                    "creating the bootstrap user for {BOOTSTRAP_TIMEOUT:?}: {last_failure}"
                )));
            }
            if self.with_users(|users| !users.is_empty()) {
                return Ok(BootstrapOutcome::UsersExist);
            }
            let leader = self.controller_leader();
            if leader == 0 {
                last_failure = "the controller has no leader".to_string();
                continue;
            }
            if leader == self.node_id {
                match self.propose_bootstrap_user(name, credential.clone()).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(error @ BrokerError::InvalidArgument(_)) => return Err(error),
                    Err(BrokerError::ShuttingDown) => return Err(BrokerError::ShuttingDown),
                    Err(error) => last_failure = error.to_string(),
                }
                continue;
            }
            let Some(address) = self.node_address(leader) else {
                last_failure = format!("the address of node {leader} (the leader) is unknown");
                continue;
            };
            match ask_leader(leader, address, name.to_string(), credential.clone()).await {
                Ok(outcome) => return Ok(outcome),
                Err(error) => last_failure = format!("asking node {leader}: {error}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(pattern_type: PatternType, name: &str) -> Acl {
        Acl {
            principal: "User:alice".into(),
            resource_type: ResourceType::Topic,
            pattern_type,
            resource_name: name.into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }
    }

    /// Each filter against the same ACLs: which of them it selects.
    #[test]
    fn filters_select_as_documented() {
        use PatternType::{Literal, Prefixed};
        let acls = [
            acl(Literal, "orders"),    // 0
            acl(Literal, "*"),         // 1
            acl(Prefixed, "ord"),      // 2
            acl(Prefixed, "orders"),   // 3
            acl(Literal, "ord"),       // 4
            acl(Prefixed, "payments"), // 5
            Acl {
                principal: "User:bob".into(),
                permission: Permission::Deny,
                ..acl(Literal, "orders")
            }, // 6
            Acl {
                resource_type: ResourceType::Group,
                operation: Operation::Describe,
                ..acl(Literal, "orders")
            }, // 7
        ];
        let by_name = |pattern, name: &str| AclFilter {
            pattern,
            resource_name: Some(name.into()),
            ..AclFilter::default()
        };
        let cases: &[(&str, AclFilter, &[usize])] = &[
            ("empty", AclFilter::default(), &[0, 1, 2, 3, 4, 5, 6, 7]),
            (
                "any pattern, exact name",
                by_name(None, "orders"),
                &[0, 3, 6, 7],
            ),
            (
                "literal name",
                by_name(Some(PatternFilter::Literal), "orders"),
                &[0, 6, 7],
            ),
            (
                "prefixed name",
                by_name(Some(PatternFilter::Prefixed), "ord"),
                &[2],
            ),
            (
                "literal without name",
                AclFilter {
                    pattern: Some(PatternFilter::Literal),
                    ..AclFilter::default()
                },
                &[0, 1, 4, 6, 7],
            ),
            (
                "match orders",
                by_name(Some(PatternFilter::Match), "orders"),
                &[0, 1, 2, 3, 6, 7],
            ),
            (
                "match orders-eu",
                by_name(Some(PatternFilter::Match), "orders-eu"),
                &[1, 2, 3],
            ),
            (
                "match o: no prefix is shorter",
                by_name(Some(PatternFilter::Match), "o"),
                &[1],
            ),
            (
                "match topics only, for alice",
                AclFilter {
                    principal: Some("User:alice".into()),
                    resource_type: Some(ResourceType::Topic),
                    ..by_name(Some(PatternFilter::Match), "orders")
                },
                &[0, 1, 2, 3],
            ),
            (
                "deny",
                AclFilter {
                    permission: Some(Permission::Deny),
                    ..AclFilter::default()
                },
                &[6],
            ),
            (
                "operation describe",
                AclFilter {
                    operation: Some(Operation::Describe),
                    ..AclFilter::default()
                },
                &[7],
            ),
            (
                "operation all matches only ALL",
                AclFilter {
                    operation: Some(Operation::All),
                    ..AclFilter::default()
                },
                &[],
            ),
        ];
        for (what, filter, expected) in cases {
            assert_eq!(filter.validate(), Ok(()), "{what}");
            let got: Vec<usize> = acls
                .iter()
                .enumerate()
                .filter(|(_, acl)| filter.matches(acl))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(got, *expected, "{what}: {filter:?}");
        }
        assert!(AclFilter::default().is_empty());
        assert!(!by_name(None, "x").is_empty());
    }

    #[test]
    fn match_without_a_name_is_refused() {
        let filter = AclFilter {
            pattern: Some(PatternFilter::Match),
            ..AclFilter::default()
        };
        let error = filter.validate().expect_err("refused");
        assert!(error.contains("resource_name"), "{error}");
        assert!(!filter.matches(&acl(PatternType::Literal, "*")));
    }
}
