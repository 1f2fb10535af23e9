//! The retry policy: how long to wait before attempt `n` again. Pure; the jitter comes in as a
//! number so tests can pin it.

use std::hash::BuildHasher;
use std::time::Duration;

/// Exponential backoff with "equal jitter": the delay before retry `n` (1-based) is drawn from
/// `[d/2, d]` with `d = min(initial * 2^(n-1), max)`. The floor keeps retries from hammering a
/// broker that just failed; the jitter spreads out clients that failed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (before jitter).
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry), with `jitter` in `[0, 1]`
    /// choosing where in `[d/2, d]` it falls.
    ///
    /// # Panics
    /// When `retry` is 0 or `jitter` is outside `[0, 1]`.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        assert!(retry >= 1, "retries count from 1");
        assert!((0.0..=1.0).contains(&jitter), "jitter is a fraction");
        // 2^20 times any sensible initial delay is past any sensible max: stop doubling there.
        let doublings = (retry - 1).min(20);
        let full = self
            .initial
            .saturating_mul(1 << doublings)
            .min(self.max.max(self.initial));
        let half = full / 2;
        half + half.mul_f64(jitter)
    }
}

/// A jitter fraction in `[0, 1]` from the process's random hash keys: enough to spread retries,
/// without a random-number crate.
pub(crate) fn random_jitter() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
    };

    /// Without jitter the delay halves the full exponential value; with full jitter it is the
    /// full value; it doubles per retry until the max.
    #[test]
    fn doubles_to_the_max() {
        let table = [
            (1, 0.0, 50),
            (1, 1.0, 100),
            (2, 1.0, 200),
            (3, 1.0, 400),
            (4, 1.0, 800),
            (5, 1.0, 1000),
            (5, 0.0, 500),
            (40, 1.0, 1000),
            (u32::MAX, 0.5, 750),
        ];
        for (retry, jitter, expected_ms) in table {
            assert_eq!(
                POLICY.delay(retry, jitter),
                Duration::from_millis(expected_ms),
                "retry {retry}, jitter {jitter}"
            );
        }
    }

    /// A max below the initial delay does not shrink the first delay.
    #[test]
    fn max_below_initial() {
        let policy = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(10),
        };
        assert_eq!(policy.delay(3, 1.0), Duration::from_millis(100));
    }

    /// The random jitter stays in range.
    #[test]
    fn random_jitter_is_a_fraction() {
        for _ in 0..1000 {
            let jitter = random_jitter();
            assert!((0.0..=1.0).contains(&jitter));
        }
    }

    #[test]
    #[should_panic(expected = "retries count from 1")]
    fn retry_zero_panics() {
        POLICY.delay(0, 0.0);
    }
}
