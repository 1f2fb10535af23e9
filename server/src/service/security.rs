//! The Admin service's users and ACLs calls, translated to and from [`Broker`] calls, and the
//! protocol's ACL enums to the broker's values (an UNSPECIFIED enum is refused, naming the
//! field and the valid values).

use strata_proto::v1 as pb;
use tonic::Status;

use super::Service;
use super::status::status;
use crate::broker::BrokerError;
use crate::broker::security::{AclFilter, PatternFilter, UserInfo};
use crate::security::ConnectionInfo;
use crate::security::acl::{Acl, Operation, PatternType, Permission, ResourceType};

/// How every password is kept, as ListUsers names it.
const MECHANISM: &str = "SCRAM-SHA-256";

/// A request carrying a new password must come over TLS, or from this machine (loopback):
/// anywhere else a plaintext connection would show it to the network.
///
/// # Errors
/// INVALID_ARGUMENT saying how to send it safely.
pub(super) fn password_transport_is_safe<T>(request: &tonic::Request<T>) -> Result<(), Status> {
    let info = request.extensions().get::<ConnectionInfo>();
    let tls = info.is_some_and(|info| info.tls);
    let local = info
        .and_then(|info| info.remote)
        .is_some_and(|remote| remote.ip().is_loopback());
    if tls || local {
        return Ok(());
    }
    Err(status(BrokerError::InvalidArgument(
        "a password is accepted only over TLS (or from the node's own machine): start the \
         node with --tls-cert and --tls-key and connect with --tls-ca"
            .to_string(),
    )))
}

impl Service {
    pub(super) async fn create_user_reply(
        &self,
        request: pb::CreateUserRequest,
    ) -> Result<pb::CreateUserResponse, Status> {
        self.broker()?
            .create_user(&request.name, &request.password)
            .await
            .map_err(status)?;
        Ok(pb::CreateUserResponse {})
    }

    pub(super) async fn set_password_reply(
        &self,
        request: pb::SetPasswordRequest,
    ) -> Result<pb::SetPasswordResponse, Status> {
        self.broker()?
            .set_password(&request.name, &request.password)
            .await
            .map_err(status)?;
        Ok(pb::SetPasswordResponse {})
    }

    pub(super) async fn delete_user_reply(
        &self,
        request: pb::DeleteUserRequest,
    ) -> Result<pb::DeleteUserResponse, Status> {
        self.broker()?
            .delete_user(&request.name)
            .await
            .map_err(status)?;
        Ok(pb::DeleteUserResponse {})
    }

    pub(super) fn list_users_reply(&self) -> Result<pb::ListUsersResponse, Status> {
        let users = self
            .broker()?
            .list_users()
            .into_iter()
            .map(user_to_proto)
            .collect();
        Ok(pb::ListUsersResponse { users })
    }

    pub(super) async fn create_acls_reply(
        &self,
        request: pb::CreateAclsRequest,
    ) -> Result<pb::CreateAclsResponse, Status> {
        let acls = request
            .acls
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                acl_from_proto(entry)
                    .map_err(|reason| BrokerError::InvalidArgument(format!("ACL {i}: {reason}")))
            })
            .collect::<Result<Vec<Acl>, BrokerError>>()
            .map_err(status)?;
        self.broker()?.create_acls(acls).await.map_err(status)?;
        Ok(pb::CreateAclsResponse {})
    }

    pub(super) async fn delete_acls_reply(
        &self,
        request: pb::DeleteAclsRequest,
    ) -> Result<pb::DeleteAclsResponse, Status> {
        let filter = filter_from_proto(request.filter.unwrap_or_default())
            .map_err(|reason| status(BrokerError::InvalidArgument(reason)))?;
        let deleted = self.broker()?.delete_acls(&filter).await.map_err(status)?;
        Ok(pb::DeleteAclsResponse {
            deleted: deleted.iter().map(acl_to_proto).collect(),
        })
    }

    pub(super) fn list_acls_reply(
        &self,
        request: pb::ListAclsRequest,
    ) -> Result<pb::ListAclsResponse, Status> {
        let filter = filter_from_proto(request.filter.unwrap_or_default())
            .map_err(|reason| status(BrokerError::InvalidArgument(reason)))?;
        let acls = self.broker()?.list_acls(&filter).map_err(status)?;
        Ok(pb::ListAclsResponse {
            acls: acls.iter().map(acl_to_proto).collect(),
        })
    }
}

fn user_to_proto(user: UserInfo) -> pb::UserInfo {
    pb::UserInfo {
        name: user.name,
        mechanism: MECHANISM.to_string(),
        iterations: user.iterations,
    }
}

/// One enum field of a request: known and not UNSPECIFIED.
fn enum_field<P, T>(
    field: &str,
    value: i32,
    convert: impl Fn(P) -> Option<T>,
    valid: &[T],
) -> Result<T, String>
where
    P: TryFrom<i32>,
    T: std::fmt::Display,
{
    P::try_from(value).ok().and_then(convert).ok_or_else(|| {
        let valid: Vec<String> = valid.iter().map(ToString::to_string).collect();
        format!(
            "{field} must be set to one of: {} (got {value})",
            valid.join(", ")
        )
    })
}

fn resource_type_from_proto(value: i32) -> Result<ResourceType, String> {
    enum_field(
        "resource_type",
        value,
        |t: pb::ResourceType| match t {
            pb::ResourceType::Unspecified => None,
            pb::ResourceType::Topic => Some(ResourceType::Topic),
            pb::ResourceType::Group => Some(ResourceType::Group),
            pb::ResourceType::Cluster => Some(ResourceType::Cluster),
        },
        ResourceType::ALL,
    )
}

fn pattern_type_from_proto(value: i32) -> Result<PatternType, String> {
    enum_field(
        "pattern_type",
        value,
        |t: pb::PatternType| match t {
            pb::PatternType::Unspecified => None,
            pb::PatternType::Literal => Some(PatternType::Literal),
            pb::PatternType::Prefixed => Some(PatternType::Prefixed),
        },
        PatternType::ALL,
    )
}

fn operation_from_proto(value: i32) -> Result<Operation, String> {
    use pb::AclOperation as P;
    enum_field(
        "operation",
        value,
        |o: P| {
            Some(match o {
                P::Unspecified => return None,
                P::All => Operation::All,
                P::Read => Operation::Read,
                P::Write => Operation::Write,
                P::Create => Operation::Create,
                P::Delete => Operation::Delete,
                P::Alter => Operation::Alter,
                P::Describe => Operation::Describe,
                P::DescribeConfigs => Operation::DescribeConfigs,
                P::AlterConfigs => Operation::AlterConfigs,
                P::IdempotentWrite => Operation::IdempotentWrite,
                P::ClusterAction => Operation::ClusterAction,
            })
        },
        Operation::ALL,
    )
}

fn permission_from_proto(value: i32) -> Result<Permission, String> {
    enum_field(
        "permission",
        value,
        |p: pb::AclPermission| match p {
            pb::AclPermission::Unspecified => None,
            pb::AclPermission::Allow => Some(Permission::Allow),
            pb::AclPermission::Deny => Some(Permission::Deny),
        },
        Permission::ALL,
    )
}

fn pattern_filter_from_proto(value: i32) -> Result<PatternFilter, String> {
    pb::PatternFilter::try_from(value)
        .ok()
        .and_then(|p| match p {
            pb::PatternFilter::Unspecified => None,
            pb::PatternFilter::Literal => Some(PatternFilter::Literal),
            pb::PatternFilter::Prefixed => Some(PatternFilter::Prefixed),
            pb::PatternFilter::Match => Some(PatternFilter::Match),
        })
        .ok_or_else(|| {
            format!("pattern must be literal, prefixed or match, or unset for any (got {value})")
        })
}

/// An ACL from a request; every enum must be set.
///
/// # Errors
/// The first unset or unknown enum field, with the valid values.
pub(super) fn acl_from_proto(entry: &pb::AclEntry) -> Result<Acl, String> {
    Ok(Acl {
        principal: entry.principal.clone(),
        resource_type: resource_type_from_proto(entry.resource_type)?,
        pattern_type: pattern_type_from_proto(entry.pattern_type)?,
        resource_name: entry.resource_name.clone(),
        operation: operation_from_proto(entry.operation)?,
        permission: permission_from_proto(entry.permission)?,
    })
}

pub(super) fn acl_to_proto(acl: &Acl) -> pb::AclEntry {
    use pb::AclOperation as P;
    let operation = match acl.operation {
        Operation::All => P::All,
        Operation::Read => P::Read,
        Operation::Write => P::Write,
        Operation::Create => P::Create,
        Operation::Delete => P::Delete,
        Operation::Alter => P::Alter,
        Operation::Describe => P::Describe,
        Operation::DescribeConfigs => P::DescribeConfigs,
        Operation::AlterConfigs => P::AlterConfigs,
        Operation::IdempotentWrite => P::IdempotentWrite,
        Operation::ClusterAction => P::ClusterAction,
    };
    pb::AclEntry {
        principal: acl.principal.clone(),
        resource_type: match acl.resource_type {
            ResourceType::Topic => pb::ResourceType::Topic,
            ResourceType::Group => pb::ResourceType::Group,
            ResourceType::Cluster => pb::ResourceType::Cluster,
        } as i32,
        pattern_type: match acl.pattern_type {
            PatternType::Literal => pb::PatternType::Literal,
            PatternType::Prefixed => pb::PatternType::Prefixed,
        } as i32,
        resource_name: acl.resource_name.clone(),
        operation: operation as i32,
        permission: match acl.permission {
            Permission::Allow => pb::AclPermission::Allow,
            Permission::Deny => pb::AclPermission::Deny,
        } as i32,
    }
}

/// A filter from a request: absent fields match anything; a field set to UNSPECIFIED is
/// refused, so a client that meant a value does not silently select everything.
///
/// # Errors
/// The first bad field, with the valid values; a MATCH without a resource name.
pub(super) fn filter_from_proto(filter: pb::AclFilter) -> Result<AclFilter, String> {
    let filter = AclFilter {
        principal: filter.principal,
        resource_type: filter
            .resource_type
            .map(resource_type_from_proto)
            .transpose()?,
        pattern: filter.pattern.map(pattern_filter_from_proto).transpose()?,
        resource_name: filter.resource_name,
        operation: filter.operation.map(operation_from_proto).transpose()?,
        permission: filter.permission.map(permission_from_proto).transpose()?,
    };
    filter.validate()?;
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_travel_over_tls_or_loopback_only() {
        let request = |info: Option<ConnectionInfo>| {
            let mut request = tonic::Request::new(());
            if let Some(info) = info {
                request.extensions_mut().insert(info);
            }
            request
        };
        let from = |address: &str, tls: bool| {
            Some(ConnectionInfo {
                remote: Some(address.parse().expect("address")),
                tls,
                certificate: None,
            })
        };
        assert!(password_transport_is_safe(&request(from("10.0.0.7:5000", true))).is_ok());
        assert!(password_transport_is_safe(&request(from("127.0.0.1:5000", false))).is_ok());
        assert!(password_transport_is_safe(&request(from("[::1]:5000", false))).is_ok());
        let refused = password_transport_is_safe(&request(from("10.0.0.7:5000", false)))
            .expect_err("plaintext from the network");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("--tls-cert"), "{refused:?}");
        assert!(password_transport_is_safe(&request(None)).is_err());
    }

    fn entry() -> pb::AclEntry {
        pb::AclEntry {
            principal: "User:alice".into(),
            resource_type: pb::ResourceType::Topic as i32,
            pattern_type: pb::PatternType::Prefixed as i32,
            resource_name: "orders".into(),
            operation: pb::AclOperation::DescribeConfigs as i32,
            permission: pb::AclPermission::Deny as i32,
        }
    }

    /// Every operation, type and permission goes to the broker's value and back unchanged.
    #[test]
    fn acls_round_trip() {
        let acl = acl_from_proto(&entry()).expect("valid");
        assert_eq!(
            acl,
            Acl {
                principal: "User:alice".into(),
                resource_type: ResourceType::Topic,
                pattern_type: PatternType::Prefixed,
                resource_name: "orders".into(),
                operation: Operation::DescribeConfigs,
                permission: Permission::Deny,
            }
        );
        for operation in Operation::ALL {
            for resource_type in ResourceType::ALL {
                for permission in Permission::ALL {
                    let acl = Acl {
                        operation: *operation,
                        resource_type: *resource_type,
                        permission: *permission,
                        ..acl.clone()
                    };
                    assert_eq!(acl_from_proto(&acl_to_proto(&acl)), Ok(acl.clone()));
                }
            }
        }
    }

    /// UNSPECIFIED (or an unknown number) in any enum field is refused, naming the field and
    /// the valid values.
    #[test]
    fn unspecified_enums_are_refused_by_name() {
        let cases: [(&str, pb::AclEntry); 5] = [
            (
                "resource_type",
                pb::AclEntry {
                    resource_type: 0,
                    ..entry()
                },
            ),
            (
                "pattern_type",
                pb::AclEntry {
                    pattern_type: 0,
                    ..entry()
                },
            ),
            (
                "operation",
                pb::AclEntry {
                    operation: 0,
                    ..entry()
                },
            ),
            (
                "permission",
                pb::AclEntry {
                    permission: 0,
                    ..entry()
                },
            ),
            (
                "operation",
                pb::AclEntry {
                    operation: 99,
                    ..entry()
                },
            ),
        ];
        for (field, bad) in cases {
            let error = acl_from_proto(&bad).expect_err(field);
            assert!(error.starts_with(field), "{error}");
        }
        let error = acl_from_proto(&pb::AclEntry {
            operation: 0,
            ..entry()
        })
        .expect_err("op");
        assert!(error.contains("read, write"), "{error}");
    }

    #[test]
    fn filters_translate_and_refuse_unspecified_fields() {
        assert_eq!(
            filter_from_proto(pb::AclFilter::default()),
            Ok(AclFilter::default())
        );
        let filter = filter_from_proto(pb::AclFilter {
            principal: Some("User:*".into()),
            resource_type: Some(pb::ResourceType::Group as i32),
            pattern: Some(pb::PatternFilter::Match as i32),
            resource_name: Some("g1".into()),
            operation: Some(pb::AclOperation::Read as i32),
            permission: Some(pb::AclPermission::Allow as i32),
        })
        .expect("valid");
        assert_eq!(
            filter,
            AclFilter {
                principal: Some("User:*".into()),
                resource_type: Some(ResourceType::Group),
                pattern: Some(PatternFilter::Match),
                resource_name: Some("g1".into()),
                operation: Some(Operation::Read),
                permission: Some(Permission::Allow),
            }
        );
        for bad in [
            pb::AclFilter {
                resource_type: Some(0),
                ..Default::default()
            },
            pb::AclFilter {
                pattern: Some(0),
                ..Default::default()
            },
            pb::AclFilter {
                operation: Some(0),
                ..Default::default()
            },
            pb::AclFilter {
                permission: Some(7),
                ..Default::default()
            },
            pb::AclFilter {
                pattern: Some(pb::PatternFilter::Match as i32),
                ..Default::default()
            },
        ] {
            assert!(filter_from_proto(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn users_list_without_keys() {
        let user = user_to_proto(UserInfo {
            name: "alice".into(),
            iterations: 4096,
        });
        assert_eq!(user.mechanism, "SCRAM-SHA-256");
        assert_eq!((user.name.as_str(), user.iterations), ("alice", 4096));
    }
}
