//! The threads that fsync the logs a Ready round wrote, beside the driver thread.
//!
//! A round that wrote one log (a produce that arrives alone) fsyncs it on the driver thread:
//! no hand-off on the latency path. A round that wrote several runs the fsyncs in parallel:
//! the driver takes one, and [`FSYNC_THREADS`] long-lived threads take the others, so that the
//! disk sees them together (its queue and the filesystem's journal commit them at once) and
//! the round costs about one fsync, not one per log. The threads are started once: a round
//! with many written logs (a thousand partitions receiving a trickle each) must not start a
//! thread per log per round.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use super::handle::RaftGroupId;
use crate::storage::{self, PendingSync};

/// Threads that run fsyncs besides the driver's own: fsyncs in flight at once are at most one
/// more than this. Enough to keep a disk's queue busy; more only costs idle threads.
pub const FSYNC_THREADS: usize = 8;

/// One fsync to run and where its result goes.
type Job = (RaftGroupId, PendingSync, Sender<Done>);
/// A finished fsync: the group and what its fsync returned.
pub(super) type Done = (RaftGroupId, storage::Result<()>);

/// The fsync threads. Dropping the pool ends them once they finish what they hold.
pub(super) struct SyncPool {
    jobs: Option<Sender<Job>>,
}

impl SyncPool {
    /// Starts [`FSYNC_THREADS`] threads (fewer when the system refuses to start more; with
    /// none, every fsync runs on the caller's thread).
    pub(super) fn start() -> Self {
        let (jobs, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        for n in 0..FSYNC_THREADS {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("raft-fsync-{n}"))
                .spawn(move || work(&receiver));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => {
                    tracing::warn!(%error, started, "could not start an fsync thread");
                    break;
                }
            }
        }
        Self {
            jobs: (started > 0).then_some(jobs),
        }
    }

    /// Completes every sync in `pending`: the first on this thread, the others on the pool's,
    /// all at once. Returns each group's result, once all are done; a group missing from them
    /// (its thread died) is an fsync not known to have happened.
    pub(super) fn complete_all(&self, pending: Vec<(RaftGroupId, PendingSync)>) -> Vec<Done> {
        let mut pending = pending.into_iter();
        let Some((first_id, first)) = pending.next() else {
            return Vec::new();
        };
        let (done, finished) = channel();
        let mut results = Vec::new();
        let mut handed_out = 0;
        for (id, sync) in pending {
            match &self.jobs {
                Some(jobs) => match jobs.send((id, sync, done.clone())) {
                    Ok(()) => handed_out += 1,
                    // No thread left to take it (they can only end with the pool): run it here.
                    Err(std::sync::mpsc::SendError((id, sync, _))) => {
                        results.push((id, sync.complete()));
                    }
                },
                None => results.push((id, sync.complete())),
            }
        }
        results.push((first_id, first.complete()));
        drop(done);
        // A thread that died with a job (it never should) drops its sender unanswered: the
        // iterator then ends early, and that group is missing from the results.
        results.extend(finished.iter().take(handed_out));
        results
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        // Closing the channel ends each thread at its next receive.
        self.jobs.take();
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never during an fsync.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok((id, sync, done)) = job else {
            return;
        };
        // The driver may be gone (shutting down): the result has nobody to tell.
        let _ = done.send((id, sync.complete()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::fault::Faults;
    use crate::storage::{LogConfig, PartitionLog};

    fn written_log(dir: &std::path::Path, faults: Option<Arc<Faults>>) -> PartitionLog {
        let config = LogConfig {
            faults,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir, config).expect("open");
        let mut builder = crate::storage::batch::BatchBuilder::new();
        builder.push(1, Some(b"k"), Some(b"v"), &[]);
        log.append(&builder.finish(), 1, 0).expect("append");
        log
    }

    /// Every sync handed over comes back with its own group's result, failures included.
    #[test]
    fn every_sync_comes_back_with_its_result() {
        let pool = SyncPool::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let failing = Arc::new(Faults::default());
        let mut logs = Vec::new();
        for id in 0..20u64 {
            let faults = (id == 7).then(|| failing.clone());
            logs.push(written_log(&dir.path().join(id.to_string()), faults));
        }
        failing.fail_sync_after(0);
        let pending = logs
            .iter_mut()
            .enumerate()
            .map(|(id, log)| (id as u64, log.begin_sync().expect("begin")))
            .collect();
        let mut done = pool.complete_all(pending);
        done.sort_by_key(|(id, _)| *id);
        assert_eq!(
            done.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        for (id, result) in done {
            assert_eq!(result.is_err(), id == 7, "group {id}");
        }
        assert!(pool.complete_all(Vec::new()).is_empty());
    }
}
