//! [`Client`], the public entry point: it connects to a cluster and makes the admin client,
//! producers and consumers, each on the shared [`Cluster`] handle below them.

use crate::admin::Admin;
use crate::cluster::{ClientConfig, Cluster};
use crate::consumer::{self, ConsumerConfig, FetchOptions, FetchedRecords, PartitionConsumer};
use crate::consumer::{PartitionOffsets, StartFrom};
use crate::error::Result;
use crate::group::{self, GroupConsumer};
use crate::group_config::GroupConsumerConfig;
use crate::producer::Producer;
use crate::producer_config::ProducerConfig;

/// A connection to a Strata cluster. Cheap to clone: clones share the connections (one
/// HTTP/2 connection per broker, opened when first used, reconnecting by itself) and the
/// picture of the cluster.
///
/// Each request goes where the cluster serves it: a partition's produce, fetch, subscribe and
/// list-offsets to the partition's leader; topic changes, consumer-group calls and the
/// idempotent producer's `InitProducerId` to the controller leader; other admin reads to any
/// broker. The client learns the cluster from `ClusterInfo` (asked of every broker it knows)
/// and from the leader a `NOT_LEADER` refusal names, which it follows at once. When a broker
/// does not know the leader, is unavailable or cannot be reached, the call is sent again after
/// a backoff, to wherever fresh metadata points, up to [`ClientConfig::routing_retries`] times.
/// A single broker is used exactly as it is reached, whatever address it advertises.
#[derive(Debug, Clone)]
pub struct Client {
    cluster: Cluster,
}

impl Client {
    /// Connects to the first reachable broker of `brokers`, a comma-separated list of
    /// `HOST:PORT` (or `http://HOST:PORT`), with the default [`ClientConfig`]. The other
    /// brokers of the list, and every node the cluster names, are used as requests need them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a malformed list,
    /// [`Error::Connect`](crate::Error::Connect) when no broker can be reached.
    pub async fn connect(brokers: &str) -> Result<Self> {
        Self::connect_with(brokers, ClientConfig::default()).await
    }

    /// Like [`Client::connect`], with a configuration.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(brokers: &str, config: ClientConfig) -> Result<Self> {
        let cluster = Cluster::connect(brokers, config).await?;
        Ok(Self { cluster })
    }

    /// The `HOST:PORT` of the broker this client first connected to.
    pub fn address(&self) -> &str {
        self.cluster.address()
    }

    /// The configuration the client was connected with.
    pub fn config(&self) -> &ClientConfig {
        self.cluster.config()
    }

    /// The admin client: topics, cluster information and consumer groups.
    pub fn admin(&self) -> Admin {
        Admin::new(self.cluster.clone())
    }

    /// Joins a consumer group and starts reading the partitions it assigns (see
    /// [`GroupConsumer`]). Returns once joined. Must be called inside a Tokio runtime: the
    /// consumer runs tasks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an inconsistent configuration;
    /// the coordinator's refusal (`INVALID_GROUP_ID`, `GROUP_FULL`, `UNKNOWN_TOPIC_OR_PARTITION`);
    /// retriable failures are retried with backoff until the join succeeds.
    pub async fn group_consumer(&self, config: GroupConsumerConfig) -> Result<GroupConsumer> {
        group::start(&self.cluster, config).await
    }

    /// Starts a producer. Must be called inside a Tokio runtime: the producer runs a task.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when the configuration is
    /// inconsistent (see [`ProducerConfig`]).
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::start(&self.cluster, config)
    }

    /// Subscribes to one partition from `from`, on its leader, with flow control by byte
    /// credit.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a credit below the minimum;
    /// the broker's refusal (an unknown topic or partition, an offset out of range); transport
    /// errors.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        from: StartFrom,
        config: ConsumerConfig,
    ) -> Result<PartitionConsumer> {
        consumer::subscribe(&self.cluster, topic, partition, from, config).await
    }

    /// Fetches the records of one partition from `offset` on, from its leader, waiting up to
    /// `options.max_wait` for some to arrive (long poll).
    ///
    /// # Errors
    /// The broker's refusal (unknown topic or partition, offset out of range), a corrupt
    /// batch, a timeout, transport errors.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        options: FetchOptions,
    ) -> Result<FetchedRecords> {
        consumer::fetch(&self.cluster, topic, partition, offset, options).await
    }

    /// Resolves `from` to an offset of one partition, with the partition's bounds, as its
    /// leader sees them.
    ///
    /// # Errors
    /// The broker's refusal (unknown topic or partition), a timeout, transport errors.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        from: StartFrom,
    ) -> Result<PartitionOffsets> {
        consumer::list_offsets(&self.cluster, topic, partition, from).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// Connecting to a port nobody listens on fails with Connect, naming the address.
    #[tokio::test]
    async fn connect_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let error = Client::connect(&address.to_string())
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, Error::Connect { .. }), "{error}");
        assert!(error.is_retriable());
        assert!(error.to_string().contains(&address.to_string()));
    }
}
