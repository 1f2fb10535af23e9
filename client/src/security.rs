//! Users and ACLs on the [`Admin`] client: create, change and delete users (passwords are sent
//! to the broker, which keeps only a salted SCRAM-SHA-256 credential: use TLS), create, list
//! and delete ACLs. The values are the protocol's own ([`AclEntry`], [`AclFilter`],
//! [`UserInfo`], the ACL enums), re-exported here, with the names the CLI and the docs use
//! (`read`, `describe-configs`, `topic`, `prefixed`, `deny`, ...) in both directions.
//!
//! Changes go to the controller leader, lists to any broker (see [`crate::Client`]). A change
//! whose reply was lost to a failing connection is sent again, so it may answer that its own
//! first attempt already happened (`USER_ALREADY_EXISTS` after a create, `UNKNOWN_USER` after
//! a delete).

pub use strata_proto::v1::{
    AclEntry, AclFilter, AclOperation, AclPermission, PatternFilter, PatternType, ResourceType,
    UserInfo,
};
use strata_proto::v1::{
    CreateAclsRequest, CreateUserRequest, DeleteAclsRequest, DeleteUserRequest, ListAclsRequest,
    ListUsersRequest, SetPasswordRequest,
};

use crate::admin::Admin;
use crate::error::Result;
use crate::routing::Route;

/// The name of the one cluster resource, which cluster ACLs name (literal).
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

impl Admin {
    /// Creates user `name` with `password`.
    ///
    /// # Errors
    /// `USER_ALREADY_EXISTS`; `INVALID_ARGUMENT` for a name outside 1 to 255 characters of
    /// `[a-zA-Z0-9._@-]` or a password outside 1 to 1024 bytes.
    pub async fn create_user(&self, name: &str, password: &str) -> Result<()> {
        let request = CreateUserRequest {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.create_user(request).await },
        )
        .await?;
        Ok(())
    }

    /// Gives user `name` a new password.
    ///
    /// # Errors
    /// `UNKNOWN_USER`; `INVALID_ARGUMENT` for a bad password.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<()> {
        let request = SetPasswordRequest {
            name: name.to_owned(),
            password: password.to_owned(),
        };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.set_password(request).await },
        )
        .await?;
        Ok(())
    }

    /// Deletes user `name` (its ACLs stay).
    ///
    /// # Errors
    /// `UNKNOWN_USER`.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let request = DeleteUserRequest {
            name: name.to_owned(),
        };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.delete_user(request).await },
        )
        .await?;
        Ok(())
    }

    /// Every user, by name (no key material).
    ///
    /// # Errors
    /// Transport errors and timeouts only.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let reply = self
            .admin(
                Route::Any,
                &ListUsersRequest {},
                |mut admin, request| async move { admin.list_users(request).await },
            )
            .await?;
        Ok(reply.users)
    }

    /// Adds `acls`, all or none (at most 100 at once); those present already are kept once.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming the first invalid ACL and why.
    pub async fn create_acls(&self, acls: Vec<AclEntry>) -> Result<()> {
        let request = CreateAclsRequest { acls };
        self.admin(
            Route::Controller,
            &request,
            |mut admin, request| async move { admin.create_acls(request).await },
        )
        .await?;
        Ok(())
    }

    /// Deletes every ACL `filter` matches (the default filter matches all) and returns them.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a filter field set to an UNSPECIFIED value, or MATCH without a
    /// resource name.
    pub async fn delete_acls(&self, filter: AclFilter) -> Result<Vec<AclEntry>> {
        let request = DeleteAclsRequest {
            filter: Some(filter),
        };
        let reply = self
            .admin(
                Route::Controller,
                &request,
                |mut admin, request| async move { admin.delete_acls(request).await },
            )
            .await?;
        Ok(reply.deleted)
    }

    /// The ACLs `filter` matches.
    ///
    /// # Errors
    /// As [`Admin::delete_acls`].
    pub async fn list_acls(&self, filter: AclFilter) -> Result<Vec<AclEntry>> {
        let request = ListAclsRequest {
            filter: Some(filter),
        };
        let reply = self
            .admin(Route::Any, &request, |mut admin, request| async move {
                admin.list_acls(request).await
            })
            .await?;
        Ok(reply.acls)
    }
}

/// The short names of an ACL enum: the protocol's name without its prefix, lower case, with
/// `-` for `_` (`ACL_OPERATION_DESCRIBE_CONFIGS` is `describe-configs`).
pub trait AclName: Sized + Copy + 'static {
    /// What the values are called in messages (`operation`).
    const WHAT: &'static str;
    /// Every value but UNSPECIFIED.
    const VALUES: &'static [Self];
    /// The short name.
    fn name(self) -> String;

    /// The value named `text` (any case, `_` or `-`).
    ///
    /// # Errors
    /// A message listing the valid names.
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let wanted = text.trim().to_ascii_lowercase().replace('_', "-");
        Self::VALUES
            .iter()
            .copied()
            .find(|v| v.name() == wanted)
            .ok_or_else(|| {
                let valid: Vec<String> = Self::VALUES.iter().map(|v| v.name()).collect();
                format!(
                    "unknown {} {text:?}; valid: {}",
                    Self::WHAT,
                    valid.join(", ")
                )
            })
    }
}

fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
        .replace('_', "-")
}

macro_rules! acl_name {
    ($type:ty, $what:literal, $prefix:literal, [$($value:ident),+ $(,)?]) => {
        impl AclName for $type {
            const WHAT: &'static str = $what;
            const VALUES: &'static [Self] = &[$(<$type>::$value),+];
            fn name(self) -> String {
                short_name(self.as_str_name(), $prefix)
            }
        }
    };
}

acl_name!(
    AclOperation,
    "operation",
    "ACL_OPERATION_",
    [
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
    ]
);
acl_name!(
    ResourceType,
    "resource type",
    "RESOURCE_TYPE_",
    [Topic, Group, Cluster]
);
acl_name!(
    PatternType,
    "pattern type",
    "PATTERN_TYPE_",
    [Literal, Prefixed]
);
acl_name!(
    PatternFilter,
    "pattern",
    "PATTERN_FILTER_",
    [Literal, Prefixed, Match]
);
acl_name!(
    AclPermission,
    "permission",
    "ACL_PERMISSION_",
    [Allow, Deny]
);

/// The short name of an enum field's number, or `unknown(N)` for one this client does not know.
pub fn acl_name_of<T: AclName + TryFrom<i32>>(value: i32) -> String {
    T::try_from(value)
        .ok()
        .filter(|v| T::VALUES.iter().any(|known| known.name() == v.name()))
        .map_or_else(|| format!("unknown({value})"), AclName::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for op in AclOperation::VALUES {
            assert_eq!(AclOperation::parse(&op.name()), Ok(*op));
        }
        assert_eq!(AclOperation::DescribeConfigs.name(), "describe-configs");
        assert_eq!(
            AclOperation::parse("IDEMPOTENT_WRITE"),
            Ok(AclOperation::IdempotentWrite)
        );
        let error = AclOperation::parse("reed").expect_err("unknown");
        assert!(error.contains("read, write"), "{error}");
        assert!(AclOperation::parse("unspecified").is_err());
        assert_eq!(PatternFilter::parse("match"), Ok(PatternFilter::Match));
        assert_eq!(acl_name_of::<AclPermission>(2), "deny");
        assert_eq!(acl_name_of::<AclPermission>(0), "unknown(0)");
        assert_eq!(acl_name_of::<ResourceType>(9), "unknown(9)");
    }
}
