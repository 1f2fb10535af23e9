//! Unit tests of a replica's reads: each names the behaviour it shows.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::broker::BrokerError;
use crate::partition::group_id;
use crate::storage::batch::BatchBuilder;
use crate::storage::{LogConfig, PartitionLog};

/// A replica of topic 1's partition 0 whose log holds `stored` one-record batches (timestamps
/// 1000, 1001, ...) of which the first `committed` are below the high watermark; with the
/// sender of its high watermark, which must live while the replica is read (its driver).
fn replica(
    dir: &std::path::Path,
    stored: u64,
    committed: u64,
) -> (PartitionReplica, watch::Sender<u64>) {
    let mut log = PartitionLog::open(dir, LogConfig::default()).expect("open");
    for i in 0..stored {
        let mut builder = BatchBuilder::new();
        builder.push(1000 + i as i64, None, Some(b"v"), &[]);
        log.append(&builder.finish(), 1, 0).expect("append");
    }
    let (committer, high_watermark) = watch::channel(committed);
    let (_, leader) = watch::channel(1);
    let (_, in_sync) = watch::channel(vec![1]);
    let replica = PartitionReplica {
        topic: "t".to_string(),
        partition: 0,
        group: group_id(1, 0),
        log: Arc::new(RwLock::new(log)),
        high_watermark,
        leader,
        term: Default::default(),
        in_sync,
        traffic: Default::default(),
    };
    (replica, committer)
}

/// Where a read starts resolves within `log_start..=high_watermark`; outside it, the error the
/// broker answers names the valid range, which ends at the high watermark, not the log's end.
#[test]
fn a_start_resolves_within_the_committed_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replica, _committer) = replica(dir.path(), 3, 2);
    assert_eq!(replica.resolve(StartFrom::Earliest).expect("earliest"), 0);
    assert_eq!(replica.resolve(StartFrom::Latest).expect("latest"), 2);
    assert_eq!(
        replica.resolve(StartFrom::Offset(2)).expect("at the end"),
        2
    );
    assert_eq!(
        replica.resolve(StartFrom::Timestamp(1001)).expect("time"),
        1
    );
    // The third record is stored but not committed: a time that finds it resolves to the end.
    assert_eq!(
        replica.resolve(StartFrom::Timestamp(1002)).expect("time"),
        2
    );
    let error = BrokerError::from(replica.resolve(StartFrom::Offset(3)).expect_err("past"));
    assert_eq!(
        error,
        BrokerError::OffsetOutOfRange {
            requested: 3,
            log_start: 0,
            high_watermark: 2,
        }
    );
}

/// A read returns committed batches only, a fetch that cannot get `min_bytes` answers with
/// what there is once its wait ends, and a fetch whose driver is gone answers that the node
/// is shutting down.
#[tokio::test]
async fn reads_stop_at_the_high_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (replica, committer) = replica(dir.path(), 3, 2);
    let read = replica.read(0, 1 << 20).expect("read");
    assert_eq!((read.next_offset, read.high_watermark), (2, 2));
    assert_eq!(read.log_start_offset, 0);
    let at_end = replica.read(2, 1 << 20).expect("read at the end");
    assert!(at_end.batches.is_empty());
    assert_eq!(at_end.next_offset, 2);
    let fetched = tokio::time::timeout(
        Duration::from_secs(10),
        replica.fetch(1, 1 << 20, 1 << 20, Duration::from_millis(10)),
    )
    .await
    .expect("the fetch ends when its wait does")
    .expect("fetch");
    assert_eq!(fetched.next_offset, 2);
    assert_eq!(replica.timestamp_at(1, 2), Some(1001));
    assert_eq!(replica.timestamp_at(2, 2), None);
    drop(committer);
    let stopped = replica
        .fetch(1, 1 << 20, 1 << 20, Duration::from_secs(10))
        .await;
    assert!(
        matches!(stopped, Err(PartitionError::ShuttingDown)),
        "{stopped:?}"
    );
}
