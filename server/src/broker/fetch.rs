//! Reads as a frontend asks for them: by topic, partition and start [`StartFrom`], within the
//! fetch limits ([`FetchLimits`]). A fetch, an offset lookup and a subscription all start by
//! resolving the position on the local replica ([`Broker::resolve_at`]).

use std::sync::Arc;
use std::time::Duration;

use super::{Broker, BrokerError};
use crate::partition::{
    FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, Fetched, ListedOffsets,
    PartitionReplica, StartFrom,
};

/// How long a fetch may wait and how much it returns, checked against the node's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Wait up to this long for `min_bytes` (long poll).
    pub max_wait: Duration,
    pub min_bytes: usize,
    /// At least one batch is returned even when larger.
    pub max_bytes: usize,
}

impl FetchLimits {
    /// Checks a request's limits; `max_bytes` 0 means [`FETCH_BYTES_DEFAULT`].
    ///
    /// # Errors
    /// [`BrokerError::InvalidArgument`] for a wait over [`FETCH_WAIT_MS_MAX`] or a size over
    /// [`FETCH_BYTES_MAX`], naming the limit.
    pub fn new(max_wait_ms: u32, min_bytes: u32, max_bytes: u32) -> Result<Self, BrokerError> {
        if max_wait_ms > FETCH_WAIT_MS_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "max_wait_ms {max_wait_ms} is too long: at most {FETCH_WAIT_MS_MAX}"
            )));
        }
        if max_bytes > FETCH_BYTES_MAX {
            return Err(BrokerError::InvalidArgument(format!(
                "max_bytes {max_bytes} is too large: at most {FETCH_BYTES_MAX}"
            )));
        }
        let max_bytes = if max_bytes == 0 {
            FETCH_BYTES_DEFAULT
        } else {
            max_bytes
        };
        Ok(Self {
            max_wait: Duration::from_millis(u64::from(max_wait_ms)),
            min_bytes: min_bytes as usize,
            max_bytes: max_bytes as usize,
        })
    }
}

impl Broker {
    /// The local replica of `topic`/`partition` and the offset `start` resolves to on it (see
    /// [`Broker::resolve`]).
    ///
    /// # Errors
    /// As [`Broker::replica`] and [`Broker::resolve`].
    pub fn resolve_at(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
    ) -> Result<(Arc<PartitionReplica>, u64), BrokerError> {
        let replica = self.replica(topic, partition)?;
        let offset = self.resolve(&replica, start)?;
        Ok((replica, offset))
    }

    /// Reads committed batches of `topic`/`partition` from `start` (see [`Broker::fetch`]);
    /// returns the resolved start offset with what was read.
    ///
    /// # Errors
    /// As [`Broker::resolve_at`] and [`Broker::fetch`].
    pub async fn fetch_at(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
        limits: FetchLimits,
    ) -> Result<(u64, Fetched), BrokerError> {
        let (replica, offset) = self.resolve_at(topic, partition, start)?;
        let fetched = self
            .fetch(
                &replica,
                offset,
                limits.max_bytes,
                limits.min_bytes,
                limits.max_wait,
            )
            .await?;
        Ok((offset, fetched))
    }

    /// Where `start` resolves to on `topic`/`partition`, and the partition's bounds.
    ///
    /// # Errors
    /// As [`Broker::resolve_at`].
    pub fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
    ) -> Result<ListedOffsets, BrokerError> {
        let (replica, offset) = self.resolve_at(topic, partition, start)?;
        Ok(ListedOffsets {
            offset,
            log_start_offset: replica.log_start_offset(),
            high_watermark: replica.high_watermark(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits within bounds pass (0 bytes meaning the default); a wait or size past the node's
    /// limit is refused with the limit in the message.
    #[test]
    fn fetch_limits_are_checked_and_defaulted() {
        let limits = FetchLimits::new(500, 10, 0).expect("within limits");
        assert_eq!(
            limits,
            FetchLimits {
                max_wait: Duration::from_millis(500),
                min_bytes: 10,
                max_bytes: FETCH_BYTES_DEFAULT as usize,
            }
        );
        let most = FetchLimits::new(FETCH_WAIT_MS_MAX, 0, FETCH_BYTES_MAX).expect("at the limits");
        assert_eq!(most.max_bytes, FETCH_BYTES_MAX as usize);

        let wait = FetchLimits::new(FETCH_WAIT_MS_MAX + 1, 0, 0).expect_err("too long");
        assert!(
            matches!(wait, BrokerError::InvalidArgument(ref m) if m.contains(&FETCH_WAIT_MS_MAX.to_string())),
            "{wait:?}"
        );
        let size = FetchLimits::new(0, 0, FETCH_BYTES_MAX + 1).expect_err("too large");
        assert!(
            matches!(size, BrokerError::InvalidArgument(ref m) if m.contains(&FETCH_BYTES_MAX.to_string())),
            "{size:?}"
        );
    }
}
