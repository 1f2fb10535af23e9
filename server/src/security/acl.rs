//! Access control lists in Kafka's model, and the one decision every frontend asks.
//!
//! An [`Acl`] grants or denies a principal (`User:<name>` or `User:*`) an [`Operation`] on
//! resources of one [`ResourceType`] matched by name (literal, `*` for all, or a prefix). The
//! decision ([`Policy::allows`]):
//! 1. authorization off, a superuser, or a node of the cluster: allowed;
//! 2. any matching DENY for the operation (or for `all`): denied — deny wins;
//! 3. any matching ALLOW for the operation, for `all`, or for an operation that implies it
//!    (read, write, delete and alter imply describe; alter-configs implies describe-configs):
//!    allowed;
//! 4. otherwise denied.
//!
//! Implication applies to allows only, as in Kafka: denying `read` does not deny `describe`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Principal;

/// The name of the one cluster resource (Kafka's, so Kafka clients' cluster ACLs match).
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";
/// Longest principal or resource name in an ACL.
pub const ACL_NAME_BYTES_MAX: usize = 255;

/// What kind of thing an ACL is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatternType {
    /// The name itself, or `*` for every resource of the type.
    Literal,
    /// Every resource whose name starts with the pattern.
    Prefixed,
}

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    ClusterAction,
}

/// Whether an ACL grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    Allow,
    Deny,
}

/// One access control entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    /// `User:<name>` or `User:*`.
    pub principal: String,
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub resource_name: String,
    pub operation: Operation,
    pub permission: Permission,
}

macro_rules! names {
    ($type:ty, $what:literal, $($variant:ident = $name:literal),+ $(,)?) => {
        impl $type {
            /// Every value, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            /// The name used on the CLI, in the API and in logs.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $type {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
                Self::ALL.iter().copied().find(|v| v.name() == wanted).ok_or_else(|| {
                    let valid: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                    format!("unknown {} {text:?}; valid: {}", $what, valid.join(", "))
                })
            }
        }
    };
}

names!(
    ResourceType,
    "resource type",
    Topic = "topic",
    Group = "group",
    Cluster = "cluster"
);
names!(
    PatternType,
    "pattern type",
    Literal = "literal",
    Prefixed = "prefixed"
);
names!(Permission, "permission", Allow = "allow", Deny = "deny");
names!(
    Operation,
    "operation",
    All = "all",
    Read = "read",
    Write = "write",
    Create = "create",
    Delete = "delete",
    Alter = "alter",
    Describe = "describe",
    DescribeConfigs = "describe-configs",
    AlterConfigs = "alter-configs",
    IdempotentWrite = "idempotent-write",
    ClusterAction = "cluster-action",
);

impl Operation {
    /// Whether an allow of `self` also allows `wanted`.
    fn grants(self, wanted: Operation) -> bool {
        use Operation::*;
        self == wanted
            || self == All
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }
}

impl Acl {
    /// Checks an ACL from an untrusted source (a request, a command in the controller's log).
    ///
    /// # Errors
    /// A message saying what is wrong and what is valid.
    pub fn validate(&self) -> Result<(), String> {
        let user = self.principal.strip_prefix("User:").ok_or_else(|| {
            format!(
                "principal {:?} must be User:<name> or User:*",
                self.principal
            )
        })?;
        if user.is_empty() || self.principal.len() > ACL_NAME_BYTES_MAX {
            return Err(format!(
                "principal {:?} must be User:<name> (1 to {ACL_NAME_BYTES_MAX} bytes) or User:*",
                self.principal
            ));
        }
        if self.resource_name.is_empty() || self.resource_name.len() > ACL_NAME_BYTES_MAX {
            return Err(format!(
                "the resource name must be 1 to {ACL_NAME_BYTES_MAX} bytes, got {:?}",
                self.resource_name
            ));
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_RESOURCE_NAME
                || self.pattern_type != PatternType::Literal)
        {
            return Err(format!(
                "a cluster ACL names the literal resource {CLUSTER_RESOURCE_NAME:?}"
            ));
        }
        if self.pattern_type == PatternType::Prefixed && self.resource_name == "*" {
            return Err(
                "a prefixed pattern cannot be \"*\"; use a literal \"*\" for every resource"
                    .to_string(),
            );
        }
        Ok(())
    }

    /// Whether the ACL names `principal`, written `User:<name>` (nodes are never subject to
    /// ACLs, see `Policy::allows`).
    fn matches_principal(&self, principal: &str) -> bool {
        self.principal == "User:*" || self.principal == principal
    }

    fn matches_resource(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }
}

/// The node's authorization settings with the cluster's ACLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--authorization on`: ACLs are enforced. Off, everything is allowed.
    pub enabled: bool,
    /// `--superusers`: principals (`User:<name>`) allowed everything.
    pub superusers: BTreeSet<String>,
}

impl Policy {
    /// Whether `principal` may do `operation` on the resource `name` of `resource_type`, under
    /// `acls` (see the module doc for the rules).
    pub fn allows<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a Acl>,
        principal: &Principal,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> bool {
        if !self.enabled || matches!(principal, Principal::Node(_)) {
            return true;
        }
        // Written once, not per ACL.
        let principal = principal.to_string();
        if self.superusers.contains(&principal) {
            return true;
        }
        let mut allowed = false;
        for acl in acls {
            if !acl.matches_principal(&principal) || !acl.matches_resource(resource_type, name) {
                continue;
            }
            match acl.permission {
                Permission::Deny
                    if acl.operation == operation || acl.operation == Operation::All =>
                {
                    return false;
                }
                Permission::Allow if acl.operation.grants(operation) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acl(principal: &str, pattern: PatternType, name: &str, op: Operation, p: Permission) -> Acl {
        Acl {
            principal: principal.to_string(),
            resource_type: ResourceType::Topic,
            pattern_type: pattern,
            resource_name: name.to_string(),
            operation: op,
            permission: p,
        }
    }

    fn on() -> Policy {
        Policy {
            enabled: true,
            superusers: BTreeSet::from(["User:root".to_string()]),
        }
    }

    #[test]
    fn table_of_decisions() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        let alice = Principal::User("alice".into());
        let cases: &[(&[Acl], &str, Operation, bool)] = &[
            (&[], "orders", Read, false),
            (
                &[acl("User:alice", Literal, "orders", Read, Allow)],
                "orders",
                Read,
                true,
            ),
            (
                &[acl("User:alice", Literal, "orders", Read, Allow)],
                "orders2",
                Read,
                false,
            ),
            (
                &[acl("User:alice", Literal, "orders", Read, Allow)],
                "orders",
                Write,
                false,
            ),
            (
                &[acl("User:alice", Literal, "orders", Read, Allow)],
                "orders",
                Describe,
                true,
            ),
            (
                &[acl("User:alice", Literal, "orders", Describe, Allow)],
                "orders",
                Read,
                false,
            ),
            (
                &[acl("User:alice", Literal, "orders", AlterConfigs, Allow)],
                "orders",
                DescribeConfigs,
                true,
            ),
            (
                &[acl("User:bob", Literal, "orders", Read, Allow)],
                "orders",
                Read,
                false,
            ),
            (
                &[acl("User:*", Literal, "orders", Read, Allow)],
                "orders",
                Read,
                true,
            ),
            (
                &[acl("User:alice", Literal, "*", All, Allow)],
                "anything",
                Delete,
                true,
            ),
            (
                &[acl("User:alice", Prefixed, "ord", Write, Allow)],
                "orders",
                Write,
                true,
            ),
            (
                &[acl("User:alice", Prefixed, "ord", Write, Allow)],
                "xorders",
                Write,
                false,
            ),
            // Deny wins, whatever the order and however broad the allow.
            (
                &[
                    acl("User:alice", Literal, "*", All, Allow),
                    acl("User:alice", Literal, "orders", Write, Deny),
                ],
                "orders",
                Write,
                false,
            ),
            (
                &[
                    acl("User:*", Prefixed, "ord", Read, Deny),
                    acl("User:alice", Literal, "orders", Read, Allow),
                ],
                "orders",
                Read,
                false,
            ),
            // Deny of read does not deny describe (Kafka's rule).
            (
                &[
                    acl("User:alice", Literal, "orders", Read, Deny),
                    acl("User:alice", Literal, "orders", Describe, Allow),
                ],
                "orders",
                Describe,
                true,
            ),
            (
                &[acl("User:alice", Literal, "orders", All, Deny)],
                "orders",
                Describe,
                false,
            ),
        ];
        for (i, (acls, name, op, expected)) in cases.iter().enumerate() {
            let got = on().allows(acls.iter(), &alice, ResourceType::Topic, name, *op);
            assert_eq!(got, *expected, "case {i}: {op} on {name} under {acls:?}");
        }
        let root = Principal::User("root".into());
        let deny_all = [acl("User:*", Literal, "*", All, Deny)];
        assert!(on().allows(&deny_all, &root, ResourceType::Topic, "x", Operation::Read));
        assert!(on().allows(
            &deny_all,
            &Principal::Node(2),
            ResourceType::Topic,
            "x",
            Operation::Read
        ));
        assert!(Policy::default().allows(
            &deny_all,
            &alice,
            ResourceType::Topic,
            "x",
            Operation::Read
        ));
        assert!(!on().allows(
            &deny_all,
            &Principal::Anonymous,
            ResourceType::Topic,
            "x",
            Operation::Read
        ));
    }

    #[test]
    fn names_parse_back_and_unknown_names_list_the_valid_ones() {
        for op in Operation::ALL {
            assert_eq!(op.name().parse::<Operation>(), Ok(*op));
        }
        assert_eq!(
            "DESCRIBE_CONFIGS".parse::<Operation>(),
            Ok(Operation::DescribeConfigs)
        );
        let error = "reed".parse::<Operation>().expect_err("unknown");
        assert!(error.contains("read, write"), "{error}");
        assert_eq!("deny".parse::<Permission>(), Ok(Permission::Deny));
    }

    #[test]
    fn validation_refuses_what_cannot_match() {
        let good = acl(
            "User:alice",
            PatternType::Literal,
            "orders",
            Operation::Read,
            Permission::Allow,
        );
        assert_eq!(good.validate(), Ok(()));
        for bad in [
            Acl {
                principal: "alice".into(),
                ..good.clone()
            },
            Acl {
                principal: "User:".into(),
                ..good.clone()
            },
            Acl {
                resource_name: String::new(),
                ..good.clone()
            },
            Acl {
                resource_name: "x".repeat(256),
                ..good.clone()
            },
            Acl {
                resource_type: ResourceType::Cluster,
                ..good.clone()
            },
            Acl {
                pattern_type: PatternType::Prefixed,
                resource_name: "*".into(),
                ..good.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let cluster = Acl {
            resource_type: ResourceType::Cluster,
            resource_name: CLUSTER_RESOURCE_NAME.into(),
            ..good
        };
        assert_eq!(cluster.validate(), Ok(()));
    }

    fn any_acl() -> impl Strategy<Value = Acl> {
        (
            prop::sample::select(vec!["User:alice", "User:bob", "User:*"]),
            prop::sample::select(vec![PatternType::Literal, PatternType::Prefixed]),
            prop::sample::select(vec!["orders", "ord", "o", "*", "payments"]),
            prop::sample::select(Operation::ALL.to_vec()),
            prop::sample::select(vec![Permission::Allow, Permission::Deny]),
        )
            .prop_map(|(principal, pattern, name, op, permission)| {
                acl(principal, pattern, name, op, permission)
            })
    }

    proptest! {
        /// Against a direct reading of the rules: the decision does not depend on the ACLs'
        /// order, adding a deny never allows more, and adding an allow never allows less.
        #[test]
        fn decisions_follow_the_rules(
            acls in prop::collection::vec(any_acl(), 0..8),
            extra in any_acl(),
            name in prop::sample::select(vec!["orders", "order", "payments", "x"]),
            op in prop::sample::select(Operation::ALL.to_vec()),
        ) {
            let alice = Principal::User("alice".into());
            let decide = |acls: &[Acl]| on().allows(acls, &alice, ResourceType::Topic, name, op);
            let before = decide(&acls);
            let mut reversed = acls.clone();
            reversed.reverse();
            prop_assert_eq!(decide(&reversed), before);
            let mut more = acls.clone();
            more.push(extra.clone());
            let after = decide(&more);
            match extra.permission {
                Permission::Deny => prop_assert!(!after || before),
                Permission::Allow => prop_assert!(after || !before),
            }
        }
    }
}
