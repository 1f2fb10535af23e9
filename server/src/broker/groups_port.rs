//! The broker as the consumer groups' [`ControllerPort`]: their reads of the metadata, their
//! controller commands and replica lookups go through the broker's own paths, so they fail
//! with the same [`BrokerError`]s as every other request.

use std::future::Future;
use std::sync::{Arc, RwLockReadGuard};

use super::{Broker, BrokerError};
use crate::clock::SharedClock;
use crate::controller::metadata::{Command, Metadata, Topic};
use crate::groups::ControllerPort;
use crate::partition::PartitionReplica;
use crate::replication::ProposeError;

impl ControllerPort for Broker {
    type Error = BrokerError;

    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn controller_leader(&self) -> u64 {
        *self.controller_leader.borrow()
    }

    fn not_controller_leader(&self, leader_id: u64) -> BrokerError {
        self.controller_error(ProposeError::NotLeader { leader_id })
    }

    fn read_metadata(&self) -> RwLockReadGuard<'_, Metadata> {
        self.metadata.read().expect("metadata lock poisoned")
    }

    fn node_address(&self, node: u64) -> Option<String> {
        Broker::node_address(self, node)
    }

    fn propose(&self, command: Command) -> impl Future<Output = Result<(), BrokerError>> + Send {
        self.propose_metadata(command)
    }

    fn topic(&self, name: &str) -> Result<Topic, BrokerError> {
        Broker::topic(self, name)
    }

    fn check_partition(&self, topic: &str, partition: u32) -> Result<(), BrokerError> {
        Broker::check_partition(self, topic, partition).map(|_| ())
    }

    fn replica(&self, topic: &str, partition: u32) -> Result<Arc<PartitionReplica>, BrokerError> {
        Broker::replica(self, topic, partition)
    }

    fn local_replica(&self, topic: &str, partition: u32) -> Option<Arc<PartitionReplica>> {
        self.replicas
            .read()
            .expect("lock")
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    fn clock(&self) -> &SharedClock {
        &self.clock
    }
}
