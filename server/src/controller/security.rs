//! The users and ACLs part of the cluster metadata: how their commands apply, and the limits
//! that keep them bounded. Values arrive from the controller's log, so they are checked again
//! here (the proposer checked them first, with clearer errors).

use super::metadata::{CommandRefusal, Metadata, PutUserMode};
use crate::security::acl::Acl;
use crate::security::scram::ScramCredential;

/// Most users a cluster keeps (each costs about 200 bytes on every node).
pub const USERS_MAX: usize = 10_000;
/// Most ACLs a cluster keeps; each request's authorization looks at them.
pub const ACLS_MAX: usize = 10_000;
/// Longest user name.
pub const USER_NAME_BYTES_MAX: usize = 255;

/// Checks a user name: 1 to 255 characters of `[a-zA-Z0-9._@-]` (no `:`, which separates the
/// name from the password in a `Basic` authorization header, and nothing a principal's
/// `User:<name>` form would misread).
///
/// # Errors
/// A message naming the bad character or length and what is valid.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > USER_NAME_BYTES_MAX {
        return Err(format!(
            "user name must be 1 to {USER_NAME_BYTES_MAX} characters, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(format!(
            "user name {name:?} has {bad:?}: valid characters are a-z, A-Z, 0-9, '.', '_', '@' \
             and '-'"
        ));
    }
    Ok(())
}

impl Metadata {
    pub(super) fn put_user(
        &mut self,
        name: String,
        credential: ScramCredential,
        mode: PutUserMode,
    ) -> Result<(), CommandRefusal> {
        validate_user_name(&name).map_err(CommandRefusal::Invalid)?;
        credential
            .validate()
            .map_err(|e| CommandRefusal::Invalid(e.to_string()))?;
        let exists = self.users.contains_key(&name);
        match mode {
            PutUserMode::Create if exists => return Err(CommandRefusal::UserExists),
            PutUserMode::SetPassword if !exists => return Err(CommandRefusal::UserMissing),
            PutUserMode::Bootstrap if !self.users.is_empty() => {
                return Err(CommandRefusal::UsersExist);
            }
            _ => {}
        }
        if !exists && self.users.len() >= USERS_MAX {
            return Err(CommandRefusal::Invalid(format!(
                "the cluster has {USERS_MAX} users, the most it keeps: delete one first"
            )));
        }
        self.users.insert(name, credential);
        Ok(())
    }

    pub(super) fn delete_user(&mut self, name: &str) -> Result<(), CommandRefusal> {
        self.users
            .remove(name)
            .map(|_| ())
            .ok_or(CommandRefusal::UserMissing)
    }

    /// All or nothing: one invalid ACL, or too many, refuses the whole command.
    pub(super) fn create_acls(&mut self, acls: Vec<Acl>) -> Result<(), CommandRefusal> {
        for acl in &acls {
            acl.validate().map_err(CommandRefusal::Invalid)?;
        }
        let new = acls.iter().filter(|acl| !self.acls.contains(acl)).count();
        if self.acls.len() + new > ACLS_MAX {
            return Err(CommandRefusal::Invalid(format!(
                "the cluster would have {} ACLs; it keeps at most {ACLS_MAX}: delete some first",
                self.acls.len() + new
            )));
        }
        self.acls.extend(acls);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::Command;
    use crate::security::acl::{Operation, PatternType, Permission, ResourceType};

    fn credential(password: &str) -> ScramCredential {
        ScramCredential::new(password, crate::security::scram::ITERATIONS_DEFAULT).expect("new")
    }

    fn put(name: &str, password: &str, mode: PutUserMode) -> Command {
        Command::PutUser {
            name: name.into(),
            credential: credential(password),
            mode,
        }
    }

    #[test]
    fn users_are_created_once_changed_and_deleted() {
        let mut metadata = Metadata::default();
        assert_eq!(
            metadata.apply(put("alice", "a", PutUserMode::SetPassword)),
            Err(CommandRefusal::UserMissing)
        );
        assert_eq!(
            metadata.apply(put("alice", "a", PutUserMode::Bootstrap)),
            Ok(())
        );
        assert_eq!(
            metadata.apply(put("bob", "b", PutUserMode::Bootstrap)),
            Err(CommandRefusal::UsersExist)
        );
        assert_eq!(
            metadata.apply(put("alice", "x", PutUserMode::Create)),
            Err(CommandRefusal::UserExists)
        );
        assert!(metadata.users["alice"].verify("a"));
        assert_eq!(
            metadata.apply(put("alice", "new", PutUserMode::SetPassword)),
            Ok(())
        );
        assert!(metadata.users["alice"].verify("new") && !metadata.users["alice"].verify("a"));
        assert!(matches!(
            metadata.apply(put("al:ice", "x", PutUserMode::Create)),
            Err(CommandRefusal::Invalid(_))
        ));
        assert_eq!(
            metadata.apply(Command::DeleteUser {
                name: "alice".into()
            }),
            Ok(())
        );
        assert_eq!(
            metadata.apply(Command::DeleteUser {
                name: "alice".into()
            }),
            Err(CommandRefusal::UserMissing)
        );
        assert!(metadata.users.is_empty());
    }

    #[test]
    fn acls_are_added_and_removed_as_sets_and_survive_a_snapshot() {
        let acl = |name: &str| Acl {
            principal: "User:alice".into(),
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Literal,
            resource_name: name.into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        let mut metadata = Metadata::default();
        let create = |names: &[&str]| Command::CreateAcls {
            acls: names.iter().map(|n| acl(n)).collect(),
        };
        assert_eq!(metadata.apply(create(&["a", "b", "a"])), Ok(()));
        assert_eq!(metadata.acls.len(), 2);
        assert!(matches!(
            metadata.apply(create(&["c", ""])),
            Err(CommandRefusal::Invalid(_))
        ));
        assert_eq!(
            metadata.acls.len(),
            2,
            "an invalid ACL refuses the whole command"
        );
        metadata
            .apply(put("alice", "pw", PutUserMode::Create))
            .expect("user");
        let json = serde_json::to_vec(&metadata).expect("json");
        let back: Metadata = serde_json::from_slice(&json).expect("parse");
        assert_eq!(back, metadata);
        assert_eq!(
            metadata.apply(Command::DeleteAcls {
                acls: vec![acl("a"), acl("z")]
            }),
            Ok(())
        );
        assert_eq!(
            metadata
                .acls
                .iter()
                .map(|a| a.resource_name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        // A snapshot written before users and ACLs existed still loads.
        let old: Metadata =
            serde_json::from_str(r#"{"nodes":{},"topics":{},"next_topic_id":0,"applied_index":7}"#)
                .expect("old snapshot");
        assert!(old.users.is_empty() && old.acls.is_empty());
    }

    #[test]
    fn limits_hold() {
        let mut metadata = Metadata::default();
        let many: Vec<Acl> = (0..=ACLS_MAX)
            .map(|i| Acl {
                principal: "User:x".into(),
                resource_type: ResourceType::Group,
                pattern_type: PatternType::Literal,
                resource_name: format!("g{i}"),
                operation: Operation::Read,
                permission: Permission::Allow,
            })
            .collect();
        assert!(matches!(
            metadata.apply(Command::CreateAcls { acls: many }),
            Err(CommandRefusal::Invalid(_))
        ));
        assert!(metadata.acls.is_empty());
        assert!(validate_user_name(&"u".repeat(USER_NAME_BYTES_MAX + 1)).is_err());
        assert!(validate_user_name("svc-orders@prod.example").is_ok());
    }
}
