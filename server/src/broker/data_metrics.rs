//! What the node's data metrics read from the broker at scrape time (see
//! [`crate::metrics::data`]), and the per-topic counters its partitions keep.

use std::collections::BTreeMap;

use super::{Broker, PRODUCE_BYTES_IN_FLIGHT_MAX};
use crate::metrics::data::{DataSnapshot, TopicTraffic};

impl Broker {
    /// The scrape-time data figures now: disk bytes per local topic, the produce budget in use
    /// and the data volume's space.
    pub fn data_snapshot(&self) -> DataSnapshot {
        let replicas: Vec<_> = self
            .replicas
            .read()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        let mut topic_disk_bytes: BTreeMap<String, u64> = BTreeMap::new();
        for replica in replicas {
            let bytes = replica.log.read().expect("log lock poisoned").size_bytes();
            *topic_disk_bytes.entry(replica.topic.clone()).or_default() += bytes;
        }
        let budget_kib = PRODUCE_BYTES_IN_FLIGHT_MAX >> 10;
        let in_use_kib = budget_kib.saturating_sub(self.produce_budget.available_permits());
        DataSnapshot {
            topic_disk_bytes: topic_disk_bytes.into_iter().collect(),
            produce_budget_bytes_in_use: (in_use_kib as u64) << 10,
            disk_space: crate::resources::disk_space(&self.data_dir).ok(),
        }
    }

    /// The traffic counters of `topic`, for a partition of it opening here.
    pub(super) fn topic_traffic(&self, topic: &str) -> TopicTraffic {
        self.metrics.data.topic(topic)
    }

    /// Removes `topic`'s traffic series when no partition of it is open here any more.
    pub(super) fn forget_topic_traffic(&self, topic: &str) {
        let still_here = self
            .replicas
            .read()
            .expect("lock")
            .keys()
            .any(|(name, _)| name == topic);
        if !still_here {
            self.metrics.data.remove_topic(topic);
        }
    }
}
