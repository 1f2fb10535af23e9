//! Producer ids for idempotent producers: each node takes blocks of ids from the controller
//! and hands them out; a batch's producer id must be one the cluster handed out.

use super::{Broker, BrokerError};
use crate::controller::metadata::{self, Command};

impl Broker {
    /// A fresh producer id (epoch 0) for an idempotent producer. Ids come from a block this
    /// node took from the controller; a new block is taken when it runs out.
    pub async fn init_producer_id(&self) -> Result<i64, BrokerError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.is_empty() {
            // Another node may take the block first: ask again (bounded).
            let mut attempts = 0;
            loop {
                let first = self
                    .metadata
                    .read()
                    .expect("metadata lock poisoned")
                    .next_producer_id;
                let command = Command::AllocateProducerIds {
                    node: self.node_id,
                    first,
                };
                match self.propose_command(&command).await? {
                    Ok(()) => {
                        *ids = first..first + metadata::PRODUCER_ID_BLOCK;
                        break;
                    }
                    Err(metadata::CommandRefusal::ProducerIdsTaken) if attempts < 10 => {
                        attempts += 1;
                    }
                    Err(refusal) => return Err(BrokerError::Storage(refusal.to_string())),
                }
            }
        }
        let id = ids.next().expect("a non-empty block");
        Ok(id as i64)
    }

    /// Whether the cluster handed out `producer_id`.
    pub(crate) fn producer_id_known(&self, producer_id: i64) -> bool {
        let next = self
            .metadata
            .read()
            .expect("metadata lock poisoned")
            .next_producer_id;
        producer_id >= 0 && (producer_id as u64) < next
    }
}
