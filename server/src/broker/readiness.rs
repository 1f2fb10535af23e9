//! Whether this node is ready to serve (`/readyz`): what a load balancer or an orchestrator
//! asks before sending it traffic, or before restarting the next node of a rolling restart.

use super::Broker;
use crate::replication::CONTROLLER;

/// At most this many reasons are listed; the count says how many there were.
const REASONS_LISTED_MAX: usize = 10;

/// Why a node is not ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NotReady {
    /// How many things are not ready.
    pub count: usize,
    /// The first [`REASONS_LISTED_MAX`] of them, in words.
    pub reasons: Vec<String>,
}

impl NotReady {
    fn add(&mut self, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.reasons.len() < REASONS_LISTED_MAX {
            self.reasons.push(reason());
        }
    }
}

impl Broker {
    /// Ready when the controller has a leader and every partition the metadata places on this
    /// node is open here, knows its leader and has caught up with it.
    ///
    /// Caught up: the replica here, when a follower, is within a few entries of the leader's
    /// commit index as the leader last told it (see `replication::catch_up`); the same for the
    /// controller's metadata. A node whose data was wiped, or that was down while the others
    /// went on, is "catching up (at raft index N of M)" until appends bring it back.
    ///
    /// # Errors
    /// What is not ready.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let mut not_ready = NotReady::default();
        if self.controller_leader() == 0 {
            not_ready.add(|| "the controller has no leader (an election is running)".to_string());
        } else if let Some(behind) = self.driver.behind(CONTROLLER) {
            not_ready.add(|| {
                format!(
                    "the controller's metadata is catching up (at raft index {} of {})",
                    behind.committed, behind.leader_commit
                )
            });
        }
        let placed = self.placed_here();
        let replicas = self.replicas.read().expect("lock");
        for (topic, partition, _) in placed {
            let Some(replica) = replicas.get(&(topic.clone(), partition)) else {
                not_ready.add(|| format!("partition {topic}/{partition} is not open here yet"));
                continue;
            };
            if *replica.leader.borrow() == 0 {
                not_ready.add(|| format!("partition {topic}/{partition} has no leader known here"));
            } else if let Some(behind) = self.driver.behind(replica.group) {
                not_ready.add(|| {
                    format!(
                        "partition {topic}/{partition} catching up (at raft index {} of {})",
                        behind.committed, behind.leader_commit
                    )
                });
            }
        }
        if not_ready.count == 0 {
            Ok(())
        } else {
            Err(not_ready)
        }
    }
}

impl Broker {
    /// The partitions the metadata places on this node, with the size of each one's replica
    /// set: what readiness and the partition gauges go over.
    pub(crate) fn placed_here(&self) -> Vec<(String, u32, usize)> {
        let node = self.node_id();
        let metadata = self.metadata.read().expect("lock");
        metadata
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|(_, replicas)| replicas.contains(&node))
                    .map(|(partition, replicas)| {
                        (topic.name.clone(), partition as u32, replicas.len())
                    })
            })
            .collect()
    }
}
