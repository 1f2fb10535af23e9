//! The connection to a Strata cluster, and the handle every other part of the client is made
//! from.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::broker_client::BrokerClient;
use strata_proto::v1::groups_client::GroupsClient;
use tonic::transport::{Channel, Endpoint};

use crate::admin::Admin;
use crate::consumer::{self, ConsumerConfig, FetchOptions, FetchedRecords, PartitionConsumer};
use crate::consumer::{PartitionOffsets, StartFrom};
use crate::error::{Error, Result, chain};
use crate::group::{self, GroupConsumer, GroupConsumerConfig};
use crate::producer::{Producer, ProducerConfig};

/// The broker list used when none is given: the same in the client, its examples and the
/// `strata` CLI.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The environment variable the examples and the CLI read the broker list from.
pub const BROKERS_ENV: &str = "STRATA_BROKERS";

/// The largest message the client accepts from a broker: a fetch of the protocol's 64 MiB
/// maximum plus one batch beyond it and the message framing.
pub(crate) const MESSAGE_BYTES_MAX: usize = 72 << 20;

/// The broker list from `STRATA_BROKERS`, or [`DEFAULT_BROKERS`].
pub fn brokers_from_env() -> String {
    std::env::var(BROKERS_ENV).unwrap_or_else(|_| DEFAULT_BROKERS.to_owned())
}

/// How the client talks to brokers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long to wait for a TCP connection to a broker.
    pub connect_timeout: Duration,
    /// How long to wait for the reply to a unary call (admin calls, `ListOffsets`, and a
    /// fetch on top of its own `max_wait`).
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A connection to one broker of a cluster. Cheap to clone: clones share the HTTP/2
/// connection, which reconnects by itself when it breaks.
///
/// Every request goes to the broker the client connected to; routing each partition to its
/// leader is not implemented yet (a `NOT_LEADER` reply is retried by the producer and returned
/// by the other calls).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    channel: Channel,
    address: String,
    config: ClientConfig,
}

impl Client {
    /// Connects to the first reachable broker of `brokers`, a comma-separated list of
    /// `HOST:PORT` (or `http://HOST:PORT`), with the default [`ClientConfig`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed list, [`Error::Connect`] when no broker can
    /// be reached.
    pub async fn connect(brokers: &str) -> Result<Self> {
        Self::connect_with(brokers, ClientConfig::default()).await
    }

    /// Like [`Client::connect`], with a configuration.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(brokers: &str, config: ClientConfig) -> Result<Self> {
        let addresses = parse_brokers(brokers)?;
        let mut failures = Vec::new();
        for address in addresses {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .map_err(|error| {
                    Error::InvalidArgument(format!("broker address {address}: {error}"))
                })?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true);
            match endpoint.connect().await {
                Ok(channel) => {
                    return Ok(Self {
                        inner: Arc::new(Inner {
                            channel,
                            address,
                            config,
                        }),
                    });
                }
                Err(error) => failures.push(format!("{address}: {}", chain(&error))),
            }
        }
        Err(Error::Connect {
            address: brokers.to_owned(),
            reason: failures.join("; "),
        })
    }

    /// The `HOST:PORT` of the broker this client talks to.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The configuration the client was connected with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The admin client: topics, cluster information and consumer groups.
    pub fn admin(&self) -> Admin {
        Admin::new(
            AdminClient::new(self.inner.channel.clone()),
            self.groups(),
            self.inner.config.request_timeout,
        )
    }

    /// Joins a consumer group and starts reading the partitions it assigns (see
    /// [`GroupConsumer`]). Returns once joined. Must be called inside a Tokio runtime: the
    /// consumer runs tasks.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an inconsistent configuration; the coordinator's
    /// refusal (`INVALID_GROUP_ID`, `GROUP_FULL`, `UNKNOWN_TOPIC_OR_PARTITION`); retriable
    /// failures are retried with backoff until the join succeeds.
    pub async fn group_consumer(&self, config: GroupConsumerConfig) -> Result<GroupConsumer> {
        group::start(self, config).await
    }

    /// Starts a producer. Must be called inside a Tokio runtime: the producer runs a task.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the configuration is inconsistent (see
    /// [`ProducerConfig`]).
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::start(self, config)
    }

    /// Subscribes to one partition from `from`, with flow control by byte credit.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a credit below the minimum; the broker's refusal (an
    /// unknown topic or partition, an offset out of range); transport errors.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        from: StartFrom,
        config: ConsumerConfig,
    ) -> Result<PartitionConsumer> {
        consumer::subscribe(self, topic, partition, from, config).await
    }

    /// Fetches the records of one partition from `offset` on, waiting up to
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
        consumer::fetch(self, topic, partition, offset, options).await
    }

    /// Resolves `from` to an offset of one partition, with the partition's bounds.
    ///
    /// # Errors
    /// The broker's refusal (unknown topic or partition), a timeout, transport errors.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        from: StartFrom,
    ) -> Result<PartitionOffsets> {
        consumer::list_offsets(self, topic, partition, from).await
    }

    /// A consumer-groups client on the shared connection.
    pub(crate) fn groups(&self) -> GroupsClient<Channel> {
        GroupsClient::new(self.inner.channel.clone())
    }

    /// A broker client on the shared connection, accepting messages up to
    /// [`MESSAGE_BYTES_MAX`].
    pub(crate) fn broker(&self) -> BrokerClient<Channel> {
        BrokerClient::new(self.inner.channel.clone())
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }
}

/// Awaits a unary call for at most `limit` and unwraps its reply.
pub(crate) async fn unary<T>(
    limit: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::from_status(status)),
        Err(_) => Err(Error::Timeout {
            after_ms: limit.as_millis() as u64,
        }),
    }
}

/// Splits a comma-separated broker list into `HOST:PORT` addresses (an `http://` prefix is
/// accepted and dropped).
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty list or an entry without a port.
pub fn parse_brokers(list: &str) -> Result<Vec<String>> {
    let mut addresses = Vec::new();
    for entry in list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let address = entry.strip_prefix("http://").unwrap_or(entry);
        let address = address.strip_suffix('/').unwrap_or(address);
        let port = address.rsplit_once(':').map(|(_, port)| port);
        if port.is_none_or(|port| port.parse::<u16>().is_err()) {
            return Err(Error::InvalidArgument(format!(
                "broker {entry:?} is not HOST:PORT"
            )));
        }
        addresses.push(address.to_owned());
    }
    if addresses.is_empty() {
        return Err(Error::InvalidArgument("the broker list is empty".into()));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists split on commas, trim spaces, drop an http:// prefix, and need a port.
    #[test]
    fn broker_lists() {
        assert_eq!(
            parse_brokers("127.0.0.1:9092").expect("valid"),
            ["127.0.0.1:9092"]
        );
        assert_eq!(
            parse_brokers(" a:1, http://b:2/ ,,[::1]:3").expect("valid"),
            ["a:1", "b:2", "[::1]:3"]
        );
        for invalid in ["", " , ", "localhost", "host:port", "host:99999"] {
            assert!(parse_brokers(invalid).is_err(), "{invalid:?}");
        }
    }

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
