//! Which partition a record goes to. Pure: the partition count comes in with each call.
//!
//! - An explicit partition wins.
//! - A record with a key goes where the key hashes (Kafka's murmur2, the same function the
//!   broker uses for `partition_key`), so one key always lands on one partition.
//! - A record with neither sticks to one partition per topic until the batch it is filling
//!   closes, then the topic moves to the next partition round-robin. Whole batches, not single
//!   records, spread over the partitions, so unkeyed records still make large batches.

use std::collections::HashMap;

use strata_proto::partitioner::partition_for_key;

/// How a record chose its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Partition(u32),
    Key(&'a [u8]),
    Any,
}

/// The partitioner: stateless for explicit and keyed records, sticky per topic for the rest.
#[derive(Debug)]
pub(crate) struct Partitioner {
    /// Per topic, the partition unkeyed records go to until its batch closes.
    sticky: HashMap<String, u32>,
    /// Where a topic's first sticky partition starts; different per producer so producers
    /// started together do not all begin on partition 0.
    seed: u32,
}

impl Partitioner {
    pub(crate) fn new(seed: u32) -> Self {
        Self {
            sticky: HashMap::new(),
            seed,
        }
    }

    /// The partition for a record of `topic`, which has `partitions` partitions.
    ///
    /// # Panics
    /// When `partitions` is 0 or an explicit partition is out of range: callers check both
    /// against the topic's description first.
    pub(crate) fn partition(&mut self, topic: &str, target: &Target<'_>, partitions: u32) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        match *target {
            Target::Partition(partition) => {
                assert!(partition < partitions, "explicit partition is checked");
                partition
            }
            Target::Key(key) => partition_for_key(key, partitions),
            Target::Any => {
                // Looked up by `&str`: `entry` would allocate the topic's name for every
                // record. The count is only known per call: a cached sticky partition from a
                // larger count must still land in range.
                match self.sticky.get_mut(topic) {
                    Some(sticky) => {
                        *sticky %= partitions;
                        *sticky
                    }
                    None => {
                        let sticky = self.seed % partitions;
                        self.sticky.insert(topic.to_owned(), sticky);
                        sticky
                    }
                }
            }
        }
    }

    /// A batch of `topic` for `partition` closed: if unkeyed records were sticking to that
    /// partition, move them to the next one.
    pub(crate) fn on_batch_closed(&mut self, topic: &str, partition: u32, partitions: u32) {
        assert!(partitions > 0, "a topic has at least one partition");
        if let Some(sticky) = self.sticky.get_mut(topic)
            && *sticky == partition
        {
            *sticky = (partition + 1) % partitions;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explicit partitions win over keys; keys follow Kafka's hash.
    #[test]
    fn explicit_then_key() {
        let mut partitioner = Partitioner::new(0);
        assert_eq!(partitioner.partition("t", &Target::Partition(3), 4), 3);
        for key in ["a", "user-42", "", "ключ"] {
            let expected = partition_for_key(key.as_bytes(), 7);
            assert_eq!(
                partitioner.partition("t", &Target::Key(key.as_bytes()), 7),
                expected
            );
        }
    }

    /// Unkeyed records stay on one partition until its batch closes, then move on by one,
    /// wrapping around; closing another partition's batch does not move them.
    #[test]
    fn sticky_round_robin() {
        let mut partitioner = Partitioner::new(2);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let partition = partitioner.partition("t", &Target::Any, 3);
            assert_eq!(partitioner.partition("t", &Target::Any, 3), partition);
            // A keyed batch closing elsewhere does not move the sticky partition.
            partitioner.on_batch_closed("t", (partition + 1) % 3, 3);
            assert_eq!(partitioner.partition("t", &Target::Any, 3), partition);
            partitioner.on_batch_closed("t", partition, 3);
            seen.push(partition);
        }
        assert_eq!(seen, [2, 0, 1, 2]);
    }

    /// Each topic has its own sticky partition.
    #[test]
    fn sticky_per_topic() {
        let mut partitioner = Partitioner::new(0);
        assert_eq!(partitioner.partition("a", &Target::Any, 2), 0);
        partitioner.on_batch_closed("a", 0, 2);
        assert_eq!(partitioner.partition("a", &Target::Any, 2), 1);
        assert_eq!(partitioner.partition("b", &Target::Any, 2), 0);
    }

    /// A seed larger than the partition count still lands in range.
    #[test]
    fn seed_in_range() {
        let mut partitioner = Partitioner::new(u32::MAX);
        assert_eq!(partitioner.partition("t", &Target::Any, 4), u32::MAX % 4);
        assert_eq!(partitioner.partition("t", &Target::Any, 1), 0);
    }
}
