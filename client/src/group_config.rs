//! A group consumer's configuration ([`GroupConsumerConfig`], [`OffsetReset`], [`RevokeHook`])
//! and its validation, and the [`AssignmentChange`] a revoke hook and listeners are given.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1::TopicPartition;

use crate::consumer::{CREDIT_BYTES_MIN, ConsumerConfig};
use crate::error::{Error, Result};
use crate::retry::Backoff;

/// Where a partition starts when the group has no committed offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The first offset still stored.
    #[default]
    Earliest,
    /// The next offset to be written.
    Latest,
    /// Neither: [`GroupConsumer::next`](crate::GroupConsumer::next) returns
    /// [`Error::NoCommittedOffset`] and the partition is not read.
    Error,
}

/// Runs before revoked partitions are committed and released: a chance to finish work on their
/// records and commit ([`Committer::commit`](crate::Committer::commit)). The consumer waits for the
/// returned future.
pub type RevokeHook =
    Arc<dyn Fn(AssignmentChange) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How a [`GroupConsumer`](crate::GroupConsumer) joins its group and reads.
#[derive(Clone)]
pub struct GroupConsumerConfig {
    /// 1 to 255 characters of `[a-zA-Z0-9._:-]`.
    pub group_id: String,
    /// Existing topics, at least one.
    pub topics: Vec<String>,
    /// A member not heard from for this long loses its partitions. 1 s to 300 s.
    pub session_timeout: Duration,
    /// Commit processed progress this often; `None` commits only on
    /// [`GroupConsumer::commit`](crate::GroupConsumer::commit), revocation and close.
    pub auto_commit: Option<Duration>,
    pub offset_reset: OffsetReset,
    /// Free text shown by DescribeGroup (host, process).
    pub client_id: String,
    /// Each partition reader's credit window and resubscription policy: a reader buffers at
    /// most `credit_bytes` of batches.
    pub consumer: ConsumerConfig,
    /// Records waiting in the merged channel between the readers and `next`.
    pub records_queued_max: usize,
    /// The delay between attempts of a call that failed with a retriable error.
    pub backoff: Backoff,
    /// See [`RevokeHook`].
    pub on_revoke: Option<RevokeHook>,
}

impl fmt::Debug for GroupConsumerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConsumerConfig")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("session_timeout", &self.session_timeout)
            .field("auto_commit", &self.auto_commit)
            .field("offset_reset", &self.offset_reset)
            .field("client_id", &self.client_id)
            .field("consumer", &self.consumer)
            .field("records_queued_max", &self.records_queued_max)
            .field("backoff", &self.backoff)
            .field("on_revoke", &self.on_revoke.as_ref().map(|_| "hook"))
            .finish()
    }
}

impl GroupConsumerConfig {
    /// The defaults for `group_id` reading `topics`: a 10 s session, auto-commit every 5 s,
    /// earliest without a committed offset.
    pub fn new(
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            session_timeout: Duration::from_secs(10),
            auto_commit: Some(Duration::from_secs(5)),
            offset_reset: OffsetReset::Earliest,
            client_id: String::new(),
            consumer: ConsumerConfig::default(),
            records_queued_max: 1024,
            backoff: Backoff::default(),
            on_revoke: None,
        }
    }

    /// Checks every bound the fields document.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field, its value and what is valid.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidArgument(reason));
        if self.group_id.is_empty() || self.group_id.len() > 255 {
            return invalid(format!(
                "group id {:?} must have 1 to 255 characters",
                self.group_id
            ));
        }
        if self.topics.is_empty() {
            return invalid("a group consumer needs at least one topic".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.session_timeout) {
            return invalid(format!(
                "session_timeout {:?} is outside 1s..=300s",
                self.session_timeout
            ));
        }
        if self.auto_commit.is_some_and(|every| every.is_zero()) {
            return invalid("auto_commit must be positive".into());
        }
        if self.consumer.credit_bytes < CREDIT_BYTES_MIN {
            return invalid(format!(
                "credit_bytes {} is below the minimum of {CREDIT_BYTES_MIN}",
                self.consumer.credit_bytes
            ));
        }
        if self.records_queued_max == 0 {
            return invalid("records_queued_max must be at least 1".into());
        }
        Ok(())
    }
}

/// Partitions that left and joined this member's assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentChange {
    /// No longer read. Their processed progress is committed right after the change is
    /// announced (and after [`GroupConsumerConfig::on_revoke`]), unless `lost`.
    pub revoked: Vec<TopicPartition>,
    /// Read from now on.
    pub assigned: Vec<TopicPartition>,
    /// The member's session ended (it was fenced or expired): the revoked partitions already
    /// belong to others and are not committed.
    pub lost: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are valid and each bound is checked.
    #[test]
    fn config_validation() {
        assert!(GroupConsumerConfig::new("g", ["t"]).validate().is_ok());
        let invalid = [
            GroupConsumerConfig::new("", ["t"]),
            GroupConsumerConfig::new("g".repeat(256), ["t"]),
            GroupConsumerConfig::new("g", Vec::<String>::new()),
            GroupConsumerConfig {
                session_timeout: Duration::from_millis(999),
                ..GroupConsumerConfig::new("g", ["t"])
            },
            GroupConsumerConfig {
                auto_commit: Some(Duration::ZERO),
                ..GroupConsumerConfig::new("g", ["t"])
            },
            GroupConsumerConfig {
                records_queued_max: 0,
                ..GroupConsumerConfig::new("g", ["t"])
            },
        ];
        for config in invalid {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
