//! Restarting partition replicas whose storage failed.
//!
//! The raft driver stops a group whose append, fsync, state file or reads fail (see
//! `Driver::stop_group`) and reports it here; so does [`Broker::reconcile`] when a partition
//! cannot be opened. Only that replica stops: the node serves everything else, and the
//! partition's other replicas go on (a leader among them is elected as for a crash). The
//! replica is dropped (its files closed) and, after a delay that doubles with each failure in a
//! row, opened again from disk: recovery checks what is there, and the peers bring it up to
//! date. A transient failure (a full disk, no file descriptors) therefore heals by itself; a
//! damaged log keeps failing, loudly, with the reason served to clients of that partition.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Broker;
use crate::replication::RaftGroupId;

/// The first delay before a stopped replica is opened again.
const RESTART_DELAY_MIN: Duration = Duration::from_secs(1);
/// The longest delay between attempts.
const RESTART_DELAY_MAX: Duration = Duration::from_secs(60);

/// A replica that stopped: why, and how many times in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stopped {
    pub reason: String,
    pub failures: u32,
}

/// The delay before the `failures`-th attempt to open a stopped replica again.
fn restart_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RESTART_DELAY_MIN
        .saturating_mul(1 << doublings)
        .min(RESTART_DELAY_MAX)
}

impl Broker {
    /// Records that `group` stopped (or could not be opened) for `reason`, drops its replica
    /// and returns the delay before the next attempt.
    pub(super) fn replica_stopped(&self, group: RaftGroupId, reason: String) -> Duration {
        self.replicas
            .write()
            .expect("lock")
            .retain(|_, replica| replica.group != group);
        let mut stopped = self.stopped.write().expect("lock");
        let failures = stopped.get(&group).map_or(0, |s| s.failures) + 1;
        tracing::error!(
            group,
            failures,
            %reason,
            "partition replica stopped; it is opened again after a delay"
        );
        stopped.insert(group, Stopped { reason, failures });
        restart_delay(failures)
    }

    /// Why a partition's replica on this node is stopped, if it is.
    pub(super) fn stopped_reason(&self, group: RaftGroupId) -> Option<String> {
        self.stopped
            .read()
            .expect("lock")
            .get(&group)
            .map(|stopped| stopped.reason.clone())
    }

    /// Receives the groups that stopped and opens each again after its delay. Ends when the
    /// broker is gone.
    pub(super) async fn restart_stopped(
        broker: Weak<Self>,
        mut stopped: mpsc::UnboundedReceiver<(RaftGroupId, String)>,
    ) {
        while let Some((group, reason)) = stopped.recv().await {
            let Some(strong) = broker.upgrade() else {
                return;
            };
            let delay = strong.replica_stopped(group, reason);
            drop(strong);
            let broker = broker.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                // Reconcile opens every wanted partition that is not open; one that fails
                // again reports itself through the same channel.
                if let Err(error) = broker.reconcile().await {
                    tracing::error!(%error, "reconciling partitions with the metadata failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_its_maximum() {
        assert_eq!(restart_delay(1), Duration::from_secs(1));
        assert_eq!(restart_delay(2), Duration::from_secs(2));
        assert_eq!(restart_delay(6), Duration::from_secs(32));
        assert_eq!(restart_delay(7), RESTART_DELAY_MAX);
        assert_eq!(restart_delay(u32::MAX), RESTART_DELAY_MAX);
    }
}
