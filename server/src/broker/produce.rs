//! The produce path: the node-wide budget of produced bytes waiting to commit, routing a batch
//! to a partition (by number, key or round robin), the checks made just before it is proposed
//! (a known producer id, disk room), and the wait for its commit.

use std::future::Future;
use std::sync::atomic::Ordering;

use super::{
    Broker, BrokerError, PRODUCE_BYTES_IN_FLIGHT_MAX, PRODUCE_TIMEOUT, Produced, Target,
    propose_error,
};
use bytes::Bytes;

use crate::partition::PartitionMachine;
use crate::storage::batch::BatchHeader;

impl Broker {
    /// Appends a batch (already validated by [`validate_producer_batch`](crate::partition::validate_producer_batch)) to a partition and
    /// waits until it is committed.
    pub async fn produce(
        &self,
        topic: &str,
        target: Target,
        batch: Bytes,
    ) -> Result<Produced, BrokerError> {
        let permit = self.produce_permit(batch.len()).await?;
        self.start_produce(topic, target, batch, permit)?.await
    }

    /// Waits for room for `bytes` of produced data (see [`PRODUCE_BYTES_IN_FLIGHT_MAX`]).
    pub async fn produce_permit(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, BrokerError> {
        let kib = bytes
            .div_ceil(1024)
            .clamp(1, PRODUCE_BYTES_IN_FLIGHT_MAX >> 10) as u32;
        self.produce_budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| BrokerError::ShuttingDown)
    }

    /// Queues a batch for a partition now (in call order) and returns a future of its commit;
    /// see [`DriverHandle::submit`](crate::replication::DriverHandle::submit). `permit` (from [`Broker::produce_permit`]) is held until
    /// the batch commits.
    pub fn start_produce(
        &self,
        topic: &str,
        target: Target,
        batch: Bytes,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<impl Future<Output = Result<Produced, BrokerError>> + Send + use<>, BrokerError>
    {
        let known = self.topic(topic)?;
        let partitions = known.partitions();
        let partition = match target {
            Target::Partition(partition) => partition,
            Target::Key(key) => strata_proto::partitioner::partition_for_key(&key, partitions),
            Target::Any => self.round_robin.fetch_add(1, Ordering::Relaxed) % partitions,
        };
        let replica = self.replica(topic, partition)?;
        let header =
            BatchHeader::parse(&batch).map_err(|e| BrokerError::CorruptBatch(e.to_string()))?;
        if header.producer_id >= 0 && !self.producer_id_known(header.producer_id) {
            // The controller's leader knows every id handed out; another node's copy of the
            // metadata may not have caught up with the newest block yet.
            return Err(if *self.controller_leader.borrow() == self.node_id {
                BrokerError::UnknownProducerId(header.producer_id)
            } else {
                BrokerError::Unavailable(format!(
                    "producer id {} is not in this node's metadata yet: retry",
                    header.producer_id
                ))
            });
        }
        // Last check before the batch is proposed: raft must never meet a full disk here.
        self.resources
            .disk
            .admit(self.node_id, "produce", batch.len() as u64)?;
        let count = header.offset_count();
        let records = u64::from(header.record_count.max(0).unsigned_abs());
        let bytes = batch.len();
        let traffic = replica.traffic.clone();
        let committed = self
            .driver
            .submit::<PartitionMachine>(replica.group, batch)
            .map_err(|e| self.propose_error(e))?;
        let metadata = self.metadata.clone();
        Ok(async move {
            // The batch's bytes count against the budget until it has committed.
            let _permit = permit;
            let committed = tokio::time::timeout(PRODUCE_TIMEOUT, committed)
                .await
                .map_err(|_| {
                    BrokerError::Timeout(format!(
                        "the batch did not commit within {PRODUCE_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| propose_error(&metadata, e))?;
            // Counted once per batch, here, for every frontend (see `metrics::data`).
            traffic.produced(bytes, records);
            Ok(Produced {
                partition,
                base_offset: committed.next_offset - count,
                last_offset: committed.next_offset - 1,
            })
        })
    }
}
