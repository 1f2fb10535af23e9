//! A seam for injecting I/O failures into the storage layer, so tests can check that a failed
//! write or fsync leaves the log consistent.
//!
//! Every write and every fsync of the storage layer goes through [`Faults`] when the
//! [`LogConfig`](super::LogConfig) carries one. Production configs carry none, and the cost is a
//! branch on `None`.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};

/// Armed failures, shared between a test and the log it drives.
#[derive(Debug)]
pub struct Faults {
    /// Writes still allowed before one fails; negative when disarmed.
    writes_before_failure: AtomicI64,
    /// Fsyncs still allowed before one fails; negative when disarmed.
    syncs_before_failure: AtomicI64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            writes_before_failure: AtomicI64::new(-1),
            syncs_before_failure: AtomicI64::new(-1),
        }
    }
}

impl Faults {
    /// After `count` more successful writes, the next write stores only half its bytes and then
    /// fails with ENOSPC, as a full disk does.
    pub fn fail_write_after(&self, count: u32) {
        self.writes_before_failure
            .store(i64::from(count), Ordering::SeqCst);
    }

    /// After `count` more successful fsyncs, the next one fails with EIO.
    pub fn fail_sync_after(&self, count: u32) {
        self.syncs_before_failure
            .store(i64::from(count), Ordering::SeqCst);
    }

    /// Disarms every pending failure.
    pub fn clear(&self) {
        self.writes_before_failure.store(-1, Ordering::SeqCst);
        self.syncs_before_failure.store(-1, Ordering::SeqCst);
    }

    /// Counts one write; true when this one must fail.
    pub(crate) fn write_fails(&self) -> bool {
        countdown(&self.writes_before_failure)
    }

    /// Counts one fsync; true when this one must fail.
    pub(crate) fn sync_fails(&self) -> bool {
        countdown(&self.syncs_before_failure)
    }
}

fn countdown(counter: &AtomicI64) -> bool {
    let before = counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |value| {
            (value >= 0).then(|| value - 1)
        })
        .unwrap_or(-1);
    before == 0
}

pub(crate) fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

pub(crate) fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}
