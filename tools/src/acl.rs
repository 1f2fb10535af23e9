//! `strata acl create|list|delete`: the cluster's ACLs, in Kafka's model.
//!
//! `create` makes one ACL per operation given (`--operation read,describe` makes two). `list`
//! and `delete` take the same flags as filters, all optional; `delete` refuses an empty filter
//! unless `--all` is given, and prints what it deleted.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use strata_client::Client;
use strata_client::security::{
    AclEntry, AclFilter, AclName, AclOperation, AclPermission, CLUSTER_RESOURCE_NAME,
    PatternFilter, PatternType, ResourceType, acl_name_of,
};

use crate::format::Format;
use crate::output::column_width;

#[derive(clap::Subcommand)]
pub enum AclCommand {
    /// Create ACLs: one per operation given.
    Create(CreateArgs),
    /// List the ACLs matching the filters (all of them without filters).
    List(FilterArgs),
    /// Delete the ACLs matching the filters; prints what was deleted.
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
        /// Delete every ACL (required when no filter is given).
        #[arg(long)]
        all: bool,
    },
}

/// Which resource an ACL is about: one of `--topic`, `--group`, `--cluster`.
#[derive(Args, Debug, Default)]
#[group(multiple = false)]
pub struct ResourceArgs {
    /// A topic name (or prefix with --prefixed; `*` for every topic).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group id (or prefix with --prefixed; `*` for every group).
    #[arg(long)]
    group: Option<String>,
    /// The cluster itself.
    #[arg(long)]
    cluster: bool,
}

impl ResourceArgs {
    fn resource(&self) -> Option<(ResourceType, String)> {
        if let Some(topic) = &self.topic {
            Some((ResourceType::Topic, topic.clone()))
        } else if let Some(group) = &self.group {
            Some((ResourceType::Group, group.clone()))
        } else if self.cluster {
            Some((ResourceType::Cluster, CLUSTER_RESOURCE_NAME.to_string()))
        } else {
            None
        }
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Who the ACL is for: User:NAME, or User:* for everyone.
    #[arg(long)]
    principal: String,
    #[command(flatten)]
    resource: ResourceArgs,
    /// The name is a prefix: the ACL covers every resource whose name starts with it.
    #[arg(long)]
    prefixed: bool,
    /// Comma-separated operations: all, read, write, create, delete, alter, describe,
    /// describe-configs, alter-configs, idempotent-write, cluster-action.
    #[arg(long, value_delimiter = ',', required = true)]
    operation: Vec<String>,
    /// Deny instead of allow (a deny wins over any allow).
    #[arg(long)]
    deny: bool,
    /// Not supported: Strata's ACLs do not name hosts.
    #[arg(long, hide = true)]
    host: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Only ACLs for this principal (User:NAME or User:*).
    #[arg(long)]
    principal: Option<String>,
    #[command(flatten)]
    resource: ResourceArgs,
    /// Compare the name as: literal, prefixed, or match (the ACLs that apply to that
    /// resource: literal of that name or `*`, and prefixes of it). Default: exact name, any
    /// pattern type.
    #[arg(long, conflicts_with = "prefixed")]
    pattern: Option<String>,
    /// Same as --pattern prefixed.
    #[arg(long)]
    prefixed: bool,
    /// Only ACLs of this operation.
    #[arg(long)]
    operation: Option<String>,
    /// Only deny ACLs.
    #[arg(long, conflicts_with = "allow")]
    deny: bool,
    /// Only allow ACLs.
    #[arg(long)]
    allow: bool,
}

/// The ACLs `create` asks for: one per operation.
fn entries(args: &CreateArgs) -> Result<Vec<AclEntry>> {
    if args.host.is_some() {
        bail!("--host is not supported: Strata's ACLs apply from every host");
    }
    let Some((resource_type, resource_name)) = args.resource.resource() else {
        bail!("name the resource: --topic NAME, --group NAME or --cluster");
    };
    if args.prefixed && resource_type == ResourceType::Cluster {
        bail!("--prefixed does not apply to --cluster");
    }
    let pattern_type = if args.prefixed {
        PatternType::Prefixed
    } else {
        PatternType::Literal
    };
    let permission = if args.deny {
        AclPermission::Deny
    } else {
        AclPermission::Allow
    };
    let mut operations = Vec::new();
    for text in args.operation.iter().filter(|t| !t.trim().is_empty()) {
        let operation = AclOperation::parse(text).map_err(anyhow::Error::msg)?;
        if !operations.contains(&operation) {
            operations.push(operation);
        }
    }
    if operations.is_empty() {
        bail!("give at least one --operation");
    }
    Ok(operations
        .into_iter()
        .map(|operation| AclEntry {
            principal: args.principal.clone(),
            resource_type: resource_type as i32,
            pattern_type: pattern_type as i32,
            resource_name: resource_name.clone(),
            operation: operation as i32,
            permission: permission as i32,
        })
        .collect())
}

/// The filter the flags describe.
fn filter(args: &FilterArgs) -> Result<AclFilter> {
    let resource = args.resource.resource();
    let pattern = match (&args.pattern, args.prefixed) {
        (Some(text), _) => Some(PatternFilter::parse(text).map_err(anyhow::Error::msg)?),
        (None, true) => Some(PatternFilter::Prefixed),
        (None, false) => None,
    };
    if pattern == Some(PatternFilter::Match) && resource.is_none() {
        bail!("--pattern match needs the resource: --topic NAME, --group NAME or --cluster");
    }
    let operation = match &args.operation {
        Some(text) => Some(AclOperation::parse(text).map_err(anyhow::Error::msg)? as i32),
        None => None,
    };
    let permission = if args.deny {
        Some(AclPermission::Deny as i32)
    } else if args.allow {
        Some(AclPermission::Allow as i32)
    } else {
        None
    };
    Ok(AclFilter {
        principal: args.principal.clone(),
        resource_type: resource.as_ref().map(|(t, _)| *t as i32),
        pattern: pattern.map(|p| p as i32),
        resource_name: resource.map(|(_, name)| name),
        operation,
        permission,
    })
}

/// One ACL as JSON, with the short names.
fn acl_json(acl: &AclEntry) -> Value {
    json!({
        "principal": acl.principal,
        "resource_type": acl_name_of::<ResourceType>(acl.resource_type),
        "pattern_type": acl_name_of::<PatternType>(acl.pattern_type),
        "resource_name": acl.resource_name,
        "operation": acl_name_of::<AclOperation>(acl.operation),
        "permission": acl_name_of::<AclPermission>(acl.permission),
    })
}

fn print_acls(acls: &[AclEntry], format: Format) {
    match format {
        Format::Json => {
            println!(
                "{}",
                Value::Array(acls.iter().map(acl_json).collect::<Vec<_>>())
            );
        }
        Format::Text => {
            let principal = column_width(acls.iter().map(|a| a.principal.as_str()), "principal");
            let name = column_width(acls.iter().map(|a| a.resource_name.as_str()), "resource");
            println!(
                "{:principal$}  {:8}  {:8}  {:name$}  {:16}  permission",
                "principal", "type", "pattern", "resource", "operation"
            );
            for acl in acls {
                println!(
                    "{:principal$}  {:8}  {:8}  {:name$}  {:16}  {}",
                    acl.principal,
                    acl_name_of::<ResourceType>(acl.resource_type),
                    acl_name_of::<PatternType>(acl.pattern_type),
                    acl.resource_name,
                    acl_name_of::<AclOperation>(acl.operation),
                    acl_name_of::<AclPermission>(acl.permission),
                );
            }
        }
    }
}

/// ACLs in a stable order for printing.
fn sorted(mut acls: Vec<AclEntry>) -> Vec<AclEntry> {
    acls.sort_by(|a, b| {
        (
            &a.principal,
            a.resource_type,
            &a.resource_name,
            a.pattern_type,
            a.operation,
        )
            .cmp(&(
                &b.principal,
                b.resource_type,
                &b.resource_name,
                b.pattern_type,
                b.operation,
            ))
    });
    acls
}

pub async fn run(client: &Client, command: AclCommand, format: Format) -> Result<()> {
    let admin = client.admin();
    match command {
        AclCommand::Create(args) => {
            let acls = entries(&args)?;
            admin
                .create_acls(acls.clone())
                .await
                .context("create ACLs")?;
            match format {
                Format::Json => print_acls(&acls, format),
                Format::Text => {
                    println!("created {} ACL(s)", acls.len());
                    print_acls(&acls, format);
                }
            }
        }
        AclCommand::List(args) => {
            let acls = admin.list_acls(filter(&args)?).await.context("list ACLs")?;
            print_acls(&sorted(acls), format);
        }
        AclCommand::Delete { filter: args, all } => {
            let filter = filter(&args)?;
            if filter == AclFilter::default() && !all {
                bail!(
                    "no filter given: that deletes every ACL; add --all if that is what you \
                     mean, or filter with --principal, --topic, --group, --cluster, \
                     --operation, --deny"
                );
            }
            let deleted = admin.delete_acls(filter).await.context("delete ACLs")?;
            let deleted = sorted(deleted);
            match format {
                Format::Json => print_acls(&deleted, format),
                Format::Text => {
                    println!("deleted {} ACL(s)", deleted.len());
                    if !deleted.is_empty() {
                        print_acls(&deleted, format);
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AclCommand,
    }

    fn parse(args: &[&str]) -> AclCommand {
        let mut all = vec!["acl"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").command
    }

    #[test]
    fn create_makes_one_acl_per_operation() {
        let AclCommand::Create(args) = parse(&[
            "create",
            "--principal",
            "User:alice",
            "--topic",
            "orders",
            "--prefixed",
            "--operation",
            "read,describe,read",
            "--deny",
        ]) else {
            panic!("create")
        };
        let acls = entries(&args).expect("valid");
        assert_eq!(acls.len(), 2);
        assert_eq!(acls[0].operation, AclOperation::Read as i32);
        assert_eq!(acls[1].operation, AclOperation::Describe as i32);
        assert!(
            acls.iter()
                .all(|a| a.pattern_type == PatternType::Prefixed as i32
                    && a.permission == AclPermission::Deny as i32
                    && a.resource_name == "orders")
        );
        let AclCommand::Create(bad) = parse(&[
            "create",
            "--principal",
            "User:alice",
            "--cluster",
            "--operation",
            "reed",
        ]) else {
            panic!("create")
        };
        let error = entries(&bad).expect_err("unknown operation").to_string();
        assert!(error.contains("valid: all, read, write"), "{error}");
    }

    #[test]
    fn filters_are_optional_and_match_needs_a_resource() {
        let AclCommand::List(args) = parse(&["list"]) else {
            panic!("list")
        };
        assert_eq!(filter(&args).expect("empty"), AclFilter::default());
        let AclCommand::List(args) = parse(&["list", "--topic", "orders", "--pattern", "match"])
        else {
            panic!("list")
        };
        let got = filter(&args).expect("match");
        assert_eq!(got.pattern, Some(PatternFilter::Match as i32));
        assert_eq!(got.resource_name.as_deref(), Some("orders"));
        let AclCommand::List(args) = parse(&["list", "--pattern", "match"]) else {
            panic!("list")
        };
        assert!(filter(&args).is_err());
    }
}
