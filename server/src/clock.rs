//! # Clock: the one place the server reads the wall clock
//!
//! Modules that need the time of day (stamping commands and batches, group session and offset
//! expiry, peer liveness, retention) take it from a [`Clock`] they were given, never from the
//! system directly, so tests and the simulation control time: a [`ManualClock`] moves only
//! when told, and a test advances it past a deadline instead of sleeping until it.
//!
//! Replicated apply still never reads a clock: the leader stamps the time into the entry.
//! Timeouts and tick scheduling use `Instant` and tokio's timers (monotonic time, not the
//! time of day).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// A clock shared by the modules of one node.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64)
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told (tests, simulation).
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            now_ms: AtomicI64::new(now_ms),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manual clock shows what it was set to and moves only when advanced.
    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
    }

    /// The system clock reads the time of day (after 2020, and not going back between reads).
    #[test]
    fn the_system_clock_reads_the_time_of_day() {
        let first = SystemClock.now_ms();
        assert!(first > 1_577_836_800_000, "{first}");
        assert!(SystemClock.now_ms() >= first);
    }
}
