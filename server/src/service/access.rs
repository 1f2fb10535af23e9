//! # Access: what each gRPC method requires, in one table
//!
//! [`METHODS`] maps every gRPC path the node serves to its [`Rule`]; a path missing from it is
//! refused (fail closed). The README's "Authentication and ACLs" section carries a
//! copy of the table, kept in step by a test. The mapping is Kafka's: produce is topic write,
//! reads are topic read, offsets and descriptions topic describe, group membership and offset
//! changes group read, cluster changes cluster alter.
//!
//! Who checks what:
//! - the authentication layer ([`super::authenticate`]) finds the principal of every request
//!   whose rule is not [`Rule::Open`] or [`Rule::Node`], and checks the rules that need no
//!   request body: [`Rule::Cluster`] and [`Rule::IdempotentWrite`];
//! - each handler checks its topic or group rule with the name from the request, through
//!   [`Access`] (taken from the request before its body is consumed); ProduceStream and
//!   Subscribe check each topic once per stream; ListTopics and ListGroups show only what the
//!   principal may describe.

use std::sync::Arc;

use tonic::{Request, Status};

use super::status::status;
use crate::broker::{Broker, BrokerError};
use crate::security::Principal;
use crate::security::acl::{CLUSTER_RESOURCE_NAME, Operation, Policy, ResourceType};

/// What a method requires of the principal calling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, authenticated or not (gRPC health: load balancers probe it).
    Open,
    /// Any authenticated principal (server reflection).
    Authenticated,
    /// Node-to-node traffic: the peer service checks the node certificate itself, so the
    /// layer passes these through.
    Node,
    /// The operation on the cluster resource (`kafka-cluster`), checked by the layer.
    Cluster(Operation),
    /// The operation on the topic the request names, checked by the handler.
    Topic(Operation),
    /// The operation on the group the request names, checked by the handler.
    Group(Operation),
    /// CreateTopic: topic create on the name, or cluster create (Kafka's rule).
    CreateTopic,
    /// InitProducerId: cluster idempotent-write, or write on any existing topic (Kafka ≥ 3.0:
    /// a producer that may write somewhere may be idempotent).
    IdempotentWrite,
    /// ListTopics and ClusterInfo: any authenticated principal; the reply lists the topics it
    /// may describe.
    ListTopics,
    /// ListGroups: any authenticated principal; the reply lists the groups it may describe.
    ListGroups,
}

impl Rule {
    /// The rule as the README's table writes it.
    pub fn describe(self) -> String {
        match self {
            Self::Open => "open".to_string(),
            Self::Authenticated => "authenticated".to_string(),
            Self::Node => "node certificate".to_string(),
            Self::Cluster(op) => format!("cluster {op}"),
            Self::Topic(op) => format!("topic {op}"),
            Self::Group(op) => format!("group {op}"),
            Self::CreateTopic => "topic create, or cluster create".to_string(),
            Self::IdempotentWrite => {
                "cluster idempotent-write, or topic write on any topic".to_string()
            }
            Self::ListTopics => "authenticated; lists the topics it may describe".to_string(),
            Self::ListGroups => "authenticated; lists the groups it may describe".to_string(),
        }
    }
}

/// Every gRPC path the node serves, with its rule. The one place that says who may call what.
pub const METHODS: &[(&str, Rule)] = {
    use Operation::*;
    use Rule::*;
    &[
        ("/grpc.health.v1.Health/Check", Open),
        ("/grpc.health.v1.Health/Watch", Open),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Authenticated,
        ),
        ("/strata.v1.Peer/Raft", Node),
        ("/strata.v1.Peer/GroupVoters", Node),
        ("/strata.v1.Peer/BootstrapUser", Node),
        ("/strata.v1.Peer/SetKafkaAddress", Node),
        ("/strata.v1.Peer/ProposeCapture", Node),
        ("/strata.v1.Broker/Produce", Topic(Write)),
        ("/strata.v1.Broker/ProduceStream", Topic(Write)),
        ("/strata.v1.Broker/Fetch", Topic(Read)),
        ("/strata.v1.Broker/Subscribe", Topic(Read)),
        ("/strata.v1.Broker/ListOffsets", Topic(Describe)),
        ("/strata.v1.Broker/InitProducerId", Rule::IdempotentWrite),
        ("/strata.v1.Admin/CreateTopic", CreateTopic),
        ("/strata.v1.Admin/DeleteTopic", Topic(Delete)),
        ("/strata.v1.Admin/ListTopics", ListTopics),
        ("/strata.v1.Admin/DescribeTopic", Topic(Describe)),
        ("/strata.v1.Admin/AlterTopicConfig", Topic(AlterConfigs)),
        // The cluster's nodes for anyone authenticated, as Kafka's Metadata: every client
        // (the Rust client's routing, the CLI) reads them.
        ("/strata.v1.Admin/ClusterInfo", ListTopics),
        ("/strata.v1.Admin/AddNode", Cluster(Alter)),
        ("/strata.v1.Admin/RemoveNode", Cluster(Alter)),
        ("/strata.v1.Admin/CreateUser", Cluster(Alter)),
        ("/strata.v1.Admin/SetPassword", Cluster(Alter)),
        ("/strata.v1.Admin/DeleteUser", Cluster(Alter)),
        ("/strata.v1.Admin/ListUsers", Cluster(Describe)),
        ("/strata.v1.Admin/CreateAcls", Cluster(Alter)),
        ("/strata.v1.Admin/DeleteAcls", Cluster(Alter)),
        ("/strata.v1.Admin/ListAcls", Cluster(Describe)),
        // Kafka's CreatePartitions: alter on the topic.
        ("/strata.v1.Admin/AddPartitions", Topic(Alter)),
        ("/strata.v1.Groups/JoinGroup", Group(Read)),
        ("/strata.v1.Groups/Heartbeat", Group(Read)),
        ("/strata.v1.Groups/LeaveGroup", Group(Read)),
        ("/strata.v1.Groups/CommitOffsets", Group(Read)),
        ("/strata.v1.Groups/FetchCommittedOffsets", Group(Describe)),
        ("/strata.v1.Groups/ListGroups", ListGroups),
        ("/strata.v1.Groups/DescribeGroup", Group(Describe)),
        ("/strata.v1.Groups/DeleteGroup", Group(Delete)),
        ("/strata.v1.Groups/ResetOffsets", Group(Read)),
    ]
};

/// The rule of a gRPC path (`/package.Service/Method`); `None` for a path the table does not
/// know, which the layer refuses.
pub fn rule(path: &str) -> Option<Rule> {
    METHODS
        .iter()
        .find(|(known, _)| *known == path)
        .map(|(_, rule)| *rule)
}

/// The gRPC paths of every method of `strata.v1` (`/strata.v1.Service/Method`) in an encoded
/// file descriptor set such as [`strata_proto::v1::FILE_DESCRIPTOR_SET`]: what the table must
/// cover.
///
/// # Errors
/// The bytes are not a file descriptor set.
pub fn strata_methods(descriptor_set: &[u8]) -> Result<Vec<String>, prost::DecodeError> {
    use prost::Message as _;
    let set = descriptor::FileDescriptorSet::decode(descriptor_set)?;
    let mut paths = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            for method in service.method {
                paths.push(format!(
                    "/{package}.{service_name}/{}",
                    method.name.unwrap_or_default()
                ));
            }
        }
    }
    Ok(paths)
}

/// The few fields of `google.protobuf.FileDescriptorSet` that name services and methods
/// (field numbers from descriptor.proto); prost skips the rest.
mod descriptor {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileDescriptorSet {
        #[prost(message, repeated, tag = "1")]
        pub file: Vec<FileDescriptorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileDescriptorProto {
        #[prost(string, optional, tag = "2")]
        pub package: Option<String>,
        #[prost(message, repeated, tag = "6")]
        pub service: Vec<ServiceDescriptorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServiceDescriptorProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(message, repeated, tag = "2")]
        pub method: Vec<MethodDescriptorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MethodDescriptorProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
    }
}

/// Who a request is from and the node's policy: what a handler needs to authorize it. Taken
/// from the request (the authentication layer put the principal in its extensions) before
/// the handler consumes it.
#[derive(Debug, Clone)]
pub struct Access {
    pub principal: Principal,
    policy: Arc<Policy>,
}

impl Access {
    /// The access of `request` under `policy`. A request without a principal (the layer did not
    /// run, which `run` never allows) is anonymous, so an enforcing policy refuses it unless
    /// an ACL names `User:ANONYMOUS`.
    pub fn of<T>(request: &Request<T>, policy: &Arc<Policy>) -> Self {
        Self::new(
            request
                .extensions()
                .get::<Principal>()
                .cloned()
                .unwrap_or(Principal::Anonymous),
            policy.clone(),
        )
    }

    pub fn new(principal: Principal, policy: Arc<Policy>) -> Self {
        Self { principal, policy }
    }

    /// Whether the principal may do `operation` on `name`, under the broker's current ACLs.
    pub fn allows(
        &self,
        broker: &Broker,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> bool {
        if !self.policy.enabled {
            return true;
        }
        broker.with_acls(|acls| {
            self.policy
                .allows(acls, &self.principal, resource_type, name, operation)
        })
    }

    /// [`Access::allows`], or the refusal naming principal, operation and resource.
    ///
    /// # Errors
    /// [`BrokerError::AuthorizationFailed`].
    pub fn check(
        &self,
        broker: &Broker,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> Result<(), BrokerError> {
        if self.allows(broker, resource_type, name, operation) {
            return Ok(());
        }
        Err(self.denied(resource_type, name, operation))
    }

    /// The refusal of `operation` on `name` to this principal.
    pub fn denied(
        &self,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> BrokerError {
        BrokerError::AuthorizationFailed {
            principal: self.principal.to_string(),
            operation: operation.to_string(),
            resource: match resource_type {
                ResourceType::Cluster => "the cluster".to_string(),
                other => format!("{other} {name:?}"),
            },
        }
    }

    /// The handler's check of a topic rule.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming principal, operation and topic.
    pub fn topic(&self, broker: &Broker, operation: Operation, name: &str) -> Result<(), Status> {
        self.check(broker, ResourceType::Topic, name, operation)
            .map_err(status)
    }

    /// The handler's check of a group rule.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming principal, operation and group.
    pub fn group(&self, broker: &Broker, operation: Operation, name: &str) -> Result<(), Status> {
        self.check(broker, ResourceType::Group, name, operation)
            .map_err(status)
    }

    /// CreateTopic's rule: topic create on `name`, or cluster create.
    ///
    /// # Errors
    /// PERMISSION_DENIED naming the topic.
    pub fn create_topic(&self, broker: &Broker, name: &str) -> Result<(), Status> {
        if self.allows(
            broker,
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME,
            Operation::Create,
        ) {
            return Ok(());
        }
        self.topic(broker, Operation::Create, name)
    }

    /// InitProducerId's rule: cluster idempotent-write, or write on any existing topic.
    ///
    /// # Errors
    /// [`BrokerError::AuthorizationFailed`] naming the cluster.
    pub fn idempotent_write(&self, broker: &Broker) -> Result<(), BrokerError> {
        let allowed = self.allows(
            broker,
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME,
            Operation::IdempotentWrite,
        ) || {
            let topics: Vec<String> = {
                let metadata = broker.metadata.read().expect("metadata lock poisoned");
                metadata.topics.keys().cloned().collect()
            };
            topics
                .iter()
                .any(|topic| self.allows(broker, ResourceType::Topic, topic, Operation::Write))
        };
        if allowed {
            return Ok(());
        }
        Err(self.denied(
            ResourceType::Cluster,
            CLUSTER_RESOURCE_NAME,
            Operation::IdempotentWrite,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_strata_method_has_exactly_one_rule_and_unknown_paths_none() {
        let methods =
            strata_methods(strata_proto::v1::FILE_DESCRIPTOR_SET).expect("descriptor set");
        assert!(
            methods.contains(&"/strata.v1.Broker/Produce".to_string()),
            "{methods:?}"
        );
        for method in &methods {
            assert!(rule(method).is_some(), "{method} has no access rule");
        }
        // And the table names no strata.v1 method the proto does not have.
        for (path, _) in METHODS {
            if path.starts_with("/strata.") {
                assert!(
                    methods.contains(&path.to_string()),
                    "{path} is not in the proto"
                );
            }
        }
        let paths: BTreeSet<&str> = METHODS.iter().map(|(path, _)| *path).collect();
        assert_eq!(paths.len(), METHODS.len(), "a path is in the table twice");
        assert_eq!(
            rule("/strata.v1.Broker/Produce"),
            Some(Rule::Topic(Operation::Write))
        );
        assert_eq!(rule("/grpc.health.v1.Health/Check"), Some(Rule::Open));
        assert_eq!(
            rule("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(Rule::Authenticated)
        );
        assert_eq!(rule("/strata.v1.Peer/Raft"), Some(Rule::Node));
        for unknown in [
            "",
            "/",
            "/strata.v1.Broker/produce",
            "/strata.v1.Broker/Produce/",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "/strata.v2.Broker/Produce",
        ] {
            assert_eq!(rule(unknown), None, "{unknown:?}");
        }
    }

    /// The README's table (section "Authentication and ACLs") lists every method of
    /// the code's table with the same rule, and nothing else.
    #[test]
    fn readme_table_matches_the_code() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("### Authentication and ACLs")
            .nth(1)
            .expect("README has the security section")
            // Up to the next section: later tables (the HTTP paths) are not methods.
            .split("\n## ")
            .next()
            .unwrap_or_default();
        let mut documented = std::collections::BTreeMap::new();
        for line in section.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `/path` | rule |
            if let [_, path, rule, ..] = cells[..]
                && let Some(path) = path.strip_prefix('`').and_then(|p| p.strip_suffix('`'))
                && path.starts_with('/')
            {
                documented.insert(path.to_string(), rule.to_string());
            }
        }
        for (path, rule) in METHODS {
            assert_eq!(
                documented.get(*path).map(String::as_str),
                Some(rule.describe().as_str()),
                "README's rule for {path}"
            );
        }
        assert_eq!(
            documented.len(),
            METHODS.len(),
            "README lists other methods"
        );
    }
}
